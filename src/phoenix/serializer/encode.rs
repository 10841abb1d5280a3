//! Server frames, byte-exact with Phoenix: the field order of `V1.JSONSerializer` and
//! `V2.JSONSerializer`, Jason's string escaping, and the V2 binary layouts. Owns every byte
//! the gateway writes inside a WebSocket payload.
//!
//! Byte-exactness notes (compare `docs/protocol.md`):
//! - V1 objects are written `topic, event, payload, ref` and reply payloads
//!   `status, response`, the orders captured from a Phoenix server in `docs/protocol.md`. Phoenix
//!   builds both from Elixir maps, whose key order depends on the OTP release (OTP 26 and
//!   later order atom keys by creation, older releases alphabetically); clients parse JSON, so
//!   order only matters to byte comparisons.
//! - Strings are escaped like Jason's default (`escape: :json`): `"` and `\`, `\b \t \n \f \r`,
//!   other control bytes as `\u00XX` with *uppercase* hex (serde_json writes lowercase, hence
//!   the formatter below); `/`, non-ASCII and U+2028/U+2029 are written as they are.
//! - Payloads are copied verbatim: Phoenix re-encodes the maps it decoded, the gateway never
//!   decoded them, so a client's spacing and key order survive into broadcasts.

use std::io;

use serde::Serializer as _;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use serde_json::value::RawValue;

use super::super::Vsn;
use super::{EncodeError, FrameKind, Payload};

/// The longest `join_ref`, `ref`, topic, event or status a V2 binary frame can carry: each
/// length is one byte. Longer fields make the encoders return
/// [`EncodeError::FieldTooLong`] (Phoenix raises `ArgumentError`).
pub const BINARY_FIELD_MAX_BYTES: usize = 255;

const KIND_PUSH: u8 = 0;
const KIND_REPLY: u8 = 1;
const KIND_BROADCAST: u8 = 2;

/// A reply: `phx_reply` with payload `{"status":status,"response":response}`, echoing the
/// client's `join_ref` (V2 only) and `ref`. Always a text frame: the binary reply (kind 1)
/// is [`encode_reply_binary`], for binary responses.
pub fn encode_reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    response: &RawValue,
) -> Vec<u8> {
    reply_frame(
        vsn,
        join_ref,
        msg_ref,
        topic,
        status,
        response.get().as_bytes(),
    )
}

