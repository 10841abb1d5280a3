//! The kernel boundary: everything that touches io_uring directly lives here.
//!
//! - `probe`: start-up checks of every kernel feature the gateway uses, with operator hints.
//! - `token`: the `user_data` encoding that ties a completion back to its connection and operation.
//! - `bufring`: the per-worker provided-buffer ring that idle connections do not hold buffers from.
//! - `sqe`: the one module that builds submission entries.
//! - `Ring`: a thin owner of the `IoUring` with a push that never drops an entry.

pub mod bufring;
pub mod probe;
pub mod sqe;
pub mod token;

use std::collections::VecDeque;
use std::io;

use io_uring::{squeue, IoUring};

use crate::config::Config;

/// One worker's ring. Created and used on the worker's thread only (`SINGLE_ISSUER`).
pub struct Ring {
    pub uring: IoUring,
    /// Entries that found the submission queue full while the kernel refused to take more
    /// (`EBUSY`: its completion queue overflowed). They go in order once completions are reaped.
    backlog: VecDeque<squeue::Entry>,
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
        Ok(Self {
            uring,
            backlog: VecDeque::new(),
        })
    }

    /// Wraps a ring built elsewhere (the load generator sizes its own).
    pub fn from_uring(uring: IoUring) -> Self {
        Self {
            uring,
            backlog: VecDeque::new(),
        }
    }

    /// Queues an entry; when the submission queue is full, submits what is queued first. An entry is
    /// never dropped (a lost SQE would leak a connection or a buffer) and the caller never spins:
    /// if the kernel cannot take more now, the entry waits in the backlog for `flush_backlog`.
    pub fn push(&mut self, entry: &squeue::Entry) {
        if self.backlog.is_empty() && self.try_push(entry) {
            return;
        }
        self.backlog.push_back(entry.clone());
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every entry is built by `sqe`, whose constructors document that the memory an
        // entry points to (send buffers, timespecs, sockaddr buffers) outlives its completion.
        if unsafe { self.uring.submission().push(entry) }.is_ok() {
            return true;
        }
        match self.uring.submit() {
            // The queue drained into the kernel: there is room now.
            // SAFETY: as above.
            Ok(_) => unsafe { self.uring.submission().push(entry) }.is_ok(),
            // EBUSY: the completion queue overflowed; the kernel takes nothing until it is reaped.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => false,
            Err(e) => {
                tracing::error!(error = %e, "io_uring submit failed while the SQ was full");
                false
            }
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
}
