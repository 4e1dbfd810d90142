//! Compare: the curves of several runs overlaid, each in the colour (and, without colour, the
//! glyph) it holds for as long as it is compared, smoothed over its faint raw curve; their
//! parameters side by side, the ones that differ first and highlighted, scrolling with PgUp/PgDn.
//! Ids are cut to their unique part where the columns are narrow.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{chart_caption, chart_with, fit, pane, panel};
use crate::tui::app::RunState;
use crate::tui::app::{App, View};
use crate::tui::state::chart::compare_series;
use crate::tui::state::panes;
use crate::tui::widgets::chart::{GLYPHS, Series, ema, fmt_num, value_at};
use crate::tui::widgets::ids::short_ids;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let runs = app.compared();
    if runs.is_empty() {
        f.render_widget(
            Paragraph::new("no runs to compare: mark runs with space in the runs view (2)")
                .block(panel(app, "Compare")),
            area,
        );
        return;
    }
    let table_h = (area.height / 3).max(6);
    let [chart_area, table_area] =
        Layout::vertical([Constraint::Min(6), Constraint::Length(table_h)]).areas(area);
    // `z`: the focused panel alone, on the whole body.
    let (chart_area, table_area) = match super::zoomed(app, View::Compare) {
        Some("Parameters") => (Rect::default(), area),
        Some(_) => (area, Rect::default()),
        None => (chart_area, table_area),
    };
    let ids: Vec<&str> = runs.iter().map(|r| r.info.id.as_str()).collect();
    if !chart_area.is_empty() {
        draw_chart(f, app, &runs, &ids, chart_area);
    }
    if !table_area.is_empty() {
        draw_params(f, app, &runs, &ids, table_area);
    }
}

/// The compared runs' curves and their legend.
fn draw_chart(f: &mut Frame, app: &App, runs: &[&RunState], ids: &[&str], chart_area: Rect) {
    let source =
        if app.marked.is_empty() { ("visible run", "visible runs") } else { ("marked run", "marked runs") };
    let caption =
        format!("{} · {}", crate::text::plural(runs.len() as u64, source.0, source.1), chart_caption(app));
    let block = pane(app, View::Compare, "Curves", fit(&caption, chart_area.width));
    let inner = block.inner(chart_area);
    f.render_widget(block, chart_area);
    // The legend takes a second line when ten runs do not fit on one.
    let legend_h = if runs.len() > 5 && inner.width < 150 { 2 } else { 1 };
    let [plot, legend_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(legend_h)]).areas(inner);
    let mut series = Vec::new();
    let mut legend = Vec::new();
    for r in runs {
        let slot = app.color_slot(&r.info.id);
        // One line per run: the smoothed training loss, or validation accuracy, or the rate.
        let Some(s) = compare_series(r, &app.chart) else { continue };
        let glyph = GLYPHS[slot % GLYPHS.len()];
        let name = r.info.id.to_string();
        if s.per_step && app.chart.smoothing && app.chart.weight > 0.0 {
            let smooth = ema(&s.points, app.chart.weight);
            series.push(Series::new(format!("{name} (raw)"), s.points, app.theme.faint(slot), glyph).faint());
            series.push(Series::new(name.clone(), smooth, app.theme.series(slot), glyph));
        } else {
            series.push(Series::new(name.clone(), s.points, app.theme.series(slot), glyph));
        }
        legend.push((name, slot));
    }
    let chart = chart_with(app, series);
    let mut spans = Vec::new();
    if let Some(x) = chart.cursor {
        spans.push(Span::styled(format!("{} {} ", app.chart.x_axis.label(), fmt_num(x)), app.theme.accent()));
    }
    // Whole ids when the legend has room for them, else their unique parts.
    let per =
        (legend_area.width as usize * legend_area.height as usize / legend.len().max(1)).saturating_sub(4);
    let full: usize = legend.iter().map(|(n, _)| n.chars().count() + 4).sum();
    let names = if full <= legend_area.width as usize {
        ids.iter().map(|s| s.to_string()).collect()
    } else {
        short_ids(ids, per.max(6))
    };
    for ((name, slot), label) in legend.iter().zip(names) {
        let style = slot_style(app, *slot);
        let mark = if app.theme.colored() { '━' } else { GLYPHS[slot % GLYPHS.len()] };
        let value = chart
            .series
            .iter()
            .find(|s| s.name == *name)
            .and_then(|s| chart.cursor.and_then(|x| value_at(&s.points, x)))
            .map_or(String::new(), |(_, v)| format!(" {}", fmt_num(v)));
        spans.push(Span::styled(format!("{mark} "), style));
        spans.push(Span::raw(format!("{label}{value}  ")));
    }
    f.render_widget(chart, plot);
    f.render_widget(
        Paragraph::new(Line::from(spans)).wrap(ratatui::widgets::Wrap { trim: true }),
        legend_area,
    );
}

