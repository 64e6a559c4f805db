//! `/metrics` for Prometheus on its own port (RabbitMQ's 15692), with RabbitMQ's series names
//! so its Grafana dashboards and alert rules work unchanged. No authentication, as RabbitMQ's
//! plugin by default.
//!
//! Both `/metrics` and `/metrics/per-object` serve the per-queue series (RabbitMQ with
//! `prometheus.return_per_object_metrics = true`). Everything is gathered at scrape time: the
//! node's counters (`crate::metrics`), the queues the registry holds now (so a deleted queue's
//! series are gone from the next scrape), memory, disk and alarms.
//!
//! - `text`: the text exposition format (0.0.4), escaping included.

mod text;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::broker::{Broker, QueueFigures};
use crate::http;
use crate::metrics::{Counter, Counters, EXPORTED};
use crate::queue_actor::QueueStats;
use text::{Exposition, Kind, CONTENT_TYPE};

/// How long a scrape waits for the queues' figures; a queue that has not answered by then
/// (a long disk read, say) is left out of that scrape.
const QUEUE_STATS_WAIT: Duration = Duration::from_secs(2);

/// Serve `/metrics` on `prometheus_port`, and over HTTPS on `prometheus_tls_port` with
/// `https` when both are given, until `stopped`; the plain listener's address.
pub async fn spawn(
    broker: Arc<Broker>,
    stopped: watch::Receiver<bool>,
    https: Option<TlsAcceptor>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/per-object", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
        .with_state(broker.clone());
    let ports = (
        broker.config.prometheus_port,
        broker.config.prometheus_tls_port,
    );
    let names = ("http/prometheus", "https/prometheus");
    http::serve_plain_and_tls(&broker, names, ports, https, app, stopped).await
}

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    let body = render(&broker).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn render(broker: &Broker) -> String {
    // A node reports the queues it runs, as RabbitMQ's nodes do: summed over a cluster's
    // nodes, each queue counts once.
    let mut handles = broker.queue_handles();
    handles.retain(|q| q.is_local());
    let queue_count = handles.len() as u64;
    let queues = broker.queue_figures(handles, QUEUE_STATS_WAIT).await;
    let node = crate::alarms::node_resources(&broker.config.data_dir).await;
    let mut x = Exposition::default();
    global_counters(&mut x, &broker.metrics);
    object_totals(&mut x, broker, queue_count, &queues);
    per_queue(&mut x, &queues);
    resources(&mut x, broker, &node);
    identity(&mut x, broker);
    x.finish()
}

const PROTOCOL: (&str, &str) = ("protocol", "amqp091");
/// Tern's queues are classic queues (RabbitMQ labels delivery counters by queue type).
const QUEUE_TYPE: (&str, &str) = ("queue_type", "rabbit_classic_queue");

/// `rabbitmq_global_messages_*_total` with RabbitMQ's labels, and the connection churn.
fn global_counters(x: &mut Exposition, counters: &Counters) {
    for (counter, name, help) in EXPORTED {
        let value = counters.get(counter);
        match counter {
            c if c.is_churn() => {
                x.single(&format!("rabbitmq_{name}"), Kind::Counter, help, value);
            }
            _ => {
                x.family(&format!("rabbitmq_global_{name}"), Kind::Counter, help);
                if is_queue_typed(counter) {
                    x.sample(&[PROTOCOL, QUEUE_TYPE], value);
                } else {
                    x.sample(&[PROTOCOL], value);
                }
            }
        }
    }
}

/// RabbitMQ counts deliveries and acks per protocol and queue type, publishes per protocol.
fn is_queue_typed(counter: Counter) -> bool {
    matches!(
        counter,
        Counter::Delivered
            | Counter::DeliveredConsumeManualAck
            | Counter::DeliveredConsumeAutoAck
            | Counter::DeliveredGetManualAck
            | Counter::DeliveredGetAutoAck
            | Counter::GetEmpty
            | Counter::Redelivered
            | Counter::Acknowledged
    )
}

