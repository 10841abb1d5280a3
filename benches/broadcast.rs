//! Broadcast: how fast each server delivers one message to N idle subscribers of one topic, and at what
//! CPU cost per delivery, in one run.
//!
//! `cargo build --release --bins --examples && cargo bench --bench broadcast -- [options]`
//!
//! For every server (`--servers ringgate,peer,peer4k`) and every N (`--n 1000,5000,15000`, interleaved:
//! each N is taken by every server in turn before the next N), N client connections join `rooms:lobby`
//! over Phoenix V1 (`--vsn 2` for V2) and wait for the ok reply. Then `--k` broadcasts, at least
//! `--spacing-ms` apart, are published through the admin API (`POST /api/broadcast`, default) or as a
//! client push from one more joined connection (`--publish push`). Each payload carries a sequence number
//! and the publish time on CLOCK_MONOTONIC (the same clock in every process on the box); every
//! subscriber timestamps its copy on arrival.
//!
//! Per broadcast: time from publish to the LAST subscriber's receipt, p50/p99 over subscribers,
//! deliveries/s (subscribers reached / time to last), server CPU µs per delivery (the server's thread
//! run time over the broadcast / deliveries), and losses (every subscriber must get every broadcast).
//! Reported as median [min–max] over the K broadcasts, with ratios against each peer in the run. A
//! broadcast is over when every client process has seen it on all its live connections, or after
//! `--deliver-timeout-ms` (then the missing copies count as lost).
//! Results: a markdown table on stdout and `target/bench-results/broadcast.json`.

#[allow(dead_code)] // Shared with the idle_conns bench; each uses a part.
#[path = "common/mod.rs"]
mod common;

#[path = "broadcast/burst.rs"]
mod burst;
#[path = "broadcast/sustained.rs"]
mod sustained;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use common::clients::{ClientSet, ClientsSpec, Opened};
use common::clock::mono_ns;
use common::procfs::{self, CpuWindow};
use common::report;
use common::server::{self, PushPublisher, Role, Server, ServerOpts};
use common::stats::{self, Spread};
use common::wsclient::{ClientImpl, JoinMode};

/// Time the clients get to reach a subscriber count.
const RAMP_TIMEOUT: Duration = Duration::from_secs(180);
/// Time a client child gets to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Other processes using more than this share of one core make a round's figures suspect.
const OTHER_CPU_WARN_CORES: f64 = 0.05;

