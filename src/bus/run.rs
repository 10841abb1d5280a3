//! The bus's tasks on the control-plane runtime.
//!
//! - supervisor (`supervisor.rs`): keeps the link to Redis, and hands what arrives to `receive`.
//! - publisher: drains the outgoing queue in batches, assigns sequence numbers, publishes.
//! - reconciler: turns membership hints into batched (un)subscribe commands, and keeps the counts
//!   that changed for the heartbeat.
//! - heartbeat: writes the node record and those counts once per `heartbeat_ms`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope::{BusMessage, BusPayload, CodecError, Envelope, Ignored, Received};
use super::link::Link;
use super::shards;
use super::subs::{Plan, Reconciler};
use super::{add, nodes, Bus, Outgoing};
use crate::hub::Hub;
use crate::phoenix::serializer::Payload;

/// Starts every task (call from inside the control-plane runtime).
pub fn spawn(bus: Arc<Bus>, hub: Arc<Hub>) {
    let rx = bus
        .queue_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(rx) = rx {
        tokio::spawn(publisher(bus.clone(), rx));
    }
    tokio::spawn(reconciler(bus.clone(), hub.clone()));
    tokio::spawn(heartbeat(bus.clone(), hub.clone()));
    if bus.presence.is_some() {
        tokio::spawn(super::presence::run(bus.clone(), hub.clone()));
    }
    tokio::spawn(super::supervisor::supervise(bus, hub));
}

/// A message from Redis: a presence message goes to the presence task; a broadcast is decoded,
/// what is not for this node's members (our own echo included) is dropped, and the rest is handed
/// to the hub as a local broadcast. Every drop is counted by reason and logged at warn level on
/// its 1st, 2nd, 4th, 8th, ... occurrence (a flood cannot flood the log).
pub(super) fn receive(
    bus: &Bus,
    hub: &Hub,
    channel: &[u8],
    body: &[u8],
    audience: &mut Vec<(usize, u32)>,
) {
    if let Some(p) = &bus.presence {
        if p.channel.as_bytes() == channel {
            return p.received(body);
        }
    }
    add(&bus.stats.received, 1);
    let wanted = |topic: &str| hub.table.members(topic) > 0;
    let e = match bus.codec.receive(body, &bus.name, &wanted) {
        Ok(Received::Broadcast(e)) => e,
        Ok(Received::Ignored(why)) => {
            if why == Ignored::Echo {
                add(&bus.stats.echoes, 1);
            }
            add(&bus.stats.ignored[why as usize], 1);
            return;
        }
        Err(e) => {
            let counter = match &e {
                CodecError::Unsupported(u) => &bus.stats.unsupported[*u as usize],
                CodecError::Rejected(r) => {
                    match super::REJECT_REASONS.iter().position(|x| *x == r.reason()) {
                        Some(i) => &bus.stats.rejected[i],
                        None => &bus.stats.decode_errors,
                    }
                }
                _ => &bus.stats.decode_errors,
            };
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(error = %e, occurrences = n, bytes = body.len(), "bus: received message dropped");
            } else {
                tracing::debug!(error = %e, "bus: received message dropped");
            }
            return;
        }
    };
    let payload = match &e.payload {
        BusPayload::Json(raw) => Payload::Json(raw),
        BusPayload::Binary(b) => Payload::Binary(b),
    };
    if hub
        .deliver_local(&e.topic, &e.event, payload, audience)
        .members
        > 0
    {
        add(&bus.stats.delivered, 1);
    }
}

/// The failure of a command on `link`: the supervisor replaces the link with a new
/// generation, unless a newer one already replaced it.
pub(super) fn link_failed(bus: &Bus, link: &Link, e: &redis::RedisError) {
    tracing::debug!(error = %e, "bus: command failed");
    if bus
        .link()
        .is_some_and(|l| l.generation() == link.generation())
    {
        bus.broken.notify_one();
    }
}

