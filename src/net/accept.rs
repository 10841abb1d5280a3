//! The worker's multishot accept, kept in step with the kernel.
//!
//! Accepting pauses when the fixed-file table is full, when the process is over its memory ceiling,
//! and after a transient error; it stops for good on drain. Pausing cancels the armed request, and
//! resuming arms a new one — possibly before the old one's cancellation has reported. Each armed
//! request therefore carries a generation in its token: a completion of an older generation (a late
//! `ECANCELED`, or a connection it accepted just before the cancel took effect) never changes the
//! state of the current one. All accept decisions are in [`Acceptor`], which is sans-IO and
//! table-tested; the worker glue below only submits and opens slots.

use std::os::fd::AsRawFd;

use io_uring::cqueue;

use crate::ring::sqe;
use crate::worker::Worker;

/// Why accepting is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The fixed-file table is full: resumed when a slot is freed.
    Full,
    /// A transient error (EMFILE, ENOMEM...): resumed on the next tick, never in a spin.
    Error,
    /// The process is over `max_memory_bytes`: resumed under 90% of it.
    Memory,
}

/// State of the multishot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptState {
    Armed,
    Paused(Pause),
    /// Not started, or stopped for good (drain).
    Stopped,
}

/// What the acceptor asks of the ring.
pub trait AcceptSubmit {
    /// Arm a multishot accept whose completions carry generation `gen`.
    fn arm(&mut self, gen: u32);
    /// Cancel the accept request of generation `gen`.
    fn cancel(&mut self, gen: u32);
}

/// What an accept completion means to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A connection in this fixed-file slot: open it (whatever the request's generation: the kernel
    /// installed the socket).
    Slot(u32),
    /// The table is full (`ENFILE`): accepting paused until a slot is freed.
    TableFull,
    /// The current request failed with this errno: paused until the next tick.
    Failed(i32),
    /// Nothing for the worker (a cancellation, an older generation's end).
    Nothing,
}

/// The accept state machine.
#[derive(Debug)]
pub struct Acceptor {
    state: AcceptState,
    /// Generation of the newest armed request.
    gen: u32,
    /// The newest request may still post completions (armed, or cancelled but not yet reported).
    live: bool,
    /// Requests of any generation that may still post completions.
    requests: u32,
}

impl Default for Acceptor {
    fn default() -> Self {
        Self {
            state: AcceptState::Stopped,
            gen: 0,
            live: false,
            requests: 0,
        }
    }
}

impl Acceptor {
    pub fn state(&self) -> AcceptState {
        self.state
    }

    /// Any accept request may still post a completion.
    pub fn in_flight(&self) -> bool {
        self.requests > 0
    }

    /// Arms a new request (a new generation).
    pub fn arm(&mut self, sub: &mut impl AcceptSubmit) {
        self.gen = self.gen.wrapping_add(1);
        self.live = true;
        self.requests += 1;
        self.state = AcceptState::Armed;
        sub.arm(self.gen);
    }

    /// Pauses an armed accept for `why`. Returns true if it was armed (the caller logs).
    pub fn pause(&mut self, why: Pause, sub: &mut impl AcceptSubmit) -> bool {
        if self.state != AcceptState::Armed {
            return false;
        }
        self.state = AcceptState::Paused(why);
        if self.live {
            sub.cancel(self.gen);
        }
        true
    }

    /// Resumes an accept paused for `why`. Returns true if it re-armed.
    pub fn resume(&mut self, why: Pause, sub: &mut impl AcceptSubmit) -> bool {
        if self.state != AcceptState::Paused(why) {
            return false;
        }
        self.arm(sub);
        true
    }

    /// Stops for good (drain). The caller also cancels by the listener's fd, which reaches requests
    /// of every generation, and then drops the listener.
    pub fn stop(&mut self) {
        self.state = AcceptState::Stopped;
    }

