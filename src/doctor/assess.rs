//! From facts to a verdict: one row per limit with the connections it allows, which one binds
//! first, and how to lift each that fails. Pure: `Facts` and `Plan` in, `Report` out.

use serde::Serialize;

use super::cost::{self, PerConnection};
use super::facts::Facts;
use super::{caps, notes, Role};
use crate::config::RecvMode;

/// What the box must carry: the target and the gateway settings that shape it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target_connections: u64,
    pub role: Role,
    pub workers: u64,
    pub max_connections_per_worker: u64,
    pub listen_backlog: u64,
    pub listen_port: u16,
    #[serde(serialize_with = "recv_mode_name")]
    pub recv_mode: RecvMode,
    pub sq_entries: u64,
    pub cq_entries: u64,
    pub recv_buffer_bytes: u64,
    /// Source addresses the load generator binds (roles `load` and `both`).
    pub source_addrs: u64,
}

fn recv_mode_name<S: serde::Serializer>(mode: &RecvMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match mode {
        RecvMode::Poll => "poll",
        RecvMode::Multishot => "multishot",
    })
}

/// How a limit stands against the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Allows the target.
    #[serde(rename = "OK")]
    Ok,
    /// Allows fewer connections than the target: the target cannot be reached until it is lifted.
    #[serde(rename = "BINDS")]
    Binds,
    /// Does not cap the connection count but hurts at the target (bursts, broadcasts), or could
    /// not be read.
    #[serde(rename = "WARN")]
    Warn,
    /// Shown for completeness; nothing to do.
    #[serde(rename = "INFO")]
    Info,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Binds => "BINDS",
            Status::Warn => "WARN",
            Status::Info => "INFO",
        }
    }
}

/// One limit.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable identifier (`nofile_soft`, `fs.nr_open`, ...).
    pub key: String,
    /// Human name.
    pub name: String,
    /// The value as read, with its unit.
    pub value: String,
    /// Connections this limit alone allows; `None` when it does not cap the count.
    pub allows: Option<u64>,
    pub status: Status,
    /// Why it matters and how `allows` was computed.
    pub detail: String,
    /// Commands or file lines that lift it; empty unless it binds or warns.
    pub fix: Vec<String>,
}

impl Row {
    /// A limit that caps the connection count at `allows`.
    pub fn cap(key: &str, name: &str, value: String, allows: u64, target: u64) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            value,
            allows: Some(allows),
            status: if allows >= target {
                Status::Ok
            } else {
                Status::Binds
            },
            detail: String::new(),
            fix: Vec::new(),
        }
    }

    /// A limit that does not cap the count.
    pub fn note(key: &str, name: &str, value: String, status: Status) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            value,
            allows: None,
            status,
            detail: String::new(),
            fix: Vec::new(),
        }
    }

    /// A value that could not be read: reported, not guessed.
    pub fn unreadable(key: &str, name: &str) -> Self {
        let mut row = Self::note(key, name, "unreadable".into(), Status::Warn);
        row.detail = "could not be read (see `unreadable` in --json)".into();
        row
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Fix lines, kept only when the row needs action.
    pub fn fix(mut self, fix: impl IntoIterator<Item = String>) -> Self {
        if matches!(self.status, Status::Binds | Status::Warn) {
            self.fix.extend(fix);
        }
        self
    }
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    /// Connections one ring holds: min(soft nofile, `IORING_MAX_FIXED_FILES`,
    /// `max_connections_per_worker`).
    pub slots_per_ring: Option<u64>,
    pub per_connection: PerConnection,
    pub per_worker_bytes: u64,
    /// No row binds.
    pub reachable: bool,
    /// The smallest `allows` of any row: this box's ceiling as configured.
    pub max_connections: Option<u64>,
    /// Key of the row with that smallest `allows` (the first listed on a tie).
    pub first_to_bind: Option<String>,
    pub limits: Vec<Row>,
    pub facts: Facts,
}

/// What every row function reads.
pub struct Ctx<'a> {
    pub facts: &'a Facts,
    pub plan: &'a Plan,
    pub per_connection: PerConnection,
    pub per_worker_bytes: u64,
    pub slots_per_ring: Option<u64>,
    /// Whether the gateway's own per-worker cap applies (not to a pure load box).
    pub gateway_on_box: bool,
}

