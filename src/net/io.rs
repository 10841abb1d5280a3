//! Connection I/O completions: readiness, receive, shutdown, peer name, close — and teardown.
//!
//! Every per-connection completion enters through [`Worker::on_conn_completion`], which marks its
//! request done in the connection's [`Life`](crate::lifecycle::Life), runs the handler, and ends
//! with [`Worker::settle`]: the one place that decides to close a slot (exactly once, when the
//! connection is aborting and the kernel holds nothing of it). Handlers never close slots
//! themselves, so no order of completions can leave a slot behind. Every errno a completion can
//! carry has a named outcome here.

use io_uring::cqueue;

use super::accept::Pause;
use super::conn::{Conn, Phase, Req, NO_FRAME};
use crate::config::RecvMode;
use crate::lifecycle::Submit;
use crate::ring::bufring::RecvBuf;
use crate::ring::sqe::{self, Sqe};
use crate::ring::token::{Op, Token};
use crate::ring::Ring;
use crate::worker::{Deadline, Worker, BGID};

/// The token op of a connection request.
pub fn op_of(req: Req) -> Op {
    match req {
        Req::Poll => Op::Poll,
        Req::Recv => Op::Recv,
        Req::Send => Op::Send,
        Req::Shutdown => Op::Shutdown,
        Req::PeerName => Op::PeerName,
        Req::Connect => Op::Connect,
    }
}

/// The connection request of a token op, if it is one.
pub fn req_of(op: Op) -> Option<Req> {
    Some(match op {
        Op::Poll => Req::Poll,
        Op::Recv => Req::Recv,
        Op::Send => Req::Send,
        Op::Shutdown => Req::Shutdown,
        Op::PeerName => Req::PeerName,
        Op::Connect => Req::Connect,
        _ => return None,
    })
}

/// The lifecycle's submissions, onto a ring (shared with the load generator).
pub struct RingSubmit<'a>(pub &'a mut Ring);

impl Submit for RingSubmit<'_> {
    fn cancel(&mut self, slot: u32, gen: u32, req: Req) {
        // By token, not by fd: cancelling by fd walks every armed poll of the ring (O(N²) when
        // many connections end at once).
        self.0.push(sqe::cancel_op(op_of(req), slot, gen));
    }
    fn close(&mut self, slot: u32, gen: u32) {
        self.0.push(sqe::close_slot(slot, gen));
    }
}

impl Worker {
    /// Every completion of a request on a connection.
    pub(crate) fn on_conn_completion(&mut self, token: Token, res: i32, flags: u32) {
        if token.op == Op::Close {
            return self.on_close(token, res);
        }
        let Some(req) = req_of(token.op) else {
            return;
        };
        let multishot = match req {
            Req::Poll => true,
            Req::Recv => self.cfg.recv_mode == RecvMode::Multishot,
            _ => false,
        };
        let slot = token.slot;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        c.life.completed(req, multishot && cqueue::more(flags));
        match req {
            Req::Poll => self.on_poll(slot, res),
            Req::Recv => self.on_recv(slot, res, flags),
            Req::Send => self.on_send(slot, res),
            // ENOTCONN (peer already gone) and success lead to the same place: wait for EOF.
            Req::Shutdown => {}
            Req::PeerName => self.on_peer_name(slot, res),
            Req::Connect => {
                tracing::error!(worker = self.id, ?token, "client op on a gateway ring");
            }
        }
        self.settle(slot);
    }

    /// Closes the slot if the connection is aborting and the kernel holds nothing of it.
    pub(crate) fn settle(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let gen = c.gen;
        if c.life.settle(slot, gen, &mut RingSubmit(&mut self.ring)) {
            debug_assert_eq!(c.tx_head, NO_FRAME);
        }
    }

    /// Submits a request for `slot`, noting it in flight.
    pub(crate) fn submit(&mut self, slot: u32, req: Req, entry: Sqe) {
        self.conns[slot as usize].life.submitted(req);
        self.ring.push(entry);
    }

