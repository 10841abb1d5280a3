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

use std::io;

use io_uring::{squeue, IoUring};

use crate::config::Config;

/// One worker's ring. Created and used on the worker's thread only (`SINGLE_ISSUER`).
pub struct Ring {
    pub uring: IoUring,
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
        Ok(Self { uring })
    }

    /// Queues an entry; when the submission queue is full, submits what is queued first. An entry is
    /// never dropped: a lost SQE would leak a connection or a buffer.
    pub fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry is built by `sqe`, whose constructors document that the memory
            // an entry points to (send buffers, timespecs) outlives its completion.
            let pushed = unsafe { self.uring.submission().push(entry) };
            if pushed.is_ok() {
                return;
            }
            if let Err(e) = self.uring.submit() {
                // EBUSY: the CQ is overflowing; the entries stay queued and are submitted on the
                // next enter, after the loop has drained completions. Nothing else is expected.
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(error = %e, "io_uring submit failed while the SQ was full");
                }
                // With the queue still full there is no progress without reaping; reap inline by
                // waiting for nothing and retry (the caller's loop drains the CQ next).
                std::thread::yield_now();
            }
        }
    }
}
