//! A worker that dies (its loop returns an error, or it panics) is noticed by the process, driven
//! from outside through the test-only `--debug-fault-injection` admin route:
//! - by default the process logs it and exits with status 1 (for a supervisor to restart it);
//! - with `--on-worker-death keep-serving` it stays up: `/metrics` counts the dead worker, its
//!   members leave the topic table (a broadcast reaches exactly the survivors' members), its
//!   connections are gone, and new connections are all served by the remaining worker (its
//!   listener no longer takes a share of them); and with `max_connections_per_ip`, a panicked
//!   worker's connections leave their address's count (new ones take their place).
//!
//! Every socket read has a timeout; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_for, RawClient};

/// A gateway child with its output (logs on stdout, the exit reason on stderr) collected, killed
/// by PID on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    output: std::sync::mpsc::Receiver<String>,
}

fn collect(mut pipe: impl Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
}

impl Proc {
    fn start(extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args([
                "--log-level",
                "warn",
                "--workers",
                "2",
                "--debug-fault-injection",
            ])
            .args(["--echo-path", "/echo", "--close-timeout-ms", "1000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringgate");
        let (tx, output) = std::sync::mpsc::channel();
        collect(child.stdout.take().unwrap(), tx.clone());
        collect(child.stderr.take().unwrap(), tx);
        let p = Self {
            child,
            addr,
            admin,
            output,
        };
        wait_for("the admin API", Duration::from_secs(20), || {
            http(p.admin, "GET", "/healthz").is_ok_and(|(s, _)| s == 200)
        });
        p
    }

    /// Waits (bounded) for the process to exit; returns its status and everything it logged.
    fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = String::new();
                for _ in 0..2 {
                    log += &self
                        .output
                        .recv_timeout(Duration::from_secs(10))
                        .expect("the output pipes close with the process");
                }
                return (status, log);
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let (status, body) = http(self.admin, "GET", "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        let line = body
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"));
        line[name.len() + 1..].trim().parse().unwrap()
    }

    fn subscribers(&self, topic: &str) -> u64 {
        let (status, body) = http(self.admin, "GET", &format!("/api/topics/{topic}")).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["subscribers"].as_u64().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with an empty or JSON body; (status, body). Reads with a timeout.
fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_body(addr, method, path, "")
}

fn http_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// What a read on a client brought.
#[derive(Debug, PartialEq)]
enum Read1 {
    Text(String),
    /// EOF or connection reset: the server side is gone.
    Gone,
}

/// Reads the next text frame or the end of the connection; a timeout fails the test (it is
/// neither, and must not be taken for either).
fn next(c: &mut RawClient) -> Read1 {
    let started = Instant::now();
    loop {
        if let Ok(Some((h, len))) = ringgate::ws::frame::decode_header(&c.buf) {
            let total = len + h.payload_len as usize;
            if c.buf.len() >= total {
                let payload = c.buf[len..total].to_vec();
                c.buf.drain(..total);
                if h.opcode == 1 {
                    return Read1::Text(String::from_utf8(payload).unwrap());
                }
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        match c.stream.read(&mut chunk) {
            Ok(0) => return Read1::Gone,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Read1::Gone,
            Err(e) => panic!(
                "read after {:?}: {e} (a timeout is not an end)",
                started.elapsed()
            ),
        }
    }
}

#[test]
fn a_dead_worker_makes_the_process_exit_non_zero_by_default() {
    let mut gw = Proc::start(&[]);
    let mut client = RawClient::connect(gw.addr, "/echo");
    let (status, body) = http(gw.admin, "POST", "/api/debug/fail-worker/1/panic").unwrap();
    assert_eq!(status, 202, "{body}");
    let (exit, log) = gw.wait_exit(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(1), "exit status; log:\n{log}");
    assert!(
        log.contains("worker 1 died: panicked: injected fault"),
        "the death is logged:\n{log}"
    );
    assert!(log.contains("on_worker_death = exit"), "{log}");
    // Whichever worker held it, the client's connection ended with the process.
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(next(&mut client), Read1::Gone);
}

#[test]
fn keep_serving_contains_the_dead_worker_and_serves_on_the_other() {
    const CLIENTS: usize = 40;
    const TOPIC: &str = "rooms:death";
    let gw = Proc::start(&["--on-worker-death", "keep-serving"]);
    let mut clients: Vec<RawClient> = (0..CLIENTS)
        .map(|i| {
            let mut c = RawClient::connect(gw.addr, "/socket/websocket?vsn=2.0.0");
            let join = format!(r#"["{i}","{i}","{TOPIC}","phx_join",{{}}]"#);
            c.send_frame(true, 1, join.as_bytes());
            match next(&mut c) {
                Read1::Text(t) => assert!(t.contains(r#""status":"ok""#), "{t}"),
                Read1::Gone => panic!("client {i} closed before its join reply"),
            }
            c
        })
        .collect();
    assert_eq!(gw.subscribers(TOPIC), CLIENTS as u64);
    let on0 = gw.metric("ringgate_memberships{worker=\"0\"}");
    let on1 = gw.metric("ringgate_memberships{worker=\"1\"}");
    assert_eq!(on0 + on1, CLIENTS as u64);
    // SO_REUSEPORT spreads 40 connections over both workers (all on one: p = 2^-39).
    assert!(on0 > 0 && on1 > 0, "members on both workers: {on0} + {on1}");
    assert_eq!(gw.metric("ringgate_worker_deaths_total"), 0);

    let (status, body) = http(gw.admin, "POST", "/api/debug/fail-worker/1/error").unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for("worker 1 reported dead", Duration::from_secs(10), || {
        gw.metric("ringgate_worker_up{worker=\"1\"}") == 0
    });
    assert_eq!(gw.metric("ringgate_worker_up{worker=\"0\"}"), 1);
    assert_eq!(gw.metric("ringgate_worker_deaths_total"), 1);
    // Its members left the topic table with it.
    assert_eq!(gw.subscribers(TOPIC), on0);

    // A broadcast reaches exactly the survivors' members; the dead worker's connections are gone.
    let (status, body) = http_body(
        gw.admin,
        "POST",
        "/api/broadcast",
        &format!(r#"{{"topic":"{TOPIC}","event":"after","payload":{{"n":1}}}}"#),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let (mut delivered, mut gone) = (0u64, 0u64);
    for c in &mut clients {
        match next(c) {
            Read1::Text(t) => {
                assert!(t.contains(r#""after""#), "{t}");
                delivered += 1;
            }
            Read1::Gone => gone += 1,
        }
    }
    assert_eq!((delivered, gone), (on0, on1));

    // New connections: every one is served (none lands in the dead worker's backlog).
    let mut fresh = Vec::new();
    for i in 0..20 {
        let mut c = RawClient::connect(gw.addr, "/echo");
        let msg = format!("after death {i}");
        c.send_frame(true, 1, msg.as_bytes());
        assert_eq!(next(&mut c), Read1::Text(msg));
        fresh.push(c);
    }
    assert_eq!(gw.metric("ringgate_worker_up{worker=\"1\"}"), 0);
    assert_eq!(
        gw.metric("ringgate_connections_open{worker=\"0\"}"),
        on0 + 20
    );
    let mut gw = gw;
    assert!(gw.child.try_wait().unwrap().is_none(), "still serving");
}

#[test]
fn a_dead_workers_presence_entries_leave_and_the_survivors_see_it() {
    const CLIENTS: usize = 40;
    const TOPIC: &str = "rooms:presence-death";
    let config =
        std::env::temp_dir().join(format!("ringgate-wd-presence-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[presence]\nbatch_ms = 10\n\n[[channels]]\npattern = \"rooms:*\"\non_push = \"broadcast\"\npresence = true\n",
    )
    .unwrap();
    let gw = Proc::start(&[
        "--on-worker-death",
        "keep-serving",
        "--config",
        config.to_str().unwrap(),
    ]);
    let presence = || {
        let (status, body) = http(gw.admin, "GET", &format!("/api/presence/{TOPIC}")).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_object().unwrap().len() as u64
    };
    let _clients: Vec<RawClient> = (0..CLIENTS)
        .map(|i| {
            let mut c = RawClient::connect(gw.addr, "/socket/websocket?vsn=2.0.0");
            let join = format!(r#"["{i}","{i}","{TOPIC}","phx_join",{{}}]"#);
            c.send_frame(true, 1, join.as_bytes());
            match next(&mut c) {
                Read1::Text(t) => assert!(t.contains(r#""status":"ok""#), "{t}"),
                Read1::Gone => panic!("client {i} closed before its join reply"),
            }
            c
        })
        .collect();
    wait_for("every join tracked", Duration::from_secs(10), || {
        presence() == CLIENTS as u64
    });
    let on0 = gw.metric("ringgate_memberships{worker=\"0\"}");
    let on1 = gw.metric("ringgate_memberships{worker=\"1\"}");
    assert!(on0 > 0 && on1 > 0, "members on both workers: {on0} + {on1}");

    let (status, body) = http(gw.admin, "POST", "/api/debug/fail-worker/1/error").unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for("worker 1 reported dead", Duration::from_secs(10), || {
        gw.metric("ringgate_worker_up{worker=\"1\"}") == 0
    });
    // Its connections' entries left with it (no zombie members for the survivors' clients).
    wait_for(
        "the dead worker's entries gone",
        Duration::from_secs(10),
        || presence() == on0,
    );
    let _ = std::fs::remove_file(&config);
}

/// The upgrade of a new connection from 127.0.0.1 to `/echo`: the stream if answered with 101.
fn upgraded(addr: SocketAddr) -> Option<TcpStream> {
    common::upgrade_echo(TcpStream::connect(addr).ok()?)
}

#[test]
fn a_dead_workers_connections_leave_the_per_address_count() {
    const LIMIT: u64 = 30;
    let gw = Proc::start(&[
        "--on-worker-death",
        "keep-serving",
        "--max-connections-per-ip",
        &LIMIT.to_string(),
    ]);
    let held: Vec<TcpStream> = (0..LIMIT)
        .map(|i| upgraded(gw.addr).unwrap_or_else(|| panic!("connection {i} within the limit")))
        .collect();
    let on1 = gw.metric("ringgate_connections_open{worker=\"1\"}");
    assert!(on1 > 0, "connections on worker 1");
    // The address is at its limit.
    assert!(upgraded(gw.addr).is_none(), "one past the limit");

    // A panic: the worker's own exit (which releases each connection's count) never runs.
    let (status, body) = http(gw.admin, "POST", "/api/debug/fail-worker/1/panic").unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for("worker 1 reported dead", Duration::from_secs(10), || {
        gw.metric("ringgate_worker_up{worker=\"1\"}") == 0
    });
    // Its connections are gone, and so is their share of the count: as many new ones are served
    // (by the survivor), and the limit still holds past them.
    let fresh: Vec<TcpStream> = (0..on1)
        .map(|i| {
            upgraded(gw.addr)
                .unwrap_or_else(|| panic!("new connection {i} of {on1} after the death refused"))
        })
        .collect();
    assert!(upgraded(gw.addr).is_none(), "one past the limit again");
    // The refused one is closed as the survivor reaps its close: wait for the count to settle.
    wait_for(
        "the survivor holding the limit",
        Duration::from_secs(10),
        || gw.metric("ringgate_connections_open{worker=\"0\"}") == LIMIT,
    );
    drop((held, fresh));
}
