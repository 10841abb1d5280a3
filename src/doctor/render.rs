//! The report as text: a table of limits, the verdict, then what to do for each failing row.

use std::fmt::Write;

use super::assess::{bytes, n, Report, Row, Status};

/// The whole report, ready to print.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let p = &r.plan;
    let kernel = r
        .facts
        .kernel_release
        .as_deref()
        .unwrap_or("unknown kernel");
    let _ = writeln!(
        out,
        "ringgate doctor: target {} connections, {} worker(s), role {}, Linux {kernel}\n",
        n(p.target_connections),
        p.workers,
        p.role.name()
    );
    let allows = |row: &Row| row.allows.map_or("-".to_string(), n);
    let header = ("LIMIT", "VALUE", "ALLOWS", "STATUS");
    let w_name = r.limits.iter().map(|l| l.name.len()).max().unwrap_or(0);
    let w_value = r.limits.iter().map(|l| l.value.len()).max().unwrap_or(0);
    let w_allows = r.limits.iter().map(|l| allows(l).len()).max().unwrap_or(0);
    let (w_name, w_value, w_allows) = (
        w_name.max(header.0.len()),
        w_value.max(header.1.len()),
        w_allows.max(header.2.len()),
    );
    let _ = writeln!(
        out,
        "{:<w_name$}  {:<w_value$}  {:>w_allows$}  {}",
        header.0, header.1, header.2, header.3
    );
    for row in &r.limits {
        let _ = writeln!(
            out,
            "{:<w_name$}  {:<w_value$}  {:>w_allows$}  {}",
            row.name,
            row.value,
            allows(row),
            row.status.label()
        );
    }
    let pc = &r.per_connection;
    let _ = writeln!(
        out,
        "\nPer connection {} B (kernel socket {} + idle wait {} + user {}{}); per worker {}; {} \
         slots per ring.",
        pc.total_bytes,
        pc.socket_kernel_bytes,
        pc.wait_kernel_bytes,
        pc.user_bytes,
        if pc.client_bytes > 0 {
            format!(" + load generator {}", pc.client_bytes)
        } else {
            String::new()
        },
        bytes(r.per_worker_bytes),
        r.slots_per_ring.map_or("unknown".into(), n)
    );
    let first = r
        .first_to_bind
        .as_ref()
        .and_then(|key| r.limits.iter().find(|l| &l.key == key));
    match (r.reachable, first) {
        (true, Some(row)) => {
            let _ = writeln!(
                out,
                "\nREACHABLE: {} connections fit. First to bind: {}, at {}: {}.",
                n(p.target_connections),
                row.name,
                allows(row),
                row.detail
            );
        }
        (true, None) => {
            let _ = writeln!(out, "\nREACHABLE: no limit caps the count.");
        }
        (false, first) => {
            let _ = writeln!(
                out,
                "\nNOT REACHABLE: {} binds first, at {} connections (target {}).",
                first.map_or("a limit", |row| &row.name),
                first.map_or("?".to_string(), allows),
                n(p.target_connections)
            );
        }
    }
    section(&mut out, "To lift (BINDS)", r, Status::Binds);
    section(&mut out, "Worth changing (WARN)", r, Status::Warn);
    if !r.facts.unreadable.is_empty() {
        let _ = writeln!(out, "\nUnreadable:");
        for note in &r.facts.unreadable {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

fn section(out: &mut String, title: &str, r: &Report, status: Status) {
    let rows: Vec<_> = r.limits.iter().filter(|l| l.status == status).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for row in rows {
        let _ = writeln!(out, "  {}: {}", row.name, row.detail);
        for fix in &row.fix {
            let _ = writeln!(out, "    - {fix}");
        }
    }
}
