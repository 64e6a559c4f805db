//! `status`, `cluster_status`, `forget_cluster_node`, `join_cluster`, `purge_queue`,
//! `delete_queue`, `close_connection`, `export_definitions`, `import_definitions`: rabbitmqctl's
//! names, the management API's code underneath.

use std::sync::Arc;

use serde_json::{json, Value};
use tern_amqp::ReplyCode;
use tern_core::names::{QueueName, VhostName};

use super::commands::{usage, Outcome};
use super::AdminReply;
use crate::broker::{no_queue, Broker};
use crate::management::{definitions, health, objects, ApiError};

/// Run one of this module's commands.
pub async fn execute(
    broker: &Arc<Broker>,
    vhost: &VhostName,
    command: &str,
    args: &[&str],
    body: Option<Value>,
) -> Outcome {
    match (command, args) {
        ("status", []) => Ok(status(broker).await),
        ("cluster_status", []) => Ok(cluster_status(broker)),
        ("forget_cluster_node", [node]) => forget(broker, node).await,
        ("join_cluster", [node]) => join(broker, node),
        ("forget_cluster_node" | "join_cluster", _) => Err(usage(command, "<node>")),
        ("purge_queue", [name]) => purge(broker, vhost, name).await,
        ("delete_queue", [name, flags @ ..]) => delete(broker, vhost, name, flags).await,
        ("close_connection", [name, explanation]) => close(broker, name, explanation),
        ("export_definitions", _) => {
            let mut reply = AdminReply::done("Exporting definitions in JSON ...");
            let cluster = broker.cluster_name();
            reply.body = Some(broker.with_meta(|m| definitions::export(m, cluster)));
            Ok(reply)
        }
        ("import_definitions", _) => import(broker, body).await,
        ("purge_queue", _) => Err(usage(command, "[-p <vhost>] <queue>")),
        ("delete_queue", _) => Err(usage(
            command,
            "[-p <vhost>] <queue> [--if-empty|-e] [--if-unused|-u]",
        )),
        ("close_connection", _) => Err(usage(command, "<connection name> <explanation>")),
        _ => Err(usage(command, "")),
    }
}

fn refused(e: ApiError) -> String {
    e.reason().to_string()
}

/// The queue's handle, or RabbitMQ's NOT_FOUND text.
fn existing(broker: &Broker, vhost: &VhostName, name: &str) -> Result<QueueName, String> {
    let name = QueueName::from(name);
    match broker.queue(vhost, &name) {
        Some(_) => Ok(name),
        None => Err(no_queue(vhost, &name).message),
    }
}

async fn purge(broker: &Arc<Broker>, vhost: &VhostName, name: &str) -> Outcome {
    let queue = existing(broker, vhost, name)?;
    let purged = objects::purge_queue_named(broker, vhost, &queue)
        .await
        .map_err(refused)?;
    Ok(AdminReply::done(format!(
        "Purging queue '{name}' in vhost '{vhost}' ...\n{purged} messages purged"
    )))
}

async fn delete(broker: &Arc<Broker>, vhost: &VhostName, name: &str, flags: &[&str]) -> Outcome {
    let (mut if_empty, mut if_unused) = (false, false);
    for flag in flags {
        match *flag {
            "--if-empty" | "-e" => if_empty = true,
            "--if-unused" | "-u" => if_unused = true,
            other => return Err(format!("delete_queue: unknown option '{other}'")),
        }
    }
    let queue = existing(broker, vhost, name)?;
    let held = objects::delete_queue_named(broker, vhost, &queue, if_unused, if_empty)
        .await
        .map_err(refused)?;
    Ok(AdminReply::done(format!(
        "Deleting queue '{name}' on vhost '{vhost}' ...\nQueue was successfully deleted with {held} messages"
    )))
}

/// 320 CONNECTION_FORCED with the operator's text, as rabbitmqctl's close_connection.
fn close(broker: &Broker, name: &str, explanation: &str) -> Outcome {
    if !broker.close_connection(name, ReplyCode::ConnectionForced, explanation) {
        return Err(format!("Connection '{name}' not found"));
    }
    Ok(AdminReply::done(format!(
        "Closing connection {name}, reason: {explanation}..."
    )))
}

/// One chunk of definitions (ctl sends a large file in several, in dependency order).
async fn import(broker: &Arc<Broker>, body: Option<Value>) -> Outcome {
    let Some(defs) = body else {
        return Err("import_definitions: no definitions sent (tern ctl reads them from the file it is given)".into());
    };
    if !defs.is_object() {
        return Err("import_definitions: the definitions must be a JSON object".into());
    }
    let imported = definitions::import(broker, &defs).await.map_err(refused)?;
    let mut reply = AdminReply::done(format!("Imported {imported} definitions"));
    reply.body = Some(json!({"imported": imported}));
    Ok(reply)
}

