//! Security: the attack lab and the service's detectors in one place. Robustness curves of the
//! runs (test accuracy under each saved attack against ε), defended and undefended overlaid;
//! the service's extraction watch per key (PRADA's W over the key's requests, and whether it is
//! in alarm; for a language model's keys, `llm` in place of W and, under the table, why the
//! distillation watch put a key in alarm); and the requests the detectors flagged, newest first. It reads what the store
//! follower and the access-log follower put in the state; the adversarial examples are browsed
//! in the Explain view (`a`). A text model attacked with HotFlip adds a panel of its own: the
//! success rate against the number of tokens changed, and the adversarial sentences.

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{fit, pane};
use crate::ml::attack::hotflip::FlipReport;
use crate::serve::access_log::Flag;
use crate::tui::app::{App, RunState, View};
use crate::tui::state::chart::robustness_series;
use crate::tui::state::panes;
use crate::tui::widgets::chart::{GLYPHS, Series, YUnit};

/// Unicode eighths for W from 0.8 (lowest) to 1.0: below 0.8 is as low as it draws.
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const ASCII_SPARK: [char; 8] = ['_', '.', ',', '-', '~', '=', '^', '"'];

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    // `z`: the focused panel alone, on the whole body.
    match super::zoomed(app, View::Security) {
        Some("Extraction watch") => return draw_watch(f, app, area),
        Some("Flagged requests") => return draw_alerts(f, app, area),
        Some("Token flips") => return draw_flips(f, app, area),
        Some(_) => return draw_curves(f, app, area),
        None => {}
    }
    let [top, bottom] = Layout::vertical([Constraint::Percentage(55), Constraint::Min(6)]).areas(area);
    let attacked = crate::tui::state::chart::attacked(app);
    let flips = attacked.iter().any(|r| !r.flips.is_empty());
    let curves = attacked.iter().any(|r| !r.attacks.is_empty());
    match (curves, flips) {
        (true, true) => {
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(top);
            draw_curves(f, app, left);
            draw_flips(f, app, right);
        }
        (false, true) => draw_flips(f, app, top),
        _ => draw_curves(f, app, top),
    }
    let [keys, alerts] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    draw_watch(f, app, keys);
    draw_alerts(f, app, alerts);
}

fn draw_curves(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let curves = robustness_series(app);
    if curves.is_empty() {
        let msg = "No run has been attacked yet: `vigil attack RUN --method pgd` measures a robustness \
                   curve (test accuracy against ε), and this panel overlays the runs' curves, a \
                   defended run (adversarial training) beside an undefended one.";
        f.render_widget(
            Paragraph::new(Span::styled(msg, t.muted()))
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(pane(app, View::Security, "Robustness", "Robustness")),
            area,
        );
        return;
    }
    let block = pane(
        app,
        View::Security,
        "Robustness",
        fit("Robustness · test accuracy under attack against ε · marked runs, or all", area.width),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [plot, legend_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(2)]).areas(inner);
    let mut series = Vec::new();
    let mut legend = Vec::new();
    for (slot, (name, points)) in curves.into_iter().enumerate() {
        let glyph = GLYPHS[slot % GLYPHS.len()];
        legend.push((name.clone(), t.series(slot), glyph));
        series.push(Series::new(name, points, t.series(slot), glyph));
    }
    let chart = super::themed(app, series).y_range(0.0, 1.0).y_unit(YUnit::Fraction).x_unit("ε");
    f.render_widget(chart, plot);
    let spans: Vec<Span> = legend
        .iter()
        .flat_map(|(name, color, glyph)| {
            let style = if t.colored() {
                Style::default().fg(*color)
            } else {
                Style::default().add_modifier(Modifier::BOLD)
            };
            [
                Span::styled(format!("{} ", if t.colored() { '━' } else { *glyph }), style),
                Span::raw(format!("{name}  ")),
            ]
        })
        .collect();
    f.render_widget(
        Paragraph::new(Line::from(spans)).wrap(ratatui::widgets::Wrap { trim: true }),
        legend_area,
    );
}

