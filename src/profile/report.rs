//! The profile's result: slopes per kind, the table, the JSON document and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write;

use plotters::prelude::*;
use serde::Serialize;

use super::fit::Fit;
use super::readings::Sample;
use super::ProfileArgs;

/// One sampled step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub sample: Sample,
}

impl From<Sample> for Step {
    fn from(sample: Sample) -> Self {
        Self { sample }
    }
}

/// The whole result.
#[derive(Debug, Serialize)]
pub struct Profile {
    pub max_connections: u64,
    pub steps: Vec<Step>,
    /// User space: RSS and private-bytes slopes (bytes per connection).
    pub rss: Fit,
    pub private: Fit,
    /// The gateway's own accounting, total and by kind (bytes per connection).
    pub accounted: Fit,
    pub accounted_by_kind: BTreeMap<String, f64>,
    /// Kernel: global slab slope (both ends of loopback pairs), and per cache.
    pub slab_pair: Fit,
    pub caches_pair: BTreeMap<String, f64>,
    /// The server's share of kernel memory per connection, and how it was obtained.
    pub kernel_bytes_per_conn: f64,
    pub kernel_method: String,
    /// user (RSS slope) + kernel.
    pub total_bytes_per_conn: f64,
}

fn series(steps: &[Step], y: impl Fn(&Sample) -> u64) -> Vec<(f64, f64)> {
    steps
        .iter()
        .map(|s| (s.sample.connections as f64, y(&s.sample) as f64))
        .collect()
}

impl Profile {
    pub fn build(
        args: &ProfileArgs,
        steps: Vec<Step>,
        server_kernel_bytes: Option<u64>,
        fit: fn(&[(f64, f64)]) -> Option<Fit>,
    ) -> Result<Self, String> {
        let need = |f: Option<Fit>, what: &str| {
            f.ok_or_else(|| format!("not enough distinct steps to fit {what}"))
        };
        // The zero step is a baseline for the chart, not a fit point: the first connections also
        // fault in per-worker fixed costs (receive buffers, allocator arenas).
        let ramp = &steps[1.min(steps.len())..];
        let rss = need(fit(&series(ramp, |s| s.rss_bytes)), "RSS")?;
        let private = need(fit(&series(ramp, |s| s.private_bytes)), "private bytes")?;
        let accounted = need(fit(&series(ramp, |s| s.accounted_bytes)), "accounting")?;
        let slab_pair = need(fit(&series(ramp, |s| s.slab_bytes)), "slab")?;
        let kinds: Vec<String> = steps
            .last()
            .map(|s| s.sample.accounted.keys().cloned().collect())
            .unwrap_or_default();
        let accounted_by_kind = kinds
            .into_iter()
            .filter_map(|k| {
                let f = fit(&series(&steps, |s| {
                    s.accounted.get(&k).copied().unwrap_or(0)
                }))?;
                Some((k, f.slope))
            })
            .collect();
        let caches: Vec<String> = steps
            .last()
            .map(|s| s.sample.caches.keys().cloned().collect())
            .unwrap_or_default();
        let caches_pair: BTreeMap<String, f64> = caches
            .into_iter()
            .filter_map(|c| {
                let f = fit(&series(ramp, |s| s.caches.get(&c).copied().unwrap_or(0)))?;
                Some((c, f.slope))
            })
            .collect();
        let top = steps.last().map_or(0, |s| s.sample.connections).max(1);
        let pair_half = caches_pair.values().sum::<f64>() / 2.0;
        let exit_delta = server_kernel_bytes.map(|freed| freed as f64 / top as f64);
        let (kernel_bytes_per_conn, kernel_method) = match exit_delta {
            // Other processes' sockets move the global caches too; an exit-delta far from the
            // pair estimate was disturbed, and the pair estimate is the better figure then.
            Some(d) if d > pair_half / 2.0 && d < pair_half * 2.0 => (
                d,
                format!("exit-delta: connection caches freed when the gateway exited with {top} connections"),
            ),
            Some(d) => (
                pair_half,
                format!("loopback pairs' cache slope, halved (the exit-delta, {d:.0} B, was disturbed by other processes)"),
            ),
            None => (pair_half, "loopback pairs' cache slope, halved (running gateway)".into()),
        };
        Ok(Self {
            max_connections: args.max,
            steps,
            total_bytes_per_conn: rss.slope + kernel_bytes_per_conn,
            rss,
            private,
            accounted,
            accounted_by_kind,
            slab_pair,
            caches_pair,
            kernel_bytes_per_conn,
            kernel_method,
        })
    }
}

/// The human-readable summary.
pub fn table(p: &Profile, memory_gb: &[f64]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nringgate profile: {} idle joined connections (seed scenario)\n",
        p.max_connections
    );
    let _ = writeln!(out, "| per connection | bytes | fit |\n|---|---|---|");
    let _ = writeln!(
        out,
        "| user space (RSS slope) | {:.0} | R² {:.4} |",
        p.rss.slope, p.rss.r2
    );
    let _ = writeln!(
        out,
        "| user space (private bytes slope) | {:.0} | R² {:.4} |",
        p.private.slope, p.private.r2
    );
    let _ = writeln!(
        out,
        "| gateway's own accounting | {:.0} | R² {:.4} |",
        p.accounted.slope, p.accounted.r2
    );
    let _ = writeln!(
        out,
        "| kernel (server side) | {:.0} | {} |",
        p.kernel_bytes_per_conn, p.kernel_method
    );
    let _ = writeln!(out, "| **total** | **{:.0}** | |", p.total_bytes_per_conn);
    let _ = writeln!(out, "\nAccounted user memory by kind (bytes/conn): ");
    for (k, v) in &p.accounted_by_kind {
        let _ = writeln!(out, "  {k:<24} {v:>8.1}");
    }
    let _ = writeln!(
        out,
        "\nKernel caches, bytes per loopback pair (slope of active objects):"
    );
    for (k, v) in &p.caches_pair {
        let _ = writeln!(out, "  {k:<24} {v:>8.1}");
    }
    let _ = writeln!(out, "\n| memory | connections that fit |\n|---|---|");
    for gb in memory_gb {
        let fit = gb * 1e9 / p.total_bytes_per_conn.max(1.0);
        let _ = writeln!(out, "| {gb} GB | {:.0} |", fit);
    }
    out
}

/// Writes profile.json and profile.svg into `--out`.
pub fn write(args: &ProfileArgs, p: &Profile) -> Result<(), String> {
    let json = serde_json::to_string_pretty(p).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("profile.json"), json).map_err(|e| e.to_string())?;
    chart(&args.out.join("profile.svg"), p).map_err(|e| format!("chart: {e}"))
}

fn chart(path: &std::path::Path, p: &Profile) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let points = |f: &dyn Fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        p.steps
            .iter()
            .map(|s| (s.sample.connections as f64, mb(f(&s.sample))))
            .collect()
    };
    let rss = points(&|s| s.rss_bytes);
    let slab = points(&|s| s.slab_bytes);
    let x_max = rss.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = rss.iter().chain(&slab).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ringgate memory vs idle joined connections",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("MiB")
        .draw()?;
    chart
        .draw_series(LineSeries::new(rss.clone(), &BLUE))?
        .label(format!("gateway RSS ({:.0} B/conn)", p.rss.slope))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(slab.clone(), &RED))?
        .label(format!(
            "kernel Slab, both ends ({:.0} B/pair)",
            p.slab_pair.slope
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(
        rss.iter()
            .map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())),
    )?;
    chart.draw_series(
        slab.iter()
            .map(|&(x, y)| Circle::new((x, y), 3, RED.filled())),
    )?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
