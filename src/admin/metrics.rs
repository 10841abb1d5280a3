//! `/metrics`: the snapshot in the Prometheus text format (0.0.4), as `promtool check metrics`
//! wants it — base units (`_bytes`, `_seconds`), `_total` on counters, HELP and TYPE on every
//! family. Labels are bounded: `worker` (one value per worker thread), `source`, `le`, `version`;
//! never a topic or a client. Every family is listed in `docs/operations.md`.

use std::fmt::Write;
use std::sync::mpsc;
use std::time::Duration;

use super::stats::Snapshot;
use crate::hub::Hub;
use crate::worker::inbox::Msg;
use crate::worker::latency::BOUNDS_US;
use crate::worker::report::Report;

/// How long to wait for a worker's report: a worker answers within one loop turn.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the process knows about a worker without asking it: whether it is alive.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Health {
    pub worker: usize,
    pub up: bool,
    /// Inbox messages dropped because the worker was dead.
    pub inbox_dropped: u64,
    /// Broadcasts dropped because the live worker's inbox was full.
    pub inbox_overflowed: u64,
}

/// Every worker's health, from the inboxes (a dead worker's inbox is closed).
pub fn health(hub: &Hub) -> Vec<Health> {
    hub.inboxes
        .iter()
        .enumerate()
        .map(|(worker, inbox)| Health {
            worker,
            up: !inbox.is_closed(),
            inbox_dropped: inbox.dropped_total(),
            inbox_overflowed: inbox.overflowed_total(),
        })
        .collect()
}

/// Asks every live worker for its report (blocking: call from a blocking context).
pub fn gather(hub: &Hub) -> Vec<Report> {
    let replies: Vec<_> = hub
        .inboxes
        .iter()
        .filter(|inbox| !inbox.is_closed())
        .map(|inbox| {
            let (tx, rx) = mpsc::sync_channel(1);
            inbox.send(Msg::Report(tx));
            rx
        })
        .collect();
    // One deadline for all: k wedged workers cost one timeout, not k.
    let deadline = std::time::Instant::now() + REPORT_TIMEOUT;
    replies
        .into_iter()
        .filter_map(|rx| {
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .ok()
        })
        .collect()
}

type Field = fn(&Report) -> u64;

