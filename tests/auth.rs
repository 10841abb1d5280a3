//! Connect authentication over real sockets: valid, expired, not-yet-valid, wrong-signature and
//! wrong-algorithm tokens (`none`, HS/RS confusion), tokens by parameter and by subprotocol, joins
//! inside and outside the `channels` claim, expiry while connected, and refresh.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::aio::next_json_or_close;
use common::Gateway;
use futures_util::SinkExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-of-some-length";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with `token` as the connect parameter; Err(status) when refused.
async fn connect(gw: &Gateway, token: Option<&str>) -> Result<Ws, u16> {
    let url = match token {
        Some(t) => format!("{}?vsn=2.0.0&token={t}", gw.url("/socket/websocket")),
        None => format!("{}?vsn=2.0.0", gw.url("/socket/websocket")),
    };
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    next_json_or_close(ws, Duration::from_secs(10)).await
}

async fn join(ws: &mut Ws, topic: &str) -> Value {
    ws.send(Message::text(
        json!(["1", "1", topic, "phx_join", {}]).to_string(),
    ))
    .await
    .unwrap();
    next_json(ws).await[4].clone()
}

#[test]
fn hs256_tokens_are_checked_at_connect() {
    common::bounded(
        Duration::from_secs(120),
        hs256_tokens_are_checked_at_connect_body(),
    );
}

async fn hs256_tokens_are_checked_at_connect_body() {
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--auth-secret",
        SECRET,
        "--auth-leeway-s",
        "0",
    ]);
    let valid = hs(json!({"exp": now() + 600, "sub": "u1"}));
    let mut ws = connect(&gw, Some(&valid))
        .await
        .expect("valid token accepted");
    assert_eq!(join(&mut ws, "rooms:lobby").await["status"], "ok");
    assert_eq!(connect(&gw, None).await.err(), Some(403), "missing token");
    assert_eq!(
        connect(&gw, Some(&hs(json!({"exp": now() - 60}))))
            .await
            .err(),
        Some(403),
        "expired"
    );
    assert_eq!(
        connect(
            &gw,
            Some(&hs(json!({"exp": now() + 600, "nbf": now() + 300})))
        )
        .await
        .err(),
        Some(403),
        "not yet valid"
    );
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now() + 600}),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    assert_eq!(
        connect(&gw, Some(&forged)).await.err(),
        Some(403),
        "wrong signature"
    );
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjk5OTk5OTk5OTl9.";
    assert_eq!(connect(&gw, Some(none)).await.err(), Some(403), "alg none");
    assert_eq!(
        connect(&gw, Some("garbage")).await.err(),
        Some(403),
        "malformed"
    );
}

#[test]
fn token_in_the_phoenix_subprotocol() {
    common::bounded(
        Duration::from_secs(120),
        token_in_the_phoenix_subprotocol_body(),
    );
}

async fn token_in_the_phoenix_subprotocol_body() {
    let gw = Gateway::start(&["--workers", "1", "--auth-secret", SECRET]);
    let token = hs(json!({"exp": now() + 600}));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(token);
    let mut req = format!("{}?vsn=2.0.0", gw.url("/socket/websocket"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("phoenix, base64url.bearer.phx.{b64}")
            .parse()
            .unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "phoenix");
    assert_eq!(join(&mut ws, "rooms:lobby").await["status"], "ok");
}

#[test]
fn rs256_and_es256_keys_and_no_algorithm_confusion() {
    common::bounded(
        Duration::from_secs(120),
        rs256_and_es256_keys_and_no_algorithm_confusion_body(),
    );
}

async fn rs256_and_es256_keys_and_no_algorithm_confusion_body() {
    let rsa_pub = fixture("rsa_public.pem");
    let gw = Gateway::start(&["--workers", "1", "--auth-public-key-file", &rsa_pub]);
    let rsa_priv = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"exp": now() + 600}),
        &EncodingKey::from_rsa_pem(&rsa_priv).unwrap(),
    )
    .unwrap();
    assert!(connect(&gw, Some(&rs)).await.is_ok(), "RS256 accepted");
    // HS256 signed with the public key's PEM as the HMAC secret: the classic confusion attack.
    let pem = std::fs::read(&rsa_pub).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now() + 600}),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_eq!(connect(&gw, Some(&confused)).await.err(), Some(403));
    drop(gw);
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--auth-public-key-file",
        &fixture("ec_public.pem"),
        "--auth-algorithm",
        "ES256",
    ]);
    let ec_priv = std::fs::read(fixture("ec_private.pem")).unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": now() + 600}),
        &EncodingKey::from_ec_pem(&ec_priv).unwrap(),
    )
    .unwrap();
    assert!(connect(&gw, Some(&es)).await.is_ok(), "ES256 accepted");
    assert_eq!(
        connect(&gw, Some(&rs)).await.err(),
        Some(403),
        "RS256 token on an ES256 gateway"
    );
}

