//! Connection I/O completions: accept, readiness, receive, shutdown, close, and teardown.
//!
//! Every errno a completion can carry has a named outcome here. A slot is never reused while the
//! kernel still owns a request on it: teardown cancels everything, waits for each cancelled request
//! to report, and only then closes the slot.

use io_uring::cqueue;

use super::conn::{flag, Conn, State, NO_FRAME};
use crate::config::RecvMode;
use crate::ring::sqe;
use crate::ring::token::{Op, Token};
use crate::worker::{AcceptState, Deadline, Worker};

impl Worker {
    pub(crate) fn on_accept(&mut self, res: i32, flags: u32) {
        if res >= 0 {
            self.open_slot(res as u32);
        } else {
            match -res {
                // The fixed-file table is full: stop accepting until a slot is freed (`on_close`).
                libc::ENFILE => {
                    self.stats.accept_table_full += 1;
                    if self.accept == AcceptState::Armed {
                        tracing::warn!(
                            worker = self.id,
                            live = self.live,
                            "connection table full; accepting paused"
                        );
                    }
                    self.accept = AcceptState::PausedFull;
                }
                // Our own cancellation at stop.
                // Our own cancellation: at drain (stays stopped) or because the table filled up
                // (stays paused until a slot is freed).
                libc::ECANCELED => {
                    if self.accept == AcceptState::Armed {
                        self.accept = AcceptState::Stopped;
                    }
                }
                // Anything else (EMFILE, ENOMEM, ...): retried on the next tick, never in a spin.
                e => {
                    tracing::warn!(
                        worker = self.id,
                        errno = e,
                        "accept failed; retrying next tick"
                    );
                    self.accept = AcceptState::PausedError;
                }
            }
        }
        if !cqueue::more(flags) && self.accept == AcceptState::Armed {
            self.arm_accept();
        }
    }

    fn open_slot(&mut self, slot: u32) {
        let index = slot as usize;
        if index >= self.conns.len() {
            // Grow lazily: the table is sparse and most boxes never fill it.
            let gen_base = 0;
            self.conns.resize_with(index + 1, || Conn::free(gen_base));
        }
        let c = &mut self.conns[index];
        assert_eq!(
            c.state,
            State::Free,
            "kernel handed out slot {slot} that is still in use"
        );
        c.state = State::Handshake;
        c.flags = 0;
        self.live += 1;
        self.stats.accepted += 1;
        self.handshaking += 1;
        self.reset_tokens(slot);
        if self.live >= self.table_slots && self.accept == AcceptState::Armed {
            // The last free slot is taken: stop accepting before the kernel takes a connection
            // off the listen queue only to fail it with ENFILE. New connections wait in the
            // backlog until `on_close` frees a slot and re-arms.
            tracing::warn!(
                worker = self.id,
                live = self.live,
                "connection table full; accepting paused"
            );
            self.accept = AcceptState::PausedFull;
            self.ring.push(&sqe::cancel_op(Op::Accept, 0, 0));
        }
        if self.handshaking > self.cfg.max_handshakes_per_worker {
            // Too many upgrades in progress (a slowloris wave, or a reconnect storm): refuse this
            // one now rather than let partial request heads pile up.
            self.stats.handshakes_refused += 1;
            self.abort(slot);
            return;
        }
        self.set_deadline(slot, Deadline::Handshake);
        self.arm_wait(slot);
        if self.cfg.max_connections_per_ip > 0 {
            self.request_peer_name(slot);
        }
    }

    pub(crate) fn on_poll(&mut self, token: Token, res: i32, flags: u32) {
        let slot = token.slot;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        if !cqueue::more(flags) {
            c.clear(flag::POLL_ARMED);
        }
        let state = c.state;
        if res < 0 {
            // ECANCELED: our teardown. Anything else is a dead socket.
            if state == State::Aborting {
                self.maybe_close_fd(slot);
            } else {
                self.abort(slot);
            }
            return;
        }
        match state {
            State::Handshake | State::Open | State::Closing | State::Draining => {
                // POLLIN, POLLHUP or POLLERR: the receive tells which.
                self.start_recv(slot);
                if !self.conns[slot as usize].has(flag::POLL_ARMED) {
                    self.arm_wait(slot);
                }
            }
            State::Aborting => self.maybe_close_fd(slot),
            State::Free | State::ClosingFd => {}
        }
    }

