//! A worker's inbox: the only way other threads talk to a worker.
//!
//! Messages go into a mutex-guarded vector and an eventfd wakes the worker's ring (a multishot poll
//! on the eventfd). The lock is held only to push or to swap the vector out: never across a syscall.
//!
//! An inbox is also where the rest of the process learns that its worker is gone: once the worker
//! has died (`close`), every message sent to it is dropped and counted instead of queued, so a dead
//! worker's inbox cannot grow without bound. It also carries the test-only fault switch
//! (`inject_fault`, reachable only with `--debug-fault-injection`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::topics::Broadcast;

/// What other threads can ask of a worker.
#[derive(Debug)]
pub enum Msg {
    /// Stop accepting; close every connection with 1012 spread over `drain_ms`; exit when empty.
    Drain { drain_ms: u64 },
    /// Deliver this broadcast to the worker's members of its topic.
    Broadcast(Arc<Broadcast>),
    /// Send back the worker's counters and memory accounting.
    Report(std::sync::mpsc::SyncSender<super::report::Report>),
}

/// A failure a test asks a worker to suffer (`--debug-fault-injection` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `Worker::run` returns an error, as on a failed `io_uring_enter`.
    Error,
    /// The worker thread panics.
    Panic,
}

const FAULT_NONE: u8 = 0;
const FAULT_ERROR: u8 = 1;
const FAULT_PANIC: u8 = 2;

pub struct Inbox {
    efd: OwnedFd,
    queue: Mutex<Vec<Msg>>,
    /// Set once the worker is dead: messages are dropped, not queued.
    closed: AtomicBool,
    /// Messages dropped because the worker was dead.
    dropped: AtomicU64,
    /// A pending injected fault (`FAULT_*`), taken by the worker on its next loop turn.
    fault: AtomicU8,
}

impl Inbox {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            efd,
            queue: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            fault: AtomicU8::new(FAULT_NONE),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Queues a message and wakes the worker; drops (and counts) it if the worker is dead.
    ///
    /// Only the message that finds the queue empty writes the eventfd. The queue is non-empty
    /// only from that push to the worker's next `take_all`, which reads the eventfd before it
    /// takes the whole queue, so every message queued meanwhile is taken by the wake-up the first
    /// one wrote. A burst of broadcasts (an admin request for many topics, a bus batch) then costs
    /// the worker one wake-up and one eventfd read instead of one per broadcast.
    pub fn send(&self, msg: Msg) {
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            // Checked under the lock, so `close` and `send` cannot interleave to leave a message
            // queued after the queue was emptied for good.
            if self.closed.load(Ordering::Relaxed) {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            q.push(msg);
            q.len() == 1
        };
        if first {
            self.wake();
        }
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) means the
        // worker has a wake-up pending already, so the result can be ignored.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Marks the worker dead: what is queued is dropped and counted, and so is every later message.
    /// Dropping a queued `Msg::Report` drops its reply sender, so a waiting `/metrics` returns at
    /// once instead of timing out.
    pub fn close(&self) {
        let queued = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            self.closed.store(true, Ordering::Relaxed);
            std::mem::take(&mut *q)
        };
        self.dropped
            .fetch_add(queued.len() as u64, Ordering::Relaxed);
    }

    /// Whether the worker behind this inbox is dead.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Messages dropped because the worker was dead.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Test-only: makes the worker fail on its next loop turn (see `--debug-fault-injection`).
    pub fn inject_fault(&self, fault: Fault) {
        let code = match fault {
            Fault::Error => FAULT_ERROR,
            Fault::Panic => FAULT_PANIC,
        };
        self.fault.store(code, Ordering::Relaxed);
        self.wake();
    }

    /// Called by the worker once per loop turn (one relaxed load): suffers an injected fault.
    pub fn take_fault(&self) -> std::io::Result<()> {
        if self.fault.load(Ordering::Relaxed) == FAULT_NONE {
            return Ok(());
        }
        match self.fault.swap(FAULT_NONE, Ordering::Relaxed) {
            FAULT_ERROR => Err(std::io::Error::other(
                "injected fault (--debug-fault-injection)",
            )),
            FAULT_PANIC => panic!("injected fault (--debug-fault-injection)"),
            _ => Ok(()),
        }
    }

    /// Takes every queued message (called by the worker when the eventfd fires).
    pub fn take_all(&self, out: &mut Vec<Msg>) {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd; EAGAIN is harmless.
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eventfd_count(inbox: &Inbox) -> u64 {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the inbox's non-blocking eventfd.
        let n = unsafe { libc::read(inbox.fd(), (&mut counter as *mut u64).cast(), 8) };
        if n == 8 {
            counter
        } else {
            0
        }
    }

    #[test]
    fn only_the_message_that_finds_the_queue_empty_wakes_the_worker() {
        let inbox = Inbox::new().unwrap();
        for _ in 0..3 {
            inbox.send(Msg::Drain { drain_ms: 0 });
        }
        assert_eq!(eventfd_count(&inbox), 1);
        let mut out = Vec::new();
        inbox.take_all(&mut out);
        assert_eq!(out.len(), 3);
        // Emptied by the take: the next message wakes again.
        inbox.send(Msg::Drain { drain_ms: 0 });
        assert_eq!(eventfd_count(&inbox), 1);
        out.clear();
        inbox.take_all(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_closed_inbox_drops_and_counts_instead_of_queueing() {
        let inbox = Inbox::new().unwrap();
        inbox.send(Msg::Drain { drain_ms: 0 });
        inbox.send(Msg::Drain { drain_ms: 0 });
        inbox.close();
        assert!(inbox.is_closed());
        assert_eq!(inbox.dropped_total(), 2);
        inbox.send(Msg::Drain { drain_ms: 0 });
        assert_eq!(inbox.dropped_total(), 3);
        let mut out = Vec::new();
        inbox.take_all(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn an_injected_error_is_taken_once() {
        let inbox = Inbox::new().unwrap();
        assert!(inbox.take_fault().is_ok());
        inbox.inject_fault(Fault::Error);
        assert!(inbox.take_fault().is_err());
        assert!(inbox.take_fault().is_ok());
    }
}
