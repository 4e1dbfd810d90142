//! The views whose state is small: Overview, Runs, Detail, Compare, Logs, System and Security.
//! The run selection, marks, sort and filter they share live in [`App`]; what is a view's own
//! (the detail's tab, the log's scroll) lives here with its keys.

use super::{App, Binding, Effect, ViewState, chart};
use crate::tui::keymap::Action;

/// The run keys the Overview and Runs footers show (the keys work everywhere).
const RUN_HINTS: [Binding; 5] = [
    Binding::new(&[Action::Open]).hint("detail"),
    Binding::new(&[Action::NewRun]).hint("new"),
    Binding::new(&[Action::PauseResume]).hint("pause/resume"),
    Binding::new(&[Action::StopRun]).hint("stop"),
    Binding::new(&[Action::Filter]).hint("filter"),
];

/// Overview: active runs, live loss, the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct OverviewView;

impl ViewState for OverviewView {
    fn title(&self) -> &'static str {
        "Overview"
    }
    fn bindings(&self) -> &'static [Binding] {
        &RUN_HINTS
    }
    fn handle(&mut self, action: Action, _app: &mut App) -> Option<Vec<Effect>> {
        // The overview's chart has no readout cursor.
        matches!(action, Action::Left | Action::Right).then(Vec::new)
    }
}

const RUNS_BINDINGS: [Binding; 7] = [
    RUN_HINTS[0],
    RUN_HINTS[1],
    RUN_HINTS[2],
    RUN_HINTS[3],
    RUN_HINTS[4],
    Binding::new(&[Action::ToggleMark]).hint("mark"),
    Binding::new(&[Action::SortNext]).hint("sort"),
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
    fn handle(&mut self, _action: Action, _app: &mut App) -> Option<Vec<Effect>> {
        None
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

const DETAIL_BINDINGS: &[Binding] =
    &[Binding::new(&[Action::Left, Action::Right]), Binding::new(&[Action::PageUp, Action::PageDown])];

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

/// Compare: the marked runs' curves overlaid.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompareView;

const COMPARE_BINDINGS: &[Binding] = &[Binding::new(&[Action::Left, Action::Right])];

impl ViewState for CompareView {
    fn title(&self) -> &'static str {
        "Compare"
    }
    fn bindings(&self) -> &'static [Binding] {
        COMPARE_BINDINGS
    }
    fn hints(&self, _app: &App) -> Vec<Binding> {
        chart_hints()
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        chart::move_cursor(app, action)
    }
}

/// The log view's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsState {
    /// Lines scrolled back from the end (0 follows new lines).
    pub scroll: usize,
}

const LOGS_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Up]).hint("scroll"),
    Binding::new(&[Action::Down]),
    Binding::new(&[Action::PageUp]),
    Binding::new(&[Action::PageDown]),
    Binding::new(&[Action::Top]),
    Binding::new(&[Action::Bottom]).hint("follow"),
];

impl ViewState for LogsState {
    fn title(&self) -> &'static str {
        "Logs"
    }
    fn bindings(&self) -> &'static [Binding] {
        LOGS_BINDINGS
    }
    fn handle(&mut self, action: Action, _app: &mut App) -> Option<Vec<Effect>> {
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

impl ViewState for SystemView {
    fn title(&self) -> &'static str {
        "System"
    }
    fn bindings(&self) -> &'static [Binding] {
        &[]
    }
    fn handle(&mut self, _action: Action, _app: &mut App) -> Option<Vec<Effect>> {
        None
    }
}

/// Security: robustness curves, the extraction watch, flagged requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityView;

const SECURITY_BINDINGS: &[Binding] = &[
    Binding::new(&[Action::ToggleMark]).hint("runs to compare (in 2)"),
    Binding::new(&[Action::ShowExplain]).hint("adversarial examples"),
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
