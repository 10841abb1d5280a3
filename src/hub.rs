//! The hub: what every thread of the data plane shares — the topic table, the workers' inboxes and
//! the channel router — and `publish`, the one entry point of a broadcast from anywhere (a worker
//! handling a client push, the admin API, the multi-node bus).

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::net::peers::PeerTable;
use crate::phoenix::router::Router;
use crate::presence::table::PresenceTable;
use crate::presence::PresenceConfig;
use crate::topics::table::TopicTable;
use crate::topics::Broadcast;
use crate::worker::inbox::{Inbox, Msg};

pub struct Hub {
    pub table: TopicTable,
    pub inboxes: Vec<Arc<Inbox>>,
    pub router: Router,
    /// Connect authentication, when configured.
    pub auth: Option<Authenticator>,
    /// Connections per source address (used when `max_connections_per_ip` is set).
    pub peers: PeerTable,
    /// Who is in each presence topic, node-wide (`presence::table`).
    pub presence: PresenceTable,
}

/// Where a publish went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Members of the topic across workers when it was published.
    pub members: u64,
    /// The publishing worker itself has members (it delivers locally, without a message).
    pub local: bool,
}

impl Hub {
    pub fn new(
        table: TopicTable,
        inboxes: Vec<Arc<Inbox>>,
        router: Router,
        auth: Option<Authenticator>,
    ) -> Self {
        Self {
            table,
            inboxes,
            router,
            auth,
            peers: PeerTable::new(64),
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

    /// Sends `broadcast` to every worker with members of its topic, except `from` (the calling
    /// worker, which delivers to its own members directly). One stripe lock to read the audience,
    /// released before any inbox is touched.
    pub fn publish(
        &self,
        broadcast: Arc<Broadcast>,
        from: Option<usize>,
        audience: &mut Vec<(usize, u32)>,
    ) -> Published {
        audience.clear();
        let members = self.table.audience(&broadcast.topic, audience);
        let mut local = false;
        for &(worker, _) in audience.iter() {
            if Some(worker) == from {
                local = true;
            } else {
                self.inboxes[worker].send(Msg::Broadcast(broadcast.clone()));
            }
        }
        Published { members, local }
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
