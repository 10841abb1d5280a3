//! `[bus]`: the multi-node bus settings, each with its default and the reason for it.

use serde::Deserialize;

/// The bus's wire format; each is an `envelope::Codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BusFormat {
    /// ringgate's own envelope (docs/protocol.md, "Bus envelope"), one channel per topic.
    #[default]
    Ringgate,
    /// Phoenix.PubSub's Redis adapter (phoenix_pubsub_redis 3.x): one channel per PubSub, ETF
    /// messages (docs/protocol.md, "Phoenix.PubSub Redis adapter"), so ringgate joins an
    /// existing Phoenix app's PubSub.
    Phoenix,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `redis://host:port[/db]` (standalone: PUBLISH/SUBSCRIBE) or
    /// `redis+cluster://host:port,host:port,...` (Redis Cluster: SPUBLISH/SSUBSCRIBE). Unset (the
    /// default): one node, no external service.
    pub url: Option<String>,
    /// This node's name on the bus: the origin of its broadcasts (its own echo is dropped by it)
    /// and its key in the cluster view. Default: the public listener's `host:port`. Must be
    /// unique: a gateway refuses to start when a live node already holds the name.
    pub node_name: Option<String>,
    /// Envelope format. Default `ringgate`.
    pub format: BusFormat,
    /// `format = "phoenix"`: the Elixir app's PubSub name as written in its code
    /// (`MyApp.PubSub`); it names the one channel the adapter uses. Required in that format.
    pub phoenix_pubsub: Option<String>,
    /// `format = "phoenix"`: zlib-compress published messages (the adapter's
    /// `compression_level` > 0 does the same; `binary_to_term` reads both). Default false: small
    /// broadcasts grow when compressed, and Redis traffic is rarely the bottleneck.
    pub phoenix_compress: bool,
    /// `format = "phoenix"`: the largest message body read, and the largest uncompressed term a
    /// compressed one may declare or inflate to. Default 1 MiB, like `max_frame_bytes`: a bigger
    /// broadcast could not reach a client anyway, and a hostile body costs at most this.
    pub etf_max_bytes: usize,
    /// `format = "phoenix"`: the deepest nesting of terms read. Default 64: JSON payloads are
    /// rarely a tenth as deep, and decoding recurses once per level.
    pub etf_max_depth: usize,
    /// `format = "phoenix"`: terms per message. Default 100,000: a 1 MiB payload of small
    /// values fits; bounds the decoded tree to a few MiB.
    pub etf_max_terms: usize,
    /// `format = "phoenix"`: atoms per message (each becomes a string). Default 10,000: a list
    /// of a thousand maps with atom keys fits; an atom flood is refused before it is decoded.
    pub etf_max_atoms: usize,
    /// Prefix of every channel and key the bus uses (`<prefix><topic>` channels,
    /// `{<prefix>view}:nodes`, `{<prefix>view}:counts:<node>` keys). Default `ringgate:`, so several
    /// deployments (or other applications) can share one Redis without hearing each other.
    pub prefix: String,
    /// Broadcasts waiting for Redis, per node. Past it a publish is dropped and counted
    /// (`ringgate_bus_dropped_total{reason="queue_full"}`), never waited for: a slow Redis must
    /// not block a worker. Default 65536: seconds of a heavy publish rate at Redis's typical
    /// latency. Their bytes are bounded apart (`max_queued_publish_bytes`): 65,536 broadcasts of
    /// 1 MiB would be 64 GiB.
    pub max_queued_publishes: usize,
    /// Bytes of the broadcasts waiting for Redis (topic, event and payload). Past it a publish is
    /// dropped and counted like one past `max_queued_publishes`. Default 64 MiB: the count bound's
    /// seconds of small broadcasts fit many times over, while a burst of large ones cannot hold
    /// more memory than this while Redis is slow.
    pub max_queued_publish_bytes: usize,
    /// Bytes of the messages Redis pushed that wait for the bus task (`bus/incoming.rs`). Past it
    /// a message is dropped and counted, and the members of its topic are closed with 1013, as
    /// a full worker inbox does. Default 64 MiB: the task takes each message at once, so only an
    /// admin thread starved of CPU while Redis keeps writing gets near it.
    pub max_incoming_bytes: usize,
    /// Topics whose membership changed and wait for the subscription reconciler, and topics whose
    /// count waits for the next heartbeat. Past it either set is forgotten: the next pass compares
    /// the whole topic table instead (a resync), the next heartbeat rewrites the whole counts hash.
    /// Default 1,000,000: a reconnect storm over a million topics fits; ~100 MB worst case each.
    pub max_pending_topics: usize,
    /// How long a channel stays subscribed after its topic's last local member left. Default
    /// 5000 ms: a page reload or a reconnect through the balancer rejoins within seconds, and
    /// flapping joins then cost Redis nothing.
    pub linger_ms: u64,
    /// Channels per SUBSCRIBE/UNSUBSCRIBE command (standalone), and SSUBSCRIBE commands in flight
    /// at once (Cluster: one command per channel, since a command must stay within one slot).
    /// Default 1000: a reconnect storm over 10k topics costs ~10 round trips, and no command is
    /// large enough to stall Redis.
    pub subscribe_batch: usize,
    /// Broadcasts per PUBLISH pipeline (one write, in order). Default 512: amortises the system
    /// calls under load, while a lone publish still leaves at once.
    pub publish_batch: usize,
    /// How often this node writes its heartbeat (`{<prefix>view}:nodes`) and its subscriber counts.
    /// Default 1000 ms: the cluster view is a second stale at most, and Redis sees one small write
    /// per node per second.
    pub heartbeat_ms: u64,
    /// How often a node on Redis Cluster asks each master how many shard channels its connection
    /// holds, and compares with the channels it subscribed. Fewer on the server means a
    /// subscription was lost without a sign on the connection (seen during a failover on a
    /// loaded box); the node subscribes the missing masters' channels again, and reconnects
    /// (subscribing everything again) only if the next check still finds them short. Default 5000 ms:
    /// one small command per master per period, and a silent loss lasts seconds at most. The
    /// first check runs one second after every reconnect.
    pub subscription_audit_ms: u64,
    /// A node missing heartbeats for this long is gone from `GET /api/nodes` and its counts leave
    /// the cluster totals. Default 5000 ms: several missed beats, so one slow write does not drop
    /// a live node.
    pub node_ttl_ms: u64,
    /// Time to open a connection to Redis. Default 2000 ms: Redis answers on a LAN in
    /// milliseconds; a gateway starting without Redis must not wait long to serve locally.
    pub connect_timeout_ms: u64,
    /// Time to wait for one command's reply before the link counts as failed. Default 2000 ms.
    pub response_timeout_ms: u64,
    /// Reconnect backoff: the first wait, doubled per failure up to the maximum, each with ±50%
    /// jitter so restarted gateways do not reconnect in lockstep. Defaults 100 ms and 5000 ms.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: None,
            node_name: None,
            format: BusFormat::Ringgate,
            phoenix_pubsub: None,
            phoenix_compress: false,
            etf_max_bytes: 1 << 20,
            etf_max_depth: 64,
            etf_max_terms: 100_000,
            etf_max_atoms: 10_000,
            prefix: "ringgate:".into(),
            max_queued_publishes: 65536,
            max_queued_publish_bytes: 64 << 20,
            max_incoming_bytes: 64 << 20,
            max_pending_topics: 1_000_000,
            linger_ms: 5000,
            subscribe_batch: 1000,
            publish_batch: 512,
            heartbeat_ms: 1000,
            subscription_audit_ms: 5000,
            node_ttl_ms: 5000,
            connect_timeout_ms: 2000,
            response_timeout_ms: 2000,
            backoff_min_ms: 100,
            backoff_max_ms: 5000,
        }
    }
}

