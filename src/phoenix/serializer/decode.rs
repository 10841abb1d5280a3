//! Client frame → [`Message`], in one pass over the JSON and without copying anything the
//! client did not escape. Owns the acceptance rules: which JSON shapes are messages, which
//! keys and elements are required, what a ref may be.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::super::Vsn;
use super::{DecodeError, FrameKind, Message, Payload};

/// Decodes one complete WebSocket message.
///
/// V1 decodes *every* frame as JSON text, whatever its opcode, as Phoenix's V1 serializer
/// does: Tsung's `<websocket type="message">` sends text as binary frames unless told
/// `frame="text"`, and the seed's load scenario is V1. V2 decodes text frames as JSON arrays
/// and binary frames as binary client pushes (kind 0).
pub fn decode(vsn: Vsn, kind: FrameKind, data: &[u8]) -> Result<Message<'_>, DecodeError> {
    match (vsn, kind) {
        (Vsn::V2, FrameKind::Binary) => decode_binary(data),
        _ => {
            let text = std::str::from_utf8(data).map_err(|_| DecodeError::InvalidUtf8)?;
            decode_text(vsn, text)
        }
    }
}

/// Decodes a JSON text message: a V1 object or a V2 array (see the module docs of
/// `serializer` for the shapes and the rules on refs).
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Message<'_>, DecodeError> {
    // Sniff the first byte so a well-formed JSON value of the wrong shape gets a precise
    // error rather than serde's generic type error.
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .bytes()
        .next();
    let mut de = serde_json::Deserializer::from_str(text);
    let decoded = match vsn {
        Vsn::V1 => {
            if first != Some(b'{') {
                return Err(DecodeError::NotAnObject);
            }
            de.deserialize_map(V1Visitor)
        }
        Vsn::V2 => {
            if first != Some(b'[') {
                return Err(DecodeError::NotAnArray);
            }
            de.deserialize_seq(V2Visitor)
        }
    };
    let message = decoded.map_err(|_| DecodeError::InvalidJson)?;
    de.end().map_err(|_| DecodeError::InvalidJson)?;
    message
}

/// Decodes a V2 binary client push:
/// `0, jr_len, ref_len, topic_len, event_len, join_ref, ref, topic, event, data`.
/// A zero-length `join_ref` or `ref` is the empty string, not null: the binary format has no null,
/// and Phoenix (`Phoenix.Socket.V2.JSONSerializer.decode_binary/1`) keeps `""`, which matches
/// only a join made with `""`. The data may be empty.
pub fn decode_binary(data: &[u8]) -> Result<Message<'_>, DecodeError> {
    let (&kind, rest) = data.split_first().ok_or(DecodeError::EmptyBinary)?;
    if kind != 0 {
        return Err(DecodeError::UnknownBinaryKind(kind));
    }
    let Some((lens, mut rest)) = rest.split_first_chunk::<4>() else {
        return Err(DecodeError::Truncated);
    };
    let [jr_len, ref_len, topic_len, event_len] = lens.map(usize::from);
    let join_ref = take_str(&mut rest, jr_len, "join_ref")?;
    let msg_ref = take_str(&mut rest, ref_len, "ref")?;
    let topic = take_str(&mut rest, topic_len, "topic")?;
    let event = take_str(&mut rest, event_len, "event")?;
    Ok(Message {
        join_ref: Some(Cow::Borrowed(join_ref)),
        msg_ref: Some(Cow::Borrowed(msg_ref)),
        topic: Cow::Borrowed(topic),
        event: Cow::Borrowed(event),
        payload: Payload::Binary(rest),
    })
}

fn take_str<'a>(
    rest: &mut &'a [u8],
    len: usize,
    field: &'static str,
) -> Result<&'a str, DecodeError> {
    if rest.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(bytes).map_err(|_| DecodeError::FieldNotUtf8(field))
}

/// A JSON value in a slot that must be a string (or, for refs, a string or null). Anything
/// else is consumed and remembered only as `Other`, so the visitor can report a precise
/// error after the whole frame has been read.
enum Scalar<'a> {
    Null,
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

fn string_field<'a>(value: Scalar<'a>, field: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    match value {
        Scalar::Str(s) => Ok(s),
        Scalar::Null | Scalar::Other => Err(DecodeError::NotAString(field)),
    }
}

fn ref_field<'a>(
    value: Scalar<'a>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match value {
        Scalar::Str(s) => Ok(Some(s)),
        Scalar::Null => Ok(None),
        Scalar::Other => Err(DecodeError::InvalidRef(field)),
    }
}