/// HotFlip on the attacked runs: first each report's success rate at each number of tokens
/// changed (so every run's figures show before any sentence), then the adversarial sentences of
/// each, the changed tokens in `*stars*`, bold too, so they read without colour. ↑↓ scroll the
/// panel when focused (Tab), `z` gives it the whole body.
fn draw_flips(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let reports: Vec<(&RunState, &FlipReport)> = crate::tui::state::chart::attacked(app)
        .into_iter()
        .flat_map(|r| r.flips.iter().map(move |rep| (r, rep)))
        .collect();
    let mut lines: Vec<Line> = Vec::new();
    for (r, rep) in &reports {
        lines.push(Line::from(vec![
            Span::styled(format!("{} {}", r.info.id, rep.label()), t.accent().add_modifier(Modifier::BOLD)),
            Span::styled(format!(" · {} attacked", rep.attacked), t.muted()),
        ]));
        let mut rates = vec![Span::styled("fooled ", t.muted())];
        for p in &rep.points {
            rates.push(Span::styled(format!("≤{} ", p.flips), t.muted()));
            rates.push(Span::raw(format!("{:.0}%  ", 100.0 * p.success_rate)));
        }
        lines.push(Line::from(rates));
    }
    for (r, rep) in &reports {
        // Reports saved before they carried the class names fall back on the run's evaluation.
        let classes: &[String] = if rep.classes.is_empty() {
            r.evaluation.as_ref().map(|e| e.classes.as_slice()).unwrap_or(&[])
        } else {
            &rep.classes
        };
        let class = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
        if reports.len() > 1 {
            lines.push(Line::from(Span::styled(format!("{} {}:", r.info.id, rep.key), t.muted())));
        }
        for e in &rep.adversarial {
            let mut spans = vec![Span::styled(
                format!("#{} {}→{} ", e.index, class(e.label), class(e.adversarial_pred)),
                t.muted(),
            )];
            // Odd pieces between the stars are the changed tokens; the stars stay.
            for (i, piece) in e.adversarial.split('*').enumerate() {
                if i % 2 == 1 {
                    spans.push(Span::styled(format!("*{piece}*"), t.error().add_modifier(Modifier::BOLD)));
                } else {
                    spans.push(Span::raw(piece.to_string()));
                }
            }
            lines.push(Line::from(spans));
        }
    }
    let skip = panes::scroll(app, View::Security, "Token flips");
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true }).scroll((skip, 0)).block(pane(
            app,
            View::Security,
            "Token flips",
            fit("Token flips · HotFlip, success by tokens changed", area.width),
        )),
        area,
    );
}

/// Per key: requests seen in the console's tail, PRADA's W now and its trend, the alarm.
struct KeyWatch {
    requests: usize,
    w: Vec<f64>,
    alarm: bool,
    ood: usize,
    /// The key called a language model (its watch is the distillation watch, which has no W).
    generative: bool,
}

fn draw_watch(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut keys: BTreeMap<&str, KeyWatch> = BTreeMap::new();
    // Why each language-model key is in alarm: the latest reason its lines give.
    let mut why: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &app.service.tail {
        let Some(k) = r.key.as_deref() else { continue };
        let e = keys.entry(k).or_insert(KeyWatch {
            requests: 0,
            w: vec![],
            alarm: false,
            ood: 0,
            generative: false,
        });
        e.requests += 1;
        e.generative |= r.generation.is_some();
        if let Some(reason) = r.generation.as_ref().and_then(|g| g.extraction.as_deref()) {
            why.insert(k, reason);
        }
        e.w.extend(r.extraction_w);
        e.alarm |= r.flags.contains(&Flag::Extraction);
        e.ood += usize::from(r.flags.contains(&Flag::Ood));
    }
    // Keys in alarm first, then the lowest W: what needs a look is never below the fold.
    let mut keys: Vec<(&str, KeyWatch)> = keys.into_iter().collect();
    keys.sort_by(|(ka, a), (kb, b)| {
        let w = |k: &KeyWatch| k.w.last().copied().unwrap_or(f64::INFINITY);
        b.alarm.cmp(&a.alarm).then(w(a).total_cmp(&w(b))).then(ka.cmp(kb))
    });
    let key_w = keys.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(3).clamp(3, 16) as u16;
    // key, reqs, W, alarm, ood and the gaps between them; the trend takes the rest.
    let fixed = key_w + 5 + 6 + 5 + 4 + 5 + 2;
    let spark_w = area.width.saturating_sub(fixed).clamp(4, 24) as usize;
    // The reasons go under the table, wrapped, in at most half the panel.
    let block_inner = area.width.saturating_sub(2).max(1) as usize;
    let why_lines: Vec<Line> = why
        .iter()
        .map(|(k, reason)| {
            Line::from(vec![Span::styled(format!("{k}: "), t.error()), Span::raw(reason.to_string())])
        })
        .collect();
    let why_rows: usize =
        why.iter().map(|(k, r)| (k.chars().count() + 2 + r.chars().count()).div_ceil(block_inner)).sum();
    let why_h = (why_rows as u16).min(area.height.saturating_sub(2) / 2);
    let room = area.height.saturating_sub(3 + why_h) as usize;
    // Focused, ↑↓ scroll the keys (those in alarm stay first).
    let skip =
        (panes::scroll(app, View::Security, "Extraction watch") as usize).min(keys.len().saturating_sub(1));
    let hidden = keys.len().saturating_sub(room + skip);
    let header =
        Row::new(["key", "reqs", "W", "", "trend", "ood"].map(|h| Cell::from(Span::styled(h, t.muted()))));
    let rows = keys.iter().skip(skip).take(room).map(|(k, w)| {
        let ramp = if t.colored() { SPARK } else { ASCII_SPARK };
        let trend: String = w.w[w.w.len().saturating_sub(spark_w)..]
            .iter()
            .map(|v| ramp[(((v - 0.8) / 0.2).clamp(0.0, 0.999) * 8.0) as usize])
            .collect();
        let none = if w.generative { "llm" } else { "-" };
        let current = w.w.last().map_or(Span::styled(none, t.muted()), |v| Span::raw(format!("{v:.3}")));
        let alarm = if w.alarm { Span::styled("alarm", t.error()) } else { Span::raw("") };
        Row::new(vec![
            Cell::from(short_key(k, key_w as usize)),
            Cell::from(w.requests.to_string()),
            Cell::from(current),
            Cell::from(alarm),
            Cell::from(Span::styled(trend, if w.alarm { t.error() } else { t.info() })),
            Cell::from(w.ood.to_string()),
        ])
    });
    let in_alarm = keys.iter().filter(|(_, w)| w.alarm).count();
    let mut title = format!("Extraction · {} keys", keys.len());
    if in_alarm > 0 {
        title.push_str(&format!(" · {in_alarm} in alarm"));
    }
    if skip > 0 {
        title.push_str(&format!(" · {skip} above"));
    }
    if hidden > 0 {
        title.push_str(&format!(" · {hidden} more below"));
    }
    title.push_str(" · PRADA W, alarm < 0.9");
    let block = pane(app, View::Security, "Extraction watch", fit(&title, area.width));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [table_area, why_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(why_h)]).areas(inner);
    if why_h > 0 {
        f.render_widget(Paragraph::new(why_lines).wrap(ratatui::widgets::Wrap { trim: true }), why_area);
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(key_w),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(spark_w as u16),
            Constraint::Length(4),
        ],
    )
    .header(header);
    f.render_widget(table, table_area);
}

