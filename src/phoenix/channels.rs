//! Per-connection channel state and the server rules of `docs/protocol.md`: heartbeat, join,
//! duplicate join, leave, push, and what to answer when any of them does not fit the
//! connection's state. Owns "what does Phoenix reply to this message now".
//!
//! The state is only the set of joined topics ([`Channels`], 24 bytes, no heap for one
//! topic). Everything else goes through [`Host`], which the worker implements: topic
//! interning and membership, fan-out, and queueing frames for this connection.
//!
//! # Rules, in the order `handle` applies them
//! 1. `phoenix`/`heartbeat`: ok reply, `join_ref` null, in any state.
//! 2. `phx_join`: if the topic is already joined, unsubscribe the old join; then, in Phoenix's order:
//!    no route → error "unmatched topic" (`join_ref` null); topic over [`MAX_TOPIC_BYTES`] →
//!    error "topic too long"; `join_ref` or `ref` over [`MAX_REF_BYTES`] → error "ref too long"
//!    (a ringgate bound: Phoenix keeps any); `max_channels` joined → error "too many channels joined";
//!    [`Host::authorize_join`] refuses → error with its reason; else subscribe and ok reply
//!    echoing the client's `join_ref` and `ref`. The join errors after routing echo the
//!    `join_ref`, like a Phoenix channel's `{:error, reply}`. After that reply (ok or error)
//!    comes the old join's `phx_close` (`[old, old, topic, "phx_close", {}]`), as in Phoenix.
//! 3. `phx_leave`: joined and `join_ref` null or matching → ok reply then `phx_close` with
//!    `ref = join_ref`, unsubscribe; joined with a stale `join_ref` → nothing (the client
//!    raced a server close); not joined → ok reply.
//! 4. Any other event: not joined → error "unmatched topic" (`join_ref` null); joined with a
//!    stale `join_ref` → dropped silently; `phx_reply`/`phx_close`/`phx_error` → error
//!    "reserved event"; else by route: [`OnPush::Broadcast`] → [`Host::broadcast`] then ok
//!    reply, [`OnPush::Reject`] → error "push not allowed".
//!
//! # The channel's join_ref
//! A channel remembers the join's `join_ref`, or its `ref` when the join had none — which
//! is what Phoenix's channel process does (`join_ref || ref`). For V1, whose frames carry
//! no `join_ref`, that makes the join's `ref` the channel's identity, as in Phoenix 1.2 (the
//! server V1 clients were written for): `phx_close` after a V1 leave or duplicate join
//! carries `"ref":<the join's ref>`, which the V1 client (phoenix.js 1.2) checks against its
//! current join before closing. Phoenix ≥ 1.3 writes `"ref":null` there for V1, which that
//! client accepts for any join — including a newer one it should not close.
//!
//! A message's `join_ref` matches the channel when it is null or equal to the join's own
//! `join_ref` (its key). A V2 join sent with a null `join_ref` is keyed by null: only messages
//! without a `join_ref` reach it, while its replies carry the join's `ref`. V1 joins keep the
//! join's `ref` as their key (the identity above). See `docs/protocol.md`.
//!
//! # Reserved events
//! A client sending `phx_reply`, `phx_close` or `phx_error` on a joined topic would, if
//! broadcast, make every member's client close or error its channel. Phoenix hands such an
//! event to the application's `handle_in`, which usually has no clause for it and crashes
//! the channel. The gateway refuses it with an error reply instead and keeps the channel.

mod store;

use super::router::{OnPush, Router};
use super::serializer::{self, FrameKind, Message, Payload};
use super::Vsn;

pub use self::store::INLINE_JOIN_REF_MAX_BYTES;
use self::store::{Entry, Store};

/// The longest topic a client may join. Default 255 bytes because that is the most a V2
/// binary frame can carry (one length byte): a longer topic could never receive binary
/// broadcasts. It also bounds what one join can make the host intern.
pub const MAX_TOPIC_BYTES: usize = serializer::BINARY_FIELD_MAX_BYTES;

/// The longest `join_ref` (or, for a join without one, `ref`) a join may carry: the channel keeps
/// it for as long as it is joined, so without a bound one connection could hold
/// `max_message_bytes` × `max_channels_per_connection` of refs. 255 bytes, the most a V2 binary
/// frame can carry too; official clients send counters of a few digits.
pub const MAX_REF_BYTES: usize = serializer::BINARY_FIELD_MAX_BYTES;

/// The default for `max_channels`: Phoenix's `max_channels_per_transport` (100, since
/// Phoenix 1.8.9), which bounds what one connection can make the server hold.
pub const DEFAULT_MAX_CHANNELS: usize = 100;

/// A topic interned by the host (defined with the topic tables, which intern it).
pub use crate::topics::TopicId;

/// What the channel rules need from the worker, for one connection.
pub trait Host {
    /// The id of `topic`, created if new. The topic stays alive while any connection is
    /// subscribed to it; `handle` always subscribes right after interning.
    fn intern(&mut self, topic: &str) -> TopicId;
    fn topic_name(&self, id: TopicId) -> &str;
    /// The id of `topic` if it exists, without creating it.
    fn lookup(&self, topic: &str) -> Option<TopicId>;
    /// This connection becomes a member of the topic.
    fn subscribe(&mut self, id: TopicId);
    /// This connection stops being a member of the topic.
    fn unsubscribe(&mut self, id: TopicId);
    /// Fans the message out to every member of the topic, this connection included.
    fn broadcast(&mut self, topic: &str, event: &str, payload: Payload<'_>);
    /// Queues a frame payload for this connection.
    fn send(&mut self, kind: FrameKind, payload: Vec<u8>);
    /// Whether this connection may join `topic`; `Err(reason)` refuses the join with an
    /// error reply `{"reason":reason}`. The default allows every routed topic.
    fn authorize_join(
        &mut self,
        _topic: &str,
        _join_payload: &Payload<'_>,
    ) -> Result<(), &'static str> {
        Ok(())
    }
    /// The join of `id` was accepted and its ok reply sent (presence pushes its state now).
    fn joined(&mut self, _id: TopicId, _join_ref: Option<&str>) {}
}

/// What the caller does with the connection after [`Channels::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Close with this code and reason. No rule of `docs/protocol.md` closes the connection
    /// today; the variant is the slot for rules that will (e.g. an expired token).
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// The joined channels of one connection. 24 bytes; no heap while at most one topic is
/// joined (see [`INLINE_JOIN_REF_MAX_BYTES`] for the join_ref limit of that guarantee).
#[derive(Debug, Default)]
pub struct Channels {
    store: Store,
}

