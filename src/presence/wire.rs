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
}
