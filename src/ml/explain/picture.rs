//! Draws an [`Explanation`] as a PNG a person can open: the input beside its attributions, in a
//! diverging colour map centred on zero (red for evidence for the target, blue against) with a
//! labelled colour scale. Images are shown as enlarged pixels, sequences as a line plot over a
//! strip of one cell per step, text as words on coloured boxes, tabular inputs as a bar chart.
//! Pure drawing into a pixel buffer: no terminal, no files.

use colorous::Color;
use font8x8::legacy::BASIC_LEGACY;

use super::{ExplainedInput, Explanation};
use crate::error::{Error, Result};
use crate::ml::data::InputShape;

const WHITE: Color = Color { r: 255, g: 255, b: 255 };
const BLACK: Color = Color { r: 0, g: 0, b: 0 };
const GREY: Color = Color { r: 120, g: 120, b: 120 };
const LIGHT: Color = Color { r: 225, g: 225, b: 225 };
const MARGIN: usize = 16;

/// An RGB pixel buffer.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas { width, height, pixels: vec![255; width * height * 3] }
    }

    fn put(&mut self, x: usize, y: usize, c: Color) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&[c.r, c.g, c.b]);
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: Color) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.put(xx, yy, c);
            }
        }
    }

    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, c: Color) {
        self.rect(x, y, w, 1, c);
        self.rect(x, y + h.saturating_sub(1), w, 1, c);
        self.rect(x, y, 1, h, c);
        self.rect(x + w.saturating_sub(1), y, 1, h, c);
    }

    /// Text in the 8x8 font at `scale`; characters outside ASCII show as `?`.
    fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: Color) {
        for (k, ch) in s.chars().enumerate() {
            let code = if ch.is_ascii() { ch as usize } else { '?' as usize };
            let glyph = BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(x + (k * 8 + col) * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Color) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1) * 2;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            // Two pixels thick, so a plot reads at a glance.
            self.put(x.round() as usize, y.round() as usize, c);
            self.put(x.round() as usize, y.round() as usize + 1, c);
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let fail = |e: png::EncodingError| Error::internal(format!("cannot encode the picture: {e}"));
        let mut w = enc.write_header().map_err(fail)?;
        w.write_image_data(&self.pixels).map_err(fail)?;
        w.finish().map_err(fail)?;
        Ok(out)
    }
}

fn text_width(s: &str, scale: usize) -> usize {
    s.chars().count() * 8 * scale
}

/// The diverging colour of `v` on a scale from `-max` to `max`: red for positive, blue for
/// negative, white at zero.
pub fn diverging(v: f32, max: f32) -> Color {
    let t = if max > 0.0 { (v / max).clamp(-1.0, 1.0) } else { 0.0 };
    colorous::RED_BLUE.eval_continuous(0.5 - 0.5 * t as f64)
}

/// Black or white, whichever reads on `bg`.
fn ink_on(bg: Color) -> Color {
    let lum = 0.299 * bg.r as f32 + 0.587 * bg.g as f32 + 0.114 * bg.b as f32;
    if lum > 140.0 { BLACK } else { WHITE }
}

fn grey(v: f32, lo: f32, hi: f32) -> Color {
    let t = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
    let g = (t * 255.0).round() as u8;
    Color { r: g, g, b: g }
}

