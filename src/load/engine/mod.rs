//! A load worker: one thread, one io_uring, and the users it started.
//!
//! The same shape as a gateway worker, seen from the other end: sockets are created by the ring
//! straight into the fixed-file table (`ring::sqe::socket_direct`, no fd-table entry), connected
//! by a linked chain, wait for data with a multishot poll (~256 B of kernel memory, no buffer) and
//! read into the worker's provided-buffer ring. Nothing is shared with other workers but the
//! [`Setup`] (read-only but for the stop flag, the printed-error counts and the rendezvous count);
//! each second the worker sends a [`Sample`] to its process.
//!
//! The loop: start the users that are due, fire due timers, let the users waiting at a completed
//! rendezvous go on, emit samples, then enter the kernel once — submitting everything queued and
//! waiting for a completion or the next due time.

pub mod arrivals;
mod conn;
pub mod rendezvous;
mod steps;
pub mod user;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hdrhistogram::Histogram;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::IoUring;

use crate::load::scenario::Scenario;
use crate::load::stats::{self, ErrorKind, Sample, ERROR_KINDS, ERROR_NAMES};
use crate::ring::bufring::BufRing;
use crate::ring::token::{Op, Token};
use crate::ring::{Cqe, Reactor, Ring};
use crate::ws;
use arrivals::Arrivals;
use user::{Phase, User};

/// Buffer group of the worker's receive buffers.
const BGID: u16 = 0;
/// Arrivals started per loop turn at most, so a burst cannot starve completions.
const MAX_ARRIVALS_PER_TURN: usize = 512;
/// Longest kernel wait, so the stop flag is seen within this time.
const MAX_WAIT_NS: u64 = 100_000_000;
/// Completion queue size. Every user can have a few completions pending at once (connect, poll,
/// receive, send); more than fit overflow into the kernel's list, which makes submissions fail with
/// `EBUSY` until we reap. 32768 × 16 B = 512 KiB per worker.
const CQ_ENTRIES: u32 = 32768;
/// How long the exit waits for the kernel to report every cancelled request before it leaks the
/// memory they point to instead.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Errors of one kind printed per process; later ones are only counted.
const ERRORS_PRINTED_PER_KIND: u32 = 3;

/// `CLOCK_MONOTONIC` in ns: the clock of `{ts_ns}`, the same in every process of the box.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, owned struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What every worker of a process reads and nobody writes (after start).
pub struct Setup {
    pub scenario: Scenario,
    /// The server.
    pub dest: libc::sockaddr_in,
    /// `Host` header value (`host[:port]` of the URL).
    pub host: String,
    /// Path and query of the URL, for `connect` steps without their own.
    pub default_target: String,
    /// This process's source addresses and which one each user binds; none: the kernel picks.
    pub sources: crate::load::sources::SourceMap,
    /// Seed of the `Sec-WebSocket-Key`s and masks.
    pub seed: u64,
    /// Added to every user id (`--first-user-id`).
    pub first_user_id: u64,
    /// This process's index (`{proc}`).
    pub proc_index: u32,
    /// Workers over all processes (`G` of `arrivals`).
    pub total_workers: u32,
    /// TCP connect + upgrade must finish within this.
    pub connect_timeout_ms: u64,
    /// After our Close, how long to wait for the server's.
    pub close_timeout_ms: u64,
    /// `CLOCK_MONOTONIC` at the start of the run, ns.
    pub start_mono_ns: u64,
    /// Set by the signal handler thread: end the run now (clean close).
    pub stop: Arc<AtomicBool>,
    pub ws_limits: ws::Limits,
    pub recv_buffers: u16,
    pub recv_buffer_bytes: u32,
    /// `IORING_OP_URING_CMD` setsockopt works here (6.7+): set `TCP_NODELAY` on every socket.
    pub sockopt_supported: bool,
    /// Errors printed so far, per kind (bounded output).
    pub printed: [AtomicU32; ERROR_KINDS],
    /// The scenario's rendezvous: its count and release, shared by the workers.
    pub rendezvous: rendezvous::Rendezvous,
}

