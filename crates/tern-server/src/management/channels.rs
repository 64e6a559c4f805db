//! `/api/channels[/{name}]`, `/api/connections/{name}/channels`, `/api/vhosts/{v}/channels`
//! and `/api/consumers[/{vhost}]`, asked of the connection tasks that own them
//! (`Broker::describe_connections`). As with connections, a user who does not see everything
//! sees only their own.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::objects::table_json;
use super::pages::{page, ListQuery};
use super::{ApiError, ApiResult};
use crate::broker::{Broker, ConnInfo};
use crate::connection::{ChannelDetail, ConnDetail, ConsumerDetail};

type Shared = State<Arc<Broker>>;

/// RabbitMQ's channel name: the connection's, then the channel number in parentheses.
pub(crate) fn channel_name(c: &ConnInfo, number: u16) -> String {
    format!("{} ({number})", c.name)
}

fn channel_json(c: &ConnInfo, ch: &ChannelDetail, node: &str) -> Value {
    json!({
        "name": channel_name(c, ch.number), "number": ch.number, "node": node,
        "vhost": c.vhost, "user": c.user, "user_who_performed_action": c.user,
        "state": "running",
        "connection_details": {"name": c.name, "peer_host": c.peer.ip().to_string(),
                               "peer_port": c.peer.port()},
        "prefetch_count": ch.prefetch_count, "global_prefetch_count": ch.global_prefetch_count,
        // Classic queues only: no quorum-queue commands are ever pending.
        "pending_raft_commands": 0,
        "consumer_count": ch.consumer_count,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": 0, "messages_uncommitted": 0, "acks_uncommitted": 0,
        "confirm": ch.confirm, "transactional": ch.transactional,
    })
}

fn consumer_json(c: &ConnInfo, k: &ConsumerDetail, node: &str) -> Value {
    json!({
        "consumer_tag": k.tag, "exclusive": k.exclusive, "ack_required": k.ack_required,
        "prefetch_count": k.prefetch_count, "arguments": table_json(&k.arguments),
        "active": true, "activity_status": "up",
        "queue": {"name": k.queue.as_str(), "vhost": c.vhost},
        "channel_details": {"name": channel_name(c, k.channel), "number": k.channel,
                            "node": node, "connection_name": c.name, "user": c.user,
                            "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
    })
}

/// The connections `caller` may see (in `vhost`, if given), with their details.
async fn visible(
    caller: &Caller,
    b: &Broker,
    vhost: Option<&str>,
) -> Vec<(Arc<ConnInfo>, ConnDetail)> {
    let mut all = b.describe_connections().await;
    all.retain(|(c, _)| caller.sees_all() || c.user == caller.name);
    all.retain(|(c, _)| vhost.is_none_or(|v| c.vhost == v));
    all
}

pub(crate) fn channels_of(conns: &[(Arc<ConnInfo>, ConnDetail)], node: &str) -> Vec<Value> {
    let each = conns
        .iter()
        .flat_map(|(c, d)| d.channels.iter().map(move |ch| channel_json(c, ch, node)));
    each.collect()
}

pub(crate) fn consumers_of(conns: &[(Arc<ConnInfo>, ConnDetail)], node: &str) -> Vec<Value> {
    let each = conns
        .iter()
        .flat_map(|(c, d)| d.consumers.iter().map(move |k| consumer_json(c, k, node)));
    each.collect()
}

/// The consumers on one queue that `caller` may see (a queue's `consumer_details`).
pub(crate) async fn queue_consumers(
    caller: &Caller,
    b: &Broker,
    vhost: &str,
    queue: &str,
) -> Vec<Value> {
    let mut all = consumers_of(&visible(caller, b, Some(vhost)).await, b.node_name());
    all.retain(|k| k["queue"]["name"] == queue);
    all
}

pub async fn list_channels(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(page(
        &q,
        channels_of(&visible(&caller, &b, None).await, b.node_name()),
    )?))
}

pub async fn vhost_channels(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> Json<Value> {
    Json(Value::Array(channels_of(
        &visible(&caller, &b, Some(&v)).await,
        b.node_name(),
    )))
}

pub async fn connection_channels(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut conns = visible(&caller, &b, None).await;
    conns.retain(|(c, _)| c.name == name);
    if conns.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(channels_of(&conns, b.node_name()))))
}

pub async fn get_channel(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let all = channels_of(&visible(&caller, &b, None).await, b.node_name());
    let found = all.into_iter().find(|ch| ch["name"] == name.as_str());
    found.map(Json).ok_or_else(ApiError::not_found)
}

pub async fn list_consumers(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(page(
        &q,
        consumers_of(&visible(&caller, &b, None).await, b.node_name()),
    )?))
}

pub async fn vhost_consumers(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.vhosts(&b, Some(&v))?;
    Ok(Json(Value::Array(consumers_of(
        &visible(&caller, &b, Some(&v)).await,
        b.node_name(),
    ))))
}
