//! What travels on the bus, and the codec that turns it into Redis message bytes.
//!
//! A [`BusMessage`] is a value; a [`Codec`] maps it to and from the bytes of one Redis pub/sub
//! message and names the channel a topic's messages travel on. ringgate's own format is
//! [`RinggateCodec`] (layout in docs/protocol.md, "Bus envelope"), one channel per topic;
//! Phoenix.PubSub's Redis adapter is `bus::phoenix::PhoenixCodec`, one channel for every topic
//! ([`Codec::shared_channel`]). Presence messages do not use this envelope: they travel on their
//! own channel in their own format (`bus::presence`, `presence::wire`), so a topic channel
//! carries broadcasts only.

use serde_json::value::RawValue;

/// A payload as published: raw JSON text (never re-parsed into a tree) or binary bytes.
#[derive(Debug, Clone)]
pub enum BusPayload {
    Json(Box<RawValue>),
    Binary(Vec<u8>),
}

impl PartialEq for BusPayload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => a.get() == b.get(),
            (Self::Binary(a), Self::Binary(b)) => a == b,
            _ => false,
        }
    }
}

/// One broadcast as it crosses nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The publishing node's name; a node drops messages whose origin is itself (its members
    /// were served locally when it published).
    pub origin: Box<str>,
    /// Per-origin sequence, 1, 2, 3, ... in publish order (for ordering checks and gap counts).
    pub seq: u64,
    pub topic: Box<str>,
    pub event: Box<str>,
    pub payload: BusPayload,
}

/// Everything the bus carries. Only broadcasts today.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    Broadcast(Envelope),
}

/// A received message that is well formed but not for this node's members. Each is a label of
/// `ringgate_bus_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// This node's own broadcast, back from Redis (its members were served when it published).
    Echo,
    /// Addressed to another node only (the adapter's `:only` mode).
    OtherNode,
    /// Another kind of message on a shared channel (the app's own PubSub traffic, Presence).
    NotABroadcast,
    /// A topic without a local member (a shared channel carries every topic).
    NoMembers,
    /// A message version or mode this node does not know.
    Version,
}

impl Ignored {
    pub const ALL: [Self; 5] = [
        Self::Echo,
        Self::OtherNode,
        Self::NotABroadcast,
        Self::NoMembers,
        Self::Version,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::OtherNode => "other_node",
            Self::NotABroadcast => "not_a_broadcast",
            Self::NoMembers => "no_members",
            Self::Version => "version",
        }
    }
}

/// What a received message turned out to be.
#[derive(Debug, PartialEq)]
pub enum Received {
    Broadcast(Envelope),
    Ignored(Ignored),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("not a ringgate bus message (bad magic)")]
    Magic,
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("truncated envelope")]
    Truncated,
    #[error("field too long to encode: {0}")]
    TooLong(&'static str),
    #[error("field is not UTF-8: {0}")]
    Utf8(&'static str),
    #[error("payload is not valid JSON")]
    Json,
    #[error("unknown payload type {0}")]
    PayloadType(u8),
    /// Over a decoding limit (`etf_max_*`): refused before it was decoded.
    #[error("refused: {}", .0.reason())]
    Rejected(crate::bus::phoenix::scan::Reject),
    /// A broadcast whose payload JSON cannot carry.
    #[error("payload JSON cannot carry: {}", .0.reason())]
    Unsupported(crate::bus::phoenix::json::Unsupported),
}

/// A bus wire format.
pub trait Codec: Send + Sync {
    /// `Some(channel)` when every topic travels on that one channel (subscribed once per
    /// connection, filtered by topic on receipt); `None` when each topic has its own channel
    /// (subscribed while the topic has local members).
    fn shared_channel(&self) -> Option<&str> {
        None
    }
    /// The channel carrying `topic`'s messages.
    fn channel(&self, prefix: &str, topic: &str) -> String;
    /// Appends `msg` as one Redis message body to `out`.
    fn encode(&self, msg: &BusMessage, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Reads one Redis message body received by node `me`; `wanted(topic)` says whether the
    /// topic has local members (asked before the payload is decoded, so traffic for other
    /// topics costs little).
    fn receive(
        &self,
        bytes: &[u8],
        me: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Received, CodecError>;
}

/// ringgate's envelope, version 1 (docs/protocol.md, "Bus envelope").
pub struct RinggateCodec {
    /// A received message longer than this is refused before it is decoded (or copied).
    max_bytes: usize,
}

/// The longest envelope header: magic, version, kind, payload type, origin length and origin
/// (≤ 255 bytes), sequence, topic and event with their lengths (≤ 65,535 bytes each).
pub const MAX_HEADER_BYTES: usize = 2 + 3 + 1 + 255 + 8 + 2 + 65_535 + 2 + 65_535;

impl RinggateCodec {
    /// A codec that reads envelopes whose payload is at most `max_payload_bytes`: the largest
    /// payload a node publishes (a client's message, an admin publish), so anything larger did not
    /// come from a ringgate with this configuration.
    pub fn new(max_payload_bytes: usize) -> Self {
        Self {
            max_bytes: max_payload_bytes.saturating_add(MAX_HEADER_BYTES),
        }
    }
}

impl Default for RinggateCodec {
    /// Payloads up to 1 MiB, the default `max_message_bytes` and the admin API's body bound.
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

const MAGIC: &[u8; 2] = b"RG";
const VERSION: u8 = 1;
const KIND_BROADCAST: u8 = 1;
const PAYLOAD_JSON: u8 = 0;
const PAYLOAD_BINARY: u8 = 1;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, CodecError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| CodecError::Truncated)?,
        ))
    }
    fn str(&mut self, n: usize, field: &'static str) -> Result<Box<str>, CodecError> {
        std::str::from_utf8(self.take(n)?)
            .map(Into::into)
            .map_err(|_| CodecError::Utf8(field))
    }
}

