//! The servers under test and how the benches drive them: start one on free loopback ports, wait for
//! `GET /healthz` → 200, publish a broadcast through its admin API (or as a Phoenix client push), and
//! stop it by PID when its `Server` drops.
//!
//! Roles: `ringgate` (`target/release/ringgate serve …`), `peer` (tokio-tungstenite with tungstenite's
//! default buffers), `peer4k` (the same peer with 4 KiB read/write buffers, the tuned baseline),
//! `fastws` (`peer_fastwebsockets`: hyper + fastwebsockets with a buffered writer, the fast baseline),
//! and the raw io_uring fan-out floor (`target/release/examples/floor_uring`, no WebSocket library, no Phoenix
//! on the send path: the physical limit of the box) as `floor` (one `SEND` per frame), `floor-msg`
//! (queued frames in one `SENDMSG`), `floor-copy` (queued frames copied into one `SEND`) and
//! `floor-bundle` (queued frames in one send bundle over a per-connection provided-buffer ring). The
//! floor serves only Phoenix joins and broadcasts (no `/echo`).
//! `ringgate-base` is ringgate again from another binary (`--base-bin`: a build of an earlier
//! commit), so a change is measured against what it replaces in the same run, not against a figure
//! taken on another day. `--ringgate-bin` may point at the peer binary, which accepts ringgate's
//! command line, to try the harness before ringgate serves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::clock::mono_ns;
use super::guard::{self, ProcGuard};
use super::wsclient::{join_reply, join_text, TOPIC};
use super::wsframe::{self, OP_TEXT};

/// Time a server gets to answer /healthz after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time one admin publish (connect, request, answer) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Ringgate,
    /// ringgate from `--base-bin`: the same-run baseline of a change.
    RinggateBase,
    Peer,
    Peer4k,
    Fastws,
    /// The raw io_uring floor with its `--send` mode.
    Floor(FloorSend),
}

/// How the floor sends a connection's queued frames (its `--send`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorSend {
    One,
    Msg,
    Copy,
    Bundle,
}

impl FloorSend {
    fn arg(self) -> &'static str {
        match self {
            FloorSend::One => "one",
            FloorSend::Msg => "msg",
            FloorSend::Copy => "copy",
            FloorSend::Bundle => "bundle",
        }
    }
}

impl Role {
    /// Parses a comma-separated list such as `ringgate,peer,peer4k` (repeats allowed).
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        s.split(',')
            .map(|name| match name.trim() {
                "ringgate" => Ok(Role::Ringgate),
                "ringgate-base" => Ok(Role::RinggateBase),
                "peer" => Ok(Role::Peer),
                "peer4k" => Ok(Role::Peer4k),
                "fastws" => Ok(Role::Fastws),
                "floor" => Ok(Role::Floor(FloorSend::One)),
                "floor-msg" => Ok(Role::Floor(FloorSend::Msg)),
                "floor-copy" => Ok(Role::Floor(FloorSend::Copy)),
                "floor-bundle" => Ok(Role::Floor(FloorSend::Bundle)),
                other => Err(format!(
                    "unknown server {other:?}: expected ringgate, ringgate-base, peer, peer4k, fastws, floor, floor-msg, floor-copy or floor-bundle"
                )),
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Ringgate => "ringgate",
            Role::RinggateBase => "ringgate-base",
            Role::Peer => "peer",
            Role::Peer4k => "peer4k",
            Role::Fastws => "fastws",
            Role::Floor(FloorSend::One) => "floor",
            Role::Floor(FloorSend::Msg) => "floor-msg",
            Role::Floor(FloorSend::Copy) => "floor-copy",
            Role::Floor(FloorSend::Bundle) => "floor-bundle",
        }
    }

    pub fn is_peer(self) -> bool {
        self != Role::Ringgate
    }

    /// ringgate itself, from either binary (`ringgate` or `ringgate-base`): it has the admin API
    /// and its /metrics.
    pub fn is_ringgate(self) -> bool {
        matches!(self, Role::Ringgate | Role::RinggateBase)
    }
}

