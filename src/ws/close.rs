//! Close codes and Close frame payloads (RFC 6455 §5.5.1, §7.4).
//!
//! A Close payload is empty, or a 2-byte big-endian code followed by a UTF-8
//! reason; the whole payload is a control-frame payload, so at most 125 bytes.
//! This module owns which codes a peer may put on the wire and how a payload
//! is read and written; it does not decide when to close.

use super::message::Violation;

/// The purpose of the connection is fulfilled.
pub const NORMAL: u16 = 1000;
/// The endpoint goes away (server shutting down, page navigated away).
/// Phoenix uses it for an application-requested disconnect.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the framing or message rules.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The peer sent a kind of data this endpoint does not accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Data inconsistent with the message type, e.g. invalid UTF-8 in a text
/// message or a close reason.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A generic policy reason, when no more specific code fits.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message exceeded a configured limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// The server restarts (Phoenix sends it when draining for shutdown); the
/// client should reconnect.
pub const SERVICE_RESTART: u16 = 1012;
/// The server is overloaded for now; the client should reconnect later (ringgate sends it to the
/// members of topics whose broadcasts a stalled worker had to drop).
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Longest close reason in bytes: 125-byte control payload minus the 2-byte code.
pub const MAX_REASON_BYTES: usize = 123;

/// Whether a peer may send `code` in a Close frame.
///
/// Allowed: 1000-1003 and 1007-1014 (RFC 6455 §7.4.1 plus the IANA registry:
/// 1012 restart, 1013 try again later, 1014 bad gateway) and 3000-4999
/// (registered and private use). Refused: below 1000 (unused), 1004
/// (reserved), 1005/1006/1015 (RFC: "MUST NOT be set ... by an endpoint",
/// they only report a missing code, an abnormal close, a TLS failure to the
/// local application), 1016-2999 (reserved for future RFCs), 5000 and up.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads a received Close payload: `None` when empty, else code and reason.
///
/// A 1-byte payload or a code a peer may not send is a protocol error (1002);
/// a reason that is not UTF-8 is 1007. The 125-byte cap is the frame layer's
/// job (it applies to every control frame).
pub fn parse_close_payload(p: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match p {
        [] => Ok(None),
        [_] => Err(Violation::CLOSE_PAYLOAD_ONE_BYTE),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_wire_code(code) {
                return Err(Violation::CLOSE_CODE_INVALID);
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| Violation::CLOSE_REASON_NOT_UTF8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Longest prefix of `reason` that fits a Close payload and ends on a char
/// boundary (so the truncated reason stays valid UTF-8).
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Builds a Close payload: `code` big-endian, then `reason` truncated at a char
/// boundary so the payload fits 125 bytes.
///
/// `code` should satisfy [`is_valid_wire_code`]; sending 1005/1006/1015 is a
/// bug in the caller, checked in debug builds.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    debug_assert!(
        is_valid_wire_code(code),
        "close code {code} may not be sent"
    );
    let reason = truncate_reason(reason);
    let mut out = Vec::with_capacity(2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(code: u16, reason: &'static str) -> Violation {
        Violation { code, reason }
    }

    #[test]
    fn wire_code_table() {
        let valid: Vec<u16> = (0..=u16::MAX).filter(|&c| is_valid_wire_code(c)).collect();
        let mut expected: Vec<u16> = vec![1000, 1001, 1002, 1003];
        expected.extend(1007..=1014);
        expected.extend(3000..=4999);
        assert_eq!(valid, expected);
        for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!is_valid_wire_code(c), "{c}");
        }
        for c in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED_DATA,
            INVALID_PAYLOAD,
            POLICY_VIOLATION,
            MESSAGE_TOO_BIG,
            INTERNAL_ERROR,
            SERVICE_RESTART,
        ] {
            assert!(is_valid_wire_code(c), "{c}");
        }
    }

    #[test]
    fn named_codes_have_rfc_values() {
        assert_eq!(
            [NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA],
            [1000, 1001, 1002, 1003]
        );
        assert_eq!(
            [
                INVALID_PAYLOAD,
                POLICY_VIOLATION,
                MESSAGE_TOO_BIG,
                INTERNAL_ERROR,
                SERVICE_RESTART
            ],
            [1007, 1008, 1009, 1011, 1012]
        );
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(
            parse_close_payload(b"\x03"),
            Err(v(1002, "close payload of 1 byte"))
        );
        assert_eq!(parse_close_payload(b"\x03\xe8"), Ok(Some((1000, ""))));
        assert_eq!(parse_close_payload(b"\x0f\xa0bye"), Ok(Some((4000, "bye"))));
        assert_eq!(
            parse_close_payload(b"\x03\xedok"),
            Err(v(1002, "invalid close code"))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xee"),
            Err(v(1002, "invalid close code"))
        );
        assert_eq!(
            parse_close_payload(b"\x00\x00"),
            Err(v(1002, "invalid close code"))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xff"),
            Err(v(1007, "close reason is not UTF-8"))
        );
        // Code check comes before the reason check.
        assert_eq!(
            parse_close_payload(b"\x03\xed\xff"),
            Err(v(1002, "invalid close code"))
        );
    }

    #[test]
    fn build_payloads() {
        assert_eq!(close_payload(1000, ""), b"\x03\xe8");
        assert_eq!(close_payload(1001, "bye"), b"\x03\xe9bye");
        // 200 ASCII bytes: cut to exactly 123.
        let long = "x".repeat(200);
        let p = close_payload(1008, &long);
        assert_eq!(p.len(), 125);
        assert_eq!(&p[2..], &long.as_bytes()[..123]);
        // 'é' is 2 bytes: 61 of them = 122 bytes, the 62nd would cross 123.
        let accents = "é".repeat(100);
        let p = close_payload(1008, &accents);
        assert_eq!(p.len(), 2 + 122);
        assert_eq!(parse_close_payload(&p), Ok(Some((1008, &accents[..122]))));
        // '😀' is 4 bytes: 30 of them = 120 bytes.
        let emoji = "😀".repeat(40);
        assert_eq!(close_payload(1000, &emoji).len(), 2 + 120);
    }

    proptest! {
        #[test]
        fn built_payload_round_trips(code in prop::sample::select(vec![1000u16, 1001, 1008, 1011, 3000, 4999]), reason in "[a-zé€😀]{0,80}") {
            let p = close_payload(code, &reason);
            prop_assert!(p.len() <= 125);
            let (c, r) = parse_close_payload(&p).unwrap().unwrap();
            prop_assert_eq!(c, code);
            prop_assert!(reason.starts_with(r));
            if reason.len() <= MAX_REASON_BYTES {
                prop_assert_eq!(r, reason.as_str());
            } else {
                // Cut at most one partial char (< 4 bytes) short of the cap.
                prop_assert!(r.len() > MAX_REASON_BYTES - 4 && r.len() <= MAX_REASON_BYTES);
            }
        }

        #[test]
        fn garbage_never_panics(p in prop::collection::vec(any::<u8>(), 0..130)) {
            let _ = parse_close_payload(&p);
        }
    }
}
