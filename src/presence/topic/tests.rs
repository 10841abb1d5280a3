use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// The official client's merge (`Presence.syncState` / `syncDiff` of phoenix.js), written again
/// over `serde_json` values: the model every served state and diff is checked against.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientModel {
    pub state: BTreeMap<String, Vec<Value>>,
}

fn refs(metas: &[Value]) -> Vec<String> {
    metas
        .iter()
        .map(|m| m["phx_ref"].as_str().unwrap().to_owned())
        .collect()
}

fn groups(v: &Value) -> Vec<(String, Vec<Value>)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| (k.clone(), p["metas"].as_array().unwrap().clone()))
        .collect()
}

impl ClientModel {
    /// `syncState` from an empty client: joins everything in the state.
    pub fn sync_state(&mut self, state: &str) {
        let v: Value = serde_json::from_str(state).unwrap();
        let joins = Value::Object(v.as_object().unwrap().clone());
        self.apply(&joins, &Value::Object(Default::default()));
    }

    pub fn sync_diff(&mut self, diff: &str) {
        let v: Value = serde_json::from_str(diff).unwrap();
        self.apply(&v["joins"], &v["leaves"]);
    }

    fn apply(&mut self, joins: &Value, leaves: &Value) {
        for (key, new) in groups(joins) {
            let new_refs = refs(&new);
            let mut metas: Vec<Value> = self
                .state
                .get(&key)
                .map(|cur| {
                    cur.iter()
                        .filter(|m| !new_refs.contains(&m["phx_ref"].as_str().unwrap().to_owned()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            metas.extend(new);
            self.state.insert(key, metas);
        }
        for (key, left) in groups(leaves) {
            let gone = refs(&left);
            if let Some(cur) = self.state.get_mut(&key) {
                cur.retain(|m| !gone.contains(&m["phx_ref"].as_str().unwrap().to_owned()));
                if cur.is_empty() {
                    self.state.remove(&key);
                }
            }
        }
    }

    /// Same shape as [`TopicPresence::snapshot`].
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        self.state
            .iter()
            .map(|(k, metas)| {
                let mut v: Vec<String> = metas.iter().map(|m| m.to_string()).collect();
                v.sort();
                (k.clone(), v)
            })
            .collect()
    }
}

fn meta(r: &str) -> String {
    format!(r#"{{"phx_ref":"{r}","online_at":"1"}}"#)
}

fn parsed(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn state_and_diff_have_phoenix_shapes() {
    let mut t = TopicPresence::default();
    t.join(1, "u1", "A", &meta("A"));
    t.join(2, "u1", "B", &meta("B"));
    t.join(3, "u\"2", "C", &meta("C"));
    assert_eq!(t.len(), 3);
    // Nothing was sent yet: a joiner's state is empty, the pending diff has the three joins.
    assert_eq!(&*t.state_json(), "{}");
    let d = t.take_diff();
    assert_eq!(
        parsed(&d.to_json()),
        serde_json::json!({
            "joins": {
                "u1": {"metas": [{"phx_ref": "A", "online_at": "1"}, {"phx_ref": "B", "online_at": "1"}]},
                "u\"2": {"metas": [{"phx_ref": "C", "online_at": "1"}]}
            },
            "leaves": {}
        })
    );
    let state = parsed(&t.state_json());
    assert_eq!(state["u1"]["metas"].as_array().unwrap().len(), 2);
    assert_eq!(state["u\"2"]["metas"][0]["phx_ref"], "C");
    assert!(t.leave_owner(2));
    assert!(!t.leave_owner(2));
    let d = t.take_diff();
    assert_eq!(
        parsed(&d.to_json()),
        serde_json::json!({"joins": {}, "leaves": {"u1": {"metas": [{"phx_ref": "B", "online_at": "1"}]}}})
    );
    assert!(d.leaves[0].local);
    assert!(t.take_diff().is_empty());
}

#[test]
fn a_join_and_leave_within_one_batch_cancel() {
    let mut t = TopicPresence::default();
    t.join(1, "u1", "A", &meta("A"));
    t.take_diff();
    t.join(2, "u2", "B", &meta("B"));
    assert!(t.leave_owner(2));
    assert!(t.leave_owner(1));
    let d = t.take_diff();
    assert!(d.joins.is_empty());
    assert_eq!(d.leaves.len(), 1);
    assert_eq!(&*d.leaves[0].phx_ref, "A");
    assert!(t.is_empty());
}

#[test]
fn the_state_excludes_pending_joins_and_keeps_pending_leaves() {
    let mut t = TopicPresence::default();
    t.join(1, "u1", "A", &meta("A"));
    t.join(2, "u2", "B", &meta("B"));
    t.take_diff();
    t.join(3, "u3", "C", &meta("C"));
    t.leave_owner(1);
    let s = parsed(&t.state_json());
    assert_eq!(s.as_object().unwrap().len(), 2, "{s}");
    assert_eq!(s["u1"]["metas"][0]["phx_ref"], "A");
    assert_eq!(s["u2"]["metas"][0]["phx_ref"], "B");
    // The same text is shared by every joiner of the batch.
    assert!(Arc::ptr_eq(&t.state_json(), &t.state_json()));
    let current = parsed(&t.current_json());
    assert!(current.get("u1").is_none());
    assert_eq!(current["u3"]["metas"][0]["phx_ref"], "C");
}

#[test]
fn a_render_of_parts_taken_before_a_diff_is_not_kept() {
    let mut t = TopicPresence::default();
    t.join(1, "u1", "A", &meta("A"));
    t.take_diff();
    let StateJson::Parts(old) = t.state() else {
        panic!("nothing rendered yet")
    };
    t.join(2, "u2", "B", &meta("B"));
    t.take_diff();
    // Rendered outside the lock while a diff was taken: not kept, the next joiner renders anew.
    t.store_state(&old, old.render());
    let StateJson::Parts(new) = t.state() else {
        panic!("the stale render was kept")
    };
    assert_eq!(parsed(&new.render()).as_object().unwrap().len(), 2);
    t.store_state(&new, new.render());
    assert!(matches!(t.state(), StateJson::Cached(_)));
}

#[test]
fn remote_entries_leave_by_ref() {
    let mut t = TopicPresence::default();
    t.join(REMOTE, "u1", "R1", &meta("R1"));
    t.join(REMOTE, "u1", "R2", &meta("R2"));
    t.take_diff();
    assert!(t.leave_ref("u1", "R1"));
    assert!(!t.leave_ref("u1", "R1"));
    assert!(!t.leave_ref("u9", "R2"));
    let d = t.take_diff();
    assert_eq!(d.leaves.len(), 1);
    assert!(!d.leaves[0].local);
    assert_eq!(t.snapshot().get("u1").unwrap().len(), 1);
}

#[derive(Clone, Debug)]
enum Op {
    Join { owner: u64, key: u8 },
    Leave { owner: u64 },
    Update { owner: u64 },
    Flush,
    NewClient,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12u64, 0..4u8).prop_map(|(owner, key)| Op::Join { owner, key }),
        3 => (0..12u64).prop_map(|owner| Op::Leave { owner }),
        1 => (0..12u64).prop_map(|owner| Op::Update { owner }),
        2 => Just(Op::Flush),
        2 => Just(Op::NewClient),
    ]
}

proptest! {
    /// Whatever the interleaving of joins, leaves, updates, batch boundaries and joiners, every
    /// client that took the state when it joined and applied each later diff with phoenix.js's
    /// rules ends with exactly the server's entries.
    #[test]
    fn every_client_converges_to_the_server_state(ops in proptest::collection::vec(op(), 1..80)) {
        let mut t = TopicPresence::default();
        let mut clients: Vec<ClientModel> = vec![ClientModel::default()];
        let mut next_ref = 0u32;
        let mut fresh = || { next_ref += 1; format!("r{next_ref}") };
        for op in ops {
            match op {
                Op::Join { owner, key } => {
                    let r = fresh();
                    t.join(owner, &format!("k{key}"), &r, &meta(&r));
                }
                Op::Leave { owner } => { t.leave_owner(owner); }
                Op::Update { owner } => {
                    if let Some(key) = t.key_of(owner).cloned() {
                        let r = fresh();
                        t.join(owner, &key, &r, &meta(&r));
                    }
                }
                Op::Flush => {
                    let d = t.take_diff();
                    if !d.is_empty() {
                        let json = d.to_json();
                        for c in &mut clients { c.sync_diff(&json); }
                    }
                }
                Op::NewClient => {
                    let mut c = ClientModel::default();
                    c.sync_state(&t.state_json());
                    clients.push(c);
                }
            }
        }
        let d = t.take_diff();
        if !d.is_empty() {
            let json = d.to_json();
            for c in &mut clients { c.sync_diff(&json); }
        }
        let truth = t.snapshot();
        prop_assert_eq!(t.len(), truth.values().map(Vec::len).sum::<usize>());
        for c in &clients {
            prop_assert_eq!(&c.snapshot(), &truth);
        }
    }
}
