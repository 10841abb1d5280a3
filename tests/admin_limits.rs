//! The admin port's bounds, driven as a hostile or careless client would: a request without the
//! key that announces a large body, a request that stalls half-way, a keep-alive connection that
//! goes quiet, and more connections than the port serves at once.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Gateway;

/// Everything the server sends on `s` until it closes the connection, or `None` if it does not
/// close it within `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect to the admin port")
}

#[test]
fn a_request_without_the_key_is_refused_before_its_body_is_read() {
    let gw = Gateway::start(&["--workers", "1", "--api-key", "s3cret"]);
    let mut s = connect(gw.admin);
    // A megabyte announced and none of it sent: the answer must not wait for it.
    s.write_all(
        b"POST /api/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .expect("the refusal came without the body");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // With the key the same route still works.
    let body = r#"{"topic":"rooms:x","event":"e","payload":{}}"#;
    let resp = common::http_request(
        gw.admin,
        &format!(
            "POST /api/broadcast HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
}

#[test]
fn stalled_requests_and_quiet_connections_are_ended() {
    let gw = Gateway::start(&["--workers", "1", "--admin-timeout-ms", "2500"]);

    // Half a request line's headers, then nothing: the connection is closed.
    let mut s = connect(gw.admin);
    s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    read_until_closed(&mut s, Duration::from_secs(10)).expect("headers that stall are cut");

    // A body that stalls: 408, then the connection is closed.
    let mut s = connect(gw.admin);
    s.write_all(
        b"POST /api/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"topic\":",
    )
    .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).expect("a body that stalls");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A keep-alive connection that got its answer and then says nothing is closed too.
    let mut s = connect(gw.admin);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).expect("a quiet keep-alive");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that keeps to the time is served as before.
    let resp = common::http_request(
        gw.admin,
        "GET /api/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn past_the_connection_bound_a_client_waits_until_one_ends() {
    let gw = Gateway::start(&["--workers", "1", "--admin-max-connections", "2"]);
    // Ready-checks of `Gateway::start` may still hold their permits for a moment.
    common::wait_for("the start-up probes to end", Duration::from_secs(5), || {
        common::http_request(
            gw.admin,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(gw.admin)).collect();
    // Each held connection is served (so counted): it answers a request and stays open.
    for s in &mut held {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("a held connection is served");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut third = connect(gw.admin);
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_until_closed(&mut third, Duration::from_secs(1)),
        None,
        "a third connection was served while two were held"
    );
    drop(held.pop());
    let answer =
        read_until_closed(&mut third, Duration::from_secs(5)).expect("served once one ended");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn the_admin_timeout_must_cover_the_cluster_views() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--bus-url",
            "redis://127.0.0.1:1",
            "--admin-timeout-ms",
            "4000",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_timeout_ms"), "{err}");
}
