//! Frames in, messages out: the per-connection WebSocket reader.
//!
//! [`MessageReader::decode`] takes the bytes a connection has received, decodes
//! one frame from their front, enforces every RFC 6455 rule a server must
//! check (§5.1-§5.6, §8.1) plus ringgate's [`Limits`], and returns either an
//! [`Event`] or the [`Violation`] to close with. It never reads, writes or
//! answers: a Ping's Pong and a Close's echo are the caller's decision.
//!
//! Zero copy is the common case: an unfragmented frame (nearly every Phoenix
//! message) is unmasked in the caller's buffer and yielded as a borrow of it.
//! Only fragmented messages are copied, into the reader's own buffer.
//!
//! The reader holds nothing but a fragmented message in progress, so a
//! connection that is between messages can drop it and create a fresh one for
//! the next frame ([`MessageReader::in_message`] says when). It is 32 bytes on
//! 64-bit targets (checked at compile time); its buffer is allocated only while
//! a fragmented message is being reassembled and released at the first
//! `decode` call after that message was yielded.

use super::close;
use super::frame::{self, opcode, MAX_CONTROL_PAYLOAD};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which side of the connection this reader is on; decides which masking
/// rule applies to the frames it receives (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads frames sent by a client: every frame must be masked.
    Server,
    /// Reads frames sent by a server (the load generator): no frame may be masked.
    Client,
}

/// Size limits for received frames and messages.
///
/// The order in which a frame is checked against them: frame size, then
/// message size, then fragment count; each is checked on the header alone,
/// before any of the payload needs to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of a single frame, in bytes. Default 1 MiB: a frame is
    /// held whole in the receive buffer until it completes, so this caps the
    /// buffer one slow or hostile sender can pin; Phoenix messages are small
    /// JSON, far below it. Exceeding it closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest message (sum of its fragments' payloads), in bytes. Default
    /// 1 MiB, the same as a frame, so a message costs the same at most
    /// whether or not it is fragmented. Caps the reassembly buffer. Exceeding
    /// it closes with 1009.
    pub max_message_bytes: usize,
    /// Most frames one message may be split into (an unfragmented message is
    /// 1; values below 1 refuse every data frame). Default 1024: empty or tiny
    /// continuation frames cost work without adding bytes, so the byte limits
    /// alone do not bound them; 1024 still lets a 1 MiB message arrive in
    /// 1 KiB pieces. Exceeding it closes with 1009: like the byte limits it
    /// bounds the cost of one message, and 1009 tells the peer the message
    /// was too big to process.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            max_fragments: 1024,
        }
    }
}

/// Why a connection must be closed: the close code to send and a short human
/// reason for the Close frame. Every rule has a named constant below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("websocket close {code}: {reason}")]
pub struct Violation {
    /// Close code (see [`super::close`]).
    pub code: u16,
    /// Reason text for the Close frame (ASCII, well under 123 bytes).
    pub reason: &'static str,
}

