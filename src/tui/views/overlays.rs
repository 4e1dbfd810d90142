//! Overlays drawn over the view: the help (generated from the views' key tables, grouped by
//! view), the new-run and clone form, confirmations, and the archived runs.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::panel;
use crate::tui::app::{App, Confirm, Mode};

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    match &app.mode {
        Mode::Help { scroll } => {
            let groups = crate::tui::state::help(app);
            let key_w =
                groups.iter().flat_map(|(_, l)| l).map(|(k, _)| k.chars().count()).max().unwrap_or(8).min(22);
            // The same lines, in the same order, as the search reads them.
            let search = &app.panes.help;
            let texts = crate::tui::state::panes::help_lines(app);
            let current = search.line(&texts);
            let mut lines: Vec<Line> = Vec::new();
            for (title, help) in &groups {
                if !lines.is_empty() {
                    lines.push(Line::from(""));
                }
                lines.push(Line::from(Span::styled(title.to_string(), t.accent())));
                lines.extend(help.iter().map(|(keys, what)| {
                    Line::from(vec![Span::styled(format!("{keys:>key_w$}  "), t.accent()), Span::raw(*what)])
                }));
            }
            for (i, l) in lines.iter_mut().enumerate() {
                if current == Some(i) {
                    *l = std::mem::take(l).style(t.selected());
                } else if texts.get(i).is_some_and(|x| search.hit(x)) {
                    *l = std::mem::take(l).style(t.info().add_modifier(ratatui::style::Modifier::UNDERLINED));
                }
            }
            let r = centered(area, 76, area.height);
            f.render_widget(Clear, r);
            let title = if search.typing || !search.query.is_empty() {
                let n = search.matches(&texts).len();
                format!(
                    "Keys · /{}{} {n} found · n/N next/prev · Esc closes",
                    search.query,
                    if search.typing { "█" } else { "" }
                )
            } else {
                format!(
                    "Keys · / search · ↑↓ scroll · Esc closes · keymap: {}",
                    crate::tui::keymap::keymap_hint(&app.keymap)
                )
            };
            let block = panel(app, title);
            f.render_widget(Paragraph::new(lines).block(block).scroll((*scroll, 0)).style(t.base()), r);
        }
        Mode::Messages { scroll } => super::messages::draw_overlay(f, app, area, *scroll),
        Mode::Form(form) => {
            let title = match &form.clone_of {
                Some(id) => format!("Clone {id}"),
                None => "New run".to_string(),
            };
            let mut lines = Vec::new();
            let sel = |i: usize| if form.focus == i { t.selected() } else { t.base() };
            let spec_line = if form.clone_of.is_some() {
                format!("spec: {}", form.spec().name)
            } else {
                format!("spec: ◀ {} ▶  ({} of {})", form.spec().name, form.choice + 1, form.choices.len())
            };
            lines.push(Line::from(Span::styled(spec_line, sel(0))));
            lines.push(Line::from(Span::styled(form.spec().description.clone(), t.muted())));
            lines.push(Line::from(""));
            for (i, fld) in form.fields.iter().enumerate() {
                let cursor = if form.focus == i + 1 { "█" } else { "" };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:>20}: ", fld.label), t.muted()),
                    Span::styled(format!("{}{cursor}", fld.value), sel(i + 1)),
                    Span::styled(format!("  {}", fld.hint), t.muted()),
                ]));
                if let Some(e) = &fld.error {
                    lines.push(Line::from(Span::styled(format!("{:>22}{e}", ""), t.error())));
                }
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "↑↓ field · ←→ spec · typing replaces a value · ctrl-s starts · Esc cancels",
                t.muted(),
            )));
            let r = centered(area, 78, lines.len() as u16 + 2);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(panel(app, title)).style(t.base()).wrap(Wrap { trim: false }),
                r,
            );
        }
        Mode::Confirm(c) => {
            let (title, text) = match c {
                Confirm::Quit { active } => (
                    "Quit?",
                    format!(
                        "{} training or queued here.\n\
                         l: leave them training and exit: this process trains on without the \
                         console until they end, as after an SSH drop\n\
                         s / y: stop them and quit (checkpoints kept; `vigil train --resume` continues)\n\
                         Esc: stay",
                        if *active == 1 { "1 run is".to_string() } else { format!("{active} runs are") }
                    ),
                ),
                Confirm::Stop(id) => (
                    "Stop run?",
                    format!(
                        "Stop {id}? Its last checkpoint is kept and it can be resumed.\ny: stop   Esc: keep training"
                    ),
                ),
                Confirm::StopService { url } => (
                    "Stop the model service?",
                    format!(
                        "Stop serving on {url}? Requests in flight finish first.\ny: stop   Esc: keep serving"
                    ),
                ),
                Confirm::Delete(id) => (
                    "Delete run?",
                    format!("{id}\nd: delete its folder for good\na: archive it to .archive/\nEsc: keep it"),
                ),
            };
            let lines: Vec<Line> = text.lines().map(|l| Line::from(l.to_string())).collect();
            // Room for every wrapped line, so that the last choice (Esc) is never cut off.
            let inner = 70u16.min(area.width).saturating_sub(2).max(1);
            let rows: u16 = text.lines().map(|l| (l.chars().count() as u16).div_ceil(inner).max(1)).sum();
            let r = centered(area, 70, rows + 2);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(panel(app, title)).style(t.base()).wrap(Wrap { trim: false }),
                r,
            );
        }
        Mode::Archive(list) => draw_archive(f, app, list, area),
        _ => {}
    }
}

/// The archived runs, newest first, with the one Enter restores highlighted.
fn draw_archive(f: &mut Frame, app: &App, list: &crate::tui::state::modes::ArchiveList, area: Rect) {
    let t = &app.theme;
    let r = centered(area, 78, (list.runs.len() as u16 + 3).min(area.height));
    let rows = (r.height as usize).saturating_sub(3);
    let first = list.cursor.saturating_sub(rows.saturating_sub(1));
    let mut lines: Vec<Line> = list
        .runs
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, run)| {
            let best = run.best_val_accuracy.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
            let text = format!(
                "{:<24} {:<9} {:>7} best {:>7}  {}",
                run.id.to_string(),
                run.status.as_str(),
                format!("{}/{}", run.epoch, run.epochs),
                best,
                run.created.get(..16).unwrap_or("").replace('T', " ")
            );
            Line::from(Span::styled(text, if i == list.cursor { t.selected() } else { t.base() }))
        })
        .collect();
    lines.push(Line::from(Span::styled("↑↓ run · Enter restores it to the store · Esc closes", t.muted())));
    let n = list.runs.len();
    let title = format!("Archived runs ({n}) in .archive/");
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(panel(app, title)).style(t.base()), r);
}
