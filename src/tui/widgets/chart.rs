//! A line chart for training curves. It down-samples each series to the chart's resolution
//! (per pixel column it keeps the minimum and the maximum, so spikes survive), draws in braille
//! dots (2x4 per cell) when colour is available, and in one distinct glyph per series at cell
//! resolution under `NO_COLOR`, so overlaid curves stay apart without colour. It also draws a
//! cursor line, axis labels, and supports a logarithmic y axis and an x window (zoom and pan).

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
    /// Drawn dim and underneath (the raw line behind a smoothed one).
    pub faint: bool,
}

/// Glyphs for series without colour, chosen to be distinguishable in any font.
pub const GLYPHS: [char; 8] = ['*', '+', 'o', 'x', '#', '@', '%', '&'];

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
        }
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
        // Losses and accuracies are never negative: do not pad below zero.
        let floor = if !self.log_y && y0 >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
        let (y0, y1) = self.y_range.unwrap_or(((y0 - pad).max(floor), y1 + pad));
        let label = |t: f64| fmt_num(if self.log_y { 10f64.powf(t) } else { t });
        let labels = [label(y1), label((y0 + y1) / 2.0), label(y0)];
        let lw = labels.iter().map(|l| l.len()).max().unwrap_or(1) as u16 + 1;
        let plot =
            Rect { x: area.x + lw, y: area.y, width: area.width.saturating_sub(lw), height: area.height - 1 };
        if plot.width < 4 {
            return;
        }
        // Axes and labels.
        for row in 0..plot.height {
            buf[(plot.x - 1, plot.y + row)].set_char('│').set_style(self.axis_style);
        }
        buf.set_string(area.x, plot.y, &labels[0], self.axis_style);
        buf.set_string(area.x, plot.y + plot.height / 2, &labels[1], self.axis_style);
        buf.set_string(area.x, plot.y + plot.height - 1, &labels[2], self.axis_style);
        let xl = [fmt_num(x0), fmt_num((x0 + x1) / 2.0), fmt_num(x1)];
        let by = area.y + area.height - 1;
        buf.set_string(plot.x, by, &xl[0], self.axis_style);
        let mid = plot.x + plot.width / 2 - (xl[1].len() as u16 / 2).min(plot.width / 2);
        buf.set_string(mid, by, &xl[1], self.axis_style);
        let right = (plot.x + plot.width).saturating_sub(xl[2].len() as u16);
        buf.set_string(right, by, &xl[2], self.axis_style);

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
        // Per cell: braille bits and the style of the series drawn last there.
        let cells = (plot.width as usize) * (plot.height as usize);
        let mut bits = vec![0u8; cells];
        let mut owner: Vec<Option<(Style, char)>> = vec![None; cells];
        let mut order: Vec<usize> = (0..self.series.len()).collect();
        // Faint series go underneath.
        order.sort_by_key(|&i| !self.series[i].faint);
        for i in order {
            let s = &self.series[i];
            let style = if !self.colored {
                if s.faint { Style::default().add_modifier(Modifier::DIM) } else { Style::default() }
            } else if s.faint {
                Style::default().fg(s.color).add_modifier(Modifier::DIM)
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
                let Some((style, glyph)) = owner[idx] else { continue };
                let ch = if self.colored {
                    char::from_u32(0x2800 + bits[idx] as u32).unwrap_or(' ')
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
