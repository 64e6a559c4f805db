//! Shared helpers for Tern's integration tests.
//!
//! Every test starts its own broker on an ephemeral loopback port ([`TestBroker::start`]), so
//! the tests of a file run in parallel and never see each other's queues.
//!
//! # Checking the expectations against RabbitMQ
//!
//! The tests describe RabbitMQ's behaviour. To check that they do, run them against a real
//! RabbitMQ instead of Tern:
//!
//! ```text
//! bash /work/shared/tools/rabbitmq-local.sh start 5680
//! # x-consistent-hash is a plugin in RabbitMQ:
//! RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/rabbitmq-5680/enabled_plugins \
//!   rabbitmq-plugins -n tern-ref-5680@localhost enable rabbitmq_consistent_hash_exchange
//! TERN_TEST_URI=amqp://guest:guest@127.0.0.1:5680/%2f cargo test -p tern-server --tests
//! ```
//!
//! With `TERN_TEST_URI` set, [`TestBroker::start`] connects every test to that broker (all
//! names are made unique with [`unique`], so the tests still run in parallel), and the tests
//! that need a Tern-specific configuration or a handle on the server process (small limits,
//! handshake timeout, shutdown) print that they are skipped and pass.
//!
//! - `raw`: a tiny hand-written AMQP 0-9-1 client for what only raw bytes can do.
//! - `api`: the management HTTP API through reqwest.
//! - `tools`: the outside programs some tests run (rabbitmqadmin, chromium), found and
//!   version-checked.
//! - `lapin_support` / `amqprs_support`: connection, error capture and consuming helpers for the
//!   two client libraries.

#![allow(dead_code)]

pub mod amqprs_support;
pub mod api;
pub mod lapin_support;
pub mod pki;
pub mod raw;
pub mod tools;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_server::{Config, ServerHandle};

/// How long any single expected event may take before the test fails. Generous for a loaded CI
/// machine, short enough that a hang fails fast.
pub const STEP: Duration = Duration::from_secs(5);

/// How long we watch for something that must *not* happen (an extra delivery, say).
pub const QUIET: Duration = Duration::from_millis(300);

/// The environment variable that points the suite at another broker.
pub const REFERENCE_URI_VAR: &str = "TERN_TEST_URI";

/// A broker for one test: a Tern server of its own, or the reference broker from
/// `TERN_TEST_URI`.
pub struct TestBroker {
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    /// `amqp://guest:guest@host:port/%2f`
    pub uri: String,
    /// A Tern server's configuration (its data directory is removed when the last broker on
    /// it is dropped).
    config: Option<Config>,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(config) = &self.config {
            let _ = std::fs::remove_dir_all(&config.data_dir);
        }
    }
}

impl TestBroker {
    /// A broker with the default (RabbitMQ-like) configuration.
    pub async fn start() -> TestBroker {
        if let Some(uri) = reference_uri() {
            return TestBroker {
                handle: None,
                addr: addr_of_uri(&uri),
                uri,
                config: None,
            };
        }
        Self::start_tern(Config::for_tests()).await
    }

