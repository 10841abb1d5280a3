//! Presence across nodes on the bus: the transport of `presence::replica`, whose rules (deltas
//! numbered per node, heartbeats, request/transfer after a gap or a reconnect, a silent node's
//! entries turned into leaves) are in its module docs and in docs/protocol.md, "Presence across
//! nodes".
//!
//! It runs only when some route has `presence = true`: a deployment without presence routes
//! publishes nothing here, so a broadcast still costs exactly one `PUBLISH`. All presence
//! messages travel on one channel, `presence@<prefix>` (outside the `<prefix><topic>` space, so
//! no topic can collide with it); a node that never tracked anything stays silent on it.
//!
//! One task owns the replica. It takes this node's batched changes from the flusher
//! ([`PresenceBus::local`], a bounded queue; an overflow makes the task re-read this node's
//! entries from the table instead), the messages received on the channel (a bounded queue; a
//! dropped message is a gap the replica repairs by a transfer), the link's generation (a new
//! connection: subscribe the channel again, then ask every node for its entries) and the clock.
//! What other nodes' entries do is merged into the node's table, whose flusher renders it into
//! `presence_diff`s for this node's members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::{add, now_ms, Bus};
use crate::hub::Hub;
use crate::presence::replica::{Entry, Output, Replica, Wire};
use crate::presence::PresenceConfig;

/// Local batches waiting for the task. 4096: minutes of batches at 20 per second; past it the
/// task re-reads the node's entries from the table, so nothing is lost, only merged.
const MAX_QUEUED_BATCHES: usize = 4096;
/// Received presence messages waiting for the task. 4096, the same reasoning; past it a message
/// is dropped and counted, and the gap it leaves is repaired by a state transfer.
const MAX_QUEUED_MESSAGES: usize = 4096;
/// Bytes of the received messages waiting for the task (as they came off the bus). 64 MiB: far
/// more than deltas of a busy cluster take while the task catches up. A message that finds the
/// queue empty is always taken, so a state transfer larger than this still gets through.
const MAX_QUEUED_MESSAGE_BYTES: usize = 64 << 20;

type Batch = (Vec<Entry>, Vec<Entry>);
/// A received message and its size as it came off the bus (`MAX_QUEUED_MESSAGE_BYTES`).
type Received = (Wire, usize);

/// Counters, read by `/metrics`.
#[derive(Default)]
pub struct PresenceStats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub transfers_sent: AtomicU64,
    pub nodes_timed_out: AtomicU64,
    /// Entries other nodes sent that were not merged: out of the bounds this node keeps its own
    /// entries to (`Entry::within`), or joining a topic that holds twice `max_members` entries.
    pub entries_refused: AtomicU64,
}

/// The presence side of the bus.
pub struct PresenceBus {
    pub channel: String,
    pub cfg: PresenceConfig,
    pub stats: PresenceStats,
    local_tx: mpsc::Sender<Batch>,
    wire_tx: mpsc::Sender<Received>,
    /// Bytes of the messages in `wire_tx`'s queue (`MAX_QUEUED_MESSAGE_BYTES`).
    queued_bytes: AtomicUsize,
    rx: Mutex<Option<(mpsc::Receiver<Batch>, mpsc::Receiver<Received>)>>,
    /// Set when a local batch was dropped: the task publishes the table's entries instead.
    lost_local: AtomicBool,
    /// The link generation the presence channel is subscribed on (0: none yet); the
    /// subscription check counts the channel only on that generation.
    pub subscribed_generation: AtomicU64,
    /// Clean stop: the task publishes the leaves of whatever this node still has published
    /// (its connections are closed by then), then answers on `farewell_done`.
    farewell: Notify,
    farewell_done: Notify,
}

/// The channel of every presence message for bus `prefix`.
pub fn channel(prefix: &str) -> String {
    format!("presence@{prefix}")
}

