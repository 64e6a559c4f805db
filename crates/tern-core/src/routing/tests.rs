//! Routing through snapshots built by the metadata state machine.

use bytes::Bytes;
use tern_amqp::{AmqpError, BasicProperties, FieldTable, FieldValue, ReplyCode, ShortStr};

use super::*;
use crate::message::Message;
use crate::meta::{Binding, ExchangeDef, MetaCommand, Metadata, QueueDef};
use crate::names::{ConnectionId, ExchangeName, QueueName, VhostName};

fn vhost() -> VhostName {
    VhostName::from("/")
}

fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
}

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in entries {
        t.insert(*k, v.clone());
    }
    t
}

struct World {
    meta: Metadata,
}

impl World {
    fn new() -> Self {
        World {
            meta: Metadata::new(),
        }
    }

    fn apply(&mut self, cmd: MetaCommand) {
        if let Err(e) = self.meta.apply(cmd.clone()) {
            panic!("{cmd:?} failed: {e}");
        }
    }

    fn exchange_def(&mut self, name: &str, kind: ExchangeKind, args: FieldTable, internal: bool) {
        let def = ExchangeDef {
            name: ExchangeName::from(name),
            kind,
            durable: false,
            auto_delete: false,
            internal,
            arguments: args,
        };
        self.apply(MetaCommand::DeclareExchange {
            vhost: vhost(),
            def,
            passive: false,
        });
    }

    fn exchange(&mut self, name: &str, kind: ExchangeKind) -> &mut Self {
        self.exchange_def(name, kind, FieldTable::new(), false);
        self
    }

    fn exchange_with_ae(&mut self, name: &str, kind: ExchangeKind, ae: &str) -> &mut Self {
        self.exchange_def(name, kind, table(&[("alternate-exchange", s(ae))]), false);
        self
    }

