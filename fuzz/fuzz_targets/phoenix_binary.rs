//! Fuzzes the V2 binary decoder (`phoenix::serializer::decode` with `Vsn::V2`, binary frames):
//! client pushes `0, jr_len, ref_len, topic_len, event_len, fields.., data`. A decoded push
//! must re-encode to the very same bytes, and its fields must survive the server's binary
//! push, reply and broadcast layouts (`ringgate_fuzz::check_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::phoenix::serializer::{DecodeError, FrameKind};
use ringgate::phoenix::Vsn;

fuzz_target!(|data: &[u8]| {
    match ringgate_fuzz::check_frame(Vsn::V2, FrameKind::Binary, data) {
        Ok(()) => assert_eq!(data[0], 0),
        Err(DecodeError::EmptyBinary) => assert!(data.is_empty()),
        Err(DecodeError::UnknownBinaryKind(k)) => assert!(k != 0 && data[0] == k),
        Err(e) => {
            assert!(
                matches!(e, DecodeError::Truncated | DecodeError::FieldNotUtf8(_)),
                "{e:?}"
            );
            assert_eq!(data[0], 0);
        }
    }
});
