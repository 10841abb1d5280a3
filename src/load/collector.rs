//! The run's samples as they complete: the live progress line (stderr, once a second) and the
//! series the report is made from.

use crate::load::stats::{percentiles, Sample, ERROR_NAMES};

/// Collects the merged per-second samples of a run.
pub struct Collector {
    pub txn_names: Vec<String>,
    pub series: Vec<Sample>,
    quiet: bool,
    errors: Vec<u64>,
    /// Deliveries (messages carrying the timestamp field) so far: a script can wait on it.
    delivered: u64,
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl Collector {
    pub fn new(txn_names: Vec<String>, quiet: bool) -> Self {
        Self {
            txn_names,
            series: Vec::new(),
            quiet,
            errors: vec![0; ERROR_NAMES.len()],
            delivered: 0,
        }
    }

    pub fn add(&mut self, s: Sample) {
        for (a, b) in self.errors.iter_mut().zip(s.errors) {
            *a += b;
        }
        self.delivered += s.delivery_us.iter().map(|p| p.1).sum::<u64>();
        if !self.quiet {
            say!("{}", self.progress_line(&s));
        }
        self.series.push(s);
    }

    /// One line: users, rates, cumulative errors by kind, deliveries so far (once there are
    /// any), this second's p99s.
    pub fn progress_line(&self, s: &Sample) -> String {
        let total: u64 = self.errors.iter().sum();
        let mut line = format!(
            "[{:>4}s] users {} connecting {} | +{}/s arrived {}/s connected | msgs out {}/s in {}/s | errors {total}",
            s.t + 1,
            s.users,
            s.connecting,
            s.arrivals,
            s.connected,
            s.sent,
            s.received,
        );
        if total > 0 {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .zip(ERROR_NAMES)
                .filter(|(n, _)| **n > 0)
                .map(|(n, k)| format!("{k} {n}"))
                .collect();
            line.push_str(&format!(" ({})", kinds.join(", ")));
        }
        if self.delivered > 0 {
            line.push_str(&format!(" | delivered {}", self.delivered));
        }
        let mut p99s = Vec::new();
        if let Some(p) = percentiles(&s.delivery_us, &[0.99]) {
            p99s.push(format!("delivery {}", ms(p[0])));
        }
        for (name, h) in self.txn_names.iter().zip(&s.txn_us) {
            if let Some(p) = percentiles(h, &[0.99]) {
                p99s.push(format!("{name} {}", ms(p[0])));
            }
        }
        if !p99s.is_empty() {
            p99s.truncate(4);
            line.push_str(&format!(" | p99 {}", p99s.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{histogram, sparse};

    #[test]
    fn progress_line_shows_rates_errors_and_p99() {
        let mut c = Collector::new(vec!["connect".into(), "join".into()], true);
        let mut h = histogram();
        for v in 1..=100 {
            h.record(v * 100).unwrap();
        }
        let mut s = Sample::new(4, 2);
        s.users = 90;
        s.connecting = 10;
        s.arrivals = 20;
        s.connected = 19;
        s.errors[5] = 2;
        s.txn_us[1] = sparse(&h);
        c.add(s.clone());
        assert_eq!(
            c.progress_line(&s),
            "[   5s] users 90 connecting 10 | +20/s arrived 19/s connected | msgs out 0/s in 0/s \
             | errors 2 (closed_by_server 2) | p99 join 9.90 ms"
        );
        // Deliveries add up over the seconds.
        s.delivery_us = vec![(1000, 3), (2000, 1)];
        c.add(s.clone());
        c.add(s.clone());
        assert!(
            c.progress_line(&s)
                .contains("| errors 6 (closed_by_server 6) | delivered 8 | p99 delivery 2.00 ms"),
            "{}",
            c.progress_line(&s)
        );
    }
}
