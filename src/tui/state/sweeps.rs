//! The Sweeps view's state: the sweeps the sweep follower reported, which one is selected, the
//! trials table's cursor and sort (by trial, objective, or any varied parameter), and the view's
//! keys: open a trial's detail, stop a trial (`scancel` on Slurm), overlay the sweep's trials in
//! Compare. Stopping is an effect the event loop carries out; nothing here does I/O.

use super::{App, Binding, Effect, Level, ViewState};
use crate::engine::sweeps::SweepFeed;
use crate::store::RunId;
use crate::sweep::{SweepState, TrialRecord, TrialStatus};
use crate::tui::app::View;
use crate::tui::keymap::Action;

/// What the trials table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrialSort {
    /// Best first.
    #[default]
    Objective,
    Number,
    /// The varied parameter at this index of the sweep's parameters.
    Param(usize),
}

/// The Sweeps view.
#[derive(Debug, Clone, Default)]
pub struct SweepsState {
    pub sweeps: Vec<SweepFeed>,
    /// Index into `sweeps` (newest last; the newest is selected until the user moves).
    pub selected: usize,
    pub pinned: bool,
    /// Row of the trials table.
    pub cursor: usize,
    pub sort: TrialSort,
    pub reversed: bool,
}

const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]).hint("sweep"),
    Binding::new(&[Action::SortNext]).hint("sort"),
    Binding::new(&[Action::Open]).hint("detail"),
    Binding::new(&[Action::StopRun]).hint("stop"),
    Binding::new(&[Action::ShowCompare]).hint("compare"),
    super::screens::PANE_KEYS[0],
    super::screens::PANE_KEYS[1],
    super::screens::PANE_KEYS[2],
];

impl SweepsState {
    /// Takes the follower's new list, keeping the selection on the same sweep.
    pub fn update(&mut self, feeds: Vec<SweepFeed>) {
        let keep = self.current().map(|s| s.state.id.clone());
        self.sweeps = feeds;
        match keep.filter(|_| self.pinned) {
            Some(id) => self.selected = self.sweeps.iter().position(|s| s.state.id == id).unwrap_or(0),
            None => self.selected = self.sweeps.len().saturating_sub(1),
        }
    }

    /// The selected sweep.
    pub fn current(&self) -> Option<&SweepFeed> {
        self.sweeps.get(self.selected.min(self.sweeps.len().saturating_sub(1)))
    }

    /// The selected sweep's trials in the table's order.
    pub fn rows(&self) -> Vec<&TrialRecord> {
        let Some(feed) = self.current() else { return vec![] };
        sorted(&feed.state, self.sort, self.reversed)
    }

    /// The trial under the cursor.
    pub fn selected_trial(&self) -> Option<&TrialRecord> {
        let rows = self.rows();
        rows.get(self.cursor.min(rows.len().saturating_sub(1))).copied()
    }

