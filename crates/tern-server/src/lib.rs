//! The running Tern broker.
//!
//! - [`config`]: every port, timeout and limit, with RabbitMQ-like defaults.
//! - `broker`: node-wide shared state: the metadata state machine, the routing snapshot, the
//!   queue registry.
//! - `queue_actor`: a queue as a task owning a `tern_core::queue::QueueState`, fed by a bounded
//!   channel.
//! - `connection`: one client connection: handshake, frame reading, the channel state
//!   machines, heartbeats, and the single buffered writer.
//! - `sink`: the events queue actors send to connections.
//! - `clustering`: where definition changes are written (this node's own metadata group, or
//!   the cluster's), and what a clustered node refuses for now.
//! - `alarms`: the free-disk and memory alarms that block publishers.
//! - [`admin`]: rabbitmqctl's commands (users, vhosts, permissions, list_queues and the other
//!   lists, status, purge / delete, close_connection, definitions), on a local socket.
//! - `auth`: SASL responses, password hashes (RabbitMQ's format), failed-login budgets.
//! - `direct_reply`: RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`), replies without a
//!   queue.
//! - [`tls`]: the amqps listener's rustls configuration and certificate user names.
//! - `harness`: a broker without a listener, to drive a connection from raw bytes (fuzzing).
//! - `management`: the HTTP API, RabbitMQ's paths and fields (users, vhosts, permissions, health),
//!   and the web UI it serves at `/`.
//! - `metrics`: the node's message and connection counters (batched from each connection).
//! - `prometheus`: `/metrics` in Prometheus' text format, RabbitMQ's series names, on its own
//!   port.
//! - `listener`: the accept loops (amqp, amqps), connection admission, the TLS handshake.
//! - `http`: serving the HTTP listeners (management, Prometheus) over TCP or HTTPS.
//! - `token`: random names (`amq.gen-…`, `amq.ctag-…`, reply addresses).
//!
//! [`start`] binds the listener and returns a [`ServerHandle`].

pub mod admin;
mod alarms;
pub mod auth;
mod broker;
mod clustering;
pub mod config;
mod connection;
mod direct_reply;
#[doc(hidden)]
pub mod harness;
mod http;
mod listener;
mod management;
mod metrics;
mod prometheus;
mod queue_actor;
mod remote;
mod sink;
pub mod tls;
mod token;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;

/// A running broker.
pub struct ServerHandle {
    amqp_addr: SocketAddr,
    amqps_addr: Option<SocketAddr>,
    management_addr: SocketAddr,
    prometheus_addr: SocketAddr,
    broker: Arc<Broker>,
    stop: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Held while the broker runs: no second node on this data directory.
    _lock: tern_store::DirLock,
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory: {0}")]
    DataDir(#[from] tern_store::StoreError),
    #[error("{0}")]
    Metadata(#[from] tern_cluster::meta::MetaError),
    #[error("listener: {0}")]
    Listen(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Config(String),
}

impl ServerHandle {
    /// The address the AMQP listener is bound to (useful with port 0).
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The management HTTP API's address.
    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    /// The Prometheus `/metrics` listener's address.
    pub fn prometheus_addr(&self) -> SocketAddr {
        self.prometheus_addr
    }

    /// The amqps (TLS) listener's address, when TLS is configured.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps_addr
    }

    /// Every listener's protocol, as RabbitMQ names it (`amqp`, `amqp/ssl`, `http`, `https`,
    /// `http/prometheus`, `https/prometheus`), and the address it is bound to.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        self.broker.listeners()
    }

    /// Stop accepting, close every connection with 320 CONNECTION_FORCED (as RabbitMQ does on
    /// shutdown), wait up to `SHUTDOWN_WAIT` for them to go, then flush every queue's store
    /// and stop the metadata log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.accept_tasks {
            let _ = task.await;
        }
        self.broker.close_connections_for_shutdown();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.broker.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.broker.close().await;
    }

    /// Change the free-disk limit while running (`rabbitmqctl set_disk_free_limit`); the next
    /// check applies it.
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.broker.alarms.set_disk_free_limit(bytes);
    }

    /// Run an operator command, as `tern ctl` would (`admin::execute`).
    pub async fn admin(&self, args: &[&str], vhost: Option<&str>) -> admin::AdminReply {
        let req = admin::AdminRequest {
            args: args.iter().map(|a| a.to_string()).collect(),
            vhost: vhost.map(str::to_owned),
            body: None,
        };
        admin::execute(&self.broker, req).await
    }

    /// Change the memory high watermark while running (`rabbitmqctl
    /// set_vm_memory_high_watermark absolute N`); the next check applies it.
    pub fn set_memory_high_watermark(&self, bytes: u64) {
        self.broker.alarms.set_memory_high_watermark(bytes);
    }

    /// Wait until the node's storage fails (an fsync error in the metadata log or a durable
    /// queue's store); the reason. The node then confirms nothing more that needs the disk:
    /// its owner should [`shutdown`](Self::shutdown) and, for a process, exit non-zero.
    pub async fn failed(&self) -> String {
        self.broker.failure().await
    }

    /// Connections that finished the handshake and are still open.
    pub fn open_connections(&self) -> usize {
        self.broker.open_connections()
    }
}

