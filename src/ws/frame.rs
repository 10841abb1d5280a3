//! Frame header codec and whole-frame encoders (RFC 6455 §5.2).
//!
//! Decoding here is purely structural: it reads the header and reports how
//! long it is, and refuses only what cannot be represented (a 64-bit length
//! with the top bit set). Which frames are *allowed* (RSV bits, opcodes,
//! masking, sizes, sequencing) is decided by [`super::message`], which knows
//! the role and the limits.
//!
//! Encoders build a whole frame in one exactly-sized allocation, so the
//! resulting `Bytes` owns a single buffer (the first `clone` of a `Bytes` made
//! from a `Vec` adds one small refcount block; later clones are a refcount
//! increment). Server frames are unmasked, hence byte-identical for every
//! receiver: a broadcast is encoded once and shared.

use bytes::Bytes;

use super::close;
use super::mask::apply_mask;
use super::message::Violation;

/// Frame opcodes (RFC 6455 §5.2). 3-7 and 11-15 are reserved.
pub mod opcode {
    /// Continues a fragmented text or binary message.
    pub const CONTINUATION: u8 = 0x0;
    /// First (or only) frame of a UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// First (or only) frame of a binary message.
    pub const BINARY: u8 = 0x2;
    /// Closing handshake; the payload is a code and reason (see the `close` module).
    pub const CLOSE: u8 = 0x8;
    /// Keep-alive request; the receiver answers with a Pong of the same payload.
    pub const PING: u8 = 0x9;
    /// Answer to a Ping, or an unsolicited heartbeat.
    pub const PONG: u8 = 0xA;

    /// Control frames (Close, Ping, Pong) have the high opcode bit set.
    pub fn is_control(op: u8) -> bool {
        op & 0x8 != 0
    }

    /// Whether `op` is one of the six opcodes RFC 6455 defines.
    pub fn is_defined(op: u8) -> bool {
        matches!(op, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG)
    }
}

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest possible header: 2 fixed + 8 extended length + 4 mask.
pub const MAX_HEADER_BYTES: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits (RSV1 = 0b100). Non-zero only with an
    /// extension, and ringgate negotiates none.
    pub rsv: u8,
    /// 4-bit opcode, see [`opcode`].
    pub opcode: u8,
    /// Masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes as declared by the header.
    pub payload_len: u64,
}

