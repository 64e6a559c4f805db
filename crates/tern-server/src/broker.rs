//! Node-wide shared state: the metadata (behind its Raft group), the routing snapshot readers
//! cache, the registry of running queue actors, and id allocation.
//!
//! Every definition change goes through [`Broker::apply`]: answered from the local metadata
//! when it changes nothing (`Metadata::answer_locally`), else written to the metadata log
//! (`tern_cluster::meta`), which applies it and calls [`BrokerHook`] under the metadata lock:
//! that starts or stops queue actors and publishes the new routing snapshot, also while the
//! log is replayed at start. Readers (connections publishing) never take that lock on the hot
//! path: they cache the snapshot and compare [`Broker::generation`] before each routing batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use tern_amqp::{AmqpError, ReplyCode, ShortStr};
use tern_cluster::meta::{ApplyHook, MetaError, MetaRaft, SharedMeta};
use tern_core::meta::access::{AccessCommand, UserDef, VhostAccess};
use tern_core::meta::{MetaCommand, MetaOutcome, Metadata, QueueDef};
use tern_core::names::{ConnectionId, QueueName, UserName, VhostName};
use tern_core::queue::QueueOptions;
use tern_core::routing::RoutingSnapshot;
use tern_store::Vfs;
use tokio::sync::watch;

use crate::alarms::Alarms;
use crate::auth::{self, LoginLimiter};
use crate::clustering::{self, MetaStore};
use crate::config::Config;
use crate::connection::ConnDetail;
use crate::direct_reply::ReplyRegistry;
use crate::metrics::{Counter, Counters};
use crate::queue_actor::{self, QueueCmd, QueueHandle};
use crate::remote::{RemoteQueue, RemoteQueues};
use crate::sink::{ConnEvent, ConnSink};

pub type QueueKey = (VhostName, QueueName);

pub struct Broker {
    pub config: Config,
    meta: Arc<SharedMeta>,
    /// Set by [`Broker::open`]; every write goes through it.
    store: OnceLock<MetaStore>,
    snapshot: RwLock<Arc<RoutingSnapshot>>,
    queues: RwLock<HashMap<QueueKey, QueueHandle>>,
    generation: AtomicU64,
    /// `Metadata::access_generation` as of the last change: connections re-read their
    /// permissions when it moves.
    access_generation: AtomicU64,
    next_id: AtomicU64,
    pub connection_count: AtomicUsize,
    /// Open connections per vhost, against `max_connections_per_vhost`.
    vhost_connections: Mutex<HashMap<VhostName, usize>>,
    /// Open (post-handshake) connections, to reach them from outside: shutdown, operators.
    connections: Mutex<HashMap<ConnectionId, (ConnSink, Arc<ConnInfo>)>>,
    /// Set (under `connections`' lock) at shutdown: a connection whose handshake ends after
    /// it is closed as soon as it registers.
    shutting_down: AtomicBool,
    /// Direct reply-to consumers, by reply address.
    pub replies: ReplyRegistry,
    /// Resource alarms (free disk space, memory) that block publishers.
    pub alarms: Arc<Alarms>,
    /// Failed logins per source address.
    pub logins: LoginLimiter,
    /// Message and connection totals (Prometheus, `/api/overview`).
    pub metrics: Counters,
    /// When the node started (uptime in `/api/nodes` and `tern ctl status`).
    pub started: std::time::Instant,
    /// Every listener bound: its protocol as RabbitMQ names it (`amqp`, `amqp/ssl`, `http`,
    /// `https`, `http/prometheus`, `https/prometheus`) and the address it got.
    listeners: Mutex<Vec<(&'static str, std::net::SocketAddr)>>,
    /// The file system the metadata log and the queue stores live on (the OS's, or a
    /// simulated one in tests).
    pub vfs: Arc<dyn Vfs>,
    /// Why the node can no longer keep its promises (a failed fsync): set once, watched by
    /// [`crate::ServerHandle::failed`], whose owner stops the node.
    failure: watch::Sender<Option<String>>,
    /// Queues homed on other nodes, and the service for the queues homed here.
    pub remote: Arc<RemoteQueues>,
}

/// An open connection as operators see it.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: ConnectionId,
    /// RabbitMQ's form: `peer:port -> local:port`.
    pub name: String,
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    pub user: String,
    pub vhost: String,
    pub tls: bool,
    /// Milliseconds since the epoch.
    pub connected_at: u64,
    pub client_properties: tern_amqp::FieldTable,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// Open channels, kept by the connection.
    pub channels: AtomicUsize,
    pub mechanism: String,
    /// What an amqps connection's TLS handshake negotiated.
    pub tls_session: Option<crate::tls::TlsSession>,
    /// Socket reads and writes, and their bytes (RabbitMQ's recv_cnt / recv_oct, send_cnt /
    /// send_oct), counted by the connection per read and per write.
    pub io: IoCounts,
}

