//! The console's state, one struct per view, and the key tables everything about keys is
//! generated from. A view's state implements [`ViewState`]: its table of [`Binding`]s (action,
//! footer word, `:` commands), `handle` (what an action does there; `None` when the view leaves
//! it to the chart keys and then the global keys) and `hints` (the footer). [`crate::tui::app`]
//! offers each action to the active view first; the footer, the `:` commands and the help overlay
//! (grouped by view) are all read from the same tables, so adding a key to a view is one row.
//!
//! Nothing here draws or imports `views/`; nothing here does I/O (themes are loaded by an
//! effect the event loop carries out).

pub mod chart;
pub mod explain;
pub mod global;
pub mod keys;
pub mod messages;
pub mod modes;
pub mod panes;
pub mod playground;
pub mod run;
pub mod screens;
pub mod service;
pub mod sweeps;
pub mod system;
pub mod table;
pub mod try_it;

pub use crate::tui::app::{App, Effect, Level, View};
use crate::tui::keymap::Action;

/// One row of a key table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binding {
    /// The action, or two shown as one hint (`←→`).
    pub actions: &'static [Action],
    /// The word the footer shows beside the key; the row is left out of the footer without one.
    pub hint: Option<&'static str>,
    /// The `:` commands that run the (first) action.
    pub commands: &'static [&'static str],
    /// What the keys do in this view, when it is not the action's own description (`/` in the
    /// Logs view searches the log rather than filtering runs).
    pub about: Option<&'static str>,
}

impl Binding {
    pub const fn new(actions: &'static [Action]) -> Self {
        Binding { actions, hint: None, commands: &[], about: None }
    }
    pub const fn hint(self, word: &'static str) -> Self {
        Binding { hint: Some(word), ..self }
    }
    pub const fn commands(self, names: &'static [&'static str]) -> Self {
        Binding { commands: names, ..self }
    }
    pub const fn about(self, text: &'static str) -> Self {
        Binding { about: Some(text), ..self }
    }
}

/// A view's state and its keys.
pub trait ViewState {
    /// The view's name, heading its group in the help.
    fn title(&self) -> &'static str;

    /// Every key the view knows (help, `:` commands and, by default, the footer).
    fn bindings(&self) -> &'static [Binding];

    /// The footer's hints now: the rows with a hint word.
    fn hints(&self, _app: &App) -> Vec<Binding> {
        self.bindings().iter().filter(|b| b.hint.is_some()).copied().collect()
    }

    /// What an action does in this view; `None` leaves it to the chart keys, then the global
    /// keys. The state is taken out of the app while this runs: `app.<this view>` reads a
    /// default, so a view changes itself through `self`.
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>>;
}

/// A group of the help overlay: a heading and (keys, what they do) lines.
pub type HelpGroup = (&'static str, Vec<(String, &'static str)>);

/// The keys of an action as the footer shows them (a pair reads `←→`).
fn keys_of(app: &App, b: &Binding) -> String {
    b.actions.iter().map(|a| app.keymap.hint(*a)).collect()
}

/// The footer's hints for the active view, as (keys, word): help first; the caller adds the
/// command line and quit, which always show.
pub fn footer(app: &App) -> Vec<(String, &'static str)> {
    let mut items = vec![(app.keymap.hint(Action::Help), "help")];
    let hints = app.view_state(app.view).hints(app);
    items.extend(hints.iter().filter_map(|b| Some((keys_of(app, b), b.hint?))));
    items
}

/// The help overlay: the active view's own keys, the keys that work everywhere, then each other
/// view's own keys and the chart keys. Each line is the action's doc comment, so help follows the code.
pub fn help(app: &App) -> Vec<HelpGroup> {
    let global: Vec<Action> = global::BINDINGS.iter().flat_map(|b| b.actions.iter().copied()).collect();
    let line = |(a, about): (Action, Option<&'static str>)| {
        let keys: Vec<String> = app.keymap.keys_for(a).iter().map(|k| k.to_string()).collect();
        (
            if keys.is_empty() { "(unbound)".to_string() } else { keys.join(" ") },
            about.unwrap_or(a.describe()),
        )
    };
    let mut views = app.all_views();
    views.sort_by_key(|v| *v != app.view);
    let mut tables: Vec<(&'static str, &'static [Binding])> =
        views.into_iter().map(|v| (app.view_state(v).title(), app.view_state(v).bindings())).collect();
    tables.insert(1, ("Everywhere", global::BINDINGS));
    tables.push(("Charts", chart::BINDINGS));
    let mut groups = Vec::new();
    for (i, (title, rows)) in tables.into_iter().enumerate() {
        let mut actions: Vec<(Action, Option<&'static str>)> = Vec::new();
        for (a, about) in rows.iter().flat_map(|b| b.actions.iter().map(|a| (*a, b.about))) {
            // A view lists only what it does differently (a global key it gives another meaning
            // to, too); the global keys have a group.
            if (i == 1 || about.is_some() || !global.contains(&a)) && !actions.iter().any(|(x, _)| *x == a) {
                actions.push((a, about));
            }
        }
        if !actions.is_empty() {
            groups.push((title, actions.into_iter().map(line).collect()));
        }
    }
    groups
}

/// Every `:` command and the action it runs, in the order completion offers them: the global
/// ones, the chart's, then each view's.
pub fn commands(app: &App) -> Vec<(&'static str, Action)> {
    let mut tables: Vec<&'static [Binding]> = vec![global::BINDINGS, chart::BINDINGS];
    tables.extend(app.all_views().into_iter().map(|v| app.view_state(v).bindings()));
    let mut out: Vec<(&'static str, Action)> = Vec::new();
    for b in tables.into_iter().flatten() {
        for c in b.commands {
            if !out.iter().any(|(n, _)| n == c) {
                out.push((c, b.actions[0]));
            }
        }
    }
    out
}
