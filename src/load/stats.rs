//! What a run measures: one [`Sample`] per second per source (a worker thread, or a child process),
//! merged into one per second for the whole run, and the totals derived from them.
//!
//! Latencies are HDR histograms (`hdrhistogram`) in microseconds. A sample carries its histograms
//! sparsely, as `(value, count)` pairs of the buckets that were hit, so a quiet second costs a few
//! bytes and merging is exact: re-recording a pair lands in the same bucket.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded, µs: 10 minutes. Longer ones saturate at it (no wait is that long).
pub const MAX_LATENCY_US: u64 = 600_000_000;
/// Histogram precision: 3 significant digits (0.1%), the HdrHistogram default of load tools.
pub const SIGFIG: u8 = 3;

/// A new, empty latency histogram.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG).expect("valid histogram bounds")
}

/// Kinds of errors counted, in report order. Each is a column of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorKind {
    /// `ECONNREFUSED`: nothing listens (or the backlog overflowed).
    ConnectRefused = 0,
    /// No 101 within the connect timeout.
    ConnectTimeout,
    /// Any other connect error (`EADDRNOTAVAIL`: out of source ports, `ENETUNREACH`, ...).
    ConnectError,
    /// Creating, configuring or binding the socket failed (`EMFILE`, `EADDRINUSE`, ...).
    SocketSetup,
    /// The server refused or botched the upgrade (non-101, bad accept key, ...), or closed or
    /// reset the connection before answering it (a handshake timeout, a limit).
    Upgrade,
    /// The server sent a Close frame while the session was still running.
    ClosedByServer,
    /// The TCP connection ended (EOF or reset) after the upgrade, while the session was still
    /// running.
    Disconnected,
    /// An `expect` step saw no matching frame in time.
    ExpectTimeout,
    /// The server broke RFC 6455 (masked frame, bad UTF-8, ...).
    Protocol,
    /// A send failed (`EPIPE`, `ECONNRESET`).
    Send,
    /// A user waited its `rendezvous` timeout for users that never came, and went on alone.
    RendezvousTimeout,
}

/// The first this many [`ErrorKind`]s are failures to connect (before the 101).
pub const CONNECT_ERROR_KINDS: usize = 5;
/// Number of [`ErrorKind`]s.
pub const ERROR_KINDS: usize = 11;
/// Report names of the error kinds, by discriminant.
pub const ERROR_NAMES: [&str; ERROR_KINDS] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "socket_setup",
    "upgrade",
    "closed_by_server",
    "disconnected",
    "expect_timeout",
    "protocol",
    "send",
    "rendezvous_timeout",
];

/// A histogram as sparse `(value_us, count)` pairs.
pub type Sparse = Vec<(u64, u64)>;

/// The hit buckets of `h` (by their highest equivalent value).
pub fn sparse(h: &Histogram<u64>) -> Sparse {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds sparse pairs into `h`.
pub fn add_sparse(h: &mut Histogram<u64>, s: &Sparse) {
    for &(v, n) in s {
        h.saturating_record_n(v, n);
    }
}

/// One second of one source, or of the whole run once merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Second index since the start of the run (the sample covers `[t, t+1)` s).
    pub t: u32,
    /// Open WebSockets at the end of the second (gauge).
    pub users: u64,
    /// Users between arrival and 101 at the end of the second (gauge).
    pub connecting: u64,
    /// Users that arrived (connect started).
    pub arrivals: u64,
    /// Upgrades completed: new WebSocket connections.
    pub connected: u64,
    /// Users whose session ended, whatever the reason.
    pub finished: u64,
    /// Data frames sent / received, and their bytes on the wire.
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Errors by [`ErrorKind`].
    pub errors: [u64; ERROR_KINDS],
    /// Completed transactions by id (index 0 = `connect`), with their latencies.
    pub txn_ok: Vec<u64>,
    pub txn_us: Vec<Sparse>,
    /// Delivery latencies of received frames that carried a send timestamp.
    pub delivery_us: Sparse,
    /// Run time of the first arrival and of the last upgrade in this second, µs (0: none):
    /// the window over which the run's connection rate is measured.
    pub first_arrival_us: u64,
    pub last_connected_us: u64,
    /// Users that reached the scenario's `rendezvous` step, and users whose session ended before
    /// they reached it.
    pub rendezvous: u64,
    pub rendezvous_missed: u64,
    /// Resident memory of the load process(es) at the end of the second (gauge, bytes).
    pub rss_bytes: u64,
    /// CPU time the load process(es) used in this second, ms.
    pub cpu_ms: u64,
}