impl Setup {
    /// Prints the first few errors of each kind, then stays quiet (they are still counted).
    pub fn report_error(&self, kind: ErrorKind, detail: std::fmt::Arguments<'_>) {
        let n = self.printed[kind as usize].fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_PRINTED_PER_KIND {
            say!("ringgate load: {}: {detail}", ERROR_NAMES[kind as usize]);
        } else if n == ERRORS_PRINTED_PER_KIND {
            say!(
                "ringgate load: {}: further errors of this kind are counted, not printed",
                ERROR_NAMES[kind as usize]
            );
        }
    }
}

/// What a worker tells its process.
pub enum Report {
    /// One second of worker `.0`.
    Sample(usize, Box<Sample>),
    /// Worker `.0` ended; `Some` says why it failed.
    Done(usize, Option<String>),
}

/// What one worker is given.
pub struct WorkerPlan {
    /// Index among this process's workers.
    pub local_index: usize,
    /// Index over all processes' workers.
    pub global_index: u32,
    /// Fixed-file table size (≤ the soft `RLIMIT_NOFILE`).
    pub table_slots: u32,
}

/// A buffer being sent.
struct TxBuf {
    bytes: Vec<u8>,
    off: u32,
    /// A data frame (counted in `sent` when written).
    data: bool,
}

/// Send buffers kept for reuse, and the largest one kept: bounds idle memory after a burst.
const TX_POOL_MAX: usize = 1024;
const TX_POOL_MAX_BYTES: usize = 16 << 10;

/// The second's counters being filled, and its histograms.
struct Current {
    s: Sample,
    txn: Vec<Histogram<u64>>,
    delivery: Histogram<u64>,
}

pub struct Engine {
    // Drop order: the ring first, so the kernel is done with every buffer before it is freed.
    ring: Ring,
    bufs: BufRing,
    setup: Arc<Setup>,
    users: Vec<User>,
    free: Vec<u32>,
    table_slots: u32,
    tx: slab::Slab<TxBuf>,
    tx_pool: Vec<Vec<u8>>,
    /// Sends waiting behind a user's in-flight one (only users with a backlog have an entry).
    txq: ahash::AHashMap<u32, VecDeque<u32>>,
    /// `(deadline_ns, slot, gen)`, earliest first; stale entries are skipped when they surface.
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    arrivals: Arrivals,
    /// Receives starved of buffers, as (slot, generation).
    starved: VecDeque<(u32, u32)>,
    /// Users waiting at the rendezvous, as (slot, generation); stale entries are skipped.
    parked: Vec<(u32, u32)>,
    /// Gauges: users between arrival and 101, open WebSockets, slots in use.
    connecting: u64,
    open: u64,
    live: u64,
    cur: Current,
    reports: mpsc::Sender<Report>,
    local_index: usize,
    ending: bool,
    end_deadline_ns: u64,
    /// Reused buffers: rendered payloads and patterns; received bytes.
    scratch: Vec<u8>,
    pattern: Vec<u8>,
    rxbuf: Vec<u8>,
    ts_finder: memchr::memmem::Finder<'static>,
    rng: u64,
}

