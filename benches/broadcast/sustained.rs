//! Sustained mode: the highest broadcast rate each server keeps up with, stepped up.
//!
//! Subscribers are grown to N as in the other modes, on one topic or spread over `--topics` (1,000
//! topics of N/1,000 is the second shape: many small rooms). Then, for each rate R of `--rates` in
//! turn, the bench publishes for `--step-s` seconds at R ticks per second, evenly spaced; a tick is one
//! broadcast to the topic, or with several topics one admin request that broadcasts to every topic, so
//! each tick reaches every subscriber once either way. After a step's last tick it waits until every
//! subscriber has it (or `--deliver-timeout-ms`).
//!
//! A step has **sustained** its rate when no copy was lost, the p99 of every copy's latency (from its
//! tick's publish to its receipt) is at most `--p99-limit-ms`, the publisher kept the schedule
//! (≥ 90% of R: a publisher that falls behind measures itself, not the server), and deliveries kept
//! up (achieved ≥ 90% of offered: a server whose backlog grows over the step delivers its last tick
//! late). On this 2-core box one broadcast alone to 15,000 subscribers takes ~130 ms to the last one
//! (the clients reading 15,000 sockets share the cores), so at that size a 100 ms p99 is out of
//! reach for every server, the floor included: pass a limit above the one-broadcast time there, and
//! the fall-behind test decides. The ladder stops after two steps in a row that did not (a server
//! that coalesces gets cheaper per delivery as the rate rises, so one missed step is not its end). Reported per step: the rate asked and published, deliveries offered
//! (publish rate × subscribers) and achieved (copies / time from the first publish to the last
//! receipt), p50/p99/max latency, lost copies, server and client CPU per delivery over the step, the
//! server's kernel share of its CPU and (ringgate, from its /metrics) frames per send call, overall
//! and per worker, with each worker thread's CPU (a worker that gets less of a shared core falls
//! behind and sends larger batches: the per-worker figures show which one sets the p99); and
//! per ladder the highest sustained deliveries/s. With `--ladders L` every server climbs L times,
//! interleaved with the others, and each server's figure is the median of its L highest sustained
//! rates (one ladder moves by a step between runs here), with ratios of medians against every peer.

use std::time::Duration;

use serde_json::json;

use super::common::clock::mono_ns;
use super::common::procfs::{self, CpuMark, CpuWindow};
use super::common::report;
use super::common::server;
use super::common::stats;
use super::common::wsclient::topic_name;
use super::{cpu_us, grow, Args, Grown, Subject, COMMAND_TIMEOUT, OTHER_CPU_WARN_CORES};

/// A publisher slower than this share of the asked rate stops the ladder: the step did not offer R.
const PUBLISH_RATE_MIN_SHARE: f64 = 0.9;
/// Deliveries achieved below this share of those offered mean the server fell behind: its backlog
/// grew over the step, so the last receipt came late. (A server that keeps up finishes one
/// broadcast's tail after the step: at 4 s steps and a 150 ms tail that is 0.96.)
const ACHIEVED_MIN_SHARE: f64 = 0.9;
/// ringgate's worker threads are named `ringgate-w<id>`.
const WORKER_THREAD_PREFIX: &str = "ringgate-w";
/// Quiet time before a step's CPU window, after the keepalives (their replies are not the step's).
const STEP_SETTLE: Duration = Duration::from_millis(500);

/// Broadcasts one step publishes at rate `rate`.
fn step_broadcasts(args: &Args, rate: f64) -> usize {
    ((rate * args.step_s).round() as usize).max(1)
}

/// Receipt slots a client child needs: the longest step's broadcasts.
pub fn max_step_broadcasts(args: &Args) -> usize {
    args.rates
        .iter()
        .map(|r| step_broadcasts(args, *r))
        .max()
        .unwrap_or(1)
}

