//! The metadata state machine: vhosts, exchanges, queues, bindings, users and permissions.
//!
//! Every definition change is a [`MetaCommand`] applied with [`Metadata::apply`], which either
//! refuses it with the error RabbitMQ would answer (and changes nothing) or applies it and says
//! what happened in a [`MetaOutcome`]. `apply` is deterministic — ordered maps, no clock, no
//! randomness — so that it can be the state machine of a Raft log: every node applying the same
//! commands reaches the same state.
//!
//! Only definitions live here. Runtime facts (message counts, consumers) belong to the queue
//! actors, so the server checks `queue.delete` if-unused / if-empty and exclusive access to a
//! queue for consume, get, purge and bind itself.
//!
//! Each change also updates the routing tables of the exchanges it touched, one binding at a
//! time (a change costs about the same with ten bindings or a hundred thousand), so
//! [`Metadata::snapshot`] only has to clone them, which shares their storage. The tables are
//! derived state: they may use hashing internally, but what they route is deterministic.
//!
//! - `vhost`: one vhost's definitions and binding graph, with RabbitMQ's cascades.
//! - `bindings`: one exchange's bindings as source, indexed by identity and destination.
//! - `ops`, `validate`, `arguments`: the commands' checks and RabbitMQ's error texts.
//! - [`access`]: users, password hashes, tags, permissions and topic permissions.
//! - `codec`, `access_codec`: the commands' binary form (the metadata log's records);
//!   `outcome_codec`: their answers', for a leader answering a forwarded change.

pub mod access;
mod access_codec;
#[cfg(test)]
mod access_tests;
mod arguments;
#[cfg(test)]
mod binding_tests;
mod bindings;
mod codec;
mod local;
#[cfg(test)]
mod model_tests;
mod ops;
mod outcome_codec;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;
mod validate;
mod vhost;

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_amqp::{AmqpError, FieldTable, ReplyCode, ShortStr};

use crate::names::{ConnectionId, ExchangeName, QueueName, UserName, VhostName};
use crate::routing::{Destination, ExchangeKind, RoutingSnapshot};

use access::{AccessCommand, AccessState, VhostAccess};
pub use codec::{decode_command, encode_command, CodecError};
pub use outcome_codec::{decode_outcome, encode_outcome};
use vhost::{Effects, VhostState};

