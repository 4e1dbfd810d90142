//! Explain: why the selected run predicted what it did on a test example, or why the service
//! answered a request from its access log as it did (`r` switches). Images show the input
//! and its heatmap side by side in half-block cells (two pixels per cell), with a diverging scale
//! (red for, blue against); sequences show the signal above a coloured strip per step; text shows
//! each token on its colour; tabular inputs show a bar per feature. Without colour, an ASCII ramp
//! carries intensity and `+` / `-` the sign.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{bar, panel};
use crate::engine::explain::ExplainResult;
use crate::ml::data::InputShape;
use crate::ml::explain::{ExplainedInput, picture};
use crate::tui::app::{App, View};
use crate::tui::keymap::Action;
use crate::tui::theme::adapt;

/// Intensity without colour, dark to bright.
pub(super) const RAMP: &[char] = &[' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

pub(super) fn attribution_color(app: &App, v: f32, max: f32) -> Color {
    let c = picture::diverging(v, max);
    let t = if max > 0.0 { (v / max).clamp(-1.0, 1.0) } else { 0.0 };
    app.theme.diverging(t, (c.r, c.g, c.b))
}

pub(super) fn grey(app: &App, t: f32) -> Color {
    let g = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
    adapt(Color::Rgb(g, g, g), app.theme.depth)
}

/// The sign and size of an attribution as one character, for terminals without colour.
pub(super) fn signed_glyph(v: f32, max: f32) -> char {
    let t = if max > 0.0 { (v / max).clamp(-1.0, 1.0) } else { 0.0 };
    match (t >= 0.0, t.abs()) {
        (_, a) if a < 0.1 => ' ',
        (true, a) if a < 0.4 => '.',
        (true, a) if a < 0.7 => '+',
        (true, _) => '#',
        (false, a) if a < 0.4 => ',',
        (false, a) if a < 0.7 => '-',
        (false, _) => '=',
    }
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let ex = &app.explain;
    if ex.requests.on {
        draw_requests(f, app, area);
        return;
    }
    let Some(set) = &ex.set else {
        let text = ex.error.clone().unwrap_or_else(|| {
            if ex.pending {
                "loading the run's model and test split…".into()
            } else {
                "select a run (2) and press 7".into()
            }
        });
        f.render_widget(
            Paragraph::new(Span::styled(text, t.muted()))
                .wrap(Wrap { trim: true })
                .block(panel(app, "Explain")),
            area,
        );
        return;
    };
    // The keys are in the console's footer; this row only says what is going on, when anything is.
    let busy = ex.error.is_some() || ex.pending;
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(6), Constraint::Length(busy as u16)])
            .areas(area);
    let candidates = ex.candidates();
    let pos = candidates.iter().position(|&i| i == ex.index).map_or(0, |p| p + 1);
    let e = set.examples.get(ex.index);
    let mut spans = vec![
        Span::styled(format!(" {} ", set.run), t.accent()),
        Span::raw(format!("test #{} ({pos}/{})", ex.index, candidates.len())),
    ];
    if let Some(c) = ex.class {
        spans.push(Span::styled(format!(" class {}", set.classes[c]), t.warn()));
    }
    if let Some(e) = e {
        spans.push(Span::styled("  true ", t.muted()));
        spans.push(Span::raw(set.classes[e.label].clone()));
        spans.push(Span::styled("  predicted ", t.muted()));
        let ok = e.label == e.predicted;
        spans.push(Span::styled(
            format!("{} {}", set.classes[e.predicted], if ok { "✓" } else { "✗" }),
            if ok { t.ok() } else { t.error() },
        ));
    }
    let mistakes = set.examples.iter().filter(|e| e.label != e.predicted).count();
    spans.push(Span::styled(format!("  {mistakes} misclassified"), t.muted()));
    if ex.adversarial
        && let Some(a) = ex.current_attack()
    {
        spans.push(Span::styled(format!("  vs {}", a.describe()), t.warn()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), head);

    let status = match (&ex.error, ex.pending) {
        (Some(err), _) => Span::styled(err.clone(), t.error()),
        (None, true) => Span::styled(format!("computing {}…", ex.method_name()), t.muted()),
        (None, false) => Span::raw(""),
    };
    f.render_widget(Paragraph::new(Line::from(status)), foot);

    if ex.adversarial {
        match ex.adversarial_result.as_ref().filter(|r| r.run == set.run) {
            Some(r) => super::adversarial::draw(f, app, r, &set.classes, body),
            None => f.render_widget(
                Paragraph::new(Span::styled("computing…", t.muted())).block(panel(app, "Explain")),
                body,
            ),
        }
        return;
    }

    let Some(r) = ex.result.as_ref().filter(|r| r.run == set.run) else {
        f.render_widget(
            Paragraph::new(Span::styled("computing…", t.muted())).block(panel(app, "Explain")),
            body,
        );
        return;
    };
    draw_result(f, app, r, &set.classes, body);
}

