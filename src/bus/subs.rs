//! Which topic channels this node keeps subscribed, sans-IO: the reconciler's bookkeeping.
//!
//! The topic table tells the bus that a topic's local membership changed (a hint, possibly late or
//! out of order between workers); the reconciler then reads the table's current count and decides.
//! A topic with members is subscribed once; a topic that lost its last member lingers for
//! `linger` before it is unsubscribed, so join/leave flapping and reconnect storms cost Redis
//! nothing. Decisions accumulate in a [`Plan`] that the caller sends in batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ahash::RandomState;

use super::shards::SlotCounts;

/// Channel commands to send: topics to subscribe and to unsubscribe.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub subscribe: Vec<Box<str>>,
    pub unsubscribe: Vec<Box<str>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

pub struct Reconciler {
    linger: Duration,
    /// Topics whose channel this node wants subscribed (and has asked for while the link is up).
    subscribed: HashSet<Box<str>, RandomState>,
    /// Topics with no local member, subscribed until their deadline.
    lingering: HashMap<Box<str>, Instant, RandomState>,
    /// Lingering deadlines in order (the linger is constant, so insertion order is deadline
    /// order); an entry whose deadline no longer matches `lingering` is stale and skipped.
    queue: VecDeque<(Instant, Box<str>)>,
    /// The Cluster hash slot of a topic's channel (the naming is the codec's).
    slot_of: SlotOf,
    /// `subscribed`, counted per hash slot of its channels.
    slots: SlotCounts,
}

/// A topic's channel's hash slot.
pub type SlotOf = Box<dyn Fn(&str) -> u16 + Send + Sync>;

impl Reconciler {
    pub fn new(linger: Duration, slot_of: SlotOf) -> Self {
        Self {
            linger,
            subscribed: HashSet::default(),
            lingering: HashMap::default(),
            queue: VecDeque::new(),
            slot_of,
            slots: SlotCounts::default(),
        }
    }

    /// The subscribed channels per hash slot.
    pub fn slot_counts(&self) -> &SlotCounts {
        &self.slots
    }

    fn insert(&mut self, topic: &str) -> bool {
        let new = self.subscribed.insert(topic.into());
        if new {
            self.slots.add((self.slot_of)(topic));
        }
        new
    }

    /// Channels subscribed (or wanted, while the link is down).
    pub fn len(&self) -> usize {
        self.subscribed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }

    /// Every topic whose channel is subscribed (lingering ones included).
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.subscribed.iter().map(|t| &**t)
    }

    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.subscribed.contains(topic)
    }

    /// `topic` has `members` local members now.
    pub fn changed(&mut self, topic: &str, members: u64, now: Instant, plan: &mut Plan) {
        if members > 0 {
            self.lingering.remove(topic);
            if self.insert(topic) {
                plan.subscribe.push(topic.into());
            }
        } else if self.subscribed.contains(topic) && !self.lingering.contains_key(topic) {
            let deadline = now + self.linger;
            self.lingering.insert(topic.into(), deadline);
            self.queue.push_back((deadline, topic.into()));
        }
    }

    /// Unsubscribes lingering topics whose deadline passed and that still have no member.
    pub fn expire(&mut self, now: Instant, members: impl Fn(&str) -> u64, plan: &mut Plan) {
        while let Some((deadline, _)) = self.queue.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, topic)) = self.queue.pop_front() else {
                break;
            };
            if self.lingering.get(&topic) != Some(&deadline) {
                continue;
            }
            self.lingering.remove(&topic);
            if members(&topic) == 0 {
                self.subscribed.remove(&topic);
                self.slots.remove((self.slot_of)(&topic));
                plan.unsubscribe.push(topic);
            }
        }
    }

    /// The next time `expire` has work (possibly a stale entry: waking early is harmless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|(d, _)| *d)
    }

    /// A new connection to Redis holds no subscription: subscribe every topic with members now,
    /// forget lingering ones (their channels are gone with the old connection).
    pub fn resync(&mut self, live: impl IntoIterator<Item = Box<str>>, plan: &mut Plan) {
        self.subscribed.clear();
        self.slots.clear();
        self.lingering.clear();
        self.queue.clear();
        for topic in live {
            if self.insert(&topic) {
                plan.subscribe.push(topic);
            }
        }
    }

    /// Compares the whole table with what is subscribed (after the hint set overflowed).
    pub fn reconcile_all(
        &mut self,
        live: &HashSet<Box<str>, RandomState>,
        now: Instant,
        plan: &mut Plan,
    ) {
        for topic in live {
            self.changed(topic, 1, now, plan);
        }
        let gone: Vec<Box<str>> = self
            .subscribed
            .iter()
            .filter(|t| !live.contains(*t))
            .cloned()
            .collect();
        for topic in gone {
            self.changed(&topic, 0, now, plan);
        }
    }
}

