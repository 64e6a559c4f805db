//! `tern server`: load the configuration (defaults < `--config` file < `TERN_*` variables <
//! these flags; `tern_server::config` owns all but the flags), set up the log, run the broker
//! until SIGTERM or ctrl-c, then shut it down gracefully.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tern_server::config::{LogConfig, LogFormat, MemoryWatermark};
use tern_server::Config;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// A config file (tern.toml; see tern.example.toml). Default: the file TERN_CONFIG names;
    /// without either, none is read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// AMQP port (default 5672; 0: any free one).
    #[arg(long)]
    amqp_port: Option<u16>,
    /// Address to listen on (RabbitMQ's default: all interfaces, 0.0.0.0).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Where durable state lives: the metadata log, durable queues' messages (default
    /// ./tern-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    /// The management HTTP API's port (default 15672; 0: any free one).
    #[arg(long)]
    management_port: Option<u16>,
    /// The Prometheus /metrics port (default 15692; 0: any free one).
    #[arg(long)]
    prometheus_port: Option<u16>,
    /// Serve the management API and UI over HTTPS on this port too (RabbitMQ uses 15671),
    /// with the TLS certificate and key.
    #[arg(long)]
    management_tls_port: Option<u16>,
    /// Serve /metrics over HTTPS on this port too (RabbitMQ uses 15691), with the TLS
    /// certificate and key.
    #[arg(long)]
    prometheus_tls_port: Option<u16>,
    /// Resident memory above which publishers are blocked: a fraction of RAM (0.4, as
    /// RabbitMQ) or a number of bytes.
    #[arg(long)]
    vm_memory_high_watermark: Option<f64>,
    /// The amqps (TLS) port (default 5671); the listener runs when TLS is configured.
    #[arg(long)]
    amqps_port: Option<u16>,
    /// PEM file: the server certificate and its chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file: the server's private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file: CAs to verify client certificates with (asks clients for one).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate (needs a CA file).
    #[arg(long)]
    tls_require_client_cert: bool,
    /// Where SASL EXTERNAL finds the user name in a client certificate (default common-name).
    #[arg(long, value_enum)]
    tls_cert_login: Option<CertLoginArg>,
    /// Log format: text (default) or json, one object per line.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log filter, as RUST_LOG: `info` (default), `warn,tern_server=debug`, ...
    #[arg(long)]
    log_level: Option<String>,
    /// This node's name, name@host (default tern@ and the host name); keep it once clustered.
    #[arg(long)]
    node_name: Option<String>,
    /// The cluster's name (default tern): nodes that name another are refused.
    #[arg(long)]
    cluster_name: Option<String>,
    /// Where other nodes reach this one (default 25672, as RabbitMQ's inter-node port).
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Every node's host:port, comma-separated (this node's own may be among them, so every
    /// node can be given the same list). Without it, a single node.
    #[arg(long, value_delimiter = ',')]
    cluster_peers: Option<Vec<String>>,
    /// The file with the secret all the cluster's nodes share; required with --cluster-peers.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Mutual TLS on the cluster port: this node's certificate chain (PEM)...
    #[arg(long)]
    cluster_tls_cert_file: Option<PathBuf>,
    /// ...its private key (PEM)...
    #[arg(long)]
    cluster_tls_key_file: Option<PathBuf>,
    /// ...and the CA that signed every node's certificate (PEM).
    #[arg(long)]
    cluster_tls_ca_file: Option<PathBuf>,
    /// How long another node may be unreachable before its transient queues are deleted
    /// (default 10000).
    #[arg(long)]
    cluster_node_down_after_ms: Option<u64>,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *field = v;
    }
}

