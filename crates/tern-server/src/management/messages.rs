//! `POST /api/exchanges/{vhost}/{name}/publish` and `POST /api/queues/{vhost}/{name}/get`,
//! with RabbitMQ's bodies and answers. Both act as the caller: write permission on the
//! exchange to publish, read on the queue to get, as an AMQP client of that user would need.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};
use tern_amqp::{BasicProperties, ShortStr};
use tern_core::message::Message;
use tern_core::meta::access::{Op, Resource};
use tern_core::names::{ChannelKey, QueueName, VhostName};
use tern_core::queue::GetResult;

use super::auth::Caller;
use super::objects::{json_table, table_json};
use super::{ApiError, ApiResult};
use crate::broker::Broker;
use crate::queue_actor::{QueueCmd, QueueHandle};

type Shared = State<Arc<Broker>>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The management API's name for the default exchange.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

pub async fn publish(
    caller: Caller,
    State(b): Shared,
    Path((v, x)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let vhost = VhostName::from(v.as_str());
    let exchange = exchange_name(&x);
    caller.permit(&b, &vhost, Resource::Exchange, exchange, Op::Write)?;
    if !exchange.is_empty() && b.with_meta(|m| m.exchange(&vhost, &exchange.into()).is_none()) {
        return Err(ApiError::not_found());
    }
    let message = Arc::new(message_of(&caller, exchange, &body)?);
    let view = b.routing_view();
    let mut names: Vec<QueueName> = Vec::new();
    view.snapshot
        .route_message(&vhost, &message, &mut names)
        .map_err(|e| ApiError::bad_request(e.message))?;
    let mut queues: Vec<QueueHandle> = Vec::new();
    b.queues_for(&vhost, &names, &mut queues);
    for q in &queues {
        let cmd = QueueCmd::Publish {
            messages: vec![message.clone()],
            confirm: None,
        };
        let _ = q.send(cmd).await;
    }
    Ok(Json(json!({"routed": !queues.is_empty()})))
}

/// The message a publish body describes: `routing_key`, `payload` with `payload_encoding`
/// (`string` or `base64`), `properties`.
fn message_of(caller: &Caller, exchange: &str, body: &Value) -> ApiResult<Message> {
    let key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let payload = body.get("payload").and_then(Value::as_str).unwrap_or("");
    let body_bytes = match body.get("payload_encoding").and_then(Value::as_str) {
        Some("base64") => B64
            .decode(payload)
            .map_err(|_| ApiError::bad_request("payload is not valid base64"))?,
        Some("string") | None => payload.as_bytes().to_vec(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown payload_encoding '{other}'"
            )))
        }
    };
    let properties = properties_of(body.get("properties"))?;
    if let Some(id) = &properties.user_id {
        if id.as_str() != caller.name {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{id}' but authenticated user was '{}'",
                caller.name
            )));
        }
    }
    let mut raw = BytesMut::new();
    properties.encode(&mut raw);
    Ok(Message {
        exchange: short(exchange)?,
        routing_key: short(key)?,
        properties,
        raw_properties: raw.freeze(),
        body: Bytes::from(body_bytes),
    })
}

fn short(s: &str) -> ApiResult<ShortStr> {
    if s.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "'{s}' is longer than 255 bytes"
        )));
    }
    Ok(ShortStr::from(s))
}

fn properties_of(props: Option<&Value>) -> ApiResult<BasicProperties> {
    let Some(Value::Object(p)) = props else {
        return Ok(BasicProperties::default());
    };
    let text = |k: &str| -> ApiResult<Option<ShortStr>> {
        match p.get(k) {
            Some(Value::String(s)) => short(s).map(Some),
            Some(Value::Number(n)) => short(&n.to_string()).map(Some),
            _ => Ok(None),
        }
    };
    let octet = |k: &str| p.get(k).and_then(Value::as_u64).map(|n| n.min(255) as u8);
    Ok(BasicProperties {
        content_type: text("content_type")?,
        content_encoding: text("content_encoding")?,
        headers: p.get("headers").and_then(Value::as_object).map(json_table),
        delivery_mode: octet("delivery_mode"),
        priority: octet("priority"),
        correlation_id: text("correlation_id")?,
        reply_to: text("reply_to")?,
        expiration: text("expiration")?,
        message_id: text("message_id")?,
        timestamp: p.get("timestamp").and_then(Value::as_u64),
        kind: text("type")?,
        user_id: text("user_id")?,
        app_id: text("app_id")?,
        cluster_id: text("cluster_id")?,
    })
}

