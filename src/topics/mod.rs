//! Topics, sans-IO and serializer-agnostic: who subscribes to what, and how one broadcast reaches
//! them.
//!
//! - `table`: the one structure shared by all workers — a lock-striped map from topic to the number
//!   of members each worker holds, read by a publisher to know which workers to message. It reports
//!   when a topic gains its first or loses its last member on this node (the multi-node bus
//!   subscribes and unsubscribes on those edges).
//! - `local`: each worker's own map from topic to its member connections (no locks), which it walks
//!   to fan a broadcast out.
//! - `Broadcast`: a message already encoded by its publisher into one complete frame per wire
//!   encoding (the caller decides what an encoding is: `phoenix::broadcast` uses one per
//!   serializer version); every member speaking one encoding is sent the very same bytes.

pub mod local;
pub mod table;

use std::time::Instant;

use bytes::Bytes;

/// A topic interned by a worker's `LocalTopics`: the only form in which a connection stores a
/// topic (4 bytes instead of a string).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u32);

/// How many encodings a broadcast carries at most (Phoenix V1 and V2 today).
pub const ENCODINGS: usize = 2;

/// One broadcast, ready to send: the topic it is for and its frames, one per encoding, encoded
/// once by the publisher.
#[derive(Debug)]
pub struct Broadcast {
    pub topic: Box<str>,
    /// Frame per encoding index; `None` when the message cannot be expressed in that encoding
    /// (members speaking it are skipped and counted as dropped).
    frames: [Option<Bytes>; ENCODINGS],
    /// When it was encoded (published): the start of its delivery latency.
    pub published: Instant,
}

impl Broadcast {
    pub fn new(topic: &str, frames: [Option<Bytes>; ENCODINGS]) -> Self {
        Self {
            topic: topic.into(),
            frames,
            published: Instant::now(),
        }
    }

    /// Bytes of its frames, all encodings (what an inbox holding it is charged).
    pub fn frame_bytes(&self) -> usize {
        self.frames.iter().flatten().map(Bytes::len).sum()
    }

    /// The frame for members speaking encoding `index` (`None` past `ENCODINGS`).
    pub fn frame(&self, index: usize) -> Option<&Bytes> {
        self.frames.get(index).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_looked_up_by_encoding_index() {
        let b = Broadcast::new("t", [None, Some(Bytes::from_static(b"x"))]);
        assert!(b.frame(0).is_none());
        assert_eq!(b.frame(1).unwrap().as_ref(), b"x");
        assert!(b.frame(ENCODINGS).is_none());
    }
}