/// Reads a frame header from the front of `buf`.
///
/// `Ok(None)`: `buf` does not hold the whole header yet (nothing consumed).
/// `Ok(Some((header, n)))`: the header occupies `buf[..n]`. Non-minimal length
/// encodings are accepted (RFC 6455 says "minimal number of bytes MUST be
/// used" for the sender, but refusing them buys nothing). A 64-bit length
/// with the most significant bit set is a protocol error (§5.2).
pub fn decode_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(ext) => (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(ext) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(Violation::LENGTH_MSB_SET);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(key) => {
                pos += 4;
                Some([key[0], key[1], key[2], key[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    let header = Header {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        mask,
        payload_len,
    };
    Ok(Some((header, pos)))
}

/// Bytes [`write_header`] emits for a payload of `payload_len` bytes.
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let ext = match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// Appends a frame header with the minimal length encoding. With `mask`, the
/// key is written but the payload is not touched: the caller masks it.
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload_len: usize,
) {
    debug_assert!(opcode <= 0xF, "opcode {opcode} does not fit 4 bits");
    let b0 = if fin { 0x80 } else { 0 } | (opcode & 0x0F);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    match payload_len {
        0..=125 => out.push(mask_bit | payload_len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Appends a whole frame: header, then `payload` (masked with `mask` if given).
/// The building block of the encoders below; also lets a client write
/// fragmented messages (`fin = false`) or several frames into one buffer.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    out.reserve(header_len(payload.len(), mask.is_some()) + payload.len());
    write_header(out, fin, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

fn single_frame(opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Bytes {
    let total = header_len(payload.len(), mask.is_some()) + payload.len();
    let mut out = Vec::with_capacity(total);
    write_frame(&mut out, true, opcode, mask, payload);
    // len == capacity lets `Bytes::from` take the buffer without reallocating.
    debug_assert_eq!(out.len(), out.capacity());
    Bytes::from(out)
}

/// A complete unmasked frame (FIN set) as a server sends it.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Bytes {
    single_frame(opcode, None, payload)
}

/// A complete masked frame (FIN set) as a client sends it. `mask` should be
/// unpredictable to third parties (RFC 6455 §5.3); a load generator may use
/// any key.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Bytes {
    single_frame(opcode, Some(mask), payload)
}

/// A server Close frame carrying `code` and `reason` (truncated at a char
/// boundary to fit the 125-byte control payload).
pub fn server_close_frame(code: u16, reason: &str) -> Bytes {
    debug_assert!(
        close::is_valid_wire_code(code),
        "close code {code} may not be sent"
    );
    let reason = close::truncate_reason(reason);
    let payload_len = 2 + reason.len();
    let mut out = Vec::with_capacity(header_len(payload_len, false) + payload_len);
    write_header(&mut out, true, opcode::CLOSE, None, payload_len);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    debug_assert_eq!(out.len(), out.capacity());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload_len: u64) -> Header {
        Header {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7.
        let unmasked_hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(&server_frame(opcode::TEXT, b"Hello")[..], &unmasked_hello);
        assert_eq!(
            decode_header(&unmasked_hello),
            Ok(Some((hdr(true, 0, 1, None, 5), 2)))
        );

        let masked_hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            &client_frame(opcode::TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d])[..],
            &masked_hello
        );
        assert_eq!(
            decode_header(&masked_hello),
            Ok(Some((
                hdr(true, 0, 1, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
                6
            )))
        );

        // Fragmented "Hel" + "lo".
        assert_eq!(
            decode_header(&[0x01, 0x03, 0x48, 0x65, 0x6c]),
            Ok(Some((hdr(false, 0, 0x1, None, 3), 2)))
        );
        assert_eq!(
            decode_header(&[0x80, 0x02, 0x6c, 0x6f]),
            Ok(Some((hdr(true, 0, 0x0, None, 2), 2)))
        );

        // 256 bytes binary in a single unmasked frame: 0x82 0x7E 0x0100.
        let f = server_frame(opcode::BINARY, &[7u8; 256]);
        assert_eq!(&f[..4], &[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(f.len(), 4 + 256);
        // 64 KiB: 0x82 0x7F 0x0000000000010000.
        let f = server_frame(opcode::BINARY, &[7u8; 65536]);
        assert_eq!(&f[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(f.len(), 10 + 65536);
    }

    #[test]
    fn header_fields() {
        // FIN clear, RSV1 and RSV3 set, opcode 0xB.
        assert_eq!(
            decode_header(&[0b0101_1011, 0]),
            Ok(Some((hdr(false, 0b101, 0xB, None, 0), 2)))
        );
    }

    #[test]
    fn length_boundaries() {
        for len in [0usize, 1, 125, 126, 127, 0xFFFF, 0x1_0000] {
            for masked in [false, true] {
                let mask = masked.then_some([1, 2, 3, 4]);
                let mut out = Vec::new();
                write_header(&mut out, true, opcode::BINARY, mask, len);
                assert_eq!(out.len(), header_len(len, masked), "len {len}");
                assert_eq!(
                    decode_header(&out),
                    Ok(Some((hdr(true, 0, 2, mask, len as u64), out.len())))
                );
            }
        }
        assert_eq!(header_len(125, false), 2);
        assert_eq!(header_len(126, false), 4);
        assert_eq!(header_len(0xFFFF, true), 8);
        assert_eq!(header_len(0x1_0000, true), 14);
    }

    #[test]
    fn non_minimal_lengths_accepted() {
        assert_eq!(
            decode_header(&[0x82, 126, 0, 5]),
            Ok(Some((hdr(true, 0, 2, None, 5), 4)))
        );
        assert_eq!(
            decode_header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5]),
            Ok(Some((hdr(true, 0, 2, None, 5), 10)))
        );
    }

    #[test]
    fn msb_of_64_bit_length_is_protocol_error() {
        assert_eq!(
            decode_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Violation {
                code: 1002,
                reason: "frame length has the high bit set"
            })
        );
        // Largest legal 64-bit length decodes.
        assert_eq!(
            decode_header(&[0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(Some((hdr(true, 0, 2, None, i64::MAX as u64), 10)))
        );
    }

    #[test]
    fn every_short_prefix_needs_more() {
        let mut full = Vec::new();
        write_header(&mut full, true, opcode::TEXT, Some([9, 8, 7, 6]), 70_000);
        assert_eq!(full.len(), 14);
        for n in 0..full.len() {
            assert_eq!(decode_header(&full[..n]), Ok(None), "prefix {n}");
        }
        let mut short = Vec::new();
        write_header(&mut short, true, opcode::TEXT, Some([9, 8, 7, 6]), 300);
        for n in 0..short.len() {
            assert_eq!(decode_header(&short[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn encoders_allocate_exactly() {
        let f = server_frame(opcode::TEXT, &[b'a'; 300]);
        assert_eq!(f.len(), header_len(300, false) + 300);
        let f = client_frame(opcode::PING, b"", [1, 2, 3, 4]);
        assert_eq!(&f[..], &[0x89, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn close_frames() {
        assert_eq!(&server_close_frame(1000, "")[..], &[0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(
            &server_close_frame(1009, "too big")[..],
            &[0x88, 0x09, 0x03, 0xf1, b't', b'o', b'o', b' ', b'b', b'i', b'g']
        );
        let f = server_close_frame(1008, &"é".repeat(100));
        assert_eq!(f.len(), 2 + 2 + 122);
        assert_eq!(&f[2..], &close::close_payload(1008, &"é".repeat(100))[..]);
    }

    #[test]
    fn write_frame_fragment_and_mask() {
        let mut out = Vec::new();
        write_frame(&mut out, false, opcode::TEXT, Some([1, 1, 1, 1]), b"ab");
        write_frame(&mut out, true, opcode::CONTINUATION, None, b"c");
        assert_eq!(
            out,
            [0x01, 0x82, 1, 1, 1, 1, b'a' ^ 1, b'b' ^ 1, 0x80, 0x01, b'c']
        );
    }

    proptest! {
        #[test]
        fn header_round_trip(
            fin in any::<bool>(),
            op in 0u8..16,
            mask in any::<Option<[u8; 4]>>(),
            len in prop_oneof![0usize..130, 65530usize..65541, 0usize..(1 << 40)],
        ) {
            let mut out = Vec::new();
            write_header(&mut out, fin, op, mask, len);
            prop_assert_eq!(out.len(), header_len(len, mask.is_some()));
            out.extend_from_slice(b"trailing");
            prop_assert_eq!(
                decode_header(&out),
                Ok(Some((hdr(fin, 0, op, mask, len as u64), header_len(len, mask.is_some()))))
            );
        }

        #[test]
        fn garbage_never_panics(buf in prop::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(Some((h, n))) = decode_header(&buf) {
                prop_assert!(n <= buf.len() && n <= MAX_HEADER_BYTES);
                prop_assert!(h.rsv < 8 && h.opcode < 16);
            }
        }
    }
}
