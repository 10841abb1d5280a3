//! Incremental UTF-8 validation for text messages that arrive in fragments.
//!
//! RFC 6455 §8.1 lets an endpoint fail a connection as soon as a text message
//! can no longer be valid UTF-8, and a fragmented message may split a
//! character across frames. [`Utf8Validator`] carries only the character cut
//! at a chunk boundary (its first byte and how many bytes of it arrived), so
//! it is 2 bytes and `Copy`. The bulk of each chunk goes through
//! [`std::str::from_utf8`], which is fast and exact; this module only stitches
//! the chunk edges together.

/// The bytes fed so far can never become valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct Utf8Error;

/// Marks a validator that has already failed: `seen` never reaches this for a
/// real sequence (at most 3 bytes of one can be pending).
const POISONED: u8 = u8::MAX;

/// Validates a byte stream fed in arbitrary pieces.
///
/// Its verdict equals `std::str::from_utf8` on the concatenation: every
/// `feed` succeeds and [`is_complete`](Self::is_complete) is true exactly when
/// the whole is valid. It fails at the first byte that no valid continuation
/// could follow (overlongs, surrogates, code points past U+10FFFF, stray
/// continuation bytes, bytes 0xF5..=0xFF), not at the end of the message.
/// Once failed, every later `feed` fails too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// First byte of the pending (incomplete) character; meaningless when
    /// `seen == 0`.
    lead: u8,
    /// Bytes of the pending character received so far: 0 = none pending,
    /// 1..=3 = pending, [`POISONED`] = failed.
    seen: u8,
}

