//! Sweeps: the store's hyperparameter sweeps with their progress (done, running, pending,
//! stopped) and best so far; for the selected one, its trials sortable by objective and by each
//! varied parameter (a Slurm trial's job state beside its status), the best-so-far curve against
//! trials, and one braille scatter per parameter of its value against the objective. Braille
//! dots carry no colour, so the scatters read the same under NO_COLOR.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Widget};

use super::{pane, panel};
use crate::engine::sweeps::SweepFeed;
use crate::sweep::path::{format_float, show};
use crate::sweep::{SweepState, TrialRecord, TrialStatus};
use crate::tui::app::{App, View};
use crate::tui::state::sweeps::{TrialSort, progress};
use crate::tui::widgets::chart::{GLYPHS, Series};

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.sweeps;
    let t = &app.theme;
    if s.sweeps.is_empty() {
        let msg = "No sweeps yet: `vigil sweep models/digits-mlp.sweep.ron` runs one here (`--on slurm` \
                   on a cluster), and this view follows its trials, whichever process or node runs them.";
        f.render_widget(
            Paragraph::new(Span::styled(msg, t.muted()))
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(panel(app, "Sweeps")),
            area,
        );
        return;
    }
    // `z`: the focused panel alone, on the whole body.
    let feed = s.current();
    match (super::zoomed(app, View::Sweeps), feed) {
        (Some("Sweeps"), _) => return draw_list(f, app, area),
        (Some("Best so far"), Some(feed)) => return draw_best(f, app, &feed.state, area),
        (Some("Scatter"), Some(feed)) => return draw_scatters(f, app, &feed.state, area),
        (Some(_), Some(feed)) => return draw_trials(f, app, feed, area),
        _ => {}
    }
    let list_rows = s.sweeps.len().min(if area.height >= 40 { 6 } else { 3 }) as u16;
    let plots = if area.height >= 40 { 14 } else { 8 };
    let [list, trials, bottom] =
        Layout::vertical([Constraint::Length(list_rows + 3), Constraint::Min(5), Constraint::Length(plots)])
            .areas(area);
    draw_list(f, app, list);
    let Some(feed) = s.current() else { return };
    draw_trials(f, app, feed, trials);
    let [best, scatters] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    draw_best(f, app, &feed.state, best);
    draw_scatters(f, app, &feed.state, scatters);
}

/// An objective as the tables show it: percent for accuracies, the number for losses.
fn objective_text(state: &SweepState, v: Option<f64>) -> String {
    match v {
        Some(v) if state.metric.is_fraction() => format!("{:.2}%", 100.0 * v),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    }
}

fn draw_list(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.sweeps;
    let t = &app.theme;
    let header = Row::new(
        ["sweep", "on", "method", "done/run/pend/stop", "best"]
            .map(|h| Cell::from(Span::styled(h, t.muted()))),
    );
    let rows = s.sweeps.iter().map(|feed| {
        let st = &feed.state;
        let (done, running, pending, stopped) = progress(st);
        let best = st
            .best()
            .map(|b| format!("{} (trial {})", objective_text(st, b.objective), b.number))
            .unwrap_or_else(|| "-".into());
        let state = if st.finished { " ✓" } else { "" };
        Row::new(vec![
            Cell::from(format!("{}{state}", st.id)),
            Cell::from(st.backend.as_str()),
            Cell::from(st.method.clone()),
            Cell::from(format!("{done}/{running}/{pending}/{stopped}")),
            Cell::from(best),
        ])
    });
    let widths = [
        Constraint::Min(20),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(18),
        Constraint::Length(20),
    ];
    let title = format!("Sweeps ({}) · ←→ selects", s.sweeps.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(pane(app, View::Sweeps, "Sweeps", title))
        .row_highlight_style(t.selected())
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(s.selected.min(s.sweeps.len() - 1)));
    f.render_stateful_widget(table, area, &mut state);
}

fn status_style(app: &App, status: TrialStatus) -> Style {
    let t = &app.theme;
    match status {
        TrialStatus::Running => t.ok(),
        TrialStatus::Planned | TrialStatus::Pending => t.warn(),
        TrialStatus::Failed => t.error(),
        TrialStatus::Pruned | TrialStatus::Cancelled => t.muted(),
        TrialStatus::Completed => t.base(),
    }
}

