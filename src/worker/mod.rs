//! A worker: one thread, one io_uring, one listener, and the connections accepted on it.
//!
//! The worker owns everything it touches; other threads reach it only through its `Inbox`. The loop
//! is: submit and wait for at least one completion, reap and handle the batch, hand receive buffers
//! back to the kernel, retry receives that found the buffer ring empty. Connection logic lives in
//! `net/` as further `impl Worker` blocks (the connection lifecycle itself in `lifecycle`); this
//! file holds the loop, the dispatch, the timers and the exit.

pub mod drain;
pub mod inbox;
pub mod latency;
pub mod report;
pub mod timer;

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{cqueue, types::Timespec};

use crate::config::Config;
use crate::hub::Hub;
use crate::net::accept::{AcceptState, Acceptor, Pause};
use crate::net::conn::{Conn, Phase};
use crate::ring::bufring::BufRing;
use crate::ring::token::{Op, Token};
use crate::ring::{sqe, Cqe, Reactor, Ring};
use crate::topics::local::LocalTopics;
use crate::ws;
use inbox::{Inbox, Msg};
use timer::{Entry, Verdict, Wheel};

/// Buffer group id of the worker's provided-buffer ring (one group per ring).
pub(crate) const BGID: u16 = 0;

/// How long the exit waits for the kernel to report every cancelled request before it leaks their
/// memory instead (a cancel completes in microseconds; this only bounds a wedged kernel).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Worker-level requests in flight (bits of `Worker::globals`).
mod global {
    /// The timer tick's timeout.
    pub const TICK: u8 = 1 << 0;
    /// The inbox eventfd's multishot poll.
    pub const INBOX: u8 = 1 << 1;
}

/// A frame being sent: shared by every connection whose send queue holds its id.
pub struct Frame {
    pub bytes: Bytes,
    /// Connections that still have to send it (head or queued).
    pub refs: u32,
}

/// Per-worker counters: plain integers, no atomics, read by the worker itself.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub accepted: u64,
    pub closed: u64,
    pub upgrades: u64,
    pub http_responses: u64,
    pub protocol_errors: u64,
    pub handshake_timeouts: u64,
    pub idle_timeouts: u64,
    pub send_queue_overflows: u64,
    /// Members closed (1013) because their topic lost a broadcast to a full inbox.
    pub inbox_overflow_closes: u64,
    pub recv_enobufs: u64,
    pub accept_table_full: u64,
    pub messages_in: u64,
    /// Frames (and HTTP responses, which share the send path) whose last byte the kernel took,
    /// counted at the send's completion.
    pub frames_out: u64,
    /// Send calls (`SEND` or a coalesced `SENDMSG`) the frames went out in.
    pub sends: u64,
    /// Loop turns that had nothing left to send and went to wait for completions (returning at
    /// once when some were already there; a batched wait counts once, however many it gathered):
    /// how often the worker runs for its traffic rather than for a sweep.
    pub waits: u64,
    pub joins: u64,
    pub leaves: u64,
    pub broadcasts: u64,
    pub deliveries: u64,
    pub deliveries_dropped: u64,
    pub rate_limited: u64,
    pub joins_refused: u64,
    pub handshakes_refused: u64,
    pub auth_failures: u64,
    pub auth_expired: u64,
    pub per_ip_refused: u64,
    pub memory_pauses: u64,
    /// Connections closed because their input would pass `max_rx_bytes_per_worker`.
    pub rx_budget_closes: u64,
    /// Publish-to-queued time of broadcasts fanned out here (`latency`).
    pub delivery_latency: latency::Histogram,
}

/// Deadlines in ticks, derived once from the config.
pub(crate) struct Ticks {
    handshake: u32,
    idle: u32,
    close: u32,
    /// Quiet time before receive buffers are trimmed (5 s).
    trim: u32,
}