    fn queue(&mut self, name: &str) -> &mut Self {
        let def = QueueDef {
            name: QueueName::from(name),
            durable: false,
            exclusive_owner: None,
            home: None,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let requester = ConnectionId(1);
        self.apply(MetaCommand::DeclareQueue {
            vhost: vhost(),
            def,
            passive: false,
            server_named: false,
            requester,
        });
        self
    }

    fn bind_to(&mut self, source: &str, destination: Destination, key: &str, args: FieldTable) {
        let binding = Binding {
            source: ExchangeName::from(source),
            destination,
            routing_key: ShortStr::from(key),
            arguments: args,
        };
        self.apply(MetaCommand::Bind {
            vhost: vhost(),
            binding,
        });
    }

    fn bind(&mut self, source: &str, queue: &str, key: &str) -> &mut Self {
        self.bind_to(
            source,
            Destination::Queue(QueueName::from(queue)),
            key,
            FieldTable::new(),
        );
        self
    }

    fn bind_args(&mut self, source: &str, queue: &str, args: FieldTable) -> &mut Self {
        self.bind_to(source, Destination::Queue(QueueName::from(queue)), "", args);
        self
    }

    fn bind_exchange(&mut self, source: &str, destination: &str, key: &str) -> &mut Self {
        let to = Destination::Exchange(ExchangeName::from(destination));
        self.bind_to(source, to, key, FieldTable::new());
        self
    }

    fn route_with(
        &self,
        exchange: &str,
        key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<Vec<String>, AmqpError> {
        let mut out = Vec::new();
        self.meta
            .snapshot()
            .route(&vhost(), exchange, key, headers, &mut out)?;
        let names: Vec<String> = out.iter().map(|q| q.to_string()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "duplicates in {names:?}");
        Ok(unique)
    }

    fn route(&self, exchange: &str, key: &str) -> Vec<String> {
        self.route_with(exchange, key, None).expect("route")
    }

    fn cacheable(&self, exchange: &str) -> bool {
        self.meta.snapshot().is_cacheable(&vhost(), exchange)
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn default_exchange_routes_to_the_queue_named_by_the_key_existing_or_not() {
    let mut w = World::new();
    w.queue("q1");
    assert_eq!(w.route("", "q1"), names(&["q1"]));
    assert_eq!(w.route("", "nope"), names(&["nope"]));
    assert!(w.cacheable(""));
}

#[test]
fn unknown_exchange_is_404_worded_like_rabbitmq() {
    let w = World::new();
    let err = w.route_with("nope", "k", None).unwrap_err();
    assert_eq!(err.code, ReplyCode::NotFound);
    assert_eq!(
        err.to_string(),
        "NOT_FOUND - no exchange 'nope' in vhost '/'"
    );
    let mut out = Vec::new();
    let err = w
        .meta
        .snapshot()
        .route(&VhostName::from("other"), "", "k", None, &mut out)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "NOT_FOUND - no exchange '' in vhost 'other'"
    );
    assert!(!w.cacheable("nope"));
}

#[test]
fn publishing_to_an_internal_exchange_is_403() {
    let mut w = World::new();
    w.exchange_def("inner", ExchangeKind::Fanout, FieldTable::new(), true);
    let err = w.route_with("inner", "k", None).unwrap_err();
    assert_eq!(err.code, ReplyCode::AccessRefused);
    assert_eq!(
        err.to_string(),
        "ACCESS_REFUSED - cannot publish to internal exchange 'inner' in vhost '/'"
    );
    let err = w.route_with("amq.rabbitmq.trace", "k", None).unwrap_err();
    assert_eq!(err.code, ReplyCode::AccessRefused);
}

#[test]
fn direct_matches_the_exact_key() {
    let mut w = World::new();
    w.queue("q1").queue("q2").queue("q3");
    w.bind("amq.direct", "q1", "a")
        .bind("amq.direct", "q2", "a")
        .bind("amq.direct", "q3", "b");
    assert_eq!(w.route("amq.direct", "a"), names(&["q1", "q2"]));
    assert_eq!(w.route("amq.direct", "b"), names(&["q3"]));
    assert_eq!(w.route("amq.direct", "a.b"), names(&[]));
    assert_eq!(w.route("amq.direct", ""), names(&[]));
    assert!(w.cacheable("amq.direct"));
}

#[test]
fn a_queue_bound_twice_gets_one_copy() {
    let mut w = World::new();
    w.queue("q");
    w.bind_to(
        "amq.direct",
        Destination::Queue("q".into()),
        "a",
        table(&[("k", s("1"))]),
    );
    w.bind_to(
        "amq.direct",
        Destination::Queue("q".into()),
        "a",
        table(&[("k", s("2"))]),
    );
    w.bind("amq.topic", "q", "a.*")
        .bind("amq.topic", "q", "#")
        .bind("amq.topic", "q", "a.#");
    assert_eq!(w.route("amq.direct", "a"), names(&["q"]));
    assert_eq!(w.route("amq.topic", "a.b"), names(&["q"]));
}

#[test]
fn fanout_ignores_the_key() {
    let mut w = World::new();
    w.queue("q1").queue("q2");
    w.bind("amq.fanout", "q1", "x").bind("amq.fanout", "q2", "");
    assert_eq!(w.route("amq.fanout", "anything"), names(&["q1", "q2"]));
    w.exchange("empty", ExchangeKind::Fanout);
    assert_eq!(w.route("empty", "k"), names(&[]));
}

#[test]
fn topic_routes_through_the_trie() {
    let mut w = World::new();
    w.queue("all").queue("eu").queue("one");
    w.bind("amq.topic", "all", "#")
        .bind("amq.topic", "eu", "*.eu.#")
        .bind("amq.topic", "one", "*");
    assert_eq!(w.route("amq.topic", ""), names(&["all"]));
    assert_eq!(w.route("amq.topic", "x"), names(&["all", "one"]));
    assert_eq!(w.route("amq.topic", "orders.eu"), names(&["all", "eu"]));
    assert_eq!(
        w.route("amq.topic", "orders.eu.de.berlin"),
        names(&["all", "eu"])
    );
    assert!(w.cacheable("amq.topic"));
}

#[test]
fn headers_exchange_matches_on_headers_and_is_not_cacheable() {
    let mut w = World::new();
    w.queue("pdf").queue("any");
    w.bind_args(
        "amq.headers",
        "pdf",
        table(&[("format", s("pdf")), ("type", s("report"))]),
    );
    w.bind_args(
        "amq.headers",
        "any",
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("log")),
        ]),
    );
    let h = table(&[("format", s("pdf")), ("type", s("report"))]);
    assert_eq!(
        w.route_with("amq.headers", "", Some(&h)).unwrap(),
        names(&["any", "pdf"])
    );
    let h = table(&[("type", s("log"))]);
    assert_eq!(
        w.route_with("amq.headers", "", Some(&h)).unwrap(),
        names(&["any"])
    );
    assert_eq!(w.route_with("amq.headers", "", None).unwrap(), names(&[]));
    assert!(!w.cacheable("amq.headers"));
}

#[test]
fn exchange_to_exchange_bindings_are_followed_and_deduplicated() {
    let mut w = World::new();
    w.exchange("x1", ExchangeKind::Direct)
        .exchange("x2", ExchangeKind::Fanout);
    w.queue("q").queue("r");
    w.bind_exchange("x1", "x2", "k")
        .bind("x1", "q", "k")
        .bind("x2", "q", "")
        .bind("x2", "r", "");
    assert_eq!(w.route("x1", "k"), names(&["q", "r"]));
    assert_eq!(w.route("x1", "other"), names(&[]));
    assert_eq!(w.route("x2", "other"), names(&["q", "r"]));
}