impl PresenceBus {
    pub fn new(prefix: &str, cfg: PresenceConfig) -> Self {
        let (local_tx, local_rx) = mpsc::channel(MAX_QUEUED_BATCHES);
        let (wire_tx, wire_rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
        Self {
            channel: channel(prefix),
            cfg,
            stats: PresenceStats::default(),
            local_tx,
            wire_tx,
            queued_bytes: AtomicUsize::new(0),
            rx: Mutex::new(Some((local_rx, wire_rx))),
            lost_local: AtomicBool::new(false),
            subscribed_generation: AtomicU64::new(0),
            farewell: Notify::new(),
            farewell_done: Notify::new(),
        }
    }

    /// One flush's changes of this node's own entries (the flusher thread; never blocks).
    pub fn local(&self, joins: Vec<Entry>, leaves: Vec<Entry>) {
        if joins.is_empty() && leaves.is_empty() {
            return;
        }
        if self.local_tx.try_send((joins, leaves)).is_err() {
            self.lost_local.store(true, Ordering::Release);
        }
    }

    /// On a clean stop, after the workers closed every connection: the other nodes are told at
    /// once that this node's members left, instead of after `node_timeout_ms`. Bounded in time.
    pub async fn farewell(&self) {
        self.farewell.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.farewell_done.notified()).await;
    }

    /// A message received on the presence channel (the bus receiver).
    pub fn received(&self, body: &[u8]) {
        add(&self.stats.received, 1);
        match Wire::decode(body) {
            Ok(mut w) => {
                let max_meta_bytes = self.cfg.max_meta_bytes;
                let refused = w.retain_entries(|e| e.within(max_meta_bytes));
                if refused > 0 {
                    add(&self.stats.entries_refused, refused as u64);
                    tracing::debug!(refused, "bus: presence entries out of bounds refused");
                }
                let bytes = body.len();
                if !super::reserve(&self.queued_bytes, bytes, MAX_QUEUED_MESSAGE_BYTES) {
                    add(&self.stats.dropped, 1);
                } else if self.wire_tx.try_send((w, bytes)).is_err() {
                    self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    add(&self.stats.dropped, 1);
                }
            }
            Err(e) => {
                add(&self.stats.decode_errors, 1);
                tracing::debug!(error = %e, "bus: undecodable presence message");
            }
        }
    }
}

/// A random node incarnation id (a restarted node is a new node: docs/protocol.md).
fn incarnation() -> u64 {
    ahash::RandomState::new().hash_one((now_ms(), std::process::id())) | 1
}

