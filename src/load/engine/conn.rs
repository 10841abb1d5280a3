//! A user's connection: the set-up chain, the upgrade, receiving, sending, and teardown.
//!
//! Every errno a completion can carry has a named outcome here. The lifecycle is the gateway's own
//! (`lifecycle`): every completion enters through `on_user_completion`, which marks the request
//! done, runs the handler and ends with `settle` — the one place a slot is closed, once nothing is
//! in flight on it. The generation bump makes late completions and timers of the previous user
//! harmless.

use std::collections::VecDeque;

use io_uring::cqueue;

use super::user::{flag, Phase, Req, Rx, User, NO_TX};
use super::{Engine, TxBuf, BGID, TX_POOL_MAX, TX_POOL_MAX_BYTES};
use crate::load::scenario::{Step, Vars};
use crate::load::stats::ErrorKind;
use crate::load::upgrade;
use crate::net::io::{req_of, RingSubmit};
use crate::ring::sqe::{self, Sqe};
use crate::ring::token::{Op, Token};
use crate::ws::frame::{self, opcode};
use crate::ws::{Decoded, Event, MessageReader, Role};

/// Queued sends per user past which its session pauses until they are out: a scenario that sends
/// in a tight loop is paced by the socket instead of growing memory.
pub const MAX_QUEUED_SENDS: usize = 64;

/// `int 1` for socket options. The kernel reads it when the linked step runs, after submission,
/// so it must be `static`.
static ONE: libc::c_int = 1;

impl Engine {
    /// The user's slot if `token` is for its current occupant.
    fn user_for(&mut self, token: Token) -> Option<&mut User> {
        self.users
            .get_mut(token.slot as usize)
            .filter(|u| u.gen == token.gen && u.phase() != Phase::Free)
    }

    /// Every completion of a request on a user's socket.
    pub(super) fn on_user_completion(&mut self, token: Token, res: i32, flags: u32) {
        if token.op == Op::Close {
            return self.on_close(token);
        }
        let Some(req) = req_of(token.op) else {
            return;
        };
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        u.life
            .completed(req, req == Req::Poll && cqueue::more(flags));
        match req {
            Req::Connect => self.on_connect(slot, res),
            Req::Poll => self.on_poll(slot, res),
            Req::Recv => self.on_recv(slot, res, flags),
            Req::Send => self.on_send(slot, res),
            Req::Shutdown | Req::PeerName => {
                say!("ringgate load: unexpected completion {token:?} (res {res})");
            }
        }
        self.settle(slot);
    }

    /// Closes the slot of an aborting user once nothing is in flight on it.
    fn settle(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        let gen = u.gen;
        u.life.settle(slot, gen, &mut RingSubmit(&mut self.ring));
    }

    fn submit(&mut self, slot: u32, req: Req, entry: Sqe) {
        self.users[slot as usize].life.submitted(req);
        self.ring.push(entry);
    }

    /// Starts user `id` in `slot`: one linked chain socket → options → bind → connect.
    pub(super) fn start_user(&mut self, slot: u32, run_id: u64, now: u64) {
        let id = run_id + self.setup.first_user_id;
        let session = self.setup.scenario.session_for(id);
        let u = &mut self.users[slot as usize];
        debug_assert_eq!(u.phase(), Phase::Free);
        let gen = u.gen;
        *u = User::free(gen);
        u.user_id = id as u32;
        u.session = session;
        u.life.start(Phase::Connecting);
        self.connecting += 1;
        self.live += 1;
        self.cur.s.arrivals += 1;
        if self.cur.s.first_arrival_us == 0 {
            self.cur.s.first_arrival_us = (now / 1000).max(1);
        }
        let timeout = self.setup.connect_timeout_ms * 1_000_000;
        self.set_deadline(slot, now + timeout);
        let setup = self.setup.clone();
        self.ring.push(sqe::socket_direct(slot, gen));
        if setup.sockopt_supported {
            self.ring.push(sqe::set_int_option(
                slot,
                gen,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &ONE,
            ));
        }
        if let Some(i) = setup.sources.index(run_id) {
            let src = &setup.sources.addrs[i];
            // The port is chosen at connect time, per destination: each source address gives
            // a full ephemeral range towards each server address.
            self.ring.push(sqe::set_int_option(
                slot,
                gen,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &ONE,
            ));
            // SAFETY: the address lives in the shared setup, which outlives the ring.
            let bind = unsafe { sqe::bind(slot, gen, src) };
            self.ring.push(bind);
        }
        // SAFETY: as above; the kernel copies the address when the entry is submitted.
        let connect = unsafe { sqe::connect(slot, gen, &setup.dest) };
        // The set-up steps before it post only on failure; the connect always posts, so it alone
        // is the request in flight.
        self.submit(slot, Req::Connect, connect);
    }