#[derive(Parser, Debug)]
#[command(
    about = "Broadcast fan-out of ringgate, the peers (tokio-tungstenite, fastwebsockets) and the raw io_uring floor"
)]
struct Args {
    /// Servers to compare, in one run (repeats allowed).
    #[arg(long, default_value = "ringgate,peer,peer4k")]
    servers: String,
    /// Subscriber counts.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,15000")]
    n: Vec<usize>,
    /// Broadcasts per server and subscriber count.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Minimum time between two publishes.
    #[arg(long, default_value_t = 200)]
    spacing_ms: u64,
    /// `admin` (POST /api/broadcast) or `push` (a joined client pushes; the server broadcasts it).
    #[arg(long, default_value = "admin")]
    publish: String,
    /// Subscribers' Phoenix serializer: 1 (JSON object, the seed's) or 2 (JSON array, `vsn=2.0.0`).
    #[arg(long, default_value_t = 1)]
    vsn: u8,
    /// Padding added to each payload, in bytes.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// A broadcast not received by everyone within this time counts the missing copies as lost.
    #[arg(long, default_value_t = 5000)]
    deliver_timeout_ms: u64,
    /// Settle time after the subscribers joined, before the first broadcast.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// ringgate --workers / peer --threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Client processes per server (0: one per 18k subscribers, at least one).
    #[arg(long, default_value_t = 0)]
    client_procs: usize,
    /// `raw` (hand-rolled, cheapest) or `tungstenite`.
    #[arg(long, default_value = "raw")]
    client_impl: String,
    /// Joins in flight per client process.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Runtime threads per client process.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Global timeout for the whole run.
    #[arg(long, default_value_t = 1200)]
    timeout_s: u64,
    /// ringgate binary (default target/release/ringgate).
    #[arg(long)]
    ringgate_bin: Option<PathBuf>,
    /// Peer binary (default target/release/examples/peer_tokio_tungstenite).
    #[arg(long)]
    peer_bin: Option<PathBuf>,
    /// fastwebsockets peer binary (default target/release/examples/peer_fastwebsockets).
    #[arg(long)]
    fastws_bin: Option<PathBuf>,
    /// ringgate built at another commit, served as `ringgate-base` (a same-run baseline).
    #[arg(long)]
    base_bin: Option<PathBuf>,
    /// Floor binary (default target/release/examples/floor_uring).
    #[arg(long)]
    floor_bin: Option<PathBuf>,
    /// JSON output path (default target/bench-results/broadcast.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Burst mode: each of `--bursts` bursts publishes `--k` broadcasts in ONE admin request (a JSON
    /// array), back to back; a burst's figures are over all its deliveries (time from the publish to
    /// the last copy of the last broadcast, deliveries/s, server CPU per delivery).
    #[arg(long, conflicts_with = "sustained")]
    burst: bool,
    /// Bursts per server and subscriber count (burst mode).
    #[arg(long, default_value_t = 5)]
    bursts: usize,
    /// Sustained mode: publish at each rate of `--rates` for `--step-s`, stepping up until a step's
    /// delivery p99 exceeds `--p99-limit-ms` or copies are lost (see benches/broadcast/sustained.rs).
    #[arg(long)]
    sustained: bool,
    /// Sustained mode: broadcasts per second at each step (each reaches every subscriber once).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,5,10,15,20,30,40,60,80,120"
    )]
    rates: Vec<f64>,
    /// Sustained mode: length of one step.
    #[arg(long, default_value_t = 4.0)]
    step_s: f64,
    /// Sustained mode: a step whose delivery p99 is above this has not sustained its rate.
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// Sustained mode: ladders per server, interleaved (each a full climb of `--rates`); the
    /// highest sustained rate is reported per ladder and as the median over them, since one ladder
    /// moves by a step between runs on a shared box.
    #[arg(long, default_value_t = 1)]
    ladders: usize,
    /// Topics the subscribers spread over (sustained mode): 1 is one topic of N; 1000 is 1,000 topics of
    /// N/1000, and each tick of the rate publishes once to every topic (one admin request).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Passed by `cargo bench`; without it (e.g. under `cargo test --benches`) the bench does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One broadcast's outcome.
#[derive(Clone, Debug)]
struct Shot {
    seq: u64,
    expected: usize,
    received: usize,
    to_last_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    deliveries_per_s: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
}

/// K broadcasts to N subscribers of one server.
#[derive(Clone, Debug)]
struct Round {
    n: usize,
    subscribers: usize,
    join_failures: usize,
    join_conns_per_s: f64,
    listen_overflows: u64,
    shots: Vec<Shot>,
    cpu: CpuWindow,
}

struct Subject {
    label: String,
    role: Role,
    server: Server,
    clients: ClientSet,
    rounds: Vec<Round>,
}