/// Total length of the sequence that `lead` starts (only called for leads that
/// std accepted as the start of a truncated sequence).
fn sequence_len(lead: u8) -> u8 {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Whether `byte` may follow `lead` as the second byte. The narrowed ranges
/// reject overlongs (E0, F0), surrogates (ED) and code points past U+10FFFF
/// (F4) at the second byte already (RFC 3629 §4).
fn valid_second(lead: u8, byte: u8) -> bool {
    match lead {
        0xE0 => (0xA0..=0xBF).contains(&byte),
        0xED => (0x80..=0x9F).contains(&byte),
        0xF0 => (0x90..=0xBF).contains(&byte),
        0xF4 => (0x80..=0x8F).contains(&byte),
        _ => (0x80..=0xBF).contains(&byte),
    }
}

impl Utf8Validator {
    /// Checks the next piece of the stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        if self.seen == POISONED {
            return Err(Utf8Error);
        }
        let mut rest = bytes;
        if self.seen > 0 {
            // Finish the character cut at the previous boundary byte by byte,
            // so a bad byte fails right here.
            let total = sequence_len(self.lead);
            while self.seen < total {
                let Some((&byte, tail)) = rest.split_first() else {
                    return Ok(());
                };
                let ok = if self.seen == 1 {
                    valid_second(self.lead, byte)
                } else {
                    (0x80..=0xBF).contains(&byte)
                };
                if !ok {
                    return self.fail();
                }
                self.seen += 1;
                rest = tail;
            }
            *self = Self::default();
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => self.fail(),
                None => {
                    // std reports `None` only when the input ends inside a
                    // sequence whose bytes so far are all valid: keep it.
                    let tail = &rest[e.valid_up_to()..];
                    debug_assert!((1..=3).contains(&tail.len()));
                    self.lead = tail[0];
                    self.seen = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// True when no character is cut off at the end of what was fed (and
    /// nothing failed): the stream may end here.
    pub fn is_complete(&self) -> bool {
        self.seen == 0
    }

    fn fail(&mut self) -> Result<(), Utf8Error> {
        self.seen = POISONED;
        Err(Utf8Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<bool, Utf8Error> {
        let mut v = Utf8Validator::default();
        for c in chunks {
            v.feed(c)?;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn size_is_two_bytes() {
        assert_eq!(std::mem::size_of::<Utf8Validator>(), 2);
    }

    #[test]
    fn split_characters_are_accepted() {
        let s = "aé€😀z".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(feed_all(&[&s[..i], &s[i..j], &s[j..]]), Ok(true));
            }
        }
    }

    #[test]
    fn truncated_end_is_incomplete_not_error() {
        assert_eq!(feed_all(&[b"ab\xE2\x82"]), Ok(false));
        assert_eq!(feed_all(&[b"\xF0", b"\x9F", b"\x98"]), Ok(false));
        assert_eq!(feed_all(&[b"\xF0", b"\x9F", b"\x98", b"\x80"]), Ok(true));
    }

    #[test]
    fn fails_at_first_impossible_byte_across_chunks() {
        let mut v = Utf8Validator::default();
        // Overlong 3-byte lead E0 needs A0..=BF next.
        assert_eq!(v.feed(b"ok\xE0"), Ok(()));
        assert_eq!(v.feed(b"\x80"), Err(Utf8Error));
        // Poisoned for good.
        assert_eq!(v.feed(b"a"), Err(Utf8Error));
        assert!(!v.is_complete());

        let cases: &[(&[u8], &[u8])] = &[
            (b"\xED", b"\xA0"),      // surrogate D800
            (b"\xF4", b"\x90"),      // > U+10FFFF
            (b"\xF0", b"\x8F"),      // overlong 4-byte
            (b"\xE2\x82", b"A"),     // non-continuation third byte
            (b"\xF0\x9F\x98", b"("), // non-continuation fourth byte
        ];
        for (a, b) in cases {
            let mut v = Utf8Validator::default();
            assert_eq!(v.feed(a), Ok(()), "{a:x?}");
            assert_eq!(v.feed(b), Err(Utf8Error), "{a:x?} {b:x?}");
        }
        // Bytes that can never start a sequence fail on their own.
        for b in [0x80u8, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF] {
            assert_eq!(
                Utf8Validator::default().feed(&[b]),
                Err(Utf8Error),
                "{b:#x}"
            );
        }
    }

    /// Byte strings biased toward multi-byte UTF-8 and the sequences that are
    /// almost valid (overlongs, surrogates, truncations, stray continuations).
    fn near_utf8() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            2 => "[a-z€é😀\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}]{1,4}".prop_map(String::into_bytes),
            2 => any::<char>().prop_flat_map(|c| {
                let b = c.to_string().into_bytes();
                let n = b.len();
                (Just(b), 0..=n).prop_map(|(b, k)| b[..k].to_vec())
            }),
            2 => prop::sample::select(vec![
                vec![0xC0u8, 0x80], vec![0xC1, 0xBF], vec![0xE0, 0x80, 0x80], vec![0xE0, 0x9F, 0xBF],
                vec![0xED, 0xA0, 0x80], vec![0xED, 0xBF, 0xBF], vec![0xF0, 0x80, 0x80, 0x80],
                vec![0xF0, 0x8F, 0xBF, 0xBF], vec![0xF4, 0x90, 0x80, 0x80], vec![0xF5, 0x80, 0x80, 0x80],
                vec![0xFF], vec![0x80], vec![0xBF], vec![0xED, 0x9F, 0xBF], vec![0xF4, 0x8F, 0xBF, 0xBF],
            ]),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    /// Index of the first byte after which the prefix can never become valid,
    /// by std's own definition (`error_len` is `Some` only for a definite
    /// error, `None` for "ended inside a character").
    fn first_bad_byte(s: &[u8]) -> Option<usize> {
        (0..s.len())
            .find(|&i| matches!(std::str::from_utf8(&s[..=i]), Err(e) if e.error_len().is_some()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn verdict_equals_std_at_random_splits(
            s in near_utf8(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(s.len() + 1)).collect();
            points.push(0);
            points.push(s.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &s[w[0]..w[1]]).collect();

            let mut v = Utf8Validator::default();
            let mut failed_at_chunk = None;
            for (i, c) in chunks.iter().enumerate() {
                if v.feed(c).is_err() {
                    failed_at_chunk = Some(i);
                    break;
                }
            }
            let ours = failed_at_chunk.is_none() && v.is_complete();
            prop_assert_eq!(ours, std::str::from_utf8(&s).is_ok());

            // It fails in exactly the chunk holding the first impossible byte.
            let expected_chunk = first_bad_byte(&s)
                .map(|bad| points.windows(2).position(|w| w[0] <= bad && bad < w[1]).unwrap());
            prop_assert_eq!(failed_at_chunk, expected_chunk);
        }

        #[test]
        fn byte_at_a_time_fails_at_first_bad_byte(s in near_utf8()) {
            let mut v = Utf8Validator::default();
            let failed = s.iter().position(|b| v.feed(std::slice::from_ref(b)).is_err());
            prop_assert_eq!(failed, first_bad_byte(&s));
            if failed.is_none() {
                prop_assert_eq!(v.is_complete(), std::str::from_utf8(&s).is_ok());
            }
        }
    }
}
