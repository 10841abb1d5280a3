//! `--procs N`: N child processes of this binary, each running its share of the users, reporting
//! one JSON [`Sample`] per line on stdout; this process merges them into one run.
//!
//! Children share the run's start time (`CLOCK_MONOTONIC`, passed on their command line), so
//! their second `t` is the same second, and their user ids interleave (`arrivals`) without any
//! other coordination. Ctrl-C reaches the whole process group from a terminal; a signal sent to
//! this process alone is forwarded, and each child closes its users and reports its last seconds.
//! The one thing decided here for all of them is a scenario's rendezvous: this process adds up the
//! children's counts of users that reached it (or ended before they could) and, once they make
//! the whole, tells each child on its stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};

use super::collector::Collector;
use super::engine::mono_ns;
use super::engine::rendezvous::GO_LINE;
use super::scenario::Scenario;
use super::stats::{Merger, Sample};
use super::{report, sys, LoadArgs, CHILD_START_DELAY_NS};

/// Longest line a child may send: a sample with full histograms is a few tens of KB.
const MAX_LINE_BYTES: usize = 4 << 20;

enum Msg {
    Sample(usize, Box<Sample>),
    End(usize, Option<String>),
}

pub(super) fn run_parent(
    args: &LoadArgs,
    scenario: &Scenario,
    workers: u32,
    sources: super::sources::Meta,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find our own binary: {e}"))?;
    let start = mono_ns() + CHILD_START_DELAY_NS;
    let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
    let forward = pids.clone();
    sys::handle_stop_signals(stop.clone(), move |sig| {
        for &pid in forward.lock().expect("pid list").iter() {
            sys::signal_child(pid, sig);
        }
    });
    // The child runs the same command line; `--child-index` makes it a child.
    let own_args: Vec<String> = std::env::args().skip(1).collect();
    let (tx, rx) = mpsc::channel();
    let mut children: Vec<Child> = Vec::new();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for i in 0..args.procs {
        let mut child = Command::new(&exe)
            .args(&own_args)
            .args(["--child-index", &i.to_string()])
            .args(["--start-mono-ns", &start.to_string()])
            .arg("--quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start load process {i}: {e}"))?;
        pids.lock().expect("pid list").push(child.id());
        stdins.extend(child.stdin.take());
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let err = loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break None,
                    Ok(_) if line.len() > MAX_LINE_BYTES => {
                        break Some(format!(
                            "load process {idx} sent a line over {MAX_LINE_BYTES} bytes"
                        ))
                    }
                    Ok(_) => match serde_json::from_str::<Sample>(line.trim_end()) {
                        Ok(s) => {
                            let _ = tx.send(Msg::Sample(idx, Box::new(s)));
                        }
                        Err(e) => break Some(format!("load process {idx} sent a bad sample: {e}")),
                    },
                    Err(e) => break Some(format!("reading load process {idx}: {e}")),
                }
            };
            let _ = tx.send(Msg::End(idx, err));
        });
        children.push(child);
    }
    drop(tx);
    let mut merger = Merger::new(args.procs as usize, scenario.transactions.len());
    let mut collector = Collector::new(scenario.transactions.clone(), args.quiet);
    let mut failures = Vec::new();
    let mut rendezvous = Releaser {
        users: scenario.rendezvous_users(),
        counted: 0,
        stdins,
    };
    while let Ok(msg) = rx.recv() {
        let done = match msg {
            Msg::Sample(i, s) => merger.push(i, *s),
            Msg::End(i, err) => {
                failures.extend(err);
                merger.end(i)
            }
        };
        for s in done {
            rendezvous.count(s.rendezvous + s.rendezvous_missed);
            collector.add(s);
        }
    }
    for s in merger.flush() {
        collector.add(s);
    }
    for (i, mut c) in children.into_iter().enumerate() {
        match c.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => failures.push(format!("load process {i} exited with {status}")),
            Err(e) => failures.push(format!("load process {i}: {e}")),
        }
    }
    let interrupted = stop.load(std::sync::atomic::Ordering::Relaxed);
    let meta = report::Meta::new(args, scenario, workers, sources, interrupted);
    report::write(&args.out, &meta, &collector)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The rendezvous as this process sees it: the children's users that reached it or ended before
/// they could, and the pipes to tell them it is complete (dropped once told: a child reads to the
/// line or EOF).
struct Releaser {
    users: Option<u64>,
    /// Users that reached it or ended before they could, over all children.
    counted: u64,
    stdins: Vec<ChildStdin>,
}

impl Releaser {
    fn count(&mut self, n: u64) {
        self.counted += n;
        let Some(users) = self.users else { return };
        if self.counted < users || self.stdins.is_empty() {
            return;
        }
        for mut stdin in self.stdins.drain(..) {
            // A child that already ended has nobody waiting; its own report says why.
            let _ = writeln!(stdin, "{GO_LINE}");
        }
    }
}
