//! `[bus] format = "phoenix"`: the wire format of Phoenix.PubSub's Redis adapter
//! (phoenix_pubsub_redis 3.x), so ringgate nodes join an Elixir app's own PubSub and
//! `MyAppWeb.Endpoint.broadcast/3` reaches ringgate's clients (docs/protocol.md, "Phoenix.PubSub
//! Redis adapter"; docs/phoenix-app.md).
//!
//! One channel carries every topic of the PubSub, so the bus subscribes it once and filters by
//! topic here: the message header (version, mode, node, topic) is read straight from the bytes,
//! and a message for another node or for a topic without local members is dropped before its
//! payload is decoded. A message for us is checked by `scan` (bounded) and only then decoded
//! with `eetf`; its `%Phoenix.Socket.Broadcast{}` payload becomes JSON text in `json`.
//!
//! - `scan`: limits, inflation of compressed terms, a non-recursive walk over the bytes.
//! - `json`: payload terms ↔ JSON.

pub mod json;
pub mod scan;

use eetf::{Atom, Binary, FixInteger, Map, Term, Tuple};
use serde_json::value::RawValue;

use super::config::BusConfig;
use super::envelope::{BusMessage, BusPayload, Codec, CodecError, Envelope, Ignored, Received};
use json::Unsupported;
use scan::{Count, Limits, Reject};

/// The adapter's message version (`@redis_msg_vsn` in `redis_server.ex`).
pub const MSG_VERSION: u8 = 3;
pub const BROADCAST_STRUCT: &str = "Elixir.Phoenix.Socket.Broadcast";
pub const DISPATCHER: &str = "Elixir.Phoenix.Channel.Server";

/// The channel of PubSub `pubsub`: `"phx:" <> to_string(Module.concat(pubsub, "Adapter"))`.
pub fn adapter_channel(pubsub: &str) -> String {
    let name = pubsub.strip_prefix("Elixir.").unwrap_or(pubsub);
    format!("phx:Elixir.{name}.Adapter")
}

pub struct PhoenixCodec {
    channel: String,
    compress: bool,
    limits: Limits,
}

impl PhoenixCodec {
    pub fn new(cfg: &BusConfig) -> Self {
        Self {
            channel: adapter_channel(cfg.phoenix_pubsub.as_deref().unwrap_or("")),
            compress: cfg.phoenix_compress,
            limits: Limits {
                max_bytes: cfg.etf_max_bytes,
                max_depth: cfg.etf_max_depth,
                max_terms: cfg.etf_max_terms,
                max_atoms: cfg.etf_max_atoms,
            },
        }
    }
}

impl From<Reject> for CodecError {
    fn from(r: Reject) -> Self {
        Self::Rejected(r)
    }
}

impl From<Unsupported> for CodecError {
    fn from(u: Unsupported) -> Self {
        Self::Unsupported(u)
    }
}

/// A term's bytes: `bytes[start..end]`.
struct Span {
    start: usize,
    end: usize,
}

/// The text of an atom term at the start of `b`, if it is one.
fn atom_text(b: &[u8]) -> Option<&[u8]> {
    match *b.first()? {
        scan::SMALL_ATOM | scan::SMALL_ATOM_UTF8 => {
            let n = usize::from(*b.get(1)?);
            b.get(2..2 + n)
        }
        scan::ATOM | scan::ATOM_UTF8 => {
            let n = usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?]));
            b.get(3..3 + n)
        }
        _ => None,
    }
}

/// The bytes of a binary term at the start of `b`, if it is one.
fn binary_bytes(b: &[u8]) -> Option<&[u8]> {
    if *b.first()? != scan::BINARY {
        return None;
    }
    let n = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize;
    b.get(5..5 + n)
}

impl Codec for PhoenixCodec {
    fn shared_channel(&self) -> Option<&str> {
        Some(&self.channel)
    }

    fn channel(&self, _prefix: &str, _topic: &str) -> String {
        self.channel.clone()
    }

