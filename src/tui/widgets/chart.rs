//! A line chart for training curves. It down-samples each series to the chart's resolution
//! (per pixel column it keeps the minimum and the maximum, so spikes survive), draws in braille
//! dots (2x4 per cell) when colour is available, and in one distinct glyph per series at cell
//! resolution under `NO_COLOR`, so overlaid curves stay apart without colour. It also draws a
//! cursor line, axis ticks on round numbers (1, 2, 5 x 10^n; decades on a log axis) with their
//! units, and supports a logarithmic y axis and an x window (zoom and pan). Faint series (raw
//! curves) are a layer behind the others, so a smoothed curve is never buried in its raw one.

use std::borrow::Cow;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

/// One curve.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub name: String,
    /// Points sorted by x.
    pub points: Cow<'a, [(f64, f64)]>,
    pub color: Color,
    /// The glyph used without colour.
    pub glyph: char,
    /// Drawn underneath (the raw line behind a smoothed one): a cell that a series not faint
    /// passes through shows only that series. Give it a faded colour (`Theme::faint`).
    pub faint: bool,
}

/// Glyphs for series without colour, chosen to be distinguishable in any font (as many as the
/// themes have series colours, so compared runs differ in both).
pub const GLYPHS: [char; 12] = ['*', '+', 'o', 'x', '#', '@', '%', '&', '$', '=', '~', '^'];

/// A chart of several series.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    pub series: Vec<Series<'a>>,
    /// The x window to show; the data's whole range when `None`.
    pub x_window: Option<(f64, f64)>,
    pub log_y: bool,
    /// A fixed y range (percentages); from the data when `None`.
    pub y_range: Option<(f64, f64)>,
    pub cursor: Option<f64>,
    pub colored: bool,
    pub axis_style: Style,
    pub cursor_style: Style,
    /// How the y values read (percentages get `%` and never pass 100%).
    pub y_unit: YUnit,
    /// The x axis' unit, written at its right end (`steps`, `epochs`, `s`).
    pub x_unit: String,
}

impl<'a> Series<'a> {
    /// A series drawn in `color` (or `glyph` without colour), not faint.
    pub fn new(
        name: impl Into<String>,
        points: impl Into<Cow<'a, [(f64, f64)]>>,
        color: Color,
        glyph: char,
    ) -> Self {
        Series { name: name.into(), points: points.into(), color, glyph, faint: false }
    }

    /// Drawn dim and underneath (the raw line behind a smoothed one).
    pub fn faint(self) -> Self {
        Series { faint: true, ..self }
    }
}

impl<'a> LineChart<'a> {
    /// A chart of `series` over the data's whole range, linear, without a cursor, without colour
    /// and with plain styles until [`LineChart::styled`] says otherwise.
    pub fn new(series: Vec<Series<'a>>) -> Self {
        LineChart {
            series,
            x_window: None,
            log_y: false,
            y_range: None,
            cursor: None,
            colored: false,
            axis_style: Style::default(),
            cursor_style: Style::default(),
            y_unit: YUnit::Plain,
            x_unit: String::new(),
        }
    }

    /// How the y values read.
    pub fn y_unit(self, y_unit: YUnit) -> Self {
        LineChart { y_unit, ..self }
    }

    /// The x axis' unit.
    pub fn x_unit(self, unit: impl Into<String>) -> Self {
        LineChart { x_unit: unit.into(), ..self }
    }

    /// Colour on or off, and the styles of the axes and the cursor.
    pub fn styled(self, colored: bool, axis_style: Style, cursor_style: Style) -> Self {
        LineChart { colored, axis_style, cursor_style, ..self }
    }

    /// The x window to show (`None`: the data's whole range).
    pub fn x_window(self, x_window: Option<(f64, f64)>) -> Self {
        LineChart { x_window, ..self }
    }

    /// A fixed y range (percentages).
    pub fn y_range(self, lo: f64, hi: f64) -> Self {
        LineChart { y_range: Some((lo, hi)), ..self }
    }

    pub fn log_y(self, log_y: bool) -> Self {
        LineChart { log_y, ..self }
    }

    /// The readout cursor's x.
    pub fn cursor(self, cursor: Option<f64>) -> Self {
        LineChart { cursor, ..self }
    }
}

