//! What the process does when a worker thread dies (its `run` returned an error, or it panicked).
//!
//! A dead worker must not go on looking alive to the rest of the process. Containment, in order:
//! - its listener is shut down (`shutdown(2)` on the server's own descriptor of it), so the kernel
//!   takes it out of the `SO_REUSEPORT` group and stops routing new connections into a backlog
//!   nobody accepts from — whether or not the dead thread's own descriptors were released;
//! - its member counts leave the shared topic table, so publishers stop addressing it and topic
//!   counts are true again (its connections went with its ring);
//! - its presence entries are untracked, and its connections leave the per-address counts of
//!   `max_connections_per_ip` (a panicked worker never ran its own exit, which releases them);
//! - last, its inbox is closed: queued and later messages (broadcasts, report requests) are dropped
//!   and counted, so it cannot grow without bound, and `/metrics` does not wait for a reply. The
//!   closed inbox is what `ringgate_worker_up` reads, so it is closed only once the rest is done:
//!   whoever sees the worker down also sees its counts and entries gone.
//! - it is logged and counted (`ringgate_worker_up`, `ringgate_worker_deaths_total`).
//!
//! Then `server::run` applies `on_worker_death`: exit non-zero (the default), or keep serving.
//!
//! Also here: the test-only override of the resident-memory reading behind `max_memory_bytes`
//! (set through the admin API with `--debug-fault-injection`), so that a test can drive the
//! pause and the resume under 90% exactly, whatever the process really holds.

use std::any::Any;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::Socket;

use crate::hub::Hub;
use crate::worker::Stats;

/// How a worker thread ended.
pub enum Outcome {
    /// `run` returned after a drain: a normal exit.
    Exited(Box<Stats>),
    /// `run` returned an error or the thread panicked; the text says which and why.
    Died(String),
}

/// Classifies a joined worker thread's result.
pub fn outcome(joined: std::thread::Result<io::Result<Stats>>) -> Outcome {
    match joined {
        Ok(Ok(stats)) => Outcome::Exited(Box::new(stats)),
        Ok(Err(e)) => Outcome::Died(format!("returned an error: {e}")),
        Err(payload) => Outcome::Died(format!("panicked: {}", panic_text(&*payload))),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic payload)"
    }
}

/// Contains a dead worker (see the module doc). `listener` is the server's duplicate descriptor
/// of that worker's listening socket. Returns the memberships dropped from the topic table.
pub fn contain(worker: usize, listener: Option<&Socket>, hub: &Hub) -> u64 {
    if let Some(socket) = listener {
        // Shutting down a listening socket stops it listening for every descriptor that refers
        // to it (the dead worker's may not have been closed), and resets what waits in its backlog.
        if let Err(e) = socket.shutdown(Shutdown::Both) {
            tracing::warn!(worker, error = %e, "could not shut down the dead worker's listener");
        }
    }
    // Its connections' presence entries leave (a diff to every member), or they would stay as
    // zombies: the dead worker never untracks them.
    hub.presence.drop_worker(worker);
    // Its connections' counts at `max_connections_per_ip`, or their addresses would stay short of
    // connections for good.
    let per_ip = hub.peers.drop_worker(worker);
    if per_ip > 0 {
        tracing::info!(worker, connections = per_ip, "per-address counts released");
    }
    let memberships = hub.table.drop_worker(worker);
    // Last: the closed inbox is the worker's "down" to every reader (see the module doc).
    if let Some(inbox) = hub.inboxes.get(worker) {
        inbox.close();
    }
    memberships
}

/// Workers whose inbox is closed: they died (a drained worker's inbox stays open).
pub fn deaths(hub: &Hub) -> u64 {
    hub.inboxes.iter().filter(|i| i.is_closed()).count() as u64
}

/// Resident bytes reported instead of `/proc/self/statm` when non-zero (test-only).
static RESIDENT_OVERRIDE: AtomicU64 = AtomicU64::new(0);

/// Test-only (`--debug-fault-injection`): makes the memory ceiling see `bytes` as the process's
/// resident memory; 0 restores the real reading.
pub fn override_resident_bytes(bytes: u64) {
    RESIDENT_OVERRIDE.store(bytes, Ordering::Relaxed);
}

/// The override, if one is set.
fn resident_override() -> Option<u64> {
    Some(RESIDENT_OVERRIDE.load(Ordering::Relaxed)).filter(|&b| b > 0)
}

/// The process's resident bytes as the memory ceiling sees them (read once per tick by workers
/// with `max_memory_bytes` set, and by the stats snapshot): `/proc/self/statm`, the cheapest
/// reading, or the debug override.
pub fn resident_bytes() -> u64 {
    if let Some(bytes) = resident_override() {
        return bytes;
    }
    // The same reading as the load generator's own.
    crate::load::sys::rss_bytes()
}
