//! Client processes. RLIMIT_NOFILE (20000, fixed here) caps the sockets of one process, and a client in
//! its own process can be measured apart from the bench: so the bench binary re-runs itself with
//! `--client-child`, and each child holds up to `CONNS_PER_CLIENT_PROCESS_MAX` connections.
//!
//! The parent drives its children with one line per command on their stdin; each answers one line on
//! stdout (and `GOT <seq>` lines on its own when every live connection has received broadcast `seq`):
//!
//! | command        | answer                                                          |
//! |----------------|-----------------------------------------------------------------|
//! | `OPEN n`       | `OPENED ok failed elapsed_ns live first_error_or_-`              |
//! | `HB`           | `HB written` (a keepalive per connection: heartbeat or ping)     |
//! | `RESET base`   | `RESET` (a new round of broadcasts numbered base..)              |
//! | `COLLECT`      | `R seq count t_ns…` per slot, then `END`                         |
//! | `STATUS`       | `STATUS live closed`                                             |
//!
//! A child exits on `QUIT` or when its stdin closes, so it never outlives the bench.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;

use super::clock::mono_ns;
use super::guard::{self, ProcGuard};
use super::wsclient::{ClientImpl, ConnSpec, JoinMode, Shared};
use super::CONNS_PER_CLIENT_PROCESS_MAX;

/// The child's command line (the parent builds it).
#[derive(Parser, Debug)]
struct ChildArgs {
    #[arg(long)]
    client_child: bool,
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    path: String,
    #[arg(long)]
    join: String,
    #[arg(long)]
    client_impl: String,
    #[arg(long)]
    concurrency: usize,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    slots: usize,
    #[arg(long)]
    conns_max: usize,
    #[arg(long)]
    src_offset: usize,
    #[arg(long, default_value_t = 1)]
    topics: usize,
    #[arg(long, default_value_t = 0)]
    topic_offset: usize,
}

/// True when this process was started as a client child.
pub fn is_child_invocation() -> bool {
    std::env::args().any(|a| a == "--client-child")
}

/// Runs the client child until QUIT or EOF, then exits the process.
pub fn child_main() -> ! {
    let args = ChildArgs::parse();
    let code = match run_child(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("client child: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn run_child(args: ChildArgs) -> Result<(), String> {
    debug_assert!(args.client_child);
    let spec = ConnSpec {
        server: args.server,
        path: args.path.clone(),
        join: JoinMode::parse(&args.join)?,
        imp: ClientImpl::parse(&args.client_impl)?,
        src_offset: args.src_offset,
        topics: args.topics,
        topic_offset: args.topic_offset,
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("runtime: {e}"))?;
    // tokio's async stdin needs a feature the main crate does not enable; a thread forwards lines instead.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(line).is_err() {
                break;
            }
        }
    });
    runtime.block_on(async move {
        let (shared, mut got_rx) = Shared::new(spec, args.conns_max, args.slots);
        let mut next_idx = 0usize;
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let mut words = cmd.split_whitespace();
                    let reply = match (words.next(), words.next().map(str::parse::<u64>)) {
                        (Some("OPEN"), Some(Ok(n))) => {
                            let range = next_idx..next_idx + n as usize;
                            next_idx += n as usize;
                            open_many(&shared, range, args.concurrency).await
                        }
                        (Some("HB"), None) => format!("HB {}", shared.heartbeat()),
                        (Some("RESET"), Some(Ok(base))) => {
                            shared.reset(base);
                            "RESET".to_owned()
                        }
                        (Some("COLLECT"), None) => collect_lines(&shared, next_idx),
                        (Some("STATUS"), None) => format!(
                            "STATUS {} {}",
                            shared.live.load(std::sync::atomic::Ordering::SeqCst),
                            shared.closed.load(std::sync::atomic::Ordering::SeqCst)
                        ),
                        (Some("QUIT"), None) => return Ok(()),
                        _ => format!("ERR unknown command {cmd:?}"),
                    };
                    say(&reply)?;
                }
                Some(seq) = got_rx.recv() => say(&format!("GOT {seq}"))?,
            }
        }
    })
}

fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

