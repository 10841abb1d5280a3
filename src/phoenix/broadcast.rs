//! A broadcast encoded for Phoenix members: one complete WebSocket frame per serializer version,
//! built once by whoever publishes (a worker, the admin API, the bus receiving from another node)
//! so that every member gets the very same bytes.

use bytes::Bytes;

use super::serializer::{encode_broadcast_into, FrameKind, Payload};
use super::Vsn;
use crate::topics::{Broadcast, ENCODINGS};
use crate::ws::frame;

/// A complete unmasked server frame around a Phoenix payload, in one allocation.
pub fn ws_frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    let opcode = match kind {
        FrameKind::Text => frame::opcode::TEXT,
        FrameKind::Binary => frame::opcode::BINARY,
    };
    frame::server_frame(opcode, payload)
}

/// The encoding index of a serializer version in a [`Broadcast`].
pub fn encoding(vsn: Vsn) -> usize {
    match vsn {
        Vsn::V1 => 0,
        Vsn::V2 => 1,
    }
}

const _: () = assert!(ENCODINGS >= 2, "a Broadcast must hold V1 and V2 frames");

/// Encodes `event`/`payload` on `topic` for both serializer versions. A binary payload has no V1
/// frame (V1 cannot carry it).
pub fn encode(topic: &str, event: &str, payload: Payload<'_>) -> Broadcast {
    let encode = |vsn| {
        let mut body = Vec::with_capacity(64 + topic.len() + event.len());
        let kind = encode_broadcast_into(&mut body, vsn, topic, event, payload).ok()?;
        Some(ws_frame(kind, &body))
    };
    let mut frames: [Option<Bytes>; ENCODINGS] = Default::default();
    frames[encoding(Vsn::V1)] = encode(Vsn::V1);
    frames[encoding(Vsn::V2)] = encode(Vsn::V2);
    Broadcast::new(topic, frames)
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
