//! A user's connection: the set-up chain, the upgrade, receiving, sending, and teardown.
//!
//! Every errno a completion can carry has a named outcome here. A slot is reused only after every
//! request on it has reported: teardown cancels what is in flight, waits for each cancelled
//! request's completion, then closes the slot; the generation bump makes late completions and
//! timers of the previous user harmless.

use std::collections::VecDeque;

use io_uring::cqueue;

use super::user::{flag, Rx, State, User, NO_TX};
use super::{Engine, TxBuf, BGID, TX_POOL_MAX, TX_POOL_MAX_BYTES};
use crate::load::scenario::{Step, Vars};
use crate::load::stats::ErrorKind;
use crate::load::upgrade;
use crate::ring::sqe;
use crate::ring::token::{Op, Token};
use crate::ws::frame::{self, opcode};
use crate::ws::{Decoded, Event, MessageReader, Role};

/// Queued sends per user past which its session pauses until they drain: a scenario that sends
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
            .filter(|u| u.gen == token.gen && u.state != State::Free)
    }

    /// Starts user `id` in `slot`: one linked chain socket → options → bind → connect.
    pub(super) fn start_user(&mut self, slot: u32, id: u64, now: u64) {
        let id = id + self.setup.first_user_id;
        let session = self.setup.scenario.session_for(id);
        let u = &mut self.users[slot as usize];
        debug_assert_eq!(u.state, State::Free);
        let gen = u.gen;
        *u = User::free(gen);
        u.user_id = id as u32;
        u.session = session;
        u.state = State::Connecting;
        u.set(flag::CONNECT_INFLIGHT);
        self.connecting += 1;
        self.live += 1;
        self.cur.s.arrivals += 1;
        if self.cur.s.first_arrival_us == 0 {
            self.cur.s.first_arrival_us = (now / 1000).max(1);
        }
        let timeout = self.setup.connect_timeout_ms * 1_000_000;
        self.set_deadline(slot, now + timeout);
        let setup = self.setup.clone();
        self.push(sqe::socket_direct(slot, gen));
        if setup.sockopt_supported {
            self.push(sqe::set_int_option(
                slot,
                gen,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &ONE,
            ));
        }
        if !setup.sources.is_empty() {
            let src = &setup.sources[(id % setup.sources.len() as u64) as usize];
            // The port is chosen at connect time, per destination: each source address gives
            // a full ephemeral range towards each server address.
            self.push(sqe::set_int_option(
                slot,
                gen,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &ONE,
            ));
            self.push(sqe::bind(slot, gen, src));
        }
        self.push(sqe::connect(slot, gen, &setup.dest));
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

    pub(super) fn on_connect(&mut self, token: Token, res: i32) {
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        u.clear(flag::CONNECT_INFLIGHT);
        let state = u.state;
        if state != State::Connecting {
            // Aborted meanwhile (timeout, end of run): finish the teardown.
            self.maybe_close_fd(slot);
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
        u.state = State::Handshake;
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
        let u = &mut self.users[slot as usize];
        u.set(flag::POLL_ARMED);
        let e = sqe::poll_readable(slot, u.gen);
        self.push(e);
    }

    fn start_recv(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        if u.has(flag::RECV_INFLIGHT) {
            u.set(flag::RECV_AGAIN);
            return;
        }
        u.set(flag::RECV_INFLIGHT);
        u.clear(flag::RECV_AGAIN);
        let e = sqe::recv_once(slot, u.gen, BGID);
        self.push(e);
    }

    pub(super) fn on_poll(&mut self, token: Token, res: i32, flags: u32) {
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        if !cqueue::more(flags) {
            u.clear(flag::POLL_ARMED);
        }
        if res < 0 || !u.receiving() {
            // ECANCELED (our teardown) or a dead socket, which the receive would report anyway.
            if u.receiving() {
                self.abort(slot);
            } else {
                self.maybe_close_fd(slot);
            }
            return;
        }
        // POLLIN, POLLHUP or POLLERR: the receive tells which.
        self.start_recv(slot);
        if !self.users[slot as usize].has(flag::POLL_ARMED) {
            self.arm_poll(slot);
        }
    }

    pub(super) fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        u.clear(flag::RECV_INFLIGHT);
        let bid = cqueue::buffer_select(flags);
        if res > 0 {
            let Some(bid) = bid else {
                say!("ringgate load: receive completed without a buffer");
                self.abort(slot);
                return;
            };
            self.bufs.taken(bid);
            let len = res as usize;
            // Copied out so the buffer goes back at once and the handlers can borrow the engine.
            let mut data = std::mem::take(&mut self.rxbuf);
            data.clear();
            data.extend_from_slice(self.bufs.filled(bid, len));
            self.bufs.give_back(bid);
            self.cur.s.bytes_received += len as u64;
            self.on_bytes(slot, &mut data);
            self.rxbuf = data;
            let u = &self.users[slot as usize];
            let again = u.has(flag::RECV_AGAIN)
                || cqueue::sock_nonempty(flags)
                || len == self.bufs.buf_bytes() as usize;
            if u.receiving() && again {
                self.start_recv(slot);
            } else {
                self.maybe_close_fd(slot);
            }
            return;
        }
        if let Some(bid) = bid {
            self.bufs.taken(bid);
            self.bufs.give_back(bid);
        }
        let state = self.users[slot as usize].state;
        match -res {
            // EOF. After our Close it is the normal end; before, the server dropped us.
            0 => {
                if state == State::Open || state == State::Handshake {
                    self.disconnected(
                        slot,
                        "connection closed by the server without a Close frame",
                    );
                }
                self.abort(slot);
            }
            // The ring ran dry: the data waits in the socket; retried once buffers are back.
            libc::ENOBUFS => {
                self.bufs.starved();
                let u = &mut self.users[slot as usize];
                if !u.has(flag::STARVED) {
                    u.set(flag::STARVED);
                    self.starved.push_back(slot);
                }
            }
            // A spurious wake-up (MSG_DONTWAIT): nothing to read.
            libc::EAGAIN => {
                if self.users[slot as usize].has(flag::RECV_AGAIN) {
                    self.start_recv(slot);
                } else {
                    self.maybe_close_fd(slot);
                }
            }
            // Our teardown.
            libc::ECANCELED => self.maybe_close_fd(slot),
            // ECONNRESET and friends.
            e => {
                if state == State::Open || state == State::Handshake {
                    let msg = std::io::Error::from_raw_os_error(e).to_string();
                    self.disconnected(slot, &msg);
                }
                self.abort(slot);
            }
        }
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
            let Some(slot) = self.starved.pop_front() else {
                break;
            };
            let u = &mut self.users[slot as usize];
            u.clear(flag::STARVED);
            if u.receiving() {
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
        if self.users[slot as usize].state == State::Handshake {
            match self.on_response(slot, &input) {
                Some(n) => off = n,
                None => {
                    // Incomplete head (kept) or failed upgrade (user aborted, stash dropped).
                    if self.users[slot as usize].state == State::Handshake {
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
                u.state = State::Open;
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
            Event::Ping(p) if self.users[slot as usize].state == State::Open => {
                let f = self.client_frame(opcode::PONG, p);
                self.queue(slot, f, false);
            }
            Event::Ping(_) => {}
            Event::Pong(_) => {}
            Event::Close(c) => {
                if self.users[slot as usize].state == State::Closing {
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
        // The bytes live in `self.tx` until this send's completion removes them.
        let e = sqe::send(slot, u.gen, rest.as_ptr(), rest.len() as u32);
        self.push(e);
    }

    pub(super) fn on_send(&mut self, token: Token, res: i32) {
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        let id = u.tx_head;
        debug_assert_ne!(id, NO_TX);
        if res >= 0 {
            let b = &mut self.tx[id as usize];
            b.off += res as u32;
            if (b.off as usize) < b.bytes.len() && res > 0 {
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
        if self.tx_pool.len() < TX_POOL_MAX && b.bytes.capacity() <= TX_POOL_MAX_BYTES {
            self.tx_pool.push(b.bytes);
        }
        let next = self.txq.get_mut(&slot).and_then(VecDeque::pop_front);
        if self.txq.get(&slot).is_some_and(VecDeque::is_empty) {
            self.txq.remove(&slot);
        }
        let u = &mut self.users[slot as usize];
        u.tx_head = next.unwrap_or(NO_TX);
        let (state, id) = (u.state, u.user_id);
        if res < 0 {
            // EPIPE / ECONNRESET: the peer is gone; ECANCELED: our teardown.
            if res != -libc::ECANCELED
                && matches!(state, State::Open | State::Handshake)
                && !self.ending
            {
                self.record_error(ErrorKind::Send);
                self.setup.report_error(
                    ErrorKind::Send,
                    format_args!(
                        "user {id}: send: {}",
                        std::io::Error::from_raw_os_error(-res)
                    ),
                );
            }
            self.abort(slot);
            self.maybe_close_fd(slot);
            return;
        }
        if next.is_some() {
            // `abort` drops the backlog, so a user with one is still sending.
            self.submit_send(slot);
        }
        let backlog = self.queued(slot);
        let u = &mut self.users[slot as usize];
        if u.has(flag::TX_BLOCKED) && backlog < MAX_QUEUED_SENDS {
            u.clear(flag::TX_BLOCKED);
            if u.state == State::Open {
                let now = self.now();
                self.advance(slot, now);
            }
        }
        self.maybe_close_fd(slot);
    }

    /// Queues our Close frame; the user waits for the server's answer (or EOF) until the close
    /// timeout.
    pub(super) fn start_close(&mut self, slot: u32, code: u16, now: u64) {
        if self.users[slot as usize].state != State::Open {
            return;
        }
        self.users[slot as usize].state = State::Closing;
        let payload = crate::ws::close::close_payload(code, "");
        let f = self.client_frame(opcode::CLOSE, &payload);
        self.queue(slot, f, false);
        let timeout = self.setup.close_timeout_ms * 1_000_000;
        self.set_deadline(slot, now + timeout);
    }

    /// Ends the user now: cancel what is in flight, close the slot once everything reported.
    pub(super) fn abort(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        match u.state {
            State::Free | State::Aborting | State::ClosingFd => return,
            State::Connecting | State::Handshake => self.connecting -= 1,
            State::Open | State::Closing => self.open -= 1,
        }
        u.state = State::Aborting;
        u.deadline_ns = 0;
        u.rx = None;
        u.clear(flag::TX_BLOCKED);
        self.cur.s.finished += 1;
        // Queued sends never started: drop them (the in-flight one is freed by its completion).
        if let Some(q) = self.txq.remove(&slot) {
            for id in q {
                let b = self.tx.remove(id as usize);
                if self.tx_pool.len() < TX_POOL_MAX {
                    self.tx_pool.push(b.bytes);
                }
            }
        }
        let u = &self.users[slot as usize];
        if u.busy() {
            // One cancel per request, by its token: cancelling by fd walks every armed poll of the
            // ring (O(N²) when many users finish at once).
            let gen = u.gen;
            let ops = [
                (u.has(flag::POLL_ARMED), Op::Poll),
                (u.has(flag::RECV_INFLIGHT), Op::Recv),
                (u.has(flag::CONNECT_INFLIGHT), Op::Connect),
                (u.tx_head != NO_TX, Op::Send),
            ];
            for (inflight, op) in ops {
                if inflight {
                    self.push(sqe::cancel_op(op, slot, gen));
                }
            }
        } else {
            self.maybe_close_fd(slot);
        }
    }

    /// Closes the slot of an aborting user once nothing is in flight on it.
    pub(super) fn maybe_close_fd(&mut self, slot: u32) {
        let u = &mut self.users[slot as usize];
        if u.state != State::Aborting || u.busy() {
            return;
        }
        u.state = State::ClosingFd;
        let e = sqe::close_slot(slot, u.gen);
        self.push(e);
    }

    pub(super) fn on_close(&mut self, token: Token) {
        // EBADF means the socket was never created (its set-up failed): the slot is free either way.
        let slot = token.slot;
        let Some(u) = self.user_for(token) else {
            return;
        };
        debug_assert_eq!(u.state, State::ClosingFd);
        let gen = u.gen.wrapping_add(1);
        *u = User::free(gen);
        self.free.push(slot);
        self.live -= 1;
    }
}