async fn forget(broker: &Arc<Broker>, node: &str) -> Outcome {
    let queues = broker.forget_node(node).await?;
    Ok(AdminReply::done(format!(
        "Removing node {node} from the cluster\n{queues} queues homed on it deleted"
    )))
}

/// A running node joins no cluster: a fresh node started with the cluster's addresses as its
/// peers does, by itself. Say so, or that it is in already.
fn join(broker: &Broker, node: &str) -> Outcome {
    let me = broker.node_name();
    if broker.cluster_nodes().iter().any(|(n, _)| n == node) && node != me {
        return Ok(AdminReply::done(format!(
            "Clustering node {me} with {node}\nThe node is already a member of this cluster"
        )));
    }
    Err(format!(
        "{me} cannot join {node}'s cluster while it runs with its own data: stop it, move its \
         data directory aside, and start it with --cluster-peers naming {node}'s cluster \
         address (and the cluster's --cluster-secret-file): a fresh node joins by itself \
         (docs/clustering.md)"
    ))
}

/// rabbitmqctl's cluster_status: every node and whether it runs, as rows; in `body` as its JSON
/// (`cluster_name`, `disk_nodes`, `running_nodes`).
fn cluster_status(broker: &Broker) -> AdminReply {
    let nodes = broker.cluster_nodes();
    let rows = nodes
        .iter()
        .map(|(name, running)| vec![name.clone(), "disc".into(), running.to_string()])
        .collect();
    let mut reply = AdminReply::table(
        format!("Cluster status of node {} ...", broker.node_name()),
        &["node", "type", "running"],
        rows,
    );
    let running: Vec<&str> = nodes.iter().filter(|n| n.1).map(|n| n.0.as_str()).collect();
    reply.body = Some(json!({
        "cluster_name": broker.cluster_name(),
        "disk_nodes": nodes.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        "running_nodes": running,
    }));
    reply
}

/// The node at a glance: the whole as JSON in `body`, and as key / value rows.
async fn status(broker: &Arc<Broker>) -> AdminReply {
    let status = status_json(broker).await;
    let rows = status_rows(&status);
    let mut reply = AdminReply::table(
        format!("Status of node {} ...", broker.node_name()),
        &["key", "value"],
        rows,
    );
    reply.body = Some(status);
    reply
}

async fn status_json(b: &Arc<Broker>) -> Value {
    let (object_totals, queue_totals) = health::totals(b).await;
    let version = env!("CARGO_PKG_VERSION");
    let data_dir = &b.config.data_dir;
    json!({
        "node": b.node_name(),
        "product_name": "Tern",
        "product_version": version,
        "uptime_seconds": b.started.elapsed().as_secs(),
        "data_directory": data_dir.display().to_string(),
        "listeners": health::listeners(b),
        "memory": {
            "used_bytes": crate::alarms::resident_bytes().ok(),
            "high_watermark_bytes": b.alarms.memory_high_watermark(),
        },
        "disk": {
            "free_bytes": crate::alarms::free_bytes(data_dir).ok(),
            "free_limit_bytes": b.alarms.disk_free_limit(),
        },
        "alarms": health::alarms_in_effect(b),
        "object_totals": object_totals,
        "queue_totals": queue_totals,
    })
}

/// `memory.used_bytes  123`, listeners as `amqp 5672, http 15672`, alarms by resource.
fn status_rows(status: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let Some(top) = status.as_object() else {
        return rows;
    };
    for (key, value) in top {
        match (key.as_str(), value) {
            ("listeners", Value::Array(all)) => {
                let each = all
                    .iter()
                    .map(|l| format!("{} {}", text(&l["protocol"]), l["port"]));
                rows.push(vec![key.clone(), each.collect::<Vec<_>>().join(", ")]);
            }
            ("alarms", Value::Array(all)) => {
                let each: Vec<String> = all.iter().map(|a| text(&a["resource"])).collect();
                let shown = if each.is_empty() {
                    "none".into()
                } else {
                    each.join(", ")
                };
                rows.push(vec![key.clone(), shown]);
            }
            (_, Value::Object(inner)) => {
                let each = inner
                    .iter()
                    .map(|(k, v)| vec![format!("{key}.{k}"), text(v)]);
                rows.extend(each);
            }
            _ => rows.push(vec![key.clone(), text(value)]),
        }
    }
    rows
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "unknown".into(),
        other => other.to_string(),
    }
}
