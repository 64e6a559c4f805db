//! One exchange compiled with its bindings, kept up to date one binding at a time.
//!
//! Direct keys live in a [`CowMap`], topic patterns in a persistent trie, so a binding change
//! costs about O(√bindings) or O(pattern) however many bindings the exchange has, and the copy a
//! routing snapshot holds is never disturbed. Fanout and headers exchanges keep plain lists
//! (their routing reads every binding anyway); a consistent-hash ring is rebuilt, since its
//! bucket ranges depend on every binding before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_amqp::ShortStr;

use super::cow_map::CowMap;
use super::{alternate_exchange, hash, headers, topic, Destination, RouteInput, Targets};
use crate::meta::{Binding, ExchangeDef};
use crate::names::ExchangeName;
use crate::routing::ExchangeKind;

#[derive(Clone, Debug)]
enum Matcher {
    Direct(CowMap<ShortStr, Targets>),
    Fanout(Targets),
    Topic(topic::TopicTrie),
    Headers(Vec<Arc<headers::HeadersBinding>>),
    Hash(Arc<hash::HashRing>),
}

impl Matcher {
    fn empty(def: &ExchangeDef) -> Self {
        match def.kind {
            ExchangeKind::Direct => Matcher::Direct(CowMap::default()),
            ExchangeKind::Fanout => Matcher::Fanout(Targets::default()),
            ExchangeKind::Topic => Matcher::Topic(topic::TopicTrie::default()),
            ExchangeKind::Headers => Matcher::Headers(Vec::new()),
            ExchangeKind::ConsistentHash => Matcher::Hash(Arc::new(ring(def, std::iter::empty()))),
        }
    }

    /// Add one binding; false when the matcher must be rebuilt from all bindings instead.
    fn add(&mut self, b: &Binding) -> bool {
        match self {
            Matcher::Direct(keys) => keys
                .get_or_insert_with(b.routing_key.clone(), Targets::default)
                .add(&b.destination),
            Matcher::Fanout(all) => all.add(&b.destination),
            Matcher::Topic(trie) => trie.add(&b.routing_key, &b.destination),
            Matcher::Headers(list) => list.push(Arc::new(headers::HeadersBinding::new(
                &b.arguments,
                Targets::of(&b.destination),
            ))),
            Matcher::Hash(_) => return false,
        }
        true
    }

    /// Remove one binding; false when the matcher must be rebuilt from all bindings instead.
    fn remove(&mut self, b: &Binding) -> bool {
        match self {
            Matcher::Direct(keys) => {
                let key: &[u8] = b.routing_key.as_slice();
                if let Some(targets) = keys.get_mut(key) {
                    targets.remove(&b.destination);
                    if targets.is_empty() {
                        keys.remove(key);
                    }
                }
            }
            Matcher::Fanout(all) => {
                all.remove(&b.destination);
            }
            Matcher::Topic(trie) => {
                trie.remove(&b.routing_key, &b.destination);
            }
            Matcher::Headers(list) => {
                let target = Targets::of(&b.destination);
                if let Some(i) = list
                    .iter()
                    .position(|h| h.is_binding(&b.arguments, &target))
                {
                    list.remove(i);
                }
            }
            Matcher::Hash(_) => return false,
        }
        true
    }

    /// Calls `visit` with each non-empty set of destinations the message matches.
    fn for_each_match<'a>(&'a self, input: &RouteInput<'_>, mut visit: impl FnMut(&'a Targets)) {
        let mut visit_some = |t: &'a Targets| {
            if !t.is_empty() {
                visit(t)
            }
        };
        match self {
            Matcher::Direct(keys) => keys
                .get(input.routing_key.as_bytes())
                .into_iter()
                .for_each(visit_some),
            Matcher::Fanout(all) => visit_some(all),
            Matcher::Topic(trie) => trie.for_each_match(input.routing_key, &mut visit_some),
            Matcher::Headers(bindings) => bindings
                .iter()
                .filter(|b| b.matches(input.headers))
                .for_each(|b| visit_some(&b.targets)),
            Matcher::Hash(ring) => ring.pick(input).into_iter().for_each(visit_some),
        }
    }

    /// Whether the result depends on more than the exchange and the routing key.
    fn reads_message(&self) -> bool {
        match self {
            Matcher::Headers(_) => true,
            Matcher::Hash(ring) => ring.on().reads_message(),
            _ => false,
        }
    }
}

fn ring<'a>(def: &ExchangeDef, bindings: impl Iterator<Item = &'a Binding>) -> hash::HashRing {
    let mut ring = hash::HashRing::new(hash::HashOn::of(&def.arguments));
    for b in bindings {
        let weight = hash::parse_weight(&b.routing_key).unwrap_or(0);
        ring.push(weight, Targets::of(&b.destination));
    }
    ring
}

