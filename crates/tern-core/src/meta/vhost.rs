//! One vhost's definitions and the binding graph between them, with RabbitMQ's cascades:
//! deleting a queue or exchange removes every binding that refers to it, and an auto-delete
//! exchange goes when its last binding as source goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tern_amqp::FieldTable;

use super::bindings::BindingSet;
use super::{Binding, ExchangeDef, QueueDef};
use crate::names::{ExchangeName, QueueName};
use crate::routing::{CompiledExchange, Destination, ExchangeKind, VhostRoutes};

/// A change the routing tables must follow.
#[derive(Debug)]
pub(crate) enum RouteChange {
    Bound(Binding),
    Unbound(Binding),
    /// Declared or deleted: compiled afresh from what it is at the end of the command.
    Exchange(ExchangeName),
}

/// What a command did, beyond its outcome.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Some definition changed: the generation moves on.
    pub(crate) changed: bool,
    /// For the routing tables, in the order they happened.
    pub(crate) routes: Vec<RouteChange>,
    /// Auto-delete exchanges deleted because their last binding went, in deletion order.
    pub(crate) auto_deleted: Vec<ExchangeName>,
}

impl Effects {
    fn route(&mut self, change: RouteChange) {
        self.changed = true;
        self.routes.push(change);
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
    /// Bindings by source. Never holds an empty set.
    outbound: BTreeMap<ExchangeName, BindingSet>,
    /// For each destination, the exchanges with at least one binding to it.
    inbound: BTreeMap<Destination, BTreeSet<ExchangeName>>,
    /// Every exchange compiled, kept up to date change by change; snapshots share it.
    routes: Arc<VhostRoutes>,
}

impl VhostState {
    pub(crate) fn new() -> Self {
        let mut vh = VhostState {
            exchanges: BTreeMap::new(),
            queues: BTreeMap::new(),
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
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
        vh.refresh(fx.routes);
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
        self.outbound.values().flat_map(BindingSet::iter)
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

    /// Whether this binding (arguments sorted) exists.
    pub(crate) fn has_binding(&self, binding: &Binding) -> bool {
        self.outbound
            .get(&binding.source)
            .is_some_and(|set| set.contains(binding))
    }

    /// Whether the exchange is the source of any binding (exchange.delete if-unused).
    pub(crate) fn has_bindings_from(&self, exchange: &ExchangeName) -> bool {
        self.outbound.contains_key(exchange)
    }

    pub(crate) fn insert_exchange(&mut self, def: ExchangeDef, fx: &mut Effects) {
        fx.route(RouteChange::Exchange(def.name.clone()));
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
        let set = self.outbound.entry(binding.source.clone()).or_default();
        if !set.insert(binding.clone()) {
            return false;
        }
        let sources = self.inbound.entry(binding.destination.clone()).or_default();
        sources.insert(binding.source.clone());
        fx.route(RouteChange::Bound(binding));
        true
    }

    /// Remove a binding; false if there was none. May auto-delete its source.
    pub(crate) fn remove_binding(&mut self, binding: &Binding, fx: &mut Effects) -> bool {
        let Some(set) = self.outbound.get_mut(&binding.source) else {
            return false;
        };
        let Some(removed) = set.remove(binding) else {
            return false;
        };
        let still_linked = set.links_to(&binding.destination);
        if set.is_empty() {
            self.outbound.remove(&binding.source);
        }
        if !still_linked {
            self.unlink(&binding.destination, &binding.source);
        }
        fx.route(RouteChange::Unbound(removed));
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
        fx.route(RouteChange::Exchange(name.clone()));
        for binding in self.outbound.remove(name).unwrap_or_default().iter() {
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
            if let Some(set) = self.outbound.get_mut(&source) {
                for removed in set.remove_to(destination) {
                    fx.route(RouteChange::Unbound(removed));
                }
                if set.is_empty() {
                    self.outbound.remove(&source);
                }
            }
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

    /// Bring the routing tables up to date with `changes`, the effects of one command. An
    /// exchange declared or deleted is compiled afresh from its final state (its bindings'
    /// changes are then already in it); every other change is applied one binding at a time.
    pub(crate) fn refresh(&mut self, changes: Vec<RouteChange>) {
        if changes.is_empty() {
            return;
        }
        let rebuilt: BTreeSet<ExchangeName> = changes
            .iter()
            .filter_map(|c| match c {
                RouteChange::Exchange(x) => Some(x.clone()),
                _ => None,
            })
            .collect();
        let routes = Arc::make_mut(&mut self.routes);
        let mut graph_changed = !rebuilt.is_empty();
        for name in &rebuilt {
            match self.exchanges.get(name) {
                Some(def) => {
                    let bindings = self
                        .outbound
                        .get(name)
                        .into_iter()
                        .flat_map(BindingSet::iter);
                    routes.put(CompiledExchange::new(def, bindings));
                }
                None => routes.remove(name),
            }
        }
        for change in changes {
            let (binding, bound) = match change {
                RouteChange::Bound(b) => (b, true),
                RouteChange::Unbound(b) => (b, false),
                RouteChange::Exchange(_) => continue,
            };
            if rebuilt.contains(&binding.source) {
                continue;
            }
            graph_changed |= matches!(binding.destination, Destination::Exchange(_));
            let Some(x) = routes.exchange_mut(&binding.source) else {
                debug_assert!(false, "binding from an uncompiled exchange {binding:?}");
                continue;
            };
            let all = self
                .outbound
                .get(&binding.source)
                .into_iter()
                .flat_map(BindingSet::iter);
            if bound {
                x.bind(&binding, all);
            } else {
                x.unbind(&binding, all);
            }
        }
        if graph_changed {
            routes.mark_cacheable();
        }
        debug_assert_eq!(routes.len(), self.exchanges.len());
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (source, set) in &self.outbound {
            assert!(!set.is_empty(), "empty binding set for {source}");
            set.check();
            assert!(
                self.exchanges.contains_key(source),
                "binding from missing {source}"
            );
            for b in set.iter() {
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
                let linked = self
                    .outbound
                    .get(s)
                    .is_some_and(|set| set.links_to(destination));
                assert!(linked, "stale inbound");
            }
        }
        // The tables kept change by change equal tables compiled afresh.
        assert_eq!(self.routes.len(), self.exchanges.len());
        let mut fresh = VhostRoutes::default();
        for (name, def) in &self.exchanges {
            let bindings = self
                .outbound
                .get(name)
                .into_iter()
                .flat_map(BindingSet::iter);
            let fresh_x = CompiledExchange::new(def, bindings);
            let kept = self
                .routes
                .exchange(name)
                .expect("every exchange is compiled");
            assert_eq!(kept.canonical(), fresh_x.canonical(), "exchange {name}");
            fresh.put(fresh_x);
        }
        fresh.mark_cacheable();
        for name in self.exchanges.keys() {
            assert_eq!(
                self.routes.cacheable(name),
                fresh.cacheable(name),
                "cacheable {name}"
            );
        }
    }
}
