//! The Phoenix wire formats: decoding client frames into a borrowed [`Message`], encoding
//! the frames a Phoenix server sends. Owns byte-exactness with Phoenix (`V1.JSONSerializer`,
//! `V2.JSONSerializer` and Jason's string escaping) so the official clients see exactly what
//! a Phoenix server would send them.
//!
//! Payloads are never parsed into values: a JSON payload stays the raw text the client sent
//! ([`serde_json::value::RawValue`]) and is copied verbatim into replies and broadcasts; a
//! binary payload stays a byte slice. The gateway routes, it does not interpret.
//!
//! # Formats (see `docs/protocol.md`)
//! - V1 text: `{"topic":t,"event":e,"payload":p,"ref":r}`; a `join_ref` key from the client
//!   is accepted, the server never writes one.
//! - V2 text: `[join_ref, ref, topic, event, payload]`, extra trailing elements ignored.
//! - V2 binary (one-byte lengths, each field ≤ 255 bytes): client push kind 0 is decoded;
//!   server push kind 0, reply kind 1 and broadcast kind 2 are encoded.
//!
//! # Refs
//! `join_ref` and `ref` must be JSON strings or `null`. Phoenix itself accepts any JSON term
//! there and echoes it back as the same term (a number stays a number), but a gateway that
//! stored a number as text would echo `"5"` for `5`, and a client comparing with `===` would
//! silently drop every reply. Refusing the frame (the caller closes the connection) makes
//! such a client fail loudly instead; every official client sends strings.
//!
//! In V2 binary frames a zero-length `join_ref` or `ref` decodes as absent (`None`), the same
//! spelling the encoders use for an absent ref (Phoenix writes `nil` as an empty field).

mod decode;
mod encode;

use std::borrow::Cow;

use serde_json::value::RawValue;

pub use self::decode::{decode, decode_binary, decode_text};
pub use self::encode::reply_frame;
pub use self::encode::{
    encode_broadcast, encode_broadcast_into, encode_message, encode_push, encode_reply,
    encode_reply_binary, BINARY_FIELD_MAX_BYTES,
};
pub use self::encode::{message_frame, reason_json};

/// A message payload, kept raw.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// Any JSON value, exactly as the client wrote it (Phoenix clients send objects).
    Json(&'a RawValue),
    /// The data part of a V2 binary frame.
    Binary(&'a [u8]),
}

impl Payload<'_> {
    /// True for a binary payload, which only V2 connections can receive.
    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }
}

/// JSON payloads compare by their raw text: the gateway never normalises them, so two
/// payloads are the same exactly when the bytes that would be forwarded are.
impl PartialEq for Payload<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Payload::Json(a), Payload::Json(b)) => a.get() == b.get(),
            (Payload::Binary(a), Payload::Binary(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Payload<'_> {}

/// One decoded client message, borrowing from the frame it came from. Strings are
/// borrowed unless the JSON text had escapes to undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The channel instance the client means (V2); `None` when `null`, absent (V1) or empty
    /// (V2 binary).
    pub join_ref: Option<Cow<'a, str>>,
    /// The client's id for this message, echoed in the reply; `None` when `null`.
    pub msg_ref: Option<Cow<'a, str>>,
    pub topic: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub payload: Payload<'a>,
}

/// Which WebSocket message type a frame payload goes out as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Opcode 0x1; the payload is UTF-8 JSON.
    Text,
    /// Opcode 0x2; a V2 binary frame.
    Binary,
}

