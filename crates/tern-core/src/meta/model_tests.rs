//! Random command sequences against a simple model: the binding graph keeps its invariants,
//! two state machines fed the same commands agree, and routing through the compiled snapshot
//! agrees with a naive router reading the definitions.

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use tern_amqp::{FieldTable, FieldValue, ShortStr};

use super::tests::{qdef, xdef};
use super::*;

const EXCHANGES: &[&str] = &["x0", "x1", "x2", "x3"];
const QUEUES: &[&str] = &["q0", "q1", "q2"];
const KEYS: &[&str] = &["a", "b", "a.b", "#", "*.b", ""];
const KINDS: &[ExchangeKind] = &[
    ExchangeKind::Direct,
    ExchangeKind::Fanout,
    ExchangeKind::Topic,
];

fn vh() -> VhostName {
    VhostName::from("/")
}

fn destination(to_queue: bool, index: usize) -> Destination {
    if to_queue {
        Destination::Queue(QueueName::from(QUEUES[index % QUEUES.len()]))
    } else {
        Destination::Exchange(ExchangeName::from(EXCHANGES[index % EXCHANGES.len()]))
    }
}

fn binding(source: usize, to_queue: bool, dest: usize, key: usize) -> Binding {
    Binding {
        source: ExchangeName::from(EXCHANGES[source]),
        destination: destination(to_queue, dest),
        routing_key: ShortStr::from(KEYS[key]),
        arguments: FieldTable::new(),
    }
}

fn command() -> impl Strategy<Value = MetaCommand> {
    let x = 0..EXCHANGES.len();
    let q = 0..QUEUES.len();
    let key = 0..KEYS.len();
    prop_oneof![
        (
            x.clone(),
            0..KINDS.len(),
            any::<bool>(),
            prop::option::of(0..EXCHANGES.len())
        )
            .prop_map(|(x, kind, auto_delete, ae)| {
                let mut def = ExchangeDef {
                    auto_delete,
                    ..xdef(EXCHANGES[x], KINDS[kind])
                };
                if let Some(ae) = ae {
                    let name = Bytes::from_static(EXCHANGES[ae].as_bytes());
                    def.arguments
                        .insert("alternate-exchange", FieldValue::LongStr(name));
                }
                MetaCommand::DeclareExchange {
                    vhost: vh(),
                    def,
                    passive: false,
                }
            }),
        (x.clone(), any::<bool>()).prop_map(|(x, if_unused)| MetaCommand::DeleteExchange {
            vhost: vh(),
            name: ExchangeName::from(EXCHANGES[x]),
            if_unused,
        }),
        q.clone().prop_map(|q| MetaCommand::DeclareQueue {
            vhost: vh(),
            def: qdef(QUEUES[q]),
            passive: false,
            server_named: false,
            requester: ConnectionId(1),
        }),
        q.prop_map(|q| MetaCommand::DeleteQueue {
            vhost: vh(),
            name: QueueName::from(QUEUES[q])
        }),
        (x.clone(), any::<bool>(), 0..4usize, key.clone()).prop_map(|(s, tq, d, k)| {
            MetaCommand::Bind {
                vhost: vh(),
                binding: binding(s, tq, d, k),
            }
        }),
        (x, any::<bool>(), 0..4usize, key).prop_map(|(s, tq, d, k)| MetaCommand::Unbind {
            vhost: vh(),
            binding: binding(s, tq, d, k)
        }),
    ]
}

fn topic_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|i| topic_match(rest, &key[i..])),
        Some((&"*", rest)) => !key.is_empty() && topic_match(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && topic_match(rest, &key[1..]),
    }
}

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn binding_matches(kind: ExchangeKind, binding_key: &str, key: &str) -> bool {
    match kind {
        ExchangeKind::Direct => binding_key == key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic_match(&words(binding_key), &words(key)),
        _ => unreachable!("not generated"),
    }
}

/// RabbitMQ's route1 loop, read straight off the definitions.
fn naive_route(meta: &Metadata, exchange: &str, key: &str) -> BTreeSet<String> {
    let bindings: Vec<&Binding> = meta.bindings(&vh()).collect();
    let mut seen = BTreeSet::from([exchange.to_string()]);
    let mut pending = vec![exchange.to_string()];
    let mut queues = BTreeSet::new();
    while let Some(name) = pending.pop() {
        let Some(def) = meta.exchange(&vh(), &ExchangeName::from(name.as_str())) else {
            continue;
        };
        let matched: Vec<&&Binding> = bindings
            .iter()
            .filter(|b| b.source.as_str() == name && binding_matches(def.kind, &b.routing_key, key))
            .collect();
        let mut next: Vec<String> = Vec::new();
        if matched.is_empty() {
            next.extend(crate::routing::alternate_exchange(&def.arguments).map(|x| x.to_string()));
        }
        for b in matched {
            match &b.destination {
                Destination::Queue(q) => {
                    queues.insert(q.to_string());
                }
                Destination::Exchange(x) => next.push(x.to_string()),
            }
        }
        for x in next {
            if seen.insert(x.clone()) {
                pending.push(x);
            }
        }
    }
    queues
}

fn compiled_route(meta: &Metadata, exchange: &str, key: &str) -> Option<BTreeSet<String>> {
    let mut out = Vec::new();
    meta.snapshot()
        .route(&vh(), exchange, key, None, &mut out)
        .ok()?;
    let set: BTreeSet<String> = out.iter().map(|q| q.to_string()).collect();
    assert_eq!(
        set.len(),
        out.len(),
        "duplicate queues from {exchange} with {key:?}"
    );
    Some(set)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compiled_routing_agrees_with_a_naive_router(commands in prop::collection::vec(command(), 1..60)) {
        let mut meta = Metadata::new();
        let mut twin = Metadata::new();
        for cmd in commands {
            let generation = meta.generation();
            let outcome = meta.apply(cmd.clone());
            prop_assert_eq!(&outcome, &twin.apply(cmd));
            if outcome.is_err() {
                prop_assert_eq!(meta.generation(), generation);
            }
            meta.vhosts.values().for_each(VhostState::check_invariants);
        }
        prop_assert_eq!(meta.bindings(&vh()).collect::<Vec<_>>(), twin.bindings(&vh()).collect::<Vec<_>>());
        prop_assert_eq!(meta.exchanges(&vh()).collect::<Vec<_>>(), twin.exchanges(&vh()).collect::<Vec<_>>());
        prop_assert_eq!(meta.generation(), twin.generation());
        for exchange in EXCHANGES.iter().chain(&["amq.direct", "amq.topic"]) {
            for key in KEYS.iter().chain(&["a.b.c", "x.b"]) {
                match compiled_route(&meta, exchange, key) {
                    Some(got) => prop_assert_eq!(got, naive_route(&meta, exchange, key)),
                    None => prop_assert!(meta.exchange(&vh(), &ExchangeName::from(*exchange)).is_none()),
                }
            }
        }
    }
}