impl Violation {
    const fn protocol(reason: &'static str) -> Self {
        Self {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }

    const fn too_big(reason: &'static str) -> Self {
        Self {
            code: close::MESSAGE_TOO_BIG,
            reason,
        }
    }

    /// A 64-bit payload length with its most significant bit set (§5.2).
    pub const LENGTH_MSB_SET: Self = Self::protocol("frame length has the high bit set");
    /// RSV1-3 set without a negotiated extension (§5.2).
    pub const RESERVED_BITS: Self = Self::protocol("reserved bits set");
    /// Opcode 3-7 or 11-15 (§5.2).
    pub const RESERVED_OPCODE: Self = Self::protocol("reserved opcode");
    /// Close, Ping or Pong without FIN (§5.5).
    pub const CONTROL_FRAGMENTED: Self = Self::protocol("fragmented control frame");
    /// Close, Ping or Pong payload over 125 bytes (§5.5).
    pub const CONTROL_TOO_LONG: Self = Self::protocol("control frame over 125 bytes");
    /// A client frame without a mask (§5.1), seen by [`Role::Server`].
    pub const UNMASKED: Self = Self::protocol("client frame not masked");
    /// A server frame with a mask (§5.1), seen by [`Role::Client`].
    pub const MASKED: Self = Self::protocol("server frame masked");
    /// A continuation frame with no fragmented message in progress (§5.4).
    pub const ORPHAN_CONTINUATION: Self = Self::protocol("continuation without a message");
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    pub const INTERLEAVED_MESSAGE: Self = Self::protocol("new message inside a fragmented one");
    /// A frame payload over [`Limits::max_frame_bytes`].
    pub const FRAME_TOO_BIG: Self = Self::too_big("frame too big");
    /// A message over [`Limits::max_message_bytes`].
    pub const MESSAGE_TOO_BIG: Self = Self::too_big("message too big");
    /// A message in more frames than [`Limits::max_fragments`].
    pub const TOO_MANY_FRAGMENTS: Self = Self::too_big("too many fragments");
    /// A text message that is not UTF-8 (§8.1).
    pub const TEXT_NOT_UTF8: Self = Self {
        code: close::INVALID_PAYLOAD,
        reason: "text is not UTF-8",
    };
    /// A Close payload of exactly 1 byte (§5.5.1).
    pub const CLOSE_PAYLOAD_ONE_BYTE: Self = Self::protocol("close payload of 1 byte");
    /// A Close code a peer may not send (§7.4).
    pub const CLOSE_CODE_INVALID: Self = Self::protocol("invalid close code");
    /// A Close reason that is not UTF-8 (§5.5.1).
    pub const CLOSE_REASON_NOT_UTF8: Self = Self {
        code: close::INVALID_PAYLOAD,
        reason: "close reason is not UTF-8",
    };

    /// The server Close frame reporting this violation.
    pub fn close_frame(&self) -> bytes::Bytes {
        frame::server_close_frame(self.code, self.reason)
    }
}

/// Something the peer said, borrowed from the caller's input or the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, valid UTF-8.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A Ping; the caller owes a Pong with the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A Pong (solicited or not).
    Pong(&'a [u8]),
    /// A Close with its code and reason, or `None` for an empty payload. The
    /// caller answers with a Close (echoing the code) unless it sent one first.
    Close(Option<(u16, &'a str)>),
}

/// Result of one [`MessageReader::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The input does not hold a whole frame; nothing was consumed. Call again
    /// with the same bytes plus whatever arrives next.
    NeedMore,
    /// One frame was decoded from `input[..consumed]`; the caller drops those
    /// bytes. `event` is `None` for a non-final fragment of a data message.
    Frame {
        /// Bytes of input the frame occupied (header and payload).
        consumed: usize,
        /// What the frame completed, if anything.
        event: Option<Event<'a>>,
    },
}

/// Reassembly state of one connection; see the module docs.
#[derive(Debug)]
pub struct MessageReader {
    /// Bytes of the fragmented message so far; empty (unallocated) otherwise.
    data: Vec<u8>,
    /// Frames of the message in progress so far, 0 when none.
    fragments: u32,
    /// Which masking rule applies to received frames.
    role: Role,
    /// `TEXT` or `BINARY` while a fragmented message is in progress, else
    /// `CONTINUATION` (0).
    message_opcode: u8,
    /// UTF-8 state of the text message in progress (continuations may split
    /// a character).
    utf8: Utf8Validator,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MessageReader>() == 32);

impl MessageReader {
    /// A reader with no message in progress; allocates nothing.
    pub fn new(role: Role) -> Self {
        Self {
            data: Vec::new(),
            fragments: 0,
            role,
            message_opcode: opcode::CONTINUATION,
            utf8: Utf8Validator::default(),
        }
    }

    /// True while a fragmented message is incomplete: the caller must keep
    /// this reader. When false, dropping it and creating a new one later
    /// loses nothing.
    pub fn in_message(&self) -> bool {
        self.message_opcode != opcode::CONTINUATION
    }

    /// Bytes held for the fragmented message in progress (or for the last
    /// completed one until the next `decode`), for memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        self.data.capacity()
    }

    /// Decodes ONE frame from the front of `input`, unmasking its payload in
    /// place.
    ///
    /// Returns [`Decoded::NeedMore`] (consuming and changing nothing) until
    /// `input` holds the whole frame, except that a violation is reported as
    /// soon as the bytes received prove it: RSV bits, opcode, control FIN and
    /// message sequencing from the first byte; mask bit and control length
    /// from the second; sizes from the complete header. Text is validated per
    /// fragment, so a fragmented message with invalid UTF-8 fails at the first
    /// bad fragment. After an error the connection is dead: the reader's
    /// state and `input` are unspecified.
    ///
    /// An unfragmented data frame or a control frame yields an event
    /// borrowing `input`; a fragmented message's final frame yields one
    /// borrowing the reader's buffer. Control frames between fragments are
    /// yielded without disturbing the message in progress.
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Decoded<'a>, Violation> {
        if !self.in_message() && self.data.capacity() != 0 {
            // The last fragmented message was yielded by the previous call;
            // an idle connection should not keep its buffer.
            self.data = Vec::new();
        }
        let Some(&b0) = input.first() else {
            return Ok(Decoded::NeedMore);
        };
        self.check_first_byte(b0)?;
        let Some(&b1) = input.get(1) else {
            return Ok(Decoded::NeedMore);
        };
        self.check_second_byte(b0 & 0x0F, b1)?;
        let Some((header, header_bytes)) = frame::decode_header(input)? else {
            return Ok(Decoded::NeedMore);
        };
        self.check_sizes(&header, limits)?;
        // `check_sizes` bounded the length by `max_frame_bytes`, a usize.
        let frame_bytes = usize::try_from(header.payload_len)
            .ok()
            .and_then(|len| len.checked_add(header_bytes))
            .ok_or(Violation::FRAME_TOO_BIG)?;
        let Some(frame_input) = input.get_mut(..frame_bytes) else {
            return Ok(Decoded::NeedMore);
        };
        let payload = &mut frame_input[header_bytes..];
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        let event = self.on_payload(header.fin, header.opcode, payload)?;
        Ok(Decoded::Frame {
            consumed: frame_bytes,
            event,
        })
    }

