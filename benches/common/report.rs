//! Output: markdown tables for the terminal, human-readable numbers, and the JSON results file under
//! `target/bench-results/`.

use std::path::{Path, PathBuf};

use super::stats::Spread;

/// A markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// Bytes with a unit chosen for reading (B below 10 KiB, then KiB, then MiB).
pub fn bytes(b: f64) -> String {
    let a = b.abs();
    if a < 10.0 * 1024.0 {
        format!("{b:.0} B")
    } else if a < 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

/// `median [min–max]` with `digits` decimals.
pub fn spread(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits),
        None => "–".to_owned(),
    }
}

/// `a / b` as "×1.23" (two significant digits below 0.1, e.g. "×0.00058"), or "–" when undefined.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !a.is_finite() || !b.is_finite() {
        return "–".to_owned();
    }
    let r = a / b;
    let digits = if r.abs() >= 0.1 || r == 0.0 {
        2
    } else {
        (1.0 - r.abs().log10().floor()).min(9.0) as usize
    };
    format!("×{r:.digits$}")
}

pub fn spread_json(s: Option<Spread>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::json!({"median": s.median, "min": s.min, "max": s.max}),
        None => serde_json::Value::Null,
    }
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `<package>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// Writes `value` pretty-printed to `path` (creating its directory); returns the path.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<PathBuf, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_owned())
}

/// Facts about the machine worth keeping next to the numbers.
pub fn machine_json() -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({"kernel": kernel.trim(), "cpus": cpus, "loadavg_at_start": load.trim()})
}
