//! Readings from /proc: per-process memory (RSS, Pss) and CPU (utime+stime, and per-thread run time from
//! schedstat, which has nanosecond resolution where /proc/PID/stat has 10 ms ticks), and kernel-wide
//! slab memory (`/proc/meminfo` Slab, `/proc/slabinfo` per cache) and CPU (`/proc/stat`).
//!
//! On loopback the client's sockets live in the same kernel as the server's, so every kernel figure read
//! here is for connection *pairs*; callers report it as such and also halved.

use std::collections::BTreeMap;
use std::fs;
use std::io;

/// Memory of one process, from `/proc/PID/smaps_rollup`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcMem {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
}

/// Reads RSS and Pss of `pid`.
pub fn proc_mem(pid: u32) -> io::Result<ProcMem> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let mut mem = ProcMem::default();
    for line in text.lines() {
        if let Some(kib) = kib_field(line, "Rss:") {
            mem.rss_bytes = kib * 1024;
        } else if let Some(kib) = kib_field(line, "Pss:") {
            mem.pss_bytes = kib * 1024;
        }
    }
    Ok(mem)
}

fn kib_field(line: &str, key: &str) -> Option<u64> {
    let rest = line.strip_prefix(key)?;
    rest.trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU used by one process so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcCpu {
    /// utime + stime from `/proc/PID/stat`, converted from clock ticks (10 ms resolution here).
    pub stat_us: u64,
    /// utime alone (user mode), in µs at the same resolution: `stat_us - user_us` is kernel time.
    pub user_us: u64,
    /// Sum of the run time of the live threads (`/proc/PID/task/*/schedstat`), in ns. Exited threads
    /// are missing from it, so it is only used for processes whose threads live as long as they do.
    pub sched_ns: u64,
}

impl ProcCpu {
    /// The most precise figure available, in µs: schedstat when the kernel has it, else stat ticks.
    pub fn best_us(&self) -> f64 {
        if self.sched_ns > 0 {
            self.sched_ns as f64 / 1000.0
        } else {
            self.stat_us as f64
        }
    }
}

/// Clock ticks per second for /proc/PID/stat and /proc/stat.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects on the caller.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Reads the CPU used so far by `pid`.
pub fn proc_cpu(pid: u32) -> io::Result<ProcCpu> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat_us = (ticks(11) + ticks(12)) * 1_000_000 / clk_tck();
    let user_us = ticks(11) * 1_000_000 / clk_tck();
    let mut sched_ns = 0;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(text) = fs::read_to_string(path) {
                sched_ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(ProcCpu {
        stat_us,
        user_us,
        sched_ns,
    })
}

/// Run time so far (`/proc/PID/task/*/schedstat`, ns) of each thread of `pid` whose name starts
/// with `prefix` (ringgate names its workers `ringgate-w0`, `ringgate-w1`, …), sorted by name.
pub fn threads_run_ns(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = tasks
        .flatten()
        .filter_map(|task| {
            let name = fs::read_to_string(task.path().join("comm")).ok()?;
            let name = name.trim_end().to_owned();
            if !name.starts_with(prefix) {
                return None;
            }
            let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
            let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((name, ns))
        })
        .collect();
    out.sort();
    out
}

/// Whole-machine CPU time from the first line of `/proc/stat`, in µs, split the way the benches need it:
/// process context (user+nice+system) can be attributed to processes; softirq (loopback packet
/// processing lands here) and steal (another VM on the host) cannot.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCpu {
    pub process_us: u64,
    pub irq_us: u64,
    pub steal_us: u64,
    pub idle_us: u64,
}

pub fn system_cpu() -> io::Result<SystemCpu> {
    let text = fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().unwrap_or("");
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0) * 1_000_000 / clk_tck();
    Ok(SystemCpu {
        process_us: get(0) + get(1) + get(2),
        irq_us: get(5) + get(6),
        steal_us: get(7),
        idle_us: get(3) + get(4),
    })
}

/// `Slab` from `/proc/meminfo`, in bytes: all kernel slab memory on the machine.
pub fn meminfo_slab_bytes() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|line| kib_field(line, "Slab:"))
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other("no Slab: line in /proc/meminfo"))
}

