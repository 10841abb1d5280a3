//! Scenario files (TOML): parsing, validation, compilation into a [`Scenario`].
//!
//! Every error names the file, the line and the field at fault, and quotes the line: a scenario
//! is written by hand and run against servers that take minutes to fill, so a mistake should
//! cost one glance, not one run.
//!
//! ```toml
//! name = "chat-ish"
//! duration_s = 60
//! users = 1000                      # over all phases (optional)
//! timestamp_field = "ts_ns"         # optional, the default
//!
//! [[phases]]
//! duration_s = 10
//! arrival_rate = 100                # users per second
//! max_users = 800                   # optional
//!
//! [[sessions]]
//! name = "poster"
//! probability = 100                 # percent; the sessions' sum must be 100
//! steps = [
//!   { connect = { path = "/socket/websocket?vsn=2.0.0" } },
//!   { send = { text = '["1","1","rooms:{user_id%10}","phx_join",{}]' } },
//!   { expect = { contains = '"status":"ok"', timeout_ms = 5000, name = "join" } },
//!   { loop = { count = "forever", steps = [
//!       { think = { min_ms = 1000, max_ms = 3000 } },
//!       { send = { text = '["1","{ref}","rooms:{user_id%10}","new_msg",{"ts_ns":{ts_ns}}]' } },
//!   ] } },
//! ]
//! ```

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::template::Template;
use super::{
    LoopUntil, Phase, Scenario, Session, Step, Think, CONNECT_TXN, MAX_COUNTED_LOOP_DEPTH,
    MAX_LOOP_COUNT, MAX_STEPS, MAX_TRANSACTIONS, MAX_WAIT_MS,
};
use crate::ws::frame::opcode;

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value is out of range; fix the quoted line.
    #[error("{path}:{line}: {field}: {message}\n{line:>6} | {text}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        message: String,
        text: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    duration_s: Option<Spanned<f64>>,
    users: Option<Spanned<u64>>,
    timestamp_field: Option<Spanned<String>>,
    #[serde(default)]
    phases: Vec<Spanned<RawPhase>>,
    #[serde(default)]
    sessions: Vec<Spanned<RawSession>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    duration_s: Spanned<f64>,
    arrival_rate: Spanned<f64>,
    max_users: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    name: Option<String>,
    probability: Option<Spanned<f64>>,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawStep {
    Connect(RawConnect),
    Send(RawSend),
    Expect(RawExpect),
    Think(RawThink),
    Loop(RawLoop),
    Close(RawClose),
    Rendezvous(RawRendezvous),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnect {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSend {
    text: Option<Spanned<String>>,
    binary: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    contains: Spanned<String>,
    timeout_ms: Option<Spanned<u64>>,
    name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThink {
    ms: Option<Spanned<u64>>,
    min_ms: Option<Spanned<u64>>,
    max_ms: Option<Spanned<u64>>,
    until_ms: Option<Spanned<u64>>,
    until: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoop {
    count: Option<Spanned<toml::Value>>,
    until_ms: Option<Spanned<u64>>,
    until: Option<Spanned<String>>,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClose {
    code: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRendezvous {
    users: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
}

/// Default `expect` timeout: Phoenix's push timeout.
pub const DEFAULT_EXPECT_TIMEOUT_MS: u64 = 10_000;
/// Default `rendezvous` timeout: long enough for a slow ramp to finish arriving, short enough
/// that a run whose users cannot all join still gets on with its session.
pub const DEFAULT_RENDEZVOUS_TIMEOUT_MS: u64 = 60_000;

/// Reads and compiles a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// Compiles scenario `text`; `path` only names the file in errors.
pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let field = field_at(text, &span);
        invalid(path, text, &span, &field, e.message().trim())
    })?;
    Compiler {
        path,
        text,
        transactions: vec![CONNECT_TXN.to_string()],
        rendezvous: false,
    }
    .compile(raw)
}

/// The key a TOML error points at or into: the span's own text when it is a key, else the last
/// `key =` before it on its line.
fn field_at(text: &str, span: &Range<usize>) -> String {
    let start = span.start.min(text.len());
    let own = text.get(span.clone()).unwrap_or("").trim();
    if !own.is_empty()
        && own
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && text[span.end.min(text.len())..]
            .trim_start()
            .starts_with('=')
    {
        return own.to_string();
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..start];
    let Some(eq) = before.rfind('=') else {
        return "(file)".to_string();
    };
    let key: String = before[..eq]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.is_empty() {
        "(file)".to_string()
    } else {
        key
    }
}

fn invalid(
    path: &str,
    text: &str,
    span: &Range<usize>,
    field: &str,
    message: &str,
) -> ScenarioError {
    let start = span.start.min(text.len());
    let line = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
    let line_text = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end()
        .to_string();
    ScenarioError::Invalid {
        path: path.to_string(),
        line,
        field: field.to_string(),
        message: message.to_string(),
        text: line_text,
    }
}

struct Compiler<'a> {
    path: &'a str,
    text: &'a str,
    transactions: Vec<String>,
    /// A `rendezvous` step was compiled (one per scenario: users share one count).
    rendezvous: bool,
}

type Res<T> = Result<T, ScenarioError>;

impl Compiler<'_> {
    fn err<T>(&self, span: &Range<usize>, field: &str, message: impl Into<String>) -> Res<T> {
        Err(invalid(self.path, self.text, span, field, &message.into()))
    }

    fn template(&self, s: &Spanned<String>, field: &str) -> Res<Template> {
        Template::parse(s.get_ref()).or_else(|e| self.err(&s.span(), field, e.to_string()))
    }

    fn wait_ms(&self, v: &Spanned<u64>, field: &str) -> Res<u64> {
        if *v.get_ref() > MAX_WAIT_MS {
            return self.err(
                &v.span(),
                field,
                format!("must be at most {MAX_WAIT_MS} ms (one day)"),
            );
        }
        Ok(*v.get_ref())
    }

    fn compile(mut self, raw: RawFile) -> Res<Scenario> {
        let whole = 0..0;
        let duration_ms = match &raw.duration_s {
            Some(d) => self.seconds(d, "duration_s")?,
            None => 0,
        };
        let mut phases = Vec::new();
        for (i, p) in raw.phases.iter().enumerate() {
            let p = p.get_ref();
            let f = format!("phases[{i}]");
            let rate = *p.arrival_rate.get_ref();
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                return self.err(
                    &p.arrival_rate.span(),
                    &format!("{f}.arrival_rate"),
                    "must be a number of users per second in (0, 10000000]",
                );
            }
            phases.push(Phase {
                duration_ms: self.seconds(&p.duration_s, &format!("{f}.duration_s"))?,
                arrival_rate: rate,
                max_users: p.max_users.as_ref().map(|m| *m.get_ref()),
            });
        }
        if raw.sessions.is_empty() {
            return self.err(
                &whole,
                "sessions",
                "a scenario needs at least one [[sessions]]",
            );
        }
        let mut sessions = Vec::new();
        let mut total = 0.0;
        for (i, s) in raw.sessions.iter().enumerate() {
            let f = format!("sessions[{i}]");
            let rs = s.get_ref();
            let probability = match &rs.probability {
                Some(p) => {
                    let v = *p.get_ref();
                    if !(v > 0.0 && v <= 100.0) {
                        return self.err(
                            &p.span(),
                            &format!("{f}.probability"),
                            "must be in (0, 100] percent",
                        );
                    }
                    v
                }
                None if raw.sessions.len() == 1 => 100.0,
                None => {
                    return self.err(
                        &s.span(),
                        &format!("{f}.probability"),
                        "required when there are several sessions",
                    )
                }
            };
            total += probability;
            let mut steps = Vec::new();
            let mut counters = 0u8;
            self.steps(
                &rs.steps,
                &format!("{f}.steps"),
                &mut steps,
                0,
                &mut counters,
            )?;
            match rs.steps.first().map(|s| (s, s.get_ref())) {
                Some((_, RawStep::Connect(_))) => {}
                Some((first, _)) => {
                    return self.err(
                        &first.span(),
                        &format!("{f}.steps[0]"),
                        "the first step must be `connect`",
                    )
                }
                None => return self.err(&s.span(), &format!("{f}.steps"), "a session needs steps"),
            }
            if steps.len() > MAX_STEPS {
                return self.err(
                    &s.span(),
                    &format!("{f}.steps"),
                    format!("more than {MAX_STEPS} steps after expanding loops"),
                );
            }
            sessions.push(Session {
                name: rs.name.clone().unwrap_or_else(|| format!("session{i}")),
                probability,
                steps,
            });
        }
        let unsized_rendezvous = sessions
            .iter()
            .flat_map(|s| &s.steps)
            .any(|step| matches!(step, Step::Rendezvous { users: None, .. }));
        if unsized_rendezvous && sessions.len() > 1 {
            // Which users reach it depends on each user's draw of a session.
            return self.err(
                &whole,
                "sessions",
                "with several sessions, a `rendezvous` needs `users`",
            );
        }
        if (total - 100.0).abs() > 0.01 {
            let span = raw.sessions[0].span();
            return self.err(
                &span,
                "sessions.probability",
                format!("the probabilities add up to {total}, not 100"),
            );
        }
        let timestamp_field = match &raw.timestamp_field {
            Some(t) if t.get_ref().is_empty() || t.get_ref().contains('"') => {
                return self.err(
                    &t.span(),
                    "timestamp_field",
                    "must be a non-empty JSON key without quotes",
                )
            }
            Some(t) => t.get_ref().clone(),
            None => "ts_ns".to_string(),
        };
        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| "file".to_string()),
            duration_ms,
            users: raw.users.map(|u| *u.get_ref()),
            phases,
            sessions,
            timestamp_field,
            transactions: self.transactions,
        })
    }

    fn seconds(&self, v: &Spanned<f64>, field: &str) -> Res<u64> {
        let s = *v.get_ref();
        if !(s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0) {
            return self.err(
                &v.span(),
                field,
                "must be a number of seconds in (0, 2592000]",
            );
        }
        Ok((s * 1000.0).round() as u64)
    }

    fn steps(
        &mut self,
        raw: &[Spanned<RawStep>],
        field: &str,
        out: &mut Vec<Step>,
        depth: usize,
        counters: &mut u8,
    ) -> Res<()> {
        for (i, s) in raw.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let span = s.span();
            let step = match s.get_ref() {
                RawStep::Connect(c) => {
                    if !(depth == 0 && i == 0) {
                        return self.err(
                            &span,
                            &format!("{f}.connect"),
                            "`connect` must be the first step of a session, and only there",
                        );
                    }
                    let target = match &c.path {
                        Some(p) if !p.get_ref().starts_with('/') => {
                            return self.err(
                                &p.span(),
                                &format!("{f}.connect.path"),
                                "must start with '/'",
                            )
                        }
                        Some(p) => Some(self.template(p, &format!("{f}.connect.path"))?),
                        None => None,
                    };
                    Step::Connect { target }
                }
                RawStep::Send(send) => match (&send.text, &send.binary) {
                    (Some(t), None) => Step::Send {
                        opcode: opcode::TEXT,
                        data: self.template(t, &format!("{f}.send.text"))?,
                    },
                    (None, Some(b)) => Step::Send {
                        opcode: opcode::BINARY,
                        data: self.template(b, &format!("{f}.send.binary"))?,
                    },
                    _ => {
                        return self.err(
                            &span,
                            &format!("{f}.send"),
                            "needs exactly one of `text` or `binary`",
                        )
                    }
                },
                RawStep::Expect(e) => {
                    let timeout_ms = self.timeout_ms(
                        &e.timeout_ms,
                        &format!("{f}.expect.timeout_ms"),
                        DEFAULT_EXPECT_TIMEOUT_MS,
                    )?;
                    if e.contains.get_ref().is_empty() {
                        return self.err(
                            &e.contains.span(),
                            &format!("{f}.expect.contains"),
                            "must not be empty",
                        );
                    }
                    let name = match &e.name {
                        Some(n) => {
                            let v = n.get_ref();
                            if v.is_empty()
                                || v.len() > 32
                                || !v
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                            {
                                return self.err(
                                    &n.span(),
                                    &format!("{f}.expect.name"),
                                    "must be 1-32 characters of [A-Za-z0-9_-]",
                                );
                            }
                            v.clone()
                        }
                        None => "expect".to_string(),
                    };
                    let txn = match self.transactions.iter().position(|t| *t == name) {
                        Some(i) => i,
                        None if self.transactions.len() > MAX_TRANSACTIONS => {
                            return self.err(
                                &span,
                                &format!("{f}.expect.name"),
                                format!("more than {MAX_TRANSACTIONS} distinct expect names"),
                            )
                        }
                        None => {
                            self.transactions.push(name);
                            self.transactions.len() - 1
                        }
                    };
                    Step::Expect {
                        contains: self.template(&e.contains, &format!("{f}.expect.contains"))?,
                        timeout_ms,
                        txn: txn as u8,
                    }
                }
                RawStep::Think(t) => Step::Think(self.think(t, &span, &format!("{f}.think"))?),
                RawStep::Loop(l) => {
                    self.compile_loop(l, &span, &f, out, depth, counters)?;
                    continue;
                }
                RawStep::Close(c) => {
                    let code = match &c.code {
                        Some(code) if !crate::ws::close::is_valid_wire_code(*code.get_ref()) => {
                            return self.err(&code.span(), &format!("{f}.close.code"), "not a close code a client may send (1000-1003, 1007-1011, 3000-4999)")
                        }
                        Some(code) => *code.get_ref(),
                        None => crate::ws::close::NORMAL,
                    };
                    Step::Close { code }
                }
                RawStep::Rendezvous(r) => self.rendezvous(r, &span, &f, depth)?,
            };
            out.push(step);
        }
        Ok(())
    }

    fn rendezvous(
        &mut self,
        r: &RawRendezvous,
        span: &Range<usize>,
        f: &str,
        depth: usize,
    ) -> Res<Step> {
        let f = format!("{f}.rendezvous");
        if depth > 0 {
            // A second pass would meet a rendezvous already released: it would wait for nobody.
            return self.err(span, &f, "a `rendezvous` cannot be inside a loop");
        }
        if self.rendezvous {
            return self.err(
                span,
                &f,
                "only one `rendezvous` per scenario (its users share one count)",
            );
        }
        self.rendezvous = true;
        let users = match &r.users {
            Some(u) if *u.get_ref() == 0 => {
                return self.err(&u.span(), &format!("{f}.users"), "must be at least 1")
            }
            Some(u) => Some(*u.get_ref()),
            None => None,
        };
        let timeout_ms = self.timeout_ms(
            &r.timeout_ms,
            &format!("{f}.timeout_ms"),
            DEFAULT_RENDEZVOUS_TIMEOUT_MS,
        )?;
        Ok(Step::Rendezvous { users, timeout_ms })
    }

    /// A step's `timeout_ms`: at least 1 ms, at most [`MAX_WAIT_MS`], `default` when absent.
    fn timeout_ms(&self, t: &Option<Spanned<u64>>, field: &str, default: u64) -> Res<u64> {
        match t {
            Some(t) if *t.get_ref() == 0 => self.err(&t.span(), field, "must be at least 1 ms"),
            Some(t) => self.wait_ms(t, field),
            None => Ok(default),
        }
    }

    fn think(&self, t: &RawThink, span: &Range<usize>, f: &str) -> Res<Think> {
        match (&t.ms, &t.min_ms, &t.max_ms, &t.until_ms, &t.until) {
            (Some(ms), None, None, None, None) => Ok(Think::Fixed {
                ms: self.wait_ms(ms, &format!("{f}.ms"))?,
            }),
            (None, Some(lo), Some(hi), None, None) => {
                let (min_ms, max_ms) = (
                    self.wait_ms(lo, &format!("{f}.min_ms"))?,
                    self.wait_ms(hi, &format!("{f}.max_ms"))?,
                );
                if min_ms > max_ms {
                    return self.err(
                        &hi.span(),
                        &format!("{f}.max_ms"),
                        "must not be below min_ms",
                    );
                }
                Ok(Think::Random { min_ms, max_ms })
            }
            (None, None, None, Some(at), None) => Ok(Think::UntilMs(*at.get_ref())),
            (None, None, None, None, Some(u)) if u.get_ref() == "end" => Ok(Think::UntilEnd),
            (None, None, None, None, Some(u)) => self.err(
                &u.span(),
                &format!("{f}.until"),
                "the only value is \"end\"",
            ),
            _ => self.err(
                span,
                f,
                "needs one of: `ms`, `min_ms` + `max_ms`, `until_ms`, `until = \"end\"`",
            ),
        }
    }

    fn compile_loop(
        &mut self,
        l: &RawLoop,
        span: &Range<usize>,
        f: &str,
        out: &mut Vec<Step>,
        depth: usize,
        counters: &mut u8,
    ) -> Res<()> {
        let until = match (&l.count, &l.until_ms, &l.until) {
            (Some(c), None, None) => match c.get_ref() {
                toml::Value::String(s) if s == "forever" => LoopUntil::End,
                toml::Value::Integer(n) if (1..=MAX_LOOP_COUNT as i64).contains(n) => {
                    let depth_counted = out
                        .iter()
                        .filter(|s| matches!(s, Step::LoopBegin { counter: Some(_) }))
                        .count()
                        - out
                            .iter()
                            .filter(|s| {
                                matches!(
                                    s,
                                    Step::LoopEnd {
                                        until: LoopUntil::Count { .. },
                                        ..
                                    }
                                )
                            })
                            .count();
                    if depth_counted >= MAX_COUNTED_LOOP_DEPTH {
                        return self.err(
                            &c.span(),
                            &format!("{f}.loop.count"),
                            format!("counted loops nest at most {MAX_COUNTED_LOOP_DEPTH} deep"),
                        );
                    }
                    let counter = depth_counted as u8;
                    *counters = (*counters).max(counter + 1);
                    LoopUntil::Count {
                        n: *n as u32,
                        counter,
                    }
                }
                _ => {
                    return self.err(
                        &c.span(),
                        &format!("{f}.loop.count"),
                        format!("must be 1..={MAX_LOOP_COUNT} or \"forever\""),
                    )
                }
            },
            (None, Some(at), None) => LoopUntil::TimeMs(*at.get_ref()),
            (None, None, Some(u)) if u.get_ref() == "end" => LoopUntil::End,
            (None, None, Some(u)) => {
                return self.err(
                    &u.span(),
                    &format!("{f}.loop.until"),
                    "the only value is \"end\"",
                )
            }
            _ => {
                return self.err(
                    span,
                    &format!("{f}.loop"),
                    "needs one of: `count`, `until_ms`, `until = \"end\"`",
                )
            }
        };
        if l.steps.is_empty() {
            return self.err(span, &format!("{f}.loop.steps"), "a loop needs steps");
        }
        let counter = match until {
            LoopUntil::Count { counter, .. } => Some(counter),
            _ => None,
        };
        out.push(Step::LoopBegin { counter });
        let body = out.len();
        self.steps(
            &l.steps,
            &format!("{f}.loop.steps"),
            out,
            depth + 1,
            counters,
        )?;
        // A loop that only ends with time must wait somewhere, or one user would spin a core.
        let waits = out[body..]
            .iter()
            .any(|s| matches!(s, Step::Think(_) | Step::Expect { .. }));
        if counter.is_none() && !waits {
            return self.err(
                span,
                &format!("{f}.loop"),
                "a loop that runs until a time must contain a `think` or an `expect`",
            );
        }
        let body = u16::try_from(body).unwrap_or(u16::MAX);
        out.push(Step::LoopEnd { body, until });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
duration_s = 30
users = 100

[[phases]]
duration_s = 5
arrival_rate = 20

[[sessions]]
name = "a"
probability = 75
steps = [
  { connect = { path = "/socket/websocket?vsn=2.0.0&u={user_id}" } },
  { send = { text = '["1","1","rooms:{user_id%4}","phx_join",{}]' } },
  { expect = { contains = '"status":"ok"', timeout_ms = 5000, name = "join" } },
  { loop = { count = 3, steps = [
      { think = { min_ms = 10, max_ms = 20 } },
      { send = { binary = "x" } },
  ] } },
  { think = { until = "end" } },
]

[[sessions]]
name = "b"
probability = 25
steps = [ { connect = {} }, { close = { code = 1001 } } ]
"#;

    #[test]
    fn compiles_a_good_file() {
        let s = parse("good.toml", GOOD).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.duration_ms, 30_000);
        assert_eq!(s.users, Some(100));
        assert_eq!(s.transactions, vec!["connect", "join"]);
        assert_eq!(s.sessions.len(), 2);
        let a = &s.sessions[0].steps;
        assert_eq!(a.len(), 8);
        assert_eq!(a[3], Step::LoopBegin { counter: Some(0) });
        assert_eq!(
            a[4],
            Step::Think(Think::Random {
                min_ms: 10,
                max_ms: 20
            })
        );
        assert_eq!(
            a[6],
            Step::LoopEnd {
                body: 4,
                until: LoopUntil::Count { n: 3, counter: 0 }
            }
        );
        assert_eq!(a[7], Step::Think(Think::UntilEnd));
        assert_eq!(
            s.sessions[1].steps,
            vec![Step::Connect { target: None }, Step::Close { code: 1001 }]
        );
    }

    fn err(text: &str) -> (usize, String, String) {
        match parse("bad.toml", text).unwrap_err() {
            ScenarioError::Invalid {
                line,
                field,
                message,
                ..
            } => (line, field, message),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = "duration_s = 10\n[[sessions]]\nsteps = [\n  { connect = {} },\n  { expect = { contains = \"x\", timout_ms = 5 } },\n]\n";
        let (line, field, message) = err(text);
        assert_eq!((line, field.as_str()), (5, "timout_ms"));
        assert!(message.contains("unknown field `timout_ms`"), "{message}");
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let text = "duration_s = 10\n[[phases]]\nduration_s = 1\narrival_rate = \"fast\"\n";
        let (line, field, message) = err(text);
        assert_eq!((line, field.as_str()), (4, "arrival_rate"));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn validation_errors_name_line_and_field() {
        let text = "duration_s = 10\n[[sessions]]\nsteps = [\n  { connect = {} },\n  { think = { min_ms = 5, max_ms = 1 } },\n]\n";
        assert_eq!(
            err(text),
            (
                5,
                "sessions[0].steps[1].think.max_ms".into(),
                "must not be below min_ms".into()
            )
        );
        let text = "[[sessions]]\nsteps = [ { send = { text = \"{userid}\" } } ]\n";
        let (line, field, message) = err(text);
        assert_eq!(
            (line, field.as_str()),
            (2, "sessions[0].steps[0].send.text")
        );
        assert!(
            message.starts_with("unknown substitution {userid}"),
            "{message}"
        );
        let text = "[[sessions]]\nsteps = [ { send = { text = \"x\" } } ]\n";
        assert_eq!(err(text).1, "sessions[0].steps[0]");
        let text = "[[sessions]]\nsteps = [\n { connect = {} },\n { loop = { until = \"end\", steps = [ { send = { text = \"x\" } } ] } },\n]\n";
        assert_eq!(
            err(text),
            (
                4,
                "sessions[0].steps[1].loop".into(),
                "a loop that runs until a time must contain a `think` or an `expect`".into()
            )
        );
        let text = "[[sessions]]\nprobability = 40\nsteps = [ { connect = {} } ]\n[[sessions]]\nprobability = 40\nsteps = [ { connect = {} } ]\n";
        assert_eq!(
            err(text),
            (
                1,
                "sessions.probability".into(),
                "the probabilities add up to 80, not 100".into()
            )
        );
    }

    #[test]
    fn counted_loops_nest_two_deep() {
        let inner = "{ loop = { count = 2, steps = [ { think = { ms = 1 } } ] } }";
        let two = format!("{{ loop = {{ count = 2, steps = [ {inner} ] }} }}");
        let ok = format!("[[sessions]]\nsteps = [ {{ connect = {{}} }}, {two} ]\n");
        parse("ok.toml", &ok).unwrap();
        let three = format!("[[sessions]]\nsteps = [ {{ connect = {{}} }}, {{ loop = {{ count = 2, steps = [ {two} ] }} }} ]\n");
        let (line, field, _) = err(&three);
        assert_eq!(line, 2);
        assert!(field.ends_with(".loop.count"), "{field}");
    }

    #[test]
    fn one_rendezvous_outside_loops() {
        let ok = "users = 50\n[[phases]]\nduration_s = 1\narrival_rate = 100\n[[sessions]]\nsteps = [ { connect = {} }, { rendezvous = {} }, { think = { until = \"end\" } } ]\n";
        let s = parse("ok.toml", ok).unwrap();
        assert_eq!(
            s.sessions[0].steps[1],
            Step::Rendezvous {
                users: None,
                timeout_ms: DEFAULT_RENDEZVOUS_TIMEOUT_MS
            }
        );
        assert_eq!(s.rendezvous_users(), Some(50));
        let sized = ok.replace(
            "rendezvous = {}",
            "rendezvous = { users = 20, timeout_ms = 500 }",
        );
        assert_eq!(
            parse("ok.toml", &sized).unwrap().rendezvous_users(),
            Some(20)
        );
        let more = ok.replace("rendezvous = {}", "rendezvous = { users = 80 }");
        assert_eq!(
            parse("ok.toml", &more).unwrap().rendezvous_users(),
            Some(50),
            "never more than can arrive"
        );
        let looped = "[[sessions]]\nsteps = [ { connect = {} }, { loop = { count = 2, steps = [ { rendezvous = {} } ] } } ]\n";
        let (_, field, message) = err(looped);
        assert!(field.ends_with(".rendezvous"), "{field}");
        assert!(message.contains("inside a loop"), "{message}");
        let twice = "[[sessions]]\nsteps = [ { connect = {} }, { rendezvous = {} }, { rendezvous = {} } ]\n";
        assert_eq!(err(twice).1, "sessions[0].steps[2].rendezvous");
        let zero = "[[sessions]]\nsteps = [ { connect = {} }, { rendezvous = { users = 0 } } ]\n";
        assert_eq!(err(zero).1, "sessions[0].steps[1].rendezvous.users");
        let two = "[[sessions]]\nprobability = 50\nsteps = [ { connect = {} }, { rendezvous = {} } ]\n[[sessions]]\nprobability = 50\nsteps = [ { connect = {} } ]\n";
        assert!(err(two).2.contains("needs `users`"));
        parse(
            "ok.toml",
            &two.replace("rendezvous = {}", "rendezvous = { users = 5 }"),
        )
        .unwrap();
    }
}
