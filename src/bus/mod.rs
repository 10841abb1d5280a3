//! The multi-node bus: broadcasts cross gateways through Redis (standalone `PUBLISH`/`SUBSCRIBE`,
//! or Redis Cluster sharded `SPUBLISH`/`SSUBSCRIBE`). It owns the Redis client, the envelope, the
//! channel subscriptions that follow local membership, the node heartbeats of the cluster view,
//! and the bus's counters.
//!
//! Everything that talks to Redis runs on the control-plane thread's tokio runtime (`run`). The
//! data plane only touches [`Bus`] through two non-blocking calls made by the hub: `offer` (a
//! local broadcast to publish: a bounded queue, dropped and counted when full or when Redis is
//! down) and `hint` (a topic's local membership changed: a set the reconciler drains). A worker
//! never waits on Redis and nothing here runs under a topic-table stripe lock.
//!
//! - `config`: `[bus]` settings. `envelope`: the bus message and its codec.
//! - `phoenix`: the codec of Phoenix.PubSub's Redis adapter (`format = "phoenix"`).
//! - `subs`: which channels to hold (linger, batching), sans-IO.
//! - `shards`: which Cluster master should hold which shard channel, for the reconciler's check
//!   that Redis still holds what this node subscribed, sans-IO.
//! - `link`: one connection set to Redis (standalone or Cluster) and the commands sent on it.
//! - `run`: the tasks (supervisor/receiver, publisher, reconciler, heartbeat).
//! - `nodes`: the cluster view (node records and subscriber counts kept in Redis).
//! - `presence`: presence across nodes (the replica's messages on their own channel), only when a
//!   route tracks presence.

pub mod config;
pub mod envelope;
pub mod incoming;
pub mod link;
pub mod nodes;
pub mod phoenix;
pub mod presence;
pub mod run;
pub mod shards;
pub mod subs;
mod supervisor;

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ahash::RandomState;
use tokio::sync::{mpsc, watch, Notify};

pub use config::{BusConfig, Target};
use envelope::{BusPayload, Codec, Ignored, RinggateCodec};
use link::Link;
use phoenix::json::Unsupported;

use crate::phoenix::serializer::Payload;

/// The bus link's state, as `/healthz` and `/metrics` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Not connected yet, or lost: local delivery only, publishes dropped and counted.
    Down = 0,
    Up = 1,
}

/// A local broadcast waiting to be published.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: Box<str>,
    pub event: Box<str>,
    pub payload: BusPayload,
    pub queued_at: Instant,
}

impl Outgoing {
    /// What it holds, as counted against `max_queued_publish_bytes`.
    pub fn bytes(&self) -> usize {
        let payload = match &self.payload {
            BusPayload::Json(raw) => raw.get().len(),
            BusPayload::Binary(b) => b.len(),
        };
        self.topic.len() + self.event.len() + payload
    }
}

/// Counters, read by `/metrics`.
#[derive(Default)]
pub struct BusStats {
    pub published: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_down: AtomicU64,
    pub dropped_error: AtomicU64,
    pub dropped_encode: AtomicU64,
    pub received: AtomicU64,
    pub echoes: AtomicU64,
    pub decode_errors: AtomicU64,
    pub delivered: AtomicU64,
    pub reconnects: AtomicU64,
    pub subscribe_commands: AtomicU64,
    pub unsubscribe_commands: AtomicU64,
    pub subscribed_channels: AtomicU64,
    pub resyncs: AtomicU64,
    /// Heartbeats that rewrote the node's whole counts hash because the changed counts waiting
    /// for one passed `max_pending_topics` (a long outage under topic churn).
    pub count_rewrites: AtomicU64,
    /// Cluster: checks that found fewer shard channels on the servers than subscribed.
    pub subscription_repairs: AtomicU64,
    pub heartbeat_errors: AtomicU64,
    /// Received messages not for this node's members, by `Ignored` reason.
    pub ignored: [AtomicU64; Ignored::ALL.len()],
    /// Received broadcasts whose payload JSON cannot carry, by `Unsupported` reason.
    pub unsupported: [AtomicU64; Unsupported::ALL.len()],
    /// Received messages over a decoding limit, by `REJECT_REASONS`.
    pub rejected: [AtomicU64; REJECT_REASONS.len()],
    /// Sum and count of publish latencies (queued → acknowledged by Redis), microseconds.
    pub publish_latency_us_sum: AtomicU64,
    pub publish_latency_count: AtomicU64,
}

