//! Presence across nodes, as a pure state machine: no clock, no socket, no thread. The caller
//! feeds it this node's batched changes ([`Replica::local`]), the messages other nodes sent
//! ([`Replica::receive`]) and the time ([`Replica::tick`]); it answers with messages to publish
//! to every node and with changes of other nodes' entries to merge into the local table
//! ([`crate::presence::table::PresenceTable::apply_remote`]).
//!
//! # Rules
//! - Each node owns its local entries and is the only one to publish changes of them: one
//!   [`Wire::Delta`] per batch, numbered 1, 2, 3... per node incarnation.
//! - A receiver applies a node's deltas in sequence order: a duplicate (seq ≤ applied) is
//!   dropped, an early one waits in a bounded buffer until the gap before it is filled. Deltas
//!   delivered in any order, any number of times, give one state.
//! - Every node that has published a delta sends [`Wire::Heartbeat`] with its last seq (a node
//!   that never tracked anything stays silent: nobody holds entries of it). A heartbeat ahead of what a receiver
//!   has applied (and whose next delta is not buffered) means deltas were lost (the bus dropped
//!   them, or the receiver started late): the receiver asks that node for a
//!   [`Wire::StateTransfer`], the node's own entries as of a seq, which replaces everything the
//!   receiver held for it.
//! - A node heard from for no `node_timeout_ms` is gone: its entries become leaves here. If it
//!   comes back, its heartbeat is ahead of nothing applied, so it is asked for a transfer.
//! - A node starting, or reconnecting to the bus, sends [`Wire::StateRequest`] to all: every node
//!   answers with a transfer, so its view is complete without waiting for changes.
//!
//! No entry is lost (a gap always ends in a transfer) and none stays a zombie (a node's entries
//! live only as long as its heartbeats).

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use super::wire::{Entry, NodeId, Wire};

/// What the caller does after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Publish this message to every other node.
    Send(Wire),
    /// Entries of other nodes that joined or left: merge them into the local table.
    Remote {
        joins: Vec<Entry>,
        leaves: Vec<Entry>,
    },
}

/// Deltas buffered per node while a gap is open; past it the buffer is dropped and a transfer
/// requested. 10,000: minutes of batches at 20 per second, far more than a reordering bus holds.
pub const MAX_BUFFERED_DELTAS: usize = 10_000;

type EntryId = (String, String); // (topic, phx_ref)

#[derive(Debug, Default)]
struct Peer {
    last_heard_ms: u64,
    applied: u64,
    buffered: BTreeMap<u64, (Vec<Entry>, Vec<Entry>)>,
    entries: BTreeMap<EntryId, Entry>,
    requested_ms: Option<u64>,
}

fn id(e: &Entry) -> EntryId {
    (e.topic.clone(), e.phx_ref.clone())
}

/// See the module docs.
#[derive(Debug)]
pub struct Replica {
    me: NodeId,
    heartbeat_ms: u64,
    node_timeout_ms: u64,
    seq: u64,
    local: BTreeMap<EntryId, Entry>,
    peers: HashMap<NodeId, Peer>,
    next_heartbeat_ms: u64,
}