#[test]
fn exchange_cycles_terminate() {
    let mut w = World::new();
    w.exchange("a", ExchangeKind::Fanout)
        .exchange("b", ExchangeKind::Fanout)
        .exchange("c", ExchangeKind::Fanout);
    w.queue("q");
    w.bind_exchange("a", "b", "")
        .bind_exchange("b", "c", "")
        .bind_exchange("c", "a", "");
    w.bind_exchange("a", "a", "");
    assert_eq!(w.route("a", "k"), names(&[]));
    w.bind("c", "q", "").bind("a", "q", "");
    for x in ["a", "b", "c"] {
        assert_eq!(w.route(x, "k"), names(&["q"]), "from {x}");
    }
}

#[test]
fn alternate_exchange_takes_what_the_exchange_does_not_route() {
    let mut w = World::new();
    w.exchange("ae", ExchangeKind::Fanout);
    w.exchange_with_ae("x", ExchangeKind::Direct, "ae");
    w.queue("matched").queue("unroutable");
    w.bind("x", "matched", "k").bind("ae", "unroutable", "");
    assert_eq!(w.route("x", "k"), names(&["matched"]));
    assert_eq!(w.route("x", "other"), names(&["unroutable"]));
}

#[test]
fn alternate_exchanges_chain_and_cycles_terminate() {
    let mut w = World::new();
    w.exchange_with_ae("a", ExchangeKind::Direct, "b");
    w.exchange_with_ae("b", ExchangeKind::Direct, "a");
    assert_eq!(w.route("a", "k"), names(&[]));
    w.exchange_with_ae("c", ExchangeKind::Direct, "missing");
    assert_eq!(w.route("c", "k"), names(&[]));
    w.queue("q").bind("b", "q", "k2");
    assert_eq!(w.route("a", "k2"), names(&["q"]));
    assert_eq!(w.route("a", "k"), names(&[]));
}

#[test]
fn alternate_exchange_is_skipped_when_the_exchange_routed_to_another_exchange() {
    // RabbitMQ uses the AE only when the exchange's own result is empty, and a matching
    // exchange-to-exchange binding is a result even if that exchange routes nowhere.
    let mut w = World::new();
    w.exchange("ae", ExchangeKind::Fanout)
        .exchange("dead_end", ExchangeKind::Direct);
    w.exchange_with_ae("x", ExchangeKind::Fanout, "ae");
    w.queue("q")
        .bind("ae", "q", "")
        .bind_exchange("x", "dead_end", "");
    assert_eq!(w.route("x", "k"), names(&[]));
}

#[test]
fn internal_exchanges_are_reachable_through_bindings_and_as_alternates() {
    let mut w = World::new();
    w.exchange_def("inner", ExchangeKind::Fanout, FieldTable::new(), true);
    w.exchange_with_ae("x", ExchangeKind::Direct, "inner");
    w.queue("q").bind("inner", "q", "");
    assert_eq!(w.route("x", "unmatched"), names(&["q"]));
    w.exchange("y", ExchangeKind::Fanout)
        .bind_exchange("y", "inner", "");
    assert_eq!(w.route("y", "k"), names(&["q"]));
}

#[test]
fn cacheability_follows_links_to_message_reading_exchanges() {
    let mut w = World::new();
    w.exchange("plain", ExchangeKind::Direct);
    w.exchange("to_headers", ExchangeKind::Direct)
        .bind_exchange("to_headers", "amq.headers", "k");
    w.exchange_with_ae("ae_headers", ExchangeKind::Direct, "amq.match");
    w.exchange("two_hops", ExchangeKind::Fanout)
        .bind_exchange("two_hops", "to_headers", "");
    w.exchange("ring", ExchangeKind::ConsistentHash);
    w.exchange_def(
        "ring_h",
        ExchangeKind::ConsistentHash,
        table(&[("hash-header", s("h"))]),
        false,
    );
    w.exchange_def(
        "ring_p",
        ExchangeKind::ConsistentHash,
        table(&[("hash-property", s("message_id"))]),
        false,
    );
    assert!(w.cacheable("plain"));
    assert!(!w.cacheable("to_headers"));
    assert!(!w.cacheable("ae_headers"));
    assert!(!w.cacheable("two_hops"));
    assert!(w.cacheable("ring"));
    assert!(!w.cacheable("ring_h"));
    assert!(!w.cacheable("ring_p"));
}

