//! Drawing: one file per screen, plus the frame around them (header with the view tabs, footer
//! with the hints read from the views' key tables, the status line or the input being typed) and
//! the overlays (help, forms, confirmations). Views take `&App` and never change it; the state
//! they draw lives in `state/`, which never imports this module.

mod adversarial;
mod compare;
mod detail;
mod explain;
mod keys;
mod logs;
mod messages;
mod overlays;
mod overview;
mod playground;
mod run_table;
mod runs;
mod security;
mod service;
mod sweeps;
mod system;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::app::{App, Level, Metric, Mode, RunState, ShownStatus, View};
use super::keymap::Action;
use super::state::chart::series_for;
use super::widgets::chart::{GLYPHS, LineChart, Series, YUnit, ema, value_at};

/// The smallest terminal every view is laid out for.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    f.render_widget(Block::default().style(app.theme.base()), area);
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = vec![
            Line::from(Span::styled("terminal too small", app.theme.error())),
            Line::from(format!(
                "Vigil needs {}x{}; this one is {}x{}.",
                MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
            )),
            Line::from("Enlarge the window, or press q to quit."),
        ];
        f.render_widget(Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }), area);
        return;
    }
    // The message area grows to three lines for a message that does not fit on one, so the
    // end of it (usually what to do) is never cut off.
    let footer_h = status_lines(app, area.width).map_or(1, |l| l.len() as u16);
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(footer_h)])
            .areas(area);
    draw_header(f, app, header);
    match app.view {
        View::Overview => overview::draw(f, app, body),
        View::Runs => runs::draw(f, app, body),
        View::Detail => detail::draw(f, app, body),
        View::Compare => compare::draw(f, app, body),
        View::Logs => logs::draw(f, app, body),
        View::System => system::draw(f, app, body),
        View::Explain => explain::draw(f, app, body),
        View::Service => service::draw(f, app, body),
        View::Security => security::draw(f, app, body),
        View::Sweeps => sweeps::draw(f, app, body),
        View::Playground => playground::draw(f, app, body),
        View::Extra(_) => f.render_widget(panel(app, app.view_state(app.view).title()), body),
    }
    draw_footer(f, app, footer);
    overlays::draw(f, app, body);
}

