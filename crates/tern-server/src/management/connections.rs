//! `/api/connections[/{name}]` (GET, DELETE to close one) and
//! `/api/vhosts/{vhost}/connections`. Users who do not see everything (administrator,
//! monitoring) see their own connections only, as in RabbitMQ.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use tern_amqp::{FieldValue, ReplyCode};

use super::auth::Caller;
use super::objects::table_json;
use super::pages::{page, ListQuery};
use super::{merged, ApiError, ApiResult};
use crate::broker::{Broker, ConnInfo};
use crate::tls::TlsSession;

type Shared = State<Arc<Broker>>;

pub(crate) fn connection_json(c: &ConnInfo, node: &str) -> Value {
    let plain = json!({
        "name": c.name, "node": node, "vhost": c.vhost, "user": c.user,
        "state": "running", "type": "network", "protocol": "AMQP 0-9-1",
        "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port(),
        "host": c.local.ip().to_string(), "port": c.local.port(),
        "ssl": c.tls, "connected_at": c.connected_at,
        "channels": c.channels.load(Ordering::Relaxed),
        "frame_max": c.frame_max, "channel_max": c.channel_max, "timeout": c.heartbeat,
        "client_properties": table_json(&c.client_properties),
        "auth_mechanism": c.mechanism, "user_who_performed_action": c.user,
        "user_provided_name": provided_name(c),
        "recv_cnt": c.io.recv_cnt.load(Ordering::Relaxed),
        "recv_oct": c.io.recv_oct.load(Ordering::Relaxed),
        "send_cnt": c.io.send_cnt.load(Ordering::Relaxed),
        "send_oct": c.io.send_oct.load(Ordering::Relaxed),
    });
    merged(plain, tls_fields(c.tls_session.as_ref()))
}

/// The TLS session's protocol, suite and client certificate; nulls for a plain connection
/// (and for the certificate when the client gave none), as RabbitMQ's.
fn tls_fields(session: Option<&TlsSession>) -> Value {
    let cert = session.and_then(|s| s.peer_cert.as_ref());
    json!({
        "ssl_protocol": session.map(|s| &s.protocol), "ssl_cipher": session.map(|s| &s.cipher),
        "ssl_hash": session.map(|s| &s.hash),
        "ssl_key_exchange": session.map(|s| &s.key_exchange),
        "peer_cert_subject": cert.map(|c| &c.0), "peer_cert_issuer": cert.map(|c| &c.1),
        "peer_cert_validity": cert.map(|c| &c.2),
    })
}

/// The name the client gave its connection (`connection_name` in its properties), or null.
fn provided_name(c: &ConnInfo) -> Value {
    match c.client_properties.get("connection_name") {
        Some(FieldValue::LongStr(b)) => json!(String::from_utf8_lossy(b)),
        _ => Value::Null,
    }
}

fn visible(caller: &Caller, b: &Broker, vhost: Option<&str>) -> Vec<Value> {
    b.connection_infos()
        .iter()
        .filter(|c| caller.sees_all() || c.user == caller.name)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .map(|c| connection_json(c, b.node_name()))
        .collect()
}

pub async fn list_connections(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(page(&q, visible(&caller, &b, None))?))
}

pub async fn vhost_connections(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> Json<Value> {
    Json(Value::Array(visible(&caller, &b, Some(&v))))
}

pub async fn get_connection(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let found = visible(&caller, &b, None)
        .into_iter()
        .find(|c| c["name"] == name.as_str());
    found.map(Json).ok_or_else(ApiError::not_found)
}

/// Close with 320 CONNECTION_FORCED and the `X-Reason` header's text, as RabbitMQ does.
pub async fn close_connection(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let own = b
        .connection_infos()
        .iter()
        .any(|c| c.name == name && c.user == caller.name);
    if !caller.is_admin() && !own {
        return Err(ApiError::not_found());
    }
    let reason = headers.get("x-reason").and_then(|v| v.to_str().ok());
    let reason = reason.unwrap_or("Closed via management plugin");
    if b.close_connection(&name, ReplyCode::ConnectionForced, reason) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
