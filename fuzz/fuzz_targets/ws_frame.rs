//! Fuzzes the WebSocket frame layer: `ws::frame::decode_header`, `ws::MessageReader::decode` in
//! both roles, and the incremental UTF-8 validator.
//!
//! Input layout (see `fuzz/make_seeds.py`): `[flags, cuts, cut_1 .. cut_n (u16 LE), stream..]`.
//! - `flags` bit 0: 0 = the server's reader (client frames, masked), 1 = the client's reader.
//!   Bits 1-2: which `Limits` preset. Bit 3: replace the reader by a fresh one whenever it is
//!   between messages (the module promises that loses nothing).
//! - `cuts & 7` split points into the stream, chosen by the fuzzer.
//!
//! Checked: the stream decoded in one buffer and decoded piece by piece (appending each piece to
//! what is pending, as the I/O layer does) yield the same events and the same end (violation or
//! pending bytes); `NeedMore` leaves its input untouched; every event respects the limits and the
//! RFC; `decode_header` is itself resumable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::ws::close;
use ringgate::ws::frame::{self, decode_header, MAX_CONTROL_PAYLOAD, MAX_HEADER_BYTES};
use ringgate::ws::utf8::Utf8Validator;
use ringgate::ws::{Decoded, Event, Limits, MessageReader, Role, Violation};

/// An event with its borrow copied out, so two runs can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// A frame that completed nothing (a non-final fragment), with its length.
    Fragment(usize),
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Violation(Violation),
    /// The stream ended inside a frame (or exactly between frames: 0 bytes).
    Pending(usize),
}

fn limits(preset: u8) -> Limits {
    match preset & 3 {
        0 => Limits::default(),
        // Small enough for the fuzzer to cross every limit with short inputs.
        1 => Limits {
            max_frame_bytes: 16,
            max_message_bytes: 40,
            max_fragments: 3,
        },
        2 => Limits {
            max_frame_bytes: 200,
            max_message_bytes: 300,
            max_fragments: 1,
        },
        _ => Limits {
            max_frame_bytes: 0,
            max_message_bytes: 0,
            max_fragments: 0,
        },
    }
}

fn own(event: Option<Event<'_>>, consumed: usize) -> Owned {
    match event {
        None => Owned::Fragment(consumed),
        Some(Event::Text(t)) => Owned::Text(t.to_owned()),
        Some(Event::Binary(b)) => Owned::Binary(b.to_vec()),
        Some(Event::Ping(p)) => Owned::Ping(p.to_vec()),
        Some(Event::Pong(p)) => Owned::Pong(p.to_vec()),
        Some(Event::Close(c)) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
    }
}

/// One `decode` call; `NeedMore` must change nothing.
fn step(
    reader: &mut MessageReader,
    buf: &mut [u8],
    limits: &Limits,
) -> Result<Option<(usize, Owned)>, Violation> {
    let before = buf.to_vec();
    match reader.decode(buf, limits)? {
        Decoded::NeedMore => {
            assert_eq!(buf, &before[..], "NeedMore modified its input");
            Ok(None)
        }
        Decoded::Frame { consumed, event } => {
            assert!(
                consumed >= 2 && consumed <= before.len(),
                "consumed {consumed}"
            );
            let owned = own(event, consumed);
            Ok(Some((consumed, owned)))
        }
    }
}

fn whole(role: Role, limits: &Limits, stream: &[u8]) -> (Vec<Owned>, End) {
    let mut reader = MessageReader::new(role);
    let mut buf = stream.to_vec();
    let mut pos = 0;
    let mut events = Vec::new();
    loop {
        match step(&mut reader, &mut buf[pos..], limits) {
            Err(v) => return (events, End::Violation(v)),
            Ok(None) => return (events, End::Pending(buf.len() - pos)),
            Ok(Some((consumed, e))) => {
                pos += consumed;
                events.push(e);
            }
        }
    }
}

