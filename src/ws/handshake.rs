//! The HTTP/1.1 side of a connection: parse the request head, decide whether
//! it is a valid WebSocket upgrade (RFC 6455 §4.2.1), and build the response
//! bytes (101, an error, or a plain reply such as `/healthz`).
//!
//! Parsing is resumable and bounded: [`parse_request`] re-parses the whole
//! buffer on each call (httparse is fast and the head is at most
//! [`Limits::max_request_bytes`]), answers [`Parse::Partial`] until the head
//! is complete, and fails as soon as the bytes prove the request malformed or
//! over a limit, so a slow or hostile client cannot make the server buffer
//! more than the limit. Deciding *what* to do with a valid request (routing,
//! `vsn`, authentication, subprotocol choice) is the caller's job.
//!
//! Extensions are never accepted: omitting `Sec-WebSocket-Extensions` from
//! the 101 declines permessage-deflate, which every client must accept.

use tungstenite::handshake::derive_accept_key;

/// Bounds on the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers + blank line) in bytes.
    /// Default 8192: browsers send well under 2 KiB even with cookies, and
    /// this is the buffer each connection may hold before it is a WebSocket,
    /// so it multiplies by every connection mid-handshake. Over it: 431.
    pub max_request_bytes: usize,
    /// Most header lines. Default 32: browsers send about 15, Node `ws` 6;
    /// parsing cost and the stack array grow with it. Over it: 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 8192,
            max_headers: 32,
        }
    }
}

/// An HTTP error to answer with (see [`error_response`]) before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}: {reason}")]
pub struct HttpError {
    /// Status code.
    pub status: u16,
    /// Short explanation, sent as the response body.
    pub reason: &'static str,
}

impl HttpError {
    const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }

    /// The head is over [`Limits::max_request_bytes`].
    pub const TOO_LARGE: Self = Self::new(431, "request header too large");
    /// More header lines than [`Limits::max_headers`].
    pub const TOO_MANY_HEADERS: Self = Self::new(431, "too many headers");
    /// Not parseable as HTTP/1.x.
    pub const MALFORMED: Self = Self::new(400, "malformed request");
    /// HTTP/1.0: RFC 6455 §4.1 requires HTTP/1.1 or higher.
    pub const HTTP_1_0: Self = Self::new(400, "HTTP/1.1 required");
    /// A header ringgate reads is not UTF-8.
    pub const HEADER_NOT_UTF8: Self = Self::new(400, "header value is not UTF-8");
    /// `Host` more than once (RFC 9112 §3.2 requires a 400).
    pub const DUPLICATE_HOST: Self = Self::new(400, "duplicate Host header");
    /// `Sec-WebSocket-Key` more than once (RFC 6455 §11.3.1).
    pub const DUPLICATE_KEY: Self = Self::new(400, "duplicate Sec-WebSocket-Key header");
    /// `Sec-WebSocket-Version` more than once in a request.
    pub const DUPLICATE_VERSION: Self = Self::new(400, "duplicate Sec-WebSocket-Version header");
    /// An upgrade with a method other than GET.
    pub const METHOD_NOT_ALLOWED: Self = Self::new(405, "method not allowed");
    /// No `Upgrade: websocket` + `Connection: upgrade`.
    pub const UPGRADE_REQUIRED: Self = Self::new(426, "websocket upgrade required");
    /// No `Host` header.
    pub const MISSING_HOST: Self = Self::new(400, "missing Host header");
    /// `Sec-WebSocket-Key` absent or not the base64 of 16 bytes.
    pub const BAD_KEY: Self = Self::new(400, "invalid Sec-WebSocket-Key");
    /// `Sec-WebSocket-Version` other than 13 (answered with the version we speak).
    pub const BAD_VERSION: Self = Self::new(426, "unsupported websocket version");
}

