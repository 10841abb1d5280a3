//! Per-connection state: one small struct per fixed-file slot, and nothing else while idle.
//!
//! An idle open connection is exactly this struct (plus its kernel socket and one armed poll): no
//! read buffer, no write buffer, no task, no timer object. The optional boxes exist only while a
//! message is partially received (`rx`) or frames are waiting behind an in-flight send (`txq`).

use std::collections::VecDeque;

pub use crate::lifecycle::{Life, Phase, Req};
use crate::phoenix::channels::Channels;
use crate::phoenix::Vsn;
use crate::ws::MessageReader;

/// Marks "no frame" in `Conn::tx_head`.
pub const NO_FRAME: u32 = u32::MAX;

/// Which application protocol an open connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// Not upgraded yet.
    None,
    /// The diagnostic echo endpoint.
    Echo,
    /// Phoenix Channels with the serializer chosen at the upgrade.
    Phoenix(Vsn),
}

/// One connection. Its size is pinned below: it is multiplied by millions.
pub struct Conn {
    /// Bumped each time the slot is freed; completions and wheel entries carry it.
    pub gen: u32,
    /// Timer-wheel tick at which the current deadline (handshake, idle or close) passes.
    pub deadline_tick: u32,
    /// Frame-table id of the frame being sent, or `NO_FRAME`.
    pub tx_head: u32,
    /// Bytes of `tx_head` already accepted by the kernel (partial sends resume here).
    pub tx_off: u32,
    /// Phase, in-flight requests and marks: see `lifecycle`. Changed only through its methods.
    pub life: Life,
    pub app: App,
    /// Message-rate token bucket: tokens left, and the second (worker clock, mod 2^16) of the
    /// last refill. Fits in the padding before `rx`, so it costs nothing.
    pub tokens: u16,
    pub refill_s: u16,
    /// Join token bucket, refilled on the same clock.
    pub join_tokens: u8,
    /// Receive state that outlives one buffer: bytes of an incomplete frame or request head, and a
    /// fragmented message in progress.
    pub rx: Option<Box<Rx>>,
    /// Frames waiting behind `tx_head`.
    pub txq: Option<Box<TxQueue>>,
    /// Joined Phoenix channels: no heap for one joined topic.
    pub chans: Channels,
}

const _: () = assert!(
    std::mem::size_of::<Conn>() == 64,
    "Conn is multiplied by millions: keep it small"
);

impl Conn {
    pub fn free(gen: u32) -> Self {
        Self {
            gen,
            deadline_tick: 0,
            tx_head: NO_FRAME,
            tx_off: 0,
            life: Life::FREE,
            app: App::None,
            tokens: 0,
            refill_s: 0,
            join_tokens: 0,
            rx: None,
            txq: None,
            chans: Channels::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.life.phase()
    }

    /// Reads and frames are still processed (not closing down).
    pub fn is_live(&self) -> bool {
        self.life.is_live()
    }
}

/// Receive state kept across buffers; exists only while something is incomplete.
#[derive(Default)]
pub struct Rx {
    /// Unconsumed bytes: an incomplete request head or frame.
    pub pending: Vec<u8>,
    /// A fragmented message in progress.
    pub reader: Option<MessageReader>,
    /// What this state is charged to the worker's `max_rx_bytes_per_worker` budget.
    pub charge: crate::net::rx_budget::Charge,
}

/// Frames queued behind the head frame, and their total bytes (bounded by `max_send_queue_bytes`),
/// with the iovec and msghdr of a vectored send that covers the head and the first `inflight` of
/// them (both must stay put while that send is in flight: the box is kept until its completion).
pub struct TxQueue {
    pub frames: VecDeque<u32>,
    pub bytes: usize,
    /// The one frame of `frames` let in past the bound uncounted (a joiner's presence state), or
    /// `NO_FRAME`: a second while it waits is counted, so a client that keeps joining without
    /// reading cannot queue states without bound.
    pub uncounted: u32,
    /// Frames of `frames` (from the front) that the send in flight covers.
    pub inflight: u16,
    pub iov: Vec<libc::iovec>,
    pub msg: libc::msghdr,
}

impl Default for TxQueue {
    fn default() -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            uncounted: NO_FRAME,
            inflight: 0,
            iov: Vec::new(),
            // SAFETY: an all-zero msghdr is valid (no name, no iovec, no control data).
            msg: unsafe { std::mem::zeroed() },
        }
    }
}
