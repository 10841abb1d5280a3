//! A broadcast encoded for Phoenix members: one complete WebSocket frame per serializer version,
//! built once by whoever publishes (a worker, the admin API, the bus receiving from another node)
//! so that every member gets the very same bytes.
//!
//! The topic and both frames share one buffer: a broadcast costs its publisher one allocation
//! (and `bytes` one more for the shared count), where a buffer per body, per frame and per topic
//! cost eight. Publishers such as an admin request for a thousand topics make this the publish
//! path's main cost in user space, and the frames are freed on another thread (a worker), where
//! each extra allocation is an extra cross-thread free.

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;

use super::serializer::{encode_broadcast_into, FrameKind, Payload};
use super::Vsn;
use crate::topics::{Broadcast, ENCODINGS};
use crate::ws::frame;

/// A complete unmasked server frame around a Phoenix payload, in one allocation.
pub fn ws_frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    frame::server_frame(opcode(kind), payload)
}

fn opcode(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Text => frame::opcode::TEXT,
        FrameKind::Binary => frame::opcode::BINARY,
    }
}

/// The encoding index of a serializer version in a [`Broadcast`].
pub fn encoding(vsn: Vsn) -> usize {
    match vsn {
        Vsn::V1 => 0,
        Vsn::V2 => 1,
    }
}

const _: () = assert!(ENCODINGS >= 2, "a Broadcast must hold V1 and V2 frames");

/// Past this capacity the body scratch is given back after use, so one large message does not
/// keep its size for the life of the publishing thread.
const SCRATCH_KEEP_BYTES: usize = 64 << 10;

thread_local! {
    /// The publishing thread's scratch: each version's body is encoded here, then copied once
    /// behind its frame header into the broadcast's buffer.
    static BODIES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `event`/`payload` on `topic` for both serializer versions. A binary payload has no V1
/// frame (V1 cannot carry it).
pub fn encode(topic: &str, event: &str, payload: Payload<'_>) -> Broadcast {
    BODIES.with_borrow_mut(|bodies| {
        bodies.clear();
        let mut parts: [Option<(FrameKind, Range<usize>)>; ENCODINGS] = Default::default();
        for vsn in [Vsn::V1, Vsn::V2] {
            let start = bodies.len();
            // On error nothing was appended (the encoder's contract).
            if let Ok(kind) = encode_broadcast_into(bodies, vsn, topic, event, payload) {
                parts[encoding(vsn)] = Some((kind, start..bodies.len()));
            }
        }
        let frames_bytes: usize = parts
            .iter()
            .flatten()
            .map(|(_, body)| frame::header_len(body.len(), false) + body.len())
            .sum();
        let mut buf = Vec::with_capacity(topic.len() + frames_bytes);
        buf.extend_from_slice(topic.as_bytes());
        let ranges = parts.map(|part| {
            let (kind, body) = part?;
            let start = buf.len();
            frame::write_frame(&mut buf, true, opcode(kind), None, &bodies[body]);
            Some(start..buf.len())
        });
        debug_assert_eq!(buf.len(), buf.capacity());
        if bodies.capacity() > SCRATCH_KEEP_BYTES {
            *bodies = Vec::new();
        }
        let all = Bytes::from(buf);
        let frames = ranges.map(|r| r.map(|r| all.slice(r)));
        Broadcast::from_shared(all.slice(..topic.len()), frames).expect("the topic is a &str")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn encodes_each_version_once_as_a_complete_frame() {
        let payload = RawValue::from_string(r#"{"body":"hi"}"#.into()).unwrap();
        let b = encode("rooms:lobby", "new_msg", Payload::Json(&payload));
        let v2 = b.frame(encoding(Vsn::V2)).unwrap();
        let body = br#"[null,null,"rooms:lobby","new_msg",{"body":"hi"}]"#;
        assert_eq!(v2[0], 0x81);
        assert_eq!(usize::from(v2[1]), body.len());
        assert_eq!(&v2[2..], body);
        let v1 = b.frame(encoding(Vsn::V1)).unwrap();
        let body1 =
            br#"{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"},"ref":null}"#;
        assert_eq!(&v1[2..], body1);
        assert_eq!(b.topic(), "rooms:lobby");
    }

    #[test]
    fn frames_and_topic_share_one_buffer() {
        let payload = RawValue::from_string(r#"{"body":"hi"}"#.into()).unwrap();
        let b = encode("rooms:lobby", "new_msg", Payload::Json(&payload));
        let v1 = b.frame(encoding(Vsn::V1)).unwrap();
        let v2 = b.frame(encoding(Vsn::V2)).unwrap();
        // Laid out back to back: topic, V1 frame, V2 frame.
        assert_eq!(
            b.topic().as_ptr().wrapping_add(b.topic().len()),
            v1.as_ptr()
        );
        assert_eq!(v1.as_ptr().wrapping_add(v1.len()), v2.as_ptr());
    }

    #[test]
    fn a_large_message_is_framed_with_an_extended_length_and_the_scratch_is_given_back() {
        let big = format!(r#"{{"body":"{}"}}"#, "x".repeat(SCRATCH_KEEP_BYTES));
        let payload = RawValue::from_string(big.clone()).unwrap();
        let b = encode("t", "e", Payload::Json(&payload));
        let v2 = b.frame(encoding(Vsn::V2)).unwrap();
        let body = format!(r#"[null,null,"t","e",{big}]"#);
        assert_eq!(&v2[..2], &[0x81, 127]);
        assert_eq!(
            u64::from_be_bytes(v2[2..10].try_into().unwrap()),
            body.len() as u64
        );
        assert_eq!(&v2[10..], body.as_bytes());
        assert!(BODIES.with_borrow(|s| s.capacity()) <= SCRATCH_KEEP_BYTES);
    }

    #[test]
    fn binary_payloads_have_no_v1_frame() {
        let b = encode("t", "e", Payload::Binary(b"\x01\x02"));
        assert!(b.frame(encoding(Vsn::V1)).is_none());
        let v2 = b.frame(encoding(Vsn::V2)).unwrap();
        assert_eq!(v2[0], 0x82);
        assert_eq!(&v2[2..], b"\x02\x01\x01te\x01\x02");
    }
}
