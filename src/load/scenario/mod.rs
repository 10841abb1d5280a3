//! What users do: arrival phases and sessions of steps, compiled into flat step lists that every
//! simulated user walks with a program counter.
//!
//! Scenarios come from a TOML file (`file`) or are built in (`builtin`); both produce the same
//! [`Scenario`]. Loops are compiled into `LoopBegin`/`LoopEnd` pairs so a user's position is one
//! index plus at most [`MAX_COUNTED_LOOP_DEPTH`] counters, not a stack.

pub mod builtin;
pub mod file;
pub mod template;

pub use template::{Part, Template, Vars};

/// Counted loops may nest this deep: a user keeps one `u32` counter per level, and two levels
/// cover "N rounds of M messages" without growing every user's state for rare deeper nesting.
pub const MAX_COUNTED_LOOP_DEPTH: usize = 2;
/// Distinct `expect` names (transactions) per scenario, besides the built-in `connect`: each has a
/// latency histogram per second in every sample, so the count bounds the report's size.
pub const MAX_TRANSACTIONS: usize = 16;
/// Longest `think`, `expect` or `rendezvous` wait: one day. Longer waits are mistakes (units).
pub const MAX_WAIT_MS: u64 = 86_400_000;
/// Largest loop count: bounds the work of one user between blocking steps.
pub const MAX_LOOP_COUNT: u64 = 1_000_000;
/// Steps in one session after compiling loops; a step index is a `u16` in every user's state.
pub const MAX_STEPS: usize = 4096;

/// An arrival phase: users start at `arrival_rate` per second for `duration_ms`, at most
/// `max_users` of them in this phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub duration_ms: u64,
    pub arrival_rate: f64,
    pub max_users: Option<u64>,
}

/// How long a `think` step waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    Fixed {
        ms: u64,
    },
    /// Uniformly random in `[min_ms, max_ms]`.
    Random {
        min_ms: u64,
        max_ms: u64,
    },
    /// Until this time since the start of the run (a no-op once past).
    UntilMs(u64),
    /// Until the run ends: the user idles, holding its connection.
    UntilEnd,
}

/// When a loop stops repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopUntil {
    /// After `n` passes, counted in the user's counter `counter`.
    Count { n: u32, counter: u8 },
    /// When a pass ends at or after this time since the start of the run.
    TimeMs(u64),
    /// Never (the run's end closes the user).
    End,
}

/// One compiled step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Open the WebSocket: TCP connect, HTTP upgrade. `target` is the request path and query;
    /// `None` uses the path of `--url`.
    Connect {
        target: Option<Template>,
    },
    /// Send one data frame (`opcode` TEXT or BINARY) with the rendered bytes.
    Send {
        opcode: u8,
        data: Template,
    },
    /// Wait for a data frame containing the rendered text, at most `timeout_ms`; a transaction
    /// named `transactions[txn]`, its latency measured from the start of the wait.
    Expect {
        contains: Template,
        timeout_ms: u64,
        txn: u8,
    },
    Think(Think),
    /// Resets the loop's counter (counted loops) and falls through into the body.
    LoopBegin {
        counter: Option<u8>,
    },
    /// Jumps back to `body` (the first step of the body) unless `until` says the loop is done.
    LoopEnd {
        body: u16,
        until: LoopUntil,
    },
    /// Send a Close frame with `code` and end the session once the server answers.
    Close {
        code: u16,
    },
    /// Wait until `users` users of the run (all workers, all processes; `None`: every planned
    /// user) have reached this step or ended before they could, then go on together; a user that
    /// waited `timeout_ms` goes on alone and counts a `rendezvous_timeout`. At most one per
    /// scenario, outside loops.
    Rendezvous {
        users: Option<u64>,
        timeout_ms: u64,
    },
}

/// A session: a weighted way of behaving.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub name: String,
    /// Percent of arriving users that run this session; the sessions' sum is 100.
    pub probability: f64,
    pub steps: Vec<Step>,
}

/// A whole scenario, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Total run time; at its end every user is closed and the report written.
    pub duration_ms: u64,
    /// Users over the whole run (all phases, all processes); `None`: as the phases allow.
    pub users: Option<u64>,
    pub phases: Vec<Phase>,
    pub sessions: Vec<Session>,
    /// JSON field whose number is a `{ts_ns}` send time: a received frame that has it gives a
    /// delivery latency.
    pub timestamp_field: String,
    /// Transaction names; index 0 is `connect` (TCP connect + upgrade), the rest are the
    /// `expect` names in order of first appearance.
    pub transactions: Vec<String>,
}

