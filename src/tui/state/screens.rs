//! The views whose state is small: Overview (the run it follows or pins), Runs, Detail, Compare
//! (colour slots, the parameters' scroll), Logs, System and Security. (The Runs view's columns
//! mode is [`super::table`]; panels and searches are [`super::panes`].)
//! The run selection, marks, sort and filter they share live in [`App`]; what is a view's own
//! (the detail's tab, the log's scroll) lives here with its keys.

use std::collections::BTreeMap;

use super::{App, Binding, Effect, Level, ViewState, chart};
use crate::store::{RunId, RunStatus};
use crate::tui::keymap::Action;
use crate::tui::state::run::RunState;

/// The run keys the Overview and Runs footers show (the keys work everywhere).
const RUN_HINTS: [Binding; 5] = [
    Binding::new(&[Action::Open]).hint("detail"),
    Binding::new(&[Action::NewRun]).hint("new"),
    Binding::new(&[Action::PauseResume]).hint("pause/resume"),
    Binding::new(&[Action::StopRun]).hint("stop"),
    Binding::new(&[Action::Filter]).hint("filter"),
];

/// Overview: active runs, live loss, the machine. Its chart follows the training run (the
/// newest one training, else the newest active one) until the user picks one with ↑↓ or pins
/// the one shown with `P`; a pinned run stays shown while others start and finish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverviewState {
    pub pinned: Option<RunId>,
}

const OVERVIEW_BINDINGS: [Binding; 10] = [
    RUN_HINTS[0],
    Binding::new(&[Action::PinRun]).hint("pin"),
    Binding::new(&[Action::Up, Action::Down]),
    RUN_HINTS[1],
    RUN_HINTS[2],
    RUN_HINTS[3],
    RUN_HINTS[4],
    PANE_KEYS[0],
    PANE_KEYS[1],
    PANE_KEYS[2],
];

/// Why the Overview shows the run it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Pinned,
    /// Followed: the newest run training (or active).
    Following,
    /// Nothing is active: the run selected in the Runs view.
    Selected,
}

impl OverviewState {
    /// The run the Overview's chart shows, and why.
    pub fn shown<'a>(&self, app: &'a App) -> Option<(&'a RunState, Shown)> {
        if let Some(r) = self.pinned.as_ref().and_then(|id| app.runs.get(id)) {
            return Some((r, Shown::Pinned));
        }
        let active = app.active();
        let training = active.iter().rev().find(|r| r.info.status == RunStatus::Running);
        if let Some(r) = training.or(active.last()) {
            return Some((r, Shown::Following));
        }
        app.selected().map(|r| (r, Shown::Selected))
    }
}

impl ViewState for OverviewState {
    fn title(&self) -> &'static str {
        "Overview"
    }
    fn bindings(&self) -> &'static [Binding] {
        &OVERVIEW_BINDINGS
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        match action {
            // The overview's chart has no readout cursor.
            Action::Left | Action::Right => Some(vec![]),
            Action::PinRun => {
                match self.pinned.take() {
                    Some(id) => app.say(Level::Info, format!("unpinned {id}: following the training run")),
                    None => {
                        let id = self.shown(app).map(|(r, _)| r.info.id.clone())?;
                        app.say(Level::Info, format!("pinned {id}; P follows the training run again"));
                        self.pinned = Some(id);
                    }
                }
                Some(vec![])
            }
            // ↑↓ walk the active runs and pin the one reached.
            Action::Up | Action::Down => {
                let ids: Vec<RunId> = app.active().iter().map(|r| r.info.id.clone()).collect();
                if ids.is_empty() {
                    return None;
                }
                let at = self.shown(app).and_then(|(r, _)| ids.iter().position(|i| *i == r.info.id));
                let next = match (at, action) {
                    (None, _) => 0,
                    (Some(i), Action::Up) => i.saturating_sub(1),
                    (Some(i), _) => (i + 1).min(ids.len() - 1),
                };
                self.pinned = Some(ids[next].clone());
                Some(vec![])
            }
            // The run keys act on the run the Overview shows, not on a row out of sight.
            Action::Open
            | Action::PauseResume
            | Action::StopRun
            | Action::Evaluate
            | Action::CloneRun
            | Action::DeleteRun => {
                if let Some(id) = self.shown(app).map(|(r, _)| r.info.id.clone()) {
                    app.select_run(&id);
                }
                None
            }
            _ => None,
        }
    }
}