    pub(crate) fn open_slot(&mut self, slot: u32) {
        let index = slot as usize;
        if index >= self.conns.len() {
            // Grow lazily: the table is sparse and most boxes never fill it.
            self.conns.resize_with(index + 1, || Conn::free(0));
        }
        let c = &mut self.conns[index];
        assert_eq!(
            c.phase(),
            Phase::Free,
            "kernel handed out slot {slot} that is still in use"
        );
        c.life.start(Phase::Handshake);
        self.live += 1;
        self.stats.accepted += 1;
        self.handshaking += 1;
        self.reset_tokens(slot);
        if self.live >= self.table_slots && self.pause_accepting(Pause::Full) {
            // The last free slot is taken: stop accepting before the kernel takes a connection
            // off the listen queue only to fail it with ENFILE. New connections wait in the
            // backlog until `on_close` frees a slot and re-arms.
            tracing::warn!(
                worker = self.id,
                live = self.live,
                "connection table full; accepting paused"
            );
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

    /// Arms the readiness wait of a connection per the configured receive mode.
    pub(crate) fn arm_wait(&mut self, slot: u32) {
        let gen = self.conns[slot as usize].gen;
        match self.cfg.recv_mode {
            RecvMode::Poll => self.submit(slot, Req::Poll, sqe::poll_readable(slot, gen)),
            RecvMode::Multishot => self.submit(slot, Req::Recv, sqe::recv_multi(slot, gen, BGID)),
        }
    }

    /// Issues a one-shot receive (poll mode) unless one is in flight (it is then followed by
    /// another).
    pub(crate) fn start_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.life.want_recv() {
            let gen = c.gen;
            self.submit(slot, Req::Recv, sqe::recv_once(slot, gen, BGID));
        }
    }

    fn on_poll(&mut self, slot: u32, res: i32) {
        if res < 0 {
            // ECANCELED: our teardown. Anything else is a dead socket.
            return self.abort(slot);
        }
        // POLLIN, POLLHUP or POLLERR: the receive tells which.
        self.start_recv(slot);
        let c = &self.conns[slot as usize];
        if c.life.receiving() && !c.life.in_flight(Req::Poll) {
            // The multishot poll ended (e.g. a CQ overflow): arm it again.
            self.arm_wait(slot);
        }
    }

    fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let buf: Option<RecvBuf> = cqueue::buffer_select(flags).map(|bid| {
            // SAFETY: `bid` comes from this completion's F_BUFFER flags, taken once here.
            unsafe { self.bufs.take(bid, res.max(0) as usize) }
        });
        if res > 0 {
            let Some(mut buf) = buf else {
                tracing::error!(
                    worker = self.id,
                    slot,
                    res,
                    "receive completed without a buffer"
                );
                return self.abort(slot);
            };
            self.note_activity(slot);
            self.on_bytes(slot, &mut buf);
            let full = buf.is_full();
            drop(buf);
            return self.after_recv(slot, cqueue::sock_nonempty(flags), full);
        }
        drop(buf);
        match -res {
            // EOF: the peer closed. When half-closed this is the expected end; elsewhere the peer
            // left without a close frame (RFC 6455 1006 on its side).
            0 => self.abort(slot),
            // Spurious readiness (MSG_DONTWAIT): nothing to read now.
            libc::EAGAIN => self.after_recv(slot, false, false),
            // The buffer ring is empty: the data stays in the socket. Retried after buffers are
            // returned this loop turn. Load, not an error.
            libc::ENOBUFS => {
                self.stats.recv_enobufs += 1;
                self.bufs.starved();
                self.last_starved_tick = self.now_tick;
                let c = &mut self.conns[slot as usize];
                if c.life.starve() {
                    self.starved.push_back((slot, c.gen));
                }
            }
            // ECANCELED (our teardown), ECONNRESET, ETIMEDOUT, EPIPE...: the connection is gone.
            _ => self.abort(slot),
        }
    }

