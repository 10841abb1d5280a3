//! The one connection lifecycle, shared by the gateway's connections and the load generator's users.
//!
//! A connection is a slot of a ring's fixed-file table. The kernel may hold several requests on it
//! at once (a readiness poll, a receive, a send, a shutdown, a peer-name read, a connect), and a
//! slot may only be closed — and then reused — once every one of them has posted its final
//! completion. This module owns that rule and nothing else: which phase a connection is in, which
//! requests are in flight, and the one decision every completion ends with, [`Life::settle`].
//!
//! Owners (the gateway worker in `net/`, the load engine in `load/engine/`) keep one [`Life`] per
//! slot (2 bytes) and follow one discipline:
//! - before submitting a request, [`Life::submitted`]; on each of its completions,
//!   [`Life::completed`] (with `F_MORE` for multishot requests);
//! - to tear a connection down, [`Life::abort`] (idempotent: it cancels what is in flight, once);
//! - after handling any completion or state change, [`Life::settle`], which submits the close of the
//!   slot exactly once, when the connection is aborting and nothing is in flight any more;
//! - on the close's completion, [`Life::released`]: the slot is free.
//!
//! Submissions go through the small [`Submit`] trait, so the whole lifecycle is table-tested
//! without a kernel (`tests.rs`): every order of completions, cancels racing completions, errors
//! and EOF in one batch.

#[cfg(test)]
mod tests;

/// Where a connection is in its life. Transitions: Free → (Connecting →) Handshake → Open →
/// Closing → HalfClosed, any live phase → Aborting → Releasing → Free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The slot holds no connection.
    Free = 0,
    /// Client only: the socket set-up chain (socket, options, bind, connect) is in flight.
    Connecting = 1,
    /// Gateway: reading the HTTP upgrade request. Client: waiting for the 101 response.
    Handshake = 2,
    /// The WebSocket is open.
    Open = 3,
    /// Our last frame (a close frame, or an HTTP error response) is queued; nothing more is sent.
    Closing = 4,
    /// Gateway: our side is shut down for writing; input is discarded until the peer's EOF.
    HalfClosed = 5,
    /// Every request on the slot is being cancelled; the slot is closed when the last one reports.
    Aborting = 6,
    /// The close of the slot is in flight; the slot is free when it completes.
    Releasing = 7,
}

impl Phase {
    fn from_bits(b: u8) -> Self {
        match b & PHASE_MASK {
            0 => Self::Free,
            1 => Self::Connecting,
            2 => Self::Handshake,
            3 => Self::Open,
            4 => Self::Closing,
            5 => Self::HalfClosed,
            6 => Self::Aborting,
            _ => Self::Releasing,
        }
    }
}

/// A kind of request the kernel may hold for a connection. At most one of each is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Req {
    /// A (multishot) readiness poll.
    Poll = 1 << 0,
    /// A receive (one-shot, or the multishot receive).
    Recv = 1 << 1,
    /// A send (of the head of the connection's send queue).
    Send = 1 << 2,
    /// `shutdown(SHUT_WR)`.
    Shutdown = 1 << 3,
    /// `getsockopt(SO_PEERNAME)`.
    PeerName = 1 << 4,
    /// Client only: the set-up chain's final connect.
    Connect = 1 << 5,
}

/// Every request kind, in the order teardown cancels them.
pub const ALL_REQS: [Req; 6] = [
    Req::Poll,
    Req::Recv,
    Req::Send,
    Req::Shutdown,
    Req::PeerName,
    Req::Connect,
];

/// What the lifecycle asks of the ring. Implemented by the gateway worker and the load engine over
/// their `Ring`, and by a recorder in the tests.
pub trait Submit {
    /// Cancel the in-flight request `req` of `slot`'s occupant `gen`. The cancelled request still
    /// posts its own completion (`ECANCELED`, or its result if it won the race).
    fn cancel(&mut self, slot: u32, gen: u32, req: Req);
    /// Close fixed-file `slot`; its completion frees the slot (`Life::released`).
    fn close(&mut self, slot: u32, gen: u32);
}

const PHASE_MASK: u8 = 0b111;
/// Readiness arrived while a receive was in flight: receive again when it completes.
const RECV_AGAIN: u8 = 1 << 3;
/// Waiting in the owner's list of receives starved of buffers (`ENOBUFS`).
const STARVED: u8 = 1 << 4;
/// The owner has a timer entry for this connection (the gateway's wheel).
const TIMER: u8 = 1 << 5;

/// One connection's lifecycle: its phase, its marks and its in-flight requests, in two bytes.
/// The fields are private: every change goes through the methods below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    /// Phase in the low 3 bits, marks above.
    bits: u8,
    /// A `Req` bit per request the kernel holds.
    inflight: u8,
}

const _: () = assert!(std::mem::size_of::<Life>() == 2);

impl Default for Life {
    fn default() -> Self {
        Self::FREE
    }
}

impl Life {
    /// A free slot.
    pub const FREE: Self = Self {
        bits: 0,
        inflight: 0,
    };

    pub fn phase(&self) -> Phase {
        Phase::from_bits(self.bits)
    }

    fn set_phase_bits(&mut self, phase: Phase) {
        self.bits = (self.bits & !PHASE_MASK) | phase as u8;
    }

