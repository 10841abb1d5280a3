//! The client side of the HTTP upgrade (RFC 6455 §4.1), sans-IO: the request bytes, and the
//! validation of the server's `101 Switching Protocols`.
//!
//! The key is derived from the user id and a per-process seed instead of stored: a user waiting
//! for its 101 keeps no key bytes, it recomputes the key to check `Sec-WebSocket-Accept`.

use tungstenite::handshake::derive_accept_key;

use super::scenario::splitmix64;

/// Largest response head accepted; a 101 is a few hundred bytes. Past it: `TooLarge`.
pub const MAX_RESPONSE_BYTES: usize = 8192;
/// Most response header lines parsed (httparse needs a fixed array).
const MAX_HEADERS: usize = 32;

/// Why an upgrade failed. The variant names are the error kinds counted in reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The server answered with a status other than 101 (403 refused, 404 wrong path, ...).
    #[error("server answered HTTP {0} instead of 101")]
    Status(u16),
    /// The 101 lacks `Upgrade: websocket` or `Connection: upgrade`.
    #[error("101 response without Upgrade: websocket / Connection: upgrade")]
    NotUpgrade,
    /// `Sec-WebSocket-Accept` is missing or does not match our key.
    #[error("Sec-WebSocket-Accept missing or wrong")]
    BadAccept,
    /// The server turned on an extension we did not offer.
    #[error("server selected an extension that was not offered")]
    UnofferedExtension,
    /// Not parseable as HTTP/1.1.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The response head passed [`MAX_RESPONSE_BYTES`].
    #[error("response head over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 of 16 bytes (24 characters with `==` padding), the only size a key has.
fn base64_16(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Sec-WebSocket-Key` of connection attempt `attempt` of user `user_id`.
pub fn key(seed: u64, user_id: u64, attempt: u32) -> String {
    let a = splitmix64(seed ^ user_id.rotate_left(17) ^ u64::from(attempt));
    let b = splitmix64(a);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    base64_16(&bytes)
}

/// Appends the upgrade request for `target` (path and query) on `host` (`host[:port]`).
pub fn write_request(out: &mut Vec<u8>, host: &str, target: &[u8], key: &str) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\nUser-Agent: ringgate-load\r\n\r\n");
}

/// Checks the response at the front of `buf`. `Ok(None)`: the head is incomplete (nothing
/// consumed). `Ok(Some(n))`: a valid 101 occupies `buf[..n]`; WebSocket frames may follow.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_BYTES => {
            return Err(UpgradeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(UpgradeError::Status(status));
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let header = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or(""))
    };
    let upgrade_ok = header("upgrade").any(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection_ok = header("connection").any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !(upgrade_ok && connection_ok) {
        return Err(UpgradeError::NotUpgrade);
    }
    let expected = derive_accept_key(key.as_bytes());
    if !header("sec-websocket-accept").any(|v| v.trim() == expected) {
        return Err(UpgradeError::BadAccept);
    }
    if header("sec-websocket-extensions").any(|v| !v.trim().is_empty()) {
        return Err(UpgradeError::UnofferedExtension);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 6455's sample nonce "the sample nonce".
        assert_eq!(base64_16(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(key(1, 2, 0).len(), 24);
        assert_ne!(key(1, 2, 0), key(1, 3, 0));
    }

    fn response(accept: &str, extra: &str) -> String {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n")
    }

    #[test]
    fn accepts_the_rfc_example_and_reports_frames_after_it() {
        let k = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut r = response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "").into_bytes();
        let head = r.len();
        r.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_response(&r, k), Ok(Some(head)));
        for cut in 0..head {
            assert_eq!(parse_response(&r[..cut], k), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn rejections() {
        let k = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            parse_response(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", k),
            Err(UpgradeError::Status(403))
        );
        assert_eq!(
            parse_response(response("wrong", "").as_bytes(), k),
            Err(UpgradeError::BadAccept)
        );
        assert_eq!(
            parse_response(
                response(
                    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                    "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                )
                .as_bytes(),
                k
            ),
            Err(UpgradeError::UnofferedExtension)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                k
            ),
            Err(UpgradeError::NotUpgrade)
        );
        assert!(matches!(
            parse_response(b"garbage\r\n\r\n", k),
            Err(UpgradeError::Malformed(_))
        ));
        let big = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_BYTES));
        assert_eq!(
            parse_response(big.as_bytes(), k),
            Err(UpgradeError::TooLarge)
        );
    }

    #[test]
    fn request_is_a_valid_upgrade_for_our_server_parser() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "127.0.0.1:4000",
            b"/socket/websocket?vsn=2.0.0",
            &key(9, 9, 0),
        );
        let limits = crate::ws::handshake::Limits::default();
        match crate::ws::handshake::parse_request(&out, &limits).unwrap() {
            crate::ws::handshake::Parse::Complete { head, consumed } => {
                assert_eq!(consumed, out.len());
                crate::ws::handshake::validate_upgrade(&head).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
}
