//! `/api/overview` and the health checks under `/api/health/checks/`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::facts;
use crate::broker::Broker;

pub async fn overview(_: Caller, State(b): Shared) -> Json<Value> {
    let (object_totals, queue_totals) = totals(&b).await;
    let version = env!("CARGO_PKG_VERSION");
    Json(json!({
        "management_version": version,
        "rabbitmq_version": version,
        "product_name": "Tern",
        "product_version": version,
        // Tools written for RabbitMQ expect these; Tern has no Erlang VM.
        "erlang_version": "none",
        "erlang_full_version": "none (Tern is written in Rust)",
        "statistics_db_event_queue": 0,
        "churn_rates": facts::churn(&b),
        "cluster_name": b.cluster_name(),
        "exchange_types": facts::exchange_types(),
        "contexts": facts::contexts(&b),
        // Rates are kept for the node only, over the last 5 s; nothing is switched off.
        "rates_mode": "basic", "disable_stats": false, "enable_queue_totals": true,
        "node": b.node_name(),
        "message_stats": message_stats(&b),
        "queue_totals": queue_totals,
        "object_totals": object_totals,
        "listeners": listeners(&b),
    }))
}

/// The overview's `object_totals` and `queue_totals` (`tern ctl status` shows them too).
pub(crate) async fn totals(b: &Broker) -> (Value, Value) {
    let (queues, exchanges, vhosts) = b.with_meta(|m| {
        let vhosts: Vec<_> = m.vhosts().cloned().collect();
        let q = vhosts.iter().map(|v| m.queues(v).count()).sum::<usize>();
        let x = vhosts.iter().map(|v| m.exchanges(v).count()).sum::<usize>();
        (q, x, vhosts.len())
    });
    let figures = b
        .queue_figures(b.queue_handles(), Duration::from_secs(1))
        .await;
    let ready: u64 = figures.iter().map(|f| u64::from(f.stats.messages)).sum();
    let unacked: u64 = figures.iter().map(|f| u64::from(f.stats.unacked)).sum();
    let consumers: u64 = figures.iter().map(|f| u64::from(f.stats.consumers)).sum();
    let objects = json!({
        "connections": b.open_connections(),
        "channels": b.open_channels(),
        "consumers": consumers,
        "queues": queues,
        "exchanges": exchanges,
        "vhosts": vhosts,
    });
    let messages = json!({"messages": ready + unacked, "messages_ready": ready,
                          "messages_unacknowledged": unacked});
    (objects, messages)
}

/// RabbitMQ's `message_stats`: each total and its `{name}_details.rate` per second.
fn message_stats(b: &Broker) -> Value {
    let (totals, rates) = b.metrics.rates();
    let mut out = serde_json::Map::new();
    for ((name, total), rate) in totals.named().into_iter().zip(rates) {
        out.insert(name.into(), json!(total));
        out.insert(format!("{name}_details"), json!({"rate": rate}));
    }
    Value::Object(out)
}

pub(crate) fn listeners(b: &Broker) -> Value {
    let each = b.listeners().into_iter().map(|(protocol, addr)| {
        json!({"node": b.node_name(), "protocol": protocol, "port": addr.port(),
               "ip_address": addr.ip().to_string()})
    });
    Value::Array(each.collect())
}

type Shared = State<Arc<Broker>>;

fn ok() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn alarms(_: Caller, State(b): Shared) -> Response {
    let alarms = alarms_in_effect(&b);
    if alarms.is_empty() {
        return ok();
    }
    failed(
        json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms}),
    )
}

/// The resource alarms in effect, RabbitMQ's names (`tern ctl status` lists them too).
pub(crate) fn alarms_in_effect(b: &Broker) -> Vec<Value> {
    let state = *b.alarms.subscribe().borrow();
    let mut alarms = Vec::new();
    if state.disk {
        alarms.push(json!({"node": b.node_name(), "resource": "disk_free_limit"}));
    }
    if state.memory {
        alarms.push(json!({"node": b.node_name(), "resource": "memory"}));
    }
    alarms
}

pub async fn virtual_hosts(_: Caller) -> Response {
    ok()
}

pub async fn in_service(_: Caller) -> Response {
    ok()
}

pub async fn port_listener(_: Caller, State(b): Shared, Path(port): Path<u16>) -> Response {
    let ports: Vec<u16> = b.listeners().iter().map(|(_, a)| a.port()).collect();
    if ports.contains(&port) {
        return Json(json!({"status": "ok", "port": port})).into_response();
    }
    failed(
        json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}),
    )
}

/// This node as `/api/nodes` shows it, with RabbitMQ's field names.
async fn node_json(b: &Broker) -> Value {
    let os = crate::alarms::node_resources(&b.config.data_dir).await;
    let alarms = b.alarms.state();
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fds = facts::file_descriptors();
    let node = json!({
        "name": b.node_name(), "type": "disc", "running": true, "being_drained": false,
        "uptime": b.started.elapsed().as_millis() as u64,
        "os_pid": std::process::id().to_string(), "processors": processors,
        "mem_used": os.resident_bytes.unwrap_or(0), "mem_limit": b.alarms.memory_high_watermark(),
        "mem_alarm": alarms.memory,
        "disk_free": os.disk_free_bytes.unwrap_or(0), "disk_free_limit": b.alarms.disk_free_limit(),
        "disk_free_alarm": alarms.disk,
        "sockets_used": b.open_connections(), "sockets_total": b.config.max_connections,
        "rates_mode": "basic", "partitions": [], "enabled_plugins": [], "applications": [],
        "rabbitmq_version": env!("CARGO_PKG_VERSION"), "erlang_version": "none",
        "exchange_types": facts::exchange_types(), "auth_mechanisms": facts::auth_mechanisms(b),
        "contexts": facts::contexts(b), "fd_used": fds.0, "fd_total": fds.1,
        "db_dir": b.config.data_dir.display().to_string(), "log_files": ["<stdout>"],
        "mem_calculation_strategy": "rss", "cluster_links": [],
    });
    super::merged(node, facts::churn(b))
}

/// Every node of the cluster: this one in full, the others as far as this one knows them
/// (RabbitMQ too shows little more than `running` for a node it cannot reach).
pub async fn nodes(_: Caller, State(b): Shared) -> Json<Value> {
    let mut all = Vec::new();
    for (name, running) in b.cluster_nodes() {
        all.push(peer_json(&b, &name, running).await);
    }
    Json(Value::Array(all))
}

pub async fn node(_: Caller, State(b): Shared, Path(name): Path<String>) -> Response {
    let Some((_, running)) = b.cluster_nodes().into_iter().find(|(n, _)| *n == name) else {
        return super::ApiError::not_found().into_response();
    };
    Json(peer_json(&b, &name, running).await).into_response()
}

async fn peer_json(b: &Broker, name: &str, running: bool) -> Value {
    if name == b.node_name() {
        return node_json(b).await;
    }
    json!({"name": name, "type": "disc", "running": running, "being_drained": false})
}

/// `/api/cluster-name`: the cluster's name (set by configuration, not through the API).
pub async fn cluster_name(_: Caller, State(b): Shared) -> Json<Value> {
    Json(json!({"name": b.cluster_name()}))
}

/// No quorum queues yet: losing this node never costs one its majority.
pub async fn quorum_critical(_: Caller) -> Response {
    ok()
}
