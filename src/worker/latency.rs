//! The delivery-latency histogram: how long after its publish a broadcast had been queued to the
//! last of a worker's local members. One observation per broadcast and worker (not per member), in
//! plain per-worker integers: no lock and no shared atomic on the fan-out path. `/metrics` shows
//! each worker's buckets (a `worker` label) when scraped.

use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the buckets, microseconds (Prometheus `le`, cumulative). From 100 µs, below
/// which a loopback fan-out cannot be told apart from the clock read, to 5 s, past which a slow
/// consumer closes long before.
pub const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Counts per bucket (not cumulative; the last is `+Inf`), their count and sum.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Histogram {
    pub buckets: [u64; BOUNDS_US.len() + 1],
    pub count: u64,
    pub sum_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another worker's counts (on scrape).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_not_below_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(10));
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[BOUNDS_US.len()], 1);
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_us, 10_000_201);
        let mut sum = Histogram::default();
        sum.merge(&h);
        sum.merge(&h);
        assert_eq!(sum.count, 6);
        assert_eq!(sum.buckets[0], 2);
    }
}
