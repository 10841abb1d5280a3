//! The presence of one topic: its entries grouped by key, and the changes not yet sent as a
//! `presence_diff`. Owns the rule that makes batching safe: a joiner's `presence_state` is the
//! state **as of the last diff sent**, so "state + every later diff" is exactly the truth for
//! every member, however the batch is cut.
//!
//! Consequences of that rule, each relied on:
//! - A join and a leave of the same entry inside one batch cancel out: nobody was ever told about
//!   the entry (the state excludes pending joins), so nobody needs the leave.
//! - The state is `entries − pending joins + pending leaves`, rendered once per batch and shared
//!   by every joiner of that batch (a join storm renders it a few times, not once per joiner).
//! - A joiner subscribed to the topic before taking the state receives every later diff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::meta::push_json_str;

/// Who holds an entry: a local connection (`worker << 32 | slot`) or [`REMOTE`].
pub type Owner = u64;
/// The owner of entries merged in from other nodes (they are removed by `phx_ref`).
pub const REMOTE: Owner = u64::MAX;

/// One meta of a key.
#[derive(Clone, Debug)]
struct Meta {
    phx_ref: Arc<str>,
    json: Arc<str>,
    owner: Owner,
}

/// One change waiting for the next diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Arc<str>,
    pub phx_ref: Arc<str>,
    /// The meta as JSON text.
    pub meta: Arc<str>,
    /// Made by a connection of this node (what a node publishes to the others).
    pub local: bool,
}

/// The changes of one batch, ready to broadcast.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub joins: Vec<Change>,
    pub leaves: Vec<Change>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// The `presence_diff` payload: `{"joins":{key:{"metas":[..]}},"leaves":{..}}`, both maps
    /// always present (Phoenix groups an empty list into `%{}`).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(32 + (self.joins.len() + self.leaves.len()) * 96);
        out.push_str("{\"joins\":");
        push_grouped(&mut out, self.joins.iter().map(|c| (&*c.key, &*c.meta)));
        out.push_str(",\"leaves\":");
        push_grouped(&mut out, self.leaves.iter().map(|c| (&*c.key, &*c.meta)));
        out.push('}');
        out
    }
}

/// Writes `{key:{"metas":[meta,..]},..}` with the metas of one key together, keys in first-seen
/// order.
fn push_grouped<'a>(out: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&str>, ahash::RandomState> = HashMap::default();
    for (key, meta) in items {
        groups
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(meta);
    }
    out.push('{');
    for (i, key) in order.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, key);
        out.push_str(":{\"metas\":[");
        for (j, meta) in groups[key].iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(meta);
        }
        out.push_str("]}");
    }
    out.push('}');
}

/// The entries of one topic and its pending diff.
#[derive(Debug, Default)]
pub struct TopicPresence {
    keys: HashMap<Arc<str>, Vec<Meta>, ahash::RandomState>,
    /// Local entries by owner: a connection tracks a topic at most once.
    owners: HashMap<Owner, Arc<str>, ahash::RandomState>,
    entries: usize,
    pending: Diff,
    /// `phx_ref`s of `pending.joins`, to cancel a join by its leave in O(1).
    pending_join_refs: HashSet<Arc<str>, ahash::RandomState>,
    /// The state as of the last diff, rendered at most once per batch.
    state_cache: Option<Arc<str>>,
    /// Diffs taken so far: tells a render of old parts from a current one.
    generation: u64,
}

/// A joiner's state, cached or to be rendered.
#[derive(Debug)]
pub enum StateJson {
    Cached(Arc<str>),
    Parts(StateParts),
}

/// The entries of a joiner's state, taken under the caller's lock and rendered outside it.
#[derive(Debug)]
pub struct StateParts {
    generation: u64,
    entries: Vec<(Arc<str>, Arc<str>)>,
}

