//! The gateway over real loopback sockets: HTTP routing, the echo endpoint with an independent
//! client (tokio-tungstenite), exact close codes for protocol violations, deadlines, backpressure.

mod common;

use std::time::{Duration, Instant};

use common::{http_request, wait_for, Gateway, RawClient};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn echo_gateway(extra: &[&str]) -> Gateway {
    let mut args = vec!["--echo-path", "/echo", "--workers", "2"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

#[test]
fn http_routes_and_errors() {
    let gw = echo_gateway(&[]);
    let get = |req: &str| http_request(gw.addr, req).unwrap();
    let ok = get("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok\n"),
        "{ok}"
    );
    assert!(get("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n").starts_with("HTTP/1.1 404"));
    let plain = get("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        plain.starts_with("HTTP/1.1 426") && plain.contains("Sec-WebSocket-Version: 13"),
        "{plain}"
    );
    let post = common::UPGRADE.replace("GET {path}", "POST /echo");
    assert!(get(&post).starts_with("HTTP/1.1 405"));
    let no_key = common::UPGRADE
        .replace("{path}", "/echo")
        .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert!(get(&no_key).starts_with("HTTP/1.1 400"));
    let v8 = common::UPGRADE
        .replace("{path}", "/echo")
        .replace("Version: 13", "Version: 8");
    assert!(get(&v8).starts_with("HTTP/1.1 426"));
    let huge = format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert!(get(&huge).starts_with("HTTP/1.1 431"));
    let garbage = get("\x16\x03\x01garbage\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
}

#[test]
fn upgrade_declines_extensions_and_answers_with_the_rfc_accept_key() {
    let gw = echo_gateway(&[]);
    let req = common::UPGRADE.replace("{path}", "/echo").replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
}

#[test]
fn echo_with_tokio_tungstenite() {
    common::bounded(Duration::from_secs(120), async {
        echo_round_trips(&[]).await;
    });
}

/// The same traffic with the other way of waiting for data (multishot receive).
#[test]
fn echo_with_multishot_receive() {
    common::bounded(Duration::from_secs(120), async {
        echo_round_trips(&["--recv-mode", "multishot"]).await;
    });
}

/// Tiny receive buffers: every message spans many buffers and partial frames are reassembled.
#[test]
fn echo_with_small_receive_buffers() {
    common::bounded(Duration::from_secs(120), async {
        echo_round_trips(&["--recv-buffer-bytes", "256", "--recv-buffers", "4"]).await;
    });
}

async fn echo_round_trips(extra: &[&str]) {
    let gw = echo_gateway(extra);
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.url("/echo"))
        .await
        .unwrap();
    let messages = vec![
        Message::text(""),
        Message::text("hello"),
        Message::text("é".repeat(40_000)),
        Message::binary(vec![7u8; 125]),
        Message::binary(vec![1u8; 126]),
        Message::binary((0..65536u32).map(|i| i as u8).collect::<Vec<u8>>()),
        Message::binary(vec![9u8; 1_000_000]),
    ];
    for m in messages {
        ws.send(m.clone()).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, m);
    }
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }
    ws.close(None).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("expected close, got {other:?}"),
    }
}

