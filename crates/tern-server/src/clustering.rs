//! The broker's side of the cluster: where definition changes are written ([`MetaStore`]: the
//! node's own one-member group, or the cluster's, through any member), and what a clustered
//! node does not do yet.
//!
//! With `cluster_peers` set, the node links to its peers (`tern_cluster::cluster`), forms the
//! cluster with them on a fresh data directory or rejoins it as the member it was, and every
//! definition change is committed by a majority: users, vhosts, permissions, exchanges and
//! exchange-to-exchange bindings are the same on every node. Queues are not yet: a queue lives
//! on one node and clients of other nodes must reach it through that node, which is still to
//! come, so a clustered node refuses to create one (540 NOT_IMPLEMENTED) rather than give each
//! node a queue of its own under one name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tern_amqp::{AmqpError, ReplyCode};
use tern_cluster::cluster::{Cluster, ClusterConfig};
use tern_cluster::handshake::{Identity, Secret};
use tern_cluster::link::Handler;
use tern_cluster::meta::{MetaError, MetaRaft, SharedMeta, Timing};
use tern_cluster::nodes::NodesConfig;
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_store::Vfs;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::StartError;

/// How long a definition change may wait for the cluster to commit it before the client is
/// told the metadata store is unavailable (no leader, or no majority).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where this node's definition changes are written.
pub enum MetaStore {
    Single(MetaRaft),
    Cluster(Cluster),
}

impl MetaStore {
    pub async fn write(
        &self,
        cmd: MetaCommand,
    ) -> Result<Result<MetaOutcome, AmqpError>, MetaError> {
        match self {
            MetaStore::Single(raft) => raft.write(cmd).await,
            MetaStore::Cluster(cluster) => cluster.write(cmd, WRITE_TIMEOUT).await,
        }
    }

    pub async fn shutdown(&self) {
        match self {
            MetaStore::Single(raft) => raft.shutdown().await,
            MetaStore::Cluster(cluster) => cluster.shutdown().await,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, MetaStore::Cluster(_))
    }

    /// Every node of the cluster by name, sorted, and whether it runs as far as this one
    /// knows (it does, or this node has a live link to it); a single node has only itself.
    pub fn nodes(&self, me: &str) -> Vec<(String, bool)> {
        let MetaStore::Cluster(cluster) = self else {
            return vec![(me.to_string(), true)];
        };
        let linked = cluster.nodes().linked();
        let mut all: Vec<(String, bool)> = cluster
            .meta()
            .members()
            .into_iter()
            .map(|(_, name)| {
                let running = name == me || linked.contains(&name);
                (name, running)
            })
            .collect();
        all.sort();
        all
    }
}

/// A cluster's name when `cluster_name` is not set.
pub const CLUSTER_NAME: &str = "tern";

/// What a clustered node needs beyond the config: the secret and the TLS files, read at
/// start.
pub struct Settings {
    secret: Secret,
    tls: Option<tern_cluster::nodes::NodeTls>,
}

/// The cluster settings, checked before anything starts; `None` for a single node.
pub fn settings(config: &Config) -> Result<Option<Settings>, StartError> {
    if config.cluster_peers.is_empty() {
        return Ok(None);
    }
    let Some(path) = &config.cluster_secret_file else {
        return Err(StartError::Config(
            "a node given cluster peers needs the cluster's secret: cluster_secret_file \
             ([cluster] secret_file, TERN_CLUSTER_SECRET_FILE, --cluster-secret-file)"
                .into(),
        ));
    };
    let bytes = std::fs::read(path)
        .map_err(|e| StartError::Config(format!("cluster secret file {}: {e}", path.display())))?;
    let secret = Secret::from_bytes(&bytes).ok_or_else(|| {
        StartError::Config(format!("cluster secret file {} is empty", path.display()))
    })?;
    let tls = match &config.cluster_tls {
        None => None,
        Some(files) => Some(cluster_tls(files)?),
    };
    Ok(Some(Settings { secret, tls }))
}

fn cluster_tls(
    files: &crate::config::ClusterTls,
) -> Result<tern_cluster::nodes::NodeTls, StartError> {
    let empty = |p: &std::path::Path| p.as_os_str().is_empty();
    if empty(&files.cert_file) || empty(&files.key_file) || empty(&files.ca_file) {
        return Err(StartError::Config(
            "TLS on the cluster port needs all three of tls_cert_file, tls_key_file and \
             tls_ca_file ([cluster]; TERN_CLUSTER_TLS_*; --cluster-tls-*)"
                .into(),
        ));
    }
    crate::tls::cluster_tls(files).map_err(|e| StartError::Config(format!("cluster TLS: {e}")))
}

/// Join the cluster: listen on the cluster port, link to the peers, start (or form, on a fresh
/// data directory) the metadata member.
pub async fn open(
    config: &Config,
    settings: Settings,
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    shared: Arc<SharedMeta>,
    broker: Arc<dyn Handler>,
) -> Result<MetaStore, StartError> {
    refuse_single_node_data(dir)?;
    let listener = TcpListener::bind((config.bind, config.cluster_port)).await?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, node = %config.node_name, peers = ?config.cluster_peers, "cluster listener started");
    let identity = Identity {
        cluster_name: config
            .cluster_name
            .clone()
            .unwrap_or_else(|| CLUSTER_NAME.into()),
        node_name: config.node_name.clone(),
        listen: listen.to_string(),
    };
    let mut nodes = NodesConfig::new(identity, settings.secret);
    nodes.tls = settings.tls;
    let cluster_config = ClusterConfig {
        nodes,
        peers: config.cluster_peers.clone(),
        timing: Timing::default(),
        broker: Some(broker),
    };
    let cluster = Cluster::start(cluster_config, listener, vfs, dir, shared).await?;
    tracing::info!(id = cluster.id(), "member of the metadata group");
    Ok(MetaStore::Cluster(cluster))
}

/// A data directory that holds a single node's metadata cannot become a cluster member: its
/// log belongs to a group of one. Say so instead of forming around it.
fn refuse_single_node_data(dir: &Path) -> Result<(), StartError> {
    let log = dir.join("log");
    let has_log = std::fs::read_dir(&log).is_ok_and(|mut d| d.next().is_some());
    if has_log && !dir.join("node").exists() {
        return Err(StartError::Config(format!(
            "{} holds a single node's metadata; a clustered node starts on a fresh data \
             directory (export the definitions first and import them into the cluster)",
            dir.display()
        )));
    }
    Ok(())
}

/// The first id a clustered node hands out (connections, channels, consumers): its node id
/// in the top 16 bits, so that ids are unique in the cluster, and the boot's second (16 bits)
/// below, so that a node restarted before the others noticed does not reuse the ids of its
/// last life (the others clean those up when they see its old link go).
pub fn first_id(node: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let boot = now.map_or(0, |d| d.as_secs()) & 0xFFFF;
    (node << 48) | (boot << 32) | 1
}

/// What a client is told when the cluster could not commit its change in time.
pub fn unavailable(e: &MetaError) -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        format!("the metadata store operation timed out: {e}"),
    )
}
