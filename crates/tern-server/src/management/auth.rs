//! Who is calling: HTTP basic auth against Tern's users (their password hashes), and what
//! their tags let them do, as RabbitMQ's management plugin decides it: `administrator`
//! everything, `monitoring` read everything, `management` (and `policymaker`) their own
//! vhosts; a user with none of these may not use the API.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use base64::Engine;
use tern_core::meta::access::{Op, Resource};
use tern_core::names::{UserName, VhostName};

use super::ApiError;
use crate::broker::Broker;
use crate::http::Peer;

pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// May read everything (administrator or monitoring).
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_authorized",
            "Not administrator user",
        ))
    }

    /// The vhosts the caller may see: all of them, or only `only` (404 when it does not
    /// exist or is not the caller's).
    pub fn vhosts(&self, b: &Broker, only: Option<&str>) -> Result<Vec<VhostName>, ApiError> {
        let all: Vec<VhostName> = b.with_meta(|m| m.vhosts().cloned().collect());
        if let Some(v) = only {
            let v = VhostName::from(v);
            if !all.contains(&v) || !self.may_see(b, &v) {
                return Err(ApiError::not_found());
            }
            return Ok(vec![v]);
        }
        Ok(all.into_iter().filter(|v| self.may_see(b, v)).collect())
    }

    /// Act on a resource as an AMQP client of this user would: 401 with RabbitMQ's refusal
    /// text when its permissions in `vhost` do not allow `op` on `name`.
    pub fn permit(
        &self,
        b: &Broker,
        vhost: &VhostName,
        kind: Resource,
        name: &str,
        op: Op,
    ) -> Result<(), ApiError> {
        let user = UserName::from(self.name.as_str());
        let refused = || tern_core::meta::access::refused(kind, name, vhost, &user);
        let access = b.vhost_access(vhost, &user).ok_or_else(|| {
            if b.vhost_exists(vhost) {
                unauthorized(&refused().message)
            } else {
                ApiError::not_found()
            }
        })?;
        access
            .check(kind, name, op)
            .map_err(|e| unauthorized(&e.message))
    }

    /// Whether the caller may see `vhost` (it has permissions there, or sees all).
    pub fn may_see(&self, broker: &Broker, vhost: &VhostName) -> bool {
        self.sees_all()
            || broker
                .vhost_access(vhost, &UserName::from(self.name.as_str()))
                .is_some()
    }
}

fn unauthorized(reason: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "not_authorized", reason)
}

/// `Authorization: Basic base64(user:password)` into the user and password.
fn credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get("authorization")?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Check a login as the AMQP listener does: the address's failed-login budget first (an
/// address past it is refused unchecked), then the password, then `loopback_users`. `ip` is
/// None only where no connection carries one (never on the listeners).
fn login(broker: &Broker, ip: Option<IpAddr>, name: &str, password: &str) -> Result<(), ApiError> {
    let now = Instant::now();
    if let Some(ip) = ip.filter(|ip| !broker.logins.allows(*ip, now)) {
        tracing::warn!(user = %name, %ip, "management API login refused: too many failed logins from this address");
        return Err(unauthorized("Not_Authorized"));
    }
    if let Err(why) = broker.check_password(name, password) {
        if let Some(ip) = ip {
            broker.logins.failed(ip, now);
        }
        tracing::warn!(user = %name, "management API login failed: {why}");
        return Err(unauthorized("Not_Authorized"));
    }
    if let Some(ip) = ip.filter(|ip| !broker.loopback_allows(name, *ip)) {
        tracing::warn!(user = %name, %ip, "management API login refused: '{name}' can only log in via localhost (loopback_users)");
        return Err(unauthorized("User can only log in via localhost"));
    }
    Ok(())
}

impl FromRequestParts<Arc<Broker>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let (name, password) = credentials(parts).ok_or_else(|| unauthorized("Not_Authorized"))?;
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0 .0);
        login(broker, peer.map(|p| p.ip()), &name, &password)?;
        let tags = broker.with_meta(|m| {
            let user = m.access().user(&name);
            user.map(|u| u.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        });
        let caller = Caller {
            name,
            tags: tags.unwrap_or_default(),
        };
        let management = ["administrator", "monitoring", "management", "policymaker"];
        if !management.iter().any(|t| caller.has(t)) {
            return Err(unauthorized("Not management user"));
        }
        Ok(caller)
    }
}
