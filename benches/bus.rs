//! The multi-node bus: what a broadcast costs when it crosses Redis, in one run.
//!
//! `cargo build --release --bins && cargo bench --bench bus -- [options]` (needs `redis-server` and
//! `redis-cli` on PATH; the bench starts its own redis-server on a free loopback port, no
//! persistence, and stops it by PID).
//!
//! 1. **Latency**: gateways A and B on one Redis, `--n` subscribers of `rooms:lobby` on B. Rounds of
//!    `--k` broadcasts alternate between a publish on B itself (local, the baseline) and a publish
//!    on A (crosses Redis), `--reps` times each. Per broadcast: publish → last subscriber on B, p50,
//!    p99. The cross-node overhead is the difference of the medians, measured in the same run.
//! 2. **Spread**: `3 × --spread-n` subscribers on one gateway without the bus, on one gateway with
//!    the bus, and `--spread-n` on each of three gateways with the bus; K broadcasts published
//!    through the first gateway's admin API: time to the last subscriber over all gateways, server
//!    CPU per delivery (all gateways together), and the gateway's resident bytes per connection
//!    (RSS growth while the clients joined / clients) with the bus off and on.
//!
//! 3. **Storms**: cross-node broadcasts (A → `--n` subscribers on B, as in part 1) before and
//!    while `ringgate load` drives a storm: (a) benches/scenarios/bus-churn.toml on A, 10,000
//!    users flapping join/leave on 10,000 topics (~100k joins and ~100k leaves per minute);
//!    (b) bus-publish.toml on A, 10,000 broadcasts/s over 1,000 topics, with bus-listen.toml
//!    giving B members on the same topics. Reported: joins, leaves, broadcasts, publishes and
//!    (un)subscribe commands as A counted them and as Redis executed them (one PUBLISH per
//!    broadcast whatever the nodes and subscribers: the two counts must be equal), Redis's own
//!    CPU (`used_cpu_user + used_cpu_sys`, hence per 1,000 broadcasts) and the gateways', and
//!    the probes' time to the last subscriber, p50/p99 over broadcasts.
//!
//! Results: markdown on stdout and `target/bench-results/bus.json`. Timings on a shared box are
//! noisy: read the ratios within a run, and medians with their [min–max].

#[allow(dead_code)] // Shared with the other benches; each uses a part.
#[path = "common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use common::clients::{ClientSet, ClientsSpec};
use common::clock::mono_ns;
use common::guard::{self, ProcGuard};
use common::procfs;
use common::report;
use common::server::{Role, Server, ServerOpts};
use common::stats::{self, Spread};
use common::wsclient::{ClientImpl, JoinMode};

/// Time the clients get to reach a subscriber count.
const RAMP_TIMEOUT: Duration = Duration::from_secs(180);
/// Connections per worker in the spread part: SO_REUSEPORT spreads them unevenly, and a worker's
/// descriptor table is capped by RLIMIT_NOFILE (20,000 on this box).
const SPREAD_CONNS_PER_WORKER_MAX: usize = 15_000;
/// Time a client child gets to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "Cross-node broadcast latency, Redis cost and spread over gateways")]
struct Args {
    /// Subscribers on node B for the latency parts (few: the figure is the Redis hop, not the
    /// fan-out, which the spread part and the broadcast bench measure).
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Broadcasts per latency round.
    #[arg(long, default_value_t = 50)]
    k: usize,
    /// Latency rounds of each kind (local, cross), alternating.
    #[arg(long, default_value_t = 4)]
    reps: usize,
    /// Minimum time between two publishes of a round.
    #[arg(long, default_value_t = 100)]
    spacing_ms: u64,
    /// Parts to run, in this order: latency, spread, churn, publish.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,spread,churn,publish"
    )]
    parts: Vec<String>,
    /// Subscribers per gateway in the spread part (one gateway holds 3×).
    #[arg(long, default_value_t = 20_000)]
    spread_n: usize,
    /// ringgate --workers of each gateway in the latency and storm parts. In the spread part each
    /// gateway gets enough workers that none holds more than 15,000 connections (a worker's
    /// descriptor table is capped by RLIMIT_NOFILE, 20,000 here).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A broadcast not received by everyone within this time counts the missing copies as lost.
    #[arg(long, default_value_t = 10_000)]
    deliver_timeout_ms: u64,
    /// Global timeout for the whole run.
    #[arg(long, default_value_t = 1200)]
    timeout_s: u64,
    /// ringgate binary (default target/release/ringgate).
    #[arg(long)]
    ringgate_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (e.g. under `cargo test --benches`) the bench does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    if common::clients::is_child_invocation() {
        common::clients::child_main();
    }
    let args = Args::parse();
    if !args.bench {
        eprintln!(
            "bus: not started by `cargo bench`; nothing to do (run `cargo bench --bench bus`)"
        );
        return;
    }
    guard::install_watchdog(Duration::from_secs(args.timeout_s));
    if let Err(e) = run(&args) {
        eprintln!("bus: {e}");
        std::process::exit(1);
    }
}

