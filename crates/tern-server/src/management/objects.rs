//! `/api/exchanges`, `/api/queues`, `/api/bindings`: definitions as RabbitMQ's API shows them
//! (queues with their message and consumer counts), declared and deleted through the same
//! metadata commands AMQP clients use.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use tern_amqp::{FieldTable, FieldValue};
use tern_core::meta::{ExchangeDef, MetaCommand, QueueDef};
use tern_core::names::{ConnectionId, QueueName, VhostName};
use tern_core::routing::ExchangeKind;

use super::auth::Caller;
use super::pages::{page, ListQuery};
use super::{apply, created_or_updated, merged, ApiError, ApiResult};
use crate::broker::Broker;
use crate::queue_actor::{QueueCmd, QueueStats};

type Shared = State<Arc<Broker>>;

/// An AMQP field value as JSON (RabbitMQ's rendering: numbers, strings, lists, objects).
pub fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::U64(n) | FieldValue::Timestamp(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => json!(String::from_utf8_lossy(b)),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Void => Value::Null,
    }
}

pub fn table_json(t: &FieldTable) -> Value {
    let map: Map<String, Value> = t
        .iter()
        .map(|(k, v)| (k.to_string(), value_json(v)))
        .collect();
    Value::Object(map)
}

/// JSON arguments as a field table: integers as signed 64-bit, as RabbitMQ converts them.
fn json_value(v: &Value) -> FieldValue {
    match v {
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(bytes::Bytes::copy_from_slice(s.as_bytes())),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_value).collect()),
        Value::Object(o) => FieldValue::Table(json_table(o)),
        Value::Null => FieldValue::Void,
    }
}

pub fn json_table(o: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in o {
        t.insert(k.as_str(), json_value(v));
    }
    t
}

pub fn json_arguments(body: &Value) -> FieldTable {
    body.get("arguments")
        .and_then(Value::as_object)
        .map(json_table)
        .unwrap_or_default()
}

fn flag(body: &Value, key: &str, default: bool) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(default)
}

pub fn exchange_json(vhost: &VhostName, x: &ExchangeDef) -> Value {
    json!({"name": x.name.as_str(), "vhost": vhost.as_str(), "type": x.kind.as_str(),
           "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal,
           "arguments": table_json(&x.arguments)})
}

/// Every exchange of `vhosts`, rendered (the admin socket's `list_exchanges` too).
pub(crate) fn exchanges_of(b: &Broker, vhosts: &[VhostName]) -> Vec<Value> {
    b.with_meta(|m| {
        let each = vhosts
            .iter()
            .flat_map(|v| m.exchanges(v).map(move |x| exchange_json(v, x)));
        each.collect()
    })
}

fn exchanges_in(caller: &Caller, b: &Broker, only: Option<&str>) -> ApiResult<Vec<Value>> {
    Ok(exchanges_of(b, &caller.vhosts(b, only)?))
}

pub async fn list_exchanges(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(page(&q, exchanges_in(&caller, &b, None)?)?))
}

pub async fn vhost_exchanges(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(page(&q, exchanges_in(&caller, &b, Some(&v))?)?))
}