/// A trial's status, with its Slurm job's state while it has one worth saying.
fn status_text(feed: &SweepFeed, trial: &TrialRecord) -> String {
    match feed.jobs.get(&trial.run) {
        Some(job) if trial.status.is_active() => job.describe(),
        Some(job) if matches!(job.state.as_str(), "OUT_OF_MEMORY" | "TIMEOUT" | "NODE_FAIL") => {
            format!("{} ({})", trial.status, job.state.to_lowercase().replace('_', " "))
        }
        _ => trial.status.to_string(),
    }
}

fn draw_trials(f: &mut Frame, app: &App, feed: &SweepFeed, area: Rect) {
    let s = &app.sweeps;
    let t = &app.theme;
    let st = &feed.state;
    let rows = s.rows();
    let title = format!(
        "{} · {} on {} · {} of {} trials · sort: {} {}",
        st.id,
        st.spec,
        st.backend.as_str(),
        st.trials.len(),
        st.budget,
        s.sort_label(),
        if s.reversed { "↑" } else { "↓" }
    );
    let mut header: Vec<String> = vec!["#".into(), "status".into(), st.metric.as_str().into(), "ep".into()];
    header.extend(st.parameters.iter().cloned());
    // The run's id only where it fits whole; at 80 columns Enter opens it.
    let wide = area.width >= 110;
    if wide {
        header.push("run".into());
    }
    let sort_col = match s.sort {
        TrialSort::Number => 0,
        TrialSort::Objective => 2,
        TrialSort::Param(i) => 4 + i,
    };
    let header = Row::new(
        header
            .into_iter()
            .enumerate()
            .map(|(i, h)| Cell::from(Span::styled(h, if i == sort_col { t.accent() } else { t.muted() }))),
    );
    let body = rows.iter().map(|r| {
        let mut cells = vec![
            Cell::from(r.number.to_string()),
            Cell::from(Span::styled(status_text(feed, r), status_style(app, r.status))),
            Cell::from(objective_text(st, r.objective)),
            Cell::from(r.epoch.to_string()),
        ];
        cells.extend(st.parameters.iter().map(|p| Cell::from(r.params.get(p).map(show).unwrap_or_default())));
        if wide {
            cells.push(Cell::from(r.run.to_string()));
        }
        Row::new(cells)
    });
    let mut widths =
        vec![Constraint::Length(2), Constraint::Length(26), Constraint::Length(12), Constraint::Length(3)];
    widths.extend(st.parameters.iter().map(|p| Constraint::Length(p.chars().count().clamp(8, 14) as u16)));
    if wide {
        widths.push(Constraint::Min(18));
    }
    let table = Table::new(body, widths)
        .header(header)
        .block(pane(app, View::Sweeps, "Trials", title))
        .row_highlight_style(t.selected())
        .column_spacing(1);
    let mut state =
        TableState::default().with_selected((!rows.is_empty()).then(|| s.cursor.min(rows.len() - 1)));
    f.render_stateful_widget(table, area, &mut state);
    // The note of the trial under the cursor (why it failed, where ASHA pruned it).
    if let Some(note) = s.selected_trial().and_then(|r| r.note.clone()) {
        let y = area.y + area.height - 1;
        let text: String =
            format!(" {note} ").chars().take((area.width as usize).saturating_sub(4)).collect();
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(text, t.muted()))),
            Rect { x: area.x + 2, y, width: area.width.saturating_sub(4), height: 1 },
        );
    }
}