#[test]
fn many_concurrent_clients_each_get_their_own_echo() {
    common::bounded(Duration::from_secs(120), async {
        let gw = echo_gateway(&[]);
        let url = gw.url("/echo");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                for j in 0..20 {
                    let text = format!("client {i} message {j}");
                    ws.send(Message::text(text.clone())).await.unwrap();
                    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
                }
                ws.close(None).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let gw = echo_gateway(&[]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    c.send_frame(false, 1, b"Hel");
    c.send_frame(true, 9, b"p");
    c.send_frame(false, 0, "lo, wö".as_bytes());
    c.send_frame(true, 0, b"rld");
    assert_eq!(c.read_frame().unwrap(), (true, 10, b"p".to_vec()));
    assert_eq!(
        c.read_frame().unwrap(),
        (true, 1, "Hello, wörld".as_bytes().to_vec())
    );
}

#[test]
fn client_close_is_echoed_then_the_server_half_closes() {
    let gw = echo_gateway(&[]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send_frame(true, 8, &payload);
    assert_eq!(c.expect_close(), Some(4000));
    c.expect_eof();
}

/// Each violation gets its exact RFC 6455 close code, then the server half-closes.
#[test]
fn violations_close_with_exact_codes() {
    let gw = echo_gateway(&["--max-message-bytes", "1000", "--max-frame-bytes", "1000"]);
    type Case = (&'static str, Box<dyn Fn(&mut RawClient)>, u16);
    let cases: Vec<Case> = vec![
        (
            "unmasked frame",
            Box::new(|c| c.send_raw(&[0x81, 0x02, b'h', b'i'])),
            1002,
        ),
        (
            "rsv1 set",
            Box::new(|c| c.send_raw(&[0xC1, 0x80, 0, 0, 0, 0])),
            1002,
        ),
        (
            "reserved opcode",
            Box::new(|c| c.send_frame(true, 3, b"")),
            1002,
        ),
        (
            "long ping",
            Box::new(|c| c.send_frame(true, 9, &[0u8; 126])),
            1002,
        ),
        (
            "fragmented ping",
            Box::new(|c| c.send_frame(false, 9, b"")),
            1002,
        ),
        (
            "bare continuation",
            Box::new(|c| c.send_frame(true, 0, b"x")),
            1002,
        ),
        (
            "invalid utf-8",
            Box::new(|c| c.send_frame(true, 1, &[0xC3, 0x28])),
            1007,
        ),
        (
            "utf-8 split badly",
            Box::new(|c| {
                c.send_frame(false, 1, &[0xE2, 0x82]);
                c.send_frame(true, 0, &[0x28]);
            }),
            1007,
        ),
        (
            "frame too big",
            Box::new(|c| c.send_frame(true, 2, &[0u8; 1001])),
            1009,
        ),
        (
            "message too big",
            Box::new(|c| {
                c.send_frame(false, 2, &[0u8; 600]);
                c.send_frame(true, 0, &[0u8; 600]);
            }),
            1009,
        ),
        (
            "close code 1005 on the wire",
            Box::new(|c| c.send_frame(true, 8, &1005u16.to_be_bytes())),
            1002,
        ),
        (
            "close with one byte",
            Box::new(|c| c.send_frame(true, 8, &[3])),
            1002,
        ),
        (
            "close reason not utf-8",
            Box::new(|c| {
                let mut p = 1000u16.to_be_bytes().to_vec();
                p.extend_from_slice(&[0xFF, 0xFE]);
                c.send_frame(true, 8, &p);
            }),
            1007,
        ),
    ];
    for (name, send, code) in cases {
        let mut c = RawClient::connect(gw.addr, "/echo");
        send(&mut c);
        assert_eq!(c.expect_close(), Some(code), "{name}");
        c.expect_eof();
    }
}

#[test]
fn idle_and_handshake_deadlines() {
    let gw = echo_gateway(&[
        "--idle-timeout-ms",
        "1500",
        "--handshake-timeout-ms",
        "1000",
        "--timer-tick-ms",
        "100",
    ]);
    // A silent WebSocket is closed with 1001 after the idle timeout (its reads time out after
    // 10 s, which fails the read instead of passing for a close).
    let started = Instant::now();
    let mut idle = RawClient::connect(gw.addr, "/echo");
    assert_eq!(idle.expect_close(), Some(1001));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(8),
        "closed after {waited:?}, not about 1.5 s"
    );
    // Activity keeps a connection open past the idle timeout.
    let mut busy = RawClient::connect(gw.addr, "/echo");
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        busy.send_frame(true, 9, b"k");
        assert_eq!(busy.read_frame().unwrap(), (true, 10, b"k".to_vec()));
    }
    // A connection that never completes its handshake is dropped after the handshake timeout.
    let mut half = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::Write;
    half.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let end = server_end(&mut half);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "the half-open handshake ended ({end:?}) after {waited:?}, not about 1 s"
    );
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
}

/// Reads until the server ends the connection. Data, or the read timeout passing, fails the test:
/// a timeout must never be taken for a close.
fn server_end(s: &mut std::net::TcpStream) -> End {
    use std::io::Read;
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => End::Eof,
        Ok(n) => panic!(
            "expected the connection to end, got {n} bytes: {:?}",
            &buf[..n]
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => End::Reset,
        Err(e) => panic!("expected the connection to end, got {e} (a timeout is not a close)"),
    }
}

/// A client that never reads while the server has more and more to send is closed with 1008
/// once its queue passes `max_send_queue_bytes`; memory stays bounded.
#[test]
fn slow_consumer_is_closed_with_1008() {
    let gw = echo_gateway(&[
        "--max-send-queue-bytes",
        "65536",
        "--close-timeout-ms",
        "20000",
    ]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    let writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = RawClient {
            stream: writer,
            buf: Vec::new(),
        };
        let chunk = vec![b'x'; 60_000];
        // Far more than loopback socket buffers and the queue bound together can hold.
        for _ in 0..2000 {
            let mut out = Vec::new();
            ringgate::ws::frame::write_header(&mut out, true, 2, Some([0; 4]), chunk.len());
            out.extend_from_slice(&chunk);
            if std::io::Write::write_all(&mut w.stream, &out).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.expect_close(), Some(1008));
    drop(c);
    sender.join().unwrap();
}

/// A flood past `max_messages_per_second` (bursts of twice that) is closed with 1008.
#[test]
fn message_flood_is_closed_with_1008() {
    let gw = echo_gateway(&["--max-messages-per-second", "50"]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    for _ in 0..150 {
        c.send_frame(true, 1, b"x");
    }
    assert_eq!(c.expect_close(), Some(1008));
    // A client within the rate is untouched.
    let mut calm = RawClient::connect(gw.addr, "/echo");
    for _ in 0..60 {
        calm.send_frame(true, 1, b"y");
        assert_eq!(calm.read_frame().unwrap(), (true, 1, b"y".to_vec()));
    }
}

/// Upgrades in progress past `max_handshakes_per_worker` are dropped at once; completed ones are not
/// affected.
#[test]
fn handshakes_in_flight_are_bounded() {
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "1",
        "--max-handshakes-per-worker",
        "5",
    ]);
    use std::io::{Read, Write};
    let stalled: Vec<_> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = std::net::TcpStream::connect(gw.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Dropped at once: EOF or reset, well before the 10 s handshake timeout or the read timeout.
    let t = Instant::now();
    let end = server_end(&mut extra);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the sixth handshake ended ({end:?}) only after {:?}",
        t.elapsed()
    );
    // The five stalled ones are still held (not dropped in its place).
    for s in &stalled {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = (&*s).read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled handshake was ended: {r:?}"
        );
    }
    drop(stalled);
    // Their slots are freed as the worker reads each end: retry the upgrade until one is served,
    // within a bound, then talk on a fresh connection.
    wait_for(
        "a stalled handshake's slot freed",
        Duration::from_secs(10),
        || common::upgrade_echo(std::net::TcpStream::connect(gw.addr).unwrap()).is_some(),
    );
    let mut ok = RawClient::connect(gw.addr, "/echo");
    ok.send_frame(true, 1, b"fine");
    assert_eq!(ok.read_frame().unwrap(), (true, 1, b"fine".to_vec()));
}

/// `max_connections_per_ip`: the connections past the limit from one address are dropped; another
/// address is unaffected; closing one frees room.
#[test]
fn connections_per_source_address_are_limited() {
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "2",
        "--max-connections-per-ip",
        "3",
    ]);
    let from = |last: u8| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, last], 0)).into())
            .unwrap();
        s.connect(&gw.addr.into()).unwrap();
        let stream: std::net::TcpStream = s.into();
        stream
    };
    let upgrade = common::upgrade_echo;
    let kept: Vec<_> = (0..3)
        .map(|_| upgrade(from(2)).expect("within the limit"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        upgrade(from(2)).is_none(),
        "the fourth from 127.0.0.2 must be dropped"
    );
    assert!(
        upgrade(from(3)).is_some(),
        "another address is not affected"
    );
    drop(kept);
    // A count is released when the worker reaps the close, not when the client sees it: retry
    // (a refused attempt is not counted) until room shows, within a bound.
    wait_for("closing frees room", Duration::from_secs(10), || {
        upgrade(from(2)).is_some()
    });
}

