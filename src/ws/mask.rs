//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.
//!
//! Every client-to-server payload is masked, so every byte a client sends passes
//! through here once. The key repeats every 4 bytes, so 8 bytes can be XORed at
//! once with the key written twice into a `u64`; the compiler turns the
//! `chunks_exact` loop into wide vector loads without any `unsafe`.
//!
//! `offset` lets a payload be unmasked in pieces (e.g. as it arrives) without
//! copying it together first: it is the index of `buf[0]` inside the payload,
//! and only `offset % 4` matters.

/// XORs `buf` in place with `key`, as if `buf` started at byte `offset` of the
/// masked payload. Masking and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that `key_rot[0]` applies to `buf[0]`.
    let shift = offset % 4;
    let key_rot = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let mut doubled = [0u8; 8];
    doubled[..4].copy_from_slice(&key_rot);
    doubled[4..].copy_from_slice(&key_rot);
    // Native endianness on both sides: the word is only a bag of 8 bytes.
    let key_word = u64::from_ne_bytes(doubled);

    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let masked = u64::from_ne_bytes(bytes) ^ key_word;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // A whole number of 8-byte words keeps the key phase, so the tail starts
    // at `key_rot[0]` again.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key_rot[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition from RFC 6455 §5.3, one byte at a time.
    fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn offset_rotates_the_key() {
        let mut buf = [0u8; 3];
        apply_mask(&mut buf, [1, 2, 3, 4], 2);
        assert_eq!(buf, [3, 4, 1]);
        let mut buf = [0u8; 3];
        apply_mask(&mut buf, [1, 2, 3, 4], 7);
        assert_eq!(buf, [4, 1, 2]);
    }

    #[test]
    fn empty_buffer_is_fine() {
        let mut buf: [u8; 0] = [];
        apply_mask(&mut buf, [1, 2, 3, 4], 3);
    }

    #[test]
    fn pieces_equal_whole_for_every_split() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original: Vec<u8> = (0..41u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..=original.len() {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    proptest! {
        /// Every start alignment (slice start 0..16 inside a larger buffer),
        /// every offset phase, every length up to past several words.
        #[test]
        fn word_path_equals_bytewise(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            key in any::<[u8; 4]>(),
            align in 0usize..16,
            offset in 0usize..64,
        ) {
            let align = align.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast[align..], key, offset);
            apply_mask_bytewise(&mut slow[align..], key, offset);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn word_path_equals_bytewise_exhaustive_small() {
        // Deterministic sweep of every alignment x offset x length in a small
        // range, so the edge cases do not depend on the random generator.
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        for align in 0..8 {
            for offset in 0..8 {
                for len in 0..(64 - align) {
                    let mut fast = data.clone();
                    let mut slow = data.clone();
                    apply_mask(&mut fast[align..align + len], key, offset);
                    apply_mask_bytewise(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "align {align} offset {offset} len {len}");
                }
            }
        }
    }
}