const RUNS_BINDINGS: [Binding; 11] = [
    RUN_HINTS[0],
    RUN_HINTS[1],
    RUN_HINTS[2],
    RUN_HINTS[3],
    RUN_HINTS[4],
    Binding::new(&[Action::ToggleMark]).hint("mark"),
    Binding::new(&[Action::SortNext]).hint("sort"),
    Binding::new(&[Action::ToggleColumns]).hint("columns").commands(&["columns"]),
    Binding::new(&[Action::Right]).about("Columns mode: ←→ pick the column that o sorts by"),
    Binding::new(&[Action::TagRun]).hint("tag"),
    Binding::new(&[Action::NoteRun]).hint("note"),
];

/// Runs: the table of every run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunsView;

impl ViewState for RunsView {
    fn title(&self) -> &'static str {
        "Runs"
    }
    fn bindings(&self) -> &'static [Binding] {
        &RUNS_BINDINGS
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        super::table::handle(action, app)
    }
}

/// Tabs of the run detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetailTab {
    #[default]
    Curves,
    Evaluation,
    Params,
}

/// The run detail's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetailState {
    pub tab: DetailTab,
    /// First hyperparameter shown in the parameters tab.
    pub params_scroll: usize,
}

const DETAIL_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]),
    Binding::new(&[Action::PageUp, Action::PageDown]),
    Binding::new(&[Action::FocusPrev]).about("Focus the tab's next panel (Tab switches tabs)"),
    PANE_KEYS[2],
];

/// The footer on the evaluation tab: its keys, not the chart's.
const EVALUATION_HINTS: &[Binding] = &[
    Binding::new(&[Action::Evaluate]).hint("evaluate best"),
    Binding::new(&[Action::NextTab]).hint("next tab"),
];
/// The footer on the parameters tab.
const PARAMS_HINTS: &[Binding] =
    &[Binding::new(&[Action::PageDown]).hint("scroll"), Binding::new(&[Action::NextTab]).hint("next tab")];

/// The chart views' footer: the chart keys.
fn chart_hints() -> Vec<Binding> {
    chart::BINDINGS.iter().filter(|b| b.hint.is_some()).copied().collect()
}

impl ViewState for DetailState {
    fn title(&self) -> &'static str {
        "Detail"
    }
    fn bindings(&self) -> &'static [Binding] {
        DETAIL_BINDINGS
    }
    fn hints(&self, _app: &App) -> Vec<Binding> {
        match self.tab {
            DetailTab::Curves => chart_hints(),
            DetailTab::Evaluation => EVALUATION_HINTS.to_vec(),
            DetailTab::Params => PARAMS_HINTS.to_vec(),
        }
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        match action {
            Action::Left | Action::Right => chart::move_cursor(app, action),
            Action::PageUp if self.tab == DetailTab::Params => {
                self.params_scroll = self.params_scroll.saturating_sub(10);
                Some(vec![])
            }
            Action::PageDown if self.tab == DetailTab::Params => {
                let n = app.selected().map_or(0, |r| r.params.len());
                self.params_scroll = (self.params_scroll + 10).min(n.saturating_sub(1));
                Some(vec![])
            }
            _ => None,
        }
    }
}

/// Compare: the marked runs' curves overlaid. Each compared run holds a colour slot for as
/// long as it is compared: a run that joins takes the lowest free slot, so colours never shift
/// when runs come, go or re-sort (and with as many colours as the theme has, no two compared
/// runs share one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompareState {
    pub slots: BTreeMap<RunId, usize>,
    /// First parameter row shown.
    pub params_scroll: usize,
}

impl CompareState {
    /// Keeps the slots of runs still compared, frees the others', and gives new ones the lowest
    /// free slots in the order given.
    pub fn assign(&mut self, compared: &[RunId]) {
        self.slots.retain(|id, _| compared.contains(id));
        for id in compared {
            if !self.slots.contains_key(id) {
                let free = (0..).find(|s| !self.slots.values().any(|v| v == s)).expect("a free slot");
                self.slots.insert(id.clone(), free);
            }
        }
    }

    /// The colour slot of a compared run (0 for one that is not compared).
    pub fn slot(&self, id: &str) -> usize {
        self.slots.get(id).copied().unwrap_or(0)
    }
}

const COMPARE_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]),
    Binding::new(&[Action::PageUp, Action::PageDown]),
    PANE_KEYS[0],
    PANE_KEYS[1],
    PANE_KEYS[2],
];

