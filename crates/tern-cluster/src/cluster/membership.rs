//! Changing a running cluster's members.
//!
//! Joining: a fresh node whose peers include a member of a running cluster asks it to
//! [`Control::Join`]; the leader (a member that does not lead passes the request on) gives it
//! the next free id, or the id it already has. The node keeps that id, starts its metadata
//! member, then asks to be promoted ([`Control::Promote`]): the leader adds it as a learner,
//! waits until it has caught up (log or snapshot), then makes it a voter — openraft's joint
//! consensus, so a majority of the old and of the new members agree at every step.
//!
//! Forgetting ([`Control::Forget`], `tern ctl forget_cluster_node`): the leader takes a node
//! that is not running out of the group. A running node is refused: it would keep talking to
//! the others as a member.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};

use super::{ClusterCalls, Control, Starter, NOT_LEADER};
use crate::link::{Answer, CallError};
use crate::meta::{MetaError, MetaRaft, NodeId};
use crate::wire::Service;

/// What a node that is not (yet) a member of a running cluster answers a membership request.
const NOT_MEMBER: &str = "not a member of a cluster";

/// How long a membership change may take (a learner catching up included).
const CHANGE_WAIT: Duration = Duration::from_secs(60);

impl ClusterCalls {
    /// The leader, or who leads: `Err` with the answer when this member cannot act on it.
    fn leading(&self) -> Result<Arc<MetaRaft>, String> {
        let raft = self.meta.get().ok_or(NOT_MEMBER)?;
        if raft.members().is_empty() {
            return Err(NOT_MEMBER.into());
        }
        Ok(raft.clone())
    }

    /// Do `body` (a control request) on the leader: here if this member leads, else passed
    /// on to it.
    pub(super) async fn on_leader(&self, body: Bytes, here: Control) -> Answer {
        let raft = self.leading()?;
        let leader = raft
            .await_leader(CHANGE_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        if Some(leader) == self.me() {
            return match here {
                Control::Join { name } => self.join(&raft, &name),
                Control::Promote { id, name } => self.promote(&raft, id, name).await,
                Control::Forget { name } => self.forget(&raft, &name).await,
                _ => Err("not a membership request".into()),
            };
        }
        let name = raft.member_name(leader).ok_or(NOT_LEADER)?;
        let nodes = self.nodes.get().ok_or(NOT_LEADER)?;
        let link = nodes.link(&name).ok_or(NOT_LEADER)?;
        match link.call(Service::Control, body, CHANGE_WAIT).await {
            Ok(answer) => Ok(answer),
            Err(CallError::Failed(_, why)) => Err(why),
            Err(e) => Err(e.to_string()),
        }
    }

    fn me(&self) -> Option<NodeId> {
        let raft = self.meta.get()?;
        let me = &self.nodes.get()?.identity().node_name;
        raft.members()
            .into_iter()
            .find(|(_, n)| n == me)
            .map(|(id, _)| id)
    }

    /// The next free id for `name` (held for it until it is promoted). A node with a member's
    /// name that asks to join lost its data: taking the member's id with an empty log could
    /// undo what the member voted for, so it must be forgotten first (as RabbitMQ makes a
    /// reset node be).
    fn join(&self, raft: &MetaRaft, name: &str) -> Answer {
        let members = raft.members();
        if let Some((id, _)) = members.iter().find(|(_, n)| n == name) {
            return Err(format!(
                "{name} is already member {id} of the cluster; if its data is lost, forget it \
                 first (tern ctl forget_cluster_node {name}) and start it again"
            ));
        }
        let mut pending = self.pending_joins();
        if let Some((id, _)) = pending.iter().find(|(_, n)| n.as_str() == name) {
            return Ok(Bytes::copy_from_slice(&id.to_be_bytes()));
        }
        let taken = members
            .iter()
            .map(|(id, _)| *id)
            .chain(pending.keys().copied());
        let id = taken.max().unwrap_or(0) + 1;
        pending.insert(id, name.to_string());
        tracing::info!(node = %name, id, "a node joins the cluster");
        Ok(Bytes::copy_from_slice(&id.to_be_bytes()))
    }

    /// Make `id` a voter, if the id is `name`'s: not another member's, nor held for another
    /// joining node.
    async fn promote(&self, raft: &MetaRaft, id: NodeId, name: String) -> Answer {
        let owner = raft.member_name(id);
        let held = self.pending_joins().get(&id).cloned();
        if let Some(other) = owner.or(held).filter(|n| *n != name) {
            return Err(format!(
                "id {id} belongs to {other}, not {name}: join again"
            ));
        }
        let promoted = change(raft.add_voter(id, name)).await;
        if promoted.is_ok() {
            self.pending_joins().remove(&id);
        }
        promoted
    }

    async fn forget(&self, raft: &MetaRaft, name: &str) -> Answer {
        let members = raft.members();
        let Some((id, _)) = members.iter().find(|(_, n)| n == name) else {
            return Err(format!("{name} is not a member of the cluster"));
        };
        let running = self.nodes.get().is_some_and(|n| n.link(name).is_some());
        let me = self.nodes.get().map(|n| n.identity().node_name.clone());
        if running || me.as_deref() == Some(name) {
            return Err(format!(
                "{name} is running: stop it before it is forgotten (rabbitmqctl's rule too)"
            ));
        }
        tracing::info!(node = %name, id, "forgetting a node");
        change(raft.remove_member(*id)).await
    }
}

async fn change(changed: impl std::future::Future<Output = Result<(), MetaError>>) -> Answer {
    match tokio::time::timeout(CHANGE_WAIT, changed).await {
        Ok(Ok(())) => Ok(Bytes::new()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the membership change took longer than {CHANGE_WAIT:?}"
        )),
    }
}

impl Starter {
    /// Ask each peer in turn to let this fresh node join its cluster: the id it got, `None`
    /// if every peer says it is not a member of one (the nodes are forming a cluster), or the
    /// refusal of a cluster that will not have it. Any other trouble (no leader yet, a link
    /// that dropped) is asked about again.
    pub(super) async fn ask_to_join(&self, peers: &[String]) -> Result<Option<NodeId>, MetaError> {
        let me = self.nodes.identity().node_name.clone();
        let ask = Control::Join { name: me }.encode();
        loop {
            let mut unsure = false;
            for peer in peers {
                let Some(link) = self.nodes.link(peer) else {
                    unsure = true;
                    continue;
                };
                match link.call(Service::Control, ask.clone(), CHANGE_WAIT).await {
                    Ok(mut answer) if answer.remaining() == 8 => return Ok(Some(answer.get_u64())),
                    Err(CallError::Failed(_, why)) if why == NOT_MEMBER => {}
                    Err(CallError::Failed(_, why)) if why.contains("already member") => {
                        return Err(MetaError::Raft(why));
                    }
                    _ => unsure = true,
                }
            }
            if !unsure {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Start as member `id` and have the leader promote it (learner, then voter).
    pub(super) async fn join(
        &self,
        id: NodeId,
        peers: &[String],
    ) -> Result<(NodeId, Arc<MetaRaft>), MetaError> {
        let raft = self.start_formed(id).await?;
        let name = self.nodes.identity().node_name.clone();
        let promote = Control::Promote { id, name }.encode();
        loop {
            for peer in peers {
                let Some(link) = self.nodes.link(peer) else {
                    continue;
                };
                match link
                    .call(Service::Control, promote.clone(), CHANGE_WAIT)
                    .await
                {
                    Ok(_) => return Ok((id, raft)),
                    Err(e) => tracing::info!(%peer, error = %e, "asking to be promoted again"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
