//! Operator commands, named and worded like rabbitmqctl's: users, vhosts, permissions.
//!
//! [`execute`] runs one [`AdminRequest`] (an argument list, as typed after `tern ctl`, and the
//! `-p` vhost) against the broker. `socket` serves requests on a Unix socket in the data
//! directory, which `tern ctl` reaches; only the user the node runs as (or root) may use it.
//! The management HTTP API will call the same commands.

mod commands;
pub(crate) mod socket;

use serde::{Deserialize, Serialize};

pub use commands::execute;

/// One command: `args[0]` is its name (`add_user`, `list_permissions`, ...).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdminRequest {
    pub args: Vec<String>,
    /// `-p`: the vhost commands that take one act on (default `/`).
    pub vhost: Option<String>,
}

/// The answer: an error, or a message and (for `list_*`) a table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    pub ok: bool,
    /// What was done ("Adding user "alice" ..."), or why it was not.
    pub message: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl AdminReply {
    pub fn done(message: impl Into<String>) -> Self {
        AdminReply {
            ok: true,
            message: message.into(),
            ..Default::default()
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        AdminReply {
            ok: false,
            message: message.into(),
            ..Default::default()
        }
    }

    pub fn table(message: impl Into<String>, columns: &[&str], rows: Vec<Vec<String>>) -> Self {
        AdminReply {
            ok: true,
            message: message.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        }
    }
}
