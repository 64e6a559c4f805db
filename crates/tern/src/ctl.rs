//! `tern ctl`: operator commands with rabbitmqctl's names, sent to a running node over its
//! admin socket (`<data-dir>/ctl.sock`; see `tern_server::admin`). Only the user the node runs
//! as (or root) may use it.
//!
//! A password left off `add_user` / `change_password` is read from standard input, so it
//! stays out of the process list and the shell history.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

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
    /// The command and its arguments: add_user NAME [PASSWORD], list_users, set_permissions
    /// USER CONF WRITE READ, ... (see docs/operations.md).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
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
    let request = AdminRequest {
        args: command,
        vhost,
    };
    let reply = send(&socket, &request)?;
    print(&reply, args.format, args.quiet)?;
    if !reply.ok {
        bail!("{}", reply.message);
    }
    Ok(())
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

fn send(socket: &PathBuf, request: &AdminRequest) -> Result<AdminReply> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the node at {} (is it running, and are you its user?)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        bail!("the node closed the admin socket without answering");
    }
    Ok(serde_json::from_str(&answer)?)
}

fn print(reply: &AdminReply, format: Format, quiet: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json if reply.columns.is_empty() => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"ok": reply.ok, "message": reply.message})
            )?;
        }
        Format::Json => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = reply
                .rows
                .iter()
                .map(|row| {
                    let cells = reply
                        .columns
                        .iter()
                        .cloned()
                        .zip(row.iter().cloned().map(Into::into));
                    cells.collect()
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        Format::Table => {
            if reply.ok && !quiet {
                writeln!(out, "{}", reply.message)?;
            }
            if !reply.columns.is_empty() {
                writeln!(out, "{}", reply.columns.join("\t"))?;
            }
            for row in &reply.rows {
                writeln!(out, "{}", row.join("\t"))?;
            }
        }
    }
    Ok(())
}