impl ServerArgs {
    /// The configuration from the file and the variables `env` gives, then these flags.
    pub fn config(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref(), env)?;
        set(&mut config.bind, self.bind);
        set(&mut config.amqp_port, self.amqp_port);
        set(&mut config.amqps_port, self.amqps_port);
        set(&mut config.management_port, self.management_port);
        set(&mut config.prometheus_port, self.prometheus_port);
        if self.management_tls_port.is_some() {
            config.management_tls_port = self.management_tls_port;
        }
        if self.prometheus_tls_port.is_some() {
            config.prometheus_tls_port = self.prometheus_tls_port;
        }
        set(&mut config.data_dir, self.data_dir.clone());
        set(&mut config.frame_max_bytes, self.frame_max);
        set(&mut config.heartbeat_secs, self.heartbeat);
        set(&mut config.max_connections, self.max_connections);
        set(&mut config.memory_high_watermark, self.watermark());
        if let Some(users) = &self.loopback_users {
            config.loopback_users = users
                .iter()
                .filter(|u| !u.is_empty() && *u != "none")
                .cloned()
                .collect();
        }
        self.tls(&mut config)?;
        self.log(&mut config.log);
        self.cluster(&mut config);
        Ok(config)
    }

    fn watermark(&self) -> Option<MemoryWatermark> {
        let w = self.vm_memory_high_watermark?;
        Some(if w <= 1.0 {
            MemoryWatermark::Fraction(w)
        } else {
            MemoryWatermark::Bytes(w as u64)
        })
    }

    /// The TLS flags override the configured TLS piece by piece.
    fn tls(&self, config: &mut Config) -> Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let old = config.tls.take();
            config.tls = Some(tern_server::tls::TlsConfig {
                cert_file: cert.clone(),
                key_file: key.clone(),
                ca_file: old.as_ref().and_then(|t| t.ca_file.clone()),
                require_client_cert: old.as_ref().is_some_and(|t| t.require_client_cert),
                cert_login: old.map_or(tern_server::tls::CertLogin::CommonName, |t| t.cert_login),
            });
        }
        let refines =
            self.tls_ca.is_some() || self.tls_require_client_cert || self.tls_cert_login.is_some();
        if !refines {
            return Ok(());
        }
        let tls = config
            .tls
            .as_mut()
            .context("--tls-ca, --tls-require-client-cert and --tls-cert-login need a certificate and key (--tls-cert and --tls-key, or [tls] in the config file)")?;
        set(&mut tls.ca_file, self.tls_ca.clone().map(Some));
        tls.require_client_cert |= self.tls_require_client_cert;
        set(&mut tls.cert_login, self.tls_cert_login.map(Into::into));
        Ok(())
    }

    fn cluster(&self, config: &mut Config) {
        set(&mut config.node_name, self.node_name.clone());
        if self.cluster_name.is_some() {
            config.cluster_name = self.cluster_name.clone();
        }
        set(&mut config.cluster_port, self.cluster_port);
        set(
            &mut config.cluster_node_down_after,
            self.cluster_node_down_after_ms
                .map(std::time::Duration::from_millis),
        );
        if let Some(peers) = &self.cluster_peers {
            config.cluster_peers = peers.iter().filter(|p| !p.is_empty()).cloned().collect();
        }
        if self.cluster_secret_file.is_some() {
            config.cluster_secret_file = self.cluster_secret_file.clone();
        }
        let files = [
            &self.cluster_tls_cert_file,
            &self.cluster_tls_key_file,
            &self.cluster_tls_ca_file,
        ];
        if files.iter().any(|f| f.is_some()) {
            let tls = config.cluster_tls.get_or_insert_with(Default::default);
            set(&mut tls.cert_file, self.cluster_tls_cert_file.clone());
            set(&mut tls.key_file, self.cluster_tls_key_file.clone());
            set(&mut tls.ca_file, self.cluster_tls_ca_file.clone());
        }
    }

    fn log(&self, log: &mut LogConfig) {
        set(&mut log.level, self.log_level.clone());
        set(
            &mut log.format,
            self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
        );
    }
}

/// Log to stderr: text for people, or one JSON object per line with the spans (connection,
/// queue) each event happened in.
fn init_logs(log: &LogConfig) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .with_context(|| format!("log level {:?}", log.level))?;
    // Colours only for a terminal: not into files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    Ok(())
}

