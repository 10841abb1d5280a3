//! One client connection of a client child: connect from a cycling source address, upgrade, optionally
//! join `rooms:lobby` (Phoenix V1 or V2) and wait for the ok reply, then sit idle and timestamp every
//! broadcast that arrives.
//!
//! Two implementations, chosen per run with `--client-impl`:
//! - `raw` (default): hand-rolled over a tokio `TcpStream`. While idle a connection owns its socket, a
//!   task and an empty `Vec`; it reads into a stack buffer only when the socket is readable.
//! - `tungstenite`: tokio-tungstenite's client with small buffers, kept to compare the two costs.
//!
//! Receipts are kept in one preallocated table per process (`Receipts`), indexed by connection and
//! broadcast slot, so recording a receipt allocates nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::clock::mono_ns;
use super::wsframe::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The topic every subscriber joins: the seed scenario's.
pub const TOPIC: &str = "rooms:lobby";
/// Time one connection gets for connect + upgrade + join; a server that takes longer counts it failed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// tokio-tungstenite client read buffer: the broadcasts are small; the default 128 KiB would make the
/// client, not the server, dominate the machine's memory.
const TUNGSTENITE_CLIENT_BUFFER_BYTES: usize = 1024;

/// Whether a connection joins a channel after the upgrade, and with which serializer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JoinMode {
    None,
    V1,
    V2,
}

impl JoinMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(JoinMode::None),
            "v1" => Ok(JoinMode::V1),
            "v2" => Ok(JoinMode::V2),
            _ => Err(format!("join mode {s:?}: expected none, v1 or v2")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JoinMode::None => "none",
            JoinMode::V1 => "v1",
            JoinMode::V2 => "v2",
        }
    }

    /// `Some(v2)` when the connection joins.
    fn serializer_v2(self) -> Option<bool> {
        match self {
            JoinMode::None => None,
            JoinMode::V1 => Some(false),
            JoinMode::V2 => Some(true),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClientImpl {
    Raw,
    Tungstenite,
}

impl ClientImpl {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(ClientImpl::Raw),
            "tungstenite" => Ok(ClientImpl::Tungstenite),
            _ => Err(format!("client impl {s:?}: expected raw or tungstenite")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientImpl::Raw => "raw",
            ClientImpl::Tungstenite => "tungstenite",
        }
    }
}

/// What every connection of one client process does.
#[derive(Clone, Debug)]
pub struct ConnSpec {
    pub server: SocketAddr,
    /// Path and query, e.g. `/echo` or `/socket/websocket?vsn=2.0.0`.
    pub path: String,
    pub join: JoinMode,
    pub imp: ClientImpl,
    /// Added to the connection index to pick its source address, so processes spread differently.
    pub src_offset: usize,
    /// Topics the connections spread over: 1 joins every connection to `TOPIC`; more joins
    /// connection `i` to `topic_name(i + topic_offset, topics)`.
    pub topics: usize,
    /// Added to the connection index to pick its topic: a process's first connection index in the
    /// whole run, so the processes together fill every topic evenly.
    pub topic_offset: usize,
}

impl ConnSpec {
    /// The topic connection `idx` of this process joins.
    pub fn topic(&self, idx: usize) -> String {
        topic_name(idx + self.topic_offset, self.topics)
    }
}

/// Topic `i` of `topics`: `TOPIC` when there is one, else `rooms:t<i mod topics>` (every server under
/// test routes `rooms:*` to a broadcast channel).
pub fn topic_name(i: usize, topics: usize) -> String {
    if topics <= 1 {
        TOPIC.to_owned()
    } else {
        format!("rooms:t{}", i % topics)
    }
}

/// Source address of connection `i`: 127.0.0.2 ..= 127.0.0.254, so each address needs at most
/// 1/253 of the connections out of its ~28k ephemeral ports.
pub fn source_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8)
}

/// The V1 join of the seed's Tsung scenario, or its V2 equivalent.
pub fn join_text(v2: bool, topic: &str) -> String {
    if v2 {
        format!(r#"["1","1","{topic}","phx_join",{{"user":"42"}}]"#)
    } else {
        format!(r#"{{"topic":"{topic}","event":"phx_join","payload":{{"user":"42"}},"ref":"1"}}"#)
    }
}

pub fn heartbeat_text(v2: bool) -> &'static str {
    if v2 {
        r#"[null,"hb","phoenix","heartbeat",{}]"#
    } else {
        r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"hb"}"#
    }
}