fn draw_header(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut spans = vec![Span::styled(" Vigil ", t.accent()), Span::styled("│", t.muted())];
    let narrow = area.width < 100;
    for (i, v) in View::ALL.iter().enumerate() {
        // Narrow terminals name only the current view; the others keep their number key.
        let text = if narrow && *v != app.view {
            format!(" {} ", i + 1)
        } else {
            format!(" {} {} ", i + 1, v.title())
        };
        let style = if *v == app.view { t.selected() } else { t.muted() };
        spans.push(Span::styled(text, style));
    }
    if app.view == View::Sweeps {
        spans.push(Span::styled(" 0 Sweeps ", t.selected()));
    }
    if app.view == View::Playground {
        spans.push(Span::styled(
            format!(" {} Playground ", app.keymap.hint(Action::ShowPlayground)),
            t.selected(),
        ));
    }
    let active = app.active();
    let training = active.iter().filter(|r| r.info.status == crate::store::RunStatus::Running).count();
    let queued = active.iter().filter(|r| r.info.status == crate::store::RunStatus::Queued).count();
    let paused = active.iter().filter(|r| r.info.status == crate::store::RunStatus::Paused).count();
    let mut right = crate::text::plural(app.runs.len() as u64, "run", "runs");
    if training > 0 {
        right.push_str(&format!(" · {training} training"));
    }
    if paused > 0 {
        right.push_str(&format!(" · {paused} paused"));
    }
    if queued > 0 {
        right.push_str(&format!(" · {queued} queued"));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let room = (area.width as usize).saturating_sub(used + 1);
    if room > 4 {
        let right = if right.chars().count() > room { right.chars().take(room).collect() } else { right };
        spans.push(Span::raw(" ".repeat(room - right.chars().count())));
        spans.push(Span::styled(right, if training > 0 { t.ok() } else { t.muted() }));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let line = match &app.mode {
        Mode::Filter(text) => Line::from(vec![
            Span::styled("/", t.accent()),
            Span::raw(text.clone()),
            Span::styled("█", t.accent()),
            Span::styled("  Enter keeps · Esc clears · status:running spec:NAME key=value", t.muted()),
        ]),
        Mode::Command { input, .. } => {
            let options = super::app::completions(input, app);
            let mut hint = options.iter().take(6).cloned().collect::<Vec<_>>().join("  ");
            if options.len() > 6 {
                hint.push_str("  …");
            }
            Line::from(vec![
                Span::styled(":", t.accent()),
                Span::raw(input.clone()),
                Span::styled("█", t.accent()),
                Span::styled(format!("  Tab: {hint}"), t.muted()),
            ])
        }
        _ => match status_lines(app, area.width) {
            Some(lines) => {
                f.render_widget(Paragraph::new(lines), area);
                return;
            }
            None => hints(app),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The status line's message laid out in at most three lines of `width`, or `None` when no
/// message is shown (the footer shows the key hints). A notice (a run finished, failed or
/// diverged) stands out: reversed, with what happened first.
fn status_lines(app: &App, width: u16) -> Option<Vec<Line<'static>>> {
    if !matches!(app.mode, Mode::Normal | Mode::Messages { .. } | Mode::Help { .. }) {
        return None;
    }
    let s = app.status.as_ref()?;
    let t = &app.theme;
    let style = match s.level {
        Level::Info => t.info(),
        Level::Warn => t.warn(),
        Level::Error => t.error(),
    };
    let notice = app.messages.current().filter(|m| m.text == s.text).and_then(|m| m.notice);
    let lead = notice.map_or(String::new(), |n| format!(" ● {} ", n.label()));
    let width = width as usize;
    let room = width.saturating_sub(lead.chars().count() + 1);
    let more = format!("  ({} messages)", app.keymap.hint(Action::ShowMessages));
    let mut lines = super::state::messages::wrap(&s.text, room, 3);
    if lines.last().is_some_and(|l| l.chars().count() + more.chars().count() <= room) {
        lines.last_mut().expect("a line").push_str(&more);
    }
    let more_at = lines.len() - 1;
    Some(
        lines
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let mut spans = Vec::new();
                if notice.is_some() {
                    let pad = if i == 0 { lead.clone() } else { " ".repeat(lead.chars().count()) };
                    spans.push(Span::styled(pad, style.add_modifier(Modifier::REVERSED | Modifier::BOLD)));
                }
                let (body, hint) = match (i == more_at, text.strip_suffix(more.as_str())) {
                    (true, Some(b)) => (b.to_string(), more.clone()),
                    _ => (text, String::new()),
                };
                spans.push(Span::styled(format!(" {body}"), style));
                spans.push(Span::styled(hint, t.muted()));
                Line::from(spans)
            })
            .collect(),
    )
}

/// The key hints of the current view, from its key table and the keymap (so they follow a
/// user's bindings).
fn hints(app: &App) -> Line<'static> {
    let k = |a: Action| app.keymap.hint(a);
    let mut items = crate::tui::state::footer(app);
    // While the Playground's prompt is edited, its keys are the capture's, not the keymap's
    // (only Ctrl-C still quits).
    let mut tail = [(k(Action::Command), "command"), (k(Action::Quit), "quit")].to_vec();
    if let Some(editing) = app.playground.editing_hints().filter(|_| app.view == View::Playground) {
        items = editing.iter().map(|(k, w)| (k.to_string(), *w)).collect();
        tail = vec![("ctrl-c".to_string(), "quit")];
    }
    // Quit and the command line always show; the view's own keys fill the room left.
    let width = |items: &[(String, &'static str)]| {
        items.iter().map(|(k, w)| k.chars().count() + w.len() + 3).sum::<usize>()
    };
    let room = (app.size.0 as usize).saturating_sub(width(&tail));
    while width(&items) > room && items.len() > 1 {
        items.pop();
    }
    items.extend(tail);
    let mut spans = Vec::new();
    for (key, what) in items {
        spans.push(Span::styled(format!(" {key}"), app.theme.accent()));
        spans.push(Span::styled(format!(" {what} "), app.theme.muted()));
    }
    Line::from(spans)
}

/// A panel title cut to a panel `width` wide: whole ` · `-separated parts are dropped from the
/// end first (the first part names the panel), then the rest is cut with `…`.
pub(super) fn fit(title: &str, width: u16) -> String {
    let room = (width as usize).saturating_sub(4);
    if title.chars().count() <= room {
        return title.to_string();
    }
    let mut parts: Vec<&str> = title.split(" · ").collect();
    while parts.len() > 1 && parts.join(" · ").chars().count() > room {
        parts.pop();
    }
    let t = parts.join(" · ");
    if t.chars().count() <= room {
        t
    } else {
        let mut cut: String = t.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A bordered block with a title in the theme's colours.
pub(super) fn panel<'a>(app: &App, title: impl Into<String>) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border())
        .title(Span::styled(format!(" {} ", title.into()), app.theme.accent()))
}

/// A panel's block that shows whether it has the focus (Tab moves it): its border in the accent
/// colour, and thick once the focus has left the view's first (main) panel, so that a panel that
/// took the arrows from the view reads in NO_COLOR too. `name` is the panel's name in
/// [`crate::tui::state::panes::panels`].
pub(super) fn pane<'a>(app: &App, view: View, name: &str, title: impl Into<String>) -> Block<'a> {
    use crate::tui::state::panes;
    let b = panel(app, title);
    if !panes::has_focus(app, view, name) {
        return b;
    }
    let b = b.border_style(app.theme.accent());
    if panes::panels(app, view).first().copied() == Some(name) {
        b
    } else {
        b.border_type(ratatui::widgets::BorderType::Thick)
    }
}

/// The panel the view shows alone on its whole body (`z`), if any.
pub(super) fn zoomed(app: &App, view: View) -> Option<&'static str> {
    crate::tui::state::panes::zoomed(app, view)
}

/// The chart of one run (detail and overview): each series in its own colour, per-step series
/// smoothed over their faint raw line.
pub fn run_chart<'a>(app: &App, r: &RunState) -> (LineChart<'a>, Vec<(String, ratatui::style::Color, char)>) {
    let mut series = Vec::new();
    let mut legend = Vec::new();
    for (i, s) in series_for(r, &app.chart).into_iter().enumerate() {
        let color = app.theme.series(i);
        let glyph = GLYPHS[i % GLYPHS.len()];
        if s.per_step && app.chart.smoothing && app.chart.weight > 0.0 {
            let smooth = ema(&s.points, app.chart.weight);
            let faint = app.theme.faint(i);
            series.push(Series::new(format!("{} (raw)", s.name), s.points, faint, glyph).faint());
            series.push(Series::new(s.name.clone(), smooth, color, glyph));
        } else {
            series.push(Series::new(s.name.clone(), s.points, color, glyph));
        }
        legend.push((s.name.to_string(), color, glyph));
    }
    (chart_with(app, series), legend)
}

/// A run's curves in a titled panel with the legend (and cursor readout) under the chart.
pub(super) fn draw_run_chart(f: &mut Frame, app: &App, r: &RunState, block: Block, area: Rect) {
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [chart_area, legend_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(inner);
    let (chart, legend) = run_chart(app, r);
    let line = legend_line(app, &chart, &legend);
    f.render_widget(chart, chart_area);
    f.render_widget(Paragraph::new(line), legend_area);
}

/// A chart with the app's options applied.
pub fn chart_with<'a>(app: &App, series: Vec<Series<'a>>) -> LineChart<'a> {
    let window = app.chart.window;
    let extent = window.or_else(|| super::widgets::chart::x_extent(&series));
    let cursor = match (app.chart.cursor, extent) {
        (Some(c), Some((lo, hi))) => Some(lo + c * (hi - lo)),
        _ => None,
    };
    let y_unit = if app.chart.metric == Metric::Accuracy { YUnit::Fraction } else { YUnit::Plain };
    themed(app, series)
        .x_window(window)
        .log_y(app.chart.log_y)
        .cursor(cursor)
        .y_unit(y_unit)
        .x_unit(app.chart.x_axis.unit())
}