fn pieces(
    role: Role,
    limits: &Limits,
    stream: &[u8],
    cuts: &[usize],
    fresh_between_messages: bool,
) -> (Vec<Owned>, End) {
    let mut reader = MessageReader::new(role);
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        pending.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match step(&mut reader, &mut pending, limits) {
                Err(v) => return (events, End::Violation(v)),
                Ok(None) => break,
                Ok(Some((consumed, e))) => {
                    pending.drain(..consumed);
                    events.push(e);
                }
            }
        }
        if fresh_between_messages && !reader.in_message() {
            reader = MessageReader::new(role);
        }
    }
    (events, End::Pending(pending.len()))
}

fn check_events(limits: &Limits, events: &[Owned]) {
    for e in events {
        match e {
            Owned::Text(t) => assert!(t.len() <= limits.max_message_bytes),
            Owned::Binary(b) => assert!(b.len() <= limits.max_message_bytes),
            Owned::Ping(p) | Owned::Pong(p) => {
                assert!(p.len() <= MAX_CONTROL_PAYLOAD && p.len() <= limits.max_frame_bytes)
            }
            Owned::Close(Some((code, reason))) => {
                assert!(close::is_valid_wire_code(*code), "close code {code}");
                assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
            }
            Owned::Close(None) => {}
            Owned::Fragment(n) => assert!(*n <= MAX_HEADER_BYTES + limits.max_frame_bytes),
        }
    }
}

/// `decode_header` on its own: a complete header is a fixed prefix, every shorter prefix of it
/// needs more, and re-encoding it (minimally) decodes to the same fields.
fn check_header(buf: &[u8]) {
    match decode_header(buf) {
        Ok(Some((h, n))) => {
            assert!(n <= buf.len() && (2..=MAX_HEADER_BYTES).contains(&n));
            assert_eq!(decode_header(&buf[..n]), Ok(Some((h, n))));
            for k in 0..n {
                assert_eq!(decode_header(&buf[..k]), Ok(None), "prefix {k} of {n}");
            }
            assert!(h.rsv < 8 && h.opcode < 16 && h.payload_len >> 63 == 0);
            if let Ok(len) = usize::try_from(h.payload_len) {
                let mut out = Vec::new();
                frame::write_header(&mut out, h.fin, h.opcode, h.mask, len);
                let (h2, n2) = decode_header(&out).unwrap().unwrap();
                assert_eq!(n2, out.len());
                assert_eq!(
                    (h2.fin, h2.opcode, h2.mask, h2.payload_len),
                    (h.fin, h.opcode, h.mask, h.payload_len)
                );
            }
        }
        Ok(None) => assert!(buf.len() < MAX_HEADER_BYTES),
        Err(v) => {
            assert_eq!(v, Violation::LENGTH_MSB_SET);
            assert!(buf.len() >= 10);
        }
    }
}

/// The incremental validator agrees with std on every prefix the pieces end at, and fails
/// exactly when that prefix can never become valid.
fn check_utf8(stream: &[u8], cuts: &[usize]) {
    let mut v = Utf8Validator::default();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let fed = v.feed(&stream[start..end]);
        let verdict = std::str::from_utf8(&stream[..end]);
        let hopeless = matches!(&verdict, Err(e) if e.error_len().is_some());
        assert_eq!(fed.is_err(), hopeless, "prefix {end}: {verdict:?}");
        if fed.is_err() {
            return;
        }
        assert_eq!(v.is_complete(), verdict.is_ok(), "prefix {end}");
        start = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, ncuts, rest @ ..] = data else {
        return;
    };
    let ncuts = usize::from(ncuts & 7);
    if rest.len() < 2 * ncuts {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(2 * ncuts);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let limits = limits(flags >> 1);
    let fresh = flags & 8 != 0;

    check_header(stream);
    check_utf8(stream, &cuts);

    let (events, end) = whole(role, &limits, stream);
    check_events(&limits, &events);
    let split = pieces(role, &limits, stream, &cuts, fresh);
    assert_eq!(events, split.0, "events differ when split at {cuts:?}");
    assert_eq!(end, split.1, "end differs when split at {cuts:?}");
    if let End::Violation(v) = end {
        // Every violation is one the close frame can carry.
        assert!(close::is_valid_wire_code(v.code) && v.reason.len() <= close::MAX_REASON_BYTES);
        let f = v.close_frame();
        assert_eq!(f[0], 0x88);
    }
});
