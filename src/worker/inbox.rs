//! A worker's inbox: the only way other threads talk to a worker.
//!
//! Messages go into a mutex-guarded vector and an eventfd wakes the worker's ring (a multishot poll
//! on the eventfd). The lock is held only to push or to swap the vector out: never across a syscall.
//!
//! An inbox is also where the rest of the process learns that its worker is gone: once the worker
//! has died (`close`), every message sent to it is dropped and counted instead of queued, so a dead
//! worker's inbox cannot grow without bound. It also carries the test-only fault switch
//! (`inject_fault`, reachable only with `--debug-fault-injection`).
//!
//! A live worker's inbox is bounded too: a worker that stops taking its inbox (held up by a
//! fan-out far larger than its share of the box, or by the machine) while broadcasts keep
//! arriving would otherwise hold every one of them. Past `MAX_QUEUED_MESSAGES` messages or
//! `MAX_QUEUED_BROADCAST_BYTES` of broadcast frames a broadcast is dropped and counted
//! (`ringgate_inbox_overflow_total`), and its topic is remembered (`Lost`): the worker, when it
//! takes its inbox, closes those topics' members with 1013 (try again later), as a slow consumer
//! is closed, so no client goes on believing it has every broadcast — or a presence list that a
//! lost diff made wrong; phoenix.js reconnects and rejoins (and gets a fresh presence state).
//! Report requests are bounded by count (a wedged worker is asked again at every scrape); a
//! drain request is always queued.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
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
    /// The worker sleeps for `ms` (at most `MAX_STALL_MS`) and goes on, as a worker the machine
    /// took off its core would.
    Stall { ms: u32 },
}

const FAULT_NONE: u8 = 0;
const FAULT_ERROR: u8 = 1;
const FAULT_PANIC: u8 = 2;
const FAULT_STALL: u8 = 3;

/// Messages a live worker's inbox holds at most before broadcasts are dropped. A worker takes
/// its whole inbox every loop turn, so a healthy one holds a handful; 65,536 is ~0.8 s of the
/// highest publish rate measured here (80,000 broadcasts/s, docs/performance.md).
pub const MAX_QUEUED_MESSAGES: usize = 65_536;
/// Bytes of broadcast frames (both encodings) a live worker's inbox holds at most: with large
/// payloads the count alone would let 65,536 MiB-sized broadcasts wait. 256 MiB, as
/// `max_rx_bytes_per_worker`'s default; frames shared between workers are counted by each.
pub const MAX_QUEUED_BROADCAST_BYTES: usize = 256 << 20;
/// Report requests waiting at most: a healthy worker answers within a loop turn, so more than a
/// few are waiting only at a wedged worker, asked again at every scrape. Past it a request is
/// dropped, which its scrape sees at once as that worker not answering.
pub const MAX_QUEUED_REPORTS: usize = 64;
/// Distinct topics remembered as having lost a broadcast; past it every joined member of the
/// worker is closed instead (the set's memory is bounded, and a loss that wide is the worker's).
pub const MAX_LOST_TOPICS: usize = 4096;

/// Topics of the broadcasts dropped since the worker last took its inbox.
#[derive(Debug, Default)]
pub struct Lost {
    pub topics: HashSet<Box<str>, ahash::RandomState>,
    /// More topics than `MAX_LOST_TOPICS` lost a broadcast: every joined member is affected.
    pub all: bool,
}

impl Lost {
    pub fn is_empty(&self) -> bool {
        !self.all && self.topics.is_empty()
    }
}

/// What the lock guards: the messages and what bounds them.
#[derive(Default)]
struct Queue {
    msgs: Vec<Msg>,
    broadcast_bytes: usize,
    reports: usize,
    lost: Lost,
}

/// Longest injected stall (`--debug-fault-injection`), ms: long enough to fill an inbox from a
/// test, short enough that a mistaken request costs seconds.
pub const MAX_STALL_MS: u32 = 10_000;

pub struct Inbox {
    /// The worker's index, for the log line of an overflow (sent from the publisher's thread).
    worker: usize,
    efd: OwnedFd,
    queue: Mutex<Queue>,
    /// Set once the worker is dead: messages are dropped, not queued.
    closed: AtomicBool,
    /// Messages dropped because the worker was dead.
    dropped: AtomicU64,
    /// Broadcasts dropped because the inbox of the live worker was full.
    overflowed: AtomicU64,
    /// A pending injected fault (`FAULT_*`), taken by the worker on its next loop turn.
    fault: AtomicU8,
    /// The length of an injected stall, ms.
    stall_ms: AtomicU32,
    /// True while the worker sleeps in an injected stall (so a test starts only once it does).
    stalled: AtomicBool,
}

