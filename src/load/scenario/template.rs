//! Text with substitutions, compiled once and rendered per user: `{user_id}`, `{user_id%N}`,
//! `{ts_ns}`, `{ref}`, `{proc}`.
//!
//! Payloads are mostly JSON, so braces are literal unless they enclose a name made only of
//! `[a-z0-9_%]`; such a name must be a known substitution, which catches typos like `{userid}` at
//! load time instead of sending them verbatim to a million users.

use std::fmt::Write as _;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// The user's run-unique id, 0-based and dense over the whole run (all processes).
    UserId,
    /// `user_id % n`, e.g. a room number (`n ≥ 1`).
    UserMod(u32),
    /// `CLOCK_MONOTONIC` in nanoseconds when the frame is built: the same clock in every process
    /// of the box, so a receiver computes the delivery latency from it.
    TsNs,
    /// The user's message counter: incremented before each `send`, so an `expect` after a send
    /// sees the value that send used (Phoenix `ref`s).
    Ref,
    /// Index of the load process (0 without `--procs`).
    Proc,
}

/// What a template needs from the user it is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct Vars {
    pub user_id: u64,
    pub msg_ref: u32,
    pub proc: u32,
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// A `{name}` that looks like a substitution but is none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown substitution {{{name}}} (known: {{user_id}}, {{user_id%N}}, {{ts_ns}}, {{ref}}, {{proc}})")]
pub struct UnknownSubstitution {
    pub name: String,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'%'
}

impl Template {
    /// Compiles `text`.
    pub fn parse(text: &str) -> Result<Self, UnknownSubstitution> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after.bytes().take_while(|&b| is_name_byte(b)).count();
            if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'}') {
                let name = &after[..name_len];
                let part = match name {
                    "user_id" => Part::UserId,
                    "ts_ns" => Part::TsNs,
                    "ref" => Part::Ref,
                    "proc" => Part::Proc,
                    _ => match name.strip_prefix("user_id%").map(str::parse::<u32>) {
                        Some(Ok(n)) if n > 0 => Part::UserMod(n),
                        _ => {
                            return Err(UnknownSubstitution {
                                name: name.to_string(),
                            })
                        }
                    },
                };
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &after[name_len + 1..];
            } else {
                lit.push('{');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self { parts })
    }

    /// A template of fixed text (no substitution is interpreted).
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_string())],
        }
    }

    /// Whether rendering reads the clock (then it must be rendered at send time, not earlier).
    pub fn uses(&self, part: &Part) -> bool {
        self.parts.contains(part)
    }

    /// Appends the rendered bytes to `out`. `now_ns` is read only if the template has `{ts_ns}`.
    pub fn render(&self, vars: &Vars, now_ns: impl Fn() -> u64, out: &mut Vec<u8>) {
        let mut num = String::new();
        for part in &self.parts {
            num.clear();
            match part {
                Part::Literal(s) => {
                    out.extend_from_slice(s.as_bytes());
                    continue;
                }
                Part::UserId => write!(num, "{}", vars.user_id),
                Part::UserMod(n) => write!(num, "{}", vars.user_id % u64::from(*n)),
                Part::TsNs => write!(num, "{}", now_ns()),
                Part::Ref => write!(num, "{}", vars.msg_ref),
                Part::Proc => write!(num, "{}", vars.proc),
            }
            .expect("writing to a String");
            out.extend_from_slice(num.as_bytes());
        }
    }

    /// Rendered to a `String` (for tests and one-off uses).
    pub fn render_string(&self, vars: &Vars, now_ns: u64) -> String {
        let mut out = Vec::new();
        self.render(vars, || now_ns, &mut out);
        String::from_utf8(out).expect("templates are UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: Vars = Vars {
        user_id: 1234,
        msg_ref: 7,
        proc: 2,
    };

    #[test]
    fn substitutes_known_names_and_keeps_json_braces() {
        let t = Template::parse(
            r#"["1","{ref}","rooms:{user_id%10}","new_msg",{"ts_ns":{ts_ns},"u":{user_id},"p":{proc},"e":{}}]"#,
        )
        .unwrap();
        assert_eq!(
            t.render_string(&VARS, 99),
            r#"["1","7","rooms:4","new_msg",{"ts_ns":99,"u":1234,"p":2,"e":{}}]"#
        );
        assert!(t.uses(&Part::TsNs));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            Template::parse("x{userid}y"),
            Err(UnknownSubstitution {
                name: "userid".into()
            })
        );
        assert_eq!(
            Template::parse("{user_id%0}"),
            Err(UnknownSubstitution {
                name: "user_id%0".into()
            })
        );
        // Not a name: left alone.
        assert_eq!(
            Template::parse("{ Ref }{A}{")
                .unwrap()
                .render_string(&VARS, 0),
            "{ Ref }{A}{"
        );
    }

    #[test]
    fn clock_read_only_when_needed() {
        let t = Template::parse("plain {user_id}").unwrap();
        let mut out = Vec::new();
        t.render(&VARS, || panic!("clock read"), &mut out);
        assert_eq!(out, b"plain 1234");
    }
}
