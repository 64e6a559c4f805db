//! A node's place in a cluster: its links, its metadata member, and how a fresh set of
//! nodes forms one cluster with no manual step.
//!
//! Forming: every node dials every address of its peer list (which may name the node
//! itself) and waits until each has answered a handshake, so that all know the same set of
//! node names. The node with the smallest name is the seed: it numbers the nodes 1, 2, … in
//! name order, sends each peer that list ([`Control::Form`]), and once every peer has started
//! its metadata member with the id it was given, starts its own and initializes the group
//! with them all. A node keeps its name and id in `node` in its metadata directory; with that
//! file it starts as the member it was, and catches up from the others (log or snapshot).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_amqp::AmqpError;
use tern_core::meta::{decode_command, decode_outcome, encode_command, encode_outcome};
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_store::Vfs;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::link::{Answer, CallError, Handler, Link};
use crate::meta::{Member, MetaError, MetaRaft, NodeId, SharedMeta, Timing, META_GROUP};
use crate::nodes::{Nodes, NodesConfig};
use crate::wire::Service;

/// How a node takes its place in a cluster.
pub struct ClusterConfig {
    pub nodes: NodesConfig,
    /// Peer addresses (`host:port`); may include this node's own.
    pub peers: Vec<String>,
    pub timing: Timing,
    /// Who serves the broker's services (`Service::Queue`, `Service::Node`); `None` refuses
    /// such calls.
    pub broker: Option<Arc<dyn Handler>>,
}

/// A request between nodes about the cluster itself (the body of a `Service::Control` call).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// From the seed of a fresh cluster: these are the members, by id; start yours.
    Form { members: BTreeMap<NodeId, String> },
    /// From a member that does not lead: write this change. Answered with the log index it
    /// got and its outcome.
    Write(MetaCommand),
    /// From a fresh node: let me join; answered with its id (`membership`).
    Join { name: String },
    /// From a node that joined and runs its member: make it a voter.
    Promote { id: NodeId, name: String },
    /// Take this node (not running) out of the cluster.
    Forget { name: String },
}

/// A node that is a member of the cluster's metadata group.
pub struct Cluster {
    nodes: Nodes,
    id: NodeId,
    meta: Arc<MetaRaft>,
    calls: Arc<ClusterCalls>,
}

impl Cluster {
    /// Link to the peers and start the metadata member: the one `dir` says this node is, or,
    /// on a fresh node, the one the cluster's forming gives it (see the module docs). Returns
    /// once the member runs; the group may not have a leader yet.
    pub async fn start(
        config: ClusterConfig,
        listener: TcpListener,
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shared: Arc<SharedMeta>,
    ) -> Result<Cluster, MetaError> {
        let (forms_tx, forms) = mpsc::channel(4);
        let calls = Arc::new(ClusterCalls {
            meta: OnceLock::new(),
            nodes: OnceLock::new(),
            joins: Mutex::new(BTreeMap::new()),
            forms: forms_tx,
            broker: config.broker.clone(),
        });
        let me = config.nodes.identity.node_name.clone();
        let nodes = Nodes::start(config.nodes, Arc::new(calls.clone()), listener);
        let _ = calls.nodes.set(nodes.clone());
        config.peers.iter().for_each(|a| nodes.dial(a.clone()));
        let record = NodeRecord::load(vfs.as_ref(), dir)?;
        let start = Starter {
            vfs,
            dir: dir.to_path_buf(),
            shared,
            nodes: nodes.clone(),
            timing: config.timing,
            calls: calls.clone(),
        };
        let started = match record {
            Some(record) if record.name == me => {
                start.member(record.id).await.map(|m| (record.id, m))
            }
            Some(record) => Err(MetaError::Raft(format!(
                "this data directory belongs to node '{}', not '{me}'",
                record.name
            ))),
            None => start.form(&config.peers, forms).await,
        };
        let (id, meta) = match started {
            Ok(started) => started,
            Err(e) => {
                // Not a member: no links either (the others would take it for running).
                nodes.stop().await;
                return Err(e);
            }
        };
        let hasten = hasten_elections(meta.clone(), nodes.clone(), id, config.timing);
        tokio::spawn(hasten);
        Ok(Cluster {
            nodes,
            id,
            meta,
            calls,
        })
    }

