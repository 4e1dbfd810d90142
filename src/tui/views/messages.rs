//! The message history: every message the status line showed, newest first, notices (a run
//! finished, failed or diverged) marked. Drawn as an overlay (`M`) and as a panel under the
//! Logs view's event log; the state is [`crate::tui::state::messages`].

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::panel;
use crate::tui::app::{App, Level};
use crate::tui::state::messages::Message;

/// One message as a line: its time, a notice's label, the text (wrapped by the paragraph).
fn line(app: &App, m: &Message) -> Line<'static> {
    let t = &app.theme;
    let style = match m.level {
        Level::Info => t.base(),
        Level::Warn => t.warn(),
        Level::Error => t.error(),
    };
    let mut spans = vec![Span::styled(format!("{} ", m.clock), t.muted())];
    if let Some(n) = m.notice {
        spans.push(Span::styled(format!("● {}", n.label()), style.add_modifier(Modifier::REVERSED)));
        spans.push(Span::raw(" "));
    }
    spans.push(Span::styled(m.text.clone(), style));
    Line::from(spans)
}

/// The newest messages that fit in `area`, `scroll` messages back from the newest.
pub fn draw_panel(f: &mut Frame, app: &App, area: Rect, scroll: usize, closing_hint: &str) {
    let total = app.messages.len();
    let scroll = scroll.min(total.saturating_sub(1));
    let lines: Vec<Line> = app.messages.history().rev().skip(scroll).map(|m| line(app, m)).collect();
    let title = if total == 0 {
        "Messages (none yet)".to_string()
    } else if scroll > 0 {
        format!("Messages ({total}, newest first · {scroll} back){closing_hint}")
    } else {
        format!("Messages ({total}, newest first){closing_hint}")
    };
    let block = panel(app, title);
    let body = if lines.is_empty() {
        vec![Line::from(Span::styled("the status line's messages are kept here", app.theme.muted()))]
    } else {
        lines
    };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(body).wrap(Wrap { trim: false }).block(block).style(app.theme.base()),
        area,
    );
}

/// The history over the view (`M`).
pub fn draw_overlay(f: &mut Frame, app: &App, area: Rect, scroll: usize) {
    let w = area.width.min(100);
    let r = Rect { x: area.x + (area.width - w) / 2, y: area.y, width: w, height: area.height };
    draw_panel(f, app, r, scroll, " · ↑↓ scroll · Esc closes");
}
