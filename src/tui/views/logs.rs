//! Logs: the selected run's event log (started, data, checkpoint saved, paused, failed with the
//! reason, ...). It follows new lines until you scroll back, and stays where you scrolled.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::panel;
use crate::tui::app::App;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let Some(r) = app.selected() else {
        f.render_widget(Paragraph::new("no run selected").block(panel(app, "Logs")), area);
        return;
    };
    let height = area.height.saturating_sub(2) as usize;
    let total = r.events.len();
    let scroll = app.logs.scroll.min(total.saturating_sub(height));
    let end = total - scroll;
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = r.events[start..end]
        .iter()
        .map(|e| {
            let style = match e.kind.as_str() {
                "failed" => t.error(),
                "cancelled" | "paused" | "early_stop" => t.warn(),
                "finished" | "started" | "resumed" => t.ok(),
                "checkpoint" => t.info(),
                _ => t.base(),
            };
            Line::from(vec![
                Span::styled(format!("{} ", e.time.get(11..19).unwrap_or(&e.time)), t.muted()),
                Span::styled(format!("{:<10} ", e.kind), style),
                Span::raw(e.message.clone()),
            ])
        })
        .collect();
    let follow =
        if scroll == 0 { "following".to_string() } else { format!("{scroll} lines back · G follows") };
    let title =
        format!("Log of {} ({} · {follow})", r.info.id, crate::text::plural(total as u64, "event", "events"));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(panel(app, title)), area);
}