/// The task (spawned by `run::spawn` when presence is on).
pub async fn run(bus: Arc<Bus>, hub: Arc<Hub>) {
    let Some(p) = bus.presence.as_ref() else {
        return;
    };
    let Some((mut local_rx, mut wire_rx)) = p.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    else {
        return;
    };
    let mut replica = Replica::new(incarnation(), p.cfg.heartbeat_ms, p.cfg.node_timeout_ms);
    let mut link_rx = bus.link.subscribe();
    link_rx.mark_changed();
    let mut generation = 0u64;
    // Several ticks per heartbeat period, so a timeout is noticed soon after it passes.
    let mut tick = tokio::time::interval(Duration::from_millis((p.cfg.heartbeat_ms / 4).max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outs = Vec::new();
    loop {
        outs.clear();
        let mut bye = false;
        tokio::select! {
            () = p.farewell.notified() => {
                while let Ok((joins, leaves)) = local_rx.try_recv() {
                    outs.extend(replica.local(joins, leaves));
                }
                outs.extend(replica.replace_local(hub.presence.local_entries()));
                bye = true;
            },
            batch = local_rx.recv() => match batch {
                Some((joins, leaves)) => outs.extend(replica.local(joins, leaves)),
                None => return,
            },
            wire = wire_rx.recv() => match wire {
                Some((w, bytes)) => {
                    p.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    outs.extend(replica.receive(now_ms(), w));
                }
                None => return,
            },
            _ = tick.tick() => {
                if p.lost_local.swap(false, Ordering::AcqRel) {
                    // Batches queued before the loss are applied first, so the replacement is
                    // the table's latest view.
                    while let Ok((joins, leaves)) = local_rx.try_recv() {
                        outs.extend(replica.local(joins, leaves));
                    }
                    let mine = hub.presence.local_entries();
                    outs.extend(replica.replace_local(mine));
                }
                let before = replica.peers().len();
                outs.extend(replica.tick(now_ms()));
                let gone = before.saturating_sub(replica.peers().len());
                add(&p.stats.nodes_timed_out, gone as u64);
            },
            changed = link_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let link = link_rx.borrow_and_update().clone();
                let Some(link) = link else { continue };
                if link.generation() == generation {
                    continue;
                }
                // Subscribed before asking, so no answer is missed.
                match link.subscribe(std::slice::from_ref(&p.channel), true, 1).await {
                    Ok(_) => {
                        generation = link.generation();
                        p.subscribed_generation.store(generation, Ordering::Release);
                        outs.extend(replica.connected(now_ms()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bus: cannot subscribe the presence channel");
                        super::run::link_failed(&bus, &link, &e);
                    }
                }
            },
        }
        handle(&bus, p, &hub, &mut outs).await;
        if bye {
            p.farewell_done.notify_one();
        }
    }
}

/// Publishes what the replica sends (in order, one pipeline) and merges what it received.
async fn handle(bus: &Bus, p: &PresenceBus, hub: &Hub, outs: &mut Vec<Output>) {
    let mut items = Vec::new();
    let mut remote: HashMap<String, Batch> = HashMap::new();
    for o in outs.drain(..) {
        match o {
            Output::Send(w) => {
                if matches!(w, Wire::StateTransfer { .. }) {
                    add(&p.stats.transfers_sent, 1);
                }
                items.push((p.channel.clone(), w.encode()));
            }
            Output::Remote { joins, leaves } => {
                for e in joins {
                    remote.entry(e.topic.clone()).or_default().0.push(e);
                }
                for e in leaves {
                    remote.entry(e.topic.clone()).or_default().1.push(e);
                }
            }
        }
    }
    for (topic, (joins, leaves)) in remote {
        let joins: Vec<(String, String, String)> = joins
            .into_iter()
            .map(|e| (e.key, e.phx_ref, e.meta))
            .collect();
        let leaves: Vec<(String, String)> =
            leaves.into_iter().map(|e| (e.key, e.phx_ref)).collect();
        let refused = hub.presence.apply_remote(&topic, &joins, &leaves);
        add(&p.stats.entries_refused, refused as u64);
    }
    if items.is_empty() {
        return;
    }
    // Without a link the messages are lost; the replica's heartbeats and transfers repair that
    // once the link is back (docs/protocol.md, "Presence across nodes").
    let Some(link) = bus.link() else {
        add(&p.stats.dropped, items.len() as u64);
        return;
    };
    match link.publish(&items).await {
        Ok(()) => add(&p.stats.published, items.len() as u64),
        Err(e) => {
            add(&p.stats.dropped, items.len() as u64);
            super::run::link_failed(bus, &link, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A received delta of about `mib` MiB, of entries within the default bounds (so none is
    /// filtered out before the queue).
    fn delta(seq: u64, mib: usize) -> Vec<u8> {
        let meta = format!(r#"{{"pad":"{}"}}"#, "x".repeat(400));
        let joins: Vec<Entry> = (0..(mib << 20) / 480)
            .map(|i| Entry {
                topic: "room:1".into(),
                key: format!("k{i}"),
                phx_ref: format!("r{i}"),
                meta: meta.clone(),
            })
            .collect();
        assert!(joins.iter().all(|e| e.within(512)));
        Wire::Delta {
            node: 5,
            seq,
            joins,
            leaves: Vec::new(),
        }
        .encode()
    }

    #[test]
    fn received_messages_are_bounded_in_bytes_but_one_always_fits() {
        let p = PresenceBus::new("ringgate:", PresenceConfig::default());
        let (_local, mut wire) = p.rx.lock().unwrap().take().unwrap();
        p.received(&delta(1, 40));
        p.received(&delta(2, 20));
        // 60 MiB wait: another 20 would pass 64 MiB.
        p.received(&delta(3, 20));
        assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 1);
        while let Ok((_, bytes)) = wire.try_recv() {
            p.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        assert_eq!(p.queued_bytes.load(Ordering::Relaxed), 0);
        // Larger than the whole bound, into an empty queue: taken (a big state transfer).
        p.received(&delta(4, 70));
        assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 1);
        assert!(wire.try_recv().is_ok());
    }
}
