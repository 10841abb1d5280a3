//! The messages nodes exchange about presence, and their bytes. Transport-agnostic: whatever
//! carries them (the Redis bus) only needs to deliver the bytes of [`Wire::encode`] to every
//! other node and hand received bytes to [`Wire::decode`]. JSON, because these messages are off
//! the hot path and readable bytes make a bus easy to debug.

use serde::{Deserialize, Serialize};

/// A node incarnation: random per start, so a restarted node is a new node and its previous
/// incarnation's entries time out instead of being mistaken for current ones.
pub type NodeId = u64;

/// One entry as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub topic: String,
    pub key: String,
    pub phx_ref: String,
    /// The meta as JSON text.
    pub meta: String,
}

/// The message kinds (see `docs/protocol.md`, "Presence across nodes").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// "I am alive; my last delta is `seq`." Sent every heartbeat period.
    Heartbeat { node: NodeId, seq: u64 },
    /// The changes of one of the sender's batches, numbered without gaps from 1.
    Delta {
        node: NodeId,
        seq: u64,
        joins: Vec<Entry>,
        leaves: Vec<Entry>,
    },
    /// "Send me your entries": to one node (`to`), or to every node (`to` absent) when the
    /// sender starts or reconnects to the bus.
    StateRequest { node: NodeId, to: Option<NodeId> },
    /// The sender's own entries as of its delta `seq`, for the requester `to`.
    StateTransfer {
        node: NodeId,
        to: NodeId,
        seq: u64,
        entries: Vec<Entry>,
    },
}

/// The longest `phx_ref` a node accepts from another: this node's refs are 16 characters (12
/// bytes in base64); 64 leaves room for a longer format without letting one entry carry a blob.
pub const MAX_REMOTE_REF_BYTES: usize = 64;
/// What an entry's meta holds besides the application's fields: `phx_ref`, `phx_ref_prev` and
/// `online_at` with their names and quotes (~70 bytes with two 16-character refs).
pub const META_HEADER_BYTES: usize = 256;

impl Entry {
    /// Whether an entry another node sent is within the bounds this node keeps its own entries
    /// to: a topic a client could join, a key and ref of the local lengths, and a meta that is a
    /// JSON object no larger than `max_meta_bytes` of fields allow (it is sent as is to members,
    /// so broken JSON would break every client's presence state).
    pub fn within(&self, max_meta_bytes: usize) -> bool {
        !self.topic.is_empty()
            && self.topic.len() <= crate::phoenix::channels::MAX_TOPIC_BYTES
            && self.key.len() <= super::meta::MAX_KEY_BYTES
            && !self.phx_ref.is_empty()
            && self.phx_ref.len() <= MAX_REMOTE_REF_BYTES
            && self.meta.len() <= max_meta_bytes + META_HEADER_BYTES
            && self.meta.starts_with('{')
            && serde_json::from_str::<&serde_json::value::RawValue>(&self.meta).is_ok()
    }
}

/// The first byte of every message: the format version, so a future format can coexist.
const FORMAT_V1: u8 = 1;

impl Wire {
    /// The sending node.
    pub fn node(&self) -> NodeId {
        match self {
            Wire::Heartbeat { node, .. }
            | Wire::Delta { node, .. }
            | Wire::StateRequest { node, .. }
            | Wire::StateTransfer { node, .. } => *node,
        }
    }

    /// Keeps only the entries (joins, leaves, transferred entries) for which `keep` holds;
    /// returns how many were removed.
    pub fn retain_entries(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let mut removed = 0;
        let mut retain = |list: &mut Vec<Entry>| {
            let before = list.len();
            list.retain(&mut keep);
            removed += before - list.len();
        };
        match self {
            Wire::Delta { joins, leaves, .. } => {
                retain(joins);
                retain(leaves);
            }
            Wire::StateTransfer { entries, .. } => retain(entries),
            Wire::Heartbeat { .. } | Wire::StateRequest { .. } => {}
        }
        removed
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        // Serializing plain strings and integers cannot fail.
        serde_json::to_writer(&mut out, self).unwrap_or_default();
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Wire, String> {
        match bytes.split_first() {
            Some((&FORMAT_V1, json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown presence message format {v}")),
            None => Err("empty presence message".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_bytes() {
        let e = Entry {
            topic: "rooms:1".into(),
            key: "u\"1".into(),
            phx_ref: "AAAA".into(),
            meta: r#"{"phx_ref":"AAAA"}"#.into(),
        };
        for m in [
            Wire::Heartbeat { node: 7, seq: 3 },
            Wire::Delta {
                node: 7,
                seq: 4,
                joins: vec![e.clone()],
                leaves: vec![],
            },
            Wire::StateRequest { node: 8, to: None },
            Wire::StateTransfer {
                node: 7,
                to: 8,
                seq: 4,
                entries: vec![e],
            },
        ] {
            let bytes = m.encode();
            assert_eq!(bytes[0], 1);
            assert_eq!(Wire::decode(&bytes).unwrap(), m);
        }
        assert_eq!(
            &Wire::Heartbeat { node: 1, seq: 2 }.encode()[1..],
            br#"{"t":"heartbeat","node":1,"seq":2}"#
        );
        assert!(Wire::decode(b"").is_err());
        assert!(Wire::decode(b"\x02{}").is_err());
        assert!(Wire::decode(b"\x01{\"t\":\"nope\"}").is_err());
    }

    #[test]
    fn entries_out_of_the_local_bounds_are_refused() {
        let ok = Entry {
            topic: "rooms:1".into(),
            key: "u1".into(),
            phx_ref: "AAAAAQAAAAAAAAAB".into(),
            meta: r#"{"phx_ref":"AAAAAQAAAAAAAAAB","online_at":"9","name":"x"}"#.into(),
        };
        assert!(ok.within(16));
        let bad = |f: fn(&mut Entry)| {
            let mut e = ok.clone();
            f(&mut e);
            e
        };
        let refused = [
            bad(|e| e.topic = String::new()),
            bad(|e| e.topic = "t".repeat(crate::phoenix::channels::MAX_TOPIC_BYTES + 1)),
            bad(|e| e.key = "k".repeat(crate::presence::meta::MAX_KEY_BYTES + 1)),
            bad(|e| e.phx_ref = "r".repeat(MAX_REMOTE_REF_BYTES + 1)),
            bad(|e| e.meta = format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 + META_HEADER_BYTES))),
            bad(|e| e.meta = "[1]".into()),
            bad(|e| e.meta = r#"{"open":"#.into()),
        ];
        for e in &refused {
            assert!(!e.within(16), "{e:?}");
        }
        let mut w = Wire::Delta {
            node: 1,
            seq: 1,
            joins: vec![ok.clone(), refused[4].clone()],
            leaves: vec![refused[3].clone()],
        };
        assert_eq!(w.retain_entries(|e| e.within(16)), 2);
        assert_eq!(
            w,
            Wire::Delta {
                node: 1,
                seq: 1,
                joins: vec![ok],
                leaves: vec![],
            }
        );
    }
}
