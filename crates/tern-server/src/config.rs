//! Broker configuration: every port, timeout and limit has a name here.
//!
//! [`Config::load`] builds one from its sources, each overriding the one before: the defaults
//! below, a `tern.toml` file (`file`), then `TERN_*` environment variables (`env`). Both
//! sources fill the same [`layer::Layer`], whose sections and keys are declared once; the
//! binary applies its command-line flags last.

mod env;
mod file;
mod layer;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address the AMQP listener binds (RabbitMQ: all interfaces).
    pub bind: IpAddr,
    /// AMQP port; 0 picks a free one (tests).
    pub amqp_port: u16,
    /// Where durable state will live (unused until the durability issue).
    pub data_dir: PathBuf,
    /// frame_max offered in connection.tune (RabbitMQ: 131072).
    pub frame_max_bytes: u32,
    /// channel_max offered in connection.tune (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat offered in connection.tune, seconds (RabbitMQ: 60).
    pub heartbeat_secs: u16,
    /// Time from TCP accept to connection.open-ok before the socket is closed (RabbitMQ: 10 s).
    pub handshake_timeout: Duration,
    /// Largest frame accepted before connection.tune-ok (RabbitMQ: 8 KiB until login).
    pub pre_auth_frame_max_bytes: u32,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Most simultaneous connections to one vhost (RabbitMQ's vhost limit max-connections);
    /// one more gets 530 at connection.open.
    pub max_connections_per_vhost: usize,
    /// Largest message body accepted (RabbitMQ: 16 MiB by default); larger → 406.
    pub max_message_size_bytes: u64,
    /// Messages a queue actor's inbox holds before publishers wait (publisher backpressure).
    pub queue_inbox_messages: usize,
    /// Ready messages above which a queue whose consumers are busy draining holds publishers
    /// back until they catch up (flow control; see `queue_actor::flow`).
    pub queue_flow_backlog_messages: usize,
    /// Deliveries a no-ack consumer may have in flight to its connection's writer.
    pub no_ack_credit: u32,
    /// Bytes of messages a no-ack consumer may have in flight to its connection's writer: with
    /// large messages this, not the count, bounds the memory a slow no-ack reader holds.
    pub no_ack_credit_bytes: u64,
    /// Ready messages a queue keeps in memory; more are paged to disk (a durable queue's own
    /// log, or a scratch file for a non-durable one) and read back as consumers catch up.
    pub queue_memory_messages: usize,
    /// Bytes of ready messages a queue keeps in memory before paging.
    pub queue_memory_bytes: u64,
    /// Bytes of direct replies (`amq.rabbitmq.reply-to`) a connection may have waiting to be
    /// written; replies beyond it are dropped (direct reply-to is at most once, as in RabbitMQ).
    pub direct_reply_backlog_bytes: u64,
    /// Free disk space on the data directory's file system below which publishers are
    /// blocked (RabbitMQ's disk_free_limit, 50 MB by default).
    pub disk_free_limit_bytes: u64,
    /// How often free disk space is checked.
    pub disk_check_interval: Duration,
    /// Resident memory above which publishers are blocked (RabbitMQ's
    /// vm_memory_high_watermark: 0.4 of the machine's memory by default).
    pub memory_high_watermark: MemoryWatermark,
    /// How often resident memory is checked.
    pub memory_check_interval: Duration,
    /// Consumers one channel may have.
    pub max_consumers_per_channel: usize,
    /// The user a fresh node creates, with every permission on `/` (RabbitMQ's default_user
    /// and default_pass: guest / guest). None: no user at all until one is added.
    pub default_user: Option<(String, String)>,
    /// Users that may connect from loopback addresses only (RabbitMQ: `["guest"]`). Empty
    /// lets guest in from anywhere; only do that with another password.
    pub loopback_users: Vec<String>,
    /// Failed logins from one address within `login_failure_window` after which its further
    /// attempts are refused unchecked until the window ends.
    pub login_failure_limit: u32,
    pub login_failure_window: Duration,
    /// Source addresses whose failures are tracked at once.
    pub login_failure_addresses: usize,
    /// The management HTTP API's port (RabbitMQ: 15672); 0 picks a free one.
    pub management_port: u16,
    /// The Prometheus /metrics port (RabbitMQ: 15692); 0 picks a free one
    pub prometheus_port: u16,
    /// An HTTPS listener for the management API and UI too (RabbitMQ's
    /// `management.ssl.port`, usually 15671), with `tls`'s certificate; needs `tls`.
    pub management_tls_port: Option<u16>,
    /// An HTTPS listener for `/metrics` too (RabbitMQ's `prometheus.ssl.port`, usually
    /// 15691), with `tls`'s certificate; needs `tls`.
    pub prometheus_tls_port: Option<u16>,
    /// Largest request body the management API takes (RabbitMQ: 20 MiB).
    pub management_max_body_bytes: usize,
    /// Largest single request on the admin socket (`tern ctl`): one command line, or one chunk
    /// of a definitions import (ctl sends those in chunks well under this).
    pub admin_max_request_bytes: usize,
    /// The amqps (TLS) listener's port; 0 picks a free one. Only used with `tls`.
    pub amqps_port: u16,
    /// TLS for the amqps listener; None: no amqps listener.
    pub tls: Option<crate::tls::TlsConfig>,
    /// How the binary writes its log (the broker itself only emits `tracing` events).
    pub log: LogConfig,
    /// This node's name, `name@host` as RabbitMQ names nodes (default `tern@` and the host
    /// name). A clustered node keeps it in its data directory and must keep using it.
    pub node_name: String,
    /// The cluster's name: nodes that name another are refused. Unset, a cluster is called
    /// `tern` and a single node's is its own node name (RabbitMQ names a cluster after its
    /// first node).
    pub cluster_name: Option<String>,
    /// The port other nodes reach this one on (RabbitMQ's inter-node port: 25672).
    pub cluster_port: u16,
    /// The nodes of the cluster (`host:port` of their cluster ports; this node's own may be
    /// among them, so that every node can be given the same list). Empty: a single node.
    pub cluster_peers: Vec<String>,
    /// A file holding the secret every node of the cluster shares (as RabbitMQ's Erlang
    /// cookie); required with `cluster_peers`. It is never sent: nodes prove they know it.
    pub cluster_secret_file: Option<PathBuf>,
    /// Mutual TLS on the cluster port: this node's certificate chain and key, and the CA that
    /// signed every node's. All three, or none (links in the clear, the secret still proven).
    pub cluster_tls: Option<ClusterTls>,
    /// How long another node may stay unreachable before its transient queues (exclusive ones
    /// included: their connections are gone with it) are deleted, as RabbitMQ deletes them
    /// when it sees a node go down.
    pub cluster_node_down_after: Duration,
}