/// A redis-server of this run.
struct Redis {
    port: u16,
    _guard: ProcGuard,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Result<Redis, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("ringgate-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let guard =
            ProcGuard::spawn("redis", &mut cmd).map_err(|e| format!("start redis-server: {e}"))?;
        let redis = Redis {
            port,
            _guard: guard,
            dir,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).map(|r| r.trim() == "PONG") != Ok(true) {
            if Instant::now() > until {
                return Err("redis-server not ready in 10 s".to_owned());
            }
            guard::sleep_checked(Duration::from_millis(50))?;
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Redis's own CPU seconds (user + system).
    fn cpu_s(&self) -> Result<f64, String> {
        let info = self.cli(&["INFO", "cpu"])?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or(format!("INFO cpu has no {name}"))
        };
        Ok(field("used_cpu_user:")? + field("used_cpu_sys:")?)
    }

    /// Calls of `cmd` so far (`INFO commandstats`).
    fn calls(&self, cmd: &str) -> Result<u64, String> {
        let info = self.cli(&["INFO", "commandstats"])?;
        let prefix = format!("cmdstat_{cmd}:calls=");
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn opts(args: &Args, workers: usize, extra: &[String]) -> Result<ServerOpts, String> {
    let mut o = ServerOpts::resolve(
        args.ringgate_bin.clone(),
        None,
        None,
        &[Role::Ringgate],
        workers,
        true,
    )?;
    o.extra_args = extra.to_vec();
    // The bench's own publishers and load users push and join faster than a browser would.
    o.extra_args.extend(
        [
            "--max-joins-per-second",
            "0",
            "--max-messages-per-second",
            "0",
        ]
        .map(String::from),
    );
    Ok(o)
}

fn bus_args(redis: &Redis, name: &str) -> Vec<String> {
    vec![
        "--bus-url".into(),
        redis.url(),
        "--bus-node-name".into(),
        name.into(),
    ]
}

fn clients(server: SocketAddr, label: &str, n: usize, slots: usize) -> Result<ClientSet, String> {
    let spec = ClientsSpec {
        server,
        path: "/socket/websocket".to_owned(),
        join: JoinMode::V1,
        imp: ClientImpl::Raw,
        concurrency: 256,
        threads: 1,
        slots,
        topics: 1,
    };
    ClientSet::spawn(
        label,
        &spec,
        n.div_ceil(common::CONNS_PER_CLIENT_PROCESS_MAX),
    )
}

/// Waits until the gateway at `admin` holds `want` subscribers of the bench topic in the cluster
/// view (its bus subscription is in place once its members are counted).
fn wait_cluster_subscribers(server: &Server, want: u64) -> Result<(), String> {
    let admin = server.admin_addr.ok_or("no admin listener")?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let body = common::server::http_get(admin, "/api/topics/rooms:lobby")?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["cluster_subscribers"].as_u64() >= Some(want) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!(
                "{}: cluster view never reached {want} subscribers: {body}",
                server.label
            ));
        }
        guard::sleep_checked(Duration::from_millis(100))?;
    }
}

