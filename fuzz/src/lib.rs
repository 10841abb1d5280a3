//! Checks shared by the Phoenix fuzz targets: whatever a client frame decodes to must survive
//! every encoder the gateway has (replies, pushes, broadcasts, both versions) and decode back
//! to the same fields, and strings must be escaped exactly as Jason (Phoenix's JSON library)
//! escapes them. Kept here, not in the targets, so the three decoders are held to one standard.

use std::borrow::Cow;

use ringgate::phoenix::serializer::{
    decode, decode_text, encode_broadcast, encode_message, encode_push, encode_reply,
    encode_reply_binary, DecodeError, EncodeError, FrameKind, Message, Payload,
    BINARY_FIELD_MAX_BYTES,
};
use ringgate::phoenix::Vsn;
use serde_json::value::RawValue;

/// Jason's default string escaping, written independently of the gateway's encoder: `"` and
/// `\`, the five short escapes, other control characters as `\u00XX` in uppercase hex,
/// everything else (including `/`, U+2028 and U+2029) as it is.
pub fn jason_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn jason_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), jason_string)
}

/// The exact text frame Phoenix writes for these fields (field orders from `docs/protocol.md`).
pub fn expected_text(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    match vsn {
        Vsn::V1 => format!(
            "{{\"topic\":{},\"event\":{},\"payload\":{},\"ref\":{}}}",
            jason_string(topic),
            jason_string(event),
            payload,
            jason_opt(msg_ref)
        ),
        Vsn::V2 => format!(
            "[{},{},{},{},{}]",
            jason_opt(join_ref),
            jason_opt(msg_ref),
            jason_string(topic),
            jason_string(event),
            payload
        ),
    }
}

fn text(frame: &[u8]) -> &str {
    std::str::from_utf8(frame).expect("an encoded text frame is UTF-8")
}

/// Decodes a frame we encoded; it must be a message again.
fn redecode(vsn: Vsn, frame: &[u8]) -> Message<'_> {
    decode_text(vsn, text(frame)).unwrap_or_else(|e| panic!("re-decoding {:?}: {e}", text(frame)))
}

/// A client message as it would come back from our own encoders.
fn same_fields<'a>(
    join_ref: Option<&'a str>,
    msg_ref: Option<&'a str>,
    topic: &'a str,
    event: &'a str,
    payload: Payload<'a>,
) -> Message<'a> {
    Message {
        join_ref: join_ref.map(Cow::Borrowed),
        msg_ref: msg_ref.map(Cow::Borrowed),
        topic: Cow::Borrowed(topic),
        event: Cow::Borrowed(event),
        payload,
    }
}

/// Every encoder applied to a decoded JSON message, checked byte for byte and by decoding.
pub fn check_json_message(vsn: Vsn, msg: &Message<'_>, json: &RawValue) {
    let jr = msg.join_ref.as_deref();
    let r = msg.msg_ref.as_deref();
    let (topic, event) = (msg.topic.as_ref(), msg.event.as_ref());
    // V1 has no join_ref on the wire.
    let wire_jr = if vsn == Vsn::V1 { None } else { jr };

    let frame = encode_message(vsn, jr, r, topic, event, json);
    assert_eq!(
        text(&frame),
        expected_text(vsn, jr, r, topic, event, json.get())
    );
    assert_eq!(
        redecode(vsn, &frame),
        same_fields(wire_jr, r, topic, event, Payload::Json(json))
    );

    let reply = encode_reply(vsn, jr, r, topic, "ok", json);
    let body = format!("{{\"status\":\"ok\",\"response\":{}}}", json.get());
    assert_eq!(
        text(&reply),
        expected_text(vsn, jr, r, topic, "phx_reply", &body)
    );
    let back = redecode(vsn, &reply);
    assert_eq!(back.event, "phx_reply");
    assert_eq!(back.topic, topic);

    let (kind, push) = encode_push(vsn, jr, topic, event, Payload::Json(json)).unwrap();
    assert_eq!(kind, FrameKind::Text);
    assert_eq!(
        redecode(vsn, &push),
        same_fields(wire_jr, None, topic, event, Payload::Json(json))
    );

    let (kind, b) = encode_broadcast(vsn, topic, event, Payload::Json(json)).unwrap();
    assert_eq!(kind, FrameKind::Text);
    assert_eq!(
        text(&b),
        expected_text(vsn, None, None, topic, event, json.get())
    );
}

