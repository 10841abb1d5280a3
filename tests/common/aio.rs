//! Async (tokio) helpers for the tests that drive many clients from one runtime: a bounded
//! admin API request and the next JSON text message of a WebSocket, so the test files that need
//! them do not each carry a copy.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long one admin API request may take: the control thread answers in milliseconds, so
/// this only turns a hung gateway into a failure with the request's name.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request to the admin API with `Connection: close`: the status and the body.
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    admin_request_as(admin, None, method, path, body).await
}

/// `admin_request` carrying `Authorization: Bearer <key>` when a key is given.
pub async fn admin_request_as(
    admin: SocketAddr,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect to the admin API {admin}: {e}"));
        let req = match body {
            Some(body) => format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            None => format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n"
            ),
        };
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no HTTP status in {out:?}"));
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in {ADMIN_TIMEOUT:?}"))
}

/// A POST of a JSON body: the status and the body.
pub async fn admin_post(admin: SocketAddr, path: &str, body: &str) -> (u16, String) {
    admin_request(admin, "POST", path, Some(body)).await
}

/// A GET whose answer is JSON: the parsed body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Value {
    let (status, body) = admin_request(admin, "GET", path, None).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {body:?}: {e}"))
}

/// The next text or close message, skipping pings and binary frames; fails when none arrives
/// within `limit` or the stream ends.
async fn next_text_or_close<S>(ws: &mut WebSocketStream<S>, limit: Duration) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(limit, ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        if matches!(m, Message::Text(_) | Message::Close(_)) {
            return m;
        }
    }
}

/// The next text message parsed as JSON, or a close frame as `{"close": code}` (null without
/// one), skipping pings and binary frames.
pub async fn next_json_or_close<S>(ws: &mut WebSocketStream<S>, limit: Duration) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_text_or_close(ws, limit).await {
        Message::Close(c) => serde_json::json!({"close": c.map(|c| u16::from(c.code))}),
        m => serde_json::from_str(m.to_text().expect("a text message")).unwrap(),
    }
}

/// The next text message parsed as JSON, skipping pings and binary frames (and a close frame,
/// after which the stream's end fails it); fails when none arrives within `limit`.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>, limit: Duration) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if let Message::Text(t) = next_text_or_close(ws, limit).await {
            return serde_json::from_str(&t).unwrap();
        }
    }
}