/// Name of transaction 0: from the start of the TCP connect to the 101 response.
pub const CONNECT_TXN: &str = "connect";

impl Scenario {
    /// Whether every session keeps its connection to the end of the run (its last step idles
    /// or loops until the end), so the run's users are all connected at once.
    pub fn users_hold_to_end(&self) -> bool {
        self.sessions.iter().all(|s| {
            matches!(
                s.steps.last(),
                Some(Step::Think(Think::UntilEnd))
                    | Some(Step::LoopEnd {
                        until: LoopUntil::End,
                        ..
                    })
            )
        })
    }

    /// The session a user runs: picked by a hash of its id against the cumulative probabilities,
    /// so a run is reproducible and every process agrees on the mix.
    pub fn session_for(&self, user_id: u64) -> u8 {
        if self.sessions.len() == 1 {
            return 0;
        }
        let point = (splitmix64(user_id) % 10_000) as f64 / 100.0;
        let mut acc = 0.0;
        for (i, s) in self.sessions.iter().enumerate() {
            acc += s.probability;
            if point < acc {
                return i as u8;
            }
        }
        (self.sessions.len() - 1) as u8
    }

    /// Applies command-line overrides: `--users`, `--arrival-rate`, `--duration`.
    ///
    /// An arrival rate replaces the phases with one phase at that rate; it lasts until the users
    /// have arrived (`users / rate`) or, without a user count, the whole run.
    pub fn apply_overrides(
        &mut self,
        users: Option<u64>,
        arrival_rate: Option<f64>,
        duration_ms: Option<u64>,
    ) {
        if let Some(d) = duration_ms {
            self.duration_ms = d;
        }
        if let Some(u) = users {
            self.users = Some(u);
        }
        if let Some(rate) = arrival_rate {
            let duration_ms = match self.users {
                Some(u) => ((u as f64 / rate) * 1000.0).ceil() as u64 + 1,
                None => self.duration_ms,
            };
            self.phases = vec![Phase {
                duration_ms,
                arrival_rate: rate,
                max_users: None,
            }];
        }
    }

    /// How many users the scenario's rendezvous waits for, if it has one: its own count or
    /// every planned user, at most the planned users (more could never arrive).
    pub fn rendezvous_users(&self) -> Option<u64> {
        let planned = self.planned_users();
        self.sessions
            .iter()
            .flat_map(|s| &s.steps)
            .find_map(|step| match step {
                Step::Rendezvous { users, .. } => Some(users.unwrap_or(planned).min(planned)),
                _ => None,
            })
    }

    /// The users the phases let arrive, capped by `users`.
    pub fn planned_users(&self) -> u64 {
        let from_phases: u64 = self
            .phases
            .iter()
            .map(|p| {
                let by_rate = (p.arrival_rate * p.duration_ms as f64 / 1000.0).floor() as u64;
                p.max_users.map_or(by_rate, |m| m.min(by_rate))
            })
            .sum();
        self.users.map_or(from_phases, |u| u.min(from_phases))
    }
}

/// A fixed mixing function (SplitMix64's finalizer): spreads consecutive ids evenly.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(probabilities: &[f64]) -> Scenario {
        Scenario {
            name: "t".into(),
            duration_ms: 1000,
            users: None,
            phases: vec![Phase {
                duration_ms: 10_000,
                arrival_rate: 100.0,
                max_users: Some(500),
            }],
            sessions: probabilities
                .iter()
                .map(|&p| Session {
                    name: format!("s{p}"),
                    probability: p,
                    steps: vec![],
                })
                .collect(),
            timestamp_field: "ts_ns".into(),
            transactions: vec![CONNECT_TXN.into()],
        }
    }

    #[test]
    fn sessions_follow_probabilities() {
        let s = scenario(&[20.0, 80.0]);
        let first = (0..10_000).filter(|&u| s.session_for(u) == 0).count();
        assert!((1800..2200).contains(&first), "{first}");
    }

    #[test]
    fn overrides() {
        let mut s = scenario(&[100.0]);
        assert_eq!(s.planned_users(), 500);
        s.apply_overrides(Some(2000), Some(1000.0), Some(5000));
        assert_eq!(s.duration_ms, 5000);
        assert_eq!(
            s.phases,
            vec![Phase {
                duration_ms: 2001,
                arrival_rate: 1000.0,
                max_users: None
            }]
        );
        assert_eq!(s.planned_users(), 2000);
    }
}
