//! The joined topics of one connection, in as few bytes as safe Rust allows, because the
//! gateway holds millions of idle connections with a budget of ~128 bytes each (docs/performance.md, "Idle joined connections").
//!
//! - A topic is a [`TopicId`] (4 bytes) interned by the host, never a string.
//! - A join_ref of up to [`INLINE_JOIN_REF_MAX_BYTES`] bytes is stored inline; longer ones
//!   are boxed. 19 bytes hold any non-negative 64-bit counter in decimal, and every official
//!   client's refs are decimal counters ("1", "2", …), so the box is for exotic clients.
//! - The set is empty (no heap), one inline entry (no heap), or a boxed `Vec` for two or
//!   more; leaving shrinks it back.
//!
//! Sizes (x86_64 and every 64-bit target; checked at compile time below): an entry is 24
//! bytes, the whole set is 24 bytes. The trick is [`InlineLen`]: an enum with 21 valid
//! values, so the compiler encodes the entry's and the set's variant tags in its 235 spare
//! values instead of adding tag bytes.

use std::mem::size_of;

use super::TopicId;

/// The longest join_ref stored without a heap allocation.
pub const INLINE_JOIN_REF_MAX_BYTES: usize = 19;

/// The length of an inline join_ref, or `Absent` for a channel joined without any ref.
/// An enum rather than a `u8` for its niche (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InlineLen {
    L0 = 0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
    L16,
    L17,
    L18,
    L19,
    Absent,
}

/// `INLINE_LENS[n]` is the `InlineLen` for `n` bytes: a safe conversion from `usize`.
const INLINE_LENS: [InlineLen; INLINE_JOIN_REF_MAX_BYTES + 1] = [
    InlineLen::L0,
    InlineLen::L1,
    InlineLen::L2,
    InlineLen::L3,
    InlineLen::L4,
    InlineLen::L5,
    InlineLen::L6,
    InlineLen::L7,
    InlineLen::L8,
    InlineLen::L9,
    InlineLen::L10,
    InlineLen::L11,
    InlineLen::L12,
    InlineLen::L13,
    InlineLen::L14,
    InlineLen::L15,
    InlineLen::L16,
    InlineLen::L17,
    InlineLen::L18,
    InlineLen::L19,
];

/// One joined channel: its topic and the join_ref that identifies this join of it.
#[derive(Debug)]
pub enum Entry {
    Inline {
        topic: TopicId,
        len: InlineLen,
        bytes: [u8; INLINE_JOIN_REF_MAX_BYTES],
    },
    /// A thin pointer (8 bytes) rather than `Box<str>` (16) keeps the entry at 24 bytes.
    Boxed {
        topic: TopicId,
        join_ref: Box<Box<str>>,
    },
    /// A V2 join sent with a null `join_ref` but a `ref`: the channel's join_ref (on its replies)
    /// is the join's `ref`, while the join's own `join_ref`, the one messages are matched
    /// against and `phx_close` carries, is null. Boxed: official clients never send this.
    Keyless {
        topic: TopicId,
        channel_ref: Box<Box<str>>,
    },
}

impl Entry {
    pub fn new(topic: TopicId, join_ref: Option<&str>) -> Self {
        let Some(join_ref) = join_ref else {
            return Entry::Inline {
                topic,
                len: InlineLen::Absent,
                bytes: [0; INLINE_JOIN_REF_MAX_BYTES],
            };
        };
        match INLINE_LENS.get(join_ref.len()) {
            Some(&len) => {
                let mut bytes = [0; INLINE_JOIN_REF_MAX_BYTES];
                bytes[..join_ref.len()].copy_from_slice(join_ref.as_bytes());
                Entry::Inline { topic, len, bytes }
            }
            None => Entry::Boxed {
                topic,
                join_ref: Box::new(join_ref.into()),
            },
        }
    }

    /// A join whose `join_ref` was null: `channel_ref` (the join's `ref`) is the channel's
    /// join_ref, the match key is null.
    pub fn keyless(topic: TopicId, channel_ref: &str) -> Self {
        Entry::Keyless {
            topic,
            channel_ref: Box::new(channel_ref.into()),
        }
    }

