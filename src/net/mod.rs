//! Connections on a worker: their state (`conn`), their I/O completions (`io`), the send path with
//! backpressure (`tx`), the HTTP upgrade (`http`) and the byte-to-protocol path (`session`).
//! All of it is `impl Worker`: a connection is a slot in its worker's table, not an object.

pub mod conn;
pub mod http;
pub mod io;
pub mod session;
pub mod tx;

pub use tx::Sent;
