//! Routing: the immutable snapshot publishers route through, and the matchers behind it.
//!
//! The metadata state machine compiles each exchange with its bindings into a
//! [`CompiledExchange`] (a hash map for direct, a list for fanout, a trie for topic, a binding list
//! for headers, a ring for consistent hash) whenever they change, and assembles them into a
//! [`RoutingSnapshot`]. Routing then only reads: hash lookups, no locks, and no allocation on the
//! direct and fanout paths beyond pushing into the caller's vector.
//!
//! Exchange-to-exchange bindings and alternate exchanges are followed the way RabbitMQ's
//! `rabbit_exchange:route/2` does: each exchange is visited at most once, an exchange's alternate
//! is tried only when the exchange itself matched nothing, and a queue reached twice gets one copy.

mod hash;
mod headers;
#[cfg(test)]
mod tests;
mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tern_amqp::{AmqpError, BasicProperties, FieldTable, FieldValue, ReplyCode};

use crate::message::Message;
use crate::meta::{Binding, ExchangeDef};
use crate::names::{ExchangeName, QueueName, VhostName};

pub(crate) use hash::{parse_weight, validate_exchange as validate_hash_exchange};
pub(crate) use headers::{
    plain_value, type_name, validate_binding as validate_headers_binding, values_equal,
};

/// An exchange type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-consistent-hash`.
    ConsistentHash,
}

impl ExchangeKind {
    /// The type named in `exchange.declare`; None for types this broker does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            "x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
        }
    }
}

/// Where a binding delivers: a queue, or another exchange (exchange-to-exchange binding).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(QueueName),
    Exchange(ExchangeName),
}

/// 404 for an exchange that does not exist, worded as RabbitMQ does.
pub(crate) fn no_exchange(vhost: &VhostName, name: &str) -> AmqpError {
    AmqpError::new(
        ReplyCode::NotFound,
        format!("no exchange '{name}' in vhost '{vhost}'"),
    )
}

/// What routing looks at in a message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteInput<'a> {
    pub(crate) routing_key: &'a str,
    pub(crate) headers: Option<&'a FieldTable>,
    pub(crate) properties: Option<&'a BasicProperties>,
}

/// The destinations one match yields, each sorted and listed once.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Targets {
    pub(crate) queues: Vec<QueueName>,
    pub(crate) exchanges: Vec<ExchangeName>,
}

impl Targets {
    fn add(&mut self, destination: &Destination) {
        match destination {
            Destination::Queue(q) => self.queues.push(q.clone()),
            Destination::Exchange(x) => self.exchanges.push(x.clone()),
        }
    }

    fn of(destination: &Destination) -> Self {
        let mut t = Targets::default();
        t.add(destination);
        t
    }

    fn finish(&mut self) {
        self.queues.sort_unstable();
        self.queues.dedup();
        self.exchanges.sort_unstable();
        self.exchanges.dedup();
        self.queues.shrink_to_fit();
        self.exchanges.shrink_to_fit();
    }

    fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.exchanges.is_empty()
    }
}

#[derive(Debug)]
enum Matcher {
    Direct(HashMap<Box<str>, Targets>),
    Fanout(Targets),
    Topic(topic::TopicTrie),
    Headers(Vec<headers::HeadersBinding>),
    Hash(hash::HashRing),
}

impl Matcher {
    fn new(def: &ExchangeDef, bindings: &[Binding]) -> Self {
        match def.kind {
            ExchangeKind::Direct => {
                let mut keys: HashMap<Box<str>, Targets> = HashMap::new();
                for b in bindings {
                    keys.entry(Box::from(b.routing_key.as_str()))
                        .or_default()
                        .add(&b.destination);
                }
                keys.values_mut().for_each(Targets::finish);
                Matcher::Direct(keys)
            }
            ExchangeKind::Fanout => {
                let mut all = Targets::default();
                bindings.iter().for_each(|b| all.add(&b.destination));
                all.finish();
                Matcher::Fanout(all)
            }
            ExchangeKind::Topic => {
                let mut trie = topic::TopicTrie::default();
                for b in bindings {
                    trie.targets_mut(&b.routing_key).add(&b.destination);
                }
                trie.finish();
                Matcher::Topic(trie)
            }
            ExchangeKind::Headers => Matcher::Headers(
                bindings
                    .iter()
                    .map(|b| {
                        headers::HeadersBinding::new(&b.arguments, Targets::of(&b.destination))
                    })
                    .collect(),
            ),
            ExchangeKind::ConsistentHash => {
                let mut ring = hash::HashRing::new(hash::HashOn::of(&def.arguments));
                for b in bindings {
                    let weight = hash::parse_weight(&b.routing_key).unwrap_or(0);
                    ring.push(weight, Targets::of(&b.destination));
                }
                Matcher::Hash(ring)
            }
        }
    }

