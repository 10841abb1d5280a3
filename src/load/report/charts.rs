//! The report's charts, drawn with `plotters` into SVG strings that the page embeds inline.

use plotters::prelude::*;

use crate::load::stats::{Sparse, MAX_LATENCY_US};

/// Chart size in px: wide enough for an hour of 1 s samples to stay readable.
const SIZE: (u32, u32) = (960, 360);
/// Bars of a latency histogram.
const HISTOGRAM_BINS: usize = 40;

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// A line per `(name, points)` over time (x in seconds).
pub fn lines(
    x_min_span: f64,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(x_min_span, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Log-spaced bins between the smallest and largest recorded latency: `(lo_us, hi_us, count)`.
pub fn bins(h: &Sparse) -> Vec<(f64, f64, u64)> {
    let (Some(first), Some(last)) = (h.first(), h.last()) else {
        return Vec::new();
    };
    let lo = (first.0.max(1) as f64).log10();
    let hi = ((last.0.min(MAX_LATENCY_US) + 1) as f64)
        .log10()
        .max(lo + 0.01);
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let mut out: Vec<(f64, f64, u64)> = (0..HISTOGRAM_BINS)
        .map(|i| (lo + width * i as f64, lo + width * (i + 1) as f64, 0))
        .collect();
    for &(v, n) in h {
        let x = (v.max(1) as f64).log10();
        let i = (((x - lo) / width) as usize).min(HISTOGRAM_BINS - 1);
        out[i].2 += n;
    }
    out.into_iter()
        .map(|(a, b, n)| (10f64.powf(a), 10f64.powf(b), n))
        .collect()
}

/// A latency histogram: bars over log-spaced latency bins, x labelled in ms.
pub fn histogram(title: &str, h: &Sparse) -> Result<String, String> {
    let bins = bins(h);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (x_lo, x_hi) = match (bins.first(), bins.last()) {
            (Some(a), Some(b)) => (a.0.log10(), b.1.log10()),
            _ => (0.0, 1.0),
        };
        let y_max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo..x_hi, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("count")
            .x_label_formatter(&|x| {
                let ms = 10f64.powf(*x) / 1000.0;
                if ms < 1.0 {
                    format!("{ms:.3}")
                } else {
                    format!("{ms:.1}")
                }
            })
            .draw()
            .map_err(err)?;
        let color = Palette99::pick(0).to_rgba();
        chart
            .draw_series(bins.iter().filter(|b| b.2 > 0).map(|&(a, b, n)| {
                Rectangle::new([(a.log10(), 0.0), (b.log10(), n as f64)], color.filled())
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_every_count() {
        let h = vec![(100, 5), (1000, 3), (100_000, 2)];
        let b = bins(&h);
        assert_eq!(b.len(), HISTOGRAM_BINS);
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 10);
        assert_eq!(b[0].2, 5);
        assert_eq!(b[HISTOGRAM_BINS - 1].2, 2);
        assert!(bins(&Vec::new()).is_empty());
    }

    #[test]
    fn charts_are_svg_with_drawn_data() {
        let svg = lines(
            1.0,
            "users",
            "users",
            &[("users".into(), vec![(0.0, 1.0), (1.0, 5.0), (2.0, 3.0)])],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<polyline"), "no line drawn");
        let svg = histogram("latency", &vec![(100, 5), (2000, 1)]).unwrap();
        assert!(svg.matches("<rect").count() >= 3, "background + 2 bars");
    }
}