/// An explanation: the input and its attributions, and beside them the prediction.
fn draw_result(f: &mut Frame, app: &App, r: &ExplainResult, classes: &[String], body: Rect) {
    let side = if body.width >= 100 { 34 } else { 26 };
    let [main, right] = Layout::horizontal([Constraint::Min(30), Constraint::Length(side)]).areas(body);
    // `z`: the focused panel alone, on the whole body.
    let (main, right) = match super::zoomed(app, View::Explain) {
        Some("Prediction") => (Rect::default(), body),
        Some(_) => (body, Rect::default()),
        None => (main, right),
    };
    if !right.is_empty() {
        draw_side(f, app, r, classes, right);
    }
    if main.is_empty() {
        return;
    }
    match &r.explanation.layout {
        InputShape::Image { channels, height, width } => {
            draw_image(f, app, r, *channels, *height, *width, main)
        }
        InputShape::Sequence { steps, features } => draw_sequence(f, app, r, *steps, *features, main),
        InputShape::Text { .. } => draw_text(f, app, r, main),
        InputShape::Tabular { .. } => draw_tabular(f, app, r, main),
    }
}

/// Requests from the service's access log: which one, who sent it and what it was answered,
/// then its explanation by the run that answered it.
fn draw_requests(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let ex = &app.explain;
    let pick = &ex.requests;
    let back = app.keymap.hint(Action::ExplainRequests);
    let inputs = app.service.logged_inputs();
    if inputs.is_empty() {
        let text = format!(
            "No request in the access log carries its inputs. By default the service logs only a hash \
             of each input; serve with `vigil serve RUN --log-raw-inputs` (or start the console with \
             `vigil --serve-log-raw-inputs` and serve with s) to explain requests here. {back} goes \
             back to test examples."
        );
        f.render_widget(
            Paragraph::new(Span::styled(text, t.muted()))
                .wrap(Wrap { trim: true })
                .block(panel(app, "Explain · requests")),
            area,
        );
        return;
    }
    let busy = ex.error.is_some() || ex.pending;
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(6), Constraint::Length(busy as u16)])
            .areas(area);
    let at = pick.at.as_ref();
    let pos = at.and_then(|(id, i)| inputs.iter().position(|&(r, j)| r == id && j == *i));
    let logged = at.and_then(|(id, i)| app.service.logged_input(id, *i));
    let mut spans = vec![Span::styled(" request ", t.accent())];
    // At 80 columns: ` request 451aeb0a00000002 #1/2 (3/4) 00:43:00 ops → topics-text: answered sports`
    // loses only the end of a long label.
    match &logged {
        Some(l) => {
            spans.push(Span::raw(format!("{} ({}/{})", l.label(), pos.map_or(0, |p| p + 1), inputs.len())));
            spans.push(Span::styled(format!(" {} ", l.time.get(11..19).unwrap_or(&l.time)), t.muted()));
            spans.push(Span::raw(l.key.clone().unwrap_or_else(|| "-".into())));
            spans.push(Span::styled(" → ", t.muted()));
            // The version (the checkpoint's hash) only where there is room for it.
            spans.push(Span::raw(if area.width >= 100 {
                format!("{}@{}", l.model, l.version.get(..8).unwrap_or(&l.version))
            } else {
                l.model.clone()
            }));
            if let Some(a) = &l.answered {
                spans.push(Span::styled(": answered ", t.muted()));
                spans.push(Span::raw(a.clone()));
            }
        }
        None => spans.push(Span::styled("none picked (←→)", t.muted())),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), head);
    let status = match (&ex.error, ex.pending) {
        (Some(err), _) => Span::styled(err.clone(), t.error()),
        (None, true) => Span::styled(format!("computing {}…", ex.method_name()), t.muted()),
        (None, false) => Span::raw(""),
    };
    f.render_widget(Paragraph::new(Line::from(status)), foot);
    let shown = pick
        .result
        .as_ref()
        .filter(|r| at.is_some_and(|(id, i)| *id == r.input.request_id && *i == r.input.input));
    match shown {
        Some(r) => draw_result(f, app, &r.result, &r.classes, body),
        None => f.render_widget(
            Paragraph::new(Span::styled(if ex.error.is_some() { "" } else { "computing…" }, t.muted()))
                .block(panel(app, "Explain")),
            body,
        ),
    }
}