/// Outcome of [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per connection and moved once; boxing would add an allocation"
)]
pub enum Parse {
    /// The head is incomplete; call again with more bytes appended.
    Partial,
    /// The head is complete and occupies `buf[..consumed]`; any bytes after it
    /// (a client that pipelines its first frame) belong to the next layer.
    Complete {
        /// What the request said.
        head: RequestHead,
        /// Length of the request head in bytes.
        consumed: usize,
    },
}

/// The parts of a request head ringgate uses. Header names are matched
/// case-insensitively; values are trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target up to `?`, not percent-decoded.
    pub path: String,
    /// Request target after `?` (empty if none), raw; see [`query_param`].
    pub query: String,
    /// `Host`, if present.
    pub host: Option<String>,
    /// `Origin` (sent by browsers), if present.
    pub origin: Option<String>,
    /// Set when `Upgrade` has the token `websocket` and `Connection` the token
    /// `upgrade`; whether the upgrade is valid is [`validate_upgrade`]'s call.
    pub upgrade: Option<UpgradeRequest>,
}

/// The WebSocket headers of an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// `Sec-WebSocket-Key`, empty if absent.
    pub key: String,
    /// `Sec-WebSocket-Version`, empty if absent.
    pub version: String,
    /// `Sec-WebSocket-Protocol` values split on `,` and trimmed, in the
    /// client's order of preference, across all such header lines.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` entries (with their parameters, e.g.
    /// `permessage-deflate; client_max_window_bits`), for logging; none is
    /// ever accepted.
    pub extensions: Vec<String>,
}

/// Header slots kept on the stack; a larger [`Limits::max_headers`] uses the heap.
const STACK_HEADERS: usize = 32;

/// Parses the request head at the front of `buf`; see the module docs.
///
/// Errors: over `max_request_bytes` or `max_headers` → 431; not HTTP →
/// 400; HTTP/1.0 → 400; a duplicate `Host`, `Sec-WebSocket-Key` or
/// `Sec-WebSocket-Version` → 400; a non-UTF-8 value in a header read here
/// → 400.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parse, HttpError> {
    // Never look past the limit: a head that is not complete within it is
    // refused however much more was received.
    let window = &buf[..buf.len().min(limits.max_request_bytes)];
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(slots);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_request_bytes => {
            return Err(HttpError::TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TOO_MANY_HEADERS),
        Err(_) => return Err(HttpError::MALFORMED),
    };
    if req.version != Some(1) {
        return Err(HttpError::HTTP_1_0);
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HttpError::MALFORMED);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut host = None;
    let mut origin = None;
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut key = None;
    let mut version = None;
    let mut protocols = Vec::new();
    let mut extensions = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if !(is("host")
            || is("origin")
            || is("upgrade")
            || is("connection")
            || name.len() > 14 && name[..14].eq_ignore_ascii_case("sec-websocket-"))
        {
            continue;
        }
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::HEADER_NOT_UTF8)?
            .trim();
        if is("host") {
            set_once(&mut host, value, HttpError::DUPLICATE_HOST)?;
        } else if is("origin") {
            origin.get_or_insert_with(|| value.to_owned());
        } else if is("upgrade") {
            upgrade_websocket |= has_token(value, "websocket");
        } else if is("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if is("sec-websocket-key") {
            set_once(&mut key, value, HttpError::DUPLICATE_KEY)?;
        } else if is("sec-websocket-version") {
            set_once(&mut version, value, HttpError::DUPLICATE_VERSION)?;
        } else if is("sec-websocket-protocol") {
            protocols.extend(list_items(value));
        } else if is("sec-websocket-extensions") {
            extensions.extend(list_items(value));
        }
    }
    let upgrade = (upgrade_websocket && connection_upgrade).then(|| UpgradeRequest {
        key: key.unwrap_or_default(),
        version: version.unwrap_or_default(),
        protocols,
        extensions,
    });
    Ok(Parse::Complete {
        head: RequestHead {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            host,
            origin,
            upgrade,
        },
        consumed,
    })
}

