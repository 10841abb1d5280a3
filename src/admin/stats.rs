//! One snapshot of the gateway for `/api/stats`, `/metrics`, the dashboard and `ringgate top`:
//! every worker's report (asked through its inbox), the shared topic count, the control plane's
//! own counters, the process and the kernel. Taken when asked, so an unobserved gateway pays
//! nothing, and taken off the data path (on a blocking thread of the control plane).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::system::{self, Kernel};
use crate::hub::Hub;
use crate::worker::latency::{Histogram, BOUNDS_US};
use crate::worker::report::Report;

/// Counters of the control plane itself (not of any worker).
#[derive(Debug)]
pub struct AdminCounters {
    /// Broadcasts published through `POST /api/broadcast` (one per request object).
    pub broadcasts: AtomicU64,
    pub started: Instant,
    pub started_unix_s: u64,
}

impl Default for AdminCounters {
    fn default() -> Self {
        Self {
            broadcasts: AtomicU64::new(0),
            started: Instant::now(),
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Process {
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub start_time_seconds: u64,
    pub resident_bytes: u64,
}

/// Broadcasts by where they were published.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AdminStats {
    pub broadcasts: u64,
}

/// Sums over workers: the figures a person looks at first.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub connections: u64,
    pub open: u64,
    pub handshaking: u64,
    pub accepted: u64,
    pub closed: u64,
    pub joins: u64,
    pub memberships: u64,
    /// Published by clients' pushes (workers) plus the admin API.
    pub broadcasts: u64,
    pub deliveries: u64,
    pub deliveries_dropped: u64,
    pub send_queue_bytes: u64,
    /// Slow consumers closed with 1008 (send queue over `max_send_queue_bytes`).
    pub slow_consumer_closes: u64,
    /// Times a worker stopped accepting at `max_memory_bytes`.
    pub memory_pauses: u64,
    /// Every `*_bytes` field of the workers' memory accounting, summed.
    pub accounted_bytes: u64,
    /// `accounted_bytes / connections` (0 with no connection).
    pub user_bytes_per_connection: u64,
    /// The kernel estimate per socket (see `system`), when readable.
    pub kernel_bytes_per_connection_estimate: Option<u64>,
    pub delivery_latency: Latency,
}

/// The workers' delivery-latency histograms merged, with the bucket bounds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    pub bounds_us: &'static [u64],
    /// Per bucket, not cumulative; the last bucket is `+Inf`.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Snapshot {
    pub topics: usize,
    pub workers: Vec<Report>,
    pub admin: AdminStats,
    pub process: Process,
    pub kernel: Kernel,
    pub summary: Summary,
    /// Workers that died (their index).
    pub dead_workers: Vec<usize>,
    /// The multi-node bus, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<serde_json::Value>,
    /// Presence on this node, when some route tracks it: tracked topics and entries (this node's
    /// and other nodes').
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<crate::presence::table::PresenceSummary>,
    #[serde(skip)]
    pub health: Vec<super::metrics::Health>,
}

/// The accounted user-space bytes of one worker.
pub fn accounted_bytes(r: &Report) -> u64 {
    let m = &r.memory;
    m.conn_table_bytes
        + m.rx_bytes
        + m.send_queue_bytes
        + m.channel_heap_bytes
        + m.frame_bytes
        + m.recv_buffer_bytes
        + m.wheel_bytes
}

pub fn summarize(workers: &[Report], admin: &AdminStats, kernel: &Kernel) -> Summary {
    let mut s = Summary::default();
    let mut latency = Histogram::default();
    for r in workers {
        s.connections += r.connections;
        s.open += r.open;
        s.handshaking += r.handshaking;
        s.accepted += r.stats.accepted;
        s.closed += r.stats.closed;
        s.joins += r.stats.joins;
        s.memberships += r.memory.memberships;
        s.broadcasts += r.stats.broadcasts;
        s.deliveries += r.stats.deliveries;
        s.deliveries_dropped += r.stats.deliveries_dropped;
        s.send_queue_bytes += r.memory.send_queue_bytes;
        s.slow_consumer_closes += r.stats.send_queue_overflows;
        s.memory_pauses += r.stats.memory_pauses;
        s.accounted_bytes += accounted_bytes(r);
        latency.merge(&r.stats.delivery_latency);
    }
    s.broadcasts += admin.broadcasts;
    s.user_bytes_per_connection = s.accounted_bytes.checked_div(s.connections).unwrap_or(0);
    s.kernel_bytes_per_connection_estimate = kernel.bytes_per_socket_estimate;
    s.delivery_latency = Latency {
        bounds_us: &BOUNDS_US,
        buckets: latency.buckets.to_vec(),
        count: latency.count,
        sum_us: latency.sum_us,
    };
    s
}

/// Takes a snapshot (blocking: asks every worker and reads /proc).
pub fn take(hub: &Hub, counters: &AdminCounters) -> Snapshot {
    let workers = super::metrics::gather(hub);
    let admin = AdminStats {
        broadcasts: counters.broadcasts.load(Ordering::Relaxed),
    };
    let kernel = system::kernel();
    let summary = summarize(&workers, &admin, &kernel);
    let health = super::metrics::health(hub);
    Snapshot {
        dead_workers: health.iter().filter(|h| !h.up).map(|h| h.worker).collect(),
        bus: hub.bus.as_ref().map(|b| b.summary()),
        presence: hub.router.tracks_presence().then(|| hub.presence.summary()),
        health,
        topics: hub.table.topic_count(),
        workers,
        admin,
        process: Process {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: counters.started.elapsed().as_secs_f64(),
            start_time_seconds: counters.started_unix_s,
            resident_bytes: crate::supervise::resident_bytes(),
        },
        kernel,
        summary,
    }
}
