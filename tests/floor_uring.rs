//! The broadcast bench's raw io_uring floor (`benches/peers/floor_uring.rs`, example `floor_uring`),
//! driven as the bench drives it: /healthz, V1 and V2 joins on /socket/websocket, then bursts of
//! broadcasts through the admin API. With a 4 KiB SO_SNDBUF per connection and clients that read
//! only after the whole burst, sends come back short (in the middle of a frame, in the coalescing
//! modes in the middle of the batch; a bundle the kernel retries itself until it is sent whole):
//! every subscriber must still get every frame, whole and in order, in every `--send` mode.
//!
//! `cargo test` builds the examples before it runs any test; run alone, this file needs
//! `cargo build --release --examples` (or without --release for a debug test run) first.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_request, RawClient};
use serde_json::{json, Value};

/// SO_RCVBUF of the test clients (the kernel doubles it).
const CLIENT_RCVBUF_BYTES: usize = 4096;

/// The floor process, killed (by its PID) when dropped.
struct Floor {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/examples/floor_uring`, next to this test's own `deps/` directory.
fn floor_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary under target/<profile>/deps");
    let bin = profile_dir.join("examples").join("floor_uring");
    assert!(
        bin.is_file(),
        "{} missing: build the examples first (cargo build --examples, with --release for a release test run)",
        bin.display()
    );
    bin
}

fn start(send: &str) -> Floor {
    start_with(send, &[])
}

/// Starts the floor on free ports. A port found free can be taken by a parallel test before the
/// floor binds it ("Address already in use"): a floor that exits while starting is started again
/// on new ports.
fn start_with(send: &str, extra: &[&str]) -> Floor {
    for _ in 0..START_ATTEMPTS {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(floor_bin())
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args([
                "--workers",
                "2",
                "--send",
                send,
                "--send-buffer-bytes",
                "4096",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn floor_uring");
        let mut floor = Floor { child, addr, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(floor.child.try_wait(), Ok(Some(_))) {
                break;
            }
            let healthz = http_request(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            );
            if healthz.is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                return floor;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(floor.child.try_wait(), Ok(Some(_))) {
            panic!("floor ({send}) not ready on {addr}");
        }
    }
    panic!("floor ({send}) exited while starting, {START_ATTEMPTS} times");
}

/// Starts of the floor tried before a test gives up (each on new ports).
const START_ATTEMPTS: usize = 5;

fn post(admin: SocketAddr, body: &str) -> String {
    http_request(
        admin,
        &format!(
            "POST /api/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("admin request")
}

/// Upgrades and joins `rooms:lobby`; checks the ok reply the bench clients parse.
fn join(addr: SocketAddr, v2: bool) -> RawClient {
    let path = if v2 {
        "/socket/websocket?vsn=2.0.0"
    } else {
        "/socket/websocket"
    };
    // A small receive window on the client too, so the floor's sends stall and come back short.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(CLIENT_RCVBUF_BYTES).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(common::UPGRADE.replace("{path}", path).as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..head]).into_owned();
    assert!(head_text.starts_with("HTTP/1.1 101"), "{head_text}");
    assert!(
        head_text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head_text}"
    );
    buf.drain(..head);
    let mut c = RawClient { stream, buf };
    let join = if v2 {
        r#"["7","1","rooms:lobby","phx_join",{}]"#
    } else {
        r#"{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1"}"#
    };
    c.send_frame(true, 1, join.as_bytes());
    let (fin, opcode, payload) = c.read_frame().expect("join reply");
    assert!(fin && opcode == 1);
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    let expected = if v2 {
        json!(["7", "1", "rooms:lobby", "phx_reply", {"status": "ok", "response": {}}])
    } else {
        json!({"topic": "rooms:lobby", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"})
    };
    assert_eq!(reply, expected);
    c
}

fn payload(seq: u64) -> Value {
    json!({"seq": seq, "pad": "x".repeat(700)})
}

fn burst_in_order(send: &str) {
    let floor = start(send);
    let mut clients: Vec<(RawClient, bool)> = (0..8)
        .map(|i| (join(floor.addr, i % 2 == 1), i % 2 == 1))
        .collect();
    // One array of 100 (reaches the rings in one drain), then 20 single posts.
    let burst: Vec<Value> = (0..100)
        .map(|seq| json!({"topic": "rooms:lobby", "event": "bench", "payload": payload(seq)}))
        .collect();
    let answer = post(floor.admin, &serde_json::to_string(&burst).unwrap());
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.ends_with(r#"{"queued":100}"#), "{answer}");
    for seq in 100..120 {
        let body = json!({"topic": "rooms:lobby", "event": "bench", "payload": payload(seq)});
        let answer = post(floor.admin, &body.to_string());
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    // A topic nobody joined: accepted, queued nowhere.
    let answer = post(
        floor.admin,
        r#"{"topic":"rooms:empty","event":"bench","payload":{}}"#,
    );
    assert!(answer.ends_with(r#"{"queued":0}"#), "{answer}");
    let bad = post(floor.admin, r#"{"topic":"rooms:lobby"}"#);
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    for (c, v2) in clients.iter_mut() {
        for seq in 0..120 {
            let (fin, opcode, text) = c
                .read_frame()
                .unwrap_or_else(|| panic!("{send}: EOF before frame {seq}"));
            assert!(
                fin && opcode == 1,
                "{send}: frame {seq} not a final text frame"
            );
            let got: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{send}: frame {seq} is not JSON ({e})"));
            let expected = if *v2 {
                json!([null, null, "rooms:lobby", "bench", payload(seq)])
            } else {
                json!({"topic": "rooms:lobby", "event": "bench", "payload": payload(seq), "ref": null})
            };
            assert_eq!(got, expected, "{send}: frame {seq}");
        }
    }
    // The upgrade to an unknown path was refused; the floor still serves.
    let healthz = http_request(floor.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let refused = TcpStream::connect(floor.addr).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /nowhere HTTP/1.1\r\nHost: t\r\nSec-WebSocket-Key: a\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    assert!(refused.unwrap().starts_with("HTTP/1.1 404"));
}

#[test]
fn send_one_delivers_every_frame_in_order_through_short_sends() {
    burst_in_order("one");
}

#[test]
fn send_msg_delivers_every_frame_in_order_through_short_sends() {
    burst_in_order("msg");
}

#[test]
fn send_copy_delivers_every_frame_in_order_through_short_sends() {
    burst_in_order("copy");
}

#[test]
fn send_bundle_delivers_every_frame_in_order_through_short_sends() {
    burst_in_order("bundle");
}

/// `--queue-frames-max`: a subscriber that stops reading is dropped once that many frames wait for
/// it (after its send in flight completes), instead of growing the floor's memory; the others get
/// every frame.
#[test]
fn a_subscriber_that_falls_behind_the_queue_bound_is_dropped() {
    let floor = start_with("msg", &["--queue-frames-max", "10"]);
    let mut stalled = join(floor.addr, false);
    let mut reader = join(floor.addr, true);
    for seq in 0..200 {
        let body = json!({"topic": "rooms:lobby", "event": "bench", "payload": payload(seq)});
        assert!(post(floor.admin, &body.to_string()).starts_with("HTTP/1.1 202"));
        // The reader keeps up (its queue never reaches the bound).
        let (_, _, text) = reader.read_frame().expect("reader frame");
        let got: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(got[4]["seq"], seq, "reader");
    }
    let mut frames = 0u64;
    while let Some((_, opcode, text)) = stalled.read_frame() {
        assert_eq!(opcode, 1);
        let got: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            got["payload"]["seq"], frames,
            "stalled subscriber, in order up to the drop"
        );
        frames += 1;
    }
    assert!(
        frames < 200,
        "the stalled subscriber got all {frames} frames: it was never dropped"
    );
}
