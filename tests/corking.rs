//! Corked sends: frames queued for one connection leave coalesced (one SENDMSG over several
//! frames), and short sends resume in the middle of the iovec. With a tiny socket send buffer every
//! vectored send comes back short; the subscriber must still receive every broadcast, in order.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{admin_stats, http_request, Gateway};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);
const BROADCASTS: u64 = 400;

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x11, 0x33, 0x77];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    assert!(payload.len() < 126);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame's payload.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).expect("a frame header");
    let len = match hdr[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            usize::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("a frame body");
    body
}

fn subscriber(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(
        common::UPGRADE
            .replace("{path}", "/socket/websocket?vsn=2.0.0")
            .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s.write_all(&masked_text(br#"["1","1","rooms:cork","phx_join",{}]"#))
        .unwrap();
    let reply: Value = serde_json::from_slice(&read_frame(&mut s)).unwrap();
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    s
}

fn sum(admin: SocketAddr, counter: &str) -> u64 {
    admin_stats(admin)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["stats"][counter].as_u64().unwrap())
        .sum()
}

#[test]
fn order_is_kept_and_nothing_lost_under_corking_with_short_sends() {
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--send-buffer-bytes",
        "4096",
        "--max-send-queue-bytes",
        "16777216",
    ]);
    // What went out before the subscribers (the start's readiness probe on the gateway port).
    let frames_before = sum(gw.admin, "frames_out");
    let mut subs: Vec<TcpStream> = (0..3).map(|_| subscriber(gw.addr)).collect();
    // The subscribers do not read while the broadcasts are posted in batches: their queues grow,
    // so frames leave coalesced, and the 4 KiB send buffer makes those sends short.
    let pad = "c".repeat(700);
    for batch in 0..BROADCASTS / 20 {
        let items: Vec<String> = (0..20)
            .map(|i| {
                let n = batch * 20 + i;
                format!(
                    r#"{{"topic":"rooms:cork","event":"seq","payload":{{"n":{n},"pad":"{pad}"}}}}"#
                )
            })
            .collect();
        let body = format!("[{}]", items.join(","));
        let req = format!(
            "POST /api/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = http_request(gw.admin, &req).unwrap();
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    let t = Instant::now();
    for (i, s) in subs.iter_mut().enumerate() {
        for want in 0..BROADCASTS {
            let v: Value = serde_json::from_slice(&read_frame(s)).expect("a JSON frame");
            assert_eq!(v[3], "seq", "subscriber {i}: {v}");
            assert_eq!(v[4]["n"], want, "subscriber {i} out of order or lost");
        }
        assert!(t.elapsed() < PATIENCE);
    }
    // Each subscriber was sent its upgrade response, its join reply and every broadcast.
    let delivered = 3 * (BROADCASTS + 2);
    let sends = sum(gw.admin, "sends");
    // Coalescing happened: fewer send calls than frames, although every short send (the 4 KiB
    // socket buffer makes most of them short) costs a call of its own.
    assert!(sends < delivered, "{sends} sends for {delivered} frames");
    assert_eq!(sum(gw.admin, "deliveries"), 3 * BROADCASTS);
    // Every frame counts once in `frames_out`, however many short sends it took. The subscribers
    // can have the last bytes a moment before the worker reaps that send's completion, so the
    // count is awaited (bounded), then must be exact: a resumed frame counted again overshoots.
    let t = Instant::now();
    let frames_out = || sum(gw.admin, "frames_out") - frames_before;
    let mut counted = frames_out();
    while counted < delivered && t.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
        counted = frames_out();
    }
    assert_eq!(counted, delivered, "frames_out against frames sent");
}