    /// Rules decidable from byte 0: FIN, RSV, opcode.
    fn check_first_byte(&self, b0: u8) -> Result<(), Violation> {
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(Violation::RESERVED_BITS);
        }
        if !opcode::is_defined(op) {
            return Err(Violation::RESERVED_OPCODE);
        }
        if opcode::is_control(op) {
            if !fin {
                return Err(Violation::CONTROL_FRAGMENTED);
            }
        } else if op == opcode::CONTINUATION {
            if !self.in_message() {
                return Err(Violation::ORPHAN_CONTINUATION);
            }
        } else if self.in_message() {
            return Err(Violation::INTERLEAVED_MESSAGE);
        }
        Ok(())
    }

    /// Rules decidable from byte 1: mask bit, control payload length.
    fn check_second_byte(&self, op: u8, b1: u8) -> Result<(), Violation> {
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(Violation::UNMASKED),
            (Role::Client, true) => return Err(Violation::MASKED),
            _ => {}
        }
        // 126 and 127 announce an extended length, which is already > 125.
        if opcode::is_control(op) && usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
            return Err(Violation::CONTROL_TOO_LONG);
        }
        Ok(())
    }

    /// Limits decidable from the whole header, before the payload arrives.
    fn check_sizes(&self, header: &frame::Header, limits: &Limits) -> Result<(), Violation> {
        let len = header.payload_len;
        if len > limits.max_frame_bytes as u64 {
            return Err(Violation::FRAME_TOO_BIG);
        }
        if opcode::is_control(header.opcode) {
            return Ok(());
        }
        let (so_far, fragments) = if header.opcode == opcode::CONTINUATION {
            (self.data.len() as u64, u64::from(self.fragments))
        } else {
            (0, 0)
        };
        if so_far + len > limits.max_message_bytes as u64 {
            return Err(Violation::MESSAGE_TOO_BIG);
        }
        if fragments + 1 > limits.max_fragments as u64 {
            return Err(Violation::TOO_MANY_FRAGMENTS);
        }
        Ok(())
    }

    /// Turns a complete, unmasked, rule-checked frame into an event.
    fn on_payload<'a>(
        &'a mut self,
        fin: bool,
        op: u8,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, Violation> {
        let event = match op {
            opcode::PING => Event::Ping(payload),
            opcode::PONG => Event::Pong(payload),
            opcode::CLOSE => Event::Close(close::parse_close_payload(payload)?),
            opcode::TEXT if fin => Event::Text(text(payload)?),
            opcode::BINARY if fin => Event::Binary(payload),
            opcode::TEXT | opcode::BINARY => {
                // First fragment of a fragmented message.
                self.message_opcode = op;
                self.fragments = 1;
                // `decode` released the previous message's buffer on entry.
                debug_assert!(self.data.is_empty());
                self.data.extend_from_slice(payload);
                if op == opcode::TEXT {
                    self.utf8 = Utf8Validator::default();
                    self.utf8
                        .feed(payload)
                        .map_err(|_| Violation::TEXT_NOT_UTF8)?;
                }
                return Ok(None);
            }
            _ => {
                // CONTINUATION; `check_first_byte` ensured a message is in progress.
                debug_assert_eq!(op, opcode::CONTINUATION);
                debug_assert!(self.in_message());
                self.fragments = self.fragments.saturating_add(1);
                self.data.extend_from_slice(payload);
                let is_text = self.message_opcode == opcode::TEXT;
                if !fin {
                    if is_text {
                        self.utf8
                            .feed(payload)
                            .map_err(|_| Violation::TEXT_NOT_UTF8)?;
                    }
                    return Ok(None);
                }
                self.message_opcode = opcode::CONTINUATION;
                self.fragments = 0;
                // The last fragment is validated together with the rest:
                // earlier fragments already passed the incremental check, and
                // std's validator is what yields the `&str` without `unsafe`.
                let data: &'a [u8] = &self.data;
                if is_text {
                    Event::Text(text(data)?)
                } else {
                    Event::Binary(data)
                }
            }
        };
        Ok(Some(event))
    }
}