/// Binaries and settings shared by every server of a run.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub ringgate_bin: PathBuf,
    pub peer_bin: PathBuf,
    pub fastws_bin: PathBuf,
    /// The earlier ringgate build of role `ringgate-base`; set and checked by `with_base_bin`.
    pub base_bin: Option<PathBuf>,
    /// The floor (`floor_uring` example); set and checked by `with_floor_bin`.
    pub floor_bin: PathBuf,
    /// ringgate `--workers` and peer `--threads`.
    pub workers: usize,
    /// Start an admin listener too (the broadcast bench publishes through it).
    pub admin: bool,
    /// More `ringgate serve` flags (the bus bench adds `--bus-url` and a node name).
    pub extra_args: Vec<String>,
}

impl ServerOpts {
    /// Default binary paths under the target directory, or the given overrides; checks they exist.
    pub fn resolve(
        ringgate_bin: Option<PathBuf>,
        peer_bin: Option<PathBuf>,
        fastws_bin: Option<PathBuf>,
        roles: &[Role],
        workers: usize,
        admin: bool,
    ) -> Result<ServerOpts, String> {
        let release = super::report::target_dir().join("release");
        let ringgate_bin = ringgate_bin.unwrap_or_else(|| release.join("ringgate"));
        let peer_bin =
            peer_bin.unwrap_or_else(|| release.join("examples").join("peer_tokio_tungstenite"));
        let fastws_bin =
            fastws_bin.unwrap_or_else(|| release.join("examples").join("peer_fastwebsockets"));
        let need_ringgate = roles.contains(&Role::Ringgate);
        let need_peer = roles.iter().any(|r| matches!(r, Role::Peer | Role::Peer4k));
        let need_fastws = roles.contains(&Role::Fastws);
        for (needed, path) in [
            (need_ringgate, &ringgate_bin),
            (need_peer, &peer_bin),
            (need_fastws, &fastws_bin),
        ] {
            if needed && !path.is_file() {
                return Err(format!(
                    "{} is missing: build the servers first with `cargo build --release --bins --examples`",
                    path.display()
                ));
            }
        }
        Ok(ServerOpts {
            ringgate_bin,
            peer_bin,
            fastws_bin,
            base_bin: None,
            floor_bin: release.join("examples").join("floor_uring"),
            workers,
            admin,
            extra_args: Vec::new(),
        })
    }

    /// The `ringgate-base` binary: required (and checked) when that role is in `roles`.
    pub fn with_base_bin(mut self, path: Option<PathBuf>, roles: &[Role]) -> Result<Self, String> {
        if roles.contains(&Role::RinggateBase) {
            match &path {
                Some(p) if p.is_file() => {}
                Some(p) => return Err(format!("--base-bin {} is not a file", p.display())),
                None => return Err(
                    "server ringgate-base needs --base-bin (a ringgate built at another commit)"
                        .to_owned(),
                ),
            }
        }
        self.base_bin = path;
        Ok(self)
    }

    /// The floor binary: `path`, or the default under the target directory; checked when a floor role
    /// is in `roles`.
    pub fn with_floor_bin(mut self, path: Option<PathBuf>, roles: &[Role]) -> Result<Self, String> {
        if let Some(path) = path {
            self.floor_bin = path;
        }
        if roles.iter().any(|r| matches!(r, Role::Floor(_))) && !self.floor_bin.is_file() {
            return Err(format!(
                "{} is missing: build it first with `cargo build --release --bins --examples`",
                self.floor_bin.display()
            ));
        }
        Ok(self)
    }
}

/// A running server, stopped by PID on drop.
pub struct Server {
    pub role: Role,
    /// `role` plus an index when a role appears twice in one run.
    pub label: String,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    guard: ProcGuard,
}

