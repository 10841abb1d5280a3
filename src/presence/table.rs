//! The node-wide presence of every topic: a lock-striped map from topic to [`TopicPresence`],
//! shared by all workers (which track and untrack their connections) and the flusher (which takes
//! the pending diffs once per batch and broadcasts them). Nothing here blocks on I/O: a stripe is
//! held for a map operation, a state render or a count of its topics (a scrape), and the flusher
//! is woken through a condvar only when the first change of a batch arrives.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};

use super::meta::{self, MetaError, MetaField, RefGen};
use super::topic::{Diff, Owner, StateJson, TopicPresence, REMOTE};

/// Why a track or update was refused; the `reason` of the error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("presence limit reached")]
    Full,
    #[error("not tracked")]
    NotTracked,
    #[error("{0}")]
    Meta(#[from] MetaError),
}

/// What a joiner gets back from [`PresenceTable::track`].
#[derive(Debug)]
pub struct Tracked {
    pub phx_ref: String,
    /// The `presence_state` payload to push to the joiner.
    pub state: Arc<str>,
}

#[derive(Default)]
struct Stripe {
    topics: HashMap<Box<str>, TopicPresence, ahash::RandomState>,
    /// Topics with pending changes. A set, not a list: a batch of joins to many topics of one
    /// stripe marks each in O(1), where a list searched per mark grew quadratic with the batch.
    dirty: HashSet<Box<str>, ahash::RandomState>,
}

/// What `/api/stats` and `/metrics` say about presence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PresenceSummary {
    /// Topics with at least one tracked entry.
    pub topics: usize,
    /// Tracked entries (one per joined, tracked connection, on this node or another).
    pub entries: usize,
}

/// See the module docs.
pub struct PresenceTable {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: ahash::RandomState,
    refs: RefGen,
    max_members: usize,
    max_meta_bytes: usize,
    /// Set by the first change after a flush; the flusher clears it.
    dirty: AtomicBool,
    wake: Mutex<bool>,
    wake_cv: Condvar,
}

impl std::fmt::Debug for PresenceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceTable")
            .field("stripes", &self.stripes.len())
            .field("max_members", &self.max_members)
            .finish()
    }
}

/// A connection as an owner: worker and slot.
pub fn owner(worker: usize, slot: u32) -> Owner {
    ((worker as u64) << 32) | u64::from(slot)
}

