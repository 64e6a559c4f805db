//! `tern`: the broker and its tools in one binary.
//!
//! - `server`: run a broker (`tern_server::start`) until SIGINT/SIGTERM.
//! - `ctl`: operator commands (rabbitmqctl's names) to a running node (`ctl`).
//! - `publish` / `consume`: quick manual use (`tools`).
//! - `bench`: a PerfTest-style load generator (`bench`).
//!
//! `client` is the small AMQP client `publish`, `consume` and `bench` share.

mod bench;
mod client;
mod ctl;
mod tools;

use std::net::IpAddr;
use std::path::PathBuf;
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
    /// Run a broker (single node).
    Server(ServerArgs),
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

#[derive(clap::Args)]
struct ServerArgs {
    /// AMQP port.
    #[arg(long, default_value_t = 5672)]
    amqp_port: u16,
    /// Address to listen on (RabbitMQ's default: all interfaces).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Where durable state lives: the metadata log, durable queues' messages.
    #[arg(long, default_value = "./tern-data")]
    data_dir: PathBuf,
    /// frame_max offered to clients.
    #[arg(long)]
    frame_max: Option<u32>,
    /// Heartbeat offered to clients, seconds (0: off).
    #[arg(long)]
    heartbeat: Option<u16>,
    /// Most simultaneous client connections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Users that may connect from loopback only, comma-separated (RabbitMQ's loopback_users;
    /// default guest). `none` lets every user connect from anywhere.
    #[arg(long, value_delimiter = ',')]
    loopback_users: Option<Vec<String>>,
    /// The management HTTP API's port (0: any free one).
    #[arg(long, default_value_t = 15672)]
    management_port: u16,
    /// The Prometheus /metrics port (RabbitMQ's 15692; 0: any free one).
    #[arg(long, default_value_t = 15692)]
    prometheus_port: u16,
    /// Resident memory above which publishers are blocked: a fraction of RAM (0.4, as
    /// RabbitMQ) or a number of bytes.
    #[arg(long)]
    vm_memory_high_watermark: Option<f64>,
    /// The amqps (TLS) port; the listener runs when --tls-cert and --tls-key are given.
    #[arg(long, default_value_t = 5671)]
    amqps_port: u16,
    /// PEM file: the server certificate and its chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file: the server's private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file: CAs to verify client certificates with (asks clients for one).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate (needs --tls-ca).
    #[arg(long, requires = "tls_ca")]
    tls_require_client_cert: bool,
    /// Where SASL EXTERNAL finds the user name in a client certificate.
    #[arg(long, value_enum, default_value = "common-name")]
    tls_cert_login: CertLoginArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CertLoginArg {
    CommonName,
    SanDns,
    SanEmail,
    SanUri,
}

impl From<CertLoginArg> for tern_server::tls::CertLogin {
    fn from(a: CertLoginArg) -> Self {
        match a {
            CertLoginArg::CommonName => Self::CommonName,
            CertLoginArg::SanDns => Self::SanDns,
            CertLoginArg::SanEmail => Self::SanEmail,
            CertLoginArg::SanUri => Self::SanUri,
        }
    }
}

impl ServerArgs {
    fn config(&self) -> tern_server::Config {
        let mut config = tern_server::Config {
            bind: self.bind,
            amqp_port: self.amqp_port,
            data_dir: self.data_dir.clone(),
            ..Default::default()
        };
        if let Some(v) = self.frame_max {
            config.frame_max_bytes = v;
        }
        if let Some(v) = self.heartbeat {
            config.heartbeat_secs = v;
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        config.amqps_port = self.amqps_port;
        config.management_port = self.management_port;
        config.prometheus_port = self.prometheus_port;
        if let Some(w) = self.vm_memory_high_watermark {
            config.memory_high_watermark = if w <= 1.0 {
                tern_server::config::MemoryWatermark::Fraction(w)
            } else {
                tern_server::config::MemoryWatermark::Bytes(w as u64)
            };
        }
        config.tls = self.tls();
        if let Some(users) = &self.loopback_users {
            config.loopback_users = users
                .iter()
                .filter(|u| !u.is_empty() && *u != "none")
                .cloned()
                .collect();
        }
        config
    }

    fn tls(&self) -> Option<tern_server::tls::TlsConfig> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        Some(tern_server::tls::TlsConfig {
            cert_file: cert.clone(),
            key_file: key.clone(),
            ca_file: self.tls_ca.clone(),
            require_client_cert: self.tls_require_client_cert,
            cert_login: self.tls_cert_login.into(),
        })
    }
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
        Command::Server(args) => runtime.block_on(serve(args)),
        Command::Publish(args) => runtime.block_on(tools::publish(args)),
        Command::Consume(args) => runtime.block_on(tools::consume(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Ctl(_) => Ok(()),
    }
}

async fn serve(args: ServerArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let handle = tern_server::start(args.config()).await?;
    tracing::info!(addr = %handle.amqp_addr(), "tern is ready");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
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

async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_args(args: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(["tern", "server"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Server(a) => a,
            _ => panic!("not the server command"),
        }
    }

    #[test]
    fn server_defaults_match_rabbitmq_and_keep_the_config_defaults() {
        let config = server_args(&[]).config();
        let default = tern_server::Config::default();
        assert_eq!(config.amqp_port, 5672);
        assert_eq!(config.bind.to_string(), "0.0.0.0");
        assert_eq!(config.data_dir, PathBuf::from("./tern-data"));
        assert_eq!(config.frame_max_bytes, default.frame_max_bytes);
        assert_eq!(config.heartbeat_secs, default.heartbeat_secs);
        assert_eq!(config.max_connections, default.max_connections);
    }

    #[test]
    fn server_flags_override_the_config() {
        let config = server_args(&[
            "--amqp-port",
            "5699",
            "--bind",
            "127.0.0.1",
            "--data-dir",
            "/tmp/d",
            "--frame-max",
            "8192",
            "--heartbeat",
            "0",
            "--max-connections",
            "7",
        ])
        .config();
        assert_eq!(
            (config.amqp_port, config.bind.to_string()),
            (5699, "127.0.0.1".into())
        );
        assert_eq!(config.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(
            (
                config.frame_max_bytes,
                config.heartbeat_secs,
                config.max_connections
            ),
            (8192, 0, 7)
        );
    }

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