    /// `{3, :except, "<node>", topic, %Phoenix.Socket.Broadcast{topic, event, payload},
    /// Phoenix.Channel.Server}` through `term_to_binary`, compressed when configured.
    fn encode(&self, msg: &BusMessage, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let BusMessage::Broadcast(e) = msg;
        let payload = match &e.payload {
            BusPayload::Json(raw) => {
                let v: serde_json::Value =
                    serde_json::from_str(raw.get()).map_err(|_| CodecError::Json)?;
                json::to_term(&v)
            }
            BusPayload::Binary(b) => Tuple::from(vec![
                Atom::from("binary").into(),
                Binary::from(b.as_slice()).into(),
            ])
            .into(),
        };
        let text = |s: &str| Term::from(Binary::from(s.as_bytes()));
        let broadcast = Map::from([
            (
                Atom::from("__struct__").into(),
                Atom::from(BROADCAST_STRUCT).into(),
            ),
            (Atom::from("topic").into(), text(&e.topic)),
            (Atom::from("event").into(), text(&e.event)),
            (Atom::from("payload").into(), payload),
        ]);
        let tuple = Term::from(Tuple::from(vec![
            FixInteger::from(i32::from(MSG_VERSION)).into(),
            Atom::from("except").into(),
            text(&e.origin),
            text(&e.topic),
            broadcast.into(),
            Atom::from(DISPATCHER).into(),
        ]));
        let mut plain = Vec::with_capacity(64 + e.topic.len() * 2);
        tuple
            .encode(&mut plain)
            .map_err(|_| CodecError::TooLong("term"))?;
        if !self.compress {
            out.extend_from_slice(&plain);
            return Ok(());
        }
        let inner = &plain[1..];
        let z = noflate::zlib::compress(inner).map_err(|_| CodecError::TooLong("compress"))?;
        let size = u32::try_from(inner.len()).map_err(|_| CodecError::TooLong("term"))?;
        out.extend_from_slice(&[scan::VERSION, scan::COMPRESSED]);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&z);
        Ok(())
    }

    fn receive(
        &self,
        bytes: &[u8],
        me: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Received, CodecError> {
        let term = scan::unwrap(bytes, &self.limits)?;
        let term = &*term;
        let mut count = Count::default();
        if scan::skip(term, 0, &self.limits, &mut count)? != term.len() {
            return Err(Reject::Malformed("bytes after the term").into());
        }
        // The term is well formed and within the limits from here on.
        let [scan::SMALL_TUPLE, 6, scan::SMALL_INTEGER, version, ..] = *term else {
            return Ok(Received::Ignored(Ignored::Version));
        };
        if version != MSG_VERSION {
            return Ok(Received::Ignored(Ignored::Version));
        }
        let mut spans = [const { Span { start: 0, end: 0 } }; 4];
        let mut pos = 4;
        for span in &mut spans {
            let end = scan::skip(term, pos, &self.limits, &mut Count::default())?;
            *span = Span { start: pos, end };
            pos = end;
        }
        let [mode, node, topic, message] = &spans;
        let node = &term[node.start..node.end];
        let is_me = binary_bytes(node) == Some(me.as_bytes());
        match atom_text(&term[mode.start..]) {
            Some(b"except") if is_me => return Ok(Received::Ignored(Ignored::Echo)),
            Some(b"except") => {}
            Some(b"only") if is_me => {}
            Some(b"only") => return Ok(Received::Ignored(Ignored::OtherNode)),
            _ => return Ok(Received::Ignored(Ignored::Version)),
        }
        let Some(topic) = binary_bytes(&term[topic.start..]) else {
            return Ok(Received::Ignored(Ignored::NotABroadcast));
        };
        let topic = json::utf8(topic)?;
        if !wanted(topic) {
            return Ok(Received::Ignored(Ignored::NoMembers));
        }
        if term[message.start] != scan::MAP {
            return Ok(Received::Ignored(Ignored::NotABroadcast));
        }
        let mut message = std::borrow::Cow::Borrowed(&term[message.start..message.end]);
        if count.latin1_high {
            message = scan::latin1_atoms_to_utf8(&message, &self.limits)?.into();
        }
        let reader = std::io::Read::chain(&[scan::VERSION][..], &*message);
        let m = match Term::decode(reader) {
            Ok(Term::Map(m)) => m,
            other => {
                tracing::debug!(?other, "bus: undecodable message");
                return Err(Reject::Malformed("undecodable message").into());
            }
        };
        let field = |name: &str| {
            m.map
                .iter()
                .find(|(k, _)| json::atom_is(k, name))
                .map(|(_, v)| v)
        };
        if !field("__struct__").is_some_and(|s| json::atom_is(s, BROADCAST_STRUCT)) {
            return Ok(Received::Ignored(Ignored::NotABroadcast));
        }
        fn text(t: Option<&Term>) -> Result<&str, Unsupported> {
            match t {
                Some(Term::Binary(b)) => json::utf8(&b.bytes).map_err(|_| Unsupported::Header),
                _ => Err(Unsupported::Header),
            }
        }
        let event = text(field("event"))?;
        if text(field("topic"))? != topic {
            return Err(Unsupported::Header.into());
        }
        let payload = match field("payload") {
            Some(Term::Map(p)) => {
                let mut out = String::with_capacity(term.len());
                json::object(p, &mut out)?;
                BusPayload::Json(RawValue::from_string(out).map_err(|_| CodecError::Json)?)
            }
            Some(Term::Tuple(t)) => match t.elements.as_slice() {
                [tag, Term::Binary(data)] if json::atom_is(tag, "binary") => {
                    BusPayload::Binary(data.bytes.clone())
                }
                _ => return Err(Unsupported::PayloadNotAMap.into()),
            },
            _ => return Err(Unsupported::PayloadNotAMap.into()),
        };
        let origin = binary_bytes(node)
            .or_else(|| atom_text(node))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        Ok(Received::Broadcast(Envelope {
            origin: origin.into(),
            seq: 0,
            topic: topic.into(),
            event: event.into(),
            payload,
        }))
    }
}

#[cfg(test)]
mod tests;