async fn publisher(bus: Arc<Bus>, mut rx: tokio::sync::mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(bus.cfg.publish_batch);
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, bus.cfg.publish_batch).await == 0 {
            return;
        }
        // Counted against `max_queued_publish_bytes` until Redis answered: the batch and its
        // encoded copy are held that long.
        let taken: usize = batch.iter().map(Outgoing::bytes).sum();
        let Some(link) = bus.link() else {
            add(&bus.stats.dropped_down, batch.len() as u64);
            bus.queued_bytes.fetch_sub(taken, Ordering::Relaxed);
            continue;
        };
        items.clear();
        let oldest = batch.iter().map(|o| o.queued_at).min();
        for o in batch.drain(..) {
            seq += 1;
            let channel = bus.codec.channel(&bus.cfg.prefix, &o.topic);
            let msg = BusMessage::Broadcast(Envelope {
                origin: bus.name.clone(),
                seq,
                topic: o.topic,
                event: o.event,
                payload: o.payload,
            });
            let mut body = Vec::new();
            match bus.codec.encode(&msg, &mut body) {
                Ok(()) => items.push((channel, body)),
                Err(e) => {
                    add(&bus.stats.dropped_encode, 1);
                    tracing::debug!(error = %e, "bus: cannot encode a broadcast");
                }
            }
        }
        if items.is_empty() {
            bus.queued_bytes.fetch_sub(taken, Ordering::Relaxed);
            continue;
        }
        let published = link.publish(&items).await;
        bus.queued_bytes.fetch_sub(taken, Ordering::Relaxed);
        match published {
            Ok(()) => {
                add(&bus.stats.published, items.len() as u64);
                if let Some(t) = oldest {
                    // Every message of the batch was acknowledged now; the sum uses the oldest
                    // one's wait for all, an upper bound that keeps this O(1) per batch.
                    let us = t.elapsed().as_micros() as u64;
                    add(&bus.stats.publish_latency_us_sum, us * items.len() as u64);
                    add(&bus.stats.publish_latency_count, items.len() as u64);
                }
            }
            Err(e) => {
                add(&bus.stats.dropped_error, items.len() as u64);
                link_failed(&bus, &link, &e);
            }
        }
    }
}

/// Topics with members now, and their counts (a walk of the table: after a reconnect or an
/// overflow only).
fn live_topics(hub: &Hub) -> Vec<(Box<str>, u64)> {
    hub.table.topics()
}

/// How long the reconciler lets membership hints gather after the first one wakes it: far below
/// the linger and a join's own round trip, enough to put a trickle of joins into one command.
const HINT_COALESCE: Duration = Duration::from_millis(10);

/// The first subscription check after a reconnect: the resync's commands are answered by then,
/// and a loss during a failover is repaired within seconds.
const AUDIT_AFTER_RESYNC: Duration = Duration::from_secs(1);