impl Server {
    /// Starts `role` on free loopback ports and waits for /healthz.
    pub fn start(role: Role, label: &str, opts: &ServerOpts) -> Result<Server, String> {
        let addr = free_port()?;
        // ringgate always serves its admin API (on 127.0.0.1:4001 unless told): a free port, so two
        // ringgates (`ringgate`, `ringgate-base`) can run side by side.
        let admin_addr = if opts.admin || role.is_ringgate() {
            Some(free_port()?)
        } else {
            None
        };
        let mut cmd = match role {
            Role::Ringgate | Role::RinggateBase => {
                let bin = match (role, &opts.base_bin) {
                    (Role::RinggateBase, Some(base)) => base,
                    _ => &opts.ringgate_bin,
                };
                let mut cmd = Command::new(bin);
                cmd.args([
                    "serve",
                    "--listen",
                    &addr.to_string(),
                    "--workers",
                    &opts.workers.to_string(),
                ])
                .args(["--echo-path", "/echo", "--log-level", "warn"])
                .args(&opts.extra_args);
                cmd
            }
            Role::Peer | Role::Peer4k => {
                let read_buffer_bytes = if role == Role::Peer4k { "4096" } else { "0" };
                let mut cmd = Command::new(&opts.peer_bin);
                cmd.args([
                    "--listen",
                    &addr.to_string(),
                    "--threads",
                    &opts.workers.to_string(),
                ])
                .args(["--read-buffer-bytes", read_buffer_bytes]);
                cmd
            }
            Role::Fastws => {
                let mut cmd = Command::new(&opts.fastws_bin);
                cmd.args([
                    "--listen",
                    &addr.to_string(),
                    "--threads",
                    &opts.workers.to_string(),
                ]);
                cmd
            }
            Role::Floor(send) => {
                let mut cmd = Command::new(&opts.floor_bin);
                cmd.args([
                    "--listen",
                    &addr.to_string(),
                    "--threads",
                    &opts.workers.to_string(),
                    "--send",
                    send.arg(),
                ]);
                cmd
            }
        };
        if let Some(admin) = admin_addr {
            cmd.args(["--admin-listen", &admin.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let guard = ProcGuard::spawn(label, &mut cmd).map_err(|e| format!("start {label}: {e}"))?;
        let mut server = Server {
            role,
            label: label.to_owned(),
            addr,
            admin_addr,
            guard,
        };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Err when the server process has exited (say so instead of measuring a corpse).
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.guard.exited() {
            Some(status) => Err(format!("{} exited: {status}", self.label)),
            None => Ok(()),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < until {
            self.check_alive()?;
            match http_request(
                self.addr,
                "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
            ) {
                Ok(answer) if answer.starts_with(b"HTTP/1.1 200") => return Ok(()),
                Ok(answer) => {
                    last_error =
                        String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned()
                }
                Err(e) => last_error = e,
            }
            guard::sleep_checked(Duration::from_millis(50))?;
        }
        Err(format!(
            "{} not ready within {} s: {last_error}",
            self.label,
            READY_TIMEOUT.as_secs()
        ))
    }

    /// Publishes `event` with a JSON object payload through the admin API; returns the CLOCK_MONOTONIC
    /// time taken after the connection is up and just before the request is written, which is also
    /// written into the payload as `t_ns`. `payload_fields` is the inside of the payload object.
    pub fn publish_admin(&self, event: &str, payload_fields: &str) -> Result<u64, String> {
        self.publish_admin_with(|t_ns| broadcast_json(TOPIC, event, payload_fields, t_ns))
    }

    /// Publishes several broadcasts in one admin request (a JSON array: the servers take each element
    /// as its own broadcast, in order), `(topic, payload_fields)` each, all stamped with one `t_ns`,
    /// which is returned. A burst published this way reaches the server in one read.
    pub fn publish_admin_many(
        &self,
        event: &str,
        items: &[(String, String)],
    ) -> Result<u64, String> {
        self.publish_admin_with(|t_ns| {
            let parts: Vec<String> = items
                .iter()
                .map(|(topic, fields)| broadcast_json(topic, event, fields, t_ns))
                .collect();
            format!("[{}]", parts.join(","))
        })
    }

    fn publish_admin_with(&self, body: impl FnOnce(u64) -> String) -> Result<u64, String> {
        let admin = self
            .admin_addr
            .ok_or("server started without an admin listener")?;
        let mut stream = TcpStream::connect(admin).map_err(|e| format!("admin connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(PUBLISH_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let t_ns = mono_ns();
        let body = body(t_ns);
        let request = format!(
            "POST /api/broadcast HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("admin write: {e}"))?;
        let answer = read_http_head(&mut stream)?;
        if !answer.starts_with(b"HTTP/1.1 2") {
            let line = String::from_utf8_lossy(&answer[..answer.len().min(60)]).into_owned();
            return Err(format!("admin publish answered {line:?}"));
        }
        Ok(t_ns)
    }

    /// The counter or gauge `name` from the server's /metrics (ringgate's admin API), summed over
    /// its labels.
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        Ok(self.metric_series(name)?.iter().sum())
    }

    /// Every series of metric `name` (e.g. one per worker), in the order /metrics lists them.
    pub fn metric_series(&self, name: &str) -> Result<Vec<f64>, String> {
        let admin = self.admin_addr.ok_or("no admin listener")?;
        let body = http_get(admin, "/metrics")?;
        Ok(body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect())
    }
}

/// The body of `GET path` on `addr` (HTTP/1.1, the connection closed by the server).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned())
}

/// One broadcast as the admin API takes it; `t_ns` goes into the payload.
fn broadcast_json(topic: &str, event: &str, payload_fields: &str, t_ns: u64) -> String {
    format!(
        r#"{{"topic":"{topic}","event":"{event}","payload":{{{payload_fields},"t_ns":{t_ns}}}}}"#
    )
}

/// A joined Phoenix V1 connection that publishes by client push (the chat-room path): the server
/// broadcasts any event pushed on a joined `rooms:*` topic to all members, this one included.
pub struct PushPublisher {
    stream: TcpStream,
    next_ref: u64,
}

impl PushPublisher {
    pub fn connect(server: SocketAddr) -> Result<PushPublisher, String> {
        let mut stream =
            TcpStream::connect(server).map_err(|e| format!("publisher connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(PUBLISH_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(wsframe::upgrade_request(server, "/socket/websocket").as_bytes())
            .map_err(|e| format!("publisher upgrade: {e}"))?;
        let mut buf = Vec::new();
        let head = loop {
            if let Some(n) = wsframe::head_len(&buf) {
                break n;
            }
            read_more(&mut stream, &mut buf)?;
        };
        wsframe::check_upgrade_response(&buf[..head])?;
        buf.drain(..head);
        let join = wsframe::client_frame(OP_TEXT, join_text(false, TOPIC).as_bytes(), [9, 8, 7, 6]);
        stream
            .write_all(&join)
            .map_err(|e| format!("publisher join: {e}"))?;
        loop {
            while let Some(frame) = wsframe::parse_server_frame(&buf)? {
                let reply =
                    join_reply(&String::from_utf8_lossy(&buf[frame.payload.clone()]), false);
                buf.drain(..frame.len);
                match reply {
                    Some(true) => {
                        let reader = stream.try_clone().map_err(|e| e.to_string())?;
                        std::thread::spawn(move || drain(reader));
                        return Ok(PushPublisher {
                            stream,
                            next_ref: 2,
                        });
                    }
                    Some(false) => return Err("publisher join refused".to_owned()),
                    None => {}
                }
            }
            read_more(&mut stream, &mut buf)?;
        }
    }

    /// Pushes `event`; returns the CLOCK_MONOTONIC time written into the payload as `t_ns`.
    pub fn publish(&mut self, event: &str, payload_fields: &str) -> Result<u64, String> {
        let t_ns = mono_ns();
        let text = format!(
            r#"{{"topic":"{TOPIC}","event":"{event}","payload":{{{payload_fields},"t_ns":{t_ns}}},"ref":"{}"}}"#,
            self.next_ref
        );
        self.next_ref += 1;
        let frame = wsframe::client_frame(OP_TEXT, text.as_bytes(), [4, 3, 2, 1]);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("publisher push: {e}"))?;
        Ok(t_ns)
    }
}

/// Reads and discards what the server sends the publisher (its own copies of the broadcasts), so its
/// receive window never closes.
fn drain(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(None);
    let mut buf = [0u8; 16384];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => Err("closed by server".to_owned()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Sends `request` and returns the answer's head (and whatever body bytes came with it).
fn http_request(addr: SocketAddr, request: &str) -> Result<Vec<u8>, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    read_http_head(&mut stream)
}

fn read_http_head(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    while wsframe::head_len(&buf).is_none() {
        if buf.len() > wsframe::RESPONSE_HEAD_BYTES_MAX {
            return Err("HTTP answer head too large".to_owned());
        }
        read_more(stream, &mut buf)?;
    }
    Ok(buf)
}

/// Path of a results file under the target directory.
pub fn results_path(name: &str) -> PathBuf {
    super::report::target_dir().join("bench-results").join(name)
}
