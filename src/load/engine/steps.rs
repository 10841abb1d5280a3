//! Running a user's session: the step machine, expects, timers, delivery latencies.

use super::conn::MAX_QUEUED_SENDS;
use super::user::{flag, Phase};
use super::{mono_ns, Engine};
use crate::load::scenario::{LoopUntil, Step, Think, Vars};
use crate::load::stats::ErrorKind;

/// Steps one user may run in one go before yielding to the others (a counted loop of sends).
const MAX_STEPS_PER_TURN: usize = 256;

impl Engine {
    fn vars(&self, slot: u32) -> Vars {
        let u = &self.users[slot as usize];
        Vars {
            user_id: u64::from(u.user_id),
            msg_ref: u.msg_ref,
            proc: self.setup.proc_index,
        }
    }

    /// Runs `slot`'s steps until one waits (think, expect, rendezvous, a full send queue) or the
    /// session ends.
    pub(super) fn advance(&mut self, slot: u32, now: u64) {
        let setup = self.setup.clone();
        let session = &setup.scenario.sessions[usize::from(self.users[slot as usize].session)];
        let mut steps_run = 0;
        loop {
            let u = &mut self.users[slot as usize];
            if u.phase() != Phase::Open || u.has(flag::TX_BLOCKED) {
                return;
            }
            let pc = usize::from(u.pc);
            let Some(step) = session.steps.get(pc) else {
                // The session is over.
                self.start_close(slot, crate::ws::close::NORMAL, now);
                return;
            };
            if steps_run >= MAX_STEPS_PER_TURN && !starts_a_wait(step) {
                // Budget spent: continue on the next loop turn. Only in front of a step that does
                // not wait, so this "continue" deadline is never taken for a wait's own timeout
                // (`on_deadline`); a waiting step still starts now. Past the budget only waiting
                // steps run, and a loop's end is not one, so that tail is bounded by the session.
                self.set_deadline(slot, now);
                return;
            }
            steps_run += 1;
            match step {
                // Only ever step 0, which the arrival ran.
                Step::Connect { .. } => u.pc += 1,
                Step::Send { opcode, data } => {
                    if self.queued(slot) >= MAX_QUEUED_SENDS {
                        self.users[slot as usize].set(flag::TX_BLOCKED);
                        return;
                    }
                    let u = &mut self.users[slot as usize];
                    u.msg_ref = u.msg_ref.wrapping_add(1);
                    u.pc += 1;
                    let vars = self.vars(slot);
                    let mut payload = std::mem::take(&mut self.scratch);
                    payload.clear();
                    data.render(&vars, mono_ns, &mut payload);
                    let f = self.client_frame(*opcode, &payload);
                    self.scratch = payload;
                    self.queue(slot, f, true);
                }
                Step::Expect { timeout_ms, .. } => {
                    let deadline = now + timeout_ms * 1_000_000;
                    self.set_deadline(slot, deadline);
                    return;
                }
                Step::Think(t) => {
                    let wake = match *t {
                        Think::Fixed { ms } => now + ms * 1_000_000,
                        Think::Random { min_ms, max_ms } => {
                            let span = (max_ms - min_ms) * 1_000_000;
                            let r = if span == 0 {
                                0
                            } else {
                                self.next_random() % (span + 1)
                            };
                            now + min_ms * 1_000_000 + r
                        }
                        Think::UntilMs(ms) => ms * 1_000_000,
                        // The end of the run closes every user; no timer needed.
                        Think::UntilEnd => return,
                    };
                    if wake > now {
                        self.set_deadline(slot, wake);
                        return;
                    }
                    self.users[slot as usize].pc += 1;
                }
                Step::LoopBegin { counter } => {
                    if let Some(c) = counter {
                        u.loops[usize::from(*c)] = 0;
                    }
                    u.pc += 1;
                }
                Step::LoopEnd { body, until } => {
                    let again = match *until {
                        LoopUntil::Count { n, counter } => {
                            let c = &mut u.loops[usize::from(counter)];
                            *c += 1;
                            *c < n
                        }
                        LoopUntil::TimeMs(ms) => now < ms * 1_000_000,
                        LoopUntil::End => true,
                    };
                    u.pc = if again { *body } else { u.pc + 1 };
                }
                Step::Close { code } => {
                    self.start_close(slot, *code, now);
                    return;
                }
                Step::Rendezvous { timeout_ms, .. } => {
                    self.cur.s.rendezvous += 1;
                    if self.setup.rendezvous.arrive() {
                        self.users[slot as usize].pc += 1;
                        continue;
                    }
                    let gen = self.users[slot as usize].gen;
                    self.set_deadline(slot, now + timeout_ms * 1_000_000);
                    self.parked.push((slot, gen));
                    return;
                }
            }
        }
    }

