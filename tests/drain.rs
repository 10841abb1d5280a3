//! Graceful drain: SIGTERM (or POST /api/drain) stops accepting and closes every connection with
//! 1012, spread over `drain_ms`; the process exits by itself once empty.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, RawClient};

fn sigterm(pid: u32) {
    // SAFETY: sends a signal to our own child process.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

fn drain_and_check(mut gw: Gateway, trigger: impl FnOnce(&Gateway)) {
    const CLIENTS: usize = 40;
    let mut clients: Vec<RawClient> = (0..CLIENTS)
        .map(|_| RawClient::connect(gw.addr, "/socket/websocket?vsn=2.0.0"))
        .collect();
    let started = Instant::now();
    trigger(&gw);
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            std::thread::spawn(move || {
                let code = c.expect_close();
                (code, Instant::now())
            })
        })
        .collect();
    let mut times = Vec::new();
    for r in readers {
        let (code, at) = r.join().unwrap();
        assert_eq!(code, Some(1012));
        times.push(at.duration_since(started));
    }
    times.sort();
    let spread = times[CLIENTS - 1] - times[0];
    assert!(
        spread >= Duration::from_millis(800),
        "closes were not spread: {times:?}"
    );
    // No new connections once draining: every listener was shut down, so a connect is refused
    // at once (it does not sit in a backlog no one accepts from until the process exits).
    for _ in 0..5 {
        let refused = std::net::TcpStream::connect_timeout(&gw.addr, Duration::from_secs(2));
        assert_eq!(
            refused.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::ConnectionRefused),
            "a connect while draining: {refused:?}"
        );
    }
    // The process exits by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_drains_with_1012_spread_over_drain_ms() {
    let gw = Gateway::start(&[
        "--workers",
        "2",
        "--drain-ms",
        "2000",
        "--timer-tick-ms",
        "100",
    ]);
    drain_and_check(gw, |gw| sigterm(gw.pid()));
}

#[test]
fn admin_drain_endpoint_drains_too() {
    let gw = Gateway::start(&[
        "--workers",
        "2",
        "--drain-ms",
        "2000",
        "--timer-tick-ms",
        "100",
    ]);
    drain_and_check(gw, |gw| {
        let resp = common::http_request(
            gw.admin,
            "POST /api/drain HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    });
}
