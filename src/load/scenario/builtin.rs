//! The built-in scenarios, written as the same steps a file would give.
//!
//! - `seed`: the Phoenix benchmark's Tsung session — connect to `/socket/websocket` (V1, no
//!   `vsn`), join `rooms:lobby`, then idle until the end. A server with Phoenix's 60 s idle
//!   timeout closes idle users after a minute (raise it for long runs, as the benchmark did).
//! - `phoenix-idle`: what an idle phoenix.js client does — V2 join, then a heartbeat every 30 s
//!   whose reply is awaited (transaction `heartbeat`).
//! - `chat`: N rooms (`user_id % rooms`); once everyone has joined (a `rendezvous` over all
//!   users, then [`CHAT_SETTLE_MS`] after the scheduled last arrival), every member posts every
//!   `post_interval_ms` a message carrying its send time; every member receives every post of its
//!   room, which gives the delivery latency. Posting stops [`CHAT_DRAIN_MS`] before the end so the
//!   last posts are delivered before users close.

use super::template::Template;
use super::{LoopUntil, Phase, Scenario, Session, Step, Think, CONNECT_TXN};
use crate::ws::frame::opcode;

/// Names accepted by `--scenario` besides a file path.
pub const NAMES: [&str; 3] = ["seed", "phoenix-idle", "chat"];

/// Chat posting ends this long before the run ends, so posts in flight arrive before the close.
pub const CHAT_DRAIN_MS: u64 = 2_000;
/// Chat posting starts this long after the scheduled last arrival, and not before every user has
/// joined (the rendezvous), so every member hears every post.
pub const CHAT_SETTLE_MS: u64 = 1_000;
/// A chat user waits at the rendezvous at most the arrival time plus this, for users that have
/// not joined (a slow box, refused joins), before it posts anyway.
pub const CHAT_RENDEZVOUS_GRACE_MS: u64 = 10_000;
/// phoenix.js's heartbeat interval.
pub const HEARTBEAT_MS: u64 = 30_000;

/// The values a built-in scenario is made from (command-line flags or the defaults).
#[derive(Debug, Clone)]
pub struct Params {
    pub users: Option<u64>,
    pub arrival_rate: Option<f64>,
    pub duration_ms: Option<u64>,
    /// Path and query of `--url` when it has one (else the Phoenix default is used).
    pub url_target: Option<String>,
    pub rooms: u32,
    pub post_interval_ms: u64,
}

fn t(s: &str) -> Template {
    Template::parse(s).expect("built-in templates are valid")
}

fn text(s: &str) -> Step {
    Step::Send {
        opcode: opcode::TEXT,
        data: t(s),
    }
}

fn expect(contains: &str, txn: u8) -> Step {
    Step::Expect {
        contains: t(contains),
        timeout_ms: 10_000,
        txn,
    }
}

