//! The kernel boundary: everything that touches io_uring directly lives here.
//!
//! - `probe`: start-up checks of every kernel feature the gateway uses, with operator hints.
//! - `token`: the `user_data` encoding that ties a completion back to its connection and operation.
//! - `bufring`: the per-worker provided-buffer ring that idle connections do not hold buffers from.
//! - `sqe`: the one module that builds submission entries.
//! - `Ring`: a thin owner of the `IoUring` with a push that never drops an entry, the worker's
//!   wait for completions (plain, or batched over a window: `submit_and_sleep`), the completion
//!   reaping loop both ring owners (gateway worker, load engine) use, and the exit that waits for
//!   the kernel to let go of every request.

pub mod bufring;
pub mod probe;
pub mod sqe;
pub mod token;

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::IoUring;

use crate::config::Config;
use sqe::Sqe;

/// A completion as the owners see it: `user_data`, `res`, `flags`.
pub type Cqe = (u64, i32, u32);

/// Completions handled per reap batch: bounds the batch buffer; the loop reaps again until empty.
const REAP_BATCH: usize = 4096;

/// Completions after which a batched sleep (`submit_and_sleep`) wakes before its time is up.
const BATCH_WAKE_COMPLETIONS: usize = 256;
/// The general timeout of a batched sleep, s: longer than any window and any tick (60 s at most).
const BATCH_WAIT_BOUND_S: u64 = 3600;

/// One worker's ring. Created and used on the worker's thread only (`SINGLE_ISSUER`).
pub struct Ring {
    pub uring: IoUring,
    /// Entries that found the submission queue full while the kernel refused to take more
    /// (`EBUSY`: its completion queue overflowed). They go in order once completions are reaped.
    backlog: VecDeque<Sqe>,
    /// Reused buffer of `reap`.
    batch: Vec<Cqe>,
}

/// An owner of a ring that handles its completions: the gateway worker and the load engine.
pub trait Reactor {
    fn ring(&mut self) -> &mut Ring;
    /// Handles one completion.
    fn dispatch(&mut self, cqe: Cqe);
    /// Whether any request the owner submitted may still post a completion (for the exit).
    fn in_flight(&self) -> bool;
}

/// Reaps and dispatches every completion available now, in batches.
pub fn reap<R: Reactor>(owner: &mut R) {
    loop {
        let mut batch = std::mem::take(&mut owner.ring().batch);
        batch.clear();
        batch.extend(
            owner
                .ring()
                .uring
                .completion()
                .take(REAP_BATCH)
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let empty = batch.is_empty();
        for &cqe in &batch {
            owner.dispatch(cqe);
        }
        owner.ring().batch = batch;
        if empty {
            return;
        }
    }
}

/// The exit: cancels every request of the ring and reaps until the owner has nothing in flight, so
/// that no buffer or frame is freed while the kernel may still use it. Returns false if requests
/// were still in flight at `timeout`: the caller must then leak what they point to.
pub fn quiesce<R: Reactor>(owner: &mut R, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    owner.ring().push(sqe::cancel_everything());
    while owner.in_flight() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ts = Timespec::new()
            .sec(left.as_secs())
            .nsec(left.subsec_nanos().min(999_999_999));
        let ring = owner.ring();
        ring.flush_backlog();
        match ring
            .uring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => {
                tracing::error!(error = %e, "io_uring enter failed while quiescing");
                return false;
            }
        }
        reap(owner);
    }
    true
}