/// V2: `[join_ref, ref, topic, event, payload, ...ignored]`. Protocol errors are returned
/// as the visitor's *value* so that serde errors mean exactly "not JSON".
struct V2Visitor;

impl<'de> Visitor<'de> for V2Visitor {
    type Value = Result<Message<'de>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let join_ref = seq.next_element::<Scalar<'de>>()?;
        let msg_ref = match join_ref {
            Some(_) => seq.next_element::<Scalar<'de>>()?,
            None => None,
        };
        let topic = match msg_ref {
            Some(_) => seq.next_element::<Scalar<'de>>()?,
            None => None,
        };
        let event = match topic {
            Some(_) => seq.next_element::<Scalar<'de>>()?,
            None => None,
        };
        let payload = match event {
            Some(_) => seq.next_element::<&'de RawValue>()?,
            None => None,
        };
        // Phoenix matches `[join_ref, ref, topic, event, payload | _]`: the rest is ignored,
        // but it must still be valid JSON, which skipping the rest checks.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        let (Some(join_ref), Some(msg_ref), Some(topic), Some(event), Some(payload)) =
            (join_ref, msg_ref, topic, event, payload)
        else {
            return Ok(Err(DecodeError::TooFewElements));
        };
        Ok(build(join_ref, msg_ref, topic, event, payload))
    }
}

/// V1: an object with `topic`, `event`, `payload` and `ref` (Phoenix's `Message.from_map!`),
/// an optional `join_ref`, other keys ignored; a repeated key keeps its last value, as
/// Jason's map decoding does.
struct V1Visitor;