pub struct Worker {
    // Field order matters for Drop: the ring goes first, so the kernel is done with every buffer
    // and frame before they are freed.
    pub(crate) ring: Ring,
    pub(crate) bufs: BufRing,
    pub(crate) id: usize,
    pub(crate) cfg: Arc<Config>,
    pub(crate) ws_limits: ws::Limits,
    pub(crate) http_limits: ws::handshake::Limits,
    /// The listener; `None` once draining.
    pub(crate) listen_fd: Option<OwnedFd>,
    /// Descriptors kept until the ring is gone (a cancelled request may still reference them).
    pub(crate) retired_fds: Vec<OwnedFd>,
    inbox: Arc<Inbox>,
    pub(crate) conns: Vec<Conn>,
    pub(crate) frames: slab::Slab<Frame>,
    pub(crate) wheel: Wheel,
    tick_ts: Box<Timespec>,
    start: Instant,
    pub(crate) now_tick: u32,
    pub(crate) ticks: Ticks,
    /// Connections given frames and not sent to yet, as (slot, generation), oldest first: each
    /// sends them all in one send at the end of a loop turn (`flush_sends`, a bounded slice per turn).
    pub(crate) unflushed: VecDeque<(u32, u32)>,
    /// Receives starved of buffers, as (slot, generation), retried after a refill.
    pub(crate) starved: VecDeque<(u32, u32)>,
    /// Last tick a receive found the buffer ring empty (buffers are trimmed after quiet ticks).
    pub(crate) last_starved_tick: u32,
    pub(crate) accept: Acceptor,
    /// Worker-level requests in flight (`global` bits).
    globals: u8,
    /// Set at exit: completions are still handled, but nothing is re-armed.
    exiting: bool,
    pub(crate) live: u32,
    /// Size of the fixed-file table: the most connections this worker can hold.
    pub(crate) table_slots: u32,
    /// Connections in the Handshake state (bounded by `max_handshakes_per_worker`).
    pub(crate) handshaking: u32,
    pub(crate) drain: Option<drain::Drain>,
    pub(crate) stats: Stats,
    expired: Vec<Entry>,
    msgs: Vec<Msg>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) topics: LocalTopics,
    pub(crate) audience: Vec<(usize, u32)>,
    pub(crate) members_scratch: Vec<u32>,
    /// Per-connection auth state, by slot (empty unless auth is configured).
    pub(crate) auth_slots: Vec<crate::net::auth::ConnAuth>,
    pub(crate) claim_sets: crate::net::auth::ClaimSets,
    /// Peer addresses of connections, and buffers of `SO_PEERNAME` reads in flight (both only
    /// when `max_connections_per_ip` is set).
    pub(crate) peer_ips: std::collections::HashMap<u32, std::net::IpAddr>,
    pub(crate) peer_bufs: std::collections::HashMap<u32, Box<libc::sockaddr_storage>>,
    /// Receive memory held for incomplete input, bounded by `max_rx_bytes_per_worker`.
    pub(crate) rx_budget: crate::net::rx_budget::RxBudget,
    pub(crate) presence: crate::net::presence::WorkerPresence,
}

/// What a worker needs from the thread that starts it.
pub struct WorkerSetup {
    pub id: usize,
    pub cfg: Arc<Config>,
    pub listener: OwnedFd,
    pub inbox: Arc<Inbox>,
    /// Fixed-file table size (already capped by RLIMIT_NOFILE).
    pub table_slots: u32,
    pub hub: Arc<Hub>,
}

fn ms_to_ticks(ms: u64, tick_ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(tick_ms)).unwrap_or(u32::MAX / 2)
}

