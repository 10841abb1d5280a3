//! 10,000 idle WebSocket connections held through two workers: none is dropped, and the gateway's
//! fd table does not grow with them (accepted sockets are io_uring direct descriptors).

mod common;

use std::time::Duration;

use common::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 10_000;

async fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = common::UPGRADE.replace("{path}", "/echo");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed during handshake"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Sends a masked ping and expects the pong.
async fn ping(s: &mut TcpStream, tag: u32) {
    let payload = tag.to_be_bytes();
    let mut frame = vec![0x89, 0x80 | 4, 0, 0, 0, 0];
    frame.extend_from_slice(&payload);
    s.write_all(&frame).await.unwrap();
    let mut pong = [0u8; 6];
    s.read_exact(&mut pong).await.expect("pong");
    assert_eq!(pong[..2], [0x8A, 4]);
    assert_eq!(pong[2..], payload);
}

#[test]
fn ten_thousand_idle_connections_through_two_workers() {
    common::bounded(
        Duration::from_secs(300),
        ten_thousand_idle_connections_through_two_workers_body(),
    );
}

async fn ten_thousand_idle_connections_through_two_workers_body() {
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "2",
        "--max-connections-per-worker",
        "12000",
    ]);
    let fds_before = gw.fd_count();
    let rss_before = gw.rss_bytes();
    let addr = gw.addr;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            open(addr).await
        }));
    }
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    // Idle for a while: nothing may be dropped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_after = gw.fd_count();
    assert!(
        fds_after <= fds_before + 2,
        "gateway fd table grew from {fds_before} to {fds_after} with {CONNECTIONS} connections"
    );
    let rss_after = gw.rss_bytes();
    eprintln!(
        "{CONNECTIONS} idle connections: gateway fds {fds_before} -> {fds_after}, RSS {} KiB -> {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for (i, mut s) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(30), ping(&mut s, i as u32))
                .await
                .expect("pong in time");
            s
        }));
    }
    let mut alive = 0;
    for t in tasks {
        t.await.unwrap();
        alive += 1;
    }
    assert_eq!(alive, CONNECTIONS);
}