impl Replica {
    pub fn new(me: NodeId, heartbeat_ms: u64, node_timeout_ms: u64) -> Self {
        Replica {
            me,
            heartbeat_ms,
            node_timeout_ms,
            seq: 0,
            local: BTreeMap::new(),
            peers: HashMap::new(),
            next_heartbeat_ms: 0,
        }
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// On start and after every reconnect to the bus: ask every node for its entries, and say
    /// where this node is.
    pub fn connected(&mut self, now_ms: u64) -> Vec<Output> {
        self.next_heartbeat_ms = now_ms + self.heartbeat_ms;
        let mut out = vec![Output::Send(Wire::StateRequest {
            node: self.me,
            to: None,
        })];
        if self.seq > 0 {
            out.push(Output::Send(Wire::Heartbeat {
                node: self.me,
                seq: self.seq,
            }));
        }
        out
    }

    /// One batch of this node's changes (the local part of a flushed diff).
    pub fn local(&mut self, joins: Vec<Entry>, leaves: Vec<Entry>) -> Vec<Output> {
        if joins.is_empty() && leaves.is_empty() {
            return Vec::new();
        }
        for e in &joins {
            self.local.insert(id(e), e.clone());
        }
        for e in &leaves {
            self.local.remove(&id(e));
        }
        self.seq += 1;
        vec![Output::Send(Wire::Delta {
            node: self.me,
            seq: self.seq,
            joins,
            leaves,
        })]
    }

    /// A message from the bus (this node's own messages coming back are ignored).
    pub fn receive(&mut self, now_ms: u64, msg: Wire) -> Vec<Output> {
        let from = msg.node();
        if from == self.me {
            return Vec::new();
        }
        let mut out = Vec::new();
        match msg {
            Wire::Heartbeat { seq, .. } => {
                let peer = self.heard(from, now_ms);
                let next_buffered = peer.buffered.contains_key(&(peer.applied + 1));
                if seq > peer.applied && !next_buffered {
                    self.request(from, now_ms, &mut out);
                }
            }
            Wire::Delta {
                seq, joins, leaves, ..
            } => {
                let peer = self.heard(from, now_ms);
                if seq > peer.applied {
                    peer.buffered.insert(seq, (joins, leaves));
                    if peer.buffered.len() > MAX_BUFFERED_DELTAS {
                        peer.buffered.clear();
                        self.request(from, now_ms, &mut out);
                    }
                }
                self.drain(from, &mut out);
            }
            Wire::StateRequest { to, .. } => {
                self.heard(from, now_ms);
                // A node that never tracked anything has nothing anyone could hold: it answers
                // only when asked by name.
                if (to.is_none() && self.seq > 0) || to == Some(self.me) {
                    out.push(Output::Send(Wire::StateTransfer {
                        node: self.me,
                        to: from,
                        seq: self.seq,
                        entries: self.local.values().cloned().collect(),
                    }));
                }
            }
            Wire::StateTransfer {
                to, seq, entries, ..
            } => {
                if to != self.me {
                    return out;
                }
                let peer = self.heard(from, now_ms);
                if seq < peer.applied {
                    return out; // older than what was applied already
                }
                let new: BTreeMap<EntryId, Entry> =
                    entries.into_iter().map(|e| (id(&e), e)).collect();
                let leaves: Vec<Entry> = peer
                    .entries
                    .iter()
                    .filter(|(k, _)| !new.contains_key(*k))
                    .map(|(_, e)| e.clone())
                    .collect();
                let joins: Vec<Entry> = new
                    .iter()
                    .filter(|(k, _)| !peer.entries.contains_key(*k))
                    .map(|(_, e)| e.clone())
                    .collect();
                peer.entries = new;
                peer.applied = seq;
                peer.requested_ms = None;
                peer.buffered = peer.buffered.split_off(&(seq + 1));
                if !joins.is_empty() || !leaves.is_empty() {
                    out.push(Output::Remote { joins, leaves });
                }
                self.drain(from, &mut out);
            }
        }
        out
    }

    /// Heartbeats and timeouts; call it at least every heartbeat period.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        // Silent until the first change: a node without presence activity costs the bus nothing.
        if now_ms >= self.next_heartbeat_ms && self.seq > 0 {
            self.next_heartbeat_ms = now_ms + self.heartbeat_ms;
            out.push(Output::Send(Wire::Heartbeat {
                node: self.me,
                seq: self.seq,
            }));
        }
        let timeout = self.node_timeout_ms;
        let gone: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.last_heard_ms) > timeout)
            .map(|(&n, _)| n)
            .collect();
        for node in gone {
            if let Some(peer) = self.peers.remove(&node) {
                let leaves: Vec<Entry> = peer.entries.into_values().collect();
                if !leaves.is_empty() {
                    out.push(Output::Remote {
                        joins: Vec::new(),
                        leaves,
                    });
                }
            }
        }
        out
    }

    /// Replaces this node's own entries with `entries` (after local batches were lost on the way
    /// here): one delta with the difference, if any.
    pub fn replace_local(&mut self, entries: Vec<Entry>) -> Vec<Output> {
        let new: BTreeMap<EntryId, Entry> = entries.into_iter().map(|e| (id(&e), e)).collect();
        let leaves = self
            .local
            .iter()
            .filter(|(k, _)| !new.contains_key(*k))
            .map(|(_, e)| e.clone())
            .collect();
        let joins = new
            .iter()
            .filter(|(k, _)| !self.local.contains_key(*k))
            .map(|(_, e)| e.clone())
            .collect();
        self.local(joins, leaves)
    }

    /// Every entry of other nodes this node holds.
    pub fn remote_entries(&self) -> BTreeSet<Entry> {
        self.peers
            .values()
            .flat_map(|p| p.entries.values().cloned())
            .collect()
    }

    /// This node's own entries, as it publishes them.
    pub fn local_entries(&self) -> BTreeSet<Entry> {
        self.local.values().cloned().collect()
    }

    /// Nodes currently heard from.
    pub fn peers(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.peers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn heard(&mut self, node: NodeId, now_ms: u64) -> &mut Peer {
        let peer = self.peers.entry(node).or_default();
        peer.last_heard_ms = peer.last_heard_ms.max(now_ms);
        peer
    }

    fn request(&mut self, node: NodeId, now_ms: u64, out: &mut Vec<Output>) {
        let heartbeat_ms = self.heartbeat_ms;
        let peer = self.peers.entry(node).or_default();
        if peer.requested_ms.is_some_and(|t| now_ms < t + heartbeat_ms) {
            return; // one request per heartbeat period is enough
        }
        peer.requested_ms = Some(now_ms);
        out.push(Output::Send(Wire::StateRequest {
            node: self.me,
            to: Some(node),
        }));
    }

    /// Applies the buffered deltas of `node` that follow what was applied, in order.
    fn drain(&mut self, node: NodeId, out: &mut Vec<Output>) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        let (mut all_joins, mut all_leaves) = (Vec::new(), Vec::new());
        while let Some((joins, leaves)) = peer.buffered.remove(&(peer.applied + 1)) {
            peer.applied += 1;
            for e in joins {
                if peer.entries.insert(id(&e), e.clone()).is_none() {
                    all_joins.push(e);
                }
            }
            for e in leaves {
                if let Some(old) = peer.entries.remove(&id(&e)) {
                    all_leaves.push(old);
                }
            }
        }
        peer.buffered.retain(|&s, _| s > peer.applied);
        if !all_joins.is_empty() || !all_leaves.is_empty() {
            out.push(Output::Remote {
                joins: all_joins,
                leaves: all_leaves,
            });
        }
    }
}

#[cfg(test)]
mod tests;