    /// A Tern server with a tweaked configuration. `None` when running against the reference
    /// broker, whose configuration we cannot change: the caller returns early (the test is
    /// skipped).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Option<TestBroker> {
        if reference_uri().is_some() {
            eprintln!("skipped: needs a Tern-specific configuration ({REFERENCE_URI_VAR} is set)");
            return None;
        }
        let mut config = Config::for_tests();
        tweak(&mut config);
        Some(Self::start_tern(config).await)
    }

    /// A Tern server we hold the handle of (for shutdown and connection counts); `None` when
    /// running against the reference broker.
    pub async fn start_own() -> Option<TestBroker> {
        Self::start_with(|_| {}).await
    }

    /// A Tern server whose metadata log and queue stores live on `vfs` (a simulated file
    /// system that fails on cue). `None` against the reference broker.
    pub async fn start_on(vfs: std::sync::Arc<dyn tern_store::Vfs>) -> Option<TestBroker> {
        if reference_uri().is_some() {
            eprintln!(
                "skipped: needs a Tern server on a simulated disk ({REFERENCE_URI_VAR} is set)"
            );
            return None;
        }
        Some(Self::start_tern_on(Config::for_tests(), vfs).await)
    }

    async fn start_tern(config: Config) -> TestBroker {
        Self::start_tern_on(config, std::sync::Arc::new(tern_store::OsFs)).await
    }

    async fn start_tern_on(config: Config, vfs: std::sync::Arc<dyn tern_store::Vfs>) -> TestBroker {
        let handle = tern_server::start_on(config.clone(), vfs)
            .await
            .expect("start tern server");
        let addr = handle.amqp_addr();
        let uri = format!("amqp://guest:guest@{addr}/%2f");
        TestBroker {
            handle: Some(handle),
            addr,
            uri,
            config: Some(config),
        }
    }

    /// Stop the server gracefully and start a new one on the same data directory (Tern only).
    pub async fn restart(self) -> TestBroker {
        self.restart_with(|| {}).await
    }

    /// Like [`restart`](Self::restart), doing `between` while no server runs.
    pub async fn restart_with(mut self, between: impl FnOnce()) -> TestBroker {
        let handle = self.handle.take().expect("a Tern server of our own");
        within("server shutdown", handle.shutdown()).await;
        between();
        let config = self.config.take().expect("a Tern configuration");
        Self::start_tern(config).await
    }

    pub fn is_reference(&self) -> bool {
        self.handle.is_none()
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The URI with other credentials.
    pub fn uri_with_user(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@{}/%2f", self.addr)
    }

    /// The URI for another virtual host.
    pub fn uri_with_vhost(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@{}/{vhost}", self.addr)
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("a Tern server of our own")
    }

    /// Shut the server down (Tern only): every client is closed with 320 CONNECTION_FORCED.
    pub async fn shutdown(mut self) {
        let handle = self.handle.take().expect("a Tern server of our own");
        within("server shutdown", handle.shutdown()).await;
    }

    /// The data directory of a Tern server of our own.
    pub fn data_dir(&self) -> &std::path::Path {
        &self
            .config
            .as_ref()
            .expect("a Tern server of our own")
            .data_dir
    }

    /// Run an operator command, by rabbitmqctl's name and arguments, in `vhost` (`-p`): Tern's
    /// admin commands, or `rabbitmqctl` against the reference broker when
    /// `TERN_TEST_RABBITMQ_NODE` names its node. Ok(message) or Err(error text). None: the
    /// reference broker cannot be reached this way, and the caller skips the test.
    pub async fn ctl(&self, vhost: Option<&str>, args: &[&str]) -> Option<Result<String, String>> {
        if let Some(handle) = &self.handle {
            let reply = handle.admin(args, vhost).await;
            return Some(if reply.ok {
                Ok(reply.message)
            } else {
                Err(reply.message)
            });
        }
        let Some(node) = std::env::var("TERN_TEST_RABBITMQ_NODE").ok() else {
            eprintln!("skipped: set TERN_TEST_RABBITMQ_NODE to run operator commands on the reference broker");
            return None;
        };
        let mut cmd = tokio::process::Command::new("rabbitmqctl");
        cmd.args(["-q", "-n", &node]);
        if let Some(v) = vhost {
            cmd.args(["-p", v]);
        }
        let out = within("rabbitmqctl", cmd.args(args).output())
            .await
            .expect("run rabbitmqctl");
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        Some(if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        })
    }

    /// [`ctl`](Self::ctl) that must succeed.
    pub async fn ctl_ok(&self, vhost: Option<&str>, args: &[&str]) -> Option<()> {
        let result = self.ctl(vhost, args).await?;
        if let Err(e) = result {
            panic!("{args:?} failed: {e}");
        }
        Some(())
    }

    /// The URI for `user` in `vhost` (percent-encoded as needed for `/`).
    pub fn uri_for(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = if vhost == "/" { "%2f" } else { vhost };
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    /// Wait until the server counts `n` open connections (Tern only). There is no event to
    /// await for this, so it polls.
    pub async fn await_open_connections(&self, n: usize) {
        let handle = self.handle();
        eventually(&format!("{n} open connections"), || async {
            handle.open_connections() == n
        })
        .await;
    }
}

fn reference_uri() -> Option<String> {
    std::env::var(REFERENCE_URI_VAR)
        .ok()
        .filter(|s| !s.is_empty())
}

/// `host:port` of an `amqp://user:pass@host:port/vhost` URI.
fn addr_of_uri(uri: &str) -> SocketAddr {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("{REFERENCE_URI_VAR}: cannot parse {host_port}: {e}"))
}

/// A name no other test (nor an earlier run against a long-lived reference broker) uses.
pub fn unique(prefix: &str) -> String {
    static RUN: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = *RUN.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
            % 1_000_000_000
    });
    format!("{prefix}-{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Await `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

/// Poll `check` until it holds, for conditions that have no event to await. Fails after
/// [`STEP`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {STEP:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A body of `len` bytes that is not all one value, so a misplaced chunk shows.
pub fn patterned_body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}