    pub(crate) fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let slot = token.slot;
        let multishot = self.cfg.recv_mode == RecvMode::Multishot;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        if !multishot || !cqueue::more(flags) {
            c.clear(flag::RECV_INFLIGHT);
        }
        let bid = cqueue::buffer_select(flags);
        if res > 0 {
            let Some(bid) = bid else {
                tracing::error!(
                    worker = self.id,
                    slot,
                    res,
                    "receive completed without a buffer"
                );
                self.abort(slot);
                return;
            };
            self.bufs.taken(bid);
            self.note_activity(slot);
            let len = res as usize;
            let data = self.bufs.filled(bid, len);
            let data: *mut [u8] = data;
            // SAFETY: the buffer stays ours until `give_back(bid)` below; nothing else in the
            // handler touches the buffer ring's memory for this bid, so the slice is not aliased.
            let data = unsafe { &mut *data };
            self.on_bytes(slot, data);
            self.bufs.give_back(bid);
            let buffer_was_full = len == self.bufs.buf_bytes() as usize;
            self.after_recv(slot, multishot, flags, buffer_was_full);
            return;
        }
        if let Some(bid) = bid {
            // A buffer with no data (should not happen for res <= 0), give it straight back.
            self.bufs.taken(bid);
            self.bufs.give_back(bid);
        }
        match -res {
            // EOF: the peer closed. In Draining this is the expected end; elsewhere the peer left
            // without a close frame (RFC 6455 1006 on its side).
            0 => self.abort(slot),
            // Spurious readiness (MSG_DONTWAIT): nothing to read now.
            libc::EAGAIN => self.after_recv(slot, multishot, flags, false),
            // The buffer ring is empty: the data stays in the socket. Retry after buffers are
            // returned this loop turn. Load, not an error.
            libc::ENOBUFS => {
                self.stats.recv_enobufs += 1;
                self.bufs.starved();
                self.last_starved_tick = self.now_tick;
                let c = &mut self.conns[slot as usize];
                if !c.has(flag::STARVED) {
                    c.set(flag::STARVED);
                    self.starved.push_back(slot);
                }
            }
            // Our own teardown.
            libc::ECANCELED if self.conns[slot as usize].state == State::Aborting => {
                self.maybe_close_fd(slot)
            }
            // ECONNRESET, ETIMEDOUT, EPIPE...: the connection is gone.
            _ => self.abort(slot),
        }
    }

    fn note_activity(&mut self, slot: u32) {
        // Any bytes count as activity for the idle deadline.
        if self.conns[slot as usize].state == State::Open {
            self.touch(slot);
        }
    }

    /// Decides whether to read again after a receive completed.
    fn after_recv(&mut self, slot: u32, multishot: bool, flags: u32, buffer_was_full: bool) {
        let c = &mut self.conns[slot as usize];
        match c.state {
            State::Handshake | State::Open | State::Closing | State::Draining => {}
            State::Aborting => {
                self.maybe_close_fd(slot);
                return;
            }
            State::Free | State::ClosingFd => return,
        }
        if multishot {
            if !c.has(flag::RECV_INFLIGHT) {
                self.arm_wait(slot);
            }
            return;
        }
        // More may be waiting: the socket said so, the buffer was filled to the brim, or readiness
        // arrived while this receive was in flight.
        if cqueue::sock_nonempty(flags) || buffer_was_full || c.has(flag::RECV_AGAIN) {
            c.clear(flag::RECV_AGAIN);
            self.start_recv(slot);
        }
    }

    pub(crate) fn on_shutdown(&mut self, token: Token) {
        let slot = token.slot;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        c.clear(flag::SHUT_INFLIGHT);
        // ENOTCONN (peer already gone) and success lead to the same place: wait for EOF.
        if c.state == State::Aborting {
            self.maybe_close_fd(slot);
        }
    }

    pub(crate) fn on_close(&mut self, token: Token, res: i32) {
        let slot = token.slot;
        let id = self.id;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        if res < 0 {
            // EBADF would mean our bookkeeping is wrong; the slot is unusable either way.
            tracing::error!(worker = id, slot, res, "closing a fixed-file slot failed");
        }
        debug_assert!(!c.has_inflight());
        let gen = c.gen.wrapping_add(1);
        *c = Conn::free(gen);
        self.clear_auth(slot);
        self.forget_peer(slot);
        self.live -= 1;
        self.stats.closed += 1;
        if self.accept == AcceptState::PausedFull {
            tracing::info!(
                worker = self.id,
                "a connection slot was freed; accepting again"
            );
            self.arm_accept();
        }
    }

    /// Tears a connection down now: cancel every request, release queued frames and receive state,
    /// close the slot once the kernel has returned everything.
    pub(crate) fn abort(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if matches!(c.state, State::Free | State::Aborting | State::ClosingFd) {
            return;
        }
        tracing::trace!(worker = self.id, slot, state = ?c.state, "abort");
        c.rx = None;
        let gen = c.gen;
        let queued = c.txq.take();
        self.set_state(slot, State::Aborting);
        if let Some(q) = queued {
            for id in q.frames {
                self.release_frame(id);
            }
        }
        self.on_leave(slot);
        self.cancel_inflight(slot, gen);
        self.maybe_close_fd(slot);
    }

    /// Changes a connection's state, keeping the per-state counts true.
    pub(crate) fn set_state(&mut self, slot: u32, state: State) {
        let c = &mut self.conns[slot as usize];
        if c.state == State::Handshake && state != State::Handshake {
            self.handshaking -= 1;
        }
        c.state = state;
    }

    /// Cancels each request the kernel still holds for this connection, by its token. A send or a
    /// shutdown usually completes on its own right away; cancelling them too is harmless (ENOENT).
    fn cancel_inflight(&mut self, slot: u32, gen: u32) {
        let c = &self.conns[slot as usize];
        let ops = [
            (c.has(flag::POLL_ARMED), Op::Poll),
            (c.has(flag::RECV_INFLIGHT), Op::Recv),
            (c.tx_head != NO_FRAME, Op::Send),
            (c.has(flag::SHUT_INFLIGHT), Op::Shutdown),
            (c.has(flag::PEER_INFLIGHT), Op::PeerName),
        ];
        for (inflight, op) in ops {
            if inflight {
                self.ring.push(&sqe::cancel_op(op, slot, gen));
            }
        }
    }

    /// Closes the slot if no request on it is still owned by the kernel.
    pub(crate) fn maybe_close_fd(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.state != State::Aborting || c.has_inflight() {
            return;
        }
        debug_assert_eq!(c.tx_head, NO_FRAME);
        c.state = State::ClosingFd;
        let gen = c.gen;
        self.ring.push(&sqe::close_slot(slot, gen));
    }

    /// The connection a completion refers to, if it is still the same occupant of the slot.
    pub(crate) fn conn_for(&mut self, token: Token) -> Option<&mut Conn> {
        match self.conns.get_mut(token.slot as usize) {
            Some(c) if c.gen == token.gen && c.state != State::Free => Some(c),
            _ => {
                tracing::error!(
                    worker = self.id,
                    ?token,
                    "completion for a slot that moved on"
                );
                None
            }
        }
    }

    /// Protocol state tied to a connection (topic memberships) goes when the connection does.
    pub(crate) fn on_leave(&mut self, slot: u32) {
        self.leave_all(slot);
    }
}