pub async fn get_exchange(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let all = exchanges_in(&caller, &b, Some(&v))?;
    all.into_iter()
        .find(|x| x["name"] == name.as_str())
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

pub async fn put_exchange(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let created = put_exchange_def(&b, &v, &name, &body).await?;
    Ok(created_or_updated(created))
}

/// Declare an exchange from its JSON; true if it is new.
pub async fn put_exchange_def(
    b: &Arc<Broker>,
    v: &str,
    name: &str,
    body: &Value,
) -> ApiResult<bool> {
    let cmd = exchange_command(v, name, body)?;
    let existed = b.with_meta(|m| m.exchange(&v.into(), &name.into()).is_some());
    apply(b, cmd).await?;
    Ok(!existed)
}

/// The declare that a PUT body (or a definitions file's exchange) asks for.
pub(crate) fn exchange_command(v: &str, name: &str, body: &Value) -> ApiResult<MetaCommand> {
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = ExchangeKind::parse(kind)
        .ok_or_else(|| ApiError::bad_request(format!("unknown exchange type '{kind}'")))?;
    let def = ExchangeDef {
        name: name.into(),
        kind,
        durable: flag(body, "durable", true),
        auto_delete: flag(body, "auto_delete", false),
        internal: flag(body, "internal", false),
        arguments: json_arguments(body),
    };
    Ok(MetaCommand::DeclareExchange {
        vhost: v.into(),
        def,
        passive: false,
    })
}

pub async fn delete_exchange(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let vhost = VhostName::from(v.as_str());
    if b.with_meta(|m| m.exchange(&vhost, &name.as_str().into()).is_none()) {
        return Err(ApiError::not_found());
    }
    apply(
        &b,
        MetaCommand::DeleteExchange {
            vhost,
            name: name.as_str().into(),
            if_unused: false,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn queue_json(b: &Broker, vhost: &VhostName, q: &QueueDef) -> Value {
    let handle = b.queue(vhost, &q.name);
    // A queue whose home node cannot be reached is `down`, as RabbitMQ lists it.
    let down = handle.as_ref().is_some_and(|h| h.unreachable().is_some());
    let stats = match handle {
        Some(h) if !down => h
            .ask(|reply| QueueCmd::Stats { reply })
            .await
            .unwrap_or_default(),
        _ => Default::default(),
    };
    let node = q.home.as_ref().map_or(b.node_name(), |h| h.as_str());
    let state = if down { "down" } else { "running" };
    let definition = json!({"name": q.name.as_str(), "vhost": vhost.as_str(),
           "durable": q.durable, "auto_delete": q.auto_delete,
           "exclusive": q.exclusive_owner.is_some(), "arguments": table_json(&q.arguments),
           "node": node, "state": state, "type": "classic",
           "consumers": stats.consumers,
           // Tern has no policies (yet) and no mirrors: RabbitMQ's answers for that.
           "policy": null, "operator_policy": null, "effective_policy_definition": {},
           "recoverable_slaves": null});
    merged(definition, message_figures(&stats))
}

/// The queue's message and byte counts with RabbitMQ's names: ready, unacknowledged, in
/// memory (unacknowledged ones always are), paged out to disk.
fn message_figures(s: &QueueStats) -> Value {
    let (ready, unacked) = (u64::from(s.messages), u64::from(s.unacked));
    let ready_bytes = s.ready_bytes_in_memory + s.paged_bytes;
    json!({
        "messages": ready + unacked, "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "messages_ram": s.ready_in_memory + unacked, "messages_ready_ram": s.ready_in_memory,
        "messages_unacknowledged_ram": unacked, "messages_paged_out": s.paged,
        "message_bytes": ready_bytes + s.unacked_bytes, "message_bytes_ready": ready_bytes,
        "message_bytes_unacknowledged": s.unacked_bytes,
        "message_bytes_ram": s.ready_bytes_in_memory + s.unacked_bytes,
        "message_bytes_paged_out": s.paged_bytes,
    })
}

/// Every queue definition of `vhosts`, with its vhost.
fn queue_defs(b: &Broker, vhosts: &[VhostName]) -> Vec<(VhostName, QueueDef)> {
    b.with_meta(|m| {
        let each = vhosts
            .iter()
            .flat_map(|v| m.queues(v).map(move |q| (v.clone(), q.clone())));
        each.collect()
    })
}

/// Every queue of `vhosts` with its counts, rendered (the admin socket's `list_queues` too).
pub(crate) async fn queues_of(b: &Broker, vhosts: &[VhostName]) -> Vec<Value> {
    let defs = queue_defs(b, vhosts);
    let mut out = Vec::with_capacity(defs.len());
    for (v, q) in &defs {
        out.push(queue_json(b, v, q).await);
    }
    out
}

/// The queues of the caller's vhosts (or only `only`), sorted and paged as `q` asks. A page
/// sorted by name (or not sorted) asks only its own queues for their figures: the page is cut
/// from the definitions first, so one page of a long list costs what the page holds.
async fn paged_queues(
    caller: &Caller,
    b: &Broker,
    only: Option<&str>,
    q: &ListQuery,
) -> ApiResult<Value> {
    let vhosts = caller.vhosts(b, only)?;
    if !q.is_paged() || !q.sorts_only_by(&["name", "vhost"]) {
        return page(q, queues_of(b, &vhosts).await);
    }
    let defs = queue_defs(b, &vhosts);
    let names = defs
        .iter()
        .enumerate()
        .map(|(i, (v, d))| json!({"name": d.name.as_str(), "vhost": v.as_str(), "index": i}));
    let mut paged = page(q, names.collect())?;
    if let Some(items) = paged.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            let i = item["index"].as_u64().unwrap_or(0) as usize;
            if let Some((v, d)) = defs.get(i) {
                *item = queue_json(b, v, d).await;
            }
        }
    }
    Ok(paged)
}

pub async fn list_queues(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(paged_queues(&caller, &b, None, &q).await?))
}

pub async fn vhost_queues(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(paged_queues(&caller, &b, Some(&v), &q).await?))
}