/// Why a client frame is not a Phoenix message. Phoenix crashes the connection on any of
/// these; the caller closes it with [`DecodeError::close_code`] and the `Display` text as the
/// close reason (every text is ASCII and far below the 123-byte close-reason limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A text frame (or, for V1, any frame) whose bytes are not UTF-8.
    #[error("frame is not UTF-8")]
    InvalidUtf8,
    /// Not well-formed JSON, or trailing bytes after the JSON value.
    #[error("invalid JSON")]
    InvalidJson,
    /// V2 text frames are JSON arrays.
    #[error("expected a JSON array")]
    NotAnArray,
    /// V1 frames are JSON objects.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A V2 array with fewer than the five elements `[join_ref, ref, topic, event, payload]`.
    #[error("expected 5 array elements")]
    TooFewElements,
    /// A V1 object without one of `topic`, `event`, `payload`, `ref` (`ref` may be `null`).
    #[error("missing key {0}")]
    MissingKey(&'static str),
    /// `topic` or `event` is not a JSON string.
    #[error("{0} must be a string")]
    NotAString(&'static str),
    /// `join_ref` or `ref` is neither a string nor `null` (see the module docs on refs).
    #[error("{0} must be a string or null")]
    InvalidRef(&'static str),
    /// A zero-length binary frame.
    #[error("empty binary frame")]
    EmptyBinary,
    /// A binary frame whose first byte is not 0 (client push); kinds 1 and 2 are
    /// server-to-client only.
    #[error("unknown binary kind {0}")]
    UnknownBinaryKind(u8),
    /// A binary frame shorter than its header or than the field lengths it declares.
    #[error("binary frame truncated")]
    Truncated,
    /// A binary frame's `join_ref`, `ref`, `topic` or `event` is not UTF-8.
    #[error("binary {0} is not UTF-8")]
    FieldNotUtf8(&'static str),
}

impl DecodeError {
    /// The WebSocket close code to send: 1007 (invalid frame payload data) when the bytes
    /// are not UTF-8 where text is required, 1008 (policy violation) for every other
    /// message that is not Phoenix protocol.
    pub fn close_code(&self) -> u16 {
        match self {
            DecodeError::InvalidUtf8 | DecodeError::FieldNotUtf8(_) => 1007,
            _ => 1008,
        }
    }
}

/// Why a frame cannot be encoded. The caller skips that one frame for that one connection
/// and counts it in metrics; nothing else is affected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field of a V2 binary frame is longer than its one-byte length can say. Phoenix
    /// raises `ArgumentError` here; the gateway drops the frame instead.
    #[error("binary {field} is {len} bytes, the limit is 255")]
    FieldTooLong { field: &'static str, len: usize },
    /// V1 has no binary frames: Phoenix's V1 serializer cannot send binary payloads at all.
    #[error("V1 cannot carry a binary payload")]
    BinaryNeedsV2,
}

#[cfg(test)]
mod tests {
    use super::super::Vsn;
    use super::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn decode_error_texts_fit_a_close_frame() {
        let all = [
            DecodeError::InvalidUtf8,
            DecodeError::InvalidJson,
            DecodeError::NotAnArray,
            DecodeError::NotAnObject,
            DecodeError::TooFewElements,
            DecodeError::MissingKey("payload"),
            DecodeError::NotAString("topic"),
            DecodeError::InvalidRef("join_ref"),
            DecodeError::EmptyBinary,
            DecodeError::UnknownBinaryKind(255),
            DecodeError::Truncated,
            DecodeError::FieldNotUtf8("join_ref"),
        ];
        for e in all {
            let text = e.to_string();
            assert!(text.len() <= 123 && text.is_ascii(), "{text}");
        }
        assert_eq!(
            DecodeError::MissingKey("ref").to_string(),
            "missing key ref"
        );
        assert_eq!(
            DecodeError::InvalidRef("ref").to_string(),
            "ref must be a string or null"
        );
        assert_eq!(
            DecodeError::UnknownBinaryKind(2).to_string(),
            "unknown binary kind 2"
        );
        assert_eq!(DecodeError::InvalidUtf8.close_code(), 1007);
        assert_eq!(DecodeError::FieldNotUtf8("topic").close_code(), 1007);
        assert_eq!(DecodeError::InvalidJson.close_code(), 1008);
        assert_eq!(DecodeError::Truncated.close_code(), 1008);
    }

    #[test]
    fn payloads_compare_by_raw_text() {
        assert_eq!(
            Payload::Json(raw("{\"a\":1}")),
            Payload::Json(raw("{\"a\":1}"))
        );
        assert_ne!(
            Payload::Json(raw("{\"a\":1}")),
            Payload::Json(raw("{\"a\": 1}"))
        );
        assert_ne!(Payload::Json(raw("{}")), Payload::Binary(b"{}"));
        assert_eq!(Payload::Binary(b"x"), Payload::Binary(b"x"));
        assert!(Payload::Binary(b"").is_binary());
        assert!(!Payload::Json(raw("1")).is_binary());
    }

    /// Encode a push the way the server would, decode it as if a client had sent the same
    /// fields, and get the same message back: the two directions agree on field order.
    #[test]
    fn v1_and_v2_text_round_trip() {
        let payload = raw(r#"{"body":"hi \"there\"","n":[1,2]}"#);
        for vsn in [Vsn::V1, Vsn::V2] {
            let frame =
                encode_message(vsn, Some("6"), Some("7"), "rooms:lobby", "new_msg", payload);
            let text = std::str::from_utf8(&frame).unwrap();
            let msg = decode_text(vsn, text).unwrap();
            let want_join_ref = match vsn {
                // V1 never writes a join_ref.
                Vsn::V1 => None,
                Vsn::V2 => Some(Cow::Borrowed("6")),
            };
            assert_eq!(msg.join_ref, want_join_ref);
            assert_eq!(msg.msg_ref.as_deref(), Some("7"));
            assert_eq!(msg.topic, "rooms:lobby");
            assert_eq!(msg.event, "new_msg");
            assert_eq!(msg.payload, Payload::Json(payload));
        }
    }

    #[test]
    fn escaped_strings_round_trip_through_both_text_formats() {
        let topic = "rooms:\"q\"\\\u{1}\u{1f}\n\té/ü\u{2028}";
        for vsn in [Vsn::V1, Vsn::V2] {
            let frame = encode_message(vsn, None, Some("r\"1"), topic, "ev\u{0}", raw("{}"));
            let text = std::str::from_utf8(&frame).unwrap();
            let msg = decode_text(vsn, text).unwrap();
            assert_eq!(msg.topic, topic);
            assert_eq!(msg.event, "ev\u{0}");
            assert_eq!(msg.msg_ref.as_deref(), Some("r\"1"));
            assert!(matches!(msg.topic, Cow::Owned(_)), "unescaping allocates");
        }
    }
}
