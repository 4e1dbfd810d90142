//! The console's messages: every line the status line ever showed, kept in a bounded history
//! (opened with `M`, and listed under the Logs view's event log), and which of them is shown
//! now. A message is either a plain one (a few seconds in the status line) or a *notice*: a run
//! finished, failed or diverged, which stands out and stays longer, since it is what a user
//! who looked away wants to see first. The run that a notice is about is remembered so that the
//! same ending is never announced twice (the runner and the store follower both report it).
//!
//! Plain data and no drawing: `views/` reads it; search (`/` in the Logs view) filters
//! [`Messages::matching`]. Nothing here knows the clock but through the `Instant`s it is given.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::KeyEvent;

use crate::store::RunId;
use crate::tui::app::{App, Effect, Level, Mode};
use crate::tui::keymap::Action;

/// Messages kept; older ones are dropped first.
pub const HISTORY: usize = 500;
/// How long a plain message stays in the status line.
pub const SHOWN_FOR: Duration = Duration::from_secs(6);
/// How long a notice stays in the status line.
pub const NOTICE_FOR: Duration = Duration::from_secs(20);

/// What a notice announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Finished,
    Failed,
    Diverged,
}

impl Notice {
    /// The word the status line and the history put before the text.
    pub fn label(&self) -> &'static str {
        match self {
            Notice::Finished => "finished",
            Notice::Failed => "failed",
            Notice::Diverged => "diverged",
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub level: Level,
    pub at: Instant,
    /// Wall-clock time for the history, `HH:MM:SS` UTC.
    pub clock: String,
    pub notice: Option<Notice>,
}

impl Message {
    /// Whether the status line still shows it at `now`.
    pub fn fresh(&self, now: Instant) -> bool {
        let life = if self.notice.is_some() { NOTICE_FOR } else { SHOWN_FOR };
        now.saturating_duration_since(self.at) <= life
    }
}

/// The history and what the status line shows.
#[derive(Debug, Clone, Default)]
pub struct Messages {
    history: VecDeque<Message>,
    /// Whether the newest message is still in the status line.
    shown: bool,
    /// Runs whose ending has been announced.
    announced: BTreeSet<RunId>,
}

impl Messages {
    /// Adds a message; it becomes the one the status line shows.
    pub fn push(&mut self, level: Level, text: impl Into<String>, notice: Option<Notice>) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        let clock = time::OffsetDateTime::now_utc();
        let clock = format!("{:02}:{:02}:{:02}", clock.hour(), clock.minute(), clock.second());
        self.history.push_back(Message { text: text.into(), level, at: Instant::now(), clock, notice });
        self.shown = true;
    }

    /// Announces that a run ended, once per run (the runner and the store both tell of it);
    /// returns whether this call announced it.
    pub fn announce(&mut self, run: &RunId, notice: Notice, text: impl Into<String>) -> bool {
        if !self.announced.insert(run.clone()) {
            return false;
        }
        let level = if notice == Notice::Finished { Level::Info } else { Level::Error };
        self.push(level, text, Some(notice));
        true
    }

    /// A run that trains again (resumed, restarted) may end again.
    pub fn rearm(&mut self, run: &RunId) {
        self.announced.remove(run);
    }

    /// The message the status line shows, if any.
    pub fn current(&self) -> Option<&Message> {
        self.history.back().filter(|_| self.shown)
    }

    /// Takes the current message off the status line once its time is up; returns whether it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let stale = self.current().is_some_and(|m| !m.fresh(now));
        if stale {
            self.shown = false;
        }
        stale
    }

    /// Takes the current message off the status line now (Esc).
    pub fn dismiss(&mut self) -> bool {
        std::mem::replace(&mut self.shown, false)
    }

    /// Every message kept, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Message> + ExactSizeIterator {
        self.history.iter()
    }

    pub fn len(&self) -> usize {
        self.history.len()
    }

    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// The messages whose text contains `query` (case-insensitive), oldest first.
    pub fn matching<'a>(&'a self, query: &str) -> impl Iterator<Item = &'a Message> + 'a {
        let q = query.to_lowercase();
        self.history.iter().filter(move |m| q.is_empty() || m.text.to_lowercase().contains(&q))
    }
}