/// `/socket/websocket?vsn=2.0.0`, or the URL's target with `vsn=2.0.0` added if it has no `vsn`.
fn v2_target(url_target: &Option<String>) -> Template {
    let base = url_target.as_deref().unwrap_or("/socket/websocket");
    if base.contains("vsn=") {
        return Template::literal(base);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Template::literal(&format!("{base}{sep}vsn=2.0.0"))
}

/// Builds built-in `name`; `Err` names the problem (unknown name, a duration too short).
pub fn build(name: &str, p: &Params) -> Result<Scenario, String> {
    let (users, rate, duration_ms) = match name {
        "seed" => (1000, 200.0, 60_000),
        "phoenix-idle" => (1000, 200.0, 120_000),
        "chat" => (100, 100.0, 30_000),
        other => {
            return Err(format!(
                "unknown scenario {other:?}: not a file and not one of {NAMES:?}"
            ))
        }
    };
    let users = p.users.unwrap_or(users);
    let rate = p.arrival_rate.unwrap_or(rate);
    let duration_ms = p.duration_ms.unwrap_or(duration_ms);
    let arrive_ms = ((users as f64 / rate) * 1000.0).ceil() as u64 + 1;
    let mut transactions = vec![CONNECT_TXN.to_string(), "join".to_string()];
    let steps = match name {
        "seed" => vec![
            Step::Connect {
                target: Some(Template::literal(
                    p.url_target.as_deref().unwrap_or("/socket/websocket"),
                )),
            },
            text(
                r#"{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"{user_id}"},"ref":"1"}"#,
            ),
            expect(r#""status":"ok""#, 1),
            Step::Think(Think::UntilEnd),
        ],
        "phoenix-idle" => {
            transactions.push("heartbeat".into());
            vec![
                Step::Connect {
                    target: Some(v2_target(&p.url_target)),
                },
                text(r#"["{ref}","{ref}","rooms:lobby","phx_join",{"user":"{user_id}"}]"#),
                expect(r#""rooms:lobby","phx_reply",{"status":"ok""#, 1),
                Step::LoopBegin { counter: None },
                Step::Think(Think::Fixed { ms: HEARTBEAT_MS }),
                text(r#"[null,"{ref}","phoenix","heartbeat",{}]"#),
                expect(r#""{ref}","phoenix","phx_reply",{"status":"ok""#, 2),
                Step::LoopEnd {
                    body: 4,
                    until: LoopUntil::End,
                },
            ]
        }
        _ => {
            // chat
            if p.rooms == 0 {
                return Err("--rooms must be at least 1".into());
            }
            if p.post_interval_ms == 0 {
                return Err("--post-interval-ms must be at least 1".into());
            }
            let start_ms = arrive_ms + CHAT_SETTLE_MS;
            let stop_ms = duration_ms.saturating_sub(CHAT_DRAIN_MS);
            if start_ms >= stop_ms {
                return Err(format!(
                    "chat: a {duration_ms} ms run leaves no time to post: users arrive for \
                     {arrive_ms} ms, posting starts {CHAT_SETTLE_MS} ms later and stops \
                     {CHAT_DRAIN_MS} ms before the end; raise --duration or --arrival-rate"
                ));
            }
            transactions.push("post".into());
            let rooms = p.rooms;
            vec![
                Step::Connect {
                    target: Some(v2_target(&p.url_target)),
                },
                text(&format!(
                    r#"["{{ref}}","{{ref}}","rooms:{{user_id%{rooms}}}","phx_join",{{"user":"{{user_id}}"}}]"#
                )),
                expect(r#""phx_reply",{"status":"ok""#, 1),
                // Every user waits for the last to join: on a box slower than the schedule, an
                // early post would miss the members that join after it.
                Step::Rendezvous {
                    users: None,
                    timeout_ms: arrive_ms + CHAT_RENDEZVOUS_GRACE_MS,
                },
                Step::Think(Think::UntilMs(start_ms)),
                Step::Think(Think::Random {
                    min_ms: 0,
                    max_ms: p.post_interval_ms,
                }),
                Step::LoopBegin { counter: None },
                text(&format!(
                    r#"["1","{{ref}}","rooms:{{user_id%{rooms}}}","new_msg",{{"body":"hello from {{user_id}}","ts_ns":{{ts_ns}}}}]"#
                )),
                expect(
                    &format!(
                        r#""{{ref}}","rooms:{{user_id%{rooms}}}","phx_reply",{{"status":"ok""#
                    ),
                    2,
                ),
                Step::Think(Think::Fixed {
                    ms: p.post_interval_ms,
                }),
                Step::LoopEnd {
                    body: 7,
                    until: LoopUntil::TimeMs(stop_ms),
                },
                Step::Think(Think::UntilEnd),
            ]
        }
    };
    Ok(Scenario {
        name: name.to_string(),
        duration_ms,
        users: Some(users),
        phases: vec![Phase {
            duration_ms: arrive_ms,
            arrival_rate: rate,
            max_users: None,
        }],
        sessions: vec![Session {
            name: name.to_string(),
            probability: 100.0,
            steps,
        }],
        timestamp_field: "ts_ns".into(),
        transactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::scenario::Vars;

    fn params() -> Params {
        Params {
            users: Some(10),
            arrival_rate: Some(10.0),
            duration_ms: Some(10_000),
            url_target: None,
            rooms: 3,
            post_interval_ms: 500,
        }
    }

    /// The built-ins keep every user connected to the end; a session that closes does not.
    #[test]
    fn builtins_hold_their_users_to_the_end() {
        for name in NAMES {
            assert!(
                build(name, &params()).unwrap().users_hold_to_end(),
                "{name}"
            );
        }
        let mut s = build("seed", &params()).unwrap();
        s.sessions[0].steps.pop();
        assert!(!s.users_hold_to_end());
    }

    fn sent(s: &Scenario, step: usize, vars: &Vars) -> String {
        match &s.sessions[0].steps[step] {
            Step::Send { data, .. } => data.render_string(vars, 42),
            Step::Expect { contains, .. } => contains.render_string(vars, 42),
            Step::Connect { target } => target.as_ref().unwrap().render_string(vars, 42),
            other => panic!("{other:?}"),
        }
    }

    const VARS: Vars = Vars {
        user_id: 7,
        msg_ref: 1,
        proc: 0,
    };

    #[test]
    fn seed_is_the_tsung_v1_session() {
        let s = build("seed", &params()).unwrap();
        assert_eq!(sent(&s, 0, &VARS), "/socket/websocket");
        assert_eq!(
            sent(&s, 1, &VARS),
            r#"{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"7"},"ref":"1"}"#
        );
        assert_eq!(s.planned_users(), 10);
    }

    #[test]
    fn chat_posts_in_its_room_with_a_timestamp() {
        let s = build("chat", &params()).unwrap();
        assert_eq!(sent(&s, 0, &VARS), "/socket/websocket?vsn=2.0.0");
        assert_eq!(
            sent(&s, 1, &VARS),
            r#"["1","1","rooms:1","phx_join",{"user":"7"}]"#
        );
        let vars = Vars { msg_ref: 5, ..VARS };
        assert_eq!(
            sent(&s, 7, &vars),
            r#"["1","5","rooms:1","new_msg",{"body":"hello from 7","ts_ns":42}]"#
        );
        assert_eq!(
            sent(&s, 8, &vars),
            r#""5","rooms:1","phx_reply",{"status":"ok""#
        );
        assert_eq!(
            s.sessions[0].steps[3],
            Step::Rendezvous {
                users: None,
                timeout_ms: 1001 + CHAT_RENDEZVOUS_GRACE_MS
            }
        );
        assert_eq!(s.rendezvous_users(), Some(10));
        assert_eq!(
            s.sessions[0].steps[4],
            Step::Think(Think::UntilMs(1001 + CHAT_SETTLE_MS))
        );
        assert_eq!(
            s.sessions[0].steps[10],
            Step::LoopEnd {
                body: 7,
                until: LoopUntil::TimeMs(10_000 - CHAT_DRAIN_MS)
            }
        );
    }

    #[test]
    fn chat_refuses_a_run_too_short_to_post() {
        let p = Params {
            duration_ms: Some(3000),
            ..params()
        };
        let e = build("chat", &p).unwrap_err();
        assert!(e.contains("leaves no time to post"), "{e}");
        assert!(build("nope", &p).unwrap_err().contains("unknown scenario"));
    }

    #[test]
    fn v2_target_keeps_a_given_vsn() {
        let url = Some("/ws?vsn=1.0.0".to_string());
        assert_eq!(v2_target(&url), Template::literal("/ws?vsn=1.0.0"));
        let url = Some("/ws?token=a".to_string());
        assert_eq!(v2_target(&url), Template::literal("/ws?token=a&vsn=2.0.0"));
    }
}
