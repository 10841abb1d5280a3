//! Phoenix Channels on a connection: decode, apply the channel rules, fan out broadcasts.
//!
//! The rules themselves are sans-IO in `phoenix::channels`; this file implements their `Host` for
//! one connection of this worker, and delivers broadcasts to the worker's local members.

use super::conn::{App, Phase};
use super::tx::Sent;
use crate::phoenix::broadcast::{encoding, ws_frame};
use crate::phoenix::channels::{Channels, Host, Outcome, TopicId};
use crate::phoenix::serializer::{self, FrameKind, Payload};
use crate::phoenix::Vsn;
use crate::topics::Broadcast;
use crate::worker::Worker;
use crate::ws::frame::opcode;

/// The channel rules' view of one connection on this worker.
struct ConnHost<'a> {
    w: &'a mut Worker,
    slot: u32,
}

impl Host for ConnHost<'_> {
    fn intern(&mut self, topic: &str) -> TopicId {
        self.w.topics.intern(topic)
    }

    fn topic_name(&self, id: TopicId) -> &str {
        self.w.topics.name(id)
    }

    fn lookup(&self, topic: &str) -> Option<TopicId> {
        self.w.topics.lookup(topic)
    }

    fn subscribe(&mut self, id: TopicId) {
        self.w.topics.subscribe(id, self.slot);
        self.w.hub.join(self.w.topics.name(id), self.w.id);
        self.w.stats.joins += 1;
    }

    fn unsubscribe(&mut self, id: TopicId) {
        let name = self.w.topics.name(id).to_owned();
        self.w.presence_left(self.slot, &name);
        self.w.hub.leave(&name, self.w.id);
        self.w.topics.unsubscribe(id, self.slot);
        self.w.stats.leaves += 1;
    }

    fn broadcast(&mut self, topic: &str, event: &str, payload: Payload<'_>) {
        self.w.publish(topic, event, payload);
    }

    fn authorize_join(&mut self, topic: &str, payload: &Payload<'_>) -> Result<(), &'static str> {
        let route = self.w.hub.router.route(topic);
        if !crate::auth::join_allowed(route, self.w.claim_patterns(self.slot), topic) {
            self.w.stats.joins_refused += 1;
            return Err("unauthorized");
        }
        if !self.w.take_join(self.slot) {
            self.w.stats.joins_refused += 1;
            return Err("too many joins");
        }
        self.w.presence_admit(self.slot, topic, payload)
    }

    fn joined(&mut self, id: TopicId, join_ref: Option<&str>) {
        let name = self.w.topics.name(id).to_owned();
        self.w.presence_joined(self.slot, &name, join_ref);
    }

    fn send(&mut self, kind: FrameKind, payload: Vec<u8>) {
        self.w.send_frame(self.slot, ws_frame(kind, &payload));
    }
}

/// The event a client sends on topic `phoenix` with payload `{"token": "..."}` to replace its
/// connect token before it expires (phoenix.js has no such call; clients send it with
/// `socket.push({topic: "phoenix", event: "access_token", payload: {token}})`).
pub const ACCESS_TOKEN_EVENT: &str = "access_token";

#[derive(serde::Deserialize)]
struct TokenPayload<'a> {
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

