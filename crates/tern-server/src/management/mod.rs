//! The management HTTP API, RabbitMQ's paths and JSON field names (port 15672 by default),
//! so existing tooling works against Tern. Every route needs HTTP basic auth against Tern's
//! users; tags decide what a user may do (`auth`). Request bodies are limited to
//! `management_max_body_bytes`.
//!
//! - `auth`: the caller, from the Authorization header, and the tag checks;
//! - `access`: `/api/users`, `/api/vhosts`, `/api/permissions`, `/api/whoami`;
//! - `health`: `/api/overview`, `/api/nodes` and `/api/health/checks/*`;
//! - `facts`: what the overview and nodes say of the node (exchange types, churn, ...);
//! - `connections`: `/api/connections`, listing and closing;
//! - `channels`: `/api/channels` and `/api/consumers`, asked of the connections;
//! - `definitions`: `/api/definitions`, export and import in RabbitMQ's format;
//! - `messages`: publishing to an exchange and getting from a queue;
//! - `objects`: `/api/exchanges`, `/api/queues`;
//! - `bindings`: `/api/bindings` in all its forms;
//! - `pages`: sorting, filtering and pagination of the lists;
//! - `topics`: `/api/topic-permissions`, and permissions per user and per vhost;
//! - `ui`: the web UI at `/` (static assets, no auth: its API calls carry the credentials).

mod access;
mod auth;
pub(crate) mod bindings;
pub(crate) mod channels;
pub(crate) mod connections;
pub(crate) mod definitions;
mod facts;
pub(crate) mod health;
mod messages;
pub(crate) mod objects;
mod pages;
mod topics;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use tern_core::meta::{MetaCommand, MetaOutcome};

use crate::broker::Broker;
use crate::http;

/// An error as RabbitMQ's API answers it: a status and `{"error": ..., "reason": ...}`.
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// What went wrong, in words (the admin socket answers with it).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "reason": self.reason});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge =
                axum::http::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\"");
            response.headers_mut().insert("www-authenticate", challenge);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A definition change, through the metadata log like any AMQP client's: 404 for what is not
/// there, 503 when the node cannot write (it is stopping, or its storage failed), 400 for any
/// other refusal (with RabbitMQ's text).
pub async fn apply(broker: &Arc<Broker>, cmd: MetaCommand) -> ApiResult<MetaOutcome> {
    broker.apply(cmd).await.map_err(refusal)
}

/// Apply `cmds` as one metadata log entry (one durable write): in order, stopping at the
/// first refusal, which is the error (400, in RabbitMQ's words, naming what was refused);
/// those before it stay applied.
pub async fn apply_batch(broker: &Arc<Broker>, cmds: Vec<MetaCommand>) -> ApiResult<()> {
    match apply(broker, MetaCommand::Batch(cmds)).await? {
        MetaOutcome::Batch {
            refused: Some(e), ..
        } => Err(ApiError::bad_request(e.message)),
        _ => Ok(()),
    }
}

fn refusal(e: tern_amqp::AmqpError) -> ApiError {
    use tern_amqp::ReplyCode;
    match e.code {
        ReplyCode::NotFound => ApiError::not_found(),
        ReplyCode::ConnectionForced | ReplyCode::InternalError => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.message)
        }
        _ => ApiError::bad_request(e.message),
    }
}