impl Codec for RinggateCodec {
    fn receive(
        &self,
        bytes: &[u8],
        me: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Received, CodecError> {
        let BusMessage::Broadcast(e) = self.decode(bytes)?;
        Ok(if *e.origin == *me {
            Received::Ignored(Ignored::Echo)
        } else if !wanted(&e.topic) {
            Received::Ignored(Ignored::NoMembers)
        } else {
            Received::Broadcast(e)
        })
    }

    /// `<prefix><topic>`: the topic itself decides the Cluster hash slot (no hash tag is added,
    /// so topics spread over every shard).
    fn channel(&self, prefix: &str, topic: &str) -> String {
        let mut c = String::with_capacity(prefix.len() + topic.len());
        c.push_str(prefix);
        c.push_str(topic);
        c
    }

    fn encode(&self, msg: &BusMessage, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let BusMessage::Broadcast(e) = msg;
        let origin = u8::try_from(e.origin.len()).map_err(|_| CodecError::TooLong("origin"))?;
        let topic = u16::try_from(e.topic.len()).map_err(|_| CodecError::TooLong("topic"))?;
        let event = u16::try_from(e.event.len()).map_err(|_| CodecError::TooLong("event"))?;
        let (kind, body) = match &e.payload {
            BusPayload::Json(raw) => (PAYLOAD_JSON, raw.get().as_bytes()),
            BusPayload::Binary(b) => (PAYLOAD_BINARY, b.as_slice()),
        };
        out.reserve(24 + e.origin.len() + e.topic.len() + e.event.len() + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, KIND_BROADCAST, kind, origin]);
        out.extend_from_slice(e.origin.as_bytes());
        out.extend_from_slice(&e.seq.to_be_bytes());
        out.extend_from_slice(&topic.to_be_bytes());
        out.extend_from_slice(e.topic.as_bytes());
        out.extend_from_slice(&event.to_be_bytes());
        out.extend_from_slice(e.event.as_bytes());
        out.extend_from_slice(body);
        Ok(())
    }
}