fn main() {
    if common::clients::is_child_invocation() {
        common::clients::child_main();
    }
    let args = Args::parse();
    if !args.bench {
        eprintln!("broadcast: not started by `cargo bench`; nothing to do (run `cargo bench --bench broadcast`)");
        return;
    }
    common::guard::install_watchdog(Duration::from_secs(args.timeout_s));
    if let Err(e) = run(&args) {
        eprintln!("broadcast: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let roles = Role::parse_list(&args.servers)?;
    let mut ns = args.n.clone();
    ns.sort_unstable();
    ns.dedup();
    ns.retain(|n| *n > 0);
    let max_n = *ns.last().ok_or("--n needs at least one count above 0")?;
    if args.k == 0 {
        return Err("--k must be at least 1".to_owned());
    }
    let push = match args.publish.as_str() {
        "admin" => false,
        "push" => true,
        other => return Err(format!("--publish {other:?}: expected admin or push")),
    };
    let (join, path) = match args.vsn {
        1 => (JoinMode::V1, "/socket/websocket"),
        2 => (JoinMode::V2, "/socket/websocket?vsn=2.0.0"),
        other => return Err(format!("--vsn {other}: expected 1 or 2")),
    };
    let imp = ClientImpl::parse(&args.client_impl)?;
    let opts = ServerOpts::resolve(
        args.ringgate_bin.clone(),
        args.peer_bin.clone(),
        args.fastws_bin.clone(),
        &roles,
        args.workers,
        true,
    )?
    .with_floor_bin(args.floor_bin.clone(), &roles)?
    .with_base_bin(args.base_bin.clone(), &roles)?;
    let procs = if args.client_procs > 0 {
        args.client_procs
    } else {
        max_n.div_ceil(common::CONNS_PER_CLIENT_PROCESS_MAX)
    };
    eprintln!(
        "broadcast: servers {:?}, N {ns:?}, K {} every ≥{} ms via {}, V{} subscribers, {procs} client process(es) per server",
        roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
        args.k,
        args.spacing_ms,
        args.publish,
        args.vsn
    );
    let run_mark = procfs::cpu_mark(&[]);
    let mut subjects = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let same_before = roles[..i].iter().filter(|r| *r == role).count();
        let label = if same_before == 0 {
            role.name().to_owned()
        } else {
            format!("{}#{}", role.name(), same_before + 1)
        };
        let server = Server::start(*role, &label, &opts)?;
        let spec = ClientsSpec {
            server: server.addr,
            path: path.to_owned(),
            join,
            imp,
            concurrency: args.concurrency,
            threads: args.client_threads,
            slots: slots(args),
            topics: args.topics,
        };
        let clients = ClientSet::spawn(&label, &spec, procs)?;
        subjects.push(Subject {
            label,
            role: *role,
            server,
            clients,
            rounds: Vec::new(),
        });
    }
    if args.sustained {
        return sustained::run(args, &mut subjects, &ns, run_mark);
    }
    if args.topics > 1 {
        return Err("--topics is for --sustained".to_owned());
    }
    let mut next_seq = 1u64;
    for (k, n) in ns.iter().enumerate() {
        for j in 0..subjects.len() {
            let i = (j + k) % subjects.len();
            let pids = all_pids(&subjects);
            let round = if args.burst {
                burst::round(args, &mut subjects[i], *n, &mut next_seq, &pids)?
            } else {
                let r = round(args, &mut subjects[i], *n, next_seq, push, &pids)?;
                next_seq += args.k as u64;
                r
            };
            subjects[i].rounds.push(round);
        }
    }
    let pids = all_pids(&subjects);
    let run_cpu = procfs::cpu_since(&run_mark, &pids);
    for s in subjects.iter_mut() {
        s.server.check_alive()?;
    }
    report_results(args, &subjects, run_cpu, procs, imp)
}

/// Receipt slots each client child keeps per round: one per broadcast the round times.
fn slots(args: &Args) -> usize {
    if args.sustained {
        sustained::max_step_broadcasts(args)
    } else {
        args.k
    }
}

fn all_pids(subjects: &[Subject]) -> Vec<u32> {
    subjects
        .iter()
        .flat_map(|s| std::iter::once(s.server.pid()).chain(s.clients.pids()))
        .collect()
}

fn cpu_us(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| procfs::proc_cpu(*p).ok())
        .map(|c| c.best_us())
        .sum()
}

/// A server's subscribers, grown to a count and checked live.
struct Grown {
    opened: Opened,
    listen_overflows: u64,
    /// Live connections per client child (what `wait_got` waits for).
    live: Vec<usize>,
    subscribers: usize,
}

/// Grows one server's subscribers to `n` (and keeps the earlier ones alive), waits the settle time.
fn grow(args: &Args, s: &mut Subject, n: usize) -> Result<Grown, String> {
    s.server.check_alive()?;
    // ringgate closes a Phoenix socket that sent nothing for 60 s: a heartbeat per round keeps the
    // subscribers of earlier rounds alive while the other servers take their turn.
    s.clients.heartbeat(COMMAND_TIMEOUT)?;
    let overflows0 = procfs::listen_overflows();
    let opened = s.clients.open_to(n, RAMP_TIMEOUT)?;
    let listen_overflows = procfs::listen_overflows() - overflows0;
    if opened.failed > 0 {
        eprintln!(
            "  warning: {}: {} joins failed (first: {})",
            s.label,
            opened.failed,
            opened.first_error.as_deref().unwrap_or("?")
        );
    }
    common::guard::sleep_checked(Duration::from_millis(args.settle_ms))?;
    let live = s.clients.live_per_child(COMMAND_TIMEOUT)?;
    let subscribers: usize = live.iter().sum();
    Ok(Grown {
        opened,
        listen_overflows,
        live,
        subscribers,
    })
}