impl Worker {
    /// Builds the ring and registers its resources. Must run on the worker's own thread.
    pub fn new(setup: WorkerSetup) -> io::Result<Self> {
        let WorkerSetup {
            id,
            cfg,
            listener,
            inbox,
            table_slots,
            hub,
        } = setup;
        let ring = Ring::new(&cfg)?;
        ring.uring.submitter().register_files_sparse(table_slots)?;
        let bufs = BufRing::new(
            &ring.uring.submitter(),
            cfg.recv_buffers,
            cfg.recv_buffer_bytes,
            BGID,
        )?;
        let tick_ms = cfg.timer_tick_ms;
        let ticks = Ticks {
            handshake: ms_to_ticks(cfg.handshake_timeout_ms, tick_ms),
            idle: ms_to_ticks(cfg.idle_timeout_ms, tick_ms),
            close: ms_to_ticks(cfg.close_timeout_ms, tick_ms),
            trim: ms_to_ticks(5_000, tick_ms),
        };
        // The wheel spans the longest deadline so most entries are filed once.
        let span = ticks
            .idle
            .max(ticks.handshake)
            .max(ticks.close)
            .clamp(2, 4096) as usize
            + 1;
        let tick_ts = Box::new(
            Timespec::new()
                .sec(tick_ms / 1000)
                .nsec(((tick_ms % 1000) * 1_000_000) as u32),
        );
        let ws_limits = ws::Limits {
            max_frame_bytes: cfg.max_frame_bytes,
            max_message_bytes: cfg.max_message_bytes,
            max_fragments: cfg.max_fragments,
        };
        let rx_budget = crate::net::rx_budget::RxBudget::new(cfg.max_rx_bytes_per_worker);
        let http_limits = ws::handshake::Limits {
            max_request_bytes: cfg.max_handshake_bytes,
            max_headers: cfg.max_handshake_headers,
        };
        Ok(Self {
            ring,
            bufs,
            id,
            ws_limits,
            http_limits,
            cfg,
            listen_fd: Some(listener),
            retired_fds: Vec::new(),
            inbox,
            // Reserved, not touched: pages become resident only as slots are used.
            conns: Vec::with_capacity(table_slots as usize),
            frames: slab::Slab::new(),
            wheel: Wheel::new(span),
            tick_ts,
            start: Instant::now(),
            now_tick: 0,
            ticks,
            starved: VecDeque::new(),
            unflushed: VecDeque::new(),
            last_starved_tick: 0,
            accept: Acceptor::default(),
            globals: 0,
            exiting: false,
            live: 0,
            table_slots,
            handshaking: 0,
            drain: None,
            stats: Stats::default(),
            expired: Vec::new(),
            msgs: Vec::new(),
            hub,
            topics: LocalTopics::default(),
            audience: Vec::new(),
            members_scratch: Vec::new(),
            auth_slots: Vec::new(),
            claim_sets: Default::default(),
            peer_ips: Default::default(),
            peer_bufs: Default::default(),
            rx_budget,
            presence: Default::default(),
        })
    }

    /// Runs until stopped and every connection is closed (or the stop deadline passes).
    pub fn run(mut self) -> io::Result<Stats> {
        self.arm_tick();
        self.arm_inbox();
        self.start_accepting();
        let result = self.serve();
        self.exit();
        result.map(|()| self.stats.clone())
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            // With sends still to flush, the turn takes what completed and goes on without waiting.
            let entered = if self.unflushed.is_empty() {
                self.stats.waits += 1;
                self.ring.submit_and_sleep(self.cfg.wake_batch_us)
            } else {
                // A sweep left: first let any other runnable thread on this core have it (see
                // `yield_core`), then take what completed without waiting.
                yield_core();
                self.ring.submit_and_poll().map(|_| ())
            };
            match entered {
                Ok(_) => {}
                // EINTR: a signal; EBUSY: completions must be reaped before more can be submitted.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.now_tick = self.clock_tick();
            crate::ring::reap(self);
            self.flush_sends();
            self.inbox.take_fault()?;
            self.ring.flush_backlog();
            self.bufs.refill();
            self.retry_starved();
            if self.drained() {
                return Ok(());
            }
        }
    }