impl Sample {
    /// An empty sample for second `t` with room for `txns` transactions.
    pub fn new(t: u32, txns: usize) -> Self {
        Self {
            t,
            txn_ok: vec![0; txns],
            txn_us: vec![Vec::new(); txns],
            ..Self::default()
        }
    }

    /// Adds `o` (same second, another source): counters and gauges sum, histograms merge.
    pub fn absorb(&mut self, o: &Sample) {
        self.users += o.users;
        self.connecting += o.connecting;
        self.arrivals += o.arrivals;
        self.connected += o.connected;
        self.finished += o.finished;
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.rendezvous += o.rendezvous;
        self.rendezvous_missed += o.rendezvous_missed;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        if self.txn_ok.len() < o.txn_ok.len() {
            self.txn_ok.resize(o.txn_ok.len(), 0);
            self.txn_us.resize(o.txn_ok.len(), Vec::new());
        }
        for (i, n) in o.txn_ok.iter().enumerate() {
            self.txn_ok[i] += n;
        }
        for (i, s) in o.txn_us.iter().enumerate() {
            merge_sparse(&mut self.txn_us[i], s);
        }
        merge_sparse(&mut self.delivery_us, &o.delivery_us);
        if o.first_arrival_us != 0
            && (self.first_arrival_us == 0 || o.first_arrival_us < self.first_arrival_us)
        {
            self.first_arrival_us = o.first_arrival_us;
        }
        self.last_connected_us = self.last_connected_us.max(o.last_connected_us);
        self.rss_bytes += o.rss_bytes;
        self.cpu_ms += o.cpu_ms;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Merges two sorted sparse lists (both from `iter_recorded`, so sorted by value).
fn merge_sparse(into: &mut Sparse, other: &Sparse) {
    if other.is_empty() {
        return;
    }
    if into.is_empty() {
        into.clone_from(other);
        return;
    }
    let mut out = Vec::with_capacity(into.len() + other.len());
    let (mut i, mut j) = (0, 0);
    while i < into.len() || j < other.len() {
        match (into.get(i), other.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                out.push((a.0, a.1 + b.1));
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                out.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                out.push(*a);
                i += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    *into = out;
}

/// Percentiles of a sparse histogram, µs: `None` when empty.
pub fn percentiles(s: &Sparse, qs: &[f64]) -> Option<Vec<u64>> {
    if s.is_empty() {
        return None;
    }
    let mut h = histogram();
    add_sparse(&mut h, s);
    Some(qs.iter().map(|&q| h.value_at_quantile(q)).collect())
}

/// Collects one sample per second from a fixed set of sources and yields each second once all
/// sources have reported it (or have ended). Sources report their seconds in order.
pub struct Merger {
    txns: usize,
    /// Next second to yield.
    next: u32,
    /// Pending seconds from `next` on, with how many sources reported each.
    pending: std::collections::VecDeque<(Sample, usize)>,
    /// Sources still running.
    live: usize,
    /// Last second each source reported (`None`: nothing yet).
    last: Vec<Option<u32>>,
    /// Each source's gauges in its latest sample, carried into seconds it has not reported
    /// because it already ended (an ended source contributes zero users).
    ended: Vec<bool>,
}

impl Merger {
    pub fn new(sources: usize, txns: usize) -> Self {
        Self {
            txns,
            next: 0,
            pending: Default::default(),
            live: sources,
            last: vec![None; sources],
            ended: vec![false; sources],
        }
    }

    /// Adds source `src`'s sample; returns the seconds that became complete.
    pub fn push(&mut self, src: usize, s: Sample) -> Vec<Sample> {
        if s.t < self.next {
            // A second already yielded (a source that fell behind a whole second): fold it into
            // the next pending one rather than lose its counts.
            let t = self.next;
            let counts_only = Sample {
                t,
                users: 0,
                connecting: 0,
                rss_bytes: 0,
                ..s
            };
            self.slot(t).0.absorb(&counts_only);
            return Vec::new();
        }
        self.last[src] = Some(s.t);
        let t = s.t;
        self.slot(t).0.absorb(&s);
        self.slot(t).1 += 1;
        self.ready()
    }

    /// Source `src` ended; returns the seconds that became complete.
    pub fn end(&mut self, src: usize) -> Vec<Sample> {
        if !self.ended[src] {
            self.ended[src] = true;
            self.live -= 1;
        }
        self.ready()
    }

    /// Everything still pending (at the very end).
    pub fn flush(&mut self) -> Vec<Sample> {
        let out: Vec<Sample> = self.pending.drain(..).map(|(s, _)| s).collect();
        self.next += out.len() as u32;
        out
    }

    fn slot(&mut self, t: u32) -> &mut (Sample, usize) {
        let idx = (t - self.next) as usize;
        while self.pending.len() <= idx {
            let t = self.next + self.pending.len() as u32;
            self.pending.push_back((Sample::new(t, self.txns), 0));
        }
        &mut self.pending[idx]
    }

    fn ready(&mut self) -> Vec<Sample> {
        let mut out = Vec::new();
        while let Some((s, n)) = self.pending.front() {
            // Complete when every live source reported this second; ended sources never will.
            let reporting_live = (0..self.last.len())
                .filter(|&i| !self.ended[i] && self.last[i].is_some_and(|l| l >= s.t))
                .count();
            let live_needed = self.live;
            if reporting_live < live_needed || (*n == 0 && live_needed > 0) {
                break;
            }
            let (s, _) = self.pending.pop_front().expect("front exists");
            self.next = s.t + 1;
            out.push(s);
            if self.live == 0 && self.pending.is_empty() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u32, users: u64, lat: &[u64]) -> Sample {
        let mut h = histogram();
        for &v in lat {
            h.record(v).unwrap();
        }
        Sample {
            users,
            sent: 1,
            delivery_us: sparse(&h),
            ..Sample::new(t, 1)
        }
    }

    #[test]
    fn merging_sparse_histograms_is_exact() {
        let mut a = s(0, 1, &[100, 200, 200, 5000]);
        a.absorb(&s(0, 2, &[200, 300]));
        assert_eq!(a.users, 3);
        assert_eq!(a.delivery_us, vec![(100, 1), (200, 3), (300, 1), (5003, 1)]);
        let p = percentiles(&a.delivery_us, &[0.5, 1.0]).unwrap();
        assert_eq!(p, vec![200, 5003]);
    }

    #[test]
    fn merger_waits_for_every_source() {
        let mut m = Merger::new(2, 1);
        assert!(m.push(0, s(0, 1, &[])).is_empty());
        assert!(m.push(0, s(1, 1, &[])).is_empty());
        let out = m.push(1, s(0, 5, &[]));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].t, out[0].users, out[0].sent), (0, 6, 2));
        // Source 1 ends without reporting second 1: second 1 completes with source 0 alone.
        let out = m.end(1);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].t, out[0].users), (1, 1));
        assert!(m.end(0).is_empty());
        assert!(m.flush().is_empty());
    }

    #[test]
    fn a_late_second_is_folded_forward() {
        let mut m = Merger::new(1, 1);
        assert_eq!(m.push(0, s(0, 1, &[])).len(), 1);
        assert!(m.push(0, s(0, 1, &[])).is_empty());
        let out = m.push(0, s(1, 1, &[]));
        assert_eq!(out[0].sent, 2);
    }
}