    /// A completion of the accept request of generation `gen`.
    pub fn completed(
        &mut self,
        gen: u32,
        res: i32,
        more: bool,
        sub: &mut impl AcceptSubmit,
    ) -> Accepted {
        let current = gen == self.gen;
        if !more {
            self.requests = self.requests.saturating_sub(1);
            if current {
                self.live = false;
            }
        }
        let out = if res >= 0 {
            Accepted::Slot(res as u32)
        } else if !current || self.state == AcceptState::Stopped {
            // An older request's end (usually our cancel): the current one is not affected. Or any
            // end once stopped: the drain shut the listener down (EINVAL) or cancelled the accept.
            Accepted::Nothing
        } else {
            match -res {
                libc::ENFILE => {
                    if self.state == AcceptState::Armed {
                        self.state = AcceptState::Paused(Pause::Full);
                    }
                    Accepted::TableFull
                }
                // Our cancellation (pause or stop): the state already says what comes next.
                libc::ECANCELED => Accepted::Nothing,
                e => {
                    if self.state == AcceptState::Armed {
                        self.state = AcceptState::Paused(Pause::Error);
                    }
                    Accepted::Failed(e)
                }
            }
        };
        // The current request ended while we still want connections (a multishot may end on its
        // own, e.g. on a completion-queue overflow): arm another.
        if self.state == AcceptState::Armed && !self.live {
            self.arm(sub);
        }
        out
    }
}

/// The ring's side of the acceptor: the worker's listener.
struct Listener<'a> {
    ring: &'a mut crate::ring::Ring,
    fd: Option<i32>,
}

impl AcceptSubmit for Listener<'_> {
    fn arm(&mut self, gen: u32) {
        if let Some(fd) = self.fd {
            self.ring.push(sqe::accept_multi(fd, gen));
        }
    }
    fn cancel(&mut self, gen: u32) {
        self.ring.push(sqe::cancel_accept(gen));
    }
}

impl Worker {
    fn listener(&mut self) -> (&mut Acceptor, Listener<'_>) {
        let fd = self.listen_fd.as_ref().map(|f| f.as_raw_fd());
        (
            &mut self.accept,
            Listener {
                ring: &mut self.ring,
                fd,
            },
        )
    }

    /// Starts accepting (worker start).
    pub(crate) fn start_accepting(&mut self) {
        if self.listen_fd.is_none() {
            return;
        }
        let (acceptor, mut sub) = self.listener();
        acceptor.arm(&mut sub);
    }

    /// Pauses accepting for `why`; true if it was accepting.
    pub(crate) fn pause_accepting(&mut self, why: Pause) -> bool {
        let (acceptor, mut sub) = self.listener();
        acceptor.pause(why, &mut sub)
    }

    /// Resumes accepting paused for `why`; true if it re-armed.
    pub(crate) fn resume_accepting(&mut self, why: Pause) -> bool {
        if self.listen_fd.is_none() {
            return false;
        }
        let (acceptor, mut sub) = self.listener();
        acceptor.resume(why, &mut sub)
    }