/// A V2 binary reply (kind 1):
/// `1, jr_len, ref_len, topic_len, status_len, join_ref, ref, topic, status, data`.
/// An absent ref is written as an empty field, as Phoenix writes `nil`.
pub fn encode_reply_binary(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    data: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let join_ref = join_ref.unwrap_or("");
    let msg_ref = msg_ref.unwrap_or("");
    let header = [
        KIND_REPLY,
        field_len(join_ref, "join_ref")?,
        field_len(msg_ref, "ref")?,
        field_len(topic, "topic")?,
        field_len(status, "status")?,
    ];
    let mut out = Vec::with_capacity(
        header.len() + join_ref.len() + msg_ref.len() + topic.len() + status.len() + data.len(),
    );
    out.extend_from_slice(&header);
    for part in [join_ref, msg_ref, topic, status] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Any text message with both refs given, e.g. `phx_close` and `phx_error`, which carry
/// `ref = join_ref`. V1 drops the `join_ref`.
pub fn encode_message(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &RawValue,
) -> Vec<u8> {
    message_frame(
        vsn,
        join_ref,
        msg_ref,
        topic,
        event,
        payload.get().as_bytes(),
    )
}

/// A push to one channel of one connection: `ref` null, `join_ref` the channel's (V2).
/// A binary payload becomes a V2 binary push (kind 0:
/// `0, jr_len, topic_len, event_len, join_ref, topic, event, data`); V1 cannot carry one.
pub fn encode_push(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: Payload<'_>,
) -> Result<(FrameKind, Vec<u8>), EncodeError> {
    match payload {
        Payload::Json(json) => Ok((
            FrameKind::Text,
            message_frame(vsn, join_ref, None, topic, event, json.get().as_bytes()),
        )),
        Payload::Binary(data) => {
            if vsn == Vsn::V1 {
                return Err(EncodeError::BinaryNeedsV2);
            }
            let join_ref = join_ref.unwrap_or("");
            let header = [
                KIND_PUSH,
                field_len(join_ref, "join_ref")?,
                field_len(topic, "topic")?,
                field_len(event, "event")?,
            ];
            let mut out = Vec::with_capacity(
                header.len() + join_ref.len() + topic.len() + event.len() + data.len(),
            );
            out.extend_from_slice(&header);
            for part in [join_ref, topic, event] {
                out.extend_from_slice(part.as_bytes());
            }
            out.extend_from_slice(data);
            Ok((FrameKind::Binary, out))
        }
    }
}

/// A broadcast: the same bytes for every subscriber of one version, so the worker encodes
/// it once per version and shares the buffer. `join_ref` and `ref` are null. A binary
/// payload becomes a V2 binary broadcast (kind 2:
/// `2, topic_len, event_len, topic, event, data`); for V1 subscribers it is
/// [`EncodeError::BinaryNeedsV2`]: the caller skips those subscribers and counts them
/// (Phoenix's V1 serializer cannot send binary either).
pub fn encode_broadcast(
    vsn: Vsn,
    topic: &str,
    event: &str,
    payload: Payload<'_>,
) -> Result<(FrameKind, Vec<u8>), EncodeError> {
    let mut out = Vec::new();
    let kind = encode_broadcast_into(&mut out, vsn, topic, event, payload)?;
    Ok((kind, out))
}

/// [`encode_broadcast`] appending to `out`, so the caller can reserve room for the
/// WebSocket header in front of the payload and send one contiguous buffer. On error `out`
/// is left as it was.
pub fn encode_broadcast_into(
    out: &mut Vec<u8>,
    vsn: Vsn,
    topic: &str,
    event: &str,
    payload: Payload<'_>,
) -> Result<FrameKind, EncodeError> {
    match payload {
        Payload::Json(json) => {
            write_text(
                out,
                vsn,
                None,
                None,
                topic,
                event,
                Body::Raw(json.get().as_bytes()),
            );
            Ok(FrameKind::Text)
        }
        Payload::Binary(data) => {
            if vsn == Vsn::V1 {
                return Err(EncodeError::BinaryNeedsV2);
            }
            let header = [
                KIND_BROADCAST,
                field_len(topic, "topic")?,
                field_len(event, "event")?,
            ];
            out.reserve(header.len() + topic.len() + event.len() + data.len());
            out.extend_from_slice(&header);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(data);
            Ok(FrameKind::Binary)
        }
    }
}

/// [`encode_reply`] for a response the gateway wrote itself (trusted JSON bytes).
pub fn reply_frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    response_json: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + topic.len() + response_json.len());
    let body = Body::Reply {
        status,
        response_json,
    };
    write_text(&mut out, vsn, join_ref, msg_ref, topic, "phx_reply", body);
    out
}

/// [`encode_message`] for a payload the gateway wrote itself (trusted JSON bytes).
pub fn message_frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_json: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + topic.len() + event.len() + payload_json.len());
    write_text(
        &mut out,
        vsn,
        join_ref,
        msg_ref,
        topic,
        event,
        Body::Raw(payload_json),
    );
    out
}

/// `{"reason":reason}`, the response of every error reply the gateway makes itself.
pub fn reason_json(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + reason.len());
    out.extend_from_slice(b"{\"reason\":");
    write_json_str(&mut out, reason);
    out.push(b'}');
    out
}

fn field_len(field_value: &str, field: &'static str) -> Result<u8, EncodeError> {
    u8::try_from(field_value.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: field_value.len(),
    })
}

enum Body<'a> {
    Raw(&'a [u8]),
    Reply {
        status: &'a str,
        response_json: &'a [u8],
    },
}

fn write_text(
    out: &mut Vec<u8>,
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    body: Body<'_>,
) {
    match vsn {
        Vsn::V1 => {
            out.extend_from_slice(b"{\"topic\":");
            write_json_str(out, topic);
            out.extend_from_slice(b",\"event\":");
            write_json_str(out, event);
            out.extend_from_slice(b",\"payload\":");
            write_body(out, body);
            out.extend_from_slice(b",\"ref\":");
            write_json_opt(out, msg_ref);
            out.push(b'}');
        }
        Vsn::V2 => {
            out.push(b'[');
            write_json_opt(out, join_ref);
            out.push(b',');
            write_json_opt(out, msg_ref);
            out.push(b',');
            write_json_str(out, topic);
            out.push(b',');
            write_json_str(out, event);
            out.push(b',');
            write_body(out, body);
            out.push(b']');
        }
    }
}