/// The V2 binary layouts the server writes, parsed independently: kind, then `n` one-byte
/// lengths, then the fields, then the data.
fn split_binary(frame: &[u8], kind: u8, n: usize) -> (Vec<&str>, &[u8]) {
    assert_eq!(frame[0], kind);
    let lens = &frame[1..1 + n];
    let mut at = 1 + n;
    let mut fields = Vec::new();
    for &len in lens {
        let len = usize::from(len);
        fields.push(std::str::from_utf8(&frame[at..at + len]).unwrap());
        at += len;
    }
    (fields, &frame[at..])
}

/// Every encoder applied to a decoded binary message (V2 only; V1 must refuse).
pub fn check_binary_message(msg: &Message<'_>, data: &[u8]) {
    let jr = msg.join_ref.as_deref();
    let r = msg.msg_ref.as_deref();
    let (topic, event) = (msg.topic.as_ref(), msg.event.as_ref());
    let fits = |s: &str| s.len() <= BINARY_FIELD_MAX_BYTES;

    assert_eq!(
        encode_push(Vsn::V1, jr, topic, event, Payload::Binary(data)),
        Err(EncodeError::BinaryNeedsV2)
    );
    assert_eq!(
        encode_broadcast(Vsn::V1, topic, event, Payload::Binary(data)),
        Err(EncodeError::BinaryNeedsV2)
    );

    // A decoded binary message's fields all fit (they came in one-byte lengths).
    assert!(fits(jr.unwrap_or("")) && fits(r.unwrap_or("")) && fits(topic) && fits(event));
    let (kind, push) = encode_push(Vsn::V2, jr, topic, event, Payload::Binary(data)).unwrap();
    assert_eq!(kind, FrameKind::Binary);
    let (fields, rest) = split_binary(&push, 0, 3);
    assert_eq!(fields, [jr.unwrap_or(""), topic, event]);
    assert_eq!(rest, data);

    let (kind, b) = encode_broadcast(Vsn::V2, topic, event, Payload::Binary(data)).unwrap();
    assert_eq!(kind, FrameKind::Binary);
    let (fields, rest) = split_binary(&b, 2, 2);
    assert_eq!(fields, [topic, event]);
    assert_eq!(rest, data);

    let reply = encode_reply_binary(jr, r, topic, "ok", data).unwrap();
    let (fields, rest) = split_binary(&reply, 1, 4);
    assert_eq!(fields, [jr.unwrap_or(""), r.unwrap_or(""), topic, "ok"]);
    assert_eq!(rest, data);

    // One byte too many in any field is refused, not truncated.
    let long = "x".repeat(BINARY_FIELD_MAX_BYTES + 1);
    assert_eq!(
        encode_broadcast(Vsn::V2, &long, event, Payload::Binary(data)),
        Err(EncodeError::FieldTooLong {
            field: "topic",
            len: long.len()
        })
    );
}

/// The client push layout `decode_binary` reads, rebuilt from a message.
pub fn client_binary_push(msg: &Message<'_>, data: &[u8]) -> Vec<u8> {
    let fields = [
        msg.join_ref.as_deref().unwrap_or(""),
        msg.msg_ref.as_deref().unwrap_or(""),
        &msg.topic,
        &msg.event,
    ];
    let mut out = vec![0u8];
    out.extend(fields.iter().map(|f| u8::try_from(f.len()).unwrap()));
    for f in fields {
        out.extend_from_slice(f.as_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Decodes `data` as a client frame of `vsn`/`kind` and runs the checks that apply.
pub fn check_frame(vsn: Vsn, kind: FrameKind, data: &[u8]) -> Result<(), DecodeError> {
    let msg = decode(vsn, kind, data)?;
    match msg.payload {
        Payload::Json(json) => {
            assert!(vsn == Vsn::V1 || kind == FrameKind::Text);
            // The raw payload is itself one JSON value.
            let _: serde::de::IgnoredAny = serde_json::from_str(json.get()).unwrap();
            check_json_message(vsn, &msg, json);
        }
        Payload::Binary(bytes) => {
            assert_eq!((vsn, kind), (Vsn::V2, FrameKind::Binary));
            // The binary layout has no null: both refs are always present, "" when empty.
            assert!(msg.join_ref.is_some() && msg.msg_ref.is_some());
            assert_eq!(client_binary_push(&msg, bytes), data, "binary round trip");
            check_binary_message(&msg, bytes);
        }
    }
    Ok(())
}
