//! `report.html`: one self-contained page — summary tables and the charts, inline SVG, no
//! scripts, no external resources — so it can be mailed, archived or opened offline.

use std::fmt::Write as _;

use super::charts;
use super::{Latency, Summary};
use crate::load::stats::{percentiles, Sample, Sparse};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

fn per_second(series: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    series
        .iter()
        .map(|s| (f64::from(s.t) + 1.0, f(s)))
        .collect()
}

/// p50 and p99 lines (ms) of one latency per second, skipping seconds without data.
fn quantile_lines(
    name: &str,
    series: &[Sample],
    h: impl Fn(&Sample) -> &Sparse,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for s in series {
        if let Some(p) = percentiles(h(s), &[0.5, 0.99]) {
            let t = f64::from(s.t) + 1.0;
            p50.push((t, p[0] as f64 / 1000.0));
            p99.push((t, p[1] as f64 / 1000.0));
        }
    }
    if p50.is_empty() {
        return Vec::new();
    }
    vec![(format!("{name} p50"), p50), (format!("{name} p99"), p99)]
}

fn section(out: &mut String, id: &str, title: &str, svgs: &[String]) {
    let _ = write!(
        out,
        "<section class=\"chart\" id=\"{id}\"><h2>{}</h2>",
        esc(title)
    );
    for svg in svgs {
        out.push_str("<div class=\"svg\">");
        out.push_str(svg);
        out.push_str("</div>");
    }
    out.push_str("</section>\n");
}

fn latency_row(out: &mut String, name: &str, l: &Latency) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(name),
        l.count,
        opt(l.p50_ms),
        opt(l.p90_ms),
        opt(l.p99_ms),
        opt(l.max_ms),
        opt(l.mean_ms)
    );
}

