//! Gateway configuration: every limit the gateway enforces, its default, and why.
//!
//! A TOML file (`--config FILE`) is read first, then command-line flags override it. The mapping is
//! mechanical: top-level key `x_y` is the flag `--x-y`; key `x_y` in section `[s]` is `--s-x-y`.
//! Everything here is plain data: it is read once at start and shared read-only by all workers.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::bus::BusConfig;
use crate::phoenix::router::{OnPush, Route};

/// Longest `wake_batch_us`: past it the added latency is visible to people (a typing indicator, a
/// chat line), and the wake-ups saved are already few.
pub const MAX_WAKE_BATCH_US: u32 = 100_000;

/// How an idle connection waits for data (see `docs/architecture.md`, "How an idle connection waits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RecvMode {
    /// A multishot `POLL_ADD` per connection, then a one-shot buffer-select `RECV` on readiness.
    /// Costs ~256 B of kernel memory per idle connection (one io_kiocb). The default.
    Poll,
    /// A multishot buffer-select `RECV` per connection: one CQE per read instead of two, but ~864 B
    /// of kernel memory per idle connection (io_kiocb + async msghdr + poll entry).
    Multishot,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (timestamp, level, message, fields) for log shippers.
    Json,
}

/// The whole gateway configuration. Field docs give each default and the reason for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener. Default `127.0.0.1:4000` (the Phoenix dev port), loopback so a first run
    /// exposes nothing.
    pub listen: SocketAddr,
    /// Worker threads, each with its own io_uring and listener. Default: the number of cores.
    /// May exceed the core count: each ring's fixed-file table is capped at the soft
    /// `RLIMIT_NOFILE`, so a box with a low limit holds more connections with more rings.
    pub workers: usize,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive). Default
    /// `info`; per-connection events are logged at `debug` only, because per-join info logs cost
    /// the Phoenix benchmark real throughput.
    pub log_level: String,
    /// Log line format: `text` (default; coloured only on a terminal) or `json` (one object per
    /// line, for log shippers).
    pub log_format: LogFormat,
    /// Connections one worker may hold: the size of its fixed-file table. Default 65536. Capped at
    /// start to the soft `RLIMIT_NOFILE` (the kernel's cap per ring), with a log line saying so.
    pub max_connections_per_worker: u32,
    /// `listen(2)` backlog. Default 4096; the kernel caps it at `net.core.somaxconn`.
    pub listen_backlog: u32,
    /// Time a new connection has to complete its HTTP upgrade. Default 10 s: generous for slow
    /// mobile links, short enough that half-open handshakes (slowloris) cannot pile up.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed. Default 60 s, as Phoenix
    /// (`timeout: 60_000`); clients heartbeat every 30 s, so a live client is never cut.
    pub idle_timeout_ms: u64,
    /// After the close frame is sent, how long to wait for the peer's TCP close before dropping the
    /// socket. Default 5 s: RFC 6455 wants the server to close TCP first but not to wait forever.
    pub close_timeout_ms: u64,
    /// On SIGTERM/SIGINT or `POST /api/drain`, open connections are closed with 1012 spread over
    /// this long. Default 30 s: phoenix.js reconnects after any close, so closing everyone at once
    /// would bring every client back to the next instance in the same second.
    pub drain_ms: u64,
    /// Resolution of the per-worker timer wheel; deadlines fire up to one tick late. Default 1000 ms:
    /// deadlines are seconds-scale, and one wake-up per second per worker is ~0 idle CPU.
    pub timer_tick_ms: u64,
    /// Largest frame payload accepted (1009 past it). Default 1 MiB: far above any Phoenix message
    /// and small enough that one connection cannot pin much memory.
    pub max_frame_bytes: usize,
    /// Largest reassembled message (1009 past it). Default 1 MiB, for the same reason.
    pub max_message_bytes: usize,
    /// Bytes one worker may hold for incomplete input, over all its connections: partial frames,
    /// fragmented messages in progress and partial upgrade request heads. A connection whose input
    /// would pass it is closed with 1009 (503 while upgrading) and counted. Default 256 MiB: each
    /// connection may pin up to `max_frame_bytes` + `max_message_bytes` (2 MiB by default), so
    /// without it a wave of slow senders could take the memory the idle connections need; 256 MiB
    /// still holds 128 maximal messages at once, or hundreds of thousands of typical partial frames.
    /// 0 disables.
    pub max_rx_bytes_per_worker: usize,
    /// Most fragments in one message (1009 past it). Default 1024: stops a peer from making the
    /// server do per-frame work for a message of tiny fragments.
    pub max_fragments: usize,
    /// Largest HTTP upgrade request head. Default 8 KiB, as common HTTP servers; 431 past it.
    pub max_handshake_bytes: usize,
    /// Most header lines in the upgrade request. Default 32: browsers send ~15; 431 past it.
    pub max_handshake_headers: usize,
    /// Bytes one connection may have queued behind the frame being sent. Past it the connection is
    /// closed with 1008 and counted, so a client that stops reading cannot grow server memory.
    /// Default 256 KiB: hundreds of typical broadcasts of burst room.
    pub max_send_queue_bytes: usize,
    /// Connections from one source address, across workers; past it new ones are dropped before
    /// their upgrade is answered. Default 0 (off): behind a load balancer or carrier-grade NAT one
    /// address is thousands of users. Set it on a gateway exposed directly. Needs Linux 6.7
    /// (`getsockopt` through io_uring) and costs ~40 bytes per connection while on, plus ~35 per
    /// distinct address on each worker (the count per worker that a dead worker gives back).
    pub max_connections_per_ip: u32,
    /// Resident memory of the process past which new connections are not accepted (they wait in
    /// the listen backlog; existing ones are served), until it is back under 90%. Default 0
    /// (off): set it below the container's or cgroup's memory limit, so the gateway refuses new
    /// connections with a log line before the OOM killer takes all of them down.
    pub max_memory_bytes: u64,
    /// Upgrades in progress per worker; a connection past it is dropped at once. Default 4096:
    /// bounds the memory of partial request heads (≤ `max_handshake_bytes` each) under a slowloris
    /// wave or a reconnect storm, far above a healthy accept rate × handshake time.
    pub max_handshakes_per_worker: u32,
    /// Data messages (and pings) per second per connection, sustained; bursts of twice that.
    /// Past it the connection is closed with 1008 and counted. Default 100: a chat client sends a
    /// few per second; a flood must not take a worker's time from everyone else. 0 disables.
    pub max_messages_per_second: u32,
    /// Channel joins per second per connection, sustained, with bursts of twice that; past it a
    /// join gets an error reply `{"reason":"too many joins"}` and phoenix.js retries it with its
    /// rejoin backoff. Default 10: a page joins a handful of topics; a loop of joins is refused.
    /// 0 disables.
    pub max_joins_per_second: u32,
    /// `SO_SNDBUF` of accepted sockets (set on the listeners, inherited). Default 0: the kernel
    /// autotunes (up to `net.ipv4.tcp_wmem` max, 4 MiB by default), which is what a fast reader far
    /// away needs. Set it (e.g. 65536) to bound what one slow consumer pins in kernel memory on top
    /// of `max_send_queue_bytes`: the kernel holds up to this much before ringgate's queue fills.
    pub send_buffer_bytes: u32,
    /// How idle connections wait for data. Default `poll` (the cheaper kernel memory).
    pub recv_mode: RecvMode,
    /// How long a worker going to sleep lets completions gather before it wakes for them, µs
    /// (io_uring's `min_wait`, Linux 6.12+). Default 0: it wakes for the first one. A window trades
    /// up to its length of added latency for fewer wake-ups: worth it only where wake-ups dominate
    /// (heartbeats of many idle connections), and only from ~2 ms on this box (docs/performance.md,
    /// "Batched wake-ups"). At most 100 ms.
    pub wake_batch_us: u32,
    /// Size of each provided receive buffer. Default 4096: one page; a typical client message is
    /// far smaller, and larger ones are reassembled across buffers.
    pub recv_buffer_bytes: u32,
    /// Provided receive buffers per worker (a power of two, ≤ 32768). Default 1024 (4 MiB at the
    /// default size): sized by data in flight per loop turn, not by connections, because an idle
    /// connection holds no buffer.
    pub recv_buffers: u16,
    /// Submission queue entries per ring. Default 4096; a broadcast is submitted in SQ-sized batches.
    pub sq_entries: u32,
    /// Completion queue entries per ring. Default 65536 (the kernel's maximum is larger only with
    /// CLAMP); a broadcast to many local members completes in bursts.
    pub cq_entries: u32,
    /// Path of the diagnostic echo endpoint; off by default. Every data message is echoed back.
    /// It exists so conformance suites (Autobahn) can drive the server.
    pub echo_path: Option<String>,
    /// Browser `Origin` values allowed to upgrade. Empty (the default) allows any, including none;
    /// non-browser clients send no Origin. Set it on any deployment browsers reach.
    pub allowed_origins: Vec<String>,
    /// Path of the Phoenix Channels endpoint. Default `/socket/websocket`: phoenix.js appends
    /// `/websocket` to its socket path `/socket`, and the Phoenix benchmark's Tsung scenario uses it.
    pub phoenix_path: String,
    /// Channels one connection may join. Default 100, Phoenix's `max_channels_per_transport`:
    /// bounds what one connection can make the server hold.
    pub max_channels_per_connection: usize,
    /// Lock stripes of the shared topic table. Default 64: contention-free for far more workers
    /// than a box has cores, at ~64 small maps of overhead.
    pub topic_stripes: usize,
    /// Control-plane listener (publish API, topic counts, health). Default `127.0.0.1:4001`:
    /// separate from the public port and loopback-only until deliberately exposed.
    pub admin_listen: SocketAddr,
    /// Admin connections served at once; the next waits in the listen backlog until one ends.
    /// Default 256: the control plane's clients are a handful (an operator, a dashboard per
    /// viewer, a scraper, a publisher's pool), and each connection holds a task and its buffers.
    pub admin_max_connections: usize,
    /// Time an admin connection has to send a request's headers (which also ends a keep-alive
    /// connection silent that long), and again for the request's body and answer; also the
    /// connection's `TCP_USER_TIMEOUT` (an answer left unread). Default 10 s: an answer takes
    /// milliseconds, a scrape at most the 2 s it waits for the workers' reports, so only a stalled
    /// or hostile client meets it. At least 2.5 s; with a bus it must exceed twice
    /// `[bus] response_timeout_ms`, the bound of a cluster view.
    pub admin_timeout_ms: u64,
    /// When set, admin API requests need `Authorization: Bearer <api_key>`. Default unset: the
    /// admin port listens on loopback only.
    pub api_key: Option<String>,
    /// Joinable topic patterns, tried in order, and what a client push does on each
    /// (`broadcast` to the topic, or `reject`). Default: `rooms:*` with `broadcast`, the Phoenix
    /// chat example, so the Phoenix benchmark's scenario works out of the box.
    pub channels: Vec<Route>,
    /// Connect authentication (JWT). Off by default; see `[auth]` in docs/configuration.md.
    pub auth: AuthConfig,
    /// The multi-node bus (Redis). Off by default (one node, no external service); see `[bus]`
    /// in docs/configuration.md.
    pub bus: BusConfig,
    /// What the process does when a worker thread dies (returns an error or panics). Default
    /// `exit`: stop the other workers and exit with status 1, so a supervisor (systemd, Kubernetes)
    /// restarts a whole, healthy process; a process serving on fewer workers than configured holds
    /// fewer connections than it was sized for, and whatever killed one worker may kill the rest.
    /// `keep_serving`: stay up on the remaining workers (the dead one's listener is shut, its
    /// topic counts dropped, its inbox closed), for deployments with no supervisor.
    pub on_worker_death: OnWorkerDeath,
    /// Test-only switch (`--debug-fault-injection`, not settable from a file): enables
    /// the test routes of the admin API (`POST /api/debug/fail-worker/{id}/{error|panic}` and the
    /// others listed in docs/configuration.md), which make a worker fail or stall.
    #[serde(skip)]
    pub debug_fault_injection: bool,
    /// Presence limits and timing; see `[presence]` in docs/configuration.md. Which topics are
    /// tracked is chosen per route (`presence = true`).
    pub presence: crate::presence::PresenceConfig,
}