/// Splits `items` into commands of at most `batch` channels.
pub fn batches<T>(items: &[T], batch: usize) -> std::slice::Chunks<'_, T> {
    items.chunks(batch.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::shards::{hash_slot, owner, SlotOwners};

    const LINGER: Duration = Duration::from_millis(5000);

    fn names(v: &[Box<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    /// Channels named `ringgate:<topic>`, as the ringgate codec does.
    fn reconciler() -> Reconciler {
        Reconciler::new(
            LINGER,
            Box::new(|t| hash_slot(format!("ringgate:{t}").as_bytes())),
        )
    }

    fn three_masters() -> SlotOwners {
        vec![
            (0, 5460, "m0".into()),
            (5461, 10922, "m1".into()),
            (10923, 16383, "m2".into()),
        ]
    }

    /// Subscribed channels per master of a three-master cluster, from the slot counts.
    fn per_master(r: &Reconciler) -> [u64; 3] {
        let owners = three_masters();
        let e = r.slot_counts().per_owner(&owners);
        ["m0", "m1", "m2"].map(|m| e.get(m).copied().unwrap_or(0))
    }

    /// What the slot counts must say: every subscribed topic's channel on its master.
    fn per_master_by_name(r: &Reconciler) -> [u64; 3] {
        let owners = three_masters();
        let mut want = [0; 3];
        for t in r.topics() {
            let master = owner(&owners, &format!("ringgate:{t}")).expect("every slot is owned");
            want[usize::from(master.as_bytes()[1] - b'0')] += 1;
        }
        want
    }

    #[test]
    fn slot_counts_follow_subscribe_unsubscribe_and_resync() {
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        for i in 0..300 {
            r.changed(&format!("rooms:{i}"), 1, t0, &mut plan);
        }
        r.changed("rooms:7", 3, t0, &mut plan); // already subscribed: counted once
        assert_eq!(per_master(&r).iter().sum::<u64>(), 300);
        assert_eq!(per_master(&r), per_master_by_name(&r));
        for i in 0..100 {
            r.changed(&format!("rooms:{i}"), 0, t0, &mut plan);
        }
        // Lingering topics are still subscribed.
        assert_eq!(per_master(&r).iter().sum::<u64>(), 300);
        r.expire(t0 + LINGER, |t| u64::from(t == "rooms:5"), &mut plan);
        assert_eq!(per_master(&r).iter().sum::<u64>(), 201);
        assert_eq!(per_master(&r), per_master_by_name(&r));
        r.resync(["x", "y", "x"].map(Box::from), &mut plan);
        assert_eq!(per_master(&r).iter().sum::<u64>(), 2);
        assert_eq!(per_master(&r), per_master_by_name(&r));
    }

    #[test]
    fn first_member_subscribes_once() {
        let mut r = reconciler();
        let now = Instant::now();
        let mut plan = Plan::default();
        r.changed("a", 1, now, &mut plan);
        r.changed("a", 5, now, &mut plan);
        r.changed("b", 2, now, &mut plan);
        assert_eq!(names(&plan.subscribe), ["a", "b"]);
        assert!(plan.unsubscribe.is_empty());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn flapping_within_the_linger_costs_nothing() {
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        r.changed("a", 1, t0, &mut plan);
        plan = Plan::default();
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i * 10);
            r.changed("a", 0, now, &mut plan);
            r.changed("a", 1, now, &mut plan);
            r.expire(now, |_| 1, &mut plan);
        }
        r.expire(t0 + LINGER * 3, |_| 1, &mut plan);
        assert!(plan.is_empty(), "{plan:?}");
        assert!(r.is_subscribed("a"));
    }

    #[test]
    fn last_leave_unsubscribes_after_the_linger_only() {
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        r.changed("a", 1, t0, &mut plan);
        r.changed("a", 0, t0, &mut plan);
        r.changed("a", 0, t0 + Duration::from_millis(10), &mut plan);
        assert_eq!(r.next_deadline(), Some(t0 + LINGER));
        let mut later = Plan::default();
        r.expire(t0 + LINGER - Duration::from_millis(1), |_| 0, &mut later);
        assert!(later.is_empty());
        r.expire(t0 + LINGER, |_| 0, &mut later);
        assert_eq!(names(&later.unsubscribe), ["a"]);
        assert!(!r.is_subscribed("a"));
        assert_eq!(r.next_deadline(), None);
        // A new member after that subscribes again.
        let mut again = Plan::default();
        r.changed("a", 1, t0 + LINGER * 2, &mut again);
        assert_eq!(names(&again.subscribe), ["a"]);
    }

    #[test]
    fn a_stale_hint_is_checked_against_the_table_at_expiry() {
        // Worker A's "last member left" arrives, then worker B's join lands before the deadline
        // without a hint reaching us yet: the table says 1 member, so no unsubscribe.
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        r.changed("a", 1, t0, &mut plan);
        r.changed("a", 0, t0, &mut plan);
        let mut later = Plan::default();
        r.expire(t0 + LINGER, |_| 1, &mut later);
        assert!(later.is_empty());
        assert!(r.is_subscribed("a"));
    }

    #[test]
    fn topics_never_subscribed_need_no_unsubscribe() {
        let mut r = reconciler();
        let mut plan = Plan::default();
        r.changed("x", 0, Instant::now(), &mut plan);
        assert!(plan.is_empty());
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn resync_subscribes_everything_live_and_forgets_lingerers() {
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        r.changed("a", 1, t0, &mut plan);
        r.changed("gone", 1, t0, &mut plan);
        r.changed("gone", 0, t0, &mut plan);
        let mut plan = Plan::default();
        r.resync(["a".into(), "b".into()], &mut plan);
        assert_eq!(names(&plan.subscribe), ["a", "b"]);
        assert!(!r.is_subscribed("gone"));
        let mut later = Plan::default();
        r.expire(t0 + LINGER * 2, |_| 0, &mut later);
        assert!(later.is_empty(), "lingerers of the old link are forgotten");
    }

    #[test]
    fn reconcile_all_after_overflow() {
        let mut r = reconciler();
        let t0 = Instant::now();
        let mut plan = Plan::default();
        r.changed("old", 1, t0, &mut plan);
        let live: HashSet<Box<str>, RandomState> = ["new".into()].into_iter().collect();
        let mut plan = Plan::default();
        r.reconcile_all(&live, t0, &mut plan);
        assert_eq!(names(&plan.subscribe), ["new"]);
        r.expire(t0 + LINGER, |t| u64::from(t == "new"), &mut plan);
        assert_eq!(names(&plan.unsubscribe), ["old"]);
    }

    #[test]
    fn a_storm_of_joins_over_10k_topics_is_10_commands() {
        let mut r = reconciler();
        let now = Instant::now();
        let mut plan = Plan::default();
        for join in 0..100_000u64 {
            let topic = format!("rooms:{}", join % 10_000);
            r.changed(&topic, 1 + join / 10_000, now, &mut plan);
        }
        assert_eq!(plan.subscribe.len(), 10_000);
        assert_eq!(batches(&plan.subscribe, 1000).count(), 10);
    }
}