impl Engine {
    /// Builds the ring and registers its resources; must run on the worker's own thread.
    pub fn new(
        setup: Arc<Setup>,
        plan: &WorkerPlan,
        reports: mpsc::Sender<Report>,
    ) -> io::Result<Self> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(CQ_ENTRIES)
            .build(4096)?;
        let ring = Ring::from_uring(uring);
        ring.uring
            .submitter()
            .register_files_sparse(plan.table_slots)?;
        let bufs = BufRing::new(
            &ring.uring.submitter(),
            setup.recv_buffers,
            setup.recv_buffer_bytes,
            BGID,
        )?;
        let txns = setup.scenario.transactions.len();
        let arrivals = Arrivals::new(
            &setup.scenario,
            u64::from(plan.global_index),
            u64::from(setup.total_workers),
        );
        let needle = format!("\"{}\":", setup.scenario.timestamp_field);
        Ok(Self {
            ring,
            bufs,
            users: Vec::with_capacity(plan.table_slots as usize),
            free: Vec::new(),
            table_slots: plan.table_slots,
            tx: slab::Slab::new(),
            tx_pool: Vec::new(),
            txq: Default::default(),
            timers: BinaryHeap::new(),
            arrivals,
            starved: VecDeque::new(),
            parked: Vec::new(),
            connecting: 0,
            open: 0,
            live: 0,
            cur: Current {
                s: Sample::new(0, txns),
                txn: (0..txns).map(|_| stats::histogram()).collect(),
                delivery: stats::histogram(),
            },
            reports,
            local_index: plan.local_index,
            ending: false,
            end_deadline_ns: 0,
            scratch: Vec::new(),
            pattern: Vec::new(),
            rxbuf: Vec::new(),
            ts_finder: memchr::memmem::Finder::new(needle.as_bytes()).into_owned(),
            rng: setup.seed ^ (u64::from(plan.global_index) << 32) | 1,
            setup,
        })
    }

    /// Run-relative time, ns.
    fn now(&self) -> u64 {
        mono_ns().saturating_sub(self.setup.start_mono_ns)
    }

    /// Runs the whole schedule and the closing; returns when every user is gone (or the close
    /// deadline passed).
    pub fn run(mut self) -> io::Result<()> {
        let duration_ns = self.setup.scenario.duration_ms * 1_000_000;
        loop {
            let now = self.now();
            if !self.ending && (now >= duration_ns || self.setup.stop.load(Ordering::Relaxed)) {
                self.begin_end(now);
            }
            if !self.ending {
                self.start_arrivals(now);
            }
            self.fire_timers(now);
            self.release_parked(now);
            self.emit_samples(now);
            if self.ending && (self.live == 0 || now >= self.end_deadline_ns) {
                self.emit_final(now);
                self.exit();
                return Ok(());
            }
            let wake = self.next_wake(now);
            self.enter(wake.saturating_sub(now))?;
            crate::ring::reap(&mut self);
            self.ring.flush_backlog();
            self.bufs.refill();
            self.retry_starved();
        }
    }

    /// As the gateway's exit: the ring goes only after the kernel let go of every request, or the
    /// memory those requests point to is leaked on purpose.
    fn exit(&mut self) {
        for slot in 0..self.users.len() as u32 {
            self.abort(slot);
        }
        if !crate::ring::quiesce(self, QUIESCE_TIMEOUT) {
            say!("ringgate load: requests still in flight at exit; leaking their buffers");
            std::mem::forget(std::mem::take(&mut self.tx));
            self.bufs.leak();
        }
    }

    /// The earliest of: next arrival, next timer, next sample, the max wait.
    fn next_wake(&mut self, now: u64) -> u64 {
        let mut wake = now + MAX_WAIT_NS;
        if !self.ending {
            if let Some(due) = self.arrivals.next_due_ns() {
                wake = wake.min(due);
            }
        }
        if let Some(Reverse((due, _, _))) = self.timers.peek() {
            wake = wake.min(*due);
        }
        let next_sample = (u64::from(self.cur.s.t) + 1) * 1_000_000_000;
        wake.min(next_sample)
    }

    /// Submits what is queued and waits up to `wait_ns` for a completion. With `DEFER_TASKRUN`
    /// completions are produced only inside this call (it always passes GETEVENTS).
    fn enter(&mut self, wait_ns: u64) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(wait_ns / 1_000_000_000)
            .nsec((wait_ns % 1_000_000_000) as u32);
        let args = SubmitArgs::new().timespec(&ts);
        let want = usize::from(wait_ns > 0);
        match self.ring.uring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            // ETIME: the wait ended without a completion (normal). EINTR: a signal.
            // EBUSY: the CQ is full; we reap next and submit again.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn start_arrivals(&mut self, now: u64) {
        for _ in 0..MAX_ARRIVALS_PER_TURN {
            match self.arrivals.next_due_ns() {
                Some(due) if due <= now => {}
                _ => return,
            }
            let Some(slot) = self.alloc_slot() else {
                // Every slot is in use (some still closing): retry on the next turn.
                return;
            };
            let id = self.arrivals.take();
            self.start_user(slot, id, now);
        }
    }

    fn alloc_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        let next = self.users.len() as u32;
        if next >= self.table_slots {
            return None;
        }
        self.users.push(User::free(0));
        Some(next)
    }

    /// Files a wait for `slot` until `deadline_ns` (run-relative).
    fn set_deadline(&mut self, slot: u32, deadline_ns: u64) {
        let u = &mut self.users[slot as usize];
        u.deadline_ns = deadline_ns.max(1);
        self.timers.push(Reverse((u.deadline_ns, slot, u.gen)));
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((due, slot, gen))) = self.timers.peek() {
            if due > now {
                return;
            }
            self.timers.pop();
            let u = &self.users[slot as usize];
            if u.gen == gen && u.deadline_ns == due && u.phase() != Phase::Free {
                self.users[slot as usize].deadline_ns = 0;
                self.on_deadline(slot, now);
            }
        }
    }

    /// The run is over (duration or Ctrl-C): no more arrivals; every open user closes cleanly.
    fn begin_end(&mut self, now: u64) {
        self.ending = true;
        self.end_deadline_ns = now + (self.setup.close_timeout_ms + 500) * 1_000_000;
        for slot in 0..self.users.len() as u32 {
            match self.users[slot as usize].phase() {
                Phase::Open => self.start_close(slot, ws::close::NORMAL, now),
                Phase::Connecting | Phase::Handshake => self.abort(slot),
                _ => {}
            }
        }
    }

    fn record_error(&mut self, kind: ErrorKind) {
        self.cur.s.errors[kind as usize] += 1;
    }

    fn record_txn(&mut self, txn: usize, latency_ns: u64) {
        self.cur.s.txn_ok[txn] += 1;
        self.cur.txn[txn].saturating_record((latency_ns / 1000).max(1));
    }

    /// Emits a sample for every second that has fully passed.
    fn emit_samples(&mut self, now: u64) {
        while now >= (u64::from(self.cur.s.t) + 1) * 1_000_000_000 {
            self.emit_one();
        }
    }

    fn emit_one(&mut self) {
        let t = self.cur.s.t;
        let txns = self.cur.txn.len();
        let mut s = std::mem::replace(&mut self.cur.s, Sample::new(t + 1, txns));
        s.users = self.open;
        s.connecting = self.connecting;
        for (i, h) in self.cur.txn.iter_mut().enumerate() {
            s.txn_us[i] = stats::sparse(h);
            h.reset();
        }
        s.delivery_us = stats::sparse(&self.cur.delivery);
        self.cur.delivery.reset();
        // The process side may have gone (it stops reading only at exit): nothing to do then.
        let _ = self
            .reports
            .send(Report::Sample(self.local_index, Box::new(s)));
    }

    /// The last, partial second.
    fn emit_final(&mut self, now: u64) {
        self.emit_samples(now);
        self.emit_one();
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: masks and think times need spread, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Reactor for Engine {
    fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    fn dispatch(&mut self, (user_data, res, flags): Cqe) {
        let Some(token) = Token::decode(user_data) else {
            say!("ringgate load: completion with an unknown token {user_data:#x} (res {res})");
            return;
        };
        match token.op {
            Op::Socket | Op::SockOpt | Op::Bind => self.on_setup_failed(token, res),
            Op::Connect | Op::Poll | Op::Recv | Op::Send | Op::Close => {
                self.on_user_completion(token, res, flags)
            }
            // The number of requests cancelled; each reports itself.
            Op::Cancel => {}
            Op::Accept | Op::Shutdown | Op::Tick | Op::Inbox | Op::PeerName => {
                say!("ringgate load: unexpected completion {token:?} (res {res})");
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.users.iter().any(|u| u.phase() != Phase::Free)
    }
}
