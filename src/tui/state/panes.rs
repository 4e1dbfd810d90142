//! Panels and searches: which panel of a view with several has the focus (Tab and Shift-Tab
//! move it; in the Detail view Tab keeps switching tabs and Shift-Tab moves the focus), its
//! scroll (↑↓ and PgUp/PgDn scroll the focused panel), full-screen zoom of the focused panel
//! (`z`, again to come back), and the `/` searches of the help overlay and the Logs view
//! (matches highlighted, `n`/`N` next and previous). A search works on lines of text, so it
//! serves any list of lines a view shows (the run's log, the message history).
//!
//! A view's first panel is its main one: there the arrows keep the meaning the view gives them
//! (the Overview's run walk, the log's scroll, the trials table), and the other panels scroll
//! when focused. The panels are listed here, once; the views draw them by these names.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::screens::DetailTab;
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
        View::Overview => vec!["Loss", "Active runs", "System"],
        // Each tab of the detail has its own panels; the header and tab row are not panels.
        View::Detail => match app.detail.tab {
            DetailTab::Curves => vec!["Curves"],
            DetailTab::Evaluation => vec!["Confusion", "Per class"],
            // The variants panel shows only when the run has variants (`vigil optimize`).
            DetailTab::Params if app.selected().is_some_and(|r| !r.variants.is_empty()) => {
                vec!["Parameters", "Checkpoints", "Variants"]
            }
            DetailTab::Params => vec!["Parameters", "Checkpoints"],
        },
        View::Compare => vec!["Curves", "Parameters"],
        View::Logs => vec!["Log", "Messages"],
        View::Explain => vec!["Explanation", "Prediction"],
        // The token-flips panel shows only when a run has a HotFlip report.
        View::Security if crate::tui::state::chart::attacked(app).iter().any(|r| !r.flips.is_empty()) => {
            vec!["Robustness", "Token flips", "Extraction watch", "Flagged requests"]
        }
        View::Security => vec!["Robustness", "Extraction watch", "Flagged requests"],
        View::Sweeps => vec!["Trials", "Sweeps", "Best so far", "Scatter"],
        // The Playground's Tab moves between its prompt and settings (its own keys).
        View::Runs | View::Playground | View::Extra(_) => vec![],
    }
}

/// Whether the view gives the arrows no meaning of its own, so that its first panel scrolls
/// with them too.
fn arrows_free(view: View) -> bool {
    matches!(view, View::System | View::Security)
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

/// The views' panels' state: each view keeps its focus, scroll and zoom while you look elsewhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panes {
    pub service: Focus,
    pub system: Focus,
    pub overview: Focus,
    pub detail: Focus,
    pub compare: Focus,
    pub logs_focus: Focus,
    pub explain: Focus,
    pub security: Focus,
    pub sweeps: Focus,
    pub help: Search,
    pub logs: Search,
}

impl Panes {
    pub fn focus(&self, view: View) -> Option<&Focus> {
        match view {
            View::Service => Some(&self.service),
            View::System => Some(&self.system),
            View::Overview => Some(&self.overview),
            View::Detail => Some(&self.detail),
            View::Compare => Some(&self.compare),
            View::Logs => Some(&self.logs_focus),
            View::Explain => Some(&self.explain),
            View::Security => Some(&self.security),
            View::Sweeps => Some(&self.sweeps),
            // The Playground's Tab moves between its prompt and settings: it has no panel focus.
            View::Runs | View::Playground | View::Extra(_) => None,
        }
    }

    fn focus_mut(&mut self, view: View) -> Option<&mut Focus> {
        match view {
            View::Service => Some(&mut self.service),
            View::System => Some(&mut self.system),
            View::Overview => Some(&mut self.overview),
            View::Detail => Some(&mut self.detail),
            View::Compare => Some(&mut self.compare),
            View::Logs => Some(&mut self.logs_focus),
            View::Explain => Some(&mut self.explain),
            View::Security => Some(&mut self.security),
            View::Sweeps => Some(&mut self.sweeps),
            // The Playground's Tab moves between its prompt and settings: it has no panel focus.
            View::Runs | View::Playground | View::Extra(_) => None,
        }
    }
}