impl Ring {
    /// Builds the ring with the flags the design needs: `SINGLE_ISSUER` (6.0) and `DEFER_TASKRUN`
    /// (6.1) so completions are produced only when this thread asks for them, never by interrupting it.
    pub fn new(cfg: &Config) -> io::Result<Self> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(cfg.cq_entries)
            .build(cfg.sq_entries)?;
        Ok(Self::from_uring(uring))
    }

    /// Wraps a ring built elsewhere (the load generator sizes its own).
    pub fn from_uring(uring: IoUring) -> Self {
        Self {
            uring,
            backlog: VecDeque::new(),
            batch: Vec::with_capacity(1024),
        }
    }

    /// Queues an entry; when the submission queue is full, submits what is queued first. An entry is
    /// never dropped (a lost SQE would leak a connection or a buffer) and the caller never spins:
    /// if the kernel cannot take more now, the entry waits in the backlog for `flush_backlog`.
    pub fn push(&mut self, entry: Sqe) {
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        self.backlog.push_back(entry);
    }

    fn try_push(&mut self, entry: &Sqe) -> bool {
        // SAFETY: an `Sqe` is made only by `sqe`, whose constructors that hand the kernel a pointer
        // are `unsafe fn`s: their callers promised the memory stays valid as long as the kernel
        // uses it. Every other entry points to no memory of ours.
        if unsafe { self.uring.submission().push(&entry.0) }.is_ok() {
            return true;
        }
        match self.uring.submit() {
            // The queue went into the kernel: there is room now.
            // SAFETY: as above.
            Ok(_) => unsafe { self.uring.submission().push(&entry.0) }.is_ok(),
            // EBUSY: the completion queue overflowed; the kernel takes nothing until it is reaped.
            // EAGAIN: the kernel is short of memory for requests; likewise retried after a reap.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => false,
            Err(e) => {
                tracing::error!(error = %e, "io_uring submit failed while the SQ was full");
                false
            }
        }
    }

    /// Submits what is queued and runs the completions already due (deferred task work included:
    /// an enter with `GETEVENTS`), without waiting for any: for a loop turn that has work of its own
    /// left.
    pub fn submit_and_poll(&mut self) -> io::Result<usize> {
        /// `IORING_ENTER_GETEVENTS`: with `DEFER_TASKRUN`, completions from other contexts (an
        /// eventfd written by another thread, a peer's data) are posted only by such an enter.
        const ENTER_GETEVENTS: u32 = 1;
        let queued = self.uring.submission().len() as u32;
        // SAFETY: no argument is passed (a null pointer and size 0); every queued entry was made by
        // `sqe`, whose pointer-taking constructors are `unsafe fn`s whose callers keep the memory
        // valid while the kernel uses it (as for `submit`).
        unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, ENTER_GETEVENTS, None)
        }
    }

    /// Submits what is queued and waits for a completion (returning at once if some are there).
    ///
    /// With `batch_us` > 0 the wait is io_uring's `min_wait`: a completion that arrives within
    /// `batch_us` of going to sleep does not wake the thread at once; completions gather until that
    /// time (or until `BATCH_WAKE_COMPLETIONS` of them, or a timeout request of the ring fires, such
    /// as the worker's tick), and the thread wakes once for all. A completion that arrives later,
    /// into a ring quiet for the whole window, wakes it at once.
    pub fn submit_and_sleep(&mut self, batch_us: u32) -> io::Result<()> {
        if batch_us == 0 {
            return self.uring.submit_and_wait(1).map(|_| ());
        }
        // What this turn submits goes first, on its own: a request that completes at once (a
        // receive of data already there, a send with room) is handled now. In the wait below the
        // kernel would count it as there before the wait began and hold it to the window's end,
        // adding up to a window to every exchange.
        if !self.uring.submission().is_empty() {
            self.submit_and_poll()?;
            if !self.uring.completion().is_empty() {
                return Ok(());
            }
        }
        // A general timeout is needed, and past the window: without one the kernel ends the wait at
        // the window's end even with nothing to report. It is only a bound: the ring's own timers
        // (the worker's tick) end the wait sooner.
        let ts = Timespec::new().sec(BATCH_WAIT_BOUND_S);
        let args = SubmitArgs::new().min_wait_usec(batch_us).timespec(&ts);
        match self
            .uring
            .submitter()
            .submit_with_args(BATCH_WAKE_COMPLETIONS, &args)
        {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves backlogged entries into the submission queue (after completions were reaped).
    pub fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            if !self.try_push(&entry) {
                self.backlog.push_front(entry);
                return;
            }
        }
    }

    /// Entries waiting for room.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Completions the kernel dropped because the completion queue was full (the kernel's own
    /// counter; with `FEAT_NODROP` kernels it stays 0 and overflow shows as `EBUSY` instead).
    pub fn cq_overflow(&mut self) -> u32 {
        self.uring.completion().overflow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token::{Op, Token};
    use std::os::fd::AsRawFd;

    /// A ring owner with one readiness poll on a socket that never becomes readable.
    struct Owner {
        ring: Ring,
        polls_in_flight: u32,
        cancelled: u32,
    }

    impl Reactor for Owner {
        fn ring(&mut self) -> &mut Ring {
            &mut self.ring
        }
        fn dispatch(&mut self, (user_data, res, flags): Cqe) {
            if Token::decode(user_data).map(|t| t.op) == Some(Op::Inbox)
                && !io_uring::cqueue::more(flags)
            {
                self.polls_in_flight -= 1;
                if res == -libc::ECANCELED {
                    self.cancelled += 1;
                }
            }
        }
        fn in_flight(&self) -> bool {
            self.polls_in_flight > 0
        }
    }

    #[test]
    fn quiesce_waits_until_the_kernel_reports_every_request() {
        let uring = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)
        {
            Ok(u) => u,
            Err(e) => {
                eprintln!("skipped: io_uring unavailable here ({e})");
                return;
            }
        };
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut owner = Owner {
            ring: Ring::from_uring(uring),
            polls_in_flight: 0,
            cancelled: 0,
        };
        // Two multishot polls that would wait forever: nothing is ever written to the pair.
        for _ in 0..2 {
            owner.ring.push(sqe::poll_fd(a.as_raw_fd()));
            owner.polls_in_flight += 1;
        }
        owner.ring.uring.submit().unwrap();
        assert!(quiesce(&mut owner, Duration::from_secs(5)));
        assert_eq!(owner.polls_in_flight, 0);
        assert_eq!(owner.cancelled, 2, "each request reported its cancellation");
    }
}