    /// The ring goes away only after the kernel has let go of every request: cancel them all and
    /// reap until nothing is in flight, so no frame, receive buffer or address box is freed while
    /// the kernel may still read or write it. If that does not happen in time, that memory is
    /// leaked on purpose (the process is ending anyway): freeing it would be a use-after-free.
    fn exit(&mut self) {
        self.exiting = true;
        if self.listen_fd.is_some() {
            self.stop_accepting();
        }
        // Connections left (a drain past its deadline, a failed ring): torn down like any other,
        // so each slot is closed once its requests reported.
        for slot in 0..self.conns.len() as u32 {
            self.abort(slot);
        }
        if !crate::ring::quiesce(self, QUIESCE_TIMEOUT) {
            tracing::error!(
                worker = self.id,
                "requests still in flight at exit; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.frames));
            std::mem::forget(std::mem::take(&mut self.peer_bufs));
            self.bufs.leak();
        }
    }

    fn arm_tick(&mut self) {
        // SAFETY: the timespec is boxed in `self.tick_ts` for the worker's whole life, and the
        // kernel copies it when the entry is submitted.
        let entry = unsafe { sqe::tick(&*self.tick_ts) };
        self.globals |= global::TICK;
        self.ring.push(entry);
    }

    fn arm_inbox(&mut self) {
        self.globals |= global::INBOX;
        self.ring.push(sqe::poll_fd(self.inbox.fd()));
    }

    fn clock_tick(&self) -> u32 {
        let ms = self.start.elapsed().as_millis() as u64;
        u32::try_from(ms / self.cfg.timer_tick_ms).unwrap_or(u32::MAX)
    }

    fn on_tick(&mut self) {
        self.globals &= !global::TICK;
        if self.exiting {
            return;
        }
        self.arm_tick();
        self.now_tick = self.clock_tick();
        let now = self.now_tick;
        let conns = &mut self.conns;
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(
            now,
            |e| match conns.get_mut(e.slot as usize) {
                Some(c) => {
                    let mut mark = timer::Mark {
                        gen: c.gen,
                        in_wheel: c.life.has_timer(),
                        deadline_tick: c.deadline_tick,
                    };
                    let verdict = timer::judge(e, &mut mark, now);
                    if !mark.in_wheel {
                        c.life.set_timer(false);
                    }
                    verdict
                }
                None => Verdict::Stale,
            },
            &mut expired,
        );
        for e in expired.drain(..) {
            self.on_deadline(e.slot);
        }
        self.expired = expired;
        self.resume_accepting(Pause::Error);
        self.check_memory();
        self.drain_step();
        // A few quiet seconds after a burst: give the burst's receive buffers back.
        if self.now_tick.saturating_sub(self.last_starved_tick) >= self.ticks.trim {
            self.bufs.trim();
            self.last_starved_tick = self.now_tick;
        }
    }

    fn on_deadline(&mut self, slot: u32) {
        match self.conns[slot as usize].phase() {
            Phase::Handshake => {
                self.stats.handshake_timeouts += 1;
                tracing::debug!(worker = self.id, slot, "handshake timeout");
                self.abort(slot);
            }
            Phase::Open
                if self
                    .token_exp_tick(slot)
                    .is_some_and(|t| t <= self.now_tick) =>
            {
                self.stats.auth_expired += 1;
                tracing::debug!(worker = self.id, slot, "token expired");
                self.close_with(slot, ws::close::POLICY_VIOLATION, "token expired");
            }
            Phase::Open => {
                self.stats.idle_timeouts += 1;
                tracing::debug!(worker = self.id, slot, "idle timeout");
                self.close_with(slot, ws::close::GOING_AWAY, "idle timeout");
            }
            // The close frame could not be sent, or the peer never closed its side.
            Phase::Closing | Phase::HalfClosed => self.abort(slot),
            Phase::Free | Phase::Connecting | Phase::Aborting | Phase::Releasing => {}
        }
    }

    /// Moves a connection's deadline `kind` ticks from now and files it in the wheel if absent.
    pub(crate) fn set_deadline(&mut self, slot: u32, kind: Deadline) {
        let ticks = match kind {
            Deadline::Handshake => self.ticks.handshake,
            Deadline::Idle => self.ticks.idle,
            Deadline::Close => self.ticks.close,
        };
        let mut deadline = self.now_tick.saturating_add(ticks.max(1));
        if let (Deadline::Idle, Some(exp)) = (kind, self.token_exp_tick(slot)) {
            // An open connection's deadline is also its token's expiry.
            deadline = deadline.min(exp);
        }
        let c = &mut self.conns[slot as usize];
        let mut mark = timer::Mark {
            gen: c.gen,
            in_wheel: c.life.has_timer(),
            deadline_tick: c.deadline_tick,
        };
        self.wheel.schedule(slot, &mut mark, deadline);
        c.deadline_tick = mark.deadline_tick;
        if mark.in_wheel {
            c.life.set_timer(true);
        }
    }

    /// Idle deadline refresh on activity: no wheel work, just a later deadline.
    pub(crate) fn touch(&mut self, slot: u32) {
        let mut deadline = self.now_tick.saturating_add(self.ticks.idle);
        if let Some(exp) = self.token_exp_tick(slot) {
            deadline = deadline.min(exp);
        }
        self.conns[slot as usize].deadline_tick = deadline;
    }

    fn on_inbox(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.globals &= !global::INBOX;
            if !self.exiting {
                self.arm_inbox();
            }
        }
        let mut msgs = std::mem::take(&mut self.msgs);
        let lost = self.inbox.take_all(&mut msgs);
        for msg in msgs.drain(..) {
            match msg {
                Msg::Drain { drain_ms } => self.begin_drain(drain_ms),
                Msg::Report(reply) => {
                    let _ = reply.send(self.report());
                }
                Msg::Broadcast(b) => self.deliver(&b),
            }
        }
        self.msgs = msgs;
        if !lost.is_empty() {
            // After the kept broadcasts: a member gets what was kept, then the close.
            self.close_lost(&lost);
        }
    }