    /// Stops accepting for good and lets go of the listener (drain).
    pub(crate) fn stop_accepting(&mut self) {
        self.accept.stop();
        if let Some(fd) = self.listen_fd.take() {
            // Stop listening at once: what waits in the backlog is reset and a new connection is
            // refused (or, with other listeners of the port still open, goes to one of them), so a
            // client or balancer tries elsewhere instead of waiting out the drain in a backlog no
            // one accepts from. Closing would not do it: the server keeps a duplicate of the
            // descriptor (to contain a dead worker), and the ring still references it.
            if let Err(e) = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both) {
                tracing::warn!(worker = self.id, error = %e, "could not shut the listener down");
            }
            // Cancel every accept on the listener (all generations); the descriptor is kept until
            // the ring is gone, since a cancelled request may still reference it.
            self.ring.push(sqe::cancel_fd(fd.as_raw_fd()));
            self.retired_fds.push(fd);
        }
    }

    pub(crate) fn on_accept(&mut self, gen: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let (acceptor, mut sub) = self.listener();
        match acceptor.completed(gen, res, more, &mut sub) {
            Accepted::Slot(slot) => self.open_slot(slot),
            Accepted::TableFull => {
                self.stats.accept_table_full += 1;
                tracing::warn!(
                    worker = self.id,
                    live = self.live,
                    "connection table full; accepting paused"
                );
            }
            Accepted::Failed(errno) => {
                tracing::warn!(worker = self.id, errno, "accept failed; retrying next tick");
            }
            Accepted::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        armed: Vec<u32>,
        cancelled: Vec<u32>,
    }

    impl AcceptSubmit for Rec {
        fn arm(&mut self, gen: u32) {
            self.armed.push(gen);
        }
        fn cancel(&mut self, gen: u32) {
            self.cancelled.push(gen);
        }
    }

    const ECANCELED: i32 = -libc::ECANCELED;

    #[test]
    fn a_late_cancel_of_an_old_request_does_not_stop_the_new_one() {
        // The desync: table full → pause + cancel; a close re-arms; the old request's ECANCELED
        // arrives after the new one is armed.
        let mut rec = Rec::default();
        let mut a = Acceptor::default();
        a.arm(&mut rec);
        assert!(a.pause(Pause::Full, &mut rec));
        assert_eq!(rec.cancelled, vec![1]);
        assert!(a.resume(Pause::Full, &mut rec));
        assert_eq!(rec.armed, vec![1, 2]);
        assert_eq!(
            a.completed(1, ECANCELED, false, &mut rec),
            Accepted::Nothing
        );
        assert_eq!(a.state(), AcceptState::Armed);
        assert!(a.in_flight());
        // The memory ceiling still pauses the live request...
        assert!(a.pause(Pause::Memory, &mut rec));
        assert_eq!(rec.cancelled, vec![1, 2]);
        assert_eq!(
            a.completed(2, ECANCELED, false, &mut rec),
            Accepted::Nothing
        );
        assert_eq!(a.state(), AcceptState::Paused(Pause::Memory));
        // ...and only memory resumes it.
        assert!(!a.resume(Pause::Full, &mut rec));
        assert!(a.resume(Pause::Memory, &mut rec));
        assert_eq!(rec.armed, vec![1, 2, 3]);
    }

    #[test]
    fn a_live_request_that_ends_without_more_is_rearmed() {
        let mut rec = Rec::default();
        let mut a = Acceptor::default();
        a.arm(&mut rec);
        a.pause(Pause::Full, &mut rec);
        a.resume(Pause::Full, &mut rec);
        a.completed(1, ECANCELED, false, &mut rec);
        // The current request ends on its own (a connection accepted, no F_MORE).
        assert_eq!(a.completed(2, 5, false, &mut rec), Accepted::Slot(5));
        assert_eq!(rec.armed, vec![1, 2, 3]);
        assert_eq!(a.state(), AcceptState::Armed);
    }

    #[test]
    fn connections_accepted_by_an_old_request_are_still_opened() {
        let mut rec = Rec::default();
        let mut a = Acceptor::default();
        a.arm(&mut rec);
        a.pause(Pause::Memory, &mut rec);
        // The cancel lost the race: the kernel had already put a connection into slot 9.
        assert_eq!(a.completed(1, 9, true, &mut rec), Accepted::Slot(9));
        assert_eq!(a.state(), AcceptState::Paused(Pause::Memory));
        assert_eq!(rec.armed, vec![1], "a paused accept is not re-armed");
    }

    #[test]
    fn enfile_pauses_and_errors_wait_for_the_tick() {
        let mut rec = Rec::default();
        let mut a = Acceptor::default();
        a.arm(&mut rec);
        assert_eq!(
            a.completed(1, -libc::ENFILE, false, &mut rec),
            Accepted::TableFull
        );
        assert_eq!(a.state(), AcceptState::Paused(Pause::Full));
        assert!(a.resume(Pause::Full, &mut rec));
        assert_eq!(
            a.completed(2, -libc::EMFILE, false, &mut rec),
            Accepted::Failed(libc::EMFILE)
        );
        assert_eq!(a.state(), AcceptState::Paused(Pause::Error));
        assert_eq!(rec.armed, vec![1, 2], "no re-arm in a spin");
        assert!(a.resume(Pause::Error, &mut rec));
    }

    #[test]
    fn a_stopped_acceptor_never_rearms() {
        let mut rec = Rec::default();
        let mut a = Acceptor::default();
        a.arm(&mut rec);
        a.stop();
        assert_eq!(
            a.completed(1, ECANCELED, false, &mut rec),
            Accepted::Nothing
        );
        assert!(!a.resume(Pause::Full, &mut rec));
        assert!(!a.pause(Pause::Memory, &mut rec));
        assert_eq!(rec.armed, vec![1]);
        assert_eq!(a.state(), AcceptState::Stopped);
        assert!(!a.in_flight(), "nothing left to wait for at exit");
    }
}