/// A short number for labels: `0.0123`, `-1.5`, `2.3e-5`.
fn short(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// Renders the explanation as PNG bytes. `caption` says what the input is (run, split, sample,
/// label); `classes` names the classes.
pub fn render_png(e: &Explanation, caption: &str, classes: &[String]) -> Result<Vec<u8>> {
    let name = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
    let mut header = vec![caption.to_string()];
    header.push(format!(
        "predicted {} ({:.1}%), attributing {} ({})",
        name(e.predicted),
        100.0 * e.probabilities.get(e.predicted).copied().unwrap_or(0.0),
        name(e.target),
        match e.output {
            super::Output::Logit => "logit",
            super::Output::Probability => "probability",
        }
    ));
    let mut method = e.method.describe();
    if let Some(c) = &e.completeness {
        method.push_str(&format!(", completeness gap {:.2e}", c.gap));
    }
    header.push(method);
    let max = e.attributions.iter().fold(0f32, |m, v| m.max(v.abs()));
    let canvas = match (&e.layout, &e.input) {
        (InputShape::Image { channels, height, width }, ExplainedInput::Dense(x)) => {
            image(&header, x, &e.attributions, *channels, *height, *width, max)
        }
        (InputShape::Sequence { steps, features }, ExplainedInput::Dense(x)) => {
            sequence(&header, x, &e.attributions, *steps, *features, max)
        }
        (InputShape::Tabular { features }, ExplainedInput::Dense(x)) => {
            tabular(&header, x, &e.attributions, *features, max)
        }
        (InputShape::Text { .. }, ExplainedInput::Tokens { ids, words }) => {
            text(&header, ids, words.as_deref(), &e.attributions, max)
        }
        _ => return Err(Error::internal("the explanation's input does not match its layout")),
    };
    canvas.encode()
}

fn draw_header(c: &mut Canvas, header: &[String]) -> usize {
    let mut y = MARGIN;
    for (i, line) in header.iter().enumerate() {
        let scale = if i == 0 && text_width(line, 2) + 2 * MARGIN <= c.width { 2 } else { 1 };
        c.text(MARGIN, y, line, scale, BLACK);
        y += 8 * scale + 6;
    }
    y + 6
}

fn header_height(header: &[String], width: usize) -> usize {
    header
        .iter()
        .enumerate()
        .map(|(i, l)| if i == 0 && text_width(l, 2) + 2 * MARGIN <= width { 22 } else { 14 })
        .sum::<usize>()
        + MARGIN
        + 6
}

fn header_width(header: &[String]) -> usize {
    header.iter().map(|l| text_width(l, 1)).max().unwrap_or(0) + 2 * MARGIN
}

/// A horizontal colour scale from −max to +max at (x, y), `w` wide.
fn colour_scale(c: &mut Canvas, x: usize, y: usize, w: usize, max: f32, caption: &str) {
    for i in 0..w {
        let v = (2.0 * i as f32 / (w - 1).max(1) as f32 - 1.0) * max;
        c.rect(x + i, y, 1, 14, diverging(v, max));
    }
    c.frame(x, y, w, 14, GREY);
    for (frac, label) in [(0.0, short(-max)), (0.5, "0".to_string()), (1.0, short(max))] {
        let lx = x + (frac * (w - 1) as f32) as usize;
        c.rect(lx, y + 14, 1, 4, BLACK);
        let tw = text_width(&label, 1);
        let tx =
            (lx as isize - tw as isize / 2).clamp(x as isize, (x + w) as isize - tw as isize).max(0) as usize;
        c.text(tx, y + 20, &label, 1, BLACK);
    }
    let cw = text_width(caption, 1);
    c.text(x + w.saturating_sub(cw) / 2, y + 32, caption, 1, GREY);
}

const SCALE_CAPTION: &str = "against the target  <  0  >  for the target";

fn image(header: &[String], x: &[f32], a: &[f32], channels: usize, h: usize, w: usize, max: f32) -> Canvas {
    let cell = (256 / h.max(w)).max(2);
    let (pw, ph) = (cell * w, cell * h);
    let gap = 40;
    let width = (2 * pw + gap + 2 * MARGIN).max(header_width(header)).max(2 * MARGIN + 360);
    let top = header_height(header, width);
    let height = top + 18 + ph + 24 + 50 + MARGIN;
    let mut c = Canvas::new(width, height);
    let y0 = draw_header(&mut c, header) + 18;
    c.text(MARGIN, y0 - 16, "input", 1, BLACK);
    let x1 = MARGIN + pw + gap;
    let title = if channels > 1 { "attribution (summed over channels)" } else { "attribution" };
    c.text(x1, y0 - 16, title, 1, BLACK);
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let plane = h * w;
    for i in 0..h {
        for j in 0..w {
            let p = i * w + j;
            let input = if channels == 3 {
                let g = |k: usize| grey(x[k * plane + p], lo, hi).r;
                Color { r: g(0), g: g(1), b: g(2) }
            } else {
                grey((0..channels).map(|k| x[k * plane + p]).sum::<f32>() / channels as f32, lo, hi)
            };
            c.rect(MARGIN + j * cell, y0 + i * cell, cell, cell, input);
            let v: f32 = (0..channels).map(|k| a[k * plane + p]).sum();
            c.rect(x1 + j * cell, y0 + i * cell, cell, cell, diverging(v, max * channels as f32));
        }
    }
    c.frame(MARGIN - 1, y0 - 1, pw + 2, ph + 2, GREY);
    c.frame(x1 - 1, y0 - 1, pw + 2, ph + 2, GREY);
    let sx = MARGIN;
    colour_scale(&mut c, sx, y0 + ph + 20, width - 2 * MARGIN, max * channels as f32, SCALE_CAPTION);
    c
}

fn sequence(header: &[String], x: &[f32], a: &[f32], steps: usize, features: usize, max: f32) -> Canvas {
    let cell = (720 / steps.max(1)).clamp(3, 40);
    let pw = cell * steps;
    let width = (pw + 2 * MARGIN).max(header_width(header)).max(2 * MARGIN + 360);
    let plot_h = 160;
    let row_h = if features > 8 { 8 } else { 22 };
    let strip_h = row_h * features;
    let top = header_height(header, width);
    let height = top + 18 + plot_h + 30 + strip_h + 24 + 50 + MARGIN;
    let mut c = Canvas::new(width, height);
    let y0 = draw_header(&mut c, header) + 18;
    c.text(MARGIN, y0 - 16, "input", 1, BLACK);
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    c.rect(MARGIN, y0, pw, plot_h, Color { r: 248, g: 248, b: 248 });
    if lo < 0.0 && hi > 0.0 {
        let zy = y0 as f64 + (plot_h - 1) as f64 * (hi / span) as f64;
        c.rect(MARGIN, zy as usize, pw, 1, LIGHT);
    }
    let palette =
        [BLACK, Color { r: 0, g: 110, b: 0 }, Color { r: 150, g: 80, b: 0 }, Color { r: 90, g: 0, b: 140 }];
    for f in 0..features.min(8) {
        let point = |t: usize| {
            let v = x[t * features + f];
            (
                (MARGIN + t * cell + cell / 2) as f64,
                y0 as f64 + 4.0 + (plot_h - 9) as f64 * ((hi - v) / span) as f64,
            )
        };
        for t in 1..steps {
            c.line(point(t - 1), point(t), palette[f % palette.len()]);
        }
    }
    c.frame(MARGIN - 1, y0 - 1, pw + 2, plot_h + 2, GREY);
    let ys = y0 + plot_h + 30;
    c.text(MARGIN, ys - 16, "attribution per step", 1, BLACK);
    for t in 0..steps {
        for f in 0..features {
            let v = a[t * features + f];
            c.rect(MARGIN + t * cell, ys + f * row_h, cell, row_h, diverging(v, max));
        }
    }
    c.frame(MARGIN - 1, ys - 1, pw + 2, strip_h + 2, GREY);
    colour_scale(&mut c, MARGIN, ys + strip_h + 20, width - 2 * MARGIN, max, SCALE_CAPTION);
    c
}

fn tabular(header: &[String], x: &[f32], a: &[f32], features: usize, max: f32) -> Canvas {
    // The 40 largest attributions when there are more, in feature order.
    let mut shown: Vec<usize> = (0..features).collect();
    if features > 40 {
        shown.sort_by(|&p, &q| a[q].abs().total_cmp(&a[p].abs()));
        shown.truncate(40);
        shown.sort_unstable();
    }
    let row_h = 16;
    let label_w = 150;
    let bar_w = 400;
    let width = (label_w + bar_w + 2 * MARGIN + 80).max(header_width(header));
    let top = header_height(header, width);
    let height = top + 18 + row_h * shown.len() + 24 + 50 + MARGIN;
    let mut c = Canvas::new(width, height);
    let y0 = draw_header(&mut c, header) + 18;
    let title = if shown.len() < features {
        format!("the {} largest of {features} attributions", shown.len())
    } else {
        "attribution per feature".to_string()
    };
    c.text(MARGIN, y0 - 16, &title, 1, BLACK);
    let mid = MARGIN + label_w + bar_w / 2;
    for (r, &f) in shown.iter().enumerate() {
        let y = y0 + r * row_h;
        c.text(MARGIN, y + 4, &format!("f{f} = {}", short(x[f])), 1, BLACK);
        let len = if max > 0.0 { (a[f].abs() / max * (bar_w / 2) as f32) as usize } else { 0 };
        let bx = if a[f] >= 0.0 { mid } else { mid - len };
        c.rect(bx, y + 2, len.max(1), row_h - 4, diverging(a[f], max));
        let label = short(a[f]);
        c.text(MARGIN + label_w + bar_w + 8, y + 4, &label, 1, GREY);
    }
    c.rect(mid, y0, 1, row_h * shown.len(), GREY);
    colour_scale(&mut c, MARGIN + label_w, y0 + row_h * shown.len() + 20, bar_w, max, SCALE_CAPTION);
    c
}

fn text(header: &[String], ids: &[u32], words: Option<&[String]>, a: &[f32], max: f32) -> Canvas {
    let scale = 2;
    let line_h = 8 * scale + 14;
    let wrap = 760;
    let tokens: Vec<(String, f32)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id != 0)
        .map(|(i, id)| {
            let w = words.and_then(|w| w.get(i)).cloned().unwrap_or_else(|| format!("#{id}"));
            (w, a[i])
        })
        .collect();
    // Lay the words out in lines first, to know the height.
    let mut placed = Vec::new();
    let (mut x, mut y) = (0usize, 0usize);
    let box_width = |w: &str, v: f32| (text_width(w, scale) + 12).max(text_width(&short(v), 1) + 8);
    for (w, v) in &tokens {
        let tw = box_width(w, *v);
        if x > 0 && x + tw > wrap {
            x = 0;
            y += line_h + 22;
        }
        placed.push((x, y, w.clone(), *v));
        x += tw + 6;
    }
    let width = (wrap + 2 * MARGIN).max(header_width(header));
    let top = header_height(header, width);
    let body = y + line_h + 22;
    let height = top + 18 + body + 24 + 50 + MARGIN;
    let mut c = Canvas::new(width, height);
    let y0 = draw_header(&mut c, header) + 18;
    c.text(MARGIN, y0 - 16, "attribution per token (sum over its embedding)", 1, BLACK);
    for (x, y, w, v) in &placed {
        let bg = diverging(*v, max);
        let tw = box_width(w, *v);
        c.rect(MARGIN + x, y0 + y, tw, line_h, bg);
        c.frame(MARGIN + x, y0 + y, tw, line_h, LIGHT);
        c.text(MARGIN + x + 6, y0 + y + 7, w, scale, ink_on(bg));
        c.text(MARGIN + x + 2, y0 + y + line_h + 4, &short(*v), 1, GREY);
    }
    colour_scale(&mut c, MARGIN, y0 + body + 10, width - 2 * MARGIN, max, SCALE_CAPTION);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_map_is_red_for_positive_and_blue_for_negative() {
        let red = diverging(1.0, 1.0);
        let blue = diverging(-1.0, 1.0);
        let mid = diverging(0.0, 1.0);
        // ColorBrewer RdBu's ends: #67001f and #053061 (dark, so the scale reads in grey too).
        assert!(red.r > red.b + 50 && red.r > red.g + 50, "{red:?}");
        assert!(blue.b > blue.r + 50 && blue.b > blue.g + 30, "{blue:?}");
        assert!(mid.r > 230 && mid.g > 230 && mid.b > 230, "{mid:?}");
    }

    fn explanation(layout: InputShape, input: ExplainedInput, attributions: Vec<f32>) -> Explanation {
        Explanation {
            method: super::super::Method::Saliency,
            output: super::super::Output::Logit,
            layout,
            input,
            target: 1,
            predicted: 0,
            probabilities: vec![0.7, 0.3],
            attributions,
            completeness: None,
        }
    }

    fn size(bytes: &[u8]) -> (u32, u32) {
        let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a readable PNG");
        (reader.info().width, reader.info().height)
    }

    #[test]
    fn every_layout_renders_a_readable_png() {
        let classes = vec!["cat".to_string(), "dog".to_string()];
        let signed = |n: usize| (0..n).map(|i| (i as f32 * 0.7).sin()).collect::<Vec<f32>>();
        // An RGB image: 3 x 16 x 16, cells of 256 / 16 = 16 pixels.
        let e = explanation(
            InputShape::Image { channels: 3, height: 16, width: 16 },
            ExplainedInput::Dense(signed(768)),
            signed(768),
        );
        let (w, h) = size(&render_png(&e, "rgb", &classes).unwrap());
        assert!(w >= 2 * 256 && h >= 256, "{w}x{h}");
        // A sequence of 30 steps with 2 features.
        let e = explanation(
            InputShape::Sequence { steps: 30, features: 2 },
            ExplainedInput::Dense(signed(60)),
            signed(60),
        );
        let (w, _) = size(&render_png(&e, "sequence", &classes).unwrap());
        assert!(w >= 30 * 24, "{w}");
        // 100 tabular features: the 40 largest are shown, one row each.
        let e = explanation(
            InputShape::Tabular { features: 100 },
            ExplainedInput::Dense(signed(100)),
            signed(100),
        );
        let (_, h) = size(&render_png(&e, "tabular", &classes).unwrap());
        assert!((40 * 16..60 * 16).contains(&(h as usize)), "{h}");
        // Text wraps onto several lines; padding is not drawn.
        let ids: Vec<u32> = (1..=30).chain([0, 0]).collect();
        let words = Some(ids.iter().map(|i| format!("word{i}")).collect());
        let e =
            explanation(InputShape::Text { max_len: 32 }, ExplainedInput::Tokens { ids, words }, signed(32));
        let (w, h) = size(&render_png(&e, "text", &classes).unwrap());
        assert!(w <= 800 && h > 150, "{w}x{h}");
        // A mismatch between layout and input is an error, not a panic.
        let e =
            explanation(InputShape::Text { max_len: 3 }, ExplainedInput::Dense(vec![0.0; 3]), vec![0.0; 3]);
        assert!(render_png(&e, "bad", &classes).is_err());
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(-1.25), "-1.25");
        assert_eq!(short(0.00002), "2.0e-5");
        assert_eq!(short(0.0), "0");
    }
}