/// Per-worker families: (name, type, help, value).
const PER_WORKER: &[(&str, &str, &str, Field)] = &[
    (
        "connections",
        "gauge",
        "Connections held, any state.",
        |r| r.connections,
    ),
    (
        "connections_open",
        "gauge",
        "Upgraded WebSocket connections.",
        |r| r.open,
    ),
    (
        "connections_handshaking",
        "gauge",
        "Connections in the HTTP upgrade.",
        |r| r.handshaking,
    ),
    (
        "connections_closing",
        "gauge",
        "Connections closing (close frame sent or received).",
        |r| r.closing,
    ),
    ("accepted_total", "counter", "Connections accepted.", |r| {
        r.stats.accepted
    }),
    ("closed_total", "counter", "Connections closed.", |r| {
        r.stats.closed
    }),
    ("upgrades_total", "counter", "WebSocket upgrades.", |r| {
        r.stats.upgrades
    }),
    (
        "http_responses_total",
        "counter",
        "Plain HTTP responses (health checks and refused upgrades).",
        |r| r.stats.http_responses,
    ),
    (
        "protocol_errors_total",
        "counter",
        "Connections closed for a protocol violation.",
        |r| r.stats.protocol_errors,
    ),
    (
        "handshake_timeouts_total",
        "counter",
        "Handshakes not completed in time.",
        |r| r.stats.handshake_timeouts,
    ),
    (
        "handshakes_refused_total",
        "counter",
        "Connections dropped at max_handshakes_per_worker.",
        |r| r.stats.handshakes_refused,
    ),
    (
        "idle_timeouts_total",
        "counter",
        "Connections closed as idle.",
        |r| r.stats.idle_timeouts,
    ),
    (
        "send_queue_overflows_total",
        "counter",
        "Slow consumers closed with 1008 (send queue over max_send_queue_bytes).",
        |r| r.stats.send_queue_overflows,
    ),
    (
        "inbox_overflow_closes_total",
        "counter",
        "Members closed with 1013 because their topic lost a broadcast (to the worker's full inbox, or at the bus's max_incoming_bytes).",
        |r| r.stats.inbox_overflow_closes,
    ),
    (
        "recv_enobufs_total",
        "counter",
        "Receives that found the buffer ring empty.",
        |r| r.stats.recv_enobufs,
    ),
    (
        "accept_table_full_total",
        "counter",
        "Accepts refused by a full connection table.",
        |r| r.stats.accept_table_full,
    ),
    (
        "memory_pauses_total",
        "counter",
        "Times accepting paused at max_memory_bytes.",
        |r| r.stats.memory_pauses,
    ),
    (
        "per_ip_refused_total",
        "counter",
        "Connections refused at max_connections_per_ip.",
        |r| r.stats.per_ip_refused,
    ),
    (
        "auth_failures_total",
        "counter",
        "Tokens refused as missing or invalid (at connect or in-band).",
        |r| r.stats.auth_failures,
    ),
    (
        "auth_expired_total",
        "counter",
        "Connections closed when their token expired.",
        |r| r.stats.auth_expired,
    ),
    (
        "rate_limited_total",
        "counter",
        "Connections closed at max_messages_per_second.",
        |r| r.stats.rate_limited,
    ),
    (
        "messages_in_total",
        "counter",
        "WebSocket data messages received.",
        |r| r.stats.messages_in,
    ),
    (
        "frames_out_total",
        "counter",
        "WebSocket frames and HTTP responses (the upgrade, an error, /healthz) written out whole, each counted once however many sends it took.",
        |r| r.stats.frames_out,
    ),
    ("joins_total", "counter", "Channel joins.", |r| {
        r.stats.joins
    }),
    (
        "joins_refused_total",
        "counter",
        "Joins refused by the token's channels claim or max_joins_per_second.",
        |r| r.stats.joins_refused,
    ),
    (
        "leaves_total",
        "counter",
        "Channel leaves (incl. on close).",
        |r| r.stats.leaves,
    ),
    (
        "deliveries_total",
        "counter",
        "Broadcast frames queued to members.",
        |r| r.stats.deliveries,
    ),
    (
        "deliveries_dropped_total",
        "counter",
        "Broadcast deliveries dropped (no frame for the member's serializer, or a closing member).",
        |r| r.stats.deliveries_dropped,
    ),
    (
        "memory_conn_table_bytes",
        "gauge",
        "Bytes of the connection table in use.",
        |r| r.memory.conn_table_bytes,
    ),
    (
        "memory_rx_bytes",
        "gauge",
        "Bytes of incomplete receive state.",
        |r| r.memory.rx_bytes,
    ),
    (
        "memory_send_queue_bytes",
        "gauge",
        "Bytes of send queues.",
        |r| r.memory.send_queue_bytes,
    ),
    (
        "memory_channel_heap_bytes",
        "gauge",
        "Heap bytes of connections in two or more channels.",
        |r| r.memory.channel_heap_bytes,
    ),
    (
        "memory_frame_bytes",
        "gauge",
        "Bytes of frames in flight.",
        |r| r.memory.frame_bytes,
    ),
    (
        "memory_recv_buffer_bytes",
        "gauge",
        "Bytes of receive buffers in use.",
        |r| r.memory.recv_buffer_bytes,
    ),
    (
        "memory_timer_wheel_bytes",
        "gauge",
        "Bytes of timer-wheel entries.",
        |r| r.memory.wheel_bytes,
    ),
    (
        "memory_accounted_bytes",
        "gauge",
        "Sum of the worker's accounted user-space bytes.",
        super::stats::accounted_bytes,
    ),
    ("memberships", "gauge", "Channel memberships.", |r| {
        r.memory.memberships
    }),
    (
        "worker_topics",
        "gauge",
        "Topics with members on this worker.",
        |r| r.memory.topics,
    ),
    (
        "memory_rx_limit_bytes",
        "gauge",
        "Bound on bytes of incomplete receive state (max_rx_bytes_per_worker; 0 = none).",
        |r| r.memory.rx_limit_bytes,
    ),
    (
        "rx_budget_closes_total",
        "counter",
        "Connections closed because their input would pass max_rx_bytes_per_worker.",
        |r| r.stats.rx_budget_closes,
    ),
    (
        "cq_overflow_total",
        "counter",
        "Completions the kernel could not post: the completion queue was full.",
        |r| r.cq_overflow,
    ),
    (
        "submission_backlog",
        "gauge",
        "Submission entries waiting for room in the submission queue.",
        |r| r.submission_backlog,
    ),
    (
        "sends_total",
        "counter",
        "Send calls (a SEND, or a SENDMSG coalescing several frames) that frames left in.",
        |r| r.stats.sends,
    ),
    (
        "waits_total",
        "counter",
        "Loop turns with nothing left to send that went to wait for completions (at once if some were there); with wake_batch_us one turn takes every completion of its window.",
        |r| r.stats.waits,
    ),
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP ringgate_{name} {help}\n# TYPE ringgate_{name} {kind}"
    );
}

fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

/// A family with one value per worker, `(worker, value)` pairs; the tuple is its name, type and
/// help.
fn worker_family(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    values: impl Iterator<Item = (usize, u64)>,
) {
    header(out, name, kind, help);
    for (worker, value) in values {
        let _ = writeln!(out, "ringgate_{name}{{worker=\"{worker}\"}} {value}");
    }
}

/// Prometheus text exposition of a snapshot.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for (name, kind, help, value) in PER_WORKER {
        worker_family(
            &mut out,
            (name, kind, help),
            s.workers.iter().map(|r| (r.worker, value(r))),
        );
    }
    header(
        &mut out,
        "broadcasts_total",
        "counter",
        "Broadcasts published, by source: client pushes (per worker) and the admin API.",
    );
    for r in &s.workers {
        let _ = writeln!(
            out,
            "ringgate_broadcasts_total{{source=\"client\",worker=\"{}\"}} {}",
            r.worker, r.stats.broadcasts
        );
    }
    let _ = writeln!(
        out,
        "ringgate_broadcasts_total{{source=\"admin_api\"}} {}",
        s.admin.broadcasts
    );

    header(
        &mut out,
        "delivery_latency_seconds",
        "histogram",
        "Time from a broadcast's publish until a worker had queued it to its last local member; one observation per broadcast and worker.",
    );
    for r in &s.workers {
        let h = &r.stats.delivery_latency;
        let mut cumulative = 0;
        for (i, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += h.buckets[i];
            let _ = writeln!(
                out,
                "ringgate_delivery_latency_seconds_bucket{{worker=\"{}\",le=\"{}\"}} {cumulative}",
                r.worker,
                seconds(*bound)
            );
        }
        let _ = writeln!(
            out,
            "ringgate_delivery_latency_seconds_bucket{{worker=\"{}\",le=\"+Inf\"}} {}\n\
             ringgate_delivery_latency_seconds_sum{{worker=\"{}\"}} {}\n\
             ringgate_delivery_latency_seconds_count{{worker=\"{}\"}} {}",
            r.worker,
            h.count,
            r.worker,
            seconds(h.sum_us),
            r.worker,
            h.count
        );
    }

    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "ringgate_{name} {value}");
    };
    gauge(
        "topics",
        "gauge",
        "Topics with at least one member.",
        s.topics.to_string(),
    );
    let presence = s.presence.unwrap_or_default();
    gauge(
        "presence_topics",
        "gauge",
        "Topics with at least one tracked presence.",
        presence.topics.to_string(),
    );
    gauge(
        "presence_entries",
        "gauge",
        "Tracked presences (this node's and other nodes').",
        presence.entries.to_string(),
    );
    gauge(
        "workers",
        "gauge",
        "Worker threads that answered this scrape.",
        s.workers.len().to_string(),
    );
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the gateway process.",
        s.process.resident_bytes.to_string(),
    );
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the gateway, seconds since the Unix epoch.",
        s.process.start_time_seconds.to_string(),
    );
    gauge(
        "kernel_tcp_sockets",
        "gauge",
        "TCP sockets in use on the host (/proc/net/sockstat).",
        s.kernel.tcp_sockets.to_string(),
    );
    gauge(
        "kernel_tcp_buffer_bytes",
        "gauge",
        "TCP buffer memory on the host (/proc/net/sockstat mem pages).",
        s.kernel.tcp_buffer_bytes.to_string(),
    );
    if let Some(v) = s.kernel.bytes_per_socket_estimate {
        gauge(
            "kernel_socket_estimate_bytes",
            "gauge",
            "Estimated kernel bytes per TCP socket: slab objects of one socket plus host TCP buffers per socket.",
            v.to_string(),
        );
    }
    // From what the process knows without asking the workers (`Health`): a dead or wedged worker
    // is still listed.
    worker_family(
        &mut out,
        (
            "worker_up",
            "gauge",
            "1 while the worker runs, 0 once it died.",
        ),
        s.health.iter().map(|h| (h.worker, u64::from(h.up))),
    );
    worker_family(
        &mut out,
        (
            "inbox_dropped_total",
            "counter",
            "Messages dropped because their worker was dead.",
        ),
        s.health.iter().map(|h| (h.worker, h.inbox_dropped)),
    );
    worker_family(
        &mut out,
        (
            "inbox_overflow_total",
            "counter",
            "Broadcasts dropped because their live worker's inbox was full (the worker is behind); their topics' members are closed with 1013.",
        ),
        s.health.iter().map(|h| (h.worker, h.inbox_overflowed)),
    );
    header(
        &mut out,
        "worker_deaths_total",
        "counter",
        "Workers that died (returned an error or panicked).",
    );
    let _ = writeln!(
        out,
        "ringgate_worker_deaths_total {}",
        s.health.iter().filter(|h| !h.up).count()
    );
    header(
        &mut out,
        "build_info",
        "gauge",
        "Always 1; the version as a label.",
    );
    let _ = writeln!(
        out,
        "ringgate_build_info{{version=\"{}\"}} 1",
        s.process.version
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::stats::{summarize, AdminStats};

    #[test]
    fn exposition_has_one_sample_per_worker_and_metric() {
        let mut a = Report {
            worker: 0,
            connections: 3,
            ..Report::default()
        };
        a.stats.deliveries = 7;
        a.stats.broadcasts = 2;
        a.stats.delivery_latency.observe(Duration::from_micros(300));
        let b = Report {
            worker: 1,
            connections: 4,
            ..Report::default()
        };
        let admin = AdminStats { broadcasts: 5 };
        let workers = vec![a, b];
        let snap = Snapshot {
            topics: 2,
            summary: summarize(&workers, &admin, &Default::default()),
            workers,
            admin,
            ..Snapshot::default()
        };
        assert_eq!(snap.summary.broadcasts, 7);
        let text = prometheus(&snap);
        assert!(text.contains("ringgate_connections{worker=\"0\"} 3\n"));
        assert!(text.contains("ringgate_connections{worker=\"1\"} 4\n"));
        assert!(text.contains("ringgate_deliveries_total{worker=\"0\"} 7\n"));
        assert!(text.contains("ringgate_broadcasts_total{source=\"admin_api\"} 5\n"));
        assert!(text.contains("ringgate_broadcasts_total{source=\"client\",worker=\"0\"} 2\n"));
        assert!(text
            .contains("ringgate_delivery_latency_seconds_bucket{worker=\"0\",le=\"0.00025\"} 0\n"));
        assert!(text
            .contains("ringgate_delivery_latency_seconds_bucket{worker=\"0\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("ringgate_delivery_latency_seconds_count{worker=\"0\"} 1\n"));
        assert!(text.contains("ringgate_topics 2\n"));
    }
}
