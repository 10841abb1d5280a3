//! Hostile clients over real sockets against a real gateway: protocol violations, garbage before
//! the handshake, slowloris, a thousand half-open handshakes, a message flood, a subscriber that
//! never reads. Each gets its exact close code or HTTP status (or, for stalled handshakes, a
//! silent drop at `handshake_timeout_ms`).
//!
//! While each scenario runs, a [`Watch`] is on: well-behaved Phoenix clients (V2, joined to
//! `rooms:lobby`) must receive every broadcast published through the admin API meanwhile, in
//! order and with none lost. That is the point of the suite: whatever one client does, every
//! other connection stays healthy.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::aio::{admin_get, admin_post, next_json};
use common::{Gateway, RawClient, UPGRADE};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SPECTATORS: usize = 20;
const LOBBY: &str = "rooms:lobby";
const PHOENIX_V2: &str = "/socket/websocket?vsn=2.0.0";
/// How long a spectator or a hostile client may wait for something it is owed.
const PATIENCE: Duration = Duration::from_secs(20);

type Ws<S> = WebSocketStream<S>;
type Client = Ws<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn gateway(extra: &[&str]) -> Gateway {
    let mut args = vec!["--echo-path", "/echo", "--workers", "2"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

// ------------------------------------------------------------------ Phoenix clients

async fn connect_v2(gw: &Gateway) -> Client {
    tokio_tungstenite::connect_async(gw.url(PHOENIX_V2))
        .await
        .expect("connect")
        .0
}

/// Joins `topic` (V2) and waits for the ok reply.
async fn join<S>(ws: &mut Ws<S>, topic: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let msg = json!(["1", "1", topic, "phx_join", {}]).to_string();
    ws.send(Message::text(msg)).await.unwrap();
    let reply = next_json(ws, PATIENCE).await;
    assert_eq!(reply[3], "phx_reply", "{reply}");
    assert_eq!(reply[4]["status"], "ok", "{reply}");
}

async fn subscribers(admin: SocketAddr, topic: &str) -> u64 {
    let v = admin_get(admin, &format!("/api/topics/{topic}")).await;
    v["subscribers"].as_u64().unwrap()
}

// ------------------------------------------------------------------ the watch

/// Well-behaved clients plus a publisher, running alongside a hostile scenario.
struct Watch {
    stop: Arc<AtomicBool>,
    publisher: JoinHandle<u64>,
    total: watch::Sender<Option<u64>>,
    spectators: Vec<JoinHandle<Result<u64, String>>>,
}

impl Watch {
    /// Joins the spectators to `rooms:lobby`, then publishes a tick `{"n": N, "pad": ...}`
    /// every `interval` until [`Watch::finish`].
    async fn start(gw: &Gateway, interval: Duration, pad_bytes: usize) -> Self {
        let (total, total_rx) = watch::channel(None);
        let mut spectators = Vec::new();
        for _ in 0..SPECTATORS {
            let mut ws = connect_v2(gw).await;
            join(&mut ws, LOBBY).await;
            spectators.push(tokio::spawn(spectate(ws, total_rx.clone())));
        }
        assert_eq!(subscribers(gw.admin, LOBBY).await, SPECTATORS as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn(publish(gw.admin, stop.clone(), interval, pad_bytes));
        // Let broadcasts flow before the scenario starts.
        tokio::time::sleep(interval * 5).await;
        Watch {
            stop,
            publisher,
            total,
            spectators,
        }
    }

    /// Stops publishing (after a few more ticks, so the gateway is seen serving after the
    /// scenario too); every spectator must have received every tick, in order.
    async fn finish(self) -> u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.store(true, Ordering::Relaxed);
        let total = self.publisher.await.expect("publisher");
        assert!(
            total >= 5,
            "only {total} broadcasts: the scenario was not watched"
        );
        // Spectators that already failed have hung up; their results say why.
        let _ = self.total.send(Some(total));
        for (i, s) in self.spectators.into_iter().enumerate() {
            let got = tokio::time::timeout(PATIENCE, s)
                .await
                .unwrap_or_else(|_| panic!("spectator {i} did not get all {total} ticks in time"))
                .expect("spectator task");
            assert_eq!(got, Ok(total), "spectator {i}");
        }
        total
    }
}

async fn publish(admin: SocketAddr, stop: Arc<AtomicBool>, interval: Duration, pad: usize) -> u64 {
    let pad = "p".repeat(pad);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"topic": LOBBY, "event": "tick", "payload": {"n": n, "pad": pad}});
        let (status, resp) = admin_post(admin, "/api/broadcast", &body.to_string()).await;
        assert_eq!(status, 202, "{resp}");
        // No spectator was ever dropped from the topic.
        let reached: Value = serde_json::from_str(&resp).unwrap();
        assert!(
            reached["subscribers"].as_u64().unwrap() >= SPECTATORS as u64,
            "{resp}"
        );
        n += 1;
        tokio::time::sleep(interval).await;
    }
    n
}

