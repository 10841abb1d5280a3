//! A coarse hashed timer wheel: one timeout SQE per tick serves every deadline of a worker.
//!
//! Each connection has at most one entry (`slot`, `generation`). Activity never touches the wheel:
//! it only moves `Conn::deadline_tick` later. When an entry's bucket comes due, the owner compares
//! the connection's current deadline: still in the future → the entry is re-inserted there; passed
//! → it expires. So an active connection costs one re-insert per timeout period and an idle one
//! costs nothing until its deadline.

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
}
