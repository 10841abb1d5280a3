//! The control plane: one extra thread running tokio + axum on `admin_listen`, apart from the
//! public port. It enters the data plane only through `Hub::publish`, like any other publisher.
//!
//! - `POST /api/broadcast` — `{"topic","event","payload"}` or an array of them → 202 with the
//!   number of subscribers the broadcasts were queued for; bad JSON → 400 with the reason.
//! - `GET /api/topics/{topic}` → `{"topic","subscribers"}`.
//! - `GET /api/stats` → every worker's counters and memory accounting (JSON).
//! - `GET /metrics` → the same in Prometheus text format (not behind the API key: scrapers).
//! - `POST /api/drain` → 202; drains every worker as SIGTERM does (the process exits when empty).
//! - `GET /healthz` → 200.
//!
//! With `api_key` set, `/api/*` requires `Authorization: Bearer <api_key>` (401 otherwise).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Notify;

pub mod metrics;

use crate::config::Config;
use crate::hub::Hub;
use crate::phoenix::serializer::Payload;
use crate::topics::Broadcast;

/// Largest publish request body. Default-free constant: 1 MiB, the default message limit, since a
/// broadcast larger than a client may send would be refused by clients' own limits anyway.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A running control plane.
pub struct Admin {
    pub addr: SocketAddr,
    shutdown: Arc<Notify>,
}

impl Admin {
    pub fn stop(&self) {
        self.shutdown.notify_one();
    }
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    drain_ms: u64,
    api_key: Option<Arc<str>>,
}

/// Binds the admin listener and serves it on its own thread.
pub fn start(cfg: Arc<Config>, hub: Arc<Hub>) -> std::io::Result<Admin> {
    let listener = std::net::TcpListener::bind(cfg.admin_listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(Notify::new());
    let stop = shutdown.clone();
    let state = AppState {
        hub,
        drain_ms: cfg.drain_ms,
        api_key: cfg.api_key.as_deref().map(Arc::from),
    };
    std::thread::Builder::new()
        .name("ringgate-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "admin runtime failed"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "admin listener failed"),
                };
                let app = router(state);
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.notified().await });
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        })?;
    Ok(Admin { addr, shutdown })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/broadcast", post(broadcast))
        .route("/api/topics/{topic}", get(topic))
        .route("/api/presence/{topic}", get(presence))
        .route("/api/drain", post(drain))
        .route("/api/stats", get(stats))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(key) = &state.api_key else {
        return true;
    };
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value
        .strip_prefix("Bearer ")
        .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
}

/// Compares secrets without an early exit, so response timing does not leak a key prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// One request object, or an array of them (told apart by the first byte: serde's untagged
/// enums cannot borrow raw payloads).
fn parse_publish(body: &[u8]) -> Result<Vec<PublishRequest<'_>>, serde_json::Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(body)
    } else {
        serde_json::from_slice(body).map(|one| vec![one])
    }
}

async fn broadcast(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let requests = match parse_publish(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if requests
        .iter()
        .any(|r| r.topic.is_empty() || r.event.is_empty())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "topic and event must be non-empty strings",
        );
    }
    let mut audience = Vec::new();
    let mut subscribers = 0;
    for r in &requests {
        let b = Arc::new(Broadcast::encode(
            &r.topic,
            &r.event,
            Payload::Json(r.payload),
        ));
        subscribers += state.hub.publish(b, None, &mut audience).members;
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "broadcasts": requests.len(), "subscribers": subscribers })),
    )
        .into_response()
}

/// Starts a graceful drain of every worker (as SIGTERM does); the process exits when drained.
async fn drain(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    for inbox in &state.hub.inboxes {
        inbox.send(crate::worker::inbox::Msg::Drain {
            drain_ms: state.drain_ms,
        });
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "draining": true, "drain_ms": state.drain_ms })),
    )
        .into_response()
}

async fn reports(hub: Arc<Hub>) -> Vec<crate::worker::report::Report> {
    tokio::task::spawn_blocking(move || metrics::gather(&hub))
        .await
        .unwrap_or_default()
}

/// Every worker's counters and memory accounting, as JSON (what `ringgate profile` reads).
async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let topics = state.hub.table.topic_count();
    let workers = reports(state.hub.clone()).await;
    Json(json!({ "topics": topics, "workers": workers })).into_response()
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let topics = state.hub.table.topic_count();
    let workers = reports(state.hub.clone()).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics::prometheus(&workers, topics),
    )
        .into_response()
}

async fn topic(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(topic): Path<String>,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let subscribers = state.hub.table.members(&topic);
    Json(json!({ "topic": topic, "subscribers": subscribers })).into_response()
}

/// The merged presence of a topic, in the shape of a `presence_state` payload (`{}` if nobody).
async fn presence(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(topic): Path<String>,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let body = state.hub.presence.current_json(&topic);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