/// The size the per-connection budget is computed with; checked at compile time.
pub const CHANNELS_BYTES: usize = store::STORE_BYTES;
/// The size of each joined channel when two or more are joined (then on the heap).
pub const CHANNEL_ENTRY_BYTES: usize = store::ENTRY_BYTES;
const _: () = assert!(std::mem::size_of::<Channels>() <= CHANNELS_BYTES);

const EMPTY_JSON: &[u8] = b"{}";
const RESERVED_EVENTS: [&str; 3] = ["phx_reply", "phx_close", "phx_error"];

impl Channels {
    pub fn new() -> Self {
        Channels::default()
    }

    /// The number of joined topics.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The joined topics with the join_ref each was joined with.
    pub fn iter(&self) -> impl Iterator<Item = (TopicId, Option<&str>)> {
        self.store.iter().map(|e| (e.topic(), e.join_ref()))
    }

    /// Applies the server rules (module docs) to one decoded message. Frames go out through
    /// `host.send` in the order the client must see them. `max_channels` is the most topics
    /// this connection may have joined ([`DEFAULT_MAX_CHANNELS`]).
    pub fn handle(
        &mut self,
        vsn: Vsn,
        msg: &Message<'_>,
        router: &Router,
        max_channels: usize,
        host: &mut impl Host,
    ) -> Outcome {
        let reply = Reply {
            vsn,
            topic: &msg.topic,
            msg_ref: msg.msg_ref.as_deref(),
        };
        match msg.event.as_ref() {
            "heartbeat" if msg.topic == "phoenix" => reply.ok(host, None),
            "phx_join" => self.join(reply, msg, router, max_channels, host),
            "phx_leave" => self.leave(reply, msg, host),
            _ => self.push(reply, msg, router, host),
        }
        Outcome::Continue
    }

    /// The connection is gone: leave every topic without sending anything. Call this before
    /// dropping a `Channels` that is not empty, or the host keeps the memberships.
    pub fn leave_all(&mut self, host: &mut impl Host) {
        self.store.empty_topics(|topic| host.unsubscribe(topic));
    }

    /// A join. A duplicate join first ends the old one (unsubscribe), then the new join is
    /// answered, and only then comes the old join's `phx_close`: Phoenix
    /// (`Phoenix.Socket.handle_in/4`, duplicate-join clause) queues that close to its own
    /// mailbox and returns the new join's reply, which the transport writes first.
    fn join(
        &mut self,
        reply: Reply<'_>,
        msg: &Message<'_>,
        router: &Router,
        max_channels: usize,
        host: &mut impl Host,
    ) {
        let old = host.lookup(reply.topic).and_then(|id| {
            let old = self.store.remove(id)?;
            host.unsubscribe(id);
            Some(old)
        });
        self.join_new(reply, msg, router, max_channels, host);
        if let Some(old) = old {
            reply.close(host, old.key());
        }
    }

    fn join_new(
        &mut self,
        reply: Reply<'_>,
        msg: &Message<'_>,
        router: &Router,
        max_channels: usize,
        host: &mut impl Host,
    ) {
        let topic = reply.topic;
        let join_ref = msg.join_ref.as_deref();
        if router.route(topic).is_none() {
            return reply.error(host, None, "unmatched topic");
        }
        if topic.len() > MAX_TOPIC_BYTES {
            return reply.error(host, join_ref, "topic too long");
        }
        if join_ref.map_or(0, str::len) > MAX_REF_BYTES
            || reply.msg_ref.map_or(0, str::len) > MAX_REF_BYTES
        {
            return reply.error(host, join_ref, "ref too long");
        }
        if self.len() >= max_channels {
            return reply.error(host, join_ref, "too many channels joined");
        }
        if let Err(reason) = host.authorize_join(topic, &msg.payload) {
            return reply.error(host, join_ref, reason);
        }
        let id = host.intern(topic);
        host.subscribe(id);
        let entry = match (reply.vsn, join_ref, reply.msg_ref) {
            (Vsn::V2, None, Some(msg_ref)) => Entry::keyless(id, msg_ref),
            _ => Entry::new(id, join_ref.or(reply.msg_ref)),
        };
        self.store.insert(entry);
        reply.ok(host, join_ref);
        host.joined(id, join_ref.or(reply.msg_ref));
    }

    fn leave(&mut self, reply: Reply<'_>, msg: &Message<'_>, host: &mut impl Host) {
        let Some((id, entry)) = self.find(host, reply.topic) else {
            return reply.ok(host, msg.join_ref.as_deref());
        };
        if !same_join(entry.key(), msg.join_ref.as_deref()) {
            return;
        }
        if let Some(left) = self.store.remove(id) {
            host.unsubscribe(id);
            reply.ok(host, left.join_ref());
            reply.close(host, left.key());
        }
    }

    fn push(&mut self, reply: Reply<'_>, msg: &Message<'_>, router: &Router, host: &mut impl Host) {
        let Some((_, entry)) = self.find(host, reply.topic) else {
            return reply.error(host, None, "unmatched topic");
        };
        let join_ref = entry.join_ref();
        if !same_join(entry.key(), msg.join_ref.as_deref()) {
            return;
        }
        if RESERVED_EVENTS.contains(&msg.event.as_ref()) {
            return reply.error(host, join_ref, "reserved event");
        }
        // A route removed by a configuration reload leaves joined channels receive-only.
        match router.route(reply.topic).map(|route| route.on_push) {
            Some(OnPush::Broadcast) => {
                // Broadcast before the reply, as in Phoenix, where the channel's broadcast
                // reaches the socket before its reply does.
                host.broadcast(reply.topic, &msg.event, msg.payload);
                reply.ok(host, join_ref);
            }
            Some(OnPush::Reject) | None => reply.error(host, join_ref, "push not allowed"),
        }
    }

    fn find(&self, host: &impl Host, topic: &str) -> Option<(TopicId, &Entry)> {
        let id = host.lookup(topic)?;
        self.store.find(id).map(|entry| (id, entry))
    }
}

/// Whether a message's join_ref addresses the channel's current join (`key`, the join's own
/// join_ref): a null join_ref in the message matches any join; otherwise it must equal the
/// key exactly, and a join made with a null join_ref matches only null. Phoenix
/// (`Phoenix.Socket.handle_in/4`, the `phx_leave` and push clauses on a joined topic):
/// `is_nil(join_ref) or join_ref === existing_join_ref`.
fn same_join(key: Option<&str>, message: Option<&str>) -> bool {
    match message {
        None => true,
        Some(message) => key == Some(message),
    }
}

