use proptest::prelude::*;

use super::*;

fn entry(topic: &str, key: &str, r: &str) -> Entry {
    Entry {
        topic: topic.into(),
        key: key.into(),
        phx_ref: r.into(),
        meta: format!(r#"{{"phx_ref":"{r}"}}"#),
    }
}

/// Messages in flight: (recipient index, bytes). Every message goes through its bytes.
type Net = Vec<(usize, Vec<u8>)>;

fn post(net: &mut Net, nodes: usize, from: usize, outs: Vec<Output>) -> Vec<Output> {
    let mut remote = Vec::new();
    for o in outs {
        match o {
            Output::Send(w) => {
                for to in (0..nodes).filter(|&to| to != from) {
                    net.push((to, w.encode()));
                }
            }
            r @ Output::Remote { .. } => remote.push(r),
        }
    }
    remote
}

#[test]
fn a_delta_reaches_the_other_node() {
    let mut a = Replica::new(1, 1000, 5000);
    let mut b = Replica::new(2, 1000, 5000);
    let out = a.local(vec![entry("t", "u1", "A")], vec![]);
    let Output::Send(w) = &out[0] else { panic!() };
    let got = b.receive(10, Wire::decode(&w.encode()).unwrap());
    assert_eq!(
        got,
        vec![Output::Remote {
            joins: vec![entry("t", "u1", "A")],
            leaves: vec![]
        }]
    );
    // The same delta again changes nothing.
    assert!(b.receive(11, w.clone()).is_empty());
    assert_eq!(b.remote_entries().len(), 1);
    assert_eq!(b.peers(), vec![1]);
}

#[test]
fn a_silent_node_leaves_and_a_returning_one_is_resynced() {
    let mut a = Replica::new(1, 1000, 5000);
    let mut b = Replica::new(2, 1000, 5000);
    for w in a.local(vec![entry("t", "u1", "A"), entry("t", "u2", "B")], vec![]) {
        let Output::Send(w) = w else { panic!() };
        b.receive(0, w);
    }
    assert!(b.tick(4000).iter().all(|o| matches!(o, Output::Send(_))));
    assert_eq!(b.remote_entries().len(), 2);
    let out = b.tick(5001);
    let leaves: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Remote { leaves, .. } => Some(leaves.len()),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, vec![2]);
    assert!(b.remote_entries().is_empty());
    assert!(b.peers().is_empty());
    // `a` comes back (the bus was down): its heartbeat is ahead, `b` asks for a transfer.
    let out = b.receive(6000, Wire::Heartbeat { node: 1, seq: 1 });
    assert_eq!(
        out,
        vec![Output::Send(Wire::StateRequest {
            node: 2,
            to: Some(1)
        })]
    );
    let Output::Send(req) = &out[0] else { panic!() };
    let transfer = a.receive(6001, req.clone());
    let Output::Send(t) = &transfer[0] else {
        panic!()
    };
    let got = b.receive(6002, t.clone());
    assert!(
        matches!(&got[0], Output::Remote { joins, leaves } if joins.len() == 2 && leaves.is_empty())
    );
    assert_eq!(b.remote_entries(), a.local_entries());
}

#[test]
fn a_node_starting_late_gets_the_state_by_request() {
    let mut a = Replica::new(1, 1000, 5000);
    a.local(vec![entry("t", "u1", "A")], vec![]);
    a.local(vec![entry("t", "u2", "B")], vec![entry("t", "u1", "A")]);
    let mut c = Replica::new(3, 1000, 5000);
    let outs = c.connected(0);
    assert!(matches!(
        outs[0],
        Output::Send(Wire::StateRequest { node: 3, to: None })
    ));
    let Output::Send(req) = &outs[0] else {
        panic!()
    };
    let Output::Send(t) = a.receive(1, req.clone()).remove(0) else {
        panic!()
    };
    c.receive(2, t);
    assert_eq!(c.remote_entries(), a.local_entries());
    // Another node's transfer addressed to `c` is ignored by everybody else.
    let mut b = Replica::new(2, 1000, 5000);
    let Output::Send(t) = a.receive(1, req.clone()).remove(0) else {
        panic!()
    };
    assert!(b.receive(3, t).is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    /// Node joins an entry of topic t, or leaves one of its entries (index).
    Join {
        node: usize,
        topic: u8,
    },
    Leave {
        node: usize,
        pick: usize,
    },
    /// A batch: the node publishes its pending changes.
    Publish {
        node: usize,
    },
    Heartbeat {
        node: usize,
    },
    /// Deliver message `pick` (modulo what is in flight), keeping a copy when `dup`.
    Deliver {
        pick: usize,
        dup: bool,
    },
    /// A node restarts with nothing: new incarnation, asks everyone for their state.
    Restart {
        node: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..2u8).prop_map(|(node, topic)| Op::Join { node, topic }),
        2 => (0..3usize, any::<usize>()).prop_map(|(node, pick)| Op::Leave { node, pick }),
        2 => (0..3usize).prop_map(|node| Op::Publish { node }),
        1 => (0..3usize).prop_map(|node| Op::Heartbeat { node }),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(pick, dup)| Op::Deliver { pick, dup }),
        1 => (0..3usize).prop_map(|node| Op::Restart { node }),
    ]
}

struct Sim {
    nodes: Vec<Replica>,
    pending: Vec<(Vec<Entry>, Vec<Entry>)>,
    net: Net,
    next_ref: u32,
    next_id: u64,
}

impl Sim {
    fn deliver(&mut self, i: usize, dup: bool) {
        let (to, bytes) = if dup {
            self.net[i].clone()
        } else {
            self.net.swap_remove(i)
        };
        let msg = Wire::decode(&bytes).unwrap();
        let outs = self.nodes[to].receive(0, msg);
        let n = self.nodes.len();
        post(&mut self.net, n, to, outs);
    }
}