/// The whole page.
pub fn page(sum: &Summary, names: &[String], series: &[Sample]) -> Result<String, String> {
    let mut out = String::new();
    let m = &sum.meta;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ringgate load report: {scenario}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}}\
         table{{border-collapse:collapse;margin:8px 0 24px}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}section.chart{{margin:24px 0}}\
         .svg svg{{max-width:100%;height:auto}}code{{background:#f4f4f4;padding:2px 4px}}\
         </style></head><body>\n<h1>ringgate load report: {scenario}</h1>\n\
         <p><code>{command}</code></p>\n",
        scenario = esc(&m.scenario),
        command = esc(&m.command),
    );
    out.push_str("<table id=\"summary\"><tbody>");
    let rows: Vec<(&str, String)> = vec![
        ("URL", esc(&m.url)),
        (
            "processes × workers",
            format!("{} × {}", m.procs, m.workers_per_proc),
        ),
        ("planned users", m.users_planned.to_string()),
        (
            "source addresses",
            match m.sources.mode {
                crate::load::sources::Mode::Kernel => "chosen by the kernel".to_string(),
                mode => format!(
                    "{} ({}, {}), ≤ {} users each",
                    m.sources.addresses,
                    if mode == crate::load::sources::Mode::Auto {
                        "automatic"
                    } else {
                        "--source"
                    },
                    esc(&m.sources.ranges),
                    m.sources.most_users_per_address
                ),
            },
        ),
        (
            "run time (s)",
            format!(
                "{} of {}{}",
                sum.elapsed_s,
                m.duration_s,
                if m.interrupted { " (interrupted)" } else { "" }
            ),
        ),
        (
            "users arrived / connected / finished",
            format!("{} / {} / {}", sum.arrivals, sum.connected, sum.finished),
        ),
        ("peak simultaneous users", sum.peak_users.to_string()),
        (
            "connections per second: peak second / mean",
            format!("{} / {:.1}", sum.peak_connect_rate, sum.mean_connect_rate),
        ),
        (
            "connection rate over the connect window",
            format!(
                "{:.0}/s over {:.2} s",
                sum.connect_rate, sum.connect_window_s
            ),
        ),
        (
            "arrived but never connected",
            sum.never_connected.to_string(),
        ),
        (
            "messages sent / received",
            format!("{} / {}", sum.messages_sent, sum.messages_received),
        ),
        ("errors", sum.errors_total.to_string()),
        (
            "load generator: peak RSS (MiB) / CPU (s)",
            format!(
                "{:.1} / {:.1}",
                sum.peak_rss_bytes as f64 / 1048576.0,
                sum.cpu_s
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    out.push_str("</tbody></table>\n<h2>Latency (ms)</h2><table id=\"latency\"><thead><tr><th>transaction</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>mean</th></tr></thead><tbody>");
    latency_row(&mut out, "delivery (from ts in payload)", &sum.delivery);
    for (name, l) in &sum.transactions {
        latency_row(&mut out, name, l);
    }
    out.push_str("</tbody></table>\n<h2>Errors</h2><table id=\"errors\"><tbody>");
    for (k, n) in &sum.errors {
        let _ = write!(out, "<tr><th>{}</th><td>{n}</td></tr>", esc(k));
    }
    out.push_str("</tbody></table>\n");

    // Every time chart spans the whole run, even where a series has no data.
    let span = series.last().map_or(1.0, |s| f64::from(s.t) + 1.0);
    let users = charts::lines(
        span,
        "Simultaneous users",
        "users",
        &[
            (
                "open WebSockets".into(),
                per_second(series, |s| s.users as f64),
            ),
            (
                "connecting".into(),
                per_second(series, |s| s.connecting as f64),
            ),
        ],
    )?;
    section(&mut out, "chart-users", "Simultaneous users", &[users]);
    let arrivals = charts::lines(
        span,
        "Arrival rate",
        "per second",
        &[
            (
                "arrivals/s".into(),
                per_second(series, |s| s.arrivals as f64),
            ),
            (
                "connected/s".into(),
                per_second(series, |s| s.connected as f64),
            ),
        ],
    )?;
    section(&mut out, "chart-arrivals", "Arrival rate", &[arrivals]);
    let mut lat = quantile_lines("delivery", series, |s| &s.delivery_us);
    for (i, name) in names.iter().enumerate() {
        lat.extend(quantile_lines(name, series, |s| &s.txn_us[i]));
    }
    let latency = charts::lines(span, "Transaction latency over time", "ms", &lat)?;
    section(
        &mut out,
        "chart-latency",
        "Transaction latency over time",
        &[latency],
    );
    let mut hists = Vec::new();
    let mut add_hist = |title: String, h: Sparse| -> Result<(), String> {
        if !h.is_empty() {
            hists.push(charts::histogram(&title, &h)?);
        }
        Ok(())
    };
    let mut total = Sample::new(0, names.len());
    for s in series {
        total.absorb(s);
    }
    add_hist(
        "Delivery latency (timestamped messages)".into(),
        total.delivery_us.clone(),
    )?;
    for (i, name) in names.iter().enumerate() {
        add_hist(format!("Latency of {name}"), total.txn_us[i].clone())?;
    }
    if hists.is_empty() {
        hists.push(charts::histogram("No latency recorded", &Vec::new())?);
    }
    section(&mut out, "chart-histogram", "Latency histograms", &hists);
    let msgs = charts::lines(
        span,
        "Messages and errors",
        "per second",
        &[
            ("sent/s".into(), per_second(series, |s| s.sent as f64)),
            (
                "received/s".into(),
                per_second(series, |s| s.received as f64),
            ),
            (
                "errors/s".into(),
                per_second(series, |s| s.errors_total() as f64),
            ),
        ],
    )?;
    section(&mut out, "chart-messages", "Messages and errors", &[msgs]);
    let mem = charts::lines(
        span,
        "Load generator resources",
        "MiB / % of a core",
        &[
            (
                "RSS (MiB)".into(),
                per_second(series, |s| s.rss_bytes as f64 / 1048576.0),
            ),
            (
                "CPU (% of one core)".into(),
                per_second(series, |s| s.cpu_ms as f64 / 10.0),
            ),
        ],
    )?;
    section(
        &mut out,
        "chart-resources",
        "Load generator resources",
        &[mem],
    );
    out.push_str("</body></html>\n");
    Ok(out)
}