/// Reads ticks until told the total; a gap, a reorder or a closed stream is an error. Sends a
/// heartbeat now and then, as phoenix.js does, so the idle timeout never applies.
async fn spectate<S>(mut ws: Ws<S>, mut total: watch::Receiver<Option<u64>>) -> Result<u64, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut next = 0u64;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    let mut hb_ref = 0u64;
    loop {
        if *total.borrow() == Some(next) {
            return Ok(next);
        }
        tokio::select! {
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    other => return Err(format!("stream ended after {next} ticks: {other:?}")),
                };
                let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                if v[3] == "tick" {
                    let n = v[4]["n"].as_u64().ok_or_else(|| format!("no n: {text:.80}"))?;
                    if n != next {
                        return Err(format!("expected tick {next}, got {n}"));
                    }
                    next += 1;
                }
            }
            _ = heartbeat.tick() => {
                hb_ref += 1;
                let hb = json!([null, format!("hb{hb_ref}"), "phoenix", "heartbeat", {}]);
                ws.send(Message::text(hb.to_string())).await.map_err(|e| e.to_string())?;
            }
            _ = total.changed() => {}
        }
    }
}

// ------------------------------------------------------------------ raw helpers

/// A masked client frame with any first byte (RSV bits, opcode, FIN as given).
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let key = [0x11, 0x22, 0x33, 0x44];
    ringgate::ws::frame::write_header(&mut out, false, 0, Some(key), payload.len());
    out[0] = b0;
    let start = out.len();
    out.extend_from_slice(payload);
    ringgate::ws::mask::apply_mask(&mut out[start..], key, 0);
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Reads until EOF or reset: whether the peer dropped the connection, and when.
fn closed_by_peer(r: std::io::Result<usize>) -> bool {
    match r {
        Ok(0) => true,
        Ok(n) => panic!("expected no response, got {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read: {e}"),
    }
}

// ------------------------------------------------------------------ scenarios

/// A masked frame as a client sends it.
fn cf(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked(if fin { 0x80 } else { 0 } | opcode, payload)
}

/// Expected close codes, short enough to keep the case table one line per case.
const C1002: Option<u16> = Some(1002);
const C1007: Option<u16> = Some(1007);
const C1008: Option<u16> = Some(1008);
const C1009: Option<u16> = Some(1009);

