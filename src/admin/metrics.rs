//! `/api/stats` (JSON) and `/metrics` (Prometheus text): every worker's counters and memory
//! accounting, gathered by asking each worker through its inbox.

use std::fmt::Write;
use std::sync::mpsc;
use std::time::Duration;

use crate::hub::Hub;
use crate::worker::inbox::Msg;
use crate::worker::report::Report;

/// How long to wait for a worker's report: a worker answers within one loop turn.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the process knows about a worker without asking it: whether it is alive.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub worker: usize,
    pub up: bool,
    /// Inbox messages dropped because the worker was dead.
    pub inbox_dropped: u64,
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
    replies
        .into_iter()
        .filter_map(|rx| rx.recv_timeout(REPORT_TIMEOUT).ok())
        .collect()
}

/// Prometheus text exposition of the reports.
pub fn prometheus(reports: &[Report], health: &[Health], topics: usize) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: &dyn Fn(&Report) -> u64| {
        let _ = writeln!(
            out,
            "# HELP ringgate_{name} {help}\n# TYPE ringgate_{name} {kind}"
        );
        for r in reports {
            let _ = writeln!(
                out,
                "ringgate_{name}{{worker=\"{}\"}} {}",
                r.worker,
                value(r)
            );
        }
    };
    metric(
        "connections",
        "gauge",
        "Connections held, any state.",
        &|r| r.connections,
    );
    metric(
        "connections_open",
        "gauge",
        "Upgraded WebSocket connections.",
        &|r| r.open,
    );
    metric(
        "connections_handshaking",
        "gauge",
        "Connections in the HTTP upgrade.",
        &|r| r.handshaking,
    );
    metric("accepted_total", "counter", "Connections accepted.", &|r| {
        r.stats.accepted
    });
    metric("closed_total", "counter", "Connections closed.", &|r| {
        r.stats.closed
    });
    metric("upgrades_total", "counter", "WebSocket upgrades.", &|r| {
        r.stats.upgrades
    });
    metric(
        "protocol_errors_total",
        "counter",
        "Connections closed for a protocol violation.",
        &|r| r.stats.protocol_errors,
    );
    metric(
        "handshake_timeouts_total",
        "counter",
        "Handshakes not completed in time.",
        &|r| r.stats.handshake_timeouts,
    );
    metric(
        "idle_timeouts_total",
        "counter",
        "Connections closed as idle.",
        &|r| r.stats.idle_timeouts,
    );
    metric(
        "send_queue_overflows_total",
        "counter",
        "Slow consumers closed with 1008.",
        &|r| r.stats.send_queue_overflows,
    );
    metric(
        "recv_enobufs_total",
        "counter",
        "Receives that found the buffer ring empty.",
        &|r| r.stats.recv_enobufs,
    );
    metric(
        "accept_table_full_total",
        "counter",
        "Accepts refused by a full connection table.",
        &|r| r.stats.accept_table_full,
    );
    metric(
        "messages_in_total",
        "counter",
        "WebSocket data messages received.",
        &|r| r.stats.messages_in,
    );
    metric("joins_total", "counter", "Channel joins.", &|r| {
        r.stats.joins
    });
    metric(
        "leaves_total",
        "counter",
        "Channel leaves (incl. on close).",
        &|r| r.stats.leaves,
    );
    metric(
        "broadcasts_total",
        "counter",
        "Broadcasts published by this worker.",
        &|r| r.stats.broadcasts,
    );
    metric(
        "deliveries_total",
        "counter",
        "Broadcast frames queued to members.",
        &|r| r.stats.deliveries,
    );
    metric(
        "deliveries_dropped_total",
        "counter",
        "Broadcast deliveries dropped.",
        &|r| r.stats.deliveries_dropped,
    );
    metric(
        "memory_pauses_total",
        "counter",
        "Times accepting paused past max_memory_bytes.",
        &|r| r.stats.memory_pauses,
    );
    metric(
        "cq_overflow_total",
        "counter",
        "Completions the kernel could not post: the completion queue was full.",
        &|r| r.cq_overflow,
    );
    metric(
        "submission_backlog",
        "gauge",
        "Submission entries waiting for room in the submission queue.",
        &|r| r.submission_backlog,
    );
    metric(
        "memory_conn_table_bytes",
        "gauge",
        "Bytes of the connection table in use.",
        &|r| r.memory.conn_table_bytes,
    );
    metric(
        "memory_rx_bytes",
        "gauge",
        "Bytes of incomplete receive state.",
        &|r| r.memory.rx_bytes,
    );
    metric(
        "memory_rx_limit_bytes",
        "gauge",
        "Bound on bytes of incomplete receive state (max_rx_bytes_per_worker; 0 = none).",
        &|r| r.memory.rx_limit_bytes,
    );
    metric(
        "rx_budget_closes_total",
        "counter",
        "Connections closed because their input would pass max_rx_bytes_per_worker.",
        &|r| r.stats.rx_budget_closes,
    );
    metric(
        "memory_send_queue_bytes",
        "gauge",
        "Bytes of send queues.",
        &|r| r.memory.send_queue_bytes,
    );
    metric(
        "memory_frame_bytes",
        "gauge",
        "Bytes of frames in flight.",
        &|r| r.memory.frame_bytes,
    );
    metric(
        "memory_recv_buffer_bytes",
        "gauge",
        "Bytes of receive buffers in use.",
        &|r| r.memory.recv_buffer_bytes,
    );
    metric("memberships", "gauge", "Channel memberships.", &|r| {
        r.memory.memberships
    });
    let _ = writeln!(
        out,
        "# HELP ringgate_topics Topics with at least one member.\n# TYPE ringgate_topics gauge"
    );
    let _ = writeln!(out, "ringgate_topics {topics}");
    let _ = writeln!(
        out,
        "# HELP ringgate_worker_up 1 while the worker runs, 0 once it died.\n# TYPE ringgate_worker_up gauge"
    );
    for h in health {
        let _ = writeln!(
            out,
            "ringgate_worker_up{{worker=\"{}\"}} {}",
            h.worker,
            u8::from(h.up)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringgate_inbox_dropped_total Messages dropped because their worker was dead.\n# TYPE ringgate_inbox_dropped_total counter"
    );
    for h in health {
        let _ = writeln!(
            out,
            "ringgate_inbox_dropped_total{{worker=\"{}\"}} {}",
            h.worker, h.inbox_dropped
        );
    }
    let deaths = health.iter().filter(|h| !h.up).count();
    let _ = writeln!(
        out,
        "# HELP ringgate_worker_deaths_total Workers that died (returned an error or panicked).\n# TYPE ringgate_worker_deaths_total counter\nringgate_worker_deaths_total {deaths}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_one_sample_per_worker_and_metric() {
        let mut a = Report {
            worker: 0,
            connections: 3,
            ..Report::default()
        };
        a.stats.deliveries = 7;
        let b = Report {
            worker: 1,
            connections: 4,
            ..Report::default()
        };
        let health = [
            Health {
                worker: 0,
                up: true,
                inbox_dropped: 0,
            },
            Health {
                worker: 1,
                up: false,
                inbox_dropped: 5,
            },
        ];
        let text = prometheus(&[a, b], &health, 2);
        assert!(text.contains("ringgate_worker_up{worker=\"0\"} 1\n"));
        assert!(text.contains("ringgate_worker_up{worker=\"1\"} 0\n"));
        assert!(text.contains("ringgate_inbox_dropped_total{worker=\"1\"} 5\n"));
        assert!(text.contains("ringgate_worker_deaths_total 1\n"));
        assert!(text.contains("ringgate_connections{worker=\"0\"} 3\n"));
        assert!(text.contains("ringgate_connections{worker=\"1\"} 4\n"));
        assert!(text.contains("ringgate_deliveries_total{worker=\"0\"} 7\n"));
        assert!(text.contains("ringgate_topics 2\n"));
    }
}