    /// Closes (1013, try again later) the members of the topics whose broadcasts were lost (the
    /// full inbox dropped them, or the bus did before they reached it: `Inbox::lose_topic`), or
    /// every joined connection when too many topics lost one: none of them may go on
    /// as if it had every broadcast, or a presence list a dropped diff made wrong. They reconnect
    /// and rejoin, as after a slow-consumer close.
    fn close_lost(&mut self, lost: &inbox::Lost) {
        let mut slots = Vec::new();
        if lost.all {
            slots.extend((0..self.conns.len() as u32).filter(|&s| {
                let c = &self.conns[s as usize];
                c.is_live() && !c.chans.is_empty()
            }));
        } else {
            for topic in &lost.topics {
                self.topics.members_of(topic, &mut slots);
            }
            slots.sort_unstable();
            slots.dedup();
        }
        if slots.is_empty() {
            // None of the topics has a member on this worker.
            return;
        }
        tracing::warn!(
            worker = self.id,
            topics = lost.topics.len(),
            all = lost.all,
            closing = slots.len(),
            "closing the members of topics that lost a broadcast (1013)"
        );
        for slot in slots {
            self.stats.inbox_overflow_closes += 1;
            self.close_with(slot, ws::close::TRY_AGAIN_LATER, "broadcasts lost");
        }
    }

    /// `max_memory_bytes`: past it, stop accepting (existing connections are served); resume below
    /// 90% of it. One read of `/proc/self/statm` per tick, only when the limit is set.
    fn check_memory(&mut self) {
        let limit = self.cfg.max_memory_bytes;
        if limit == 0 {
            return;
        }
        let rss = crate::supervise::resident_bytes();
        if rss > limit && self.pause_accepting(Pause::Memory) {
            tracing::warn!(
                worker = self.id,
                rss,
                limit,
                "memory limit reached; new connections wait in the backlog"
            );
            self.stats.memory_pauses += 1;
        } else if rss < limit / 10 * 9 && self.resume_accepting(Pause::Memory) {
            tracing::info!(
                worker = self.id,
                rss,
                limit,
                "memory back under the limit; accepting again"
            );
        }
    }

    /// The state of the multishot accept.
    pub fn accept_state(&self) -> AcceptState {
        self.accept.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Reactor for Worker {
    fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    fn dispatch(&mut self, (user_data, res, flags): Cqe) {
        let Some(token) = Token::decode(user_data) else {
            tracing::error!(
                worker = self.id,
                user_data,
                res,
                "completion with an unknown token"
            );
            return;
        };
        match token.op {
            Op::Accept => self.on_accept(token.gen, res, flags),
            Op::Poll | Op::Recv | Op::Send | Op::Shutdown | Op::PeerName | Op::Close => {
                self.on_conn_completion(token, res, flags)
            }
            // The count of cancelled requests, or ENOENT when none was pending: each cancelled
            // request reports itself, so nothing to do here.
            Op::Cancel => {}
            Op::Tick => self.on_tick(),
            Op::Inbox => self.on_inbox(flags),
            // Client-side set-up ops belong to the load generator; a gateway never issues them.
            Op::Socket | Op::SockOpt | Op::Bind | Op::Connect => {
                tracing::error!(worker = self.id, ?token, res, "client op on a gateway ring");
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.globals != 0
            || self.accept.in_flight()
            || self.conns.iter().any(|c| c.phase() != Phase::Free)
    }
}

/// Which deadline a connection is under.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    Handshake,
    Idle,
    Close,
}

/// Gives this core to another runnable thread, if one is queued on it, before the next slice of a
/// sweep. The kernel here runs without preemption inside system calls (`Dynamic Preempt: none`),
/// so a thread woken on this core while the worker is in `io_uring_enter` waits for that call to
/// return; and a thread woken between two slices would still wait for the scheduler's tick. The
/// sweep's remaining sends lose nothing by running a little later — their members only gather more
/// frames per send — while the thread waiting may be the control thread, the bus link, the
/// kernel's `ksoftirqd`, or (on a shared box) the very clients being sent to. With nothing else
/// runnable the call returns at once (~1 µs against a slice's ~0.6 ms of sends).
fn yield_core() {
    // SAFETY: `sched_yield` takes no arguments and touches no memory of ours.
    unsafe { libc::sched_yield() };
}