impl StateParts {
    /// The `presence_state` payload.
    pub fn render(&self) -> Arc<str> {
        let bytes: usize = self
            .entries
            .iter()
            .map(|(k, m)| k.len() + m.len() + 16)
            .sum();
        let mut out = String::with_capacity(2 + bytes);
        push_grouped(&mut out, self.entries.iter().map(|(k, m)| (&**k, &**m)));
        out.into()
    }
}

impl TopicPresence {
    /// Entries (metas) tracked, pending ones included.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// No entry and nothing left to send: the topic can be dropped.
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.pending.is_empty()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds an entry. A local owner already tracked here is replaced (its leave is recorded).
    pub fn join(&mut self, owner: Owner, key: &str, phx_ref: &str, meta: &str) {
        if owner != REMOTE {
            self.leave_owner(owner);
        }
        let key: Arc<str> = match self.keys.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        let m = Meta {
            phx_ref: phx_ref.into(),
            json: meta.into(),
            owner,
        };
        self.pending_join_refs.insert(m.phx_ref.clone());
        self.pending.joins.push(Change {
            key: key.clone(),
            phx_ref: m.phx_ref.clone(),
            meta: m.json.clone(),
            local: owner != REMOTE,
        });
        if owner != REMOTE {
            self.owners.insert(owner, key.clone());
        }
        // Most keys have one meta: a Vec's default first capacity (4) would triple its size.
        self.keys
            .entry(key)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(m);
        self.entries += 1;
    }

    /// Removes the entry of a local owner; false if it had none here.
    pub fn leave_owner(&mut self, owner: Owner) -> bool {
        let Some(key) = self.owners.remove(&owner) else {
            return false;
        };
        self.remove_where(&key, |m| m.owner == owner).is_some()
    }

    /// Removes the entries of every local owner of `worker` (`owner >> 32`); how many.
    pub fn leave_worker(&mut self, worker: u64) -> usize {
        let gone: Vec<Owner> = self
            .owners
            .keys()
            .copied()
            .filter(|o| *o != REMOTE && o >> 32 == worker)
            .collect();
        gone.into_iter().filter(|&o| self.leave_owner(o)).count()
    }

    /// This node's own entries: `(key, phx_ref, meta)`.
    pub fn local_entries(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.keys.iter().flat_map(|(k, metas)| {
            metas
                .iter()
                .filter(|m| m.owner != REMOTE)
                .map(move |m| (&**k, &*m.phx_ref, &*m.json))
        })
    }

    /// Removes an entry by key and `phx_ref` (entries merged from other nodes).
    pub fn leave_ref(&mut self, key: &str, phx_ref: &str) -> bool {
        let removed = self.remove_where(key, |m| &*m.phx_ref == phx_ref);
        if let Some(m) = &removed {
            if m.owner != REMOTE {
                self.owners.remove(&m.owner);
            }
        }
        removed.is_some()
    }

    /// The meta JSON of a local owner's entry.
    pub fn meta_of(&self, owner: Owner) -> Option<&str> {
        let key = self.owners.get(&owner)?;
        self.keys[key]
            .iter()
            .find(|m| m.owner == owner)
            .map(|m| &*m.json)
    }

    /// The key of a local owner's entry.
    pub fn key_of(&self, owner: Owner) -> Option<&Arc<str>> {
        self.owners.get(&owner)
    }

    fn remove_where(&mut self, key: &str, pred: impl Fn(&Meta) -> bool) -> Option<Meta> {
        let metas = self.keys.get_mut(key)?;
        let i = metas.iter().position(pred)?;
        let m = metas.remove(i);
        let key = self.keys.get_key_value(key).map(|(k, _)| k.clone())?;
        if self.keys[&key].is_empty() {
            self.keys.remove(&key);
        }
        self.entries -= 1;
        if self.pending_join_refs.remove(&m.phx_ref) {
            // Joined and left within one batch: nobody was told, so nobody is told.
            self.pending.joins.retain(|c| c.phx_ref != m.phx_ref);
        } else {
            self.pending.leaves.push(Change {
                key,
                phx_ref: m.phx_ref.clone(),
                meta: m.json.clone(),
                local: m.owner != REMOTE,
            });
        }
        Some(m)
    }

