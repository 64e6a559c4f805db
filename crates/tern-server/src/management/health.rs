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

/// `/api/health/checks/alarms`: the alarms of every running node of the cluster.
pub async fn alarms(_: Caller, State(b): Shared) -> Response {
    let mut alarms = alarms_in_effect(&b);
    for (name, running) in b.cluster_nodes() {
        if running && name != b.node_name() {
            if let Some(facts) = b.remote.node_facts(&name).await {
                alarms.extend(alarms_of(&facts));
            }
        }
    }
    alarms_answer(alarms, "cluster")
}

/// `/api/health/checks/local-alarms`: this node's.
pub async fn local_alarms(_: Caller, State(b): Shared) -> Response {
    alarms_answer(alarms_in_effect(&b), "node")
}

fn alarms_answer(alarms: Vec<Value>, place: &str) -> Response {
    if alarms.is_empty() {
        return ok();
    }
    let reason = format!("resource alarm(s) in effect in the {place}");
    failed(json!({"status": "failed", "reason": reason, "alarms": alarms}))
}

/// The alarms a node's facts (its `/api/nodes` entry) show.
fn alarms_of(facts: &Value) -> Vec<Value> {
    let node = facts["name"].clone();
    let mut alarms = Vec::new();
    if facts["disk_free_alarm"] == true {
        alarms.push(json!({"node": node, "resource": "disk_free_limit"}));
    }
    if facts["mem_alarm"] == true {
        alarms.push(json!({"node": node, "resource": "memory"}));
    }
    alarms
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

/// Every vhost runs on this node unless its storage failed (then nothing does).
pub async fn virtual_hosts(_: Caller, State(b): Shared) -> Response {
    match b.storage_failure() {
        None => ok(),
        Some(why) => {
            let down: Vec<String> = b.with_meta(|m| m.vhosts().map(|v| v.to_string()).collect());
            failed(
                json!({"status": "failed", "reason": format!("Some virtual hosts are down: {why}"), "virtual-hosts": down}),
            )
        }
    }
}

/// Booted, not stopping, storage working, and (clustered) a metadata leader known.
pub async fn in_service(_: Caller, State(b): Shared) -> Response {
    match b.out_of_service() {
        None => ok(),
        Some(why) => failed(json!({"status": "failed", "reason": why})),
    }
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
pub(crate) async fn node_json(b: &Broker) -> Value {
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

/// A node as `/api/nodes` shows it: this one in full, a running peer as it describes
/// itself, a stopped one by name.
async fn peer_json(b: &Broker, name: &str, running: bool) -> Value {
    if name == b.node_name() {
        return node_json(b).await;
    }
    if running {
        if let Some(facts) = b.remote.node_facts(name).await {
            return facts;
        }
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
