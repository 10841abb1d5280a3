//! A joiner's presence state is sent past the send-queue bound (a room's state may be larger
//! than the bound), but only one such frame may wait at a time: a client that keeps joining a
//! large room without reading is closed as a slow consumer after a few joins, instead of queuing
//! a copy of the room's state per join.

mod common;

use std::time::Duration;

use common::aio::{admin_request, next_json};
use common::Gateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Each of the two members' metas: the room's state is ~60 KB, just under the send-queue bound.
const META_BYTES: usize = 30_000;
const SEND_QUEUE_BYTES: usize = 65_536;
/// Join cycles after which a hog must have been closed. With one uncounted state at a time it
/// is closed after a handful (the kernel's small buffers take the first states); when every
/// state was let in uncounted, only its replies counted (~300 B a cycle) and it took ~200.
const MAX_CYCLES: usize = 40;

async fn slow_consumer_closes(admin: std::net::SocketAddr) -> u64 {
    let text = admin_request(admin, "GET", "/metrics", None).await.1;
    text.lines()
        .filter(|l| l.starts_with("ringgate_send_queue_overflows_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_client_that_joins_a_large_room_again_and_again_without_reading_is_closed() {
    common::bounded(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ringgate.toml");
        std::fs::write(
            &config,
            "[presence]\nbatch_ms = 10\nmax_meta_bytes = 40000\n\n[[channels]]\n\
             pattern = \"room:*\"\non_push = \"broadcast\"\npresence = true\n\
             presence_key = \"param:user\"\npresence_meta = [\"param:status\"]\n",
        )
        .unwrap();
        let send_queue = SEND_QUEUE_BYTES.to_string();
        let gw = Gateway::start(&[
            "--config",
            config.to_str().unwrap(),
            "--workers",
            "1",
            "--max-send-queue-bytes",
            &send_queue,
            "--send-buffer-bytes",
            "16384",
        ]);
        let url = gw.url("/socket/websocket?vsn=2.0.0");

        // Two members with large metas, reading everything they are sent.
        for user in ["a", "b"] {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let status = "x".repeat(META_BYTES);
            let join = json!(["1", "1", "room:big", "phx_join", {"user": user, "status": status}]);
            ws.send(Message::text(join.to_string())).await.unwrap();
            let reply = next_json(&mut ws, Duration::from_secs(20)).await;
            assert_eq!(reply[4]["status"], "ok", "{reply}");
            tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        }

        // The hog: a small receive buffer, and it never reads.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(gw.addr).await.unwrap();
        let (mut hog, _) = tokio_tungstenite::client_async(&url, stream).await.unwrap();
        let mut closed_after = None;
        for cycle in 1..=MAX_CYCLES {
            let r = cycle.to_string();
            let join = json!([r, r, "room:big", "phx_join", {"user": "hog", "status": "s"}]);
            let leave = json!([r, format!("l{r}"), "room:big", "phx_leave", {}]);
            let sent = async {
                hog.send(Message::text(join.to_string())).await?;
                hog.send(Message::text(leave.to_string())).await
            };
            let sent = sent.await.is_ok();
            // Give the worker the cycle's messages before asking (the count is what is checked).
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !sent || slow_consumer_closes(gw.admin).await > 0 {
                closed_after = Some(cycle);
                break;
            }
        }
        let cycles = closed_after.unwrap_or_else(|| {
            panic!("a hog joining a ~60 KB room {MAX_CYCLES} times without reading is still open")
        });
        assert!(
            slow_consumer_closes(gw.admin).await >= 1,
            "closed as a slow consumer"
        );
        eprintln!("hog closed after {cycles} join cycles");
    });
}
