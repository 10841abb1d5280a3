//! The scenario's `rendezvous` step: users that reach it wait until enough have (over every
//! worker and every process), then go on together. A user whose session ends before it reached
//! the step (its connect failed, the server closed it) is counted as missed, and missed users
//! count toward the whole: one user that never joins does not hold everyone to the timeout.
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
use crate::load::scenario::{Scenario, Step};

/// What a parent writes to its children's stdin once the rendezvous is complete.
pub const GO_LINE: &str = "rendezvous-go";

/// A process's view of the rendezvous.
pub struct Rendezvous {
    /// Users to wait for; `None`: the scenario has no rendezvous.
    target: Option<u64>,
    /// Users of this process that reached it, and that ended before they could.
    arrived: AtomicU64,
    missed: AtomicU64,
    /// The step's index in each session (`None`: the session has no rendezvous).
    step_of_session: Vec<Option<u16>>,
    released: AtomicBool,
    /// A child of `--procs`: only the parent knows the whole count, so only it releases.
    by_parent: bool,
}

impl Rendezvous {
    pub fn new(scenario: &Scenario, by_parent: bool) -> Self {
        let step_of_session = scenario
            .sessions
            .iter()
            .map(|s| {
                s.steps
                    .iter()
                    .position(|step| matches!(step, Step::Rendezvous { .. }))
                    .and_then(|i| u16::try_from(i).ok())
            })
            .collect();
        Self {
            target: scenario.rendezvous_users(),
            arrived: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            step_of_session,
            released: AtomicBool::new(false),
            by_parent,
        }
    }

    /// Counts a user in; whether it may go on at once (the rendezvous is, or is now, complete).
    pub fn arrive(&self) -> bool {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        self.check();
        self.released()
    }

    /// Whether a user of `session` whose session ends at step `pc` never reached the rendezvous
    /// (and so is to be counted missed). A user waiting at the step has arrived already.
    pub fn is_before(&self, session: u8, pc: u16) -> bool {
        self.step(session).is_some_and(|at| pc < at)
    }

    /// Whether a user of `session` at step `pc` is at the rendezvous step.
    pub fn is_at(&self, session: u8, pc: u16) -> bool {
        self.step(session) == Some(pc)
    }

    /// The rendezvous step's index in `session`, if it has one.
    fn step(&self, session: u8) -> Option<u16> {
        self.step_of_session
            .get(usize::from(session))
            .copied()
            .flatten()
    }

    /// Counts a user whose session ended before it reached the rendezvous.
    pub fn miss(&self) {
        self.missed.fetch_add(1, Ordering::AcqRel);
        self.check();
    }

    /// In one process: complete once the users that arrived or missed make the whole.
    fn check(&self) {
        let n = self.arrived.load(Ordering::Acquire) + self.missed.load(Ordering::Acquire);
        if !self.by_parent && self.target.is_some_and(|t| n >= t) {
            self.released.store(true, Ordering::Release);
        }
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
    use crate::load::scenario::{Phase, Session};

    /// One session: connect, send, rendezvous for `users` of 3 planned.
    fn scenario(users: Option<u64>) -> Scenario {
        let t = crate::load::scenario::Template::literal("x");
        Scenario {
            name: "t".into(),
            duration_ms: 1000,
            users: Some(3),
            phases: vec![Phase {
                duration_ms: 1000,
                arrival_rate: 3.0,
                max_users: None,
            }],
            sessions: vec![Session {
                name: "s".into(),
                probability: 100.0,
                steps: vec![
                    Step::Connect { target: None },
                    Step::Send { opcode: 1, data: t },
                    Step::Rendezvous {
                        users,
                        timeout_ms: 1000,
                    },
                ],
            }],
            timestamp_field: "ts_ns".into(),
            transactions: vec!["connect".into()],
        }
    }

    #[test]
    fn the_last_user_releases_a_single_process() {
        let r = Rendezvous::new(&scenario(None), false);
        assert!(!r.arrive());
        assert!(!r.arrive());
        assert!(!r.released());
        assert!(r.arrive());
        assert!(r.released());
        assert!(r.arrive(), "a late user goes straight on");
        assert_eq!(r.arrived(), 4);
    }

    #[test]
    fn users_that_end_before_it_count_toward_the_whole() {
        let r = Rendezvous::new(&scenario(None), false);
        assert!(r.is_before(0, 1), "at the send");
        assert!(!r.is_before(0, 2), "waiting at the rendezvous: arrived");
        assert!(!r.is_before(1, 0), "no such session");
        assert!(!r.arrive());
        r.miss();
        assert!(!r.released());
        r.miss();
        assert!(r.released(), "one arrived and two never will");
    }

    #[test]
    fn a_child_waits_for_its_parent() {
        let r = Rendezvous::new(&scenario(Some(1)), true);
        assert!(!r.arrive());
        assert!(!r.arrive());
        r.released.store(true, Ordering::Release);
        assert!(r.arrive());
    }
}
