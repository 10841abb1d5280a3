//! `ringgate load`: a load generator for WebSocket / Phoenix Channels servers, as cheap per
//! connection as the gateway it tests.
//!
//! # Layout
//! - `args`: the command line. `target`: the `ws://` URL and `--source` parsing. `sources`: how
//!   many connections one source address takes, the automatic choice for loopback servers, and
//!   each process's disjoint share.
//! - `scenario`: what users do — arrival phases, weighted sessions of steps (TOML files or the
//!   built-ins `seed`, `phoenix-idle`, `chat`), compiled into flat step lists.
//! - `upgrade`: the client side of the HTTP upgrade, sans-IO.
//! - `engine`: one thread + one io_uring per worker; users as 48-byte slots of a fixed-file
//!   table (direct descriptors); the step machine.
//! - `stats`: per-second samples with sparse HDR histograms, and their merging.
//! - `collector`: the live progress line and the run's series. `procs`: `--procs N` children
//!   that report JSON lines to this process. `report`: summary.json, timeseries.csv, report.html.
//! - `sys`: RSS, CPU time, rlimits, signals.
//!
//! Docs: `docs/load-testing.md`.

/// `eprintln!` that ignores a failed write: stderr may be a pipe whose reader went away
/// (`ringgate load ... | head`), and that must not panic a worker mid-run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod args;
pub mod collector;
pub mod engine;
mod procs;
pub mod report;
pub mod scenario;
pub mod sources;
pub mod stats;
pub mod sys;
pub mod target;
pub mod upgrade;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub use args::LoadArgs;
use collector::Collector;
use engine::rendezvous::{self, Rendezvous};
use engine::{mono_ns, Engine, Report, Setup, WorkerPlan};
use scenario::{builtin, file, Scenario};
use stats::{Merger, Sample};

/// Most processes `--procs` starts: each reports to this one over a pipe.
pub const MAX_PROCS: u32 = 256;
/// Most workers per process.
pub const MAX_WORKERS: u32 = 1024;
/// Spare fixed-file slots per worker beyond its share of users (slots of users that ended are
/// reused only once their close completed).
const SPARE_SLOTS: u64 = 64;
/// Children start this long after the parent picks the shared start time.
const CHILD_START_DELAY_NS: u64 = 300_000_000;

/// Runs `ringgate load`; returns the process exit status.
pub fn main(args: LoadArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            say!("ringgate load: {e}");
            1
        }
    }
}

/// The scenario the flags name, with the flags' overrides applied.
pub fn build_scenario(args: &LoadArgs, url_target: Option<String>) -> Result<Scenario, String> {
    let duration_ms = match args.duration {
        Some(d) if !(d.is_finite() && d > 0.0 && d <= 30.0 * 86_400.0) => {
            return Err("--duration must be a number of seconds in (0, 2592000]".into())
        }
        Some(d) => Some((d * 1000.0).round() as u64),
        None => None,
    };
    if let Some(r) = args.arrival_rate {
        if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
            return Err("--arrival-rate must be in (0, 10000000] users per second".into());
        }
    }
    let path = Path::new(&args.scenario);
    let mut s = if builtin::NAMES.contains(&args.scenario.as_str()) && !path.exists() {
        builtin::build(
            &args.scenario,
            &builtin::Params {
                users: args.users,
                arrival_rate: args.arrival_rate,
                duration_ms,
                url_target,
                rooms: args.rooms,
                post_interval_ms: args.post_interval_ms,
            },
        )?
    } else if path.exists() {
        let mut s = file::load(path).map_err(|e| e.to_string())?;
        s.apply_overrides(args.users, args.arrival_rate, duration_ms);
        s
    } else {
        return Err(format!(
            "--scenario {:?}: no such file, and not a built-in ({})",
            args.scenario,
            builtin::NAMES.join(", ")
        ));
    };
    if s.duration_ms == 0 {
        return Err(format!(
            "{}: no duration: set duration_s in the file or pass --duration",
            args.scenario
        ));
    }
    if s.phases.is_empty() {
        return Err(format!(
            "{}: no arrival phases: add [[phases]] to the file or pass --arrival-rate",
            args.scenario
        ));
    }
    if s.planned_users() == 0 {
        return Err(format!("{}: the phases let no user arrive", args.scenario));
    }
    s.users = Some(s.planned_users());
    Ok(s)
}

