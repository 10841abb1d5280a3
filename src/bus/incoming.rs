//! What Redis pushes to this node, on its way from the Redis client to the bus task: bounded in
//! bytes, and what is dropped at the bound is not forgotten.
//!
//! The client reads a connection and hands every push to a sender we give it (RESP3 pushes, on
//! standalone Redis as on a Cluster). Its reader and the bus task share the admin thread, and the
//! task takes each message at once and hands it to the workers' bounded inboxes without waiting,
//! so the queue between them holds what the reader took off the socket since the task's last
//! turn: a handful, or a burst Redis wrote back to back. Past `[bus] max_incoming_bytes` a message
//! is dropped and counted instead of queued (`ringgate_bus_incoming_dropped_total`), and its channel is remembered: the bus task then
//! has the workers close the members of those topics with 1013, as a full inbox does, so no client
//! goes on with a gap it cannot see. A message that finds the queue empty is always taken, so one
//! larger than the bound still arrives. Pushes that are not messages (subscription replies, a
//! disconnection) are never dropped: they are small and the link depends on them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedSender;

/// Channels remembered after a drop; past it every joined member counts (as past the inbox's
/// 4,096 lost topics).
const MAX_LOST_CHANNELS: usize = 4096;
/// What a queued message costs besides its bytes (the push, its vector, the queue's slot): so
/// the byte bound also bounds how many empty messages can wait.
const PUSH_OVERHEAD_BYTES: usize = 64;

/// Channels whose messages were dropped since the bus task last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LostChannels {
    pub channels: HashSet<Box<[u8]>, ahash::RandomState>,
    /// More than `MAX_LOST_CHANNELS`: every channel counts.
    pub all: bool,
}

/// The bound and the counts shared by the client's sender and the bus task.
pub struct Gate {
    max_bytes: usize,
    bytes: AtomicUsize,
    pub dropped: AtomicU64,
    any_lost: AtomicBool,
    lost: Mutex<LostChannels>,
}

fn is_message(kind: &PushKind) -> bool {
    matches!(kind, PushKind::Message | PushKind::SMessage)
}

/// A message push's size as counted against the bound (0 for other pushes).
fn size(info: &PushInfo) -> usize {
    if !is_message(&info.kind) {
        return 0;
    }
    let bytes: usize = info
        .data
        .iter()
        .map(|v| match v {
            Value::BulkString(b) => b.len(),
            _ => 0,
        })
        .sum();
    bytes + PUSH_OVERHEAD_BYTES
}

impl Gate {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            any_lost: AtomicBool::new(false),
            lost: Mutex::new(LostChannels::default()),
        }
    }

    /// Bytes of the messages waiting for the bus task.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Offers a push from the client: queued on `tx`, or (a message, past the bound) dropped,
    /// counted and its channel remembered. Never blocks: it runs on the client's reading task.
    pub fn offer(&self, tx: &UnboundedSender<PushInfo>, info: PushInfo) {
        let n = size(&info);
        if n > 0 && !super::reserve(&self.bytes, n, self.max_bytes) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.lose(info.data.first());
            return;
        }
        if tx.send(info).is_err() {
            // The link is over and its queue gone: nothing waits.
            self.bytes.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The bus task took `info` off the queue.
    pub fn taken(&self, info: &PushInfo) {
        self.bytes.fetch_sub(size(info), Ordering::Relaxed);
    }

    fn lose(&self, channel: Option<&Value>) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match channel {
            Some(Value::BulkString(c)) if !lost.all => {
                if lost.channels.len() >= MAX_LOST_CHANNELS {
                    lost.all = true;
                    lost.channels = HashSet::default();
                } else {
                    lost.channels.insert(c.as_slice().into());
                }
            }
            Some(Value::BulkString(_)) => {}
            _ => lost.all = true,
        }
        self.any_lost.store(true, Ordering::Release);
    }

    /// The channels that lost a message since the last call, if any (one atomic load when none).
    pub fn take_lost(&self) -> Option<LostChannels> {
        if !self.any_lost.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        Some(std::mem::take(&mut *lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel: &str, body_bytes: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(vec![0; body_bytes]),
            ],
        }
    }

    #[test]
    fn past_the_bound_messages_are_dropped_and_their_channels_remembered() {
        let gate = Gate::new(1000);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Larger than the bound, into an empty queue: taken.
        gate.offer(&tx, message("a", 2000));
        assert_eq!(gate.queued_bytes(), 2001 + PUSH_OVERHEAD_BYTES);
        gate.offer(&tx, message("b", 10));
        gate.offer(&tx, message("b", 10));
        // Not a message: never dropped, never counted.
        let reply = PushInfo {
            kind: PushKind::Subscribe,
            data: vec![Value::BulkString(b"c".to_vec()), Value::Int(1)],
        };
        gate.offer(&tx, reply);
        assert_eq!(gate.dropped.load(Ordering::Relaxed), 2);
        let lost = gate.take_lost().expect("a channel lost a message");
        assert_eq!(lost.channels.len(), 1);
        assert!(lost.channels.contains(b"b".as_slice()));
        assert!(!lost.all);
        assert_eq!(gate.take_lost(), None);
        while let Ok(info) = rx.try_recv() {
            gate.taken(&info);
        }
        assert_eq!(gate.queued_bytes(), 0);
        // A closed queue (the link is over) counts nothing.
        drop(rx);
        gate.offer(&tx, message("d", 10));
        assert_eq!(gate.queued_bytes(), 0);
    }

    #[test]
    fn past_the_remembered_channels_every_channel_counts() {
        let gate = Gate::new(0);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        gate.offer(&tx, message("first", 1));
        for i in 0..=MAX_LOST_CHANNELS {
            gate.offer(&tx, message(&format!("c{i}"), 1));
        }
        let lost = gate.take_lost().unwrap();
        assert!(lost.all);
        assert!(lost.channels.is_empty());
    }
}
