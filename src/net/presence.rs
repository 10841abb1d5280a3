//! Presence on a worker's connections: the hooks the channel rules call (join accepted, topic
//! left) and the client's meta update, turning them into calls on the node-wide
//! `presence::table` and pushing `presence_state` to the joiner. The diffs themselves leave
//! through the flusher thread (`presence_flush`), never from here.
//!
//! Per-connection cost: nothing for a connection that is not tracked, except — only when a
//! presence route uses `claim:` sources — the few claims it names, kept from the token (a JSON
//! object in a map by slot), because the token itself is not kept after the upgrade.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::conn::App;
use crate::phoenix::broadcast::ws_frame;
use crate::phoenix::serializer::{self, FrameKind, Message, Payload};
use crate::phoenix::Vsn;
use crate::presence::meta::{self, Inputs, KeySource};
use crate::presence::table::owner;
use crate::presence::STATE_EVENT;
use crate::worker::Worker;

/// A worker's presence state outside `Conn`.
#[derive(Debug, Default)]
pub struct WorkerPresence {
    /// The claims presence routes use, by slot (only when some route uses claims).
    claims: HashMap<u32, Box<str>, ahash::RandomState>,
    /// Claim names presence routes use, computed on first need.
    claim_names: Option<Vec<String>>,
    /// The entry a join being accepted will track: validated before the ok reply, tracked right
    /// after it (`None` key for `conn` keys).
    pending: Option<(Option<String>, Map<String, Value>)>,
}

fn object(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    /// Keeps the claims presence routes use (at upgrade or token refresh, with auth on).
    pub(crate) fn keep_presence_claims(&mut self, slot: u32, claims: &Map<String, Value>) {
        let names = self.presence.claim_names.get_or_insert_with(|| {
            self.hub
                .router
                .presence_claims()
                .into_iter()
                .map(str::to_owned)
                .collect()
        });
        if names.is_empty() {
            return;
        }
        let kept: Map<String, Value> = names
            .iter()
            .filter_map(|n| claims.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        self.presence
            .claims
            .insert(slot, Value::Object(kept).to_string().into());
    }

    /// Forgets a connection's kept claims (its slot is freed).
    pub(crate) fn forget_presence_claims(&mut self, slot: u32) {
        if !self.presence.claims.is_empty() {
            self.presence.claims.remove(&slot);
        }
    }

    /// Before a join of `topic` is accepted: on a presence route, builds the entry's key and
    /// meta, and checks there is room. `Err(reason)` refuses the join.
    pub(crate) fn presence_admit(
        &mut self,
        slot: u32,
        topic: &str,
        payload: &Payload<'_>,
    ) -> Result<(), &'static str> {
        self.presence.pending = None;
        let hub = self.hub.clone();
        let Some(spec) = hub.router.presence(topic) else {
            return Ok(());
        };
        let claims = match self.presence.claims.get(&slot) {
            Some(json) if spec.uses_claims() => object(json),
            _ => None,
        };
        let params = match payload {
            Payload::Json(raw) if spec.uses_params() => object(raw.get()),
            _ => None,
        };
        let inputs = Inputs {
            claims: claims.as_ref(),
            params: params.as_ref(),
        };
        let key = match spec.key {
            KeySource::Conn => None,
            _ => Some(meta::key(&spec.key, inputs, "").map_err(error_reason)?),
        };
        let fields = meta::fields(&spec.meta, inputs, hub.presence.max_meta_bytes())
            .map_err(error_reason)?;
        if !hub.presence.has_room(topic) {
            self.stats.joins_refused += 1;
            return Err("presence limit reached");
        }
        self.presence.pending = Some((key, fields));
        Ok(())
    }

    /// The join was accepted (its ok reply is queued): track the entry, push the state.
    pub(crate) fn presence_joined(&mut self, slot: u32, topic: &str, join_ref: Option<&str>) {
        let Some((key, fields)) = self.presence.pending.take() else {
            return;
        };
        let online_at = unix_now_s().to_string();
        let tracked = self.hub.presence.track(
            topic,
            owner(self.id, slot),
            key.as_deref(),
            &fields,
            &online_at,
        );
        let Ok(tracked) = tracked else {
            // Full since the check (concurrent joins on other workers): not tracked; the member
            // still receives every diff, as any subscriber does.
            return;
        };
        let App::Phoenix(vsn) = self.conns[slot as usize].app else {
            return;
        };
        let body = serializer::message_frame(
            vsn,
            join_ref,
            None,
            topic,
            STATE_EVENT,
            tracked.state.as_bytes(),
        );
        // The state is sent past the send-queue bound (it is bounded by max_members, and a joiner
        // without it could not show the room), but only one such frame waits at a time.
        let id = self.frame_id(ws_frame(FrameKind::Text, &body));
        self.enqueue_state(slot, id);
        if self.frames[id as usize].refs == 0 {
            self.frames.remove(id as usize);
        }
    }

    /// The connection left `topic` (leave, duplicate join, close, crash): untrack it.
    pub(crate) fn presence_left(&mut self, slot: u32, topic: &str) {
        if self.hub.router.presence(topic).is_some() {
            self.hub.presence.untrack(topic, owner(self.id, slot));
        }
    }

    /// A client's meta update (`[presence] update_event`) on a tracked topic. Returns false when
    /// the message is not one (the channel rules handle it).
    pub(crate) fn presence_update(&mut self, slot: u32, vsn: Vsn, msg: &Message<'_>) -> bool {
        if self.cfg.presence.update_event.as_deref() != Some(msg.event.as_ref()) {
            return false;
        }
        let hub = self.hub.clone();
        let Some(spec) = hub.router.presence(&msg.topic) else {
            return false;
        };
        let Some(id) = self.topics.lookup(&msg.topic) else {
            return false;
        };
        let joined = self.conns[slot as usize]
            .chans
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, r)| r.map(str::to_owned));
        let Some(join_ref) = joined else {
            return false;
        };
        if let (Some(a), Some(b)) = (join_ref.as_deref(), msg.join_ref.as_deref()) {
            if a != b {
                return true; // a stale join's push: dropped, as the channel rules do
            }
        }
        let update = match &msg.payload {
            Payload::Json(raw) => object(raw.get()),
            Payload::Binary(_) => None,
        };
        let result = match update {
            None => Err("payload must be an object"),
            Some(update) => hub
                .presence
                .update(&msg.topic, owner(self.id, slot), &spec.meta, &update)
                .map_err(|e| track_reason(&e)),
        };
        let (status, response) = match result {
            Ok(_) => ("ok", b"{}".to_vec()),
            Err(reason) => ("error", serializer::reason_json(reason)),
        };
        let body = serializer::reply_frame(
            vsn,
            join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &msg.topic,
            status,
            &response,
        );
        self.send_frame(slot, ws_frame(FrameKind::Text, &body));
        true
    }
}

fn error_reason(e: meta::MetaError) -> &'static str {
    match e {
        meta::MetaError::KeyMissing => "presence key missing",
        meta::MetaError::KeyTooLong => "presence key too long",
        meta::MetaError::MetaTooLarge => "presence meta too large",
    }
}

fn track_reason(e: &crate::presence::table::TrackError) -> &'static str {
    use crate::presence::table::TrackError;
    match e {
        TrackError::Full => "presence limit reached",
        TrackError::NotTracked => "not tracked",
        TrackError::Meta(m) => error_reason(*m),
    }
}