impl Worker {
    /// Replaces the connection's token: ok reply and a new expiry, or an error reply (the old token
    /// stays in force until it expires).
    fn refresh_token(&mut self, slot: u32, vsn: Vsn, msg: &serializer::Message<'_>) {
        let token = match &msg.payload {
            Payload::Json(raw) => serde_json::from_str::<TokenPayload<'_>>(raw.get())
                .ok()
                .map(|p| p.token),
            Payload::Binary(_) => None,
        };
        let result = self.verify_token(token.as_deref());
        let (status, response): (&str, &[u8]) = match result {
            Ok(Some(claims)) => {
                self.apply_claims(slot, claims);
                self.set_deadline(slot, crate::worker::Deadline::Idle);
                ("ok", b"{}")
            }
            Ok(None) => ("error", br#"{"reason":"auth not enabled"}"#),
            Err(_) => {
                self.stats.auth_failures += 1;
                ("error", br#"{"reason":"invalid token"}"#)
            }
        };
        let body = serializer::reply_frame(
            vsn,
            None,
            msg.msg_ref.as_deref(),
            "phoenix",
            status,
            response,
        );
        self.send_frame(slot, ws_frame(FrameKind::Text, &body));
    }

    /// A complete WebSocket data message on a Phoenix connection.
    pub(crate) fn on_phoenix(&mut self, slot: u32, vsn: Vsn, ws_opcode: u8, data: &[u8]) {
        let kind = if ws_opcode == opcode::BINARY {
            FrameKind::Binary
        } else {
            FrameKind::Text
        };
        let msg = match serializer::decode(vsn, kind, data) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.protocol_errors += 1;
                tracing::debug!(worker = self.id, slot, error = %e, "malformed Phoenix message");
                self.close_with(slot, e.close_code(), &e.to_string());
                return;
            }
        };
        if msg.topic == "phoenix" && msg.event == ACCESS_TOKEN_EVENT {
            return self.refresh_token(slot, vsn, &msg);
        }
        if self.presence_update(slot, vsn, &msg) {
            return;
        }
        // The channel set leaves the connection while the rules run, so they can call back into
        // the worker (which may close this very connection) without aliasing it.
        let mut chans = std::mem::take(&mut self.conns[slot as usize].chans);
        let router = self.hub.clone();
        let max = self.cfg.max_channels_per_connection;
        let outcome = chans.handle(
            vsn,
            &msg,
            &router.router,
            max,
            &mut ConnHost { w: self, slot },
        );
        self.restore_channels(slot, chans);
        if let Outcome::Close { code, reason } = outcome {
            self.close_with(slot, code, reason);
        }
    }

    fn restore_channels(&mut self, slot: u32, mut chans: Channels) {
        if self.conns[slot as usize].phase() == Phase::Open {
            self.conns[slot as usize].chans = chans;
        } else {
            // Closed while the rules ran: its memberships go now.
            chans.leave_all(&mut ConnHost { w: self, slot });
        }
    }

    /// The connection is going away: leave every topic.
    pub(crate) fn leave_all(&mut self, slot: u32) {
        let mut chans = std::mem::take(&mut self.conns[slot as usize].chans);
        if !chans.is_empty() {
            chans.leave_all(&mut ConnHost { w: self, slot });
        }
    }

    /// Publishes from this worker: other workers get a message, other nodes get it through the
    /// bus, local members are served now.
    pub(crate) fn publish(&mut self, topic: &str, event: &str, payload: Payload<'_>) {
        let mut audience = std::mem::take(&mut self.audience);
        let published = self
            .hub
            .publish(topic, event, payload, Some(self.id), &mut audience);
        self.audience = audience;
        self.stats.broadcasts += 1;
        if let Some(b) = published.local {
            self.deliver(&b);
        }
    }

    /// Sends a broadcast to every local member: the same frame bytes for all members of one
    /// serializer version, one frame-table entry, no per-member allocation.
    pub(crate) fn deliver(&mut self, b: &Broadcast) {
        let mut members = std::mem::take(&mut self.members_scratch);
        members.clear();
        self.topics.members_of(&b.topic, &mut members);
        let v1 = b
            .frame(encoding(Vsn::V1))
            .cloned()
            .map(|f| self.frame_id(f));
        let v2 = b
            .frame(encoding(Vsn::V2))
            .cloned()
            .map(|f| self.frame_id(f));
        for &slot in &members {
            let frame = match self.conns[slot as usize].app {
                App::Phoenix(Vsn::V1) => v1,
                App::Phoenix(Vsn::V2) => v2,
                App::None | App::Echo => None,
            };
            let sent = match frame {
                Some(id) => self.send_id(slot, id),
                None => Sent::Dropped,
            };
            if sent == Sent::Dropped {
                self.stats.deliveries_dropped += 1;
            } else {
                self.stats.deliveries += 1;
            }
        }
        if !members.is_empty() {
            // One clock read per broadcast and worker: the fan-out loop itself stays untimed.
            self.stats.delivery_latency.observe(b.published.elapsed());
        }
        for id in [v1, v2].into_iter().flatten() {
            if self.frames[id as usize].refs == 0 {
                self.frames.remove(id as usize);
            }
        }
        self.members_scratch = members;
    }
}
