//! `peer_fastwebsockets`: the server a competent Rust team writes with fastwebsockets (hyper for the HTTP
//! side), kept as the second baseline the benches compare ringgate against (same job, same machine, same
//! run). Where `peer_tokio_tungstenite` is the typical server, this one is the fast one: the library the
//! independent harness of issue 12 measured, shaped the way its users are told to use it.
//!
//! - HTTP is hyper's `http1` server with upgrades; `fastwebsockets::upgrade` answers the handshake and
//!   the connection continues as a `WebSocket` over hyper's `Upgraded` stream.
//! - A Phoenix connection is ONE tokio task running two futures joined: a reader over the read half
//!   (fastwebsockets' `split`, with `FragmentCollectorRead` for whole messages) and a writer over the
//!   write half. fastwebsockets' `read_frame` is not cancel-safe (a `select!` that drops it mid-header
//!   loses bytes), so reading and writing cannot share a `select!` loop as tungstenite's stream can.
//! - Every frame for the connection — replies, pongs, the close reply and broadcasts — goes through one
//!   bounded `mpsc` queue that only the writer drains, so frame order is the order of queueing.
//! - fastwebsockets writes each frame straight to its stream (one `write` syscall per frame). The write
//!   half is therefore wrapped in a buffered writer, and the writer takes everything already queued
//!   before it flushes: N frames waiting cost one `write`, not N (the buffer's capacity, 8 KiB like
//!   tokio's `BufWriter`, bounds the bytes per `write`). Unlike `BufWriter`, whose buffer lives as long
//!   as the connection (~4 KiB of RSS per idle connection, measured), this one exists only from the
//!   first queued frame to the flush, so an idle connection keeps no write buffer. Frames go through
//!   fastwebsockets' vectored path (threshold 0), which copies them into that buffer once instead of
//!   first into its own scratch `Vec`.
//! - The topic table is the tokio peer's: a `Mutex<HashMap<topic, HashMap<conn, member>>>`, and a
//!   broadcast encodes its text ONCE per serializer version and hands the shared `Bytes` (a refcount
//!   bump) to every member's queue; a full queue drops the copy and counts it.
//!
//! Endpoints on `--listen`: `GET /healthz` → 200; WebSocket `/echo` (echoes text and binary);
//! WebSocket `/socket/websocket` speaking minimal Phoenix Channels V1 (no `vsn`) and V2 (`vsn=2.0.0`):
//! heartbeat reply, join of `rooms:*` (anything else: "unmatched topic"), leave, and any other event on a
//! joined topic broadcast to every member with `ref` null (the Phoenix chat example's `broadcast!`).
//! `--admin-listen` serves `POST /api/broadcast` with `{"topic","event","payload"}` or an array of them →
//! 202, like ringgate.
//!
//! It also accepts `serve`, `--workers`, `--echo-path` and `--log-level` so a harness trial can start it
//! with ringgate's command line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
#[path = "phoenix_min.rs"]
mod phoenix_min;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketWrite,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use phoenix_min::{decode, Effect, Inbound};
use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Admin request bodies above this are refused: a broadcast payload is small, and the bound keeps a
/// misbehaving client from growing memory.
const ADMIN_REQUEST_BYTES_MAX: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(about = "fastwebsockets baseline peer for the ringgate benches")]
struct Args {
    /// Ignored; lets the harness start the peer with ringgate's `serve` command line.
    mode: Option<String>,
    /// WebSocket + /healthz listener.
    #[arg(long)]
    listen: SocketAddr,
    /// Admin HTTP listener (POST /api/broadcast).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Tokio worker threads (default: one per core on the 2-core bench machine).
    #[arg(long, alias = "workers", default_value_t = 2)]
    threads: usize,
    /// Path of the echo endpoint.
    #[arg(long, default_value = "/echo")]
    echo_path: String,
    /// Accepted for command-line compatibility with ringgate; the peer only prints errors.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Listen backlog. 4096 is this machine's `net.core.somaxconn`; tokio's `TcpListener::bind` uses
    /// 128, which a 256-wide connect burst overflows into 1 s SYN retransmits.
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
    /// Outbound queue bound per connection, in frames. A full queue drops the broadcast for that member
    /// (counted and printed on exit) instead of growing memory without limit; 1024 is the tokio peer's.
    #[arg(long, default_value_t = 1024)]
    queue_messages: usize,
    /// Capacity of each Phoenix connection's write buffer (tokio's `BufWriter` default, 8 KiB): the
    /// most bytes one `write` carries, allocated while frames wait and given back at the flush.
    #[arg(long, default_value_t = 8192)]
    write_buffer_bytes: usize,
}

/// Where an upgrade request goes.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Echo,
    Phoenix { v2: bool },
}

/// One frame waiting in a connection's queue. Broadcast payloads share one allocation across members.
struct Out {
    opcode: OpCode,
    payload: Bytes,
}

