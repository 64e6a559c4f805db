//! Routing: the immutable snapshot publishers route through, and the matchers behind it.
//!
//! The metadata state machine keeps each exchange compiled with its bindings as a
//! [`CompiledExchange`] (a hash map for direct, a list for fanout, a trie for topic, a binding list
//! for headers, a ring for consistent hash), updating it one binding at a time, and a
//! [`RoutingSnapshot`] is a cheap clone of those tables: they share their storage
//! (`cow_map`, the persistent topic trie), so a change copies only what it touches and never
//! disturbs a snapshot a publisher still holds. Routing then only reads: hash lookups, no locks,
//! and no allocation on the direct and fanout paths beyond pushing into the caller's vector.
//!
//! Exchange-to-exchange bindings and alternate exchanges are followed the way RabbitMQ's
//! `rabbit_exchange:route/2` does: each exchange is visited at most once, an exchange's alternate
//! is tried only when the exchange itself matched nothing, and a queue reached twice gets one copy.
//!
//! - `cow_map`: the sharded copy-on-write hash map under the tables.
//! - `exchange`: one exchange's matcher, kept up to date binding by binding.
//! - `targets`: the destinations one match yields, counted per binding.
//! - `topic`, `headers`, `hash`: the topic trie, headers matching, the consistent-hash ring.

mod cow_map;
mod exchange;
mod hash;
mod headers;
mod targets;
#[cfg(test)]
mod tests;
mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tern_amqp::{AmqpError, BasicProperties, FieldTable, FieldValue, ReplyCode, ShortStr};

use crate::message::Message;
use crate::names::{ExchangeName, QueueName, VhostName};

use cow_map::CowMap;
pub(crate) use exchange::CompiledExchange;
pub(crate) use targets::Targets;

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

#[derive(Clone, Debug)]
struct RouteEntry {
    exchange: Arc<CompiledExchange>,
    /// No exchange reachable from here reads headers or properties.
    cacheable: bool,
}

/// The exchanges of one vhost. The metadata keeps one up to date, change by change, and a
/// snapshot holds a clone (sharing all it did not change).
#[derive(Clone, Debug, Default)]
pub(crate) struct VhostRoutes {
    exchanges: CowMap<ShortStr, RouteEntry>,
}

impl VhostRoutes {
    /// Add or replace an exchange. Call [`mark_cacheable`](Self::mark_cacheable) once the
    /// exchange graph's changes are all in.
    pub(crate) fn put(&mut self, exchange: CompiledExchange) {
        let entry = RouteEntry {
            exchange: Arc::new(exchange),
            cacheable: false,
        };
        self.exchanges.insert(entry.exchange.name.0.clone(), entry);
    }

    pub(crate) fn remove(&mut self, name: &ExchangeName) {
        self.exchanges.remove(name.0.as_slice());
    }

    /// An exchange to change in place (copied first if a snapshot shares it).
    pub(crate) fn exchange_mut(&mut self, name: &ExchangeName) -> Option<&mut CompiledExchange> {
        let entry = self.exchanges.get_mut(name.0.as_slice())?;
        Some(Arc::make_mut(&mut entry.exchange))
    }

    pub(crate) fn len(&self) -> usize {
        self.exchanges.len()
    }

    #[cfg(test)]
    pub(crate) fn exchange(&self, name: &ExchangeName) -> Option<&CompiledExchange> {
        self.get_bytes(name.0.as_slice())
    }

    #[cfg(test)]
    pub(crate) fn cacheable(&self, name: &ExchangeName) -> Option<bool> {
        self.exchanges.get(name.0.as_slice()).map(|e| e.cacheable)
    }

    /// Exchanges from which a message-reading exchange can be reached are not cacheable: walk
    /// the links backwards from every message-reading exchange. O(exchanges + links): run when
    /// the exchange graph changed, not per binding to a queue.
    pub(crate) fn mark_cacheable(&mut self) {
        let mut reverse: HashMap<&ExchangeName, Vec<&ExchangeName>> = HashMap::new();
        let mut pending: Vec<&ExchangeName> = Vec::new();
        for entry in self.exchanges.values() {
            let x = &entry.exchange;
            for link in x.links() {
                reverse.entry(link).or_default().push(&x.name);
            }
            if x.reads_message() {
                pending.push(&x.name);
            }
        }
        let mut uncacheable: HashSet<ExchangeName> = HashSet::new();
        while let Some(name) = pending.pop() {
            if uncacheable.insert(name.clone()) {
                pending.extend(reverse.get(name).into_iter().flatten().copied());
            }
        }
        let stale: Vec<(ShortStr, bool)> = self
            .exchanges
            .iter()
            .filter_map(|(key, e)| {
                let cacheable = !uncacheable.contains(&e.exchange.name);
                (e.cacheable != cacheable).then(|| (key.clone(), cacheable))
            })
            .collect();
        for (key, cacheable) in stale {
            if let Some(entry) = self.exchanges.get_mut(key.as_slice()) {
                entry.cacheable = cacheable;
            }
        }
    }

    fn get_bytes(&self, name: &[u8]) -> Option<&CompiledExchange> {
        self.exchanges.get(name).map(|e| &*e.exchange)
    }

    /// Route from `start`, following exchange-to-exchange bindings and alternate exchanges.
    fn route(&self, start: &CompiledExchange, input: &RouteInput<'_>, out: &mut Vec<QueueName>) {
        let base = out.len();
        let mut groups = 0usize;
        // Both stay unallocated unless another exchange is reached.
        let mut pending: Vec<&CompiledExchange> = Vec::new();
        let mut seen: Vec<&[u8]> = vec![];
        let mut current = start;
        loop {
            let mut matched = false;
            current.for_each_match(input, |t| {
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
        seen: &mut Vec<&'a [u8]>,
        pending: &mut Vec<&'a CompiledExchange>,
    ) {
        let name = name.0.as_slice();
        if name == start.name.0.as_slice() || seen.contains(&name) {
            return;
        }
        if let Some((key, entry)) = self.exchanges.get_key_value(name) {
            seen.push(key.as_slice());
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
            .get_bytes(exchange.as_bytes())
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

    /// The definition of an exchange, if it exists.
    pub fn exchange(&self, vhost: &VhostName, exchange: &str) -> Option<&crate::meta::ExchangeDef> {
        let routes = self.vhosts.get(vhost)?;
        routes.get_bytes(exchange.as_bytes()).map(|x| x.def())
    }

    /// Whether routing through `exchange` depends only on (exchange, routing key), so a result
    /// may be cached until the generation changes: false when a headers exchange or a
    /// consistent-hash exchange hashing a header or property is reachable from it, and for
    /// exchanges that do not exist.
    pub fn is_cacheable(&self, vhost: &VhostName, exchange: &str) -> bool {
        let entry = self
            .vhosts
            .get(vhost)
            .and_then(|r| r.exchanges.get(exchange.as_bytes()));
        entry.is_some_and(|e| e.cacheable)
    }
}