/// Why a text explanation shows every token alike, when it does: a mean-pooled model passes the
/// same gradient to each token, so gradient-only methods (saliency, SmoothGrad) cannot rank
/// them; IG and occlusion weigh each token by its own embedding or removal.
fn same_score_note(app: &App, e: &crate::ml::explain::Explanation) -> Option<String> {
    let ExplainedInput::Tokens { ids, .. } = &e.input else { return None };
    let real: Vec<f32> =
        ids.iter().zip(&e.attributions).filter(|(id, _)| **id != 0).map(|(_, a)| *a).collect();
    let (lo, hi) = real.iter().fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let alike = real.len() > 1 && (hi - lo) <= 1e-6 * hi.abs().max(lo.abs()).max(1e-12);
    alike.then(|| {
        format!(
            "every token scores the same: {} sees one pooled gradient; {} to ig or occlusion ranks them",
            e.method.name(),
            app.keymap.hint(Action::NextMetric)
        )
    })
}

pub(super) fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn draw_side(f: &mut Frame, app: &App, r: &ExplainResult, classes: &[String], area: Rect) {
    let t = &app.theme;
    let e = &r.explanation;
    let mut lines = vec![Line::from(Span::styled("top classes", t.muted()))];
    // Class names whole where the panel has room (the bar gives way, down to 4 cells), cut
    // only when a name would leave less.
    let ranked: Vec<(usize, f32)> = e.ranked_classes().into_iter().take(3).collect();
    let longest = ranked.iter().map(|(c, _)| classes[*c].chars().count()).max().unwrap_or(6);
    let name_w = longest.clamp(6, (area.width as usize).saturating_sub(16).max(6));
    let w = (area.width as usize).saturating_sub(name_w + 10).max(4);
    let note = same_score_note(app, e);
    for (c, p) in ranked {
        let style = if c == e.predicted { t.accent() } else { t.base() };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<name_w$.name_w$} {:>6.2}% ", classes[c], 100.0 * p), style),
            Span::styled(bar(p as f64, w), t.info()),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(vec![Span::styled("method ", t.muted()), Span::raw(e.method.name())]));
    lines.push(Line::from(Span::styled(e.method.describe(), t.muted())));
    if let Some(note) = note {
        lines.push(Line::from(Span::styled(note, t.warn())));
    }
    // Attention rollout follows the attention, whatever the class: shares, not evidence for one.
    let rollout = e.method == crate::ml::explain::Method::Rollout;
    if rollout {
        lines.push(Line::from(Span::styled("share of the pooled vector, any class", t.muted())));
    } else {
        lines
            .push(Line::from(vec![Span::styled("target ", t.muted()), Span::raw(classes[e.target].clone())]));
    }
    if let Some(c) = &e.completeness {
        lines.push(Line::from(vec![
            Span::styled("completeness gap ", t.muted()),
            Span::styled(format!("{:.2e}", c.gap), if c.relative_gap() < 0.01 { t.ok() } else { t.warn() }),
        ]));
        lines.push(Line::from(Span::styled(
            format!("Σ {:.3} vs F(x)−F(0) {:.3}", c.attribution_sum, c.output - c.baseline_output),
            t.muted(),
        )));
    }
    lines.push(Line::from(Span::styled(format!("{:.1} ms", r.millis), t.muted())));
    lines.push(Line::from(""));
    // The scale: blue (against) through white to red (for), or the glyphs without colour.
    let max = max_abs(&e.attributions);
    lines.extend(scale_legend(app, max, area.width));
    if !rollout {
        lines.push(Line::from(Span::styled("against ← → for the target", t.muted())));
    }
    // Focused, ↑↓ scroll it.
    let p = Paragraph::new(lines)
        .scroll((crate::tui::state::panes::scroll(app, View::Explain, "Prediction"), 0))
        .block(super::pane(app, View::Explain, "Prediction", "Prediction"));
    f.render_widget(p, area);
}

