//! The bus's tasks on the control-plane runtime.
//!
//! - supervisor: connects (a new connection generation after every loss, with jittered
//!   backoff), checks the node name, receives messages and hands them to the hub.
//! - publisher: drains the outgoing queue in batches, assigns sequence numbers, publishes.
//! - reconciler: turns membership hints into batched (un)subscribe commands and count writes.
//! - heartbeat: writes the node record once per `heartbeat_ms`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::RandomState;
use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushKind, Value};

use super::envelope::{BusMessage, BusPayload, CodecError, Envelope, Ignored, Received};
use super::link::{timed_out, Link};
use super::shards;
use super::subs::{Plan, Reconciler};
use super::{add, nodes, Bus, LinkState, Outgoing, Target};
use crate::hub::Hub;
use crate::phoenix::serializer::Payload;

/// Exponential backoff with ±50% jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: RandomState,
    n: u64,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64) -> Self {
        let min = Duration::from_millis(min_ms);
        Self {
            min,
            max: Duration::from_millis(max_ms),
            next: min,
            seed: RandomState::new(),
            n: 0,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        self.n += 1;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = (self.seed.hash_one(self.n) % 1000) as f64 / 1000.0; // 0..1
        base.mul_f64(0.5 + jitter)
    }
}

/// The bound on one command's round trip: the client's response timeout, plus slack for the
/// client's own retry after a `MOVED` or a reconnect.
fn command_deadline(bus: &Bus) -> Duration {
    Duration::from_millis(bus.cfg.response_timeout_ms.saturating_mul(2))
}

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
    match bus.target.clone() {
        Target::Standalone(url) => tokio::spawn(standalone(bus, hub, url)),
        Target::Cluster(seeds) => tokio::spawn(cluster(bus, hub, seeds)),
    };
}

/// Checks the node name on a fresh link; false (and the verdict sent) on a live clash. When
/// free, the first heartbeat is written before the gateway reports ready, so a second gateway
/// started with the same name right after sees it.
async fn name_is_free(bus: &Bus, hub: &Hub, link: &Link) -> bool {
    match nodes::clash(bus, link).await {
        Ok(Some(other)) => {
            let msg = format!(
                "bus node name {:?} is held by a live node (listen {}, admin {}); set [bus] node_name / --bus-node-name to a unique name",
                bus.name, other.listen, other.admin
            );
            tracing::error!("{msg}");
            bus.verdict(Err(msg));
            false
        }
        Ok(None) => {
            let topics = hub.table.topic_count() as u64;
            if let Err(e) = nodes::heartbeat(bus, link, 0, topics, &[]).await {
                tracing::warn!(error = %e, "bus: first heartbeat failed");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "bus: cannot check the node name");
            true
        }
    }
}

async fn standalone(bus: Arc<Bus>, hub: Arc<Hub>, url: String) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bus: bad Redis URL");
            return bus.verdict(Ok(false));
        }
    };
    let timeout = Duration::from_millis(bus.cfg.connect_timeout_ms);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_millis(bus.cfg.response_timeout_ms)));
    let mut backoff = Backoff::new(bus.cfg.backoff_min_ms, bus.cfg.backoff_max_ms);
    let mut generation = 0u64;
    let mut was_down_logged = false;
    loop {
        let connected = async {
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| timed_out("bus: Redis subscriber connect exceeded its deadline"))??;
            Ok::<_, redis::RedisError>((conn, pubsub))
        }
        .await;
        match connected {
            Ok((conn, pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                generation += 1;
                let link = Link::Standalone {
                    generation,
                    deadline: command_deadline(&bus),
                    conn,
                    sink,
                };
                if generation == 1 && !name_is_free(&bus, &hub, &link).await {
                    return;
                }
                backoff.reset();
                was_down_logged = false;
                if generation > 1 {
                    add(&bus.stats.reconnects, 1);
                }
                tracing::info!(url = %url, node = %bus.name, "bus: connected to Redis");
                bus.set_state(LinkState::Up);
                bus.link.send_replace(Some(link));
                bus.verdict(Ok(true));
                let mut audience = Vec::new();
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(m) => receive(&bus, &hub, m.get_channel_name().as_bytes(), m.get_payload_bytes(), &mut audience),
                            None => break,
                        },
                        () = bus.broken.notified() => break,
                    }
                }
                bus.set_state(LinkState::Down);
                bus.link.send_replace(None);
                tracing::warn!(
                    "bus: lost Redis; local delivery continues, cross-node publishes are dropped and counted until it is back"
                );
            }
            Err(e) => {
                bus.set_state(LinkState::Down);
                if !was_down_logged {
                    tracing::warn!(error = %e, url = %url, "bus: Redis unreachable; serving this node's members only, reconnecting with backoff");
                    was_down_logged = true;
                }
                bus.verdict(Ok(false));
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}