/// Where a chart's data lies, for zoom and the cursor readout.
pub fn x_extent(series: &[Series]) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        if let (Some(a), Some(b)) = (s.points.first(), s.points.last()) {
            lo = lo.min(a.0);
            hi = hi.max(b.0);
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// Exponential moving average with TensorBoard's debiasing: early points are not dragged
/// towards zero. `weight` in [0, 1): 0 is no smoothing.
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut last = 0.0;
    let mut debias = 1.0;
    for &(x, y) in points {
        if !y.is_finite() {
            continue;
        }
        last = last * weight + (1.0 - weight) * y;
        // Once weight^t is negligible the correction is 1: skip the division (a hot loop when
        // five curves of 10,000 points are redrawn).
        let v = if debias > 1e-12 {
            debias *= weight;
            if debias < 1.0 { last / (1.0 - debias) } else { y }
        } else {
            last
        };
        out.push((x, v));
    }
    out
}

/// The series' value at `x` (the last point at or before it).
pub fn value_at(points: &[(f64, f64)], x: f64) -> Option<(f64, f64)> {
    let i = points.partition_point(|p| p.0 <= x);
    (i > 0).then(|| points[i - 1])
}

/// A short, readable number for axis labels.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl LineChart<'_> {
    fn ty(&self, y: f64) -> Option<f64> {
        if self.log_y { (y > 0.0).then(|| y.log10()) } else { y.is_finite().then_some(y) }
    }
}

