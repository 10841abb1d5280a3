//! `peer_tokio_tungstenite`: the server a typical Rust team writes with tokio-tungstenite, kept as the
//! baseline the benches compare ringgate against (same job, same machine, same run).
//!
//! It owns nothing clever on purpose: one tokio task per connection, tungstenite's own buffers sized by
//! `WebSocketConfig`, a `Mutex<HashMap>` topic table whose members are bounded `mpsc` senders, and a
//! broadcast that encodes its frame ONCE per serializer version and clones the shared `Message`
//! (a refcounted `Utf8Bytes`) into every member's queue. Anything smarter would stop being "typical".
//!
//! Endpoints on `--listen`: `GET /healthz` → 200; WebSocket `/echo` (echoes text and binary);
//! WebSocket `/socket/websocket` speaking minimal Phoenix Channels V1 (no `vsn`) and V2 (`vsn=2.0.0`):
//! heartbeat reply, join of `rooms:*` (anything else: "unmatched topic"), leave, and any other event on a
//! joined topic broadcast to every member with `ref` null (the Phoenix chat example's `broadcast!`).
//! `--admin-listen` serves `POST /api/broadcast` with `{"topic","event","payload"}`, or an array of them
//! taken in order, → 202, like ringgate.
//!
//! It also accepts `serve`, `--workers`, `--echo-path` and `--log-level` so a harness trial can start it
//! with ringgate's command line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
#[path = "phoenix_min.rs"]
mod phoenix_min;
use futures_util::{SinkExt, StreamExt};
use phoenix_min::{decode, Effect, Inbound};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Admin request bodies above this are refused: a broadcast payload is small, and the bound keeps a
/// misbehaving client from growing memory.
const ADMIN_REQUEST_BYTES_MAX: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(about = "tokio-tungstenite baseline peer for the ringgate benches")]
struct Args {
    /// Ignored; lets the harness start the peer with ringgate's `serve` command line.
    mode: Option<String>,
    /// WebSocket + /healthz listener.
    #[arg(long)]
    listen: SocketAddr,
    /// Admin HTTP listener (POST /api/broadcast).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// tungstenite read buffer per connection, and the write buffer threshold. 0 keeps tungstenite's
    /// defaults (128 KiB each, the read buffer allocated eagerly per connection); 4096 is the tuned peer.
    #[arg(long, default_value_t = 0)]
    read_buffer_bytes: usize,
    /// Tokio worker threads (default: one per core on the 2-core bench machine).
    #[arg(long, alias = "workers", default_value_t = 2)]
    threads: usize,
    /// Path of the echo endpoint.
    #[arg(long, default_value = "/echo")]
    echo_path: String,
    /// Accepted for command-line compatibility with ringgate; the peer only prints errors.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Listen backlog. tokio's `TcpListener::bind` uses 128, which a 256-wide connect burst overflows
    /// (each overflow costs the client a 1 s SYN retransmit, measuring the backlog instead of the server);
    /// 4096 is this machine's `net.core.somaxconn`.
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
    /// Outbound queue bound per connection, in messages. A full queue drops the broadcast for that member
    /// (counted and printed on exit) instead of growing memory without limit; 1024 is far above what the
    /// benches need (20 broadcasts spaced 200 ms).
    #[arg(long, default_value_t = 1024)]
    queue_messages: usize,
}

/// Where an upgrade request goes, decided in the handshake callback.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    NotFound,
    Echo,
    Phoenix { v2: bool },
}

struct Member {
    v2: bool,
    tx: mpsc::Sender<Message>,
}

/// Shared state of the whole server: the topic table and a few counters.
struct State {
    echo_path: String,
    ws_config: WebSocketConfig,
    queue_messages: usize,
    topics: Mutex<HashMap<String, HashMap<u64, Member>>>,
    next_conn_id: AtomicU64,
    dropped_messages: AtomicU64,
}

impl State {
    /// Encodes the frame once per serializer version in use and clones it (a refcount bump) into every
    /// member's queue. Returns how many queues accepted it.
    fn broadcast(&self, topic: &str, event: &str, payload: &Value) -> usize {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(members) = topics.get(topic) else {
            return 0;
        };
        let mut v1: Option<Message> = None;
        let mut v2: Option<Message> = None;
        let mut queued = 0;
        for member in members.values() {
            let frame = if member.v2 {
                v2.get_or_insert_with(|| text(phoenix_min::broadcast(true, topic, event, payload)))
            } else {
                v1.get_or_insert_with(|| text(phoenix_min::broadcast(false, topic, event, payload)))
            };
            match member.tx.try_send(frame.clone()) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                // The member's task is gone and will remove itself from the table.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        queued
    }

    fn join(&self, topic: &str, conn_id: u64, member: Member) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(topic.to_owned())
            .or_default()
            .insert(conn_id, member);
    }

