//! Exports of the chart on screen, whichever view it is in (a run's curves, Compare, the System
//! history, the Security view's robustness curves): its series as CSV (`series,x,y`, full
//! resolution, nothing down-sampled) and the chart as a PNG a person can open, in the
//! console's colours with the raw curves faint behind the smoothed ones, written under
//! `<runs-dir>/exports/`. Called by the event loop, never from a view.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::app::{App, Metric, View};
use super::state::chart::{compare_series, robustness_series, series_for, system_series};
use super::theme::RgbColors;
use super::widgets::chart::{YUnit, ema, fmt_num};
use crate::error::{Error, Result};

/// The font of exported images (DejaVu Sans Mono, free licence: assets/fonts/).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

/// One exported series, in the console's colours.
pub struct Exported {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Its colour on screen, as RGB.
    pub color: (u8, u8, u8),
    /// A raw curve behind its smoothed one: drawn first, thin and faded.
    pub faint: bool,
}

/// What is exported: a file name stem, the axes' names and units, and the series.
pub struct ExportedChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_unit: YUnit,
    pub log_y: bool,
    pub series: Vec<Exported>,
}

/// The chart the user is looking at: the run the Overview shows or the selected run's
/// (Detail), one per compared run (Compare), the history (System) or the robustness curves
/// (Security); smoothed as on screen, with the raw series too.
pub fn visible_chart(app: &App) -> ExportedChart {
    let c = &app.chart;
    let rgb = &app.theme.rgb;
    let color = |i: usize| rgb.series[i % rgb.series.len()];
    let faint = |i: usize| rgb.faint[i % rgb.faint.len()];
    let mut out = Vec::new();
    let smoothing = c.smoothing && c.weight > 0.0;
    let metric_unit = if c.metric == Metric::Accuracy { YUnit::Fraction } else { YUnit::Plain };
    let mut chart = ExportedChart {
        title: String::new(),
        x_label: format!("{} ({})", c.x_axis.label(), c.x_axis.unit()),
        y_label: c.label(),
        y_unit: metric_unit,
        log_y: c.log_y,
        series: Vec::new(),
    };
    match app.view {
        View::Compare => {
            chart.title = format!("compare-{}", file_word(&c.label()));
            for r in app.compared() {
                let slot = app.color_slot(&r.info.id);
                if let Some(s) = compare_series(r, c) {
                    if s.per_step && smoothing {
                        let smooth = ema(&s.points, c.weight);
                        let name = format!("{} (raw)", r.info.id);
                        out.push(Exported { name, points: s.points, color: faint(slot), faint: true });
                        out.push(Exported {
                            name: r.info.id.to_string(),
                            points: smooth,
                            color: color(slot),
                            faint: false,
                        });
                    } else {
                        out.push(Exported {
                            name: r.info.id.to_string(),
                            points: s.points,
                            color: color(slot),
                            faint: false,
                        });
                    }
                }
            }
        }
        View::System => {
            chart.title = "system-history".into();
            chart.x_label = format!("time before now ({})", app.system_points.unit().0);
            chart.y_label = "percent".into();
            chart.y_unit = YUnit::Percent;
            chart.log_y = false;
            if let Some(now) = &app.system {
                let (host, gpu) = system_series(app, now);
                // Each panel numbers its colours from the first, as on screen.
                for (i, (name, points)) in host.into_iter().enumerate().chain(gpu.into_iter().enumerate()) {
                    out.push(Exported { name, points, color: color(i), faint: false });
                }
            }
        }
        View::Security => {
            chart.title = "robustness".into();
            chart.x_label = "ε".into();
            chart.y_label = "test accuracy under attack".into();
            chart.y_unit = YUnit::Fraction;
            chart.log_y = false;
            for (i, (name, points)) in robustness_series(app).into_iter().enumerate() {
                out.push(Exported { name, points, color: color(i), faint: false });
            }
        }
        _ => {
            let shown = if app.view == View::Overview {
                app.overview.shown(app).map(|(r, _)| r)
            } else {
                app.selected()
            };
            let Some(r) = shown else { return chart };
            chart.title = format!("{}-{}", file_word(&r.info.id), file_word(&c.label()));
            for (i, s) in series_for(r, c).into_iter().enumerate() {
                if s.per_step && smoothing {
                    out.push(Exported {
                        name: format!("{} (smoothed {:.1})", s.name, c.weight),
                        points: ema(&s.points, c.weight),
                        color: color(i),
                        faint: false,
                    });
                    out.push(Exported {
                        name: s.name.to_string(),
                        points: s.points,
                        color: faint(i),
                        faint: true,
                    });
                } else {
                    out.push(Exported {
                        name: s.name.to_string(),
                        points: s.points,
                        color: color(i),
                        faint: false,
                    });
                }
            }
            if let Some((lo, hi)) = c.window {
                for s in &mut out {
                    s.points.retain(|p| p.0 >= lo && p.0 <= hi);
                }
            }
        }
    }
    if app.view == View::Compare
        && let Some((lo, hi)) = c.window
    {
        for s in &mut out {
            s.points.retain(|p| p.0 >= lo && p.0 <= hi);
        }
    }
    chart.series = out;
    chart
}