/// How long shutdown waits for connections to acknowledge their close.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Start a broker with `config` on the current tokio runtime: lock the data directory, load
/// the metadata it holds (dropping what was not durable), bind the listener. Returns once
/// clients can connect.
pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
    start_on(config, Arc::new(tern_store::OsFs)).await
}

/// [`start`] with the metadata log and the queue stores on `vfs` (a simulated file system
/// that fails on cue, in tests). The data directory's lock and the admin socket stay on the
/// real one.
#[doc(hidden)]
pub async fn start_on(
    config: Config,
    vfs: Arc<dyn tern_store::Vfs>,
) -> Result<ServerHandle, StartError> {
    let cluster = clustering::settings(&config)?;
    let lock = tern_store::DirLock::acquire(&config.data_dir)?;
    let broker = Broker::new(config, vfs);
    broker.open(cluster).await?;
    alarms::spawn_memory_monitor(&broker.alarms, broker.config.memory_check_interval);
    alarms::spawn_disk_monitor(
        &broker.alarms,
        broker.config.data_dir.clone(),
        broker.config.disk_check_interval,
    );
    // Before binding anything: a bad certificate file stops the start with its name.
    let (tls, https) = acceptors(&broker.config)?;
    let listener = TcpListener::bind((broker.config.bind, broker.config.amqp_port)).await?;
    let amqp_addr = listener.local_addr()?;
    broker.listening("amqp", amqp_addr);
    tracing::info!(%amqp_addr, data_dir = %broker.config.data_dir.display(), "AMQP listener started");
    let (stop, stopped) = watch::channel(false);
    if let Err(e) = admin::socket::spawn(broker.clone(), stopped.clone()) {
        let path = admin::socket::path(&broker.config.data_dir);
        tracing::warn!(path = %path.display(), error = %e, "no admin socket: tern ctl cannot reach this node");
    }
    let management_addr = management::spawn(broker.clone(), stopped.clone(), https.clone()).await?;
    tracing::info!(%management_addr, "management API listening");
    let prometheus_addr = prometheus::spawn(broker.clone(), stopped.clone(), https).await?;
    tracing::info!(%prometheus_addr, "Prometheus metrics listening");
    let mut accept_tasks = Vec::new();
    let mut amqps_addr = None;
    if let Some(acceptor) = tls {
        let port = broker.config.amqps_port;
        let tls_listener = TcpListener::bind((broker.config.bind, port)).await?;
        let addr = tls_listener.local_addr()?;
        broker.listening("amqp/ssl", addr);
        tracing::info!(amqps_addr = %addr, "AMQPS (TLS) listener started");
        amqps_addr = Some(addr);
        let task = listener::accept_loop(
            tls_listener,
            broker.clone(),
            stopped.clone(),
            Some(acceptor),
        );
        accept_tasks.push(tokio::spawn(task));
    }
    let task = listener::accept_loop(listener, broker.clone(), stopped, None);
    accept_tasks.push(tokio::spawn(task));
    Ok(ServerHandle {
        amqp_addr,
        amqps_addr,
        management_addr,
        prometheus_addr,
        broker,
        stop,
        accept_tasks,
        _lock: lock,
    })
}

/// The amqps listener's TLS, and the HTTPS listeners' when one is asked for; an HTTPS port
/// without a certificate is an error.
fn acceptors(config: &Config) -> Result<(Option<TlsAcceptor>, Option<TlsAcceptor>), StartError> {
    let wants_https = config.management_tls_port.is_some() || config.prometheus_tls_port.is_some();
    let Some(cfg) = &config.tls else {
        if wants_https {
            return Err(StartError::Config(
                "management_tls_port and prometheus_tls_port need a TLS certificate and key ([tls] cert_file and key_file, or --tls-cert and --tls-key)".into(),
            ));
        }
        return Ok((None, None));
    };
    let https = wants_https.then(|| tls::http_acceptor(cfg)).transpose()?;
    Ok((Some(tls::acceptor(cfg)?), https))
}
