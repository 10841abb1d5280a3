//! `floor_uring`: the raw io_uring fan-out floor of the broadcast bench — what "deliver one pre-built
//! WebSocket frame to N TCP connections" costs on this box when nothing else is done, measured in the
//! same run as ringgate and the peers so every broadcast figure has its physical limit beside it.
//!
//! What it measures: the send path alone. A broadcast (`POST /api/broadcast` on `--admin-listen`, one
//! object or an array of them) is encoded ONCE per serializer (V1 `{"topic","event","payload","ref":null}`,
//! V2 `[null,null,topic,event,payload]`, one unmasked text frame each) and handed to every ring thread
//! (a channel plus an eventfd the ring has a read armed on). Each ring thread queues the shared frame
//! on every member connection it owns and submits one send per ready connection in batches (fill the
//! SQ, submit, reap), on registered (fixed) descriptors, with `SINGLE_ISSUER` + `DEFER_TASKRUN` like
//! ringgate's workers. At most one send is in flight per connection; frames that arrive meanwhile wait
//! in its queue, in order. Short sends resume where the kernel stopped; a failed send drops the
//! connection. `--send` picks how queued frames leave:
//! - `one`: one `SEND` per frame (the cost per kernel trip through TCP);
//! - `msg`: everything queued at submit time in ONE `SENDMSG`, an iovec over the shared frames;
//! - `copy`: everything queued copied into one contiguous per-connection buffer, one `SEND`;
//! - `bundle`: everything queued in one send bundle (`IORING_RECVSEND_BUNDLE`, 6.10) over a
//!   provided-buffer ring of the connection's own (bgid = its slot, one pinned page, registered at
//!   the join), whose entries point at the shared frames. The kernel sends a bundle whole: a short
//!   bundle send is retried inside the kernel like `MSG_WAITALL` (io_uring/net.c, `io_send`), so
//!   this side never resumes one; all its buffers are consumed by the completion.
//!
//! (In `one`, `msg` and `copy` a single queued frame leaves as a plain `SEND` from the shared frame;
//! `bundle` always sends a bundle.)
//!
//! What it leaves out on purpose, so that it stays a floor: it never reads a connection after the
//! join (no heartbeat replies, no close handshake, no idle timeout; the kernel keeps what clients
//! write), keeps no per-connection receive state, parses nothing on the send path, has one topic
//! table per ring with no locking, and no limits beyond a per-connection queue bound. Set-up is
//! deliberately plain and NOT measured: one epoll thread accepts, answers `GET /healthz` (200),
//! upgrades `/socket/websocket` (V1, or V2 with `?vsn=2.0.0`, accept key from tungstenite's
//! `derive_accept_key`), reads the client's `phx_join`, answers the ok reply and hands the socket to
//! a ring thread (round robin), which moves it into its fixed-file table and closes the plain fd (so
//! RLIMIT_NOFILE bounds only sockets being set up). The admin listener is served by the same thread.
//!
//! Command line like the peer's, so the bench harness drives it the same way: `serve` (ignored),
//! `--listen`, `--admin-listen`, `--threads` (alias `--workers`: one ring per thread), `--send`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use io_uring::{opcode, squeue, types, IoUring};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tungstenite::handshake::derive_accept_key;

/// Request heads and bodies on the set-up path above this are refused: the bench's requests are a
/// few hundred bytes, and the bound keeps a confused client from growing memory.
const SETUP_REQUEST_BYTES_MAX: usize = 1 << 20;
/// Accepts taken per listener wake-up before serving the other sockets again.
const ACCEPTS_PER_WAKE_MAX: usize = 256;
/// Entries of a connection's buffer ring in `bundle` mode: the frames one bundle can carry.
const BUNDLE_RING_ENTRIES: u16 = 64;
/// The kernel requires a buffer ring to start on a page: one page per connection.
const BUNDLE_RING_STRIDE_BYTES: usize = 4096;
/// `user_data` of the eventfd read; connection sends carry their fixed-file slot.
const EVENTFD_TOKEN: u64 = u64::MAX;
/// epoll tokens of the two listeners; set-up sockets use their slab key + `SETUP_TOKEN_BASE`.
const LISTEN_TOKEN: u64 = 0;
const ADMIN_TOKEN: u64 = 1;
const SETUP_TOKEN_BASE: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SendMode {
    /// One `SEND` per frame.
    One,
    /// The frames queued at submit time in one `SENDMSG` (iovec over the shared frames).
    Msg,
    /// The frames queued at submit time copied into one buffer, one `SEND`.
    Copy,
    /// The frames queued at submit time in one send bundle (`IORING_RECVSEND_BUNDLE`, 6.10) over a
    /// provided-buffer ring of the connection's own (see `BundleRings`).
    Bundle,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "raw io_uring fan-out floor for the ringgate broadcast bench")]
