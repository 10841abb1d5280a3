//! A coarse hashed timer wheel: one timeout SQE per tick serves every deadline of a worker.
//!
//! Each connection has at most one entry (`slot`, `generation`). Activity never touches the wheel:
//! it only moves `Conn::deadline_tick` later. When an entry's bucket comes due, the owner compares
//! the connection's current deadline: still in the future → the entry is re-inserted there; passed
//! → it expires. So an active connection costs one re-insert per timeout period and an idle one
//! costs nothing until its deadline.
//!
//! Moving a deadline earlier files a second entry (the first cannot be found without a search),
//! so a connection may have more than one entry. Its deadline must still fire once: `judge` takes
//! the connection out of the wheel (clears its mark) the moment one entry expires, so every other
//! entry of it — in the same bucket or a later one — is stale from then on. `schedule` and `judge`
//! are the whole contract between a connection's mark and deadline and the wheel.

/// A due entry, to be checked against the connection it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub slot: u32,
    pub gen: u32,
}

/// What the owner decides for a due entry.
pub enum Verdict {
    /// The slot changed hands or left the wheel: drop the entry.
    Stale,
    /// The deadline passed: drop the entry; the owner acts on it.
    Expired,
    /// The deadline moved to this tick: keep the entry until then.
    Later(u32),
}

/// A connection's side of the wheel: its generation, whether it has a live entry, its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub gen: u32,
    pub in_wheel: bool,
    pub deadline_tick: u32,
}

/// Judges a due entry against its connection's mark. An expired entry takes the connection out of
/// the wheel, so its other entries are stale and the deadline fires once.
pub fn judge(entry: Entry, mark: &mut Mark, now_tick: u32) -> Verdict {
    if mark.gen != entry.gen || !mark.in_wheel {
        return Verdict::Stale;
    }
    if mark.deadline_tick <= now_tick {
        mark.in_wheel = false;
        Verdict::Expired
    } else {
        Verdict::Later(mark.deadline_tick)
    }
}

pub struct Wheel {
    buckets: Vec<Vec<Entry>>,
    /// Last tick whose bucket was processed.
    cursor: u32,
    spare: Vec<Entry>,
}