/// The focused panel's name in a view with panels (the first one when the panels changed under
/// the focus, as when the Detail view's tab did).
pub fn focused(app: &App, view: View) -> Option<&'static str> {
    let f = app.panes.focus(view)?;
    let p = panels(app, view);
    p.get(f.panel).or(p.first()).copied()
}

/// The panel shown alone on the whole body, when the view's focused panel is zoomed.
pub fn zoomed(app: &App, view: View) -> Option<&'static str> {
    app.panes.focus(view).filter(|f| f.zoomed).and(focused(app, view))
}

/// Lines the panel `name` of the view is scrolled by (0 unless it has the focus).
pub fn scroll(app: &App, view: View, name: &str) -> u16 {
    match app.panes.focus(view) {
        Some(f) if focused(app, view) == Some(name) => f.scroll,
        _ => 0,
    }
}

/// Whether the panel `name` has the focus in a view with more than one panel (its border is
/// then drawn in the accent colour).
pub fn has_focus(app: &App, view: View, name: &str) -> bool {
    panels(app, view).len() > 1 && focused(app, view) == Some(name)
}

/// Tab, Shift-Tab, `z` and scrolling in a view with panels; `None` for the other keys (and
/// views without panels). Offered before the view's own keys, so that the arrows scroll a
/// focused panel other than the main one.
pub fn handle(action: Action, app: &mut App) -> Option<Vec<Effect>> {
    let view = app.view;
    let n = panels(app, view).len();
    if n == 0 {
        return None;
    }
    // The main panel keeps the view's own arrows (the access log scrolls itself and follows).
    let main = !arrows_free(view) && focused(app, view) == panels(app, view).first().copied();
    let f = app.panes.focus_mut(view)?;
    if f.panel >= n {
        *f = Focus { zoomed: f.zoomed, ..Focus::default() };
    }
    match action {
        // In the Detail view Tab switches tabs (the global key); Shift-Tab moves the focus.
        Action::NextTab if view == View::Detail => return None,
        Action::NextTab => {
            f.panel = (f.panel + 1) % n;
            f.scroll = 0;
        }
        Action::FocusPrev => {
            f.panel = (f.panel + n - 1) % n;
            f.scroll = 0;
        }
        Action::ZoomPane => f.zoomed = !f.zoomed,
        Action::Up | Action::Down | Action::PageUp | Action::PageDown | Action::Top if main => {
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

/// The Logs view's lines as the search reads them: the run's events (oldest first, as the log
/// reads), then the console's messages (newest first, as their panel under the log reads).
pub fn log_lines(app: &App) -> Vec<String> {
    let events = app.selected().map_or(vec![], |r| {
        r.events
            .iter()
            .map(|e| format!("{} {} {}", e.time.get(11..19).unwrap_or(&e.time), e.kind, e.message))
            .collect()
    });
    let messages = app.messages.history().rev().map(|m| {
        let notice = m.notice.map_or(String::new(), |n| format!("● {} ", n.label()));
        format!("{} {notice}{}", m.clock, m.text)
    });
    events.into_iter().chain(messages).collect()
}

/// How many of [`log_lines`] are the run's events (the rest are messages).
pub fn log_event_count(app: &App) -> usize {
    app.selected().map_or(0, |r| r.events.len())
}

/// Brings the search's match `line` of [`log_lines`] into view: the log scrolls to an event
/// (`scroll` is the log's, counted back from its end); a message focuses the messages panel,
/// scrolled to it.
fn show_log_match(app: &mut App, scroll: &mut usize, line: usize) {
    let events = log_event_count(app);
    let f = &mut app.panes.logs_focus;
    if line < events {
        *scroll = events - 1 - line;
        f.panel = 0;
        f.scroll = 0;
    } else {
        f.panel = 1;
        f.scroll = (line - events).min(u16::MAX as usize) as u16;
    }
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
            let mut scroll = app.logs.scroll;
            show_log_match(app, &mut scroll, l);
            app.logs.scroll = scroll;
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
            // The log reads top to bottom, oldest first, then the messages: "next" is further down.
            if let Some(l) = app.panes.logs.step(&lines, action == Action::NewRun) {
                show_log_match(app, scroll, l);
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
