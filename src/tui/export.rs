//! Exports of the chart on screen: its series as CSV (`series,x,y`, full resolution, nothing
//! down-sampled) and the chart as a PNG a person can open, written under
//! `<runs-dir>/exports/`. Called by the event loop, never from a view.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::app::{App, View};
use super::state::chart::{compare_series, series_for};
use super::widgets::chart::ema;
use crate::error::{Error, Result};

/// The font of exported images (DejaVu Sans Mono, free licence: assets/fonts/).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

/// One exported series.
pub struct Exported {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The series of the chart the user is looking at: the selected run's (overview, detail) or one
/// per compared run (compare), with smoothing applied as on screen (raw series are included too).
pub fn visible_series(app: &App) -> (String, Vec<Exported>) {
    let c = &app.chart;
    let mut out = Vec::new();
    let title;
    if app.view == View::Compare {
        title = format!("compare-{}", file_word(&c.label()));
        for r in app.compared() {
            if let Some(s) = compare_series(r, c) {
                let points = if s.per_step && c.smoothing && c.weight > 0.0 {
                    ema(&s.points, c.weight)
                } else {
                    s.points
                };
                out.push(Exported { name: r.info.id.to_string(), points });
            }
        }
    } else {
        let Some(r) = app.selected() else { return (String::new(), out) };
        title = format!("{}-{}", file_word(&r.info.id), file_word(&c.label()));
        for s in series_for(r, c) {
            if s.per_step && c.smoothing && c.weight > 0.0 {
                out.push(Exported {
                    name: format!("{} (smoothed {:.1})", s.name, c.weight),
                    points: ema(&s.points, c.weight),
                });
            }
            out.push(Exported { name: s.name.to_string(), points: s.points });
        }
    }
    if let Some((lo, hi)) = c.window {
        for s in &mut out {
            s.points.retain(|p| p.0 >= lo && p.0 <= hi);
        }
    }
    (title, out)
}

/// A name as part of a file name: spaces, slashes and colons (tags, external run ids) as `-`.
fn file_word(s: &str) -> String {
    s.replace([' ', '/', ':', '\\'], "-")
}

fn target(root: &Path, title: &str, ext: &str) -> Result<PathBuf> {
    let dir = root.join("exports");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    // Two exports in the same second get distinct names rather than overwriting each other.
    let mut path = dir.join(format!("{title}-{stamp}.{ext}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{title}-{stamp}-{n}.{ext}"));
        n += 1;
    }
    Ok(path)
}

/// Writes the visible series as CSV and returns the file.
pub fn csv(app: &App, root: &Path) -> Result<PathBuf> {
    let (title, series) = visible_series(app);
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::unsuitable("nothing to export: the chart has no data"));
    }
    let path = target(root, &title, "csv")?;
    let mut w =
        ::csv::Writer::from_path(&path).map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    let write_err = |e: ::csv::Error| Error::internal(format!("{}: {e}", path.display()));
    w.write_record(["series", app.chart.x_axis.label(), &app.chart.label()]).map_err(write_err)?;
    for s in &series {
        for (x, y) in &s.points {
            w.write_record([s.name.as_str(), &x.to_string(), &y.to_string()]).map_err(write_err)?;
        }
    }
    w.flush().map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Renders the visible chart to a PNG and returns the file.
pub fn png(app: &App, root: &Path) -> Result<PathBuf> {
    let (title, series) = visible_series(app);
    let path = target(root, &title, "png")?;
    render_png(&path, &title, app.chart.x_axis.label(), &app.chart.label(), app.chart.log_y, &series)?;
    Ok(path)
}

/// Draws series into a 1200x700 PNG with axes, labels and a legend.
pub fn render_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_y: bool,
    series: &[Exported],
) -> Result<()> {
    static FONT_ONCE: std::sync::Once = std::sync::Once::new();
    FONT_ONCE.call_once(|| {
        // The font is part of the binary; registering it cannot fail unless it is corrupt.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0))
        .collect();
    if pts.is_empty() {
        return Err(Error::unsuitable("nothing to export: the chart has no data"));
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 <= x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 <= y0 {
        y0 -= 1.0;
        y1 += 1.0;
    }
    let plot_err = |e: String| Error::internal(format!("cannot draw {}: {e}", path.display()));
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
        RGBColor(127, 127, 127),
    ];
    let pad = (y1 - y0) * 0.05;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 26)).margin(20).x_label_area_size(50).y_label_area_size(80);
    macro_rules! draw_series {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 16))
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            for (i, s) in series.iter().enumerate() {
                // Width 1: plotters joins thick polylines with mitres, which shoot spikes out
                // of noisy curves whose segments double back.
                let color = palette[i % palette.len()];
                let pts = s.points.iter().copied().filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0));
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(1)))
                    .map_err(|e| plot_err(e.to_string()))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 16))
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
        }};
    }
    if log_y {
        let chart = builder
            .build_cartesian_2d(x0..x1, (y0.max(1e-12)..y1 * 1.1).log_scale())
            .map_err(|e| plot_err(e.to_string()))?;
        draw_series!(chart);
    } else {
        let chart = builder
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| plot_err(e.to_string()))?;
        draw_series!(chart);
    }
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}
