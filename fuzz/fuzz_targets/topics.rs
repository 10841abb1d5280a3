//! Fuzzes the subscription bookkeeping: random join / leave / push / heartbeat / publish /
//! close sequences from several connections on several workers, driven through
//! `phoenix::channels::Channels::handle` with a host that does what the worker's host does
//! (`net/phoenix.rs`): each worker's `topics::local::LocalTopics` plus the shared
//! `topics::table::TopicTable`.
//!
//! A plain model (a map of joined topics per connection, written from the rules in the
//! `channels` module docs) runs alongside. After every step: the table's counts, each worker's
//! local member counts and the model agree for every topic; every connection's channels are the
//! model's (topic and join_ref); the frames sent are the replies and closes the rules call for,
//! in order, with the right refs; and a broadcast reaches exactly the model's members.
#![no_main]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringgate::phoenix::channels::{Channels, Host, Outcome, TopicId};
use ringgate::phoenix::router::{OnPush, Route, Router};
use ringgate::phoenix::serializer::{decode_text, FrameKind, Message, Payload};
use ringgate::phoenix::Vsn;
use ringgate::topics::local::LocalTopics;
use ringgate::topics::table::TopicTable;
use serde_json::value::RawValue;

const WORKERS: usize = 3;
const CONNS: usize = 8;
const EVENTS: [&str; 9] = [
    "phx_join",
    "phx_join",
    "phx_leave",
    "new_msg",
    "heartbeat",
    "phx_reply",
    "phx_close",
    "phx_error",
    "typing",
];

