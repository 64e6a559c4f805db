//! `/api/bindings[/{vhost}]`, the `/e/{x}/q/{q}` and `/e/{x}/e/{y}` forms (GET lists, POST
//! binds, DELETE `.../{props}` unbinds one, named by its `properties_key`), and the per-object
//! lists `/api/exchanges/{v}/{x}/bindings/source|destination` and `/api/queues/{v}/{q}/bindings`.
//!
//! As in RabbitMQ, the lists show every queue's implicit binding to the default exchange
//! (source `""`, the queue's name as key); definitions exports leave it out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tern_amqp::{FieldTable, ShortStr};
use tern_core::meta::{Binding, MetaCommand, Metadata};
use tern_core::names::VhostName;
use tern_core::routing::Destination;

use super::auth::Caller;
use super::objects::{json_arguments, table_json};
use super::{apply, ApiError, ApiResult};
use crate::broker::Broker;

type Shared = State<Arc<Broker>>;

pub fn binding_json(vhost: &VhostName, b: &Binding) -> Value {
    let (kind, dest) = match &b.destination {
        Destination::Queue(q) => ("queue", q.as_str()),
        Destination::Exchange(x) => ("exchange", x.as_str()),
    };
    json!({"source": b.source.as_str(), "vhost": vhost.as_str(), "destination": dest,
           "destination_type": kind, "routing_key": b.routing_key.as_str(),
           "arguments": table_json(&b.arguments), "properties_key": properties_key(b)})
}

/// RabbitMQ's properties_key: the routing key (`~` when empty), plus a hash of the arguments.
fn properties_key(b: &Binding) -> String {
    let key = if b.routing_key.is_empty() {
        "~".to_string()
    } else {
        b.routing_key.to_string()
    };
    if b.arguments.0.is_empty() {
        return key;
    }
    let mut raw = bytes::BytesMut::new();
    b.arguments.encode(&mut raw);
    format!("{key}~{:08x}", crc32c::crc32c(&raw))
}

/// One vhost's bindings as the API lists them: the default exchange's first.
fn listed(m: &Metadata, v: &VhostName) -> Vec<Binding> {
    let implicit = m.queues(v).map(|q| Binding {
        source: "".into(),
        destination: Destination::Queue(q.name.clone()),
        routing_key: ShortStr::from(q.name.as_str()),
        arguments: FieldTable::new(),
    });
    implicit.chain(m.bindings(v).cloned()).collect()
}

/// The bindings of `vhosts` (the implicit ones included) that `keep` accepts, rendered.
fn bindings_kept(b: &Broker, vhosts: &[VhostName], keep: impl Fn(&Binding) -> bool) -> Vec<Value> {
    b.with_meta(|m| {
        let each = vhosts.iter().flat_map(|v| {
            let mine = listed(m, v).into_iter().filter(|x| keep(x));
            mine.map(|x| binding_json(v, &x)).collect::<Vec<_>>()
        });
        each.collect()
    })
}

/// Every binding of `vhosts` as the API lists them (the admin socket's `list_bindings` too).
pub(crate) fn bindings_of(b: &Broker, vhosts: &[VhostName]) -> Vec<Value> {
    bindings_kept(b, vhosts, |_| true)
}

/// The bindings of the vhosts `caller` sees (or only `only`) that `keep` accepts.
fn bindings_where(
    caller: &Caller,
    b: &Broker,
    only: Option<&str>,
    keep: impl Fn(&Binding) -> bool,
) -> ApiResult<Json<Value>> {
    let vhosts = caller.vhosts(b, only)?;
    Ok(Json(Value::Array(bindings_kept(b, &vhosts, keep))))
}

pub async fn list_bindings(caller: Caller, State(b): Shared) -> ApiResult<Json<Value>> {
    bindings_where(&caller, &b, None, |_| true)
}

