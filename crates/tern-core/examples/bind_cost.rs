//! What definitions cost at scale: N queues declared, each bound to amq.direct and amq.topic,
//! then deleted, taking a routing snapshot after every command as the broker does.
//!
//!     cargo run --release -p tern-core --example bind_cost -- 100000
//!
//! Each change must cost about the same however many bindings exist (see `routing::cow_map`);
//! the totals should grow linearly with N.

use std::time::Instant;

use tern_amqp::FieldTable;
use tern_core::meta::{Binding, MetaCommand, Metadata, QueueDef};
use tern_core::names::{ConnectionId, ExchangeName, QueueName, VhostName};
use tern_core::routing::Destination;

fn queue(i: usize) -> QueueName {
    QueueName::from(format!("q{i}").as_str())
}

fn timed(what: &str, n: usize, meta: &mut Metadata, command: impl Fn(usize) -> MetaCommand) {
    let started = Instant::now();
    for i in 0..n {
        if let Err(e) = meta.apply(command(i)) {
            panic!("{what} {i}: {e}");
        }
        let _ = meta.snapshot();
    }
    let elapsed = started.elapsed();
    let per_us = elapsed.as_secs_f64() * 1e6 / n as f64;
    println!("{n} {what}: {elapsed:.2?} ({per_us:.1} µs each)");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let vhost = VhostName::from("/");
    let mut meta = Metadata::new();
    timed("queue declares", n, &mut meta, |i| {
        MetaCommand::DeclareQueue {
            vhost: vhost.clone(),
            def: QueueDef {
                name: queue(i),
                durable: false,
                exclusive_owner: None,
                home: None,
                auto_delete: false,
                arguments: FieldTable::new(),
            },
            passive: false,
            server_named: false,
            requester: ConnectionId(1),
        }
    });
    for exchange in ["amq.direct", "amq.topic"] {
        timed(&format!("binds to {exchange}"), n, &mut meta, |i| {
            MetaCommand::Bind {
                vhost: vhost.clone(),
                binding: Binding {
                    source: ExchangeName::from(exchange),
                    destination: Destination::Queue(queue(i)),
                    routing_key: format!("k.{i}").into(),
                    arguments: FieldTable::new(),
                },
            }
        });
    }
    timed("queue deletes (2 bindings each)", n, &mut meta, |i| {
        MetaCommand::DeleteQueue {
            vhost: vhost.clone(),
            name: queue(i),
        }
    });
}
