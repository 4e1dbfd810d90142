//! The Runs view's columns mode (`C`): one row per run, its hyperparameters (those that differ
//! between runs first) against its final metrics, with its tags; the column under the column
//! cursor is underlined, the sorted one marked ↑/↓. Columns that do not fit scroll in from the
//! right as the cursor moves, and the id and tags always stay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::{panel, status_style};
use crate::tui::app::{App, SortKey};
use crate::tui::keymap::Action;
use crate::tui::state::table::{Column, columns};

/// The width a column needs: its header or its widest value, within limits.
fn width(c: &Column, app: &App) -> u16 {
    let values = app.runs.values().map(|r| c.text(r).chars().count());
    values.chain([c.name().chars().count() + 1]).max().unwrap_or(4).clamp(4, 18) as u16
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let runs = app.visible();
    let cols = columns(app);
    let cursor = app.table.column.min(cols.len().saturating_sub(1));
    let sorted = (app.sort == SortKey::Column).then_some(app.table.sort_by.as_deref()).flatten();
    let k = |a: Action| app.keymap.hint(a);
    let title = format!(
        "Runs · columns ({}{}) · {} column · {} sort · {} back",
        crate::text::plural(runs.len() as u64, "run", "runs"),
        if app.filter_text.is_empty() { String::new() } else { format!(", filter {}", app.filter_text) },
        "←→",
        k(Action::SortNext),
        k(Action::ToggleColumns),
    );
    let block = panel(app, title);
    if runs.is_empty() {
        let text =
            if app.runs.is_empty() { "no runs yet" } else { "no run matches the filter (Esc clears it)" };
        f.render_widget(Paragraph::new(Span::styled(text, t.muted())).block(block), area);
        return;
    }
    // The id and tags stay; the other columns start where the cursor can be seen.
    let id_w = 20u16;
    let tag_w = if area.width >= 120 { 18 } else { 10 };
    let room = area.width.saturating_sub(id_w + tag_w + 4 + 2);
    let widths: Vec<u16> = cols.iter().map(|c| width(c, app)).collect();
    let mut first = 0;
    while first < cursor && widths[first..=cursor].iter().map(|w| w + 1).sum::<u16>() > room {
        first += 1;
    }
    let mut shown = Vec::new();
    let mut used = 0;
    for (i, w) in widths.iter().enumerate().skip(first) {
        if used + w + 1 > room {
            break;
        }
        used += w + 1;
        shown.push(i);
    }
    let head = |text: String, i: Option<usize>| {
        let mut style =
            if i == Some(cursor) { t.accent().add_modifier(Modifier::UNDERLINED) } else { t.muted() };
        if i.is_some_and(|i| Some(cols[i].key().as_str()) == sorted) {
            style = style.add_modifier(Modifier::BOLD);
        }
        Cell::from(Span::styled(text, style))
    };
    let mut header = vec![head("id".into(), None)];
    for &i in &shown {
        let mark = if Some(cols[i].key().as_str()) == sorted {
            if app.sort_desc { "↓" } else { "↑" }
        } else {
            ""
        };
        header.push(head(format!("{}{mark}", cols[i].name()), Some(i)));
    }
    header.push(head("tags".into(), None));
    let rows = runs.iter().map(|r| {
        let mut cells = vec![Cell::from(Span::styled(r.info.id.to_string(), status_style(app, r.status())))];
        cells.extend(shown.iter().map(|&i| Cell::from(cols[i].text(r))));
        cells.push(Cell::from(Span::styled(r.notes.tag_line(), t.info())));
        Row::new(cells)
    });
    let mut constraints = vec![Constraint::Length(id_w)];
    constraints.extend(shown.iter().map(|&i| Constraint::Length(widths[i])));
    constraints.push(Constraint::Min(tag_w));
    let table = Table::new(rows, constraints)
        .header(Row::new(header))
        .block(block)
        .row_highlight_style(t.selected())
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.cursor.min(runs.len() - 1)));
    f.render_stateful_widget(table, area, &mut state);
    // The selected run's note, under the table: the why of a run belongs beside its numbers.
    if let Some(note) = app.selected().and_then(|r| r.notes.note.clone()) {
        let y = area.y + area.height - 1;
        let text: String =
            format!(" note: {note} ").chars().take(area.width.saturating_sub(4) as usize).collect();
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(text, t.info()))),
            Rect { x: area.x + 2, y, width: area.width.saturating_sub(4), height: 1 },
        );
    }
}