/// Draws an image (channel mean) into `area` at an integer scale: half-block cells with colour,
/// two characters per pixel with the ASCII ramp without.
pub(super) fn image_cells(
    app: &App,
    values: &[f32],
    h: usize,
    w: usize,
    area: Rect,
    color_of: &dyn Fn(f32) -> (Color, char),
    f: &mut Frame,
) {
    if area.width == 0 || area.height == 0 || h == 0 || w == 0 {
        return;
    }
    let buf = f.buffer_mut();
    if app.theme.colored() {
        let s = ((area.width as usize) / w).min((area.height as usize * 2) / h).max(1);
        for cy in 0..(h * s).div_ceil(2).min(area.height as usize) {
            for cx in 0..(w * s).min(area.width as usize) {
                let top = values[((2 * cy) / s).min(h - 1) * w + cx / s];
                let bottom_row = (2 * cy + 1) / s;
                let cell = &mut buf[(area.x + cx as u16, area.y + cy as u16)];
                let (tc, _) = color_of(top);
                if bottom_row < h {
                    let (bc, _) = color_of(values[bottom_row * w + cx / s]);
                    cell.set_char('▀').set_fg(tc).set_bg(bc);
                } else {
                    cell.set_char('▀').set_fg(tc);
                }
            }
        }
    } else {
        let s = ((area.width as usize) / (2 * w)).min(area.height as usize / h).max(1);
        for y in 0..(h * s).min(area.height as usize) {
            for x in 0..(2 * w * s).min(area.width as usize) {
                let (_, ch) = color_of(values[(y / s) * w + x / (2 * s)]);
                buf[(area.x + x as u16, area.y + y as u16)].set_char(ch);
            }
        }
    }
}

pub(super) fn channel_mean(v: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..h * w).map(|p| (0..c).map(|ch| v[ch * h * w + p]).sum::<f32>() / c as f32).collect()
}

fn draw_image(f: &mut Frame, app: &App, r: &ExplainResult, c: usize, h: usize, w: usize, area: Rect) {
    let e = &r.explanation;
    let ExplainedInput::Dense(input) = &e.input else { return };
    let [left, right] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
    let img = channel_mean(input, c, h, w);
    let (lo, hi) = img.iter().fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let block = panel(app, format!("Input {w}x{h}"));
    let inner = block.inner(left);
    f.render_widget(block, left);
    let norm = move |v: f32| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    image_cells(
        app,
        &img,
        h,
        w,
        inner,
        &|v| {
            (
                grey(app, norm(v)),
                RAMP[((norm(v) * (RAMP.len() - 1) as f32).round() as usize).min(RAMP.len() - 1)],
            )
        },
        f,
    );
    let attr = channel_mean(&e.attributions, c, h, w);
    let max = max_abs(&attr);
    let block = panel(app, format!("Attribution · {}", e.method.name()));
    let inner = block.inner(right);
    f.render_widget(block, right);
    image_cells(app, &attr, h, w, inner, &|v| (attribution_color(app, v, max), signed_glyph(v, max)), f);
}

pub(super) fn draw_sequence(
    f: &mut Frame,
    app: &App,
    r: &ExplainResult,
    steps: usize,
    features: usize,
    area: Rect,
) {
    let e = &r.explanation;
    let ExplainedInput::Dense(input) = &e.input else { return };
    let [signal, strip] = Layout::vertical([Constraint::Min(4), Constraint::Length(4)]).areas(area);
    // The first feature as a line, the per-step attribution (summed over features) as a strip.
    let points: Vec<(f64, f64)> = (0..steps).map(|s| (s as f64, input[s * features] as f64)).collect();
    let line = crate::tui::widgets::chart::Series::new("signal", points, app.theme.series(0), '*');
    let chart = super::themed(app, vec![line]);
    let block = panel(app, format!("Input: {steps} steps"));
    let inner = block.inner(signal);
    f.render_widget(block, signal);
    f.render_widget(chart, inner);
    let per_step: Vec<f32> =
        (0..steps).map(|s| (0..features).map(|k| e.attributions[s * features + k]).sum()).collect();
    let max = max_abs(&per_step);
    let block = panel(app, format!("Attribution per step · {}", e.method.name()));
    let inner = block.inner(strip);
    f.render_widget(block, strip);
    let width = inner.width as usize;
    let buf = f.buffer_mut();
    for x in 0..width {
        // Each cell covers a range of steps: show the one with the largest magnitude.
        let a = x * steps / width;
        let b = ((x + 1) * steps / width).max(a + 1).min(steps);
        let v = per_step[a..b].iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        for y in 0..inner.height {
            let cell = &mut buf[(inner.x + x as u16, inner.y + y)];
            if app.theme.colored() {
                cell.set_char(' ').set_bg(attribution_color(app, v, max));
            } else {
                cell.set_char(signed_glyph(v, max));
            }
        }
    }
}