impl Inbox {
    pub fn new(worker: usize) -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            worker,
            efd,
            queue: Mutex::new(Queue::default()),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            fault: AtomicU8::new(FAULT_NONE),
            stall_ms: AtomicU32::new(0),
            stalled: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Queues a message and wakes the worker; drops (and counts) it if the worker is dead or the
    /// inbox is full. True when it was queued.
    ///
    /// Only the message that finds the queue empty writes the eventfd. The queue is non-empty
    /// only from that push to the worker's next `take_all`, which reads the eventfd before it
    /// takes the whole queue, so every message queued meanwhile is taken by the wake-up the first
    /// one wrote. A burst of broadcasts (an admin request for many topics, a bus batch) then costs
    /// the worker one wake-up and one eventfd read instead of one per broadcast.
    pub fn send(&self, msg: Msg) -> bool {
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            // Checked under the lock, so `close` and `send` cannot interleave to leave a message
            // queued after the queue was emptied for good.
            if self.closed.load(Ordering::Relaxed) {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match &msg {
                Msg::Broadcast(b) => {
                    let bytes = b.frame_bytes();
                    if q.msgs.len() >= MAX_QUEUED_MESSAGES
                        || q.broadcast_bytes + bytes > MAX_QUEUED_BROADCAST_BYTES
                    {
                        let first = q.lost.is_empty();
                        let (queued, queued_bytes) = (q.msgs.len(), q.broadcast_bytes);
                        Self::lose(&mut q, &b.topic);
                        drop(q);
                        self.overflowed.fetch_add(1, Ordering::Relaxed);
                        if first {
                            // Logged once per episode, after the lock (a log line is a write).
                            tracing::warn!(
                                worker = self.worker,
                                queued,
                                queued_bytes,
                                "the worker's inbox is full: broadcasts to its members are \
                                 dropped until it takes its inbox, and the members of their \
                                 topics are then closed with 1013 (ringgate_inbox_overflow_total)"
                            );
                        }
                        return false;
                    }
                    q.broadcast_bytes += bytes;
                }
                Msg::Report(_) if q.reports >= MAX_QUEUED_REPORTS => return false,
                Msg::Report(_) => q.reports += 1,
                Msg::Drain { .. } => {}
            }
            q.msgs.push(msg);
            q.msgs.len() == 1
        };
        if first {
            self.wake();
        }
        true
    }