    pub fn topic(&self) -> TopicId {
        match self {
            Entry::Inline { topic, .. }
            | Entry::Boxed { topic, .. }
            | Entry::Keyless { topic, .. } => *topic,
        }
    }

    /// The join's own `join_ref`, as the socket keeps it: what a message's `join_ref` is
    /// matched against and what `phx_close` carries.
    pub fn key(&self) -> Option<&str> {
        match self {
            Entry::Keyless { .. } => None,
            _ => self.join_ref(),
        }
    }

    /// The channel's join_ref, written on its replies.
    pub fn join_ref(&self) -> Option<&str> {
        match self {
            Entry::Inline {
                len: InlineLen::Absent,
                ..
            } => None,
            Entry::Inline { len, bytes, .. } => {
                // The bytes were copied whole from a `&str`, so this cannot fail; the
                // fallback only avoids `unsafe` for a check that costs nanoseconds.
                std::str::from_utf8(&bytes[..*len as usize]).ok()
            }
            Entry::Boxed { join_ref, .. } => Some(join_ref),
            Entry::Keyless { channel_ref, .. } => Some(channel_ref),
        }
    }
}

/// Empty, one inline entry, or two or more on the heap. Topics are unique within a set.
#[derive(Debug, Default)]
pub enum Store {
    #[default]
    Empty,
    One(Entry),
    /// Boxed: a thin pointer keeps the store at 24 bytes, a `Vec` inline would make it 32.
    /// Connections with two or more topics pay one extra allocation for it.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Entry>>),
}

impl Store {
    pub fn len(&self) -> usize {
        match self {
            Store::Empty => 0,
            Store::One(_) => 1,
            Store::Many(entries) => entries.len(),
        }
    }

    pub fn find(&self, topic: TopicId) -> Option<&Entry> {
        match self {
            Store::Empty => None,
            Store::One(entry) => (entry.topic() == topic).then_some(entry),
            Store::Many(entries) => entries.iter().find(|e| e.topic() == topic),
        }
    }

    /// Adds an entry for a topic not in the set (the caller removes a duplicate first).
    pub fn insert(&mut self, entry: Entry) {
        debug_assert!(
            self.find(entry.topic()).is_none(),
            "topic already in the set"
        );
        *self = match std::mem::take(self) {
            Store::Empty => Store::One(entry),
            Store::One(first) => Store::Many(Box::new(vec![first, entry])),
            Store::Many(mut entries) => {
                entries.push(entry);
                Store::Many(entries)
            }
        };
    }

    /// Removes and returns the entry of `topic`, shrinking back to `One` or `Empty` so a
    /// connection that left its extra topics holds no heap memory.
    pub fn remove(&mut self, topic: TopicId) -> Option<Entry> {
        match std::mem::take(self) {
            Store::Empty => None,
            Store::One(entry) if entry.topic() == topic => Some(entry),
            one @ Store::One(_) => {
                *self = one;
                None
            }
            Store::Many(mut entries) => {
                let removed = entries
                    .iter()
                    .position(|e| e.topic() == topic)
                    .map(|i| entries.swap_remove(i));
                *self = if entries.len() == 1 {
                    entries.pop().map_or(Store::Empty, Store::One)
                } else {
                    Store::Many(entries)
                };
                removed
            }
        }
    }

    /// Empties the set, calling `f` with each topic that was in it.
    pub fn empty_topics(&mut self, mut f: impl FnMut(TopicId)) {
        match std::mem::take(self) {
            Store::Empty => {}
            Store::One(entry) => f(entry.topic()),
            Store::Many(entries) => entries.iter().for_each(|e| f(e.topic())),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        let (one, many): (Option<&Entry>, &[Entry]) = match self {
            Store::Empty => (None, &[]),
            Store::One(entry) => (Some(entry), &[]),
            Store::Many(entries) => (None, entries),
        };
        one.into_iter().chain(many)
    }
}

pub const ENTRY_BYTES: usize = 24;
pub const STORE_BYTES: usize = 24;

// The per-connection budget depends on these; a layout change must be a conscious one.
const _: () = assert!(size_of::<Entry>() <= ENTRY_BYTES);
const _: () = assert!(size_of::<Store>() <= STORE_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(size_of::<Entry>(), ENTRY_BYTES);
        assert_eq!(size_of::<Store>(), STORE_BYTES);
    }