fn text(bytes: &[u8]) -> Result<&str, Violation> {
    std::str::from_utf8(bytes).map_err(|_| Violation::TEXT_NOT_UTF8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn v(code: u16, reason: &'static str) -> Violation {
        Violation { code, reason }
    }

    /// A masked frame as a client sends it.
    fn cf(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_frame(&mut out, fin, op, Some(KEY), payload);
        out
    }

    /// An unmasked frame as a server sends it.
    fn sf(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_frame(&mut out, fin, op, None, payload);
        out
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    impl From<Event<'_>> for Owned {
        fn from(e: Event<'_>) -> Self {
            match e {
                Event::Text(s) => Owned::Text(s.to_owned()),
                Event::Binary(b) => Owned::Binary(b.to_vec()),
                Event::Ping(b) => Owned::Ping(b.to_vec()),
                Event::Pong(b) => Owned::Pong(b.to_vec()),
                Event::Close(c) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
            }
        }
    }

    /// The caller's side: append each chunk to a buffer, decode frames from
    /// its front until `NeedMore`, drop what was consumed. With
    /// `drop_idle_reader`, the reader is dropped and recreated whenever no
    /// message is in progress, as an idle connection would.
    fn feed(
        role: Role,
        limits: &Limits,
        chunks: &[&[u8]],
        drop_idle_reader: bool,
    ) -> Result<(Vec<Owned>, usize), Violation> {
        let mut reader = MessageReader::new(role);
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let before = buf.clone();
                match reader.decode(&mut buf, limits)? {
                    Decoded::NeedMore => {
                        assert_eq!(buf, before, "NeedMore must leave the input untouched");
                        break;
                    }
                    Decoded::Frame { consumed, event } => {
                        assert!(consumed > 0 && consumed <= before.len());
                        if let Some(e) = event {
                            events.push(Owned::from(e));
                        }
                        buf.drain(..consumed);
                    }
                }
                if drop_idle_reader && !reader.in_message() {
                    reader = MessageReader::new(role);
                }
            }
        }
        Ok((events, buf.len()))
    }

    fn feed_all(role: Role, limits: &Limits, bytes: &[u8]) -> Result<Vec<Owned>, Violation> {
        let (events, left) = feed(role, limits, &[bytes], false)?;
        assert_eq!(left, 0, "a whole stream leaves no bytes");
        Ok(events)
    }

    fn server_all(bytes: &[u8]) -> Result<Vec<Owned>, Violation> {
        feed_all(Role::Server, &Limits::default(), bytes)
    }

    /// The error `bytes` provoke, decoding with nothing more to come.
    fn error_of(role: Role, limits: &Limits, bytes: &[u8]) -> Violation {
        match feed(role, limits, &[bytes], false) {
            Err(e) => e,
            Ok(r) => panic!("expected a violation, got {r:?}"),
        }
    }

    fn server_error(bytes: &[u8]) -> Violation {
        error_of(Role::Server, &Limits::default(), bytes)
    }

    fn text(s: &str) -> Owned {
        Owned::Text(s.to_owned())
    }

    #[test]
    fn size_of_reader() {
        assert_eq!(std::mem::size_of::<MessageReader>(), 32);
    }

    #[test]
    fn rfc_masked_hello() {
        let mut input = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0xAA,
        ];
        let mut r = MessageReader::new(Role::Server);
        let range = input.as_ptr_range();
        let d = r.decode(&mut input, &Limits::default()).unwrap();
        let Decoded::Frame {
            consumed,
            event: Some(Event::Text(s)),
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!((consumed, s), (11, "Hello"));
        // Zero copy: the text lies inside the caller's buffer.
        assert!(range.contains(&s.as_ptr()));
        assert_eq!(input[6..11], *b"Hello", "unmasked in place");
        assert_eq!(input[11], 0xAA, "bytes after the frame untouched");
    }

    #[test]
    fn client_role_reads_unmasked_server_frames() {
        let mut bytes = frame::server_frame(opcode::TEXT, b"hi").to_vec();
        bytes.extend_from_slice(&frame::server_frame(opcode::PING, b"p"));
        bytes.extend(sf(false, opcode::BINARY, b"x"));
        bytes.extend(sf(true, opcode::PONG, b""));
        bytes.extend(sf(true, opcode::CONTINUATION, b"y"));
        bytes.extend_from_slice(&frame::server_close_frame(1012, "restart"));
        assert_eq!(
            feed_all(Role::Client, &Limits::default(), &bytes),
            Ok(vec![
                text("hi"),
                Owned::Ping(b"p".to_vec()),
                Owned::Pong(vec![]),
                Owned::Binary(b"xy".to_vec()),
                Owned::Close(Some((1012, "restart".to_owned())))
            ])
        );
    }

    #[test]
    fn every_prefix_needs_more_and_is_untouched() {
        let mut full = cf(true, opcode::BINARY, &[5u8; 300]);
        full.extend(cf(false, opcode::TEXT, b"ab"));
        let first = frame::header_len(300, true) + 300;
        for n in 0..first {
            let mut prefix = full[..n].to_vec();
            let mut r = MessageReader::new(Role::Server);
            assert_eq!(
                r.decode(&mut prefix, &Limits::default()),
                Ok(Decoded::NeedMore),
                "{n}"
            );
            assert_eq!(prefix, full[..n], "prefix {n} changed");
        }
    }

    #[test]
    fn reserved_bits_fail_on_first_byte() {
        for rsv in 1u8..8 {
            assert_eq!(
                server_error(&[0x80 | rsv << 4 | opcode::TEXT]),
                v(1002, "reserved bits set"),
                "rsv {rsv:03b}"
            );
        }
        // Even on a control frame, and before the opcode check.
        assert_eq!(
            server_error(&[0x80 | 0x40 | 0x9]),
            v(1002, "reserved bits set")
        );
        assert_eq!(
            server_error(&[0x80 | 0x10 | 0x3]),
            v(1002, "reserved bits set")
        );
    }

    #[test]
    fn reserved_opcodes_fail_on_first_byte() {
        for op in (3u8..=7).chain(11..=15) {
            assert_eq!(
                server_error(&[0x80 | op]),
                v(1002, "reserved opcode"),
                "op {op}"
            );
            assert_eq!(
                error_of(Role::Client, &Limits::default(), &[op]),
                v(1002, "reserved opcode")
            );
        }
    }

    #[test]
    fn fragmented_control_fails_on_first_byte() {
        for op in [opcode::CLOSE, opcode::PING, opcode::PONG] {
            assert_eq!(
                server_error(&[op]),
                v(1002, "fragmented control frame"),
                "op {op}"
            );
        }
    }

    #[test]
    fn control_over_125_fails_on_second_byte() {
        for op in [opcode::CLOSE, opcode::PING, opcode::PONG] {
            for len7 in [126u8, 127] {
                assert_eq!(
                    server_error(&[0x80 | op, 0x80 | len7]),
                    v(1002, "control frame over 125 bytes")
                );
            }
        }
        // 125 is fine.
        assert_eq!(
            server_all(&cf(true, opcode::PING, &[1u8; 125])),
            Ok(vec![Owned::Ping(vec![1u8; 125])])
        );
    }

    #[test]
    fn masking_rule_per_role_fails_on_second_byte() {
        assert_eq!(
            server_error(&[0x81, 0x05]),
            v(1002, "client frame not masked")
        );
        assert_eq!(
            server_error(&[0x89, 0x00]),
            v(1002, "client frame not masked")
        );
        assert_eq!(
            error_of(Role::Client, &Limits::default(), &[0x81, 0x85]),
            v(1002, "server frame masked")
        );
    }

    #[test]
    fn orphan_continuation_fails_on_first_byte() {
        assert_eq!(
            server_error(&[0x80]),
            v(1002, "continuation without a message")
        );
        assert_eq!(
            server_error(&[0x00]),
            v(1002, "continuation without a message")
        );
        // Also right after a completed fragmented message.
        let mut b = cf(false, opcode::TEXT, b"a");
        b.extend(cf(true, opcode::CONTINUATION, b"b"));
        b.extend(cf(true, opcode::CONTINUATION, b"c"));
        assert_eq!(server_error(&b), v(1002, "continuation without a message"));
    }

    #[test]
    fn interleaved_message_fails_on_first_byte() {
        for op in [opcode::TEXT, opcode::BINARY] {
            for fin in [true, false] {
                let mut b = cf(false, opcode::BINARY, b"a");
                b.push(if fin { 0x80 } else { 0 } | op);
                assert_eq!(
                    server_error(&b),
                    v(1002, "new message inside a fragmented one"),
                    "op {op} fin {fin}"
                );
            }
        }
    }

    #[test]
    fn length_with_high_bit_is_protocol_error() {
        assert_eq!(
            server_error(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            v(1002, "frame length has the high bit set")
        );
    }

    /// The header of a masked frame announcing `len` bytes, without payload.
    fn header_only(fin: bool, op: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_header(&mut out, fin, op, Some(KEY), len);
        out
    }

    #[test]
    fn frame_limit_from_header_alone() {
        let limits = Limits {
            max_frame_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(
            error_of(
                Role::Server,
                &limits,
                &header_only(true, opcode::BINARY, 101)
            ),
            v(1009, "frame too big")
        );
        // 64-bit length, far past any limit: refused before any payload.
        assert_eq!(
            server_error(&header_only(true, opcode::TEXT, 1 << 40)),
            v(1009, "frame too big")
        );
        // Control frames count too.
        let tiny = Limits {
            max_frame_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            error_of(Role::Server, &tiny, &header_only(true, opcode::PING, 11)),
            v(1009, "frame too big")
        );
        // Exactly at the limit passes.
        assert_eq!(
            feed_all(
                Role::Server,
                &limits,
                &cf(true, opcode::BINARY, &[0u8; 100])
            ),
            Ok(vec![Owned::Binary(vec![0u8; 100])])
        );
    }

    #[test]
    fn message_limit_from_header_alone() {
        let limits = Limits {
            max_frame_bytes: 100,
            max_message_bytes: 150,
            max_fragments: 1024,
        };
        let too_big = v(1009, "message too big");
        let small = Limits {
            max_message_bytes: 50,
            ..limits
        };
        assert_eq!(
            error_of(Role::Server, &small, &header_only(true, opcode::TEXT, 51)),
            too_big
        );
        assert_eq!(
            error_of(
                Role::Server,
                &small,
                &header_only(false, opcode::BINARY, 51)
            ),
            too_big
        );
        let mut ok = cf(false, opcode::BINARY, &[1u8; 100]);
        ok.extend(cf(true, opcode::CONTINUATION, &[2u8; 50]));
        let mut expected = vec![1u8; 100];
        expected.extend([2u8; 50]);
        assert_eq!(
            feed_all(Role::Server, &limits, &ok),
            Ok(vec![Owned::Binary(expected)])
        );
        let mut bad = cf(false, opcode::BINARY, &[1u8; 100]);
        bad.extend(header_only(true, opcode::CONTINUATION, 51));
        assert_eq!(error_of(Role::Server, &limits, &bad), too_big);
    }

    #[test]
    fn fragment_limit() {
        let limits = Limits {
            max_fragments: 3,
            ..Limits::default()
        };
        let mut ok = cf(false, opcode::TEXT, b"a");
        ok.extend(cf(false, opcode::CONTINUATION, b"b"));
        ok.extend(cf(true, opcode::CONTINUATION, b"c"));
        assert_eq!(feed_all(Role::Server, &limits, &ok), Ok(vec![text("abc")]));

        let mut bad = cf(false, opcode::TEXT, b"a");
        bad.extend(cf(false, opcode::CONTINUATION, b""));
        bad.extend(cf(false, opcode::CONTINUATION, b""));
        bad.extend(header_only(false, opcode::CONTINUATION, 0));
        assert_eq!(
            error_of(Role::Server, &limits, &bad),
            v(1009, "too many fragments")
        );

        // With a limit of 1 only unfragmented messages pass.
        let one = Limits {
            max_fragments: 1,
            ..Limits::default()
        };
        assert_eq!(
            feed_all(Role::Server, &one, &cf(true, opcode::TEXT, b"x")),
            Ok(vec![text("x")])
        );
        let mut two = cf(false, opcode::TEXT, b"x");
        two.extend(cf(true, opcode::CONTINUATION, b"y"));
        assert_eq!(
            error_of(Role::Server, &one, &two),
            v(1009, "too many fragments")
        );
    }

    #[test]
    fn invalid_utf8_unfragmented() {
        assert_eq!(
            server_error(&cf(true, opcode::TEXT, b"ok\xC0\xAF")),
            v(1007, "text is not UTF-8")
        );
        // Binary is not checked.
        assert_eq!(
            server_all(&cf(true, opcode::BINARY, b"\xC0\xAF")),
            Ok(vec![Owned::Binary(b"\xC0\xAF".to_vec())])
        );
    }

    #[test]
    fn invalid_utf8_fails_at_the_first_bad_fragment() {
        // The first fragment is already impossible: fail on it, without the rest.
        let first = cf(false, opcode::TEXT, b"abc\xED\xA0");
        assert_eq!(server_error(&first), v(1007, "text is not UTF-8"));
        // A middle fragment completes a character wrongly.
        let mut b = cf(false, opcode::TEXT, "é".as_bytes().split_at(1).0);
        b.extend(cf(false, opcode::CONTINUATION, b"A"));
        assert_eq!(server_error(&b), v(1007, "text is not UTF-8"));
    }

    #[test]
    fn characters_may_span_fragments() {
        let s = "a€😀b";
        let bytes = s.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut b = cf(false, opcode::TEXT, &bytes[..i]);
                b.extend(cf(false, opcode::CONTINUATION, &bytes[i..j]));
                b.extend(cf(true, opcode::CONTINUATION, &bytes[j..]));
                assert_eq!(server_all(&b), Ok(vec![text(s)]), "{i} {j}");
            }
        }
    }

    #[test]
    fn character_cut_off_at_message_end() {
        let mut b = cf(false, opcode::TEXT, b"a\xE2\x82");
        b.extend(cf(true, opcode::CONTINUATION, b""));
        assert_eq!(server_error(&b), v(1007, "text is not UTF-8"));
        assert_eq!(
            server_error(&cf(true, opcode::TEXT, b"a\xE2\x82")),
            v(1007, "text is not UTF-8")
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(
            server_all(&cf(true, opcode::CLOSE, b"")),
            Ok(vec![Owned::Close(None)])
        );
        assert_eq!(
            server_all(&cf(true, opcode::CLOSE, b"\x03\xe8bye")),
            Ok(vec![Owned::Close(Some((1000, "bye".to_owned())))])
        );
        assert_eq!(
            server_error(&cf(true, opcode::CLOSE, b"\x03")),
            v(1002, "close payload of 1 byte")
        );
        assert_eq!(
            server_error(&cf(true, opcode::CLOSE, b"\x03\xed")),
            v(1002, "invalid close code")
        );
        assert_eq!(
            server_error(&cf(true, opcode::CLOSE, b"\x03\xe8\xff")),
            v(1007, "close reason is not UTF-8")
        );
    }

    #[test]
    fn controls_between_fragments_do_not_disturb() {
        let mut b = cf(false, opcode::TEXT, b"he");
        b.extend(cf(true, opcode::PING, b"1"));
        b.extend(cf(false, opcode::CONTINUATION, b"ll"));
        b.extend(cf(true, opcode::PONG, b"2"));
        b.extend(cf(true, opcode::CLOSE, b"\x03\xe9"));
        b.extend(cf(true, opcode::CONTINUATION, b"o"));
        b.extend(cf(true, opcode::BINARY, b"next"));
        assert_eq!(
            server_all(&b),
            Ok(vec![
                Owned::Ping(b"1".to_vec()),
                Owned::Pong(b"2".to_vec()),
                Owned::Close(Some((1001, String::new()))),
                text("hello"),
                Owned::Binary(b"next".to_vec()),
            ])
        );
    }

    #[test]
    fn reassembled_message_borrows_reader_and_buffer_is_released() {
        let limits = Limits::default();
        let mut r = MessageReader::new(Role::Server);
        assert!(!r.in_message());
        assert_eq!(r.buffered_bytes(), 0);

        let mut f1 = cf(false, opcode::BINARY, b"abc");
        assert_eq!(
            r.decode(&mut f1, &limits),
            Ok(Decoded::Frame {
                consumed: 9,
                event: None
            })
        );
        assert!(r.in_message());
        assert!(r.buffered_bytes() >= 3);

        let mut f2 = cf(true, opcode::CONTINUATION, b"de");
        let range = f2.as_ptr_range();
        match r.decode(&mut f2, &limits) {
            Ok(Decoded::Frame {
                consumed: 8,
                event: Some(Event::Binary(b)),
            }) => {
                assert_eq!(b, b"abcde");
                assert!(!range.contains(&b.as_ptr()), "borrows the reader's buffer");
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.in_message());
        // The next call, even one that needs more, releases the buffer.
        assert_eq!(r.decode(&mut [], &limits), Ok(Decoded::NeedMore));
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn empty_messages() {
        let mut b = cf(true, opcode::TEXT, b"");
        b.extend(cf(false, opcode::TEXT, b""));
        b.extend(cf(true, opcode::CONTINUATION, b""));
        b.extend(cf(true, opcode::BINARY, b""));
        b.extend(cf(true, opcode::PING, b""));
        assert_eq!(
            server_all(&b),
            Ok(vec![
                text(""),
                text(""),
                Owned::Binary(vec![]),
                Owned::Ping(vec![])
            ])
        );
    }

    #[test]
    fn large_frame_in_chunks() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = cf(true, opcode::BINARY, &payload);
        assert_eq!(bytes.len(), 14 + 70_000);
        let chunks: Vec<&[u8]> = bytes.chunks(1000).collect();
        assert_eq!(
            feed(Role::Server, &Limits::default(), &chunks, false),
            Ok((vec![Owned::Binary(payload)], 0))
        );
    }

    #[test]
    fn every_violation_fits_a_close_frame() {
        let all = [
            Violation::LENGTH_MSB_SET,
            Violation::RESERVED_BITS,
            Violation::RESERVED_OPCODE,
            Violation::CONTROL_FRAGMENTED,
            Violation::CONTROL_TOO_LONG,
            Violation::UNMASKED,
            Violation::MASKED,
            Violation::ORPHAN_CONTINUATION,
            Violation::INTERLEAVED_MESSAGE,
            Violation::FRAME_TOO_BIG,
            Violation::MESSAGE_TOO_BIG,
            Violation::TOO_MANY_FRAGMENTS,
            Violation::TEXT_NOT_UTF8,
            Violation::CLOSE_PAYLOAD_ONE_BYTE,
            Violation::CLOSE_CODE_INVALID,
            Violation::CLOSE_REASON_NOT_UTF8,
        ];
        for e in all {
            assert!(close::is_valid_wire_code(e.code), "{e:?}");
            assert!(
                e.reason.is_ascii() && e.reason.len() <= close::MAX_REASON_BYTES,
                "{e:?}"
            );
            // The frame carries the reason whole, not truncated.
            assert_eq!(e.close_frame().len(), 2 + 2 + e.reason.len(), "{e:?}");
        }
    }

    #[test]
    fn violation_close_frame() {
        let mut expected = vec![0x88, 19, 0x03, 0xEF];
        expected.extend_from_slice(b"text is not UTF-8");
        assert_eq!(&Violation::TEXT_NOT_UTF8.close_frame()[..], &expected[..]);
    }

    // ---- property tests ----

    #[derive(Debug, Clone)]
    enum Spec {
        /// A data message split at `cuts` (byte offsets, may split a
        /// character), with control frames after some fragments.
        Data {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<usize>,
            inserts: Vec<(usize, Ctl)>,
        },
        Control(Ctl),
    }

    #[derive(Debug, Clone)]
    struct Ctl {
        op: u8,
        payload: Vec<u8>,
    }

    impl Ctl {
        fn expected(&self) -> Owned {
            match self.op {
                opcode::PING => Owned::Ping(self.payload.clone()),
                opcode::PONG => Owned::Pong(self.payload.clone()),
                _ => Owned::Close(
                    close::parse_close_payload(&self.payload)
                        .unwrap()
                        .map(|(c, r)| (c, r.to_owned())),
                ),
            }
        }
    }

    fn ctl() -> impl Strategy<Value = Ctl> {
        prop_oneof![
            (
                prop::sample::select(vec![opcode::PING, opcode::PONG]),
                prop::collection::vec(any::<u8>(), 0..=125)
            )
                .prop_map(|(op, payload)| Ctl { op, payload }),
            Just(Ctl {
                op: opcode::CLOSE,
                payload: vec![]
            }),
            (
                prop::sample::select(vec![1000u16, 1001, 1011, 4000]),
                "[a-zé😀]{0,40}"
            )
                .prop_map(|(c, r)| Ctl {
                    op: opcode::CLOSE,
                    payload: close::close_payload(c, &r)
                }),
        ]
    }

    fn data(max_len: usize) -> impl Strategy<Value = Spec> {
        let payload = prop_oneof![
            prop::collection::vec(any::<char>(), 0..max_len / 4 + 1)
                .prop_map(|cs| (true, cs.into_iter().collect::<String>().into_bytes())),
            prop::collection::vec(any::<u8>(), 0..max_len).prop_map(|b| (false, b)),
        ];
        payload.prop_flat_map(|(text, payload)| {
            let n = payload.len();
            (
                Just(text),
                Just(payload),
                prop::collection::vec(0..=n, 0..4),
                prop::collection::vec((0usize..4, ctl()), 0..3),
            )
                .prop_map(|(text, payload, mut cuts, inserts)| {
                    cuts.sort_unstable();
                    Spec::Data {
                        text,
                        payload,
                        cuts,
                        inserts,
                    }
                })
        })
    }

    fn stream(max_len: usize) -> impl Strategy<Value = Vec<Spec>> {
        prop::collection::vec(
            prop_oneof![3 => data(max_len), 1 => ctl().prop_map(Spec::Control)],
            0..6,
        )
    }

    /// Encodes the specs (masked with varying keys when `masked`) and returns
    /// the bytes and the events they must produce.
    fn encode(specs: &[Spec], masked: bool, keys: &[[u8; 4]]) -> (Vec<u8>, Vec<Owned>) {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut k = 0;
        let mut next_mask = || {
            k += 1;
            masked.then(|| keys[k % keys.len()])
        };
        for spec in specs {
            match spec {
                Spec::Control(c) => {
                    frame::write_frame(&mut out, true, c.op, next_mask(), &c.payload);
                    expected.push(c.expected());
                }
                Spec::Data {
                    text,
                    payload,
                    cuts,
                    inserts,
                } => {
                    let mut bounds = vec![0];
                    bounds.extend(cuts);
                    bounds.push(payload.len());
                    let pieces: Vec<&[u8]> =
                        bounds.windows(2).map(|w| &payload[w[0]..w[1]]).collect();
                    for (i, piece) in pieces.iter().enumerate() {
                        let op = match (i, text) {
                            (0, true) => opcode::TEXT,
                            (0, false) => opcode::BINARY,
                            _ => opcode::CONTINUATION,
                        };
                        let fin = i + 1 == pieces.len();
                        frame::write_frame(&mut out, fin, op, next_mask(), piece);
                        if !fin {
                            for (_, c) in inserts.iter().filter(|(at, _)| *at == i) {
                                frame::write_frame(&mut out, true, c.op, next_mask(), &c.payload);
                                expected.push(c.expected());
                            }
                        }
                    }
                    expected.push(if *text {
                        Owned::Text(String::from_utf8(payload.clone()).unwrap())
                    } else {
                        Owned::Binary(payload.clone())
                    });
                }
            }
        }
        (out, expected)
    }

    fn split_at_points<'b>(bytes: &'b [u8], points: &[usize]) -> Vec<&'b [u8]> {
        let mut bounds: Vec<usize> = points.iter().map(|&p| p.min(bytes.len())).collect();
        bounds.push(0);
        bounds.push(bytes.len());
        bounds.sort_unstable();
        bounds.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the chunking, the same events come out, and they are the
        /// messages that went in.
        #[test]
        fn resumable_decoding_at_random_splits(
            specs in stream(400),
            keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            masked_role in any::<bool>(),
            drop_idle in any::<bool>(),
        ) {
            let role = if masked_role { Role::Server } else { Role::Client };
            let (bytes, expected) = encode(&specs, masked_role, &keys);
            let limits = Limits::default();

            let whole = feed(role, &limits, &[&bytes], false);
            prop_assert_eq!(&whole, &Ok((expected.clone(), 0)));

            let points: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();
            let chunks = split_at_points(&bytes, &points);
            prop_assert_eq!(&feed(role, &limits, &chunks, drop_idle), &whole);

            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&feed(role, &limits, &bytewise, drop_idle), &whole);
        }

        /// Smaller streams, split at every single point.
        #[test]
        fn resumable_decoding_at_every_split(
            specs in stream(40),
            key in any::<[u8; 4]>(),
        ) {
            let (bytes, expected) = encode(&specs, true, &[key]);
            let limits = Limits::default();
            let whole = Ok((expected, 0));
            prop_assert_eq!(&feed(Role::Server, &limits, &[&bytes], false), &whole);
            for i in 0..=bytes.len() {
                let (a, b) = bytes.split_at(i);
                prop_assert_eq!(&feed(Role::Server, &limits, &[a, b], true), &whole, "split at {}", i);
            }
        }

        /// Random bytes: never a panic, and consumed bytes stay in bounds.
        #[test]
        fn garbage_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            role in prop::sample::select(vec![Role::Server, Role::Client]),
            max_frame_bytes in 0usize..200,
            max_message_bytes in 0usize..300,
            max_fragments in 0usize..5,
        ) {
            let limits = Limits { max_frame_bytes, max_message_bytes, max_fragments };
            let _ = feed(role, &limits, &[&bytes], false);
        }

        /// Valid streams with a few bytes corrupted reach deeper states than
        /// pure noise: still no panic, and any error is a listed violation.
        #[test]
        fn corrupted_streams_never_panic(
            specs in stream(100),
            key in any::<[u8; 4]>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let (mut bytes, _) = encode(&specs, true, &[key]);
            if bytes.is_empty() {
                return Ok(());
            }
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            let limits = Limits { max_frame_bytes: 300, max_message_bytes: 300, max_fragments: 4 };
            if let Err(e) = feed(Role::Server, &limits, &[&bytes], false) {
                prop_assert!(matches!(e.code, 1002 | 1007 | 1009), "{:?}", e);
            }
        }
    }
}
