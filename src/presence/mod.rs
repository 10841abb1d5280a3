//! Phoenix.Presence for the official client's `Presence` class, sans-IO: who is in a topic, kept
//! in sync on every member with `presence_state` (to a joiner) and `presence_diff` (to all).
//! The gateway has no application to call `Presence.track`, so tracking is configured per channel
//! route (`presence`, `presence_key`, `presence_meta`) from the verified token and the join
//! payload. Protocol rules and their upstream sources: `docs/protocol.md`, "Presence".
//!
//! - `meta`: an entry's key and meta from claims and join payload, `phx_ref`s.
//! - `topic`: one topic's entries and pending diff, and the batching rule that keeps every
//!   client's merge exact.
//! - `table`: the node-wide, lock-striped table of every topic, shared by the workers and the
//!   flusher thread (`presence_flush`), which broadcasts the diffs through the hub.
//! - `replica` and `wire`: presence across nodes as a pure state machine and its messages, for
//!   whatever bus carries them.
//!
//! Nothing here imports `net/`, `worker/` or `ring/`.

pub mod meta;
pub mod replica;
pub mod table;
pub mod topic;
pub mod wire;

/// The event a presence state is pushed with, to the joiner only.
pub const STATE_EVENT: &str = "presence_state";
/// The event of every diff, broadcast to every member of the topic.
pub const DIFF_EVENT: &str = "presence_diff";

/// The `[presence]` section: limits and timing of every presence topic. Routes choose which
/// topics are tracked (`presence = true` on a `[[channels]]` route).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Diffs of a topic are merged over this long after its first change, then broadcast as one
    /// (flag `--presence-batch-ms`). Default 50 ms: a join storm into a large room becomes a few
    /// diffs instead of one per join (each diff goes to every member), while a person joining is
    /// shown within a frame or two. 0 sends each change at once.
    pub batch_ms: u64,
    /// Entries tracked per topic (with the bus: merged from every node); a join past it gets
    /// `{"reason":"presence limit reached"}` (flag `--presence-max-members`). Default 10,000: every joiner is pushed the
    /// whole state (~100 bytes per entry, so ~1 MB at the limit) and every change is sent to
    /// every member, so a room's cost grows with its square; larger rooms are a deliberate choice.
    pub max_members: usize,
    /// Largest meta fields of one entry, as JSON (flag `--presence-max-meta-bytes`); a join or
    /// update past it gets `{"reason":"presence meta too large"}`. Default 512: room for a name,
    /// an avatar URL and a status, small enough that 10,000 entries stay a few MB.
    pub max_meta_bytes: usize,
    /// The event a client pushes on a tracked topic to replace the `param:` fields of its own
    /// meta (flag `--presence-update-event`). Unset by default (off): clients cannot change
    /// their meta unless the deployment chooses an event name, e.g. `presence_update`.
    pub update_event: Option<String>,
    /// Across nodes: a node not heard from for this long has its entries removed everywhere
    /// (flag `--presence-node-timeout-ms`). Default 15,000 ms: ten heartbeat periods, so a bus
    /// hiccup does not make a whole node's users leave and rejoin.
    pub node_timeout_ms: u64,
    /// Across nodes: how often a node says it is alive (flag `--presence-heartbeat-ms`).
    /// Default 1,500 ms, Phoenix.Tracker's `broadcast_period`.
    pub heartbeat_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            batch_ms: 50,
            max_members: 10_000,
            max_meta_bytes: 512,
            update_event: None,
            node_timeout_ms: 15_000,
            heartbeat_ms: 1_500,
        }
    }
}

impl PresenceConfig {
    /// Ranges the types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_ms > 10_000 {
            return Err("batch_ms must be ≤ 10000".into());
        }
        if self.max_members == 0 || self.max_members > 1_000_000 {
            return Err("max_members must be 1..=1000000".into());
        }
        if !(16..=65_536).contains(&self.max_meta_bytes) {
            return Err("max_meta_bytes must be 16..=65536".into());
        }
        if self.update_event.as_deref().is_some_and(|e| {
            e.is_empty() || e.starts_with("phx_") || e == STATE_EVENT || e == DIFF_EVENT
        }) {
            return Err(
                "update_event must be a non-empty event name, not phx_* or presence_state/diff"
                    .into(),
            );
        }
        if self.heartbeat_ms == 0 || self.node_timeout_ms < 2 * self.heartbeat_ms {
            return Err("node_timeout_ms must be at least twice heartbeat_ms (> 0)".into());
        }
        Ok(())
    }
}