/// One exchange with its bindings, ready to route.
#[derive(Clone, Debug)]
pub(crate) struct CompiledExchange {
    pub(super) name: ExchangeName,
    pub(super) internal: bool,
    pub(super) alternate: Option<ExchangeName>,
    def: ExchangeDef,
    matcher: Matcher,
    /// Exchanges bound as destinations, with how many bindings lead to each.
    bound_exchanges: BTreeMap<ExchangeName, u32>,
}

impl CompiledExchange {
    pub(crate) fn def(&self) -> &ExchangeDef {
        &self.def
    }

    /// `bindings` are the exchange's bindings as source, in the order they were made.
    pub(crate) fn new<'a>(def: &ExchangeDef, bindings: impl Iterator<Item = &'a Binding>) -> Self {
        let mut x = CompiledExchange {
            name: def.name.clone(),
            internal: def.internal,
            alternate: alternate_exchange(&def.arguments),
            def: def.clone(),
            matcher: Matcher::empty(def),
            bound_exchanges: BTreeMap::new(),
        };
        x.rebuild(bindings);
        x
    }

    /// Compile every binding afresh.
    fn rebuild<'a>(&mut self, bindings: impl Iterator<Item = &'a Binding>) {
        let bindings: Vec<&Binding> = bindings.collect();
        debug_assert!(bindings.iter().all(|b| b.source == self.name));
        self.bound_exchanges.clear();
        for b in &bindings {
            if let Destination::Exchange(x) = &b.destination {
                *self.bound_exchanges.entry(x.clone()).or_default() += 1;
            }
        }
        self.matcher = match self.def.kind {
            ExchangeKind::Fanout => {
                Matcher::Fanout(Targets::collect(bindings.iter().map(|b| &b.destination)))
            }
            ExchangeKind::ConsistentHash => {
                Matcher::Hash(Arc::new(ring(&self.def, bindings.iter().copied())))
            }
            _ => {
                let mut m = Matcher::empty(&self.def);
                bindings.iter().for_each(|b| {
                    m.add(b);
                });
                m
            }
        };
    }

    /// `b` was bound; `all` are the exchange's bindings now, `b` among them.
    pub(crate) fn bind<'a>(&mut self, b: &Binding, all: impl Iterator<Item = &'a Binding>) {
        if !self.matcher.add(b) {
            return self.rebuild(all);
        }
        if let Destination::Exchange(x) = &b.destination {
            *self.bound_exchanges.entry(x.clone()).or_default() += 1;
        }
    }

    /// `b` was unbound; `all` are the exchange's bindings now, without it.
    pub(crate) fn unbind<'a>(&mut self, b: &Binding, all: impl Iterator<Item = &'a Binding>) {
        if !self.matcher.remove(b) {
            return self.rebuild(all);
        }
        if let Destination::Exchange(x) = &b.destination {
            if let Some(n) = self.bound_exchanges.get_mut(x) {
                *n -= 1;
                if *n == 0 {
                    self.bound_exchanges.remove(x);
                }
            }
        }
    }

    pub(super) fn for_each_match<'a>(
        &'a self,
        input: &RouteInput<'_>,
        visit: impl FnMut(&'a Targets),
    ) {
        self.matcher.for_each_match(input, visit)
    }

    pub(super) fn reads_message(&self) -> bool {
        self.matcher.reads_message()
    }

    /// Exchanges this one routes on to: its exchange-to-exchange destinations and alternate.
    pub(super) fn links(&self) -> impl Iterator<Item = &ExchangeName> {
        self.bound_exchanges.keys().chain(self.alternate.as_ref())
    }

    /// What this exchange routes, in a form that does not depend on how it was built: the
    /// incrementally kept exchange must equal one compiled afresh.
    #[cfg(test)]
    pub(crate) fn canonical(&self) -> String {
        let matcher = match &self.matcher {
            Matcher::Direct(keys) => {
                let mut all: Vec<_> = keys.iter().collect();
                all.sort_by(|a, b| a.0.cmp(b.0));
                all.iter().for_each(|(_, t)| t.check());
                assert!(all.iter().all(|(_, t)| !t.is_empty()), "empty key kept");
                format!("{all:?}")
            }
            Matcher::Fanout(t) => {
                t.check();
                format!("{t:?}")
            }
            Matcher::Topic(trie) => format!("{:?}", trie.canonical()),
            Matcher::Headers(list) => format!("{list:?}"),
            Matcher::Hash(ring) => format!("{ring:?}"),
        };
        format!("{:?} {:?} {matcher}", self.def, self.bound_exchanges)
    }
}
