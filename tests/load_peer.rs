//! `ringgate load` against an independent server (tokio-tungstenite, in this file) and its
//! failure paths: nothing listening, a server that closes connections, an invalid scenario file.

#[path = "load/helpers.rs"]
mod helpers;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use helpers::{run, u};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What the test server does with each connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Echo every data message; count the clients' Close frames.
    Echo,
    /// After the first message: even connections get Close 1001, odd ones a dropped TCP.
    CloseAfterFirst,
}

#[derive(Default)]
struct Seen {
    peers: Vec<SocketAddr>,
    paths: Vec<String>,
    closes: usize,
}

/// Starts the server on a runtime of its own; returns its address and what it saw.
fn server(mode: Mode) -> (SocketAddr, Arc<Mutex<Seen>>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    rt.spawn(async move {
        let mut n = 0usize;
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            n += 1;
            let seen = s.clone();
            tokio::spawn(async move {
                #[expect(
                    clippy::result_large_err,
                    reason = "the callback type is tungstenite's"
                )]
                let cb = |req: &Request, resp: Response| {
                    seen.lock().unwrap().paths.push(req.uri().to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                seen.lock().unwrap().peers.push(peer);
                while let Some(Ok(msg)) = ws.next().await {
                    match (mode, msg) {
                        (_, Message::Close(_)) => {
                            seen.lock().unwrap().closes += 1;
                            // tungstenite answers the Close itself; drain until it ends.
                        }
                        (Mode::Echo, m @ (Message::Text(_) | Message::Binary(_))) => {
                            ws.send(m).await.unwrap();
                        }
                        (Mode::CloseAfterFirst, Message::Text(_) | Message::Binary(_)) => {
                            if n.is_multiple_of(2) {
                                let frame = CloseFrame {
                                    code: CloseCode::Away,
                                    reason: "bye".into(),
                                };
                                let _ = ws.send(Message::Close(Some(frame))).await;
                                while let Some(Ok(_)) = ws.next().await {}
                            }
                            return; // odd: drop the TCP connection without a Close
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, seen, rt)
}

const ECHO_SCENARIO: &str = r#"
name = "echo"
duration_s = 5

[[phases]]
duration_s = 1
arrival_rate = 20

[[sessions]]
steps = [
  { connect = { path = "/echo?u={user_id}" } },
  { loop = { count = 3, steps = [
      { send = { text = '{"n":{ref},"from":{user_id},"ts_ns":{ts_ns}}' } },
      { expect = { contains = '"n":{ref},"from":{user_id},', timeout_ms = 3000, name = "echo" } },
  ] } },
  { send = { binary = "bin-{user_id}" } },
  { expect = { contains = "bin-{user_id}", name = "echo_binary" } },
  { think = { ms = 200 } },
  { close = { code = 1000 } },
]
"#;

fn scenario_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn connect_send_expect_against_tokio_tungstenite() {
    let (addr, seen, _rt) = server(Mode::Echo);
    let file = scenario_file(ECHO_SCENARIO);
    let url = format!("ws://{addr}");
    let (r, _dir) = run(&["--url", &url, "--scenario", file.path().to_str().unwrap()]);
    r.assert_ok();
    let s = r.summary();
    assert_eq!(u(&s, "connected"), 20, "{s}");
    assert_eq!(u(&s, "transactions.echo.count"), 60, "{s}");
    assert_eq!(u(&s, "transactions.echo_binary.count"), 20, "{s}");
    // The text echoes carry ts_ns: each is a delivery latency (here a round trip).
    assert_eq!(u(&s, "delivery.count"), 60, "{s}");
    assert_eq!(u(&s, "messages_sent"), 80);
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    // Users closed themselves (close step) well before the end: tungstenite saw each Close.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.closes, 20);
    let mut paths = seen.paths.clone();
    paths.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("/echo?u={i}")).collect();
    want.sort();
    assert_eq!(paths, want);
}

#[test]
fn source_addresses_are_used_round_robin() {
    let (addr, seen, _rt) = server(Mode::Echo);
    let file = scenario_file(ECHO_SCENARIO);
    let url = format!("ws://{addr}");
    let (r, _dir) = run(&[
        "--url",
        &url,
        "--scenario",
        file.path().to_str().unwrap(),
        "--source",
        "127.0.0.2-127.0.0.3",
        "--users",
        "10",
    ]);
    r.assert_ok();
    assert_eq!(u(&r.summary(), "transactions.echo.count"), 30);
    let seen = seen.lock().unwrap();
    let mut ips: Vec<IpAddr> = seen.peers.iter().map(SocketAddr::ip).collect();
    ips.sort();
    let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    assert_eq!(ips.iter().filter(|ip| **ip == a).count(), 5, "{ips:?}");
    assert_eq!(ips.iter().filter(|ip| **ip == b).count(), 5, "{ips:?}");
}

#[test]
fn a_server_that_closes_connections_is_counted_and_the_run_goes_on() {
    let (addr, _seen, _rt) = server(Mode::CloseAfterFirst);
    let file = scenario_file(
        r#"
duration_s = 4
[[phases]]
duration_s = 2
arrival_rate = 10
[[sessions]]
steps = [
  { connect = {} },
  { send = { text = "hello {user_id}" } },
  { expect = { contains = "never", timeout_ms = 3000 } },
]
"#,
    );
    let url = format!("ws://{addr}/x");
    let (r, _dir) = run(&["--url", &url, "--scenario", file.path().to_str().unwrap()]);
    r.assert_ok();
    let s = r.summary();
    // All 20 users arrived over the 2 s although every earlier one was thrown out.
    assert_eq!(u(&s, "arrivals"), 20, "{s}");
    assert_eq!(u(&s, "connected"), 20, "{s}");
    assert_eq!(u(&s, "errors.closed_by_server"), 10, "{s}");
    assert_eq!(u(&s, "errors.disconnected"), 10, "{s}");
    assert_eq!(u(&s, "errors.expect_timeout"), 0, "{s}");
    assert_eq!(u(&s, "errors_total"), 20, "{s}");
    assert!(r.stderr.contains("closed_by_server: user"), "{}", r.stderr);
    assert!(r.stderr.contains("close 1001 \"bye\""), "{}", r.stderr);
    assert!(r.out.join("report.html").exists());
}

#[test]
fn nothing_listening_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/socket/websocket");
    let (r, dir) = run(&["--url", &url, "--duration", "2"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "ringgate load: cannot connect to 127.0.0.1:{port}: connection refused — is the server running and listening there?"
        )
    );
    assert!(!dir.path().join("summary.json").exists());
}

#[test]
fn an_invalid_scenario_names_line_and_field() {
    let (addr, _seen, _rt) = server(Mode::Echo);
    let url = format!("ws://{addr}");
    let file = scenario_file(
        "duration_s = 5\n[[phases]]\nduration_s = 1\narrival_rate = 5\n[[sessions]]\nsteps = [\n  { connect = {} },\n  { think = { min_ms = 900, max_ms = 100 } },\n]\n",
    );
    let (r, _dir) = run(&["--url", &url, "--scenario", file.path().to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let path = file.path().display();
    assert_eq!(
        r.stderr.trim(),
        format!(
            "ringgate load: {path}:8: sessions[0].steps[1].think.max_ms: must not be below min_ms\n     8 |   {{ think = {{ min_ms = 900, max_ms = 100 }} }},"
        )
    );
    let file = scenario_file("duration_s = 5\n[[sessions]]\nstepz = []\n");
    let (r, _dir) = run(&["--url", &url, "--scenario", file.path().to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains(":3: stepz: unknown field `stepz`"),
        "{}",
        r.stderr
    );
}