/// The compared runs' parameters side by side; rows whose values differ come first and are
/// highlighted.
fn draw_params(f: &mut Frame, app: &App, runs: &[&RunState], ids: &[&str], table_area: Rect) {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let mut rows: Vec<(bool, &String)> = keys
        .into_iter()
        .map(|k| {
            let values: BTreeSet<Option<&String>> = runs.iter().map(|r| r.params.get(k)).collect();
            (values.len() > 1, k)
        })
        .collect();
    rows.sort_by_key(|(differs, k)| (!*differs, (*k).clone()));
    let t = &app.theme;
    let n = runs.len() as u16;
    // Parameter names whole up to 24 columns, less when the runs' columns need it (ratatui puts
    // a space between columns).
    let longest = rows.iter().map(|(_, k)| k.chars().count()).max().unwrap_or(9) as u16;
    let name_w = longest.min(24).min(table_area.width.saturating_sub(2 + n * 9).max(12));
    let col = (table_area.width.saturating_sub(name_w + 2 + n) / n.max(1)).max(8);
    let labels = short_ids(ids, col.saturating_sub(3) as usize);
    let mut header = vec![Cell::from(Span::styled("parameter", t.muted()))];
    for (r, label) in runs.iter().zip(&labels) {
        let slot = app.color_slot(&r.info.id);
        header.push(Cell::from(Span::styled(
            format!("{} {label}", if t.colored() { '■' } else { GLYPHS[slot % GLYPHS.len()] }),
            slot_style(app, slot),
        )));
    }
    let result = {
        let mut cells = vec![Cell::from(Span::styled("best val acc", t.accent()))];
        cells.extend(runs.iter().map(|r| {
            Cell::from(r.info.best_val_accuracy.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)))
        }));
        Row::new(cells)
    };
    let differing = rows.iter().filter(|(d, _)| *d).count();
    let total = rows.len();
    // The parameters scroll (PgUp/PgDn) under the result row, which always shows.
    let room = table_area.height.saturating_sub(4) as usize;
    // PgUp/PgDn scroll the parameters wherever the focus is; focused, ↑↓ scroll them too.
    let scroll = (app.compare.params_scroll + panes::scroll(app, View::Compare, "Parameters") as usize)
        .min(total.saturating_sub(room.max(1)));
    let mut table_rows: Vec<Row> = vec![result];
    for (differs, k) in rows.iter().skip(scroll).take(room) {
        let style = if *differs { t.warn() } else { t.muted() };
        let mut cells = vec![Cell::from(Span::styled((*k).clone(), style))];
        cells.extend(runs.iter().map(|r| {
            Cell::from(Span::styled(
                r.params.get(*k).cloned().unwrap_or_else(|| "-".into()),
                if *differs { t.warn() } else { t.base() },
            ))
        }));
        table_rows.push(Row::new(cells));
    }
    let mut widths = vec![Constraint::Length(name_w)];
    widths.extend((0..n).map(|_| Constraint::Length(col)));
    let shown = room.min(total.saturating_sub(scroll));
    let title = if total > room {
        format!(
            "Parameters {}-{} of {total} · {differing} differ, first · {} scrolls",
            scroll + 1,
            scroll + shown,
            keys_hint(app)
        )
    } else {
        format!("Parameters ({total}; {differing} differ, first)")
    };
    let table = Table::new(table_rows, widths).header(Row::new(header)).block(pane(
        app,
        View::Compare,
        "Parameters",
        fit(&title, table_area.width),
    ));
    f.render_widget(table, table_area);
}

/// A compared run's style: its colour, or bold without colour (its glyph tells it apart).
fn slot_style(app: &App, slot: usize) -> Style {
    if app.theme.colored() {
        Style::default().fg(app.theme.series(slot))
    } else {
        Style::default().add_modifier(Modifier::BOLD)
    }
}

fn keys_hint(app: &App) -> String {
    use crate::tui::keymap::Action;
    format!("{}/{}", app.keymap.hint(Action::PageUp), app.keymap.hint(Action::PageDown))
}
