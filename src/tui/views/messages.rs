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
    draw_marked(f, app, area, scroll, closing_hint, false, |_| None);
}

/// [`draw_panel`] with a focus border (`focused`: thick, as [`super::pane`] draws a focused
/// panel other than the first) and each message (counted from the newest)
/// styled by `mark`: the Logs view's search marks its matches this way.
pub fn draw_marked(
    f: &mut Frame,
    app: &App,
    area: Rect,
    scroll: usize,
    closing_hint: &str,
    focused: bool,
    mark: impl Fn(usize) -> Option<ratatui::style::Style>,
) {
    let total = app.messages.len();
    let scroll = scroll.min(total.saturating_sub(1));
    let lines: Vec<Line> = app
        .messages
        .history()
        .rev()
        .enumerate()
        .skip(scroll)
        .map(|(i, m)| match mark(i) {
            Some(style) => line(app, m).style(style),
            None => line(app, m),
        })
        .collect();
    let title = if total == 0 {
        "Messages (none yet)".to_string()
    } else if scroll > 0 {
        format!("Messages ({total}, newest first · {scroll} back){closing_hint}")
    } else {
        format!("Messages ({total}, newest first){closing_hint}")
    };
    let block = if focused {
        panel(app, title).border_style(app.theme.accent()).border_type(ratatui::widgets::BorderType::Thick)
    } else {
        panel(app, title)
    };
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