/// A connection's socket traffic.
#[derive(Debug, Default)]
pub struct IoCounts {
    pub recv_cnt: AtomicU64,
    pub recv_oct: AtomicU64,
    pub send_cnt: AtomicU64,
    pub send_oct: AtomicU64,
}

impl IoCounts {
    pub fn received(&self, bytes: usize) {
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
        self.recv_oct.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
        self.send_oct.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One queue's counts, as operators see them.
pub struct QueueFigures {
    pub vhost: VhostName,
    pub name: QueueName,
    pub stats: queue_actor::QueueStats,
}

/// One connection's place in its vhost's count; gives it back when dropped.
pub struct VhostSlot {
    broker: Arc<Broker>,
    vhost: VhostName,
}

impl Drop for VhostSlot {
    fn drop(&mut self) {
        let mut counts = self
            .broker
            .vhost_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.vhost) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.vhost);
            }
        }
    }
}

/// A read-only view a connection caches: the routing snapshot plus the generation it belongs to.
pub struct RoutingView {
    pub generation: u64,
    pub snapshot: Arc<RoutingSnapshot>,
}

impl Broker {
    /// A broker with empty metadata; [`Broker::open`] loads what the data directory holds.
    pub fn new(config: Config, vfs: Arc<dyn Vfs>) -> Arc<Self> {
        let snapshot = Metadata::new().snapshot();
        Arc::new_cyclic(|me: &Weak<Broker>| Broker {
            meta: Arc::new(SharedMeta::new(Arc::new(BrokerHook(me.clone())))),
            store: OnceLock::new(),
            snapshot: RwLock::new(snapshot),
            queues: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            access_generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            connection_count: AtomicUsize::new(0),
            connections: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            vhost_connections: Mutex::new(HashMap::new()),
            replies: ReplyRegistry::default(),
            alarms: Arc::new(Alarms::new(
                config.disk_free_limit_bytes,
                config
                    .memory_high_watermark
                    .bytes(crate::alarms::total_memory_bytes()),
            )),
            logins: LoginLimiter::new(
                config.login_failure_limit,
                config.login_failure_window,
                config.login_failure_addresses,
            ),
            metrics: Counters::default(),
            started: std::time::Instant::now(),
            listeners: Mutex::new(Vec::new()),
            vfs,
            failure: watch::Sender::new(None),
            remote: RemoteQueues::new(me.clone()),
            config,
        })
    }

    /// This node's name (`name@host`), as the API, `tern ctl` and Prometheus show it.
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// The cluster's name: `cluster_name` when set; else `tern` in a cluster, and a single
    /// node's own name, as RabbitMQ names a cluster after its first node.
    pub fn cluster_name(&self) -> &str {
        if let Some(name) = &self.config.cluster_name {
            return name;
        }
        match self.store.get() {
            Some(store) if store.is_cluster() => clustering::CLUSTER_NAME,
            _ => &self.config.node_name,
        }
    }

    /// Every node of the cluster (this one alone when single), sorted by name, and whether it
    /// runs as far as this node knows.
    pub fn cluster_nodes(&self) -> Vec<(String, bool)> {
        match self.store.get() {
            Some(store) => store.nodes(self.node_name()),
            None => vec![(self.node_name().to_string(), true)],
        }
    }

    /// Whether `user` may log in from `ip`: users in `loopback_users` (guest, by default)
    /// only from loopback, as in RabbitMQ.
    pub fn loopback_allows(&self, user: &str, ip: std::net::IpAddr) -> bool {
        let listed = self.config.loopback_users.iter().any(|u| u == user);
        !listed || ip.is_loopback()
    }

