//! Baseline for `ringgate load`'s figures: a tokio + tungstenite client (the usual Rust
//! "loadclient") holding N WebSocket connections doing the seed session (V1 join of rooms:lobby,
//! then idle). Prints its RSS at 1,000 and at N connections, the slope between them, and the
//! connect rate, so both clients are measured the same way against the same server.
//!
//! ```text
//! cargo run --release --example load_baseline_tokio -- ws://127.0.0.1:4000/socket/websocket 15000 [--small-buffers]
//! ```
//! `--small-buffers` sets a 4 KiB read buffer (tungstenite's default is 128 KiB, touched per
//! connection). Bounded: it connects N, holds for 10 s after the last, prints and exits.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Connects in flight at once, like `ringgate load`'s arrival loop keeps the backlog bounded.
const CONCURRENT_CONNECTS: usize = 512;
/// Settle time before an RSS reading.
const SETTLE: Duration = Duration::from_secs(5);

/// User + system CPU time of this process, ms (`/proc/self/stat` fields 14 and 15, in ticks).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1]) * 10
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

async fn connect_batch(
    url: &str,
    from: usize,
    to: usize,
    small: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = std::sync::Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut holders = Vec::new();
    for id in from..to {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let url = url.to_string();
        let joined = joined_tx.clone();
        holders.push(tokio::spawn(async move {
            let mut config = WebSocketConfig::default();
            if small {
                config = config.read_buffer_size(4096).write_buffer_size(0);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
                .await
                .expect("connect");
            let join = format!(
                r#"{{"topic":"rooms:lobby","event":"phx_join","payload":{{"user":"{id}"}},"ref":"1"}}"#
            );
            ws.send(Message::text(join)).await.unwrap();
            let reply = ws.next().await.unwrap().unwrap();
            assert!(reply.to_text().unwrap().contains(r#""status":"ok""#), "{reply:?}");
            drop(permit);
            joined.send(()).unwrap();
            // Hold the connection (idle) until the process exits.
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    for _ in from..to {
        joined_rx.recv().await.unwrap();
    }
    holders
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: URL N [--small-buffers]").clone();
    let n: usize = args.get(2).expect("usage: URL N").parse().unwrap();
    let small = args.iter().any(|a| a == "--small-buffers");
    let base = 1000.min(n);
    let t0 = Instant::now();
    let mut held = connect_batch(&url, 0, base, small).await;
    tokio::time::sleep(SETTLE).await;
    let rss_base = rss_bytes();
    let t1 = Instant::now();
    let cpu1 = cpu_ms();
    held.extend(connect_batch(&url, base, n, small).await);
    let connect_s = t1.elapsed().as_secs_f64();
    let connect_cpu_ms = cpu_ms() - cpu1;
    tokio::time::sleep(SETTLE).await;
    let rss_n = rss_bytes();
    println!(
        "tokio-tungstenite ({}): {base} conns RSS {:.1} MiB, {n} conns RSS {:.1} MiB, slope {:.0} B/conn; \
         {} connects (connect+join) in {connect_s:.2} s = {:.0}/s using {connect_cpu_ms} ms CPU \
         ({:.0} µs/conn); total {:.1} s",
        if small { "4 KiB read buffer" } else { "default config" },
        rss_base as f64 / 1048576.0,
        rss_n as f64 / 1048576.0,
        (rss_n as f64 - rss_base as f64) / (n - base) as f64,
        n - base,
        (n - base) as f64 / connect_s,
        connect_cpu_ms as f64 * 1000.0 / (n - base) as f64,
        t0.elapsed().as_secs_f64()
    );
    for h in held {
        h.abort();
    }
}