impl ViewState for CompareState {
    fn title(&self) -> &'static str {
        "Compare"
    }
    fn bindings(&self) -> &'static [Binding] {
        COMPARE_BINDINGS
    }
    fn hints(&self, _app: &App) -> Vec<Binding> {
        // Tab moves the focus here (it is the next tab only in the Detail view).
        chart_hints()
            .into_iter()
            .map(|b| if b.actions == [Action::NextTab] { PANE_BINDINGS[0] } else { b })
            .collect()
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        match action {
            Action::PageUp => self.params_scroll = self.params_scroll.saturating_sub(5),
            Action::PageDown => {
                let runs = app.compared();
                let rows: std::collections::BTreeSet<&String> =
                    runs.iter().flat_map(|r| r.params.keys()).collect();
                self.params_scroll = (self.params_scroll + 5).min(rows.len().saturating_sub(1));
            }
            _ => return chart::move_cursor(app, action),
        }
        Some(vec![])
    }
}

/// The log view's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsState {
    /// Lines scrolled back from the end (0 follows new lines).
    pub scroll: usize,
}

const LOGS_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Filter]).hint("search").about("Search the log (Enter keeps, Esc clears)"),
    Binding::new(&[Action::NewRun]).about("Next match of the search (a new run when none is set)"),
    Binding::new(&[Action::SearchPrev]).hint("prev match"),
    Binding::new(&[Action::Up]).hint("scroll"),
    Binding::new(&[Action::Down]),
    Binding::new(&[Action::PageUp]),
    Binding::new(&[Action::PageDown]),
    Binding::new(&[Action::Top]),
    Binding::new(&[Action::Bottom]).hint("follow"),
    PANE_KEYS[0],
    PANE_KEYS[1],
    PANE_KEYS[2],
];

impl ViewState for LogsState {
    fn title(&self) -> &'static str {
        "Logs"
    }
    fn bindings(&self) -> &'static [Binding] {
        LOGS_BINDINGS
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        if let Some(effects) = super::panes::logs_action(action, app, &mut self.scroll) {
            return Some(effects);
        }
        match action {
            Action::Up => self.scroll += 1,
            Action::Down => self.scroll = self.scroll.saturating_sub(1),
            Action::PageUp => self.scroll += 10,
            Action::PageDown => self.scroll = self.scroll.saturating_sub(10),
            Action::Top => self.scroll = usize::MAX / 2,
            Action::Bottom => self.scroll = 0,
            _ => return None,
        }
        Some(vec![])
    }
}

/// System: CPU, memory and GPU usage (no keys of its own).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemView;

/// The keys of the views with panels (every view but Runs; `panes` lists the panels).
pub const PANE_BINDINGS: [Binding; 4] = [
    Binding::new(&[Action::NextTab]).hint("panel").about("Focus the next panel"),
    Binding::new(&[Action::FocusPrev]),
    Binding::new(&[Action::ZoomPane]).hint("zoom"),
    Binding::new(&[Action::Up, Action::Down]).about("Scroll the focused panel"),
];

/// The panel keys in the views whose footer has no room for them: in the help only.
pub const PANE_KEYS: [Binding; 3] = [
    Binding::new(&[Action::NextTab]).about("Focus the next panel (↑↓ scroll it, unless it is the first)"),
    Binding::new(&[Action::FocusPrev]),
    Binding::new(&[Action::ZoomPane]),
];

impl ViewState for SystemView {
    fn title(&self) -> &'static str {
        "System"
    }
    fn bindings(&self) -> &'static [Binding] {
        &PANE_BINDINGS
    }
    fn handle(&mut self, _action: Action, _app: &mut App) -> Option<Vec<Effect>> {
        // Its keys are the panel keys, offered before any view's (`App::act`).
        None
    }
}

/// Security: robustness curves, the extraction watch, flagged requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityView;

const SECURITY_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::ToggleMark]).hint("runs to compare (in 2)"),
    Binding::new(&[Action::ShowExplain]).hint("adversarial examples"),
    PANE_BINDINGS[0],
    PANE_BINDINGS[1],
    PANE_BINDINGS[2],
    PANE_BINDINGS[3],
];

impl ViewState for SecurityView {
    fn title(&self) -> &'static str {
        "Security"
    }
    fn bindings(&self) -> &'static [Binding] {
        SECURITY_BINDINGS
    }
    fn handle(&mut self, _action: Action, _app: &mut App) -> Option<Vec<Effect>> {
        None
    }
}
