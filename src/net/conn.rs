//! Per-connection state: one small struct per fixed-file slot, and nothing else while idle.
//!
//! An idle open connection is exactly this struct (plus its kernel socket and one armed poll): no
//! read buffer, no write buffer, no task, no timer object. The optional boxes exist only while a
//! message is partially received (`rx`) or frames are waiting behind an in-flight send (`txq`).

use std::collections::VecDeque;

use crate::phoenix::channels::Channels;
use crate::phoenix::Vsn;
use crate::ws::MessageReader;

/// Marks "no frame" in `Conn::tx_head`.
pub const NO_FRAME: u32 = u32::MAX;

/// Where a connection is in its life. Transitions: Free → Handshake → Open → Closing → Draining →
/// Aborting → ClosingFd → Free; any live state may jump to Aborting on an I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// The slot holds no connection.
    Free,
    /// Accepted; reading the HTTP upgrade request.
    Handshake,
    /// WebSocket open.
    Open,
    /// Our close frame (or HTTP error response) is queued; once it is sent we shut down writes.
    Closing,
    /// Writes shut down; discarding input until the peer's EOF or the close deadline.
    Draining,
    /// Every request on the slot is being cancelled; the slot is closed when the last completes.
    Aborting,
    /// The close of the slot is submitted; the slot is freed on its completion.
    ClosingFd,
}

/// Bits of `Conn::flags`.
pub mod flag {
    /// A multishot readiness poll is armed.
    pub const POLL_ARMED: u8 = 1 << 0;
    /// A receive is in flight (one-shot in poll mode, the multishot in multishot mode).
    pub const RECV_INFLIGHT: u8 = 1 << 1;
    /// Readiness arrived while a receive was in flight: receive again when it completes.
    pub const RECV_AGAIN: u8 = 1 << 2;
    /// A shutdown(SHUT_WR) is in flight.
    pub const SHUT_INFLIGHT: u8 = 1 << 3;
    /// The connection has an entry in the timer wheel.
    pub const IN_WHEEL: u8 = 1 << 4;
    /// Our close frame has been queued; nothing more may be sent.
    pub const CLOSE_SENT: u8 = 1 << 5;
    /// Waiting in the worker's list of receives starved of buffers (ENOBUFS).
    pub const STARVED: u8 = 1 << 6;
    /// A `getsockopt(SO_PEERNAME)` is in flight (per-address limit on).
    pub const PEER_INFLIGHT: u8 = 1 << 7;
}

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
    pub state: State,
    pub flags: u8,
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
            state: State::Free,
            flags: 0,
            app: App::None,
            tokens: 0,
            refill_s: 0,
            join_tokens: 0,
            rx: None,
            txq: None,
            chans: Channels::new(),
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

    /// Reads and frames are still processed (not closing down).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Handshake | State::Open)
    }

    /// Any request of this slot is still owned by the kernel.
    pub fn has_inflight(&self) -> bool {
        self.has(flag::POLL_ARMED | flag::RECV_INFLIGHT | flag::SHUT_INFLIGHT | flag::PEER_INFLIGHT)
            || self.tx_head != NO_FRAME
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

/// Frames queued behind the in-flight one, and their total bytes (bounded by
/// `max_send_queue_bytes`).
#[derive(Default)]
pub struct TxQueue {
    pub frames: VecDeque<u32>,
    pub bytes: usize,
}