pub(super) fn draw_text(f: &mut Frame, app: &App, r: &ExplainResult, area: Rect) {
    let e = &r.explanation;
    let ExplainedInput::Tokens { ids, words } = &e.input else { return };
    let max = max_abs(&e.attributions);
    let mut spans = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        if id == 0 {
            continue;
        }
        let word = words.as_ref().and_then(|w| w.get(i)).cloned().unwrap_or_else(|| format!("#{id}"));
        let v = e.attributions[i];
        let style = if app.theme.colored() {
            let bg = attribution_color(app, v, max);
            Style::default().bg(bg).fg(Color::Black)
        } else if v.abs() >= 0.4 * max {
            Style::default().add_modifier(if v > 0.0 {
                Modifier::BOLD | Modifier::UNDERLINED
            } else {
                Modifier::DIM
            })
        } else {
            Style::default()
        };
        let text = if app.theme.colored() {
            format!(" {word} ")
        } else {
            format!("{word}{} ", signed_glyph(v, max))
        };
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
    }
    let mut lines = vec![Line::from(spans), Line::from("")];
    for i in e.top(5) {
        let word = words.as_ref().and_then(|w| w.get(i)).cloned().unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(format!("{:>+9.4} ", e.attributions[i]), app.theme.muted()),
            Span::raw(word),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(panel(app, format!("Tokens · {}", e.method.name()))),
        area,
    );
}

pub(super) fn draw_tabular(f: &mut Frame, app: &App, r: &ExplainResult, area: Rect) {
    let e = &r.explanation;
    let max = max_abs(&e.attributions);
    let rows = area.height.saturating_sub(2) as usize;
    let half = (area.width as usize).saturating_sub(24) / 2;
    let lines: Vec<Line> = e
        .top(rows)
        .into_iter()
        .map(|i| {
            let v = e.attributions[i];
            let n = if max > 0.0 { ((v.abs() / max) * half as f32).round() as usize } else { 0 };
            let (left, right) = if v < 0.0 {
                (format!("{}{}", " ".repeat(half - n), "█".repeat(n)), " ".repeat(half))
            } else {
                (" ".repeat(half), format!("{}{}", "█".repeat(n), " ".repeat(half - n)))
            };
            let style = if app.theme.colored() {
                Style::default().fg(attribution_color(app, v.signum() * max, max))
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::styled(format!("f{i:<5}"), app.theme.muted()),
                Span::styled(left, style),
                Span::raw("│"),
                Span::styled(right, style),
                Span::raw(format!(" {v:+.3}")),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(panel(app, format!("Features by |attribution| · {}", e.method.name()))),
        area,
    );
}

/// The attribution scale for `±max`: blue (against) through white to red (for) across `width`,
/// or the glyph ramp without colour, with its end values.
pub(super) fn scale_legend(app: &App, max: f32, width: u16) -> Vec<Line<'static>> {
    let t = &app.theme;
    let bar = if t.colored() {
        let n = (width as usize).saturating_sub(4).max(8);
        let cells: Vec<Span> = (0..n)
            .map(|i| {
                let v = -max + 2.0 * max * i as f32 / (n - 1) as f32;
                Span::styled(" ", Style::default().bg(attribution_color(app, v, max)))
            })
            .collect();
        Line::from(cells)
    } else {
        Line::from("= - ,   . + #")
    };
    vec![
        bar,
        Line::from(Span::styled(
            format!("{:<8} 0 {:>8}", format!("-{max:.2}"), format!("+{max:.2}")),
            t.muted(),
        )),
    ]
}
