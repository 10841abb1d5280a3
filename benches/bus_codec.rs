//! Bus codecs: the CPU cost of one broadcast through each wire format, in one run.
//!
//! `cargo bench --bench bus_codec -- [--rounds 15] [--iters 20000]`
//!
//! For each payload (`small`: a chat message; `medium`: a list of 20 user maps, ~1.6 KiB of
//! JSON), each codec encodes the broadcast (what a publishing node does) and reads it back on
//! another node (what every receiving node does, up to the JSON text the hub fans out):
//! `ringgate` (the native envelope: the JSON is copied, never parsed) and `phoenix`
//! (Phoenix.PubSub's Redis adapter: JSON → Erlang term → ETF, then ETF → scan → term → JSON).
//! A round times `--iters` encode+receive pairs per codec, codecs interleaved in every round;
//! reported: ns per broadcast as median [min–max] over the rounds, and the phoenix/ringgate ratio
//! of the medians; then the medians of the two halves timed alone (encode only, receive only).

use std::time::Instant;

use ringgate::bus::config::BusConfig;
use ringgate::bus::envelope::{BusMessage, BusPayload, Codec, Envelope, Received, RinggateCodec};
use ringgate::bus::phoenix::PhoenixCodec;
use serde_json::value::RawValue;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(json: &str) -> BusMessage {
    BusMessage::Broadcast(Envelope {
        origin: "ringgate-1".into(),
        seq: 1,
        topic: "rooms:lobby".into(),
        event: "new_msg".into(),
        payload: BusPayload::Json(RawValue::from_string(json.into()).unwrap()),
    })
}

/// Encodes `msg` and receives it as another node, `iters` times; ns per pair.
fn round(codec: &dyn Codec, msg: &BusMessage, iters: usize) -> f64 {
    let mut buf = Vec::with_capacity(4096);
    let start = Instant::now();
    for _ in 0..iters {
        buf.clear();
        codec.encode(msg, &mut buf).unwrap();
        match codec.receive(std::hint::black_box(&buf), "ringgate-2", &|_| true) {
            Ok(Received::Broadcast(e)) => {
                std::hint::black_box(e);
            }
            other => panic!("not delivered: {other:?}"),
        }
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// `iters` encodes alone, or `iters` receives of one encoded body alone; ns each.
fn half(codec: &dyn Codec, msg: &BusMessage, iters: usize, receive: bool) -> f64 {
    let mut buf = Vec::with_capacity(4096);
    codec.encode(msg, &mut buf).unwrap();
    let body = buf.clone();
    let start = Instant::now();
    for _ in 0..iters {
        if receive {
            let r = codec.receive(std::hint::black_box(&body), "ringgate-2", &|_| true);
            std::hint::black_box(r.is_ok());
        } else {
            buf.clear();
            codec.encode(std::hint::black_box(msg), &mut buf).unwrap();
        }
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let rounds = arg("--rounds", 15);
    let iters = arg("--iters", 20_000);
    let users: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user {i}","online":true,"score":{}.5,"tags":["a","b"]}}"#,
                i * 7
            )
        })
        .collect();
    let payloads = [
        (
            "small",
            r#"{"body":"hello from the lobby","user":"ada","ts":1764760000}"#.to_string(),
        ),
        (
            "medium",
            format!(r#"{{"users":[{}],"page":1}}"#, users.join(",")),
        ),
    ];
    let phoenix = PhoenixCodec::new(&BusConfig {
        phoenix_pubsub: Some("MyApp.PubSub".into()),
        ..BusConfig::default()
    });
    let codecs: [(&str, &dyn Codec); 2] = [
        ("ringgate", &RinggateCodec::default()),
        ("phoenix", &phoenix),
    ];
    println!("| payload | JSON bytes | codec | body bytes | ns per broadcast, encode + receive: median [min–max] | ratio to ringgate | encode alone, median ns | receive alone, median ns |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, json) in &payloads {
        let msg = message(json);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); codecs.len()];
        round(&RinggateCodec::default(), &msg, iters / 10);
        round(&phoenix, &msg, iters / 10);
        for _ in 0..rounds {
            for (i, (_, c)) in codecs.iter().enumerate() {
                times[i].push(round(*c, &msg, iters));
            }
        }
        let mut halves: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; codecs.len()];
        for _ in 0..rounds {
            for (i, (_, c)) in codecs.iter().enumerate() {
                halves[i][0].push(half(*c, &msg, iters, false));
                halves[i][1].push(half(*c, &msg, iters, true));
            }
        }
        let base = spread(&mut times[0].clone()).0;
        for (i, (cname, c)) in codecs.iter().enumerate() {
            let mut body = Vec::new();
            c.encode(&msg, &mut body).unwrap();
            let (med, min, max) = spread(&mut times[i]);
            let enc = spread(&mut halves[i][0]).0;
            let rec = spread(&mut halves[i][1]).0;
            println!(
                "| {name} | {} | {cname} | {} | {med:.0} [{min:.0}–{max:.0}] | {:.1}× | {enc:.0} | {rec:.0} |",
                json.len(),
                body.len(),
                med / base
            );
        }
    }
}
