//! The metadata Raft group: every definition change goes through it.
//!
//! On one node it is a one-member group, so single-node and cluster run the same code; the
//! clustering issue adds members. [`MetaRaft::start`] opens the log and the last snapshot,
//! starts openraft, initializes a fresh node as the group's only voter, and returns once the
//! node leads and has re-applied everything in its log (so the state is complete).
//!
//! - `records`: our binary form of log records and snapshot headers.
//! - `log_store`: the Raft log on a `tern_store::SegmentLog`.
//! - `state_machine`: `Metadata` behind openraft, the apply hook, snapshot files.
//! - `network`: the transport; for one member, one that is never used.

mod log_store;
mod network;
mod records;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{Fatal, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tern_amqp::AmqpError;
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_store::{StoreError, Vfs};

pub use state_machine::{ApplyHook, SharedMeta};

pub type NodeId = u64;

/// What applying an entry answered: the command's outcome, or nothing for Raft's own entries.
#[derive(Debug, Clone)]
pub struct MetaResponse(pub Option<Result<MetaOutcome, AmqpError>>);

openraft::declare_raft_types!(
    /// The metadata group's types.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = NodeId,
        Node = BasicNode,
);

pub type Entry = openraft::Entry<TypeConfig>;

/// This node's id in the group (one member for now).
const LOCAL: NodeId = 1;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata storage: {0}")]
    Store(#[from] StoreError),
    #[error("metadata raft: {0}")]
    Raft(String),
    /// The group was shut down (the node is stopping): an ordinary refusal, not a failure.
    #[error("metadata raft stopped")]
    Stopped,
}

impl MetaError {
    /// Whether the node is merely stopping; every other error means the metadata can no
    /// longer be trusted to be stored.
    pub fn is_stopped(&self) -> bool {
        matches!(self, MetaError::Stopped)
    }
}

fn raft_error(e: impl std::fmt::Display) -> MetaError {
    MetaError::Raft(e.to_string())
}

/// A running metadata group member.
pub struct MetaRaft {
    raft: Raft<TypeConfig>,
    shared: Arc<SharedMeta>,
}

impl MetaRaft {
    /// Open the metadata in `dir` (log in `dir/log`, snapshot in `dir`) and start.
    pub async fn start(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shared: Arc<SharedMeta>,
    ) -> Result<MetaRaft, MetaError> {
        let log = log_store::MetaLogStore::open(vfs.clone(), &dir.join("log"))?;
        let fresh = log.is_empty();
        let sm = state_machine::MetaStateMachine::open(vfs, dir, shared.clone())?;
        let config = Config {
            cluster_name: "tern".into(),
            // One member: the election after a restart is the only wait, keep it short.
            election_timeout_min: 150,
            election_timeout_max: 300,
            heartbeat_interval: 50,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(raft_error)?);
        let raft = Raft::new(LOCAL, config, network::NoPeers, log, sm)
            .await
            .map_err(raft_error)?;
        if fresh {
            let members = BTreeMap::from([(LOCAL, BasicNode::new("local"))]);
            raft.initialize(members).await.map_err(raft_error)?;
        }
        let this = MetaRaft { raft, shared };
        this.await_ready().await?;
        Ok(this)
    }

    /// Wait to lead, and to have applied every entry the log holds.
    async fn await_ready(&self) -> Result<(), MetaError> {
        let wait = self.raft.wait(Some(Duration::from_secs(30)));
        let metrics = wait
            .state(ServerState::Leader, "metadata leader")
            .await
            .map_err(raft_error)?;
        let last = metrics.last_log_index.unwrap_or(0);
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(last), "metadata replayed")
            .await
            .map_err(raft_error)?;
        Ok(())
    }

    /// Commit `cmd` to the log (durably) and apply it; its outcome.
    pub async fn write(
        &self,
        cmd: MetaCommand,
    ) -> Result<Result<MetaOutcome, AmqpError>, MetaError> {
        let response = self.raft.client_write(cmd).await.map_err(|e| match e {
            RaftError::Fatal(Fatal::Stopped) => MetaError::Stopped,
            e => raft_error(e),
        })?;
        response
            .data
            .0
            .ok_or_else(|| MetaError::Raft("a command entry answered nothing".into()))
    }

    pub fn shared(&self) -> &Arc<SharedMeta> {
        &self.shared
    }

    /// Write a snapshot now (and let the log behind it be purged).
    pub async fn snapshot_now(&self) -> Result<(), MetaError> {
        self.raft.trigger().snapshot().await.map_err(raft_error)?;
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .snapshot(applied.unwrap_or_default(), "snapshot written")
            .await
            .map_err(raft_error)?;
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata raft did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests;
