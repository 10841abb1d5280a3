//! The client side of RFC 6455 that the cheap bench client needs, as plain functions on bytes: the
//! upgrade request and the check of its answer, masked client frames, and a resumable parser for the
//! (unmasked) frames a server sends. No I/O here.
//!
//! Every connection offers the RFC's sample key, whose accept value is known, so checking the server's
//! answer needs no SHA-1: the bench measures servers, it does not defend against them.

use std::net::SocketAddr;
use std::ops::Range;

/// The sample `Sec-WebSocket-Key` of RFC 6455 §1.3 and the `Sec-WebSocket-Accept` it must produce.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Server frames larger than this end the connection: the benches' messages are a few hundred bytes,
/// and the bound keeps a confused server from growing the client's memory.
pub const SERVER_FRAME_BYTES_MAX: u64 = 1 << 20;
/// Upgrade response heads larger than this are refused, for the same reason.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 8192;

/// The GET request that upgrades a connection to `path` on `host`.
pub fn upgrade_request(host: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Length of the response head (through the blank line) when `buf` holds all of it.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Ok when `head` is a 101 response carrying the expected accept key.
pub fn check_upgrade_response(head: &[u8]) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed upgrade response".to_owned()),
    }
    if response.code != Some(101) {
        return Err(format!("upgrade answered {:?}", response.code));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(SAMPLE_ACCEPT.as_bytes()) {
        return Err("wrong Sec-WebSocket-Accept".to_owned());
    }
    Ok(())
}

/// One final, masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A server frame found at the start of a buffer.
#[derive(Debug, PartialEq)]
pub struct ServerFrame {
    pub opcode: u8,
    /// Where the payload sits in the buffer that was parsed.
    pub payload: Range<usize>,
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Parses the frame at the start of `buf`: `Ok(None)` when more bytes are needed (nothing consumed).
/// Fragmented messages are not reassembled: each fragment is reported with its own opcode (0 for
/// continuations), which is enough for the benches' small single-frame messages.
pub fn parse_server_frame(buf: &[u8]) -> Result<Option<ServerFrame>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("server sent a masked frame".to_owned());
    }
    let (payload_len, header_len) = match buf[1] & 0x7F {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            10,
        ),
        n => (n as u64, 2),
    };
    if payload_len > SERVER_FRAME_BYTES_MAX {
        return Err(format!("server frame of {payload_len} bytes"));
    }
    let len = header_len + payload_len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(ServerFrame {
        opcode: buf[0] & 0x0F,
        payload: header_len..len,
        len,
    }))
}
