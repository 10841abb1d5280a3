//! The bus supervisor: one loop that keeps a link to Redis, over the two ways to make one.
//!
//! A link is a *generation*: a connection for commands plus a stream of incoming messages, made
//! by `Dial::connect`. The loop is the same for both targets — connect within a deadline, number
//! the generation, check the node name on the first one, publish the link, hand every incoming
//! message to the hub until the link breaks, then back off and make the next one — so reconnects,
//! the name check, state changes and their counts behave identically on standalone Redis and on a
//! Cluster. Only dialing differs, and lives in `Dial`:
//!
//! - Standalone: a multiplexed connection for commands and a dedicated RESP3 subscriber
//!   connection, whose subscriptions end only when it does.
//! - Cluster: each generation is a fresh client (a fresh slot map) with its own push channel. It
//!   ends when a shard connection drops, when a shard unsubscribes a channel we still hold (its
//!   slot moved or its master was demoted), or when a command fails; the next one subscribes every
//!   held channel again on the current owners. Dropping the old client closes its subscriptions,
//!   and its pushes go nowhere, so nothing arrives twice.
//!
//! On both, incoming messages are RESP3 pushes, handed by the client to a sender bounded in bytes
//! (`bus/incoming.rs`); what it drops at the bound is settled here, between two messages.

use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::link::{timed_out, Link};
use super::run::receive;
use super::{add, nodes, Bus, LinkState, Target};
use crate::hub::Hub;

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

/// How to make a link to the configured target.
enum Dial {
    Standalone(Box<Standalone>),
    Cluster { seeds: Vec<String> },
}

/// A standalone target: its client and connection settings (made once; the client is cheap to
/// keep and makes every generation's connections).
struct Standalone {
    url: String,
    client: redis::Client,
    /// The same target over RESP3, for the subscriber connection (its messages are pushes).
    sub_client: redis::Client,
    config: AsyncConnectionConfig,
}

/// A fresh link's parts, before it is numbered.
enum Parts {
    Standalone {
        conn: redis::aio::MultiplexedConnection,
        sub: redis::aio::MultiplexedConnection,
    },
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
    },
}

/// Where a link's incoming messages arrive: the pushes its client handed to `push_sender`.
struct Incoming(UnboundedReceiver<PushInfo>);

/// The client's push sender for a new link: every push goes through the bus's byte bound.
fn push_sender(bus: &Bus) -> (impl redis::aio::AsyncPushSender, Incoming) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = bus.incoming.clone();
    let sender = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
        gate.offer(&tx, info);
        Ok(())
    };
    (sender, Incoming(rx))
}

/// Why a connect failed: a configuration that can never work, or a target to try again later.
enum DialError {
    Fatal(RedisError),
    Retry(RedisError),
}

