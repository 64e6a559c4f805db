//! `/api/topic-permissions` and the per-user and per-vhost permission lists
//! (`/api/users/{user}/permissions`, `/api/vhosts/{vhost}/topic-permissions`, ...), as
//! RabbitMQ's API has them. Administrators only, as there.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use tern_core::meta::access::{AccessCommand, TopicPermissions};
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_core::names::{UserName, VhostName};

use super::access::permissions;
use super::auth::Caller;
use super::{apply, created_or_updated, text, ApiError, ApiResult};
use crate::broker::Broker;

type Shared = State<Arc<Broker>>;

/// A topic permission as RabbitMQ's API and definitions show it.
pub fn topic_json(v: &VhostName, u: &UserName, t: &TopicPermissions) -> Value {
    json!({"user": u.as_str(), "vhost": v.as_str(), "exchange": t.exchange.as_str(),
           "write": t.write.text(), "read": t.read.text()})
}

/// Every topic permission whose vhost and user pass `filter`.
pub fn topic_permissions(b: &Broker, filter: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    b.with_meta(|m| {
        m.access()
            .topic_permissions()
            .filter(|(v, u, _)| filter(v.as_str(), u.as_str()))
            .map(|(v, u, t)| topic_json(v, u, t))
            .collect()
    })
}

pub async fn list(caller: Caller, State(b): Shared) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(topic_permissions(&b, |_, _| true))))
}

/// One user's in one vhost (one per exchange); 404 when there are none.
pub async fn get_pair(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let found = topic_permissions(&b, |v, u| v == vhost && u == user);
    if found.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(found)))
}

/// PUT `{"exchange", "write", "read"}`: 201 for a new exchange's, 204 for a change.
pub async fn put_pair(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let field = |k: &str| text(&body, k).to_string();
    let exchange = field("exchange");
    let existed = topic_permissions(&b, |v, u| v == vhost && u == user)
        .iter()
        .any(|t| t["exchange"] == exchange.as_str());
    let cmd = AccessCommand::SetTopicPermissions {
        vhost: vhost.as_str().into(),
        user: user.as_str().into(),
        exchange: exchange.as_str().into(),
        write: field("write"),
        read: field("read"),
    };
    apply(&b, MetaCommand::Access(cmd)).await?;
    Ok(created_or_updated(!existed))
}

/// DELETE: all of the user's topic permissions in the vhost, as RabbitMQ's.
pub async fn delete_pair(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let cmd = AccessCommand::ClearTopicPermissions {
        vhost: vhost.as_str().into(),
        user: user.as_str().into(),
        exchange: None,
    };
    match apply(&b, MetaCommand::Access(cmd)).await? {
        MetaOutcome::AccessChanged { changed: false } => Err(ApiError::not_found()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Whose permissions a path lists: a vhost's or a user's.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Vhost,
    User,
}

/// The permissions (or, with `topics`, the topic permissions) of one vhost or one user; 404
/// when it does not exist.
fn scoped(
    caller: &Caller,
    b: &Broker,
    scope: Scope,
    name: &str,
    topics: bool,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let exists = b.with_meta(|m| match scope {
        Scope::Vhost => m.vhost_exists(&VhostName::from(name)),
        Scope::User => m.access().user(name).is_some(),
    });
    if !exists {
        return Err(ApiError::not_found());
    }
    let keep = |v: &str, u: &str| {
        if scope == Scope::Vhost {
            v == name
        } else {
            u == name
        }
    };
    let list = if topics {
        topic_permissions(b, keep)
    } else {
        permissions(b, keep)
    };
    Ok(Json(Value::Array(list)))
}

pub async fn of_vhost(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> ApiResult<Json<Value>> {
    scoped(&caller, &b, Scope::Vhost, &v, false)
}

pub async fn of_user(
    caller: Caller,
    State(b): Shared,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    scoped(&caller, &b, Scope::User, &u, false)
}

pub async fn topics_of_vhost(
    caller: Caller,
    State(b): Shared,
    Path(v): Path<String>,
) -> ApiResult<Json<Value>> {
    scoped(&caller, &b, Scope::Vhost, &v, true)
}

pub async fn topics_of_user(
    caller: Caller,
    State(b): Shared,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    scoped(&caller, &b, Scope::User, &u, true)
}
