//! Topics, sans-IO: who subscribes to what, and how one broadcast reaches them.
//!
//! - `table`: the one structure shared by all workers — a lock-striped map from topic to the number
//!   of members each worker holds, read by a publisher to know which workers to message.
//! - `local`: each worker's own map from topic to its member connections (no locks), which it walks
//!   to fan a broadcast out.
//! - `Broadcast`: a message encoded once per serializer version into complete WebSocket frames;
//!   every member of every worker is sent the very same bytes.

pub mod local;
pub mod table;

use std::time::Instant;

use bytes::Bytes;

use crate::phoenix::serializer::{encode_broadcast_into, FrameKind, Payload};
use crate::phoenix::Vsn;
use crate::ws::frame;

/// One broadcast, ready to send: the topic it is for and its frames, encoded once.
#[derive(Debug)]
pub struct Broadcast {
    pub topic: Box<str>,
    /// The V1 frame; `None` when the payload is binary (V1 cannot carry it; V1 members are
    /// skipped and counted as dropped).
    pub v1: Option<Bytes>,
    /// The V2 frame (text, or a binary kind-2 frame for a binary payload).
    pub v2: Option<Bytes>,
    /// When it was encoded (published): the start of its delivery latency.
    pub published: Instant,
}

/// A complete unmasked server frame around a Phoenix payload, in one allocation.
pub fn ws_frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    let opcode = match kind {
        FrameKind::Text => frame::opcode::TEXT,
        FrameKind::Binary => frame::opcode::BINARY,
    };
    frame::server_frame(opcode, payload)
}

impl Broadcast {
    /// Encodes `event`/`payload` on `topic` for both serializer versions.
    pub fn encode(topic: &str, event: &str, payload: Payload<'_>) -> Self {
        let encode = |vsn| {
            let mut body = Vec::with_capacity(64 + topic.len() + event.len());
            let kind = encode_broadcast_into(&mut body, vsn, topic, event, payload).ok()?;
            Some(ws_frame(kind, &body))
        };
        Self {
            topic: topic.into(),
            v1: encode(Vsn::V1),
            v2: encode(Vsn::V2),
            published: Instant::now(),
        }
    }

    /// The frame for members speaking `vsn`.
    pub fn frame(&self, vsn: Vsn) -> Option<&Bytes> {
        match vsn {
            Vsn::V1 => self.v1.as_ref(),
            Vsn::V2 => self.v2.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn encodes_each_version_once_as_a_complete_frame() {
        let payload = RawValue::from_string(r#"{"body":"hi"}"#.into()).unwrap();
        let b = Broadcast::encode("rooms:lobby", "new_msg", Payload::Json(&payload));
        let v2 = b.v2.as_ref().unwrap();
        let body = br#"[null,null,"rooms:lobby","new_msg",{"body":"hi"}]"#;
        assert_eq!(v2[0], 0x81);
        assert_eq!(usize::from(v2[1]), body.len());
        assert_eq!(&v2[2..], body);
        let v1 = b.v1.as_ref().unwrap();
        let body1 =
            br#"{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"},"ref":null}"#;
        assert_eq!(&v1[2..], body1);
    }

    #[test]
    fn binary_payloads_have_no_v1_frame() {
        let b = Broadcast::encode("t", "e", Payload::Binary(b"\x01\x02"));
        assert!(b.v1.is_none());
        let v2 = b.v2.unwrap();
        assert_eq!(v2[0], 0x82);
        assert_eq!(&v2[2..], b"\x02\x01\x01te\x01\x02");
    }
}
