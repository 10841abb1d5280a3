//! One set of connections to Redis and the commands the bus sends on it.
//!
//! - Standalone: a multiplexed connection for `PUBLISH` (pipelined, in order) and the heartbeat,
//!   and a dedicated RESP3 connection for `SUBSCRIBE`/`UNSUBSCRIBE` (many channels per command),
//!   whose messages arrive as pushes (`bus/incoming.rs`). When either breaks the supervisor makes a new pair (a new generation) and the
//!   reconciler subscribes every topic with local members again.
//! - Cluster: the `redis` crate's cluster connection over RESP3. It routes `SPUBLISH` and
//!   `SSUBSCRIBE` by the channel's hash slot, follows `MOVED`, refreshes the slot map after a
//!   failover and re-subscribes its shard channels on the new owner. A shard command holds one
//!   slot, so channels are subscribed one command each, many in flight at once.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, FromRedisValue, RedisResult, Value};

#[derive(Clone)]
pub enum Link {
    Standalone {
        generation: u64,
        /// Bound on each command's round trip (`response_timeout_ms`).
        deadline: Duration,
        conn: MultiplexedConnection,
        /// The subscriber connection (RESP3: its messages are pushes).
        sub: MultiplexedConnection,
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
        .unwrap_or_else(|_| Err(timed_out("bus: Redis command exceeded its deadline")))
}

/// The error of a Redis step that missed its deadline (`what` says which), as the client's own
/// timeouts are reported: an I/O `TimedOut`, which the supervisor treats as a lost link.
pub(super) fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
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

    /// Cluster: the shard channels each master holds for this link's connection to it (`ssub=`
    /// of `CLIENT INFO`, asked on the connection that subscribed them), by `host:port`. A master
    /// the client cannot reach is absent. `None` on a standalone link, whose dedicated subscriber
    /// connection cannot run commands and whose subscriptions end only with it.
    pub async fn shard_subscriptions(&self) -> RedisResult<Option<HashMap<String, u64>>> {
        let Self::Cluster { conn, deadline, .. } = self else {
            return Ok(None);
        };
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = within(
            *deadline,
            conn.clone()
                .route_command(redis::cmd("CLIENT").arg("INFO").clone(), routing),
        )
        .await?;
        let Value::Map(per_node) = reply else {
            return Err(unexpected("CLIENT INFO on every master: not a map"));
        };
        let mut held = HashMap::new();
        for (node, info) in per_node {
            let text = match info {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::VerbatimString { text, .. } | Value::SimpleString(text) => text,
                Value::ServerError(_) => continue, // unreachable now: the supervisor's concern
                _ => return Err(unexpected("CLIENT INFO: not a string")),
            };
            let Value::BulkString(node) = node else {
                return Err(unexpected("CLIENT INFO on every master: node not a string"));
            };
            let n = ssub(&text).ok_or_else(|| unexpected("CLIENT INFO without ssub="))?;
            held.insert(String::from_utf8_lossy(&node).into_owned(), n);
        }
        Ok(Some(held))
    }

    /// Cluster: which master (`host:port`) owns each slot range now, from `CLUSTER SLOTS`.
    pub async fn slot_owners(&self) -> RedisResult<super::shards::SlotOwners> {
        let reply: Value = self
            .query(&redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await?;
        let Value::Array(ranges) = reply else {
            return Err(unexpected("CLUSTER SLOTS: not an array"));
        };
        let mut owners = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(unexpected("CLUSTER SLOTS: range not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(unexpected("CLUSTER SLOTS: bad range"));
            };
            let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
                (master.first(), master.get(1))
            else {
                return Err(unexpected("CLUSTER SLOTS: bad master"));
            };
            let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
                return Err(unexpected("CLUSTER SLOTS: slot out of range"));
            };
            owners.push((
                start,
                end,
                format!("{}:{port}", String::from_utf8_lossy(host)),
            ));
        }
        Ok(owners)
    }

    /// Subscribes (or unsubscribes) `channels`; returns the number of commands sent.
    pub async fn subscribe(&self, channels: &[String], on: bool, batch: usize) -> RedisResult<u64> {
        let mut commands = 0;
        match self {
            Self::Standalone { sub, .. } => {
                let mut sub = sub.clone();
                for chunk in super::subs::batches(channels, batch) {
                    let deadline = self.deadline();
                    if on {
                        within(deadline, sub.subscribe(chunk)).await?;
                    } else {
                        within(deadline, sub.unsubscribe(chunk)).await?;
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

fn unexpected(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, what))
}

/// The `ssub=<n>` field of one `CLIENT INFO` line.
fn ssub(info: &str) -> Option<u64> {
    info.split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("ssub="))
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::ssub;

    #[test]
    fn reads_ssub_from_client_info() {
        let line = "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:7000 fd=9 name= age=3 idle=0 flags=P db=0 sub=0 psub=0 ssub=24 multi=-1 qbuf=0 cmd=client|info user=default resp=3\n";
        assert_eq!(ssub(line), Some(24));
        assert_eq!(ssub("id=7 sub=3 psub=0"), None);
        assert_eq!(ssub("ssub=x"), None);
    }
}