/// Bresenham between two dot positions.
fn line(mut x0: i64, mut y0: i64, x1: i64, y1: i64, mut plot: impl FnMut(i64, i64)) {
    let dx = (x1 - x0).abs();
    let dy = -(y1 - y0).abs();
    let sx = if x0 < x1 { 1 } else { -1 };
    let sy = if y0 < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    loop {
        plot(x0, y0);
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

impl Widget for LineChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < 12 || area.height < 4 {
            return;
        }
        let Some((mut x0, mut x1)) = self.x_window.or_else(|| x_extent(&self.series)) else {
            buf.set_string(area.x, area.y, "no data yet", self.axis_style);
            return;
        };
        if x1 <= x0 {
            x1 = x0 + 1.0;
            x0 -= 1.0;
        }
        // The y range of what is inside the x window.
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in &self.series {
            let start = s.points.partition_point(|p| p.0 < x0).saturating_sub(1);
            for &(x, y) in &s.points[start..] {
                if x > x1 {
                    break;
                }
                if let Some(t) = self.ty(y) {
                    y0 = y0.min(t);
                    y1 = y1.max(t);
                }
            }
        }
        if !y0.is_finite() {
            buf.set_string(area.x, area.y, "no data in view", self.axis_style);
            return;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        // Losses and accuracies are never negative: do not pad below zero; a fraction shown as
        // a percentage is never padded above 100%.
        let floor = if !self.log_y && y0 >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
        let ceil =
            if !self.log_y && self.y_unit == YUnit::Fraction && y1 <= 1.0 { 1.0 } else { f64::INFINITY };
        let (y0, y1) = match self.y_range {
            Some(r) => r,
            None if y1 - y0 < 1e-12 => ((y0 - pad).max(floor), (y1 + pad).min(ceil)),
            None => ((y0 - pad).max(floor), (y1 + pad).min(ceil)),
        };
        let (y0, y1) = if y1 > y0 { (y0, y1) } else { (y0 - 0.5, y0 + 0.5) };
        let plot_h = area.height - 1;
        // Ticks on round numbers, about one every two rows at most.
        let y_ticks = if self.log_y {
            log_ticks(y0, y1, (plot_h as usize / 2).max(2))
        } else {
            nice_ticks(y0, y1, (plot_h as usize / 2).clamp(2, 6))
        };
        let y_step = tick_step(&y_ticks);
        let y_labels: Vec<(f64, String)> = y_ticks
            .iter()
            .map(|&t| (t, self.y_unit.label(if self.log_y { 10f64.powf(t) } else { t }, y_step, self.log_y)))
            .collect();
        let lw = y_labels.iter().map(|(_, l)| l.chars().count()).max().unwrap_or(1).max(1) as u16 + 1;
        let plot = Rect { x: area.x + lw, y: area.y, width: area.width.saturating_sub(lw), height: plot_h };
        if plot.width < 4 {
            return;
        }
        // Dots: 2 per cell across and 4 down with colour; 1x1 with glyphs.
        let (sx, sy) = if self.colored { (2i64, 4i64) } else { (1, 1) };
        let w = plot.width as i64 * sx;
        let h = plot.height as i64 * sy;
        // Rounding by adding a half and truncating: f64::round is a library call in this
        // loop's hottest line. Values left of the window become -1 (skipped), never 0.
        let to_px = |x: f64| {
            let v = (x - x0) / (x1 - x0) * (w - 1) as f64 + 0.5;
            if v < 0.0 { -1 } else { v as i64 }
        };
        let to_py = |t: f64| {
            let v = (y1 - t) / (y1 - y0) * (h - 1) as f64 + 0.5;
            if v < 0.0 { -1 } else { v as i64 }
        };
        // The y axis with its ticks and labels, each at the row its value is drawn on.
        for row in 0..plot.height {
            buf[(plot.x - 1, plot.y + row)].set_char('│').set_style(self.axis_style);
        }
        let mut last_row: Option<i64> = None;
        for (t, label) in &y_labels {
            let row = to_py(*t) / sy;
            if row < 0 || row >= plot.height as i64 || last_row == Some(row) {
                continue;
            }
            last_row = Some(row);
            let y = plot.y + row as u16;
            buf.set_string(area.x + lw - 1 - label.chars().count() as u16, y, label, self.axis_style);
            buf[(plot.x - 1, y)].set_char('┤').set_style(self.axis_style);
        }
        // The x axis: round ticks, and the unit at the right end.
        let by = area.y + area.height - 1;
        let unit = self.x_unit.as_str();
        let unit_w = if unit.is_empty() { 0 } else { unit.chars().count() as u16 + 1 };
        let x_room = plot.width.saturating_sub(unit_w);
        let x_ticks = nice_ticks(x0, x1, (x_room as usize / 9).clamp(2, 10));
        let x_step = tick_step(&x_ticks);
        let mut free_from = plot.x;
        for &t in &x_ticks {
            let label = YUnit::Plain.label(t, x_step, false);
            let n = label.chars().count() as u16;
            let col = plot.x as i64 + to_px(t) / sx;
            let start = (col - n as i64 / 2).max(plot.x as i64) as u16;
            if start < free_from || start + n > plot.x + x_room {
                continue;
            }
            buf.set_string(start, by, &label, self.axis_style);
            free_from = start + n + 2;
        }
        if unit_w > 0 {
            buf.set_string(plot.x + plot.width - unit_w + 1, by, unit, self.axis_style);
        }

        // Per cell, two layers: braille bits and the style of the series drawn last there, for
        // the faint (raw) series behind and the others in front. A cell a front series passes
        // through shows only the front's dots, so a smoothed curve is never buried in its raw
        // one (TensorBoard draws the raw curve pale behind the smoothed one the same way).
        let cells = (plot.width as usize) * (plot.height as usize);
        let mut bits = [vec![0u8; cells], vec![0u8; cells]];
        let mut owner: [Vec<Option<(Style, char)>>; 2] = [vec![None; cells], vec![None; cells]];
        for s in &self.series {
            let layer = usize::from(!s.faint);
            let style = if !self.colored {
                if s.faint { Style::default().add_modifier(Modifier::DIM) } else { Style::default() }
            } else {
                Style::default().fg(s.color)
            };
            let glyph = if s.faint { '.' } else { s.glyph };
            // Column buckets: (min, max, first, last) pixel rows.
            let mut cols: Vec<Option<(i64, i64, i64, i64)>> = vec![None; w as usize];
            let start = s.points.partition_point(|p| p.0 < x0).saturating_sub(1);
            for &(x, y) in &s.points[start..] {
                let Some(t) = self.ty(y) else { continue };
                let px = to_px(x);
                if px < 0 || px >= w {
                    if px >= w {
                        break;
                    }
                    continue;
                }
                let py = to_py(t).clamp(0, h - 1);
                let c = &mut cols[px as usize];
                *c = Some(match *c {
                    None => (py, py, py, py),
                    Some((lo, hi, first, _)) => (lo.min(py), hi.max(py), first, py),
                });
            }
            let (bits, owner) = (&mut bits[layer], &mut owner[layer]);
            let mut plot_dot = |px: i64, py: i64| {
                if px < 0 || py < 0 || px >= w || py >= h {
                    return;
                }
                let (cx, cy) = ((px / sx) as usize, (py / sy) as usize);
                let idx = cy * plot.width as usize + cx;
                if self.colored {
                    let (dx, dy) = (px % 2, py % 4);
                    // Braille dot numbering: columns of 1-2-3-7 and 4-5-6-8.
                    const MAP: [[u8; 2]; 4] = [[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]];
                    bits[idx] |= MAP[dy as usize][dx as usize];
                }
                owner[idx] = Some((style, glyph));
            };
            let mut prev: Option<(i64, i64)> = None;
            for (px, c) in cols.iter().enumerate() {
                let Some((lo, hi, first, last)) = *c else { continue };
                let px = px as i64;
                if let Some((ppx, ppy)) = prev {
                    line(ppx, ppy, px, first, &mut plot_dot);
                }
                for py in lo..=hi {
                    plot_dot(px, py);
                }
                prev = Some((px, last));
            }
        }
        for cy in 0..plot.height as usize {
            for cx in 0..plot.width as usize {
                let idx = cy * plot.width as usize + cx;
                let layer = if owner[1][idx].is_some() { 1 } else { 0 };
                let Some((style, glyph)) = owner[layer][idx] else { continue };
                let ch = if self.colored {
                    char::from_u32(0x2800 + bits[layer][idx] as u32).unwrap_or(' ')
                } else {
                    glyph
                };
                buf[(plot.x + cx as u16, plot.y + cy as u16)].set_char(ch).set_style(style);
            }
        }
        if let Some(cx) = self.cursor.filter(|c| (x0..=x1).contains(c)) {
            let col = plot.x + ((cx - x0) / (x1 - x0) * (plot.width - 1) as f64).round() as u16;
            for row in 0..plot.height {
                let cell = &mut buf[(col, plot.y + row)];
                if cell.symbol() == " " {
                    cell.set_char('┊');
                }
                cell.set_style(self.cursor_style);
            }
        }
    }
}

/// How y values read: plain numbers, fractions shown as percentages (accuracies), or values
/// that already are percentages (CPU, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YUnit {
    #[default]
    Plain,
    Fraction,
    Percent,
}

