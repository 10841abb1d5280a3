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
    /// Read the upgrade request, never answer it: even connections are closed (EOF), odd ones
    /// reset (SO_LINGER 0) — a gateway's handshake timeout or limit, seen from the client.
    DropBeforeUpgrade,
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
            let (mut tcp, peer) = listener.accept().await.unwrap();
            n += 1;
            let seen = s.clone();
            if let Mode::DropBeforeUpgrade = mode {
                tokio::spawn(async move {
                    // Until the request's head is in (the preflight connect sends nothing).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let mut seen = seen.lock().unwrap();
                    seen.peers.push(peer);
                    if seen.peers.len() % 2 == 1 {
                        tcp.set_zero_linger().unwrap();
                    }
                });
                continue;
            }
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

/// A server that ends connections before answering their upgrade (a gateway's handshake
/// timeout): failed upgrades, not users that were connected and lost.
#[test]
fn handshakes_the_server_ended_count_as_failed_upgrades() {
    let (addr, seen, _rt) = server(Mode::DropBeforeUpgrade);
    let url = format!("ws://{addr}/socket/websocket");
    let (r, _dir) = run(&[
        "--url",
        &url,
        "--scenario",
        "phoenix-idle",
        "--users",
        "20",
        "--arrival-rate",
        "40",
        "--duration",
        "2",
    ]);
    r.assert_ok();
    let s = r.summary();
    assert_eq!(seen.lock().unwrap().peers.len(), 20);
    assert_eq!(u(&s, "arrivals"), 20, "{s}");
    assert_eq!(u(&s, "connected"), 0, "{s}");
    assert_eq!(u(&s, "errors.upgrade"), 20, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "errors.disconnected"), 0, "{s}");
    assert_eq!(u(&s, "errors.send"), 0, "{s}");
    assert_eq!(u(&s, "errors_total"), 20, "{s}");
    assert_eq!(u(&s, "never_connected"), 0, "{s}");
    assert!(
        r.stderr
            .contains("the server closed the connection before answering the upgrade"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("Connection reset by peer (os error 104) before the upgrade's answer"),
        "{}",
        r.stderr
    );
}

/// With the per-address budget shrunk to 4 (the test knob), 10 users to a loopback server need 3
/// source addresses, chosen from the default pool; with `--source` too small the run does not start.
#[test]
fn loopback_server_gets_enough_source_addresses_chosen_for_it() {
    let (addr, seen, _rt) = server(Mode::Echo);
    let file = scenario_file(ECHO_SCENARIO);
    let url = format!("ws://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["load", "--url", &url, "--scenario"])
        .arg(file.path())
        .args(["--users", "10", "--out"])
        .arg(dir.path())
        .env("RINGGATE_LOAD_PORTS_PER_SOURCE", "4")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let r = helpers::finish(child, dir.path(), std::time::Duration::from_secs(50));
    r.assert_ok();
    assert!(
        r.stderr.contains(
            "ringgate load: 10 users need 3 source addresses (4 per address, set by \
             RINGGATE_LOAD_PORTS_PER_SOURCE): binding 127.0.1.1-127.0.1.3 (chosen automatically"
        ),
        "{}",
        r.stderr
    );
    let s = r.summary();
    assert_eq!(u(&s, "transactions.echo.count"), 30, "{s}");
    assert_eq!(s["sources"]["mode"], "auto", "{s}");
    assert_eq!(u(&s, "sources.addresses"), 3, "{s}");
    assert_eq!(u(&s, "sources.most_users_per_address"), 4, "{s}");
    let mut ips: Vec<String> = seen
        .lock()
        .unwrap()
        .peers
        .iter()
        .map(|p| p.ip().to_string())
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        [
            "127.0.1.1",
            "127.0.1.1",
            "127.0.1.1",
            "127.0.1.1",
            "127.0.1.2",
            "127.0.1.2",
            "127.0.1.2",
            "127.0.1.3",
            "127.0.1.3",
            "127.0.1.3"
        ]
    );

    // Two given addresses, 5 users each, over the budget. With users that hold their connection
    // to the end (phoenix-idle) the run is refused, with the fix.
    let dir = tempfile::tempdir().unwrap();
    let given = |scenario: &std::path::Path, dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["load", "--url", &url, "--scenario"])
            .arg(scenario)
            .args(["--users", "10", "--source", "127.0.0.2-127.0.0.3", "--out"])
            .arg(dir)
            .env("RINGGATE_LOAD_PORTS_PER_SOURCE", "4")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = given(std::path::Path::new("phoenix-idle"), dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "ringgate load: --source gives 2 address(es) for 10 users over 1 process(es): up to 5 \
         connections on one address, but 4 per address, set by RINGGATE_LOAD_PORTS_PER_SOURCE. \
         3 addresses are needed: pass --source 127.0.1.1-127.0.1.3 or drop --source to let \
         ringgate load choose"
    );
    assert!(!dir.path().join("summary.json").exists());
    // The echo scenario's sessions close before the run ends: the same finding is a warning and
    // the run goes on, on the given addresses.
    let dir = tempfile::tempdir().unwrap();
    let out = given(file.path(), dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("ringgate load: warning: --source gives 2 address(es) for 10 users"),
        "{stderr}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["sources"]["mode"], "given", "{s}");
    assert_eq!(u(&s, "transactions.echo.count"), 30, "{s}");
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
