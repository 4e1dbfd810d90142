//! Panels and searches: which panel of the Service and System views has the focus (Tab and
//! Shift-Tab move it), its scroll (↑↓ and PgUp/PgDn scroll the focused panel), full-screen zoom
//! of the focused panel (`z`, again to come back), and the `/` searches of the help overlay and
//! the Logs view (matches highlighted, `n`/`N` next and previous). A search works on lines of
//! text, so it serves any list of lines a view shows (the run's log, the message history).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Effect, View};
use crate::tui::keymap::Action;

/// The panels of a view that has several, in focus order.
pub fn panels(app: &App, view: View) -> Vec<&'static str> {
    match view {
        // The access log first: it had the arrows before the view had panels.
        View::Service => {
            let mut p = vec!["Access log", "Service", "Keys & alerts"];
            if app.keys.try_it.on {
                p.push("Try it");
            }
            p
        }
        View::System => vec!["CPU", "History", "GPU", "Run processes"],
        _ => vec![],
    }
}

/// Focus, zoom and scroll of one view's panels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Focus {
    pub panel: usize,
    pub zoomed: bool,
    /// Lines the focused panel is scrolled by (panels whose scroll is their own, like the
    /// access log's, keep theirs).
    pub scroll: u16,
}

/// A `/` search over lines of text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    /// The query is being typed.
    pub typing: bool,
    /// The match the view shows (an index into [`Search::matches`]).
    pub current: usize,
}

impl Search {
    /// Whether a line matches (case-insensitive); an empty query matches nothing.
    pub fn hit(&self, line: &str) -> bool {
        !self.query.is_empty() && line.to_lowercase().contains(&self.query.to_lowercase())
    }

    /// The indexes of the matching lines.
    pub fn matches<S: AsRef<str>>(&self, lines: &[S]) -> Vec<usize> {
        lines.iter().enumerate().filter(|(_, l)| self.hit(l.as_ref())).map(|(i, _)| i).collect()
    }

    /// Moves to the next (or previous) match and returns its line.
    pub fn step<S: AsRef<str>>(&mut self, lines: &[S], forward: bool) -> Option<usize> {
        let m = self.matches(lines);
        if m.is_empty() {
            return None;
        }
        self.current =
            if forward { (self.current + 1) % m.len() } else { (self.current + m.len() - 1) % m.len() };
        Some(m[self.current])
    }

    /// The line of the current match.
    pub fn line<S: AsRef<str>>(&self, lines: &[S]) -> Option<usize> {
        let m = self.matches(lines);
        m.get(self.current.min(m.len().saturating_sub(1))).copied()
    }

    /// Types a key into the query; false when the key is not for the query.
    fn type_key(&mut self, k: &KeyEvent) -> bool {
        if !self.typing {
            return false;
        }
        match k.code {
            KeyCode::Esc => *self = Search::default(),
            KeyCode::Enter => self.typing = false,
            KeyCode::Backspace => {
                self.query.pop();
                self.current = 0;
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                self.query.push(c);
                self.current = 0;
            }
            _ => {}
        }
        true
    }
}

/// The view's panels' state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panes {
    pub service: Focus,
    pub system: Focus,
    pub help: Search,
    pub logs: Search,
}

impl Panes {
    pub fn focus(&self, view: View) -> Option<&Focus> {
        match view {
            View::Service => Some(&self.service),
            View::System => Some(&self.system),
            _ => None,
        }
    }

    fn focus_mut(&mut self, view: View) -> Option<&mut Focus> {
        match view {
            View::Service => Some(&mut self.service),
            View::System => Some(&mut self.system),
            _ => None,
        }
    }
}

/// The focused panel's name in a view with panels.
pub fn focused(app: &App, view: View) -> Option<&'static str> {
    let f = app.panes.focus(view)?;
    panels(app, view).get(f.panel).copied()
}

/// Tab, Shift-Tab, `z` and scrolling in a view with panels; `None` for the other keys (and
/// views without panels).
pub fn handle(action: Action, app: &mut App) -> Option<Vec<Effect>> {
    let view = app.view;
    let n = panels(app, view).len();
    if n == 0 {
        return None;
    }
    let access_log = focused(app, view) == Some("Access log");
    let f = app.panes.focus_mut(view)?;
    match action {
        Action::NextTab => {
            f.panel = (f.panel + 1) % n;
            f.scroll = 0;
        }
        Action::FocusPrev => {
            f.panel = (f.panel + n - 1) % n;
            f.scroll = 0;
        }
        Action::ZoomPane => f.zoomed = !f.zoomed,
        // The access log scrolls itself (and follows new lines); the others scroll here.
        Action::Up | Action::Down | Action::PageUp | Action::PageDown | Action::Top if access_log => {
            return None;
        }
        Action::Up => f.scroll = f.scroll.saturating_sub(1),
        Action::Down => f.scroll = f.scroll.saturating_add(1),
        Action::PageUp => f.scroll = f.scroll.saturating_sub(10),
        Action::PageDown => f.scroll = f.scroll.saturating_add(10),
        Action::Top => f.scroll = 0,
        _ => return None,
    }
    Some(vec![])
}