async fn open_many(
    shared: &std::sync::Arc<Shared>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> String {
    let start_ns = mono_ns();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(range)
        .map(|idx| shared.open(idx))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed_ns = mono_ns() - start_ns;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map_or("-", |e| e.as_str());
    let live = shared.live.load(std::sync::atomic::Ordering::SeqCst);
    format!(
        "OPENED {ok} {} {elapsed_ns} {live} {first_error}",
        results.len() - ok
    )
}

fn collect_lines(shared: &Shared, conns: usize) -> String {
    let mut out = String::new();
    for (slot, times) in shared.collect(conns).iter().enumerate() {
        out.push_str(&format!("R {slot} {}", times.len()));
        for t in times {
            out.push_str(&format!(" {t}"));
        }
        out.push('\n');
    }
    out.push_str("END");
    out
}

/// How the parent starts its client children.
#[derive(Clone, Debug)]
pub struct ClientsSpec {
    pub server: SocketAddr,
    pub path: String,
    pub join: JoinMode,
    pub imp: ClientImpl,
    /// Upgrades in flight per child.
    pub concurrency: usize,
    /// Runtime threads per child (1 = current-thread runtime).
    pub threads: usize,
    /// Broadcast slots per round (0 when no broadcasts are timed).
    pub slots: usize,
    /// Topics the connections spread over (1: all join `wsclient::TOPIC`).
    pub topics: usize,
}

/// Result of growing the connection count.
#[derive(Clone, Debug, Default)]
pub struct Opened {
    pub ok: usize,
    pub failed: usize,
    /// Slowest child's wall time for its share.
    pub elapsed_ns: u64,
    pub live: usize,
    pub first_error: Option<String>,
}

struct ChildHandle {
    guard: ProcGuard,
    stdin: ChildStdin,
    /// Connections requested from this child so far.
    requested: usize,
    lines: VecDeque<String>,
}

/// The parent's handle on the client children serving one server.
pub struct ClientSet {
    children: Vec<ChildHandle>,
    rx: std_mpsc::Receiver<(usize, Option<String>)>,
    got: HashSet<(usize, u64)>,
}

impl ClientSet {
    /// Starts `processes` children (at least one) for `spec`.
    pub fn spawn(label: &str, spec: &ClientsSpec, processes: usize) -> Result<ClientSet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (tx, rx) = std_mpsc::channel();
        let mut children = Vec::new();
        for i in 0..processes.max(1) {
            let mut cmd = Command::new(&exe);
            cmd.arg("--client-child")
                .args(["--server", &spec.server.to_string(), "--path", &spec.path])
                .args([
                    "--join",
                    spec.join.as_str(),
                    "--client-impl",
                    spec.imp.as_str(),
                ])
                .args(["--concurrency", &spec.concurrency.to_string()])
                .args([
                    "--threads",
                    &spec.threads.to_string(),
                    "--slots",
                    &spec.slots.to_string(),
                ])
                .args(["--conns-max", &CONNS_PER_CLIENT_PROCESS_MAX.to_string()])
                .args(["--src-offset", &(i * 97).to_string()])
                .args(["--topics", &spec.topics.to_string()])
                .args([
                    "--topic-offset",
                    &(i * CONNS_PER_CLIENT_PROCESS_MAX).to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut guard = ProcGuard::spawn(&format!("{label} client {i}"), &mut cmd)
                .map_err(|e| format!("spawn client child: {e}"))?;
            let stdin = guard.child_mut().stdin.take().expect("piped stdin");
            let stdout = guard.child_mut().stdout.take().expect("piped stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
            children.push(ChildHandle {
                guard,
                stdin,
                requested: 0,
                lines: VecDeque::new(),
            });
        }
        Ok(ClientSet {
            children,
            rx,
            got: HashSet::new(),
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.guard.pid()).collect()
    }

    /// Connections requested so far, over all children.
    pub fn requested(&self) -> usize {
        self.children.iter().map(|c| c.requested).sum()
    }

    fn send(&mut self, i: usize, line: &str) -> Result<(), String> {
        let child = &mut self.children[i];
        writeln!(child.stdin, "{line}")
            .and_then(|()| child.stdin.flush())
            .map_err(|e| format!("{}: {e}", child.guard.name()))
    }

    /// Moves one line from the children into the per-child queues; false on timeout.
    fn pump(&mut self, until: Instant) -> Result<bool, String> {
        guard::check_stop()?;
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match self.rx.recv_timeout(wait) {
            Ok((i, Some(line))) => {
                if let Some(seq) = line.strip_prefix("GOT ").and_then(|s| s.parse().ok()) {
                    self.got.insert((i, seq));
                } else {
                    self.children[i].lines.push_back(line);
                }
                Ok(true)
            }
            Ok((i, None)) => {
                let name = self.children[i].guard.name().to_owned();
                let status = self.children[i].guard.exited();
                Err(format!("{name} exited ({status:?})"))
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => Ok(false),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err("client children gone".to_owned()),
        }
    }

    /// The next answer line of child `i`.
    fn answer(&mut self, i: usize, timeout: Duration) -> Result<String, String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(line) = self.children[i].lines.pop_front() {
                if line.starts_with("ERR") {
                    return Err(format!("{}: {line}", self.children[i].guard.name()));
                }
                return Ok(line);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{}: no answer within {} s",
                    self.children[i].guard.name(),
                    timeout.as_secs()
                ));
            }
            self.pump(until)?;
        }
    }

    /// Grows the total connection count to `total`, spread evenly over the children, in parallel.
    pub fn open_to(&mut self, total: usize, timeout: Duration) -> Result<Opened, String> {
        let n = self.children.len();
        let mut asked = Vec::new();
        for i in 0..n {
            let share = total * (i + 1) / n - total * i / n;
            let more = share.saturating_sub(self.children[i].requested);
            if more > 0 {
                if share > CONNS_PER_CLIENT_PROCESS_MAX {
                    return Err(format!(
                        "{share} connections for one client child: use more client processes"
                    ));
                }
                self.send(i, &format!("OPEN {more}"))?;
                self.children[i].requested = share;
                asked.push(i);
            }
        }
        let mut opened = Opened::default();
        for i in asked {
            let line = self.answer(i, timeout)?;
            let f: Vec<&str> = line.splitn(6, ' ').collect();
            if f.len() < 6 || f[0] != "OPENED" {
                return Err(format!("unexpected answer to OPEN: {line}"));
            }
            let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{line}: {e}"));
            opened.ok += num(f[1])? as usize;
            opened.failed += num(f[2])? as usize;
            opened.elapsed_ns = opened.elapsed_ns.max(num(f[3])?);
            if f[5] != "-" && opened.first_error.is_none() {
                opened.first_error = Some(f[5].to_owned());
            }
        }
        opened.live = self.status(timeout)?.0;
        Ok(opened)
    }

    /// One keepalive per connection (Phoenix heartbeat, or ping); returns how many were written.
    pub fn heartbeat(&mut self, timeout: Duration) -> Result<usize, String> {
        self.all("HB", timeout).map(|answers| {
            answers
                .iter()
                .filter_map(|a| a.strip_prefix("HB ")?.parse::<usize>().ok())
                .sum()
        })
    }

    /// (live, closed) over all children.
    pub fn status(&mut self, timeout: Duration) -> Result<(usize, usize), String> {
        let answers = self.all("STATUS", timeout)?;
        let mut live_closed = (0, 0);
        for a in answers {
            let f: Vec<usize> = a
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            live_closed.0 += f.first().copied().unwrap_or(0);
            live_closed.1 += f.get(1).copied().unwrap_or(0);
        }
        Ok(live_closed)
    }

    /// Starts a round of broadcasts numbered from `base`.
    pub fn reset(&mut self, base: u64, timeout: Duration) -> Result<(), String> {
        self.got.clear();
        self.all(&format!("RESET {base}"), timeout).map(|_| ())
    }

    /// Waits until every child with live connections reported `GOT seq`; false on timeout.
    pub fn wait_got(
        &mut self,
        seq: u64,
        live_per_child: &[usize],
        timeout: Duration,
    ) -> Result<bool, String> {
        let until = Instant::now() + timeout;
        loop {
            let done = (0..self.children.len())
                .all(|i| live_per_child[i] == 0 || self.got.contains(&(i, seq)));
            if done {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            self.pump(until)?;
        }
    }

    /// Live connections per child.
    pub fn live_per_child(&mut self, timeout: Duration) -> Result<Vec<usize>, String> {
        let answers = self.all("STATUS", timeout)?;
        Ok(answers
            .iter()
            .map(|a| {
                a.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            })
            .collect())
    }

    /// Receive times of the current round: `[slot] → times` merged over children.
    pub fn collect(&mut self, slots: usize, timeout: Duration) -> Result<Vec<Vec<u64>>, String> {
        let mut merged = vec![Vec::new(); slots];
        for i in 0..self.children.len() {
            self.send(i, "COLLECT")?;
        }
        for i in 0..self.children.len() {
            loop {
                let line = self.answer(i, timeout)?;
                if line == "END" {
                    break;
                }
                let mut f = line.split_whitespace();
                if f.next() != Some("R") {
                    return Err(format!("unexpected COLLECT line: {line}"));
                }
                let slot: usize = f.next().and_then(|s| s.parse().ok()).ok_or("bad slot")?;
                let _count = f.next();
                if let Some(times) = merged.get_mut(slot) {
                    times.extend(f.filter_map(|t| t.parse::<u64>().ok()));
                }
            }
        }
        Ok(merged)
    }

    /// Sends `cmd` to every child and returns their answers in child order.
    fn all(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<String>, String> {
        for i in 0..self.children.len() {
            self.send(i, cmd)?;
        }
        (0..self.children.len())
            .map(|i| self.answer(i, timeout))
            .collect()
    }
}

impl Drop for ClientSet {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            let _ = self.send(i, "QUIT");
        }
        // The guards then reap (or, past their grace, kill) each child by PID.
    }
}