/// Labels of `ringgate_bus_rejected_total` (the limits of `phoenix::scan::Reject`).
pub const REJECT_REASONS: [&str; 4] = ["too_large", "too_deep", "too_many_terms", "too_many_atoms"];

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts `n` more bytes into a queue's `queued` total, bounded by `max`; false (and nothing
/// counted) when they would pass it. A message that finds the queue empty always fits, so one
/// larger than the bound still gets through alone. Whoever takes it off subtracts `n`.
fn reserve(queued: &AtomicUsize, n: usize, max: usize) -> bool {
    let before = queued.fetch_add(n, Ordering::Relaxed);
    if before > 0 && before + n > max {
        queued.fetch_sub(n, Ordering::Relaxed);
        return false;
    }
    true
}

/// What the next heartbeat writes of this node's subscriber counts.
#[derive(Default)]
struct PendingCounts {
    changed: HashMap<Box<str>, u64, RandomState>,
    /// `changed` overflowed and was cleared: the whole hash is rewritten from the topic table.
    rewrite: bool,
}

impl PendingCounts {
    /// Past `max` changed topics, forgets them and asks for a rewrite instead.
    fn bound(&mut self, max: usize) {
        if self.changed.len() > max {
            self.changed = HashMap::default();
            self.rewrite = true;
        }
    }
}

/// The counts a heartbeat writes: the topics changed since the last one, or all of them.
#[derive(Debug)]
pub enum Counts {
    Changed(Vec<(Box<str>, u64)>),
    /// Every topic with members now; the node's hash is replaced by these.
    All(Vec<(Box<str>, u64)>),
}

/// Membership-change hints waiting for the reconciler.
#[derive(Default)]
struct Hints {
    topics: HashSet<Box<str>, RandomState>,
    /// Set when `topics` overflowed and was cleared: the reconciler compares the whole table.
    overflow: bool,
}

/// The bus as the rest of the gateway sees it.
pub struct Bus {
    pub name: Box<str>,
    /// Random per process: tells a restarted node from a live name clash.
    pub instance: u64,
    pub cfg: BusConfig,
    pub target: Target,
    pub codec: Box<dyn Codec>,
    pub stats: BusStats,
    pub started_ms: u64,
    /// Addresses advertised in the node record.
    pub listen: String,
    pub admin: String,
    state: AtomicU8,
    queue: mpsc::Sender<Outgoing>,
    /// Bytes of the broadcasts in `queue` (`Outgoing::bytes`), bounded by
    /// `max_queued_publish_bytes`; the publisher takes off what it receives.
    pub(crate) queued_bytes: AtomicUsize,
    /// The bound on what Redis pushed and the bus task has not taken yet (`incoming`).
    pub incoming: Arc<incoming::Gate>,
    queue_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    hints: Mutex<Hints>,
    /// Local subscriber counts changed since the last heartbeat, topic → members now: the
    /// reconciler notes them, the heartbeat writes them with the node record in one transaction.
    /// Bounded by `max_pending_topics` (an outage under topic churn would grow it for as long as
    /// it lasts): past it they are dropped and the next heartbeat rewrites the whole hash.
    pending_counts: Mutex<PendingCounts>,
    wake: Notify,
    /// Wakes the supervisor when a command on the current link failed, so it reconnects.
    broken: Notify,
    link: watch::Sender<Option<Link>>,
    /// Presence across nodes, when some route tracks presence.
    pub presence: Option<presence::PresenceBus>,
    /// Start-up verdict (connected, unreachable, or a name clash), sent once by `run`.
    startup: Mutex<Option<std::sync::mpsc::Sender<Result<bool, String>>>>,
}

