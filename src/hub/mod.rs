//! The hub: what every thread of the data plane shares — the topic table, the workers' inboxes,
//! the channel router, the per-address counts and the multi-node bus — and `publish`, the one
//! entry point of a broadcast from anywhere (a worker handling a client push, the admin API), and
//! `deliver_local`, the entry of a broadcast for this node only (received from another node, or
//! a presence diff).
//!
//! Broadcasts are encoded here, once per serializer (`phoenix::broadcast`), so the topic table
//! and the workers' fan-out never know a wire format.

pub mod peers;

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::bus::Bus;
use crate::phoenix::broadcast;
use crate::phoenix::router::Router;
use crate::phoenix::serializer::Payload;
use crate::presence::table::PresenceTable;
use crate::presence::PresenceConfig;
use crate::topics::table::TopicTable;
use crate::topics::Broadcast;
use crate::worker::inbox::{Inbox, Msg};
use peers::PeerTable;

pub struct Hub {
    pub table: TopicTable,
    pub inboxes: Vec<Arc<Inbox>>,
    pub router: Router,
    /// Connect authentication, when configured.
    pub auth: Option<Authenticator>,
    /// Connections per source address (used when `max_connections_per_ip` is set).
    pub peers: PeerTable,
    /// The multi-node bus, when `[bus] url` is set.
    pub bus: Option<Arc<Bus>>,
    /// Who is in each presence topic, node-wide (`presence::table`).
    pub presence: PresenceTable,
}

/// Where a publish went.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Members of the topic across this node's workers that the broadcast was queued for (a
    /// worker whose inbox was full, or that is dead, is left out: its members do not get it).
    pub members: u64,
    /// The broadcast, when the publishing worker itself has members (it delivers locally,
    /// without a message).
    pub local: Option<Arc<Broadcast>>,
}

impl Hub {
    pub fn new(
        table: TopicTable,
        inboxes: Vec<Arc<Inbox>>,
        router: Router,
        auth: Option<Authenticator>,
        bus: Option<Arc<Bus>>,
    ) -> Self {
        Self {
            table,
            inboxes,
            router,
            auth,
            peers: PeerTable::new(64),
            bus,
            presence: PresenceTable::new(
                64,
                node_nonce(),
                PresenceConfig::default().max_members,
                PresenceConfig::default().max_meta_bytes,
            ),
        }
    }

    /// The hub with presence limits from the configuration.
    pub fn with_presence(mut self, cfg: &PresenceConfig, stripes: usize) -> Self {
        self.presence =
            PresenceTable::new(stripes, node_nonce(), cfg.max_members, cfg.max_meta_bytes);
        self
    }

    /// A broadcast published on this node: delivered to this node's members at once (every
    /// worker with members except `from`, the calling worker, which delivers itself), and handed
    /// to the bus for the other nodes (a non-blocking, bounded queue).
    pub fn publish(
        &self,
        topic: &str,
        event: &str,
        payload: Payload<'_>,
        from: Option<usize>,
        audience: &mut Vec<(usize, u32)>,
    ) -> Published {
        if let Some(bus) = &self.bus {
            bus.offer(topic, event, payload);
        }
        self.fan_out(topic, event, payload, from, audience)
    }

    /// A broadcast for this node's members only: received from another node, or a presence diff
    /// (each node renders the diffs of its own merged view; presence crosses nodes as deltas).
    pub fn deliver_local(
        &self,
        topic: &str,
        event: &str,
        payload: Payload<'_>,
        audience: &mut Vec<(usize, u32)>,
    ) -> Published {
        self.fan_out(topic, event, payload, None, audience)
    }

    /// One stripe lock to read the audience, released before anything is encoded or any inbox
    /// is touched; encoded once, and only when someone here listens.
    fn fan_out(
        &self,
        topic: &str,
        event: &str,
        payload: Payload<'_>,
        from: Option<usize>,
        audience: &mut Vec<(usize, u32)>,
    ) -> Published {
        audience.clear();
        self.table.audience(topic, audience);
        if audience.is_empty() {
            return Published::default();
        }
        let b = Arc::new(broadcast::encode(topic, event, payload));
        let mut local = None;
        let mut members = 0;
        for &(worker, n) in audience.iter() {
            if Some(worker) == from {
                local = Some(b.clone());
                members += u64::from(n);
            } else if self.inboxes[worker].send(Msg::Broadcast(b.clone())) {
                members += u64::from(n);
            }
        }
        Published { members, local }
    }

    /// A connection of `worker` joined `topic`.
    pub fn join(&self, topic: &str, worker: usize) {
        self.table.add(topic, worker, 1);
        self.hint(topic);
    }

    /// A connection of `worker` left `topic`.
    pub fn leave(&self, topic: &str, worker: usize) {
        self.table.add(topic, worker, -1);
        self.hint(topic);
    }

    /// Tells the bus (outside the stripe lock) that the topic's local count changed: it follows
    /// first-member/last-member edges with subscriptions and reports counts to the cluster view.
    fn hint(&self, topic: &str) {
        if let Some(bus) = &self.bus {
            bus.hint(topic);
        }
    }
}

/// A number telling this process's `phx_ref`s from other nodes' (and from its own previous runs):
/// start time and process id, mixed.
fn node_nonce() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let h = ahash::RandomState::new().hash_one((nanos, std::process::id()));
    (h ^ (h >> 32)) as u32
}