    /// A listener is bound (`protocol` as in [`Broker::listeners`]).
    pub fn listening(&self, protocol: &'static str, addr: std::net::SocketAddr) {
        let mut all = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        all.push((protocol, addr));
    }

    /// Every listener bound, with the port it got (the one asked for, or a free one for 0).
    pub fn listeners(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fresh id, unique in the cluster (connections, channels, consumers share one counter;
    /// a clustered node's ids carry its node id in their top 16 bits).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Bumped after every definition change, once the snapshot and queue registry are updated.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current routing view. Read the generation first so a concurrent change is noticed.
    pub fn routing_view(&self) -> RoutingView {
        let generation = self.generation();
        let snapshot = match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        RoutingView {
            generation,
            snapshot,
        }
    }

    /// Every running queue, ordered by vhost and name (for scrapes: taken under the registry's
    /// read lock, so it never waits for a queue).
    pub fn queue_handles(&self) -> Vec<QueueHandle> {
        let queues = self.queues.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&QueueKey, &QueueHandle)> = queues.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, q)| q.clone()).collect()
    }

    /// Ask every queue in `handles` for its figures at once, then collect the answers until
    /// `wait` has passed (a queue that has not answered by then is left out).
    pub async fn queue_figures(
        &self,
        handles: Vec<QueueHandle>,
        wait: std::time::Duration,
    ) -> Vec<QueueFigures> {
        let mut asks = Vec::with_capacity(handles.len());
        for q in handles {
            let (reply, answer) = tokio::sync::oneshot::channel();
            // Only publishes wait for inbox credit: this send never blocks.
            if q.send(QueueCmd::Stats { reply }).await.is_ok() {
                asks.push((q, answer));
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut rows = Vec::with_capacity(asks.len());
        for (q, answer) in asks {
            if let Ok(Ok(stats)) = tokio::time::timeout_at(deadline, answer).await {
                rows.push(QueueFigures {
                    vhost: q.0.vhost.clone(),
                    name: q.name().clone(),
                    stats,
                });
            }
        }
        rows
    }

    pub fn queue(&self, vhost: &VhostName, name: &QueueName) -> Option<QueueHandle> {
        let queues = self.queues.read().unwrap_or_else(|p| p.into_inner());
        queues.get(&(vhost.clone(), name.clone())).cloned()
    }

    /// Look up several queues under one read lock (the routing hot path).
    pub fn queues_for(&self, vhost: &VhostName, names: &[QueueName], out: &mut Vec<QueueHandle>) {
        let queues = self.queues.read().unwrap_or_else(|p| p.into_inner());
        let mut key = (vhost.clone(), QueueName::default());
        for name in names {
            key.1 = name.clone();
            if let Some(q) = queues.get(&key) {
                out.push(q.clone());
            }
        }
    }

    pub fn vhost_exists(&self, vhost: &VhostName) -> bool {
        self.lock_meta().vhost_exists(vhost)
    }

    /// What `user` may do in `vhost`; None if it may not open it.
    pub fn vhost_access(&self, vhost: &VhostName, user: &UserName) -> Option<VhostAccess> {
        self.lock_meta().vhost_access(vhost, user)
    }

    /// Moves whenever users or permissions change.
    pub fn access_generation(&self) -> u64 {
        self.access_generation.load(Ordering::Acquire)
    }

    /// Whether `user` exists and `password` is theirs; the error says why not, for the log
    /// (it never holds the password).
    pub fn check_password(&self, user: &str, password: &str) -> Result<(), &'static str> {
        let hash = {
            let meta = self.lock_meta();
            let def = meta.access().user(user).ok_or("no such user")?;
            def.password.clone().ok_or("the user has no password")?
        };
        if auth::verify_password(&hash, password) {
            Ok(())
        } else {
            Err("invalid credentials")
        }
    }

    /// For SASL EXTERNAL: the certificate named the user, which must exist.
    pub fn check_user_exists(&self, user: &str) -> Result<(), &'static str> {
        match self.lock_meta().access().user(user) {
            Some(_) => Ok(()),
            None => Err("no such user (named by the client certificate)"),
        }
    }

    pub fn queues_owned_by(&self, conn: ConnectionId) -> Vec<QueueKey> {
        self.lock_meta().queues_owned_by(conn)
    }

    /// Read the metadata under its lock (keep `f` short: every definition change waits).
    pub fn with_meta<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        f(&self.lock_meta())
    }

    fn lock_meta(&self) -> std::sync::MutexGuard<'_, Metadata> {
        self.meta.lock()
    }

    /// Start the metadata group on `data_dir/meta` (replaying it: queue actors start for the
    /// queues it holds), then drop what was not durable, as RabbitMQ does at boot. With
    /// `cluster`, as a member of the cluster's group instead; its transient definitions are
    /// the cluster's, and stay while any node runs.
    pub async fn open(
        self: &Arc<Self>,
        cluster: Option<clustering::Settings>,
    ) -> Result<(), crate::StartError> {
        // Non-durable queues' paged messages do not outlive the node.
        let paging = self.config.data_dir.join("paging");
        if paging.exists() {
            if let Err(e) = std::fs::remove_dir_all(&paging) {
                tracing::warn!(dir = %paging.display(), error = %e, "cannot clear old paging files");
            }
        }
        let dir = self.config.data_dir.join("meta");
        let (vfs, shared) = (self.vfs.clone(), self.meta.clone());
        let store = match cluster {
            None => MetaStore::Single(MetaRaft::start(vfs, &dir, shared).await?),
            Some(settings) => {
                let services = self.remote.service();
                clustering::open(&self.config, settings, vfs, &dir, shared, services).await?
            }
        };
        if let MetaStore::Cluster(cluster) = &store {
            self.next_id
                .store(clustering::first_id(cluster.id()), Ordering::Relaxed);
            self.remote.set_nodes(cluster.nodes().clone());
            tokio::spawn(drop_queues_of_down_nodes(Arc::downgrade(self)));
        }
        let drop = match &store {
            MetaStore::Single(_) => MetaCommand::DropTransient,
            MetaStore::Cluster(_) => MetaCommand::DropNodeTransient {
                node: self.node_name().into(),
            },
        };
        if self.store.set(store).is_err() {
            return Err(MetaError::Raft("the broker was opened twice".into()).into());
        }
        if let Err(e) = self.apply(drop).await {
            tracing::warn!(error = %e, "dropping transient definitions failed");
        }
        self.bootstrap().await;
        Ok(())
    }

    /// On a fresh node, create the default user (`default_user`, guest/guest unless
    /// configured) with every permission on `/`, as RabbitMQ does. Once only: a node whose
    /// default user was deleted does not get it back.
    async fn bootstrap(self: &Arc<Self>) {
        let user = match &self.config.default_user {
            Some((name, password)) => match auth::hash_password(password) {
                Ok(hash) => Some(UserDef {
                    name: UserName::from(name.as_str()),
                    password: Some(hash),
                    tags: vec!["administrator".into()],
                }),
                Err(_) => {
                    tracing::error!("no randomness for a password salt: default user not created");
                    return;
                }
            },
            None => None,
        };
        let cmd = MetaCommand::Access(AccessCommand::Bootstrap { user });
        if let Err(e) = self.apply(cmd).await {
            tracing::warn!(error = %e, "creating the default user failed");
        }
    }

    /// Whether `node` is home to a transient queue.
    fn has_transient_queues_on(&self, node: &str) -> bool {
        self.with_meta(|m| {
            m.vhosts()
                .any(|v| m.queues(v).any(|q| !q.durable && q.homed_on(node)))
        })
    }

    /// Take `node` (stopped) out of the cluster, and the queues homed on it with it (as
    /// RabbitMQ's forget_cluster_node does); how many queues went.
    pub async fn forget_node(self: &Arc<Self>, node: &str) -> Result<usize, String> {
        let Some(MetaStore::Cluster(cluster)) = self.store.get() else {
            return Err("this node is not clustered".into());
        };
        cluster.forget(node).await.map_err(|e| e.to_string())?;
        let cmd = MetaCommand::ForgetNode { node: node.into() };
        match self.apply(cmd).await {
            Ok(MetaOutcome::QueuesDropped { queues }) => Ok(queues.len()),
            Ok(_) => Ok(0),
            Err(e) => Err(format!(
                "{node} was forgotten, but not its queues: {}",
                e.message
            )),
        }
    }

    /// Clean shutdown: every queue makes what it wrote durable, then the metadata group stops.
    pub async fn close(&self) {
        let queues: Vec<QueueHandle> = {
            let queues = self.queues.read().unwrap_or_else(|p| p.into_inner());
            queues.values().cloned().collect()
        };
        for q in queues {
            let flushed = q.ask(|reply| QueueCmd::Flush { reply });
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flushed).await;
        }
        if let Some(store) = self.store.get() {
            store.shutdown().await;
        }
    }

    /// Storage failed (an fsync error, say): what this node confirms may not be on disk, so
    /// it must stop. The first reason is kept and logged; whoever owns the node
    /// ([`crate::ServerHandle::failed`], `tern server`'s main) shuts it down and exits non-zero.
    /// Nothing here exits the process: a library does not decide that for its embedder.
    pub fn storage_failed(&self, reason: String) {
        let first = self.failure.send_if_modified(|failure| {
            let first = failure.is_none();
            if first {
                *failure = Some(reason.clone());
            }
            first
        });
        if first {
            tracing::error!(%reason, "storage failed: the node must stop");
        }
    }

    /// Why this node cannot serve clients now, if it cannot: its storage failed, it is
    /// stopping, or (clustered) its metadata group has no leader it knows of.
    pub fn out_of_service(&self) -> Option<String> {
        if let Some(why) = self.failure.borrow().clone() {
            return Some(why);
        }
        if self.shutting_down.load(Ordering::Acquire) {
            return Some("the node is shutting down".into());
        }
        match self.store.get() {
            None => Some("the node is starting".into()),
            Some(MetaStore::Cluster(c)) if c.meta().leader().is_none() => Some(
                "the metadata store has no leader: fewer than a majority of nodes reachable".into(),
            ),
            Some(_) => None,
        }
    }

    /// Whether storage has failed on this node (then it serves nothing), and why.
    pub fn storage_failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Wait until storage fails; why.
    pub async fn failure(&self) -> String {
        let mut rx = self.failure.subscribe();
        let failed = rx.wait_for(Option::is_some).await;
        // The sender lives in `self`, which outlives this call: the wait ends only with a value.
        failed.ok().and_then(|f| f.clone()).unwrap_or_default()
    }

    /// What a failed metadata write answers the client who asked for it. A node that is
    /// stopping refuses with 320 CONNECTION_FORCED, as RabbitMQ does to every client at
    /// shutdown; any other failure means the log cannot be written, so the node must stop too.
    fn write_refused(&self, e: MetaError) -> AmqpError {
        if e.is_stopped() {
            return AmqpError::new(ReplyCode::ConnectionForced, SHUTDOWN_TEXT);
        }
        if e.is_unavailable() {
            return clustering::unavailable(&e);
        }
        self.storage_failed(format!("metadata storage failed: {e}"));
        AmqpError::new(
            ReplyCode::InternalError,
            "metadata storage failed: the node is stopping (see its log)",
        )
    }

    /// Apply a definition change: answered locally if it changes nothing, else written to
    /// the metadata log (durably) and applied; [`BrokerHook`] does the rest.
    pub async fn apply(self: &Arc<Self>, cmd: MetaCommand) -> Result<MetaOutcome, AmqpError> {
        let answer = self.apply_unmetered(cmd).await;
        if let Ok(outcome) = &answer {
            self.count_queue_churn(outcome);
        }
        answer
    }

    /// [`Broker::apply`] without the churn counting.
    async fn apply_unmetered(
        self: &Arc<Self>,
        mut cmd: MetaCommand,
    ) -> Result<MetaOutcome, AmqpError> {
        if let Some(answer) = self.lock_meta().answer_locally(&cmd) {
            return answer;
        }
        let Some(store) = self.store.get() else {
            return Err(AmqpError::new(
                ReplyCode::InternalError,
                "metadata not open",
            ));
        };
        if store.is_cluster() {
            self.place_queues(&mut cmd);
        }
        match store.write(cmd).await {
            Ok(outcome) => outcome,
            Err(e) => Err(self.write_refused(e)),
        }
    }

    /// Give each queue a new command creates its home node: this one (`client-local`, and
    /// always for an exclusive queue), or the running node with the fewest queues
    /// (`balanced`).
    fn place_queues(&self, cmd: &mut MetaCommand) {
        match cmd {
            MetaCommand::DeclareQueue {
                def,
                passive: false,
                ..
            } if def.home.is_none() => def.home = Some(self.home_for(def).into()),
            MetaCommand::Batch(cmds) => cmds.iter_mut().for_each(|c| self.place_queues(c)),
            _ => {}
        }
    }

    fn home_for(&self, def: &QueueDef) -> String {
        if def.exclusive_owner.is_some() || !def.wants_balanced_home() {
            return self.node_name().to_string();
        }
        let counts = self.lock_meta().queues_per_home();
        let running = self.cluster_nodes().into_iter().filter(|(_, up)| *up);
        let fewest = running.min_by_key(|(name, _)| {
            let count = counts.get(&ShortStr::from(name.as_str())).copied();
            let count = count.unwrap_or(0);
            (count, name.clone())
        });
        fewest.map_or_else(|| self.node_name().to_string(), |(name, _)| name)
    }

    /// A handle on the queue `def`: its actor, started here if this node is its home, else
    /// the way to its home.
    fn start_queue(self: &Arc<Self>, vhost: VhostName, def: &QueueDef) -> QueueHandle {
        match def.home.as_ref().filter(|h| h.as_str() != self.node_name()) {
            None => queue_actor::spawn(self, vhost, def.clone(), queue_options(def)),
            Some(home) => {
                let window = self.config.queue_inbox_messages;
                let remote = RemoteQueue::new(&self.remote, home.to_string(), window);
                QueueHandle::remote(vhost, def.clone(), remote)
            }
        }
    }

    /// Queues declared, created and deleted through this node (RabbitMQ's churn counters).
    fn count_queue_churn(&self, outcome: &MetaOutcome) {
        match outcome {
            MetaOutcome::QueueDeclared { created, .. } => {
                self.metrics.add(Counter::QueuesDeclared, 1);
                if *created {
                    self.metrics.add(Counter::QueuesCreated, 1);
                }
            }
            MetaOutcome::QueueDeleted { existed: true, .. } => {
                self.metrics.add(Counter::QueuesDeleted, 1)
            }
            MetaOutcome::Batch { outcomes, .. } => {
                outcomes.iter().for_each(|o| self.count_queue_churn(o))
            }
            _ => {}
        }
    }

    /// The registry follows a whole new state: actors for queues it has and we do not, stop
    /// those it lacks.
    fn resync(self: &Arc<Self>, meta: &Metadata) {
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        let mut wanted: HashMap<QueueKey, QueueDef> = HashMap::new();
        for vhost in meta.vhosts() {
            for def in meta.queues(vhost) {
                wanted.insert((vhost.clone(), def.name.clone()), def.clone());
            }
        }
        queues.retain(|key, q| {
            let keep = wanted.contains_key(key);
            if !keep {
                q.stop();
            }
            keep
        });
        for (key, def) in wanted {
            let vhost = key.0.clone();
            queues
                .entry(key)
                .or_insert_with(|| self.start_queue(vhost, &def));
        }
        drop(queues);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = meta.snapshot();
        self.access_generation
            .store(meta.access_generation(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// What a change means outside the metadata: queue actors started and stopped, the new
    /// routing snapshot published.
    fn after_apply(
        self: &Arc<Self>,
        meta: &Metadata,
        vhost: Option<VhostName>,
        deleted_queue: Option<QueueName>,
        outcome: &MetaOutcome,
    ) {
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        let stop = |queues: &mut HashMap<QueueKey, QueueHandle>, key: QueueKey| {
            if let Some(q) = queues.remove(&key) {
                q.stop();
            }
        };
        match (outcome, vhost) {
            (MetaOutcome::QueueDeclared { created: true, def }, Some(vhost)) => {
                let handle = self.start_queue(vhost.clone(), def);
                queues.insert((vhost, def.name.clone()), handle);
            }
            (MetaOutcome::QueueDeleted { .. }, Some(vhost)) => {
                if let Some(name) = deleted_queue {
                    queues.remove(&(vhost, name));
                }
            }
            (MetaOutcome::VhostDeleted { queues: gone, .. }, Some(vhost)) => {
                for name in gone {
                    stop(&mut queues, (vhost.clone(), name.clone()));
                }
            }
            (MetaOutcome::QueuesDropped { queues: gone }, _) => {
                for key in gone {
                    stop(&mut queues, key.clone());
                }
            }
            _ => {}
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = meta.snapshot();
        self.access_generation
            .store(meta.access_generation(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Delete a queue's definition and bindings (its actor has checked if-unused / if-empty,
    /// cancelled its consumers, and is stopping).
    pub async fn remove_queue(self: &Arc<Self>, vhost: &VhostName, name: &QueueName) {
        let cmd = MetaCommand::DeleteQueue {
            vhost: vhost.clone(),
            name: name.clone(),
        };
        if let Err(e) = self.apply(cmd).await {
            tracing::warn!(queue = %name, %vhost, error = %e, "deleting queue definition failed");
        }
    }

    /// Whether a new client connection may be accepted (max_connections).
    pub fn try_admit_connection(&self) -> bool {
        let limit = self.config.max_connections;
        self.connection_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// A place for one more connection in `vhost` (max_connections_per_vhost), held until
    /// the returned slot is dropped.
    pub fn admit_to_vhost(self: &Arc<Self>, vhost: &VhostName) -> Option<VhostSlot> {
        let mut counts = self
            .vhost_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(vhost.clone()).or_insert(0);
        if *n >= self.config.max_connections_per_vhost {
            return None;
        }
        *n += 1;
        Some(VhostSlot {
            broker: self.clone(),
            vhost: vhost.clone(),
        })
    }

    pub fn release_connection(&self) {
        self.connection_count.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn register_connection(&self, id: ConnectionId, sink: ConnSink, info: Arc<ConnInfo>) {
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if self.shutting_down.load(Ordering::Acquire) {
            let _ = sink.send(shutdown_close());
        }
        conns.insert(id, (sink, info));
        self.metrics.add(Counter::ConnectionsOpened, 1);
    }

    /// Close every open connection, and each that opens from now on, with 320
    /// CONNECTION_FORCED and RabbitMQ's shutdown text.
    pub fn close_connections_for_shutdown(&self) {
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        self.shutting_down.store(true, Ordering::Release);
        for (sink, _) in conns.values() {
            let _ = sink.send(shutdown_close());
        }
    }

    /// What is known of every open connection (the management API's `/api/connections`).
    pub fn connection_infos(&self) -> Vec<Arc<ConnInfo>> {
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let mut infos: Vec<Arc<ConnInfo>> = conns.values().map(|(_, i)| i.clone()).collect();
        infos.sort_by_key(|i| i.id);
        infos
    }

    /// Close one connection (by its name, as the management API lists it); false if none.
    pub fn close_connection(&self, name: &str, code: ReplyCode, text: &str) -> bool {
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let Some((sink, _)) = conns.values().find(|(_, i)| i.name == name) else {
            return false;
        };
        let _ = sink.send(ConnEvent::Close {
            code,
            text: text.to_owned(),
        });
        true
    }

    /// Every open connection with what its task says of its channels and consumers. A
    /// connection that does not answer within a second (stuck behind a full queue) is listed
    /// without them.
    pub async fn describe_connections(&self) -> Vec<(Arc<ConnInfo>, ConnDetail)> {
        let asked: Vec<_> = {
            let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            let mut asked: Vec<_> = conns
                .values()
                .map(|(sink, info)| {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let _ = sink.send(ConnEvent::Describe { reply });
                    (info.clone(), answer)
                })
                .collect();
            asked.sort_by_key(|(i, _)| i.id);
            asked
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut out = Vec::with_capacity(asked.len());
        for (info, answer) in asked {
            let detail = tokio::time::timeout_at(deadline, answer).await;
            out.push((info, detail.ok().and_then(Result::ok).unwrap_or_default()));
        }
        out
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if conns.remove(&id).is_some() {
            self.metrics.add(Counter::ConnectionsClosed, 1);
        }
    }

    /// Channels open on every connection.
    pub fn open_channels(&self) -> usize {
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .values()
            .map(|(_, i)| i.channels.load(Ordering::Relaxed))
            .sum()
    }

    pub fn open_connections(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// On the metadata leader: the transient queues (exclusive ones included) of a node that has
/// been unreachable for `cluster_node_down_after` go, as RabbitMQ deletes a down node's. Every
/// member keeps the times, so a new leader knows how long a node has been away.
async fn drop_queues_of_down_nodes(broker: Weak<Broker>) {
    let mut down_since: HashMap<String, std::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let Some(b) = broker.upgrade() else {
            return;
        };
        let Some(MetaStore::Cluster(cluster)) = b.store.get() else {
            return;
        };
        if cluster.nodes().stopped() {
            return;
        }
        for (name, running) in b.cluster_nodes() {
            if running {
                down_since.remove(&name);
            } else {
                down_since
                    .entry(name)
                    .or_insert_with(std::time::Instant::now);
            }
        }
        if cluster.meta().leader() != Some(cluster.id()) {
            continue;
        }
        let grace = b.config.cluster_node_down_after;
        let gone: Vec<String> = down_since
            .iter()
            .filter(|(name, since)| since.elapsed() >= grace && b.has_transient_queues_on(name))
            .map(|(name, _)| name.clone())
            .collect();
        for node in gone {
            let cmd = MetaCommand::DropNodeTransient {
                node: node.as_str().into(),
            };
            match b.apply(cmd).await {
                Ok(MetaOutcome::QueuesDropped { queues }) => {
                    tracing::info!(%node, queues = queues.len(), "deleted the transient queues of a node that is down")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%node, error = %e, "could not delete a down node's transient queues")
                }
            }
        }
    }
}

/// What RabbitMQ says when a node stops: clients show "CONNECTION_FORCED - broker forced
/// connection closure with reason 'shutdown'".
fn shutdown_close() -> ConnEvent {
    ConnEvent::Close {
        code: ReplyCode::ConnectionForced,
        text: SHUTDOWN_TEXT.into(),
    }
}

const SHUTDOWN_TEXT: &str = "broker forced connection closure with reason 'shutdown'";

/// Follows the metadata for the broker: called by the metadata state machine under its lock.
struct BrokerHook(Weak<Broker>);

impl ApplyHook for BrokerHook {
    fn applied(
        &self,
        meta: &Metadata,
        cmd: &MetaCommand,
        outcome: &Result<MetaOutcome, AmqpError>,
    ) {
        let (Some(broker), Ok(outcome)) = (self.0.upgrade(), outcome) else {
            return;
        };
        let deleted_queue = match cmd {
            MetaCommand::DeleteQueue { name, .. } => Some(name.clone()),
            _ => None,
        };
        broker.after_apply(meta, command_vhost(cmd).cloned(), deleted_queue, outcome);
    }

    fn replaced(&self, meta: &Metadata) {
        if let Some(broker) = self.0.upgrade() {
            broker.resync(meta);
        }
    }
}

fn queue_options(def: &QueueDef) -> QueueOptions {
    let sac = def
        .arguments
        .get("x-single-active-consumer")
        .and_then(|v| v.as_bool());
    QueueOptions {
        single_active_consumer: sac.unwrap_or(false),
    }
}

fn command_vhost(cmd: &MetaCommand) -> Option<&VhostName> {
    let vhost = match cmd {
        MetaCommand::DeclareExchange { vhost, .. }
        | MetaCommand::DeleteExchange { vhost, .. }
        | MetaCommand::DeclareQueue { vhost, .. }
        | MetaCommand::DeleteQueue { vhost, .. }
        | MetaCommand::Bind { vhost, .. }
        | MetaCommand::Unbind { vhost, .. } => vhost,
        MetaCommand::AddVhost { name } | MetaCommand::DeleteVhost { name } => name,
        MetaCommand::DropTransient
        | MetaCommand::DropNodeTransient { .. }
        | MetaCommand::ForgetNode { .. }
        | MetaCommand::Access(_)
        | MetaCommand::Batch(_) => return None,
    };
    Some(vhost)
}

/// 404 for a queue that does not exist, worded as RabbitMQ does.
pub fn no_queue(vhost: &VhostName, name: &QueueName) -> AmqpError {
    AmqpError::new(
        ReplyCode::NotFound,
        format!("no queue '{name}' in vhost '{vhost}'"),
    )
}
