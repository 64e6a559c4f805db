//! One vhost's definitions and the binding graph between them, with RabbitMQ's cascades:
//! deleting a queue or exchange removes every binding that refers to it, and an auto-delete
//! exchange goes when its last binding as source goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tern_amqp::FieldTable;

use super::{Binding, ExchangeDef, QueueDef};
use crate::names::{ExchangeName, QueueName};
use crate::routing::{CompiledExchange, Destination, ExchangeKind, VhostRoutes};

/// What a command did, beyond its outcome.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Some definition changed: the generation moves on.
    pub(crate) changed: bool,
    /// Exchanges to recompile (bindings changed, declared or deleted).
    pub(crate) dirty: BTreeSet<ExchangeName>,
    /// Auto-delete exchanges deleted because their last binding went, in deletion order.
    pub(crate) auto_deleted: Vec<ExchangeName>,
}

impl Effects {
    fn touch(&mut self, exchange: &ExchangeName) {
        self.changed = true;
        self.dirty.insert(exchange.clone());
    }
}

/// The exchanges every vhost starts with, as in RabbitMQ: (name, type, internal).
const DEFAULT_EXCHANGES: &[(&str, ExchangeKind, bool)] = &[
    ("", ExchangeKind::Direct, false),
    ("amq.direct", ExchangeKind::Direct, false),
    ("amq.fanout", ExchangeKind::Fanout, false),
    ("amq.headers", ExchangeKind::Headers, false),
    ("amq.match", ExchangeKind::Headers, false),
    ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
    ("amq.topic", ExchangeKind::Topic, false),
];

#[derive(Debug)]
pub(crate) struct VhostState {
    exchanges: BTreeMap<ExchangeName, ExchangeDef>,
    queues: BTreeMap<QueueName, QueueDef>,
    /// Bindings by source, in the order they were made. Never holds an empty list.
    outbound: BTreeMap<ExchangeName, Vec<Binding>>,
    /// For each destination, the exchanges with at least one binding to it.
    inbound: BTreeMap<Destination, BTreeSet<ExchangeName>>,
    compiled: BTreeMap<ExchangeName, Arc<CompiledExchange>>,
    routes: Arc<VhostRoutes>,
}

impl VhostState {
    pub(crate) fn new() -> Self {
        let mut vh = VhostState {
            exchanges: BTreeMap::new(),
            queues: BTreeMap::new(),
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
            compiled: BTreeMap::new(),
            routes: Arc::default(),
        };
        let mut fx = Effects::default();
        for &(name, kind, internal) in DEFAULT_EXCHANGES {
            let def = ExchangeDef {
                name: ExchangeName::from(name),
                kind,
                durable: true,
                auto_delete: false,
                internal,
                arguments: FieldTable::new(),
            };
            vh.insert_exchange(def, &mut fx);
        }
        vh.refresh(&fx.dirty);
        vh
    }

    pub(crate) fn exchange(&self, name: &ExchangeName) -> Option<&ExchangeDef> {
        self.exchanges.get(name)
    }

    pub(crate) fn queue(&self, name: &QueueName) -> Option<&QueueDef> {
        self.queues.get(name)
    }

    pub(crate) fn exchanges(&self) -> impl Iterator<Item = &ExchangeDef> {
        self.exchanges.values()
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = &QueueDef> {
        self.queues.values()
    }

    pub(crate) fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.outbound.values().flatten()
    }

    pub(crate) fn routes(&self) -> Arc<VhostRoutes> {
        self.routes.clone()
    }

    pub(crate) fn destination_exists(&self, destination: &Destination) -> bool {
        match destination {
            Destination::Queue(q) => self.queues.contains_key(q),
            Destination::Exchange(x) => self.exchanges.contains_key(x),
        }
    }

    /// Whether the exchange is the source of any binding (exchange.delete if-unused).
    pub(crate) fn has_bindings_from(&self, exchange: &ExchangeName) -> bool {
        self.outbound.contains_key(exchange)
    }

    pub(crate) fn insert_exchange(&mut self, def: ExchangeDef, fx: &mut Effects) {
        fx.touch(&def.name);
        self.exchanges.insert(def.name.clone(), def);
    }

    pub(crate) fn insert_queue(&mut self, def: QueueDef, fx: &mut Effects) {
        fx.changed = true;
        self.queues.insert(def.name.clone(), def);
    }

    /// Add a binding whose source and destination exist; false if it already did.
    pub(crate) fn add_binding(&mut self, binding: Binding, fx: &mut Effects) -> bool {
        debug_assert!(self.exchanges.contains_key(&binding.source));
        debug_assert!(self.destination_exists(&binding.destination));
        let list = self.outbound.entry(binding.source.clone()).or_default();
        if list.contains(&binding) {
            return false;
        }
        let sources = self.inbound.entry(binding.destination.clone()).or_default();
        sources.insert(binding.source.clone());
        fx.touch(&binding.source);
        list.push(binding);
        true
    }

