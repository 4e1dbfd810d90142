//! Logs: the selected run's event log (started, data, checkpoint saved, paused, failed with the
//! reason, ...). It follows new lines until you scroll back, and stays where you scrolled. `/`
//! searches it and the messages under it: matching lines are marked, the current match
//! highlighted, `n`/`N` move (into the messages panel too, which then takes the focus). Under
//! the log, the console's newest messages (the whole history is `M`, or Tab to the panel and `z`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::pane;
use crate::tui::app::{App, View};
use crate::tui::state::panes;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    // The console's own messages under the run's events: what the status line said, kept.
    let msgs_h = (app.messages.len().clamp(1, 6) as u16 + 2).min(area.height / 3);
    let [log, msgs] = ratatui::layout::Layout::vertical([
        ratatui::layout::Constraint::Min(3),
        ratatui::layout::Constraint::Length(msgs_h),
    ])
    .areas(area);
    // `z`: the focused panel alone, on the whole body.
    let (area, msgs) = match super::zoomed(app, View::Logs) {
        Some("Messages") => (Rect::default(), area),
        Some(_) => (area, Rect::default()),
        None => (log, msgs),
    };
    let search = &app.panes.logs;
    let texts = panes::log_lines(app);
    let current = search.line(&texts);
    let events = panes::log_event_count(app);
    if !msgs.is_empty() {
        let t = &app.theme;
        let scroll = panes::scroll(app, View::Logs, "Messages") as usize;
        let focused = panes::has_focus(app, View::Logs, "Messages");
        super::messages::draw_marked(f, app, msgs, scroll, "", focused, |i| {
            let at = events + i;
            if current == Some(at) {
                Some(t.selected())
            } else if texts.get(at).is_some_and(|l| search.hit(l)) {
                Some(t.accent().add_modifier(ratatui::style::Modifier::UNDERLINED))
            } else {
                None
            }
        });
    }
    if area.is_empty() {
        return;
    }
    let t = &app.theme;
    let Some(r) = app.selected() else {
        f.render_widget(Paragraph::new("no run selected").block(pane(app, View::Logs, "Log", "Logs")), area);
        return;
    };
    let height = area.height.saturating_sub(2) as usize;
    let total = r.events.len();
    let scroll = app.logs.scroll.min(total.saturating_sub(height));
    let end = total - scroll;
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = r.events[start..end]
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let style = match e.kind.as_str() {
                "failed" => t.error(),
                "cancelled" | "paused" | "early_stop" | "warning" => t.warn(),
                "finished" | "started" | "resumed" => t.ok(),
                "checkpoint" => t.info(),
                _ => t.base(),
            };
            let line = Line::from(vec![
                Span::styled(format!("{} ", e.time.get(11..19).unwrap_or(&e.time)), t.muted()),
                Span::styled(format!("{:<10} ", e.kind), style),
                Span::raw(e.message.clone()),
            ]);
            // Matches read without colour too: the current one reversed, the others marked.
            let at = start + i;
            if current == Some(at) {
                line.style(t.selected())
            } else if texts.get(at).is_some_and(|l| search.hit(l)) {
                line.style(t.accent().add_modifier(ratatui::style::Modifier::UNDERLINED))
            } else {
                line
            }
        })
        .collect();
    let follow =
        if scroll == 0 { "following".to_string() } else { format!("{scroll} lines back · G follows") };
    let mut title =
        format!("Log of {} ({} · {follow})", r.info.id, crate::text::plural(total as u64, "event", "events"));
    if search.typing || !search.query.is_empty() {
        let n = search.matches(&texts).len();
        let cursor = if search.typing { "█" } else { "" };
        title.push_str(&format!(" · /{}{cursor} {n} match{}", search.query, if n == 1 { "" } else { "es" }));
        if !search.typing && n > 0 {
            title.push_str(" · n/N");
        }
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(pane(app, View::Logs, "Log", title)),
        area,
    );
}
