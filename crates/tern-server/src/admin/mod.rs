//! Operator commands, named and worded like rabbitmqctl's.
//!
//! [`execute`] runs one [`AdminRequest`] (an argument list, as typed after `tern ctl`, the
//! `-p` vhost, and for `import_definitions` a chunk of definitions) against the broker.
//! `socket` serves requests on a Unix socket in the data directory, which `tern ctl` reaches;
//! only the user the node runs as (or root) may use it, and it sees everything, like
//! rabbitmqctl.
//!
//! - `commands`: users, vhosts, permissions (changes through the metadata log);
//! - `lists`: `list_queues`, `list_exchanges`, `list_bindings`, `list_connections`,
//!   `list_channels`, `list_consumers`, with rabbitmqctl's column names, rendered by the
//!   management API's own renderers;
//! - `node`: `status`, `purge_queue`, `delete_queue`, `close_connection`,
//!   `export_definitions`, `import_definitions` (the management API's definitions code).

mod commands;
mod lists;
mod node;
pub(crate) mod socket;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use commands::execute;

/// One command: `args[0]` is its name (`add_user`, `list_permissions`, ...).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdminRequest {
    pub args: Vec<String>,
    /// `-p`: the vhost commands that take one act on (default `/`).
    pub vhost: Option<String>,
    /// `import_definitions`: the definitions (or one chunk of them) in RabbitMQ's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The answer: an error, or a message and (for `list_*`) a table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminReply {
    pub ok: bool,
    /// What was done ("Adding user "alice" ..."), or why it was not.
    pub message: String,
    pub columns: Vec<String>,
    /// One value per column: strings, numbers, booleans, and objects for arguments.
    pub rows: Vec<Vec<Value>>,
    /// `export_definitions`: the definitions; `status`: the whole status as one object;
    /// `import_definitions`: `{"imported": N}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
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

    /// A table of text cells.
    pub fn table(message: impl Into<String>, columns: &[&str], rows: Vec<Vec<String>>) -> Self {
        let rows = rows
            .into_iter()
            .map(|r| r.into_iter().map(Value::String).collect())
            .collect();
        Self::values(message, columns, rows)
    }

    /// A table of JSON values.
    pub fn values(message: impl Into<String>, columns: &[&str], rows: Vec<Vec<Value>>) -> Self {
        AdminReply {
            ok: true,
            message: message.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            body: None,
        }
    }
}