    /// Calls `visit` with each non-empty set of destinations the message matches.
    fn for_each_match<'a>(&'a self, input: &RouteInput<'_>, mut visit: impl FnMut(&'a Targets)) {
        let mut visit_some = |t: &'a Targets| {
            if !t.is_empty() {
                visit(t)
            }
        };
        match self {
            Matcher::Direct(keys) => keys.get(input.routing_key).into_iter().for_each(visit_some),
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

    /// Every exchange a match can lead to.
    fn exchange_destinations(&self) -> Vec<&ExchangeName> {
        let mut all: Vec<&Targets> = Vec::new();
        match self {
            Matcher::Direct(keys) => all.extend(keys.values()),
            Matcher::Fanout(t) => all.push(t),
            Matcher::Topic(trie) => all.extend(trie.all_targets()),
            Matcher::Headers(bindings) => all.extend(bindings.iter().map(|b| &b.targets)),
            Matcher::Hash(ring) => all.extend(ring.all_targets()),
        }
        all.into_iter().flat_map(|t| t.exchanges.iter()).collect()
    }
}

/// One exchange with its bindings, ready to route.
#[derive(Debug)]
pub(crate) struct CompiledExchange {
    name: ExchangeName,
    internal: bool,
    alternate: Option<ExchangeName>,
    matcher: Matcher,
}

impl CompiledExchange {
    /// `bindings` are the exchange's bindings as source, in the order they were made.
    pub(crate) fn new(def: &ExchangeDef, bindings: &[Binding]) -> Self {
        debug_assert!(bindings.iter().all(|b| b.source == def.name));
        CompiledExchange {
            name: def.name.clone(),
            internal: def.internal,
            alternate: alternate_exchange(&def.arguments),
            matcher: Matcher::new(def, bindings),
        }
    }

    /// Exchanges this one routes on to: its exchange-to-exchange destinations and alternate.
    fn links(&self) -> impl Iterator<Item = &ExchangeName> {
        self.matcher
            .exchange_destinations()
            .into_iter()
            .chain(self.alternate.as_ref())
    }
}

/// The `alternate-exchange` argument, when it is a long string (RabbitMQ ignores other types
/// here; declaring with one is refused).
pub(crate) fn alternate_exchange(arguments: &FieldTable) -> Option<ExchangeName> {
    match arguments.get("alternate-exchange") {
        Some(FieldValue::LongStr(b)) => {
            Some(ExchangeName::from(String::from_utf8_lossy(b).as_ref()))
        }
        _ => None,
    }
}

#[derive(Debug)]
struct RouteEntry {
    exchange: Arc<CompiledExchange>,
    /// No exchange reachable from here reads headers or properties.
    cacheable: bool,
}

/// The exchanges of one vhost.
#[derive(Debug, Default)]
pub(crate) struct VhostRoutes {
    exchanges: HashMap<Box<str>, RouteEntry>,
}

impl VhostRoutes {
    pub(crate) fn new<'a>(exchanges: impl IntoIterator<Item = &'a Arc<CompiledExchange>>) -> Self {
        let exchanges: HashMap<Box<str>, RouteEntry> = exchanges
            .into_iter()
            .map(|x| {
                let entry = RouteEntry {
                    exchange: x.clone(),
                    cacheable: true,
                };
                (Box::from(x.name.as_str()), entry)
            })
            .collect();
        let mut routes = VhostRoutes { exchanges };
        routes.mark_uncacheable();
        routes
    }

    /// Exchanges from which a message-reading exchange can be reached are not cacheable: walk
    /// the links backwards from every message-reading exchange.
    fn mark_uncacheable(&mut self) {
        let mut reverse: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut pending: Vec<&str> = Vec::new();
        for (name, entry) in &self.exchanges {
            for link in entry.exchange.links() {
                reverse.entry(link.as_str()).or_default().push(name);
            }
            if entry.exchange.matcher.reads_message() {
                pending.push(name);
            }
        }
        let mut uncacheable: HashSet<Box<str>> = HashSet::new();
        while let Some(name) = pending.pop() {
            if uncacheable.insert(Box::from(name)) {
                pending.extend(reverse.get(name).into_iter().flatten().copied());
            }
        }
        for name in uncacheable {
            if let Some(entry) = self.exchanges.get_mut(&name) {
                entry.cacheable = false;
            }
        }
    }

    fn get(&self, name: &str) -> Option<&CompiledExchange> {
        self.exchanges.get(name).map(|e| &*e.exchange)
    }

    /// Route from `start`, following exchange-to-exchange bindings and alternate exchanges.
    fn route(&self, start: &CompiledExchange, input: &RouteInput<'_>, out: &mut Vec<QueueName>) {
        let base = out.len();
        let mut groups = 0usize;
        // Both stay unallocated unless another exchange is reached.
        let mut pending: Vec<&CompiledExchange> = Vec::new();
        let mut seen: Vec<&str> = vec![];
        let mut current = start;
        loop {
            let mut matched = false;
            current.matcher.for_each_match(input, |t| {
                matched = true;
                groups += 1;
                out.extend(t.queues.iter().cloned());
                for x in &t.exchanges {
                    self.enqueue(start, x, &mut seen, &mut pending);
                }
            });
            if !matched {
                if let Some(ae) = &current.alternate {
                    self.enqueue(start, ae, &mut seen, &mut pending);
                }
            }
            match pending.pop() {
                Some(next) => current = next,
                None => break,
            }
        }
        if groups > 1 {
            sort_and_dedup_from(out, base);
        }
    }

    fn enqueue<'a>(
        &'a self,
        start: &CompiledExchange,
        name: &ExchangeName,
        seen: &mut Vec<&'a str>,
        pending: &mut Vec<&'a CompiledExchange>,
    ) {
        if *name == start.name || seen.contains(&name.as_str()) {
            return;
        }
        if let Some((key, entry)) = self.exchanges.get_key_value(name.as_str()) {
            seen.push(key);
            pending.push(&entry.exchange);
        }
    }
}