/// Redis Cluster. Each generation is a fresh client and connection (a fresh slot map) with its
/// own push channel. A generation ends when a shard connection drops, when a shard unsubscribes
/// a channel we still hold (its slot moved or its master was demoted), or when a command fails;
/// the next one subscribes every held channel again on the current owners. Dropping the old
/// client closes its subscriptions, and its pushes go nowhere, so nothing arrives twice.
async fn cluster(bus: Arc<Bus>, hub: Arc<Hub>, seeds: Vec<String>) {
    let mut backoff = Backoff::new(bus.cfg.backoff_min_ms, bus.cfg.backoff_max_ms);
    let mut generation = 0u64;
    let mut was_down_logged = false;
    loop {
        let (push_tx, mut push_rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match ClusterClientBuilder::new(seeds.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push_tx)
            .connection_timeout(Duration::from_millis(bus.cfg.connect_timeout_ms))
            .response_timeout(Duration::from_millis(bus.cfg.response_timeout_ms))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "bus: bad Redis Cluster URL");
                return bus.verdict(Ok(false));
            }
        };
        // Bounded: while a failed master is still in the slot map, the client's connect can wait
        // on its own slot refresh for longer than any test or operator would; a new attempt
        // after the backoff reads a fresh map.
        let connect = tokio::time::timeout(
            Duration::from_millis(bus.cfg.connect_timeout_ms.saturating_mul(2)),
            client.get_async_connection(),
        )
        .await
        .unwrap_or_else(|_| {
            Err(timed_out(
                "bus: Redis Cluster connect exceeded its deadline",
            ))
        });
        match connect {
            Ok(conn) => {
                generation += 1;
                let link = Link::Cluster {
                    generation,
                    deadline: command_deadline(&bus),
                    conn,
                };
                if generation == 1 && !name_is_free(&bus, &hub, &link).await {
                    return;
                }
                backoff.reset();
                was_down_logged = false;
                if generation > 1 {
                    add(&bus.stats.reconnects, 1);
                }
                tracing::info!(?seeds, node = %bus.name, generation, "bus: connected to Redis Cluster");
                bus.set_state(LinkState::Up);
                bus.link.send_replace(Some(link));
                bus.verdict(Ok(true));
                let mut audience = Vec::new();
                loop {
                    tokio::select! {
                        push = push_rx.recv() => match push {
                            Some(push) => match push.kind {
                                PushKind::SMessage | PushKind::Message => {
                                    if let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) = (push.data.first(), push.data.get(1)) {
                                        receive(&bus, &hub, channel, body, &mut audience);
                                    }
                                }
                                PushKind::Disconnection => {
                                    tracing::warn!("bus: a Redis Cluster connection dropped; reconnecting");
                                    break;
                                }
                                PushKind::SUnsubscribe if unsubscribed_while_held(&bus, &hub, &push.data) => {
                                    tracing::warn!("bus: a shard unsubscribed a held channel (slot moved or failover); reconnecting");
                                    break;
                                }
                                kind => tracing::debug!(generation, ?kind, channel = ?push.data.first(), "bus: push"),
                            },
                            None => break,
                        },
                        () = bus.broken.notified() => break,
                    }
                }
                bus.set_state(LinkState::Down);
                bus.link.send_replace(None);
            }
            Err(e) => {
                bus.set_state(LinkState::Down);
                if !was_down_logged {
                    tracing::warn!(error = %e, ?seeds, "bus: Redis Cluster unreachable; serving this node's members only, reconnecting with backoff");
                    was_down_logged = true;
                }
                bus.verdict(Ok(false));
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}

/// A `sunsubscribe` push for a channel whose topic still has local members: the server dropped
/// it (we unsubscribe only topics left without members).
fn unsubscribed_while_held(bus: &Bus, hub: &Hub, data: &[Value]) -> bool {
    let Some(Value::BulkString(channel)) = data.first() else {
        return false;
    };
    if bus
        .presence
        .as_ref()
        .is_some_and(|p| p.channel.as_bytes() == channel.as_slice())
    {
        return true; // held for as long as the process runs
    }
    let topic = std::str::from_utf8(channel)
        .ok()
        .and_then(|c| c.strip_prefix(bus.cfg.prefix.as_str()));
    topic.is_some_and(|t| hub.table.members(t) > 0)
}

/// A message from Redis: a presence message goes to the presence task; a broadcast is decoded,
/// what is not for this node's members (our own echo included) is dropped, and the rest is handed
/// to the hub as a local broadcast. Every drop is counted by reason and logged at warn level on
/// its 1st, 2nd, 4th, 8th, ... occurrence (a flood cannot flood the log).
fn receive(bus: &Bus, hub: &Hub, channel: &[u8], body: &[u8], audience: &mut Vec<(usize, u32)>) {
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
        let Some(link) = bus.link() else {
            add(&bus.stats.dropped_down, batch.len() as u64);
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
            continue;
        }
        match link.publish(&items).await {
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
    let mut rec = Reconciler::new(Duration::from_millis(bus.cfg.linger_ms));
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
    let mut channels: Vec<String> = rec
        .topics()
        .map(|t| bus.codec.channel(&bus.cfg.prefix, t))
        .collect();
    if let Some(p) = &bus.presence {
        if p.subscribed_generation.load(Ordering::Acquire) == link.generation() {
            channels.push(p.channel.clone());
        }
    }
    let short = shards::shortfall(&held, &owners, &channels);
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
    let again: Vec<String> = channels
        .into_iter()
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
        let counts = bus.take_counts();
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
