//! The scenario's `rendezvous` step: users that reach it wait until enough have (over every
//! worker and every process), then go on together.
//!
//! Within one process the count is one atomic shared by the workers, and the worker whose user
//! completes it releases the rendezvous; the other workers see that within one loop turn (their
//! kernel wait is bounded). With `--procs`, a process counts only its own users, so the parent
//! decides: it adds up the processes' counts from their per-second samples and writes
//! [`GO_LINE`] to every child's stdin, which a thread of the child turns into the release. That
//! release comes within about a second of the last arrival, which a rendezvous (a barrier before
//! a phase of the scenario, not a timing) can afford.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::Setup;

/// What a parent writes to its children's stdin once the rendezvous is complete.
pub const GO_LINE: &str = "rendezvous-go";

/// A process's view of the rendezvous.
pub struct Rendezvous {
    /// Users to wait for; `None`: the scenario has no rendezvous.
    target: Option<u64>,
    /// Users of this process that reached it.
    arrived: AtomicU64,
    released: AtomicBool,
    /// A child of `--procs`: only the parent knows the whole count, so only it releases.
    by_parent: bool,
}

impl Rendezvous {
    pub fn new(target: Option<u64>, by_parent: bool) -> Self {
        Self {
            target,
            arrived: AtomicU64::new(0),
            released: AtomicBool::new(false),
            by_parent,
        }
    }

    /// Counts a user in; whether it may go on at once (the rendezvous is, or is now, complete).
    pub fn arrive(&self) -> bool {
        let n = self.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if !self.by_parent && self.target.is_some_and(|t| n >= t) {
            self.released.store(true, Ordering::Release);
        }
        self.released()
    }

    pub fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Users of this process counted in so far.
    pub fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::Acquire)
    }
}

/// In a child of `--procs` whose scenario has a rendezvous: a thread that waits for the parent's
/// [`GO_LINE`] on stdin and releases the rendezvous. It ends at the line or at EOF (the parent
/// gone: the users' timeouts take over).
pub fn listen_to_parent(setup: &Arc<Setup>) -> std::io::Result<()> {
    if setup.rendezvous.target.is_none() {
        return Ok(());
    }
    let setup = setup.clone();
    std::thread::Builder::new()
        .name("load-rendezvous".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == GO_LINE => {
                        setup.rendezvous.released.store(true, Ordering::Release);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_releases_a_single_process() {
        let r = Rendezvous::new(Some(3), false);
        assert!(!r.arrive());
        assert!(!r.arrive());
        assert!(!r.released());
        assert!(r.arrive());
        assert!(r.released());
        assert!(r.arrive(), "a late user goes straight on");
        assert_eq!(r.arrived(), 4);
    }

    #[test]
    fn a_child_waits_for_its_parent() {
        let r = Rendezvous::new(Some(1), true);
        assert!(!r.arrive());
        assert!(!r.arrive());
        r.released.store(true, Ordering::Release);
        assert!(r.arrive());
    }
}
