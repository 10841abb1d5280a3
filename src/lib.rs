//! ringgate: a Linux WebSocket gateway on io_uring that holds millions of mostly idle connections,
//! speaks the Phoenix Channels protocol and fans one broadcast out to every subscriber of a topic.
//!
//! # Layout
//! - `config`, `cli`: every setting with its default and reason; the command line.
//! - `server`: start-up (kernel probe, listeners, workers) and signal handling.
//! - `ring`: the kernel boundary — feature probe, `user_data` tokens, the provided-buffer ring, and
//!   `ring::sqe`, the one module that builds submission entries.
//! - `worker`: one thread + one io_uring per worker; the event loop, the timer wheel, the inbox.
//! - `net`: connections as slots of a worker — accept, receive, the send path with backpressure,
//!   the HTTP upgrade, teardown.
//! - `ws`: RFC 6455, sans-IO — handshake, frames, masking, UTF-8, close codes, message reassembly.
//!
//! Data path and design decisions: `docs/architecture.md`.

pub mod cli;
pub mod config;
pub mod net;
pub mod ring;
pub mod server;
pub mod worker;
pub mod ws;
