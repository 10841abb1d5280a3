//! When this worker's users arrive, and which ids they get.
//!
//! With `G` workers over all processes, worker `g` starts the run's users `g, g+G, g+2G, ...`, and
//! its `k`-th arrival of a phase is due at `phase_start + (k·G + g) / rate`: the workers' arrivals
//! interleave into one evenly spaced stream at the phase's rate, and user ids are dense
//! (`0..users`) without any coordination between workers or processes.

use crate::load::scenario::Scenario;

/// `total` split over `parts`: part `i`'s share (the first `total % parts` parts get one more).
pub fn share(total: u64, i: u64, parts: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

struct PhasePlan {
    start_ns: u64,
    end_ns: u64,
    rate: f64,
    /// This worker's share of the phase's `max_users`.
    cap: u64,
}

/// This worker's arrival schedule.
pub struct Arrivals {
    phases: Vec<PhasePlan>,
    phase: usize,
    in_phase: u64,
    started: u64,
    cap: u64,
    g: u64,
    workers: u64,
}

impl Arrivals {
    /// The schedule of worker `g` of `workers` (over all processes).
    pub fn new(scenario: &Scenario, g: u64, workers: u64) -> Self {
        let mut start_ns = 0u64;
        let phases = scenario
            .phases
            .iter()
            .map(|p| {
                let end_ns = start_ns + p.duration_ms * 1_000_000;
                let plan = PhasePlan {
                    start_ns,
                    end_ns,
                    rate: p.arrival_rate,
                    cap: p.max_users.map_or(u64::MAX, |m| share(m, g, workers)),
                };
                start_ns = end_ns;
                plan
            })
            .collect();
        Self {
            phases,
            phase: 0,
            in_phase: 0,
            started: 0,
            cap: scenario.users.map_or(u64::MAX, |u| share(u, g, workers)),
            g,
            workers,
        }
    }

    /// Run-relative time of the next arrival, ns; `None` when no more users will arrive.
    pub fn next_due_ns(&mut self) -> Option<u64> {
        if self.started >= self.cap {
            return None;
        }
        while let Some(p) = self.phases.get(self.phase) {
            let offset_s = (self.in_phase * self.workers + self.g) as f64 / p.rate;
            let due = p.start_ns + (offset_s * 1e9) as u64;
            if self.in_phase < p.cap && due < p.end_ns {
                return Some(due);
            }
            self.phase += 1;
            self.in_phase = 0;
        }
        None
    }

    /// Takes the arrival `next_due_ns` announced; returns the user's run-wide id.
    pub fn take(&mut self) -> u64 {
        let id = self.g + self.workers * self.started;
        self.started += 1;
        self.in_phase += 1;
        id
    }

    /// Users started so far.
    pub fn started(&self) -> u64 {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::scenario::{Phase, Scenario, CONNECT_TXN};

    fn scenario(users: Option<u64>, phases: Vec<Phase>) -> Scenario {
        Scenario {
            name: "t".into(),
            duration_ms: 100_000,
            users,
            phases,
            sessions: vec![],
            timestamp_field: "ts_ns".into(),
            transactions: vec![CONNECT_TXN.into()],
        }
    }

    fn all(s: &Scenario, g: u64, workers: u64) -> Vec<(u64, u64)> {
        let mut a = Arrivals::new(s, g, workers);
        let mut out = Vec::new();
        while let Some(due) = a.next_due_ns() {
            out.push((due, a.take()));
            assert!(out.len() < 100_000);
        }
        out
    }

    #[test]
    fn workers_interleave_into_one_stream_with_dense_ids() {
        let s = scenario(
            Some(7),
            vec![Phase {
                duration_ms: 10_000,
                arrival_rate: 2.0,
                max_users: None,
            }],
        );
        let mut merged: Vec<(u64, u64)> = (0..3).flat_map(|g| all(&s, g, 3)).collect();
        merged.sort();
        let expect: Vec<(u64, u64)> = (0..7).map(|i| (i * 500_000_000, i)).collect();
        assert_eq!(merged, expect);
    }

    #[test]
    fn phases_cap_and_follow_each_other() {
        let s = scenario(
            None,
            vec![
                Phase {
                    duration_ms: 1000,
                    arrival_rate: 10.0,
                    max_users: Some(4),
                },
                Phase {
                    duration_ms: 500,
                    arrival_rate: 4.0,
                    max_users: None,
                },
            ],
        );
        let a = all(&s, 0, 1);
        let due: Vec<u64> = a.iter().map(|x| x.0 / 1_000_000).collect();
        assert_eq!(due, vec![0, 100, 200, 300, 1000, 1250]);
        assert_eq!(share(10, 0, 4), 3);
        assert_eq!(share(10, 3, 4), 2);
    }
}