    /// A step of the set-up chain before `connect` failed (these post only on failure).
    pub(super) fn on_setup_failed(&mut self, token: Token, res: i32) {
        // ECANCELED: an earlier step failed (already counted) or our teardown cancelled it.
        if res >= 0 || res == -libc::ECANCELED {
            return;
        }
        self.record_error(ErrorKind::SocketSetup);
        let what = match token.op {
            Op::Socket => "socket",
            Op::SockOpt => "setsockopt",
            _ => "bind",
        };
        self.setup.report_error(
            ErrorKind::SocketSetup,
            format_args!("{what}: {}", std::io::Error::from_raw_os_error(-res)),
        );
    }

    fn on_connect(&mut self, slot: u32, res: i32) {
        if self.users[slot as usize].phase() != Phase::Connecting {
            // Aborted meanwhile (timeout, end of run): `settle` finishes the teardown.
            return;
        }
        if res < 0 {
            let kind = match -res {
                libc::ECONNREFUSED => Some(ErrorKind::ConnectRefused),
                libc::ETIMEDOUT => Some(ErrorKind::ConnectTimeout),
                // An earlier step of the chain failed; it was counted by `on_setup_failed`.
                libc::ECANCELED => None,
                _ => Some(ErrorKind::ConnectError),
            };
            if let Some(kind) = kind {
                self.record_error(kind);
                self.setup.report_error(
                    kind,
                    format_args!("connect: {}", std::io::Error::from_raw_os_error(-res)),
                );
            }
            self.abort(slot);
            return;
        }
        self.send_upgrade(slot);
    }

    fn send_upgrade(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        u.life.advance(Phase::Handshake);
        let (user_id, gen, session) = (u64::from(u.user_id), u.gen, u.session);
        let vars = Vars {
            user_id,
            msg_ref: 0,
            proc: self.setup.proc_index,
        };
        let setup = self.setup.clone();
        let mut target = std::mem::take(&mut self.scratch);
        target.clear();
        match setup.scenario.sessions[usize::from(session)].steps.first() {
            Some(Step::Connect { target: Some(t) }) => t.render(&vars, super::mono_ns, &mut target),
            _ => target.extend_from_slice(setup.default_target.as_bytes()),
        }
        let key = upgrade::key(setup.seed, user_id, gen);
        let mut req = self.tx_pool.pop().unwrap_or_default();
        req.clear();
        upgrade::write_request(&mut req, &setup.host, &target, &key);
        self.scratch = target;
        self.arm_poll(slot);
        self.queue(slot, req, false);
    }

    fn arm_poll(&mut self, slot: u32) {
        let gen = self.users[slot as usize].gen;
        self.submit(slot, Req::Poll, sqe::poll_readable(slot, gen));
    }

    fn start_recv(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        if u.life.want_recv() {
            let gen = u.gen;
            self.submit(slot, Req::Recv, sqe::recv_once(slot, gen, BGID));
        }
    }