/// `base` (an object) with `more`'s fields (an object) added.
pub fn merged(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// A string field of a request body, "" when absent (RabbitMQ's defaults for patterns).
pub fn text<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// What a PUT answers: 201 for something new, 204 for an update.
pub fn created_or_updated(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

fn router(broker: Arc<Broker>) -> Router {
    let limit = broker.config.management_max_body_bytes;
    Router::new()
        .route("/api/whoami", get(access::whoami))
        .route("/api/overview", get(health::overview))
        .route("/api/users", get(access::list_users))
        .route(
            "/api/users/{name}",
            get(access::get_user)
                .put(access::put_user)
                .delete(access::delete_user),
        )
        .route("/api/vhosts", get(access::list_vhosts))
        .route(
            "/api/vhosts/{name}",
            get(access::get_vhost)
                .put(access::put_vhost)
                .delete(access::delete_vhost),
        )
        .route("/api/connections", get(connections::list_connections))
        .route(
            "/api/connections/{name}",
            get(connections::get_connection).delete(connections::close_connection),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::vhost_connections),
        )
        .route(
            "/api/connections/{name}/channels",
            get(channels::connection_channels),
        )
        .route("/api/channels", get(channels::list_channels))
        .route("/api/channels/{name}", get(channels::get_channel))
        .route(
            "/api/vhosts/{vhost}/channels",
            get(channels::vhost_channels),
        )
        .route("/api/consumers", get(channels::list_consumers))
        .route("/api/consumers/{vhost}", get(channels::vhost_consumers))
        .route("/api/permissions", get(access::list_permissions))
        .route("/api/topic-permissions", get(topics::list))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topics::get_pair)
                .put(topics::put_pair)
                .delete(topics::delete_pair),
        )
        .route("/api/vhosts/{vhost}/permissions", get(topics::of_vhost))
        .route("/api/users/{user}/permissions", get(topics::of_user))
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(topics::topics_of_vhost),
        )
        .route(
            "/api/users/{user}/topic-permissions",
            get(topics::topics_of_user),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            get(access::get_permission)
                .put(access::put_permission)
                .delete(access::delete_permission),
        )
        .route("/api/exchanges", get(objects::list_exchanges))
        .route("/api/exchanges/{vhost}", get(objects::vhost_exchanges))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(objects::get_exchange)
                .put(objects::put_exchange)
                .delete(objects::delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            axum::routing::post(messages::publish),
        )
        .route(
            "/api/queues/{vhost}/{name}/get",
            axum::routing::post(messages::get),
        )
        .route("/api/queues", get(objects::list_queues))
        .route("/api/queues/{vhost}", get(objects::vhost_queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(objects::get_queue)
                .put(objects::put_queue)
                .delete(objects::delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(objects::purge_queue),
        )
        .route("/api/bindings", get(bindings::list_bindings))
        .route("/api/bindings/{vhost}", get(bindings::vhost_bindings))
        .route(
            "/api/bindings/{vhost}/e/{exchange}/{kind}/{dest}",
            get(bindings::between).post(bindings::bind),
        )
        .route(
            "/api/bindings/{vhost}/e/{exchange}/{kind}/{dest}/{props}",
            get(bindings::get_one).delete(bindings::unbind),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/{side}",
            get(bindings::of_exchange),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::of_queue),
        )
        .route(
            "/api/definitions",
            get(definitions::get_definitions).post(definitions::post_definitions),
        )
        .route("/api/health/checks/alarms", get(health::alarms))
        .route("/api/health/checks/local-alarms", get(health::local_alarms))
        .route(
            "/api/health/checks/virtual-hosts",
            get(health::virtual_hosts),
        )
        .route("/api/health/checks/is-in-service", get(health::in_service))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(health::quorum_critical),
        )
        .route("/api/nodes", get(health::nodes))
        .route("/api/cluster-name", get(health::cluster_name))
        .route("/api/nodes/{name}", get(health::node))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(health::port_listener),
        )
        .merge(ui::routes())
        .fallback(|_: auth::Caller| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(broker)
}

/// Serve the API and UI on `management_port`, and over HTTPS on `management_tls_port` with
/// `https` when both are given, until `stopped`; the plain listener's address.
pub async fn spawn(
    broker: Arc<Broker>,
    stopped: watch::Receiver<bool>,
    https: Option<TlsAcceptor>,
) -> std::io::Result<SocketAddr> {
    let c = &broker.config;
    let ports = (c.management_port, c.management_tls_port);
    let app = router(broker.clone());
    http::serve_plain_and_tls(&broker, ("http", "https"), ports, https, app, stopped).await
}
