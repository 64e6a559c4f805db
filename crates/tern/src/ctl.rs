//! `tern ctl`: operator commands with rabbitmqctl's names, sent to a running node over its
//! admin socket (`<data-dir>/ctl.sock`; see `tern_server::admin`). Only the user the node runs
//! as (or root) may use it.
//!
//! A password left off `add_user` / `change_password` is read from standard input, so it
//! stays out of the process list and the shell history.
//!
//! - `output`: the reply as rabbitmqctl's tab-separated table, or JSON;
//! - `definitions`: `export_definitions FILE` and `import_definitions FILE` (a large file in
//!   chunks, with a progress bar).

mod definitions;
mod output;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tern_server::admin::{AdminReply, AdminRequest};

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The node's data directory (its admin socket is `ctl.sock` there).
    #[arg(long, default_value = "./tern-data")]
    data_dir: PathBuf,
    /// The admin socket itself, instead of `--data-dir`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The vhost the command acts on (rabbitmqctl's -p).
    #[arg(short = 'p', long = "vhost")]
    vhost: Option<String>,
    /// Output: tab-separated table (rabbitmqctl's) or JSON.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Leave out the informational line ("Adding user ...").
    #[arg(short, long)]
    quiet: bool,
    /// The command and its arguments: add_user NAME [PASSWORD], list_queues [COLUMN...],
    /// status, import_definitions FILE, ... (see docs/operations.md).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

pub fn run(args: CtlArgs) -> Result<()> {
    let mut command = args.command.clone();
    // rabbitmqctl also takes -p after the command name: `set_permissions -p / alice ...`.
    let vhost = take_vhost(&mut command)?.or(args.vhost.clone());
    add_password_from_stdin(&mut command)?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.data_dir.join("ctl.sock"));
    let mut node = Node::connect(&socket)?;
    match command.first().map(String::as_str) {
        Some("export_definitions") => definitions::export(&mut node, &command, args.quiet),
        Some("import_definitions") => definitions::import(&mut node, &command, args.quiet),
        _ => {
            let request = AdminRequest {
                args: command,
                vhost,
                body: None,
            };
            let reply = node.ask(&request)?;
            output::print(&reply, args.format, args.quiet)?;
            if !reply.ok {
                bail!("{}", reply.message);
            }
            Ok(())
        }
    }
}

/// Remove `-p VHOST` / `--vhost VHOST` from the command's arguments, returning VHOST.
fn take_vhost(command: &mut Vec<String>) -> Result<Option<String>> {
    let Some(i) = command.iter().position(|a| a == "-p" || a == "--vhost") else {
        return Ok(None);
    };
    if i + 1 >= command.len() {
        bail!("{} needs a vhost", command[i]);
    }
    let vhost = command.remove(i + 1);
    command.remove(i);
    Ok(Some(vhost))
}

/// `add_user NAME` and `change_password NAME` without a password: read it from stdin.
fn add_password_from_stdin(command: &mut Vec<String>) -> Result<()> {
    let wants = matches!(
        command.first().map(String::as_str),
        Some("add_user" | "change_password")
    );
    if wants && command.len() == 2 {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        command.push(line.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(())
}

/// One connection to the node's admin socket; requests go one at a time, each answered.
pub(crate) struct Node {
    write: UnixStream,
    read: BufReader<UnixStream>,
}

impl Node {
    fn connect(socket: &Path) -> Result<Node> {
        let write = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot reach the node at {} (is it running, and are you its user?)",
                socket.display()
            )
        })?;
        let read = BufReader::new(write.try_clone()?);
        Ok(Node { write, read })
    }

    /// Send one request and wait for its answer.
    pub(crate) fn ask(&mut self, request: &AdminRequest) -> Result<AdminReply> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        let sent = self.write.write_all(&line);
        // A node that refuses a request (too large) answers, then closes before reading it
        // all: its answer says more than the broken pipe.
        let mut answer = String::new();
        let read = self.read.read_line(&mut answer);
        if answer.is_empty() {
            sent.context("sending to the node")?;
            read.context("reading the node's answer")?;
            bail!("the node closed the admin socket without answering");
        }
        Ok(serde_json::from_str(&answer)?)
    }
}