fn sort_and_dedup_from(out: &mut Vec<QueueName>, base: usize) {
    out[base..].sort_unstable();
    let mut kept = base;
    for i in base..out.len() {
        if kept == base || out[i] != out[kept - 1] {
            out.swap(kept, i);
            kept += 1;
        }
    }
    out.truncate(kept);
}

/// An immutable routing table for every vhost, built by the metadata state machine.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    generation: u64,
    vhosts: HashMap<VhostName, Arc<VhostRoutes>>,
}

impl RoutingSnapshot {
    pub(crate) fn new(generation: u64, vhosts: HashMap<VhostName, Arc<VhostRoutes>>) -> Self {
        RoutingSnapshot { generation, vhosts }
    }

    /// The metadata generation this snapshot was built at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Push the queues a message published to `exchange` with `routing_key` goes to.
    ///
    /// The default exchange (`""`) yields the queue named by the routing key without checking
    /// that it exists. Errors: 404 for an unknown exchange, 403 for an internal one.
    pub fn route(
        &self,
        vhost: &VhostName,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueName>,
    ) -> Result<(), AmqpError> {
        let input = RouteInput {
            routing_key,
            headers,
            properties: None,
        };
        self.route_input(vhost, exchange, &input, out)
    }

    /// Like [`route`](Self::route), with every property available: consistent-hash exchanges
    /// with a `hash-property` argument need them.
    pub fn route_message(
        &self,
        vhost: &VhostName,
        message: &Message,
        out: &mut Vec<QueueName>,
    ) -> Result<(), AmqpError> {
        let input = RouteInput {
            routing_key: &message.routing_key,
            headers: message.properties.headers.as_ref(),
            properties: Some(&message.properties),
        };
        self.route_input(vhost, &message.exchange, &input, out)
    }

    fn route_input(
        &self,
        vhost: &VhostName,
        exchange: &str,
        input: &RouteInput<'_>,
        out: &mut Vec<QueueName>,
    ) -> Result<(), AmqpError> {
        let routes = self
            .vhosts
            .get(vhost)
            .ok_or_else(|| no_exchange(vhost, exchange))?;
        let start = routes
            .get(exchange)
            .ok_or_else(|| no_exchange(vhost, exchange))?;
        if start.internal {
            let text =
                format!("cannot publish to internal exchange '{exchange}' in vhost '{vhost}'");
            return Err(AmqpError::new(ReplyCode::AccessRefused, text));
        }
        if exchange.is_empty() {
            out.push(QueueName::from(input.routing_key));
            return Ok(());
        }
        routes.route(start, input, out);
        Ok(())
    }

    /// Whether routing through `exchange` depends only on (exchange, routing key), so a result
    /// may be cached until the generation changes: false when a headers exchange or a
    /// consistent-hash exchange hashing a header or property is reachable from it, and for
    /// exchanges that do not exist.
    pub fn is_cacheable(&self, vhost: &VhostName, exchange: &str) -> bool {
        let entry = self
            .vhosts
            .get(vhost)
            .and_then(|r| r.exchanges.get(exchange));
        entry.is_some_and(|e| e.cacheable)
    }
}
