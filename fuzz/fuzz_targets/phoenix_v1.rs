//! Fuzzes the V1 decoder (`phoenix::serializer::decode` with `Vsn::V1`): a frame is JSON text
//! whatever its WebSocket opcode, so text and binary frames must get the same verdict. Every
//! decoded message goes through all encoders and back (`ringgate_fuzz::check_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::phoenix::serializer::{decode, FrameKind};
use ringgate::phoenix::Vsn;

fuzz_target!(|data: &[u8]| {
    let as_text = ringgate_fuzz::check_frame(Vsn::V1, FrameKind::Text, data);
    let as_binary = ringgate_fuzz::check_frame(Vsn::V1, FrameKind::Binary, data);
    assert_eq!(as_text, as_binary);
    assert_eq!(
        decode(Vsn::V1, FrameKind::Text, data),
        decode(Vsn::V1, FrameKind::Binary, data)
    );
    if let Err(e) = as_text {
        assert!(matches!(e.close_code(), 1007 | 1008));
    }
});