    /// A new occupant: `Handshake` (gateway, accepted) or `Connecting` (client).
    pub fn start(&mut self, phase: Phase) {
        debug_assert_eq!(self.phase(), Phase::Free, "start on a slot in use");
        debug_assert!(matches!(phase, Phase::Handshake | Phase::Connecting));
        debug_assert_eq!(self.inflight, 0);
        *self = Self {
            bits: phase as u8,
            inflight: 0,
        };
    }

    /// Moves a live connection on (Connecting → Handshake → Open → Closing → HalfClosed). Returns
    /// false, changing nothing, if the connection is already tearing down or the move goes back.
    pub fn advance(&mut self, to: Phase) -> bool {
        let from = self.phase();
        let ok = matches!(
            (from, to),
            (Phase::Connecting, Phase::Handshake)
                | (Phase::Handshake, Phase::Open | Phase::Closing)
                | (Phase::Open, Phase::Closing)
                | (Phase::Closing, Phase::HalfClosed)
        );
        if ok {
            self.set_phase_bits(to);
        }
        ok
    }

    /// Handshake or open: input is processed and frames may be queued.
    pub fn is_live(&self) -> bool {
        matches!(self.phase(), Phase::Handshake | Phase::Open)
    }

    /// Input is still read from the socket (processed, or discarded while closing).
    pub fn receiving(&self) -> bool {
        matches!(
            self.phase(),
            Phase::Handshake | Phase::Open | Phase::Closing | Phase::HalfClosed
        )
    }

    /// Torn down or free: no new request may be submitted.
    pub fn ending(&self) -> bool {
        matches!(
            self.phase(),
            Phase::Free | Phase::Aborting | Phase::Releasing
        )
    }

    /// A request was submitted for this connection.
    pub fn submitted(&mut self, req: Req) {
        debug_assert!(!self.ending(), "{req:?} submitted while {:?}", self.phase());
        debug_assert!(!self.in_flight(req), "{req:?} submitted twice");
        self.inflight |= req as u8;
    }

    /// A completion of `req` arrived; `more` (`F_MORE`) says the multishot request goes on.
    pub fn completed(&mut self, req: Req, more: bool) {
        if !more {
            self.inflight &= !(req as u8);
        }
    }

    pub fn in_flight(&self, req: Req) -> bool {
        self.inflight & req as u8 != 0
    }

    /// Any request on the slot is still owned by the kernel.
    pub fn busy(&self) -> bool {
        self.inflight != 0
    }

    /// Starts teardown: cancels every request in flight, once. Returns true when this call began
    /// the teardown (the owner then drops queued frames, receive state, memberships); false when
    /// the connection was already tearing down or free. Never closes: `settle` does.
    pub fn abort(&mut self, slot: u32, gen: u32, sub: &mut impl Submit) -> bool {
        if self.ending() {
            return false;
        }
        self.bits = Phase::Aborting as u8 | (self.bits & TIMER);
        for req in ALL_REQS {
            if self.in_flight(req) {
                sub.cancel(slot, gen, req);
            }
        }
        true
    }

    /// The decision every completion and state change ends with: an aborting connection with
    /// nothing in flight has its slot closed, exactly once. Returns true when the close was
    /// submitted.
    pub fn settle(&mut self, slot: u32, gen: u32, sub: &mut impl Submit) -> bool {
        if self.phase() != Phase::Aborting || self.busy() {
            return false;
        }
        self.set_phase_bits(Phase::Releasing);
        sub.close(slot, gen);
        true
    }

    /// The slot's close completed: the slot is free.
    pub fn released(&mut self) {
        debug_assert_eq!(self.phase(), Phase::Releasing);
        debug_assert!(!self.busy());
        *self = Self::FREE;
    }

    // ---- receiving -----------------------------------------------------------------------------

    /// Readiness (or a retry) wants a one-shot receive. True: submit one now (the caller then calls
    /// `submitted(Req::Recv)`); false: one is in flight, it will be followed by another.
    pub fn want_recv(&mut self) -> bool {
        if !self.receiving() {
            return false;
        }
        if self.in_flight(Req::Recv) {
            self.bits |= RECV_AGAIN;
            return false;
        }
        self.bits &= !RECV_AGAIN;
        true
    }

    /// After a one-shot receive completed: whether to receive again now (more data is waiting: the
    /// socket said so, the buffer was filled, or readiness arrived meanwhile).
    pub fn recv_again(&mut self, sock_nonempty: bool, buffer_full: bool) -> bool {
        let again = self.bits & RECV_AGAIN != 0 || sock_nonempty || buffer_full;
        again && self.want_recv()
    }

    /// A receive found the buffer ring empty (`ENOBUFS`). True when the connection was not yet on
    /// the owner's starved list (the owner appends it).
    pub fn starve(&mut self) -> bool {
        let newly = self.bits & STARVED == 0;
        self.bits |= STARVED;
        newly
    }

    /// Taken off the starved list: whether the connection still reads (the owner retries).
    pub fn unstarve(&mut self) -> bool {
        self.bits &= !STARVED;
        self.receiving()
    }

    // ---- the owner's timer mark ------------------------------------------------------------------

    pub fn has_timer(&self) -> bool {
        self.bits & TIMER != 0
    }

    pub fn set_timer(&mut self, on: bool) {
        if on {
            self.bits |= TIMER;
        } else {
            self.bits &= !TIMER;
        }
    }
}
