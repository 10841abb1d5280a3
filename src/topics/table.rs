//! The shared topic table: topic → members per worker, split into lock stripes.
//!
//! This is the only structure workers share. A stripe is chosen by `ahash(topic) % stripes`, so two
//! topics contend only when they hash to the same stripe. A worker touches the table when a topic
//! gains its first local member or loses its last one — not per broadcast delivery; a publisher
//! takes one stripe lock to learn which workers to message. No syscall and no allocation-heavy
//! work happens under a stripe lock.

use std::collections::HashMap;
use std::sync::Mutex;

use ahash::RandomState;

type Stripe = HashMap<Box<str>, Box<[u32]>, RandomState>;

/// Whether a membership change crossed zero on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    None,
    /// The topic's first member on this node (any worker).
    First,
    /// The topic's last member on this node left.
    Last,
}

pub struct TopicTable {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    workers: usize,
}

impl TopicTable {
    /// `stripes` locks for `workers` workers.
    pub fn new(stripes: usize, workers: usize) -> Self {
        assert!(stripes > 0 && workers > 0);
        Self {
            stripes: (0..stripes)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            hasher: RandomState::new(),
            workers,
        }
    }

    fn stripe(&self, topic: &str) -> std::sync::MutexGuard<'_, Stripe> {
        let index = (self.hasher.hash_one(topic) % self.stripes.len() as u64) as usize;
        // A panic while holding a stripe cannot leave a count half-updated (single stores), so a
        // poisoned lock is still consistent.
        self.stripes[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `delta` (±) to `worker`'s member count of `topic`; drops the topic at zero members.
    /// Returns the edge this crossed on this node, across all workers: `Edge::First` when the
    /// topic gained its first member, `Edge::Last` when it lost its last one. The caller acts on
    /// it after the stripe lock is released (the bus reads the table again, so a late or
    /// reordered signal between two workers cannot leave a wrong subscription).
    pub fn add(&self, topic: &str, worker: usize, delta: i64) -> Edge {
        let mut stripe = self.stripe(topic);
        if let Some(counts) = stripe.get_mut(topic) {
            let c = &mut counts[worker];
            *c = (i64::from(*c) + delta).max(0) as u32;
            if counts.iter().all(|&c| c == 0) {
                stripe.remove(topic);
                return Edge::Last;
            }
            return Edge::None;
        }
        if delta > 0 {
            let mut counts = vec![0u32; self.workers].into_boxed_slice();
            counts[worker] = delta as u32;
            stripe.insert(topic.into(), counts);
            return Edge::First;
        }
        Edge::None
    }

    /// Every topic with members and its member count (walks every stripe, copying names under
    /// each lock in turn; for the bus's resynchronisation after a reconnect, not hot paths).
    pub fn topics(&self) -> Vec<(Box<str>, u64)> {
        let mut out = Vec::new();
        for s in self.stripes.iter() {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(
                s.iter()
                    .map(|(t, c)| (t.clone(), c.iter().map(|&n| u64::from(n)).sum())),
            );
        }
        out
    }

    /// The workers with members of `topic` (appended to `out`) and the total member count.
    pub fn audience(&self, topic: &str, out: &mut Vec<(usize, u32)>) -> u64 {
        let stripe = self.stripe(topic);
        let Some(counts) = stripe.get(topic) else {
            return 0;
        };
        let mut total = 0;
        for (worker, &n) in counts.iter().enumerate() {
            if n > 0 {
                out.push((worker, n));
                total += u64::from(n);
            }
        }
        total
    }

    /// Total members of `topic` across workers.
    pub fn members(&self, topic: &str) -> u64 {
        self.audience(topic, &mut Vec::new())
    }

    /// Forgets every member count of `worker` (a dead worker: its connections are gone) and drops
    /// topics left with no member. Returns the memberships forgotten. Walks every stripe, one lock
    /// at a time; called once per worker death, never on a hot path.
    pub fn drop_worker(&self, worker: usize) -> u64 {
        let mut forgotten = 0;
        for stripe in self.stripes.iter() {
            let mut stripe = stripe.lock().unwrap_or_else(|p| p.into_inner());
            stripe.retain(|_, counts| {
                forgotten += u64::from(std::mem::take(&mut counts[worker]));
                counts.iter().any(|&c| c > 0)
            });
        }
        forgotten
    }

    /// Number of topics with at least one member (walks every stripe; for metrics, not hot paths).
    pub fn topic_count(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_per_worker_and_forgets_empty_topics() {
        let t = TopicTable::new(4, 3);
        assert_eq!(t.add("a", 0, 2), Edge::First);
        assert_eq!(t.add("a", 2, 1), Edge::None);
        let mut out = Vec::new();
        assert_eq!(t.audience("a", &mut out), 3);
        assert_eq!(out, vec![(0, 2), (2, 1)]);
        assert_eq!(t.topics(), vec![("a".into(), 3)]);
        assert_eq!(t.add("a", 0, -2), Edge::None);
        assert_eq!(t.add("a", 2, -1), Edge::Last);
        assert_eq!(t.add("a", 2, -1), Edge::None);
        assert_eq!(t.members("a"), 0);
        assert_eq!(t.topic_count(), 0);
    }

    #[test]
    fn drop_worker_forgets_only_that_workers_members() {
        let t = TopicTable::new(4, 2);
        t.add("a", 0, 2);
        t.add("a", 1, 3);
        t.add("b", 1, 1);
        assert_eq!(t.drop_worker(1), 4);
        assert_eq!(t.members("a"), 2);
        assert_eq!(t.members("b"), 0);
        assert_eq!(t.topic_count(), 1);
        assert_eq!(t.drop_worker(1), 0);
    }

    #[test]
    fn concurrent_joins_and_leaves_balance() {
        let t = Arc::new(TopicTable::new(8, 4));
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let topic = format!("rooms:{}", i % 17);
                        t.add(&topic, w, 1);
                        let _ = t.members(&topic);
                        t.add(&topic, w, -1);
                    }
                    t.add("stay", w, 1);
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.members("stay"), 4);
        assert_eq!(t.topic_count(), 1);
    }
}