#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDef {
    pub name: ExchangeName,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueDef {
    pub name: QueueName,
    /// Always false for an exclusive queue (RabbitMQ ignores `durable` on those).
    pub durable: bool,
    /// The connection an exclusive queue belongs to.
    pub exclusive_owner: Option<ConnectionId>,
    /// The node the queue runs on, in a cluster (`None` on a single node: that node).
    pub home: Option<ShortStr>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

impl QueueDef {
    /// Whether the queue's home is `node` (a single node's queues have none).
    pub fn homed_on(&self, node: &str) -> bool {
        self.home.as_ref().is_some_and(|h| h.as_str() == node)
    }

    /// Whether the queue's home is to be the node with the fewest queues
    /// (`x-queue-leader-locator: balanced`, or the older `x-queue-master-locator` with
    /// `min-masters` or `random`) rather than the node the declaring client is connected to.
    pub fn wants_balanced_home(&self) -> bool {
        let named = |key: &str, values: &[&str]| {
            self.arguments
                .get(key)
                .and_then(|v| v.as_str())
                .is_some_and(|v| values.contains(&v))
        };
        named("x-queue-leader-locator", &["balanced"])
            || named("x-queue-master-locator", &["min-masters", "random"])
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub source: ExchangeName,
    pub destination: Destination,
    pub routing_key: ShortStr,
    /// Stored sorted by key, as RabbitMQ stores them: two bindings differing only in the order
    /// of their arguments are the same binding.
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetaCommand {
    DeclareExchange {
        vhost: VhostName,
        def: ExchangeDef,
        passive: bool,
    },
    DeleteExchange {
        vhost: VhostName,
        name: ExchangeName,
        if_unused: bool,
    },
    /// `requester` is the declaring connection: a passive declare of another connection's
    /// exclusive queue is refused with 405. `server_named`: the client asked for a name and the
    /// server chose `def.name`, so the reserved `amq.` prefix is allowed.
    DeclareQueue {
        vhost: VhostName,
        def: QueueDef,
        passive: bool,
        server_named: bool,
        requester: ConnectionId,
    },
    DeleteQueue {
        vhost: VhostName,
        name: QueueName,
    },
    Bind {
        vhost: VhostName,
        binding: Binding,
    },
    Unbind {
        vhost: VhostName,
        binding: Binding,
    },
    AddVhost {
        name: VhostName,
    },
    DeleteVhost {
        name: VhostName,
    },
    /// The node (re)started: every non-durable queue and exchange goes, as RabbitMQ drops
    /// them at boot (exclusive queues are never durable), with their bindings and the
    /// auto-delete exchanges that loses.
    DropTransient,
    /// A clustered node (re)started: its own non-durable queues go (exclusive ones included),
    /// with their bindings; other nodes' queues and the cluster's exchanges stay.
    DropNodeTransient {
        node: ShortStr,
    },
    /// A node left the cluster for good (`forget_cluster_node`): every queue homed on it goes,
    /// as RabbitMQ drops a forgotten node's classic queues.
    ForgetNode {
        node: ShortStr,
    },
    /// Users and permissions.
    Access(AccessCommand),
    /// Several commands as one log entry (a definitions import writes one per chunk): applied
    /// in order, stopping at the first that is refused; those before it stay applied.
    Batch(Vec<MetaCommand>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetaOutcome {
    ExchangeDeclared {
        created: bool,
    },
    /// `auto_deleted`: auto-delete exchanges that lost their last binding as a result.
    ExchangeDeleted {
        existed: bool,
        auto_deleted: Vec<ExchangeName>,
    },
    /// `def` is the queue as it now stands (the existing definition when not created).
    QueueDeclared {
        created: bool,
        def: QueueDef,
    },
    QueueDeleted {
        existed: bool,
        auto_deleted: Vec<ExchangeName>,
    },
    Bound {
        created: bool,
    },
    Unbound {
        existed: bool,
        auto_deleted: Vec<ExchangeName>,
    },
    VhostAdded {
        created: bool,
    },
    /// `queues`: the queues that went with the vhost, for their actors to be stopped.
    VhostDeleted {
        existed: bool,
        queues: Vec<QueueName>,
    },
    /// The queues that went (DropTransient, DropNodeTransient, ForgetNode), for their actors
    /// to be stopped.
    QueuesDropped {
        queues: Vec<(VhostName, QueueName)>,
    },
    AccessChanged {
        changed: bool,
    },
    /// A [`MetaCommand::Batch`]: the outcome of each command applied, and the refusal that
    /// stopped it, if one did.
    Batch {
        outcomes: Vec<MetaOutcome>,
        refused: Option<AmqpError>,
    },
}

/// What [`Metadata::apply_with`] calls after each single command: the state it left, the
/// command, its outcome.
pub type Applied<'a> = dyn FnMut(&Metadata, &MetaCommand, &Result<MetaOutcome, AmqpError>) + 'a;

/// Every vhost's definitions, and the routing structures compiled from them.
#[derive(Debug)]
pub struct Metadata {
    vhosts: BTreeMap<VhostName, VhostState>,
    generation: u64,
    access: AccessState,
    /// Bumped by every change to users or permissions, so connections re-read theirs.
    access_generation: u64,
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

impl Metadata {
    /// The vhost `/` with the default exchanges, as a fresh RabbitMQ node has.
    pub fn new() -> Self {
        let mut vhosts = BTreeMap::new();
        vhosts.insert(VhostName::from("/"), VhostState::new());
        Metadata {
            vhosts,
            generation: 1,
            access: AccessState::default(),
            access_generation: 1,
        }
    }

    /// Bumped by every command that changed something.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn apply(&mut self, cmd: MetaCommand) -> Result<MetaOutcome, AmqpError> {
        self.apply_with(cmd, &mut |_, _, _| {})
    }

    /// [`apply`](Self::apply), calling `applied` after each single command (each member of a
    /// batch, never the batch itself) with the state it left.
    pub fn apply_with(
        &mut self,
        cmd: MetaCommand,
        applied: &mut Applied<'_>,
    ) -> Result<MetaOutcome, AmqpError> {
        let MetaCommand::Batch(cmds) = cmd else {
            return self.apply_single(cmd, applied);
        };
        let mut outcomes = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            match self.apply_single(cmd, applied) {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    let refused = Some(e);
                    return Ok(MetaOutcome::Batch { outcomes, refused });
                }
            }
        }
        let refused = None;
        Ok(MetaOutcome::Batch { outcomes, refused })
    }

    fn apply_single(
        &mut self,
        cmd: MetaCommand,
        applied: &mut Applied<'_>,
    ) -> Result<MetaOutcome, AmqpError> {
        let outcome = self.apply_one(cmd.clone());
        applied(self, &cmd, &outcome);
        outcome
    }

    fn apply_one(&mut self, cmd: MetaCommand) -> Result<MetaOutcome, AmqpError> {
        match cmd {
            MetaCommand::DeclareExchange {
                vhost,
                def,
                passive,
            } => self.in_vhost(&vhost, |vh, fx| {
                ops::declare_exchange(vh, &vhost, def, passive, fx)
            }),
            MetaCommand::DeleteExchange {
                vhost,
                name,
                if_unused,
            } => self.in_vhost(&vhost, |vh, fx| {
                ops::delete_exchange(vh, &vhost, &name, if_unused, fx)
            }),
            MetaCommand::DeclareQueue {
                vhost,
                def,
                passive,
                server_named,
                requester,
            } => {
                let declare = ops::QueueDeclare {
                    def,
                    passive,
                    server_named,
                    requester,
                };
                self.in_vhost(&vhost, |vh, fx| ops::declare_queue(vh, &vhost, declare, fx))
            }
            MetaCommand::DeleteQueue { vhost, name } => {
                self.in_vhost(&vhost, |vh, fx| Ok(ops::delete_queue(vh, &name, fx)))
            }
            MetaCommand::Bind { vhost, binding } => {
                self.in_vhost(&vhost, |vh, fx| ops::bind(vh, &vhost, binding, fx))
            }
            MetaCommand::Unbind { vhost, binding } => {
                self.in_vhost(&vhost, |vh, fx| ops::unbind(vh, binding, fx))
            }
            MetaCommand::AddVhost { name } => Ok(self.add_vhost(name)),
            MetaCommand::DeleteVhost { name } => Ok(self.delete_vhost(&name)),
            MetaCommand::DropTransient => Ok(self.drop_transient()),
            MetaCommand::DropNodeTransient { node } => Ok(self.drop_node_queues(&node, false)),
            MetaCommand::ForgetNode { node } => Ok(self.drop_node_queues(&node, true)),
            MetaCommand::Access(cmd) => self.apply_access(cmd),
            MetaCommand::Batch(_) => Err(AmqpError::new(
                ReplyCode::InternalError,
                "a metadata batch inside a batch",
            )),
        }
    }

    fn apply_access(&mut self, cmd: AccessCommand) -> Result<MetaOutcome, AmqpError> {
        let vhosts = &self.vhosts;
        let changed = self.access.apply(cmd, |v| vhosts.contains_key(v))?;
        if changed {
            self.access_generation += 1;
        }
        Ok(MetaOutcome::AccessChanged { changed })
    }

    /// `node`'s non-durable queues, or (`durable_too`) all of them, go.
    fn drop_node_queues(&mut self, node: &ShortStr, durable_too: bool) -> MetaOutcome {
        let mut dropped = Vec::new();
        for (vhost, vh) in self.vhosts.iter_mut() {
            let queues: Vec<QueueName> = vh
                .queues()
                .filter(|q| q.homed_on(node) && (durable_too || !q.durable))
                .map(|q| q.name.clone())
                .collect();
            let mut fx = Effects::default();
            for name in &queues {
                vh.delete_queue(name, &mut fx);
            }
            if fx.changed {
                vh.refresh(fx.routes);
                self.generation += 1;
            }
            dropped.extend(queues.into_iter().map(|q| (vhost.clone(), q)));
        }
        MetaOutcome::QueuesDropped { queues: dropped }
    }

    /// How many queues each node is home to (a node with none is not listed).
    pub fn queues_per_home(&self) -> BTreeMap<ShortStr, usize> {
        let mut counts = BTreeMap::new();
        let homes = self.vhosts.values().flat_map(|vh| vh.queues());
        for home in homes.filter_map(|q| q.home.clone()) {
            *counts.entry(home).or_insert(0) += 1;
        }
        counts
    }

    fn drop_transient(&mut self) -> MetaOutcome {
        let mut dropped = Vec::new();
        for (vhost, vh) in self.vhosts.iter_mut() {
            let queues: Vec<QueueName> = vh
                .queues()
                .filter(|q| !q.durable)
                .map(|q| q.name.clone())
                .collect();
            let exchanges: Vec<ExchangeName> = vh
                .exchanges()
                .filter(|x| !x.durable && !x.name.is_empty() && !x.name.starts_with("amq."))
                .map(|x| x.name.clone())
                .collect();
            let mut fx = Effects::default();
            for name in &queues {
                vh.delete_queue(name, &mut fx);
            }
            for name in &exchanges {
                vh.delete_exchange(name, &mut fx);
            }
            if fx.changed {
                vh.refresh(fx.routes);
                self.generation += 1;
            }
            dropped.extend(queues.into_iter().map(|q| (vhost.clone(), q)));
        }
        MetaOutcome::QueuesDropped { queues: dropped }
    }

    /// Run a command against one vhost; on success recompile what it touched.
    fn in_vhost(
        &mut self,
        vhost: &VhostName,
        command: impl FnOnce(&mut VhostState, &mut Effects) -> Result<MetaOutcome, AmqpError>,
    ) -> Result<MetaOutcome, AmqpError> {
        let vh = self
            .vhosts
            .get_mut(vhost)
            .ok_or_else(|| validate::no_vhost(vhost))?;
        let mut fx = Effects::default();
        let outcome = command(vh, &mut fx)?;
        if fx.changed {
            vh.refresh(fx.routes);
            self.generation += 1;
        }
        Ok(outcome)
    }

    fn add_vhost(&mut self, name: VhostName) -> MetaOutcome {
        if self.vhosts.contains_key(&name) {
            return MetaOutcome::VhostAdded { created: false };
        }
        self.vhosts.insert(name, VhostState::new());
        self.generation += 1;
        MetaOutcome::VhostAdded { created: true }
    }

    fn delete_vhost(&mut self, name: &VhostName) -> MetaOutcome {
        let Some(vh) = self.vhosts.remove(name) else {
            return MetaOutcome::VhostDeleted {
                existed: false,
                queues: Vec::new(),
            };
        };
        self.generation += 1;
        if self.access.forget_vhost(name) {
            self.access_generation += 1;
        }
        let queues = vh.queues().map(|q| q.name.clone()).collect();
        MetaOutcome::VhostDeleted {
            existed: true,
            queues,
        }
    }

    /// The routing table as of now, for publishers to route through without locking.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        let vhosts = self
            .vhosts
            .iter()
            .map(|(name, vh)| (name.clone(), vh.routes()))
            .collect();
        Arc::new(RoutingSnapshot::new(self.generation, vhosts))
    }

    pub fn vhost_exists(&self, vhost: &VhostName) -> bool {
        self.vhosts.contains_key(vhost)
    }

    /// Users and permissions.
    pub fn access(&self) -> &AccessState {
        &self.access
    }

    /// Bumped by every change to users or permissions (vhost deletions included).
    pub fn access_generation(&self) -> u64 {
        self.access_generation
    }

    /// What `user` may do in `vhost`; None if it may not open it (or either is unknown).
    pub fn vhost_access(&self, vhost: &VhostName, user: &UserName) -> Option<VhostAccess> {
        self.access.vhost_access(vhost, user)
    }

    pub fn vhosts(&self) -> impl Iterator<Item = &VhostName> + '_ {
        self.vhosts.keys()
    }

    pub fn queue(&self, vhost: &VhostName, name: &QueueName) -> Option<&QueueDef> {
        self.vhosts.get(vhost)?.queue(name)
    }

    pub fn exchange(&self, vhost: &VhostName, name: &ExchangeName) -> Option<&ExchangeDef> {
        self.vhosts.get(vhost)?.exchange(name)
    }

    /// The vhost's queues, by name.
    pub fn queues(&self, vhost: &VhostName) -> impl Iterator<Item = &QueueDef> + '_ {
        self.vhosts
            .get(vhost)
            .into_iter()
            .flat_map(VhostState::queues)
    }

    /// The vhost's exchanges (the default exchange included), by name.
    pub fn exchanges(&self, vhost: &VhostName) -> impl Iterator<Item = &ExchangeDef> + '_ {
        self.vhosts
            .get(vhost)
            .into_iter()
            .flat_map(VhostState::exchanges)
    }

    /// The vhost's explicit bindings, by source and then in the order they were made (the
    /// default exchange's implicit bindings are not listed).
    pub fn bindings(&self, vhost: &VhostName) -> impl Iterator<Item = &Binding> + '_ {
        self.vhosts
            .get(vhost)
            .into_iter()
            .flat_map(VhostState::bindings)
    }

    /// The exclusive queues a connection owns, to delete when it closes.
    pub fn queues_owned_by(&self, owner: ConnectionId) -> Vec<(VhostName, QueueName)> {
        let mut owned = Vec::new();
        for (vhost, vh) in &self.vhosts {
            let mine = vh.queues().filter(|q| q.exclusive_owner == Some(owner));
            owned.extend(mine.map(|q| (vhost.clone(), q.name.clone())));
        }
        owned
    }
}
