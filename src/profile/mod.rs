//! `ringgate profile`: what a connection costs, measured rather than guessed.
//!
//! It ramps idle joined connections (the seed scenario, driven by `ringgate load` processes)
//! against a gateway it starts itself, or against a running one (`--target --admin --pid`), lets
//! each step settle, and samples the gateway's RSS and Pss, its own accounting (`/api/stats`), and
//! kernel memory. User bytes per connection are least-squares slopes over the steps, with R².
//!
//! Kernel memory: on loopback both ends of every connection are in this kernel, so global slab
//! counters show pairs. When `profile` started the gateway it separates the server's share by the
//! exit-delta method: at the top of the ramp it kills the gateway (the load processes keep their
//! sockets: they are SIGSTOPped so they cannot react to the resets) and measures how much the
//! connection caches (`/proc/slabinfo` active objects) shrank. Against a running gateway it reports
//! the pair figure halved, and says so.

pub mod fit;
pub mod readings;
pub mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use fit::fit;
use readings::{cache_bytes, sample, Sample};
use report::{Profile, Step};

/// Flags of `ringgate profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Connections at the top of the ramp. Example: --max 20000
    #[arg(long, default_value_t = 20_000)]
    pub max: u64,
    /// Connections added per step [default: max / 5]. Example: --step 4000
    #[arg(long)]
    pub step: Option<u64>,
    /// Output directory for profile.json and profile.svg (created).
    #[arg(long, default_value = "profile-report")]
    pub out: PathBuf,
    /// A running gateway's public address (with --admin and --pid); default: start one.
    #[arg(long, requires_all = ["admin", "pid"])]
    pub target: Option<SocketAddr>,
    /// The running gateway's admin address (for /api/stats).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The running gateway's process id (for its memory readings).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Workers of the gateway profile starts [default: enough rings for --max at 18k each, ≥ 2].
    #[arg(long)]
    pub workers: Option<u32>,
    /// Memory sizes (GB) for the "connections that fit" column. Example: --memory 8,24,128
    #[arg(long, value_delimiter = ',', default_value = "8,24,64,128")]
    pub memory: Vec<f64>,
    /// Settle time after each step before sampling, ms.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// New connections per second while ramping.
    #[arg(long, default_value_t = 5000.0)]
    pub arrival_rate: f64,
    /// Source addresses for the load processes (needed past ~28k connections).
    #[arg(long, default_value = "127.0.0.2-127.0.0.60")]
    pub source: String,
    /// Print the JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Kills a child (by its PID) when dropped, unless it already exited.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` to each load process we started (by PID).
fn signal_all(children: &[Owned], sig: i32) {
    for c in children {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(c.0.id() as i32, sig) };
    }
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

struct Gateway {
    public: SocketAddr,
    admin: SocketAddr,
    pid: u32,
    child: Option<Owned>,
}

fn start_gateway(args: &ProfileArgs) -> Result<Gateway, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (public, admin) = (
        free_addr().map_err(|e| e.to_string())?,
        free_addr().map_err(|e| e.to_string())?,
    );
    let workers = args
        .workers
        .unwrap_or_else(|| (args.max.div_ceil(18_000) as u32).max(2));
    let child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            &public.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args(["--workers", &workers.to_string(), "--log-level", "warn"])
        // Idle seed users send nothing after their join: keep them for the whole profile.
        .args([
            "--idle-timeout-ms",
            "3600000",
            "--max-connections-per-worker",
            "20000",
        ])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let pid = child.id();
    let gw = Gateway {
        public,
        admin,
        pid,
        child: Some(Owned(child)),
    };
    if !wait_until(Duration::from_secs(20), || {
        readings::http_get(admin, "/healthz").is_ok()
    }) {
        return Err("the gateway did not become ready".into());
    }
    Ok(gw)
}

fn start_load(args: &ProfileArgs, gw: &Gateway, users: u64, index: usize) -> Result<Owned, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = args.out.join(format!("load-{index}"));
    let child = Command::new(exe)
        .args([
            "load",
            "--url",
            &format!("ws://{}/socket/websocket", gw.public),
            "--scenario",
            "seed",
        ])
        .args([
            "--users",
            &users.to_string(),
            "--arrival-rate",
            &args.arrival_rate.to_string(),
        ])
        .args(["--duration", "86400", "--quiet", "--source", &args.source])
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its own report is in --out; the disconnects at the exit-delta step are expected.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `ringgate load`: {e}"))?;
    Ok(Owned(child))
}

fn settle_and_sample(args: &ProfileArgs, gw: &Gateway, expect: u64) -> Result<Sample, String> {
    let ramp = Duration::from_secs_f64(expect as f64 / args.arrival_rate.max(1.0) + 60.0);
    let reached = wait_until(ramp, || {
        readings::gateway_stats(gw.admin)
            .map(|(open, _)| open >= expect)
            .unwrap_or(false)
    });
    if !reached {
        let open = readings::gateway_stats(gw.admin)
            .map(|(o, _)| o)
            .unwrap_or(0);
        return Err(format!(
            "the ramp stalled at {open} of {expect} connections"
        ));
    }
    std::thread::sleep(Duration::from_millis(args.settle_ms));
    sample(gw.pid, gw.admin).map_err(|e| format!("sampling failed: {e}"))
}

/// Runs the profile; prints the table (or JSON) and writes the files.
pub fn run(args: ProfileArgs) -> Result<(), String> {
    let step = args.step.unwrap_or(args.max / 5).max(1);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut gw = match (args.target, args.admin, args.pid) {
        (Some(public), Some(admin), Some(pid)) => Gateway {
            public,
            admin,
            pid,
            child: None,
        },
        _ => start_gateway(&args)?,
    };
    let mut steps = vec![Step::from(settle_and_sample(&args, &gw, 0)?)];
    let mut loads = Vec::new();
    let mut total = 0;
    while total < args.max {
        let add = step.min(args.max - total);
        loads.push(start_load(&args, &gw, add, loads.len())?);
        total += add;
        let s = settle_and_sample(&args, &gw, total)?;
        if !args.json {
            eprintln!(
                "profile: {} connections, RSS {} KiB, Slab {} KiB",
                s.connections,
                s.rss_bytes / 1024,
                s.slab_bytes / 1024
            );
        }
        steps.push(Step::from(s));
    }
    // Exit-delta: the gateway's sockets go with it; the load processes still hold theirs. Counted
    // in active objects of the connection caches (Slab pages stay allocated while partly used, and
    // other processes' sockets come and go in the global counters).
    // The load processes are stopped first: a running client would close its sockets on the
    // resets and free its half too.
    let server_kernel_bytes = match gw.child.take() {
        Some(child) => {
            signal_all(&loads, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(500));
            let before = cache_bytes();
            drop(child);
            std::thread::sleep(Duration::from_secs(3));
            let freed = before.saturating_sub(cache_bytes());
            signal_all(&loads, libc::SIGCONT);
            Some(freed)
        }
        None => None,
    };
    drop(loads);
    let profile = Profile::build(&args, steps, server_kernel_bytes, fit)?;
    report::write(&args, &profile)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&profile).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report::table(&profile, &args.memory));
    }
    Ok(())
}
