//! The cluster view, kept in Redis as plain keys (never on a pub/sub channel: without presence
//! routes the bus carries broadcasts only, so Redis's publish count is the broadcast count; with
//! them, presence adds its own messages on its own channel, `bus::presence`).
//!
//! - `<prefix>nodes`: a hash, field = node name, value = the node's JSON record with its expiry
//!   (`expires_ms`, wall clock). Each node rewrites its own field once per `heartbeat_ms`; readers
//!   skip expired fields and delete them. A single key, so listing nodes is one `HGETALL` on
//!   standalone and Cluster alike.
//! - `<prefix>counts:<node>`: a hash, field = topic, value = that node's local subscriber count,
//!   written in batches of changed topics (at most once per heartbeat) and given the node TTL, so
//!   a dead node's counts vanish with it. A topic's cluster count is the sum of its field over
//!   the live nodes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::link::Link;
use super::{now_ms, Bus};

/// One node's heartbeat record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub instance: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Topics with at least one local member.
    pub topics: u64,
    pub listen: String,
    pub admin: String,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub expires_ms: u64,
    pub version: String,
}

/// The cluster view's keys share one hash tag, `{<prefix>view}`, so on Redis Cluster they live in
/// one slot and a heartbeat writes them in one transaction.
pub fn nodes_key(bus: &Bus) -> String {
    format!("{{{}view}}:nodes", bus.cfg.prefix)
}

pub fn counts_key(bus: &Bus, node: &str) -> String {
    format!("{{{}view}}:counts:{node}", bus.cfg.prefix)
}

/// This node's one write per heartbeat, a single transaction (`MULTI`/`EXEC`): its record, the
/// subscriber counts that changed since the last beat (`0` deletes the field), and the expiry of
/// its counts hash.
pub async fn heartbeat(
    bus: &Bus,
    link: &Link,
    connections: u64,
    topics: u64,
    counts: &super::Counts,
) -> redis::RedisResult<()> {
    let now = now_ms();
    let record = NodeRecord {
        name: bus.name.to_string(),
        instance: bus.instance,
        connections,
        topics,
        listen: bus.listen.clone(),
        admin: bus.admin.clone(),
        started_ms: bus.started_ms,
        heartbeat_ms: now,
        expires_ms: now + bus.cfg.node_ttl_ms,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let json = serde_json::to_string(&record).unwrap_or_default();
    let key = counts_key(bus, &bus.name);
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HSET")
        .arg(nodes_key(bus))
        .arg(&*bus.name)
        .arg(json)
        .ignore();
    let counts = match counts {
        super::Counts::Changed(c) => c,
        super::Counts::All(c) => {
            // Replaced whole, in the same transaction: readers never see it half written.
            pipe.cmd("DEL").arg(&key).ignore();
            c
        }
    };
    let (set, del): (Vec<_>, Vec<_>) = counts.iter().partition(|(_, n)| *n > 0);
    if !set.is_empty() {
        let cmd = pipe.cmd("HSET").arg(&key);
        for (topic, n) in set {
            cmd.arg(&**topic).arg(*n);
        }
        cmd.ignore();
    }
    if !del.is_empty() {
        let cmd = pipe.cmd("HDEL").arg(&key);
        for (topic, _) in del {
            cmd.arg(&**topic);
        }
        cmd.ignore();
    }
    pipe.cmd("PEXPIRE")
        .arg(&key)
        .arg(bus.cfg.node_ttl_ms)
        .ignore();
    link.pipeline(&pipe).await
}

/// The live nodes (expired records are deleted as they are seen).
pub async fn live(bus: &Bus, link: &Link) -> redis::RedisResult<Vec<NodeRecord>> {
    let all: HashMap<String, String> = link
        .query(redis::cmd("HGETALL").arg(nodes_key(bus)))
        .await?;
    let now = now_ms();
    let mut nodes = Vec::new();
    let mut expired = Vec::new();
    for (name, json) in all {
        match serde_json::from_str::<NodeRecord>(&json) {
            Ok(r) if r.expires_ms > now => nodes.push(r),
            _ => expired.push(name),
        }
    }
    if !expired.is_empty() {
        link.query::<()>(redis::cmd("HDEL").arg(nodes_key(bus)).arg(&expired))
            .await?;
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// Another live process holds this node's name: its record is unexpired, from another instance,
/// and still being refreshed. A record left by a killed predecessor stops being refreshed, so a
/// restart under the same name waits at most two heartbeats instead of a whole TTL.
pub async fn clash(bus: &Bus, link: &Link) -> redis::RedisResult<Option<NodeRecord>> {
    let read = || async {
        let json: Option<String> = link
            .query(redis::cmd("HGET").arg(nodes_key(bus)).arg(&*bus.name))
            .await?;
        Ok::<_, redis::RedisError>(json.and_then(|j| serde_json::from_str::<NodeRecord>(&j).ok()))
    };
    let Some(first) = read().await? else {
        return Ok(None);
    };
    if first.instance == bus.instance || first.expires_ms <= now_ms() {
        return Ok(None);
    }
    tokio::time::sleep(std::time::Duration::from_millis(first_wait(&first))).await;
    match read().await? {
        Some(again)
            if again.instance == first.instance && again.heartbeat_ms > first.heartbeat_ms =>
        {
            Ok(Some(again))
        }
        _ => Ok(None),
    }
}

/// Long enough for a live holder to beat twice (it announces its own interval implicitly via
/// `expires_ms - heartbeat_ms`, the TTL; a holder beats at least twice per TTL).
fn first_wait(r: &NodeRecord) -> u64 {
    (r.expires_ms.saturating_sub(r.heartbeat_ms) / 2).clamp(200, 10_000)
}

/// Subscribers of `topic` on the other live nodes, per node.
pub async fn remote_counts(
    bus: &Bus,
    link: &Link,
    topic: &str,
) -> redis::RedisResult<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for node in live(bus, link).await? {
        if *node.name == *bus.name {
            continue;
        }
        let n: Option<u64> = link
            .query(
                redis::cmd("HGET")
                    .arg(counts_key(bus, &node.name))
                    .arg(topic),
            )
            .await?;
        out.push((node.name, n.unwrap_or(0)));
    }
    Ok(out)
}

/// Removes this node from the view (clean shutdown).
pub async fn farewell(bus: &Bus, link: &Link) -> redis::RedisResult<()> {
    link.query::<()>(redis::cmd("HDEL").arg(nodes_key(bus)).arg(&*bus.name))
        .await?;
    link.query::<()>(redis::cmd("DEL").arg(counts_key(bus, &bus.name)))
        .await
}
