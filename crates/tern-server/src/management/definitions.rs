//! `/api/definitions`: export (GET) and import (POST) in RabbitMQ's format, so a file exported
//! from RabbitMQ imports into Tern and back: users (with their password hashes), vhosts,
//! permissions, topic permissions, exchanges, queues and bindings. Parameters and policies are
//! exported empty and ignored on import (Tern has none yet). Server-named and exclusive
//! queues, and the built-in exchanges, are not exported, as in RabbitMQ.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use tern_amqp::ShortStr;
use tern_core::meta::access::AccessCommand;
use tern_core::meta::{Binding, MetaCommand, Metadata};
use tern_core::names::VhostName;
use tern_core::routing::Destination;

use super::access::{permission_json, user_commands, user_json};
use super::auth::Caller;
use super::bindings::binding_json;
use super::objects::{exchange_command, exchange_json, json_arguments, queue_command, table_json};
use super::topics::topic_json;
use super::{apply_batch, text, ApiError, ApiResult};
use crate::broker::Broker;

type Shared = State<Arc<Broker>>;

/// The whole of the definitions (the admin socket's `export_definitions` too).
pub(crate) fn export(m: &Metadata, cluster_name: &str) -> Value {
    let a = m.access();
    let vhosts: Vec<VhostName> = m.vhosts().cloned().collect();
    let mut exchanges = Vec::new();
    let (mut queues, mut bindings) = (Vec::new(), Vec::new());
    for v in &vhosts {
        let own = m
            .exchanges(v)
            .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."));
        exchanges.extend(own.map(|x| exchange_json(v, x)));
        let kept = m
            .queues(v)
            .filter(|q| q.exclusive_owner.is_none() && !q.name.starts_with("amq."));
        queues.extend(kept.map(|q| {
            json!({"name": q.name.as_str(), "vhost": v.as_str(), "durable": q.durable,
                   "auto_delete": q.auto_delete, "arguments": table_json(&q.arguments)})
        }));
        bindings.extend(m.bindings(v).map(|b| binding_export(v, b)));
    }
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "rabbit_version": version, "rabbitmq_version": version,
        "product_name": "Tern", "product_version": version,
        "users": a.users().map(user_json).collect::<Vec<_>>(),
        "vhosts": vhosts.iter().map(|v| json!({"name": v.as_str(), "limits": [],
            "metadata": {"description": "", "tags": []}})).collect::<Vec<_>>(),
        "permissions": a.permissions().map(|(v, u, p)| permission_json(v, u, p)).collect::<Vec<_>>(),
        "topic_permissions": a.topic_permissions().map(|(v, u, t)| topic_json(v, u, t))
            .collect::<Vec<_>>(),
        "parameters": [], "policies": [],
        "global_parameters": [{"name": "cluster_name", "value": cluster_name}],
        "queues": queues, "exchanges": exchanges, "bindings": bindings,
    })
}

/// A binding as definitions carry it: the API's form without `properties_key`.
fn binding_export(v: &VhostName, b: &Binding) -> Value {
    let mut json = binding_json(v, b);
    if let Some(o) = json.as_object_mut() {
        o.remove("properties_key");
    }
    json
}

pub async fn get_definitions(caller: Caller, State(b): Shared) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let cluster = b.cluster_name();
    Ok(Json(b.with_meta(|m| export(m, cluster))))
}

fn list<'a>(defs: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    defs.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// POST: [`import`] the body.
pub async fn post_definitions(
    caller: Caller,
    State(b): Shared,
    Json(defs): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    import(&b, &defs).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commands per metadata log entry when importing: a chunk from `tern ctl import_definitions`
/// (250 objects) is one entry, one durable write.
const BATCH_COMMANDS: usize = 256;

/// Import: vhosts, users, permissions, then exchanges, queues, bindings; how many objects.
/// Stops at the first refusal (naming it); what came before it stays, as in RabbitMQ. Any
/// part of a file (a chunk with some of the lists) imports the same way, which is how
/// `tern ctl import_definitions` sends a large one. The commands are written in batches of
/// [`BATCH_COMMANDS`], each one metadata log entry.
pub(crate) async fn import(b: &Arc<Broker>, defs: &Value) -> ApiResult<usize> {
    let (cmds, count) = b.with_meta(|m| import_commands(m, defs))?;
    let mut cmds = cmds.into_iter().peekable();
    while cmds.peek().is_some() {
        apply_batch(b, cmds.by_ref().take(BATCH_COMMANDS).collect()).await?;
    }
    Ok(count)
}

/// The commands that import `defs` into `m`, in dependency order, and how many objects
/// they are.
fn import_commands(m: &Metadata, defs: &Value) -> ApiResult<(Vec<MetaCommand>, usize)> {
    let mut cmds = Vec::new();
    let mut count = 0;
    for v in list(defs, "vhosts") {
        cmds.push(MetaCommand::AddVhost {
            name: text(v, "name").into(),
        });
        count += 1;
    }
    let mut added = HashSet::new();
    for u in list(defs, "users") {
        let name = text(u, "name");
        let exists = m.access().user(name).is_some() || !added.insert(name);
        cmds.extend(user_commands(name, u, exists)?);
        count += 1;
    }
    count += permission_commands(defs, &mut cmds);
    for x in list(defs, "exchanges") {
        cmds.push(exchange_command(text(x, "vhost"), text(x, "name"), x)?);
        count += 1;
    }
    for q in list(defs, "queues") {
        cmds.push(queue_command(text(q, "vhost"), text(q, "name"), q));
        count += 1;
    }
    for bnd in list(defs, "bindings") {
        cmds.push(binding_command(bnd)?);
        count += 1;
    }
    Ok((cmds, count))
}

fn permission_commands(defs: &Value, cmds: &mut Vec<MetaCommand>) -> usize {
    let mut count = 0;
    for p in list(defs, "permissions") {
        let cmd = AccessCommand::SetPermissions {
            vhost: text(p, "vhost").into(),
            user: text(p, "user").into(),
            configure: text(p, "configure").into(),
            write: text(p, "write").into(),
            read: text(p, "read").into(),
        };
        cmds.push(MetaCommand::Access(cmd));
        count += 1;
    }
    for p in list(defs, "topic_permissions") {
        let cmd = AccessCommand::SetTopicPermissions {
            vhost: text(p, "vhost").into(),
            user: text(p, "user").into(),
            exchange: text(p, "exchange").into(),
            write: text(p, "write").into(),
            read: text(p, "read").into(),
        };
        cmds.push(MetaCommand::Access(cmd));
        count += 1;
    }
    count
}

fn binding_command(v: &Value) -> ApiResult<MetaCommand> {
    let dest = text(v, "destination");
    let destination = match text(v, "destination_type") {
        "queue" => Destination::Queue(dest.into()),
        "exchange" => Destination::Exchange(dest.into()),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown destination_type '{other}'"
            )))
        }
    };
    let binding = Binding {
        source: text(v, "source").into(),
        destination,
        routing_key: ShortStr::from(text(v, "routing_key")),
        arguments: json_arguments(v),
    };
    Ok(MetaCommand::Bind {
        vhost: text(v, "vhost").into(),
        binding,
    })
}