/// The help overlay's lines as text, in the order the overlay draws them: each group's heading,
/// its `keys  what` lines, a blank line between groups.
pub fn help_lines(app: &App) -> Vec<String> {
    let mut out = Vec::new();
    for (title, lines) in super::help(app) {
        if !out.is_empty() {
            out.push(String::new());
        }
        out.push(title.to_string());
        out.extend(lines.into_iter().map(|(k, w)| format!("{k}  {w}")));
    }
    out
}

/// A key in the help overlay: `/` searches, `n`/`N` go to the next or previous match (the
/// overlay scrolls to it). Returns the new scroll, or `None` when the key is not the search's.
pub fn help_key(app: &mut App, k: &KeyEvent, scroll: u16) -> Option<u16> {
    let lines = help_lines(app);
    let s = &mut app.panes.help;
    if s.typing {
        s.type_key(k);
        return Some(s.line(&lines).map_or(scroll, |l| l.saturating_sub(2) as u16));
    }
    match k.code {
        KeyCode::Char('/') => {
            *s = Search { typing: true, ..Search::default() };
            Some(scroll)
        }
        KeyCode::Char('n') | KeyCode::Char('N') if !s.query.is_empty() => {
            let line = s.step(&lines, k.code == KeyCode::Char('n'));
            Some(line.map_or(scroll, |l| l.saturating_sub(2) as u16))
        }
        _ => None,
    }
}

/// The Logs view's lines as the search reads them.
pub fn log_lines(app: &App) -> Vec<String> {
    app.selected().map_or(vec![], |r| {
        r.events
            .iter()
            .map(|e| format!("{} {} {}", e.time.get(11..19).unwrap_or(&e.time), e.kind, e.message))
            .collect()
    })
}

/// Keys typed into a search before the keymap sees them (the Logs view's query, the keys
/// panel's form, the Playground's prompt); `None` lets the key go on as usual.
pub fn capture(app: &mut App, k: &KeyEvent) -> Option<Vec<Effect>> {
    if let Some(effects) = super::keys::key(app, *k) {
        return Some(effects);
    }
    if let Some(effects) = super::playground::capture(app, k) {
        return Some(effects);
    }
    if app.view == View::Logs && app.panes.logs.typing {
        app.panes.logs.type_key(k);
        let lines = log_lines(app);
        if let Some(l) = app.panes.logs.line(&lines) {
            app.logs.scroll = lines.len() - 1 - l;
        }
        return Some(vec![]);
    }
    None
}

/// `/`, `n` and `N` in the Logs view (whose scroll is `scroll`: the view's state is taken out of
/// the app while it handles a key).
pub fn logs_action(action: Action, app: &mut App, scroll: &mut usize) -> Option<Vec<Effect>> {
    match action {
        Action::Filter => app.panes.logs = Search { typing: true, ..Search::default() },
        Action::NewRun | Action::SearchPrev if !app.panes.logs.query.is_empty() => {
            let lines = log_lines(app);
            // The log reads top to bottom, oldest first: "next" is further down.
            if let Some(l) = app.panes.logs.step(&lines, action == Action::NewRun) {
                *scroll = lines.len() - 1 - l;
            }
        }
        Action::Back if !app.panes.logs.query.is_empty() => app.panes.logs = Search::default(),
        _ => return None,
    }
    Some(vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_steps_through_its_matches_both_ways_and_wraps() {
        let lines = ["started", "checkpoint best", "epoch 2", "checkpoint last", "Finished"];
        let mut s = Search { query: "CHECK".into(), ..Search::default() };
        assert_eq!(s.matches(&lines), vec![1, 3]);
        assert_eq!(s.line(&lines), Some(1));
        assert_eq!(s.step(&lines, true), Some(3));
        assert_eq!(s.step(&lines, true), Some(1), "wraps");
        assert_eq!(s.step(&lines, false), Some(3));
        assert!(Search::default().matches(&lines).is_empty(), "an empty query matches nothing");
    }
}
