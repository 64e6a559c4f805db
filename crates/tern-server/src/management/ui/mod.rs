//! The management web UI: one HTML page, one script and one stylesheet, embedded in the
//! binary and served without auth (the page logs in itself and sends basic auth on every
//! `/api/...` call, so the API's own checks decide what a user sees).
//!
//! The script builds every element with `createElement`/`textContent`: queue names, payloads
//! and client properties come from peers, so no data is ever parsed as HTML. The headers below
//! make the browser enforce that: no inline script or style runs, and nothing is sniffed into
//! another type.

use std::sync::Arc;

use axum::http::header::{HeaderName, HeaderValue};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;

/// The policy for every UI asset: scripts and styles from this origin only (no inline ones),
/// images from here or `data:` (the page's empty favicon is a `data:` URL).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// `GET /` (the page), `/ui/app.js`, `/ui/app.css`.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("application/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let csp = HeaderName::from_static("content-security-policy");
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (csp, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        // The page has delete and purge buttons: never let another site frame it.
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Revalidate, so a new binary's assets are picked up at once.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