/// A chart in the theme's colours.
pub fn themed<'a>(app: &App, series: Vec<Series<'a>>) -> LineChart<'a> {
    LineChart::new(series).styled(app.theme.colored(), app.theme.muted(), app.theme.accent())
}

/// The legend line under a chart, with the value of each series at the cursor when there is one.
pub fn legend_line(
    app: &App,
    chart: &LineChart,
    legend: &[(String, ratatui::style::Color, char)],
) -> Line<'static> {
    let mut spans = Vec::new();
    if let Some(x) = chart.cursor {
        spans.push(Span::styled(
            format!("{} {} ", app.chart.x_axis.label(), super::widgets::chart::fmt_num(x)),
            app.theme.accent(),
        ));
    }
    for (name, color, glyph) in legend {
        let style = if app.theme.colored() {
            Style::default().fg(*color)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        let mark = if app.theme.colored() { '━' } else { *glyph };
        spans.push(Span::styled(format!("{mark} "), style));
        let mut text = name.clone();
        if let Some(x) = chart.cursor {
            // The smoothed series carries the name; its value is what the eye follows.
            if let Some(s) = chart.series.iter().find(|s| s.name == *name) {
                if let Some((_, v)) = value_at(&s.points, x) {
                    text.push_str(&format!(" {}", super::widgets::chart::fmt_num(v)));
                }
                if let Some(raw) = chart.series.iter().find(|r| r.name == format!("{name} (raw)"))
                    && let Some((_, v)) = value_at(&raw.points, x)
                {
                    text.push_str(&format!(" (raw {})", super::widgets::chart::fmt_num(v)));
                }
            }
        }
        spans.push(Span::styled(format!("{text}  "), app.theme.base()));
    }
    Line::from(spans)
}