impl<'de> Visitor<'de> for V1Visitor {
    type Value = Result<Message<'de>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut topic = None;
        let mut event = None;
        let mut payload = None;
        let mut msg_ref = None;
        let mut join_ref = None;
        while let Some(key) = map.next_key::<Scalar<'de>>()? {
            // JSON object keys are always strings; `Other` cannot occur but is harmless.
            let key = match &key {
                Scalar::Str(k) => k.as_ref(),
                Scalar::Null | Scalar::Other => "",
            };
            match key {
                "topic" => topic = Some(map.next_value::<Scalar<'de>>()?),
                "event" => event = Some(map.next_value::<Scalar<'de>>()?),
                "payload" => payload = Some(map.next_value::<&'de RawValue>()?),
                "ref" => msg_ref = Some(map.next_value::<Scalar<'de>>()?),
                "join_ref" => join_ref = Some(map.next_value::<Scalar<'de>>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // The order of the checks is Phoenix's `Map.fetch!` order.
        let Some(topic) = topic else {
            return Ok(Err(DecodeError::MissingKey("topic")));
        };
        let Some(event) = event else {
            return Ok(Err(DecodeError::MissingKey("event")));
        };
        let Some(payload) = payload else {
            return Ok(Err(DecodeError::MissingKey("payload")));
        };
        let Some(msg_ref) = msg_ref else {
            return Ok(Err(DecodeError::MissingKey("ref")));
        };
        Ok(build(
            join_ref.unwrap_or(Scalar::Null),
            msg_ref,
            topic,
            event,
            payload,
        ))
    }
}

fn build<'a>(
    join_ref: Scalar<'a>,
    msg_ref: Scalar<'a>,
    topic: Scalar<'a>,
    event: Scalar<'a>,
    payload: &'a RawValue,
) -> Result<Message<'a>, DecodeError> {
    Ok(Message {
        join_ref: ref_field(join_ref, "join_ref")?,
        msg_ref: ref_field(msg_ref, "ref")?,
        topic: string_field(topic, "topic")?,
        event: string_field(event, "event")?,
        payload: Payload::Json(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(text: &str) -> Result<Message<'_>, DecodeError> {
        decode_text(Vsn::V2, text)
    }

    fn v1(text: &str) -> Result<Message<'_>, DecodeError> {
        decode_text(Vsn::V1, text)
    }

    fn json(p: &Payload<'_>) -> String {
        match p {
            Payload::Json(raw) => raw.get().to_owned(),
            Payload::Binary(b) => panic!("binary payload {b:?}"),
        }
    }

    #[test]
    fn v2_join_from_protocol_md() {
        let m = v2(r#"["6","6","rooms:lobby","phx_join",{"nick":"alice"}]"#).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("6"));
        assert_eq!(m.msg_ref.as_deref(), Some("6"));
        assert_eq!(m.topic, "rooms:lobby");
        assert_eq!(m.event, "phx_join");
        assert_eq!(json(&m.payload), r#"{"nick":"alice"}"#);
    }

    #[test]
    fn v2_heartbeat_has_null_join_ref() {
        let m = v2(r#"[null,"8","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(m.join_ref, None);
        assert_eq!(m.msg_ref.as_deref(), Some("8"));
        assert_eq!(m.topic, "phoenix");
        assert_eq!(m.event, "heartbeat");
        assert_eq!(json(&m.payload), "{}");
    }

    #[test]
    fn v2_ignores_extra_elements_and_keeps_payload_verbatim() {
        let m = v2(" [ null , null , \"t\" , \"e\" , { \"a\" : [1, 2] } , 5, {\"x\":[]}, null ] ")
            .unwrap();
        assert_eq!(m.msg_ref, None);
        assert_eq!(json(&m.payload), "{ \"a\" : [1, 2] }");
    }

    #[test]
    fn v2_accepts_any_json_payload() {
        for payload in ["1", "\"s\"", "null", "[1,{}]", "true", "-1.5e3"] {
            let text = format!(r#"["1","1","t","e",{payload}]"#);
            assert_eq!(json(&v2(&text).unwrap().payload), payload);
        }
    }

    #[test]
    fn v2_shape_errors() {
        assert_eq!(v2(r#"{"topic":"t"}"#), Err(DecodeError::NotAnArray));
        assert_eq!(v2(r#""x""#), Err(DecodeError::NotAnArray));
        assert_eq!(v2(""), Err(DecodeError::NotAnArray));
        assert_eq!(v2("   "), Err(DecodeError::NotAnArray));
        assert_eq!(v2("[]"), Err(DecodeError::TooFewElements));
        assert_eq!(v2(r#"["1","1","t","e"]"#), Err(DecodeError::TooFewElements));
        assert_eq!(v2(r#"["1","1","t","e",{}"#), Err(DecodeError::InvalidJson));
        assert_eq!(
            v2(r#"["1","1","t","e",{}] x"#),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(
            v2(r#"["1","1","t","e",{}]]"#),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(
            v2(r#"["1","1","t","e",{},]"#),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(
            v2(r#"["1","1","t","e",{}, nul]"#),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(
            v2("[\"\\ud800\",\"1\",\"t\",\"e\",{}]"),
            Err(DecodeError::InvalidJson)
        );
    }

    #[test]
    fn v2_field_type_errors() {
        assert_eq!(
            v2(r#"[1,"1","t","e",{}]"#),
            Err(DecodeError::InvalidRef("join_ref"))
        );
        assert_eq!(
            v2(r#"["1",1,"t","e",{}]"#),
            Err(DecodeError::InvalidRef("ref"))
        );
        assert_eq!(
            v2(r#"["1",[],"t","e",{}]"#),
            Err(DecodeError::InvalidRef("ref"))
        );
        assert_eq!(
            v2(r#"["1","1",null,"e",{}]"#),
            Err(DecodeError::NotAString("topic"))
        );
        assert_eq!(
            v2(r#"["1","1",{"a":1},"e",{}]"#),
            Err(DecodeError::NotAString("topic"))
        );
        assert_eq!(
            v2(r#"["1","1","t",false,{}]"#),
            Err(DecodeError::NotAString("event"))
        );
    }

    #[test]
    fn v1_tsung_join() {
        let m =
            v1(r#"{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"u1"},"ref":"1"}"#)
                .unwrap();
        assert_eq!(m.join_ref, None);
        assert_eq!(m.msg_ref.as_deref(), Some("1"));
        assert_eq!(m.topic, "rooms:lobby");
        assert_eq!(m.event, "phx_join");
        assert_eq!(json(&m.payload), r#"{"user":"u1"}"#);
    }

    #[test]
    fn v1_accepts_any_key_order_join_ref_null_ref_and_unknown_keys() {
        let m =
            v1(r#"{"ref":null,"x":{"y":[1]},"payload":[],"join_ref":"3","event":"e","topic":"t"}"#)
                .unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("3"));
        assert_eq!(m.msg_ref, None);
        assert_eq!(json(&m.payload), "[]");
    }

    #[test]
    fn v1_repeated_key_keeps_the_last_value() {
        let m = v1(r#"{"topic":"a","topic":"b","event":"e","payload":{},"ref":"1"}"#).unwrap();
        assert_eq!(m.topic, "b");
    }

    #[test]
    fn v1_escaped_key_is_the_key() {
        let m = v1(r#"{"top\u0069c":"t","event":"e","payload":{},"ref":"1"}"#).unwrap();
        assert_eq!(m.topic, "t");
    }

    #[test]
    fn v1_errors() {
        assert_eq!(v1(r#"["1","1","t","e",{}]"#), Err(DecodeError::NotAnObject));
        assert_eq!(v1("null"), Err(DecodeError::NotAnObject));
        assert_eq!(
            v1(r#"{"event":"e","payload":{},"ref":"1"}"#),
            Err(DecodeError::MissingKey("topic"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","payload":{},"ref":"1"}"#),
            Err(DecodeError::MissingKey("event"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","ref":"1"}"#),
            Err(DecodeError::MissingKey("payload"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","payload":{}}"#),
            Err(DecodeError::MissingKey("ref"))
        );
        assert_eq!(v1(r#"{}"#), Err(DecodeError::MissingKey("topic")));
        assert_eq!(
            v1(r#"{"topic":1,"event":"e","payload":{},"ref":"1"}"#),
            Err(DecodeError::NotAString("topic"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","payload":{},"ref":2}"#),
            Err(DecodeError::InvalidRef("ref"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":true}"#),
            Err(DecodeError::InvalidRef("join_ref"))
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","payload":{},"ref":"1""#),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(
            v1(r#"{"topic":"t","event":"e","payload":,"ref":"1"}"#),
            Err(DecodeError::InvalidJson)
        );
    }

    #[test]
    fn dispatch_by_version_and_opcode() {
        let v1_text = br#"{"topic":"t","event":"e","payload":{},"ref":"1"}"#;
        // V1 reads binary frames as JSON text (Tsung sends binary frames by default).
        assert_eq!(
            decode(Vsn::V1, FrameKind::Binary, v1_text).unwrap().topic,
            "t"
        );
        assert_eq!(
            decode(Vsn::V1, FrameKind::Text, v1_text).unwrap().topic,
            "t"
        );
        assert_eq!(
            decode(Vsn::V1, FrameKind::Binary, b"\xff{}"),
            Err(DecodeError::InvalidUtf8)
        );
        let v2_text = br#"["1","1","t","e",{}]"#;
        assert_eq!(
            decode(Vsn::V2, FrameKind::Text, v2_text).unwrap().topic,
            "t"
        );
        // V2 binary frames are binary pushes, never JSON.
        assert_eq!(
            decode(Vsn::V2, FrameKind::Binary, v2_text),
            Err(DecodeError::UnknownBinaryKind(b'['))
        );
        assert_eq!(
            decode(Vsn::V2, FrameKind::Text, b"[\xc3"),
            Err(DecodeError::InvalidUtf8)
        );
    }

    fn binary(jr: &[u8], r: &[u8], topic: &[u8], event: &[u8], data: &[u8]) -> Vec<u8> {
        let mut f = vec![
            0,
            jr.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
        ];
        for part in [jr, r, topic, event, data] {
            f.extend_from_slice(part);
        }
        f
    }

    #[test]
    fn binary_client_push_decodes_every_field_borrowed() {
        let frame = binary(b"12", b"345", b"rooms:lobby", b"new_msg", &[0, 1, 2, 255]);
        let m = decode_binary(&frame).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("12"));
        assert_eq!(m.msg_ref.as_deref(), Some("345"));
        assert_eq!(m.topic, "rooms:lobby");
        assert_eq!(m.event, "new_msg");
        assert_eq!(m.payload, Payload::Binary(&[0, 1, 2, 255]));
        assert!(matches!(m.topic, Cow::Borrowed(_)));
    }

    #[test]
    fn binary_fields_of_length_zero() {
        let frame = binary(b"", b"", b"", b"", b"");
        let m = decode_binary(&frame).unwrap();
        // Empty refs stay "" (Phoenix keeps them; they are not null).
        assert_eq!(m.join_ref.as_deref(), Some(""));
        assert_eq!(m.msg_ref.as_deref(), Some(""));
        assert_eq!(m.topic, "");
        assert_eq!(m.event, "");
        assert_eq!(m.payload, Payload::Binary(b""));
    }

    #[test]
    fn binary_fields_of_length_255() {
        let long = "x".repeat(255);
        let b = long.as_bytes();
        let frame = binary(b, b, b, b, b"data");
        assert_eq!(frame.len(), 5 + 4 * 255 + 4);
        let m = decode_binary(&frame).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some(long.as_str()));
        assert_eq!(m.msg_ref.as_deref(), Some(long.as_str()));
        assert_eq!(m.topic, long);
        assert_eq!(m.event, long);
        assert_eq!(m.payload, Payload::Binary(b"data"));
    }

    #[test]
    fn binary_errors() {
        assert_eq!(decode_binary(b""), Err(DecodeError::EmptyBinary));
        assert_eq!(
            decode_binary(&[1, 0, 0, 0, 0]),
            Err(DecodeError::UnknownBinaryKind(1))
        );
        assert_eq!(
            decode_binary(&[2, 0, 0]),
            Err(DecodeError::UnknownBinaryKind(2))
        );
        assert_eq!(decode_binary(&[0]), Err(DecodeError::Truncated));
        assert_eq!(decode_binary(&[0, 0, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(decode_binary(&[0, 1, 0, 0, 0]), Err(DecodeError::Truncated));
        // Declares a 5-byte event but only 4 bytes follow.
        assert_eq!(
            decode_binary(&[0, 0, 0, 0, 5, b'a', b'b', b'c', b'd']),
            Err(DecodeError::Truncated)
        );
        let mut bad = binary(b"1", b"2", b"t", b"e", b"");
        bad[5] = 0xff;
        assert_eq!(
            decode_binary(&bad),
            Err(DecodeError::FieldNotUtf8("join_ref"))
        );
        let bad = binary(b"1", b"\xc3", b"t", b"e", b"");
        assert_eq!(decode_binary(&bad), Err(DecodeError::FieldNotUtf8("ref")));
        let bad = binary(b"1", b"2", b"\xe2\x82", b"e", b"");
        assert_eq!(decode_binary(&bad), Err(DecodeError::FieldNotUtf8("topic")));
        let bad = binary(b"1", b"2", b"t", b"\x80", b"\xff");
        assert_eq!(decode_binary(&bad), Err(DecodeError::FieldNotUtf8("event")));
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        let open = "[".repeat(100_000);
        let close = "]".repeat(100_000);
        // A raw payload is validated iteratively (no recursion): deep but well-formed JSON is
        // a valid payload and is forwarded verbatim; the frame size limit bounds it.
        let deep = format!("[null,null,\"t\",\"e\",{open}{close}]");
        assert!(matches!(v2(&deep).unwrap().payload, Payload::Json(_)));
        // Where a ref belongs, a deep value is skipped the same iterative way, then refused.
        let deep_ref = format!("[{open}{close},null,\"t\",\"e\",{{}}]");
        assert_eq!(v2(&deep_ref), Err(DecodeError::InvalidRef("join_ref")));
        let deep_v1 = format!("{{\"x\":{open}{close},\"topic\":\"t\"}}");
        assert_eq!(v1(&deep_v1), Err(DecodeError::MissingKey("event")));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            for vsn in [Vsn::V1, Vsn::V2] {
                for kind in [FrameKind::Text, FrameKind::Binary] {
                    let _ = decode(vsn, kind, &data);
                }
            }
            let _ = decode_binary(&data);
        }

        #[test]
        fn json_like_garbage_never_panics(text in r#"[\[\]{}",:0-9a-z\\ nul]{0,80}"#) {
            let _ = decode_text(Vsn::V1, &text);
            let _ = decode_text(Vsn::V2, &text);
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..4)
        ) {
            let mut v2_frame = br#"["1","2","rooms:lobby","new_msg",{"body":"hi"}]"#.to_vec();
            let mut v1_frame = br#"{"topic":"t","event":"e","payload":{"a":[1]},"ref":"1"}"#.to_vec();
            let mut bin = binary(b"1", b"2", b"rooms:x", b"ev", b"data");
            for (at, byte) in flips {
                for f in [&mut v2_frame, &mut v1_frame, &mut bin] {
                    let i = at % f.len();
                    f[i] = byte;
                }
            }
            let _ = decode(Vsn::V2, FrameKind::Text, &v2_frame);
            let _ = decode(Vsn::V1, FrameKind::Text, &v1_frame);
            let _ = decode(Vsn::V2, FrameKind::Binary, &bin);
        }

        #[test]
        fn binary_decodes_any_well_formed_push(
            jr in "[a-z0-9]{0,20}", r in "[a-z0-9]{0,20}",
            topic in "\\PC{0,30}", event in "\\PC{0,30}",
            data in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            prop_assume!(topic.len() <= 255 && event.len() <= 255);
            let frame = binary(jr.as_bytes(), r.as_bytes(), topic.as_bytes(), event.as_bytes(), &data);
            let m = decode_binary(&frame).unwrap();
            prop_assert_eq!(m.join_ref.as_deref(), Some(jr.as_str()));
            prop_assert_eq!(m.msg_ref.as_deref(), Some(r.as_str()));
            prop_assert_eq!(m.topic.as_ref(), topic.as_str());
            prop_assert_eq!(m.event.as_ref(), event.as_str());
            prop_assert_eq!(m.payload, Payload::Binary(&data));
        }
    }
}
