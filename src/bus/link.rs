//! One set of connections to Redis and the commands the bus sends on it.
//!
//! - Standalone: a multiplexed connection for `PUBLISH` (pipelined, in order) and the heartbeat,
//!   and a dedicated RESP2 pub/sub connection for `SUBSCRIBE`/`UNSUBSCRIBE` (many channels per
//!   command). When either breaks the supervisor makes a new pair (a new generation) and the
//!   reconciler subscribes every topic with local members again.
//! - Cluster: the `redis` crate's cluster connection over RESP3. It routes `SPUBLISH` and
//!   `SSUBSCRIBE` by the channel's hash slot, follows `MOVED`, refreshes the slot map after a
//!   failover and re-subscribes its shard channels on the new owner. A shard command holds one
//!   slot, so channels are subscribed one command each, many in flight at once.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult};

#[derive(Clone)]
pub enum Link {
    Standalone {
        generation: u64,
        /// Bound on each command's round trip (`response_timeout_ms`).
        deadline: Duration,
        conn: MultiplexedConnection,
        sink: PubSubSink,
    },
    Cluster {
        generation: u64,
        deadline: Duration,
        conn: ClusterConnection,
    },
}

/// `fut` within `deadline`, else a timeout error. The client has its own response timeout, but
/// while a Cluster client repairs its slot map after a failover a request can wait on the repair
/// without bound; a command that never ends would stall the publisher or the reconciler, and with
/// it every later subscription. Bounded here, it fails, and the supervisor starts a new link.
async fn within<T>(
    deadline: Duration,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "bus: Redis command exceeded its deadline",
            )))
        })
}

impl Link {
    fn deadline(&self) -> Duration {
        match self {
            Self::Standalone { deadline, .. } | Self::Cluster { deadline, .. } => *deadline,
        }
    }

    /// Changes when a new connection replaced a lost one (its subscriptions are gone).
    pub fn generation(&self) -> u64 {
        match self {
            Self::Standalone { generation, .. } | Self::Cluster { generation, .. } => *generation,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        within(self.deadline(), async {
            match self {
                Self::Standalone { conn, .. } => cmd.query_async(&mut conn.clone()).await,
                Self::Cluster { conn, .. } => cmd.query_async(&mut conn.clone()).await,
            }
        })
        .await
    }

    /// Runs a pipeline (or, when atomic, a transaction) in one round trip.
    pub async fn pipeline(&self, pipe: &redis::Pipeline) -> RedisResult<()> {
        within(self.deadline(), async {
            match self {
                Self::Standalone { conn, .. } => pipe.query_async(&mut conn.clone()).await,
                Self::Cluster { conn, .. } => pipe.query_async(&mut conn.clone()).await,
            }
        })
        .await
    }

    /// Publishes `(channel, body)` messages in order.
    pub async fn publish(&self, items: &[(String, Vec<u8>)]) -> RedisResult<()> {
        within(self.deadline(), self.publish_unbounded(items)).await
    }

    async fn publish_unbounded(&self, items: &[(String, Vec<u8>)]) -> RedisResult<()> {
        match self {
            Self::Standalone { conn, .. } => {
                let mut pipe = redis::pipe();
                for (channel, body) in items {
                    pipe.cmd("PUBLISH").arg(channel).arg(body).ignore();
                }
                pipe.query_async::<()>(&mut conn.clone()).await
            }
            Self::Cluster { conn, .. } => {
                // Submitted in order on one multiplexed connection per shard, so messages of one
                // topic (one slot, one shard) reach Redis in publish order.
                let sends = items.iter().map(|(channel, body)| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("SPUBLISH")
                            .arg(channel)
                            .arg(body)
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                });
                for r in futures_util::future::join_all(sends).await {
                    r?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes (or unsubscribes) `channels`; returns the number of commands sent.
    pub async fn subscribe(&self, channels: &[String], on: bool, batch: usize) -> RedisResult<u64> {
        let mut commands = 0;
        match self {
            Self::Standalone { sink, .. } => {
                let mut sink = sink.clone();
                for chunk in super::subs::batches(channels, batch) {
                    let deadline = self.deadline();
                    if on {
                        within(deadline, sink.subscribe(chunk)).await?;
                    } else {
                        within(deadline, sink.unsubscribe(chunk)).await?;
                    }
                    commands += 1;
                }
            }
            Self::Cluster { conn, deadline, .. } => {
                let conn = conn.clone();
                let deadline = *deadline;
                let results: Vec<RedisResult<()>> = stream::iter(channels.to_vec())
                    .map(move |channel| {
                        let mut conn = conn.clone();
                        async move {
                            within(deadline, async {
                                if on {
                                    conn.ssubscribe(&channel).await
                                } else {
                                    conn.sunsubscribe(&channel).await
                                }
                            })
                            .await
                        }
                    })
                    .buffer_unordered(batch.max(1))
                    .collect()
                    .await;
                commands = results.len() as u64;
                for r in results {
                    r?;
                }
            }
        }
        Ok(commands)
    }
}
