//! Fuzzes the decoder of `[bus] format = "phoenix"` (Phoenix.PubSub's Redis adapter, Erlang
//! External Term Format from an open Redis channel): `PhoenixCodec::receive` on arbitrary bytes
//! must return, never panic, overflow the stack or allocate past its limits (the fuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch the latter). With a leading odd byte the rest is
//! the `message` element inside a valid adapter header, so the fuzzer spends its time on payload
//! terms rather than on the header.
//!
//! Checked on success: a JSON payload is valid JSON, and re-encoding the broadcast with the
//! codec and reading it back (as another node) gives the same topic, event and JSON value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::bus::config::BusConfig;
use ringgate::bus::envelope::{BusMessage, BusPayload, Codec, Received};
use ringgate::bus::phoenix::PhoenixCodec;

fn header() -> Vec<u8> {
    // {3, except, <<"x">>, <<"t">>, ...
    let mut h = vec![131, 104, 6, 97, 3, 119, 6];
    h.extend_from_slice(b"except");
    h.extend_from_slice(&[109, 0, 0, 0, 1, b'x', 109, 0, 0, 0, 1, b't']);
    h
}

fuzz_target!(|data: &[u8]| {
    let codec = PhoenixCodec::new(&BusConfig {
        phoenix_pubsub: Some("Fuzz.PubSub".into()),
        ..BusConfig::default()
    });
    let body = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            let mut b = header();
            b.extend_from_slice(rest);
            // ..., 'Elixir.Phoenix.Channel.Server'}
            b.extend_from_slice(&[119, 29]);
            b.extend_from_slice(b"Elixir.Phoenix.Channel.Server");
            b
        }
        _ => data.to_vec(),
    };
    let Ok(Received::Broadcast(e)) = codec.receive(&body, "me", &|_| true) else {
        return;
    };
    if let BusPayload::Json(raw) = &e.payload {
        let v: serde_json::Value = serde_json::from_str(raw.get()).expect("payload is JSON");
        let mut again = Vec::new();
        codec
            .encode(&BusMessage::Broadcast(e.clone()), &mut again)
            .expect("re-encode");
        let Ok(Received::Broadcast(back)) = codec.receive(&again, "other", &|_| true) else {
            panic!("own encoding unreadable");
        };
        assert_eq!((&back.topic, &back.event), (&e.topic, &e.event));
        let BusPayload::Json(raw2) = &back.payload else {
            panic!("payload kind changed")
        };
        let v2: serde_json::Value = serde_json::from_str(raw2.get()).unwrap();
        assert_eq!(v, v2);
    }
});