/// One rate step of one server.
#[derive(Clone, Debug)]
struct Step {
    rate_per_s: f64,
    published: usize,
    publish_rate_per_s: f64,
    expected: usize,
    received: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    achieved_deliveries_per_s: f64,
    server_cpu_us_per_delivery: f64,
    client_cpu_us_per_delivery: f64,
    /// Share of the server's CPU over the step spent in the kernel (stime against utime + stime).
    server_kernel_share: f64,
    /// ringgate only (from its /metrics): frames per send call over the step, the coalescing.
    frames_per_send: Option<f64>,
    /// The same per worker (empty for a peer).
    frames_per_send_by_worker: Vec<f64>,
    /// ringgate only: each worker thread's CPU over the step, in % of one core.
    worker_cpu_pct: Vec<f64>,
    sustained: bool,
}

impl Step {
    fn offered_deliveries_per_s(&self, subscribers: usize) -> f64 {
        self.publish_rate_per_s * subscribers as f64
    }
}

/// One server's ladder at one N.
struct Ladder {
    label: String,
    is_peer: bool,
    n: usize,
    subscribers: usize,
    join_failures: usize,
    steps: Vec<Step>,
    cpu: CpuWindow,
}

impl Ladder {
    /// The highest sustained step, if any.
    fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.sustained)
            .max_by(|a, b| a.publish_rate_per_s.total_cmp(&b.publish_rate_per_s))
    }

    fn best_deliveries_per_s(&self) -> f64 {
        self.best()
            .map_or(0.0, |s| s.offered_deliveries_per_s(self.subscribers))
    }
}

/// Runs every server's ladder at every N (servers interleaved per N), then reports.
pub fn run(
    args: &Args,
    subjects: &mut [Subject],
    ns: &[usize],
    run_mark: CpuMark,
) -> Result<(), String> {
    if args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err("--rates must all be above 0".to_owned());
    }
    if args.ladders == 0 {
        return Err("--ladders must be at least 1".to_owned());
    }
    let mut next_seq = 1u64;
    let mut ladders = Vec::new();
    for (k, n) in ns.iter().enumerate() {
        for round in 0..args.ladders {
            for j in 0..subjects.len() {
                // Interleaved, and each round starts with another server.
                let i = (j + k + round) % subjects.len();
                let pids = super::all_pids(subjects);
                ladders.push(ladder(args, subjects, i, *n, &mut next_seq, &pids)?);
            }
        }
    }
    let pids = super::all_pids(subjects);
    let run_cpu = procfs::cpu_since(&run_mark, &pids);
    for s in subjects.iter_mut() {
        s.server.check_alive()?;
    }
    report_ladders(args, ns, &ladders, run_cpu)
}

