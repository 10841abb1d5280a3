//! The control plane: one extra thread running tokio + axum on `admin_listen`, apart from the
//! public port. It enters the data plane only through `Hub::publish`, like any other publisher.
//!
//! - `POST /api/broadcast` — `{"topic","event","payload"}` or an array of them → 202 with the
//!   number of subscribers the broadcasts were queued for; bad JSON → 400 with the reason.
//! - `GET /api/topics/{topic}` → `{"topic","subscribers","cluster_subscribers"}`: members on
//!   this node, and on every live node (equal to `subscribers` without a bus; `null` while the
//!   bus is down).
//! - `GET /api/nodes` → `{"node","bus","nodes":[{"name","connections","topics",...}]}`: the live
//!   gateways from their heartbeats (this node only without a bus; 503 while the bus is down).
//! - `GET /api/stats` → a snapshot (`stats`): every worker's counters and memory accounting, the
//!   admin API's broadcasts, process and kernel readings, and sums (JSON).
//! - `GET /metrics` → the same in Prometheus text format (`metrics`; not behind the API key:
//!   scrapers).
//! - `GET /` → the live dashboard, `GET /chat` → the seed's chat app, `GET /assets/*` → their
//!   files, embedded in the binary (`pages`). Pages carry no data and no key: the dashboard asks
//!   `/api/stats` with the key the user typed, as a header.
//! - `POST /api/drain` → 202; drains every worker as SIGTERM does (the process exits when empty).
//! - `POST /api/debug/fail-worker/{id}/{error|panic}` → 202; only with `--debug-fault-injection`
//!   (a hidden flag for tests; otherwise the route does not exist): that worker fails on its next
//!   loop turn, so the worker-death handling can be driven from outside.
//! - `POST /api/debug/stall-worker/{id}/{ms}` → 202 once that worker sleeps (`ms` ≤ 10 s; 503 if
//!   it did not start within 2 s); same flag: a test fills its inbox as a stalled worker's fills.
//! - `POST /api/debug/resident-bytes/{bytes}` → 202; same flag: the `max_memory_bytes` check reads
//!   `bytes` as the resident memory (0: the real reading again), so a test drives pause and resume.
//! - `GET /healthz` → 200 `{"status":"ok","degraded","bus"}`: always 200 (a load balancer keeps
//!   sending clients: local delivery works), `degraded: true` while a configured bus is down.
//!
//! With `api_key` set, `/api/*` requires `Authorization: Bearer <api_key>` (401 otherwise,
//! before any body is read). Connections and request times are bounded in `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Notify;

pub mod metrics;
pub mod pages;
pub mod serve;
pub mod stats;
pub mod system;

use crate::bus::LinkState;
use crate::config::Config;
use crate::hub::Hub;
use crate::phoenix::serializer::Payload;

/// Largest publish request body. Default-free constant: 1 MiB, the default message limit, since a
/// broadcast larger than a client may send would be refused by clients' own limits anyway.
pub const MAX_BODY_BYTES: usize = 1 << 20;

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
    counters: Arc<stats::AdminCounters>,
    chat: Arc<pages::ChatConfig>,
}

/// Test-only: overrides the resident-memory reading of the memory ceiling.
async fn resident_bytes(Path(bytes): Path<u64>) -> Response {
    crate::supervise::override_resident_bytes(bytes);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "resident_bytes": bytes })),
    )
        .into_response()
}

/// The inbox of worker `id` for a test-only route, or the response refusing the request.
// A large `Err`: it is the `Response` the handler returns at once; boxing it buys nothing here.
#[allow(clippy::result_large_err)]
fn debug_inbox(state: &AppState, id: usize) -> Result<&crate::worker::inbox::Inbox, Response> {
    state
        .hub
        .inboxes
        .get(id)
        .map(|inbox| &**inbox)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such worker"))
}