/// What a get body asks: how many, and what becomes of them afterwards.
struct GetRequest {
    count: usize,
    ack: bool,
    requeue: bool,
    base64: bool,
    truncate: Option<usize>,
}

fn get_request(body: &Value) -> ApiResult<GetRequest> {
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(1);
    let (ack, requeue) = match body.get("ackmode").and_then(Value::as_str) {
        Some("ack_requeue_true") | Some("reject_requeue_true") => (false, true),
        Some("ack_requeue_false") => (true, false),
        Some("reject_requeue_false") => (false, false),
        other => {
            return Err(ApiError::bad_request(format!(
                "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or \
                 reject_requeue_false, not {other:?}"
            )))
        }
    };
    let base64 = match body.get("encoding").and_then(Value::as_str) {
        Some("auto") | None => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown encoding '{other}'"))),
    };
    let truncate = body.get("truncate").and_then(Value::as_u64);
    Ok(GetRequest {
        count: count.min(10_000) as usize,
        ack,
        requeue,
        base64,
        truncate: truncate.map(|t| t as usize),
    })
}

pub async fn get(
    caller: Caller,
    State(b): Shared,
    Path((v, q)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let vhost = VhostName::from(v.as_str());
    caller.permit(&b, &vhost, Resource::Queue, &q, Op::Read)?;
    let request = get_request(&body)?;
    let queue = b
        .queue(&vhost, &q.as_str().into())
        .ok_or_else(ApiError::not_found)?;
    let channel = ChannelKey(b.next_id());
    let got = take(&queue, channel, request.count).await;
    let ids = got.iter().map(|g| g.msg_id).collect();
    let settle = if request.ack {
        QueueCmd::Ack { channel, ids }
    } else {
        QueueCmd::Reject {
            channel,
            ids,
            requeue: request.requeue,
        }
    };
    let _ = queue.send(settle).await;
    let _ = queue.send(QueueCmd::ChannelClosed { channel }).await;
    let out = got.iter().map(|g| got_json(g, &request)).collect();
    Ok(Json(Value::Array(out)))
}

/// Up to `count` messages, each unacked on `channel` until settled.
async fn take(queue: &QueueHandle, channel: ChannelKey, count: usize) -> Vec<GetResult> {
    let mut got = Vec::new();
    while got.len() < count {
        let one = queue.ask(|reply| QueueCmd::Get {
            channel,
            no_ack: false,
            reply,
        });
        match one.await {
            Ok(Some(g)) => got.push(g),
            _ => break,
        }
    }
    got
}

fn got_json(g: &GetResult, request: &GetRequest) -> Value {
    let m = &g.message;
    let shown = request
        .truncate
        .map_or(&m.body[..], |t| &m.body[..t.min(m.body.len())]);
    let (payload, encoding) = match std::str::from_utf8(shown) {
        Ok(text) if !request.base64 => (text.to_string(), "string"),
        _ => (B64.encode(shown), "base64"),
    };
    json!({
        "payload_bytes": m.body.len(), "redelivered": g.redelivered,
        "exchange": m.exchange.as_str(), "routing_key": m.routing_key.as_str(),
        "message_count": g.remaining, "properties": properties_json(&m.properties),
        "payload": payload, "payload_encoding": encoding,
    })
}

/// The properties that are set, under RabbitMQ's JSON names.
fn properties_json(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut text = |k: &str, v: &Option<ShortStr>| {
        if let Some(v) = v {
            out.insert(k.into(), json!(v.as_str()));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    let numbers = [
        ("delivery_mode", p.delivery_mode.map(u64::from)),
        ("priority", p.priority.map(u64::from)),
        ("timestamp", p.timestamp),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    if let Some(h) = &p.headers {
        out.insert("headers".into(), table_json(h));
    }
    Value::Object(out)
}
