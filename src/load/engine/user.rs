//! One simulated user: everything a worker keeps per connection, in one 48-byte struct.
//!
//! An idle user (connected, waiting in a `think` or for the run's end) owns no heap memory: the
//! receive stash `rx` exists only while a frame or response head is incomplete, queued sends live
//! in the worker's tables, and its wait is a 24-byte timer-heap entry only when it has a deadline.

use crate::ws::{MessageReader, Role};

pub use crate::lifecycle::{Life, Phase, Req};

/// Bits of [`User::flags`] (the lifecycle's own bits are in [`User::life`]).
pub mod flag {
    /// The session is paused on a full send queue; resumed when queued sends are out.
    pub const TX_BLOCKED: u8 = 1 << 0;
    /// The end of this user's session was already counted (error or normal), not to count twice.
    pub const FINISHED: u8 = 1 << 1;
}

/// A receive in progress: bytes of an incomplete response head or frame, and the reader of a
/// fragmented message. Exists only while something is incomplete.
pub struct Rx {
    pub buf: Vec<u8>,
    pub reader: MessageReader,
}

impl Rx {
    pub fn new() -> Box<Self> {
        Box::new(Self {
            buf: Vec::new(),
            reader: MessageReader::new(Role::Client),
        })
    }
}

/// Marks "no send in flight" in [`User::tx_head`].
pub const NO_TX: u32 = u32::MAX;

/// One user (see the module docs). The slot index is the fixed-file slot of its socket.
pub struct User {
    /// When the current wait ends, ns since the start of the run (0: no wait). Connecting: the
    /// connect deadline; `expect`, `rendezvous`: its timeout; `think`: its end; closing: the close
    /// deadline; after the step budget: "now", a yield (only ever in front of a step that does
    /// not wait, so it is never mistaken for one of these).
    /// A wait's start is `deadline_ns - its length`, which gives latencies without another field.
    pub deadline_ns: u64,
    pub rx: Option<Box<Rx>>,
    /// Run-wide user id (dense over all processes).
    pub user_id: u32,
    /// Bumped when the slot is freed: completions and timers of an earlier occupant are ignored.
    pub gen: u32,
    /// Message counter for `{ref}`.
    pub msg_ref: u32,
    /// Counters of the enclosing counted loops.
    pub loops: [u32; 2],
    /// The send in flight (a key of the worker's send table), or [`NO_TX`].
    pub tx_head: u32,
    /// Index of the current step in its session.
    pub pc: u16,
    /// Phase and in-flight requests: the gateway's connection lifecycle (`lifecycle`).
    pub life: Life,
    pub flags: u8,
    pub session: u8,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<User>() == 48);

impl User {
    pub fn free(gen: u32) -> Self {
        Self {
            deadline_ns: 0,
            rx: None,
            user_id: 0,
            gen,
            msg_ref: 0,
            loops: [0; 2],
            tx_head: NO_TX,
            pc: 0,
            life: Life::FREE,
            flags: 0,
            session: 0,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u8) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u8) {
        self.flags &= !f;
    }

    pub fn phase(&self) -> Phase {
        self.life.phase()
    }

    /// Whether the user reads from its socket in this phase.
    pub fn receiving(&self) -> bool {
        self.life.receiving()
    }
}
