//! Process facts and signals: resident memory, CPU time, the nofile limit, Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Resident set size of this process, bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// User + system CPU time of this process, ms.
pub fn cpu_ms() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the valid, zero-initialised buffer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (and it was zeroed anyway).
    let u = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(u.ru_utime) + ms(u.ru_stime)
}

pub use crate::server::nofile_soft_limit;

/// Blocks SIGINT and SIGTERM in this thread (and every thread started after) and starts a
/// thread that takes them: the first sets `stop` (clean shutdown), and `on_signal` runs for each
/// (the parent of a `--procs` run forwards it to its children).
pub fn handle_stop_signals(stop: Arc<AtomicBool>, on_signal: impl Fn(i32) + Send + 'static) {
    // SAFETY: sigset operations on a zeroed, owned sigset_t; pthread_sigmask with valid pointers.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("load-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid sigset and `sig` a valid out-pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                if !stop.swap(true, Ordering::SeqCst) {
                    say!("ringgate load: signal {sig}: closing users and writing the report");
                }
                on_signal(sig);
            }
        })
        .expect("spawn the signal thread");
}

/// Sends `sig` to process `pid` (a child we started).
pub fn signal_child(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; `pid` is a child of ours that we have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}