impl Wheel {
    /// `span_ticks` buckets; deadlines further out wait in the last bucket and are re-inserted.
    pub fn new(span_ticks: usize) -> Self {
        assert!(span_ticks >= 2);
        Self {
            buckets: (0..span_ticks).map(|_| Vec::new()).collect(),
            cursor: 0,
            spare: Vec::new(),
        }
    }

    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Files an entry due at `deadline_tick` (clamped into the wheel's span, never in the past).
    pub fn insert(&mut self, entry: Entry, deadline_tick: u32) {
        let span = self.buckets.len() as u32;
        let due = deadline_tick.clamp(self.cursor + 1, self.cursor + span - 1);
        self.buckets[(due % span) as usize].push(entry);
    }

    /// Sets the deadline of connection `slot` to `deadline_tick`. Moving it later needs no wheel
    /// work (the entry is re-filed when it comes due); a connection without an entry, or whose
    /// deadline moved earlier, gets one due in time.
    pub fn schedule(&mut self, slot: u32, mark: &mut Mark, deadline_tick: u32) {
        let earlier = deadline_tick < mark.deadline_tick;
        mark.deadline_tick = deadline_tick;
        if !mark.in_wheel || earlier {
            mark.in_wheel = true;
            self.insert(
                Entry {
                    slot,
                    gen: mark.gen,
                },
                deadline_tick,
            );
        }
    }

    /// Processes every bucket up to `now_tick`. `judge` decides each due entry; expired ones are
    /// appended to `expired` for the owner to act on after the wheel is released.
    pub fn advance(
        &mut self,
        now_tick: u32,
        mut judge: impl FnMut(Entry) -> Verdict,
        expired: &mut Vec<Entry>,
    ) {
        let span = self.buckets.len() as u32;
        while self.cursor < now_tick {
            self.cursor += 1;
            let index = (self.cursor % span) as usize;
            std::mem::swap(&mut self.buckets[index], &mut self.spare);
            let mut due = std::mem::take(&mut self.spare);
            for entry in due.drain(..) {
                match judge(entry) {
                    Verdict::Stale => {}
                    Verdict::Expired => expired.push(entry),
                    Verdict::Later(tick) => self.insert(entry, tick),
                }
            }
            // A bucket that held a burst does not keep the burst's capacity for good.
            if due.capacity() > 4096 {
                due.shrink_to(1024);
            }
            self.spare = due;
        }
    }

    /// Entries held (for memory accounting).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(slot: u32) -> Entry {
        Entry { slot, gen: 0 }
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::new(8);
        w.insert(e(1), 3);
        let mut out = Vec::new();
        w.advance(2, |_| Verdict::Expired, &mut out);
        assert!(out.is_empty());
        w.advance(3, |_| Verdict::Expired, &mut out);
        assert_eq!(out, vec![e(1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_are_reinserted_until_due() {
        let mut w = Wheel::new(4);
        let deadline = 10;
        w.insert(e(7), deadline);
        let mut out = Vec::new();
        for now in 1..=10 {
            w.advance(
                now,
                |_| {
                    if now >= deadline {
                        Verdict::Expired
                    } else {
                        Verdict::Later(deadline)
                    }
                },
                &mut out,
            );
            if now < deadline {
                assert!(out.is_empty(), "fired early at {now}");
            }
        }
        assert_eq!(out, vec![e(7)]);
    }

    proptest! {
        /// Against a model: every entry expires at exactly max(deadline, first tick) — never early,
        /// never lost, never twice — whatever the span and however the clock jumps.
        #[test]
        fn expires_exactly_once_at_deadline(span in 2usize..16, deadlines in proptest::collection::vec(1u32..100, 1..50), steps in proptest::collection::vec(1u32..7, 1..60)) {
            let mut w = Wheel::new(span);
            for (i, d) in deadlines.iter().enumerate() {
                w.insert(e(i as u32), *d);
            }
            let mut fired = vec![None; deadlines.len()];
            let mut now = 0;
            for step in steps {
                now += step;
                let mut out = Vec::new();
                w.advance(now, |en| {
                    let d = deadlines[en.slot as usize];
                    if d <= now { Verdict::Expired } else { Verdict::Later(d) }
                }, &mut out);
                for en in out {
                    prop_assert!(fired[en.slot as usize].is_none(), "fired twice");
                    fired[en.slot as usize] = Some(now);
                }
            }
            for (i, d) in deadlines.iter().enumerate() {
                match fired[i] {
                    Some(t) => prop_assert!(t >= *d, "entry {} due {} fired at {}", i, d, t),
                    None => prop_assert!(*d > now, "entry {} due {} never fired by {}", i, d, now),
                }
            }
        }
    }

    /// Owner model for `schedule`/`judge`: one mark per slot, deadlines fired as the worker does.
    fn run_marks(w: &mut Wheel, marks: &mut [Mark], now: u32, fired: &mut Vec<(u32, u32)>) {
        let mut out = Vec::new();
        w.advance(
            now,
            |en| judge(en, &mut marks[en.slot as usize], now),
            &mut out,
        );
        fired.extend(out.iter().map(|en| (en.slot, now)));
    }

    /// Issue 9, defect 4: an entry re-filed onto the bucket of an earlier-moved deadline's entry
    /// (two entries, one bucket) fires once.
    #[test]
    fn moved_earlier_deadline_fires_once() {
        let mut w = Wheel::new(8);
        let mut marks = [Mark {
            gen: 3,
            in_wheel: false,
            deadline_tick: 0,
        }];
        let mut fired = Vec::new();
        // Handshake deadline at 4; the idle deadline (2) moves it earlier: a second entry.
        w.schedule(0, &mut marks[0], 4);
        w.schedule(0, &mut marks[0], 2);
        assert_eq!(w.len(), 2);
        // Activity moves it to 4 before tick 2: the idle entry is re-filed onto the handshake
        // entry's bucket, and at 4 both are re-filed to 6.
        marks[0].deadline_tick = 4;
        run_marks(&mut w, &mut marks, 2, &mut fired);
        marks[0].deadline_tick = 6;
        run_marks(&mut w, &mut marks, 4, &mut fired);
        assert_eq!(w.len(), 2);
        assert!(fired.is_empty());
        run_marks(&mut w, &mut marks, 6, &mut fired);
        assert_eq!(fired, vec![(0, 6)]);
        assert!(!marks[0].in_wheel);
        // The owner acts (a close deadline): the next deadline fires once too.
        w.schedule(0, &mut marks[0], 9);
        run_marks(&mut w, &mut marks, 9, &mut fired);
        assert_eq!(fired, vec![(0, 6), (0, 9)]);
        assert!(w.is_empty());
    }

    proptest! {
        /// Against a model: whatever the sequence of deadline moves (earlier, later, re-filed after
        /// firing) and clock jumps, a deadline fires once, never early, never lost.
        #[test]
        fn deadlines_fire_once_whatever_the_moves(
            span in 2usize..16,
            ops in proptest::collection::vec((0u32..4, 1u32..30, 0u32..4), 1..80),
        ) {
            let mut w = Wheel::new(span);
            let mut marks = vec![Mark { gen: 0, in_wheel: false, deadline_tick: 0 }; 4];
            let mut now = 0;
            for (slot, ahead, step) in ops {
                let m = &mut marks[slot as usize];
                if ahead % 3 == 0 && m.in_wheel {
                    // Activity: later, no wheel work.
                    m.deadline_tick = m.deadline_tick.max(now + ahead);
                } else {
                    w.schedule(slot, m, now + ahead);
                }
                let due: Vec<Option<u32>> =
                    marks.iter().map(|m| m.in_wheel.then_some(m.deadline_tick)).collect();
                now += step;
                let mut fired = Vec::new();
                run_marks(&mut w, &mut marks, now, &mut fired);
                for (i, d) in due.iter().enumerate() {
                    let n = fired.iter().filter(|f| f.0 == i as u32).count();
                    match d {
                        Some(d) if *d <= now => prop_assert_eq!(n, 1, "slot {} due {} at {}", i, d, now),
                        _ => prop_assert_eq!(n, 0, "slot {} fired early at {}", i, now),
                    }
                }
            }
        }
    }
}