    /// Take `node` (stopped) out of the cluster, through the leader.
    pub async fn forget(&self, node: &str) -> Result<(), MetaError> {
        let forget = Control::Forget {
            name: node.to_string(),
        };
        let answer = self.calls.on_leader(forget.encode(), forget).await;
        answer.map(|_| ()).map_err(MetaError::Unavailable)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    pub fn meta(&self) -> &Arc<MetaRaft> {
        &self.meta
    }

    /// Commit a definition change from any member: the leader writes it; a follower forwards
    /// it to the leader, then waits until it has applied the change itself, so that what the
    /// client sees next on this node includes it. Within `timeout`, or
    /// [`MetaError::Unavailable`]: no leader, or no majority to commit.
    pub async fn write(
        &self,
        cmd: MetaCommand,
        timeout: Duration,
    ) -> Result<Result<MetaOutcome, AmqpError>, MetaError> {
        let deadline = Instant::now() + timeout;
        let forward = Control::Write(cmd.clone()).encode();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.meta.leader() {
                Some(id) if id == self.id => self.write_here(&cmd, left, timeout).await,
                Some(id) => self.forward(id, forward.clone(), left).await,
                None => Err(MetaError::NotLeader),
            };
            match attempt {
                Err(MetaError::NotLeader) if Instant::now() < deadline => {
                    let _ = self.meta.await_leader(Duration::from_millis(50)).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(MetaError::NotLeader) => return Err(unavailable(timeout)),
                other => return other,
            }
        }
    }

    /// Write as the leader within `left` (of the `timeout` the caller gave).
    async fn write_here(
        &self,
        cmd: &MetaCommand,
        left: Duration,
        timeout: Duration,
    ) -> Result<Result<MetaOutcome, AmqpError>, MetaError> {
        match tokio::time::timeout(left, self.meta.write(cmd.clone())).await {
            Ok(written) => written,
            Err(_) => Err(unavailable(timeout)),
        }
    }

    /// Have the leader `id` write the change; wait until this member has applied it.
    async fn forward(
        &self,
        id: NodeId,
        body: Bytes,
        left: Duration,
    ) -> Result<Result<MetaOutcome, AmqpError>, MetaError> {
        let name = self.meta.member_name(id).ok_or(MetaError::NotLeader)?;
        let link = self.nodes.link(&name).ok_or(MetaError::NotLeader)?;
        let answer = match link.call(Service::Control, body, left).await {
            Ok(answer) => answer,
            Err(CallError::Failed(_, why)) if why == NOT_LEADER => {
                return Err(MetaError::NotLeader)
            }
            Err(CallError::Failed(_, why)) => return Err(remote(&name, &why)),
            Err(_) => return Err(MetaError::NotLeader),
        };
        let (index, outcome) = decode_written(answer).map_err(|e| remote(&name, &e))?;
        if let Err(e) = self.meta.await_applied(index, left).await {
            let why = format!("committed, but not applied here in time: {e}");
            return Err(MetaError::Unavailable(why));
        }
        Ok(outcome)
    }

    /// Stop the metadata member and every link.
    pub async fn shutdown(&self) {
        self.meta.shutdown().await;
        self.nodes.stop().await;
    }
}

/// A member whose link to the leader went down (its process died, say) stands for election
/// as soon as the other members will listen, instead of waiting out its election timeout
/// after that. They refuse any candidate while the leader's lease (the longest election
/// timeout since they last heard from it) runs, so it waits that long, plus a random bit so
/// that members do not all stand at once, and stands only if the leader is still unreachable
/// and unreplaced. Without this, a new leader comes up to two election timeouts later.
async fn hasten_elections(meta: Arc<MetaRaft>, nodes: Nodes, me: NodeId, timing: Timing) {
    let poll = Duration::from_millis(50);
    let lease = Duration::from_millis(timing.election_max_ms);
    while !nodes.stopped() {
        tokio::time::sleep(poll).await;
        let Some(leader) = meta.leader().filter(|l| *l != me) else {
            continue;
        };
        let Some(name) = meta.member_name(leader) else {
            continue;
        };
        if nodes.link(&name).is_some() {
            continue;
        }
        tokio::time::sleep(lease + jitter(timing.heartbeat_ms)).await;
        if meta.leader() == Some(leader) && nodes.link(&name).is_none() && !nodes.stopped() {
            tracing::info!(leader = %name, "the metadata leader is unreachable: standing for election");
            meta.stand_for_election().await;
            tokio::time::sleep(lease).await;
        }
    }
}

/// A random wait of up to `max_ms` milliseconds.
fn jitter(max_ms: u64) -> Duration {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    Duration::from_millis(u64::from(u16::from_be_bytes(b)) % max_ms.max(1))
}

/// What starting a member needs.
struct Starter {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    shared: Arc<SharedMeta>,
    nodes: Nodes,
    timing: Timing,
    calls: Arc<ClusterCalls>,
}

/// A Form from the seed, and where to say whether our member started.
type FormRequest = (BTreeMap<NodeId, String>, oneshot::Sender<Answer>);

impl Starter {
    async fn member(&self, id: NodeId) -> Result<Arc<MetaRaft>, MetaError> {
        let member = Member {
            id,
            nodes: self.nodes.clone(),
            timing: self.timing,
        };
        let raft = MetaRaft::start_member(self.vfs.clone(), &self.dir, self.shared.clone(), member);
        let raft = Arc::new(raft.await?);
        let _ = self.calls.meta.set(raft.clone());
        Ok(raft)
    }

