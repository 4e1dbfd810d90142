//! Explain beside an attack: a test example and its adversarial version (from a set that
//! `vigil attack` saved with the run), each with its attribution map on one shared scale, and
//! both predictions. Images are a grid, inputs left and attributions right, clean above and
//! adversarial below; sequences, text and tabular inputs are drawn twice, clean above
//! adversarial, each under a caption. Draws only; the Explain view decides when.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::explain::{
    RAMP, attribution_color, channel_mean, draw_sequence, draw_tabular, draw_text, grey, image_cells,
    max_abs, signed_glyph,
};
use super::{bar, panel};
use crate::engine::explain::{AdversarialResult, ExplainResult};
use crate::ml::data::InputShape;
use crate::ml::explain::{ExplainedInput, Explanation};
use crate::tui::app::App;

fn class(classes: &[String], c: usize) -> String {
    classes.get(c).cloned().unwrap_or_else(|| c.to_string())
}

/// `8 71.3%`: the predicted class and its probability.
fn verdict(e: &Explanation, classes: &[String]) -> String {
    let p = e.probabilities.get(e.predicted).copied().unwrap_or(0.0);
    format!("{} {:.1}%", class(classes, e.predicted), 100.0 * p)
}

pub fn draw(f: &mut Frame, app: &App, r: &AdversarialResult, classes: &[String], area: Rect) {
    let side = if area.width >= 100 { 34 } else { 26 };
    let [main, right] = Layout::horizontal([Constraint::Min(30), Constraint::Length(side)]).areas(area);
    draw_side(f, app, r, classes, right);
    match r.clean.layout {
        InputShape::Image { channels, height, width } => {
            draw_images(f, app, r, classes, channels, height, width, main)
        }
        _ => {
            let [top, bottom] =
                Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(main);
            let attack = r.attack.describe();
            for (e, what, area) in [(&r.clean, "clean".to_string(), top), (&r.adversarial, attack, bottom)] {
                let [caption, rest] =
                    Layout::vertical([Constraint::Length(1), Constraint::Min(3)]).areas(area);
                let style = if e.predicted == r.clean.predicted { app.theme.ok() } else { app.theme.error() };
                f.render_widget(
                    Paragraph::new(Line::from(vec![
                        Span::styled(format!(" {what} · predicted "), app.theme.muted()),
                        Span::styled(verdict(e, classes), style),
                    ])),
                    caption,
                );
                let one = ExplainResult {
                    run: r.run.clone(),
                    index: r.index,
                    explanation: e.clone(),
                    millis: r.millis,
                };
                match e.layout {
                    InputShape::Sequence { steps, features } => {
                        draw_sequence(f, app, &one, steps, features, rest)
                    }
                    InputShape::Text { .. } => draw_text(f, app, &one, rest),
                    _ => draw_tabular(f, app, &one, rest),
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // the layout's three numbers travel together with the frame
fn draw_images(
    f: &mut Frame,
    app: &App,
    r: &AdversarialResult,
    classes: &[String],
    c: usize,
    h: usize,
    w: usize,
    area: Rect,
) {
    let (ExplainedInput::Dense(clean), ExplainedInput::Dense(adv)) = (&r.clean.input, &r.adversarial.input)
    else {
        return;
    };
    let images = [channel_mean(clean, c, h, w), channel_mean(adv, c, h, w)];
    let maps =
        [channel_mean(&r.clean.attributions, c, h, w), channel_mean(&r.adversarial.attributions, c, h, w)];
    // One grey scale and one attribution scale for both rows, so that they compare.
    let (lo, hi) = images.iter().flatten().fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let max = max_abs(&maps[0]).max(max_abs(&maps[1]));
    let norm = move |v: f32| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    let rows = Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).split(area);
    let titles = [
        format!("clean · {}", verdict(&r.clean, classes)),
        format!("ε={} · {}", crate::ml::attack::fmt_num(r.attack.eps), verdict(&r.adversarial, classes)),
    ];
    for (i, row) in rows.iter().enumerate() {
        let [left, right] =
            Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(*row);
        let fooled = i == 1 && r.adversarial.predicted != r.clean.predicted;
        let block = panel(app, titles[i].clone()).border_style(if fooled {
            app.theme.error()
        } else {
            app.theme.border()
        });
        let inner = block.inner(left);
        f.render_widget(block, left);
        image_cells(
            app,
            &images[i],
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
        let which = if i == 0 { "clean" } else { "adversarial" };
        let block = panel(app, format!("{} · {which}", r.clean.method.name()));
        let inner = block.inner(right);
        f.render_widget(block, right);
        image_cells(
            app,
            &maps[i],
            h,
            w,
            inner,
            &|v| (attribution_color(app, v, max), signed_glyph(v, max)),
            f,
        );
    }
}

fn draw_side(f: &mut Frame, app: &App, r: &AdversarialResult, classes: &[String], area: Rect) {
    let t = &app.theme;
    let label = app.explain.set.as_ref().and_then(|s| s.examples.get(r.index)).map(|e| e.label);
    let mark = |e: &Explanation| match label {
        Some(l) if l == e.predicted => Span::styled(" ✓", t.ok()),
        Some(_) => Span::styled(" ✗", t.error()),
        None => Span::raw(""),
    };
    let mut lines = vec![
        Line::from(Span::styled(r.attack.label.clone(), t.accent())),
        Line::from(vec![
            Span::styled("ε ", t.muted()),
            Span::raw(crate::ml::attack::fmt_num(r.attack.eps)),
            Span::styled(format!("  ‖δ‖{} ", if r.norm_name == "L2" { "₂" } else { "∞" }), t.muted()),
            Span::raw(format!("{:.3}", r.norm)),
        ]),
        Line::from(Span::styled(format!("accuracy under it {:.1}%", 100.0 * r.attack.accuracy), t.muted())),
        Line::from(""),
        Line::from(vec![
            Span::styled("clean       ", t.muted()),
            Span::raw(verdict(&r.clean, classes)),
            mark(&r.clean),
        ]),
        Line::from(vec![
            Span::styled("adversarial ", t.muted()),
            Span::raw(verdict(&r.adversarial, classes)),
            mark(&r.adversarial),
        ]),
        Line::from(""),
        Line::from(Span::styled("top classes, adversarial", t.muted())),
    ];
    let w = (area.width as usize).saturating_sub(16).max(4);
    for (c, p) in r.adversarial.ranked_classes().into_iter().take(3) {
        let style = if c == r.adversarial.predicted { t.accent() } else { t.base() };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<6.6} {:>6.2}% ", class(classes, c), 100.0 * p), style),
            Span::styled(bar(p as f64, w), t.info()),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(vec![Span::styled("method ", t.muted()), Span::raw(r.clean.method.name())]));
    lines.push(Line::from(Span::styled("each for its prediction", t.muted())));
    let max = max_abs(&r.clean.attributions).max(max_abs(&r.adversarial.attributions));
    lines.extend(super::explain::scale_legend(app, max, area.width));
    f.render_widget(Paragraph::new(lines).block(panel(app, "Clean vs adversarial")), area);
}