impl YUnit {
    /// A tick label: as many decimals as the step between ticks needs, and the unit.
    pub fn label(&self, v: f64, step: f64, log: bool) -> String {
        let (v, step, suffix) = match self {
            YUnit::Plain => (v, step, ""),
            YUnit::Fraction => (100.0 * v, 100.0 * step, "%"),
            YUnit::Percent => (v, step, "%"),
        };
        if v == 0.0 {
            return format!("0{suffix}");
        }
        let a = v.abs();
        if log || !(1e-3..1e5).contains(&a) {
            // Decades read as 1e-3, 0.01, 0.1, 1, 10, 100, 1e3.
            let e = a.log10();
            if (e - e.round()).abs() < 1e-9 && !(0.01..=100.0).contains(&a) {
                return format!("{}1e{}{suffix}", if v < 0.0 { "-" } else { "" }, e.round() as i64);
            }
            if !(1e-3..1e5).contains(&a) {
                return format!("{v:.0e}{suffix}");
            }
        }
        let decimals = if log {
            (-a.log10().floor()).max(0.0) as usize
        } else if step > 0.0 {
            (-(step.log10() + 1e-9).floor()).max(0.0) as usize
        } else {
            2
        };
        format!("{v:.decimals$}{suffix}")
    }
}

/// Ticks on round numbers (1, 2 or 5 times a power of ten) inside `lo..=hi`, at most `max` of them
/// (and at least the ends' rounded values when the range is tiny).
pub fn nice_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let max = max.max(2);
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / (max - 1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| span / s <= max as f64 + 1e-9);
    let step = step.unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil();
    let mut ticks = Vec::new();
    let mut k = first;
    while k * step <= hi + step * 1e-9 && ticks.len() <= max {
        // Rounding off the float noise so labels read 0.3, not 0.30000000000000004.
        let t = k * step;
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        k += 1.0;
    }
    ticks
}

/// Ticks of a log axis, in log10 units: the decades inside `lo..=hi` (also log10), thinned to at
/// most `max`; with fewer than two decades, 1, 2 and 5 times each power of ten.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let decades: Vec<f64> =
        ((lo - 1e-9).ceil() as i64..=(hi + 1e-9).floor() as i64).map(|e| e as f64).collect();
    if decades.len() >= 2 {
        let every = decades.len().div_ceil(max.max(2));
        return decades.into_iter().enumerate().filter(|(i, _)| i % every == 0).map(|(_, d)| d).collect();
    }
    let mut ticks = Vec::new();
    for e in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in [1.0f64, 2.0, 5.0] {
            let t = (m * 10f64.powi(e as i32)).log10();
            if t >= lo - 1e-9 && t <= hi + 1e-9 {
                ticks.push(t);
            }
        }
    }
    if ticks.len() >= 2 {
        ticks
    } else {
        // Less than a factor of 2 across: round numbers of the values themselves.
        let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
        nice_ticks(a, b, max).into_iter().filter(|v| *v > 0.0).map(f64::log10).collect()
    }
}

