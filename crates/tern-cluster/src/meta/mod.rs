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
//! - `rpc`: the Raft RPCs in our binary form, for the node links.

mod log_store;
mod network;
mod records;
mod rpc;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tern_amqp::AmqpError;
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_store::{StoreError, Vfs};

use crate::nodes::Nodes;

pub use network::META_GROUP;
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
    /// This member does not lead (any more): the write goes to the one that does.
    #[error("this node does not lead the metadata group")]
    NotLeader,
    /// No leader could commit the change in time: fewer than a majority of the members are
    /// reachable. The change may still be made once they are.
    #[error("{0}")]
    Unavailable(String),
}

impl MetaError {
    /// Whether the node is merely stopping; every other error but [`MetaError::NotLeader`] and
    /// [`MetaError::Unavailable`] means the metadata can no longer be trusted to be stored.
    pub fn is_stopped(&self) -> bool {
        matches!(self, MetaError::Stopped)
    }

    /// Whether the cluster could not take the change now (no leader, no majority): the node
    /// itself is sound.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MetaError::NotLeader | MetaError::Unavailable(_))
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MetaError {
    match e {
        RaftError::Fatal(Fatal::Stopped) => MetaError::Stopped,
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MetaError::NotLeader,
        e => MetaError::Unavailable(e.to_string()),
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

/// How a member of a clustered metadata group starts: its id, its links to the other
/// members, and its Raft timing.
pub struct Member {
    pub id: NodeId,
    pub nodes: Nodes,
    pub timing: Timing,
}

/// Raft's clocks, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Timing {
    /// One member: the election after a restart is the only wait, keep it short.
    const SINGLE: Timing = Timing {
        heartbeat_ms: 50,
        election_min_ms: 150,
        election_max_ms: 300,
    };
}

impl Default for Timing {
    /// Several members on busy machines: a leader is missed only after several heartbeats
    /// did not arrive, so a loaded node does not set off elections.
    fn default() -> Self {
        Timing {
            heartbeat_ms: 250,
            election_min_ms: 1_000,
            election_max_ms: 2_000,
        }
    }
}

fn raft_config(timing: Timing) -> Result<Arc<Config>, MetaError> {
    let config = Config {
        cluster_name: "tern".into(),
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        heartbeat_interval: timing.heartbeat_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(raft_error)?))
}

impl MetaRaft {
    /// Open the metadata in `dir` (log in `dir/log`, snapshot in `dir`) and start as the
    /// group's only member: initialized when fresh, ready (leading, replayed) on return.
    pub async fn start(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shared: Arc<SharedMeta>,
    ) -> Result<MetaRaft, MetaError> {
        let log = log_store::MetaLogStore::open(vfs.clone(), &dir.join("log"))?;
        let fresh = log.is_empty();
        let sm = state_machine::MetaStateMachine::open(vfs, dir, shared.clone())?;
        let config = raft_config(Timing::SINGLE)?;
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

    /// Open the metadata in `dir` and start as a member of a clustered group, talking to the
    /// others over `member.nodes`. Returns at once: a fresh group has no leader until one
    /// member runs [`MetaRaft::initialize`].
    pub async fn start_member(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shared: Arc<SharedMeta>,
        member: Member,
    ) -> Result<MetaRaft, MetaError> {
        let log = log_store::MetaLogStore::open(vfs.clone(), &dir.join("log"))?;
        let sm = state_machine::MetaStateMachine::open(vfs, dir, shared.clone())?;
        let network = network::LinkNetwork {
            nodes: member.nodes,
        };
        let raft = Raft::new(member.id, raft_config(member.timing)?, network, log, sm)
            .await
            .map_err(raft_error)?;
        Ok(MetaRaft { raft, shared })
    }

    /// A fresh group's first membership: each member's id and node name.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), MetaError> {
        let members: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, name)| (id, BasicNode::new(name)))
            .collect();
        self.raft.initialize(members).await.map_err(raft_error)
    }

    /// The member that leads now, as far as this one knows.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Entries this member has applied, as its metrics last said (they may lag the state by a
    /// moment: to wait for a change, use [`MetaRaft::await_applied`] with its index).
    pub fn applied_index(&self) -> u64 {
        let metrics = self.raft.metrics();
        let applied = metrics.borrow().last_applied;
        applied.map_or(0, |id| id.index)
    }

    /// Every member of the group (voters and learners), by id, with its node name.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let nodes = metrics.membership_config.membership().nodes();
        nodes.map(|(id, n)| (*id, n.addr.clone())).collect()
    }

    /// The voting members' ids.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// Add member `id` (node `name`) as a learner, wait until it has caught up, then make it
    /// a voter: two membership changes, the second through joint consensus. On the leader.
    pub async fn add_voter(&self, id: NodeId, name: String) -> Result<(), MetaError> {
        if !self.voters().contains(&id) {
            let node = BasicNode::new(name);
            self.raft
                .add_learner(id, node, true)
                .await
                .map_err(membership_error)?;
        }
        let mut voters = self.voters();
        if voters.insert(id) {
            self.raft
                .change_membership(voters, false)
                .await
                .map_err(membership_error)?;
        }
        Ok(())
    }

    /// Stand for election now (the leader is gone: see `cluster::hasten_elections`).
    pub async fn stand_for_election(&self) {
        if let Err(e) = self.raft.trigger().elect().await {
            tracing::debug!(error = %e, "could not stand for election");
        }
    }

    /// Take member `id` (voter or learner) out of the group (joint consensus). On the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MetaError> {
        let mut voters = self.voters();
        let change: openraft::ChangeMembers<NodeId, BasicNode> = if voters.remove(&id) {
            voters.into()
        } else {
            openraft::ChangeMembers::RemoveNodes([id].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// The node name of member `id`, as the membership records it.
    pub fn member_name(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let node = metrics.membership_config.membership().get_node(&id);
        node.map(|n| n.addr.clone())
    }

    /// Wait up to `timeout` for a leader to be known; its id.
    pub async fn await_leader(&self, timeout: Duration) -> Result<NodeId, MetaError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a metadata leader")
            .await
            .map_err(raft_error)?;
        metrics
            .current_leader
            .ok_or_else(|| MetaError::Raft("no leader".into()))
    }

    /// Wait up to `timeout` until this member has applied the log up to `index`.
    pub async fn await_applied(&self, index: u64, timeout: Duration) -> Result<(), MetaError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "metadata applied")
            .await
            .map_err(raft_error)?;
        Ok(())
    }

    /// Answer a peer's Raft call to this group (the body of a `Service::Raft` call).
    pub async fn serve_rpc(&self, body: Bytes) -> Result<Bytes, String> {
        network::serve(&self.raft, body).await
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
        Ok(self.write_indexed(cmd).await?.1)
    }

    /// [`MetaRaft::write`], with the log index the command got: a member that has applied
    /// that far has it.
    pub async fn write_indexed(
        &self,
        cmd: MetaCommand,
    ) -> Result<(u64, Result<MetaOutcome, AmqpError>), MetaError> {
        let response = self.raft.client_write(cmd).await.map_err(|e| match e {
            RaftError::Fatal(Fatal::Stopped) => MetaError::Stopped,
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MetaError::NotLeader,
            e => raft_error(e),
        })?;
        let outcome = response.data.0;
        let outcome =
            outcome.ok_or_else(|| MetaError::Raft("a command entry answered nothing".into()))?;
        Ok((response.log_id.index, outcome))
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