/// Workers per process and fixed-file slots per worker.
fn sizing(args: &LoadArgs, users: u64, procs: u32) -> Result<(u32, u32), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mut workers = args.workers.unwrap_or((cores / procs).max(1));
    if workers == 0 || workers > MAX_WORKERS {
        return Err(format!("--workers must be 1..={MAX_WORKERS}"));
    }
    let cap = sys::nofile_soft_limit().min(1 << 24);
    let per_proc = users.div_ceil(u64::from(procs));
    let needed = per_proc.div_ceil(cap.saturating_sub(SPARE_SLOTS).max(1)) as u32;
    if needed > workers {
        if args.child_index.is_none() {
            say!(
                "ringgate load: {per_proc} users per process need {needed} rings of at most {cap} \
                 sockets (soft RLIMIT_NOFILE): using {needed} workers instead of {workers}"
            );
        }
        workers = needed;
    }
    if workers > MAX_WORKERS {
        return Err(format!(
            "{per_proc} users per process need more than {MAX_WORKERS} workers: use --procs"
        ));
    }
    let total = u64::from(workers) * u64::from(procs);
    let slots = (users.div_ceil(total) + SPARE_SLOTS).min(cap) as u32;
    Ok((workers, slots))
}

/// A connect to the server before anything starts, so "nothing listens there" is one clear line.
fn preflight(url: &target::WsUrl) -> Result<(), String> {
    match TcpStream::connect_timeout(&url.addr.into(), Duration::from_secs(3)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "cannot connect to {}: connection refused — is the server running and listening there?",
            url.addr
        )),
        Err(e) => Err(format!("cannot connect to {}: {e}", url.addr)),
    }
}

/// Kernel features the load generator needs beyond the gateway's; returns whether setsockopt
/// through io_uring works (6.7+, for `TCP_NODELAY`).
fn probe(need_bind: bool) -> Result<bool, String> {
    crate::ring::probe::check().map_err(|m| m.to_string())?;
    let ring: io_uring::IoUring = io_uring::IoUring::new(8).map_err(|e| e.to_string())?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| e.to_string())?;
    use io_uring::opcode;
    for (code, name, since) in [
        (opcode::Socket::CODE, "IORING_OP_SOCKET", "5.19"),
        (opcode::Connect::CODE, "IORING_OP_CONNECT", "5.5"),
    ] {
        if !p.is_supported(code) {
            return Err(format!(
                "io_uring feature missing: {name} (Linux {since}+); upgrade the kernel"
            ));
        }
    }
    if need_bind && !p.is_supported(opcode::Bind::CODE) {
        return Err(
            "--source needs IORING_OP_BIND (Linux 6.11+); upgrade the kernel or drop --source"
                .into(),
        );
    }
    let sockopt = p.is_supported(opcode::SetSockOpt::CODE)
        && crate::ring::probe::kernel_version().is_some_and(|v| v >= (6, 7));
    if need_bind && !sockopt {
        return Err(
            "--source needs setsockopt through io_uring (Linux 6.7+) for IP_BIND_ADDRESS_NO_PORT"
                .into(),
        );
    }
    Ok(sockopt)
}