#[test]
fn consistent_hash_picks_one_queue_per_key_stably() {
    let mut w = World::new();
    w.exchange("ring", ExchangeKind::ConsistentHash);
    for q in ["q1", "q2", "q3"] {
        w.queue(q).bind("ring", q, "10");
    }
    let mut used = std::collections::BTreeSet::new();
    for i in 0..300 {
        let key = format!("k{i}");
        let picked = w.route("ring", &key);
        assert_eq!(picked.len(), 1);
        assert_eq!(w.route("ring", &key), picked);
        used.insert(picked[0].clone());
    }
    assert_eq!(used.len(), 3);
}

#[test]
fn consistent_hash_on_a_property_reads_the_message() {
    let mut w = World::new();
    w.exchange_def(
        "ring",
        ExchangeKind::ConsistentHash,
        table(&[("hash-property", s("message_id"))]),
        false,
    );
    for q in ["q1", "q2", "q3", "q4"] {
        w.queue(q).bind("ring", q, "1");
    }
    let snapshot = w.meta.snapshot();
    let route = |id: &str, key: &str| {
        let properties = BasicProperties {
            message_id: Some(ShortStr::from(id)),
            ..Default::default()
        };
        let message = Message {
            exchange: ShortStr::from("ring"),
            routing_key: ShortStr::from(key),
            properties,
            raw_properties: Bytes::new(),
            body: Bytes::new(),
        };
        let mut out = Vec::new();
        snapshot
            .route_message(&vhost(), &message, &mut out)
            .expect("route");
        out
    };
    let mut used = std::collections::BTreeSet::new();
    for i in 0..100 {
        let id = format!("m{i}");
        let first = route(&id, "a");
        assert_eq!(first.len(), 1);
        assert_eq!(route(&id, "b"), first, "the routing key must not matter");
        used.insert(first[0].clone());
    }
    assert!(used.len() > 1);
}

#[test]
fn snapshots_are_immutable_and_numbered() {
    let mut w = World::new();
    w.queue("q");
    let before = w.meta.snapshot();
    w.bind("amq.fanout", "q", "");
    let after = w.meta.snapshot();
    assert!(after.generation() > before.generation());
    let mut out = Vec::new();
    before
        .route(&vhost(), "amq.fanout", "", None, &mut out)
        .expect("route");
    assert!(out.is_empty());
    after
        .route(&vhost(), "amq.fanout", "", None, &mut out)
        .expect("route");
    assert_eq!(out, vec![QueueName::from("q")]);
}

#[test]
fn routing_appends_to_what_out_already_holds() {
    let mut w = World::new();
    w.exchange("a", ExchangeKind::Fanout)
        .exchange("b", ExchangeKind::Fanout);
    w.queue("q1")
        .queue("q2")
        .bind_exchange("a", "b", "")
        .bind("a", "q2", "")
        .bind("b", "q2", "")
        .bind("b", "q1", "");
    let mut out = vec![QueueName::from("z"), QueueName::from("q2")];
    w.meta
        .snapshot()
        .route(&vhost(), "a", "", None, &mut out)
        .expect("route");
    let got: Vec<&str> = out.iter().map(|q| q.as_str()).collect();
    assert_eq!(got, ["z", "q2", "q1", "q2"]);
}

#[test]
fn exchange_kinds_round_trip_their_names() {
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
        ExchangeKind::ConsistentHash,
    ] {
        assert_eq!(ExchangeKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(ExchangeKind::parse("x-random"), None);
    assert_eq!(ExchangeKind::parse("Direct"), None);
}

/// Counts allocations per thread, to hold the direct and fanout paths to zero.
mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: delegates to the system allocator unchanged; only counts calls.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    pub fn count() -> usize {
        COUNT.try_with(Cell::get).unwrap_or(0)
    }
}

#[test]
fn direct_and_fanout_routing_do_not_allocate() {
    let mut w = World::new();
    w.queue("q1").queue("q2").queue("q3");
    w.bind("amq.direct", "q1", "a")
        .bind("amq.direct", "q2", "a")
        .bind("amq.direct", "q3", "b");
    w.bind("amq.fanout", "q1", "").bind("amq.fanout", "q3", "");
    let snapshot = w.meta.snapshot();
    let vhost = vhost();
    let mut out = Vec::with_capacity(8);
    let before = allocations::count();
    std::hint::black_box(Vec::<u8>::with_capacity(16));
    assert!(allocations::count() > before, "the counter counts");
    for (exchange, key, expected) in [
        ("amq.direct", "a", 2),
        ("amq.direct", "zz", 0),
        ("amq.fanout", "k", 2),
    ] {
        out.clear();
        let before = allocations::count();
        snapshot
            .route(&vhost, exchange, key, None, &mut out)
            .expect("route");
        let allocated = allocations::count() - before;
        assert_eq!(out.len(), expected);
        assert_eq!(allocated, 0, "{exchange} {key:?} allocated");
    }
}