/// Waits for the bus's start-up verdict.
pub struct Startup(std::sync::mpsc::Receiver<Result<bool, String>>);

impl Startup {
    /// `Ok(true)` connected, `Ok(false)` Redis unreachable (local-only for now, reconnecting),
    /// `Err` a live node already has this name.
    pub fn wait(self, timeout: std::time::Duration) -> Result<bool, String> {
        self.0.recv_timeout(timeout).unwrap_or(Ok(false))
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Bus {
    /// A bus for `cfg` (whose `url` is set) named `name`; `presence` when a route tracks it.
    pub fn new(
        cfg: BusConfig,
        target: Target,
        name: String,
        listen: String,
        admin: String,
        presence: Option<crate::presence::PresenceConfig>,
        max_payload_bytes: usize,
    ) -> (Arc<Self>, Startup) {
        let (tx, rx) = mpsc::channel(cfg.max_queued_publishes);
        let incoming = Arc::new(incoming::Gate::new(cfg.max_incoming_bytes));
        let cfg_prefix = cfg.prefix.clone();
        let (startup_tx, startup_rx) = std::sync::mpsc::channel();
        let instance = RandomState::new().hash_one(std::process::id()) | 1;
        let codec: Box<dyn Codec> = match cfg.format {
            config::BusFormat::Ringgate => Box::new(RinggateCodec::new(max_payload_bytes)),
            config::BusFormat::Phoenix => Box::new(phoenix::PhoenixCodec::new(&cfg)),
        };
        let bus = Arc::new(Self {
            name: name.into(),
            instance,
            cfg,
            target,
            codec,
            stats: BusStats::default(),
            started_ms: now_ms(),
            listen,
            admin,
            state: AtomicU8::new(LinkState::Down as u8),
            queue: tx,
            queued_bytes: AtomicUsize::new(0),
            incoming,
            queue_rx: Mutex::new(Some(rx)),
            hints: Mutex::new(Hints::default()),
            pending_counts: Mutex::new(PendingCounts::default()),
            wake: Notify::new(),
            broken: Notify::new(),
            link: watch::Sender::new(None),
            presence: presence.map(|p| presence::PresenceBus::new(&cfg_prefix, p)),
            startup: Mutex::new(Some(startup_tx)),
        });
        (bus, Startup(startup_rx))
    }

    pub fn state(&self) -> LinkState {
        if self.state.load(Ordering::Relaxed) == LinkState::Up as u8 {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn set_state(&self, s: LinkState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    fn note_counts(&self, counts: Vec<(Box<str>, u64)>) {
        if counts.is_empty() {
            return;
        }
        let mut pending = self
            .pending_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pending.rewrite {
            return;
        }
        pending.changed.extend(counts);
        pending.bound(self.cfg.max_pending_topics);
    }

    /// What the next heartbeat writes; `live` is called (a walk of the topic table) only when the
    /// whole hash is to be rewritten.
    fn take_counts(&self, live: impl FnOnce() -> Vec<(Box<str>, u64)>) -> Counts {
        let mut pending = self
            .pending_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // While a rewrite is asked for, `changed` stays empty (`note_counts`, `restore_counts`).
        if std::mem::take(&mut pending.rewrite) {
            drop(pending);
            return Counts::All(live());
        }
        Counts::Changed(pending.changed.drain().collect())
    }

    /// Puts back counts a failed heartbeat did not write, unless a newer one was noted meanwhile
    /// (or, for a failed rewrite, asks the next heartbeat to rewrite again).
    fn restore_counts(&self, counts: Counts) {
        let mut pending = self
            .pending_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match counts {
            Counts::All(_) => {
                pending.changed = HashMap::default();
                pending.rewrite = true;
            }
            Counts::Changed(_) if pending.rewrite => {}
            Counts::Changed(counts) => {
                for (topic, n) in counts {
                    pending.changed.entry(topic).or_insert(n);
                }
                pending.bound(self.cfg.max_pending_topics);
            }
        }
    }

    /// The current link, if up.
    pub fn link(&self) -> Option<Link> {
        self.link.borrow().clone()
    }

    /// Queues a local broadcast for the other nodes (called by the hub on any thread; never
    /// blocks). Dropped and counted when Redis is down or the queue is full.
    pub fn offer(&self, topic: &str, event: &str, payload: Payload<'_>) {
        if self.state() != LinkState::Up {
            add(&self.stats.dropped_down, 1);
            return;
        }
        let payload = match payload {
            Payload::Json(raw) => BusPayload::Json(raw.to_owned()),
            Payload::Binary(b) => BusPayload::Binary(b.to_vec()),
        };
        let out = Outgoing {
            topic: topic.into(),
            event: event.into(),
            payload,
            queued_at: Instant::now(),
        };
        // The bound holds the largest publish (checked at start), so the empty-queue rule of
        // `reserve` never lets a larger one in.
        let bytes = out.bytes();
        if !reserve(&self.queued_bytes, bytes, self.cfg.max_queued_publish_bytes) {
            add(&self.stats.dropped_queue_full, 1);
            return;
        }
        let refused = match self.queue.try_send(out) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => &self.stats.dropped_queue_full,
            Err(mpsc::error::TrySendError::Closed(_)) => &self.stats.dropped_down,
        };
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        add(refused, 1);
    }

    /// `topic`'s local membership changed (called by the hub after the table update, outside
    /// any stripe lock). Cheap: a set insert under a short lock, a wake-up when the set was empty.
    pub fn hint(&self, topic: &str) {
        let mut h = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        if h.topics.contains(topic) {
            return;
        }
        if h.topics.len() >= self.cfg.max_pending_topics {
            h.topics.clear();
            h.overflow = true;
        } else {
            h.topics.insert(topic.into());
        }
        let first = h.topics.len() <= 1;
        drop(h);
        if first {
            self.wake.notify_one();
        }
    }

    fn take_hints(&self) -> (HashSet<Box<str>, RandomState>, bool) {
        let mut h = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        let overflow = std::mem::take(&mut h.overflow);
        (std::mem::take(&mut h.topics), overflow)
    }

    /// Sends the start-up verdict (once).
    fn verdict(&self, v: Result<bool, String>) {
        if let Some(tx) = self
            .startup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(v);
        }
    }

    /// Publishes waiting in the queue.
    pub fn queued(&self) -> usize {
        self.cfg.max_queued_publishes - self.queue.capacity()
    }

    /// The bus's Prometheus metrics, appended to `out`.
    /// The bus section of `/api/stats` (the dashboard and `ringgate top` show it as it is).
    pub fn summary(&self) -> serde_json::Value {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "state": if self.state() == LinkState::Up { "up" } else { "down" },
            "node": &*self.name,
            "published": get(&s.published),
            "received": get(&s.received),
            "delivered": get(&s.delivered),
            "dropped": get(&s.dropped_queue_full) + get(&s.dropped_down) + get(&s.dropped_error)
                + get(&s.dropped_encode),
            "reconnects": get(&s.reconnects),
            "subscribed_channels": get(&s.subscribed_channels),
        })
    }

    pub fn prometheus(&self, out: &mut String) {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(
                out,
                "# HELP ringgate_bus_{name} {help}\n# TYPE ringgate_bus_{name} {kind}\nringgate_bus_{name} {value}"
            );
        };
        one(
            "up",
            "gauge",
            "1 while the Redis link is up; 0 means local delivery only (degraded).",
            &u64::from(self.state() == LinkState::Up),
        );
        one(
            "published_total",
            "counter",
            "Broadcasts published to Redis and acknowledged.",
            &get(&s.published),
        );
        one(
            "received_total",
            "counter",
            "Messages received from Redis (echoes included).",
            &get(&s.received),
        );
        one(
            "echoes_total",
            "counter",
            "Own messages received back and dropped.",
            &get(&s.echoes),
        );
        one(
            "delivered_total",
            "counter",
            "Received broadcasts handed to local workers.",
            &get(&s.delivered),
        );
        one(
            "decode_errors_total",
            "counter",
            "Received messages that were not valid envelopes.",
            &get(&s.decode_errors),
        );
        one(
            "reconnects_total",
            "counter",
            "Connections to Redis re-established after a loss.",
            &get(&s.reconnects),
        );
        one(
            "subscribe_commands_total",
            "counter",
            "SUBSCRIBE/SSUBSCRIBE commands sent.",
            &get(&s.subscribe_commands),
        );
        one(
            "unsubscribe_commands_total",
            "counter",
            "UNSUBSCRIBE/SUNSUBSCRIBE commands sent.",
            &get(&s.unsubscribe_commands),
        );
        one(
            "subscribed_channels",
            "gauge",
            "Topic channels held (lingering ones included).",
            &get(&s.subscribed_channels),
        );
        one(
            "resyncs_total",
            "counter",
            "Full comparisons of the topic table after the hint set overflowed.",
            &get(&s.resyncs),
        );
        one(
            "count_rewrites_total",
            "counter",
            "Heartbeats that rewrote this node's whole counts hash because the changed counts waiting for one passed max_pending_topics.",
            &get(&s.count_rewrites),
        );
        one(
            "subscription_repairs_total",
            "counter",
            "Redis Cluster: checks that found masters holding fewer shard channels than subscribed (each followed by a re-subscribe, or a reconnect when the one before did not help).",
            &get(&s.subscription_repairs),
        );
        one(
            "heartbeat_errors_total",
            "counter",
            "Heartbeat writes that failed.",
            &get(&s.heartbeat_errors),
        );
        one(
            "queued_publishes",
            "gauge",
            "Broadcasts waiting for Redis.",
            &(self.queued() as u64),
        );
        one(
            "incoming_dropped_total",
            "counter",
            "Messages from Redis dropped before the bus task took them (max_incoming_bytes); their topics' members were closed with 1013.",
            &get(&self.incoming.dropped),
        );
        one(
            "incoming_bytes",
            "gauge",
            "Bytes of the messages from Redis waiting for the bus task.",
            &(self.incoming.queued_bytes() as u64),
        );
        one(
            "queued_publish_bytes",
            "gauge",
            "Bytes of the broadcasts waiting for Redis (topic, event and payload).",
            &(self.queued_bytes.load(Ordering::Relaxed) as u64),
        );
        // A summary without quantiles: its `_sum` and `_count` under one family, so
        // `rate(_sum) / rate(_count)` is the mean latency and promtool sees no counter named
        // like a summary.
        let _ = writeln!(
            out,
            "# HELP ringgate_bus_publish_latency_seconds Publish latency, queued to acknowledged by Redis.\n\
             # TYPE ringgate_bus_publish_latency_seconds summary\n\
             ringgate_bus_publish_latency_seconds_sum {}\n\
             ringgate_bus_publish_latency_seconds_count {}",
            get(&s.publish_latency_us_sum) as f64 / 1e6,
            get(&s.publish_latency_count)
        );
        if let Some(p) = &self.presence {
            let ps = &p.stats;
            for (name, help, c) in [
                ("published_total", "Presence messages published (deltas, heartbeats, requests, transfers).", &ps.published),
                ("received_total", "Presence messages received (own echoes included).", &ps.received),
                ("dropped_total", "Presence messages not published (link down or failed) or not processed (queue full); repaired by transfers.", &ps.dropped),
                ("decode_errors_total", "Presence messages that could not be decoded.", &ps.decode_errors),
                ("transfers_sent_total", "Presence state transfers sent to other nodes.", &ps.transfers_sent),
                ("nodes_timed_out_total", "Nodes whose presence entries were removed after node_timeout_ms of silence.", &ps.nodes_timed_out),
                ("entries_refused_total", "Presence entries from other nodes not merged: out of this node's bounds, or joining a topic holding twice max_members entries.", &ps.entries_refused),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP ringgate_bus_presence_{name} {help}\n# TYPE ringgate_bus_presence_{name} counter\nringgate_bus_presence_{name} {}",
                    get(c)
                );
            }
        }
        let mut family = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (&str, u64)>| {
            let _ = writeln!(
                out,
                "# HELP ringgate_bus_{name} {help}\n# TYPE ringgate_bus_{name} counter"
            );
            for (reason, v) in rows {
                let _ = writeln!(out, "ringgate_bus_{name}{{reason=\"{reason}\"}} {v}");
            }
        };
        family(
            "ignored_total",
            "Received messages not for this node's members (echo, other_node, not_a_broadcast, no_members, version).",
            &mut Ignored::ALL.iter().map(|i| (i.reason(), get(&s.ignored[*i as usize]))),
        );
        family(
            "unsupported_total",
            "Received broadcasts dropped because JSON cannot carry their payload, by term kind.",
            &mut Unsupported::ALL
                .iter()
                .map(|u| (u.reason(), get(&s.unsupported[*u as usize]))),
        );
        family(
            "rejected_total",
            "Received messages refused over a decoding limit (etf_max_*).",
            &mut REJECT_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, get(&s.rejected[i]))),
        );
        let _ = writeln!(
            out,
            "# HELP ringgate_bus_dropped_total Broadcasts not published, by reason.\n# TYPE ringgate_bus_dropped_total counter"
        );
        for (reason, c) in [
            ("down", &s.dropped_down),
            ("queue_full", &s.dropped_queue_full),
            ("error", &s.dropped_error),
            ("encode", &s.dropped_encode),
        ] {
            let _ = writeln!(
                out,
                "ringgate_bus_dropped_total{{reason=\"{reason}\"}} {}",
                get(c)
            );
        }
    }

    /// Total broadcasts dropped, any reason.
    pub fn dropped(&self) -> u64 {
        let s = &self.stats;
        [
            &s.dropped_down,
            &s.dropped_queue_full,
            &s.dropped_error,
            &s.dropped_encode,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_bus(cfg: BusConfig) -> Arc<Bus> {
        let (bus, _startup) = Bus::new(
            cfg,
            Target::Standalone("redis://127.0.0.1:1".into()),
            "n".into(),
            String::new(),
            String::new(),
            None,
            1 << 20,
        );
        bus.state.store(LinkState::Up as u8, Ordering::Relaxed);
        bus
    }

    #[test]
    fn queued_publishes_are_bounded_in_bytes_as_well_as_in_count() {
        let bus = up_bus(BusConfig {
            max_queued_publish_bytes: 1 << 20,
            ..BusConfig::default()
        });
        let big = vec![7u8; 400 << 10];
        bus.offer("t", "e", Payload::Binary(&big));
        bus.offer("t", "e", Payload::Binary(&big));
        // A third would pass 1 MiB: dropped and counted, though the count bound is far away.
        bus.offer("t", "e", Payload::Binary(&big));
        assert_eq!(bus.queued(), 2);
        assert_eq!(bus.stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(
            bus.queued_bytes.load(Ordering::Relaxed),
            2 * (2 + (400 << 10))
        );
        let mut text = String::new();
        bus.prometheus(&mut text);
        assert!(text.contains(&format!(
            "ringgate_bus_queued_publish_bytes {}",
            2 * (2 + (400 << 10))
        )));
    }
}