/// The chart options as a short line: metric, smoothing, scale, x axis, zoom.
pub fn chart_caption(app: &App) -> String {
    let c = &app.chart;
    let mut parts = vec![c.label()];
    parts.push(if c.smoothing { format!("smoothing {:.1}", c.weight) } else { "raw".into() });
    if c.log_y {
        parts.push("log y".into());
    }
    parts.push(format!("x: {}", c.x_axis.label()));
    if let Some((lo, hi)) = c.window {
        parts.push(format!(
            "zoom {}–{}",
            super::widgets::chart::fmt_num(lo),
            super::widgets::chart::fmt_num(hi)
        ));
    }
    parts.join(" · ")
}

pub use crate::store::fmt_duration;

/// The style of a run status.
pub fn status_style(app: &App, status: ShownStatus) -> Style {
    use crate::store::RunStatus;
    match status {
        ShownStatus::Run(RunStatus::Running) => app.theme.ok(),
        ShownStatus::Run(RunStatus::Paused | RunStatus::Queued) => app.theme.warn(),
        ShownStatus::Run(RunStatus::Failed) | ShownStatus::Interrupted => app.theme.error(),
        ShownStatus::Run(RunStatus::Cancelled) => app.theme.muted(),
        ShownStatus::Run(RunStatus::Completed) => app.theme.base(),
    }
}

/// A text progress bar that reads without colour: `[#####.....]`.
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}
