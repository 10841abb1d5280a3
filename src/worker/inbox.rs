//! A worker's inbox: the only way other threads talk to a worker.
//!
//! Messages go into a mutex-guarded vector and an eventfd wakes the worker's ring (a multishot poll
//! on the eventfd). The lock is held only to push or to swap the vector out: never across a syscall.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

pub struct Inbox {
    efd: OwnedFd,
    queue: Mutex<Vec<Msg>>,
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
        })
    }

    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Queues a message and wakes the worker.
    pub fn send(&self, msg: Msg) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) means the
        // worker has a wake-up pending already, so the result can be ignored.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
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