/// `Some(ok)` when `text` is the reply to the join (ref "1"), `None` for any other message.
pub fn join_reply(text: &str, v2: bool) -> Option<bool> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let (event, msg_ref, payload) = if v2 {
        let arr = value.as_array()?;
        (arr.get(3)?, arr.get(1)?, arr.get(4)?)
    } else {
        (
            value.get("event")?,
            value.get("ref")?,
            value.get("payload")?,
        )
    };
    if event != "phx_reply" || msg_ref != "1" {
        return None;
    }
    Some(payload.get("status").and_then(|s| s.as_str()) == Some("ok"))
}

/// The broadcast sequence number carried in a message as `"seq":N`.
pub fn find_seq(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = text[at..].iter().skip_while(|b| **b == b' ');
    let mut seq: u64 = 0;
    let mut any = false;
    for b in digits.take_while(|b| b.is_ascii_digit()) {
        seq = seq.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(seq)
}

/// Receive times of broadcasts, `[connection][slot]`, slot = seq − base for the current round.
struct Receipts {
    slots: usize,
    base: AtomicU64,
    times_ns: Box<[AtomicU64]>,
    counts: Box<[AtomicUsize]>,
}

/// State shared by all connections of one client process.
pub struct Shared {
    spec: ConnSpec,
    receipts: Receipts,
    conns_max: usize,
    /// Connections open and (if joining) joined.
    pub live: AtomicUsize,
    /// Connections that ended after having been live (closed by the server or broken).
    pub closed: AtomicUsize,
    /// Every raw connection, for keepalives (`Weak`, so a closed connection frees its socket).
    raw_streams: Mutex<Vec<Weak<TcpStream>>>,
    heartbeat_tx: watch::Sender<u64>,
    got_tx: mpsc::UnboundedSender<u64>,
}

impl Shared {
    /// State for up to `conns_max` connections and `slots` broadcasts per round; the receiver yields a
    /// sequence number each time every live connection of this process has received it.
    pub fn new(
        spec: ConnSpec,
        conns_max: usize,
        slots: usize,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<u64>) {
        let (got_tx, got_rx) = mpsc::unbounded_channel();
        let cells = conns_max * slots;
        let shared = Shared {
            spec,
            receipts: Receipts {
                slots,
                base: AtomicU64::new(0),
                times_ns: (0..cells).map(|_| AtomicU64::new(0)).collect(),
                counts: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
            },
            conns_max,
            live: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            raw_streams: Mutex::new(Vec::new()),
            heartbeat_tx: watch::channel(0).0,
            got_tx,
        };
        (Arc::new(shared), got_rx)
    }

    /// Opens connection `idx` (connect, upgrade, join) and leaves it idle in its own task.
    pub async fn open(self: &Arc<Self>, idx: usize) -> Result<(), String> {
        if idx >= self.conns_max {
            return Err(format!(
                "connection {idx} over this process's limit {}",
                self.conns_max
            ));
        }
        let opened = match self.spec.imp {
            ClientImpl::Raw => tokio::time::timeout(OPEN_TIMEOUT, self.open_raw(idx)).await,
            ClientImpl::Tungstenite => {
                tokio::time::timeout(OPEN_TIMEOUT, self.open_tungstenite(idx)).await
            }
        };
        opened.unwrap_or_else(|_| Err(format!("open timed out after {} s", OPEN_TIMEOUT.as_secs())))
    }

    /// Sends one keepalive on every connection: a Phoenix heartbeat on joined ones, an empty ping on
    /// plain ones (servers such as ringgate close a connection that sent nothing for 60 s). Returns how
    /// many were written.
    pub fn heartbeat(&self) -> usize {
        match self.spec.imp {
            ClientImpl::Raw => {
                let mask = [7, 3, 5, 1];
                let frame = match self.spec.join.serializer_v2() {
                    Some(v2) => wsframe::client_frame(OP_TEXT, heartbeat_text(v2).as_bytes(), mask),
                    None => wsframe::client_frame(OP_PING, &[], mask),
                };
                let streams = self.raw_streams.lock().unwrap_or_else(|e| e.into_inner());
                let written = streams
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| matches!(s.try_write(&frame), Ok(n) if n == frame.len()))
                    .count();
                written
            }
            ClientImpl::Tungstenite => {
                self.heartbeat_tx.send_modify(|n| *n += 1);
                self.live.load(Ordering::Relaxed)
            }
        }
    }

    /// Starts a round of broadcasts numbered `base ..`: forgets previous receipts.
    pub fn reset(&self, base: u64) {
        self.receipts.base.store(base, Ordering::SeqCst);
        for t in self.receipts.times_ns.iter() {
            t.store(0, Ordering::Relaxed);
        }
        for c in self.receipts.counts.iter() {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Receive times per slot of the current round, over connections `0..conns`.
    pub fn collect(&self, conns: usize) -> Vec<Vec<u64>> {
        let r = &self.receipts;
        (0..r.slots)
            .map(|slot| {
                (0..conns.min(self.conns_max))
                    .map(|c| r.times_ns[c * r.slots + slot].load(Ordering::Relaxed))
                    .filter(|t| *t != 0)
                    .collect()
            })
            .collect()
    }

    fn record(&self, idx: usize, text: &[u8], now_ns: u64) {
        let r = &self.receipts;
        let Some(seq) = find_seq(text) else { return };
        let base = r.base.load(Ordering::Relaxed);
        let Some(slot) = seq
            .checked_sub(base)
            .map(|s| s as usize)
            .filter(|s| *s < r.slots)
        else {
            return;
        };
        let cell = &r.times_ns[idx * r.slots + slot];
        if cell
            .compare_exchange(0, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let count = r.counts[slot].fetch_add(1, Ordering::SeqCst) + 1;
            if count == self.live.load(Ordering::SeqCst) {
                let _ = self.got_tx.send(seq);
            }
        }
    }

    fn went_idle(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    fn ended(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.closed.fetch_add(1, Ordering::SeqCst);
    }

    async fn open_raw(self: &Arc<Self>, idx: usize) -> Result<(), String> {
        let mut stream = connect(self.spec.server, source_addr(idx + self.spec.src_offset)).await?;
        let request = wsframe::upgrade_request(self.spec.server, &self.spec.path);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send upgrade: {e}"))?;
        let mut buf = Vec::with_capacity(512);
        let head = loop {
            if let Some(n) = wsframe::head_len(&buf) {
                break n;
            }
            if buf.len() > wsframe::RESPONSE_HEAD_BYTES_MAX {
                return Err("upgrade response head too large".to_owned());
            }
            read_some(&mut stream, &mut buf).await?;
        };
        wsframe::check_upgrade_response(&buf[..head])?;
        buf.drain(..head);
        let mask = (idx as u32).to_le_bytes();
        if let Some(v2) = self.spec.join.serializer_v2() {
            let frame = wsframe::client_frame(
                OP_TEXT,
                join_text(v2, &self.spec.topic(idx)).as_bytes(),
                mask,
            );
            stream
                .write_all(&frame)
                .await
                .map_err(|e| format!("send join: {e}"))?;
            'reply: loop {
                while let Some(frame) = wsframe::parse_server_frame(&buf)? {
                    let payload = &buf[frame.payload.clone()];
                    let reply = (frame.opcode == OP_TEXT)
                        .then(|| join_reply(&String::from_utf8_lossy(payload), v2))
                        .flatten();
                    buf.drain(..frame.len);
                    match reply {
                        Some(true) => break 'reply,
                        Some(false) => return Err("join refused".to_owned()),
                        None => {}
                    }
                }
                read_some(&mut stream, &mut buf).await?;
            }
        }
        let stream = Arc::new(stream);
        {
            let mut streams = self.raw_streams.lock().unwrap_or_else(|e| e.into_inner());
            streams.push(Arc::downgrade(&stream));
        }
        // Whatever followed the reply stays pending; an empty buffer gives its capacity back.
        let pending = if buf.is_empty() { Vec::new() } else { buf };
        self.went_idle();
        tokio::spawn(self.clone().idle_raw(stream, idx, pending));
        Ok(())
    }

    async fn idle_raw(self: Arc<Self>, stream: Arc<TcpStream>, idx: usize, mut pending: Vec<u8>) {
        let mut open = self.on_bytes(&stream, idx, &mut pending, &[], mono_ns());
        while open {
            if stream.readable().await.is_err() {
                break;
            }
            open = {
                // Scoped so the buffer is not part of the idle task's state.
                let mut buf = [0u8; 4096];
                match stream.try_read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => self.on_bytes(&stream, idx, &mut pending, &buf[..n], mono_ns()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    Err(_) => false,
                }
            };
        }
        self.ended();
    }

    /// Handles received bytes; false when the connection is done.
    fn on_bytes(
        &self,
        stream: &TcpStream,
        idx: usize,
        pending: &mut Vec<u8>,
        data: &[u8],
        now_ns: u64,
    ) -> bool {
        if pending.is_empty() {
            let (open, used) = self.on_frames(stream, idx, data, now_ns);
            pending.extend_from_slice(&data[used..]);
            return open;
        }
        pending.extend_from_slice(data);
        let (open, used) = self.on_frames(stream, idx, pending, now_ns);
        pending.drain(..used);
        if pending.is_empty() {
            *pending = Vec::new();
        }
        open
    }

    /// Handles the complete frames at the start of `data`: (still open, bytes consumed).
    fn on_frames(&self, stream: &TcpStream, idx: usize, data: &[u8], now_ns: u64) -> (bool, usize) {
        let mut used = 0;
        loop {
            let frame = match wsframe::parse_server_frame(&data[used..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => return (true, used),
                Err(_) => return (false, used),
            };
            let payload = &data[used..][frame.payload.clone()];
            used += frame.len;
            match frame.opcode {
                OP_TEXT => self.record(idx, payload, now_ns),
                OP_PING => {
                    let _ =
                        stream.try_write(&wsframe::client_frame(OP_PONG, payload, [1, 2, 3, 4]));
                }
                OP_CLOSE => {
                    let _ = stream.try_write(&wsframe::client_frame(OP_CLOSE, &[], [1, 2, 3, 4]));
                    return (false, used);
                }
                _ => {}
            }
        }
    }

    async fn open_tungstenite(self: &Arc<Self>, idx: usize) -> Result<(), String> {
        let stream = connect(self.spec.server, source_addr(idx + self.spec.src_offset)).await?;
        let url = format!("ws://{}{}", self.spec.server, self.spec.path);
        let config = WebSocketConfig::default()
            .read_buffer_size(TUNGSTENITE_CLIENT_BUFFER_BYTES)
            .write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let v2 = self.spec.join.serializer_v2();
        if let Some(v2) = v2 {
            ws.send(Message::text(join_text(v2, &self.spec.topic(idx))))
                .await
                .map_err(|e| format!("send join: {e}"))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match join_reply(&t, v2) {
                        Some(true) => break,
                        Some(false) => return Err("join refused".to_owned()),
                        None => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("before join reply: {e}")),
                    None => return Err("closed before join reply".to_owned()),
                }
            }
        }
        let mut heartbeats = self.heartbeat_tx.subscribe();
        let shared = self.clone();
        self.went_idle();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => shared.record(idx, t.as_bytes(), mono_ns()),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    changed = heartbeats.changed() => {
                        let keepalive = match v2 {
                            Some(v2) => Message::text(heartbeat_text(v2)),
                            None => Message::Ping(Default::default()),
                        };
                        if changed.is_err() || ws.send(keepalive).await.is_err() {
                            break;
                        }
                    }
                }
            }
            shared.ended();
        });
        Ok(())
    }
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 2048];
    match stream.read(&mut chunk).await {
        Ok(0) => Err("closed by server".to_owned()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A TCP connection from `src` to `server`. `IP_BIND_ADDRESS_NO_PORT` defers the port choice to
/// connect(), so ports are unique per 4-tuple instead of per source address.
async fn connect(server: SocketAddr, src: Ipv4Addr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is the live socket owned by `socket`; the option value points to a c_int
    // that outlives the call, and the length passed is its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "IP_BIND_ADDRESS_NO_PORT: {}",
            std::io::Error::last_os_error()
        ));
    }
    socket
        .bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect from {src}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    Ok(stream)
}
