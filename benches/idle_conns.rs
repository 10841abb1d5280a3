//! Idle connections: what one more idle WebSocket connection costs each server, in one run.
//!
//! `cargo build --release --bins --examples && cargo bench --bench idle_conns -- [options]`
//!
//! For every server (`--servers ringgate,peer,peer4k`), the bench ramps idle connections through
//! `--steps` (default 1k, 5k, 10k, 15k), interleaved: step k is taken by every server in turn (the order
//! rotates) before any server takes step k+1, so noise on the shared 2-core machine spreads over all of
//! them. After each step it settles (`--settle-ms`, then until the server's RSS stops moving) and samples.
//! Connections are plain upgrades on `/echo`, or with `--join` Phoenix V1 on `/socket/websocket` with the
//! seed's join of `rooms:lobby` (the ok reply awaited).
//!
//! Reported per server: user-space bytes per connection = least-squares slope of RSS (and Pss) against
//! the connection count, with R²; kernel bytes per connection = slope of `/proc/meminfo` Slab attributed
//! to the server's own ramps (loopback: the client's sockets are in the same kernel, so the figure is per
//! connection *pair*), and the same for the socket caches of `/proc/slabinfo` alone, which other
//! processes barely disturb (half of it is shown as the server-side estimate); connect+upgrade rate;
//! server CPU µs per connection; the same figures as ratios against each peer in the run. Other
//! processes' CPU during the run is recorded and a warning printed when it is not near zero.
//! Results: a markdown table on stdout and `target/bench-results/idle_conns.json`.

#[allow(dead_code)] // Shared with the broadcast bench; each uses a part.
#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use common::clients::{ClientSet, ClientsSpec, Opened};
use common::procfs::{self, CpuWindow};
use common::report;
use common::server::{self, Role, Server, ServerOpts};
use common::stats::{self, Fit};
use common::wsclient::{ClientImpl, JoinMode};

/// Time one ramp step may take before the bench gives up on it.
const RAMP_TIMEOUT: Duration = Duration::from_secs(180);
/// Time a client child gets to answer a status or heartbeat command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The slab cache another process's /proc/PID/fd listing fills, one inode per descriptor.
const PROC_INODE_CACHE: &str = "proc_inode_cache";
/// Other processes using more than this share of one core during the run make the figures suspect.
const OTHER_CPU_WARN_CORES: f64 = 0.05;