/// A key while the history is open: ↑↓ and PgUp/PgDn scroll back, Home/End go to the oldest and
/// newest, Esc (or `M` again) closes it, `q` still quits.
pub fn key(app: &mut App, k: &KeyEvent, scroll: usize) -> Vec<Effect> {
    let last = app.messages.len().saturating_sub(1);
    let scroll = match app.keymap.action(k) {
        Some(Action::Up) => scroll.saturating_add(1).min(last),
        Some(Action::Down) => scroll.saturating_sub(1),
        Some(Action::PageUp) => scroll.saturating_add(10).min(last),
        Some(Action::PageDown) => scroll.saturating_sub(10),
        Some(Action::Top) => last,
        Some(Action::Bottom) => 0,
        Some(Action::Quit) => return app.act(Action::Quit),
        Some(Action::Back | Action::ShowMessages) => {
            app.messages.dismiss();
            app.status = None;
            return vec![];
        }
        _ => scroll,
    };
    app.mode = Mode::Messages { scroll };
    vec![]
}

/// The notice a run's failure reason deserves: a loss that stopped being finite diverged.
pub fn failure_notice(reason: &str) -> Notice {
    let r = reason.to_lowercase();
    if r.contains("loss became") || r.contains("diverge") { Notice::Diverged } else { Notice::Failed }
}

/// Lays `text` out in lines of at most `width` characters, breaking at spaces where it can (a
/// word longer than a line is cut into pieces), at most `max_lines` lines; when it needs more,
/// the last line ends in `…`. The status line uses it so that the end of a message, which is
/// usually what to do, is not lost.
pub fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let sep = usize::from(used > 0);
            if used + sep + word.len() <= width {
                if sep == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word wider than the line: cut it.
            let rest = word.split_off(width);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines.max(1));
        let last = lines.last_mut().expect("at least one line");
        let mut cut: String = last.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        *last = cut;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_wrap_at_words_and_keep_their_end() {
        let text = "serving digits-mlp-d4e5f6 on http://127.0.0.1:7878 (warning: no active key \
                    with predict scope: create one with `vigil keys create --scope predict`)";
        let lines = wrap(text, 40, 5);
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:?}");
        assert_eq!(lines.join(" "), text, "nothing is lost when it fits in the lines allowed");
        assert!(lines.last().unwrap().ends_with("predict`)"));
        let cut = wrap(text, 40, 2);
        assert_eq!(cut.len(), 2);
        assert!(cut[1].ends_with('…'));
        // A word longer than the line is cut, not dropped.
        assert_eq!(wrap("abcdefghijkl", 8, 3), vec!["abcdefgh", "ijkl"]);
    }

    #[test]
    fn a_run_ending_is_announced_once_until_it_trains_again() {
        let mut m = Messages::default();
        let id: RunId = "digits-mlp-1".into();
        assert!(m.announce(&id, Notice::Finished, "digits-mlp-1 completed"));
        assert!(!m.announce(&id, Notice::Finished, "digits-mlp-1 completed"));
        assert_eq!(m.len(), 1);
        m.rearm(&id);
        assert!(m.announce(&id, Notice::Failed, "digits-mlp-1 failed"));
        assert_eq!(m.current().unwrap().notice, Some(Notice::Failed));
        assert_eq!(failure_notice("the training loss became NaN at epoch 3"), Notice::Diverged);
        assert_eq!(failure_notice("cannot read data.csv"), Notice::Failed);
    }

    #[test]
    fn notices_outlive_plain_messages_and_history_is_bounded() {
        let mut m = Messages::default();
        m.push(Level::Info, "plain", None);
        let later = Instant::now() + SHOWN_FOR + Duration::from_secs(1);
        assert!(m.expire(later) && m.current().is_none());
        m.push(Level::Error, "run failed", Some(Notice::Failed));
        assert!(!m.expire(later), "a notice stays longer");
        assert!(m.expire(later + NOTICE_FOR));
        for i in 0..HISTORY + 10 {
            m.push(Level::Info, format!("m{i}"), None);
        }
        assert_eq!(m.len(), HISTORY);
        assert_eq!(m.matching("M509").count(), 1);
    }
}