/// The files of a node's TLS on the cluster port (an empty path: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            amqp_port: 5672,
            data_dir: PathBuf::from("./tern-data"),
            frame_max_bytes: 131_072,
            channel_max: 2047,
            heartbeat_secs: 60,
            handshake_timeout: Duration::from_secs(10),
            pre_auth_frame_max_bytes: 8192,
            max_connections: 65_536,
            max_connections_per_vhost: usize::MAX,
            max_message_size_bytes: 16 * 1024 * 1024,
            queue_inbox_messages: 4096,
            queue_flow_backlog_messages: 8192,
            no_ack_credit: 2000,
            no_ack_credit_bytes: 4 * 1024 * 1024,
            queue_memory_messages: 16_384,
            queue_memory_bytes: 64 * 1024 * 1024,
            direct_reply_backlog_bytes: 32 * 1024 * 1024,
            disk_free_limit_bytes: 50_000_000,
            disk_check_interval: Duration::from_secs(1),
            memory_high_watermark: MemoryWatermark::Fraction(0.4),
            memory_check_interval: Duration::from_millis(500),
            max_consumers_per_channel: 65_536,
            default_user: Some(("guest".into(), "guest".into())),
            loopback_users: vec!["guest".into()],
            login_failure_limit: 10,
            login_failure_window: Duration::from_secs(60),
            login_failure_addresses: 65_536,
            management_port: 15672,
            prometheus_port: 15692,
            management_tls_port: None,
            prometheus_tls_port: None,
            management_max_body_bytes: 20 * 1024 * 1024,
            admin_max_request_bytes: 1024 * 1024,
            amqps_port: 5671,
            tls: None,
            log: LogConfig::default(),
            node_name: format!("tern@{}", host_name()),
            cluster_name: None,
            cluster_port: 25672,
            cluster_peers: Vec::new(),
            cluster_secret_file: None,
            cluster_tls: None,
            cluster_node_down_after: Duration::from_secs(10),
        }
    }
}

/// The machine's host name ("localhost" if it has none we can read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

/// The log's format and filter.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive: `info`, `warn,tern_server=debug`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            // openraft's info lines are its own bookkeeping (votes, log ids), not news.
            level: "info,openraft=warn".into(),
        }
    }
}

/// One log line per event: for people (`text`) or for log collectors (`json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown variant `{s}`, expected `text` or `json`")),
        }
    }
}

/// Why a configuration could not be loaded: each names the file and key, or the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}, line {line}: [{section}] {key}: {message}", path.display())]
    Key {
        path: PathBuf,
        line: usize,
        section: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    /// Settings that do not go together (`origin`: the file, or "the environment").
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The variable that names a config file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "TERN_CONFIG";

impl Config {
    /// The defaults, overridden by the config file (`file`, else the one `TERN_CONFIG`
    /// names; none is read implicitly), overridden by `TERN_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let from_env = env(CONFIG_FILE_VAR).map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            config.apply_toml(&text, &path)?;
        }
        let layer = env::read(env)?;
        layer
            .apply(&mut config)
            .map_err(|message| ConfigError::Invalid {
                origin: "the environment".into(),
                message,
            })?;
        Ok(config)
    }

    /// Override these settings with those of a config file's text (`path` names it in errors).
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let layer = file::parse(text, path)?;
        layer.apply(self).map_err(|message| ConfigError::Invalid {
            origin: format!("config file {}", path.display()),
            message,
        })
    }
}

/// A memory limit as RabbitMQ states it: relative to the machine's memory, or absolute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryWatermark {
    Fraction(f64),
    Bytes(u64),
}

impl MemoryWatermark {
    /// The limit in bytes, given the machine's memory.
    pub fn bytes(self, total_memory: u64) -> u64 {
        match self {
            MemoryWatermark::Fraction(f) => (total_memory as f64 * f.clamp(0.0, 1.0)) as u64,
            MemoryWatermark::Bytes(b) => b,
        }
    }
}

impl Config {
    /// Defaults on loopback with an ephemeral port and a fresh data directory of its own under
    /// the system temp dir (`tern-test-PID-N`): what tests want. The caller removes it.
    pub fn for_tests() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tern-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            amqp_port: 0,
            amqps_port: 0,
            management_port: 0,
            prometheus_port: 0,
            cluster_port: 0,
            data_dir: dir,
            // One name on every machine, so tests can assert it.
            node_name: "tern@localhost".into(),
            ..Config::default()
        }
    }
}
