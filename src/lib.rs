//! ringgate: a Linux WebSocket gateway on io_uring that holds millions of mostly idle connections,
//! speaks the Phoenix Channels protocol and fans one broadcast out to every subscriber of a topic.
//!
//! # Layout
//! - `config`, `cli`: every setting with its default and reason; the command line.
//! - `server`: start-up (kernel probe, listeners, workers) and signal handling.
//! - `supervise`: containment of a worker that died (listener, inbox, topic counts) and its policy.
//! - `ring`: the kernel boundary — feature probe, `user_data` tokens, the provided-buffer ring, and
//!   `ring::sqe`, the one module that builds submission entries.
//! - `worker`: one thread + one io_uring per worker; the event loop, the timer wheel, the inbox.
//! - `net`: connections as slots of a worker — accept, receive, the send path with backpressure,
//!   the HTTP upgrade, teardown.
//! - `ws`: RFC 6455, sans-IO — handshake, frames, masking, UTF-8, close codes, message reassembly.
//! - `phoenix`: Phoenix Channels, sans-IO — serializers V1/V2, the router, per-connection channel
//!   rules (join, leave, heartbeat, push) behind a `Host` trait the worker implements.
//! - `topics`: the shared lock-striped topic table, each worker's local members, and broadcasts
//!   as frames per encoding (serializer-agnostic).
//! - `hub`: what all data-plane threads share, and `publish`, the entry point of every broadcast
//!   (encoded there once per serializer).
//! - `bus`: the multi-node bus over Redis (standalone or Cluster sharded pub/sub) on the control
//!   thread's runtime: envelope, subscriptions following local membership, cluster view.
//! - `presence`: Phoenix.Presence, sans-IO — entries, batched diffs, the node-wide table, and
//!   the cross-node replica state machine.
//! - `presence_flush`: the thread that broadcasts presence diffs once per batch.
//! - `auth`: connect-time JWT validation and the `channels` claim.
//! - `profile`: `ringgate profile`, bytes per connection measured by ramping real connections.
//! - `admin`: the control-plane thread (tokio + axum): publish API, topic counts, health, stats
//!   and `/metrics`, the live dashboard and the chat app (assets embedded).
//! - `doctor`: `ringgate doctor`, every limit that caps connections on a box, against a target.
//! - `load`: `ringgate load`, the load generator (io_uring clients, scenarios, reports).
//! - `top`: `ringgate top`, the dashboard's figures in a terminal (reads the admin API).
//!
//! Data path and design decisions: `docs/architecture.md`.

pub mod admin;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod hub;
pub mod lifecycle;
pub mod load;
pub mod net;
pub mod phoenix;
pub mod presence;
pub mod presence_flush;
pub mod profile;
pub mod ring;
pub mod server;
pub mod supervise;
pub mod top;
pub mod topics;
pub mod worker;
pub mod ws;