/// Test-only: makes worker `id` sleep `ms` (at most `MAX_STALL_MS`) on its next loop turn.
async fn stall_worker(
    State(state): State<AppState>,
    Path((id, ms)): Path<(usize, u32)>,
) -> Response {
    use crate::worker::inbox::{Fault, MAX_STALL_MS};
    let inbox = match debug_inbox(&state, id) {
        Ok(inbox) => inbox,
        Err(refused) => return refused,
    };
    if ms > MAX_STALL_MS {
        return error(StatusCode::BAD_REQUEST, "a stall is at most 10000 ms");
    }
    tracing::warn!(
        worker = id,
        ms,
        "injecting a worker stall (--debug-fault-injection)"
    );
    inbox.inject_fault(Fault::Stall { ms });
    // Answered once the worker sleeps, so what the caller sends next finds it stalled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !inbox.is_stalled() {
        if ms == 0 || tokio::time::Instant::now() > deadline {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the worker did not stall");
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "worker": id, "stall_ms": ms })),
    )
        .into_response()
}

/// Test-only: makes worker `id` fail (`error`: its loop returns an error; `panic`: it panics).
async fn fail_worker(
    State(state): State<AppState>,
    Path((id, how)): Path<(usize, String)>,
) -> Response {
    use crate::worker::inbox::Fault;
    let inbox = match debug_inbox(&state, id) {
        Ok(inbox) => inbox,
        Err(refused) => return refused,
    };
    let fault = match how.as_str() {
        "error" => Fault::Error,
        "panic" => Fault::Panic,
        _ => return error(StatusCode::BAD_REQUEST, "expected error or panic"),
    };
    tracing::warn!(
        worker = id,
        ?fault,
        "injecting a worker fault (--debug-fault-injection)"
    );
    inbox.inject_fault(fault);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "worker": id, "fault": how })),
    )
        .into_response()
}

/// Binds the admin listener and serves it on its own thread. `public` is the bound public
/// listener, which the chat page connects to.
pub fn start(cfg: Arc<Config>, hub: Arc<Hub>, public: SocketAddr) -> std::io::Result<Admin> {
    let listener = std::net::TcpListener::bind(cfg.admin_listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(Notify::new());
    let stop = shutdown.clone();
    let fault_injection = cfg.debug_fault_injection;
    let timeout = Duration::from_millis(cfg.admin_timeout_ms);
    let max_connections = cfg.admin_max_connections;
    let state = AppState {
        hub,
        drain_ms: cfg.drain_ms,
        api_key: cfg.api_key.as_deref().map(Arc::from),
        counters: Arc::default(),
        chat: Arc::new(pages::ChatConfig::new(public.port(), &cfg.phoenix_path)),
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
                let bus = state.hub.bus.clone();
                if let Some(bus) = &bus {
                    crate::bus::run::spawn(bus.clone(), state.hub.clone());
                }
                let mut app = router(state.clone());
                if fault_injection {
                    app = app.merge(
                        Router::new()
                            .route("/api/debug/fail-worker/{id}/{how}", post(fail_worker))
                            .route("/api/debug/stall-worker/{id}/{ms}", post(stall_worker))
                            .route("/api/debug/resident-bytes/{bytes}", post(resident_bytes))
                            .route_layer(axum::middleware::from_fn_with_state(
                                state.clone(),
                                require_key,
                            ))
                            .with_state(state),
                    );
                }
                let app = app.layer(axum::middleware::from_fn_with_state(timeout, deadline));
                serve::serve(listener, app, max_connections, timeout, stop).await;
                if let Some(bus) = &bus {
                    crate::bus::run::farewell(bus).await;
                }
            });
        })?;
    Ok(Admin { addr, shutdown })
}

fn router(state: AppState) -> Router {
    // The key is checked before a handler runs, so before a body is read: a client without it
    // cannot make the process read (and hold) a megabyte first.
    let api = Router::new()
        .route("/api/broadcast", post(broadcast))
        .route("/api/topics/{topic}", get(topic))
        .route("/api/presence/{topic}", get(presence))
        .route("/api/drain", post(drain))
        .route("/api/stats", get(stats))
        .route("/api/nodes", get(nodes))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    Router::new()
        .merge(api)
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .route("/", get(pages::dashboard))
        .route("/chat", get(chat))
        .route("/assets/{name}", get(pages::asset))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

/// Refuses an `/api/*` request without the key (when one is set) before its handler runs.
async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !authorized(&state, req.headers()) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(req).await
}

/// Bounds a request's body and answer in time (its headers are bounded by the connection's
/// header timeout, `serve`): a client sending a body a byte at a time gets 408 and the
/// connection is closed.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = error(StatusCode::REQUEST_TIMEOUT, "request took too long");
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
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

