//! Overlays drawn over the view: the help (generated from the views' key tables, grouped by
//! view), the new-run and clone
//! form, and confirmations.

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
                "Keys (/ search, ↑↓ scroll, Esc closes; the keymap is config/keymap.ron)".to_string()
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
                "↑↓ field · ←→ spec · Enter on the last field or ctrl-s starts · Esc cancels",
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
                        "{active} run(s) are training or queued here.\ny / s: stop them and quit (checkpoints are kept; \
                         `vigil train --resume` continues)\nEsc: stay"
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
            let r = centered(area, 70, lines.len() as u16 + 4);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(panel(app, title)).style(t.base()).wrap(Wrap { trim: false }),
                r,
            );
        }
        _ => {}
    }
}
