//! Connections on a worker: their state (`conn`), their I/O completions (`io`), the send path with
//! backpressure (`tx`), the HTTP upgrade (`http`), the byte-to-protocol path (`session`) and Phoenix Channels
//! (`phoenix`).
//! All of it is `impl Worker`: a connection is a slot in its worker's table, not an object.

pub mod accept;
pub mod auth;
pub mod conn;
pub mod http;
pub mod io;
pub mod limits;
pub mod peers;
pub mod phoenix;
pub mod presence;
pub mod rx_budget;
pub mod session;
pub mod tx;

pub use tx::Sent;