fn draw_best(f: &mut Frame, app: &App, st: &SweepState, area: Rect) {
    let points: Vec<(f64, f64)> = st
        .best_so_far()
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|v| (i as f64, if st.metric.is_fraction() { 100.0 * v } else { v })))
        .collect();
    let block = pane(app, View::Sweeps, "Best so far", format!("best {} so far / trial", st.metric.as_str()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if points.is_empty() {
        f.render_widget(Paragraph::new(Span::styled("no trial has an epoch yet", app.theme.muted())), inner);
        return;
    }
    let series = vec![Series::new("best", points, app.theme.series(0), GLYPHS[0])];
    f.render_widget(super::themed(app, series), inner);
}

fn draw_scatters(f: &mut Frame, app: &App, st: &SweepState, area: Rect) {
    let n = st.parameters.len().clamp(1, 3);
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, n as u32); n]).split(area);
    for (i, name) in st.parameters.iter().take(n).enumerate() {
        let block = pane(app, View::Sweeps, "Scatter", format!("{} / {name}", st.metric.as_str()));
        let inner = block.inner(areas[i]);
        f.render_widget(block, areas[i]);
        let (xs, labels) = coordinates(st, name);
        let pts: Vec<(f64, f64)> = st
            .trials
            .iter()
            .zip(&xs)
            .filter_map(|(t, x)| Some(((*x)?, t.objective.filter(|v| v.is_finite())?)))
            .collect();
        if pts.is_empty() || inner.height < 3 || inner.width < 6 {
            continue;
        }
        let [plot, axis] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        Scatter { points: &pts, style: app.theme.accent() }.render(plot, f.buffer_mut());
        let width = axis.width as usize;
        let (lo, hi) = (labels.0, labels.1);
        let pad = width.saturating_sub(lo.chars().count() + hi.chars().count());
        f.render_widget(
            Paragraph::new(Span::styled(format!("{lo}{}{hi}", " ".repeat(pad)), app.theme.muted())),
            axis,
        );
    }
}

/// Each trial's x for a parameter, and the axis' end labels: numbers on a log axis when they
/// span more than a decade and are positive, list values by their place in order of first use.
fn coordinates(st: &SweepState, name: &str) -> (Vec<Option<f64>>, (String, String)) {
    let values: Vec<Option<&serde_json::Value>> = st.trials.iter().map(|t| t.params.get(name)).collect();
    let nums: Vec<Option<f64>> = values.iter().map(|v| v.and_then(|v| v.as_f64())).collect();
    if nums.iter().any(Option::is_some) {
        let present: Vec<f64> = nums.iter().flatten().copied().collect();
        let (lo, hi) =
            present.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
        let log = lo > 0.0 && hi / lo > 10.0;
        let xs = nums.iter().map(|x| x.map(|x| if log { x.ln() } else { x })).collect();
        return (xs, (format_float(lo), format!("{}{}", format_float(hi), if log { " (log)" } else { "" })));
    }
    let mut seen: Vec<String> = Vec::new();
    let xs = values
        .iter()
        .map(|v| {
            let text = v.map(show)?;
            let i = seen.iter().position(|s| *s == text).unwrap_or_else(|| {
                seen.push(text.clone());
                seen.len() - 1
            });
            Some(i as f64)
        })
        .collect();
    (xs, (seen.first().cloned().unwrap_or_default(), seen.last().cloned().unwrap_or_default()))
}

/// Points as braille dots (2x4 per cell), scaled to the area; the y axis is the objective.
struct Scatter<'a> {
    points: &'a [(f64, f64)],
    style: Style,
}

impl Widget for Scatter<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (w, h) = (area.width as usize * 2, area.height as usize * 4);
        if w == 0 || h == 0 {
            return;
        }
        let extent = |f: fn(&(f64, f64)) -> f64| {
            let (lo, hi) = self
                .points
                .iter()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) }
        };
        let (x0, x1) = extent(|p| p.0);
        let (y0, y1) = extent(|p| p.1);
        let mut cells = vec![0u8; area.width as usize * area.height as usize];
        // Braille dot bits by (column, row) inside a cell.
        const BITS: [[u8; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];
        for (x, y) in self.points {
            let px = (((x - x0) / (x1 - x0)) * (w - 1) as f64).round() as usize;
            let py = (((y1 - y) / (y1 - y0)) * (h - 1) as f64).round() as usize;
            let (cx, cy) = (px.min(w - 1) / 2, py.min(h - 1) / 4);
            cells[cy * area.width as usize + cx] |= BITS[px.min(w - 1) % 2][py.min(h - 1) % 4];
        }
        for (i, bits) in cells.iter().enumerate() {
            if *bits == 0 {
                continue;
            }
            let (cx, cy) = ((i % area.width as usize) as u16, (i / area.width as usize) as u16);
            let ch = char::from_u32(0x2800 + *bits as u32).unwrap_or('•');
            buf[(area.x + cx, area.y + cy)].set_char(ch).set_style(self.style);
        }
    }
}