    /// Remove a binding; false if there was none. May auto-delete its source.
    pub(crate) fn remove_binding(&mut self, binding: &Binding, fx: &mut Effects) -> bool {
        let Some(list) = self.outbound.get_mut(&binding.source) else {
            return false;
        };
        let Some(position) = list.iter().position(|b| b == binding) else {
            return false;
        };
        list.remove(position);
        let still_linked = list.iter().any(|b| b.destination == binding.destination);
        if list.is_empty() {
            self.outbound.remove(&binding.source);
        }
        if !still_linked {
            self.unlink(&binding.destination, &binding.source);
        }
        fx.touch(&binding.source);
        self.cascade(vec![binding.source.clone()], fx);
        true
    }

    /// Delete an exchange and every binding to or from it; false if there was none.
    pub(crate) fn delete_exchange(&mut self, name: &ExchangeName, fx: &mut Effects) -> bool {
        if !self.exchanges.contains_key(name) {
            return false;
        }
        let mut candidates = Vec::new();
        self.remove_exchange(name, fx, &mut candidates);
        self.cascade(candidates, fx);
        true
    }

    /// Delete a queue and every binding to it; false if there was none.
    pub(crate) fn delete_queue(&mut self, name: &QueueName, fx: &mut Effects) -> bool {
        if self.queues.remove(name).is_none() {
            return false;
        }
        fx.changed = true;
        let mut candidates = Vec::new();
        self.detach(&Destination::Queue(name.clone()), fx, &mut candidates);
        self.cascade(candidates, fx);
        true
    }

    fn remove_exchange(
        &mut self,
        name: &ExchangeName,
        fx: &mut Effects,
        candidates: &mut Vec<ExchangeName>,
    ) {
        self.exchanges.remove(name);
        fx.touch(name);
        for binding in self.outbound.remove(name).unwrap_or_default() {
            self.unlink(&binding.destination, name);
        }
        self.detach(&Destination::Exchange(name.clone()), fx, candidates);
    }

    /// Remove every binding to `destination`; their sources become auto-delete candidates.
    fn detach(
        &mut self,
        destination: &Destination,
        fx: &mut Effects,
        candidates: &mut Vec<ExchangeName>,
    ) {
        for source in self.inbound.remove(destination).unwrap_or_default() {
            if let Some(list) = self.outbound.get_mut(&source) {
                list.retain(|b| b.destination != *destination);
                if list.is_empty() {
                    self.outbound.remove(&source);
                }
            }
            fx.touch(&source);
            candidates.push(source);
        }
    }

    fn unlink(&mut self, destination: &Destination, source: &ExchangeName) {
        if let Some(sources) = self.inbound.get_mut(destination) {
            sources.remove(source);
            if sources.is_empty() {
                self.inbound.remove(destination);
            }
        }
    }

    /// Delete auto-delete exchanges left without bindings as source, and whatever that in turn
    /// leaves unbound. A worklist rather than recursion: chains may be long.
    fn cascade(&mut self, mut candidates: Vec<ExchangeName>, fx: &mut Effects) {
        while let Some(name) = candidates.pop() {
            let auto_delete = self.exchanges.get(&name).is_some_and(|x| x.auto_delete);
            if auto_delete && !self.outbound.contains_key(&name) {
                self.remove_exchange(&name, fx, &mut candidates);
                fx.auto_deleted.push(name);
            }
        }
    }

    /// Recompile the `dirty` exchanges and republish this vhost's routes.
    pub(crate) fn refresh(&mut self, dirty: &BTreeSet<ExchangeName>) {
        if dirty.is_empty() {
            return;
        }
        for name in dirty {
            match self.exchanges.get(name) {
                Some(def) => {
                    let bindings = self.outbound.get(name).map_or(&[][..], Vec::as_slice);
                    let compiled = Arc::new(CompiledExchange::new(def, bindings));
                    self.compiled.insert(name.clone(), compiled);
                }
                None => {
                    self.compiled.remove(name);
                }
            }
        }
        self.routes = Arc::new(VhostRoutes::new(self.compiled.values()));
        debug_assert_eq!(self.compiled.len(), self.exchanges.len());
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (source, list) in &self.outbound {
            assert!(!list.is_empty(), "empty binding list for {source}");
            assert!(
                self.exchanges.contains_key(source),
                "binding from missing {source}"
            );
            for b in list {
                assert!(
                    self.destination_exists(&b.destination),
                    "binding to missing {b:?}"
                );
                let sources = self.inbound.get(&b.destination);
                assert!(
                    sources.is_some_and(|s| s.contains(source)),
                    "inbound missing {b:?}"
                );
            }
        }
        for (destination, sources) in &self.inbound {
            assert!(!sources.is_empty());
            for s in sources {
                let list = self.outbound.get(s).map_or(&[][..], Vec::as_slice);
                assert!(
                    list.iter().any(|b| b.destination == *destination),
                    "stale inbound"
                );
            }
        }
        assert_eq!(self.compiled.len(), self.exchanges.len());
    }
}
