//! The send path: frames as shared `Bytes`, one send in flight per connection, a bounded queue,
//! and queued frames coalesced into one send.
//!
//! A frame lives in the worker's frame table with a reference count, so a broadcast frame is one
//! allocation shared by every member's queue: queuing it for a connection is an id and a count, no
//! copy, no allocation (unless that connection already has a frame waiting and needs its queue box).
//! A frame is released only on its final completion: the kernel may read it until then.
//!
//! Corking: a frame is not submitted when it is queued but at the end of the loop turn
//! (`flush_sends`, just before the worker enters the kernel, so it adds no latency). Every frame a
//! connection was given in that turn — the broadcasts of one inbox batch, a reply and a push — and
//! every frame that queued up behind a send in flight, leaves in **one** send: a plain `SEND` for
//! one frame, a `SENDMSG` whose iovec points at the queued frames (each still shared with every
//! other member) for several. The loopback TCP send path costs several µs per call whatever its
//! size, so a subscriber ten frames behind costs one trip through the kernel instead of ten.
//! A send covers at most `MAX_FRAMES_PER_SEND` frames and `MAX_BYTES_PER_SEND` bytes; a short send
//! resumes in the middle of its iovec.
//!
//! A large fan-out is sent in slices of `MAX_SENDS_PER_TURN` connections, oldest first, and the
//! loop turns between slices do not wait (they only give the core to a thread queued on it): the
//! worker takes new broadcasts while it is still reaching the members of earlier ones, and a member
//! not reached yet gets them all in its one send. That is what keeps a sustained rate: when
//! broadcasts come faster than one send per frame per member can carry, each send covers more
//! frames, at the cost of one send, instead of the backlog growing. With one broadcast at a time
//! nothing changes but the number of `io_uring_enter` calls (one per slice).

use bytes::Bytes;

use super::conn::{Phase, Req, TxQueue, NO_FRAME};
use crate::ring::sqe;
use crate::worker::{Deadline, Frame, Worker};
use crate::ws;

/// Frames one vectored send covers at most: bounds the iovec (16 B per frame) a backlogged
/// connection keeps, and the kernel's per-call work; far below `IOV_MAX` (1024).
pub const MAX_FRAMES_PER_SEND: usize = 64;
/// Bytes one vectored send covers at most (past the first frame): a send larger than the socket
/// buffer would only come back short.
pub const MAX_BYTES_PER_SEND: usize = 256 << 10;
/// Connections one loop turn sends to at most. Between two slices of a large fan-out the worker
/// takes its completions and its inbox, so a broadcast that arrives meanwhile joins the frames
/// still waiting for the members not yet reached — under a sustained rate above what one send per
/// frame can carry, sends cover more frames instead of falling behind. The slice is small because
/// its sends run inside one `io_uring_enter`, which this kernel does not preempt: at ~10 µs per
/// loopback send, 64 of them hold the core ~0.6 ms before another thread woken on it can run (1,024
/// held it ~10 ms, and doubled the 2-worker p99 of a sustained rate). One enter per 64 sends costs
/// well under 1% of the sends themselves.
pub const MAX_SENDS_PER_TURN: usize = 64;