    #[test]
    fn inline_lens_table_is_indexed_by_length() {
        for (n, len) in INLINE_LENS.iter().enumerate() {
            assert_eq!(*len as usize, n);
        }
        assert_eq!(InlineLen::Absent as usize, INLINE_JOIN_REF_MAX_BYTES + 1);
    }

    #[test]
    fn join_refs_of_every_length_round_trip() {
        for n in 0..=40 {
            let join_ref: String = "é9".chars().cycle().take(n).collect();
            let entry = Entry::new(TopicId(n as u32), Some(&join_ref));
            assert_eq!(entry.join_ref(), Some(join_ref.as_str()));
            assert_eq!(entry.topic(), TopicId(n as u32));
            let inline = matches!(entry, Entry::Inline { .. });
            assert_eq!(inline, join_ref.len() <= INLINE_JOIN_REF_MAX_BYTES, "{n}");
        }
        let absent = Entry::new(TopicId(7), None);
        assert_eq!(absent.join_ref(), None);
        assert_eq!(absent.topic(), TopicId(7));
        // An empty join_ref is a ref, not an absent one.
        assert_eq!(Entry::new(TopicId(1), Some("")).join_ref(), Some(""));
    }

    fn topics(store: &Store) -> Vec<u32> {
        let mut t: Vec<u32> = store.iter().map(|e| e.topic().0).collect();
        t.sort_unstable();
        t
    }

    #[test]
    fn grows_to_the_heap_and_shrinks_back() {
        let mut s = Store::default();
        assert!(matches!(s, Store::Empty));
        s.insert(Entry::new(TopicId(1), Some("1")));
        assert!(matches!(s, Store::One(_)));
        s.insert(Entry::new(TopicId(2), Some("2")));
        s.insert(Entry::new(TopicId(3), None));
        assert!(matches!(s, Store::Many(_)));
        assert_eq!(s.len(), 3);
        assert_eq!(topics(&s), [1, 2, 3]);
        assert_eq!(s.find(TopicId(2)).unwrap().join_ref(), Some("2"));
        assert!(s.find(TopicId(4)).is_none());
        assert!(s.remove(TopicId(4)).is_none());
        assert_eq!(s.remove(TopicId(1)).unwrap().join_ref(), Some("1"));
        assert_eq!(s.len(), 2);
        assert!(matches!(s, Store::Many(_)));
        assert_eq!(s.remove(TopicId(3)).unwrap().join_ref(), None);
        assert!(matches!(s, Store::One(_)), "one entry left: back inline");
        assert!(s.remove(TopicId(9)).is_none());
        assert!(matches!(s, Store::One(_)));
        assert_eq!(s.remove(TopicId(2)).unwrap().topic(), TopicId(2));
        assert!(matches!(s, Store::Empty));
        assert!(s.remove(TopicId(2)).is_none());
    }

    #[test]
    fn empty_topics_visits_every_topic_and_empties() {
        let mut s = Store::default();
        let mut seen = vec![];
        s.empty_topics(|t| seen.push(t.0));
        assert!(seen.is_empty());
        s.insert(Entry::new(TopicId(5), Some("x")));
        s.empty_topics(|t| seen.push(t.0));
        assert_eq!(seen, [5]);
        assert_eq!(s.len(), 0);
        for i in 0..5 {
            s.insert(Entry::new(
                TopicId(i),
                Some(&"long-ref".repeat(i as usize + 1)),
            ));
        }
        seen.clear();
        s.empty_topics(|t| seen.push(t.0));
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert!(matches!(s, Store::Empty));
    }
}