proptest! {
    /// Three nodes change their entries, publish deltas and heartbeats, restart; the bus delivers
    /// in any order and duplicates messages. Once every message is delivered and each node has
    /// heartbeated, every node's view of the others is exactly the union of their own entries.
    #[test]
    fn every_node_converges_to_the_union(ops in proptest::collection::vec(op(), 1..120)) {
        let mut sim = Sim {
            nodes: (1..=3).map(|i| Replica::new(i, 1000, 1_000_000)).collect(),
            pending: vec![Default::default(); 3],
            net: Vec::new(),
            next_ref: 0,
            next_id: 3,
        };
        for op in ops {
            match op {
                Op::Join { node, topic } => {
                    sim.next_ref += 1;
                    let r = format!("r{}", sim.next_ref);
                    sim.pending[node].0.push(entry(&format!("t{topic}"), &format!("k{}", sim.next_ref % 3), &r));
                }
                Op::Leave { node, pick } => {
                    let mine: Vec<Entry> = sim.nodes[node].local_entries().into_iter().collect();
                    if !mine.is_empty() {
                        let e = mine[pick % mine.len()].clone();
                        if !sim.pending[node].1.contains(&e) {
                            sim.pending[node].1.push(e);
                        }
                    }
                }
                Op::Publish { node } => {
                    let (joins, leaves) = std::mem::take(&mut sim.pending[node]);
                    let outs = sim.nodes[node].local(joins, leaves);
                    post(&mut sim.net, 3, node, outs);
                }
                Op::Heartbeat { node } => {
                    let seq = sim.nodes[node].seq;
                    let me = sim.nodes[node].id();
                    post(&mut sim.net, 3, node, vec![Output::Send(Wire::Heartbeat { node: me, seq })]);
                }
                Op::Deliver { pick, dup } => {
                    if !sim.net.is_empty() {
                        let i = pick % sim.net.len();
                        sim.deliver(i, dup);
                    }
                }
                Op::Restart { node } => {
                    sim.next_id += 1;
                    // The old incarnation's messages still in flight stay in flight.
                    sim.nodes[node] = Replica::new(sim.next_id, 1000, 1_000_000);
                    sim.pending[node] = Default::default();
                    let outs = sim.nodes[node].connected(0);
                    post(&mut sim.net, 3, node, outs);
                }
            }
        }
        // Quiesce: publish what is pending, deliver everything, heartbeat, deliver again.
        for node in 0..3 {
            let (joins, leaves) = std::mem::take(&mut sim.pending[node]);
            let outs = sim.nodes[node].local(joins, leaves);
            post(&mut sim.net, 3, node, outs);
        }
        for round in 0..2 {
            let mut steps = 0;
            while !sim.net.is_empty() {
                steps += 1;
                prop_assert!(steps < 100_000, "the bus never quiesces");
                let i = (steps * 7919) % sim.net.len();
                sim.deliver(i, false);
            }
            if round == 0 {
                for node in 0..3 {
                    let me = sim.nodes[node].id();
                    let seq = sim.nodes[node].seq;
                    post(&mut sim.net, 3, node, vec![Output::Send(Wire::Heartbeat { node: me, seq })]);
                }
            }
        }
        // Old incarnations linger until their timeout; the live ones must match exactly.
        for (i, n) in sim.nodes.iter().enumerate() {
            let live: Vec<NodeId> = sim.nodes.iter().map(Replica::id).collect();
            let held: BTreeSet<Entry> = n
                .peers
                .iter()
                .filter(|(id, _)| live.contains(id))
                .flat_map(|(_, p)| p.entries.values().cloned())
                .collect();
            let want: BTreeSet<Entry> = sim
                .nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, m)| m.local_entries())
                .collect();
            prop_assert_eq!(held, want, "node {}", i);
        }
    }
}

#[test]
fn a_node_that_never_tracked_is_silent_and_replace_local_publishes_the_difference() {
    let mut a = Replica::new(1, 1000, 5000);
    // Nothing tracked yet: only the request on connect, no heartbeat, no answer to a broadcast
    // request (nobody can hold entries of it).
    assert_eq!(
        a.connected(0),
        vec![Output::Send(Wire::StateRequest { node: 1, to: None })]
    );
    assert!(a.tick(5000).is_empty());
    assert!(a
        .receive(1, Wire::StateRequest { node: 2, to: None })
        .is_empty());
    // Asked by name, it answers (empty).
    assert_eq!(
        a.receive(
            2,
            Wire::StateRequest {
                node: 2,
                to: Some(1)
            }
        ),
        vec![Output::Send(Wire::StateTransfer {
            node: 1,
            to: 2,
            seq: 0,
            entries: vec![]
        })]
    );
    a.local(vec![entry("t", "u1", "A"), entry("t", "u2", "B")], vec![]);
    assert!(matches!(
        a.tick(6000)[..],
        [Output::Send(Wire::Heartbeat { node: 1, seq: 1 })]
    ));
    // Batches lost on the way: the table says u2 and u3; one delta with the difference.
    let out = a.replace_local(vec![entry("t", "u2", "B"), entry("t", "u3", "C")]);
    assert_eq!(
        out,
        vec![Output::Send(Wire::Delta {
            node: 1,
            seq: 2,
            joins: vec![entry("t", "u3", "C")],
            leaves: vec![entry("t", "u1", "A")],
        })]
    );
    assert!(a
        .replace_local(vec![entry("t", "u2", "B"), entry("t", "u3", "C")])
        .is_empty());
}