struct Args {
    /// Ignored; lets the harness start the floor with a `serve` command line.
    mode: Option<String>,
    /// WebSocket + /healthz listener.
    #[arg(long)]
    listen: SocketAddr,
    /// Admin HTTP listener (POST /api/broadcast).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Ring threads; connections are spread over them round robin.
    #[arg(long, alias = "workers", default_value_t = 2)]
    threads: usize,
    /// How queued frames leave: one (SEND per frame), msg (one SENDMSG), copy (one SEND of a copy).
    #[arg(long, value_enum, default_value = "one")]
    send: SendMode,
    /// Listen backlog: this machine's `net.core.somaxconn`, so a 256-wide connect burst never overflows it.
    #[arg(long, default_value_t = 4096)]
    backlog: i32,
    /// Fixed-file slots per ring, i.e. connections per ring thread (RLIMIT_NOFILE bounds one table).
    #[arg(long, default_value_t = 20_000)]
    conns_per_thread_max: u32,
    /// Submission queue entries per ring: one batch of sends per `io_uring_enter`.
    #[arg(long, default_value_t = 4096)]
    sq_entries: u32,
    /// Frames one coalesced send carries at most (`msg`, `copy`); below the kernel's UIO_MAXIOV (1024).
    #[arg(long, default_value_t = 64)]
    frames_per_send_max: usize,
    /// Bytes one coalesced send carries at most (`msg`, `copy`): about what a loopback socket's send
    /// buffer takes at once, so a bigger send would only come back short.
    #[arg(long, default_value_t = 64 * 1024)]
    bytes_per_send_max: usize,
    /// Frames a connection may have queued; past it the connection is dropped (a consumer that far
    /// behind would only grow memory). Far above the bench's bursts.
    #[arg(long, default_value_t = 4096)]
    queue_frames_max: usize,
    /// SO_SNDBUF of every connection (0: the kernel's default). A tiny one forces short sends, to check
    /// that they resume in the right place.
    #[arg(long, default_value_t = 0)]
    send_buffer_bytes: usize,
    /// Accepted for command-line compatibility with ringgate; ignored (the floor serves no echo).
    #[arg(long, default_value = "/echo")]
    echo_path: String,
    /// Accepted for command-line compatibility with ringgate; the floor only prints errors.
    #[arg(long, default_value = "warn")]
    log_level: String,
}

/// A frame encoded once, shared by every ring thread.
type SharedFrame = Arc<[u8]>;
/// The same frame inside one ring thread: a ring-local count, so queueing it on thousands of
/// connections bumps no cache line another thread uses.
type Frame = Rc<SharedFrame>;

/// What the set-up thread tells a ring thread, in order (a connection joined before a broadcast was
/// published is queued before it, so it gets that broadcast).
enum Cmd {
    Conn {
        fd: OwnedFd,
        v2: bool,
        topic: u32,
    },
    Broadcast {
        topic: u32,
        v1: SharedFrame,
        v2: SharedFrame,
    },
}

/// A ring thread's handle as the set-up thread sees it.
struct RingHandle {
    tx: mpsc::Sender<Cmd>,
    eventfd: OwnedFd,
    /// Connections handed over since the last wake-up.
    handed_over: bool,
}