async fn reconciler(bus: Arc<Bus>, hub: Arc<Hub>) {
    let naming = bus.clone();
    let mut rec = Reconciler::new(
        Duration::from_millis(bus.cfg.linger_ms),
        Box::new(move |topic| {
            shards::hash_slot(naming.codec.channel(&naming.cfg.prefix, topic).as_bytes())
        }),
    );
    let mut link_rx = bus.link.subscribe();
    let mut generation = 0u64;
    let audit_every = Duration::from_millis(bus.cfg.subscription_audit_ms);
    // Cluster only: when the masters' count of this node's shard channels is next checked.
    let mut next_audit: Option<Instant> = None;
    let mut last_audit = Audit::Fine;
    loop {
        let deadline = [rec.next_deadline(), next_audit]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = bus.wake.notified() => {
                // Joins trickling in (a reconnect wave at 1000/s) would otherwise cost one
                // command per reconciler pass, nearly one per new topic; a short wait gathers them.
                tokio::time::sleep(HINT_COALESCE).await;
            }
            () = tokio::time::sleep_until(deadline) => {}
            changed = link_rx.changed() => if changed.is_err() { return },
        }
        let link = link_rx.borrow_and_update().clone();
        let now = Instant::now();
        let mut plan = Plan::default();
        let (hints, overflow) = bus.take_hints();
        // Counts changed in this pass, for the next heartbeat to write.
        let mut counts: Vec<(Box<str>, u64)> = Vec::new();
        match &link {
            Some(l) if l.generation() != generation => {
                generation = l.generation();
                next_audit = l.is_cluster().then(|| now + AUDIT_AFTER_RESYNC);
                last_audit = Audit::Fine;
                if let Some(channel) = bus.codec.shared_channel() {
                    // One channel for every topic: held for the whole connection.
                    match l.subscribe(&[channel.to_string()], true, 1).await {
                        Ok(n) => add(&bus.stats.subscribe_commands, n),
                        Err(e) => link_failed(&bus, l, &e),
                    }
                }
                let live = live_topics(&hub);
                counts.extend(live.iter().cloned());
                rec.resync(live.into_iter().map(|(t, _)| t), &mut plan);
            }
            _ if overflow => {
                add(&bus.stats.resyncs, 1);
                let live = live_topics(&hub);
                let set = live.iter().map(|(t, _)| t.clone()).collect();
                rec.reconcile_all(&set, now, &mut plan);
                counts.extend(live);
            }
            _ => {}
        }
        for topic in hints {
            let members = hub.table.members(&topic);
            rec.changed(&topic, members, now, &mut plan);
            counts.push((topic, members));
        }
        rec.expire(now, |t| hub.table.members(t), &mut plan);
        bus.note_counts(counts);
        let held = if bus.codec.shared_channel().is_some() {
            u64::from(link.is_some())
        } else {
            rec.len() as u64
        };
        bus.stats.subscribed_channels.store(held, Ordering::Relaxed);
        let Some(link) = link else {
            next_audit = None; // the next generation's resync schedules it again
            continue;
        };
        apply(&bus, &link, &plan).await;
        if next_audit.is_some_and(|t| t <= Instant::now()) {
            last_audit = audit(&bus, &link, &rec, last_audit).await;
            // After a repair, check again soon; it must have worked by then.
            let wait = match last_audit {
                Audit::Resubscribed => AUDIT_AFTER_RESYNC,
                Audit::Fine | Audit::Reconnect => audit_every,
            };
            next_audit = Some(Instant::now() + wait);
        }
    }
}

/// Sends a plan's commands (a failure leaves the link to the supervisor, whose new generation
/// makes the next pass subscribe everything again).
async fn apply(bus: &Bus, link: &Link, plan: &Plan) {
    if bus.codec.shared_channel().is_some() {
        // The shared channel is subscribed once per connection (above); topics need nothing.
        return;
    }
    for (topics, on) in [(&plan.subscribe, true), (&plan.unsubscribe, false)] {
        if topics.is_empty() {
            continue;
        }
        let channels: Vec<String> = topics
            .iter()
            .map(|t| bus.codec.channel(&bus.cfg.prefix, t))
            .collect();
        match link.subscribe(&channels, on, bus.cfg.subscribe_batch).await {
            Ok(n) => {
                tracing::debug!(
                    generation = link.generation(),
                    subscribe = on,
                    channels = channels.len(),
                    "bus: channel commands answered"
                );
                add(
                    if on {
                        &bus.stats.subscribe_commands
                    } else {
                        &bus.stats.unsubscribe_commands
                    },
                    n,
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, subscribe = on, channels = channels.len(), "bus: channel command failed");
                link_failed(bus, link, &e);
                return;
            }
        }
    }
}

/// What the last subscription check did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audit {
    /// Every master holds what it should (or the check could not run).
    Fine,
    /// Channels were subscribed again on masters that held fewer than they should.
    Resubscribed,
    /// The link was given up (a second shortfall in a row).
    Reconnect,
}

