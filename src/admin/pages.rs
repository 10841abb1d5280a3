//! The pages of the admin port: the live dashboard (`GET /`) and the seed's chat app
//! (`GET /chat`), with their scripts, styles and vendored libraries compiled into the binary
//! (`assets/`; no CDN, nothing read from disk at run time). The pages hold no data and no secret:
//! the dashboard polls `/api/stats` once a second, sending the API key the user typed (kept in
//! `sessionStorage`) as an `Authorization` header; the chat page talks to the public port.
//! Third-party files and their versions and licences: `assets/vendor/README.md`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Pages load only their own files; the chat page may open a WebSocket to the public port.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");
const CHAT_HTML: &str = include_str!("assets/chat.html");

/// (name, content type, body, vendored: cached for a day as it changes only with the binary's
/// vendored version).
const ASSETS: &[(&str, &str, &str, bool)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
        false,
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/chat.js"),
        false,
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
        false,
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/uPlot.iife.min.js"),
        true,
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/vendor/uPlot.min.css"),
        true,
    ),
    (
        "phoenix.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/phoenix.min.js"),
        true,
    ),
];

fn page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn dashboard() -> Response {
    page(DASHBOARD_HTML.to_string())
}

pub async fn asset(Path(name): Path<String>) -> Response {
    let Some(&(_, kind, body, vendored)) = ASSETS.iter().find(|(n, ..)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let cache = if vendored {
        "public, max-age=86400"
    } else {
        "no-cache"
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Where the chat page's phoenix.js connects: the public port, on whatever host name the browser
/// reached the admin port by.
pub struct ChatConfig {
    html: String,
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl ChatConfig {
    /// `phoenix_path` is the WebSocket path (`/socket/websocket`); phoenix.js wants the socket
    /// path without its `/websocket` (it appends the transport name itself). A path that does not
    /// end in `/websocket` cannot be reached by phoenix.js: the page says so.
    pub fn new(public_port: u16, phoenix_path: &str) -> Self {
        let endpoint = phoenix_path.strip_suffix("/websocket").unwrap_or("");
        let html = CHAT_HTML
            .replace("{{PORT}}", &public_port.to_string())
            .replace("{{SOCKET_PATH}}", &escape_attr(endpoint))
            .replace("{{PHOENIX_PATH}}", &escape_attr(phoenix_path));
        Self { html }
    }
}

pub fn chat(cfg: &ChatConfig) -> Response {
    page(cfg.html.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_page_names_the_public_port_and_socket_path() {
        let c = ChatConfig::new(4321, "/socket/websocket");
        assert!(c.html.contains(r#"content="4321""#));
        assert!(c
            .html
            .contains(r#"name="ringgate-socket-path" content="/socket""#));
        let odd = ChatConfig::new(1, "/ws\"x");
        assert!(odd
            .html
            .contains(r#"name="ringgate-socket-path" content="""#));
        assert!(odd.html.contains("/ws&quot;x"));
    }
}