async fn broadcast(State(state): State<AppState>, body: Bytes) -> Response {
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
        subscribers += state
            .hub
            .publish(
                &r.topic,
                &r.event,
                Payload::Json(r.payload),
                None,
                &mut audience,
            )
            .members;
        state
            .counters
            .broadcasts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "broadcasts": requests.len(), "subscribers": subscribers })),
    )
        .into_response()
}

/// Starts a graceful drain of every worker (as SIGTERM does); the process exits when drained.
async fn drain(State(state): State<AppState>) -> Response {
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

async fn snapshot(state: &AppState) -> stats::Snapshot {
    let hub = state.hub.clone();
    let counters = state.counters.clone();
    tokio::task::spawn_blocking(move || stats::take(&hub, &counters))
        .await
        .unwrap_or_default()
}

/// The snapshot as JSON (what the dashboard, `ringgate top` and `ringgate profile` read).
async fn stats(State(state): State<AppState>) -> Response {
    let snap = snapshot(&state).await;
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(snap),
    )
        .into_response()
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let snap = snapshot(&state).await;
    let mut text = metrics::prometheus(&snap);
    if let Some(bus) = &state.hub.bus {
        bus.prometheus(&mut text);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn chat(State(state): State<AppState>) -> Response {
    pages::chat(&state.chat)
}

async fn topic(State(state): State<AppState>, Path(topic): Path<String>) -> Response {
    let subscribers = state.hub.table.members(&topic);
    let Some(bus) = &state.hub.bus else {
        return Json(json!({
            "topic": topic,
            "subscribers": subscribers,
            "cluster_subscribers": subscribers,
        }))
        .into_response();
    };
    let remote = match bus.link() {
        Some(link) => bounded(bus, crate::bus::nodes::remote_counts(bus, &link, &topic)).await,
        None => None,
    };
    let cluster = remote
        .as_ref()
        .map(|r| subscribers + r.iter().map(|(_, n)| n).sum::<u64>());
    let nodes: serde_json::Map<String, serde_json::Value> = remote
        .unwrap_or_default()
        .into_iter()
        .map(|(name, n)| (name, n.into()))
        .collect();
    Json(json!({
        "topic": topic,
        "subscribers": subscribers,
        "cluster_subscribers": cluster,
        "remote": nodes,
    }))
    .into_response()
}

/// A cluster-view query answered within twice the bus's response timeout (`response_timeout_ms`:
/// a view is a few round trips, each bounded by it on the link), or `None`.
async fn bounded<T>(
    bus: &crate::bus::Bus,
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Option<T> {
    let limit = std::time::Duration::from_millis(2 * bus.cfg.response_timeout_ms);
    match tokio::time::timeout(limit, query).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cluster view query failed");
            None
        }
        Err(_) => None,
    }
}

fn bus_state(state: &AppState) -> &'static str {
    match state.hub.bus.as_ref().map(|b| b.state()) {
        None => "off",
        Some(LinkState::Up) => "up",
        Some(LinkState::Down) => "down",
    }
}

/// Always 200 while the process serves (a load balancer should keep routing to it: local
/// delivery works without Redis); `degraded` tells monitoring that cross-node delivery is off.
async fn healthz(State(state): State<AppState>) -> Response {
    let bus = bus_state(&state);
    Json(json!({ "status": "ok", "degraded": bus == "down", "bus": bus })).into_response()
}

/// The live gateways of the cluster, from their heartbeats.
async fn nodes(State(state): State<AppState>) -> Response {
    let Some(bus) = &state.hub.bus else {
        let open: u64 = snapshot(&state).await.workers.iter().map(|r| r.open).sum();
        return Json(json!({
            "node": null,
            "bus": "off",
            "nodes": [{ "name": null, "connections": open, "topics": state.hub.table.topic_count() }],
        }))
        .into_response();
    };
    let listed = match bus.link() {
        Some(link) => bounded(bus, crate::bus::nodes::live(bus, &link)).await,
        None => None,
    };
    match listed {
        Some(nodes) => {
            Json(json!({ "node": &*bus.name, "bus": bus_state(&state), "nodes": nodes }))
                .into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the bus is down"),
    }
}

/// The merged presence of a topic, in the shape of a `presence_state` payload (`{}` if nobody).
async fn presence(State(state): State<AppState>, Path(topic): Path<String>) -> Response {
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
