//! The run's report: `summary.json` (totals and percentiles), `timeseries.csv` (one row per
//! second) and `report.html` (a self-contained page with SVG charts drawn by `plotters`).

mod charts;
mod html;

use std::path::Path;

use serde::Serialize;

use super::collector::Collector;
use super::scenario::Scenario;
use super::stats::{
    add_sparse, histogram, percentiles, Sample, Sparse, CONNECT_ERROR_KINDS, ERROR_NAMES,
};
use super::LoadArgs;

/// Facts about the run that are not in the samples.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub scenario: String,
    pub url: String,
    pub procs: u32,
    pub workers_per_proc: u32,
    pub users_planned: u64,
    pub duration_s: f64,
    /// Users the scenario's `rendezvous` waits for (`None`: it has none).
    pub rendezvous_users: Option<u64>,
    /// Source addresses: given, chosen automatically, or left to the kernel.
    pub sources: super::sources::Meta,
    /// Ctrl-C (or SIGTERM) ended the run early.
    pub interrupted: bool,
    /// The command line, for reproducing the run.
    pub command: String,
}

impl Meta {
    pub fn new(
        args: &LoadArgs,
        s: &Scenario,
        workers_per_proc: u32,
        sources: super::sources::Meta,
        interrupted: bool,
    ) -> Self {
        Self {
            scenario: s.name.clone(),
            url: args.url.clone(),
            procs: args.procs,
            workers_per_proc,
            users_planned: s.users.unwrap_or(0),
            duration_s: s.duration_ms as f64 / 1000.0,
            rendezvous_users: s.rendezvous_users(),
            sources,
            interrupted,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// Latency statistics of one transaction (or of deliveries), ms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Latency {
    fn of(h: &Sparse, count: u64) -> Self {
        let mut hist = histogram();
        add_sparse(&mut hist, h);
        let ms = |us: u64| Some(us as f64 / 1000.0);
        if hist.is_empty() {
            return Self {
                count,
                p50_ms: None,
                p90_ms: None,
                p99_ms: None,
                p999_ms: None,
                max_ms: None,
                mean_ms: None,
            };
        }
        Self {
            count,
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p90_ms: ms(hist.value_at_quantile(0.9)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            mean_ms: Some(hist.mean() / 1000.0),
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub meta: Meta,
    pub elapsed_s: u64,
    pub arrivals: u64,
    pub connected: u64,
    pub finished: u64,
    /// Users that reached the `rendezvous` step, and that ended before they could (0 without one).
    pub rendezvous_reached: u64,
    pub rendezvous_missed: u64,
    pub peak_users: u64,
    /// Highest and mean (over seconds with arrivals) new WebSocket connections per second.
    pub peak_connect_rate: u64,
    pub mean_connect_rate: f64,
    /// From the first arrival to the last completed upgrade, s, and `connected` over it: the
    /// connection rate the run sustained (meaningful when users arrive faster than that).
    pub connect_window_s: f64,
    pub connect_rate: f64,
    /// Users that arrived but neither connected nor failed a connect: still connecting when the
    /// run ended (a server too slow to accept shows here, not as errors).
    pub never_connected: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub errors_total: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub transactions: std::collections::BTreeMap<String, Latency>,
    pub delivery: Latency,
    /// Load generator processes' resident memory, highest second (bytes), and CPU time used.
    pub peak_rss_bytes: u64,
    pub cpu_s: f64,
}

/// Totals over the whole series.
pub fn summarize(meta: &Meta, names: &[String], series: &[Sample]) -> Summary {
    let mut total = Sample::new(0, names.len());
    for s in series {
        total.absorb(s);
    }
    let with_arrivals: Vec<&Sample> = series.iter().filter(|s| s.arrivals > 0).collect();
    let window_s = total
        .last_connected_us
        .saturating_sub(total.first_arrival_us) as f64
        / 1_000_000.0;
    Summary {
        meta: meta.clone(),
        elapsed_s: series.len() as u64,
        arrivals: total.arrivals,
        connected: total.connected,
        finished: total.finished,
        rendezvous_reached: total.rendezvous,
        rendezvous_missed: total.rendezvous_missed,
        peak_users: series.iter().map(|s| s.users).max().unwrap_or(0),
        peak_connect_rate: series.iter().map(|s| s.connected).max().unwrap_or(0),
        mean_connect_rate: if with_arrivals.is_empty() {
            0.0
        } else {
            with_arrivals.iter().map(|s| s.connected).sum::<u64>() as f64
                / with_arrivals.len() as f64
        },
        connect_window_s: window_s,
        connect_rate: if window_s > 0.0 {
            total.connected as f64 / window_s
        } else {
            0.0
        },
        never_connected: total
            .arrivals
            .saturating_sub(total.connected)
            .saturating_sub(total.errors[..CONNECT_ERROR_KINDS].iter().sum::<u64>()),
        messages_sent: total.sent,
        messages_received: total.received,
        bytes_sent: total.bytes_sent,
        bytes_received: total.bytes_received,
        errors_total: total.errors_total(),
        errors: ERROR_NAMES
            .iter()
            .zip(total.errors)
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        transactions: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Latency::of(&total.txn_us[i], total.txn_ok[i])))
            .collect(),
        delivery: Latency::of(
            &total.delivery_us,
            total.delivery_us.iter().map(|p| p.1).sum(),
        ),
        peak_rss_bytes: series.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        cpu_s: total.cpu_ms as f64 / 1000.0,
    }
}

fn ms_cell(p: Option<Vec<u64>>, i: usize) -> String {
    p.map_or_else(String::new, |v| format!("{:.3}", v[i] as f64 / 1000.0))
}

/// `timeseries.csv`: one row per second.
pub fn csv(names: &[String], series: &[Sample]) -> String {
    let mut head = vec![
        "t_s",
        "users",
        "connecting",
        "arrivals",
        "connected",
        "finished",
        "sent",
        "received",
        "bytes_sent",
        "bytes_received",
        "errors",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    head.extend(ERROR_NAMES.iter().map(|k| format!("err_{k}")));
    for n in std::iter::once(&"delivery".to_string()).chain(names) {
        for col in ["count", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            head.push(format!("{n}_{col}"));
        }
    }
    head.extend(["rss_bytes", "cpu_ms"].map(String::from));
    let mut out = head.join(",");
    out.push('\n');
    let q = [0.5, 0.9, 0.99, 1.0];
    for s in series {
        let mut row: Vec<String> = [
            u64::from(s.t),
            s.users,
            s.connecting,
            s.arrivals,
            s.connected,
            s.finished,
            s.sent,
            s.received,
            s.bytes_sent,
            s.bytes_received,
            s.errors_total(),
        ]
        .iter()
        .map(u64::to_string)
        .collect();
        row.extend(s.errors.iter().map(u64::to_string));
        let lat = std::iter::once((
            &s.delivery_us,
            s.delivery_us.iter().map(|p| p.1).sum::<u64>(),
        ))
        .chain(s.txn_us.iter().zip(s.txn_ok.iter().copied()));
        for (h, count) in lat.take(names.len() + 1) {
            row.push(count.to_string());
            let p = percentiles(h, &q);
            for i in 0..q.len() {
                row.push(ms_cell(p.clone(), i));
            }
        }
        row.push(s.rss_bytes.to_string());
        row.push(s.cpu_ms.to_string());
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Writes the three files into `dir` and prints where they are with the headline numbers.
pub fn write(dir: &Path, meta: &Meta, c: &Collector) -> Result<(), String> {
    let summary = summarize(meta, &c.txn_names, &c.series);
    let w = |name: &str, body: &[u8]| {
        std::fs::write(dir.join(name), body)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    w(
        "summary.json",
        serde_json::to_string_pretty(&summary)
            .expect("summary serializes")
            .as_bytes(),
    )?;
    w("timeseries.csv", csv(&c.txn_names, &c.series).as_bytes())?;
    let page = html::page(&summary, &c.txn_names, &c.series)?;
    w("report.html", page.as_bytes())?;
    let lat = |l: &Latency| {
        l.p99_ms.map_or("-".to_string(), |p| {
            format!("p50 {:.2} ms p99 {p:.2} ms", l.p50_ms.unwrap_or(0.0))
        })
    };
    say!(
        "ringgate load: {} users connected (peak {} at once, up to {}/s), {} sent, {} received, {} errors{}",
        summary.connected,
        summary.peak_users,
        summary.peak_connect_rate,
        summary.messages_sent,
        summary.messages_received,
        summary.errors_total,
        if summary.meta.interrupted { " (interrupted)" } else { "" }
    );
    for (name, l) in &summary.transactions {
        if l.count > 0 {
            say!("ringgate load:   {name}: {} ok, {}", l.count, lat(l));
        }
    }
    if summary.delivery.count > 0 {
        say!(
            "ringgate load:   delivery: {} timestamped messages, {}",
            summary.delivery.count,
            lat(&summary.delivery)
        );
    }
    say!(
        "ringgate load: report: {}",
        dir.join("report.html").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::sparse;

    fn series() -> Vec<Sample> {
        (0..3)
            .map(|t| {
                let mut h = histogram();
                h.record(1000 * (u64::from(t) + 1)).unwrap();
                let mut s = Sample::new(t, 2);
                s.users = u64::from(t) * 10;
                s.arrivals = 10;
                s.connected = 10 - u64::from(t);
                s.txn_ok[1] = 1;
                s.txn_us[1] = sparse(&h);
                s.errors[0] = u64::from(t);
                s
            })
            .collect()
    }

    fn meta() -> Meta {
        Meta {
            scenario: "t".into(),
            url: "ws://x".into(),
            procs: 1,
            workers_per_proc: 1,
            users_planned: 30,
            duration_s: 3.0,
            rendezvous_users: None,
            sources: crate::load::sources::Meta {
                mode: crate::load::sources::Mode::Kernel,
                addresses: 0,
                ranges: String::new(),
                per_address_budget: 7058,
                most_users_per_address: 30,
                ephemeral_ports: "32768-60999".into(),
            },
            interrupted: false,
            command: "ringgate load".into(),
        }
    }

    #[test]
    fn summary_totals() {
        let names = vec!["connect".to_string(), "join".to_string()];
        let s = summarize(&meta(), &names, &series());
        assert_eq!((s.arrivals, s.connected, s.peak_users), (30, 27, 20));
        assert_eq!((s.peak_connect_rate, s.mean_connect_rate), (10, 9.0));
        assert_eq!(s.errors["connect_refused"], 3);
        assert_eq!(s.errors_total, 3);
        let join = &s.transactions["join"];
        assert_eq!(join.count, 3);
        assert_eq!(join.p50_ms, Some(2.0));
        assert_eq!(join.max_ms, Some(3.001));
        assert_eq!(s.transactions["connect"].p50_ms, None);
    }

    #[test]
    fn csv_has_a_row_per_second_and_matching_columns() {
        let names = vec!["connect".to_string(), "join".to_string()];
        let text = csv(&names, &series());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols));
        assert!(lines[0].starts_with("t_s,users,connecting,arrivals,connected,finished"));
        assert!(lines[0].contains("join_p99_ms"));
        let join_p50 = lines[0]
            .split(',')
            .position(|c| c == "join_p50_ms")
            .unwrap();
        assert_eq!(lines[2].split(',').nth(join_p50), Some("2.000"));
    }
}