fn set_once(slot: &mut Option<String>, value: &str, dup: HttpError) -> Result<(), HttpError> {
    if slot.is_some() {
        return Err(dup);
    }
    *slot = Some(value.to_owned());
    Ok(())
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn list_items(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Checks that a parsed request is an upgrade ringgate can accept, in this
/// order: method GET (else 405), upgrade headers (426), `Host` (400), key
/// (400), version 13 (426, answered with `Sec-WebSocket-Version: 13`).
pub fn validate_upgrade(head: &RequestHead) -> Result<&UpgradeRequest, HttpError> {
    if head.method != "GET" {
        return Err(HttpError::METHOD_NOT_ALLOWED);
    }
    let Some(up) = &head.upgrade else {
        return Err(HttpError::UPGRADE_REQUIRED);
    };
    if head.host.is_none() {
        return Err(HttpError::MISSING_HOST);
    }
    if !is_valid_key(&up.key) {
        return Err(HttpError::BAD_KEY);
    }
    if up.version != "13" {
        return Err(HttpError::BAD_VERSION);
    }
    Ok(up)
}

/// Whether `key` is the canonical base64 of 16 bytes (RFC 6455 §4.1): 22
/// alphabet characters then `==`, the last character carrying only 2 data
/// bits (so one of `AQgw`), as every client's encoder produces.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24
        && b[..21].iter().all(alphabet)
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
        && &b[22..] == b"=="
}

/// The 101 response accepting `key`, naming `protocol` if the caller chose
/// one of the client's offered subprotocols. No extensions.
pub fn accept_response(key: &str, protocol: Option<&str>) -> Vec<u8> {
    let accept = derive_accept_key(key.as_bytes());
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        debug_assert!(
            !p.contains(['\r', '\n']),
            "protocol {p:?} would split the header"
        );
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The response for `err`: plain-text body `reason\n`, `Connection: close`;
/// 426 adds `Sec-WebSocket-Version: 13` and `Upgrade: websocket` (RFC 6455
/// §4.4, RFC 9110 §15.5.22), 405 adds `Allow: GET`.
pub fn error_response(err: &HttpError) -> Vec<u8> {
    let extra: &[u8] = match err.status {
        426 => b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
        405 => b"Allow: GET\r\n",
        _ => b"",
    };
    let mut body = Vec::with_capacity(err.reason.len() + 1);
    body.extend_from_slice(err.reason.as_bytes());
    body.push(b'\n');
    response(err.status, "text/plain; charset=utf-8", extra, &body)
}

/// A complete non-WebSocket response (for `/healthz`, `/metrics`, 404, 403…)
/// with `Connection: close`. For 1xx and 204, which may carry no body, the
/// body and `Content-Length` are left out.
pub fn simple_response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    response(status, content_type, b"", body)
}

fn response(status: u16, content_type: &str, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let bodyless = (100..200).contains(&status) || status == 204;
    debug_assert!(!bodyless || body.is_empty(), "status {status} has no body");
    let head = if bodyless {
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n",
            reason_phrase(status)
        )
    } else {
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            reason_phrase(status),
            body.len()
        )
    };
    let mut out = Vec::with_capacity(head.len() + extra.len() + 2 + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(body);
    }
    out
}

