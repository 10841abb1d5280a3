//! Processes the bench starts (servers, client children) and how they end: each is a `ProcGuard` that
//! stops its process by PID on drop (SIGTERM, then SIGKILL after a grace period), so a normal return, an
//! error, or a panic that unwinds all leave nothing running. A watchdog thread turns Ctrl-C and the global
//! deadline into a stop flag that every wait in the bench checks; if the bench does not unwind within
//! the grace period, the watchdog kills the registered PIDs itself and exits. Children also get
//! `PR_SET_PDEATHSIG`, so even a SIGKILLed bench takes them along.
//!
//! Only PIDs registered here are ever signalled, and only while they are un-reaped children of this
//! process (a PID cannot be recycled before its parent reaps it).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// PIDs of live, un-reaped children started through `ProcGuard::spawn`.
static SPAWNED: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Set by Ctrl-C or the deadline: every wait in the bench returns an error once it is set.
static STOP: AtomicBool = AtomicBool::new(false);
/// Time a child gets between SIGTERM and SIGKILL: ringgate drains on SIGTERM, which a bench need not wait for.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Time the bench gets to unwind after Ctrl-C or the deadline before the watchdog kills and exits.
const UNWIND_GRACE: Duration = Duration::from_secs(15);

/// A child process that is stopped by PID when the guard drops.
pub struct ProcGuard {
    child: Option<Child>,
    pid: u32,
    name: String,
}

impl ProcGuard {
    /// Spawns `cmd` as a registered child that dies with this process.
    pub fn spawn(name: &str, cmd: &mut Command) -> io::Result<Self> {
        // SAFETY: the closure runs between fork and exec; it only calls prctl, which is async-signal-safe,
        // and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut registry = lock_registry();
        let child = cmd.spawn()?;
        let pid = child.id();
        registry.push(pid);
        Ok(ProcGuard {
            child: Some(child),
            pid,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child, e.g. to take its stdin/stdout pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// `Some(status)` when the process has exited (it is then reaped and unregistered).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let mut registry = lock_registry();
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        registry.retain(|p| *p != self.pid);
        Some(status)
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + TERM_GRACE;
        let mut signal = libc::SIGTERM;
        loop {
            // Reaping and unregistering happen under one lock so the watchdog never signals a PID that
            // was reaped (and could have been recycled).
            let mut registry = lock_registry();
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    registry.retain(|p| *p != self.pid);
                    return;
                }
                Ok(None) => {
                    if signal != 0 {
                        // SAFETY: kill has no memory effects; the PID is our un-reaped child (checked
                        // under the registry lock just above), so it cannot name another process.
                        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
                        signal = 0;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        registry.retain(|p| *p != self.pid);
                        return;
                    }
                }
            }
            drop(registry);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lock_registry() -> std::sync::MutexGuard<'static, Vec<u32>> {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the watchdog: Ctrl-C or `deadline` set the stop flag; if the bench has not returned
/// `UNWIND_GRACE` later, the registered children are killed and the process exits (130 or 124).
pub fn install_watchdog(deadline: Duration) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(runtime) = runtime else {
            eprintln!("watchdog: no runtime; Ctrl-C will not clean up");
            return;
        };
        let code = runtime.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted: stopping servers and clients");
                    130
                }
                () = tokio::time::sleep(deadline) => {
                    eprintln!("global timeout ({} s) reached: stopping", deadline.as_secs());
                    124
                }
            }
        });
        STOP.store(true, Ordering::SeqCst);
        runtime.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = tokio::time::sleep(UNWIND_GRACE) => {}
            }
        });
        let registry = lock_registry();
        for pid in registry.iter() {
            // SAFETY: kill has no memory effects; the registry holds only un-reaped children, and
            // holding its lock keeps a guard from reaping one meanwhile.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        std::process::exit(code);
    });
}

/// Err once Ctrl-C or the deadline has been seen.
pub fn check_stop() -> Result<(), String> {
    if STOP.load(Ordering::SeqCst) {
        Err("stopped (Ctrl-C or global timeout)".to_owned())
    } else {
        Ok(())
    }
}

/// Sleeps `d` in short slices, returning early with an error on stop.
pub fn sleep_checked(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