impl Dial {
    fn new(bus: &Bus) -> Result<Dial, RedisError> {
        Ok(match &bus.target {
            Target::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let info = client.get_connection_info().clone();
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                Dial::Standalone(Box::new(Standalone {
                    url: url.clone(),
                    client,
                    sub_client: redis::Client::open(info.set_redis_settings(resp3))?,
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_millis(
                            bus.cfg.connect_timeout_ms,
                        )))
                        .set_response_timeout(Some(Duration::from_millis(
                            bus.cfg.response_timeout_ms,
                        ))),
                }))
            }
            Target::Cluster(seeds) => Dial::Cluster {
                seeds: seeds.clone(),
            },
        })
    }

    /// What the logs call the target.
    fn target(&self) -> String {
        match self {
            Dial::Standalone(s) => format!("Redis {}", s.url),
            Dial::Cluster { seeds } => format!("Redis Cluster {seeds:?}"),
        }
    }

    async fn connect(&self, bus: &Bus) -> Result<(Parts, Incoming), DialError> {
        let timeout = Duration::from_millis(bus.cfg.connect_timeout_ms);
        match self {
            Dial::Standalone(s) => {
                let client = &s.client;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&s.config)
                    .await
                    .map_err(DialError::Retry)?;
                let (sender, incoming) = push_sender(bus);
                let config = s.config.clone().set_push_sender(sender);
                let sub = s
                    .sub_client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| {
                        // Redis before 6 has no RESP3: no later attempt can succeed.
                        if e.kind() == redis::ErrorKind::RESP3NotSupported {
                            DialError::Fatal(RedisError::from((
                                redis::ErrorKind::RESP3NotSupported,
                                "the bus needs Redis 6 or later (its subscriber uses RESP3)",
                            )))
                        } else {
                            DialError::Retry(e)
                        }
                    })?;
                Ok((Parts::Standalone { conn, sub }, incoming))
            }
            Dial::Cluster { seeds } => {
                let (sender, incoming) = push_sender(bus);
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .connection_timeout(timeout)
                    .response_timeout(Duration::from_millis(bus.cfg.response_timeout_ms))
                    .build()
                    .map_err(DialError::Fatal)?;
                // Bounded: while a failed master is still in the slot map, the client's connect
                // can wait on its own slot refresh for longer than any test or operator would; a
                // new attempt after the backoff reads a fresh map.
                let conn =
                    tokio::time::timeout(timeout.saturating_mul(2), client.get_async_connection())
                        .await
                        .unwrap_or_else(|_| {
                            Err(timed_out(
                                "bus: Redis Cluster connect exceeded its deadline",
                            ))
                        })
                        .map_err(DialError::Retry)?;
                Ok((Parts::Cluster { conn }, incoming))
            }
        }
    }
}

impl Parts {
    fn into_link(self, generation: u64, deadline: Duration) -> Link {
        match self {
            Parts::Standalone { conn, sub } => Link::Standalone {
                generation,
                deadline,
                conn,
                sub,
            },
            Parts::Cluster { conn } => Link::Cluster {
                generation,
                deadline,
                conn,
            },
        }
    }
}

impl Incoming {
    /// Waits for the next push and hands a message to the hub; false once the link is over (the
    /// connection dropped, or a shard unsubscribed a channel we still hold). Cancel-safe: the
    /// only await is on the queue, and a push taken is handled before return.
    async fn pump(
        &mut self,
        bus: &Bus,
        hub: &Hub,
        generation: u64,
        audience: &mut Vec<(usize, u32)>,
    ) -> bool {
        let Some(push) = self.0.recv().await else {
            return false;
        };
        bus.incoming.taken(&push);
        let alive = match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
                    (push.data.first(), push.data.get(1))
                {
                    receive(bus, hub, channel, body, audience);
                }
                true
            }
            PushKind::Disconnection => {
                tracing::warn!("bus: a Redis connection dropped; reconnecting");
                false
            }
            PushKind::SUnsubscribe if unsubscribed_while_held(bus, hub, &push.data) => {
                tracing::warn!("bus: a shard unsubscribed a held channel (slot moved or failover); reconnecting");
                false
            }
            kind => {
                tracing::debug!(generation, ?kind, channel = ?push.data.first(), "bus: push");
                true
            }
        };
        if let Some(lost) = bus.incoming.take_lost() {
            settle_lost(bus, hub, &lost);
        }
        alive
    }

    /// The link is over: what still waits is dropped (its bytes leave the bound), and nothing
    /// more can be queued.
    fn close(mut self, bus: &Bus) {
        self.0.close();
        while let Ok(push) = self.0.try_recv() {
            bus.incoming.taken(&push);
        }
    }
}