/// Compares, master by master, the shard channels Redis holds for `link` with those this node
/// subscribed (`rec`'s topics, and the presence channel once subscribed on this generation). A
/// master holding fewer lost a subscription without a sign on the connection (seen during a
/// failover on a loaded box): its channels are subscribed again, which Redis treats as a no-op
/// for those it still has. A shortfall right after such a repair gives up the link, and the next
/// generation subscribes everything again. More on a server than expected (a channel the client
/// re-subscribed on its own) costs only dropped messages. A master the client cannot reach is
/// skipped: failing commands are the supervisor's to notice.
async fn audit(bus: &Bus, link: &Link, rec: &Reconciler, last: Audit) -> Audit {
    let (held, owners) = match tokio::try_join!(link.shard_subscriptions(), link.slot_owners()) {
        Ok((Some(held), owners)) => (held, owners),
        Ok((None, _)) => return Audit::Fine,
        Err(e) => {
            tracing::debug!(error = %e, "bus: subscription check failed");
            return Audit::Fine;
        }
    };
    // Counted as channels come and go (`Reconciler::slot_counts`): a pass costs 16,384 additions,
    // not a name and a hash per channel.
    let mut expected = rec.slot_counts().per_owner(&owners);
    let presence = bus
        .presence
        .as_ref()
        .filter(|p| p.subscribed_generation.load(Ordering::Acquire) == link.generation())
        .map(|p| p.channel.clone());
    if let Some(node) = presence.as_deref().and_then(|c| shards::owner(&owners, c)) {
        *expected.entry(node).or_default() += 1;
    }
    let short = shards::shortfall(&held, &expected);
    if short.is_empty() {
        return Audit::Fine;
    }
    add(&bus.stats.subscription_repairs, 1);
    if last == Audit::Resubscribed {
        tracing::warn!(?short, generation = link.generation(), "bus: Redis Cluster masters still hold fewer shard channels than subscribed after a repair; reconnecting");
        if bus
            .link()
            .is_some_and(|l| l.generation() == link.generation())
        {
            bus.broken.notify_one();
        }
        return Audit::Reconnect;
    }
    // Named only now, for a repair: the channels of the masters that lost some.
    let again: Vec<String> = rec
        .topics()
        .map(|t| bus.codec.channel(&bus.cfg.prefix, t))
        .chain(presence)
        .filter(|c| shards::owner(&owners, c).is_some_and(|n| short.iter().any(|(s, _, _)| s == n)))
        .collect();
    tracing::warn!(?short, channels = again.len(), generation = link.generation(), "bus: Redis Cluster masters hold fewer shard channels than subscribed (node, held, expected); subscribing them again");
    match link.subscribe(&again, true, bus.cfg.subscribe_batch).await {
        Ok(n) => add(&bus.stats.subscribe_commands, n),
        Err(e) => link_failed(bus, link, &e),
    }
    Audit::Resubscribed
}

async fn heartbeat(bus: Arc<Bus>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_millis(bus.cfg.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(link) = bus.link() else { continue };
        let h = hub.clone();
        let connections = tokio::task::spawn_blocking(move || {
            crate::admin::metrics::gather(&h)
                .iter()
                .map(|r| r.open)
                .sum::<u64>()
        })
        .await
        .unwrap_or(0);
        let topics = hub.table.topic_count() as u64;
        let counts = bus.take_counts(|| live_topics(&hub));
        if matches!(counts, super::Counts::All(_)) {
            add(&bus.stats.count_rewrites, 1);
        }
        match nodes::heartbeat(&bus, &link, connections, topics, &counts).await {
            Ok(()) => {}
            Err(e) => {
                bus.restore_counts(counts);
                add(&bus.stats.heartbeat_errors, 1);
                link_failed(&bus, &link, &e);
            }
        }
    }
}

/// Tells the other nodes this node's presence entries left, and removes this node from the
/// cluster view (on a clean stop), bounded in time.
pub async fn farewell(bus: &Bus) {
    if let Some(p) = &bus.presence {
        p.farewell().await;
    }
    if let Some(link) = bus.link() {
        let _ = tokio::time::timeout(Duration::from_secs(1), nodes::farewell(bus, &link)).await;
    }
}