    fn note_activity(&mut self, slot: u32) {
        // Any bytes count as activity for the idle deadline.
        if self.conns[slot as usize].phase() == Phase::Open {
            self.touch(slot);
        }
    }

    /// Decides whether to read again after a receive completed.
    fn after_recv(&mut self, slot: u32, sock_nonempty: bool, buffer_full: bool) {
        let c = &mut self.conns[slot as usize];
        if !c.life.receiving() {
            return;
        }
        match self.cfg.recv_mode {
            RecvMode::Multishot => {
                if !c.life.in_flight(Req::Recv) {
                    self.arm_wait(slot);
                }
            }
            RecvMode::Poll => {
                if c.life.recv_again(sock_nonempty, buffer_full) {
                    let gen = c.gen;
                    self.submit(slot, Req::Recv, sqe::recv_once(slot, gen, BGID));
                }
            }
        }
    }

    /// Receives that found the buffer ring empty get one retry per loop turn, after buffers were
    /// published.
    pub(crate) fn retry_starved(&mut self) {
        for _ in 0..self.starved.len() {
            let Some((slot, gen)) = self.starved.pop_front() else {
                break;
            };
            let c = &mut self.conns[slot as usize];
            if c.gen != gen || !c.life.unstarve() {
                continue;
            }
            match self.cfg.recv_mode {
                RecvMode::Poll => self.start_recv(slot),
                RecvMode::Multishot => {
                    if !self.conns[slot as usize].life.in_flight(Req::Recv) {
                        self.arm_wait(slot);
                    }
                }
            }
        }
    }

    fn on_close(&mut self, token: Token, res: i32) {
        let slot = token.slot;
        let id = self.id;
        let Some(c) = self.conn_for(token) else {
            return;
        };
        if res < 0 {
            // EBADF would mean our bookkeeping is wrong; the slot is unusable either way.
            tracing::error!(worker = id, slot, res, "closing a fixed-file slot failed");
        }
        c.life.released();
        let gen = c.gen.wrapping_add(1);
        *c = Conn::free(gen);
        self.clear_auth(slot);
        self.forget_peer(slot);
        self.live -= 1;
        self.stats.closed += 1;
        if self.resume_accepting(Pause::Full) {
            tracing::info!(
                worker = self.id,
                "a connection slot was freed; accepting again"
            );
        }
    }

    /// Tears a connection down now: cancel every request, release queued frames, receive state and
    /// memberships. Idempotent; the slot is closed by `settle` once the kernel has returned
    /// everything.
    pub(crate) fn abort(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let gen = c.gen;
        let phase = c.phase();
        if !c.life.abort(slot, gen, &mut RingSubmit(&mut self.ring)) {
            return;
        }
        tracing::trace!(worker = self.id, slot, ?phase, "abort");
        if phase == Phase::Handshake {
            self.handshaking -= 1;
        }
        c.rx = None;
        self.drop_waiting(slot);
        self.on_leave(slot);
        self.settle(slot);
    }

    /// Moves a live connection to `phase`, keeping the per-phase counts true. False if it could
    /// not move (already closing or tearing down).
    pub(crate) fn advance(&mut self, slot: u32, phase: Phase) -> bool {
        let c = &mut self.conns[slot as usize];
        let from = c.phase();
        if !c.life.advance(phase) {
            return false;
        }
        if from == Phase::Handshake {
            self.handshaking -= 1;
        }
        true
    }

    /// The connection a completion refers to, if it is still the same occupant of the slot.
    pub(crate) fn conn_for(&mut self, token: Token) -> Option<&mut Conn> {
        match self.conns.get_mut(token.slot as usize) {
            Some(c) if c.gen == token.gen && c.phase() != Phase::Free => Some(c),
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
