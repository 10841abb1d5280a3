//! Shared code of the ringgate benches (`idle_conns`, `broadcast`), included by each bench with
//! `#[path = "common/mod.rs"] mod common;`. Each bench uses a subset, hence `allow(dead_code)` there.
//!
//! Layout:
//! - `clock`: CLOCK_MONOTONIC nanoseconds, the one time base every process on the box shares.
//! - `procfs`: process and kernel readings (RSS/Pss, CPU, `Slab`, `/proc/slabinfo`, `/proc/stat`).
//! - `guard`: processes the bench started, killed by PID on drop, Ctrl-C and the global deadline.
//! - `server`: the servers under test (ringgate, the tokio-tungstenite peer), readiness, publishing.
//! - `wsframe`: the few WebSocket client-side bytes the cheap client needs (request, frames, mask).
//! - `wsclient`: one client connection (hand-rolled, or tokio-tungstenite for comparison).
//! - `clients`: the `--client-child` process mode and the parent's handle on its children.
//! - `stats`: least squares, median/min/max, percentiles.
//! - `report`: markdown tables, number formatting and the JSON results file.

pub mod clients;
pub mod clock;
pub mod guard;
pub mod procfs;
pub mod report;
pub mod server;
pub mod stats;
pub mod wsclient;
pub mod wsframe;

/// Sockets per client process. RLIMIT_NOFILE is 20000 here and cannot be raised; the margin leaves room
/// for the runtime's own descriptors (epoll, eventfd, pipes, /proc reads).
pub const CONNS_PER_CLIENT_PROCESS_MAX: usize = 18_000;
