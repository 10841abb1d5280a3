//! RFC 6455 WebSocket protocol, sans-IO: bytes in, decisions and bytes out.
//!
//! Nothing here reads a socket, writes one or keeps time. The I/O layer hands
//! in the bytes it received and gets back events, close codes and encoded
//! frames as values; it decides when and whether to send them. That keeps the
//! protocol testable on plain byte slices and lets the io_uring loop own every
//! buffer.
//!
//! # Layout
//! - [`handshake`]: HTTP/1.1 request head parsing (bounded, resumable), upgrade
//!   validation, the 101 / error / plain responses, query parameters.
//! - [`frame`]: frame header codec and whole-frame encoders (server frames
//!   unmasked and encoded once for any number of receivers; masked client
//!   frames for the load generator).
//! - [`mask`]: payload (un)masking, a word at a time.
//! - [`utf8`]: incremental UTF-8 validation for fragmented text.
//! - [`close`]: close codes and Close payloads.
//! - [`message`]: the per-connection reader that turns frames into
//!   [`Event`]s or a [`Violation`], enforcing the RFC rules and [`Limits`].
//!
//! # Not supported, on purpose
//! Extensions (permessage-deflate is declined in the handshake, so RSV bits
//! are always a protocol error) and HTTP/2 or HTTP/3 WebSockets (RFC 8441,
//! RFC 9220).

pub mod close;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

pub use self::message::{Decoded, Event, Limits, MessageReader, Role, Violation};
