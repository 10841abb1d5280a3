//! `ringgate load` command line. Flags override the scenario's own values.

use std::path::PathBuf;

use clap::Args;

/// Flags of `ringgate load`.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  # The Phoenix benchmark's session (V1 join of rooms:lobby, then idle) against a local gateway:
  ringgate load --url ws://127.0.0.1:4000/socket/websocket --scenario seed --users 20000 \\
      --arrival-rate 2000 --duration 60 --out /tmp/seed-report

  # 100k users from 2 processes to a remote server, from 30 local addresses (≤ 3529 each):
  ringgate load --url ws://10.0.0.5:4000 --scenario phoenix-idle --users 100000 --procs 2 \\
      --source 10.0.0.101-10.0.0.130 --duration 300

  # 2M users to a loopback server: enough source addresses are chosen automatically:
  ringgate load --url ws://127.0.0.1:4000/socket/websocket --scenario phoenix-idle \\
      --users 2000000 --arrival-rate 12000 --procs 2 --duration 600

  # A chat: 50 rooms, every member posts every 2 s; delivery latency from the payload's ts_ns:
  ringgate load --scenario chat --users 5000 --rooms 50 --post-interval-ms 2000 --duration 60

  # Your own scenario file (format: docs/load-testing.md):
  ringgate load --scenario my-scenario.toml --url ws://127.0.0.1:8080/ws

Output (in --out): summary.json, timeseries.csv (one row per second), report.html (charts).
Exit status: 0 when the run completed (errors are counted in the report), 1 when it could not
start (bad flags or scenario, server not reachable, kernel features missing).")]
pub struct LoadArgs {
    /// Server to load: ws://HOST:PORT/PATH?QUERY. The path is used by `connect` steps that have
    /// none; the built-ins default to /socket/websocket. Example: ws://127.0.0.1:4000/socket/websocket
    #[arg(long, default_value = "ws://127.0.0.1:4000")]
    pub url: String,

    /// Built-in scenario (seed, phoenix-idle, chat) or a TOML scenario file.
    /// Example: --scenario chat, --scenario ./scenarios/login.toml
    #[arg(long, default_value = "seed")]
    pub scenario: String,

    /// Users over the whole run (all phases, all processes). Example: --users 20000
    #[arg(long)]
    pub users: Option<u64>,

    /// New users per second (replaces the scenario's phases with one phase). Example: --arrival-rate 1000
    #[arg(long)]
    pub arrival_rate: Option<f64>,

    /// Total run time in seconds; at its end every user closes and the report is written.
    /// Example: --duration 120
    #[arg(long)]
    pub duration: Option<f64>,

    /// Load processes (each with its own workers); their reports are merged. Example: --procs 4
    #[arg(long, default_value_t = 1)]
    pub procs: u32,

    /// Worker threads per process, one io_uring each [default: cores / procs, raised so no
    /// ring holds more than the soft RLIMIT_NOFILE sockets]. Example: --workers 2
    #[arg(long)]
    pub workers: Option<u32>,

    /// Source addresses to bind, round-robin; each carries at most a quarter of connect()'s
    /// first-pass ephemeral ports (3529 with the default range), and a list too small for the
    /// users is refused. Without it a loopback server gets enough addresses chosen from
    /// 127.0.1.1-127.0.255.254. Example: --source 127.0.0.2-127.0.0.60 (or a comma list)
    #[arg(long)]
    pub source: Option<String>,

    /// Directory for summary.json, timeseries.csv and report.html (created).
    /// Example: --out /tmp/load-report
    #[arg(long, default_value = "load-report")]
    pub out: PathBuf,

    /// chat: number of rooms (a user joins rooms:{user_id % rooms}). Example: --rooms 50
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,

    /// chat: each member posts once per this many ms. Example: --post-interval-ms 2000
    #[arg(long, default_value_t = 5000)]
    pub post_interval_ms: u64,

    /// TCP connect + upgrade must complete within this, ms. Example: --connect-timeout-ms 5000
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// After our Close frame, wait this long for the server's before closing TCP, ms.
    #[arg(long, default_value_t = 2_000)]
    pub close_timeout_ms: u64,

    /// Receive buffers per worker (a power of two); sized by data in flight, not by users.
    #[arg(long, default_value_t = 256)]
    pub recv_buffers: u16,

    /// Size of each receive buffer, bytes.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer_bytes: u32,

    /// Added to every user id: give each load box its own range when several load one server.
    /// Example: --first-user-id 1000000
    #[arg(long, default_value_t = 0)]
    pub first_user_id: u64,

    /// No live progress line on stderr. (Repeatable: the parent of a --procs run passes it on.)
    #[arg(long, overrides_with = "quiet")]
    pub quiet: bool,

    /// Internal: this process is child N of a --procs run (reports JSON lines on stdout).
    #[arg(long, hide = true)]
    pub child_index: Option<u32>,

    /// Internal: CLOCK_MONOTONIC ns of the run's start, shared by all processes.
    #[arg(long, hide = true)]
    pub start_mono_ns: Option<u64>,
}