/// Bytes held by each slab cache (slabs × pages per slab × page size, so slab overhead included), from
/// `/proc/slabinfo`. `None` when the file is not readable (it needs root).
pub fn slabinfo_bytes() -> Option<BTreeMap<String, u64>> {
    let text = fs::read_to_string("/proc/slabinfo").ok()?;
    // SAFETY: sysconf only reads a configuration value; it has no memory effects on the caller.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut caches = BTreeMap::new();
    for line in text.lines().skip(2) {
        // name active_objs num_objs objsize objperslab pagesperslab : tunables .. : slabdata active num shared
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 16 {
            continue;
        }
        let pages_per_slab: u64 = f[5].parse().unwrap_or(0);
        let num_slabs: u64 = f[14].parse().unwrap_or(0);
        caches.insert(f[0].to_owned(), num_slabs * pages_per_slab * page_bytes);
    }
    Some(caches)
}

/// Caches always reported (when present), whether or not they moved: the ones a TCP socket and its
/// waiting machinery (epoll for tokio, io_uring for ringgate) allocate, and `dentry`.
pub const SLAB_CACHES_NAMED: &[&str] = &[
    "TCP",
    "sock_inode_cache",
    "filp",
    "dentry",
    "io_kiocb",
    "eventpoll_epi",
    "eventpoll_pwq",
];

/// The caches a connection's socket, file and wait machinery live in. Summed, they give a kernel figure
/// that other processes on the machine barely disturb, unlike the whole `Slab` (a compiler running next
/// to the bench moves `dentry` and the inode caches by megabytes). `dentry` is left out for that reason
/// (each socket's own dentry, 192 B, is then missing); `kmalloc-*` is kept because io_uring's per-request
/// async data (e.g. an armed recv's msghdr) lives there.
pub fn is_socket_cache(name: &str) -> bool {
    const SOCKET_CACHES: &[&str] = &[
        "TCP",
        "TCPv6",
        "sock_inode_cache",
        "filp",
        "lsm_file_cache",
        "lsm_inode_cache",
        "eventpoll_epi",
        "eventpoll_pwq",
        "ep_head",
        "io_kiocb",
    ];
    SOCKET_CACHES.contains(&name) || name.starts_with("kmalloc-")
}

/// `TcpExt: ListenOverflows` from `/proc/net/netstat`: connections the kernel dropped because a listen
/// queue was full. Each one costs its client a SYN retransmit (1 s), so a ramp that causes any measures
/// the listen backlog rather than the server.
pub fn listen_overflows() -> u64 {
    let text = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A point in time for attributing machine CPU: the whole machine, and the processes of this run.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    system: SystemCpu,
    ours_us: u64,
    wall_ns: u64,
}

/// CPU spent between two marks, in µs. `other_us` is process-context CPU the run's own processes did not
/// use: another user of the machine. Loopback packet processing shows up in `irq_us`, not there.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuWindow {
    pub wall_us: f64,
    pub ours_us: f64,
    pub other_us: f64,
    pub irq_us: f64,
    pub steal_us: f64,
}

impl CpuWindow {
    /// Other processes' CPU as a share of one core over the window.
    pub fn other_cores(&self) -> f64 {
        if self.wall_us > 0.0 {
            self.other_us / self.wall_us
        } else {
            0.0
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "wall_s": self.wall_us / 1e6, "ours_cpu_s": self.ours_us / 1e6, "other_cpu_s": self.other_us / 1e6,
            "other_cores": self.other_cores(), "irq_cpu_s": self.irq_us / 1e6, "steal_cpu_s": self.steal_us / 1e6,
        })
    }
}

/// utime+stime of `pids` and of this process, in µs (tick resolution, like /proc/stat).
fn ours_us(pids: &[u32]) -> u64 {
    let me = std::process::id();
    pids.iter()
        .chain(std::iter::once(&me))
        .filter_map(|pid| proc_cpu(*pid).ok())
        .map(|c| c.stat_us)
        .sum()
}

pub fn cpu_mark(pids: &[u32]) -> CpuMark {
    CpuMark {
        system: system_cpu().unwrap_or_default(),
        ours_us: ours_us(pids),
        wall_ns: super::clock::mono_ns(),
    }
}

/// CPU since `start` (pass the same `pids`, all still alive).
pub fn cpu_since(start: &CpuMark, pids: &[u32]) -> CpuWindow {
    let end = cpu_mark(pids);
    let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
    let system_us = d(end.system.process_us, start.system.process_us);
    let ours = d(end.ours_us, start.ours_us);
    CpuWindow {
        wall_us: d(end.wall_ns, start.wall_ns) / 1000.0,
        ours_us: ours,
        other_us: (system_us - ours).max(0.0),
        irq_us: d(end.system.irq_us, start.system.irq_us),
        steal_us: d(end.system.steal_us, start.system.steal_us),
    }
}