/// Climbs the rates with `subjects[i]`; the others' clients only send their keepalives.
fn ladder(
    args: &Args,
    subjects: &mut [Subject],
    i: usize,
    n: usize,
    next_seq: &mut u64,
    pids: &[u32],
) -> Result<Ladder, String> {
    let Grown {
        opened,
        live,
        subscribers,
        ..
    } = grow(args, &mut subjects[i], n)?;
    if subscribers == 0 {
        return Err(format!(
            "{}: no live subscribers to climb with",
            subjects[i].label
        ));
    }
    let pad = "x".repeat(args.payload_bytes);
    let server_pid = subjects[i].server.pid();
    let client_pids = subjects[i].clients.pids();
    let mark = procfs::cpu_mark(pids);
    let mut steps = Vec::new();
    for rate in &args.rates {
        // Keepalives first, from every server's clients (a ladder outlasts ringgate's 60 s idle
        // close: the servers waiting for their next ladder must keep their subscribers), then a
        // quiet moment so the replies stay out of the step's CPU window.
        for other in subjects.iter_mut() {
            other.clients.heartbeat(COMMAND_TIMEOUT)?;
        }
        super::common::guard::sleep_checked(STEP_SETTLE)?;
        let s = &mut subjects[i];
        let count = step_broadcasts(args, *rate);
        let base = *next_seq;
        *next_seq += count as u64;
        s.clients.reset(base, COMMAND_TIMEOUT)?;
        // One reading of the server's /proc stat per end: its total and its user/kernel split.
        let server0 = procfs::proc_cpu(server_pid).unwrap_or_default();
        let client0 = cpu_us(&client_pids);
        let sends0 = send_counts(&s.server);
        let workers0 = procfs::threads_run_ns(server_pid, WORKER_THREAD_PREFIX);
        let period_ns = 1e9 / rate;
        let t0 = mono_ns();
        let mut t_pub = Vec::with_capacity(count);
        for i in 0..count {
            let due = t0 + (i as f64 * period_ns) as u64;
            let now = mono_ns();
            if due > now {
                super::common::guard::sleep_checked(Duration::from_nanos(due - now))?;
            }
            let fields = format!(r#""seq":{},"pad":"{pad}""#, base + i as u64);
            let t = if args.topics <= 1 {
                s.server.publish_admin("bench", &fields)?
            } else {
                let items: Vec<(String, String)> = (0..args.topics)
                    .map(|t| (topic_name(t, args.topics), fields.clone()))
                    .collect();
                s.server.publish_admin_many("bench", &items)?
            };
            t_pub.push(t);
        }
        s.clients.wait_got(
            base + count as u64 - 1,
            &live,
            Duration::from_millis(args.deliver_timeout_ms),
        )?;
        let server1 = procfs::proc_cpu(server_pid).unwrap_or_default();
        let server_cpu = server1.best_us() - server0.best_us();
        let client_cpu = cpu_us(&client_pids) - client0;
        let stat_us = server1.stat_us.saturating_sub(server0.stat_us);
        let server_kernel_share =
            1.0 - server1.user_us.saturating_sub(server0.user_us) as f64 / stat_us.max(1) as f64;
        let sends1 = send_counts(&s.server);
        let step_ns = mono_ns().saturating_sub(t0).max(1);
        let workers1 = procfs::threads_run_ns(server_pid, WORKER_THREAD_PREFIX);
        let worker_cpu_pct = if workers0.len() == workers1.len() {
            workers0
                .iter()
                .zip(&workers1)
                .map(|((_, a), (_, b))| b.saturating_sub(*a) as f64 * 100.0 / step_ns as f64)
                .collect()
        } else {
            Vec::new()
        };
        let (frames_per_send, frames_per_send_by_worker) = match (&sends0, &sends1) {
            (Some(w0), Some(w1)) if w0.len() == w1.len() => {
                let ratio = |(f0, s0): (f64, f64), (f1, s1): (f64, f64)| {
                    (s1 > s0).then(|| (f1 - f0) / (s1 - s0))
                };
                let sum = |w: &[(f64, f64)]| {
                    w.iter()
                        .fold((0.0, 0.0), |(f, n), (wf, wn)| (f + wf, n + wn))
                };
                let by_worker = w0
                    .iter()
                    .zip(w1)
                    .filter_map(|(a, b)| ratio(*a, *b))
                    .collect();
                (ratio(sum(w0), sum(w1)), by_worker)
            }
            _ => (None, Vec::new()),
        };
        let receipts = s.clients.collect(count, COMMAND_TIMEOUT)?;
        let mut lat_ns = Vec::new();
        let mut last_receipt = t_pub[0];
        for (slot, times) in receipts.iter().enumerate().take(count) {
            for t in times {
                lat_ns.push(t.saturating_sub(t_pub[slot]));
                last_receipt = last_receipt.max(*t);
            }
        }
        lat_ns.sort_unstable();
        let received = lat_ns.len();
        let expected = subscribers * count;
        let publish_span_ns = t_pub[count - 1].saturating_sub(t_pub[0]);
        let publish_rate_per_s = if count > 1 {
            (count - 1) as f64 / (publish_span_ns.max(1) as f64 / 1e9)
        } else {
            *rate
        };
        let p99_ms = stats::percentile(&lat_ns, 99.0) as f64 / 1e6;
        let achieved_deliveries_per_s =
            received as f64 / (last_receipt.saturating_sub(t_pub[0]).max(1) as f64 / 1e9);
        let offered_deliveries_per_s = publish_rate_per_s * subscribers as f64;
        let sustained = received >= expected
            && p99_ms <= args.p99_limit_ms
            && publish_rate_per_s >= rate * PUBLISH_RATE_MIN_SHARE
            && achieved_deliveries_per_s >= offered_deliveries_per_s * ACHIEVED_MIN_SHARE;
        let step = Step {
            rate_per_s: *rate,
            published: count,
            publish_rate_per_s,
            expected,
            received,
            p50_ms: stats::percentile(&lat_ns, 50.0) as f64 / 1e6,
            p99_ms,
            max_ms: lat_ns.last().copied().unwrap_or(0) as f64 / 1e6,
            achieved_deliveries_per_s,
            server_cpu_us_per_delivery: server_cpu / received.max(1) as f64,
            client_cpu_us_per_delivery: client_cpu / received.max(1) as f64,
            server_kernel_share,
            frames_per_send,
            frames_per_send_by_worker,
            worker_cpu_pct,
            sustained,
        };
        eprintln!(
            "  {:>6} {:<10} {:>6.1}/s ({:>5.1} published): {:>7.0}k deliveries/s, p50 {:.1} ms p99 {:.1} ms, lost {}, {:.2} µs server CPU/delivery{}",
            n,
            s.label,
            rate,
            publish_rate_per_s,
            step.achieved_deliveries_per_s / 1e3,
            step.p50_ms,
            step.p99_ms,
            expected.saturating_sub(received),
            step.server_cpu_us_per_delivery,
            if sustained { "" } else { "  ← not sustained" }
        );
        steps.push(step);
        // Two failed steps in a row end the ladder. Not one: a server that coalesces queued frames
        // gets cheaper per delivery as the rate rises, so it can miss a step at the edge of what
        // one send per frame carries and keep the next ones.
        if steps.len() >= 2 && steps[steps.len() - 2..].iter().all(|s| !s.sustained) {
            break;
        }
    }
    Ok(Ladder {
        label: subjects[i].label.clone(),
        is_peer: subjects[i].role.is_peer(),
        n,
        subscribers,
        join_failures: opened.failed,
        steps,
        cpu: procfs::cpu_since(&mark, pids),
    })
}

/// ringgate's frames out and send calls so far (its /metrics), for the coalescing of a step; `None`
/// for a server without them.
fn send_counts(server: &server::Server) -> Option<Vec<(f64, f64)>> {
    if !server.role.is_ringgate() {
        return None;
    }
    let frames = server.metric_series("ringgate_frames_out_total").ok()?;
    let sends = server.metric_series("ringgate_sends_total").ok()?;
    (frames.len() == sends.len()).then(|| frames.into_iter().zip(sends).collect())
}

/// "41.2 (27.0, 57.0)": overall, then per worker when there are several.
fn frames_per_send_cell(s: &Step) -> String {
    let Some(all) = s.frames_per_send else {
        return "-".to_owned();
    };
    if s.frames_per_send_by_worker.len() < 2 {
        return format!("{all:.1}");
    }
    format!("{all:.1} ({})", listed(&s.frames_per_send_by_worker, 1))
}

/// "45, 71": per-worker figures with `decimals` digits, or "-" when there are none.
fn listed(values: &[f64], decimals: usize) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    let each: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    each.join(", ")
}