/// The frames answering one message: same version, topic and ref for all of them.
#[derive(Clone, Copy)]
struct Reply<'a> {
    vsn: Vsn,
    topic: &'a str,
    msg_ref: Option<&'a str>,
}

impl Reply<'_> {
    fn ok(self, host: &mut impl Host, join_ref: Option<&str>) {
        let frame = serializer::reply_frame(
            self.vsn,
            join_ref,
            self.msg_ref,
            self.topic,
            "ok",
            EMPTY_JSON,
        );
        host.send(FrameKind::Text, frame);
    }

    fn error(self, host: &mut impl Host, join_ref: Option<&str>, reason: &str) {
        let response = serializer::reason_json(reason);
        let frame = serializer::reply_frame(
            self.vsn,
            join_ref,
            self.msg_ref,
            self.topic,
            "error",
            &response,
        );
        host.send(FrameKind::Text, frame);
    }

    /// `phx_close` for a join that ended: `ref = join_ref`, payload `{}`.
    fn close(self, host: &mut impl Host, join_ref: Option<&str>) {
        let frame = serializer::message_frame(
            self.vsn,
            join_ref,
            join_ref,
            self.topic,
            "phx_close",
            EMPTY_JSON,
        );
        host.send(FrameKind::Text, frame);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::super::router::Route;
    use super::super::serializer::decode_text;
    use super::*;

    /// A worker stand-in for one connection: interns topics (freeing and reusing ids when
    /// the last member leaves, so a rejoin may get a new id), records every call, and fails
    /// the test on a double subscribe or an unsubscribe of a topic not subscribed.
    #[derive(Default)]
    struct MockHost {
        names: Vec<Option<String>>,
        ids: HashMap<String, TopicId>,
        free: Vec<u32>,
        subscribed: BTreeSet<TopicId>,
        frames: Vec<(FrameKind, Vec<u8>)>,
        broadcasts: Vec<(String, String, String)>,
        authorize_calls: Vec<(String, String)>,
        deny: Option<&'static str>,
    }

    impl Host for MockHost {
        fn intern(&mut self, topic: &str) -> TopicId {
            if let Some(&id) = self.ids.get(topic) {
                return id;
            }
            let id = match self.free.pop() {
                Some(id) => id,
                None => {
                    self.names.push(None);
                    (self.names.len() - 1) as u32
                }
            };
            self.names[id as usize] = Some(topic.to_owned());
            self.ids.insert(topic.to_owned(), TopicId(id));
            TopicId(id)
        }

        fn topic_name(&self, id: TopicId) -> &str {
            self.names[id.0 as usize].as_deref().expect("a live topic")
        }

        fn lookup(&self, topic: &str) -> Option<TopicId> {
            self.ids.get(topic).copied()
        }

        fn subscribe(&mut self, id: TopicId) {
            assert!(
                self.names[id.0 as usize].is_some(),
                "subscribe to a dead topic"
            );
            assert!(self.subscribed.insert(id), "subscribed twice to {id:?}");
        }

        fn unsubscribe(&mut self, id: TopicId) {
            assert!(
                self.subscribed.remove(&id),
                "unsubscribe without subscribe {id:?}"
            );
            // This connection was the only member: the topic dies and its id is reused.
            let name = self.names[id.0 as usize].take().expect("a live topic");
            self.ids.remove(&name);
            self.free.push(id.0);
        }

        fn broadcast(&mut self, topic: &str, event: &str, payload: Payload<'_>) {
            let payload = match payload {
                Payload::Json(json) => json.get().to_owned(),
                Payload::Binary(data) => format!("binary:{data:?}"),
            };
            self.broadcasts
                .push((topic.to_owned(), event.to_owned(), payload));
        }

        fn send(&mut self, kind: FrameKind, payload: Vec<u8>) {
            self.frames.push((kind, payload));
        }

        fn authorize_join(
            &mut self,
            topic: &str,
            join_payload: &Payload<'_>,
        ) -> Result<(), &'static str> {
            let payload = match join_payload {
                Payload::Json(json) => json.get().to_owned(),
                Payload::Binary(data) => format!("binary:{data:?}"),
            };
            self.authorize_calls.push((topic.to_owned(), payload));
            self.deny.map_or(Ok(()), Err)
        }
    }

    impl MockHost {
        fn take_frames(&mut self) -> Vec<String> {
            self.frames
                .drain(..)
                .map(|(kind, bytes)| {
                    assert_eq!(kind, FrameKind::Text, "the rules only send text frames");
                    String::from_utf8(bytes).unwrap()
                })
                .collect()
        }

        fn subscribed_names(&self) -> BTreeSet<String> {
            self.subscribed
                .iter()
                .map(|&id| self.topic_name(id).to_owned())
                .collect()
        }
    }

    struct Conn {
        vsn: Vsn,
        channels: Channels,
        host: MockHost,
        router: Router,
        max_channels: usize,
    }

    impl Conn {
        fn new(vsn: Vsn) -> Self {
            let router = Router::new(vec![
                Route::new("rooms:*", OnPush::Broadcast),
                Route::new("news:*", OnPush::Reject),
            ])
            .unwrap();
            Conn {
                vsn,
                channels: Channels::new(),
                host: MockHost::default(),
                router,
                max_channels: DEFAULT_MAX_CHANNELS,
            }
        }

        /// Decodes `text` as the client's frame, handles it, returns the frames sent.
        fn send(&mut self, text: &str) -> Vec<String> {
            let msg = decode_text(self.vsn, text).unwrap();
            self.handle(&msg)
        }

        fn handle(&mut self, msg: &Message<'_>) -> Vec<String> {
            let outcome = self.channels.handle(
                self.vsn,
                msg,
                &self.router,
                self.max_channels,
                &mut self.host,
            );
            assert_eq!(outcome, Outcome::Continue);
            self.host.take_frames()
        }

        fn joined(&self) -> Vec<(String, Option<String>)> {
            let mut joined: Vec<_> = self
                .channels
                .iter()
                .map(|(id, jr)| (self.host.topic_name(id).to_owned(), jr.map(str::to_owned)))
                .collect();
            joined.sort();
            joined
        }

        /// The channel rules' view and the host's memberships must always agree.
        fn assert_consistent(&self) {
            let from_channels: BTreeSet<String> =
                self.joined().into_iter().map(|(t, _)| t).collect();
            assert_eq!(from_channels, self.host.subscribed_names());
            assert_eq!(self.channels.len(), self.host.subscribed.len());
        }
    }

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    const JOIN_LOBBY_6: &str = r#"["6","6","rooms:lobby","phx_join",{"nick":"alice"}]"#;
    const OK_LOBBY_6: &str = r#"["6","6","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#;

    #[test]
    fn heartbeat_replies_with_null_join_ref_in_any_state() {
        let mut c = Conn::new(Vsn::V2);
        let hb = r#"[null,"8","phoenix","heartbeat",{}]"#;
        let want = r#"[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]"#;
        assert_eq!(c.send(hb), [want]);
        c.send(JOIN_LOBBY_6);
        assert_eq!(c.send(hb), [want]);
        // Even a client that wrongly sends a join_ref gets null back.
        assert_eq!(
            c.send(r#"["6","9","phoenix","heartbeat",{}]"#),
            [r#"[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(c.channels.len(), 1);
        assert!(c.host.broadcasts.is_empty());
    }

    #[test]
    fn join_replies_ok_and_subscribes() {
        let mut c = Conn::new(Vsn::V2);
        assert_eq!(c.send(JOIN_LOBBY_6), [OK_LOBBY_6]);
        assert_eq!(
            c.joined(),
            [("rooms:lobby".to_owned(), Some("6".to_owned()))]
        );
        assert_eq!(
            c.host.authorize_calls,
            [("rooms:lobby".to_owned(), r#"{"nick":"alice"}"#.to_owned())]
        );
        c.assert_consistent();
    }

    #[test]
    fn join_of_an_unrouted_topic_is_unmatched_with_null_join_ref() {
        let mut c = Conn::new(Vsn::V2);
        assert_eq!(
            c.send(r#"["13","13","nope:1","phx_join",{}]"#),
            [
                r#"[null,"13","nope:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
        assert!(c.channels.is_empty());
        assert_eq!(
            c.host.lookup("nope:1"),
            None,
            "an unrouted topic is never interned"
        );
        assert!(c.host.authorize_calls.is_empty());
        c.assert_consistent();
    }

    #[test]
    fn join_over_max_channels_is_refused() {
        let mut c = Conn::new(Vsn::V2);
        c.max_channels = 2;
        c.send(r#"["1","1","rooms:a","phx_join",{}]"#);
        c.send(r#"["2","2","rooms:b","phx_join",{}]"#);
        assert_eq!(
            c.send(r#"["3","3","rooms:c","phx_join",{}]"#),
            [
                r#"["3","3","rooms:c","phx_reply",{"status":"error","response":{"reason":"too many channels joined"}}]"#
            ]
        );
        assert_eq!(c.channels.len(), 2);
        assert_eq!(c.host.lookup("rooms:c"), None);
        // Routing is checked first, as in Phoenix.
        assert_eq!(
            c.send(r#"["4","4","nope","phx_join",{}]"#),
            [
                r#"[null,"4","nope","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
        // Leaving makes room again.
        c.send(r#"["1","5","rooms:a","phx_leave",{}]"#);
        assert_eq!(
            c.send(r#"["6","6","rooms:c","phx_join",{}]"#),
            [r#"["6","6","rooms:c","phx_reply",{"status":"ok","response":{}}]"#]
        );
        c.assert_consistent();
    }

    #[test]
    fn max_channels_zero_refuses_every_join() {
        let mut c = Conn::new(Vsn::V2);
        c.max_channels = 0;
        assert_eq!(
            c.send(r#"["1","1","rooms:a","phx_join",{}]"#),
            [
                r#"["1","1","rooms:a","phx_reply",{"status":"error","response":{"reason":"too many channels joined"}}]"#
            ]
        );
        assert!(c.channels.is_empty());
    }

    #[test]
    fn authorize_join_refusal_is_an_error_reply_with_its_reason() {
        let mut c = Conn::new(Vsn::V2);
        c.host.deny = Some("unauthorized");
        assert_eq!(
            c.send(r#"["2","2","rooms:vip","phx_join",{"token":"x"}]"#),
            [
                r#"["2","2","rooms:vip","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]"#
            ]
        );
        assert_eq!(
            c.host.authorize_calls,
            [("rooms:vip".to_owned(), r#"{"token":"x"}"#.to_owned())]
        );
        assert!(c.channels.is_empty());
        assert_eq!(c.host.lookup("rooms:vip"), None);
        // A reason that needs escaping is escaped.
        c.host.deny = Some("no \"vip\"");
        assert_eq!(
            c.send(r#"["3","3","rooms:vip","phx_join",{}]"#),
            [
                r#"["3","3","rooms:vip","phx_reply",{"status":"error","response":{"reason":"no \"vip\""}}]"#
            ]
        );
    }

    #[test]
    fn topic_longer_than_255_bytes_is_refused() {
        let mut c = Conn::new(Vsn::V2);
        let ok_topic = format!("rooms:{}", "x".repeat(MAX_TOPIC_BYTES - 6));
        let long_topic = format!("{ok_topic}x");
        let join = |topic: &str| format!(r#"["1","1","{topic}","phx_join",{{}}]"#);
        assert_eq!(
            c.send(&join(&long_topic)),
            [format!(
                r#"["1","1","{long_topic}","phx_reply",{{"status":"error","response":{{"reason":"topic too long"}}}}]"#
            )]
        );
        assert!(c.channels.is_empty());
        assert_eq!(
            c.send(&join(&ok_topic)),
            [format!(
                r#"["1","1","{ok_topic}","phx_reply",{{"status":"ok","response":{{}}}}]"#
            )]
        );
        c.assert_consistent();
    }

    #[test]
    fn a_join_ref_or_ref_longer_than_255_bytes_is_refused_and_not_kept() {
        let mut c = Conn::new(Vsn::V2);
        let ok = "r".repeat(MAX_REF_BYTES);
        let long = format!("{ok}r");
        for (join_ref, msg_ref) in [(&long, &ok), (&ok, &long)] {
            assert_eq!(
                c.send(&format!(
                    r#"["{join_ref}","{msg_ref}","rooms:a","phx_join",{{}}]"#
                )),
                [format!(
                    r#"["{join_ref}","{msg_ref}","rooms:a","phx_reply",{{"status":"error","response":{{"reason":"ref too long"}}}}]"#
                )]
            );
            assert!(c.channels.is_empty());
        }
        assert_eq!(
            c.send(&format!(r#"["{ok}","{ok}","rooms:a","phx_join",{{}}]"#)),
            [format!(
                r#"["{ok}","{ok}","rooms:a","phx_reply",{{"status":"ok","response":{{}}}}]"#
            )]
        );
        c.assert_consistent();
    }

    #[test]
    fn duplicate_join_answers_the_new_join_then_closes_the_old() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        assert_eq!(
            c.send(r#"["9","9","rooms:lobby","phx_join",{}]"#),
            [
                r#"["9","9","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["6","6","rooms:lobby","phx_close",{}]"#,
            ]
        );
        assert_eq!(
            c.joined(),
            [("rooms:lobby".to_owned(), Some("9".to_owned()))]
        );
        c.assert_consistent();
        // The same join_ref again (a client retrying) is still a duplicate join.
        assert_eq!(
            c.send(r#"["9","9","rooms:lobby","phx_join",{}]"#),
            [
                r#"["9","9","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["9","9","rooms:lobby","phx_close",{}]"#,
            ]
        );
        c.assert_consistent();
    }

    #[test]
    fn refused_rejoin_still_closes_the_old_join() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        c.host.deny = Some("banned");
        assert_eq!(
            c.send(r#"["9","9","rooms:lobby","phx_join",{}]"#),
            [
                r#"["9","9","rooms:lobby","phx_reply",{"status":"error","response":{"reason":"banned"}}]"#,
                r#"["6","6","rooms:lobby","phx_close",{}]"#,
            ]
        );
        assert!(c.channels.is_empty());
        c.assert_consistent();
    }

    #[test]
    fn duplicate_join_at_the_limit_is_accepted() {
        let mut c = Conn::new(Vsn::V2);
        c.max_channels = 1;
        c.send(JOIN_LOBBY_6);
        assert_eq!(
            c.send(r#"["7","7","rooms:lobby","phx_join",{}]"#),
            [
                r#"["7","7","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["6","6","rooms:lobby","phx_close",{}]"#,
            ]
        );
        assert_eq!(c.channels.len(), 1);
    }

    #[test]
    fn leave_replies_ok_then_closes_with_ref_equal_join_ref() {
        let mut c = Conn::new(Vsn::V2);
        c.send(r#"["20","20","rooms:lobby","phx_join",{}]"#);
        assert_eq!(
            c.send(r#"["20","22","rooms:lobby","phx_leave",{}]"#),
            [
                r#"["20","22","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["20","20","rooms:lobby","phx_close",{}]"#,
            ]
        );
        assert!(c.channels.is_empty());
        assert_eq!(c.host.lookup("rooms:lobby"), None, "unsubscribed");
        c.assert_consistent();
    }

    #[test]
    fn leave_with_null_join_ref_leaves_the_current_join() {
        let mut c = Conn::new(Vsn::V2);
        c.send(r#"["20","20","rooms:lobby","phx_join",{}]"#);
        assert_eq!(
            c.send(r#"[null,"22","rooms:lobby","phx_leave",{}]"#),
            [
                r#"["20","22","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["20","20","rooms:lobby","phx_close",{}]"#,
            ]
        );
        assert!(c.channels.is_empty());
        c.assert_consistent();
    }

    #[test]
    fn leave_with_a_stale_join_ref_is_ignored() {
        let mut c = Conn::new(Vsn::V2);
        c.send(r#"["20","20","rooms:lobby","phx_join",{}]"#);
        assert!(c
            .send(r#"["19","22","rooms:lobby","phx_leave",{}]"#)
            .is_empty());
        assert_eq!(
            c.joined(),
            [("rooms:lobby".to_owned(), Some("20".to_owned()))]
        );
        c.assert_consistent();
    }

    #[test]
    fn leave_of_a_topic_not_joined_replies_ok() {
        let mut c = Conn::new(Vsn::V2);
        assert_eq!(
            c.send(r#"["3","4","rooms:x","phx_leave",{}]"#),
            [r#"["3","4","rooms:x","phx_reply",{"status":"ok","response":{}}]"#]
        );
        // Unrouted topics too: leave never says "unmatched".
        assert_eq!(
            c.send(r#"[null,"5","nope","phx_leave",{}]"#),
            [r#"[null,"5","nope","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert!(c.channels.is_empty());
        c.assert_consistent();
    }

    #[test]
    fn push_on_a_broadcast_route_fans_out_then_replies_ok() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        assert_eq!(
            c.send(r#"["6","7","rooms:lobby","new_msg",{"body":"hi"}]"#),
            [r#"["6","7","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(
            c.host.broadcasts,
            [(
                "rooms:lobby".to_owned(),
                "new_msg".to_owned(),
                r#"{"body":"hi"}"#.to_owned()
            )]
        );
    }

    #[test]
    fn push_with_null_join_ref_uses_the_channel_join_ref() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        assert_eq!(
            c.send(r#"[null,"7","rooms:lobby","new_msg",{}]"#),
            [r#"["6","7","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(c.host.broadcasts.len(), 1);
    }

    #[test]
    fn push_with_a_stale_join_ref_is_dropped() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        assert!(c.send(r#"["5","7","rooms:lobby","new_msg",{}]"#).is_empty());
        assert!(c.host.broadcasts.is_empty());
    }

    /// Issue 9, defect 8: a V2 join sent with a null join_ref is keyed by null, as Phoenix's
    /// socket keeps it: a message with a join_ref (even the join's ref) does not match it, a
    /// message without one does. Replies still carry the channel's join_ref (the join's ref),
    /// and `phx_close` the join's own (null).
    #[test]
    fn null_join_ref_of_a_join_is_not_a_wildcard() {
        let mut c = Conn::new(Vsn::V2);
        assert_eq!(
            c.send(r#"[null,"5","rooms:lobby","phx_join",{}]"#),
            [r#"[null,"5","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(
            c.joined(),
            [("rooms:lobby".to_owned(), Some("5".to_owned()))]
        );
        assert!(c.send(r#"["5","6","rooms:lobby","new_msg",{}]"#).is_empty());
        assert!(c
            .send(r#"["x","7","rooms:lobby","phx_leave",{}]"#)
            .is_empty());
        assert!(c.host.broadcasts.is_empty());
        assert_eq!(
            c.send(r#"[null,"8","rooms:lobby","new_msg",{}]"#),
            [r#"["5","8","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(c.host.broadcasts.len(), 1);
        assert_eq!(
            c.send(r#"[null,"9","rooms:lobby","phx_leave",{}]"#),
            [
                r#"["5","9","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#,
                r#"[null,null,"rooms:lobby","phx_close",{}]"#,
            ]
        );
        c.assert_consistent();
    }

    /// Issue 9, defect 8: a binary push's empty join_ref is `""`, not null: it does not
    /// match a join made with "6" (Phoenix drops it), and it matches a join made with "".
    #[test]
    fn binary_empty_join_ref_is_the_empty_string() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        let push = |join_ref: &str| {
            let mut f = vec![0u8, join_ref.len() as u8, 1, 11, 7];
            f.extend_from_slice(join_ref.as_bytes());
            f.extend_from_slice(b"7rooms:lobbynew_msg\x01");
            f
        };
        let empty = push("");
        let msg = serializer::decode(Vsn::V2, FrameKind::Binary, &empty).unwrap();
        assert_eq!(msg.join_ref.as_deref(), Some(""));
        assert!(c.handle(&msg).is_empty());
        assert!(c.host.broadcasts.is_empty());
        let current = push("6");
        let msg = serializer::decode(Vsn::V2, FrameKind::Binary, &current).unwrap();
        assert_eq!(
            c.handle(&msg),
            [r#"["6","7","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        // A join made with "" (binary) is matched by "" and answered with "".
        let mut join = vec![0u8, 0, 1, 9, 8];
        join.extend_from_slice(b"1rooms:binphx_join");
        let msg = serializer::decode(Vsn::V2, FrameKind::Binary, &join).unwrap();
        assert_eq!(
            c.handle(&msg),
            [r#"["","1","rooms:bin","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert!(c
            .joined()
            .contains(&("rooms:bin".to_owned(), Some(String::new()))));
    }

    #[test]
    fn push_on_a_topic_not_joined_is_unmatched() {
        let mut c = Conn::new(Vsn::V2);
        assert_eq!(
            c.send(r#"["6","7","rooms:lobby","new_msg",{}]"#),
            [
                r#"[null,"7","rooms:lobby","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
        // Joined by another connection (the host knows the topic) is still not joined here.
        c.host.intern("rooms:other");
        assert_eq!(
            c.send(r#"["6","8","rooms:other","new_msg",{}]"#),
            [
                r#"[null,"8","rooms:other","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
        assert!(c.host.broadcasts.is_empty());
    }

    #[test]
    fn push_on_a_reject_route_is_refused() {
        let mut c = Conn::new(Vsn::V2);
        c.send(r#"["1","1","news:today","phx_join",{}]"#);
        assert_eq!(
            c.send(r#"["1","2","news:today","post",{}]"#),
            [
                r#"["1","2","news:today","phx_reply",{"status":"error","response":{"reason":"push not allowed"}}]"#
            ]
        );
        assert!(c.host.broadcasts.is_empty());
        assert_eq!(c.channels.len(), 1, "a refused push keeps the channel");
    }

    #[test]
    fn push_after_its_route_was_removed_is_refused() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        c.router = Router::new(vec![]).unwrap();
        assert_eq!(
            c.send(r#"["6","7","rooms:lobby","new_msg",{}]"#),
            [
                r#"["6","7","rooms:lobby","phx_reply",{"status":"error","response":{"reason":"push not allowed"}}]"#
            ]
        );
        // Leaving still works.
        assert_eq!(c.send(r#"["6","8","rooms:lobby","phx_leave",{}]"#).len(), 2);
        c.assert_consistent();
    }

    #[test]
    fn reserved_events_from_the_client_are_refused() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        for event in ["phx_reply", "phx_close", "phx_error"] {
            assert_eq!(
                c.send(&format!(r#"["6","7","rooms:lobby","{event}",{{}}]"#)),
                [
                    r#"["6","7","rooms:lobby","phx_reply",{"status":"error","response":{"reason":"reserved event"}}]"#
                ]
            );
        }
        assert!(c.host.broadcasts.is_empty());
        assert_eq!(c.channels.len(), 1);
        // Not joined: unmatched first, as for any push.
        assert_eq!(
            c.send(r#"["6","8","rooms:x","phx_close",{}]"#),
            [
                r#"[null,"8","rooms:x","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
    }

    #[test]
    fn binary_push_is_broadcast_as_binary_and_acknowledged_in_json() {
        let mut c = Conn::new(Vsn::V2);
        c.send(JOIN_LOBBY_6);
        let mut frame = vec![0u8, 1, 1, 11, 3];
        frame.extend_from_slice(b"67rooms:lobbyimg");
        frame.extend_from_slice(&[1, 2, 3]);
        let msg = serializer::decode_binary(&frame).unwrap();
        assert_eq!(
            c.handle(&msg),
            [r#"["6","7","rooms:lobby","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(
            c.host.broadcasts,
            [(
                "rooms:lobby".to_owned(),
                "img".to_owned(),
                "binary:[1, 2, 3]".to_owned()
            )]
        );
    }

    #[test]
    fn v1_connection_uses_the_join_ref_as_channel_identity_and_never_writes_join_ref() {
        let mut c = Conn::new(Vsn::V1);
        assert_eq!(
            c.send(
                r#"{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"u"},"ref":"1"}"#
            ),
            [
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#
            ]
        );
        assert_eq!(
            c.joined(),
            [("rooms:lobby".to_owned(), Some("1".to_owned()))]
        );
        assert_eq!(
            c.send(r#"{"topic":"rooms:lobby","event":"new_msg","payload":{"b":1},"ref":"2"}"#),
            [
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"2"}"#
            ]
        );
        assert_eq!(c.host.broadcasts.len(), 1);
        assert_eq!(
            c.send(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}"#),
            [
                r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"3"}"#
            ]
        );
        // Duplicate join: the reply, then the close carrying the old join's ref.
        assert_eq!(
            c.send(r#"{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"4"}"#),
            [
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"4"}"#,
                r#"{"topic":"rooms:lobby","event":"phx_close","payload":{},"ref":"1"}"#,
            ]
        );
        assert_eq!(
            c.send(r#"{"topic":"rooms:lobby","event":"phx_leave","payload":{},"ref":"5"}"#),
            [
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"5"}"#,
                r#"{"topic":"rooms:lobby","event":"phx_close","payload":{},"ref":"4"}"#,
            ]
        );
        assert_eq!(
            c.send(r#"{"topic":"nope","event":"phx_join","payload":{},"ref":"6"}"#),
            [
                r#"{"topic":"nope","event":"phx_reply","payload":{"status":"error","response":{"reason":"unmatched topic"}},"ref":"6"}"#
            ]
        );
        assert_eq!(
            c.send(r#"{"topic":"rooms:lobby","event":"new_msg","payload":{},"ref":"7"}"#),
            [
                r#"{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"error","response":{"reason":"unmatched topic"}},"ref":"7"}"#
            ]
        );
        c.assert_consistent();
    }

    #[test]
    fn v1_join_ref_key_is_honoured_when_a_client_sends_one() {
        let mut c = Conn::new(Vsn::V1);
        c.send(r#"{"topic":"rooms:a","event":"phx_join","payload":{},"ref":"2","join_ref":"1"}"#);
        assert_eq!(c.joined(), [("rooms:a".to_owned(), Some("1".to_owned()))]);
        // A stale join_ref is ignored exactly as in V2.
        assert!(c
            .send(
                r#"{"topic":"rooms:a","event":"phx_leave","payload":{},"ref":"3","join_ref":"0"}"#
            )
            .is_empty());
        assert_eq!(c.channels.len(), 1);
    }

    #[test]
    fn leave_all_unsubscribes_everything_silently() {
        let mut c = Conn::new(Vsn::V2);
        for (i, topic) in ["rooms:a", "rooms:b", "news:c"].iter().enumerate() {
            c.send(&format!(r#"["{i}","{i}","{topic}","phx_join",{{}}]"#));
        }
        assert_eq!(c.channels.len(), 3);
        c.channels.leave_all(&mut c.host);
        assert!(c.channels.is_empty());
        assert!(c.host.subscribed.is_empty());
        assert!(c.host.frames.is_empty());
        // A second call is harmless.
        c.channels.leave_all(&mut c.host);
        c.assert_consistent();
    }

    #[test]
    fn joins_without_refs_and_odd_messages_never_panic() {
        let mut c = Conn::new(Vsn::V2);
        c.router = Router::new(vec![Route::new("*", OnPush::Broadcast)]).unwrap();
        // A join without any ref: the channel has no join_ref; only messages without one
        // match it (a null join_ref is not a wildcard on the channel's side).
        assert_eq!(
            c.send(r#"[null,null,"","phx_join",{}]"#),
            [r#"[null,null,"","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(c.joined(), [(String::new(), None)]);
        assert!(c.send(r#"["x",null,"","",null]"#).is_empty());
        assert_eq!(
            c.send(r#"[null,null,"","",null]"#),
            [r#"[null,null,"","phx_reply",{"status":"ok","response":{}}]"#]
        );
        assert_eq!(
            c.send(r#"["x",null,"","phx_join",[]]"#),
            [
                r#"["x",null,"","phx_reply",{"status":"ok","response":{}}]"#,
                r#"[null,null,"","phx_close",{}]"#,
            ]
        );
        // "phoenix" may be joined through "*"; the heartbeat still answers with null.
        c.send(r#"["p","p","phoenix","phx_join",{}]"#);
        assert_eq!(
            c.send(r#"["p","h","phoenix","heartbeat",{}]"#),
            [r#"[null,"h","phoenix","phx_reply",{"status":"ok","response":{}}]"#]
        );
        // "heartbeat" on another topic is an ordinary push.
        assert_eq!(
            c.send(r#"[null,"h2","rooms:z","heartbeat",{}]"#),
            [
                r#"[null,"h2","rooms:z","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
            ]
        );
        assert_eq!(
            c.send(r#"[null,null,"phoenix","phx_leave",{}]"#),
            [
                r#"["p",null,"phoenix","phx_reply",{"status":"ok","response":{}}]"#,
                r#"["p","p","phoenix","phx_close",{}]"#,
            ]
        );
        c.assert_consistent();
    }

    #[test]
    fn long_join_refs_are_boxed_and_still_exact() {
        let mut c = Conn::new(Vsn::V2);
        let jr = "0123456789abcdef0123456789abcdef-uuid";
        c.send(&format!(r#"["{jr}","{jr}","rooms:a","phx_join",{{}}]"#));
        assert_eq!(c.joined(), [("rooms:a".to_owned(), Some(jr.to_owned()))]);
        assert_eq!(
            c.send(&format!(r#"["{jr}","9","rooms:a","phx_leave",{{}}]"#)),
            [
                format!(r#"["{jr}","9","rooms:a","phx_reply",{{"status":"ok","response":{{}}}}]"#),
                format!(r#"["{jr}","{jr}","rooms:a","phx_close",{{}}]"#),
            ]
        );
    }

    #[test]
    fn sizes_of_the_per_connection_state() {
        assert_eq!(std::mem::size_of::<Channels>(), CHANNELS_BYTES);
        assert_eq!(CHANNELS_BYTES, 24);
        assert_eq!(CHANNEL_ENTRY_BYTES, 24);
    }

    // ---- property test against a model --------------------------------------------------

    const TOPICS: [&str; 5] = ["rooms:0", "rooms:1", "rooms:2", "news:3", "nope:4"];
    const MODEL_MAX_CHANNELS: usize = 3;

    #[derive(Clone, Debug)]
    enum JoinRefPick {
        Null,
        Current,
        Stale,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Join {
            topic: usize,
            join_ref: u8,
        },
        Leave {
            topic: usize,
            pick: JoinRefPick,
        },
        Push {
            topic: usize,
            pick: JoinRefPick,
            reserved: bool,
        },
        Heartbeat,
    }

    fn pick() -> impl Strategy<Value = JoinRefPick> {
        prop_oneof![
            Just(JoinRefPick::Null),
            Just(JoinRefPick::Current),
            Just(JoinRefPick::Stale)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..TOPICS.len(), any::<u8>()).prop_map(|(topic, join_ref)| Op::Join { topic, join_ref }),
            2 => (0..TOPICS.len(), pick()).prop_map(|(topic, pick)| Op::Leave { topic, pick }),
            3 => (0..TOPICS.len(), pick(), proptest::bool::weighted(0.1))
                .prop_map(|(topic, pick, reserved)| Op::Push { topic, pick, reserved }),
            1 => Just(Op::Heartbeat),
        ]
    }

    /// (event, status, join_ref, ref) of a server text frame.
    fn summarize(
        vsn: Vsn,
        frame: &str,
    ) -> (String, Option<String>, Option<String>, Option<String>) {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        let (join_ref, msg_ref, event, payload) = match vsn {
            Vsn::V2 => (v[0].clone(), v[1].clone(), v[3].clone(), v[4].clone()),
            Vsn::V1 => (
                serde_json::Value::Null,
                v["ref"].clone(),
                v["event"].clone(),
                v["payload"].clone(),
            ),
        };
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        (
            s(&event).unwrap(),
            s(&payload["status"]),
            s(&join_ref),
            s(&msg_ref),
        )
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("phoenix".to_owned()),
            Just("heartbeat".to_owned()),
            Just("phx_join".to_owned()),
            Just("phx_leave".to_owned()),
            Just("phx_close".to_owned()),
            Just("rooms:".to_owned()),
            Just("rooms:a".to_owned()),
            Just("news:a".to_owned()),
            "[a-z:*]{0,6}",
            "\\PC{0,300}",
        ]
    }

    proptest! {
        /// Any combination of fields, in any order, on any version: no panic, and the
        /// connection's channels always equal the host's memberships.
        #[test]
        fn arbitrary_messages_keep_host_and_channels_consistent(
            v1 in any::<bool>(),
            max_channels in 0usize..4,
            msgs in proptest::collection::vec(
                (proptest::option::of(word()), proptest::option::of(word()), word(), word(), any::<bool>()),
                1..40,
            ),
        ) {
            let mut c = Conn::new(if v1 { Vsn::V1 } else { Vsn::V2 });
            c.max_channels = max_channels;
            for (join_ref, msg_ref, topic, event, binary) in &msgs {
                let payload = if *binary { Payload::Binary(b"\x00") } else { Payload::Json(raw("{}")) };
                let msg = Message {
                    join_ref: join_ref.as_deref().map(Into::into),
                    msg_ref: msg_ref.as_deref().map(Into::into),
                    topic: topic.as_str().into(),
                    event: event.as_str().into(),
                    payload,
                };
                let frames = c.handle(&msg);
                prop_assert!(frames.len() <= 2);
                for frame in &frames {
                    prop_assert!(serde_json::from_str::<serde_json::Value>(frame).is_ok(), "{}", frame);
                }
                c.assert_consistent();
                prop_assert!(c.channels.len() <= max_channels);
            }
            c.channels.leave_all(&mut c.host);
            prop_assert!(c.host.subscribed.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_sequences_match_the_model(
            v1 in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let vsn = if v1 { Vsn::V1 } else { Vsn::V2 };
            let mut c = Conn::new(vsn);
            c.max_channels = MODEL_MAX_CHANNELS;
            // The model: topic → the channel's join_ref.
            let mut model: BTreeMap<&str, String> = BTreeMap::new();
            let mut broadcasts = 0;
            let mut next_ref = 0u32;
            for op in ops {
                next_ref += 1;
                let msg_ref = format!("r{next_ref}");
                // (event, status, join_ref) of each expected frame; join_ref only for V2.
                let mut want: Vec<(&str, Option<&str>, Option<String>)> = vec![];
                let (topic, event, join_ref): (&str, &str, Option<String>);
                match &op {
                    Op::Heartbeat => {
                        (topic, event, join_ref) = ("phoenix", "heartbeat", None);
                        want.push(("phx_reply", Some("ok"), None));
                    }
                    Op::Join { topic: t, join_ref: jr } => {
                        topic = TOPICS[*t];
                        event = "phx_join";
                        // V1 has no join_ref on the wire: the join's ref identifies it.
                        let identity = if v1 { msg_ref.clone() } else { format!("j{jr}") };
                        join_ref = (!v1).then(|| identity.clone());
                        let old = model.remove(topic);
                        if topic.starts_with("nope") {
                            want.push(("phx_reply", Some("error"), None));
                        } else if model.len() >= MODEL_MAX_CHANNELS {
                            want.push(("phx_reply", Some("error"), join_ref.clone()));
                        } else {
                            model.insert(topic, identity);
                            want.push(("phx_reply", Some("ok"), join_ref.clone()));
                        }
                        // Phoenix answers the new join first, then closes the old one.
                        if let Some(old) = old {
                            want.push(("phx_close", None, Some(old)));
                        }
                    }
                    Op::Leave { topic: t, pick } | Op::Push { topic: t, pick, .. } => {
                        topic = TOPICS[*t];
                        let current = model.get(topic).cloned();
                        join_ref = match (pick, v1) {
                            (_, true) | (JoinRefPick::Null, _) => None,
                            (JoinRefPick::Current, _) => Some(current.clone().unwrap_or_else(|| "j0".into())),
                            (JoinRefPick::Stale, _) => Some("stale".into()),
                        };
                        let stale = matches!((&join_ref, &current), (Some(a), Some(b)) if a != b);
                        let reply_jr = current.clone().filter(|_| !v1);
                        if let Op::Push { reserved, .. } = &op {
                            event = if *reserved { "phx_close" } else { "msg" };
                            match current {
                                None => want.push(("phx_reply", Some("error"), None)),
                                Some(_) if stale => {}
                                Some(_) if *reserved || topic.starts_with("news") => {
                                    want.push(("phx_reply", Some("error"), reply_jr));
                                }
                                Some(_) => {
                                    broadcasts += 1;
                                    want.push(("phx_reply", Some("ok"), reply_jr));
                                }
                            }
                        } else {
                            event = "phx_leave";
                            match current {
                                None => want.push(("phx_reply", Some("ok"), join_ref.clone().filter(|_| !v1))),
                                Some(_) if stale => {}
                                Some(jr) => {
                                    model.remove(topic);
                                    want.push(("phx_reply", Some("ok"), reply_jr));
                                    want.push(("phx_close", None, Some(jr)));
                                }
                            }
                        }
                    }
                }
                let msg = Message {
                    join_ref: join_ref.map(Into::into),
                    msg_ref: Some(msg_ref.as_str().into()),
                    topic: topic.into(),
                    event: event.into(),
                    payload: Payload::Json(raw("{}")),
                };
                let frames = c.handle(&msg);
                prop_assert_eq!(frames.len(), want.len(), "{:?} gave {:?}", op, frames);
                for (frame, (w_event, w_status, w_jr)) in frames.iter().zip(&want) {
                    let (event, status, jr, r) = summarize(vsn, frame);
                    prop_assert_eq!(&event, w_event, "{}", frame);
                    prop_assert_eq!(status.as_deref(), *w_status, "{}", frame);
                    if event == "phx_close" {
                        // phx_close: ref = the closed join's identity, in V1 too.
                        prop_assert_eq!(r.as_ref(), w_jr.as_ref(), "{}", frame);
                        prop_assert_eq!(jr, w_jr.clone().filter(|_| !v1), "{}", frame);
                    } else {
                        prop_assert_eq!(r.as_deref(), Some(msg_ref.as_str()), "{}", frame);
                        prop_assert_eq!(&jr, w_jr, "{}", frame);
                    }
                }
                let joined: BTreeSet<String> = model.keys().map(|t| t.to_string()).collect();
                prop_assert_eq!(&c.host.subscribed_names(), &joined);
                prop_assert_eq!(c.channels.len(), model.len());
                for (id, jr) in c.channels.iter() {
                    let topic = c.host.topic_name(id);
                    prop_assert_eq!(jr, model.get(topic).map(String::as_str));
                }
                prop_assert_eq!(c.host.broadcasts.len(), broadcasts);
            }
            c.channels.leave_all(&mut c.host);
            prop_assert!(c.channels.is_empty());
            prop_assert!(c.host.subscribed.is_empty());
            prop_assert!(c.host.frames.is_empty());
        }
    }
}