pub async fn get_queue(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.vhosts(&b, Some(&v))?;
    let vhost = VhostName::from(v.as_str());
    let def = b.with_meta(|m| m.queue(&vhost, &name.as_str().into()).cloned());
    let def = def.ok_or_else(ApiError::not_found)?;
    let mut queue = queue_json(&b, &vhost, &def).await;
    let consumers = super::channels::queue_consumers(&caller, &b, &v, &name).await;
    queue["consumer_details"] = Value::Array(consumers);
    Ok(Json(queue))
}

pub async fn put_queue(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let created = put_queue_def(&b, &v, &name, &body).await?;
    Ok(created_or_updated(created))
}

/// Declare a queue from its JSON; true if it is new.
pub async fn put_queue_def(b: &Arc<Broker>, v: &str, name: &str, body: &Value) -> ApiResult<bool> {
    let existed = b.with_meta(|m| m.queue(&v.into(), &name.into()).is_some());
    apply(b, queue_command(v, name, body)).await?;
    Ok(!existed)
}

/// The declare that a PUT body (or a definitions file's queue) asks for.
pub(crate) fn queue_command(v: &str, name: &str, body: &Value) -> MetaCommand {
    let def = QueueDef {
        name: name.into(),
        durable: flag(body, "durable", true),
        exclusive_owner: None,
        home: None,
        auto_delete: flag(body, "auto_delete", false),
        arguments: json_arguments(body),
    };
    MetaCommand::DeclareQueue {
        vhost: v.into(),
        def,
        passive: false,
        server_named: false,
        requester: ConnectionId(0),
    }
}

pub async fn delete_queue(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    delete_queue_named(&b, &v.as_str().into(), &name.as_str().into(), false, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a queue (queue.delete's conditions); how many messages it held.
pub(crate) async fn delete_queue_named(
    b: &Broker,
    vhost: &VhostName,
    name: &QueueName,
    if_unused: bool,
    if_empty: bool,
) -> ApiResult<u32> {
    let queue = b.queue(vhost, name).ok_or_else(ApiError::not_found)?;
    let deleted = queue
        .ask(|reply| QueueCmd::Delete {
            if_unused,
            if_empty,
            reply,
        })
        .await;
    match deleted {
        Ok(Err(e)) => Err(ApiError::bad_request(e.message)),
        Ok(Ok(n)) => Ok(n),
        Err(_) => Ok(0),
    }
}

/// Purge a queue's ready messages (unacked ones stay); how many went.
pub(crate) async fn purge_queue_named(
    b: &Broker,
    vhost: &VhostName,
    name: &QueueName,
) -> ApiResult<u32> {
    let queue = b.queue(vhost, name).ok_or_else(ApiError::not_found)?;
    Ok(queue
        .ask(|reply| QueueCmd::Purge { reply })
        .await
        .unwrap_or(0))
}

/// DELETE `/api/queues/{vhost}/{name}/contents`: purge (ready messages; unacked ones stay).
pub async fn purge_queue(
    caller: Caller,
    State(b): Shared,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.vhosts(&b, Some(&v))?;
    let vhost = VhostName::from(v.as_str());
    if !caller.is_admin() && !caller.may_see(&b, &vhost) {
        return Err(ApiError::not_found());
    }
    purge_queue_named(&b, &vhost, &name.as_str().into()).await?;
    Ok(StatusCode::NO_CONTENT)
}
