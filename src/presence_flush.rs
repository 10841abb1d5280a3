//! The presence flusher: one thread that sends every topic's pending presence diff, once per
//! batch (`[presence] batch_ms`), through the hub's broadcast path — encoded once per serializer,
//! the same bytes to every member on every worker.
//!
//! One thread, because it makes the diffs of a topic leave in the order they were taken: two
//! publishers could deliver a leave before the join it follows. It sleeps until the first change
//! after a flush (no wake-ups while nothing changes), waits `batch_ms` for more, then takes and
//! publishes all pending diffs. Workers never wait for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::hub::Hub;
use crate::phoenix::serializer::Payload;
use crate::presence::wire::Entry;
use crate::presence::DIFF_EVENT;

/// The running flusher.
pub struct Flusher {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    /// Diffs broadcast so far.
    pub diffs: Arc<AtomicU64>,
}

/// How often an idle flusher looks at the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(200);

impl Flusher {
    pub fn start(hub: Arc<Hub>, batch_ms: u64) -> std::io::Result<Flusher> {
        let stop = Arc::new(AtomicBool::new(false));
        let diffs = Arc::new(AtomicU64::new(0));
        let (stop2, diffs2) = (stop.clone(), diffs.clone());
        let handle = thread::Builder::new()
            .name("ringgate-presence".into())
            .spawn(move || run(&hub, batch_ms, &stop2, &diffs2))?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
            diffs,
        })
    }

    /// Stops the thread (pending diffs are dropped: the workers are gone by then).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(hub: &Hub, batch_ms: u64, stop: &AtomicBool, diffs: &AtomicU64) {
    let mut taken = Vec::new();
    let mut audience = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if !hub.presence.wait_dirty(IDLE_WAIT) {
            continue;
        }
        if batch_ms > 0 {
            thread::sleep(Duration::from_millis(batch_ms));
        }
        hub.presence.take_dirty(&mut taken);
        let cross = hub.bus.as_ref().and_then(|b| b.presence.as_ref());
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for (topic, diff) in taken.drain(..) {
            if cross.is_some() {
                // This node's own changes cross to the other nodes, one delta per flush.
                let entry = |c: &crate::presence::topic::Change| Entry {
                    topic: topic.to_string(),
                    key: c.key.to_string(),
                    phx_ref: c.phx_ref.to_string(),
                    meta: c.meta.to_string(),
                };
                joins.extend(diff.joins.iter().filter(|c| c.local).map(entry));
                leaves.extend(diff.leaves.iter().filter(|c| c.local).map(entry));
            }
            let Ok(json) = RawValue::from_string(diff.to_json()) else {
                tracing::error!(topic = &*topic, "presence diff is not JSON; dropped");
                continue;
            };
            // This node's members only: every node renders the diffs of its own merged view.
            hub.deliver_local(&topic, DIFF_EVENT, Payload::Json(&json), &mut audience);
            diffs.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = cross {
            p.local(std::mem::take(&mut joins), std::mem::take(&mut leaves));
        }
    }
}