pub async fn serve(args: ServerArgs) -> Result<()> {
    let config = args.config(&|var| std::env::var(var).ok())?;
    init_logs(&config.log)?;
    let handle = tern_server::start(config).await?;
    tracing::info!(
        amqp_addr = %handle.amqp_addr(),
        amqps_addr = handle.amqps_addr().map(tracing::field::display),
        management_addr = %handle.management_addr(),
        "tern is ready"
    );
    let failure = tokio::select! {
        r = shutdown_signal() => {
            r?;
            None
        }
        why = handle.failed() => Some(why),
    };
    match &failure {
        None => tracing::info!("shutting down: closing connections, flushing queues"),
        Some(why) => tracing::error!(reason = %why, "storage failed: stopping the node"),
    }
    tokio::select! {
        () = handle.shutdown() => {}
        r = shutdown_signal() => {
            r?;
            anyhow::bail!("a second signal during shutdown: stopped without flushing");
        }
    }
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!("stopped because storage failed: {why}")),
    }
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn config_of(args: &[&str], env: &[(&str, &str)]) -> Config {
        let cli = Cli::try_parse_from(["server"].iter().chain(args)).unwrap();
        let env = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        cli.args.config(&env).unwrap()
    }

    #[test]
    fn without_flags_file_or_variables_the_config_is_the_default() {
        assert_eq!(config_of(&[], &[]), Config::default());
    }

    #[test]
    fn server_flags_override_the_config() {
        let config = config_of(
            &[
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
                "--prometheus-port",
                "0",
                "--log-format",
                "json",
            ],
            &[],
        );
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
        assert_eq!(config.prometheus_port, 0);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn flags_beat_variables_which_beat_the_defaults() {
        let env = [("TERN_AMQP_PORT", "6000"), ("TERN_MANAGEMENT_PORT", "6001")];
        let config = config_of(&["--amqp-port", "7000"], &env);
        assert_eq!((config.amqp_port, config.management_port), (7000, 6001));
    }

    #[test]
    fn cluster_flags_beat_the_cluster_variables() {
        let env = [
            ("TERN_NODE_NAME", "env@h"),
            ("TERN_CLUSTER_PEERS", "a:1,b:2"),
            ("TERN_CLUSTER_SECRET_FILE", "/env/secret"),
        ];
        let flags = [
            "--node-name",
            "flag@h",
            "--cluster-port",
            "26000",
            "--cluster-peers",
            "x:1,y:2,z:3",
            "--cluster-name",
            "blue",
        ];
        let config = config_of(&flags, &env);
        assert_eq!(config.node_name, "flag@h");
        assert_eq!(config.cluster_port, 26000);
        assert_eq!(config.cluster_name.as_deref(), Some("blue"));
        assert_eq!(config.cluster_peers, ["x:1", "y:2", "z:3"]);
        assert_eq!(
            config.cluster_secret_file,
            Some(PathBuf::from("/env/secret"))
        );
    }

    #[test]
    fn tls_flags_refine_tls_from_the_variables() {
        let env = [
            ("TERN_TLS_CERT_FILE", "c.pem"),
            ("TERN_TLS_KEY_FILE", "k.pem"),
        ];
        let config = config_of(&["--tls-ca", "ca.pem", "--tls-cert-login", "san-dns"], &env);
        let tls = config.tls.expect("tls on");
        assert_eq!(tls.cert_file, PathBuf::from("c.pem"));
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.cert_login, tern_server::tls::CertLogin::SanDns);
    }

    #[test]
    fn a_tls_refinement_without_a_certificate_is_refused() {
        let cli = Cli::try_parse_from(["server", "--tls-ca", "ca.pem"]).unwrap();
        let e = cli.args.config(&|_| None).unwrap_err();
        assert!(e.to_string().contains("need a certificate and key"), "{e}");
    }
}