    fn on_poll(&mut self, slot: u32, res: i32) {
        if res < 0 {
            // ECANCELED (our teardown) or a dead socket.
            return self.abort(slot);
        }
        // POLLIN, POLLHUP or POLLERR: the receive tells which.
        self.start_recv(slot);
        let u = &self.users[slot as usize];
        if u.receiving() && !u.life.in_flight(Req::Poll) {
            self.arm_poll(slot);
        }
    }

    fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let buf = cqueue::buffer_select(flags).map(|bid| {
            // SAFETY: `bid` comes from this completion's F_BUFFER flags, taken once here.
            unsafe { self.bufs.take(bid, res.max(0) as usize) }
        });
        if res > 0 {
            let Some(buf) = buf else {
                say!("ringgate load: receive completed without a buffer");
                return self.abort(slot);
            };
            let len = res as usize;
            // Copied out so the buffer goes back at once and the handlers can borrow the engine.
            let mut data = std::mem::take(&mut self.rxbuf);
            data.clear();
            data.extend_from_slice(&buf);
            let full = buf.is_full();
            drop(buf);
            self.cur.s.bytes_received += len as u64;
            self.on_bytes(slot, &mut data);
            self.rxbuf = data;
            let u = &mut self.users[slot as usize];
            if u.life.recv_again(cqueue::sock_nonempty(flags), full) {
                let gen = u.gen;
                self.submit(slot, Req::Recv, sqe::recv_once(slot, gen, BGID));
            }
            return;
        }
        drop(buf);
        let state = self.users[slot as usize].phase();
        match -res {
            // EOF. After our Close it is the normal end; before, the server dropped us.
            0 => {
                match state {
                    Phase::Handshake => self.upgrade_failed(
                        slot,
                        "the server closed the connection before answering the upgrade",
                    ),
                    Phase::Open => self.disconnected(
                        slot,
                        "connection closed by the server without a Close frame",
                    ),
                    _ => {}
                }
                self.abort(slot);
            }
            // The ring ran dry: the data waits in the socket; retried once buffers are back.
            libc::ENOBUFS => {
                self.bufs.starved();
                let u = &mut self.users[slot as usize];
                if u.life.starve() {
                    self.starved.push_back((slot, u.gen));
                }
            }
            // A spurious wake-up (MSG_DONTWAIT): nothing to read, unless readiness came meanwhile.
            libc::EAGAIN => {
                let u = &mut self.users[slot as usize];
                if u.life.recv_again(false, false) {
                    let gen = u.gen;
                    self.submit(slot, Req::Recv, sqe::recv_once(slot, gen, BGID));
                }
            }
            // Our teardown.
            libc::ECANCELED => self.abort(slot),
            // ECONNRESET and friends.
            e => {
                let msg = std::io::Error::from_raw_os_error(e).to_string();
                match state {
                    Phase::Handshake => {
                        self.upgrade_failed(slot, &format!("{msg} before the upgrade's answer"))
                    }
                    Phase::Open => self.disconnected(slot, &msg),
                    _ => {}
                }
                self.abort(slot);
            }
        }
    }

    /// Counts an upgrade the server ended before answering it (its handshake timeout, a full
    /// accept queue, a limit): a failure to connect, not a user that was connected and lost.
    fn upgrade_failed(&mut self, slot: u32, why: &str) {
        if self.ending {
            return;
        }
        self.record_error(ErrorKind::Upgrade);
        let id = self.users[slot as usize].user_id;
        self.setup
            .report_error(ErrorKind::Upgrade, format_args!("user {id}: {why}"));
    }

    /// Counts a connection lost before its session ended (not during our own close).
    fn disconnected(&mut self, slot: u32, why: &str) {
        if self.ending {
            return;
        }
        self.record_error(ErrorKind::Disconnected);
        let id = self.users[slot as usize].user_id;
        self.setup
            .report_error(ErrorKind::Disconnected, format_args!("user {id}: {why}"));
    }

    pub(super) fn retry_starved(&mut self) {
        for _ in 0..self.starved.len() {
            let Some((slot, gen)) = self.starved.pop_front() else {
                break;
            };
            let u = &mut self.users[slot as usize];
            if u.gen == gen && u.life.unstarve() {
                self.start_recv(slot);
            }
        }
    }

    /// Bytes received on `slot` (handshake response and/or frames).
    fn on_bytes(&mut self, slot: u32, data: &mut Vec<u8>) {
        // A stash from an earlier receive goes first: the new bytes continue it.
        let mut rx = self.users[slot as usize].rx.take();
        let mut input: Vec<u8> = match rx.as_mut() {
            Some(r) => {
                r.buf.extend_from_slice(data);
                std::mem::take(&mut r.buf)
            }
            None => std::mem::take(data),
        };
        let mut reader = rx
            .as_mut()
            .map(|r| std::mem::replace(&mut r.reader, MessageReader::new(Role::Client)))
            .unwrap_or_else(|| MessageReader::new(Role::Client));
        let mut off = 0;
        if self.users[slot as usize].phase() == Phase::Handshake {
            match self.on_response(slot, &input) {
                Some(n) => off = n,
                None => {
                    // Incomplete head (kept) or failed upgrade (user aborted, stash dropped).
                    if self.users[slot as usize].phase() == Phase::Handshake {
                        self.stash(slot, rx, &input, 0, reader);
                    }
                    self.give_input_back(data, input);
                    return;
                }
            }
        }
        while self.users[slot as usize].receiving() && off < input.len() {
            let limits = self.setup.ws_limits;
            match reader.decode(&mut input[off..], &limits) {
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Frame { consumed, event }) => {
                    off += consumed;
                    if let Some(event) = event {
                        self.on_event(slot, event);
                    }
                }
                Err(v) => {
                    self.record_error(ErrorKind::Protocol);
                    let id = self.users[slot as usize].user_id;
                    self.setup
                        .report_error(ErrorKind::Protocol, format_args!("user {id}: {v}"));
                    self.abort(slot);
                    break;
                }
            }
        }
        if self.users[slot as usize].receiving() && (off < input.len() || reader.in_message()) {
            self.stash(slot, rx, &input, off, reader);
        }
        self.give_input_back(data, input);
    }

    fn give_input_back(&mut self, data: &mut Vec<u8>, input: Vec<u8>) {
        // Keep the larger allocation as the receive scratch.
        if input.capacity() > data.capacity() {
            *data = input;
        }
    }

    /// Keeps `input[off..]` (and the reader of a fragmented message) for the next receive.
    fn stash(
        &mut self,
        slot: u32,
        rx: Option<Box<Rx>>,
        input: &[u8],
        off: usize,
        reader: MessageReader,
    ) {
        let mut rx = rx.unwrap_or_else(Rx::new);
        rx.buf.clear();
        rx.buf.extend_from_slice(&input[off..]);
        rx.reader = reader;
        self.users[slot as usize].rx = Some(rx);
    }

    /// The upgrade response; `Some(n)`: upgraded, frames start at `n`.
    fn on_response(&mut self, slot: u32, input: &[u8]) -> Option<usize> {
        let u = &self.users[slot as usize];
        let key = upgrade::key(self.setup.seed, u64::from(u.user_id), u.gen);
        match upgrade::parse_response(input, &key) {
            Ok(None) => None,
            Ok(Some(n)) => {
                let now = self.now();
                let u = &mut self.users[slot as usize];
                let started = u.deadline_ns - self.setup.connect_timeout_ms * 1_000_000;
                u.deadline_ns = 0;
                u.life.advance(Phase::Open);
                u.pc = 1;
                self.connecting -= 1;
                self.open += 1;
                self.cur.s.connected += 1;
                self.cur.s.last_connected_us = now / 1000;
                self.record_txn(0, now.saturating_sub(started));
                self.advance(slot, now);
                Some(n)
            }
            Err(e) => {
                self.record_error(ErrorKind::Upgrade);
                let id = self.users[slot as usize].user_id;
                self.setup
                    .report_error(ErrorKind::Upgrade, format_args!("user {id}: {e}"));
                self.abort(slot);
                None
            }
        }
    }

    fn on_event(&mut self, slot: u32, event: Event<'_>) {
        match event {
            Event::Text(t) => self.on_message(slot, t.as_bytes()),
            Event::Binary(b) => self.on_message(slot, b),
            // No frame may follow our Close, a Pong included.
            Event::Ping(p) if self.users[slot as usize].phase() == Phase::Open => {
                let f = self.client_frame(opcode::PONG, p);
                self.queue(slot, f, false);
            }
            Event::Ping(_) => {}
            Event::Pong(_) => {}
            Event::Close(c) => {
                if self.users[slot as usize].phase() == Phase::Closing {
                    // The answer to our Close: done (we close TCP, the server sees EOF).
                    self.abort(slot);
                    return;
                }
                if !self.ending {
                    self.record_error(ErrorKind::ClosedByServer);
                    let id = self.users[slot as usize].user_id;
                    let (code, reason) = c.unwrap_or((1005, ""));
                    self.setup.report_error(
                        ErrorKind::ClosedByServer,
                        format_args!("user {id}: close {code} {reason:?}"),
                    );
                }
                // Echo the code (RFC 6455 §5.5.1), then wait for the server to close TCP.
                let code = match c {
                    Some((code, _)) if crate::ws::close::is_valid_wire_code(code) => code,
                    _ => crate::ws::close::NORMAL,
                };
                let now = self.now();
                self.start_close(slot, code, now);
            }
        }
    }

    /// A masked client frame in a pooled buffer.
    pub(super) fn client_frame(&mut self, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = (self.next_random() as u32).to_ne_bytes();
        let mut out = self.tx_pool.pop().unwrap_or_default();
        out.clear();
        frame::write_frame(&mut out, true, op, Some(mask), payload);
        out
    }

    /// Sends `bytes` after whatever `slot` is already sending.
    pub(super) fn queue(&mut self, slot: u32, bytes: Vec<u8>, data: bool) {
        if self.users[slot as usize].life.ending() {
            return self.recycle(bytes);
        }
        let id = self.tx.insert(TxBuf {
            bytes,
            off: 0,
            data,
        }) as u32;
        let u = &mut self.users[slot as usize];
        if u.tx_head == NO_TX {
            u.tx_head = id;
            self.submit_send(slot);
        } else {
            self.txq.entry(slot).or_default().push_back(id);
        }
    }

    /// Sends queued behind the in-flight one.
    pub(super) fn queued(&self, slot: u32) -> usize {
        self.txq.get(&slot).map_or(0, VecDeque::len)
    }

    fn submit_send(&mut self, slot: u32) {
        let u = &self.users[slot as usize];
        let b = &self.tx[u.tx_head as usize];
        let rest = &b.bytes[b.off as usize..];
        // SAFETY: the bytes live in `self.tx` until this send's completion removes them (or are
        // leaked, not freed, if the engine exits with the send still in flight).
        let e = unsafe { sqe::send(slot, u.gen, rest.as_ptr(), rest.len() as u32) };
        self.submit(slot, Req::Send, e);
    }

    /// The head send completed (the request is already marked done).
    fn on_send(&mut self, slot: u32, res: i32) {
        let u = &self.users[slot as usize];
        let id = u.tx_head;
        debug_assert_ne!(id, NO_TX);
        if res > 0 && !u.life.ending() {
            let b = &mut self.tx[id as usize];
            b.off += res as u32;
            if (b.off as usize) < b.bytes.len() {
                // A short write: send the rest.
                self.submit_send(slot);
                return;
            }
        }
        let b = self.tx.remove(id as usize);
        if res >= 0 && b.data {
            self.cur.s.sent += 1;
        }
        if res > 0 {
            self.cur.s.bytes_sent += b.bytes.len() as u64;
        }
        self.recycle(b.bytes);
        let u = &mut self.users[slot as usize];
        u.tx_head = NO_TX;
        let (state, id) = (u.phase(), u.user_id);
        if res < 0 {
            // EPIPE / ECONNRESET: the peer is gone; ECANCELED: our teardown.
            if res != -libc::ECANCELED && state == Phase::Handshake {
                // The request could not go out: the server is gone before the upgrade.
                let why = std::io::Error::from_raw_os_error(-res);
                self.upgrade_failed(slot, &format!("sending the upgrade request: {why}"));
            } else if res != -libc::ECANCELED && state == Phase::Open && !self.ending {
                self.record_error(ErrorKind::Send);
                self.setup.report_error(
                    ErrorKind::Send,
                    format_args!(
                        "user {id}: send: {}",
                        std::io::Error::from_raw_os_error(-res)
                    ),
                );
            }
            return self.abort(slot);
        }
        if u.life.ending() {
            return;
        }
        let next = self.txq.get_mut(&slot).and_then(VecDeque::pop_front);
        if self.txq.get(&slot).is_some_and(VecDeque::is_empty) {
            self.txq.remove(&slot);
        }
        if let Some(next) = next {
            self.users[slot as usize].tx_head = next;
            self.submit_send(slot);
        }
        let backlog = self.queued(slot);
        let u = &mut self.users[slot as usize];
        if u.has(flag::TX_BLOCKED) && backlog < MAX_QUEUED_SENDS {
            u.clear(flag::TX_BLOCKED);
            if u.phase() == Phase::Open {
                let now = self.now();
                self.advance(slot, now);
            }
        }
    }

    /// Keeps a send buffer for reuse (bounded in count and size).
    fn recycle(&mut self, bytes: Vec<u8>) {
        if self.tx_pool.len() < TX_POOL_MAX && bytes.capacity() <= TX_POOL_MAX_BYTES {
            self.tx_pool.push(bytes);
        }
    }

    /// Queues our Close frame; the user waits for the server's answer (or EOF) until the close
    /// timeout.
    pub(super) fn start_close(&mut self, slot: u32, code: u16, now: u64) {
        if !self.users[slot as usize].life.advance(Phase::Closing) {
            return;
        }
        let payload = crate::ws::close::close_payload(code, "");
        let f = self.client_frame(opcode::CLOSE, &payload);
        self.queue(slot, f, false);
        let timeout = self.setup.close_timeout_ms * 1_000_000;
        self.set_deadline(slot, now + timeout);
    }

    /// Ends the user now: cancel what is in flight; `settle` closes the slot once everything
    /// reported. Idempotent.
    pub(super) fn abort(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        let phase = u.phase();
        let gen = u.gen;
        if !u.life.abort(slot, gen, &mut RingSubmit(&mut self.ring)) {
            return;
        }
        match phase {
            Phase::Connecting | Phase::Handshake => self.connecting -= 1,
            Phase::Open | Phase::Closing => self.open -= 1,
            _ => {}
        }
        u.deadline_ns = 0;
        u.rx = None;
        u.clear(flag::TX_BLOCKED);
        let (session, pc) = (u.session, u.pc);
        self.cur.s.finished += 1;
        if self.setup.rendezvous.is_before(session, pc) {
            self.setup.rendezvous.miss();
            self.cur.s.rendezvous_missed += 1;
        }
        // Queued sends never started: drop them (the in-flight one is freed by its completion).
        if let Some(q) = self.txq.remove(&slot) {
            for id in q {
                let b = self.tx.remove(id as usize);
                self.recycle(b.bytes);
            }
        }
        self.settle(slot);
    }

    fn on_close(&mut self, token: Token) {
        // EBADF means the socket was never created (its set-up failed): the slot is free either way.
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        u.life.released();
        let gen = u.gen.wrapping_add(1);
        *u = User::free(gen);
        self.free.push(slot);
        self.live -= 1;
    }
}