    /// Once the rendezvous is released, every user of this worker still waiting at it goes on.
    pub(super) fn release_parked(&mut self, now: u64) {
        if self.parked.is_empty() || !self.setup.rendezvous.released() {
            return;
        }
        for (slot, gen) in std::mem::take(&mut self.parked) {
            let u = &mut self.users[slot as usize];
            // Not if the slot has a new user, the user closed, or its wait timed out already.
            let waiting = u.gen == gen
                && u.phase() == Phase::Open
                && u.deadline_ns != 0
                && self.setup.rendezvous.is_at(u.session, u.pc);
            if waiting {
                // Clearing the deadline makes its timer-heap entry stale.
                u.deadline_ns = 0;
                u.pc += 1;
                self.advance(slot, now);
            }
        }
    }

    /// A wait of `slot` ended: connect timeout, expect timeout, think over, rendezvous timeout,
    /// close timeout.
    pub(super) fn on_deadline(&mut self, slot: u32, now: u64) {
        let u = &self.users[slot as usize];
        let (id, session, pc) = (u.user_id, u.session, u.pc);
        match u.phase() {
            Phase::Connecting | Phase::Handshake => {
                self.record_error(ErrorKind::ConnectTimeout);
                self.setup.report_error(
                    ErrorKind::ConnectTimeout,
                    format_args!(
                        "user {id}: no 101 within {} ms",
                        self.setup.connect_timeout_ms
                    ),
                );
                self.abort(slot);
            }
            Phase::Open => {
                let setup = self.setup.clone();
                let session = &setup.scenario.sessions[usize::from(session)];
                match session.steps.get(usize::from(pc)) {
                    Some(Step::Expect {
                        timeout_ms, txn, ..
                    }) => {
                        self.record_error(ErrorKind::ExpectTimeout);
                        self.setup.report_error(
                            ErrorKind::ExpectTimeout,
                            format_args!(
                                "user {id}: no frame for `{}` within {timeout_ms} ms",
                                setup.scenario.transactions[usize::from(*txn)]
                            ),
                        );
                        // The session goes on: a lost reply fails one transaction, not the user.
                        self.users[slot as usize].pc += 1;
                    }
                    Some(Step::Think(_)) => self.users[slot as usize].pc += 1,
                    Some(Step::Rendezvous { timeout_ms, .. }) => {
                        self.record_error(ErrorKind::RendezvousTimeout);
                        self.setup.report_error(
                            ErrorKind::RendezvousTimeout,
                            format_args!(
                                "user {id}: the rendezvous was not complete within {timeout_ms} ms \
                                 (this process counted {} of the users); going on",
                                self.setup.rendezvous.arrived()
                            ),
                        );
                        self.users[slot as usize].pc += 1;
                    }
                    // Any other step: the deadline was a yield after the step budget.
                    _ => {}
                }
                self.advance(slot, now);
            }
            // The server did not answer our Close in time: close TCP anyway.
            Phase::Closing => self.abort(slot),
            Phase::Free | Phase::HalfClosed | Phase::Aborting | Phase::Releasing => {}
        }
    }

    /// A complete data message on an open (or closing) connection.
    pub(super) fn on_message(&mut self, slot: u32, data: &[u8]) {
        self.cur.s.received += 1;
        if let Some(ts) = self.timestamp_in(data) {
            let now = mono_ns();
            // Only plausible stamps: sent on this box, at most the histogram's range ago.
            if ts <= now && now - ts < crate::load::stats::MAX_LATENCY_US * 1000 {
                self.cur
                    .delivery
                    .saturating_record(((now - ts) / 1000).max(1));
            }
        }
        let u = &self.users[slot as usize];
        if u.phase() != Phase::Open || u.deadline_ns == 0 {
            return;
        }
        let setup = self.setup.clone();
        let session = &setup.scenario.sessions[usize::from(u.session)];
        let Some(Step::Expect {
            contains,
            timeout_ms,
            txn,
        }) = session.steps.get(usize::from(u.pc))
        else {
            return;
        };
        let vars = self.vars(slot);
        let mut pattern = std::mem::take(&mut self.pattern);
        pattern.clear();
        contains.render(&vars, mono_ns, &mut pattern);
        let found = memchr::memmem::find(data, &pattern).is_some();
        self.pattern = pattern;
        if !found {
            return;
        }
        let now = self.now();
        let u = &mut self.users[slot as usize];
        let started = u.deadline_ns.saturating_sub(timeout_ms * 1_000_000);
        u.deadline_ns = 0;
        u.pc += 1;
        self.record_txn(usize::from(*txn), now.saturating_sub(started));
        self.advance(slot, now);
    }

    /// The number after `"<timestamp_field>":` in `data`, if any.
    fn timestamp_in(&self, data: &[u8]) -> Option<u64> {
        let at = self.ts_finder.find(data)? + self.ts_finder.needle().len();
        let digits = data[at..]
            .iter()
            .skip_while(|b| **b == b' ')
            .take_while(|b| b.is_ascii_digit())
            .take(20)
            .try_fold(0u64, |acc, b| {
                acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            })?;
        Some(digits)
    }
}

/// Whether `step` can start a wait with a deadline (its own timeout or end): such a step is never
/// the one a yield stops in front of.
fn starts_a_wait(step: &Step) -> bool {
    matches!(
        step,
        Step::Think(_) | Step::Expect { .. } | Step::Rendezvous { .. }
    )
}