    fn leave(&self, topic: &str, conn_id: u64) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = topics.get_mut(topic) {
            members.remove(&conn_id);
            if members.is_empty() {
                topics.remove(topic);
            }
        }
    }
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn main() {
    let args = Args::parse();
    let ws_config = if args.read_buffer_bytes == 0 {
        WebSocketConfig::default()
    } else {
        WebSocketConfig::default()
            .read_buffer_size(args.read_buffer_bytes)
            .write_buffer_size(args.read_buffer_bytes)
    };
    let state = Arc::new(State {
        echo_path: args.echo_path.clone(),
        ws_config,
        queue_messages: args.queue_messages.max(1),
        topics: Mutex::new(HashMap::new()),
        next_conn_id: AtomicU64::new(1),
        dropped_messages: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(args, state.clone()));
    let dropped = state.dropped_messages.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("peer: dropped {dropped} broadcast messages on full queues");
    }
    if let Err(e) = result {
        eprintln!("peer: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args, state: Arc<State>) -> std::io::Result<()> {
    let listener = listen(args.listen, args.backlog)?;
    if let Some(admin_addr) = args.admin_listen {
        let admin = listen(admin_addr, 128)?;
        tokio::spawn(accept_loop(admin, state.clone(), true));
    }
    tokio::select! {
        () = accept_loop(listener, state, false) => Ok(()),
        r = tokio::signal::ctrl_c() => r,
    }
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, admin: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) if admin => {
                tokio::spawn(handle_admin(stream, state.clone()));
            }
            Ok((stream, _)) => {
                tokio::spawn(handle_tcp(stream, state.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                eprintln!("peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// True when the request on `stream` is `GET /healthz`. tungstenite's handshake rejects a plain HTTP
/// request before any callback sees it, so readiness is recognised by peeking at the first bytes.
async fn is_healthz(stream: &TcpStream) -> bool {
    const HEALTHZ: &[u8] = b"GET /healthz";
    let mut head = [0u8; HEALTHZ.len()];
    for _ in 0..100 {
        let Ok(n) = stream.peek(&mut head).await else {
            return false;
        };
        if n == 0 || head[..n] != HEALTHZ[..n] {
            return false;
        }
        if n == HEALTHZ.len() {
            return true;
        }
        // A prefix arrived in a short segment: wait for the rest instead of spinning on peek.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

// The handshake callback's error type is tungstenite's `ErrorResponse`: not ours to shrink.
#[allow(clippy::result_large_err)]
async fn handle_tcp(mut stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    if is_healthz(&stream).await {
        let _ = read_http_request(&mut stream).await;
        let _ = write_http(&mut stream, 200, "OK", "ok").await;
        return;
    }
    let mut route = Route::NotFound;
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        route = route_of(request, &state.echo_path);
        match route {
            Route::NotFound => Err(status_response(StatusCode::NOT_FOUND)),
            _ => Ok(response),
        }
    };
    let config = Some(state.ws_config);
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, config).await
    else {
        return;
    };
    match route {
        Route::Echo => echo(ws).await,
        Route::Phoenix { v2 } => phoenix(ws, v2, state).await,
        Route::NotFound => {}
    }
}

fn route_of(request: &Request, echo_path: &str) -> Route {
    let uri = request.uri();
    if uri.path() == echo_path {
        return Route::Echo;
    }
    if uri.path() != "/socket/websocket" {
        return Route::NotFound;
    }
    let vsn = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("vsn="));
    match vsn {
        None | Some("1.0.0") => Route::Phoenix { v2: false },
        Some("2.0.0") => Route::Phoenix { v2: true },
        // Phoenix answers an unknown serializer version with 403; so would a careful peer, but the
        // benches never send one, so "not found" is enough here.
        Some(_) => Route::NotFound,
    }
}

fn status_response(status: StatusCode) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    response
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Ping → pong and close → close reply are queued by tungstenite and written on the next poll.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Per-connection Phoenix state (the shared rules) and the outbound queue, created on the first
/// join, so a socket that never joins pays nothing for it.
struct Channels {
    conn_id: u64,
    v2: bool,
    phx: phoenix_min::Channels,
    tx: Option<mpsc::Sender<Message>>,
}

impl Channels {
    /// Applies one client frame; returns the frames to send back to this connection.
    fn handle(
        &mut self,
        msg: Inbound,
        state: &State,
        rx: &mut Option<mpsc::Receiver<Message>>,
    ) -> Vec<Message> {
        let (texts, effect) = self.phx.handle(msg);
        match effect {
            Some(Effect::Join(topic)) => {
                let tx = self.tx.get_or_insert_with(|| {
                    let (tx, new_rx) = mpsc::channel(state.queue_messages);
                    *rx = Some(new_rx);
                    tx
                });
                let member = Member {
                    v2: self.v2,
                    tx: tx.clone(),
                };
                state.join(&topic, self.conn_id, member);
            }
            Some(Effect::Leave(topic)) => state.leave(&topic, self.conn_id),
            Some(Effect::Broadcast(m)) => {
                state.broadcast(&m.topic, &m.event, &m.payload);
            }
            None => {}
        }
        texts.into_iter().map(text).collect()
    }
}

async fn next_outbound(rx: &mut Option<mpsc::Receiver<Message>>) -> Option<Message> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn phoenix(mut ws: WebSocketStream<TcpStream>, v2: bool, state: Arc<State>) {
    let mut channels = Channels {
        conn_id: state.next_conn_id.fetch_add(1, Ordering::Relaxed),
        v2,
        phx: phoenix_min::Channels::new(v2),
        tx: None,
    };
    let mut rx: Option<mpsc::Receiver<Message>> = None;
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let Some(msg) = decode(t.as_bytes(), v2) else { break };
                    let mut failed = false;
                    for out in channels.handle(msg, &state, &mut rx) {
                        failed |= ws.send(out).await.is_err();
                    }
                    if failed {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(out) = next_outbound(&mut rx) => {
                if ws.send(out).await.is_err() {
                    break;
                }
            }
        }
    }
    for topic in channels.phx.topics() {
        state.leave(topic, channels.conn_id);
    }
}

/// Reads one HTTP request (head + Content-Length body) into a buffer; returns (head length, bytes).
async fn read_http_request(stream: &mut TcpStream) -> Option<(usize, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some((head_len, body_len)) = request_lengths(&buf) {
            if head_len + body_len > ADMIN_REQUEST_BYTES_MAX {
                return None;
            }
            if buf.len() >= head_len + body_len {
                buf.truncate(head_len + body_len);
                return Some((head_len, buf));
            }
        }
        if buf.len() > ADMIN_REQUEST_BYTES_MAX {
            return None;
        }
        // Reading into the Vec's spare capacity (and parsing in a plain function) keeps buffers off the
        // connection task's future, which is sized for its largest state.
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// (head length, Content-Length) once the request head in `buf` is complete.
fn request_lengths(buf: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = req.parse(buf).ok()? else {
        return None;
    };
    let body_len = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    Some((head_len, body_len))
}

async fn write_http(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle_admin(mut stream: TcpStream, state: Arc<State>) {
    let Some((head_len, request)) = read_http_request(&mut stream).await else {
        let _ = write_http(
            &mut stream,
            400,
            "Bad Request",
            r#"{"error":"bad request"}"#,
        )
        .await;
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(&request);
    // A failed answer means the admin client left; there is nobody to tell.
    let _ = match (req.method, req.path) {
        (Some("POST"), Some("/api/broadcast")) => {
            let body: Value = serde_json::from_slice(&request[head_len..]).unwrap_or(Value::Null);
            // One broadcast, or an array of them taken in order (as ringgate takes it); all are
            // checked before any is sent.
            let items: Vec<&Value> = match &body {
                Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let valid: Option<Vec<(&str, &str, &Value)>> = items
                .iter()
                .map(|b| Some((b["topic"].as_str()?, b["event"].as_str()?, &b["payload"])))
                .collect();
            match valid {
                Some(valid) if !valid.is_empty() => {
                    let queued: usize = valid
                        .iter()
                        .map(|(topic, event, payload)| state.broadcast(topic, event, payload))
                        .sum();
                    write_http(
                        &mut stream,
                        202,
                        "Accepted",
                        &format!(r#"{{"queued":{queued}}}"#),
                    )
                    .await
                }
                _ => {
                    write_http(
                        &mut stream,
                        400,
                        "Bad Request",
                        r#"{"error":"need topic and event"}"#,
                    )
                    .await
                }
            }
        }
        (Some("GET"), Some("/healthz")) => write_http(&mut stream, 200, "OK", "ok").await,
        _ => write_http(&mut stream, 404, "Not Found", r#"{"error":"not found"}"#).await,
    };
}