fn report_ladders(
    args: &Args,
    ns: &[usize],
    ladders: &[Ladder],
    run_cpu: CpuWindow,
) -> Result<(), String> {
    let mut warnings = Vec::new();
    let mut per_n = Vec::new();
    for n in ns {
        let here: Vec<&Ladder> = ladders.iter().filter(|l| l.n == *n).collect();
        println!(
            "\n## Sustained broadcast rate, N = {n} subscribers over {} topic(s) ({} s steps, p99 limit {} ms, V{} subscribers)\n",
            args.topics, args.step_s, args.p99_limit_ms, args.vsn
        );
        for l in &here {
            println!("### {} ({} subscribers)\n", l.label, l.subscribers);
            let rows: Vec<Vec<String>> = l
                .steps
                .iter()
                .map(|s| {
                    vec![
                        format!("{:.0}", s.rate_per_s),
                        format!("{:.1}", s.publish_rate_per_s),
                        format!("{:.0}", s.offered_deliveries_per_s(l.subscribers) / 1e3),
                        format!("{:.0}", s.achieved_deliveries_per_s / 1e3),
                        format!("{:.2}", s.p50_ms),
                        format!("{:.2}", s.p99_ms),
                        format!("{:.2}", s.max_ms),
                        s.expected.saturating_sub(s.received).to_string(),
                        format!("{:.2}", s.server_cpu_us_per_delivery),
                        format!("{:.2}", s.client_cpu_us_per_delivery),
                        format!("{:.0}%", s.server_kernel_share * 100.0),
                        frames_per_send_cell(s),
                        listed(&s.worker_cpu_pct, 0),
                        if s.sustained { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            println!(
                "{}",
                report::table(
                    &[
                        "rate/s",
                        "published/s",
                        "k offered/s",
                        "k achieved/s",
                        "p50 ms",
                        "p99 ms",
                        "max ms",
                        "lost",
                        "server CPU µs/delivery",
                        "client CPU µs/delivery",
                        "server kernel share",
                        "frames/send (per worker)",
                        "worker CPU, % of a core",
                        "sustained",
                    ],
                    &rows
                )
            );
            if l.join_failures > 0 {
                warnings.push(format!(
                    "{} at N={n}: {} joins failed",
                    l.label, l.join_failures
                ));
            }
            if l.cpu.other_cores() > OTHER_CPU_WARN_CORES {
                warnings.push(format!(
                    "{} at N={n}: other processes used {:.0}% of a core during the ladder",
                    l.label,
                    l.cpu.other_cores() * 100.0
                ));
            }
        }
        let rows: Vec<Vec<String>> = here
            .iter()
            .map(|l| {
                let best = l.best();
                vec![
                    l.label.clone(),
                    format!("{:.0}", l.best_deliveries_per_s() / 1e3),
                    best.map_or("-".to_owned(), |s| format!("{:.1}", s.publish_rate_per_s)),
                    best.map_or("-".to_owned(), |s| format!("{:.2}", s.p99_ms)),
                    best.map_or("-".to_owned(), |s| {
                        format!("{:.2}", s.server_cpu_us_per_delivery)
                    }),
                ]
            })
            .collect();
        // One row per server: the median of its ladders' highest sustained rates.
        let mut servers: Vec<(String, bool, Vec<f64>)> = Vec::new();
        for l in &here {
            match servers.iter_mut().find(|(label, _, _)| *label == l.label) {
                Some((_, _, bests)) => bests.push(l.best_deliveries_per_s()),
                None => servers.push((l.label.clone(), l.is_peer, vec![l.best_deliveries_per_s()])),
            }
        }
        let median = |bests: &[f64]| stats::spread(bests).map_or(0.0, |s| s.median);
        println!("### Highest sustained rate, per ladder\n");
        println!(
            "{}",
            report::table(
                &[
                    "server",
                    "k deliveries/s sustained",
                    "at broadcasts/s",
                    "p99 ms there",
                    "server CPU µs/delivery there",
                ],
                &rows
            )
        );
        let rows: Vec<Vec<String>> = servers
            .iter()
            .map(|(label, _, bests)| {
                let per_ladder: Vec<String> =
                    bests.iter().map(|b| format!("{:.0}", b / 1e3)).collect();
                vec![
                    label.clone(),
                    format!("{:.0}", median(bests) / 1e3),
                    per_ladder.join(", "),
                ]
            })
            .collect();
        println!(
            "### Highest sustained rate, median over {} ladder(s)\n",
            args.ladders
        );
        println!(
            "{}",
            report::table(
                &[
                    "server",
                    "k deliveries/s (median)",
                    "k deliveries/s per ladder"
                ],
                &rows
            )
        );
        let mut ratios = serde_json::Map::new();
        for (peer, _, peer_bests) in servers.iter().filter(|(_, is_peer, _)| *is_peer) {
            let mut per = serde_json::Map::new();
            let rows: Vec<Vec<String>> = servers
                .iter()
                .map(|(label, _, bests)| {
                    let r = median(bests) / median(peer_bests);
                    per.insert(label.clone(), json!(r));
                    vec![
                        label.clone(),
                        report::ratio(median(bests), median(peer_bests)),
                    ]
                })
                .collect();
            println!("Sustained deliveries/s (medians) against {peer}:\n");
            println!("{}", report::table(&["server", "ratio"], &rows));
            ratios.insert(peer.clone(), serde_json::Value::Object(per));
        }
        per_n.push(json!({
            "n": n,
            "servers": here.iter().map(|l| json!({
                "label": l.label, "subscribers": l.subscribers, "join_failures": l.join_failures,
                "best_sustained_deliveries_per_s": l.best_deliveries_per_s(),
                "median_best_over_ladders": servers.iter().find(|(label, _, _)| *label == l.label).map(|(_, _, b)| median(b)),
                "cpu": l.cpu.to_json(),
                "steps": l.steps.iter().map(|s| json!({
                    "rate_per_s": s.rate_per_s, "published": s.published,
                    "publish_rate_per_s": s.publish_rate_per_s,
                    "offered_deliveries_per_s": s.offered_deliveries_per_s(l.subscribers),
                    "achieved_deliveries_per_s": s.achieved_deliveries_per_s,
                    "expected": s.expected, "received": s.received,
                    "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
                    "server_cpu_us_per_delivery": s.server_cpu_us_per_delivery,
                    "client_cpu_us_per_delivery": s.client_cpu_us_per_delivery,
                    "server_kernel_share": s.server_kernel_share,
                    "frames_per_send": s.frames_per_send,
                    "frames_per_send_by_worker": s.frames_per_send_by_worker,
                    "worker_cpu_pct": s.worker_cpu_pct,
                    "sustained": s.sustained,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "best_ratios_vs": ratios,
        }));
    }
    if run_cpu.other_cores() > OTHER_CPU_WARN_CORES {
        warnings.push(format!(
            "other processes used {:.1}% of a core on average during the run: rerun when the machine is quiet",
            run_cpu.other_cores() * 100.0
        ));
    }
    println!(
        "Run: {:.0} s wall, other processes {:.1}% of a core.",
        run_cpu.wall_us / 1e6,
        run_cpu.other_cores() * 100.0
    );
    for w in &warnings {
        println!("WARNING: {w}");
    }
    let value = json!({
        "bench": "broadcast", "mode": "sustained",
        "rates": args.rates, "step_s": args.step_s, "p99_limit_ms": args.p99_limit_ms,
        "ladders": args.ladders,
        "topics": args.topics, "vsn": args.vsn, "payload_pad_bytes": args.payload_bytes,
        "workers": args.workers,
        "machine": report::machine_json(),
        "rounds": per_n,
        "run_cpu": run_cpu.to_json(),
        "warnings": warnings,
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| server::results_path("broadcast-sustained.json"));
    let path = report::write_json(&out, &value)?;
    println!("\nJSON: {}", path.display());
    Ok(())
}