/// The input detector's two figures, for the first attacked run that has them: the share of
/// benign traffic it flags and of PGD inputs at the ε nearest 0.1, which says how far to trust
/// its `ood` flags below.
fn detector_figures(app: &App) -> Option<String> {
    crate::tui::state::chart::attacked(app).into_iter().find_map(|r| {
        let c = r.attacks.iter().find(|c| c.benign_flagged.is_some() && c.key.starts_with("pgd"))?;
        let (benign, detected, eps) = c.detector_figures()?;
        Some(format!(
            "ood flags {:.1}% of benign, {:.1}% of PGD ε={} ({})",
            100.0 * benign,
            100.0 * detected,
            crate::ml::attack::fmt_num(eps),
            r.info.id
        ))
    })
}

/// A key's name cut to `width`, keeping its end (names of the form `team-alice` differ there).
fn short_key(k: &str, width: usize) -> String {
    let n = k.chars().count();
    if n <= width {
        k.to_string()
    } else {
        format!("…{}", k.chars().skip(n + 1 - width).collect::<String>())
    }
}

fn draw_alerts(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let figures = detector_figures(app);
    let room = (area.height.saturating_sub(2) as usize).saturating_sub(usize::from(figures.is_some()));
    let lines: Vec<Line> = app
        .service
        .tail
        .iter()
        .rev()
        .filter(|r| !r.flags.is_empty())
        .skip(panes::scroll(app, View::Security, "Flagged requests") as usize)
        .take(room)
        .map(|r| {
            Line::from(vec![
                Span::styled(format!("{} ", r.time.get(11..19).unwrap_or(&r.time)), t.muted()),
                Span::styled(format!("{} ", r.flags.join(",")), t.error()),
                Span::raw(format!("{} {} ", r.key.as_deref().unwrap_or("-"), r.status)),
                Span::styled(r.request_id.clone(), t.muted()),
            ])
        })
        .collect();
    let mut body = if lines.is_empty() {
        vec![Line::from(Span::styled("no flagged request in the log's tail", t.muted()))]
    } else {
        lines
    };
    if let Some(figures) = figures {
        body.insert(0, Line::from(Span::styled(figures, t.info())));
    }
    f.render_widget(
        Paragraph::new(body).block(pane(
            app,
            View::Security,
            "Flagged requests",
            fit("Flagged requests · newest first", area.width),
        )),
        area,
    );
}