fn lock(m: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PresenceTable {
    /// `node` makes this node's `phx_ref`s distinct from other nodes'.
    pub fn new(stripes: usize, node: u32, max_members: usize, max_meta_bytes: usize) -> Self {
        PresenceTable {
            stripes: (0..stripes.max(1)).map(|_| Mutex::default()).collect(),
            hasher: ahash::RandomState::new(),
            refs: RefGen::new(node),
            max_members,
            max_meta_bytes,
            dirty: AtomicBool::new(false),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
        }
    }

    pub fn max_meta_bytes(&self) -> usize {
        self.max_meta_bytes
    }

    fn stripe(&self, topic: &str) -> &Mutex<Stripe> {
        let i = self.hasher.hash_one(topic) as usize % self.stripes.len();
        &self.stripes[i]
    }

    /// Entries tracked in `topic`.
    pub fn members(&self, topic: &str) -> usize {
        lock(self.stripe(topic))
            .topics
            .get(topic)
            .map_or(0, |t| t.len())
    }

    /// Whether one more entry fits (checked before a join is accepted; concurrent joins on
    /// other workers may pass it together, by at most one each).
    pub fn has_room(&self, topic: &str) -> bool {
        self.members(topic) < self.max_members
    }

    /// Tracks a connection's join: a new `phx_ref`, the meta built from `fields`, and the
    /// state the joiner is to be pushed. `key` is `None` for `conn` keys (the ref is the key).
    pub fn track(
        &self,
        topic: &str,
        owner: Owner,
        key: Option<&str>,
        fields: &Map<String, Value>,
        online_at: &str,
    ) -> Result<Tracked, TrackError> {
        let phx_ref = self.refs.next_ref();
        let meta = meta::meta_json(&phx_ref, None, online_at, fields);
        let mut s = lock(self.stripe(topic));
        let stripe = &mut *s;
        let t = stripe.topics.entry(topic.into()).or_default();
        if t.len() >= self.max_members && t.key_of(owner).is_none() {
            if t.is_empty() {
                stripe.topics.remove(topic);
            }
            return Err(TrackError::Full);
        }
        let state = t.state();
        t.join(owner, key.unwrap_or(&phx_ref), &phx_ref, &meta);
        Self::mark(stripe, topic);
        drop(s);
        self.kick();
        let state = match state {
            StateJson::Cached(s) => s,
            StateJson::Parts(parts) => {
                // Rendered outside the stripe lock (O(members) of JSON writing), then kept for
                // the next joiners of this batch if no diff was taken meanwhile. The topic
                // cannot have been dropped and made again meanwhile (which would restart its
                // generations): the joiner's own entry keeps it, and only this thread can
                // untrack that entry.
                let rendered = parts.render();
                if let Some(t) = lock(self.stripe(topic)).topics.get_mut(topic) {
                    t.store_state(&parts, rendered.clone());
                }
                rendered
            }
        };
        Ok(Tracked { phx_ref, state })
    }

    /// Replaces the param fields of a connection's meta (Phoenix's `update`: a new `phx_ref`, the
    /// old one as `phx_ref_prev`, a diff with the leave of the old meta and the join of the new).
    pub fn update(
        &self,
        topic: &str,
        owner: Owner,
        allow: &[MetaField],
        update: &Map<String, Value>,
    ) -> Result<String, TrackError> {
        let mut s = lock(self.stripe(topic));
        let stripe = &mut *s;
        let t = stripe.topics.get_mut(topic).ok_or(TrackError::NotTracked)?;
        let (key, old) = match (t.key_of(owner), t.meta_of(owner)) {
            (Some(k), Some(m)) => (k.clone(), m.to_owned()),
            _ => return Err(TrackError::NotTracked),
        };
        let (online_at, fields) = meta::split_meta(&old);
        let fields = meta::updated_fields(allow, fields, update, self.max_meta_bytes)?;
        let prev: Value = serde_json::from_str(&old).unwrap_or_default();
        let prev_ref = prev["phx_ref"].as_str().unwrap_or_default();
        let phx_ref = self.refs.next_ref();
        let meta = meta::meta_json(&phx_ref, Some(prev_ref), &online_at, &fields);
        t.join(owner, &key, &phx_ref, &meta);
        Self::mark(stripe, topic);
        drop(s);
        self.kick();
        Ok(phx_ref)
    }

    /// Untracks a connection from `topic` (leave, close, crash); false if it was not tracked.
    pub fn untrack(&self, topic: &str, owner: Owner) -> bool {
        let mut s = lock(self.stripe(topic));
        let stripe = &mut *s;
        let Some(t) = stripe.topics.get_mut(topic) else {
            return false;
        };
        if !t.leave_owner(owner) {
            return false;
        }
        self.settle(s, topic);
        true
    }

    /// Untracks every entry of `worker`'s connections (the worker died; see `supervise`).
    /// Returns how many left.
    pub fn drop_worker(&self, worker: usize) -> usize {
        let mut left = 0;
        for s in self.stripes.iter() {
            let mut s = lock(s);
            let stripe = &mut *s;
            let mut changed = Vec::new();
            for (name, t) in stripe.topics.iter_mut() {
                let n = t.leave_worker(worker as u64);
                if n > 0 {
                    left += n;
                    changed.push(name.clone());
                }
            }
            for name in changed {
                Self::mark(stripe, &name);
            }
        }
        if left > 0 {
            self.kick();
        }
        left
    }

    /// Merges changes of entries owned by other nodes (the cross-node replica's output); returns
    /// how many joins were refused because the topic holds twice `max_members` entries. Nodes of
    /// one configuration pass `max_members` together by at most a batch each (each checks the
    /// merged count before it admits a local join), so only a misbehaving node meets the doubled
    /// bound; a refused entry stays out until its node sends it again (a transfer after a gap).
    /// A join whose leave is in the same change is skipped; the leaves go first, so an update (a
    /// leave and a join) of a full topic is not refused.
    pub fn apply_remote(
        &self,
        topic: &str,
        joins: &[(String, String, String)],
        leaves: &[(String, String)],
    ) -> usize {
        let gone: std::collections::HashSet<(&str, &str)> = leaves
            .iter()
            .map(|(key, phx_ref)| (key.as_str(), phx_ref.as_str()))
            .collect();
        let mut s = lock(self.stripe(topic));
        let stripe = &mut *s;
        let t = stripe.topics.entry(topic.into()).or_default();
        for (key, phx_ref) in leaves {
            t.leave_ref(key, phx_ref);
        }
        let mut refused = 0;
        for (key, phx_ref, meta) in joins {
            if gone.contains(&(key.as_str(), phx_ref.as_str())) {
                continue;
            }
            if t.len() >= self.max_members.saturating_mul(2) {
                refused += 1;
                continue;
            }
            t.join(REMOTE, key, phx_ref, meta);
        }
        self.settle(s, topic);
        refused
    }

    /// After entries of `topic` left or changed: a topic holding nothing (no entry, no pending
    /// diff) is dropped, one with a pending diff is marked for the flusher, which is woken after
    /// the stripe is released.
    fn settle(&self, mut s: MutexGuard<'_, Stripe>, topic: &str) {
        let stripe = &mut *s;
        let Some(t) = stripe.topics.get(topic) else {
            return;
        };
        let pending = t.has_pending();
        if t.is_empty() {
            stripe.topics.remove(topic);
        } else if pending {
            Self::mark(stripe, topic);
        }
        drop(s);
        if pending {
            self.kick();
        }
    }

    /// Every entry of this node's connections, in every topic (to publish them again after a
    /// lost batch).
    pub fn local_entries(&self) -> Vec<super::wire::Entry> {
        let mut out = Vec::new();
        for s in self.stripes.iter() {
            let s = lock(s);
            for (topic, t) in &s.topics {
                out.extend(
                    t.local_entries()
                        .map(|(key, phx_ref, meta)| super::wire::Entry {
                            topic: topic.to_string(),
                            key: key.to_owned(),
                            phx_ref: phx_ref.to_owned(),
                            meta: meta.to_owned(),
                        }),
                );
            }
        }
        out
    }

    /// The current entries of `topic` as a `presence_state` payload (admin API), `{}` if none.
    pub fn current_json(&self, topic: &str) -> String {
        lock(self.stripe(topic))
            .topics
            .get(topic)
            .map_or_else(|| "{}".to_owned(), |t| t.current_json())
    }

    /// Heap bytes of all entries and the number of entries (for the per-entry figure). Walks
    /// every meta under its stripe's lock: for tests and benchmarks, not for a scrape.
    pub fn heap_bytes(&self) -> (usize, usize) {
        let mut bytes = 0;
        let mut entries = 0;
        for s in self.stripes.iter() {
            let s = lock(s);
            bytes += s.topics.capacity() * (std::mem::size_of::<(Box<str>, TopicPresence)>() + 1);
            for (name, t) in &s.topics {
                bytes += name.len() + t.heap_bytes();
                entries += t.len();
            }
        }
        (bytes, entries)
    }

    /// Tracked topics and entries (this node's and other nodes'), for `/api/stats` and
    /// `/metrics`: O(1) per topic under its stripe's lock (a topic keeps its entry count), so a
    /// scrape holds a stripe no longer than a map walk of its topic names.
    pub fn summary(&self) -> PresenceSummary {
        let mut sum = PresenceSummary::default();
        for s in self.stripes.iter() {
            let s = lock(s);
            // `len`, not `is_empty`: a topic whose last entry left is empty of entries while
            // its leave diff still waits for the flusher.
            for entries in s.topics.values().map(TopicPresence::len).filter(|&n| n > 0) {
                sum.topics += 1;
                sum.entries += entries;
            }
        }
        sum
    }

    fn mark(stripe: &mut Stripe, topic: &str) {
        if !stripe.dirty.contains(topic) {
            stripe.dirty.insert(topic.into());
        }
    }

    fn kick(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.wake_cv.notify_one();
        }
    }

    /// Waits up to `timeout` for a change; true if there is one to flush.
    pub fn wait_dirty(&self, timeout: Duration) -> bool {
        let guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        let (mut woken, _) = self
            .wake_cv
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *woken)
    }

    /// Takes the pending diff of every changed topic (the flusher broadcasts them).
    pub fn take_dirty(&self, out: &mut Vec<(Box<str>, Diff)>) {
        self.dirty.store(false, Ordering::Release);
        for s in self.stripes.iter() {
            let mut s = lock(s);
            let Stripe { topics, dirty } = &mut *s;
            for topic in dirty.drain() {
                let Some(t) = topics.get_mut(&topic) else {
                    continue;
                };
                let diff = t.take_diff();
                if t.is_empty() {
                    topics.remove(&topic);
                }
                if !diff.is_empty() {
                    out.push((topic, diff));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn track_update_untrack_flow() {
        let t = PresenceTable::new(4, 1, 3, 64);
        let allow = vec![MetaField::parse("param:status").unwrap()];
        let a = t
            .track(
                "r",
                owner(0, 1),
                Some("u1"),
                &fields(json!({"status": "on"})),
                "9",
            )
            .unwrap();
        assert_eq!(&*a.state, "{}");
        assert!(t.wait_dirty(Duration::from_millis(1)));
        let mut out = Vec::new();
        t.take_dirty(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.joins.len(), 1);
        let b = t
            .track("r", owner(1, 1), Some("u1"), &Map::new(), "9")
            .unwrap();
        let state: Value = serde_json::from_str(&b.state).unwrap();
        assert_eq!(state["u1"]["metas"][0]["phx_ref"], a.phx_ref);
        assert_eq!(state["u1"]["metas"][0]["status"], "on");
        out.clear();
        t.take_dirty(&mut out);
        let new_ref = t
            .update(
                "r",
                owner(0, 1),
                &allow,
                &fields(json!({"status": "away", "x": 1})),
            )
            .unwrap();
        assert_eq!(
            t.update("r", owner(5, 5), &allow, &Map::new()),
            Err(TrackError::NotTracked)
        );
        assert_eq!(
            t.update(
                "r",
                owner(0, 1),
                &allow,
                &fields(json!({"status": "y".repeat(80)}))
            ),
            Err(TrackError::Meta(MetaError::MetaTooLarge))
        );
        out.clear();
        t.take_dirty(&mut out);
        let d: Value = serde_json::from_str(&out[0].1.to_json()).unwrap();
        assert_eq!(d["joins"]["u1"]["metas"][0]["phx_ref"], new_ref.as_str());
        assert_eq!(
            d["joins"]["u1"]["metas"][0]["phx_ref_prev"],
            a.phx_ref.as_str()
        );
        assert_eq!(d["joins"]["u1"]["metas"][0]["status"], "away");
        assert!(d["joins"]["u1"]["metas"][0].get("x").is_none());
        assert_eq!(d["leaves"]["u1"]["metas"][0]["phx_ref"], a.phx_ref.as_str());
        assert_eq!(t.members("r"), 2);
        t.track("r", owner(2, 1), None, &Map::new(), "9").unwrap();
        assert_eq!(
            t.track("r", owner(3, 1), None, &Map::new(), "9")
                .unwrap_err(),
            TrackError::Full
        );
        assert!(!t.has_room("r"));
        assert!(t.untrack("r", owner(0, 1)));
        assert!(!t.untrack("r", owner(0, 1)));
        assert!(t.untrack("r", owner(1, 1)));
        assert!(t.untrack("r", owner(2, 1)));
        out.clear();
        t.take_dirty(&mut out);
        assert_eq!(t.current_json("r"), "{}");
        assert_eq!(t.heap_bytes().1, 0);
    }

    #[test]
    fn a_dead_workers_entries_leave() {
        let t = PresenceTable::new(2, 1, 10, 64);
        for (w, slot, topic) in [(0, 1, "a"), (1, 1, "a"), (1, 2, "b")] {
            t.track(topic, owner(w, slot), Some("k"), &Map::new(), "9")
                .unwrap();
        }
        let mut out = Vec::new();
        t.take_dirty(&mut out);
        assert_eq!(t.drop_worker(1), 2);
        out.clear();
        t.take_dirty(&mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let left: Vec<(&str, usize, usize)> = out
            .iter()
            .map(|(n, d)| (&**n, d.joins.len(), d.leaves.len()))
            .collect();
        assert_eq!(left, [("a", 0, 1), ("b", 0, 1)]);
        assert_eq!(t.members("a"), 1);
        assert_eq!(t.members("b"), 0);
        assert_eq!(t.heap_bytes().1, 1);
    }

    #[test]
    fn conn_keys_are_the_ref() {
        let t = PresenceTable::new(1, 1, 10, 64);
        let a = t.track("r", owner(0, 1), None, &Map::new(), "9").unwrap();
        let cur: Value = serde_json::from_str(&t.current_json("r")).unwrap();
        assert_eq!(
            cur[a.phx_ref.as_str()]["metas"][0]["phx_ref"],
            a.phx_ref.as_str()
        );
    }

    #[test]
    fn remote_joins_stop_at_twice_max_members_but_an_update_of_a_full_topic_passes() {
        let t = PresenceTable::new(1, 1, 1, 64);
        let j = |k: &str, r: &str| {
            (
                k.to_owned(),
                r.to_owned(),
                format!(r#"{{"phx_ref":"{r}"}}"#),
            )
        };
        let l = |k: &str, r: &str| (k.to_owned(), r.to_owned());
        assert_eq!(
            t.apply_remote("r", &[j("a", "1"), j("b", "2"), j("c", "3")], &[]),
            1
        );
        assert_eq!(t.members("r"), 2);
        // An update of a full topic (leave and join in one change) is not refused.
        assert_eq!(t.apply_remote("r", &[j("a", "4")], &[l("a", "1")]), 0);
        let cur: Value = serde_json::from_str(&t.current_json("r")).unwrap();
        assert_eq!(cur["a"]["metas"][0]["phx_ref"], "4");
        assert!(cur.get("c").is_none());
        // A join and its own leave in one change leave nothing behind.
        assert_eq!(
            t.apply_remote("r", &[j("d", "5")], &[l("a", "4"), l("d", "5")]),
            0
        );
        let cur: Value = serde_json::from_str(&t.current_json("r")).unwrap();
        assert!(cur.get("d").is_none() && cur.get("a").is_none());
        assert_eq!(t.members("r"), 1);
    }
}
