//! Compare: the curves of several runs overlaid, each in a stable colour (and a distinct glyph
//! without colour), with their parameters side by side and the ones that differ highlighted.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{chart_caption, chart_with, panel};
use crate::tui::app::{App, Metric};
use crate::tui::state::chart::series_of;
use crate::tui::widgets::chart::{GLYPHS, Series, ema, fmt_num, value_at};

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
    let source =
        if app.marked.is_empty() { ("visible run", "visible runs") } else { ("marked run", "marked runs") };
    let block = panel(
        app,
        format!("{} · {}", crate::text::plural(runs.len() as u64, source.0, source.1), chart_caption(app)),
    );
    let inner = block.inner(chart_area);
    f.render_widget(block, chart_area);
    let [plot, legend_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(inner);
    let mut series = Vec::new();
    for r in &runs {
        let slot = app.color_slot(&r.info.id);
        // One line per run: the smoothed training loss, or validation accuracy, or the rate.
        let pick = match app.chart.metric {
            Metric::Loss => "train loss",
            Metric::Accuracy => "val acc",
            Metric::LearningRate => "lr",
        };
        let Some(s) = series_of(r, app.chart.metric, app.chart.x_axis).into_iter().find(|s| s.name == pick)
        else {
            continue;
        };
        let points = if s.per_step && app.chart.smoothing && app.chart.weight > 0.0 {
            ema(&s.points, app.chart.weight)
        } else {
            s.points
        };
        series.push(Series::new(
            r.info.id.clone(),
            points,
            app.theme.series(slot),
            GLYPHS[slot % GLYPHS.len()],
        ));
    }
    let chart = chart_with(app, series);
    let mut spans = Vec::new();
    if let Some(x) = chart.cursor {
        spans.push(Span::styled(format!("{} {} ", app.chart.x_axis.label(), fmt_num(x)), app.theme.accent()));
    }
    for s in &chart.series {
        let style = if app.theme.colored() {
            Style::default().fg(s.color)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        let mark = if app.theme.colored() { '━' } else { s.glyph };
        let value = chart
            .cursor
            .and_then(|x| value_at(&s.points, x))
            .map_or(String::new(), |(_, v)| format!(" {}", fmt_num(v)));
        spans.push(Span::styled(format!("{mark} "), style));
        spans.push(Span::raw(format!("{}{value}  ", s.name)));
    }
    f.render_widget(chart, plot);
    f.render_widget(Paragraph::new(Line::from(spans)), legend_area);

    // Parameters side by side; rows whose values differ come first and are highlighted.
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
    let mut header = vec![Cell::from(Span::styled("parameter", t.muted()))];
    for r in &runs {
        let slot = app.color_slot(&r.info.id);
        let style = if t.colored() {
            Style::default().fg(t.series(slot))
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        header.push(Cell::from(Span::styled(
            format!("{} {}", if t.colored() { '■' } else { GLYPHS[slot % GLYPHS.len()] }, r.info.id),
            style,
        )));
    }
    let mut table_rows: Vec<Row> = Vec::new();
    let mut result = vec![Cell::from(Span::styled("best val acc", t.accent()))];
    result.extend(
        runs.iter().map(|r| {
            Cell::from(r.info.best_val_accuracy.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)))
        }),
    );
    table_rows.push(Row::new(result));
    for (differs, k) in rows {
        let style = if differs { t.warn() } else { t.muted() };
        let mut cells = vec![Cell::from(Span::styled(k.clone(), style))];
        cells.extend(runs.iter().map(|r| {
            Cell::from(Span::styled(
                r.params.get(k).cloned().unwrap_or_else(|| "-".into()),
                if differs { t.warn() } else { t.base() },
            ))
        }));
        table_rows.push(Row::new(cells));
    }
    let n = runs.len() as u16;
    let col = ((table_area.width.saturating_sub(26)) / n.max(1)).max(10);
    let mut widths = vec![Constraint::Length(24)];
    widths.extend((0..n).map(|_| Constraint::Length(col)));
    let differing = table_rows.len();
    let table = Table::new(table_rows, widths)
        .header(Row::new(header))
        .block(panel(app, format!("Parameters ({} rows; differences first)", differing - 1)));
    f.render_widget(table, table_area);
}
