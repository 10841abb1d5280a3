//! Small statistics: a least-squares line with R² (bytes per connection is the slope of memory against
//! the connection count, never memory / count; shared with `ringgate profile`), median with min and
//! max, and nearest-rank percentiles.

/// The least-squares line with R² is the library's (`ringgate profile` fits the same way).
// Not every bench that includes `common` fits lines.
#[allow(unused_imports)]
pub use ringgate::profile::fit::{fit as least_squares, Fit};

/// Median with the range it came from.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// `None` for no values; NaNs are dropped.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[v.len() - 1],
    })
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; 0 for an empty one.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