#[derive(Parser, Debug)]
#[command(about = "Idle-connection cost of ringgate and the baseline peers")]
struct Args {
    /// Servers to compare, in one run (repeats allowed, e.g. `peer,peer` for a noise check).
    #[arg(long, default_value = "ringgate,peer,peer4k")]
    servers: String,
    /// Connection counts to ramp through.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,15000")]
    steps: Vec<usize>,
    /// Join `rooms:lobby` over Phoenix V1 on /socket/websocket instead of a plain upgrade on /echo.
    #[arg(long)]
    join: bool,
    /// ringgate --workers / peer --threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Client processes per server (0: enough for 18k connections each).
    #[arg(long, default_value_t = 0)]
    client_procs: usize,
    /// `raw` (hand-rolled, cheapest) or `tungstenite` (tokio-tungstenite client).
    #[arg(long, default_value = "raw")]
    client_impl: String,
    /// Upgrades in flight per client process.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Runtime threads per client process.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Minimum settle time after each step before sampling.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Longest settle time: sample even if RSS is still moving (said in the output).
    #[arg(long, default_value_t = 10_000)]
    settle_max_ms: u64,
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
    /// JSON output path (default target/bench-results/idle_conns.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (e.g. under `cargo test --benches`) the bench does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One reading after a step settled. Kernel figures are cumulative deltas over this server's own ramp
/// windows, so activity while other servers ramp is not charged to it.
#[derive(Clone, Debug)]
struct Sample {
    live: usize,
    rss: u64,
    pss: u64,
    client_rss: u64,
    slab_attr: i64,
    caches_attr: BTreeMap<String, i64>,
    settle_ms: u64,
    settled: bool,
}

#[derive(Clone, Debug)]
struct Ramp {
    from: usize,
    opened: Opened,
    conns_per_s: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    cpu: CpuWindow,
    /// Listen-queue overflows (machine-wide) during the ramp; each stalls a connect by 1 s.
    listen_overflows: u64,
}

struct Subject {
    label: String,
    role: Role,
    server: Server,
    clients: ClientSet,
    baseline: Option<Sample>,
    samples: Vec<Sample>,
    ramps: Vec<Ramp>,
    slab_attr: i64,
    caches_attr: BTreeMap<String, i64>,
}

fn main() {
    if common::clients::is_child_invocation() {
        common::clients::child_main();
    }
    let args = Args::parse();
    if !args.bench {
        eprintln!("idle_conns: not started by `cargo bench`; nothing to do (run `cargo bench --bench idle_conns`)");
        return;
    }
    common::guard::install_watchdog(Duration::from_secs(args.timeout_s));
    if let Err(e) = run(&args) {
        eprintln!("idle_conns: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let roles = Role::parse_list(&args.servers)?;
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    steps.retain(|n| *n > 0);
    let max_n = *steps
        .last()
        .ok_or("--steps needs at least one count above 0")?;
    let opts = ServerOpts::resolve(
        args.ringgate_bin.clone(),
        args.peer_bin.clone(),
        args.fastws_bin.clone(),
        &roles,
        args.workers,
        false,
    )?
    .with_floor_bin(args.floor_bin.clone(), &roles)?
    .with_base_bin(args.base_bin.clone(), &roles)?;
    let join = if args.join {
        JoinMode::V1
    } else {
        JoinMode::None
    };
    let path = if args.join {
        "/socket/websocket"
    } else {
        "/echo"
    };
    let imp = ClientImpl::parse(&args.client_impl)?;
    let procs = if args.client_procs > 0 {
        args.client_procs
    } else {
        max_n.div_ceil(common::CONNS_PER_CLIENT_PROCESS_MAX)
    };
    eprintln!(
        "idle_conns: servers {:?}, steps {steps:?}, {} on {path}, {procs} client process(es) per server, {} client",
        roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
        if args.join { "V1 join" } else { "plain upgrade" },
        imp.as_str()
    );
    let run_mark = procfs::cpu_mark(&[]);
    let mut subjects = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let label = unique_label(&roles, i);
        let server = Server::start(*role, &label, &opts)?;
        let spec = ClientsSpec {
            server: server.addr,
            path: path.to_owned(),
            join,
            imp,
            concurrency: args.concurrency,
            threads: args.client_threads,
            slots: 0,
            topics: 1,
        };
        let clients = ClientSet::spawn(&label, &spec, procs)?;
        subjects.push(Subject {
            label,
            role: *role,
            server,
            clients,
            baseline: None,
            samples: Vec::new(),
            ramps: Vec::new(),
            slab_attr: 0,
            caches_attr: BTreeMap::new(),
        });
    }
    for s in subjects.iter_mut() {
        let (sample, _) = settle_and_sample(args, s, 0)?;
        s.baseline = Some(sample);
    }
    for (k, n) in steps.iter().enumerate() {
        for j in 0..subjects.len() {
            let i = (j + k) % subjects.len();
            let pids = all_pids(&subjects);
            step(args, &mut subjects[i], *n, &pids)?;
        }
    }
    let pids = all_pids(&subjects);
    let run_cpu = procfs::cpu_since(&run_mark, &pids);
    let mut closed_total = Vec::new();
    for s in subjects.iter_mut() {
        s.server.check_alive()?;
        closed_total.push(s.clients.status(COMMAND_TIMEOUT)?.1);
    }
    report_results(args, &subjects, &closed_total, run_cpu, join, procs, imp)
}

fn unique_label(roles: &[Role], i: usize) -> String {
    let same_before = roles[..i].iter().filter(|r| **r == roles[i]).count();
    if same_before == 0 {
        roles[i].name().to_owned()
    } else {
        format!("{}#{}", roles[i].name(), same_before + 1)
    }
}

fn all_pids(subjects: &[Subject]) -> Vec<u32> {
    subjects
        .iter()
        .flat_map(|s| std::iter::once(s.server.pid()).chain(s.clients.pids()))
        .collect()
}

fn clients_cpu_us(s: &Subject) -> f64 {
    s.clients
        .pids()
        .iter()
        .filter_map(|p| procfs::proc_cpu(*p).ok())
        .map(|c| c.best_us())
        .sum()
}

fn server_cpu_us(s: &Subject) -> Result<f64, String> {
    procfs::proc_cpu(s.server.pid())
        .map(|c| c.best_us())
        .map_err(|e| format!("{}: {e}", s.label))
}

/// Ramps one server to `n` connections, settles, samples.
fn step(args: &Args, s: &mut Subject, n: usize, pids: &[u32]) -> Result<(), String> {
    s.server.check_alive()?;
    // ringgate closes a connection that sent nothing for 60 s: a keepalive per step (Phoenix heartbeat,
    // or an empty ping on /echo) keeps the earlier steps' connections open while the other servers take
    // their turn. Sent before the measured window opens.
    s.clients.heartbeat(COMMAND_TIMEOUT)?;
    let from = s.clients.requested();
    let slab0 = procfs::meminfo_slab_bytes().map_err(|e| e.to_string())? as i64;
    let caches0 = procfs::slabinfo_bytes();
    let mark = procfs::cpu_mark(pids);
    let server0 = server_cpu_us(s)?;
    let client0 = clients_cpu_us(s);
    let overflows0 = procfs::listen_overflows();
    let opened = s.clients.open_to(n, RAMP_TIMEOUT)?;
    let ramp = Ramp {
        from,
        conns_per_s: opened.ok as f64 / (opened.elapsed_ns.max(1) as f64 / 1e9),
        server_cpu_us: server_cpu_us(s)? - server0,
        client_cpu_us: clients_cpu_us(s) - client0,
        cpu: procfs::cpu_since(&mark, pids),
        listen_overflows: procfs::listen_overflows() - overflows0,
        opened,
    };
    if ramp.listen_overflows > 0 {
        eprintln!(
            "  warning: {}: the listen queue overflowed {} times (1 s SYN retransmits): the rate measures the backlog; \
             raise the server's listen backlog or lower --concurrency",
            s.label, ramp.listen_overflows
        );
    }
    if ramp.opened.failed > 0 {
        eprintln!(
            "  warning: {}: {} of {} connections failed (first: {})",
            s.label,
            ramp.opened.failed,
            n - from,
            ramp.opened.first_error.as_deref().unwrap_or("?")
        );
    }
    let (sample, ramp_window_end) = settle_and_sample(args, s, ramp.opened.live)?;
    let slab1 = ramp_window_end.0;
    s.slab_attr += slab1 - slab0;
    if let (Some(before), Some(after)) = (caches0, ramp_window_end.1) {
        for (name, bytes) in &after {
            let delta = *bytes as i64 - before.get(name).copied().unwrap_or(0) as i64;
            *s.caches_attr.entry(name.clone()).or_default() += delta;
        }
    }
    let sample = Sample {
        slab_attr: s.slab_attr,
        caches_attr: s.caches_attr.clone(),
        ..sample
    };
    eprintln!(
        "  {:>6} {:<9} +{:<6} {:>7.0} conns/s  server {:>6.1} µs/conn  RSS {:>10}  Pss {:>10}  Slab(pair) {:>+10}  settle {:.1} s{}",
        n,
        s.label,
        ramp.opened.ok,
        ramp.conns_per_s,
        ramp.server_cpu_us / ramp.opened.ok.max(1) as f64,
        report::bytes(sample.rss as f64),
        report::bytes(sample.pss as f64),
        report::bytes((slab1 - slab0) as f64),
        sample.settle_ms as f64 / 1000.0,
        if sample.settled { "" } else { " (RSS still moving)" }
    );
    if ramp.cpu.other_cores() > OTHER_CPU_WARN_CORES * 2.0 {
        eprintln!(
            "  warning: other processes used {:.0}% of a core during this ramp",
            ramp.cpu.other_cores() * 100.0
        );
    }
    s.samples.push(sample);
    s.ramps.push(ramp);
    Ok(())
}

type KernelReading = (i64, Option<BTreeMap<String, u64>>);

/// Waits `--settle-ms`, then until RSS is stable (two readings 250 ms apart within 64 KiB or 0.1%), at
/// most `--settle-max-ms`; returns the sample and the kernel reading taken with it.
fn settle_and_sample(
    args: &Args,
    s: &mut Subject,
    live: usize,
) -> Result<(Sample, KernelReading), String> {
    let start = std::time::Instant::now();
    common::guard::sleep_checked(Duration::from_millis(args.settle_ms))?;
    let pid = s.server.pid();
    let read = || procfs::proc_mem(pid).map_err(|e| format!("{}: {e}", s.label));
    let mut previous = read()?;
    let mut settled = false;
    while start.elapsed() < Duration::from_millis(args.settle_max_ms) {
        common::guard::sleep_checked(Duration::from_millis(250))?;
        let now = read()?;
        let moved = now.rss_bytes.abs_diff(previous.rss_bytes);
        previous = now;
        if moved <= (64 * 1024).max(now.rss_bytes / 1000) {
            settled = true;
            break;
        }
    }
    s.server.check_alive()?;
    let client_rss = s
        .clients
        .pids()
        .iter()
        .filter_map(|p| procfs::proc_mem(*p).ok())
        .map(|m| m.rss_bytes)
        .sum();
    let kernel = (
        procfs::meminfo_slab_bytes().map_err(|e| e.to_string())? as i64,
        procfs::slabinfo_bytes(),
    );
    let sample = Sample {
        live,
        rss: previous.rss_bytes,
        pss: previous.pss_bytes,
        client_rss,
        slab_attr: 0,
        caches_attr: BTreeMap::new(),
        settle_ms: start.elapsed().as_millis() as u64,
        settled,
    };
    Ok((sample, kernel))
}

/// The per-server figures, as numbers (for ratios and JSON).
struct Figures {
    rss: Option<Fit>,
    pss: Option<Fit>,
    kernel_pair: Option<Fit>,
    /// Slab without `proc_inode_cache`: a process on this machine (the sandbox's supervisor, it seems)
    /// lists /proc/PID/fd of every process about once a second, creating a proc inode per descriptor.
    kernel_pair_no_proc: Option<Fit>,
    /// The socket caches only (`procfs::is_socket_cache`): the headline kernel figure.
    kernel_pair_sockets: Option<Fit>,
    client_rss: Option<Fit>,
    rate: Option<stats::Spread>,
    server_cpu_us_per_conn: f64,
    client_cpu_us_per_conn: f64,
    caches: BTreeMap<String, f64>,
}

fn fit(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> Option<Fit> {
    let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.live as f64, y(s))).collect();
    stats::least_squares(&points)
}

fn figures(s: &Subject) -> Figures {
    let opened: usize = s.ramps.iter().map(|r| r.opened.ok).sum();
    let mut caches = BTreeMap::new();
    let names: Vec<String> = s
        .samples
        .last()
        .map(|x| x.caches_attr.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        if let Some(f) = fit(&s.samples, |x| {
            x.caches_attr.get(&name).copied().unwrap_or(0) as f64
        }) {
            let named = procfs::SLAB_CACHES_NAMED.contains(&name.as_str());
            if named || f.slope.abs() >= 8.0 {
                caches.insert(name, f.slope);
            }
        }
    }
    let kmalloc: Vec<(f64, f64)> = s
        .samples
        .iter()
        .map(|x| {
            let sum: i64 = x
                .caches_attr
                .iter()
                .filter(|(n, _)| n.starts_with("kmalloc-"))
                .map(|(_, b)| *b)
                .sum();
            (x.live as f64, sum as f64)
        })
        .collect();
    if let Some(f) = stats::least_squares(&kmalloc) {
        caches.insert("kmalloc-* (sum)".to_owned(), f.slope);
    }
    Figures {
        rss: fit(&s.samples, |x| x.rss as f64),
        pss: fit(&s.samples, |x| x.pss as f64),
        kernel_pair: fit(&s.samples, |x| x.slab_attr as f64),
        kernel_pair_sockets: fit(&s.samples, |x| {
            let sockets = x
                .caches_attr
                .iter()
                .filter(|(name, _)| procfs::is_socket_cache(name));
            sockets.map(|(_, bytes)| *bytes).sum::<i64>() as f64
        }),
        kernel_pair_no_proc: fit(&s.samples, |x| {
            (x.slab_attr - x.caches_attr.get(PROC_INODE_CACHE).copied().unwrap_or(0)) as f64
        }),
        client_rss: fit(&s.samples, |x| x.client_rss as f64),
        rate: stats::spread(&s.ramps.iter().map(|r| r.conns_per_s).collect::<Vec<_>>()),
        server_cpu_us_per_conn: s.ramps.iter().map(|r| r.server_cpu_us).sum::<f64>()
            / opened.max(1) as f64,
        client_cpu_us_per_conn: s.ramps.iter().map(|r| r.client_cpu_us).sum::<f64>()
            / opened.max(1) as f64,
        caches,
    }
}

fn slope(f: Option<Fit>) -> f64 {
    f.map_or(f64::NAN, |f| f.slope)
}

fn fit_cell(f: Option<Fit>) -> String {
    match f {
        Some(f) => format!("{} (R² {:.3})", report::bytes(f.slope), f.r2),
        None => "–".to_owned(),
    }
}

fn fit_json(f: Option<Fit>) -> serde_json::Value {
    match f {
        Some(f) => json!({"bytes_per_conn": f.slope, "intercept_bytes": f.intercept, "r2": f.r2}),
        None => serde_json::Value::Null,
    }
}

#[allow(clippy::too_many_arguments)]
fn report_results(
    args: &Args,
    subjects: &[Subject],
    closed: &[usize],
    run_cpu: CpuWindow,
    join: JoinMode,
    procs: usize,
    imp: ClientImpl,
) -> Result<(), String> {
    let figs: Vec<Figures> = subjects.iter().map(figures).collect();
    let mut rows = Vec::new();
    for (i, (s, f)) in subjects.iter().zip(&figs).enumerate() {
        rows.push(vec![
            s.label.clone(),
            fit_cell(f.rss),
            fit_cell(f.pss),
            report::bytes(slope(f.kernel_pair)),
            report::bytes(slope(f.kernel_pair_sockets)),
            report::bytes(slope(f.kernel_pair_sockets) / 2.0),
            report::spread(f.rate, 0),
            format!("{:.1}", f.server_cpu_us_per_conn),
            report::bytes(slope(f.client_rss)),
            closed[i].to_string(),
        ]);
    }
    let mode = if join == JoinMode::V1 {
        "V1 join on /socket/websocket"
    } else {
        "plain upgrade on /echo"
    };
    println!("\n## Idle connections ({mode}; steps {:?})\n", args.steps);
    println!(
        "{}",
        report::table(
            &[
                "server",
                "user B/conn (RSS slope)",
                "Pss slope",
                "kernel B/conn (Slab, pair)",
                "socket caches (pair)",
                "kernel ≈ server half",
                "conns/s median [min–max]",
                "server CPU µs/conn",
                "client B/conn",
                "closed",
            ],
            &rows
        )
    );
    let peers: Vec<usize> = (0..subjects.len())
        .filter(|i| subjects[*i].role.is_peer())
        .collect();
    let mut ratios_json = serde_json::Map::new();
    for p in &peers {
        let pf = &figs[*p];
        let mut rows = Vec::new();
        let mut per_server = serde_json::Map::new();
        for (s, f) in subjects.iter().zip(&figs) {
            let rate = |f: &Figures| f.rate.map_or(f64::NAN, |r| r.median);
            rows.push(vec![
                s.label.clone(),
                report::ratio(slope(f.rss), slope(pf.rss)),
                report::ratio(slope(f.pss), slope(pf.pss)),
                report::ratio(slope(f.kernel_pair_sockets), slope(pf.kernel_pair_sockets)),
                report::ratio(rate(f), rate(pf)),
                report::ratio(f.server_cpu_us_per_conn, pf.server_cpu_us_per_conn),
            ]);
            per_server.insert(
                s.label.clone(),
                json!({
                    "rss_slope": slope(f.rss) / slope(pf.rss),
                    "pss_slope": slope(f.pss) / slope(pf.pss),
                    "kernel_socket_caches_slope": slope(f.kernel_pair_sockets) / slope(pf.kernel_pair_sockets),
                    "conns_per_s_median": rate(f) / rate(pf),
                    "server_cpu_us_per_conn": f.server_cpu_us_per_conn / pf.server_cpu_us_per_conn,
                }),
            );
        }
        println!(
            "Ratios vs {} (lower is better except conns/s):\n",
            subjects[*p].label
        );
        println!(
            "{}",
            report::table(
                &[
                    "server",
                    "RSS slope",
                    "Pss slope",
                    "kernel",
                    "conns/s",
                    "CPU/conn"
                ],
                &rows
            )
        );
        ratios_json.insert(
            subjects[*p].label.clone(),
            serde_json::Value::Object(per_server),
        );
    }
    println!("Kernel slab caches, bytes per connection pair (slope; loopback puts both ends in this kernel):\n");
    let mut names: Vec<&String> = figs.iter().flat_map(|f| f.caches.keys()).collect();
    names.sort();
    names.dedup();
    let mut cache_rows = Vec::new();
    for name in &names {
        let mut row = vec![(*name).clone()];
        row.extend(figs.iter().map(|f| {
            f.caches
                .get(*name)
                .map_or("–".to_owned(), |b| format!("{b:.0}"))
        }));
        cache_rows.push(row);
    }
    let mut headers = vec!["cache"];
    headers.extend(subjects.iter().map(|s| s.label.as_str()));
    println!("{}", report::table(&headers, &cache_rows));
    let mut warnings = Vec::new();
    if run_cpu.other_cores() > OTHER_CPU_WARN_CORES {
        warnings.push(format!(
            "other processes used {:.1}% of a core on average during the run ({:.1} s CPU): rerun when the machine is quiet",
            run_cpu.other_cores() * 100.0,
            run_cpu.other_us / 1e6
        ));
    }
    if run_cpu.steal_us > 0.05 * run_cpu.wall_us {
        warnings.push(format!(
            "the hypervisor stole {:.1} s of CPU during the run",
            run_cpu.steal_us / 1e6
        ));
    }
    for (s, c) in subjects.iter().zip(closed) {
        if *c > 0 {
            warnings.push(format!(
                "{}: {c} idle connections were closed during the run",
                s.label
            ));
        }
        let overflows: u64 = s.ramps.iter().map(|r| r.listen_overflows).sum();
        if overflows > 0 {
            warnings.push(format!("{}: {overflows} listen-queue overflows while ramping (rates include 1 s SYN retransmits)", s.label));
        }
        if s.samples.iter().any(|x| !x.settled) {
            warnings.push(format!(
                "{}: RSS was still moving when some steps were sampled",
                s.label
            ));
        }
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
    let servers_json: Vec<serde_json::Value> = subjects
        .iter()
        .zip(&figs)
        .zip(closed)
        .map(|((s, f), closed)| {
            let sample_json = |x: &Sample| {
                json!({"conns": x.live, "rss_bytes": x.rss, "pss_bytes": x.pss, "client_rss_bytes": x.client_rss,
                       "slab_pair_bytes_attributed": x.slab_attr, "settle_ms": x.settle_ms, "settled": x.settled})
            };
            json!({
                "label": s.label, "role": s.role.name(),
                "user_bytes_per_conn_rss": fit_json(f.rss),
                "user_bytes_per_conn_pss": fit_json(f.pss),
                "kernel_bytes_per_conn_pair": fit_json(f.kernel_pair),
                "kernel_bytes_per_conn_pair_without_proc_inodes": fit_json(f.kernel_pair_no_proc),
                "kernel_bytes_per_conn_pair_socket_caches": fit_json(f.kernel_pair_sockets),
                "kernel_bytes_per_conn_server_estimate": slope(f.kernel_pair_sockets) / 2.0,
                "slab_caches_bytes_per_conn_pair": f.caches,
                "conns_per_s": report::spread_json(f.rate),
                "server_cpu_us_per_conn": f.server_cpu_us_per_conn,
                "client_bytes_per_conn_rss": fit_json(f.client_rss),
                "client_cpu_us_per_conn": f.client_cpu_us_per_conn,
                "closed_during_run": closed,
                "baseline": s.baseline.as_ref().map(sample_json),
                "samples": s.samples.iter().map(sample_json).collect::<Vec<_>>(),
                "ramps": s.ramps.iter().map(|r| json!({
                    "from": r.from, "opened": r.opened.ok, "failed": r.opened.failed,
                    "first_error": r.opened.first_error, "elapsed_s": r.opened.elapsed_ns as f64 / 1e9,
                    "conns_per_s": r.conns_per_s, "server_cpu_us": r.server_cpu_us, "client_cpu_us": r.client_cpu_us,
                    "cpu": r.cpu.to_json(), "listen_overflows": r.listen_overflows,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| server::results_path("idle_conns.json"));
    let value = json!({
        "bench": "idle_conns",
        "mode": if join == JoinMode::V1 { "v1_join" } else { "plain_upgrade" },
        "steps": args.steps, "workers": args.workers,
        "clients": {"processes_per_server": procs, "impl": imp.as_str(), "concurrency": args.concurrency,
                    "threads": args.client_threads},
        "machine": report::machine_json(),
        "kernel_note": "loopback: client and server sockets share one kernel, so kernel figures are per connection pair. Slab is the whole machine's (other processes move it); socket caches = TCP, sock_inode_cache, filp, lsm_*, eventpoll_*, ep_head, io_kiocb, kmalloc-* (no dentry: 192 B per socket missing); the server estimate is half of the socket caches. proc_inode_cache grows because another process lists /proc/PID/fd here",
        "servers": servers_json,
        "ratios_vs": ratios_json,
        "run_cpu": run_cpu.to_json(),
        "warnings": warnings,
    });
    let path = report::write_json(&out, &value)?;
    println!("\nJSON: {}", path.display());
    Ok(())
}