impl Ctx<'_> {
    pub fn target(&self) -> u64 {
        self.plan.target_connections
    }

    /// Fixed-file slots each ring needs for the target with the planned workers, capped at what a
    /// ring can hold, and never below the process's own descriptors.
    pub fn nofile_wanted(&self) -> u64 {
        let per_ring = self
            .target()
            .div_ceil(self.plan.workers)
            .min(cost::IORING_MAX_FIXED_FILES);
        round_up(per_ring.max(self.process_fds(self.plan.workers)))
    }

    pub fn process_fds(&self, workers: u64) -> u64 {
        cost::PROCESS_FDS + cost::FDS_PER_WORKER * workers
    }

    /// "Or run more workers": the worker count whose rings hold the target at today's per-ring
    /// size, when that is a valid setting.
    pub fn more_workers(&self) -> Option<String> {
        let per_ring = self.slots_per_ring.filter(|&n| n > 0)?;
        let k = self.target().div_ceil(per_ring);
        let soft = self.facts.nofile?.soft.unwrap_or(u64::MAX);
        if k <= self.plan.workers || k > 1024 || self.process_fds(k) > soft {
            return None;
        }
        Some(format!(
            "or run with --workers {k}, so that {k} × {} ≥ {} (one ring per worker; an idle ring \
             costs no CPU; the memory row counts {} per worker)",
            n(per_ring),
            n(self.target()),
            bytes(self.per_worker_bytes)
        ))
    }
}

/// Weighs every limit against the plan.
pub fn assess(facts: Facts, plan: Plan) -> Report {
    let gateway_on_box = plan.role != Role::Load;
    let per_connection = match plan.role {
        Role::Gateway => PerConnection::new(plan.recv_mode, false),
        Role::Both => PerConnection::new(plan.recv_mode, true),
        // The load generator waits like the gateway's poll mode.
        Role::Load => PerConnection::new(RecvMode::Poll, false),
    };
    let soft = facts.nofile.map(|l| l.soft.unwrap_or(u64::MAX));
    let slots_per_ring = soft.map(|s| {
        let ring = cost::ring_capacity(s);
        if gateway_on_box {
            ring.min(plan.max_connections_per_worker)
        } else {
            ring
        }
    });
    let per_worker_bytes = cost::per_worker_bytes(
        plan.sq_entries,
        plan.cq_entries,
        slots_per_ring.unwrap_or(0),
        plan.recv_buffer_bytes,
    );
    let ctx = Ctx {
        facts: &facts,
        plan: &plan,
        per_connection,
        per_worker_bytes,
        slots_per_ring,
        gateway_on_box,
    };
    let mut limits = caps::rows(&ctx);
    limits.extend(notes::rows(&ctx));
    let reachable = !limits.iter().any(|r| r.status == Status::Binds);
    // `min_by_key` keeps the first of equal minimums: rows are listed most fundamental first.
    let first = limits
        .iter()
        .filter_map(|r| Some((r.allows?, r)))
        .min_by_key(|(allows, _)| *allows);
    Report {
        max_connections: first.map(|(a, _)| a),
        first_to_bind: first.map(|(_, r)| r.key.clone()),
        plan,
        slots_per_ring,
        per_connection,
        per_worker_bytes,
        reachable,
        limits,
        facts,
    }
}

const SYSCTL_FILE: &str = "/etc/sysctl.d/90-ringgate.conf (kernel-tuning/sysctl.d/)";

/// A sysctl fix: set it now (quoted when it has several fields), and keep it after a reboot.
pub fn sysctl(key: &str, value: &str) -> [String; 2] {
    let arg = if value.contains(' ') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    };
    [
        format!("sysctl -w {key}={arg}"),
        format!("keep it after reboot: `{key} = {value}` in {SYSCTL_FILE}"),
    ]
}

/// `1234567` → `1,234,567`.
pub fn n(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as KiB/MiB/GiB with one decimal.
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut x = v as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// Rounds up to two significant digits, for values an operator will type: 500016 → 510000.
pub fn round_up(v: u64) -> u64 {
    let mut step = 1;
    while v / step >= 100 {
        step *= 10;
    }
    v.div_ceil(step) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(n(0), "0");
        assert_eq!(n(999), "999");
        assert_eq!(n(1000), "1,000");
        assert_eq!(n(1_048_576), "1,048,576");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(24_684_084 * 1024), "23.5 GiB");
        assert_eq!(round_up(5031), 5100);
        assert_eq!(round_up(500_000), 500_000);
        assert_eq!(round_up(500_016), 510_000);
        assert_eq!(round_up(99), 99);
        assert_eq!(round_up(0), 0);
    }
}
