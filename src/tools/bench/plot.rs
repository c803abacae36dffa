//! The cost curve as an SVG: ns/row (whole run, and its read phase alone),
//! run/floor and peak RSS against rows
//! (log scale), one line per catalogue size, with the targets drawn
//! as dashed lines so a point over its target stands out.

use std::path::Path;

use plotters::prelude::*;

use super::scale::{ScalePoint, ScaleRecord};
use crate::error::{Error, Result};

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// One panel: its title, the y axis, the value of a point, and a target.
struct Panel {
    title: &'static str,
    y: &'static str,
    value: fn(&ScalePoint) -> f64,
    target: Option<f64>,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "engine ns per row (settle run --all)",
        y: "ns/row",
        value: |p| p.ns_per_row,
        target: None,
    },
    Panel {
        title: "read+aggregate ns per row (no publish)",
        y: "ns/row",
        value: |p| p.read_ns_per_row,
        target: None,
    },
    Panel {
        title: "run / floor (target 1.6)",
        y: "run/floor",
        value: |p| p.run_over_floor,
        target: Some(1.6),
    },
    Panel {
        title: "peak RSS, MiB (target 512)",
        y: "MiB",
        value: |p| p.peak_rss_bytes as f64 / (1u64 << 20) as f64,
        target: Some(512.0),
    },
];

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Tool(format!("drawing the cost curve: {e}"))
}

/// Draws `rec` into `path`.
pub fn draw(rec: &ScaleRecord, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (2000, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (head, body) = root.split_vertically(40);
    head.draw_text(
        &format!(
            "settle bench --scale — {} — {}",
            rec.machine, rec.recorded_at
        ),
        &("sans-serif", 18).into_font().color(&BLACK),
        (10, 12),
    )
    .map_err(plot_err)?;
    let mut catalogues: Vec<u64> = rec.points.iter().map(|p| p.videos).collect();
    catalogues.dedup();
    catalogues.sort_unstable();
    catalogues.dedup();
    let (lo, hi) = rec.points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(p.rows as f64), b.max(p.rows as f64))
    });
    let (lo, hi) = if rec.points.is_empty() {
        (1e6, 1e8)
    } else {
        (lo / 1.5, hi * 1.5)
    };
    for (area, panel) in body
        .split_evenly((1, PANELS.len()))
        .iter()
        .zip(PANELS.iter())
    {
        panel_chart(area, panel, rec, &catalogues, (lo, hi))?;
    }
    root.present().map_err(plot_err)
}

fn panel_chart(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    rec: &ScaleRecord,
    catalogues: &[u64],
    (lo, hi): (f64, f64),
) -> Result<()> {
    let top = rec
        .points
        .iter()
        .map(panel.value)
        .chain(panel.target)
        .fold(0.0_f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..top.max(1.0))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("viewing_log rows (log scale)")
        .y_desc(panel.y)
        .x_label_formatter(&|x| format!("{:.0}M", x / 1e6))
        .draw()
        .map_err(plot_err)?;
    if let Some(t) = panel.target {
        chart
            .draw_series(DashedLineSeries::new(
                [(lo, t), (hi, t)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?;
    }
    for (i, &videos) in catalogues.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut pts: Vec<(f64, f64)> = rec
            .points
            .iter()
            .filter(|p| p.videos == videos)
            .map(|p| (p.rows as f64, (panel.value)(p)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("{} videos", crate::report::human_count(videos)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SVG holds a line and a point per size, and the targets.
    #[test]
    fn draws_every_point() {
        let p = |rows: u64, videos: u64| ScalePoint {
            rows,
            videos,
            ns_per_row: 300.0,
            run_over_floor: 1.9,
            peak_rss_bytes: 400 << 20,
            ..Default::default()
        };
        let rec = ScaleRecord {
            machine: "test".into(),
            points: vec![
                p(10_000_000, 100_000),
                p(30_000_000, 100_000),
                p(100_000_000, 1_000_000),
            ],
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("settle-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curve.svg");
        draw(&rec, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert_eq!(
            svg.matches("<circle").count(),
            3 * PANELS.len(),
            "3 points in every panel"
        );
        assert!(svg.contains("read+aggregate ns per row"));
        assert!(svg.contains("1,000,000 videos") && svg.contains("100,000 videos"));
        assert!(svg.contains("target 1.6"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