#[test]
fn channels_claim_restricts_joins_and_routes_can_require_it() {
    common::bounded(
        Duration::from_secs(120),
        channels_claim_restricts_joins_and_routes_can_require_it_body(),
    );
}

async fn channels_claim_restricts_joins_and_routes_can_require_it_body() {
    let dir = std::env::temp_dir().join(format!("ringgate-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[[channels]]\npattern = \"rooms:*\"\non_push = \"broadcast\"\n\
             [[channels]]\npattern = \"private:*\"\non_push = \"reject\"\nrequire_claim = true\n\
             [auth]\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start(&["--workers", "1", "--config", config.to_str().unwrap()]);
    let limited = hs(json!({"exp": now() + 600, "channels": ["rooms:a", "private:7"]}));
    let mut ws = connect(&gw, Some(&limited)).await.unwrap();
    assert_eq!(join(&mut ws, "rooms:a").await["status"], "ok");
    let refused = join(&mut ws, "rooms:b").await;
    assert_eq!(
        (
            refused["status"].clone(),
            refused["response"]["reason"].clone()
        ),
        (json!("error"), json!("unauthorized"))
    );
    assert_eq!(join(&mut ws, "private:7").await["status"], "ok");
    let open = hs(json!({"exp": now() + 600}));
    let mut ws = connect(&gw, Some(&open)).await.unwrap();
    assert_eq!(
        join(&mut ws, "rooms:zzz").await["status"],
        "ok",
        "no claim: any routed topic"
    );
    assert_eq!(
        join(&mut ws, "private:7").await["response"]["reason"],
        "unauthorized",
        "route requires a claim"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn expiry_closes_with_1008_unless_refreshed() {
    common::bounded(
        Duration::from_secs(120),
        expiry_closes_with_1008_unless_refreshed_body(),
    );
}

async fn expiry_closes_with_1008_unless_refreshed_body() {
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--auth-secret",
        SECRET,
        "--timer-tick-ms",
        "100",
    ]);
    // Seconds, truncated: 3–4 s of validity, room for two connects and a refresh on a slow box.
    let short = hs(json!({"exp": now() + 4}));
    let mut expiring = connect(&gw, Some(&short)).await.unwrap();
    let mut refreshed = connect(&gw, Some(&short)).await.unwrap();
    let fresh = hs(json!({"exp": now() + 600}));
    refreshed
        .send(Message::text(
            json!([null, "5", "phoenix", "access_token", {"token": fresh}]).to_string(),
        ))
        .await
        .unwrap();
    let reply = next_json(&mut refreshed).await;
    assert_eq!(
        reply,
        json!([null, "5", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
    refreshed
        .send(Message::text(
            json!([null, "6", "phoenix", "access_token", {"token": "bad"}]).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut refreshed).await[4]["response"]["reason"],
        "invalid token"
    );
    assert_eq!(next_json(&mut expiring).await, json!({"close": 1008}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refreshed
        .send(Message::text(
            json!([null, "7", "phoenix", "heartbeat", {}]).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut refreshed).await[4]["status"],
        "ok",
        "refreshed connection outlives the first token"
    );
}
