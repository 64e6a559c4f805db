//! `/api/whoami`, `/api/users`, `/api/vhosts`, `/api/permissions`: RabbitMQ's JSON, changes
//! through the metadata log like every definition.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use tern_amqp::ShortStr;
use tern_core::meta::access::{AccessCommand, HashAlgorithm, PasswordHash, Permissions, UserDef};
use tern_core::meta::{MetaCommand, MetaOutcome};
use tern_core::names::{UserName, VhostName};

use super::auth::Caller;
use super::pages::{page, ListQuery};
use super::{apply, created_or_updated, text, ApiError, ApiResult};
use crate::auth::hash_password;
use crate::broker::Broker;

type Shared = State<Arc<Broker>>;

pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.name, "tags": caller.tags}))
}

pub fn user_json(u: &UserDef) -> Value {
    let (hash, algorithm) = match &u.password {
        Some(p) => (
            base64::engine::general_purpose::STANDARD.encode(&p.salted),
            p.algorithm.rabbit_name(),
        ),
        None => (String::new(), HashAlgorithm::Sha256.rabbit_name()),
    };
    let tags: Vec<&str> = u.tags.iter().map(|t| t.as_str()).collect();
    json!({"name": u.name.as_str(), "password_hash": hash, "hashing_algorithm": algorithm,
           "tags": tags, "limits": {}})
}

pub async fn list_users(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let users = b.with_meta(|m| m.access().users().map(user_json).collect::<Vec<_>>());
    Ok(Json(page(&q, users)?))
}

pub async fn get_user(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    b.with_meta(|m| m.access().user(&name).map(user_json))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `tags` as RabbitMQ takes it: a comma-separated string or a list.
fn tags_of(body: &Value) -> Vec<ShortStr> {
    let words: Vec<String> = match body.get("tags") {
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(|w| ShortStr::from(w.as_str()))
        .collect()
}

/// `password` (hashed here) or `password_hash` + `hashing_algorithm` (imported as is).
fn password_of(body: &Value) -> ApiResult<Option<PasswordHash>> {
    if let Some(p) = body.get("password").and_then(Value::as_str) {
        return hash_password(p)
            .map(Some)
            .map_err(|_| ApiError::bad_request("no randomness"));
    }
    let Some(hash) = body.get("password_hash").and_then(Value::as_str) else {
        return Ok(None);
    };
    if hash.is_empty() {
        return Ok(None);
    }
    let name = body
        .get("hashing_algorithm")
        .and_then(Value::as_str)
        .unwrap_or("rabbit_password_hashing_sha256");
    let algorithm = HashAlgorithm::from_rabbit_name(name)
        .ok_or_else(|| ApiError::bad_request(format!("unsupported hashing algorithm {name}")))?;
    let salted = base64::engine::general_purpose::STANDARD
        .decode(hash)
        .map_err(|_| ApiError::bad_request("password_hash is not base64"))?;
    Ok(Some(PasswordHash {
        algorithm,
        salted: salted.into(),
    }))
}

pub async fn put_user(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let created = upsert_user(&b, &name, &body).await?;
    Ok(created_or_updated(created))
}

/// Create the user, or set its password (if the body has one) and tags; true if created.
pub async fn upsert_user(b: &Arc<Broker>, name: &str, body: &Value) -> ApiResult<bool> {
    let exists = b.with_meta(|m| m.access().user(name).is_some());
    for cmd in user_commands(name, body, exists)? {
        apply(b, cmd).await?;
    }
    Ok(!exists)
}

/// What a PUT body (or a definitions file's user) asks for: the user added, or, if it
/// `exists`, its password (when the body has one) and tags set.
pub(crate) fn user_commands(name: &str, body: &Value, exists: bool) -> ApiResult<Vec<MetaCommand>> {
    let (password, tags) = (password_of(body)?, tags_of(body));
    let name = UserName::from(name);
    if !exists {
        let user = UserDef {
            name,
            password,
            tags,
        };
        return Ok(vec![MetaCommand::Access(AccessCommand::AddUser { user })]);
    }
    let mut cmds = Vec::with_capacity(2);
    if password.is_some() || body.get("password_hash").is_some() {
        let set = AccessCommand::SetPassword {
            name: name.clone(),
            password,
        };
        cmds.push(MetaCommand::Access(set));
    }
    cmds.push(MetaCommand::Access(AccessCommand::SetTags { name, tags }));
    Ok(cmds)
}

pub async fn delete_user(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let cmd = AccessCommand::DeleteUser {
        name: name.as_str().into(),
    };
    apply(&b, MetaCommand::Access(cmd)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn vhost_json(name: &VhostName, node: &str) -> Value {
    json!({"name": name.as_str(), "description": "", "tags": [], "tracing": false,
           "default_queue_type": "classic", "metadata": {"description": "", "tags": []},
           "cluster_state": {node: "running"}})
}

pub async fn list_vhosts(
    caller: Caller,
    State(b): Shared,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let node = b.node_name();
    let seen = caller
        .vhosts(&b, None)?
        .iter()
        .map(|v| vhost_json(v, node))
        .collect();
    Ok(Json(page(&q, seen)?))
}

pub async fn get_vhost(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let vhosts = caller.vhosts(&b, Some(&name))?;
    vhosts
        .first()
        .map(|v| Json(vhost_json(v, b.node_name())))
        .ok_or_else(ApiError::not_found)
}

pub async fn put_vhost(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let name = VhostName::from(name.as_str());
    match apply(&b, MetaCommand::AddVhost { name }).await? {
        MetaOutcome::VhostAdded { created } => Ok(created_or_updated(created)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

pub async fn delete_vhost(
    caller: Caller,
    State(b): Shared,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let name = VhostName::from(name.as_str());
    match apply(&b, MetaCommand::DeleteVhost { name }).await? {
        MetaOutcome::VhostDeleted { existed: false, .. } => Err(ApiError::not_found()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// A permission as RabbitMQ's API and definitions show it.
pub fn permission_json(v: &VhostName, u: &UserName, p: &Permissions) -> Value {
    json!({"user": u.as_str(), "vhost": v.as_str(), "configure": p.configure.text(),
           "write": p.write.text(), "read": p.read.text()})
}

/// Every permission whose vhost and user pass `filter`.
pub(crate) fn permissions(b: &Broker, filter: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    b.with_meta(|m| {
        m.access()
            .permissions()
            .filter(|(v, u, _)| filter(v.as_str(), u.as_str()))
            .map(|(v, u, p)| permission_json(v, u, p))
            .collect()
    })
}

pub async fn list_permissions(caller: Caller, State(b): Shared) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(permissions(&b, |_, _| true))))
}

pub async fn get_permission(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let found = permissions(&b, |v, u| v == vhost && u == user);
    found
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

pub async fn put_permission(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let field = |k: &str| text(&body, k).to_string();
    let existed = !permissions(&b, |v, u| v == vhost && u == user).is_empty();
    let cmd = AccessCommand::SetPermissions {
        vhost: vhost.as_str().into(),
        user: user.as_str().into(),
        configure: field("configure"),
        write: field("write"),
        read: field("read"),
    };
    apply(&b, MetaCommand::Access(cmd)).await?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

pub async fn delete_permission(
    caller: Caller,
    State(b): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let cmd = AccessCommand::ClearPermissions {
        vhost: vhost.as_str().into(),
        user: user.as_str().into(),
    };
    match apply(&b, MetaCommand::Access(cmd)).await? {
        MetaOutcome::AccessChanged { changed: false } => Err(ApiError::not_found()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
