//! `tern`: the broker and its tools in one binary.
//!
//! - `server`: run a broker (`tern_server::start`) until SIGINT/SIGTERM (`server`).
//! - `ctl`: operator commands (rabbitmqctl's names) to a running node (`ctl`).
//! - `publish` / `consume`: quick manual use (`tools`).
//! - `bench`: a PerfTest-style load generator (`bench`).
//!
//! `client` is the small AMQP client `publish`, `consume` and `bench` share.

mod bench;
mod client;
mod ctl;
mod server;
mod tools;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tern", version, about = "Tern: an AMQP 0-9-1 message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker: a single node, or a member of a cluster (--cluster-peers).
    Server(Box<server::ServerArgs>),
    /// Operator commands to a running node, rabbitmqctl's names: users, vhosts, permissions,
    /// list_queues and the other lists, status, purge/delete, definitions export/import.
    Ctl(ctl::CtlArgs),
    /// Publish messages.
    Publish(tools::PublishArgs),
    /// Consume messages and print their bodies, one per line.
    Consume(tools::ConsumeArgs),
    /// Load-test a broker: rates and latency percentiles.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace, even when RUST_BACKTRACE is set.
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    if let Command::Ctl(args) = command {
        return ctl::run(args);
    }
    let runtime = runtime()?;
    match command {
        Command::Server(args) => runtime.block_on(server::serve(*args)),
        Command::Publish(args) => runtime.block_on(tools::publish(args)),
        Command::Consume(args) => runtime.block_on(tools::consume(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Ctl(_) => Ok(()),
    }
}

/// The multi-threaded runtime, with tokio's LIFO slot off where the build allows it
/// (`--cfg tokio_unstable`, set in `.cargo/config.toml`). A task woken by another runs next on
/// the waker's thread through that slot, which cannot be stolen: publisher, queue actor and
/// consumer, each waking the next, then all ran on one thread while the other idled. Measured
/// with amqp-blast, scenario (a) (`-x1 -y1 -s16 -q1000 --multi-ack 100`): 390k msg/s at 96%
/// CPU with the slot, 510-575k at 157% without; 1 KiB bodies 207k -> 280k.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        for args in [
            &["tern", "bench", "-x2"][..],
            &["tern", "publish", "-k", "q", "-b", "hi"],
            &["tern", "consume", "-q", "q"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        assert!(
            Cli::try_parse_from(["tern", "consume"]).is_err(),
            "--queue is required"
        );
    }
}