impl Out {
    fn text(s: String) -> Out {
        Out {
            opcode: OpCode::Text,
            payload: Bytes::from(s),
        }
    }
}

struct Member {
    v2: bool,
    tx: mpsc::Sender<Out>,
}

/// Shared state of the whole server: the topic table and a few counters.
struct State {
    echo_path: String,
    queue_messages: usize,
    write_buffer_bytes: usize,
    topics: Mutex<HashMap<String, HashMap<u64, Member>>>,
    next_conn_id: AtomicU64,
    dropped_messages: AtomicU64,
}

impl State {
    /// Encodes the frame once per serializer version in use and hands the shared bytes to every
    /// member's queue. Returns how many queues accepted it.
    fn broadcast(&self, topic: &str, event: &str, payload: &Value) -> usize {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(members) = topics.get(topic) else {
            return 0;
        };
        let mut v1: Option<Bytes> = None;
        let mut v2: Option<Bytes> = None;
        let mut queued = 0;
        for member in members.values() {
            let text = if member.v2 {
                v2.get_or_insert_with(|| {
                    Bytes::from(phoenix_min::broadcast(true, topic, event, payload))
                })
            } else {
                v1.get_or_insert_with(|| {
                    Bytes::from(phoenix_min::broadcast(false, topic, event, payload))
                })
            };
            let out = Out {
                opcode: OpCode::Text,
                payload: text.clone(),
            };
            match member.tx.try_send(out) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                // The member's connection is ending and will remove itself from the table.
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

fn main() {
    let args = Args::parse();
    let state = Arc::new(State {
        echo_path: args.echo_path.clone(),
        queue_messages: args.queue_messages.max(1),
        write_buffer_bytes: args.write_buffer_bytes.max(1),
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
            Ok((stream, _)) => {
                tokio::spawn(serve_http(stream, state.clone(), admin));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                eprintln!("peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one HTTP/1.1 connection; an upgrade hands the socket on to a WebSocket task.
async fn serve_http(stream: TcpStream, state: Arc<State>, admin: bool) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let state = state.clone();
        async move {
            let response = if admin {
                handle_admin(request, &state).await
            } else {
                handle_request(request, &state)
            };
            Ok::<_, Infallible>(response)
        }
    });
    // The timer lets hyper enforce its header read timeout (30 s) on a client that never finishes a
    // request head. A connection error means the client left: nobody to tell.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn handle_request(mut request: Request<Incoming>, state: &Arc<State>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/healthz" && request.method() == Method::GET {
        return respond(StatusCode::OK, "ok");
    }
    let Some(route) = route_of(path, request.uri().query(), &state.echo_path) else {
        return respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    };
    if !upgrade::is_upgrade_request(&request) {
        return respond(
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected a WebSocket upgrade"}"#,
        );
    }
    let (response, upgraded) = match upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(_) => return respond(StatusCode::BAD_REQUEST, r#"{"error":"bad upgrade"}"#),
    };
    let state = state.clone();
    tokio::spawn(async move {
        match route {
            Route::Echo => echo(upgraded).await,
            Route::Phoenix { v2 } => phoenix(upgraded, v2, state).await,
        }
    });
    response.map(|_| Full::default())
}

fn route_of(path: &str, query: Option<&str>, echo_path: &str) -> Option<Route> {
    if path == echo_path {
        return Some(Route::Echo);
    }
    if path != "/socket/websocket" {
        return None;
    }
    let vsn = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("vsn="));
    match vsn {
        None | Some("1.0.0") => Some(Route::Phoenix { v2: false }),
        Some("2.0.0") => Some(Route::Phoenix { v2: true }),
        // Phoenix answers an unknown serializer version with 403; so would a careful peer, but the
        // benches never send one, so "not found" is enough here.
        Some(_) => None,
    }
}

/// Echo: one message in, one out, so there is nothing to batch; fastwebsockets' own unbuffered writes
/// and its automatic pong and close replies serve as they are.
async fn echo(upgraded: UpgradeFut) {
    let Ok(ws) = upgraded.await else { return };
    let mut ws = FragmentCollector::new(ws);
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        let done = match frame.opcode {
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await.is_err(),
            OpCode::Close => true,
            _ => false,
        };
        if done {
            return;
        }
    }
}

/// Per-connection Phoenix state (the shared rules), owned by the reader.
struct Channels {
    conn_id: u64,
    v2: bool,
    phx: phoenix_min::Channels,
}

impl Channels {
    /// Applies one client frame; returns the frames to send back to this connection.
    fn handle(&mut self, msg: Inbound, state: &State, tx: &mpsc::Sender<Out>) -> Vec<Out> {
        let (texts, effect) = self.phx.handle(msg);
        match effect {
            Some(Effect::Join(topic)) => {
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
        texts.into_iter().map(Out::text).collect()
    }
}

async fn phoenix(upgraded: UpgradeFut, v2: bool, state: Arc<State>) {
    let Ok(ws) = upgraded.await else { return };
    let capacity = state.write_buffer_bytes;
    let (reader, mut writer) = ws.split(|stream| {
        let (read, write) = tokio::io::split(stream);
        (read, CorkedWriter::new(write, capacity))
    });
    // Every frame is copied once, into the write buffer, by fastwebsockets' vectored path.
    writer.set_writev(true);
    writer.set_writev_threshold(0);
    let (tx, rx) = mpsc::channel(state.queue_messages);
    let conn_id = state.next_conn_id.fetch_add(1, Ordering::Relaxed);
    // The reader ends on close, error or EOF and then drops every sender (its own and the topic
    // table's), which lets the writer finish what is queued and end too.
    tokio::join!(
        read_loop(FragmentCollectorRead::new(reader), v2, conn_id, &state, tx),
        write_loop(writer, rx)
    );
}

async fn read_loop<S>(
    mut reader: FragmentCollectorRead<S>,
    v2: bool,
    conn_id: u64,
    state: &State,
    tx: mpsc::Sender<Out>,
) where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut channels = Channels {
        conn_id,
        v2,
        phx: phoenix_min::Channels::new(v2),
    };
    // Pongs and the close reply that fastwebsockets owes the client join the same queue as everything
    // else, so they go out in order with it.
    let mut obligated = |frame: Frame<'_>| {
        let out = Out {
            opcode: frame.opcode,
            payload: Bytes::copy_from_slice(&frame.payload),
        };
        let tx = tx.clone();
        async move {
            tx.send(out)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    };
    loop {
        // An error (protocol violation, EOF, a reset) ends the connection as a close does.
        let Ok(frame) = reader.read_frame(&mut obligated).await else {
            break;
        };
        match frame.opcode {
            OpCode::Text => {
                let Some(msg) = decode(&frame.payload, v2) else {
                    break;
                };
                let mut failed = false;
                for out in channels.handle(msg, state, &tx) {
                    failed |= tx.send(out).await.is_err();
                }
                if failed {
                    break;
                }
            }
            OpCode::Close => break,
            _ => {}
        }
    }
    for topic in channels.phx.topics() {
        state.leave(topic, conn_id);
    }
}

/// Takes one frame, then everything queued behind it, into the buffer, and flushes once.
async fn write_loop<S>(mut writer: WebSocketWrite<CorkedWriter<S>>, mut rx: mpsc::Receiver<Out>)
where
    S: AsyncWrite + Unpin,
{
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            let closing = out.opcode == OpCode::Close;
            let frame = Frame::new(true, out.opcode, None, Payload::Borrowed(&out.payload));
            if writer.write_frame(frame).await.is_err() {
                return;
            }
            if closing {
                // Nothing may follow the close reply; send what is buffered and stop.
                let _ = writer.flush().await;
                return;
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

/// A buffered writer whose buffer exists only while bytes wait for a flush: it is allocated (at the
/// capacity) by the first write after a flush and freed when the flush has written it out. Writes that
/// would overflow it flush it first; a write as large as the capacity goes straight through.
struct CorkedWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` the inner writer has taken (a flush can be interrupted by `Pending`).
    written: usize,
    capacity: usize,
}

impl<W: AsyncWrite + Unpin> CorkedWriter<W> {
    fn new(inner: W, capacity: usize) -> CorkedWriter<W> {
        CorkedWriter {
            inner,
            buf: Vec::new(),
            written: 0,
            capacity,
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn append(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.capacity);
        }
        self.buf.extend_from_slice(data);
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CorkedWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() + data.len() > this.capacity {
            ready!(this.poll_write_out(cx))?;
        }
        if data.len() >= this.capacity {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if this.buf.len() + total > this.capacity {
            ready!(this.poll_write_out(cx))?;
        }
        if total >= this.capacity {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.append(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

async fn handle_admin(request: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/api/broadcast") => {
            let body = match Limited::new(request.into_body(), ADMIN_REQUEST_BYTES_MAX)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return respond(StatusCode::BAD_REQUEST, r#"{"error":"bad request"}"#),
            };
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let items = match &body {
                Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            // All or nothing: one bad item refuses the whole request before anything is sent.
            let Some(broadcasts) = items
                .into_iter()
                .map(|one| {
                    Some((
                        one["topic"].as_str()?,
                        one["event"].as_str()?,
                        &one["payload"],
                    ))
                })
                .collect::<Option<Vec<_>>>()
            else {
                return respond(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"need topic and event"}"#,
                );
            };
            let queued: usize = broadcasts
                .into_iter()
                .map(|(topic, event, payload)| state.broadcast(topic, event, payload))
                .sum();
            let mut response =
                Response::new(Full::new(Bytes::from(format!(r#"{{"queued":{queued}}}"#))));
            *response.status_mut() = StatusCode::ACCEPTED;
            response
        }
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "ok"),
        _ => respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    }
}