/// One timed broadcast.
struct Shot {
    expected: usize,
    received: usize,
    to_last_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `k` broadcasts numbered from `base`, each published by `publish`, received by `sets`; the
/// CPU of `cpu_pids` over the round in µs.
fn shots(
    args: &Args,
    sets: &mut [&mut ClientSet],
    base: u64,
    mut publish: impl FnMut(&str) -> Result<u64, String>,
    cpu_pids: &[u32],
) -> Result<(Vec<Shot>, f64), String> {
    let mut live = Vec::new();
    for set in sets.iter_mut() {
        // ringgate closes a Phoenix socket silent for 60 s; the bench runs longer than that.
        set.heartbeat(COMMAND_TIMEOUT)?;
        live.push(set.live_per_child(COMMAND_TIMEOUT)?);
        set.reset(base, COMMAND_TIMEOUT)?;
    }
    let cpu0: f64 = cpu_us(cpu_pids);
    let mut published = Vec::new();
    for b in 0..args.k as u64 {
        let seq = base + b;
        let t_pub = publish(&format!(r#""seq":{seq},"pad":"{}""#, "x".repeat(64)))?;
        for (set, live) in sets.iter_mut().zip(&live) {
            set.wait_got(seq, live, Duration::from_millis(args.deliver_timeout_ms))?;
        }
        published.push(t_pub);
        let next = t_pub + args.spacing_ms * 1_000_000;
        let now = mono_ns();
        if next > now {
            guard::sleep_checked(Duration::from_nanos(next - now))?;
        }
    }
    let cpu = cpu_us(cpu_pids) - cpu0;
    let expected: usize = live.iter().flatten().sum();
    let mut receipts = vec![Vec::new(); args.k];
    for set in sets.iter_mut() {
        for (slot, times) in set
            .collect(args.k, COMMAND_TIMEOUT)?
            .into_iter()
            .enumerate()
        {
            receipts[slot].extend(times);
        }
    }
    let out = published
        .iter()
        .zip(receipts)
        .map(|(t_pub, times)| {
            let mut lat: Vec<u64> = times.iter().map(|t| t.saturating_sub(*t_pub)).collect();
            lat.sort_unstable();
            Shot {
                expected,
                received: lat.len(),
                to_last_ms: lat.last().copied().unwrap_or(0) as f64 / 1e6,
                p50_ms: stats::percentile(&lat, 50.0) as f64 / 1e6,
                p99_ms: stats::percentile(&lat, 99.0) as f64 / 1e6,
            }
        })
        .collect();
    Ok((out, cpu))
}

fn cpu_us(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| procfs::proc_cpu(*p).ok())
        .map(|c| c.best_us())
        .sum()
}

fn lost(shots: &[Shot]) -> usize {
    shots
        .iter()
        .map(|s| s.expected.saturating_sub(s.received))
        .sum()
}

fn of(shots: &[Shot], f: fn(&Shot) -> f64) -> Option<Spread> {
    stats::spread(&shots.iter().map(f).collect::<Vec<_>>())
}

fn med(s: Option<Spread>) -> f64 {
    s.map_or(f64::NAN, |s| s.median)
}

fn run(args: &Args) -> Result<(), String> {
    let redis = Redis::start()?;
    let mut results = serde_json::Map::new();
    for part in &args.parts {
        let r = match part.as_str() {
            "latency" => part_latency(args, &redis)?,
            "spread" => part_spread(args, &redis)?,
            "churn" => part_storm(
                args,
                &redis,
                "Subscription churn (benches/scenarios/bus-churn.toml on a)",
                "bus-churn.toml",
                None,
            )?,
            "publish" => part_storm(
                args,
                &redis,
                "Publish storm (benches/scenarios/bus-publish.toml on a, bus-listen.toml on b)",
                "bus-publish.toml",
                Some("bus-listen.toml"),
            )?,
            other => return Err(format!("--parts: unknown part {other:?}")),
        };
        results.insert(part.clone(), r);
    }
    results.insert("machine".into(), report::machine_json());
    results.insert("args".into(), format!("{args:?}").into());
    let path = report::write_json(
        &common::server::results_path("bus.json"),
        &serde_json::Value::Object(results),
    )?;
    eprintln!("bus: results in {}", path.display());
    Ok(())
}

fn part_latency(args: &Args, redis: &Redis) -> Result<serde_json::Value, String> {
    let a = Server::start(
        Role::Ringgate,
        "a",
        &opts(args, args.workers, &bus_args(redis, "a"))?,
    )?;
    let b = Server::start(
        Role::Ringgate,
        "b",
        &opts(args, args.workers, &bus_args(redis, "b"))?,
    )?;
    let mut set = clients(b.addr, "b-clients", args.n, args.k)?;
    let opened = set.open_to(args.n, RAMP_TIMEOUT)?;
    wait_cluster_subscribers(&a, opened.live as u64)?;
    eprintln!("latency: {} subscribers on b", opened.live);
    let (mut local, mut cross) = (Vec::new(), Vec::new());
    let mut base = 1u64;
    for _ in 0..args.reps {
        for (kind, publisher) in [("local", &b), ("cross", &a)] {
            let (s, _) = shots(
                args,
                &mut [&mut set],
                base,
                |fields| publisher.publish_admin("bench", fields),
                &[],
            )?;
            base += args.k as u64;
            if kind == "local" {
                local.extend(s);
            } else {
                cross.extend(s);
            }
        }
    }
    let rows: Vec<Vec<String>> = [("on b (local)", &local), ("on a (via Redis)", &cross)]
        .iter()
        .map(|(name, s)| {
            vec![
                (*name).to_owned(),
                report::spread(of(s, |x| x.to_last_ms), 2),
                report::spread(of(s, |x| x.p50_ms), 2),
                report::spread(of(s, |x| x.p99_ms), 2),
                lost(s).to_string(),
            ]
        })
        .collect();
    println!(
        "\n## Latency: {} subscribers on node b, {} broadcasts per kind\n",
        opened.live,
        local.len()
    );
    println!(
        "{}",
        report::table(
            &["published", "to last ms", "p50 ms", "p99 ms", "lost"],
            &rows
        )
    );
    let overhead = med(of(&cross, |x| x.to_last_ms)) - med(of(&local, |x| x.to_last_ms));
    let p50_overhead = med(of(&cross, |x| x.p50_ms)) - med(of(&local, |x| x.p50_ms));
    println!(
        "Crossing Redis adds {overhead:.2} ms to the last subscriber and {p50_overhead:.2} ms at p50 (difference of medians)."
    );
    Ok(json!({
        "subscribers": opened.live,
        "local": {"to_last_ms": report::spread_json(of(&local, |x| x.to_last_ms)), "p50_ms": report::spread_json(of(&local, |x| x.p50_ms)), "p99_ms": report::spread_json(of(&local, |x| x.p99_ms)), "lost": lost(&local)},
        "cross": {"to_last_ms": report::spread_json(of(&cross, |x| x.to_last_ms)), "p50_ms": report::spread_json(of(&cross, |x| x.p50_ms)), "p99_ms": report::spread_json(of(&cross, |x| x.p99_ms)), "lost": lost(&cross)},
        "cross_overhead_to_last_ms": overhead,
        "cross_overhead_p50_ms": p50_overhead,
    }))
}

/// Gateways of one spread layout and their clients.
struct Layout {
    name: &'static str,
    /// Declared first so the clients go before their gateways.
    sets: Vec<ClientSet>,
    servers: Vec<Server>,
}

fn part_spread(args: &Args, redis: &Redis) -> Result<serde_json::Value, String> {
    let total = 3 * args.spread_n;
    let mut rows = Vec::new();
    let mut out = Vec::new();
    let mut base = 1_000_000u64;
    for (name, gateways, bus) in [
        ("1 gateway, no bus", 1usize, false),
        ("1 gateway, bus", 1, true),
        ("3 gateways, bus", 3, true),
    ] {
        let per = total / gateways;
        let workers = per.div_ceil(SPREAD_CONNS_PER_WORKER_MAX).max(1);
        let mut layout = Layout {
            name,
            sets: Vec::new(),
            servers: Vec::new(),
        };
        for g in 0..gateways {
            let label = format!("s{gateways}{}-{g}", if bus { "b" } else { "" });
            let extra = if bus {
                bus_args(redis, &label)
            } else {
                Vec::new()
            };
            layout.servers.push(Server::start(
                Role::Ringgate,
                &label,
                &opts(args, workers, &extra)?,
            )?);
        }
        let rss0: Vec<u64> = layout
            .servers
            .iter()
            .map(|s| procfs::proc_mem(s.pid()).map_or(0, |m| m.rss_bytes))
            .collect();
        let mut live = 0;
        for s in &layout.servers {
            let mut set = clients(s.addr, &format!("{}-clients", s.label), per, args.k)?;
            live += set.open_to(per, RAMP_TIMEOUT)?.live;
            layout.sets.push(set);
        }
        guard::sleep_checked(Duration::from_secs(1))?;
        let rss1: Vec<u64> = layout
            .servers
            .iter()
            .map(|s| procfs::proc_mem(s.pid()).map_or(0, |m| m.rss_bytes))
            .collect();
        let rss_per_conn = rss1
            .iter()
            .zip(&rss0)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum::<u64>() as f64
            / live.max(1) as f64;
        if bus {
            wait_cluster_subscribers(&layout.servers[0], live as u64)?;
        }
        let pids: Vec<u32> = layout.servers.iter().map(Server::pid).collect();
        let first = &layout.servers[0];
        let mut sets: Vec<&mut ClientSet> = layout.sets.iter_mut().collect();
        let (s, cpu) = shots(
            args,
            &mut sets,
            base,
            |fields| first.publish_admin("bench", fields),
            &pids,
        )?;
        base += args.k as u64;
        let delivered: usize = s.iter().map(|x| x.received).sum();
        let cpu_per = cpu / delivered.max(1) as f64;
        eprintln!("spread: {} done ({live} subscribers)", layout.name);
        rows.push(vec![
            layout.name.to_owned(),
            live.to_string(),
            report::spread(of(&s, |x| x.to_last_ms), 1),
            report::spread(of(&s, |x| x.p50_ms), 1),
            format!("{cpu_per:.3}"),
            format!("{rss_per_conn:.0}"),
            lost(&s).to_string(),
        ]);
        out.push(json!({
            "layout": layout.name,
            "subscribers": live,
            "to_last_ms": report::spread_json(of(&s, |x| x.to_last_ms)),
            "p50_ms": report::spread_json(of(&s, |x| x.p50_ms)),
            "server_cpu_us_per_delivery": cpu_per,
            "rss_bytes_per_connection": rss_per_conn,
            "lost": lost(&s),
        }));
        // Dropping the layout stops its clients, then its gateways, by PID.
    }
    println!(
        "\n## Spread: {total} subscribers of one topic, K = {} admin broadcasts on the first gateway\n",
        args.k
    );
    println!(
        "{}",
        report::table(
            &[
                "layout",
                "subscribers",
                "to last ms",
                "p50 ms",
                "server CPU µs/delivery",
                "RSS bytes/conn",
                "lost"
            ],
            &rows
        )
    );
    Ok(serde_json::Value::Array(out))
}

/// A `ringgate load` child, stopped by PID if still running when dropped.
struct Load {
    guard: ProcGuard,
    out_dir: PathBuf,
}

impl Load {
    fn start(
        bin: &std::path::Path,
        server: SocketAddr,
        scenario: &str,
        source: &str,
    ) -> Result<Load, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("benches/scenarios")
            .join(scenario);
        let out_dir =
            std::env::temp_dir().join(format!("ringgate-bench-{scenario}-{}", std::process::id()));
        let mut cmd = Command::new(bin);
        cmd.arg("load")
            .args(["--url", &format!("ws://{server}/socket/websocket")])
            .arg("--scenario")
            .arg(&path)
            .args([
                "--source",
                source,
                "--quiet",
                "--procs",
                "1",
                "--workers",
                "1",
            ])
            .arg("--out")
            .arg(&out_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let guard =
            ProcGuard::spawn(scenario, &mut cmd).map_err(|e| format!("ringgate load: {e}"))?;
        Ok(Load { guard, out_dir })
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        while self.guard.exited().is_none() {
            if Instant::now() > until {
                return Err(format!("{} did not end in time", self.guard.name()));
            }
            guard::sleep_checked(Duration::from_millis(200))?;
        }
        Ok(())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}

/// Counters read from a gateway's /metrics and from Redis before and after a storm.
#[derive(Clone, Copy, Default)]
struct Counts {
    joins: f64,
    leaves: f64,
    broadcasts: f64,
    published: f64,
    received: f64,
    subscribe_commands: f64,
    unsubscribe_commands: f64,
    redis_publish: u64,
    redis_subscribe: u64,
    redis_unsubscribe: u64,
    redis_cpu_s: f64,
}

impl Counts {
    fn read(a: &Server, b: &Server, redis: &Redis) -> Result<Counts, String> {
        Ok(Counts {
            joins: a.metric("ringgate_joins_total")?,
            leaves: a.metric("ringgate_leaves_total")?,
            broadcasts: a.metric("ringgate_broadcasts_total")?,
            published: a.metric("ringgate_bus_published_total")?,
            received: b.metric("ringgate_bus_received_total")?,
            subscribe_commands: a.metric("ringgate_bus_subscribe_commands_total")?,
            unsubscribe_commands: a.metric("ringgate_bus_unsubscribe_commands_total")?,
            redis_publish: redis.calls("publish")?,
            redis_subscribe: redis.calls("subscribe")?,
            redis_unsubscribe: redis.calls("unsubscribe")?,
            redis_cpu_s: redis.cpu_s()?,
        })
    }

    fn since(self, o: Counts) -> Counts {
        Counts {
            joins: self.joins - o.joins,
            leaves: self.leaves - o.leaves,
            broadcasts: self.broadcasts - o.broadcasts,
            published: self.published - o.published,
            received: self.received - o.received,
            subscribe_commands: self.subscribe_commands - o.subscribe_commands,
            unsubscribe_commands: self.unsubscribe_commands - o.unsubscribe_commands,
            redis_publish: self.redis_publish - o.redis_publish,
            redis_subscribe: self.redis_subscribe - o.redis_subscribe,
            redis_unsubscribe: self.redis_unsubscribe - o.redis_unsubscribe,
            redis_cpu_s: self.redis_cpu_s - o.redis_cpu_s,
        }
    }
}

/// Part 4: cross-node probes (A → `--n` subscribers on B) before and during a storm that
/// `ringgate load` drives: `on_a` against gateway A, and `on_b` (if any) against B.
fn part_storm(
    args: &Args,
    redis: &Redis,
    title: &str,
    on_a: &str,
    on_b: Option<&str>,
) -> Result<serde_json::Value, String> {
    let o = opts(args, args.workers, &bus_args(redis, "a4"))?;
    let a = Server::start(Role::Ringgate, "a4", &o)?;
    let b = Server::start(
        Role::Ringgate,
        "b4",
        &opts(args, args.workers, &bus_args(redis, "b4"))?,
    )?;
    let mut set = clients(b.addr, "b4-clients", args.n, args.k)?;
    let live = set.open_to(args.n, RAMP_TIMEOUT)?.live;
    wait_cluster_subscribers(&a, live as u64)?;
    let mut base = 2_000_000u64;
    let probe = |set: &mut ClientSet, base: &mut u64| -> Result<Vec<Shot>, String> {
        let (s, _) = shots(
            args,
            &mut [set],
            *base,
            |fields| a.publish_admin("bench", fields),
            &[],
        )?;
        *base += args.k as u64;
        Ok(s)
    };
    let mut quiet = Vec::new();
    for _ in 0..args.reps {
        quiet.extend(probe(&mut set, &mut base)?);
    }
    let mut listeners = match on_b {
        Some(scenario) => {
            let l = Load::start(&o.ringgate_bin, b.addr, scenario, "127.0.2.1-127.0.2.20")?;
            guard::sleep_checked(Duration::from_secs(5))?;
            Some(l)
        }
        None => None,
    };
    let c0 = Counts::read(&a, &b, redis)?;
    let gw0 = cpu_us(&[a.pid(), b.pid()]);
    let t0 = Instant::now();
    let mut load = Load::start(&o.ringgate_bin, a.addr, on_a, "127.0.1.1-127.0.1.40")?;
    // Arrivals take the first seconds; probe in the steady storm after them.
    guard::sleep_checked(Duration::from_secs(15))?;
    let mut storm = Vec::new();
    while t0.elapsed() < Duration::from_secs(60) {
        storm.extend(probe(&mut set, &mut base)?);
    }
    load.wait(Duration::from_secs(60))?;
    let window = t0.elapsed();
    let c = Counts::read(&a, &b, redis)?.since(c0);
    let gw_cpu_s = (cpu_us(&[a.pid(), b.pid()]) - gw0) / 1e6;
    if let Some(l) = listeners.as_mut() {
        l.wait(Duration::from_secs(60))?;
    }
    let per_s = |x: f64| x / window.as_secs_f64();
    println!(
        "\n## {title}: cross-node probes a → {live} subscribers on b, {:.0} s window\n",
        window.as_secs_f64()
    );
    println!(
        "{}",
        report::table(
            &["on a / Redis", "count", "per second"],
            &[
                vec![
                    "joins (a)".into(),
                    format!("{:.0}", c.joins),
                    format!("{:.0}", per_s(c.joins))
                ],
                vec![
                    "leaves (a)".into(),
                    format!("{:.0}", c.leaves),
                    format!("{:.0}", per_s(c.leaves))
                ],
                vec![
                    "broadcasts (a)".into(),
                    format!("{:.0}", c.broadcasts),
                    format!("{:.0}", per_s(c.broadcasts))
                ],
                vec![
                    "published to Redis (a) / PUBLISH calls (Redis)".into(),
                    format!("{:.0} / {}", c.published, c.redis_publish),
                    format!("{:.0}", per_s(c.published))
                ],
                vec![
                    "received from Redis (b)".into(),
                    format!("{:.0}", c.received),
                    format!("{:.0}", per_s(c.received))
                ],
                vec![
                    "SUBSCRIBE commands (a / Redis)".into(),
                    format!("{:.0} / {}", c.subscribe_commands, c.redis_subscribe),
                    format!("{:.1}", per_s(c.subscribe_commands))
                ],
                vec![
                    "UNSUBSCRIBE commands (a / Redis)".into(),
                    format!("{:.0} / {}", c.unsubscribe_commands, c.redis_unsubscribe),
                    format!("{:.1}", per_s(c.unsubscribe_commands))
                ],
                vec![
                    "Redis CPU ms".into(),
                    format!("{:.0}", c.redis_cpu_s * 1e3),
                    format!("{:.1}", per_s(c.redis_cpu_s * 1e3))
                ],
                vec![
                    "gateways a+b CPU ms".into(),
                    format!("{:.0}", gw_cpu_s * 1e3),
                    format!("{:.1}", per_s(gw_cpu_s * 1e3))
                ],
            ]
        )
    );
    let rows: Vec<Vec<String>> = [("before the storm", &quiet), ("during the storm", &storm)]
        .iter()
        .map(|(name, s)| {
            vec![
                (*name).to_owned(),
                s.len().to_string(),
                report::spread(of(s, |x| x.to_last_ms), 2),
                report::spread(of(s, |x| x.p50_ms), 2),
                format!("{:.2}", percentile_ms(s, 50.0)),
                format!("{:.2}", percentile_ms(s, 99.0)),
                lost(s).to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        report::table(
            &[
                "cross-node probes",
                "broadcasts",
                "to last ms",
                "p50 ms",
                "to last p50 over broadcasts",
                "to last p99 over broadcasts",
                "lost"
            ],
            &rows
        )
    );
    let redis_ms_per_1000 = if c.redis_publish > 0 {
        c.redis_cpu_s * 1e6 / c.redis_publish as f64
    } else {
        f64::NAN
    };
    Ok(json!({
        "window_s": window.as_secs_f64(),
        "joins": c.joins, "leaves": c.leaves, "broadcasts": c.broadcasts,
        "published": c.published, "redis_publish_calls": c.redis_publish, "received_by_b": c.received,
        "subscribe_commands": c.subscribe_commands, "unsubscribe_commands": c.unsubscribe_commands,
        "redis_subscribe_calls": c.redis_subscribe, "redis_unsubscribe_calls": c.redis_unsubscribe,
        "redis_cpu_ms": c.redis_cpu_s * 1e3,
        "redis_cpu_ms_per_1000_publishes": redis_ms_per_1000,
        "gateways_cpu_ms": gw_cpu_s * 1e3,
        "quiet_to_last_ms_p50": percentile_ms(&quiet, 50.0),
        "quiet_to_last_ms_p99": percentile_ms(&quiet, 99.0),
        "storm_to_last_ms_p50": percentile_ms(&storm, 50.0),
        "storm_to_last_ms_p99": percentile_ms(&storm, 99.0),
        "storm_lost": lost(&storm),
    }))
}

/// Percentile of the broadcasts' time to the last subscriber, ms.
fn percentile_ms(shots: &[Shot], p: f64) -> f64 {
    let mut v: Vec<u64> = shots.iter().map(|s| (s.to_last_ms * 1e3) as u64).collect();
    v.sort_unstable();
    stats::percentile(&v, p) as f64 / 1e3
}
