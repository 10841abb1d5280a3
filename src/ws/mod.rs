//! RFC 6455, sans-IO (temporary integration shim).
pub mod close;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;
pub use message::{Decoded, Event, Limits, MessageReader, Role, Violation};