/// The frame-level cases: what a hostile client sends right after its upgrade on `path`, and
/// the close code it must get (`None`: an empty close).
fn violation_cases() -> Vec<(String, &'static str, Vec<u8>, Option<u16>)> {
    let mut cases = Vec::new();
    let mut case = |name: &str, path: &'static str, bytes: Vec<u8>, code: Option<u16>| {
        cases.push((name.to_owned(), path, bytes, code));
    };
    let (echo, v1, v2) = ("/echo", "/socket/websocket", PHOENIX_V2);
    for path in [echo, v2] {
        case("unmasked text", path, vec![0x81, 2, b'h', b'i'], C1002);
        case("unmasked close", path, vec![0x88, 2, 3, 0xE8], C1002);
        case("invalid UTF-8", path, cf(true, 1, &[0xC3, 0x28]), C1007);
        case("overlong UTF-8", path, cf(true, 1, &[0xC0, 0x80]), C1007);
        case("surrogate", path, cf(true, 1, &[0xED, 0xA0, 0x80]), C1007);
        case("oversized frame", path, cf(true, 2, &[7; 4097]), C1009);
    }
    case(
        "2^40 bytes declared",
        echo,
        masked_header(0x82, 1 << 40),
        C1009,
    );
    case("length top bit", echo, masked_header(0x82, 1 << 63), C1002);
    let big = [
        cf(false, 2, &[1; 4000]),
        cf(false, 0, &[1; 4000]),
        cf(true, 0, &[1; 400]),
    ];
    case("oversized message", echo, big.concat(), C1009);
    let mut many = cf(false, 1, b"a");
    for _ in 0..8 {
        many.extend(cf(false, 0, b"a"));
    }
    case("too many fragments", echo, many, C1009);
    let split = [cf(false, 1, &[0xE2, 0x82]), cf(true, 0, &[0x28])].concat();
    case("UTF-8 broken across fragments", echo, split, C1007);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let close = cf(true, 8, &close_payload(code, b""));
        case(&format!("close code {code}"), echo, close, C1002);
    }
    case("close of one byte", echo, cf(true, 8, &[3]), C1002);
    let bad_reason = cf(true, 8, &close_payload(1000, &[0xFF, 0xFE]));
    case("close reason not UTF-8", echo, bad_reason, C1007);
    for (name, opcode) in [("ping", 9u8), ("pong", 10), ("close", 8)] {
        let mut p = close_payload(1000, b"");
        p.resize(126, b'a');
        let too_long = cf(true, opcode, &p);
        case(&format!("{name} of 126 bytes"), echo, too_long, C1002);
        let long = masked_header(0x80 | opcode, 5);
        case(&format!("{name}, 64-bit length"), echo, long, C1002);
        let fragment = cf(false, opcode, b"");
        case(&format!("fragmented {name}"), echo, fragment, C1002);
    }
    for opcode in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        let frame = cf(true, opcode, b"x");
        case(&format!("reserved opcode {opcode}"), echo, frame, C1002);
    }
    for (bit, rsv) in [(1, 0x40u8), (2, 0x20), (3, 0x10)] {
        case(&format!("RSV{bit}"), echo, masked(0x81 | rsv, b"x"), C1002);
    }
    case("bare continuation", echo, cf(true, 0, b"x"), C1002);
    let interleaved = [cf(false, 1, b"a"), cf(true, 2, b"b")].concat();
    case("interleaved message", echo, interleaved, C1002);
    // Phoenix-level garbage in valid WebSocket frames.
    case("V2 text not an array", v2, cf(true, 1, b"hello"), C1008);
    case("V2 binary kind 7", v2, cf(true, 2, &[7, 0, 0, 0, 0]), C1008);
    case("V2 binary truncated", v2, cf(true, 2, &[0, 9, 9]), C1008);
    case("V1 text not an object", v1, cf(true, 1, b"[1,2]"), C1008);
    let numeric_ref = cf(true, 1, br#"[null,5,"phoenix","heartbeat",{}]"#);
    case("V2 numeric ref", v2, numeric_ref, C1008);
    // Controls: a valid close is echoed with its code, an empty one with an empty close.
    for code in [1000u16, 1003, 1014, 3000, 4999] {
        let close = cf(true, 8, &close_payload(code, b"bye"));
        case(&format!("valid close {code}"), echo, close, Some(code));
    }
    case("empty close", echo, cf(true, 8, b""), None);
    cases
}

/// Every frame-level violation on both endpoints, each with its RFC 6455 close code (or, on
/// the Phoenix endpoint, 1008 for what is not a Phoenix message), then a half-close; valid
/// close codes are echoed.
#[test]
fn protocol_violations_get_exact_close_codes() {
    common::bounded(
        Duration::from_secs(240),
        protocol_violations_get_exact_close_codes_body(),
    );
}