impl RingHandle {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd we own; no memory is retained.
        let n = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n != 8 {
            eprintln!("floor: eventfd write: {}", io::Error::last_os_error());
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> io::Result<()> {
    let mut rings = Vec::new();
    for i in 0..args.threads.max(1) {
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ring_eventfd = eventfd.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let settings = args.clone();
        // The worker is built on its own thread: its connections hold raw pointers and `Rc`s that
        // never cross threads, and `SINGLE_ISSUER` binds the ring to the thread that first submits.
        std::thread::Builder::new()
            .name(format!("floor-ring-{i}"))
            .spawn(move || {
                if let Err(e) =
                    RingWorker::new(&settings, rx, ring_eventfd).and_then(RingWorker::run)
                {
                    eprintln!("floor: ring {i}: {e}");
                    std::process::exit(1);
                }
            })?;
        rings.push(RingHandle {
            tx,
            eventfd,
            handed_over: false,
        });
    }
    let listener = listen(args.listen, args.backlog)?;
    let admin = args.admin_listen.map(|a| listen(a, 128)).transpose()?;
    Setup::new(listener, admin, rings, args.send_buffer_bytes)?.run()
}

fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

// ---------------------------------------------------------------------------------------------------
// Set-up: epoll, plain non-blocking sockets. Not measured by the bench.
// ---------------------------------------------------------------------------------------------------

/// Where a socket being set up is.
enum Phase {
    /// Reading an HTTP request head (and, on the admin listener, its body).
    Request,
    /// Upgraded; reading the client's `phx_join`.
    Join { v2: bool },
}

struct Pending {
    stream: TcpStream,
    admin: bool,
    phase: Phase,
    buf: Vec<u8>,
}

/// What handling a socket's bytes decided.
enum Next {
    Wait,
    Close,
    HandOver { v2: bool, topic: u32 },
}

struct Setup {
    epoll: OwnedFd,
    listener: TcpListener,
    admin: Option<TcpListener>,
    rings: Vec<RingHandle>,
    next_ring: usize,
    pending: slab::Slab<Pending>,
    topics: HashMap<String, u32>,
    send_buffer_bytes: usize,
}

impl Setup {
    fn new(
        listener: TcpListener,
        admin: Option<TcpListener>,
        rings: Vec<RingHandle>,
        send_buffer_bytes: usize,
    ) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked below.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let setup = Setup {
            epoll,
            listener,
            admin,
            rings,
            next_ring: 0,
            pending: slab::Slab::new(),
            topics: HashMap::new(),
            send_buffer_bytes,
        };
        setup.ctl(
            libc::EPOLL_CTL_ADD,
            setup.listener.as_raw_fd(),
            LISTEN_TOKEN,
        )?;
        if let Some(admin) = &setup.admin {
            setup.ctl(libc::EPOLL_CTL_ADD, admin.as_raw_fd(), ADMIN_TOKEN)?;
        }
        Ok(setup)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a live local the kernel only reads during the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            // SAFETY: `events` is a live buffer of `events.len()` entries the kernel fills.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    -1,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in &events[..n as usize] {
                match event.u64 {
                    LISTEN_TOKEN => self.accept(false),
                    ADMIN_TOKEN => self.accept(true),
                    token => self.readable((token - SETUP_TOKEN_BASE) as usize),
                }
            }
            // Rings take their new connections (fixed-file registration) now, once per batch,
            // not inside the next broadcast the bench measures.
            for ring in self.rings.iter_mut().filter(|r| r.handed_over) {
                ring.handed_over = false;
                ring.wake();
            }
        }
    }

    fn accept(&mut self, admin: bool) {
        for _ in 0..ACCEPTS_PER_WAKE_MAX {
            let listener = match (&self.admin, admin) {
                (Some(a), true) => a,
                _ => &self.listener,
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: the next wake-up retries; say so instead of spinning silently.
                    eprintln!("floor: accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if self.send_buffer_bytes > 0 && !admin {
                let _ =
                    socket2::SockRef::from(&stream).set_send_buffer_size(self.send_buffer_bytes);
            }
            let fd = stream.as_raw_fd();
            let key = self.pending.insert(Pending {
                stream,
                admin,
                phase: Phase::Request,
                buf: Vec::new(),
            });
            if self
                .ctl(libc::EPOLL_CTL_ADD, fd, key as u64 + SETUP_TOKEN_BASE)
                .is_err()
            {
                self.pending.remove(key);
            }
        }
    }

    fn readable(&mut self, key: usize) {
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        let mut eof = false;
        let mut chunk = [0u8; 4096];
        loop {
            match p.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
            if p.buf.len() > SETUP_REQUEST_BYTES_MAX {
                eof = true;
                break;
            }
        }
        let next = if eof { Next::Close } else { self.advance(key) };
        match next {
            Next::Wait => {}
            Next::Close => {
                // Dropping the stream closes it, which also takes it out of the epoll set.
                self.pending.remove(key);
            }
            Next::HandOver { v2, topic } => {
                let p = self.pending.remove(key);
                // The ring's fixed-file table will hold the socket after the plain fd is closed; an
                // epoll registration would outlive that close, so it goes first.
                let _ = self.ctl(libc::EPOLL_CTL_DEL, p.stream.as_raw_fd(), 0);
                let fd = OwnedFd::from(p.stream);
                let n = self.rings.len();
                let ring = &mut self.rings[self.next_ring % n];
                self.next_ring += 1;
                ring.handed_over = true;
                // A ring thread that is gone has already ended the process.
                let _ = ring.tx.send(Cmd::Conn { fd, v2, topic });
            }
        }
    }

    /// Handles the bytes a set-up socket has so far.
    fn advance(&mut self, key: usize) -> Next {
        let p = &mut self.pending[key];
        match p.phase {
            Phase::Request => {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                let head_len = match req.parse(&p.buf) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return Next::Wait,
                    Err(_) => return Next::Close,
                };
                let method = req.method.unwrap_or("");
                let target = req.path.unwrap_or("");
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if p.admin {
                    let body_len = header("content-length")
                        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if p.buf.len() < head_len + body_len {
                        return Next::Wait;
                    }
                    let answer = if method == "POST" && target == "/api/broadcast" {
                        let body = p.buf[head_len..head_len + body_len].to_vec();
                        self.broadcast(&body)
                    } else if method == "GET" && target == "/healthz" {
                        http_answer(200, "OK", "ok")
                    } else {
                        http_answer(404, "Not Found", r#"{"error":"not found"}"#)
                    };
                    write_small(&mut self.pending[key].stream, answer.as_bytes());
                    return Next::Close;
                }
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                if method == "GET" && path == "/healthz" {
                    write_small(&mut p.stream, http_answer(200, "OK", "ok").as_bytes());
                    return Next::Close;
                }
                let vsn = query.split('&').find_map(|kv| kv.strip_prefix("vsn="));
                let v2 = match (path, vsn) {
                    ("/socket/websocket", None | Some("1.0.0")) => false,
                    ("/socket/websocket", Some("2.0.0")) => true,
                    _ => {
                        let answer = http_answer(404, "Not Found", r#"{"error":"not found"}"#);
                        write_small(&mut p.stream, answer.as_bytes());
                        return Next::Close;
                    }
                };
                let Some(key_header) = header("sec-websocket-key") else {
                    let answer = http_answer(400, "Bad Request", r#"{"error":"not an upgrade"}"#);
                    write_small(&mut p.stream, answer.as_bytes());
                    return Next::Close;
                };
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key_header)
                );
                if !write_small(&mut p.stream, response.as_bytes()) {
                    return Next::Close;
                }
                p.buf.drain(..head_len);
                p.phase = Phase::Join { v2 };
                self.advance(key)
            }
            Phase::Join { v2 } => {
                let (text, _frame_len) = match parse_client_text(&p.buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Next::Wait,
                    Err(()) => return Next::Close,
                };
                let Some((topic, reply)) = join_and_reply(&text, v2) else {
                    return Next::Close;
                };
                if !write_small(&mut p.stream, &server_text_frame(reply.as_bytes())) {
                    return Next::Close;
                }
                // Whatever the client sent after the join stays unread: the floor never reads again.
                let next_id = self.topics.len() as u32;
                let topic = *self.topics.entry(topic).or_insert(next_id);
                Next::HandOver { v2, topic }
            }
        }
    }

    /// `POST /api/broadcast`: one object or an array of them. Each is encoded once per serializer
    /// and handed to every ring; the rings are woken once, after all of them are queued, so a burst
    /// posted as an array reaches the rings in one drain.
    fn broadcast(&mut self, body: &[u8]) -> String {
        #[derive(Deserialize)]
        struct Publish {
            topic: String,
            event: String,
            payload: Box<RawValue>,
        }
        // Not an untagged enum: serde buffers those, and a buffered `RawValue` does not deserialize.
        let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let parsed = if many {
            serde_json::from_slice::<Vec<Publish>>(body)
        } else {
            serde_json::from_slice::<Publish>(body).map(|p| vec![p])
        };
        let Ok(publishes) = parsed else {
            return http_answer(
                400,
                "Bad Request",
                r#"{"error":"need topic, event and payload"}"#,
            );
        };
        let mut queued = 0;
        for p in &publishes {
            // A topic nobody joined has no members on any ring.
            let Some(&topic) = self.topics.get(&p.topic) else {
                continue;
            };
            let (Ok(t), Ok(e)) = (
                serde_json::to_string(&p.topic),
                serde_json::to_string(&p.event),
            ) else {
                continue;
            };
            let payload = p.payload.get();
            let v1 = format!(r#"{{"topic":{t},"event":{e},"payload":{payload},"ref":null}}"#);
            let v2 = format!(r#"[null,null,{t},{e},{payload}]"#);
            let v1: SharedFrame = server_text_frame(v1.as_bytes()).into();
            let v2: SharedFrame = server_text_frame(v2.as_bytes()).into();
            for ring in &self.rings {
                let _ = ring.tx.send(Cmd::Broadcast {
                    topic,
                    v1: v1.clone(),
                    v2: v2.clone(),
                });
            }
            queued += 1;
        }
        if queued > 0 {
            for ring in &self.rings {
                ring.wake();
            }
        }
        http_answer(202, "Accepted", &format!(r#"{{"queued":{queued}}}"#))
    }
}

fn http_answer(status: u16, reason: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes a set-up answer (a few hundred bytes) on a non-blocking socket whose send buffer is empty
/// at this point, so it goes out whole; false (and the socket gets closed) if it does not.
fn write_small(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(stream.write(bytes), Ok(n) if n == bytes.len())
}

/// One final, unmasked server text frame.
fn server_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// The first client frame in `buf` if complete: its unmasked text and its length on the wire.
/// Err for anything but a final, masked text frame (the join is one).
fn parse_client_text(buf: &[u8]) -> Result<Option<(String, usize)>, ()> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[0] != 0x81 || buf[1] & 0x80 == 0 {
        return Err(());
    }
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().map_err(|_| ())?),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > SETUP_REQUEST_BYTES_MAX as u64 {
        return Err(());
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload: Vec<u8> = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let text = String::from_utf8(payload).map_err(|_| ())?;
    Ok(Some((text, at + len)))
}

/// For a `phx_join`: the topic and the ok reply in the connection's serializer (what Phoenix sends:
/// the join's own `join_ref` and `ref`, payload `{"status":"ok","response":{}}`).
fn join_and_reply(text: &str, v2: bool) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(text).ok()?;
    let (join_ref, msg_ref, topic, event) = if v2 {
        let a = value.as_array()?;
        (a.first()?, a.get(1)?, a.get(2)?.as_str()?, a.get(3)?)
    } else {
        (
            &Value::Null,
            value.get("ref")?,
            value.get("topic")?.as_str()?,
            value.get("event")?,
        )
    };
    if event != "phx_join" {
        return None;
    }
    let ok = serde_json::json!({"status": "ok", "response": {}});
    let reply = if v2 {
        serde_json::json!([join_ref, msg_ref, topic, "phx_reply", ok])
    } else {
        serde_json::json!({"topic": topic, "event": "phx_reply", "payload": ok, "ref": msg_ref})
    };
    Some((topic.to_owned(), reply.to_string()))
}

// ---------------------------------------------------------------------------------------------------
// The send path: one io_uring per thread. This is what the bench measures.
// ---------------------------------------------------------------------------------------------------

/// A member connection, owned by one ring thread and boxed so the `msghdr` and iovec array a
/// `SENDMSG` points to never move while the kernel may read them.
struct Conn {
    topic: u32,
    /// Index in the topic's member list (for O(1) removal).
    member_pos: usize,
    v2: bool,
    /// Frames not yet fully sent, oldest first; `queue[0]` is sent from `head_sent_bytes`.
    queue: VecDeque<Frame>,
    head_sent_bytes: usize,
    /// A send of this connection is with the kernel: the frames it points into are `queue`'s first
    /// ones, which stay queued (alive) until its completion.
    in_flight: bool,
    /// Listed in `RingWorker::ready`.
    listed: bool,
    /// Fell `queue_frames_max` behind while a send was in flight: dropped at its completion (not
    /// before: the kernel may still read the frames), and queued nothing more meanwhile.
    doomed: bool,
    /// `msg`: the iovec array and header of the send in flight.
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    /// `copy`: the bytes of the send in flight.
    copy: Vec<u8>,
    /// `bundle`: how many of `queue`'s first frames are in the connection's buffer ring, and the
    /// ring's tail as this side last published it.
    in_ring: usize,
    ring_tail: u16,
}

/// `bundle` mode: one provided-buffer ring per connection, bgid = fixed-file slot, each on its own
/// page of one mapping (the kernel wants a page-aligned ring). Entries point at the shared frames,
/// so the kernel sends them from where they are; the frames stay queued (alive) until a completion
/// says they were sent. Never unmapped: the kernel may hold a registered ring until the process ends.
struct BundleRings {
    base: *mut u8,
}

impl BundleRings {
    fn new(slots: u32) -> io::Result<Self> {
        let len = slots as usize * BUNDLE_RING_STRIDE_BYTES;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BundleRings { base: base.cast() })
    }

    fn ring(&self, slot: u32) -> *mut types::BufRingEntry {
        // SAFETY: slots are below the `slots` the mapping was made for, so the page is inside it.
        unsafe { self.base.add(slot as usize * BUNDLE_RING_STRIDE_BYTES) }.cast()
    }
}

struct RingWorker {
    ring: IoUring,
    mode: SendMode,
    rx: mpsc::Receiver<Cmd>,
    eventfd: OwnedFd,
    /// Target of the armed eventfd read; lives as long as the ring (boxed: the worker moves).
    eventfd_buf: Box<u64>,
    /// Indexed by fixed-file slot.
    conns: Vec<Option<Box<Conn>>>,
    free_slots: Vec<u32>,
    /// Members per topic id, as slots.
    topics: HashMap<u32, Vec<u32>>,
    /// Connections with queued frames and no send in flight.
    ready: Vec<u32>,
    slots: u32,
    frames_per_send_max: usize,
    bytes_per_send_max: usize,
    queue_frames_max: usize,
    bundle: Option<BundleRings>,
}

impl RingWorker {
    fn new(args: &Args, rx: mpsc::Receiver<Cmd>, eventfd: OwnedFd) -> io::Result<Self> {
        let slots = args.conns_per_thread_max.max(1);
        // One send in flight per connection plus the eventfd read: the CQ never overflows.
        let cq_entries = (slots + 1)
            .next_power_of_two()
            .clamp(args.sq_entries * 2, 65536);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(cq_entries)
            .build(args.sq_entries)?;
        Ok(RingWorker {
            ring,
            mode: args.send,
            rx,
            eventfd,
            eventfd_buf: Box::new(0),
            conns: Vec::new(),
            free_slots: Vec::new(),
            topics: HashMap::new(),
            ready: Vec::new(),
            slots,
            frames_per_send_max: args.frames_per_send_max.clamp(1, 1024),
            bytes_per_send_max: args.bytes_per_send_max.max(1),
            queue_frames_max: args.queue_frames_max.max(1),
            bundle: None,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let slots = self.slots;
        self.ring.submitter().register_files_sparse(slots)?;
        self.conns.resize_with(slots as usize, || None);
        if self.mode == SendMode::Bundle {
            self.bundle = Some(BundleRings::new(slots)?);
        }
        self.free_slots = (0..slots).rev().collect();
        self.arm_eventfd();
        loop {
            self.submit_ready();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.reap();
        }
    }

    fn arm_eventfd(&mut self) {
        let buf: *mut u64 = &mut *self.eventfd_buf;
        let e = opcode::Read::new(types::Fd(self.eventfd.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(EVENTFD_TOKEN);
        self.push(e);
    }

    /// Pushes an entry, submitting the full SQ first when needed. Every entry pushed here points
    /// into memory that outlives its completion: the boxed eventfd buffer, or a connection's queued
    /// frames / iovec / msghdr / copy buffer, all kept until the send's CQE (see `Conn`).
    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: see the function doc: the memory the entry points to stays alive and unmoved
            // until its completion is reaped.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // Full: hand the batch to the kernel, then there is room.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {
                    self.reap()
                }
                Err(e) => {
                    eprintln!("floor: io_uring submit: {e}");
                    std::process::exit(1);
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return;
            };
            match cqe.user_data() {
                EVENTFD_TOKEN => {
                    self.drain_commands();
                    self.arm_eventfd();
                }
                slot => self.sent(
                    slot as u32,
                    cqe.result(),
                    io_uring::cqueue::more(cqe.flags()),
                ),
            }
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Conn { fd, v2, topic } => self.add_conn(fd, v2, topic),
                Cmd::Broadcast { topic, v1, v2 } => self.broadcast(topic, v1, v2),
            }
        }
    }

    fn add_conn(&mut self, fd: OwnedFd, v2: bool, topic: u32) {
        let Some(slot) = self.free_slots.pop() else {
            eprintln!("floor: fixed-file table full, connection dropped");
            return;
        };
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[fd.as_raw_fd()])
        {
            eprintln!("floor: register fd: {e}");
            self.free_slots.push(slot);
            return;
        }
        // The table holds the socket now; the plain descriptor is not needed.
        drop(fd);
        if let Some(rings) = &self.bundle {
            let ring = rings.ring(slot);
            // SAFETY: the page is this slot's alone and no ring is registered on it (a dropped
            // connection's ring was unregistered): nothing else reads or writes it now.
            unsafe { std::ptr::write_bytes(ring.cast::<u8>(), 0, BUNDLE_RING_STRIDE_BYTES) };
            // SAFETY: the page stays mapped for the process's life (see `BundleRings`) and holds
            // `BUNDLE_RING_ENTRIES` entries.
            let registered = unsafe {
                self.ring.submitter().register_buf_ring_with_flags(
                    ring as u64,
                    BUNDLE_RING_ENTRIES,
                    slot as u16,
                    0,
                )
            };
            if let Err(e) = registered {
                eprintln!("floor: register buffer ring: {e}");
                let _ = self.ring.submitter().register_files_update(slot, &[-1]);
                self.free_slots.push(slot);
                return;
            }
        }
        let members = self.topics.entry(topic).or_default();
        members.push(slot);
        self.conns[slot as usize] = Some(Box::new(Conn {
            topic,
            member_pos: members.len() - 1,
            v2,
            queue: VecDeque::new(),
            head_sent_bytes: 0,
            in_flight: false,
            listed: false,
            doomed: false,
            iov: Vec::new(),
            // SAFETY: msghdr is plain data for which all-zero is the valid empty header.
            msg: unsafe { std::mem::zeroed() },
            copy: Vec::new(),
            in_ring: 0,
            ring_tail: 0,
        }));
    }

    fn broadcast(&mut self, topic: u32, v1: SharedFrame, v2: SharedFrame) {
        // Connections may arrive between broadcasts; the ones already here get this one.
        let Some(members) = self.topics.get(&topic) else {
            return;
        };
        let v1: Frame = Rc::new(v1);
        let v2: Frame = Rc::new(v2);
        let mut too_far_behind = Vec::new();
        for &slot in members {
            let Some(c) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            if c.doomed {
                continue;
            }
            if c.queue.len() >= self.queue_frames_max {
                if c.in_flight {
                    c.doomed = true;
                } else {
                    too_far_behind.push(slot);
                }
                continue;
            }
            c.queue
                .push_back(if c.v2 { v2.clone() } else { v1.clone() });
            if !c.in_flight && !c.listed {
                c.listed = true;
                self.ready.push(slot);
            }
        }
        for slot in too_far_behind {
            self.drop_conn(slot);
        }
    }

    /// Fills the SQ with one send per ready connection, submitting whenever it is full; the rest
    /// goes with the caller's `submit_and_wait`.
    fn submit_ready(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        for &slot in &ready {
            let Some(c) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            c.listed = false;
            if c.in_flight || c.queue.is_empty() {
                continue;
            }
            let e = match &self.bundle {
                Some(rings) => build_bundle(c, slot, rings.ring(slot)),
                None => build_send(
                    c,
                    slot,
                    self.mode,
                    self.frames_per_send_max,
                    self.bytes_per_send_max,
                ),
            };
            c.in_flight = true;
            self.push(e);
        }
        // Give the list's capacity back for the next round (completions reaped in `push` may have
        // listed connections meanwhile).
        let mut ready = ready;
        ready.clear();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    /// A send completed: account the bytes against the queue, list the connection again if more
    /// is queued, drop it on error. `more`: a bundle send goes on (another completion will come).
    fn sent(&mut self, slot: u32, res: i32, more: bool) {
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return;
        };
        c.in_flight = more;
        c.copy.clear();
        if res <= 0 && more {
            return;
        }
        if res <= 0 || (c.doomed && !more) {
            // EPIPE, ECONNRESET, ...: the client is gone (a 0-byte send of a non-empty buffer too);
            // or it fell too far behind (see `Conn::doomed`).
            self.drop_conn(slot);
            return;
        }
        let mut sent = res as usize;
        while sent > 0 {
            let Some(front) = c.queue.front() else {
                break;
            };
            let left = front.len() - c.head_sent_bytes;
            if sent >= left {
                sent -= left;
                c.queue.pop_front();
                c.head_sent_bytes = 0;
                c.in_ring = c.in_ring.saturating_sub(1);
            } else {
                c.head_sent_bytes += sent;
                sent = 0;
            }
        }
        if !c.in_flight && !c.queue.is_empty() && !c.listed {
            c.listed = true;
            self.ready.push(slot);
        }
    }

    /// Forgets a connection with no send in flight and closes its socket.
    fn drop_conn(&mut self, slot: u32) {
        let Some(c) = self.conns[slot as usize].take() else {
            return;
        };
        if let Some(members) = self.topics.get_mut(&c.topic) {
            members.swap_remove(c.member_pos);
            if let Some(&moved) = members.get(c.member_pos) {
                if let Some(m) = self.conns[moved as usize].as_mut() {
                    m.member_pos = c.member_pos;
                }
            }
        }
        if self.bundle.is_some() {
            if let Err(e) = self.ring.submitter().unregister_buf_ring(slot as u16) {
                eprintln!("floor: unregister buffer ring: {e}");
            }
        }
        // Emptying the slot drops the table's reference: the socket closes.
        if let Err(e) = self.ring.submitter().register_files_update(slot, &[-1]) {
            eprintln!("floor: unregister fd: {e}");
            return;
        }
        self.free_slots.push(slot);
    }
}

/// The send for a connection's queued frames, per mode. The entry points into `c`'s queued frames
/// (and, for `msg`, `c.iov`/`c.msg`; for `copy`, `c.copy`), which stay untouched until its CQE.
fn build_send(
    c: &mut Conn,
    slot: u32,
    mode: SendMode,
    frames_max: usize,
    bytes_max: usize,
) -> squeue::Entry {
    let fd = types::Fixed(slot);
    let flags = libc::MSG_NOSIGNAL;
    let head = &c.queue[0][c.head_sent_bytes..];
    let entry = if mode == SendMode::One || c.queue.len() == 1 {
        opcode::Send::new(fd, head.as_ptr(), head.len() as u32)
            .flags(flags)
            .build()
    } else if mode == SendMode::Msg {
        c.iov.clear();
        let mut bytes = 0;
        for (i, frame) in c.queue.iter().enumerate().take(frames_max) {
            let part = if i == 0 {
                &frame[c.head_sent_bytes..]
            } else {
                &frame[..]
            };
            if i > 0 && bytes + part.len() > bytes_max {
                break;
            }
            bytes += part.len();
            c.iov.push(libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
        }
        c.msg.msg_iov = c.iov.as_mut_ptr();
        c.msg.msg_iovlen = c.iov.len();
        opcode::SendMsg::new(fd, &c.msg).flags(flags as u32).build()
    } else {
        c.copy.clear();
        for (i, frame) in c.queue.iter().enumerate().take(frames_max) {
            let part = if i == 0 {
                &frame[c.head_sent_bytes..]
            } else {
                &frame[..]
            };
            if i > 0 && c.copy.len() + part.len() > bytes_max {
                break;
            }
            c.copy.extend_from_slice(part);
        }
        opcode::Send::new(fd, c.copy.as_ptr(), c.copy.len() as u32)
            .flags(flags)
            .build()
    };
    entry.user_data(u64::from(slot))
}

/// `bundle`: publishes the queued frames not yet in the connection's buffer ring (as many as fit)
/// and returns the bundle send over the ring. The entries point into `c`'s queued frames, which stay
/// queued until a completion says they were sent.
fn build_bundle(c: &mut Conn, slot: u32, ring: *mut types::BufRingEntry) -> squeue::Entry {
    let mask = BUNDLE_RING_ENTRIES - 1;
    while c.in_ring < c.queue.len() && c.in_ring < usize::from(BUNDLE_RING_ENTRIES) {
        let frame = &c.queue[c.in_ring];
        // Every frame of a completed bundle is sent (see the module doc), so the first frame put
        // in an empty ring was not sent at all; `head_sent_bytes` is then 0, kept for clarity.
        let part = if c.in_ring == 0 {
            &frame[c.head_sent_bytes..]
        } else {
            &frame[..]
        };
        let index = c.ring_tail & mask;
        // SAFETY: `index` < BUNDLE_RING_ENTRIES, inside this slot's page; the kernel reads an entry
        // only once the tail below covers it, and this one is not covered yet (at most
        // BUNDLE_RING_ENTRIES frames are in the ring).
        let entry = unsafe { &mut *ring.add(usize::from(index)) };
        entry.set_addr(part.as_ptr() as u64);
        entry.set_len(part.len() as u32);
        entry.set_bid(index);
        c.ring_tail = c.ring_tail.wrapping_add(1);
        c.in_ring += 1;
    }
    // SAFETY: `ring` is the first entry of a registered ring, whose `resv` field is the tail; the
    // kernel reads it concurrently, so it is written atomically (release: the entries first).
    let tail = unsafe { &*types::BufRingEntry::tail(ring).cast::<std::sync::atomic::AtomicU16>() };
    tail.store(c.ring_tail, std::sync::atomic::Ordering::Release);
    opcode::SendBundle::new(types::Fixed(slot), slot as u16)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(u64::from(slot))
}