    /// Remembers that a broadcast to `topic` (every topic: `None`) was lost before it reached this
    /// inbox (the bus dropped it): at its next turn the worker closes those members with 1013,
    /// as for a broadcast the full inbox dropped.
    pub fn lose_topic(&self, topic: Option<&str>) {
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let first = q.msgs.is_empty() && q.lost.is_empty();
            match topic {
                Some(topic) => Self::lose(&mut q, topic),
                None => {
                    q.lost.all = true;
                    q.lost.topics = HashSet::default();
                }
            }
            first
        };
        if first {
            self.wake();
        }
    }

    /// Remembers the topic of a broadcast dropped for a full inbox.
    fn lose(q: &mut Queue, topic: &str) {
        if q.lost.all || q.lost.topics.contains(topic) {
            return;
        }
        if q.lost.topics.len() >= MAX_LOST_TOPICS {
            q.lost.all = true;
            q.lost.topics = HashSet::default();
        } else {
            q.lost.topics.insert(topic.into());
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
            .fetch_add(queued.msgs.len() as u64, Ordering::Relaxed);
    }

    /// Whether the worker behind this inbox is dead.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Messages dropped because the worker was dead.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Broadcasts dropped because the live worker's inbox was full.
    pub fn overflowed_total(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Test-only: makes the worker fail on its next loop turn (see `--debug-fault-injection`).
    pub fn inject_fault(&self, fault: Fault) {
        let code = match fault {
            Fault::Error => FAULT_ERROR,
            Fault::Panic => FAULT_PANIC,
            Fault::Stall { ms } => {
                self.stall_ms.store(ms.min(MAX_STALL_MS), Ordering::Relaxed);
                FAULT_STALL
            }
        };
        // Release: the worker that takes the fault (Acquire) sees the stall's length.
        self.fault.store(code, Ordering::Release);
        self.wake();
    }

    /// Test-only: whether the worker is inside an injected stall right now.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Called by the worker once per loop turn (one relaxed load): suffers an injected fault.
    pub fn take_fault(&self) -> std::io::Result<()> {
        if self.fault.load(Ordering::Relaxed) == FAULT_NONE {
            return Ok(());
        }
        match self.fault.swap(FAULT_NONE, Ordering::Acquire) {
            FAULT_ERROR => Err(std::io::Error::other(
                "injected fault (--debug-fault-injection)",
            )),
            FAULT_PANIC => panic!("injected fault (--debug-fault-injection)"),
            FAULT_STALL => {
                let ms = self.stall_ms.load(Ordering::Relaxed);
                tracing::warn!(
                    worker = self.worker,
                    ms,
                    "stalling (--debug-fault-injection)"
                );
                self.stalled.store(true, Ordering::Release);
                std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
                self.stalled.store(false, Ordering::Release);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Takes every queued message (called by the worker when the eventfd fires), and the topics
    /// that lost a broadcast since the last take.
    pub fn take_all(&self, out: &mut Vec<Msg>) -> Lost {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd; EAGAIN is harmless.
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut q.msgs);
        q.broadcast_bytes = 0;
        q.reports = 0;
        std::mem::take(&mut q.lost)
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
    fn a_topic_lost_before_the_inbox_wakes_the_worker_once_and_is_taken() {
        let inbox = Inbox::new(0).unwrap();
        inbox.lose_topic(Some("rooms:a"));
        inbox.lose_topic(Some("rooms:b"));
        assert_eq!(eventfd_count(&inbox), 1);
        let mut msgs = Vec::new();
        let lost = inbox.take_all(&mut msgs);
        assert!(msgs.is_empty());
        assert_eq!(lost.topics.len(), 2);
        assert!(!lost.all);
        inbox.lose_topic(None);
        let lost = inbox.take_all(&mut msgs);
        assert!(lost.all);
        assert!(inbox.take_all(&mut msgs).is_empty());
    }

    #[test]
    fn only_the_message_that_finds_the_queue_empty_wakes_the_worker() {
        let inbox = Inbox::new(0).unwrap();
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
        let inbox = Inbox::new(0).unwrap();
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

    fn broadcast(topic: &str, frame_bytes: usize) -> Msg {
        let mut frames: [Option<bytes::Bytes>; crate::topics::ENCODINGS] = Default::default();
        frames[0] = Some(bytes::Bytes::from(vec![b'x'; frame_bytes]));
        Msg::Broadcast(Arc::new(Broadcast::new(topic, frames)))
    }

    #[test]
    fn a_full_inbox_drops_and_counts_broadcasts_remembers_their_topics_and_keeps_a_drain() {
        let inbox = Inbox::new(0).unwrap();
        for _ in 0..MAX_QUEUED_MESSAGES {
            inbox.send(broadcast("kept", 1));
        }
        inbox.send(broadcast("a", 1));
        inbox.send(broadcast("b", 1));
        inbox.send(broadcast("a", 1));
        assert_eq!(inbox.overflowed_total(), 3);
        assert_eq!(inbox.dropped_total(), 0);
        inbox.send(Msg::Drain { drain_ms: 0 });
        let mut out = Vec::new();
        let lost = inbox.take_all(&mut out);
        assert_eq!(out.len(), MAX_QUEUED_MESSAGES + 1);
        assert!(matches!(out.last(), Some(Msg::Drain { .. })));
        let mut topics: Vec<_> = lost.topics.iter().map(|t| &**t).collect();
        topics.sort_unstable();
        assert_eq!((topics, lost.all), (vec!["a", "b"], false));
        // Taken: room again, and nothing lost since.
        inbox.send(broadcast("a", 1));
        assert_eq!(inbox.overflowed_total(), 3);
        out.clear();
        assert!(inbox.take_all(&mut out).is_empty());
    }

    #[test]
    fn broadcast_bytes_are_bounded_as_well_as_their_count() {
        let inbox = Inbox::new(0).unwrap();
        let big = MAX_QUEUED_BROADCAST_BYTES / 4;
        for _ in 0..4 {
            inbox.send(broadcast("big", big));
        }
        inbox.send(broadcast("big", 1));
        assert_eq!(inbox.overflowed_total(), 1);
        let mut out = Vec::new();
        assert!(!inbox.take_all(&mut out).is_empty());
        assert_eq!(out.len(), 4);
        inbox.send(broadcast("big", big));
        assert_eq!(inbox.overflowed_total(), 1);
    }

    #[test]
    fn past_the_lost_topic_bound_every_member_is_affected() {
        let inbox = Inbox::new(0).unwrap();
        for _ in 0..MAX_QUEUED_MESSAGES {
            inbox.send(broadcast("kept", 1));
        }
        for i in 0..=MAX_LOST_TOPICS {
            inbox.send(broadcast(&format!("t{i}"), 1));
        }
        let lost = inbox.take_all(&mut Vec::new());
        assert!(lost.all && lost.topics.is_empty());
    }

    #[test]
    fn report_requests_are_bounded_by_count() {
        let inbox = Inbox::new(0).unwrap();
        let mut replies = Vec::new();
        for _ in 0..=MAX_QUEUED_REPORTS {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            inbox.send(Msg::Report(tx));
            replies.push(rx);
        }
        // The one past the bound was dropped: its scrape learns at once.
        assert!(matches!(
            replies.last().unwrap().try_recv(),
            Err(std::sync::mpsc::TryRecvError::Disconnected)
        ));
        let mut out = Vec::new();
        inbox.take_all(&mut out);
        assert_eq!(out.len(), MAX_QUEUED_REPORTS);
    }

    #[test]
    fn an_injected_error_is_taken_once() {
        let inbox = Inbox::new(0).unwrap();
        assert!(inbox.take_fault().is_ok());
        inbox.inject_fault(Fault::Error);
        assert!(inbox.take_fault().is_err());
        assert!(inbox.take_fault().is_ok());
    }
}
