//! Fuzzes the V2 text decoder (`phoenix::serializer::decode` with `Vsn::V2`, text frames):
//! JSON arrays `[join_ref, ref, topic, event, payload]`. Every decoded message goes through all
//! encoders and back (`ringgate_fuzz::check_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::phoenix::serializer::FrameKind;
use ringgate::phoenix::Vsn;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ringgate_fuzz::check_frame(Vsn::V2, FrameKind::Text, data) {
        assert!(matches!(e.close_code(), 1007 | 1008));
        assert!(e.to_string().len() <= 123 && e.to_string().is_ascii());
    }
});