/// The standard reason phrase for the statuses ringgate sends (RFC 9110
/// §15); empty for others, which HTTP/1.1 allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The first value of `name` in a raw query string (`a=1&b=x+y%21`),
/// percent-decoded with `+` as space (form encoding, as browsers and
/// phoenix.js produce). Names are decoded before comparing. A pair without
/// `=` has the empty value; a malformed `%` escape is kept literally; bytes
/// that are not UTF-8 after decoding become U+FFFD.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| form_decode(k) == name)
        .map(|(_, v)| form_decode(v))
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex_at(b, i + 1), hex_at(b, i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_at(b: &[u8], i: usize) -> Option<u8> {
    match *b.get(i)? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured from Node 20.20 + npm `ws` 8.23.0 (`new WebSocket(url, ['phoenix',
    /// 'base64url.bearer.phx.dG9rZW4'])`) by a TCP listener on loopback.
    const NODE_WS: &[u8] = b"GET /socket/websocket?token=abc%20def&vsn=2.0.0 HTTP/1.1\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: 8IgHQv/oSW73jX7hbjHJvg==\r\n\
Connection: Upgrade\r\n\
Upgrade: websocket\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: phoenix,base64url.bearer.phx.dG9rZW4\r\n\
Host: 127.0.0.1:40957\r\n\r\n";

    /// A Chrome-style upgrade (header set and order as Chrome sends them).
    const CHROME: &[u8] = b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n\
Host: localhost:4000\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:4000\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: _app_key=SFMyNTY.g3QAAAABbQAAAAtfY3NyZl90b2tlbm0AAAAYZ2V0X3Rva2Vu; theme=dark\r\n\
Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    /// A Firefox-style upgrade: `Connection: keep-alive, Upgrade`, lower-case
    /// names from a proxy, subprotocols split over two lines.
    const FIREFOX_VIA_PROXY: &[u8] = b"GET /socket/websocket HTTP/1.1\r\n\
host: example.test\r\n\
user-agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
accept: */*\r\n\
sec-websocket-version: 13\r\n\
origin: https://example.test\r\n\
sec-websocket-protocol: phoenix\r\n\
sec-websocket-extensions: permessage-deflate\r\n\
sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
connection: keep-alive, Upgrade\r\n\
sec-websocket-protocol: chat ,  superchat\r\n\
upgrade: WebSocket\r\n\r\n";

    fn complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse_request(buf, &Limits::default()) {
            Ok(Parse::Complete { head, consumed }) => (head, consumed),
            other => panic!("{other:?}"),
        }
    }

    fn err(status: u16, reason: &'static str) -> HttpError {
        HttpError { status, reason }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn response_text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn rfc_sample_key() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response_text(&accept_response("dGhlIHNhbXBsZSBub25jZQ==", None)),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn node_ws_client() {
        let (head, consumed) = complete(NODE_WS);
        assert_eq!(consumed, NODE_WS.len());
        assert_eq!(
            head,
            RequestHead {
                method: "GET".into(),
                path: "/socket/websocket".into(),
                query: "token=abc%20def&vsn=2.0.0".into(),
                host: Some("127.0.0.1:40957".into()),
                origin: None,
                upgrade: Some(UpgradeRequest {
                    key: "8IgHQv/oSW73jX7hbjHJvg==".into(),
                    version: "13".into(),
                    protocols: strings(&["phoenix", "base64url.bearer.phx.dG9rZW4"]),
                    extensions: strings(&["permessage-deflate; client_max_window_bits"]),
                }),
            }
        );
        let up = validate_upgrade(&head).unwrap();
        assert_eq!(
            query_param(&head.query, "token").as_deref(),
            Some("abc def")
        );
        assert_eq!(query_param(&head.query, "vsn").as_deref(), Some("2.0.0"));
        // Accept value computed independently (Python hashlib + base64).
        let resp = accept_response(&up.key, Some("phoenix"));
        assert_eq!(
            response_text(&resp),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: wlCHmYShySeB+nKiekrVB7pBsaQ=\r\n\
             Sec-WebSocket-Protocol: phoenix\r\n\r\n"
        );
        // permessage-deflate is declined by omission.
        assert!(!response_text(&resp).contains("Extensions"));
    }

    #[test]
    fn chrome_client() {
        let (head, _) = complete(CHROME);
        assert_eq!(head.origin.as_deref(), Some("http://localhost:4000"));
        assert_eq!(head.host.as_deref(), Some("localhost:4000"));
        let up = validate_upgrade(&head).unwrap();
        assert!(up.protocols.is_empty());
        assert_eq!(
            response_text(&accept_response(&up.key, None)),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n"
        );
    }

    #[test]
    fn firefox_via_proxy() {
        let (head, _) = complete(FIREFOX_VIA_PROXY);
        assert_eq!(
            (head.path.as_str(), head.query.as_str()),
            ("/socket/websocket", "")
        );
        let up = validate_upgrade(&head).unwrap();
        assert_eq!(up.protocols, strings(&["phoenix", "chat", "superchat"]));
        assert_eq!(up.extensions, strings(&["permessage-deflate"]));
        assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn byte_at_a_time_is_partial_until_complete() {
        for req in [NODE_WS, CHROME, FIREFOX_VIA_PROXY] {
            for n in 0..req.len() {
                assert_eq!(
                    parse_request(&req[..n], &Limits::default()),
                    Ok(Parse::Partial),
                    "prefix {n}"
                );
            }
            assert_eq!(complete(req).1, req.len());
        }
    }

    #[test]
    fn pipelined_bytes_are_not_consumed() {
        let mut buf = NODE_WS.to_vec();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, 5]);
        assert_eq!(complete(&buf).1, NODE_WS.len());
    }

    #[test]
    fn too_large() {
        let limits = Limits::default();
        // Exactly at the limit and incomplete: still waiting.
        let mut buf = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        buf.resize(8192, b'a');
        assert_eq!(parse_request(&buf, &limits), Ok(Parse::Partial));
        buf.push(b'a');
        assert_eq!(
            parse_request(&buf, &limits),
            Err(err(431, "request header too large"))
        );
        // A head that would end just past the limit is refused too.
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        big.resize(8190, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&big, &limits),
            Err(err(431, "request header too large"))
        );
        big.truncate(8190 - 3);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(big.len(), 8191);
        assert!(matches!(
            parse_request(&big, &limits),
            Ok(Parse::Complete { .. })
        ));
    }

    #[test]
    fn too_many_headers() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..32 {
            req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        let mut ok = req.clone();
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_request(&ok, &Limits::default()),
            Ok(Parse::Complete { .. })
        ));
        // The 33rd header line fails at once, before the head is complete.
        req.extend_from_slice(b"X-H32: v\r\n");
        assert_eq!(
            parse_request(&req, &Limits::default()),
            Err(err(431, "too many headers"))
        );
        // A limit above the stack array uses the heap.
        let many = Limits {
            max_headers: 40,
            ..Limits::default()
        };
        req.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_request(&req, &many),
            Ok(Parse::Complete { .. })
        ));
    }

    #[test]
    fn malformed() {
        let bad = err(400, "malformed request");
        for req in [
            &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"\x00\x01\x02",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
        ] {
            assert_eq!(
                parse_request(req, &Limits::default()),
                Err(bad.clone()),
                "{req:?}"
            );
        }
        assert_eq!(
            parse_request(
                b"GET / HTTP/1.1\r\nOrigin: \xff\r\n\r\n",
                &Limits::default()
            ),
            Err(err(400, "header value is not UTF-8"))
        );
    }

    #[test]
    fn http_1_0_refused() {
        assert_eq!(
            parse_request(
                b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                &Limits::default()
            ),
            Err(err(400, "HTTP/1.1 required"))
        );
    }

    #[test]
    fn duplicates_refused() {
        let base = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        for (extra, e) in [
            ("Host: b\r\n", err(400, "duplicate Host header")),
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                err(400, "duplicate Sec-WebSocket-Key header"),
            ),
            (
                "Sec-WebSocket-Version: 13\r\n",
                err(400, "duplicate Sec-WebSocket-Version header"),
            ),
        ] {
            let req = format!("{base}{extra}\r\n");
            assert_eq!(parse_request(req.as_bytes(), &Limits::default()), Err(e));
        }
    }

    /// A valid upgrade whose header line starting with `prefix` is replaced
    /// by `with` (removed if `with` is empty).
    fn upgrade_with(prefix: &str, with: &str) -> RequestHead {
        let mut lines = vec![
            "GET /socket/websocket HTTP/1.1",
            "Host: h",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ];
        if !prefix.is_empty() {
            let i = lines.iter().position(|l| l.starts_with(prefix)).unwrap();
            if with.is_empty() {
                lines.remove(i);
            } else {
                lines[i] = with;
            }
        }
        let req = lines.join("\r\n") + "\r\n\r\n";
        complete(req.as_bytes()).0
    }

    #[test]
    fn validate_each_status() {
        assert!(validate_upgrade(&upgrade_with("", "")).is_ok());
        let no_upgrade = err(426, "websocket upgrade required");
        let bad_version = err(426, "unsupported websocket version");
        let cases = [
            (
                "GET",
                "POST /socket/websocket HTTP/1.1",
                err(405, "method not allowed"),
            ),
            ("Upgrade:", "", no_upgrade.clone()),
            ("Upgrade:", "Upgrade: h2c", no_upgrade.clone()),
            ("Connection:", "Connection: keep-alive", no_upgrade.clone()),
            ("Connection:", "", no_upgrade),
            ("Host:", "", err(400, "missing Host header")),
            (
                "Sec-WebSocket-Key:",
                "",
                err(400, "invalid Sec-WebSocket-Key"),
            ),
            (
                "Sec-WebSocket-Key:",
                "Sec-WebSocket-Key: abc",
                err(400, "invalid Sec-WebSocket-Key"),
            ),
            (
                "Sec-WebSocket-Version:",
                "Sec-WebSocket-Version: 8",
                bad_version.clone(),
            ),
            ("Sec-WebSocket-Version:", "", bad_version),
        ];
        for (prefix, with, expected) in cases {
            let head = upgrade_with(prefix, with);
            assert_eq!(
                validate_upgrade(&head),
                Err(expected),
                "{prefix} -> {with:?}"
            );
        }
        // Order: a POST without any upgrade headers is 405, not 426.
        let (plain_post, _) = complete(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            validate_upgrade(&plain_post),
            Err(err(405, "method not allowed"))
        );
    }

    #[test]
    fn key_must_be_base64_of_16_bytes() {
        let good = [
            "dGhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "/////////////////////w==",
        ];
        for k in good {
            assert!(is_valid_key(k), "{k}");
        }
        let bad = [
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",   // 23 chars
            "dGhlIHNhbXBsZSBub25jZQ===", // 25 chars
            "dGhlIHNhbXBsZSBub25jZSA=",  // 17 bytes
            "dGhlIHNhbXBsZSBub25j",      // 15 bytes, unpadded
            "dGhlIHNhbXBsZSBub25jZR==",  // non-canonical last char
            "dGhlIHNhbXBsZSBub25j*Q==",  // not in the alphabet
            "dGhlIHNhbXBsZSBub25jZQ-_",  // url-safe padding chars
            "dGhlIHNhbXBsZSBub25jZ-==",  // '-' is url-safe alphabet
        ];
        for k in bad {
            assert!(!is_valid_key(k), "{k}");
        }
    }

    #[test]
    fn upgrade_tokens() {
        // Case-insensitive tokens inside comma lists; no substring matches.
        assert!(has_token("keep-alive, Upgrade", "upgrade"));
        assert!(has_token("UPGRADE", "upgrade"));
        assert!(!has_token("upgraded", "upgrade"));
        assert!(!has_token("keep-alive", "upgrade"));
        assert!(has_token("h2c, WebSocket", "websocket"));
        let head = upgrade_with("Connection:", "Connection: Upgrade-Insecure");
        assert_eq!(head.upgrade, None);
    }

    #[test]
    fn error_responses() {
        assert_eq!(
            response_text(&error_response(&HttpError::BAD_VERSION)),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 30\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\
             Upgrade: websocket\r\n\r\nunsupported websocket version\n"
        );
        assert_eq!(
            response_text(&error_response(&HttpError::METHOD_NOT_ALLOWED)),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\nConnection: close\r\nAllow: GET\r\n\r\nmethod not allowed\n"
        );
        assert_eq!(
            response_text(&error_response(&HttpError::TOO_LARGE)),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 25\r\nConnection: close\r\n\r\nrequest header too large\n"
        );
        assert_eq!(
            response_text(&error_response(&HttpError::BAD_KEY)),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 26\r\nConnection: close\r\n\r\ninvalid Sec-WebSocket-Key\n"
        );
    }

    /// Every response must parse as HTTP with the Content-Length it claims.
    #[test]
    fn responses_parse_back() {
        let all = [
            HttpError::TOO_LARGE,
            HttpError::TOO_MANY_HEADERS,
            HttpError::MALFORMED,
            HttpError::HTTP_1_0,
            HttpError::HEADER_NOT_UTF8,
            HttpError::DUPLICATE_HOST,
            HttpError::DUPLICATE_KEY,
            HttpError::DUPLICATE_VERSION,
            HttpError::METHOD_NOT_ALLOWED,
            HttpError::UPGRADE_REQUIRED,
            HttpError::MISSING_HOST,
            HttpError::BAD_KEY,
            HttpError::BAD_VERSION,
        ];
        for e in all {
            let bytes = error_response(&e);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = resp.parse(&bytes) else {
                panic!("{e:?}")
            };
            assert_eq!(resp.code, Some(e.status));
            assert_eq!(resp.reason, Some(reason_phrase(e.status)));
            assert!(!reason_phrase(e.status).is_empty());
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(bytes.len() - n, len);
            assert_eq!(&bytes[n..], format!("{}\n", e.reason).as_bytes());
        }
    }

    #[test]
    fn simple_responses() {
        assert_eq!(
            response_text(&simple_response(200, "text/plain", b"ok\n")),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nok\n"
        );
        assert_eq!(
            response_text(&simple_response(404, "application/json", b"{}")),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n{}"
        );
        assert_eq!(
            response_text(&simple_response(204, "text/plain", b"")),
            "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn query_params() {
        let q =
            "token=a%2Bb+c&vsn=2.0.0&vsn=1.0.0&flag&empty=&sp%61ced=x&pct=100%&bad=%zz&u=%C3%A9";
        assert_eq!(query_param(q, "token").as_deref(), Some("a+b c"));
        assert_eq!(
            query_param(q, "vsn").as_deref(),
            Some("2.0.0"),
            "first value wins"
        );
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(
            query_param(q, "spaced").as_deref(),
            Some("x"),
            "names are decoded"
        );
        assert_eq!(query_param(q, "pct").as_deref(), Some("100%"));
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "u").as_deref(), Some("é"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param("", "vsn"), None);
        assert_eq!(query_param("a=%FF", "a").as_deref(), Some("\u{FFFD}"));
        assert_eq!(query_param("a=1=2", "a").as_deref(), Some("1=2"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(
            buf in prop::collection::vec(any::<u8>(), 0..600),
            max_request_bytes in 0usize..700,
            max_headers in 0usize..40,
        ) {
            let limits = Limits { max_request_bytes, max_headers };
            if let Ok(Parse::Complete { head, consumed }) = parse_request(&buf, &limits) {
                prop_assert!(consumed <= buf.len().min(max_request_bytes));
                let _ = validate_upgrade(&head);
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            which in 0usize..3,
        ) {
            let mut buf = [NODE_WS, CHROME, FIREFOX_VIA_PROXY][which].to_vec();
            let i = at.index(buf.len());
            buf[i] = byte;
            if let Ok(Parse::Complete { head, .. }) = parse_request(&buf, &Limits::default()) {
                if let Ok(up) = validate_upgrade(&head) {
                    let _ = accept_response(&up.key, up.protocols.first().map(String::as_str));
                }
            }
        }

        #[test]
        fn query_param_round_trip(
            name in "[a-z]{1,8}",
            value in "\\PC{0,20}",
            noise in "[a-z]{0,5}",
        ) {
            // Encode every byte of the value, so the decoder does all the work.
            let encoded: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assume!(name != "other");
            let q = format!("other={noise}&{name}={encoded}&{name}=second");
            prop_assert_eq!(query_param(&q, &name), Some(value));
            prop_assert_eq!(query_param(&q, "other"), Some(noise));
        }

        #[test]
        fn query_param_garbage(q in "\\PC{0,40}", name in "\\PC{0,4}") {
            let _ = query_param(&q, &name);
        }
    }
}
