//! The send path: frames as shared `Bytes`, one send in flight per connection, a bounded queue.
//!
//! A frame lives in the worker's frame table with a reference count, so a broadcast frame is one
//! allocation shared by every member's queue: queuing it for a connection is an id and a count, no
//! copy, no allocation (unless that connection already has a send in flight and needs its queue box).
//! A frame is released only on its final completion: the kernel may read it until then.

use bytes::Bytes;

use super::conn::{flag, State, TxQueue, NO_FRAME};
use crate::ring::sqe;
use crate::ring::token::Token;
use crate::worker::{Deadline, Frame, Worker};
use crate::ws;

/// What happened to a frame handed to `send_frame`: backpressure as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Submitted to the kernel now.
    Submitted,
    /// Queued behind the in-flight send.
    Queued,
    /// Not sent: the connection is closing, or its queue was full (it is being closed with 1008).
    Dropped,
}

impl Worker {
    /// Puts a frame into the table with no references yet; `send_id` adds them.
    pub(crate) fn frame_id(&mut self, bytes: Bytes) -> u32 {
        let id = self.frames.insert(Frame { bytes, refs: 0 });
        u32::try_from(id).expect("frame table over u32")
    }

    pub(crate) fn release_frame(&mut self, id: u32) {
        let f = &mut self.frames[id as usize];
        f.refs -= 1;
        if f.refs == 0 {
            self.frames.remove(id as usize);
        }
    }

    /// Sends one frame to one connection.
    pub(crate) fn send_frame(&mut self, slot: u32, bytes: Bytes) -> Sent {
        let id = self.frame_id(bytes);
        let sent = self.send_id(slot, id);
        if self.frames[id as usize].refs == 0 {
            self.frames.remove(id as usize);
        }
        sent
    }

    /// Sends a frame already in the table (a broadcast frame shared by many connections).
    pub(crate) fn send_id(&mut self, slot: u32, id: u32) -> Sent {
        let c = &self.conns[slot as usize];
        if c.has(flag::CLOSE_SENT)
            || !matches!(c.state, State::Open | State::Handshake | State::Closing)
        {
            return Sent::Dropped;
        }
        self.enqueue(slot, id, false)
    }

    /// Queues `id` for `slot`. `force` bypasses the queue bound (for the close frame itself).
    pub(crate) fn enqueue(&mut self, slot: u32, id: u32, force: bool) -> Sent {
        let len = self.frames[id as usize].bytes.len();
        let c = &mut self.conns[slot as usize];
        if c.tx_head == NO_FRAME {
            self.frames[id as usize].refs += 1;
            c.tx_head = id;
            c.tx_off = 0;
            self.submit_head(slot);
            return Sent::Submitted;
        }
        let q = c.txq.get_or_insert_with(Box::<TxQueue>::default);
        if !force && q.bytes + len > self.cfg.max_send_queue_bytes {
            self.stats.send_queue_overflows += 1;
            tracing::debug!(
                worker = self.id,
                slot,
                queued = q.bytes,
                "send queue full; closing with 1008"
            );
            // The queued frames are dropped at once (their memory is the point of the bound); the
            // close frame goes right behind the frame already in flight.
            let dropped = c.txq.take().map(|q| q.frames).unwrap_or_default();
            for id in dropped {
                self.release_frame(id);
            }
            self.close_with(slot, ws::close::POLICY_VIOLATION, "send queue full");
            return Sent::Dropped;
        }
        // A forced frame (a close frame, a presence state) is not counted against the bound:
        // it is bounded by its own limit, and counting it would close the joiner of a large
        // presence room on the first broadcast behind its state.
        if !force {
            q.bytes += len;
        }
        q.frames.push_back(id);
        self.frames[id as usize].refs += 1;
        Sent::Queued
    }

    fn submit_head(&mut self, slot: u32) {
        let c = &self.conns[slot as usize];
        let frame = &self.frames[c.tx_head as usize].bytes;
        let rest = &frame[c.tx_off as usize..];
        let entry = sqe::send(slot, c.gen, rest.as_ptr(), rest.len() as u32);
        self.stats.frames_out += 1;
        self.ring.push(&entry);
    }

    pub(crate) fn on_send(&mut self, token: Token, res: i32) {
        let slot = token.slot;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        let head = c.tx_head;
        debug_assert_ne!(head, NO_FRAME);
        if res >= 0 && c.state != State::Aborting {
            c.tx_off += res as u32;
            if (c.tx_off as usize) < self.frames[head as usize].bytes.len() {
                // A short write (socket buffer full): send the rest.
                self.submit_head(slot);
                return;
            }
        }
        let c = &mut self.conns[slot as usize];
        c.tx_head = NO_FRAME;
        c.tx_off = 0;
        self.release_frame(head);
        if res < 0 {
            // ECANCELED (our teardown), EPIPE/ECONNRESET (peer gone): nothing more can be sent.
            if self.conns[slot as usize].state == State::Aborting {
                self.maybe_close_fd(slot);
            } else {
                self.abort(slot);
            }
            return;
        }
        self.send_next(slot);
    }

    fn send_next(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.state == State::Aborting {
            self.maybe_close_fd(slot);
            return;
        }
        if let Some(q) = c.txq.as_mut() {
            if let Some(id) = q.frames.pop_front() {
                // Saturating: forced frames were not counted (`enqueue`).
                q.bytes = q.bytes.saturating_sub(self.frames[id as usize].bytes.len());
                if q.frames.is_empty() {
                    c.txq = None;
                }
                c.tx_head = id;
                c.tx_off = 0;
                self.submit_head(slot);
                return;
            }
            c.txq = None;
        }
        if c.state == State::Closing {
            // Everything up to our close frame (or HTTP error response) is out: half-close and
            // wait for the peer's EOF, so unread input does not turn our close into a reset.
            c.state = State::Draining;
            c.set(flag::SHUT_INFLIGHT);
            let gen = c.gen;
            self.ring.push(&sqe::shutdown_write(slot, gen));
            self.set_deadline(slot, Deadline::Close);
        }
    }

    /// Starts the closing handshake: queue a close frame, stop processing input.
    pub(crate) fn close_with(&mut self, slot: u32, code: u16, reason: &str) {
        let frame = ws::frame::server_close_frame(code, reason);
        self.close_after(slot, frame);
    }

    /// Queues a final frame or HTTP response, then half-closes once it is out.
    pub(crate) fn close_after(&mut self, slot: u32, last: Bytes) {
        let c = &mut self.conns[slot as usize];
        if c.has(flag::CLOSE_SENT) || !matches!(c.state, State::Open | State::Handshake) {
            return;
        }
        c.set(flag::CLOSE_SENT);
        c.rx = None;
        self.set_state(slot, State::Closing);
        self.on_leave(slot);
        let id = self.frame_id(last);
        self.enqueue(slot, id, true);
        self.set_deadline(slot, Deadline::Close);
    }
}
