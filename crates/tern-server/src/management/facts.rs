//! What `/api/overview` and `/api/nodes` say about the node beyond its counts: the exchange
//! types and login mechanisms it has, the web contexts it serves, the churn of connections,
//! channels and queues, its file descriptors. RabbitMQ's field names and forms.

use serde_json::{json, Value};
use tern_core::routing::ExchangeKind;

use crate::broker::Broker;
use crate::metrics::Counter;

/// Every exchange type, as RabbitMQ lists its own.
pub fn exchange_types() -> Value {
    let each = [
        (
            ExchangeKind::Direct,
            "AMQP direct exchange, as per the AMQP specification",
        ),
        (
            ExchangeKind::Fanout,
            "AMQP fanout exchange, as per the AMQP specification",
        ),
        (
            ExchangeKind::Headers,
            "AMQP headers exchange, as per the AMQP specification",
        ),
        (
            ExchangeKind::Topic,
            "AMQP topic exchange, as per the AMQP specification",
        ),
        (ExchangeKind::ConsistentHash, "Consistent Hashing Exchange"),
    ];
    let list = each.map(|(kind, description)| {
        json!({"name": kind.as_str(), "description": description, "enabled": true})
    });
    Value::Array(list.to_vec())
}

/// The SASL mechanisms, EXTERNAL only where a client certificate can be verified.
pub fn auth_mechanisms(b: &Broker) -> Value {
    let external = b.config.tls.as_ref().is_some_and(|t| t.ca_file.is_some());
    json!([
        {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
        {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        {"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism",
         "enabled": external},
    ])
}

/// The management listeners, as RabbitMQ's web contexts (its port is a string there).
pub fn contexts(b: &Broker) -> Value {
    let http = b
        .listeners()
        .into_iter()
        .filter(|(p, _)| *p == "http" || *p == "https");
    let each = http.map(|(protocol, addr)| {
        json!({"description": "Tern management", "path": "/", "node": b.node_name(),
               "port": addr.port().to_string(), "ssl": protocol == "https"})
    });
    Value::Array(each.collect())
}

/// Connections, channels and queues opened and closed since the node started (RabbitMQ:
/// over its sampling window).
pub fn churn(b: &Broker) -> Value {
    let n = |c| b.metrics.get(c);
    json!({"connection_created": n(Counter::ConnectionsOpened),
           "connection_closed": n(Counter::ConnectionsClosed),
           "channel_created": n(Counter::ChannelsOpened),
           "channel_closed": n(Counter::ChannelsClosed),
           "queue_declared": n(Counter::QueuesDeclared),
           "queue_created": n(Counter::QueuesCreated),
           "queue_deleted": n(Counter::QueuesDeleted)})
}

/// Open file descriptors and the process's limit (None where /proc or getrlimit fail).
pub fn file_descriptors() -> (Option<u64>, Option<u64>) {
    let used = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .ok();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and reads nothing else.
    let total = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur);
    (used, total)
}