/// What the process does when a worker dies (see `Config::on_worker_death`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnWorkerDeath {
    /// Stop the other workers and exit with status 1 (the default).
    #[default]
    Exit,
    /// Keep serving on the remaining workers.
    KeepServing,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            max_connections_per_worker: 65536,
            listen_backlog: 4096,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            close_timeout_ms: 5_000,
            drain_ms: 30_000,
            timer_tick_ms: 1_000,
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            max_rx_bytes_per_worker: 256 << 20,
            max_fragments: 1024,
            max_handshake_bytes: 8192,
            max_handshake_headers: 32,
            max_send_queue_bytes: 256 << 10,
            max_connections_per_ip: 0,
            max_memory_bytes: 0,
            max_handshakes_per_worker: 4096,
            max_messages_per_second: 100,
            max_joins_per_second: 10,
            send_buffer_bytes: 0,
            recv_mode: RecvMode::Poll,
            wake_batch_us: 0,
            recv_buffer_bytes: 4096,
            recv_buffers: 1024,
            sq_entries: 4096,
            cq_entries: 65536,
            echo_path: None,
            allowed_origins: Vec::new(),
            phoenix_path: "/socket/websocket".into(),
            max_channels_per_connection: 100,
            topic_stripes: 64,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4001)),
            admin_max_connections: 256,
            admin_timeout_ms: 10_000,
            api_key: None,
            channels: vec![Route::new("rooms:*", OnPush::Broadcast)],
            auth: AuthConfig::default(),
            on_worker_death: OnWorkerDeath::Exit,
            debug_fault_injection: false,
            bus: BusConfig::default(),
            presence: Default::default(),
        }
    }
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema; the message names the line and key.
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A value is out of its allowed range.
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Reads a TOML file; unknown keys are errors so a typo never silently keeps a default.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// The channel router built from `channels`.
    pub fn router(
        &self,
    ) -> Result<crate::phoenix::router::Router, crate::phoenix::router::RouteError> {
        crate::phoenix::router::Router::new(self.channels.clone())
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks cross-field rules and ranges the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.workers == 0 || self.workers > 1024 {
            return bad("workers", "must be 1..=1024");
        }
        if self.max_connections_per_worker == 0 || self.max_connections_per_worker > 1 << 24 {
            return bad("max_connections_per_worker", "must be 1..=16777216");
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return bad("recv_buffers", "must be a power of two ≤ 32768");
        }
        if !(256..=1 << 20).contains(&self.recv_buffer_bytes) {
            return bad("recv_buffer_bytes", "must be 256..=1048576");
        }
        if self.idle_timeout_ms > 3_600_000 {
            return bad("idle_timeout_ms", "must be ≤ 3600000 (1 h)");
        }
        if self.max_messages_per_second > 32767 {
            return bad("max_messages_per_second", "must be ≤ 32767");
        }
        if self.max_joins_per_second > 127 {
            return bad("max_joins_per_second", "must be ≤ 127");
        }
        if self.wake_batch_us > MAX_WAKE_BATCH_US {
            return bad(
                "wake_batch_us",
                &format!("must be ≤ {MAX_WAKE_BATCH_US} (100 ms)"),
            );
        }
        if self.timer_tick_ms == 0 || self.timer_tick_ms > 60_000 {
            return bad("timer_tick_ms", "must be 1..=60000");
        }
        if let Some(p) = &self.echo_path {
            if !p.starts_with('/') {
                return bad("echo_path", "must start with '/'");
            }
        }
        if !self.phoenix_path.starts_with('/') {
            return bad("phoenix_path", "must start with '/'");
        }
        if self.admin_max_connections == 0 || self.admin_max_connections > 65536 {
            return bad("admin_max_connections", "must be 1..=65536");
        }
        if !(2_500..=600_000).contains(&self.admin_timeout_ms) {
            return bad(
                "admin_timeout_ms",
                "must be 2500..=600000 (a scrape waits up to 2 s for the workers' reports)",
            );
        }
        // A publish's topic, event and payload all come in one client message or one admin body.
        let largest_publish = self.max_message_bytes.max(crate::admin::MAX_BODY_BYTES);
        if self.bus.max_queued_publish_bytes < largest_publish {
            return bad(
                "bus",
                "max_queued_publish_bytes must hold the largest publish (max_message_bytes, or the admin API's 1 MiB body)",
            );
        }
        if self.bus.url.is_some()
            && self.admin_timeout_ms <= self.bus.response_timeout_ms.saturating_mul(2)
        {
            return bad(
                "admin_timeout_ms",
                "must exceed twice [bus] response_timeout_ms (a cluster view's bound)",
            );
        }
        if self.topic_stripes == 0 || self.topic_stripes > 65536 {
            return bad("topic_stripes", "must be 1..=65536");
        }
        if let Err(e) = self.router() {
            return bad("channels", &e.to_string());
        }
        if let Err(e) = crate::auth::Authenticator::from_config(&self.auth) {
            return bad("auth", &e);
        }
        if let Err(e) = self.bus.validate() {
            return bad("bus", &e);
        }
        if let Err(e) = self.presence.validate() {
            return bad("presence", &e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md lists every key of `Config` (the docs are kept true by this test).
    #[test]
    fn every_key_is_documented() {
        let source = include_str!("config.rs");
        let doc = include_str!("../docs/configuration.md");
        let body = &source[source.find("pub struct Config {").unwrap()
            ..source.find("impl Default for Config").unwrap()];
        let keys: Vec<&str> = body
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("pub ")?
                    .split_once(':')
                    .map(|(k, _)| k)
            })
            .filter(|k| !k.contains(' '))
            .collect();
        assert!(keys.len() > 20, "{keys:?}");
        for key in keys {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "docs/configuration.md misses `{key}`"
            );
        }
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::from_toml("idle_timout_ms = 5").unwrap_err();
        assert!(err.contains("idle_timout_ms"), "{err}");
    }

    #[test]
    fn file_values_override_defaults() {
        let c =
            Config::from_toml("idle_timeout_ms = 5\necho_path = \"/e\"\nrecv_mode = \"multishot\"")
                .unwrap();
        assert_eq!(c.idle_timeout_ms, 5);
        assert_eq!(c.echo_path.as_deref(), Some("/e"));
        assert_eq!(c.recv_mode, RecvMode::Multishot);
        assert_eq!(c.handshake_timeout_ms, 10_000);
    }

    #[test]
    fn wake_batch_is_bounded() {
        let c = Config::from_toml("wake_batch_us = 4000").unwrap();
        assert_eq!(c.wake_batch_us, 4000);
        c.validate().unwrap();
        let long = Config {
            wake_batch_us: MAX_WAKE_BATCH_US + 1,
            ..Config::default()
        };
        assert!(matches!(
            long.validate(),
            Err(ConfigError::Invalid {
                key: "wake_batch_us",
                ..
            })
        ));
    }

    #[test]
    fn channel_routes_from_toml() {
        let c = Config::from_toml(
            "[[channels]]\npattern = \"news:*\"\non_push = \"reject\"\n[[channels]]\npattern = \"chat\"\non_push = \"broadcast\"\n",
        )
        .unwrap();
        assert_eq!(
            c.channels,
            vec![
                Route::new("news:*", OnPush::Reject),
                Route::new("chat", OnPush::Broadcast)
            ]
        );
        let bad = Config {
            channels: vec![Route::new("a*b", OnPush::Reject)],
            ..Config::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "channels",
                ..
            })
        ));
    }

    #[test]
    fn bus_section_from_toml() {
        let c = Config::from_toml(
            "[bus]\nurl = \"redis://127.0.0.1:6390\"\nnode_name = \"a\"\nlinger_ms = 10\n",
        )
        .unwrap();
        assert_eq!(c.bus.url.as_deref(), Some("redis://127.0.0.1:6390"));
        assert_eq!(c.bus.node_name.as_deref(), Some("a"));
        assert_eq!(c.bus.linger_ms, 10);
        assert_eq!(c.bus.heartbeat_ms, 1000);
        c.validate().unwrap();
        let bad = Config::from_toml("[bus]\nurl = \"http://x\"\n").unwrap();
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid { key: "bus", .. })
        ));
    }

    #[test]
    fn recv_buffers_must_be_power_of_two() {
        let c = Config {
            recv_buffers: 1000,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "recv_buffers",
                ..
            })
        ));
    }
}