    /// A fresh node: learn every peer's name, then form the cluster as its seed or wait for
    /// the seed's word.
    async fn form(
        &self,
        peers: &[String],
        mut forms: mpsc::Receiver<FormRequest>,
    ) -> Result<(NodeId, Arc<MetaRaft>), MetaError> {
        let me = self.nodes.identity().node_name.clone();
        let mut names = self.nodes.resolve_all(peers).await;
        names.retain(|n| *n != me);
        if let Some(id) = self.ask_to_join(&names).await? {
            return self.join(id, &names).await;
        }
        names.push(me.clone());
        names.sort();
        names.dedup();
        if names[0] == me {
            let members: BTreeMap<NodeId, String> = (1..).zip(names).collect();
            return self.seed(members).await;
        }
        tracing::info!(seed = %names[0], "waiting for the seed node to form the cluster");
        loop {
            let Some((members, reply)) = forms.recv().await else {
                return Err(MetaError::Stopped);
            };
            let Some(id) = members.iter().find(|(_, n)| **n == me).map(|(id, _)| *id) else {
                let _ = reply.send(Err(format!("'{me}' is not among the members")));
                continue;
            };
            let started = self.start_formed(id).await;
            let answer = started
                .as_ref()
                .map(|_| Bytes::new())
                .map_err(|e| e.to_string());
            let _ = reply.send(answer);
            return started.map(|raft| (id, raft));
        }
    }

    async fn start_formed(&self, id: NodeId) -> Result<Arc<MetaRaft>, MetaError> {
        let name = self.nodes.identity().node_name.clone();
        NodeRecord { name, id }.save(self.vfs.as_ref(), &self.dir)?;
        self.member(id).await
    }

    /// Tell every other member its id, then start ours and initialize the group.
    async fn seed(
        &self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<(NodeId, Arc<MetaRaft>), MetaError> {
        let me = &self.nodes.identity().node_name;
        tracing::info!(members = ?members, "forming the cluster as its seed");
        let form = Control::Form {
            members: members.clone(),
        }
        .encode();
        for name in members.values().filter(|n| *n != me) {
            self.call_until_answered(name, form.clone()).await?;
        }
        let id = members
            .iter()
            .find(|(_, n)| *n == me)
            .map_or(1, |(id, _)| *id);
        let raft = self.start_formed(id).await?;
        raft.initialize(members).await?;
        Ok((id, raft))
    }

    /// Call `node`'s control service until it answers (links come and go while nodes
    /// start); a refusal is an error.
    async fn call_until_answered(&self, node: &str, body: Bytes) -> Result<(), MetaError> {
        let wait = Duration::from_secs(30);
        loop {
            let Some(link) = self.nodes.link_within(node, wait).await else {
                tracing::info!(%node, "waiting for a link to a member");
                continue;
            };
            match link.call(Service::Control, body.clone(), wait).await {
                Ok(_) => return Ok(()),
                Err(CallError::Failed(_, why)) => {
                    return Err(MetaError::Raft(format!("{node} refuses to form: {why}")))
                }
                Err(e) => tracing::info!(%node, error = %e, "asking a member again"),
            }
        }
    }
}

/// Answers the calls peers make to this node: Raft RPCs to its metadata member, membership
/// requests to the forming.
struct ClusterCalls {
    meta: OnceLock<Arc<MetaRaft>>,
    nodes: OnceLock<Nodes>,
    /// Ids given to joining nodes not yet promoted (on the leader).
    joins: Mutex<BTreeMap<NodeId, String>>,
    forms: mpsc::Sender<FormRequest>,
    broker: Option<Arc<dyn Handler>>,
}

impl Handler for Arc<ClusterCalls> {
    fn call(
        &self,
        from: &Link,
        service: Service,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        if matches!(service, Service::Queue | Service::Node) {
            return match &self.broker {
                Some(broker) => broker.call(from, service, body),
                None => Box::pin(async { Err("this node serves no broker".into()) }),
            };
        }
        let this = self.clone();
        Box::pin(async move {
            match service {
                Service::Raft { group: META_GROUP } => match this.meta.get() {
                    Some(raft) => raft.serve_rpc(body).await,
                    None => Err("this node's metadata member has not started".into()),
                },
                Service::Raft { group } => Err(format!("no Raft group {group} on this node")),
                Service::Control => this.control(body).await,
                Service::Queue | Service::Node => Err("this node serves no broker".into()),
            }
        })
    }