    /// The pending changes, now to be broadcast; the state served to joiners moves on to include
    /// them.
    pub fn take_diff(&mut self) -> Diff {
        if self.pending.is_empty() {
            return Diff::default();
        }
        // Replaced, not cleared: a storm's capacity would otherwise stay for the topic's life.
        self.pending_join_refs = HashSet::default();
        self.state_cache = None;
        self.generation += 1;
        std::mem::take(&mut self.pending)
    }

    /// The `presence_state` payload for a joiner: the state as of the last diff taken (module
    /// docs), shared by every joiner until the next one.
    pub fn state_json(&mut self) -> Arc<str> {
        match self.state() {
            StateJson::Cached(s) => s,
            StateJson::Parts(parts) => {
                let s = parts.render();
                self.store_state(&parts, s.clone());
                s
            }
        }
    }

    /// The joiner's state: the cached render, or the entries to render it from. Taking the parts
    /// costs two reference-count increments per entry, so a caller holding a lock around this
    /// object renders ([`StateParts::render`]) after releasing it.
    pub fn state(&self) -> StateJson {
        if let Some(s) = &self.state_cache {
            return StateJson::Cached(s.clone());
        }
        let joined = &self.pending_join_refs;
        let mut entries: Vec<(Arc<str>, Arc<str>)> =
            Vec::with_capacity(self.entries + self.pending.leaves.len());
        entries.extend(
            self.keys
                .iter()
                .flat_map(|(k, metas)| metas.iter().map(move |m| (k, m)))
                .filter(|(_, m)| !joined.contains(&m.phx_ref))
                .map(|(k, m)| (k.clone(), m.json.clone())),
        );
        entries.extend(
            self.pending
                .leaves
                .iter()
                .map(|c| (c.key.clone(), c.meta.clone())),
        );
        StateJson::Parts(StateParts {
            generation: self.generation,
            entries,
        })
    }

    /// Keeps a render of `parts` for the next joiners, unless a diff was taken since they were
    /// taken (the state moved on).
    pub fn store_state(&mut self, parts: &StateParts, state: Arc<str>) {
        if parts.generation == self.generation {
            self.state_cache = Some(state);
        }
    }

    /// The current state including pending changes (what the admin API shows).
    pub fn current_json(&self) -> String {
        let mut out = String::with_capacity(2 + self.entries * 96);
        push_grouped(
            &mut out,
            self.keys
                .iter()
                .flat_map(|(k, metas)| metas.iter().map(move |m| (&**k, &*m.json))),
        );
        out
    }

    /// Every entry as `key → [meta]`, each meta re-serialized with sorted fields and the metas
    /// sorted (for tests and comparisons).
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let normal = |json: &str| {
            serde_json::from_str::<serde_json::Value>(json)
                .map_or_else(|_| json.to_owned(), |v| v.to_string())
        };
        self.keys
            .iter()
            .map(|(k, metas)| {
                let mut v: Vec<String> = metas.iter().map(|m| normal(&m.json)).collect();
                v.sort();
                (k.to_string(), v)
            })
            .collect()
    }

    /// Heap bytes held by the entries (strings, maps, the owner index), an estimate that counts
    /// each allocation's payload and the maps' slots; for `ringgate profile`-style reporting.
    pub fn heap_bytes(&self) -> usize {
        let arc = 16; // strong + weak counts in front of every Arc<str>
        let mut bytes = self.keys.capacity() * (std::mem::size_of::<(Arc<str>, Vec<Meta>)>() + 1)
            + self.owners.capacity() * (std::mem::size_of::<(Owner, Arc<str>)>() + 1);
        for (k, metas) in &self.keys {
            bytes += arc + k.len() + metas.capacity() * std::mem::size_of::<Meta>();
            for m in metas {
                bytes += 2 * arc + m.phx_ref.len() + m.json.len();
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests;