    /// The columns the sort cycles through, for the table's header.
    pub fn sort_label(&self) -> String {
        match (self.sort, self.current()) {
            (TrialSort::Objective, Some(f)) => f.state.metric.as_str().to_string(),
            (TrialSort::Number, _) => "trial".into(),
            (TrialSort::Param(i), Some(f)) => f.state.parameters.get(i).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// A sweep's trials sorted: by objective (best first, those without a value last), by number,
/// or by a parameter's value (numbers by value, other values by their text).
pub fn sorted(state: &SweepState, sort: TrialSort, reversed: bool) -> Vec<&TrialRecord> {
    let mut rows: Vec<&TrialRecord> = state.trials.iter().collect();
    let by_value = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    };
    match sort {
        TrialSort::Number => rows.sort_by_key(|t| t.number),
        TrialSort::Objective => rows.sort_by(|a, b| {
            by_value(a.objective.map(|v| state.goal.as_loss(v)), b.objective.map(|v| state.goal.as_loss(v)))
                .then(a.number.cmp(&b.number))
        }),
        TrialSort::Param(i) => {
            let name = state.parameters.get(i).cloned().unwrap_or_default();
            rows.sort_by(|a, b| {
                let (va, vb) = (a.params.get(&name), b.params.get(&name));
                let (na, nb) = (va.and_then(|v| v.as_f64()), vb.and_then(|v| v.as_f64()));
                let o = if na.is_some() || nb.is_some() {
                    by_value(na, nb)
                } else {
                    let text =
                        |v: Option<&serde_json::Value>| v.map(crate::sweep::path::show).unwrap_or_default();
                    text(va).cmp(&text(vb))
                };
                o.then(a.number.cmp(&b.number))
            })
        }
    }
    if reversed {
        rows.reverse();
    }
    rows
}

/// What the progress line counts: (done, running, pending, stopped).
pub fn progress(state: &SweepState) -> (usize, usize, usize, usize) {
    let (mut done, mut running, mut pending, mut stopped) = (0, 0, 0, 0);
    for t in &state.trials {
        match t.status {
            TrialStatus::Completed => done += 1,
            TrialStatus::Running => running += 1,
            TrialStatus::Planned | TrialStatus::Pending => pending += 1,
            TrialStatus::Pruned | TrialStatus::Failed | TrialStatus::Cancelled => stopped += 1,
        }
    }
    // Trials not planned yet are pending too.
    if !state.finished {
        pending += state.budget.saturating_sub(state.trials.len());
    }
    (done, running, pending, stopped)
}

impl ViewState for SweepsState {
    fn title(&self) -> &'static str {
        "Sweeps"
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        let rows = self.rows().len();
        match action {
            Action::Up => self.cursor = self.cursor.saturating_sub(1),
            Action::Down => self.cursor = (self.cursor + 1).min(rows.saturating_sub(1)),
            Action::PageUp => self.cursor = self.cursor.saturating_sub(10),
            Action::PageDown => self.cursor = (self.cursor + 10).min(rows.saturating_sub(1)),
            Action::Top => self.cursor = 0,
            Action::Bottom => self.cursor = rows.saturating_sub(1),
            Action::Left | Action::Right => {
                if !self.sweeps.is_empty() {
                    let n = self.sweeps.len();
                    self.selected = if action == Action::Left {
                        (self.selected + n - 1) % n
                    } else {
                        (self.selected + 1) % n
                    };
                    self.pinned = true;
                    self.cursor = 0;
                }
            }
            Action::SortNext => {
                let params = self.current().map_or(0, |f| f.state.parameters.len());
                self.sort = match self.sort {
                    TrialSort::Objective => TrialSort::Number,
                    TrialSort::Number if params > 0 => TrialSort::Param(0),
                    TrialSort::Param(i) if i + 1 < params => TrialSort::Param(i + 1),
                    _ => TrialSort::Objective,
                };
                app.say(Level::Info, format!("trials sorted by {}", self.sort_label()));
            }
            Action::SortReverse => self.reversed = !self.reversed,
            Action::Open => {
                let Some(run) = self.selected_trial().map(|t| t.run.clone()) else { return Some(vec![]) };
                if !select_run(app, &run) {
                    app.say(Level::Warn, format!("run {run} is not in the store (yet)"));
                    return Some(vec![]);
                }
                app.show(View::Detail);
            }
            Action::StopRun => {
                let Some(t) = self.selected_trial() else { return Some(vec![]) };
                if !t.status.is_active() {
                    app.say(Level::Warn, format!("trial {} has already ended ({})", t.number, t.status));
                    return Some(vec![]);
                }
                return Some(vec![Effect::StopTrial(t.run.clone())]);
            }
            Action::ShowCompare => {
                let feed = self.current()?;
                let ids: Vec<RunId> = feed
                    .state
                    .trials
                    .iter()
                    .map(|t| t.run.clone())
                    .filter(|id| app.runs.contains_key(id))
                    .collect();
                app.marked = ids.into_iter().collect();
                app.say(
                    Level::Info,
                    format!("comparing the {} trials of sweep {}", app.marked.len(), feed.state.id),
                );
                app.show(View::Compare);
            }
            _ => return None,
        }
        Some(vec![])
    }
}

/// Puts the console's run cursor on `run` (clearing a filter that hides it).
fn select_run(app: &mut App, run: &RunId) -> bool {
    if !app.runs.contains_key(run) {
        return false;
    }
    if !app.visible().iter().any(|r| &r.info.id == run) {
        app.set_filter(String::new());
    }
    match app.visible().iter().position(|r| &r.info.id == run) {
        Some(i) => {
            app.cursor = i;
            app.pinned = true;
            true
        }
        None => false,
    }
}