/// The visible chart's title and series (see [`visible_chart`]).
pub fn visible_series(app: &App) -> (String, Vec<Exported>) {
    let c = visible_chart(app);
    (c.title, c.series)
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
    let chart = visible_chart(app);
    let series = &chart.series;
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::unsuitable("nothing to export: the chart has no data"));
    }
    let path = target(root, &chart.title, "csv")?;
    let mut w =
        ::csv::Writer::from_path(&path).map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    let write_err = |e: ::csv::Error| Error::internal(format!("{}: {e}", path.display()));
    let x_head = if matches!(app.view, View::System | View::Security) {
        chart.x_label.as_str()
    } else {
        app.chart.x_axis.label()
    };
    // The metric's (or external tag's) name, or the System/Security chart's own axis name.
    let y_head = chart.y_label.as_str();
    w.write_record(["series", x_head, y_head]).map_err(write_err)?;
    for s in series {
        for (x, y) in &s.points {
            w.write_record([s.name.as_str(), &x.to_string(), &y.to_string()]).map_err(write_err)?;
        }
    }
    w.flush().map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Renders the visible chart to a PNG and returns the file.
pub fn png(app: &App, root: &Path) -> Result<PathBuf> {
    let chart = visible_chart(app);
    let path = target(root, &chart.title, "png")?;
    render_png(&path, &chart, &app.theme.rgb)?;
    Ok(path)
}

/// Draws a chart into a 1200x700 PNG with axes, labels and a legend, on the theme's canvas in
/// its colours: faint (raw) series first and thin, the others on top of them, thicker.
pub fn render_png(path: &Path, chart: &ExportedChart, colors: &RgbColors) -> Result<()> {
    static FONT_ONCE: std::sync::Once = std::sync::Once::new();
    FONT_ONCE.call_once(|| {
        // The font is part of the binary; registering it cannot fail unless it is corrupt.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let (title, log_y, series) = (chart.title.as_str(), chart.log_y, &chart.series);
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
    let rgb = |c: (u8, u8, u8)| RGBColor(c.0, c.1, c.2);
    let (bg, fg, muted) = (rgb(colors.background), rgb(colors.foreground), rgb(colors.muted));
    let plot_err = |e: String| Error::internal(format!("cannot draw {}: {e}", path.display()));
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&bg).map_err(|e| plot_err(e.to_string()))?;
    let pad = (y1 - y0) * 0.05;
    // As on screen: never below zero for values that cannot be, never above 100% for fractions.
    let floor = if y0 >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    let ceil = if chart.y_unit == YUnit::Fraction && y1 <= 1.0 { 1.0 } else { f64::INFINITY };
    let (ylo, yhi) = ((y0 - pad).max(floor), (y1 + pad).min(ceil));
    let y_unit = chart.y_unit;
    let y_fmt = move |v: &f64| match y_unit {
        YUnit::Plain => fmt_num(*v),
        YUnit::Fraction => format!("{}%", fmt_num(100.0 * v)),
        YUnit::Percent => format!("{}%", fmt_num(*v)),
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 26).into_font().color(&fg))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80);
    let mut order: Vec<&Exported> = series.iter().collect();
    order.sort_by_key(|s| !s.faint);
    macro_rules! draw_series {
        ($chart:expr) => {{
            let mut chart2 = $chart;
            chart2
                .configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .y_label_formatter(&y_fmt)
                .label_style(("sans-serif", 16).into_font().color(&fg))
                .axis_style(muted)
                .bold_line_style(muted.mix(0.3))
                .light_line_style(muted.mix(0.1))
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            for s in &order {
                // Thin lines: plotters joins thick polylines with mitres, which shoot spikes
                // out of noisy curves whose segments double back; the smoothed curves are
                // smooth, so they can be drawn at 2.
                let color = rgb(s.color);
                let width = if s.faint { 1 } else { 2 };
                let pts = s.points.iter().copied().filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0));
                chart2
                    .draw_series(LineSeries::new(pts, color.stroke_width(width)))
                    .map_err(|e| plot_err(e.to_string()))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
            }
            chart2
                .configure_series_labels()
                .background_style(bg.mix(0.85))
                .border_style(muted)
                .label_font(("sans-serif", 16).into_font().color(&fg))
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
        }};
    }
    if log_y {
        let c = builder
            .build_cartesian_2d(x0..x1, (y0.max(1e-12)..y1 * 1.1).log_scale())
            .map_err(|e| plot_err(e.to_string()))?;
        draw_series!(c);
    } else {
        let c = builder.build_cartesian_2d(x0..x1, ylo..yhi).map_err(|e| plot_err(e.to_string()))?;
        draw_series!(c);
    }
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}