    fn cast(&self, from: &Link, service: Service, body: Bytes) {
        if let (Service::Queue | Service::Node, Some(broker)) = (service, &self.broker) {
            broker.cast(from, service, body);
        }
    }
}

/// How long a leader tries to commit a forwarded write (the forwarder may give up sooner).
const FORWARDED_WRITE_WAIT: Duration = Duration::from_secs(30);

/// What a member that does not lead answers a forwarded write.
const NOT_LEADER: &str = "not the metadata leader";

/// The leader could not write a forwarded change: the cluster's trouble, not this node's
/// storage (which a `MetaError::Raft` would mean to the broker, and stop the node).
fn remote(leader: &str, why: &str) -> MetaError {
    MetaError::Unavailable(format!(
        "the metadata leader {leader} could not write the change: {why}"
    ))
}

fn unavailable(waited: Duration) -> MetaError {
    MetaError::Unavailable(format!(
        "no metadata leader could commit the change within {waited:?}: fewer than a majority \
         of the cluster's nodes are reachable"
    ))
}

fn encode_written(index: u64, outcome: &Result<MetaOutcome, AmqpError>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u64(index);
    encode_outcome(outcome, &mut out);
    out.freeze()
}

fn decode_written(mut b: Bytes) -> Result<(u64, Result<MetaOutcome, AmqpError>), String> {
    if b.remaining() < 8 {
        return Err("a malformed write answer".into());
    }
    let index = b.get_u64();
    let outcome = decode_outcome(&mut b).map_err(|e| e.to_string())?;
    Ok((index, outcome))
}

impl ClusterCalls {
    /// A forwarded write, made if this member leads.
    async fn write(&self, cmd: MetaCommand) -> Answer {
        let Some(raft) = self.meta.get() else {
            return Err(NOT_LEADER.into());
        };
        let written = tokio::time::timeout(FORWARDED_WRITE_WAIT, raft.write_indexed(cmd)).await;
        match written {
            Ok(Ok((index, outcome))) => Ok(encode_written(index, &outcome)),
            Ok(Err(MetaError::NotLeader)) => Err(NOT_LEADER.into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(unavailable(FORWARDED_WRITE_WAIT).to_string()),
        }
    }

    fn pending_joins(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, String>> {
        self.joins.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn control(&self, body: Bytes) -> Answer {
        match Control::decode(body.clone())? {
            Control::Write(cmd) => self.write(cmd).await,
            Control::Form { members } => {
                if let Some(raft) = self.meta.get() {
                    return already_formed(raft, &members);
                }
                let (tx, rx) = oneshot::channel();
                let sent = self.forms.send((members, tx)).await;
                sent.map_err(|_| "no longer forming".to_string())?;
                rx.await.map_err(|_| "no longer forming".to_string())?
            }
            change => self.on_leader(body, change).await,
        }
    }
}

/// A Form to a node that already runs its member: fine if the seed's list is the one it
/// started from (a repeated request), refused otherwise.
fn already_formed(raft: &MetaRaft, members: &BTreeMap<NodeId, String>) -> Answer {
    let known: BTreeMap<NodeId, String> = raft.members().into_iter().collect();
    if known.is_empty() || known == *members {
        return Ok(Bytes::new());
    }
    Err("already a member of a cluster".into())
}

impl Control {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Control::Write(cmd) => {
                out.put_u8(2);
                encode_command(cmd, &mut out);
            }
            Control::Join { name } => {
                out.put_u8(3);
                put_name(&mut out, name);
            }
            Control::Promote { id, name } => {
                out.put_u8(4);
                out.put_u64(*id);
                put_name(&mut out, name);
            }
            Control::Forget { name } => {
                out.put_u8(5);
                put_name(&mut out, name);
            }
            Control::Form { members } => {
                out.put_u8(1);
                out.put_u32(members.len() as u32);
                for (id, name) in members {
                    out.put_u64(*id);
                    out.put_u16(name.len() as u16);
                    out.put_slice(name.as_bytes());
                }
            }
        }
        out.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Control, String> {
        let bad = || "a malformed control request".to_string();
        if matches!(b.first(), Some(3..=5)) {
            return decode_membership(b).ok_or_else(bad);
        }
        if b.first() == Some(&2) {
            b.advance(1);
            let cmd = decode_command(&mut b).map_err(|e| e.to_string())?;
            return if b.is_empty() {
                Ok(Control::Write(cmd))
            } else {
                Err(bad())
            };
        }
        if b.remaining() < 5 || b.get_u8() != 1 {
            return Err(bad());
        }
        let count = b.get_u32() as usize;
        // An entry takes at least 10 bytes: no more are believed.
        if count > b.remaining() / 10 {
            return Err(bad());
        }
        let mut members = BTreeMap::new();
        for _ in 0..count {
            if b.remaining() < 10 {
                return Err(bad());
            }
            let id = b.get_u64();
            let len = b.get_u16() as usize;
            if b.remaining() < len {
                return Err(bad());
            }
            let name = String::from_utf8(b.split_to(len).to_vec()).map_err(|_| bad())?;
            members.insert(id, name);
        }
        if !b.is_empty() {
            return Err(bad());
        }
        Ok(Control::Form { members })
    }
}

fn put_name(out: &mut BytesMut, name: &str) {
    out.put_u16(name.len() as u16);
    out.put_slice(name.as_bytes());
}

fn get_name(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_u16() as usize;
    if b.remaining() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

fn decode_membership(mut b: Bytes) -> Option<Control> {
    let control = match b.get_u8() {
        3 => Control::Join {
            name: get_name(&mut b)?,
        },
        4 => {
            if b.remaining() < 8 {
                return None;
            }
            let id = b.get_u64();
            Control::Promote {
                id,
                name: get_name(&mut b)?,
            }
        }
        _ => Control::Forget {
            name: get_name(&mut b)?,
        },
    };
    b.is_empty().then_some(control)
}

/// This node's name and id, kept in its metadata directory once the cluster gave it an id.
#[derive(Debug, PartialEq, Eq)]
struct NodeRecord {
    name: String,
    id: NodeId,
}

impl NodeRecord {
    const FILE: &'static str = "node";

    fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<NodeRecord>, MetaError> {
        let path = dir.join(Self::FILE);
        if !vfs.exists(&path) {
            return Ok(None);
        }
        let file = vfs.open(&path).map_err(store_error)?;
        let len = file.len().map_err(store_error)? as usize;
        let mut bytes = vec![0u8; len.min(4096)];
        file.read_exact_at(&mut bytes, 0).map_err(store_error)?;
        let text = String::from_utf8(bytes).ok();
        let parsed = text.as_deref().and_then(|t| {
            let (id, name) = t.trim_end().split_once(' ')?;
            Some(NodeRecord {
                id: id.parse().ok()?,
                name: name.to_string(),
            })
        });
        match parsed {
            Some(record) => Ok(Some(record)),
            None => Err(MetaError::Raft(format!(
                "{} is damaged: it should hold this node's id and name",
                path.display()
            ))),
        }
    }

    /// Write the record durably: a new file, synced, renamed over the old, directory synced.
    fn save(&self, vfs: &dyn Vfs, dir: &Path) -> Result<(), MetaError> {
        vfs.create_dir_all(dir).map_err(store_error)?;
        let tmp = dir.join("node.new");
        let file = vfs.create(&tmp).map_err(store_error)?;
        let text = format!("{} {}\n", self.id, self.name);
        file.append(text.as_bytes()).map_err(store_error)?;
        file.sync().map_err(store_error)?;
        vfs.rename(&tmp, &dir.join(Self::FILE))
            .map_err(store_error)?;
        vfs.sync_dir(dir).map_err(store_error)?;
        Ok(())
    }
}

fn store_error(e: std::io::Error) -> MetaError {
    MetaError::Store(tern_store::StoreError::from(e))
}

mod membership;
#[cfg(test)]
mod tests;
