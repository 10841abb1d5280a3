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