fn write_body(out: &mut Vec<u8>, body: Body<'_>) {
    match body {
        Body::Raw(json) => out.extend_from_slice(json),
        Body::Reply {
            status,
            response_json,
        } => {
            out.extend_from_slice(b"{\"status\":");
            write_json_str(out, status);
            out.extend_from_slice(b",\"response\":");
            out.extend_from_slice(response_json);
            out.push(b'}');
        }
    }
}

fn write_json_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, JasonEscapes);
    let written = (&mut ser).serialize_str(s);
    // Cannot fail: writing into a Vec never errors and every str serializes.
    debug_assert!(written.is_ok());
}

/// serde_json's compact output with Jason's `\u00XX` (uppercase hex) for control bytes.
struct JasonEscapes;

impl Formatter for JasonEscapes {
    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        match char_escape {
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let hi = HEX[usize::from(byte >> 4)];
                let lo = HEX[usize::from(byte & 0x0f)];
                writer.write_all(&[b'\\', b'u', b'0', b'0', hi, lo])
            }
            other => CompactFormatter.write_char_escape(writer, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    fn text(frame: &[u8]) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    #[test]
    fn protocol_md_v2_frames_byte_exact() {
        let ok = raw("{}");
        assert_eq!(
            text(&encode_reply(
                Vsn::V2,
                Some("6"),
                Some("6"),
                "rooms:lobby",
                "ok",
                ok
            )),
            r#"["6","6","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#
        );
        assert_eq!(
            text(&encode_reply(Vsn::V2, None, Some("8"), "phoenix", "ok", ok)),
            r#"[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]"#
        );
        let reason = reason_json("unmatched topic");
        assert_eq!(
            text(&reply_frame(
                Vsn::V2,
                None,
                Some("13"),
                "nope:1",
                "error",
                &reason
            )),
            r#"[null,"13","nope:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
        );
        assert_eq!(
            text(&encode_message(
                Vsn::V2,
                Some("20"),
                Some("20"),
                "rooms:lobby",
                "phx_close",
                ok
            )),
            r#"["20","20","rooms:lobby","phx_close",{}]"#
        );
        assert_eq!(
            text(&encode_message(
                Vsn::V2,
                Some("18"),
                Some("18"),
                "rooms:lobby",
                "phx_error",
                raw(r#"{"reason":"channel_crash"}"#)
            )),
            r#"["18","18","rooms:lobby","phx_error",{"reason":"channel_crash"}]"#
        );
        let (kind, push) = encode_push(
            Vsn::V2,
            Some("6"),
            "rooms:lobby",
            "welcome",
            Payload::Json(raw(r#"{"hello":1}"#)),
        )
        .unwrap();
        assert_eq!(kind, FrameKind::Text);
        assert_eq!(
            text(&push),
            r#"["6",null,"rooms:lobby","welcome",{"hello":1}]"#
        );
        let (kind, bcast) = encode_broadcast(
            Vsn::V2,
            "rooms:lobby",
            "new_msg",
            Payload::Json(raw(r#"{"body":"hi"}"#)),
        )
        .unwrap();
        assert_eq!(kind, FrameKind::Text);
        assert_eq!(
            text(&bcast),
            r#"[null,null,"rooms:lobby","new_msg",{"body":"hi"}]"#
        );
    }

    #[test]
    fn protocol_md_v1_frames_byte_exact() {
        assert_eq!(
            text(&encode_reply(
                Vsn::V1,
                Some("1"),
                Some("1"),
                "rooms:lobby",
                "ok",
                raw("{}")
            )),
            r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#
        );
        let (kind, bcast) = encode_broadcast(
            Vsn::V1,
            "rooms:lobby",
            "new_msg",
            Payload::Json(raw(r#"{"body":"hi"}"#)),
        )
        .unwrap();
        assert_eq!(kind, FrameKind::Text);
        assert_eq!(
            text(&bcast),
            r#"{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"},"ref":null}"#
        );
        let (_, push) =
            encode_push(Vsn::V1, Some("3"), "t", "welcome", Payload::Json(raw("{}"))).unwrap();
        assert_eq!(
            text(&push),
            r#"{"topic":"t","event":"welcome","payload":{},"ref":null}"#
        );
        assert_eq!(
            text(&encode_message(
                Vsn::V1,
                Some("3"),
                Some("3"),
                "t",
                "phx_close",
                raw("{}")
            )),
            r#"{"topic":"t","event":"phx_close","payload":{},"ref":"3"}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_jason() {
        let frame = encode_message(
            Vsn::V2,
            Some("a\"b"),
            Some("c\\d"),
            "t/\u{1}\u{1f}\u{7f}é\u{2028}",
            "\u{8}\t\n\u{c}\r\u{b}",
            raw("{}"),
        );
        assert_eq!(
            text(&frame),
            "[\"a\\\"b\",\"c\\\\d\",\"t/\\u0001\\u001F\u{7f}é\u{2028}\",\"\\b\\t\\n\\f\\r\\u000B\",{}]"
        );
        assert_eq!(
            reason_json("bad \"x\"\u{1a}"),
            b"{\"reason\":\"bad \\\"x\\\"\\u001A\"}".to_vec()
        );
    }

    #[test]
    fn payload_bytes_are_forwarded_verbatim() {
        let payload = raw("{ \"b\" : 1 ,\"a\":[ ] }");
        let (_, frame) = encode_broadcast(Vsn::V2, "t", "e", Payload::Json(payload)).unwrap();
        assert_eq!(
            text(&frame),
            "[null,null,\"t\",\"e\",{ \"b\" : 1 ,\"a\":[ ] }]"
        );
    }

    #[test]
    fn binary_push_kind_0() {
        let (kind, frame) = encode_push(
            Vsn::V2,
            Some("12"),
            "rooms:x",
            "ev",
            Payload::Binary(&[9, 0, 255]),
        )
        .unwrap();
        assert_eq!(kind, FrameKind::Binary);
        let mut want = vec![0, 2, 7, 2];
        want.extend_from_slice(b"12rooms:xev");
        want.extend_from_slice(&[9, 0, 255]);
        assert_eq!(frame, want);
        // An absent join_ref and empty data are zero-length fields.
        let (_, frame) = encode_push(Vsn::V2, None, "t", "", Payload::Binary(b"")).unwrap();
        assert_eq!(frame, vec![0, 0, 1, 0, b't']);
    }

    #[test]
    fn binary_reply_kind_1() {
        let frame = encode_reply_binary(Some("1"), Some("22"), "t", "ok", b"\x00\x01").unwrap();
        let mut want = vec![1, 1, 2, 1, 2];
        want.extend_from_slice(b"122tok");
        want.extend_from_slice(b"\x00\x01");
        assert_eq!(frame, want);
        assert_eq!(
            encode_reply_binary(None, None, "", "", b"").unwrap(),
            vec![1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn binary_broadcast_kind_2() {
        let (kind, frame) =
            encode_broadcast(Vsn::V2, "rooms:x", "ev", Payload::Binary(b"data")).unwrap();
        assert_eq!(kind, FrameKind::Binary);
        let mut want = vec![2, 7, 2];
        want.extend_from_slice(b"rooms:xevdata");
        assert_eq!(frame, want);
    }

    #[test]
    fn binary_fields_of_255_bytes_fit() {
        let long = "y".repeat(BINARY_FIELD_MAX_BYTES);
        let (_, push) =
            encode_push(Vsn::V2, Some(&long), &long, &long, Payload::Binary(b"d")).unwrap();
        assert_eq!(&push[..4], &[0, 255, 255, 255]);
        assert_eq!(push.len(), 4 + 3 * 255 + 1);
        let reply = encode_reply_binary(Some(&long), Some(&long), &long, &long, b"").unwrap();
        assert_eq!(&reply[..5], &[1, 255, 255, 255, 255]);
        assert_eq!(reply.len(), 5 + 4 * 255);
        let (_, bcast) = encode_broadcast(Vsn::V2, &long, &long, Payload::Binary(b"")).unwrap();
        assert_eq!(&bcast[..3], &[2, 255, 255]);
        assert_eq!(bcast.len(), 3 + 2 * 255);
    }

    #[test]
    fn binary_fields_over_255_bytes_are_refused() {
        let long = "z".repeat(256);
        let too_long = |field| EncodeError::FieldTooLong { field, len: 256 };
        let bin = Payload::Binary(b"d");
        assert_eq!(
            encode_push(Vsn::V2, Some(&long), "t", "e", bin),
            Err(too_long("join_ref"))
        );
        assert_eq!(
            encode_push(Vsn::V2, None, &long, "e", bin),
            Err(too_long("topic"))
        );
        assert_eq!(
            encode_push(Vsn::V2, None, "t", &long, bin),
            Err(too_long("event"))
        );
        assert_eq!(
            encode_broadcast(Vsn::V2, &long, "e", bin),
            Err(too_long("topic"))
        );
        assert_eq!(
            encode_broadcast(Vsn::V2, "t", &long, bin),
            Err(too_long("event"))
        );
        assert_eq!(
            encode_reply_binary(Some(&long), None, "t", "ok", b""),
            Err(too_long("join_ref"))
        );
        assert_eq!(
            encode_reply_binary(None, Some(&long), "t", "ok", b""),
            Err(too_long("ref"))
        );
        assert_eq!(
            encode_reply_binary(None, None, &long, "ok", b""),
            Err(too_long("topic"))
        );
        assert_eq!(
            encode_reply_binary(None, None, "t", &long, b""),
            Err(too_long("status"))
        );
        assert_eq!(
            too_long("topic").to_string(),
            "binary topic is 256 bytes, the limit is 255"
        );
        // JSON frames have no such limit.
        let (kind, _) = encode_broadcast(Vsn::V2, &long, &long, Payload::Json(raw("{}"))).unwrap();
        assert_eq!(kind, FrameKind::Text);
    }

    #[test]
    fn v1_refuses_binary_payloads() {
        let bin = Payload::Binary(b"d");
        assert_eq!(
            encode_push(Vsn::V1, None, "t", "e", bin),
            Err(EncodeError::BinaryNeedsV2)
        );
        assert_eq!(
            encode_broadcast(Vsn::V1, "t", "e", bin),
            Err(EncodeError::BinaryNeedsV2)
        );
    }

    #[test]
    fn broadcast_into_appends_and_leaves_out_alone_on_error() {
        let mut out = vec![0xAA; 10];
        let kind =
            encode_broadcast_into(&mut out, Vsn::V2, "t", "e", Payload::Json(raw("{}"))).unwrap();
        assert_eq!(kind, FrameKind::Text);
        assert_eq!(&out[..10], &[0xAA; 10]);
        assert_eq!(&out[10..], br#"[null,null,"t","e",{}]"#);
        let before = out.clone();
        let long = "t".repeat(300);
        let err = encode_broadcast_into(&mut out, Vsn::V2, &long, "e", Payload::Binary(b"x"));
        assert_eq!(
            err,
            Err(EncodeError::FieldTooLong {
                field: "topic",
                len: 300
            })
        );
        let err = encode_broadcast_into(&mut out, Vsn::V1, "t", "e", Payload::Binary(b"x"));
        assert_eq!(err, Err(EncodeError::BinaryNeedsV2));
        assert_eq!(out, before);
    }

    proptest! {
        /// Whatever the strings, the frame is JSON and reads back to the same strings.
        #[test]
        fn text_frames_parse_back(
            topic in "\\PC{0,20}|[\\x00-\\x7f]{0,20}",
            event in "[\\x00-\\x7f]{0,20}",
            join_ref in proptest::option::of("[\\x00-\\x7f]{0,8}"),
            msg_ref in proptest::option::of("\\PC{0,8}"),
        ) {
            let v2 = encode_message(Vsn::V2, join_ref.as_deref(), msg_ref.as_deref(), &topic, &event, raw("{\"k\":[1]}"));
            let value: serde_json::Value = serde_json::from_slice(&v2).unwrap();
            prop_assert_eq!(
                value,
                serde_json::json!([join_ref, msg_ref, topic, event, {"k": [1]}])
            );
            let v1 = reply_frame(Vsn::V1, join_ref.as_deref(), msg_ref.as_deref(), &topic, &event, b"{}");
            let value: serde_json::Value = serde_json::from_slice(&v1).unwrap();
            prop_assert_eq!(
                value,
                serde_json::json!({"topic": topic, "event": "phx_reply",
                    "payload": {"status": event, "response": {}}, "ref": msg_ref})
            );
        }
    }
}
