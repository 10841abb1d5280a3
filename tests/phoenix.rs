//! Phoenix Channels over real sockets with an independent client (tokio-tungstenite): the seed
//! scenario verbatim, cross-worker fan-out to many subscribers, joins/leaves/closes racing with
//! broadcasts, and the admin API.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::aio::{
    admin_get, admin_post, admin_request, admin_request_as, next_json, next_json_or_close,
};
use common::Gateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway, query: &str) -> Ws {
    let url = format!("{}{}", gw.url("/socket/websocket"), query);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// How long a client may wait for a message it is owed.
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn seed_scenario_verbatim() {
    common::bounded(Duration::from_secs(120), async {
        let gw = Gateway::start(&["--workers", "2"]);
        let mut ws = connect(&gw, "").await;
        let join =
            r#"{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"42"},"ref":"1"}"#;
        ws.send(Message::text(join)).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(
            reply,
            Message::text(
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = admin_post(
            gw.admin,
            "/api/broadcast",
            r#"{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"}}"#,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["subscribers"],
            1
        );
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(
            got,
            Message::text(
                r#"{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"},"ref":null}"#
            )
        );
    });
}

#[test]
fn unknown_vsn_is_refused_with_403() {
    common::bounded(Duration::from_secs(120), async {
        let gw = Gateway::start(&["--workers", "1"]);
        let err = tokio_tungstenite::connect_async(gw.url("/socket/websocket?vsn=3.0.0"))
            .await
            .unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
            other => panic!("expected HTTP 403, got {other:?}"),
        }
    });
}

/// Many subscribers over three workers; every broadcast reaches every one of them, in order,
/// whether published by the admin API or by a client push on another worker.
#[test]
fn fan_out_across_workers_reaches_every_subscriber() {
    common::bounded(Duration::from_secs(120), async {
        const SUBSCRIBERS: usize = 600;
        const BROADCASTS: usize = 10;
        let gw = Gateway::start(&["--workers", "3"]);
        let mut subs = Vec::new();
        for i in 0..SUBSCRIBERS {
            let query = if i % 2 == 0 { "?vsn=2.0.0" } else { "" };
            let mut ws = connect(&gw, query).await;
            let join = if i % 2 == 0 {
                json!(["1", "1", "rooms:fan", "phx_join", {}]).to_string()
            } else {
                json!({"topic": "rooms:fan", "event": "phx_join", "payload": {}, "ref": "1"})
                    .to_string()
            };
            ws.send(Message::text(join)).await.unwrap();
            let reply = next_json(&mut ws, PATIENCE).await;
            let status = if i % 2 == 0 {
                &reply[4]["status"]
            } else {
                &reply["payload"]["status"]
            };
            assert_eq!(status, "ok", "{reply}");
            subs.push(ws);
        }
        assert_eq!(
            admin_get(gw.admin, "/api/topics/rooms:fan").await["subscribers"],
            SUBSCRIBERS as u64
        );
        // The members are spread over more than one worker, so the fan-out crosses workers.
        let members = per_worker(&metrics_text(gw.admin).await, "memberships");
        assert_eq!(members.iter().sum::<u64>(), SUBSCRIBERS as u64);
        assert!(
            members.iter().filter(|&&m| m > 0).count() >= 2,
            "subscribers on more than one worker: {members:?}"
        );
        for n in 0..BROADCASTS {
            let body =
                json!({"topic": "rooms:fan", "event": "tick", "payload": {"n": n}}).to_string();
            let (status, resp) = admin_post(gw.admin, "/api/broadcast", &body).await;
            assert_eq!(status, 202, "{resp}");
        }
        // One more from a client push (V2 subscriber 0): sender included, plus its ok reply.
        subs[0]
            .send(Message::text(
                json!(["1", "2", "rooms:fan", "tick", {"n": BROADCASTS}]).to_string(),
            ))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for (i, mut ws) in subs.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < BROADCASTS + 1 {
                    let m = next_json(&mut ws, PATIENCE).await;
                    let (event, payload) = if i % 2 == 0 {
                        (m[3].clone(), m[4].clone())
                    } else {
                        (m["event"].clone(), m["payload"].clone())
                    };
                    if event == "tick" {
                        seen.push(payload["n"].as_u64().unwrap());
                    }
                }
                assert_eq!(
                    seen,
                    (0..=BROADCASTS as u64).collect::<Vec<_>>(),
                    "subscriber {i}"
                );
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("every subscriber's reads in time")
                .unwrap();
        }
        // Exact counts: every member got every broadcast (the push's sender included), and the
        // members were spread over more than one worker (so the fan-out crossed workers).
        let text = metrics_text(gw.admin).await;
        let deliveries: u64 = per_worker(&text, "deliveries_total").iter().sum();
        assert_eq!(
            deliveries,
            (SUBSCRIBERS * (BROADCASTS + 1)) as u64,
            "{text}"
        );
        assert_eq!(
            per_worker(&text, "deliveries_dropped_total")
                .iter()
                .sum::<u64>(),
            0
        );
    });
}

/// One metric's per-worker samples from a `/metrics` text.
fn per_worker(text: &str, name: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("ringgate_{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .collect()
}

/// The Prometheus text of `/metrics`.
async fn metrics_text(admin: SocketAddr) -> String {
    admin_request(admin, "GET", "/metrics", None).await.1
}

/// Joins, leaves and abrupt closes racing with a stream of broadcasts: the survivors get every
/// broadcast, and the member count ends exact (closed connections left every topic).
#[test]
fn joins_leaves_and_closes_race_with_broadcasts() {
    common::bounded(Duration::from_secs(120), async {
        let gw = Gateway::start(&["--workers", "2"]);
        let admin = gw.admin;
        let publisher = tokio::spawn(async move {
            for n in 0..40 {
                let body = json!({"topic": "rooms:race", "event": "tick", "payload": {"n": n}})
                    .to_string();
                assert_eq!(admin_post(admin, "/api/broadcast", &body).await.0, 202);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut keep = Vec::new();
        for i in 0..200 {
            let mut ws = connect(&gw, "?vsn=2.0.0").await;
            ws.send(Message::text(
                json!(["1", "1", "rooms:race", "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
            ws.send(Message::text(
                json!(["1", "2", "rooms:other", "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
            match i % 4 {
                0 => drop(ws), // abrupt close, no close frame
                1 => {
                    ws.send(Message::text(
                        json!(["1", "3", "rooms:race", "phx_leave", {}]).to_string(),
                    ))
                    .await
                    .unwrap();
                    keep.push((ws, false));
                }
                _ => keep.push((ws, true)),
            }
        }
        publisher.await.unwrap();
        // The leaves and the abrupt closes are not acknowledged: each worker applies them when it
        // reads them. Poll (bounded) until both counts are what the clients left behind.
        let expected = keep.iter().filter(|(_, member)| *member).count() as u64;
        let want = (json!(expected), json!(keep.len() as u64));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = (
                admin_get(gw.admin, "/api/topics/rooms:race").await["subscribers"].clone(),
                admin_get(gw.admin, "/api/topics/rooms:other").await["subscribers"].clone(),
            );
            if got == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscribers of rooms:race and rooms:other: {got:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every remaining member gets a final broadcast.
        let body = json!({"topic": "rooms:race", "event": "final", "payload": {}}).to_string();
        assert_eq!(admin_post(gw.admin, "/api/broadcast", &body).await.0, 202);
        for (mut ws, member) in keep {
            if !member {
                continue;
            }
            loop {
                let m = next_json(&mut ws, PATIENCE).await;
                if m[3] == "final" {
                    break;
                }
            }
        }
        drop(gw);
    });
}

#[test]
fn admin_api_validates_requests_and_requires_the_key() {
    common::bounded(Duration::from_secs(120), async {
        let gw = Gateway::start(&["--workers", "1", "--api-key", "sekret"]);
        let (status, body) = admin_post(
            gw.admin,
            "/api/broadcast",
            r#"{"topic":"a","event":"e","payload":{}}"#,
        )
        .await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = admin_request_as(
            gw.admin,
            Some("sekret"),
            "POST",
            "/api/broadcast",
            Some("{not json"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("error"), "{body}");
    });
}

#[test]
fn stats_and_metrics_account_connections_and_memberships() {
    common::bounded(Duration::from_secs(120), async {
        // A 1 s handshake timeout on 100 ms ticks: a connection's handshake deadline, superseded by
        // its idle deadline, leaves the wheel within about a second.
        let gw = Gateway::start(&[
            "--workers",
            "2",
            "--handshake-timeout-ms",
            "1000",
            "--timer-tick-ms",
            "100",
        ]);
        // The readiness probe's connection must be reaped first, or a worker may give a client a
        // new slot rather than the probe's (the slot count below is exact).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = admin_get(gw.admin, "/api/stats").await;
            let (accepted, closed) = (&s["summary"]["accepted"], &s["summary"]["closed"]);
            if accepted.as_u64() > Some(0) && accepted == closed {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the readiness probe never counted as closed: {}",
                s["summary"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut conns = Vec::new();
        for _ in 0..10 {
            let mut ws = connect(&gw, "?vsn=2.0.0").await;
            ws.send(Message::text(
                json!(["1", "1", "rooms:acct", "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
            assert_eq!(next_json(&mut ws, PATIENCE).await[4]["status"], "ok");
            conns.push(ws);
        }
        // Wait (bounded) until the superseded handshake entries have come due and been dropped.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stats = loop {
            let stats = admin_get(gw.admin, "/api/stats").await;
            let entries: u64 = stats["workers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["memory"]["wheel_entries"].as_u64().unwrap())
                .sum();
            if entries == 10 {
                break stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wheel entries never settled at one per connection: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let workers = stats["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
        let sum = |key: &str| {
            workers
                .iter()
                .map(|w| w[key].as_u64().unwrap())
                .sum::<u64>()
        };
        let mem_sum = |key: &str| {
            workers
                .iter()
                .map(|w| w["memory"][key].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(sum("open"), 10);
        assert_eq!(mem_sum("memberships"), 10);
        assert_eq!(stats["topics"], 1);
        // The accounted user-space bytes of an idle joined connection: its 64-byte `Conn` slot and
        // one 8-byte timer-wheel entry, 72 B exactly (a slot freed by the readiness probe is reused).
        assert_eq!(mem_sum("conn_slots"), 10, "{stats}");
        assert_eq!(
            (mem_sum("conn_table_bytes") + mem_sum("wheel_bytes")) / 10,
            72,
            "{stats}"
        );
        let text = metrics_text(gw.admin).await;
        let open: u64 = text
            .lines()
            .filter(|l| l.starts_with("ringgate_connections_open{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(open, 10, "{text}");
    });
}

/// Joins past `max_joins_per_second` (after the burst) get an error reply; the connection stays.
#[test]
fn join_rate_is_limited_with_an_error_reply() {
    common::bounded(Duration::from_secs(120), async {
        // Two joins per second, bursts of four: four joins pass at once, the fifth does not.
        let gw = Gateway::start(&["--workers", "1", "--max-joins-per-second", "2"]);
        let mut ws = connect(&gw, "?vsn=2.0.0").await;
        let mut statuses = Vec::new();
        for i in 0..5 {
            let r = i.to_string();
            ws.send(Message::text(
                json!([r, r, format!("rooms:{i}"), "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
            let reply = next_json(&mut ws, PATIENCE).await;
            statuses.push((
                reply[4]["status"].clone(),
                reply[4]["response"]["reason"].clone(),
            ));
        }
        assert_eq!(
            statuses[..4].iter().filter(|(s, _)| s == "ok").count(),
            4,
            "{statuses:?}"
        );
        assert_eq!(statuses[4], (json!("error"), json!("too many joins")));
        ws.send(Message::text(
            json!([null, "9", "phoenix", "heartbeat", {}]).to_string(),
        ))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws, PATIENCE).await[4]["status"], "ok");
    });
}

/// Issue 9, defect 3: with the message limit off (`max_messages_per_second = 0`) the join bucket
/// still refills. A client joining a new topic every 0.3 s stays under a 5/s join limit for good;
/// before the fix the bucket never refilled and the 11th join (past the burst of 10) was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_bucket_refills_with_the_message_limit_off() {
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--max-messages-per-second",
        "0",
        "--max-joins-per-second",
        "5",
    ]);
    let mut ws = connect(&gw, "?vsn=2.0.0").await;
    let mut statuses = Vec::new();
    for i in 0..16 {
        let r = i.to_string();
        ws.send(Message::text(
            json!([r, r, format!("rooms:{i}"), "phx_join", {}]).to_string(),
        ))
        .await
        .unwrap();
        let reply = next_json(&mut ws, PATIENCE).await;
        assert_eq!(reply[1], json!(r), "{reply}");
        statuses.push(reply[4]["status"].clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(statuses, vec![json!("ok"); 16]);
}

/// The next frame (text or binary), with a timeout.
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("no error");
        if matches!(m, Message::Text(_) | Message::Binary(_)) {
            return m;
        }
    }
}

/// Sends a heartbeat with `r` and returns every frame before its reply: proves what an earlier
/// message produced (or that it produced nothing) without waiting for a timeout.
async fn frames_before_heartbeat(ws: &mut Ws, r: &str) -> Vec<Message> {
    ws.send(Message::text(
        json!([null, r, "phoenix", "heartbeat", {}]).to_string(),
    ))
    .await
    .unwrap();
    let mut before = Vec::new();
    loop {
        let m = next_frame(ws).await;
        if let Message::Text(t) = &m {
            let v: Value = serde_json::from_str(t).unwrap();
            if v[2] == "phoenix" && v[1] == r {
                return before;
            }
        }
        before.push(m);
    }
}

/// Issue 9, defect 8 (Phoenix.Socket.handle_in/4, duplicate join): the new join's reply comes
/// first, then the old join's phx_close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_join_replies_then_closes_the_old_join() {
    let gw = Gateway::start(&["--workers", "1"]);
    let mut ws = connect(&gw, "?vsn=2.0.0").await;
    let topic = "rooms:dup";
    for jr in ["1", "2"] {
        ws.send(Message::text(
            json!([jr, jr, topic, "phx_join", {}]).to_string(),
        ))
        .await
        .unwrap();
    }
    let ok = json!({"status": "ok", "response": {}});
    assert_eq!(
        next_json(&mut ws, PATIENCE).await,
        json!(["1", "1", topic, "phx_reply", ok])
    );
    assert_eq!(
        next_json(&mut ws, PATIENCE).await,
        json!(["2", "2", topic, "phx_reply", ok])
    );
    assert_eq!(
        next_json(&mut ws, PATIENCE).await,
        json!(["1", "1", topic, "phx_close", {}])
    );
}

/// Issue 9, defect 8 (Phoenix.Socket.handle_in/4, push on a joined topic): a join sent with a
/// null join_ref is keyed by null. A push naming a join_ref (here the join's own ref) is stale
/// for it and dropped; a push with a null join_ref reaches the channel, and the reply carries the
/// channel's join_ref (the join's ref).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_join_ref_of_a_join_is_not_a_wildcard() {
    let gw = Gateway::start(&["--workers", "1"]);
    let mut ws = connect(&gw, "?vsn=2.0.0").await;
    let topic = "rooms:nulljr";
    ws.send(Message::text(
        json!([null, "5", topic, "phx_join", {}]).to_string(),
    ))
    .await
    .unwrap();
    let ok = json!({"status": "ok", "response": {}});
    assert_eq!(
        next_json(&mut ws, PATIENCE).await,
        json!([null, "5", topic, "phx_reply", ok])
    );
    ws.send(Message::text(
        json!(["5", "6", topic, "new_msg", {"n": 1}]).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(frames_before_heartbeat(&mut ws, "h1").await, Vec::new());
    ws.send(Message::text(
        json!([null, "7", topic, "new_msg", {"n": 2}]).to_string(),
    ))
    .await
    .unwrap();
    let got: Vec<Value> = frames_before_heartbeat(&mut ws, "h2")
        .await
        .into_iter()
        .map(|m| serde_json::from_str(m.to_text().unwrap()).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            json!([null, null, topic, "new_msg", {"n": 2}]),
            json!(["5", "7", topic, "phx_reply", ok]),
        ]
    );
}

/// A V2 binary client push: `0, jr_len, ref_len, topic_len, event_len, join_ref, ref, topic,
/// event, data`.
fn binary_push(join_ref: &str, r: &str, topic: &str, event: &str, data: &[u8]) -> Message {
    let mut f = vec![
        0u8,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ];
    for part in [join_ref, r, topic, event] {
        f.extend_from_slice(part.as_bytes());
    }
    f.extend_from_slice(data);
    Message::binary(f)
}

/// Issue 9, defect 8 (Phoenix.Socket.V2.JSONSerializer, binary decode): an empty join_ref in a
/// binary push is "", not null, so it does not match a join made with "6" (dropped, as in
/// Phoenix); the same push with "6" is broadcast and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_empty_join_ref_is_kept_as_the_empty_string() {
    let gw = Gateway::start(&["--workers", "1"]);
    let mut ws = connect(&gw, "?vsn=2.0.0").await;
    let topic = "rooms:binjr";
    ws.send(Message::text(
        json!(["6", "6", topic, "phx_join", {}]).to_string(),
    ))
    .await
    .unwrap();
    let ok = json!({"status": "ok", "response": {}});
    assert_eq!(
        next_json(&mut ws, PATIENCE).await,
        json!(["6", "6", topic, "phx_reply", ok])
    );
    ws.send(binary_push("", "7", topic, "blob", b"\x01\x02"))
        .await
        .unwrap();
    assert_eq!(frames_before_heartbeat(&mut ws, "h1").await, Vec::new());
    ws.send(binary_push("6", "8", topic, "blob", b"\x01\x02"))
        .await
        .unwrap();
    let got = frames_before_heartbeat(&mut ws, "h2").await;
    assert_eq!(got.len(), 2, "{got:?}");
    // The broadcast, kind 2: `2, topic_len, event_len, topic, event, data`.
    let mut want = vec![2u8, topic.len() as u8, 4];
    want.extend_from_slice(topic.as_bytes());
    want.extend_from_slice(b"blob\x01\x02");
    assert_eq!(got[0], Message::binary(want));
    assert_eq!(
        serde_json::from_str::<Value>(got[1].to_text().unwrap()).unwrap(),
        json!(["6", "8", topic, "phx_reply", ok])
    );
}

/// A worker that stops taking its inbox (stalled here through the test-only
/// `--debug-fault-injection` route) while broadcasts keep coming holds 65,536 messages: the rest
/// are dropped and counted in `ringgate_inbox_overflow_total`. A member of the topic that lost
/// broadcasts gets exactly the ones kept, in order and from the first, and then a close (1013,
/// try again later) instead of going on as if it had them all; a member of a topic that lost
/// nothing stays; and the worker serves on, the lost topic included.
#[test]
fn a_stalled_workers_inbox_is_bounded_and_the_lost_topics_members_are_closed() {
    const KEPT: u64 = 65_536;
    const BATCH: u64 = 8_192;
    const BATCHES: u64 = 9;
    const STALL_MS: u64 = 10_000;
    common::bounded(Duration::from_secs(120), async {
        // A send queue large enough for every kept broadcast: the inbox is what is measured.
        let gw = Gateway::start(&[
            "--workers",
            "1",
            "--debug-fault-injection",
            "--max-send-queue-bytes",
            "67108864",
        ]);
        let mut joined = Vec::new();
        for topic in ["rooms:stall", "rooms:calm"] {
            let mut ws = connect(&gw, "?vsn=2.0.0").await;
            ws.send(Message::text(
                json!(["1", "1", topic, "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
            let reply = next_json(&mut ws, PATIENCE).await;
            assert_eq!(reply[4]["status"], "ok", "{reply}");
            joined.push(ws);
        }
        let (mut lossy, mut calm) = (joined.remove(0), joined.remove(0));
        // Built before the stall, so the stall only has to outlast sending them.
        let calm_body = json!({"topic": "rooms:calm", "event": "c", "payload": {}}).to_string();
        let bodies: Vec<String> = (0..BATCHES)
            .map(|b| {
                let batch: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
                    .map(|n| json!({"topic": "rooms:stall", "event": "n", "payload": {"n": n}}))
                    .collect();
                Value::from(batch).to_string()
            })
            .collect();

        // 202 once the worker sleeps: everything published from here on waits in its inbox.
        let path = format!("/api/debug/stall-worker/0/{STALL_MS}");
        let (status, body) = admin_post(gw.admin, &path, "").await;
        assert_eq!(status, 202, "{body}");
        let stalled_at = std::time::Instant::now();
        assert_eq!(
            admin_post(gw.admin, "/api/broadcast", &calm_body).await.0,
            202
        );
        let mut queued_for = 0;
        for body in &bodies {
            let (status, resp) = admin_post(gw.admin, "/api/broadcast", body).await;
            assert_eq!(status, 202, "{resp}");
            queued_for += serde_json::from_str::<Value>(&resp).unwrap()["subscribers"]
                .as_u64()
                .unwrap();
        }
        let publishing = stalled_at.elapsed();
        // The answers count the member only for the broadcasts its worker's inbox took.
        assert_eq!(queued_for, KEPT - 1);
        assert!(
            publishing < Duration::from_millis(STALL_MS - 500),
            "precondition: publishing took {publishing:?}, longer than the worker's stall"
        );
        let published = 1 + BATCHES * BATCH;

        // The calm broadcast came first, so the lossy member is kept KEPT - 1 of its own.
        for want in 0..KEPT - 1 {
            let m = next_json_or_close(&mut lossy, PATIENCE).await;
            assert_eq!(
                m[4]["n"], want,
                "kept broadcasts in order, none missing: {m}"
            );
        }
        let m = next_json_or_close(&mut lossy, PATIENCE).await;
        assert_eq!(
            m,
            json!({"close": 1013}),
            "then closed, not left believing it has all"
        );
        let m = next_json(&mut calm, PATIENCE).await;
        assert_eq!(m[3], "c", "{m}");

        let text = metrics_text(gw.admin).await;
        assert_eq!(
            per_worker(&text, "inbox_overflow_total"),
            vec![published - KEPT]
        );
        assert_eq!(per_worker(&text, "inbox_overflow_closes_total"), vec![1]);

        // Back: the calm member is still served, and a newcomer to the lost topic too.
        let mut newcomer = connect(&gw, "?vsn=2.0.0").await;
        newcomer
            .send(Message::text(
                json!(["1", "1", "rooms:stall", "phx_join", {}]).to_string(),
            ))
            .await
            .unwrap();
        let reply = next_json(&mut newcomer, PATIENCE).await;
        assert_eq!(reply[4]["status"], "ok", "{reply}");
        for (topic, ws) in [("rooms:calm", &mut calm), ("rooms:stall", &mut newcomer)] {
            let body = json!({"topic": topic, "event": "after", "payload": {}}).to_string();
            assert_eq!(admin_post(gw.admin, "/api/broadcast", &body).await.0, 202);
            let m = next_json(ws, PATIENCE).await;
            assert_eq!((&m[2], &m[3]), (&json!(topic), &json!("after")), "{m}");
        }
        let again = per_worker(&metrics_text(gw.admin).await, "inbox_overflow_total");
        assert_eq!(again, vec![published - KEPT], "nothing dropped since");
    });
}
