//! A worker's own topics: name ↔ id, and each topic's member slots. No locks: one worker owns it.
//!
//! Members are a hash set of fixed-file slots (4 bytes each plus the set's slack): joins and leaves
//! are O(1) and a broadcast walks the set once.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use ahash::RandomState;

use super::TopicId;

struct Topic {
    name: Rc<str>,
    members: HashSet<u32, RandomState>,
}

#[derive(Default)]
pub struct LocalTopics {
    ids: HashMap<Rc<str>, u32, RandomState>,
    topics: slab::Slab<Topic>,
}

impl LocalTopics {
    /// The id of `name`, created (with no members) if new.
    pub fn intern(&mut self, name: &str) -> TopicId {
        if let Some(&id) = self.ids.get(name) {
            return TopicId(id);
        }
        let name: Rc<str> = name.into();
        let id = self.topics.insert(Topic {
            name: name.clone(),
            members: HashSet::default(),
        }) as u32;
        self.ids.insert(name, id);
        TopicId(id)
    }

    pub fn lookup(&self, name: &str) -> Option<TopicId> {
        self.ids.get(name).map(|&id| TopicId(id))
    }

    pub fn name(&self, id: TopicId) -> &str {
        &self.topics[id.0 as usize].name
    }

    /// Adds `slot`; true when it is the topic's first member here.
    pub fn subscribe(&mut self, id: TopicId, slot: u32) -> bool {
        let t = &mut self.topics[id.0 as usize];
        t.members.insert(slot) && t.members.len() == 1
    }

    /// Removes `slot`; true when that left the topic empty here (the topic is then forgotten).
    pub fn unsubscribe(&mut self, id: TopicId, slot: u32) -> bool {
        let Some(t) = self.topics.get_mut(id.0 as usize) else {
            return false;
        };
        if !t.members.remove(&slot) || !t.members.is_empty() {
            return false;
        }
        let t = self.topics.remove(id.0 as usize);
        self.ids.remove(&t.name);
        true
    }

    /// Copies the members of `name` into `out` (so the caller can send while not borrowing).
    pub fn members_of(&self, name: &str, out: &mut Vec<u32>) {
        if let Some(&id) = self.ids.get(name) {
            out.extend(self.topics[id as usize].members.iter().copied());
        }
    }

    pub fn member_count(&self, id: TopicId) -> usize {
        self.topics
            .get(id.0 as usize)
            .map_or(0, |t| t.members.len())
    }

    /// Topics with members on this worker.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_member_are_reported_and_empty_topics_vanish() {
        let mut t = LocalTopics::default();
        let a = t.intern("rooms:a");
        assert_eq!(t.intern("rooms:a"), a);
        assert!(t.subscribe(a, 5));
        assert!(!t.subscribe(a, 6));
        assert!(
            !t.subscribe(a, 6),
            "double subscribe is not a new first member"
        );
        let mut m = Vec::new();
        t.members_of("rooms:a", &mut m);
        m.sort();
        assert_eq!(m, vec![5, 6]);
        assert!(!t.unsubscribe(a, 5));
        assert!(t.unsubscribe(a, 6));
        assert_eq!(t.lookup("rooms:a"), None);
        assert!(t.is_empty());
    }
}