async fn protocol_violations_get_exact_close_codes_body() {
    let gw = gateway(&[
        "--max-frame-bytes",
        "4096",
        "--max-message-bytes",
        "8192",
        "--max-fragments",
        "8",
    ]);
    let watch = Watch::start(&gw, Duration::from_millis(10), 0).await;
    let addr = gw.addr;
    let results = tokio::task::spawn_blocking(move || {
        let cases = violation_cases();
        assert!(cases.len() > 60, "{}", cases.len());
        cases
            .into_iter()
            .map(|(name, path, bytes, want)| {
                let mut c = RawClient::connect(addr, path);
                c.send_raw(&bytes);
                let got = c.expect_close();
                c.expect_eof();
                (name, got, want)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (name, got, want) in &results {
        assert_eq!(got, want, "{name}");
    }
    watch.finish().await;
}

/// A frame header alone (masked), declaring `len` payload bytes that never come.
fn masked_header(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

/// Bytes that are not an HTTP request get `400 Bad Request` and a closed connection.
#[test]
fn garbage_before_the_handshake_gets_http_400() {
    common::bounded(
        Duration::from_secs(240),
        garbage_before_the_handshake_gets_http_400_body(),
    );
}

async fn garbage_before_the_handshake_gets_http_400_body() {
    let gw = gateway(&[]);
    let watch = Watch::start(&gw, Duration::from_millis(10), 0).await;
    let addr = gw.addr;
    let results = tokio::task::spawn_blocking(move || {
        let garbage: Vec<(&str, Vec<u8>)> = vec![
            (
                "TLS ClientHello",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5e\x1f".to_vec(),
            ),
            ("a WebSocket frame", masked(0x81, b"hello")),
            ("binary noise", (0..=255u8).rev().collect()),
            (
                "JSON",
                br#"{"topic":"rooms:lobby","event":"phx_join"}"#.to_vec(),
            ),
            (
                "NUL in a header name",
                b"GET /echo HTTP/1.1\r\nHo\0st: t\r\n\r\n".to_vec(),
            ),
            (
                "space in the method",
                b"GE T /echo HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            ),
            (
                "bad version",
                b"GET /echo HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(),
            ),
            (
                "HTTP/1.0 upgrade",
                UPGRADE
                    .replace("{path}", "/echo")
                    .replace("HTTP/1.1", "HTTP/1.0")
                    .into_bytes(),
            ),
            (
                "two Host headers",
                UPGRADE
                    .replace("{path}", "/echo")
                    .replace("Host: test\r\n", "Host: a\r\nHost: b\r\n")
                    .into_bytes(),
            ),
        ];
        garbage
            .into_iter()
            .map(|(name, bytes)| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                s.write_all(&bytes).unwrap();
                let mut out = Vec::new();
                let read = s.read_to_end(&mut out);
                (
                    name,
                    read.map(|_| String::from_utf8_lossy(&out).into_owned())
                        .map_err(|e| e.to_string()),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (name, resp) in results {
        let resp = resp.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            resp.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{name}: {resp:?}"
        );
    }
    watch.finish().await;
}

/// Sends a request one byte per second (slowloris) on `clients` connections at once; returns
/// for each how long the server let it go on and how many bytes it got to send.
fn slowloris(addr: SocketAddr, clients: usize) -> Vec<(Duration, usize)> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let request = UPGRADE.replace("{path}", "/echo");
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let started = Instant::now();
                let mut buf = [0u8; 64];
                for (sent, byte) in request.bytes().enumerate() {
                    if s.write_all(&[byte]).is_err() {
                        return (started.elapsed(), sent);
                    }
                    if closed_by_peer(s.read(&mut buf)) {
                        return (started.elapsed(), sent + 1);
                    }
                }
                panic!("the whole request was dribbled in without the server closing");
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A handshake dribbled one byte per second is dropped at `handshake_timeout_ms` (2 s here),
/// not kept alive by the trickle.
#[test]
fn slowloris_handshake_is_dropped_at_the_handshake_timeout() {
    common::bounded(
        Duration::from_secs(240),
        slowloris_handshake_is_dropped_at_the_handshake_timeout_body(),
    );
}

async fn slowloris_handshake_is_dropped_at_the_handshake_timeout_body() {
    let gw = gateway(&["--handshake-timeout-ms", "2000", "--timer-tick-ms", "100"]);
    let watch = Watch::start(&gw, Duration::from_millis(20), 0).await;
    let addr = gw.addr;
    let results = tokio::task::spawn_blocking(move || slowloris(addr, 4))
        .await
        .unwrap();
    eprintln!("slowloris: {results:?}");
    for (elapsed, sent) in results {
        assert!(
            elapsed >= Duration::from_millis(1800) && elapsed <= Duration::from_millis(4000),
            "dropped after {elapsed:?}"
        );
        assert!(sent <= 5, "{sent} bytes dribbled in before the drop");
    }
    watch.finish().await;
}

/// 1,000 connections each send part of a request and stall: every one is dropped at the
/// handshake deadline, and meanwhile (while they are still held) a new client still
/// upgrades and gets its echo.
#[test]
fn a_thousand_half_open_handshakes_are_dropped_at_the_deadline() {
    common::bounded(
        Duration::from_secs(240),
        a_thousand_half_open_handshakes_are_dropped_at_the_deadline_body(),
    );
}

async fn a_thousand_half_open_handshakes_are_dropped_at_the_deadline_body() {
    const HALF_OPEN: usize = 1000;
    /// The deadline is the clock of the "meanwhile" below: long enough for 1,000 connects and
    /// one upgrade, short enough for the test.
    const DEADLINE: Duration = Duration::from_millis(4000);
    let gw = gateway(&[
        "--handshake-timeout-ms",
        &DEADLINE.as_millis().to_string(),
        "--timer-tick-ms",
        "100",
    ]);
    let watch = Watch::start(&gw, Duration::from_millis(20), 0).await;
    let mut stalled = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let partial = format!("GET /echo?c={i} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n");
        s.write_all(partial.as_bytes()).await.unwrap();
        let started = Instant::now();
        stalled.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await;
            let r = r.expect("dropped within PATIENCE");
            assert!(closed_by_peer(r), "connection {i}");
            started.elapsed()
        }));
    }
    // A well-behaved client is served meanwhile: its echo is back while stalled handshakes are
    // still held (normally all of them; on a box slow enough that the connects took most of the
    // deadline, the first may already be gone, so only "not all" is asserted).
    let t = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.url("/echo"))
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("still here"));
    let echo_took = t.elapsed();
    let dropped = stalled.iter().filter(|h| h.is_finished()).count();
    assert!(
        dropped < HALF_OPEN,
        "every stalled handshake was dropped before the echo (after {echo_took:?}) came back"
    );
    let mut slowest = Duration::ZERO;
    let mut fastest = Duration::MAX;
    for h in stalled {
        let elapsed = h.await.unwrap();
        slowest = slowest.max(elapsed);
        fastest = fastest.min(elapsed);
    }
    eprintln!("half-open: echo after {echo_took:?}; dropped after {fastest:?}..{slowest:?}");
    // At the deadline: not before it (less a timer tick and the client's own clock start), and
    // not at some later sweep (a generous 2 s past it for a busy box).
    assert!(
        fastest >= DEADLINE - Duration::from_millis(200),
        "a handshake dropped after {fastest:?}"
    );
    assert!(
        slowest <= DEADLINE + Duration::from_secs(2),
        "a handshake dropped after {slowest:?}"
    );
    // The echo client, past the handshake, is not subject to that deadline.
    ws.send(Message::text("after")).await.unwrap();
    let echo = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("after"));
    watch.finish().await;
}

/// Heartbeat round trips from a fresh client, one every 50 ms, until `done(round_trips)` says
/// enough; returns each round trip's time (reported, not asserted: a test never asserts a
/// timing). Every reply must be the `ok` reply to that heartbeat.
async fn probe(
    gw: &Gateway,
    done: impl Fn(usize) -> bool + Send + 'static,
) -> JoinHandle<Vec<Duration>> {
    let mut ws = connect_v2(gw).await;
    tokio::spawn(async move {
        let mut rtts = Vec::new();
        while !done(rtts.len()) {
            let n = rtts.len() + 1;
            let hb = json!([null, n.to_string(), "phoenix", "heartbeat", {}]).to_string();
            let t = Instant::now();
            ws.send(Message::text(hb)).await.unwrap();
            let reply = next_json(&mut ws, PATIENCE).await;
            assert_eq!(reply[1], n.to_string(), "{reply}");
            assert_eq!(reply[4]["status"], "ok", "{reply}");
            rtts.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rtts
    })
}

/// How a flood ended for the flooder: messages sent, frames read, the close code the gateway
/// sent (an echo of the flooder's own 1000 if the gateway never closed it), and whether it was
/// still sending when it was told to stop.
struct Flood {
    sent: u64,
    read: u64,
    close: Option<u16>,
    stopped: bool,
}

/// Tells a running flood to stop and shows how far it got.
#[derive(Clone, Default)]
struct FloodControl {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// 1 + the index of the latest flood message (a heartbeat) the gateway replied to; 0: none yet.
    answered: Arc<AtomicU64>,
}

/// A V2 client joined to `rooms:flood` pushes as fast as it can until `control.stop`, `cap` or
/// `max` messages, in batches of 64 frames per write, on its own threads (so it competes with
/// the gateway for CPU, not with the test's runtime), while a second thread reads what comes back.
/// The pushes carry a stale join_ref, which the channel rules drop without a word, so the flood
/// is all input: the gateway must decode and judge every message, and the flooder never
/// becomes a slow consumer of its own replies. Every 1,000th message is a heartbeat, whose
/// reply shows the flooder itself is still served.
fn flood(addr: SocketAddr, control: FloodControl, cap: Duration, max: u64) -> Flood {
    let mut c = RawClient::connect(addr, PHOENIX_V2);
    c.send_frame(true, 1, br#"["1","1","rooms:flood","phx_join",{}]"#);
    let (_, _, reply) = c.read_frame().expect("join reply");
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let mut writer = c.stream.try_clone().unwrap();
    let answered = control.answered.clone();
    let reader = std::thread::spawn(move || {
        let mut read = 0u64;
        loop {
            match c.read_frame() {
                None => return (read, None),
                Some((_, 8, p)) => {
                    return (read, p.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])))
                }
                Some((_, _, p)) => {
                    read += 1;
                    // A heartbeat reply's ref is the flood message's index (see below).
                    let reply: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                    if let Some(i) = reply[1].as_str().and_then(|r| r.parse::<u64>().ok()) {
                        answered.fetch_max(i + 1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let started = Instant::now();
    let mut sent = 0u64;
    let mut stopped = false;
    let mut batch = Vec::new();
    while sent < max && started.elapsed() < cap {
        if control.stop.load(Ordering::Relaxed) {
            stopped = true;
            break;
        }
        batch.clear();
        for _ in 0..64.min(max - sent) {
            let push = if sent % 1000 == 999 {
                json!([null, sent.to_string(), "phoenix", "heartbeat", {}])
            } else {
                json!(["stale", sent.to_string(), "rooms:flood", "spam", {"i": sent}])
            };
            let push = push.to_string();
            ringgate::ws::frame::write_frame(
                &mut batch,
                true,
                1,
                Some([9, 8, 7, 6]),
                push.as_bytes(),
            );
            sent += 1;
        }
        if writer.write_all(&batch).is_err() {
            break;
        }
        control.sent.store(sent, Ordering::Relaxed);
    }
    let _ = writer.write_all(&masked(0x88, &close_payload(1000, b"")));
    let (read, close) = reader.join().unwrap();
    Flood {
        sent,
        read,
        close,
        stopped,
    }
}

/// One client pushing as fast as it can does not starve anyone else: the spectators get every
/// broadcast, and a probe's heartbeats are answered while the flood goes on, with the flooder
/// still being read meanwhile (neither side waits for the other to finish). There is no
/// per-connection message rate limit in this run, so the flooder is either served (it is
/// reading) or closed with 1008.
#[test]
fn message_flood_leaves_other_clients_responsive() {
    common::bounded(
        Duration::from_secs(240),
        message_flood_leaves_other_clients_responsive_body(),
    );
}

async fn message_flood_leaves_other_clients_responsive_body() {
    /// Round trips the probe must complete while the flood is on.
    const ROUNDS: usize = 10;
    /// Messages the flooder has pushed before the probe starts.
    const FLOODING: u64 = 20_000;
    /// Only a bound on a broken run: a gateway that served the flood first would reach it.
    const FLOOD_CAP: Duration = Duration::from_secs(60);
    // The rate limit off: the worst case, a flood the gateway has to read in full.
    let gw = gateway(&["--max-messages-per-second", "0"]);
    let watch = Watch::start(&gw, Duration::from_millis(10), 0).await;
    let control = FloodControl::default();
    let addr = gw.addr;
    let flooding = {
        let control = control.clone();
        tokio::task::spawn_blocking(move || flood(addr, control, FLOOD_CAP, u64::MAX))
    };
    common::wait_for_async("the flood to be under way", PATIENCE, || {
        control.sent.load(Ordering::Relaxed) >= FLOODING || flooding.is_finished()
    })
    .await;
    assert!(!flooding.is_finished(), "the flood ended before it began");
    let sent_before = control.sent.load(Ordering::Relaxed);
    let answered_before = control.answered.load(Ordering::Relaxed);
    let rtts = probe(&gw, |round_trips| round_trips >= ROUNDS)
        .await
        .await
        .unwrap();
    let sent_during = control.sent.load(Ordering::Relaxed) - sent_before;
    let answered_after = control.answered.load(Ordering::Relaxed);
    control.stop.store(true, Ordering::Relaxed);
    let f = flooding.await.unwrap();
    eprintln!(
        "flood: sent {} ({sent_during} during the probe) read {} close {:?}; heartbeats answered \
         up to message {answered_before} before the probe, {answered_after} after; probe rtts {rtts:?}",
        f.sent, f.read, f.close
    );
    assert!(
        f.stopped,
        "the flood ended (cap, error or close) before the probe's {ROUNDS} round trips were done"
    );
    // The flooder's writes alone prove nothing (the kernel buffers megabytes of them); a reply
    // to one of its later heartbeats does: the gateway read, decoded and answered its input while
    // it served the probe.
    assert!(
        answered_after > answered_before,
        "the flooder was not read while the probe was served: its last answered heartbeat was \
         message {answered_before} before the probe and {answered_after} after it \
         ({sent_before} sent before, {sent_during} during)"
    );
    // Its heartbeats were answered: one reply per 1,000 messages, unless the gateway closed it
    // (1008, once a rate limit has a default); else its own close is echoed.
    match f.close {
        Some(1000) => assert_eq!(f.read, f.sent / 1000, "heartbeat replies to the flooder"),
        Some(1008) => {}
        other => panic!("flooder closed with {other:?}"),
    }
    watch.finish().await;
}

/// With `max_messages_per_second`, a flooder is closed with 1008 and the others never notice.
#[test]
fn flood_past_max_messages_per_second_is_closed_with_1008() {
    common::bounded(
        Duration::from_secs(240),
        flood_past_max_messages_per_second_is_closed_with_1008_body(),
    );
}

async fn flood_past_max_messages_per_second_is_closed_with_1008_body() {
    let gw = gateway(&["--max-messages-per-second", "100"]);
    let watch = Watch::start(&gw, Duration::from_millis(10), 0).await;
    let stop = Arc::new(AtomicBool::new(false));
    // The probe runs through the flood and its close (at least one round trip): every
    // heartbeat of it is answered.
    let probe = {
        let stop = stop.clone();
        probe(&gw, move |round_trips| {
            round_trips >= 1 && stop.load(Ordering::Relaxed)
        })
        .await
    };
    let addr = gw.addr;
    let f = tokio::task::spawn_blocking(move || {
        flood(addr, FloodControl::default(), Duration::from_secs(5), 1000)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let rtts = probe.await.unwrap();
    eprintln!("limited flood: sent {}; probe rtts {rtts:?}", f.sent);
    assert_eq!(f.close, Some(1008), "after {} messages sent", f.sent);
    watch.finish().await;
}

/// A subscriber that never reads while broadcasts continue is closed with 1008 once its queue
/// passes `max_send_queue_bytes`: it leaves the topic, and when it finally reads it finds an
/// unbroken run of ticks, then the close. Everyone else gets every tick.
#[test]
fn subscriber_that_never_reads_is_closed_with_1008() {
    common::bounded(
        Duration::from_secs(240),
        subscriber_that_never_reads_is_closed_with_1008_body(),
    );
}

async fn subscriber_that_never_reads_is_closed_with_1008_body() {
    let gw = gateway(&[
        "--max-send-queue-bytes",
        "65536",
        "--close-timeout-ms",
        "20000",
    ]);
    let watch = Watch::start(&gw, Duration::from_millis(10), 16_384).await;
    // A small receive buffer so the socket stops taking data soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.addr).await.unwrap();
    let (mut sloth, _) = tokio_tungstenite::client_async(gw.url(PHOENIX_V2), stream)
        .await
        .unwrap();
    // Its join reply says it is a member; the topic's count is not checked here, because at 16 KiB
    // ticks it may already have been dropped by the time an admin request is answered.
    join(&mut sloth, LOBBY).await;
    // It reads nothing now; the gateway must drop it from the topic on its own.
    let t = Instant::now();
    while subscribers(gw.admin, LOBBY).await != SPECTATORS as u64 {
        assert!(t.elapsed() < PATIENCE, "the non-reader was never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped_after = t.elapsed();
    // Broadcasts go on for a while with the non-reader gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ticks = Vec::new();
    let close = loop {
        let m = tokio::time::timeout(PATIENCE, sloth.next())
            .await
            .expect("the close frame in time")
            .expect("a close frame before EOF");
        match m.expect("no error before the close") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v[3] == "tick" {
                    ticks.push(v[4]["n"].as_u64().unwrap());
                }
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(close, Some(1008));
    // What it did get is an unbroken run: the queue was dropped whole, not thinned.
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    let total = watch.finish().await;
    eprintln!(
        "non-reader: dropped after {:?}; got {} of {total} ticks",
        dropped_after,
        ticks.len()
    );
    assert!(
        (ticks.len() as u64) < total,
        "the non-reader got all {total} ticks: it was closed only at the end"
    );
}
