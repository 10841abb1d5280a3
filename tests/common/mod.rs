//! Shared test helpers: a ringgate process on a free port, raw-socket WebSocket helpers.
#![allow(dead_code)]

pub mod aio;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `ringgate serve` child process, killed (by its PID) when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// The control-plane (admin API) address.
    pub admin: SocketAddr,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gateway {
    /// Starts the gateway with `args` (after `serve --listen ...`) and waits until both the
    /// gateway port and the admin port answer /healthz. The admin thread starts its runtime and
    /// binds after the workers, so a test that counts descriptors must not start before it.
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                &admin.to_string(),
                "--log-level",
                "warn",
            ])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ringgate");
        let gw = Self { child, addr, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ready = |at: SocketAddr| {
                http_request(
                    at,
                    "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
                .is_ok_and(|resp| resp.starts_with("HTTP/1.1 200"))
            };
            if ready(addr) && ready(admin) {
                return gw;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not become ready on {addr}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Open descriptors of the gateway process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident set size of the gateway process, bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ok` every 50 ms until it holds; fails the test, naming `what`, if it does not within
/// `limit`. For anything the server applies on its own schedule (another thread, a worker's next
/// loop turn, a close it has yet to reap): a test waits for the state, never a fixed time.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] inside an async test: the same 50 ms polls and bound, without blocking the
/// runtime's thread between them.
pub async fn wait_for_async(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/stats` on the admin port, parsed.
pub fn admin_stats(admin: SocketAddr) -> serde_json::Value {
    let resp = http_request(
        admin,
        "GET /api/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .expect("GET /api/stats");
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON stats")
}

/// Sends a raw HTTP request and returns everything the server sends until it closes.
pub fn http_request(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub const UPGRADE: &str = "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends the upgrade for `/echo` on `s`; the stream back if the answer starts with 101 (refused,
/// dropped or closed: `None`).
pub fn upgrade_echo(mut s: TcpStream) -> Option<TcpStream> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(UPGRADE.replace("{path}", "/echo").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    head.starts_with(b"HTTP/1.1 101").then_some(s)
}

/// A raw client: upgraded TCP stream with the 101 response consumed.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(UPGRADE.replace("{path}", path).as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                buf.drain(..end + 4);
                return Self { stream, buf };
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// A masked client frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        ringgate::ws::frame::write_header(&mut out, fin, opcode, Some([1, 2, 3, 4]), payload.len());
        let start = out.len();
        out.extend_from_slice(payload);
        ringgate::ws::mask::apply_mask(&mut out[start..], [1, 2, 3, 4], 0);
        self.send_raw(&out);
    }

    /// Reads the next server frame: (fin, opcode, payload). `None` on EOF.
    pub fn read_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        loop {
            if let Ok(Some((h, len))) = ringgate::ws::frame::decode_header(&self.buf) {
                assert!(h.mask.is_none(), "server frames are unmasked");
                let total = len + h.payload_len as usize;
                if self.buf.len() >= total {
                    let payload = self.buf[len..total].to_vec();
                    self.buf.drain(..total);
                    return Some((h.fin, h.opcode, payload));
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (None for an empty close payload).
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let (_, opcode, payload) = self.read_frame().expect("EOF before a close frame");
            if opcode == 8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// After the close frame the server half-closes: the next read is EOF.
    pub fn expect_eof(&mut self) {
        assert!(self.read_frame().is_none(), "expected EOF");
    }
}

/// Runs an async test body on a 2-thread runtime under an overall time limit, so that every await
/// in it is bounded: a hang fails the test after `limit` instead of stalling CI.
pub fn bounded<F: std::future::Future>(limit: Duration, body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(async {
            tokio::time::timeout(limit, body)
                .await
                .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
        })
}