/// The distance between ticks (for how many decimals their labels need).
fn tick_step(ticks: &[f64]) -> f64 {
    match ticks {
        [a, b, ..] => (b - a).abs(),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_debiased() {
        // TensorBoard's smoothing: the first value is kept as is, not pulled to 0.
        let s = ema(&[(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)], 0.9);
        for (_, v) in s {
            assert!((v - 10.0).abs() < 1e-9);
        }
        let s = ema(&[(0.0, 0.0), (1.0, 1.0)], 0.5);
        // After 0 then 1: last = 0.5, debias factor 1 - 0.5^2 = 0.75, so 0.5 / 0.75.
        assert!((s[1].1 - (0.5 / 0.75)).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn ten_thousand_points_fit_and_spikes_survive() {
        let mut pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[5_000].1 = 100.0;
        let chart = LineChart::new(vec![Series::new("a", pts, Color::Red, '*')]);
        let area = Rect::new(0, 0, 40, 10);
        let mut buf = Buffer::empty(area);
        chart.render(area, &mut buf);
        // The spike reaches the top row of the plot.
        let top: String = (0..40).map(|x| buf[(x, 0)].symbol().to_string()).collect();
        assert!(top.contains('*'), "{top}");
    }

    #[test]
    fn ticks_fall_on_round_numbers_and_decades() {
        assert_eq!(nice_ticks(0.0, 2.7, 6), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(nice_ticks(0.0, 2.7, 5), vec![0.0, 1.0, 2.0]);
        assert_eq!(nice_ticks(1.0, 1480.0, 4), vec![500.0, 1000.0]);
        assert_eq!(nice_ticks(0.0, 0.3, 4), vec![0.0, 0.1, 0.2, 0.30000000000000004]);
        // A log axis from 0.01 to 10: its decades; under a decade, 1-2-5 steps.
        assert_eq!(log_ticks(-2.0, 1.0, 6), vec![-2.0, -1.0, 0.0, 1.0]);
        let t: Vec<f64> =
            log_ticks(0.1f64.log10(), 0.6f64.log10(), 6).iter().map(|t| 10f64.powf(*t)).collect();
        assert!(t.iter().zip([0.1, 0.2, 0.5]).all(|(a, b)| (a - b).abs() < 1e-9), "{t:?}");
        // Labels: the step's decimals, percentages with their sign, decades as powers.
        assert_eq!(YUnit::Plain.label(0.5, 0.5, false), "0.5");
        assert_eq!(YUnit::Plain.label(1000.0, 500.0, false), "1000");
        assert_eq!(YUnit::Fraction.label(0.95, 0.05, false), "95%");
        assert_eq!(YUnit::Plain.label(0.001, 0.0, true), "1e-3");
        assert_eq!(YUnit::Plain.label(10.0, 0.0, true), "10");
    }

    #[test]
    fn a_curve_in_front_hides_the_faint_one_where_both_pass() {
        let pts: Vec<(f64, f64)> = (0..40).map(|i| (i as f64, (i % 7) as f64)).collect();
        let smooth: Vec<(f64, f64)> = (0..40).map(|i| (i as f64, 3.0)).collect();
        let raw = Series::new("raw", pts, Color::DarkGray, '*').faint();
        // The faint series comes last: it is still drawn behind.
        let chart = LineChart::new(vec![Series::new("smooth", smooth, Color::Red, '*'), raw]).styled(
            true,
            Style::default(),
            Style::default(),
        );
        let area = Rect::new(0, 0, 40, 10);
        let mut buf = Buffer::empty(area);
        chart.render(area, &mut buf);
        let red = buf.content().iter().filter(|c| c.fg == Color::Red).count();
        let grey = buf.content().iter().filter(|c| c.fg == Color::DarkGray).count();
        assert!(red >= 30 && grey > 10, "red {red} grey {grey}");
        // Accuracy as a fraction never reads above 100%.
        let acc: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 1.0 - 0.005 * (19 - i) as f64)).collect();
        let chart = LineChart::new(vec![Series::new("acc", acc, Color::Red, '*')]).y_unit(YUnit::Fraction);
        let mut buf = Buffer::empty(area);
        chart.render(area, &mut buf);
        let text: String = buf.content().iter().map(|c| c.symbol().to_string()).collect();
        assert!(text.contains("100%┤") && !text.contains("105%"), "{text}");
    }

    #[test]
    fn glyphs_tell_series_apart_without_colour() {
        let a: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 0.0)).collect();
        let b: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 10.0)).collect();
        let chart = LineChart::new(vec![
            Series::new("a", a, Color::Reset, GLYPHS[0]),
            Series::new("b", b, Color::Reset, GLYPHS[1]),
        ]);
        let area = Rect::new(0, 0, 30, 8);
        let mut buf = Buffer::empty(area);
        chart.render(area, &mut buf);
        let text: String = buf.content().iter().map(|c| c.symbol().to_string()).collect();
        assert!(text.contains('*') && text.contains('+'));
    }
}