/// Where the bus connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One Redis server (`redis://...`, passed to the client as is).
    Standalone(String),
    /// Redis Cluster seed nodes, as `redis://host:port` URLs.
    Cluster(Vec<String>),
}

impl BusConfig {
    /// Parses `url`; `None` when no bus is configured.
    pub fn target(&self) -> Result<Option<Target>, String> {
        let Some(url) = self.url.as_deref() else {
            return Ok(None);
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let seeds: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| format!("redis://{}", s.trim_end_matches('/')))
                .collect();
            if seeds.is_empty() {
                return Err("redis+cluster:// needs at least one host:port".into());
            }
            return Ok(Some(Target::Cluster(seeds)));
        }
        if url.starts_with("redis://") {
            redis::Client::open(url).map_err(|e| e.to_string())?;
            return Ok(Some(Target::Standalone(url.to_string())));
        }
        Err("must start with redis:// or redis+cluster://".into())
    }

    /// Range checks.
    pub fn validate(&self) -> Result<(), String> {
        self.target()?;
        if let Some(name) = &self.node_name {
            if name.is_empty() || name.len() > 255 {
                return Err("node_name must be 1..=255 bytes".into());
            }
        }
        if self.max_queued_publishes == 0 || self.subscribe_batch == 0 || self.publish_batch == 0 {
            return Err(
                "max_queued_publishes, subscribe_batch and publish_batch must be ≥ 1".into(),
            );
        }
        if self.max_incoming_bytes < 1024 {
            return Err("max_incoming_bytes must be ≥ 1024".into());
        }
        if self.max_queued_publish_bytes < 1 << 20 {
            return Err(
                "max_queued_publish_bytes must be ≥ 1048576 (a broadcast of the default 1 MiB must fit)"
                    .into(),
            );
        }
        if self.subscription_audit_ms < 100 {
            return Err("subscription_audit_ms must be ≥ 100".into());
        }
        if self.heartbeat_ms == 0 || self.node_ttl_ms <= self.heartbeat_ms {
            return Err("heartbeat_ms must be ≥ 1 and node_ttl_ms greater than it".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err("backoff_min_ms must be ≥ 1 and ≤ backoff_max_ms".into());
        }
        if self.format == BusFormat::Phoenix {
            let name = self.phoenix_pubsub.as_deref().unwrap_or("");
            if name.is_empty() || name.len() > 200 {
                return Err(
                    "format = \"phoenix\" needs phoenix_pubsub (the app's PubSub name, e.g. \"MyApp.PubSub\")".into(),
                );
            }
            if matches!(self.target()?, Some(Target::Cluster(_))) {
                return Err("format = \"phoenix\" needs a redis:// URL: the adapter uses PUBLISH/SUBSCRIBE, which sharded channels do not reach".into());
            }
            if self.etf_max_bytes < 64
                || self.etf_max_depth < 4
                || self.etf_max_terms < 16
                || self.etf_max_atoms < 8
            {
                return Err("etf_max_bytes ≥ 64, etf_max_depth ≥ 4, etf_max_terms ≥ 16 and etf_max_atoms ≥ 8 (a broadcast needs that much)".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_standalone_or_cluster() {
        let mut c = BusConfig::default();
        assert_eq!(c.target(), Ok(None));
        c.url = Some("redis://127.0.0.1:6379/2".into());
        assert_eq!(
            c.target(),
            Ok(Some(Target::Standalone("redis://127.0.0.1:6379/2".into())))
        );
        c.url = Some("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001".into());
        assert_eq!(
            c.target(),
            Ok(Some(Target::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])))
        );
        c.url = Some("http://x".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn subscription_check_interval_has_a_floor() {
        let mut c = BusConfig {
            subscription_audit_ms: 99,
            ..BusConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("subscription_audit_ms"));
        c.subscription_audit_ms = 100;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn phoenix_format_needs_a_pubsub_name_and_standalone_redis() {
        let mut c = BusConfig {
            url: Some("redis://127.0.0.1:6379".into()),
            format: BusFormat::Phoenix,
            ..BusConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("phoenix_pubsub"));
        c.phoenix_pubsub = Some("MyApp.PubSub".into());
        assert_eq!(c.validate(), Ok(()));
        c.url = Some("redis+cluster://127.0.0.1:7000".into());
        assert!(c.validate().unwrap_err().contains("redis://"));
    }
}
