//! The bus supervisor: one loop that keeps a link to Redis, over the two ways to make one.
//!
//! A link is a *generation*: a connection for commands plus a stream of incoming messages, made
//! by `Dial::connect`. The loop is the same for both targets — connect within a deadline, number
//! the generation, check the node name on the first one, publish the link, hand every incoming
//! message to the hub until the link breaks, then back off and make the next one — so reconnects,
//! the name check, state changes and their counts behave identically on standalone Redis and on a
//! Cluster. Only dialing and reading the incoming stream differ, and live in `Dial`/`Incoming`:
//!
//! - Standalone: a multiplexed connection for commands and a dedicated subscriber connection,
//!   whose subscriptions end only when it does.
//! - Cluster: each generation is a fresh client (a fresh slot map) with its own push channel. It
//!   ends when a shard connection drops, when a shard unsubscribes a channel we still hold (its
//!   slot moved or its master was demoted), or when a command fails; the next one subscribes every
//!   held channel again on the current owners. Dropping the old client closes its subscriptions,
//!   and its pushes go nowhere, so nothing arrives twice.

use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use futures_util::StreamExt;
use redis::aio::PubSubStream;
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, RedisError, Value};

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
    config: AsyncConnectionConfig,
}

/// A fresh link's parts, before it is numbered.
enum Parts {
    Standalone {
        conn: redis::aio::MultiplexedConnection,
        sink: redis::aio::PubSubSink,
    },
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
    },
}

/// Where a link's incoming messages arrive.
enum Incoming {
    Standalone(PubSubStream),
    Cluster(tokio::sync::mpsc::UnboundedReceiver<PushInfo>),
}

/// Why a connect failed: a configuration that can never work, or a target to try again later.
enum DialError {
    Fatal(RedisError),
    Retry(RedisError),
}

impl Dial {
    fn new(bus: &Bus) -> Result<Dial, RedisError> {
        Ok(match &bus.target {
            Target::Standalone(url) => Dial::Standalone(Box::new(Standalone {
                url: url.clone(),
                client: redis::Client::open(url.as_str())?,
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(bus.cfg.connect_timeout_ms)))
                    .set_response_timeout(Some(Duration::from_millis(bus.cfg.response_timeout_ms))),
            })),
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
                let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out("bus: Redis subscriber connect exceeded its deadline"))
                    .and_then(|r| r)
                    .map_err(DialError::Retry)?;
                let (sink, stream) = pubsub.split();
                Ok((
                    Parts::Standalone { conn, sink },
                    Incoming::Standalone(stream),
                ))
            }
            Dial::Cluster { seeds } => {
                let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push_tx)
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
                Ok((Parts::Cluster { conn }, Incoming::Cluster(push_rx)))
            }
        }
    }
}

impl Parts {
    fn into_link(self, generation: u64, deadline: Duration) -> Link {
        match self {
            Parts::Standalone { conn, sink } => Link::Standalone {
                generation,
                deadline,
                conn,
                sink,
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
    /// Waits for the next incoming message and hands it to the hub; false once the link is over
    /// (its stream ended, or a push says a shard connection or a held subscription was lost).
    /// Cancel-safe: the only await is on the stream, and a message taken is handled before return.
    async fn pump(
        &mut self,
        bus: &Bus,
        hub: &Hub,
        generation: u64,
        audience: &mut Vec<(usize, u32)>,
    ) -> bool {
        match self {
            Incoming::Standalone(stream) => match stream.next().await {
                Some(m) => {
                    let channel = m.get_channel_name().as_bytes();
                    receive(bus, hub, channel, m.get_payload_bytes(), audience);
                    true
                }
                None => false,
            },
            Incoming::Cluster(rx) => {
                let Some(push) = rx.recv().await else {
                    return false;
                };
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
                            (push.data.first(), push.data.get(1))
                        {
                            receive(bus, hub, channel, body, audience);
                        }
                        true
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("bus: a Redis Cluster connection dropped; reconnecting");
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
                }
            }
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
                bus.set_state(LinkState::Down);
                bus.link.send_replace(None);
                tracing::warn!(
                    target = %target,
                    "bus: lost the link; local delivery continues, cross-node publishes are dropped and counted until it is back"
                );
            }
            Err(DialError::Fatal(e)) => {
                tracing::error!(error = %e, target = %target, "bus: bad Redis URL");
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