impl RinggateCodec {
    /// Reads one envelope.
    pub fn decode(&self, bytes: &[u8]) -> Result<BusMessage, CodecError> {
        if bytes.len() > self.max_bytes {
            return Err(CodecError::Rejected(
                crate::bus::phoenix::scan::Reject::TooLarge,
            ));
        }
        let mut r = Reader(bytes);
        if r.take(2).map_err(|_| CodecError::Magic)? != MAGIC {
            return Err(CodecError::Magic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(CodecError::Version(version));
        }
        let kind = r.u8()?;
        if kind != KIND_BROADCAST {
            return Err(CodecError::Kind(kind));
        }
        let payload_type = r.u8()?;
        let origin_len = usize::from(r.u8()?);
        let origin = r.str(origin_len, "origin")?;
        let seq = r.u64()?;
        let topic_len = r.u16()?;
        let topic = r.str(topic_len, "topic")?;
        let event_len = r.u16()?;
        let event = r.str(event_len, "event")?;
        let body = r.0;
        let payload = match payload_type {
            PAYLOAD_JSON => {
                let text = std::str::from_utf8(body).map_err(|_| CodecError::Json)?;
                BusPayload::Json(
                    RawValue::from_string(text.to_owned()).map_err(|_| CodecError::Json)?,
                )
            }
            PAYLOAD_BINARY => BusPayload::Binary(body.to_vec()),
            other => return Err(CodecError::PayloadType(other)),
        };
        Ok(BusMessage::Broadcast(Envelope {
            origin,
            seq,
            topic,
            event,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &str) -> BusPayload {
        BusPayload::Json(RawValue::from_string(s.into()).unwrap())
    }

    fn broadcast(payload: BusPayload) -> BusMessage {
        BusMessage::Broadcast(Envelope {
            origin: "127.0.0.1:4000".into(),
            seq: 258,
            topic: "rooms:lobby".into(),
            event: "new_msg".into(),
            payload,
        })
    }

    #[test]
    fn json_envelope_has_the_documented_bytes() {
        let mut out = Vec::new();
        RinggateCodec::default()
            .encode(&broadcast(json(r#"{"a":1}"#)), &mut out)
            .unwrap();
        let mut want = b"RG\x01\x01\x00\x0e127.0.0.1:4000".to_vec();
        want.extend_from_slice(&258u64.to_be_bytes());
        want.extend_from_slice(b"\x00\x0brooms:lobby\x00\x07new_msg{\"a\":1}");
        assert_eq!(out, want);
        assert_eq!(
            RinggateCodec::default().decode(&out),
            Ok(broadcast(json(r#"{"a":1}"#)))
        );
    }

    #[test]
    fn binary_payload_round_trips_byte_exact() {
        let m = broadcast(BusPayload::Binary(vec![0, 255, 1, 2]));
        let mut out = Vec::new();
        RinggateCodec::default().encode(&m, &mut out).unwrap();
        assert_eq!(out[4], PAYLOAD_BINARY);
        assert_eq!(RinggateCodec::default().decode(&out), Ok(m));
    }

    #[test]
    fn foreign_and_damaged_messages_are_refused() {
        let c = RinggateCodec::default();
        assert_eq!(c.decode(b"hello"), Err(CodecError::Magic));
        assert_eq!(c.decode(b"R"), Err(CodecError::Magic));
        assert_eq!(c.decode(b"RG\x02\x01"), Err(CodecError::Version(2)));
        assert_eq!(c.decode(b"RG\x01\x02"), Err(CodecError::Kind(2)));
        let mut out = Vec::new();
        c.encode(&broadcast(json("[1]")), &mut out).unwrap();
        for cut in 0..out.len() - 3 {
            assert!(c.decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = out.clone();
        let n = bad.len();
        bad[n - 1] = b'{';
        assert_eq!(c.decode(&bad), Err(CodecError::Json));
        let mut bad_type = out;
        bad_type[4] = 9;
        assert_eq!(c.decode(&bad_type), Err(CodecError::PayloadType(9)));
    }

    #[test]
    fn a_message_over_the_payload_bound_is_refused_before_decoding() {
        let c = RinggateCodec::new(16);
        let fits = broadcast(BusPayload::Binary(vec![7; 16]));
        let mut out = Vec::new();
        c.encode(&fits, &mut out).unwrap();
        assert_eq!(c.decode(&out), Ok(fits));
        // The bound is the payload's plus the longest header: a message past that is refused
        // whatever its header claims.
        let mut big = Vec::new();
        let BusMessage::Broadcast(mut e) = broadcast(BusPayload::Binary(Vec::new()));
        e.payload = BusPayload::Binary(vec![7; 17 + MAX_HEADER_BYTES]);
        c.encode(&BusMessage::Broadcast(e), &mut big).unwrap();
        assert_eq!(
            c.decode(&big),
            Err(CodecError::Rejected(
                crate::bus::phoenix::scan::Reject::TooLarge
            ))
        );
    }

    #[test]
    fn over_long_fields_are_refused_not_truncated() {
        let BusMessage::Broadcast(mut e) = broadcast(json("1"));
        e.origin = "x".repeat(256).into();
        let mut out = Vec::new();
        assert_eq!(
            RinggateCodec::default().encode(&BusMessage::Broadcast(e), &mut out),
            Err(CodecError::TooLong("origin"))
        );
    }

    #[test]
    fn channel_is_prefix_and_topic_without_hash_tag() {
        assert_eq!(
            RinggateCodec::default().channel("ringgate:", "rooms:1"),
            "ringgate:rooms:1"
        );
    }

    proptest! {
        #[test]
        fn any_envelope_round_trips(
            origin in "[a-z0-9:.]{1,40}",
            seq in any::<u64>(),
            topic in "\\PC{0,60}",
            event in "\\PC{0,30}",
            bin in proptest::collection::vec(any::<u8>(), 0..200),
            n in any::<i64>(),
        ) {
            for payload in [BusPayload::Binary(bin.clone()), json(&format!("{{\"n\":{n}}}"))] {
                let m = BusMessage::Broadcast(Envelope {
                    origin: origin.clone().into(),
                    seq,
                    topic: topic.clone().into(),
                    event: event.clone().into(),
                    payload,
                });
                let mut out = Vec::new();
                RinggateCodec::default().encode(&m, &mut out).unwrap();
                prop_assert_eq!(RinggateCodec::default().decode(&out), Ok(m));
            }
        }
    }
}