/// Grows one server's subscribers to `n`, then times K broadcasts numbered from `base`.
fn round(
    args: &Args,
    s: &mut Subject,
    n: usize,
    base: u64,
    push: bool,
    pids: &[u32],
) -> Result<Round, String> {
    let Grown {
        opened,
        listen_overflows,
        live,
        subscribers,
    } = grow(args, s, n)?;
    s.clients.reset(base, COMMAND_TIMEOUT)?;
    let mut publisher = if push {
        Some(PushPublisher::connect(s.server.addr)?)
    } else {
        None
    };
    let pad = "x".repeat(args.payload_bytes);
    let server_pid = [s.server.pid()];
    let client_pids = s.clients.pids();
    let mark = procfs::cpu_mark(pids);
    let mut published = Vec::new();
    for b in 0..args.k as u64 {
        let seq = base + b;
        let fields = format!(r#""seq":{seq},"pad":"{pad}""#);
        let server0 = cpu_us(&server_pid);
        let client0 = cpu_us(&client_pids);
        let t_pub = match publisher.as_mut() {
            Some(p) => p.publish("bench", &fields)?,
            None => s.server.publish_admin("bench", &fields)?,
        };
        let complete =
            s.clients
                .wait_got(seq, &live, Duration::from_millis(args.deliver_timeout_ms))?;
        let server_cpu = cpu_us(&server_pid) - server0;
        let client_cpu = cpu_us(&client_pids) - client0;
        published.push((seq, t_pub, server_cpu, client_cpu, complete));
        let next = t_pub + args.spacing_ms * 1_000_000;
        let now = mono_ns();
        if next > now {
            common::guard::sleep_checked(Duration::from_nanos(next - now))?;
        }
    }
    let cpu = procfs::cpu_since(&mark, pids);
    let receipts = s.clients.collect(args.k, COMMAND_TIMEOUT)?;
    let mut shots = Vec::new();
    for (slot, (seq, t_pub, server_cpu_us, client_cpu_us, _complete)) in
        published.into_iter().enumerate()
    {
        let mut lat_ns: Vec<u64> = receipts[slot]
            .iter()
            .map(|t| t.saturating_sub(t_pub))
            .collect();
        lat_ns.sort_unstable();
        let to_last_ns = lat_ns.last().copied().unwrap_or(0);
        let received = lat_ns.len();
        shots.push(Shot {
            seq,
            expected: subscribers,
            received,
            to_last_ms: to_last_ns as f64 / 1e6,
            p50_ms: stats::percentile(&lat_ns, 50.0) as f64 / 1e6,
            p99_ms: stats::percentile(&lat_ns, 99.0) as f64 / 1e6,
            deliveries_per_s: received as f64 / (to_last_ns.max(1) as f64 / 1e9),
            server_cpu_us,
            client_cpu_us,
        });
    }
    Ok(finish_round(
        &s.label,
        n,
        subscribers,
        &opened,
        listen_overflows,
        shots,
        cpu,
    ))
}

/// Prints a round's one-line outcome and packs it.
fn finish_round(
    label: &str,
    n: usize,
    subscribers: usize,
    opened: &Opened,
    listen_overflows: u64,
    shots: Vec<Shot>,
    cpu: CpuWindow,
) -> Round {
    let lost: usize = shots
        .iter()
        .map(|x| x.expected.saturating_sub(x.received))
        .sum();
    let to_last = stats::spread(&shots.iter().map(|x| x.to_last_ms).collect::<Vec<_>>());
    let cpu_per = cpu_per_delivery(&shots);
    eprintln!(
        "  {:>6} {:<9} to last {} ms, {:.2} µs CPU/delivery, lost {lost}{}",
        n,
        label,
        report::spread(to_last, 2),
        cpu_per,
        if cpu.other_cores() > OTHER_CPU_WARN_CORES * 2.0 {
            format!(
                "  (warning: other processes used {:.0}% of a core)",
                cpu.other_cores() * 100.0
            )
        } else {
            String::new()
        }
    );
    Round {
        n,
        subscribers,
        join_failures: opened.failed,
        join_conns_per_s: opened.ok as f64 / (opened.elapsed_ns.max(1) as f64 / 1e9),
        listen_overflows,
        shots,
        cpu,
    }
}

/// Server CPU over all broadcasts of a round / all deliveries: one figure, less exposed to the
/// resolution of a single short broadcast than a per-broadcast median.
fn cpu_per_delivery(shots: &[Shot]) -> f64 {
    let cpu: f64 = shots.iter().map(|x| x.server_cpu_us).sum();
    let delivered: usize = shots.iter().map(|x| x.received).sum();
    cpu / delivered.max(1) as f64
}

struct Summary {
    to_last_ms: Option<Spread>,
    p50_ms: Option<Spread>,
    p99_ms: Option<Spread>,
    deliveries_per_s: Option<Spread>,
    cpu_us_per_delivery: f64,
    client_cpu_us_per_delivery: f64,
    lost: usize,
}

fn summarize(r: &Round) -> Summary {
    let of = |f: fn(&Shot) -> f64| stats::spread(&r.shots.iter().map(f).collect::<Vec<_>>());
    let delivered: usize = r.shots.iter().map(|x| x.received).sum();
    Summary {
        to_last_ms: of(|x| x.to_last_ms),
        p50_ms: of(|x| x.p50_ms),
        p99_ms: of(|x| x.p99_ms),
        deliveries_per_s: of(|x| x.deliveries_per_s),
        cpu_us_per_delivery: cpu_per_delivery(&r.shots),
        client_cpu_us_per_delivery: r.shots.iter().map(|x| x.client_cpu_us).sum::<f64>()
            / delivered.max(1) as f64,
        lost: r
            .shots
            .iter()
            .map(|x| x.expected.saturating_sub(x.received))
            .sum(),
    }
}

fn median(s: Option<Spread>) -> f64 {
    s.map_or(f64::NAN, |s| s.median)
}

fn report_results(
    args: &Args,
    subjects: &[Subject],
    run_cpu: CpuWindow,
    procs: usize,
    imp: ClientImpl,
) -> Result<(), String> {
    let mut ns: Vec<usize> = subjects
        .iter()
        .flat_map(|s| s.rounds.iter().map(|r| r.n))
        .collect();
    ns.sort_unstable();
    ns.dedup();
    let mut warnings = Vec::new();
    let mut rounds_json = Vec::new();
    for n in &ns {
        let here: Vec<(&Subject, &Round, Summary)> = subjects
            .iter()
            .filter_map(|s| {
                s.rounds
                    .iter()
                    .find(|r| r.n == *n)
                    .map(|r| (s, r, summarize(r)))
            })
            .collect();
        if args.burst {
            println!(
                "\n## Bursts of K = {} broadcasts to N = {n} subscribers ({} bursts, one admin request each, V{} subscribers)\n",
                args.k, args.bursts, args.vsn
            );
        } else {
            println!(
                "\n## Broadcast to N = {n} subscribers (K = {}, via {}, V{} subscribers)\n",
                args.k, args.publish, args.vsn
            );
        }
        let rows: Vec<Vec<String>> = here
            .iter()
            .map(|(s, r, m)| {
                vec![
                    s.label.clone(),
                    r.subscribers.to_string(),
                    report::spread(m.to_last_ms, 2),
                    report::spread(m.p50_ms, 2),
                    report::spread(m.p99_ms, 2),
                    report::spread(
                        m.deliveries_per_s.map(|d| Spread {
                            median: d.median / 1e3,
                            min: d.min / 1e3,
                            max: d.max / 1e3,
                        }),
                        0,
                    ),
                    format!("{:.2}", m.cpu_us_per_delivery),
                    format!("{:.2}", m.client_cpu_us_per_delivery),
                    m.lost.to_string(),
                ]
            })
            .collect();
        println!(
            "{}",
            report::table(
                &[
                    "server",
                    "subscribers",
                    "to last ms",
                    "p50 ms",
                    "p99 ms",
                    "k deliveries/s",
                    "server CPU µs/delivery",
                    "client CPU µs/delivery",
                    "lost",
                ],
                &rows
            )
        );
        let mut ratios = serde_json::Map::new();
        for (p, _, pm) in here.iter().filter(|(s, _, _)| s.role.is_peer()) {
            let mut rows = Vec::new();
            let mut per = serde_json::Map::new();
            for (s, _, m) in &here {
                rows.push(vec![
                    s.label.clone(),
                    report::ratio(median(m.to_last_ms), median(pm.to_last_ms)),
                    report::ratio(median(m.p99_ms), median(pm.p99_ms)),
                    report::ratio(median(m.deliveries_per_s), median(pm.deliveries_per_s)),
                    report::ratio(m.cpu_us_per_delivery, pm.cpu_us_per_delivery),
                ]);
                per.insert(
                    s.label.clone(),
                    json!({
                        "to_last_ms_median": median(m.to_last_ms) / median(pm.to_last_ms),
                        "p99_ms_median": median(m.p99_ms) / median(pm.p99_ms),
                        "deliveries_per_s_median": median(m.deliveries_per_s) / median(pm.deliveries_per_s),
                        "server_cpu_us_per_delivery": m.cpu_us_per_delivery / pm.cpu_us_per_delivery,
                    }),
                );
            }
            println!(
                "Ratios vs {} (lower is better except deliveries/s):\n",
                p.label
            );
            println!(
                "{}",
                report::table(
                    &["server", "to last", "p99", "deliveries/s", "CPU/delivery"],
                    &rows
                )
            );
            ratios.insert(p.label.clone(), serde_json::Value::Object(per));
        }
        for (s, r, m) in &here {
            if m.lost > 0 {
                warnings.push(format!(
                    "{} at N={n}: {} copies lost over {} broadcasts",
                    s.label,
                    m.lost,
                    r.shots.len()
                ));
            }
            if r.join_failures > 0 {
                warnings.push(format!(
                    "{} at N={n}: {} joins failed",
                    s.label, r.join_failures
                ));
            }
            if r.subscribers < *n {
                warnings.push(format!(
                    "{} at N={n}: only {} subscribers live",
                    s.label, r.subscribers
                ));
            }
            if r.cpu.other_cores() > OTHER_CPU_WARN_CORES {
                warnings.push(format!(
                    "{} at N={n}: other processes used {:.0}% of a core during the broadcasts",
                    s.label,
                    r.cpu.other_cores() * 100.0
                ));
            }
        }
        let servers: Vec<serde_json::Value> = here
            .iter()
            .map(|(s, r, m)| {
                json!({
                    "label": s.label, "role": s.role.name(), "subscribers": r.subscribers,
                    "join_failures": r.join_failures, "join_conns_per_s": r.join_conns_per_s,
                    "listen_overflows_while_joining": r.listen_overflows,
                    "to_last_ms": report::spread_json(m.to_last_ms), "p50_ms": report::spread_json(m.p50_ms),
                    "p99_ms": report::spread_json(m.p99_ms), "deliveries_per_s": report::spread_json(m.deliveries_per_s),
                    "server_cpu_us_per_delivery": m.cpu_us_per_delivery,
                    "client_cpu_us_per_delivery": m.client_cpu_us_per_delivery,
                    "lost": m.lost, "cpu": r.cpu.to_json(),
                    "broadcasts": r.shots.iter().map(|x| json!({
                        "seq": x.seq, "expected": x.expected, "received": x.received, "to_last_ms": x.to_last_ms,
                        "p50_ms": x.p50_ms, "p99_ms": x.p99_ms, "deliveries_per_s": x.deliveries_per_s,
                        "server_cpu_us": x.server_cpu_us, "client_cpu_us": x.client_cpu_us,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        rounds_json.push(json!({"n": n, "servers": servers, "ratios_vs": ratios}));
    }
    if run_cpu.other_cores() > OTHER_CPU_WARN_CORES {
        warnings.push(format!(
            "other processes used {:.1}% of a core on average during the run: rerun when the machine is quiet",
            run_cpu.other_cores() * 100.0
        ));
    }
    println!(
        "Run: {:.0} s wall, other processes {:.1}% of a core, softirq {:.1} s, steal {:.1} s.",
        run_cpu.wall_us / 1e6,
        run_cpu.other_cores() * 100.0,
        run_cpu.irq_us / 1e6,
        run_cpu.steal_us / 1e6
    );
    for w in &warnings {
        println!("WARNING: {w}");
    }
    let value = json!({
        "bench": "broadcast",
        "mode": if args.burst { "burst" } else { "single" }, "bursts": args.bursts,
        "k": args.k, "spacing_ms": args.spacing_ms, "publish": args.publish, "vsn": args.vsn,
        "payload_pad_bytes": args.payload_bytes, "deliver_timeout_ms": args.deliver_timeout_ms,
        "workers": args.workers,
        "clients": {"processes_per_server": procs, "impl": imp.as_str(), "threads": args.client_threads},
        "clock": "CLOCK_MONOTONIC, publish time taken after the admin connection is up, just before the request is written",
        "machine": report::machine_json(),
        "rounds": rounds_json,
        "run_cpu": run_cpu.to_json(),
        "warnings": warnings,
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| server::results_path("broadcast.json"));
    let path = report::write_json(&out, &value)?;
    println!("\nJSON: {}", path.display());
    Ok(())
}
