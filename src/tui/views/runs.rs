//! Runs: the table of every run (sortable, filterable, with marks for comparison). Columns drop
//! from the right as the terminal narrows; the id, status and progress always stay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::{fmt_duration, panel, status_style};
use crate::tui::app::{App, SortKey};

/// Why a run ended badly, for the Runs table and the Detail view: a failed run's reason (its
/// status, else its log's last `failed` line), or that an interrupted run's process is gone.
pub(super) fn ended_badly(r: &crate::tui::app::RunState) -> Option<String> {
    use crate::store::{EventKind, RunStatus};
    if r.interrupted {
        return Some(format!(
            "interrupted: its process{} ended without a final status; p (or `vigil train --resume {}`) \
             continues it from its last checkpoint",
            r.info.pid.map_or(String::new(), |p| format!(" ({p})")),
            r.info.id
        ));
    }
    if r.info.status != RunStatus::Failed {
        return None;
    }
    let logged = || r.events.iter().rev().find(|e| e.kind == EventKind::Failed).map(|e| e.message.clone());
    Some(format!(
        "failed: {}",
        r.info.failure.clone().or_else(logged).unwrap_or_else(|| "no reason was recorded".into())
    ))
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    if app.table.on {
        return super::run_table::draw(f, app, area);
    }
    let t = &app.theme;
    let runs = app.visible();
    let mut title = format!("Runs ({}", runs.len());
    if runs.len() != app.runs.len() {
        title.push_str(&format!(" of {}", app.runs.len()));
    }
    title.push(')');
    if !app.filter_text.is_empty() {
        title.push_str(&format!(" · filter: {}", app.filter_text));
    }
    if !app.marked.is_empty() {
        title.push_str(&format!(" · {} marked", app.marked.len()));
    }
    title.push_str(&format!(" · sort: {} {}", app.sort.label(), if app.sort_desc { "↓" } else { "↑" }));
    let block = panel(app, title);
    if runs.is_empty() {
        let text = if app.runs.is_empty() {
            "no runs yet: n starts one, or run `vigil train` in another shell".to_string()
        } else if let Some(problem) = crate::tui::filter::Filter::parse(&app.filter_text).problem() {
            format!("the filter matches nothing: {problem}")
        } else {
            "no run matches the filter (Esc clears it)".to_string()
        };
        f.render_widget(Paragraph::new(Span::styled(text, t.muted())).block(block), area);
        return;
    }
    let wide = area.width >= 120;
    let mut header = vec!["", "id", "status", "epoch", "train loss", "best val"];
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Min(18),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(8),
    ];
    if wide {
        header.extend(["spec", "step", "test acc", "started", "duration"]);
        widths.extend([
            Constraint::Length(16),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(8),
        ]);
    } else {
        header.extend(["started", "time"]);
        widths.extend([Constraint::Length(5), Constraint::Length(6)]);
    }
    let sort_col = match app.sort {
        SortKey::Id => Some(1),
        SortKey::Status => Some(2),
        SortKey::Epoch => Some(3),
        SortKey::TrainLoss => Some(4),
        SortKey::BestVal => Some(5),
        SortKey::Started => Some(if wide { 9 } else { 6 }),
        SortKey::Duration => Some(if wide { 10 } else { 7 }),
        SortKey::Column => None,
    };
    let header = Row::new(header.into_iter().enumerate().map(|(i, h)| {
        let style = if Some(i) == sort_col { t.accent() } else { t.muted() };
        Cell::from(Span::styled(h, style))
    }));
    let rows = runs.iter().map(|r| {
        let i = &r.info;
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
        let mark = if app.marked.contains(&i.id) { "●" } else { " " };
        let started = &i.created;
        let mut cells = vec![
            Cell::from(Span::styled(mark, t.accent())),
            Cell::from(i.id.to_string()),
            // A queued run whose Slurm job waits says so: queued here, pending there.
            Cell::from(Span::styled(
                if r.info.status == crate::store::RunStatus::Queued
                    && r.job.as_ref().is_some_and(|j| j.state == "PENDING")
                {
                    "pending"
                } else {
                    r.status().label()
                },
                status_style(app, r.status()),
            )),
            // An external run has no planned epoch count: its epoch alone.
            Cell::from(if r.is_external() {
                i.epoch.to_string()
            } else {
                format!("{}/{}", i.epoch, i.epochs)
            }),
            Cell::from(r.last_loss().map_or("-".into(), |l| format!("{l:.4}"))),
            Cell::from(pct(i.best_val_accuracy)),
        ];
        if wide {
            cells.extend([
                Cell::from(i.spec.clone()),
                Cell::from(i.step.to_string()),
                Cell::from(pct(i.test_accuracy)),
                Cell::from(started.get(5..16).unwrap_or("").replace('T', " ")),
                Cell::from(fmt_duration(i.duration_s)),
            ]);
        } else {
            cells.extend([
                Cell::from(started.get(11..16).unwrap_or("").to_string()),
                Cell::from(fmt_duration(i.duration_s)),
            ]);
        }
        Row::new(cells)
    });
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(t.selected())
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.cursor.min(runs.len() - 1)));
    f.render_stateful_widget(table, area, &mut state);
    // When a run failed, say why right under the table's selection; the reason is the first
    // thing an operator wants.
    // A run trained by a Slurm job says what Slurm says of it (why it waits, where it runs).
    let line = match app.selected() {
        Some(r) if r.info.failure.is_some() => ended_badly(r).map(|l| (l, t.error())),
        Some(r) => r.live_job().map(|l| (l, t.muted())),
        None => None,
    };
    if let Some((reason, style)) = line {
        let y = area.y + area.height - 1;
        let text = format!(" {reason} ");
        let width = (area.width as usize).saturating_sub(4);
        let text: String = text.chars().take(width).collect();
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(text, style))),
            Rect { x: area.x + 2, y, width: area.width - 4, height: 1 },
        );
    }
}