/// What happened to a frame handed to `send_frame`: backpressure as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Accepted: it leaves in this loop turn's send to the connection.
    Submitted,
    /// Queued behind the send in flight.
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
        if !self.conns[slot as usize].is_live() {
            // Closing (our last frame is queued) or tearing down: nothing more may be sent.
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
            self.unflushed.push_back((slot, c.gen));
            return Sent::Submitted;
        }
        let in_flight = c.life.in_flight(Req::Send);
        let q = c.txq.get_or_insert_with(Box::<TxQueue>::default);
        if !force && q.bytes + len > self.cfg.max_send_queue_bytes {
            self.stats.send_queue_overflows += 1;
            tracing::debug!(
                worker = self.id,
                slot,
                queued = q.bytes,
                "send queue full; closing with 1008"
            );
            // The waiting frames are dropped at once (their memory is the point of the bound); the
            // close frame goes right behind the frames already in flight.
            self.drop_waiting(slot);
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
        if in_flight {
            Sent::Queued
        } else {
            Sent::Submitted
        }
    }

    /// Queues a presence state for a joiner: past the send-queue bound if it is the only such
    /// frame waiting (a room's state may be larger than the bound; it is bounded by
    /// `max_members`), counted like any frame otherwise.
    pub(crate) fn enqueue_state(&mut self, slot: u32, id: u32) -> Sent {
        let c = &self.conns[slot as usize];
        let free = c.txq.as_ref().is_none_or(|q| q.uncounted == NO_FRAME);
        if !free {
            return self.enqueue(slot, id, false);
        }
        let sent = self.enqueue(slot, id, true);
        if let Some(q) = self.conns[slot as usize].txq.as_mut() {
            if q.frames.back() == Some(&id) {
                q.uncounted = id;
            }
        }
        sent
    }

    /// Releases the frames that wait and are not part of the send in flight (teardown, queue
    /// overflow). The queue box stays while a vectored send still points into it.
    pub(crate) fn drop_waiting(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let in_flight = c.life.in_flight(Req::Send);
        let mut waiting = Vec::new();
        if let Some(q) = c.txq.as_mut() {
            let keep = if in_flight { q.inflight as usize } else { 0 };
            waiting.extend(q.frames.drain(keep..));
            q.bytes = 0;
            if !q.frames.contains(&q.uncounted) {
                q.uncounted = NO_FRAME;
            }
            if !in_flight {
                q.inflight = 0;
            }
            if q.frames.is_empty() {
                c.txq = None;
            }
        }
        if !in_flight && c.tx_head != NO_FRAME {
            // Queued in this loop turn, never submitted.
            waiting.push(c.tx_head);
            c.tx_head = NO_FRAME;
            c.tx_off = 0;
        }
        for id in waiting {
            self.release_frame(id);
        }
    }

    /// End of the loop turn: connections given frames send them, coalesced, oldest first, at most
    /// `MAX_SENDS_PER_TURN` of them; the rest go in the next turns (which wait for nothing while
    /// any are left).
    pub(crate) fn flush_sends(&mut self) {
        let mut sends = 0;
        while sends < MAX_SENDS_PER_TURN {
            let Some((slot, gen)) = self.unflushed.pop_front() else {
                return;
            };
            let c = &self.conns[slot as usize];
            if c.gen == gen && c.tx_head != NO_FRAME && !c.life.in_flight(Req::Send) {
                self.submit_head(slot);
                sends += 1;
            }
        }
    }

    /// Sends the head frame (from `tx_off`) and, if frames wait behind it, those too in one
    /// vectored send.
    fn submit_head(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        debug_assert!(!c.life.ending());
        let gen = c.gen;
        let head = &self.frames[c.tx_head as usize].bytes[c.tx_off as usize..];
        let waiting = c.txq.as_ref().map_or(0, |q| q.frames.len());
        if waiting == 0 {
            // SAFETY: the bytes belong to frame `tx_head`, which holds a reference for this
            // connection until `on_send` handles this send's final completion (and is leaked, not
            // freed, if the worker exits with the send still in flight).
            let entry = unsafe { sqe::send(slot, gen, head.as_ptr(), head.len() as u32) };
            self.stats.sends += 1;
            return self.submit(slot, Req::Send, entry);
        }
        let q = c.txq.as_mut().expect("frames wait");
        q.iov.clear();
        q.iov.push(libc::iovec {
            iov_base: head.as_ptr().cast_mut().cast(),
            iov_len: head.len(),
        });
        let mut bytes = 0;
        for &id in q.frames.iter().take(MAX_FRAMES_PER_SEND - 1) {
            let f = &self.frames[id as usize].bytes;
            if bytes > 0 && bytes + f.len() > MAX_BYTES_PER_SEND {
                break;
            }
            bytes += f.len();
            q.iov.push(libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            });
        }
        q.inflight = (q.iov.len() - 1) as u16;
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        q.msg = unsafe { std::mem::zeroed() };
        q.msg.msg_iov = q.iov.as_mut_ptr();
        q.msg.msg_iovlen = q.iov.len();
        // SAFETY: the msghdr and iovec live in this connection's queue box, which is kept (never
        // dropped or modified) while the send is in flight (`drop_waiting`, `on_send`); each iovec
        // points into a frame that holds a reference for this connection until `on_send` handles
        // the send's final completion (leaked, not freed, at an exit with the send in flight).
        let entry = unsafe { sqe::send_msg(slot, gen, &q.msg) };
        self.stats.sends += 1;
        self.submit(slot, Req::Send, entry);
    }

    /// The send completed (the request is already marked done): `res` bytes went out, across the
    /// head and the frames the send covered.
    pub(crate) fn on_send(&mut self, slot: u32, res: i32) {
        let c = &mut self.conns[slot as usize];
        debug_assert_ne!(c.tx_head, NO_FRAME);
        let covered = c
            .txq
            .as_mut()
            .map_or(0, |q| std::mem::take(&mut q.inflight));
        if res < 0 || c.life.ending() {
            // ECANCELED (our teardown), EPIPE/ECONNRESET (peer gone): nothing more can be sent.
            let mut gone = vec![c.tx_head];
            c.tx_head = NO_FRAME;
            c.tx_off = 0;
            if let Some(q) = c.txq.as_mut() {
                gone.extend(q.frames.drain(..usize::from(covered).min(q.frames.len())));
            }
            for id in gone {
                self.release_frame(id);
            }
            self.drop_waiting(slot);
            if res < 0 {
                self.abort(slot);
            }
            return;
        }
        // Walk the bytes sent across the head and the covered frames.
        let mut sent = res as usize;
        let mut covered = usize::from(covered);
        loop {
            let c = &mut self.conns[slot as usize];
            let left = self.frames[c.tx_head as usize].bytes.len() - c.tx_off as usize;
            if sent < left {
                // A short send: resume inside this frame.
                c.tx_off += sent as u32;
                break;
            }
            sent -= left;
            let done = c.tx_head;
            let next = match c.txq.as_mut() {
                Some(q) => {
                    let next = q.frames.pop_front();
                    if let Some(id) = next {
                        if id == q.uncounted {
                            q.uncounted = NO_FRAME;
                        } else {
                            // Saturating: a close frame is not counted either (`enqueue`).
                            q.bytes = q.bytes.saturating_sub(self.frames[id as usize].bytes.len());
                        }
                    }
                    if q.frames.is_empty() {
                        c.txq = None;
                    }
                    next
                }
                None => None,
            };
            c.tx_head = next.unwrap_or(NO_FRAME);
            c.tx_off = 0;
            // Counted once its last byte is out: a short send's rest is not a frame again.
            self.stats.frames_out += 1;
            self.release_frame(done);
            if next.is_none() || covered == 0 {
                break;
            }
            covered -= 1;
        }
        self.send_next(slot);
    }

    fn send_next(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.tx_head != NO_FRAME {
            // More to send (a short send's rest, or frames that queued meanwhile): with whatever
            // else this loop turn brings.
            self.unflushed.push_back((slot, c.gen));
            return;
        }
        if c.phase() == Phase::Closing && self.advance(slot, Phase::HalfClosed) {
            // Everything up to our close frame (or HTTP error response) is out: half-close and
            // wait for the peer's EOF, so unread input does not turn our close into a reset.
            let gen = self.conns[slot as usize].gen;
            self.submit(slot, Req::Shutdown, sqe::shutdown_write(slot, gen));
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
        if !self.advance(slot, Phase::Closing) {
            // Already closing or tearing down.
            return;
        }
        self.conns[slot as usize].rx = None;
        self.on_leave(slot);
        let id = self.frame_id(last);
        self.enqueue(slot, id, true);
        self.set_deadline(slot, Deadline::Close);
    }
}