/// Messages the incoming bound dropped: the members of their topics are closed with 1013 by
/// their workers (as for a broadcast a full inbox dropped), so none goes on with a gap it cannot
/// see. A shared channel (`format = "phoenix"`) carries every topic, so a drop there closes every
/// joined member; a drop on the presence channel is a gap the replica repairs by a transfer.
fn settle_lost(bus: &Bus, hub: &Hub, lost: &super::incoming::LostChannels) {
    let mut topics: Vec<Option<&str>> = Vec::new();
    if lost.all {
        topics.push(None);
    } else {
        for channel in &lost.channels {
            if bus
                .presence
                .as_ref()
                .is_some_and(|p| p.channel.as_bytes() == &**channel)
            {
                continue;
            }
            if bus
                .codec
                .shared_channel()
                .is_some_and(|c| c.as_bytes() == &**channel)
            {
                topics = vec![None];
                break;
            }
            if let Some(topic) = std::str::from_utf8(channel)
                .ok()
                .and_then(|c| c.strip_prefix(bus.cfg.prefix.as_str()))
            {
                // A topic without members here has nobody to close (the channel lingers).
                if hub.table.members(topic) > 0 {
                    topics.push(Some(topic));
                }
            }
        }
    }
    if topics.is_empty() {
        return;
    }
    // On the 1st, 2nd, 4th, ... drop: a flood of drops cannot flood the log.
    let dropped = bus
        .incoming
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    if dropped.is_power_of_two() {
        tracing::warn!(
            topics = topics.len(),
            dropped,
            "bus: messages from Redis dropped at max_incoming_bytes; closing their topics' members with 1013"
        );
    }
    for inbox in &hub.inboxes {
        for topic in &topics {
            inbox.lose_topic(*topic);
        }
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
            let none = super::Counts::Changed(Vec::new());
            if let Err(e) = nodes::heartbeat(bus, link, 0, topics, &none).await {
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

/// Keeps a link to the target for as long as the process runs (or until a fatal configuration
/// error or a node-name clash, both reported through the verdict).
pub(super) async fn supervise(bus: Arc<Bus>, hub: Arc<Hub>) {
    let dial = match Dial::new(&bus) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "bus: bad Redis URL");
            return bus.verdict(Ok(false));
        }
    };
    let target = dial.target();
    let mut backoff = Backoff::new(bus.cfg.backoff_min_ms, bus.cfg.backoff_max_ms);
    let mut generation = 0u64;
    let mut was_down_logged = false;
    loop {
        match dial.connect(&bus).await {
            Ok((parts, mut incoming)) => {
                generation += 1;
                let link = parts.into_link(generation, command_deadline(&bus));
                if generation == 1 && !name_is_free(&bus, &hub, &link).await {
                    return;
                }
                backoff.reset();
                was_down_logged = false;
                if generation > 1 {
                    add(&bus.stats.reconnects, 1);
                }
                tracing::info!(target = %target, node = %bus.name, generation, "bus: connected");
                bus.set_state(LinkState::Up);
                bus.link.send_replace(Some(link));
                bus.verdict(Ok(true));
                let mut audience = Vec::new();
                loop {
                    tokio::select! {
                        alive = incoming.pump(&bus, &hub, generation, &mut audience) => if !alive { break },
                        () = bus.broken.notified() => break,
                    }
                }
                incoming.close(&bus);
                // Dropped just before the link ended: settled now, not at the next link's first
                // message, which a quiet bus may not send for a long time.
                if let Some(lost) = bus.incoming.take_lost() {
                    settle_lost(&bus, &hub, &lost);
                }
                bus.set_state(LinkState::Down);
                bus.link.send_replace(None);
                tracing::warn!(
                    target = %target,
                    "bus: lost the link; local delivery continues, cross-node publishes are dropped and counted until it is back"
                );
            }
            Err(DialError::Fatal(e)) => {
                tracing::error!(error = %e, target = %target, "bus: this Redis target cannot work; the bus is off");
                return bus.verdict(Ok(false));
            }
            Err(DialError::Retry(e)) => {
                bus.set_state(LinkState::Down);
                if !was_down_logged {
                    tracing::warn!(error = %e, target = %target, "bus: Redis unreachable; serving this node's members only, reconnecting with backoff");
                    was_down_logged = true;
                }
                bus.verdict(Ok(false));
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}