/// The topics in play: routed with broadcast, routed receive-only, the bare prefix, unrouted,
/// the heartbeat topic, and one over the 255-byte limit.
fn topics() -> Vec<String> {
    let mut t: Vec<String> = [
        "rooms:a", "rooms:b", "rooms:c", "rooms:", "rooms:ro", "nope", "phoenix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    t.push(format!("rooms:{}", "x".repeat(250)));
    t
}

fn router() -> Router {
    Router::new(vec![
        Route::new("rooms:ro", OnPush::Reject),
        Route::new("rooms:*", OnPush::Broadcast),
    ])
    .unwrap()
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ref {
    Absent,
    Num(u8),
    /// Longer than the inline join_ref storage (19 bytes).
    Long(u8),
}

impl Ref {
    fn get(self) -> Option<String> {
        match self {
            Ref::Absent => None,
            Ref::Num(n) => Some(n.to_string()),
            Ref::Long(n) => Some(format!("{n}-{}", "j".repeat(20))),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Msg {
        conn: u8,
        topic: u8,
        event: u8,
        join_ref: Ref,
        msg_ref: Ref,
    },
    /// `POST /api/broadcast`.
    Publish { topic: u8 },
    /// The connection goes away; its slot is reused by a fresh connection.
    Close { conn: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_channels: u8,
    ops: Vec<Op>,
}

/// One connection's view of its worker, as `net/phoenix.rs` implements it.
struct FuzzHost<'a> {
    local: &'a mut LocalTopics,
    table: &'a TopicTable,
    worker: usize,
    slot: u32,
    /// Topics this connection is subscribed to, to catch a double (un)subscribe at once.
    held: &'a mut BTreeSet<String>,
    sent: Vec<(FrameKind, Vec<u8>)>,
    published: Vec<(String, String)>,
}

impl Host for FuzzHost<'_> {
    fn intern(&mut self, topic: &str) -> TopicId {
        self.local.intern(topic)
    }

    fn topic_name(&self, id: TopicId) -> &str {
        self.local.name(id)
    }

    fn lookup(&self, topic: &str) -> Option<TopicId> {
        self.local.lookup(topic)
    }

    fn subscribe(&mut self, id: TopicId) {
        let name = self.local.name(id).to_owned();
        assert!(self.held.insert(name.clone()), "double subscribe to {name}");
        self.local.subscribe(id, self.slot);
        self.table.add(&name, self.worker, 1);
    }

    fn unsubscribe(&mut self, id: TopicId) {
        let name = self.local.name(id).to_owned();
        assert!(self.held.remove(&name), "unsubscribe from {name} not held");
        self.table.add(&name, self.worker, -1);
        self.local.unsubscribe(id, self.slot);
    }

    fn broadcast(&mut self, topic: &str, event: &str, _payload: Payload<'_>) {
        self.published.push((topic.to_owned(), event.to_owned()));
    }

    fn send(&mut self, kind: FrameKind, payload: Vec<u8>) {
        self.sent.push((kind, payload));
    }
}

/// A frame the rules must send, as the client decodes it.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    join_ref: Option<String>,
    msg_ref: Option<String>,
    topic: String,
    event: String,
    /// `status` and `response.reason` of a reply.
    status: Option<String>,
    reason: Option<String>,
}

fn decode_sent(vsn: Vsn, kind: FrameKind, bytes: &[u8]) -> Frame {
    assert_eq!(kind, FrameKind::Text);
    let text = std::str::from_utf8(bytes).unwrap();
    let msg = decode_text(vsn, text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let Payload::Json(payload) = msg.payload else {
        panic!("text frame with a binary payload");
    };
    let v: serde_json::Value = serde_json::from_str(payload.get()).unwrap();
    let (status, reason) = if msg.event == "phx_reply" {
        (
            v["status"].as_str().map(str::to_owned),
            v["response"]["reason"].as_str().map(str::to_owned),
        )
    } else {
        assert_eq!(payload.get(), "{}");
        (None, None)
    };
    Frame {
        join_ref: msg.join_ref.map(Cow::into_owned),
        msg_ref: msg.msg_ref.map(Cow::into_owned),
        topic: msg.topic.into_owned(),
        event: msg.event.into_owned(),
        status,
        reason,
    }
}

struct Model {
    /// Per connection: joined topic → (the channel's join_ref, the join's key: what messages are
    /// matched against and `phx_close` carries).
    joined: Vec<BTreeMap<String, Joined>>,
    max_channels: usize,
}

type Joined = (Option<String>, Option<String>);

/// A null join_ref in a message matches any join; otherwise it must equal the join's key.
fn same_join(key: Option<&str>, message: Option<&str>) -> bool {
    message.is_none() || key == message
}

impl Model {
    /// Applies one message; returns the frames owed and the broadcast made (if any).
    fn apply(
        &mut self,
        conn: usize,
        vsn: Vsn,
        topic: &str,
        event: &str,
        jr: Option<&str>,
        r: Option<&str>,
    ) -> (Vec<Frame>, Option<String>) {
        // V1 never puts a join_ref on the wire.
        let wire = |j: Option<&str>| {
            if vsn == Vsn::V1 {
                None
            } else {
                j.map(str::to_owned)
            }
        };
        let frame = |join_ref: Option<&str>,
                     msg_ref: Option<&str>,
                     event: &str,
                     status: Option<&str>,
                     reason: Option<&str>| Frame {
            join_ref: wire(join_ref),
            msg_ref: msg_ref.map(str::to_owned),
            topic: topic.to_owned(),
            event: event.to_owned(),
            status: status.map(str::to_owned),
            reason: reason.map(str::to_owned),
        };
        let reply = |join_ref: Option<&str>, reason: Option<&str>| {
            let status = if reason.is_some() { "error" } else { "ok" };
            frame(join_ref, r, "phx_reply", Some(status), reason)
        };
        let close = |join_ref: Option<&str>| frame(join_ref, join_ref, "phx_close", None, None);
        let routed = topic.starts_with("rooms:");
        let chans = &mut self.joined[conn];
        let mut out = Vec::new();
        match event {
            "heartbeat" if topic == "phoenix" => out.push(reply(None, None)),
            "phx_join" => {
                let old = chans.remove(topic);
                if !routed {
                    out.push(reply(None, Some("unmatched topic")));
                } else if topic.len() > 255 {
                    out.push(reply(jr, Some("topic too long")));
                } else if chans.len() >= self.max_channels {
                    out.push(reply(jr, Some("too many channels joined")));
                } else {
                    // V2 keys a join by its own join_ref (null included); V1 by `join_ref || ref`.
                    let key = if vsn == Vsn::V1 { jr.or(r) } else { jr };
                    let joined = (jr.or(r).map(str::to_owned), key.map(str::to_owned));
                    chans.insert(topic.to_owned(), joined);
                    out.push(reply(jr, None));
                }
                // The new join's reply first, then the old join's close.
                if let Some((_, old_key)) = old {
                    out.push(close(old_key.as_deref()));
                }
            }
            "phx_leave" => match chans.get(topic).cloned() {
                None => out.push(reply(jr, None)),
                Some((_, key)) if !same_join(key.as_deref(), jr) => {}
                Some((stored, key)) => {
                    chans.remove(topic);
                    out.push(reply(stored.as_deref(), None));
                    out.push(close(key.as_deref()));
                }
            },
            _ => match chans.get(topic).cloned() {
                None => out.push(reply(None, Some("unmatched topic"))),
                Some((_, key)) if !same_join(key.as_deref(), jr) => {}
                Some((stored, _)) => {
                    if ["phx_reply", "phx_close", "phx_error"].contains(&event) {
                        out.push(reply(stored.as_deref(), Some("reserved event")));
                    } else if topic == "rooms:ro" {
                        out.push(reply(stored.as_deref(), Some("push not allowed")));
                    } else {
                        out.push(reply(stored.as_deref(), None));
                        return (out, Some(topic.to_owned()));
                    }
                }
            },
        }
        (out, None)
    }

    fn members(&self, topic: &str) -> BTreeSet<usize> {
        (0..CONNS)
            .filter(|&c| self.joined[c].contains_key(topic))
            .collect()
    }
}

struct World {
    local: Vec<LocalTopics>,
    table: TopicTable,
    chans: Vec<Channels>,
    held: Vec<BTreeSet<String>>,
    model: Model,
    topics: Vec<String>,
}

fn worker_of(conn: usize) -> usize {
    conn % WORKERS
}

fn slot_of(conn: usize) -> u32 {
    (conn / WORKERS) as u32
}

fn vsn_of(conn: usize) -> Vsn {
    if conn.is_multiple_of(2) {
        Vsn::V2
    } else {
        Vsn::V1
    }
}

impl World {
    fn host(&mut self, conn: usize) -> (&mut Channels, FuzzHost<'_>) {
        let w = worker_of(conn);
        (
            &mut self.chans[conn],
            FuzzHost {
                local: &mut self.local[w],
                table: &self.table,
                worker: w,
                slot: slot_of(conn),
                held: &mut self.held[conn],
                sent: Vec::new(),
                published: Vec::new(),
            },
        )
    }

    /// Who a broadcast on `topic` reaches: the workers the table names, then each one's local
    /// members (as `Hub::publish` and `Worker::deliver` do).
    fn deliver(&self, topic: &str) -> BTreeSet<usize> {
        let mut audience = Vec::new();
        let total = self.table.audience(topic, &mut audience);
        let mut reached = BTreeSet::new();
        let mut slots = Vec::new();
        for &(w, n) in &audience {
            slots.clear();
            self.local[w].members_of(topic, &mut slots);
            assert_eq!(
                slots.len(),
                n as usize,
                "table and worker {w} disagree on {topic}"
            );
            for &slot in &slots {
                let conn = slot as usize * WORKERS + w;
                assert!(reached.insert(conn), "conn {conn} reached twice");
            }
        }
        assert_eq!(total as usize, reached.len());
        reached
    }

    fn check(&self) {
        let members: Vec<BTreeSet<usize>> =
            self.topics.iter().map(|t| self.model.members(t)).collect();
        let mut per_worker = [0usize; WORKERS];
        for (topic, members) in self.topics.iter().zip(&members) {
            assert_eq!(self.table.members(topic), members.len() as u64, "{topic}");
            for (w, local) in self.local.iter().enumerate() {
                let want = members.iter().filter(|&&c| worker_of(c) == w).count();
                let have = local.lookup(topic).map_or(0, |id| local.member_count(id));
                assert_eq!(have, want, "worker {w}, {topic}");
                per_worker[w] += usize::from(want > 0);
            }
            assert_eq!(&self.deliver(topic), members, "{topic}");
        }
        let live_topics = members.iter().filter(|m| !m.is_empty()).count();
        assert_eq!(self.table.topic_count(), live_topics);
        for (w, local) in self.local.iter().enumerate() {
            assert_eq!(local.len(), per_worker[w], "worker {w} keeps empty topics");
        }
        for conn in 0..CONNS {
            let local = &self.local[worker_of(conn)];
            let have: BTreeMap<String, Option<String>> = self.chans[conn]
                .iter()
                .map(|(id, jr)| (local.name(id).to_owned(), jr.map(str::to_owned)))
                .collect();
            assert_eq!(self.chans[conn].len(), have.len());
            let want: BTreeMap<String, Option<String>> = self.model.joined[conn]
                .iter()
                .map(|(topic, (jr, _))| (topic.clone(), jr.clone()))
                .collect();
            assert_eq!(have, want, "conn {conn}");
            let held: BTreeSet<String> = have.keys().cloned().collect();
            assert_eq!(held, self.held[conn], "conn {conn}");
        }
    }
}

fuzz_target!(|input: Input| {
    let topics = topics();
    let router = router();
    let max_channels = usize::from(input.max_channels % 5);
    let payload = RawValue::from_string("{\"n\":1}".to_owned()).unwrap();
    let mut world = World {
        local: (0..WORKERS).map(|_| LocalTopics::default()).collect(),
        table: TopicTable::new(2, WORKERS),
        chans: (0..CONNS).map(|_| Channels::new()).collect(),
        held: vec![BTreeSet::new(); CONNS],
        model: Model {
            joined: vec![BTreeMap::new(); CONNS],
            max_channels,
        },
        topics: topics.clone(),
    };
    for op in input.ops.iter().take(400) {
        match *op {
            Op::Msg {
                conn,
                topic,
                event,
                join_ref,
                msg_ref,
            } => {
                let conn = usize::from(conn) % CONNS;
                let vsn = vsn_of(conn);
                let topic = &topics[usize::from(topic) % topics.len()];
                let event = EVENTS[usize::from(event) % EVENTS.len()];
                let (jr, r) = (join_ref.get(), msg_ref.get());
                let msg = Message {
                    join_ref: jr.as_deref().map(Cow::Borrowed),
                    msg_ref: r.as_deref().map(Cow::Borrowed),
                    topic: Cow::Borrowed(topic),
                    event: Cow::Borrowed(event),
                    payload: Payload::Json(&payload),
                };
                let (chans, mut host) = world.host(conn);
                let outcome = chans.handle(vsn, &msg, &router, max_channels, &mut host);
                assert_eq!(outcome, Outcome::Continue);
                let sent: Vec<Frame> = host
                    .sent
                    .iter()
                    .map(|(kind, bytes)| decode_sent(vsn, *kind, bytes))
                    .collect();
                let published = std::mem::take(&mut host.published);
                let (want, want_broadcast) =
                    world
                        .model
                        .apply(conn, vsn, topic, event, jr.as_deref(), r.as_deref());
                assert_eq!(sent, want, "conn {conn} {event} {topic:.20}");
                let want_published: Vec<(String, String)> = want_broadcast
                    .iter()
                    .map(|t| (t.clone(), event.to_owned()))
                    .collect();
                assert_eq!(published, want_published);
                if let Some(t) = want_broadcast {
                    // The sender is a member and hears its own broadcast.
                    assert!(world.deliver(&t).contains(&conn));
                }
            }
            Op::Publish { topic } => {
                let topic = &topics[usize::from(topic) % topics.len()];
                assert_eq!(world.deliver(topic), world.model.members(topic));
            }
            Op::Close { conn } => {
                let conn = usize::from(conn) % CONNS;
                let (chans, mut host) = world.host(conn);
                chans.leave_all(&mut host);
                assert!(host.sent.is_empty() && host.published.is_empty());
                assert!(chans.is_empty());
                world.chans[conn] = Channels::new();
                world.model.joined[conn].clear();
            }
        }
        world.check();
    }
});