/// A full connection table stops accepting (ENFILE ends the multishot accept); new connections
/// wait in the listen backlog and are served as soon as a slot is freed.
#[test]
fn full_table_pauses_accepting_and_recovers() {
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "1",
        "--max-connections-per-worker",
        "8",
    ]);
    // /healthz used a slot and freed it; now fill all eight.
    let mut held: Vec<RawClient> = (0..8)
        .map(|_| RawClient::connect(gw.addr, "/echo"))
        .collect();
    let waiting = std::thread::spawn({
        let addr = gw.addr;
        move || {
            let mut c = RawClient::connect(addr, "/echo");
            c.send_frame(true, 1, b"late");
            c.read_frame().unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !waiting.is_finished(),
        "the ninth connection must wait while the table is full"
    );
    for c in &mut held {
        c.send_frame(true, 1, b"still here");
        assert_eq!(c.read_frame().unwrap(), (true, 1, b"still here".to_vec()));
    }
    let mut first = held.remove(0);
    first.send_frame(true, 8, &1000u16.to_be_bytes());
    assert_eq!(first.expect_close(), Some(1000));
    drop(first);
    assert_eq!(waiting.join().unwrap(), (true, 1, b"late".to_vec()));
}

/// Past `max_memory_bytes` a worker stops accepting (new connections wait in the backlog) while
/// the connections it has keep being served; the pause is counted; it resumes only once resident
/// memory is back under 90% of the limit, and then serves what waited. The resident reading is
/// set through the test-only admin route (`--debug-fault-injection`), so every step is exact.
#[test]
fn memory_limit_pauses_accepting_and_resumes_under_90_percent() {
    const LIMIT: u64 = 1 << 30;
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "1",
        "--timer-tick-ms",
        "100",
        "--debug-fault-injection",
        "--max-memory-bytes",
        &LIMIT.to_string(),
    ]);
    let metric = |name: &str| -> u64 {
        let text = common::http_request(
            gw.admin,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        line[name.len() + 1..].trim().parse().unwrap()
    };
    let resident = |bytes: u64| {
        let resp = common::http_request(
            gw.admin,
            &format!(
                "POST /api/debug/resident-bytes/{bytes} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    };
    // Under the limit (the reading is pinned low): accepting.
    resident(LIMIT / 2);
    // Gateway::start's readiness probes were accepted too.
    let base = metric("ringgate_accepted_total{worker=\"0\"}");
    let mut early = RawClient::connect(gw.addr, "/echo");
    assert_eq!(metric("ringgate_accepted_total{worker=\"0\"}"), base + 1);
    // Over it: the next tick pauses accepting, once.
    resident(LIMIT + 1);
    wait_for("the pause", Duration::from_secs(10), || {
        metric("ringgate_memory_pauses_total{worker=\"0\"}") == 1
    });
    // The pause is counted when the worker queues the accept's cancel, which the kernel sees at
    // the worker's next submit: give that a moment, or a connection made in between is accepted.
    std::thread::sleep(Duration::from_millis(300));
    use std::io::{Read, Write};
    let mut late = std::net::TcpStream::connect(gw.addr).expect("the backlog takes it");
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    late.write_all(common::UPGRADE.replace("{path}", "/echo").as_bytes())
        .unwrap();
    // The connection it has is served throughout.
    early.send_frame(true, 1, b"served");
    assert_eq!(early.read_frame().unwrap(), (true, 1, b"served".to_vec()));
    // Between 90% and 100% of the limit it stays paused (10 ticks to change its mind).
    resident(LIMIT / 100 * 95);
    std::thread::sleep(Duration::from_millis(1000));
    early.send_frame(true, 1, b"still");
    assert_eq!(early.read_frame().unwrap(), (true, 1, b"still".to_vec()));
    assert_eq!(
        metric("ringgate_accepted_total{worker=\"0\"}"),
        base + 1,
        "no accept while paused"
    );
    // Under 90%: accepting again, and the connection that waited in the backlog is served.
    resident(LIMIT / 100 * 89);
    let t = Instant::now();
    let mut head = [0u8; 12];
    match late.read_exact(&mut head) {
        Ok(()) => assert_eq!(&head, b"HTTP/1.1 101"),
        Err(e) => panic!("the waiting connection after {:?}: {e}", t.elapsed()),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(metric("ringgate_accepted_total{worker=\"0\"}"), base + 2);
    assert_eq!(metric("ringgate_memory_pauses_total{worker=\"0\"}"), 1);
}

/// Sends an upgrade request with these extra header lines and returns the response's status line
/// (read with a timeout; the connection may stay open after a 101).
fn upgrade_status(addr: std::net::SocketAddr, extra_headers: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = common::UPGRADE
        .replace("{path}", "/echo")
        .replace("\r\n\r\n", &format!("\r\n{extra_headers}\r\n"));
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("no status line: {other:?} after {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).trim_end().to_string()
}

/// `allowed_origins`: a browser Origin not on the list is refused with 403; listed ones and
/// clients sending no Origin (not browsers) upgrade.
#[test]
fn allowed_origins_refuse_other_browser_origins() {
    let gw = echo_gateway(&[
        "--allowed-origins",
        "https://chat.example",
        "--allowed-origins",
        "https://admin.example",
    ]);
    let status = |origin: &str| upgrade_status(gw.addr, origin);
    assert_eq!(
        status("Origin: https://chat.example\r\n"),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        status("Origin: https://admin.example\r\n"),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert!(status("Origin: https://evil.example\r\n").starts_with("HTTP/1.1 403"));
    assert!(status("Origin: https://chat.example.evil\r\n").starts_with("HTTP/1.1 403"));
    assert_eq!(status(""), "HTTP/1.1 101 Switching Protocols");
    // Without the setting, any Origin upgrades.
    let open = echo_gateway(&[]);
    assert_eq!(
        upgrade_status(open.addr, "Origin: https://evil.example\r\n"),
        "HTTP/1.1 101 Switching Protocols"
    );
}

/// The kernel's send buffer of the server's side of a connection, from `ss -tm` (`tb`).
fn server_sndbuf(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let tb = text
        .split([',', '(', ')'])
        .find_map(|f| f.strip_prefix("tb"))
        .unwrap_or_else(|| panic!("no skmem tb in ss output: {text:?}"));
    tb.parse().unwrap()
}

/// `send_buffer_bytes` sets `SO_SNDBUF` on the listener and accepted sockets inherit it (the
/// kernel doubles the value for its bookkeeping overhead, so 65536 reads back as 131072).
#[test]
fn send_buffer_bytes_is_inherited_by_accepted_sockets() {
    let gw = echo_gateway(&["--send-buffer-bytes", "65536"]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    c.send_frame(true, 1, b"x");
    assert_eq!(c.read_frame().unwrap(), (true, 1, b"x".to_vec()));
    assert_eq!(server_sndbuf(gw.addr.port()), 131_072);
}

/// Buffer-ring exhaustion with many connections: 4 receive buffers of 256 B for 50 clients each
/// sending 20 KB messages at once. Receives find the ring empty (`recv_enobufs_total` > 0), the
/// data waits in the sockets and is read after buffers come back: every echo is exact.
#[test]
fn exhausted_buffer_ring_loses_nothing() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 5;
    let gw = echo_gateway(&["--recv-buffer-bytes", "256", "--recv-buffers", "4"]);
    let clients: Vec<RawClient> = (0..CLIENTS)
        .map(|_| RawClient::connect(gw.addr, "/echo"))
        .collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let start = start.clone();
            std::thread::spawn(move || {
                let messages: Vec<Vec<u8>> = (0..MESSAGES)
                    .map(|m| (0..20_000).map(|b| (b + i * 7 + m * 13) as u8).collect())
                    .collect();
                start.wait();
                for m in &messages {
                    c.send_frame(true, 2, m);
                }
                for (m, sent) in messages.iter().enumerate() {
                    // RawClient reads with a 10 s timeout: a lost message fails, never hangs.
                    let got = c.read_frame().expect("echo before EOF");
                    assert_eq!(got.1, 2, "client {i} message {m}: opcode");
                    assert!(got.2 == *sent, "client {i} message {m}: payload differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = http_request(
        gw.admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let enobufs: u64 = text
        .lines()
        .filter(|l| l.starts_with("ringgate_recv_enobufs_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(enobufs > 0, "the ring never ran dry:\n{text}");
    let messages_in: u64 = text
        .lines()
        .filter(|l| l.starts_with("ringgate_messages_in_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(messages_in, (CLIENTS * MESSAGES) as u64);
}
