//! `/api/overview` and the health checks under `/api/health/checks/`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::NODE;
use crate::broker::Broker;

pub async fn overview(caller: Caller, State(b): Shared) -> Json<Value> {
    let _ = &caller;
    let (queues, exchanges, vhosts) = b.with_meta(|m| {
        let vhosts: Vec<_> = m.vhosts().cloned().collect();
        let q = vhosts.iter().map(|v| m.queues(v).count()).sum::<usize>();
        let x = vhosts.iter().map(|v| m.exchanges(v).count()).sum::<usize>();
        (q, x, vhosts.len())
    });
    let version = env!("CARGO_PKG_VERSION");
    Json(json!({
        "management_version": version,
        "rabbitmq_version": version,
        "product_name": "Tern",
        "product_version": version,
        "cluster_name": NODE,
        "node": NODE,
        "object_totals": {
            "connections": b.open_connections(),
            "queues": queues,
            "exchanges": exchanges,
            "vhosts": vhosts,
        },
        "listeners": [{"node": NODE, "protocol": "amqp", "port": b.config.amqp_port}],
    }))
}

type Shared = State<Arc<Broker>>;

fn ok() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn alarms(_: Caller, State(b): Shared) -> Response {
    let state = *b.alarms.subscribe().borrow();
    if !state.any() {
        return ok();
    }
    let mut alarms = Vec::new();
    if state.disk {
        alarms.push(json!({"node": NODE, "resource": "disk_free_limit"}));
    }
    if state.memory {
        alarms.push(json!({"node": NODE, "resource": "memory"}));
    }
    failed(
        json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms}),
    )
}

pub async fn virtual_hosts(_: Caller) -> Response {
    ok()
}

pub async fn in_service(_: Caller) -> Response {
    ok()
}

pub async fn port_listener(_: Caller, State(b): Shared, Path(port): Path<u16>) -> Response {
    let mut ports = vec![b.config.amqp_port, b.config.management_port];
    if b.config.tls.is_some() {
        ports.push(b.config.amqps_port);
    }
    if ports.contains(&port) {
        return Json(json!({"status": "ok", "port": port})).into_response();
    }
    failed(
        json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}),
    )
}