/// Node-wide object counts; `queue_count` counts every queue, answering or not.
fn object_totals(x: &mut Exposition, broker: &Broker, queue_count: u64, queues: &[QueueFigures]) {
    let channels = broker.open_channels();
    let consumers: u64 = queues.iter().map(|q| u64::from(q.stats.consumers)).sum();
    let connections = broker.open_connections() as u64;
    x.single(
        "rabbitmq_connections",
        Kind::Gauge,
        "Connections currently open",
        connections,
    );
    x.single(
        "rabbitmq_channels",
        Kind::Gauge,
        "Channels currently open",
        channels as u64,
    );
    x.single(
        "rabbitmq_consumers",
        Kind::Gauge,
        "Consumers currently connected",
        consumers,
    );
    x.single(
        "rabbitmq_queues",
        Kind::Gauge,
        "Queues available",
        queue_count,
    );
}

/// Per-queue gauges, labelled `vhost` and `queue` as RabbitMQ's per-object metrics.
fn per_queue(x: &mut Exposition, queues: &[QueueFigures]) {
    type Figure = fn(&QueueStats) -> u64;
    let families: [(&str, &str, Figure); 4] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |s| u64::from(s.messages),
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |s| u64::from(s.unacked),
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |s| u64::from(s.messages) + u64::from(s.unacked),
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |s| {
            u64::from(s.consumers)
        }),
    ];
    for (name, help, figure) in families {
        x.family(name, Kind::Gauge, help);
        for q in queues {
            let labels = [("vhost", q.vhost.as_str()), ("queue", q.name.as_str())];
            x.sample(&labels, figure(&q.stats));
        }
    }
}

fn resources(x: &mut Exposition, broker: &Broker, node: &crate::alarms::NodeResources) {
    let alarms = &broker.alarms;
    if let Some(used) = node.resident_bytes {
        x.single(
            "rabbitmq_process_resident_memory_bytes",
            Kind::Gauge,
            "Memory used in bytes",
            used,
        );
    }
    let limit = alarms.memory_high_watermark();
    x.single(
        "rabbitmq_resident_memory_limit_bytes",
        Kind::Gauge,
        "Memory high watermark in bytes",
        limit,
    );
    if let Some(free) = node.disk_free_bytes {
        x.single(
            "rabbitmq_disk_space_available_bytes",
            Kind::Gauge,
            "Disk space available in bytes",
            free,
        );
    }
    let limit = alarms.disk_free_limit();
    x.single(
        "rabbitmq_disk_space_available_limit_bytes",
        Kind::Gauge,
        "Free disk space low watermark in bytes",
        limit,
    );
    let state = alarms.state();
    x.single(
        "rabbitmq_alarms_memory_used_watermark",
        Kind::Untyped,
        "is 1 if VM memory watermark alarm is in effect",
        u64::from(state.memory),
    );
    x.single(
        "rabbitmq_alarms_free_disk_space_watermark",
        Kind::Untyped,
        "is 1 if free disk space watermark alarm is in effect",
        u64::from(state.disk),
    );
}

/// RabbitMQ's dashboards join every series on `rabbitmq_identity_info` (node and cluster).
fn identity(x: &mut Exposition, broker: &Broker) {
    let version = env!("CARGO_PKG_VERSION");
    x.family(
        "rabbitmq_build_info",
        Kind::Untyped,
        "Tern version info (RabbitMQ's build_info)",
    );
    x.sample(
        &[
            ("rabbitmq_version", version),
            ("product_name", "Tern"),
            ("product_version", version),
            ("prometheus_plugin_version", version),
        ],
        1,
    );
    x.family(
        "rabbitmq_identity_info",
        Kind::Untyped,
        "RabbitMQ node & cluster identity info",
    );
    x.sample(
        &[
            ("rabbitmq_node", broker.node_name()),
            ("rabbitmq_cluster", broker.cluster_name()),
            ("rabbitmq_endpoint", "per-object"),
        ],
        1,
    );
}