pub async fn vhost_bindings(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> ApiResult<Json<Value>> {
    bindings_where(&caller, &b, Some(&v), |_| true)
}

/// The destination a path names: `q` for a queue, `e` for an exchange.
fn destination(kind: &str, name: &str) -> ApiResult<Destination> {
    match kind {
        "q" => Ok(Destination::Queue(name.into())),
        "e" => Ok(Destination::Exchange(name.into())),
        _ => Err(ApiError::not_found()),
    }
}

fn exists(b: &Broker, v: &VhostName, x: &str, dest: &Destination) -> bool {
    b.with_meta(|m| {
        let source = x.is_empty() || m.exchange(v, &x.into()).is_some();
        let target = match dest {
            Destination::Queue(q) => m.queue(v, q).is_some(),
            Destination::Exchange(e) => m.exchange(v, e).is_some(),
        };
        source && target
    })
}

/// GET `/api/bindings/{v}/e/{x}/{q|e}/{dest}`: the bindings between the two.
pub async fn between(
    caller: Caller,
    State(b): Shared,
    Path((v, x, kind, d)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let dest = destination(&kind, &d)?;
    caller.vhosts(&b, Some(&v))?;
    if !exists(&b, &v.as_str().into(), &x, &dest) {
        return Err(ApiError::not_found());
    }
    bindings_where(&caller, &b, Some(&v), |bd| {
        bd.source.as_str() == x && bd.destination == dest
    })
}

/// POST `/api/bindings/{v}/e/{x}/{q|e}/{dest}`: bind, `routing_key` and `arguments` from the
/// body; 201 with the new binding's Location, as RabbitMQ answers.
pub async fn bind(
    caller: Caller,
    State(b): Shared,
    Path((v, x, kind, d)): Path<(String, String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let dest = destination(&kind, &d)?;
    let key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("");
    if key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    let binding = Binding {
        source: x.as_str().into(),
        destination: dest,
        routing_key: ShortStr::from(key),
        arguments: json_arguments(&body),
    };
    let location = properties_key(&binding);
    let vhost = VhostName::from(v.as_str());
    apply(&b, MetaCommand::Bind { vhost, binding }).await?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&encode_segment(&location)) {
        headers.insert("location", value);
    }
    Ok((StatusCode::CREATED, headers).into_response())
}

/// Percent-encode a path segment (a properties key holds the routing key).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// GET `/api/bindings/{v}/e/{x}/{q|e}/{dest}/{props}`: one binding.
pub async fn get_one(
    caller: Caller,
    State(b): Shared,
    Path((v, x, kind, d, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let one = find(&caller, &b, (&v, &x, &kind, &d, &props))?;
    Ok(Json(binding_json(&v.as_str().into(), &one)))
}

/// DELETE `/api/bindings/{v}/e/{x}/{q|e}/{dest}/{props}`: unbind that one.
pub async fn unbind(
    caller: Caller,
    State(b): Shared,
    Path((v, x, kind, d, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let binding = find(&caller, &b, (&v, &x, &kind, &d, &props))?;
    let vhost = VhostName::from(v.as_str());
    apply(&b, MetaCommand::Unbind { vhost, binding }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The binding a path names: vhost, source, `q` or `e`, destination, properties key.
type BindingPath<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn find(caller: &Caller, b: &Broker, (v, x, kind, d, props): BindingPath) -> ApiResult<Binding> {
    let dest = destination(kind, d)?;
    let vhost = caller.vhosts(b, Some(v))?.remove(0);
    let found = b.with_meta(|m| {
        m.bindings(&vhost)
            .find(|bd| {
                bd.source.as_str() == x && bd.destination == dest && properties_key(bd) == props
            })
            .cloned()
    });
    found.ok_or_else(ApiError::not_found)
}

/// GET `/api/exchanges/{v}/{x}/bindings/{source|destination}`.
pub async fn of_exchange(
    caller: Caller,
    State(b): Shared,
    Path((v, x, side)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.vhosts(&b, Some(&v))?;
    let vhost = VhostName::from(v.as_str());
    let name = if x == "amq.default" { "" } else { x.as_str() };
    if !name.is_empty() && b.with_meta(|m| m.exchange(&vhost, &name.into()).is_none()) {
        return Err(ApiError::not_found());
    }
    let as_dest = Destination::Exchange(name.into());
    match side.as_str() {
        "source" => bindings_where(&caller, &b, Some(&v), |bd| bd.source.as_str() == name),
        "destination" => bindings_where(&caller, &b, Some(&v), |bd| bd.destination == as_dest),
        _ => Err(ApiError::not_found()),
    }
}

/// GET `/api/queues/{v}/{q}/bindings`.
pub async fn of_queue(
    caller: Caller,
    State(b): Shared,
    Path((v, q)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.vhosts(&b, Some(&v))?;
    let vhost = VhostName::from(v.as_str());
    if b.with_meta(|m| m.queue(&vhost, &q.as_str().into()).is_none()) {
        return Err(ApiError::not_found());
    }
    let dest = Destination::Queue(q.as_str().into());
    bindings_where(&caller, &b, Some(&v), |bd| bd.destination == dest)
}