fn run(args: LoadArgs) -> Result<(), String> {
    let url = target::parse_url(&args.url)?;
    let scenario = build_scenario(&args, url.target.clone())?;
    let given = match &args.source {
        Some(spec) => Some(target::parse_sources(spec)?),
        None => None,
    };
    if args.procs == 0 || args.procs > MAX_PROCS {
        return Err(format!("--procs must be 1..={MAX_PROCS}"));
    }
    if !args.recv_buffers.is_power_of_two() || args.recv_buffers > 32768 {
        return Err("--recv-buffers must be a power of two ≤ 32768".into());
    }
    if !(256..=1 << 20).contains(&args.recv_buffer_bytes) {
        return Err("--recv-buffer-bytes must be 256..=1048576".into());
    }
    let users = scenario.users.unwrap_or(0);
    if args.first_user_id.saturating_add(users) > u64::from(u32::MAX) {
        return Err("--first-user-id + users must stay below 2^32 (user ids are 32-bit)".into());
    }
    let (workers, slots) = sizing(&args, users, args.procs)?;
    let child = args.child_index.is_some();
    // Every process computes the same plan (same flags, same box) and binds its own slice.
    let budget = sources::Budget::of_this_box()?;
    let hold = scenario.users_hold_to_end();
    let plan = sources::plan(
        given,
        *url.addr.ip(),
        users,
        hold,
        args.procs,
        workers,
        budget,
    )?;
    if !child {
        preflight(&url)?;
    }
    let sockopt = probe(!plan.addrs.is_empty()).map_err(|e| match plan.mode {
        sources::Mode::Auto => format!("{e} ({})", plan.note.as_deref().unwrap_or_default()),
        _ => e,
    })?;
    if !child {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("cannot create --out {}: {e}", args.out.display()))?;
        if let Some(note) = &plan.note {
            say!("ringgate load: {note}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    if !child && args.procs > 1 {
        return procs::run_parent(&args, &scenario, workers, plan.meta(), stop);
    }
    sys::handle_stop_signals(stop.clone(), |_| {});
    let start_mono_ns = args.start_mono_ns.unwrap_or_else(mono_ns);
    let rendezvous = Rendezvous::new(&scenario, child);
    let setup = Arc::new(Setup {
        dest: target::sockaddr(*url.addr.ip(), url.addr.port()),
        host: url.host_header.clone(),
        default_target: url.target.clone().unwrap_or_else(|| "/".into()),
        sources: plan.map_for(args.child_index.unwrap_or(0)),
        seed: mono_ns() ^ u64::from(std::process::id()) << 40,
        first_user_id: args.first_user_id,
        proc_index: args.child_index.unwrap_or(0),
        total_workers: workers * args.procs,
        connect_timeout_ms: args.connect_timeout_ms,
        close_timeout_ms: args.close_timeout_ms,
        start_mono_ns,
        stop,
        ws_limits: crate::ws::Limits::default(),
        recv_buffers: args.recv_buffers,
        recv_buffer_bytes: args.recv_buffer_bytes,
        sockopt_supported: sockopt,
        printed: std::array::from_fn(|_| AtomicU32::new(0)),
        rendezvous,
        scenario,
    });
    if child {
        rendezvous::listen_to_parent(&setup)
            .map_err(|e| format!("cannot start the rendezvous listener: {e}"))?;
        let mut out = std::io::stdout().lock();
        return run_process(&setup, workers, slots, &mut |s| {
            let line = serde_json::to_string(&s).expect("samples serialize");
            // The parent reads until EOF; if it is gone there is nobody to report to.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        });
    }
    let mut collector = Collector::new(setup.scenario.transactions.clone(), args.quiet);
    let result = run_process(&setup, workers, slots, &mut |s| collector.add(s));
    let meta = report::Meta::new(
        &args,
        &setup.scenario,
        workers,
        plan.meta(),
        setup.stop.load(std::sync::atomic::Ordering::Relaxed),
    );
    report::write(&args.out, &meta, &collector)?;
    result
}

/// Runs this process's workers to the end; `sink` gets each merged second (with this process's
/// RSS and CPU time).
fn run_process(
    setup: &Arc<Setup>,
    workers: u32,
    slots: u32,
    sink: &mut dyn FnMut(Sample),
) -> Result<(), String> {
    let now = mono_ns();
    if setup.start_mono_ns > now {
        std::thread::sleep(Duration::from_nanos(setup.start_mono_ns - now));
    }
    let (tx, rx) = mpsc::channel();
    let base = setup.proc_index * workers;
    let mut threads = Vec::new();
    for w in 0..workers {
        let setup = setup.clone();
        let tx = tx.clone();
        let plan = WorkerPlan {
            local_index: w as usize,
            global_index: base + w,
            table_slots: slots,
        };
        let handle = std::thread::Builder::new()
            .name(format!("load-w{w}"))
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    Engine::new(setup, &plan, tx.clone()).and_then(Engine::run)
                });
                // A panicking worker must still report its end, or the run would lose its seconds.
                let result = std::panic::catch_unwind(run)
                    .unwrap_or_else(|_| Err(std::io::Error::other("worker panicked")));
                let err = result.err().map(|e| {
                    let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                        " (the fixed-file table exceeds RLIMIT_NOFILE: use more --workers)"
                    } else {
                        ""
                    };
                    format!("worker {w}: {e}{hint}")
                });
                let _ = tx.send(Report::Done(plan.local_index, err));
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        threads.push(handle);
    }
    drop(tx);
    let mut merger = Merger::new(workers as usize, setup.scenario.transactions.len());
    let mut failures = Vec::new();
    let mut cpu_before = sys::cpu_ms();
    let mut emit = |samples: Vec<Sample>, sink: &mut dyn FnMut(Sample)| {
        for mut s in samples {
            s.rss_bytes = sys::rss_bytes();
            let cpu = sys::cpu_ms();
            s.cpu_ms = cpu.saturating_sub(cpu_before);
            cpu_before = cpu;
            sink(s);
        }
    };
    while let Ok(report) = rx.recv() {
        match report {
            Report::Sample(w, s) => emit(merger.push(w, *s), sink),
            Report::Done(w, err) => {
                if let Some(e) = err {
                    // A worker that cannot start is fatal for the run: stop the others.
                    setup.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    failures.push(e);
                }
                emit(merger.end(w), sink);
            }
        }
    }
    emit(merger.flush(), sink);
    for t in threads {
        let _ = t.join();
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
