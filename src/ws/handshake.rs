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
mod tests {}
