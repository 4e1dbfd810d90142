//! The console's state and its update function (The Elm Architecture): every input (a key, a
//! change in the run store, a runner event, a system sample, a tick) is a [`Msg`];
//! [`App::update`] changes the state and returns [`Effect`]s for the event loop to carry out
//! (engine commands, exports, loading a theme, quitting). No I/O and no threads here, so every
//! transition is tested by feeding messages and reading the state.
//!
//! Each view's state and keys live in [`super::state`]; [`App::act`] offers an action to the
//! active view, then to the chart keys, then to the global keys.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crossterm::event::KeyEvent;

use super::filter::{Candidate, Filter};
use super::form::RunForm;
use super::keymap::{Action, Keymap};
use super::state::messages::{Messages, Notice};
use super::state::screens::{CompareState, OverviewState, RunsView, SecurityView, SystemView};
use super::state::{ViewState, chart, global, modes};
use super::theme::Theme;
use crate::engine::explain::{ExplainCommand, ExplainEvent};
use crate::engine::follow::StoreUpdate;
use crate::engine::runner::{RunnerCommand, RunnerEvent};
use crate::engine::service::{ServiceCommand, ServiceEvent, ServiceFeed};
use crate::engine::system::SystemSample;
use crate::ml::spec::ExperimentSpec;
use crate::store::{CheckpointKind, RunId, RunStatus};

pub use super::state::chart::{ChartOptions, Metric, XAxis};
pub use super::state::explain::{ExplainState, RequestPick};
pub use super::state::modes::completions;
pub use super::state::run::{RunState, ShownStatus};
pub use super::state::screens::{DetailState, DetailTab, LogsState};
pub use super::state::service::{SERVICE_TAIL, ServerState, ServiceState, TailFilter};

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Runs,
    Detail,
    Compare,
    Logs,
    System,
    Explain,
    Service,
    Security,
    /// Hyperparameter sweeps (key 0; not one of the numbered tabs).
    Sweeps,
    /// A language model's prompt and completion, token by token (key i; not a numbered tab).
    Playground,
    /// A view registered at run time with [`App::register_view`] (the tables are data, so one
    /// needs nothing but its state struct).
    Extra(usize),
}

impl View {
    pub const ALL: [View; 9] = [
        View::Overview,
        View::Runs,
        View::Detail,
        View::Compare,
        View::Logs,
        View::System,
        View::Explain,
        View::Service,
        View::Security,
    ];
    pub fn title(&self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Runs => "Runs",
            View::Detail => "Detail",
            View::Compare => "Compare",
            View::Logs => "Logs",
            View::System => "System",
            View::Explain => "Explain",
            View::Service => "Service",
            View::Security => "Security",
            View::Sweeps => "Sweeps",
            View::Playground => "Playground",
            View::Extra(_) => "Extra",
        }
    }
}

/// The columns the runs table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Started,
    Id,
    Status,
    Epoch,
    TrainLoss,
    BestVal,
    Duration,
    /// A column of the Runs view's columns mode ([`super::state::table`]); not in `ALL`, `o`
    /// picks it there.
    Column,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        SortKey::Started,
        SortKey::Id,
        SortKey::Status,
        SortKey::Epoch,
        SortKey::TrainLoss,
        SortKey::BestVal,
        SortKey::Duration,
    ];
    pub fn label(&self) -> &'static str {
        match self {
            SortKey::Started => "started",
            SortKey::Id => "id",
            SortKey::Status => "status",
            SortKey::Epoch => "epoch",
            SortKey::TrainLoss => "train loss",
            SortKey::BestVal => "best val acc",
            SortKey::Duration => "duration",
            SortKey::Column => "column",
        }
    }
}

/// A question before something that cannot be undone.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Quit {
        active: usize,
    },
    Stop(RunId),
    Delete(RunId),
    /// Stop the model service the console started.
    StopService {
        url: String,
    },
}

/// What keys do right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Typing a filter after `/` (applied as you type).
    Filter(String),
    /// Typing a command after `:`.
    Command {
        input: String,
        completion: super::state::modes::Completion,
    },
    /// The archived runs (`<runs>/.archive/`), to look at and restore.
    Archive(super::state::modes::ArchiveList),
    Form(Box<RunForm>),
    Confirm(Confirm),
    Help {
        scroll: u16,
    },
    /// The message history over the view (lines scrolled back from the newest).
    Messages {
        scroll: usize,
    },
}

/// Severity of a status-line message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A message in the status line, shown for a few seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub level: Level,
    pub at: Instant,
}

/// What the event loop must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Runner(RunnerCommand),
    Explain(ExplainCommand),
    /// Write the visible chart's series to CSV.
    ExportCsv,
    /// Write the visible chart to PNG.
    ExportPng,
    /// Start or stop the model service.
    Service(ServiceCommand),
    /// Write a run's tags and note to its folder.
    SaveNotes(RunId, crate::store::notes::RunNotes),
    /// Create, revoke or list the service's API keys (the key file is I/O: the event loop does
    /// it and answers with [`Msg::Keys`]).
    Keys(super::state::keys::KeyCommand),
    /// Find a theme by name or file and switch to it (file I/O: the event loop does it and
    /// answers with [`Msg::Theme`]).
    LoadTheme(String),
    /// A command for the language-model engine (load, generate, explain, stop).
    Llm(crate::engine::llm::LlmCommand),
    /// Stop a sweep's trial, or any run a Slurm job trains: `scancel` for a Slurm job, its
    /// control file for a local one.
    StopTrial(RunId),
    /// Leave; `stop_runs` stops active runs first (their checkpoints are kept).
    Quit {
        stop_runs: bool,
    },
}

/// Everything that can happen to the console.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Store(StoreUpdate),
    Runner(RunnerEvent),
    System(SystemSample),
    Explain(ExplainEvent),
    /// New access-log lines and the service's numbers.
    ServiceFeed(Box<ServiceFeed>),
    /// What became of a start or stop.
    Service(ServiceEvent),
    Resize(u16, u16),
    /// A theme asked for with [`Effect::LoadTheme`], or why it could not be loaded.
    Theme(Result<Box<Theme>, String>),
    /// The store's sweeps, when they changed.
    Sweeps(Vec<crate::engine::sweeps::SweepFeed>),
    /// What became of a [`Effect::Keys`].
    Keys(super::state::keys::KeysEvent),
    /// The language-model engine's news: loading, tokens, figures, explanations.
    Llm(crate::engine::llm::LlmEvent),
    /// Time passes (messages expire, durations advance).
    Tick,
}

/// The console's state.
pub struct App {
    pub runs: BTreeMap<RunId, RunState>,
    pub view: View,
    /// The view to return to from Detail and Logs.
    pub previous: View,
    pub mode: Mode,
    /// Index into [`App::visible`].
    pub cursor: usize,
    /// Whether the user moved the cursor (then it follows its run, not its row).
    pub pinned: bool,
    pub marked: BTreeSet<RunId>,
    pub sort: SortKey,
    pub sort_desc: bool,
    pub filter_text: String,
    filter: Filter,
    pub chart: ChartOptions,
    pub detail: DetailState,
    pub logs: LogsState,
    pub system: Option<SystemSample>,
    pub system_history: VecDeque<SystemSample>,
    /// The history charts' points: the store's from earlier sessions, then this session's.
    pub system_points: super::state::system::SystemHistory,
    pub runner_load: (usize, usize),
    pub explain: ExplainState,
    pub service: ServiceState,
    pub sweeps: super::state::sweeps::SweepsState,
    /// The Playground: the language model, the prompt, the completion.
    pub playground: super::state::playground::PlaygroundState,
    /// The Runs view's columns mode.
    pub table: super::state::table::RunTable,
    /// The Service view's API keys panel and its create form.
    pub keys: super::state::keys::KeysState,
    /// Focus, scroll and zoom of the views' panels, and the searches in help and logs.
    pub panes: super::state::panes::Panes,
    /// Views registered at run time ([`View::Extra`]).
    pub extra: Vec<Box<dyn ViewState>>,
    pub status: Option<Status>,
    /// Every message shown, and the notices (see [`super::state::messages`]).
    pub messages: Messages,
    /// The Overview's own state: the run it follows or the one pinned.
    pub overview: OverviewState,
    /// The Compare view's own state: colour slots of the compared runs, the table's scroll.
    pub compare: CompareState,
    pub theme: Theme,
    pub keymap: Keymap,
    /// The specs the new-run form offers.
    pub specs: Vec<ExperimentSpec>,
    pub size: (u16, u16),
    pub quit: bool,
    /// Whether anything changed since the last draw.
    pub dirty: bool,
}

impl App {
    pub fn new(theme: Theme, keymap: Keymap, specs: Vec<ExperimentSpec>) -> Self {
        App {
            runs: BTreeMap::new(),
            view: View::Overview,
            previous: View::Overview,
            mode: Mode::Normal,
            cursor: 0,
            pinned: false,
            marked: BTreeSet::new(),
            sort: SortKey::Started,
            sort_desc: true,
            filter_text: String::new(),
            filter: Filter::default(),
            chart: ChartOptions::default(),
            detail: DetailState::default(),
            logs: LogsState::default(),
            system: None,
            system_history: VecDeque::new(),
            system_points: Default::default(),
            runner_load: (0, 0),
            explain: ExplainState::default(),
            service: ServiceState::default(),
            sweeps: Default::default(),
            playground: Default::default(),
            table: Default::default(),
            keys: Default::default(),
            panes: Default::default(),
            extra: Vec::new(),
            status: None,
            messages: Messages::default(),
            overview: OverviewState::default(),
            compare: CompareState::default(),
            theme,
            keymap,
            specs,
            size: (80, 24),
            quit: false,
            dirty: true,
        }
    }

    /// Runs that pass the filter, in the table's order.
    pub fn visible(&self) -> Vec<&RunState> {
        let mut v: Vec<&RunState> = self
            .runs
            .values()
            .filter(|r| {
                self.filter.is_empty()
                    || self.filter.matches(&Candidate {
                        id: &r.info.id,
                        spec: &r.info.spec,
                        status: r.status().label(),
                        params: &r.params,
                        tags: &r.notes.tags,
                    })
            })
            .collect();
        let column = super::state::table::sort_column(self);
        let key = |r: &RunState| -> (i64, String) {
            let f = |x: Option<f64>| (x.unwrap_or(f64::NEG_INFINITY) * 1e6) as i64;
            match self.sort {
                SortKey::Started => (0, r.info.created.clone()),
                SortKey::Id => (0, r.info.id.to_string()),
                SortKey::Status => (0, r.status().label().to_string()),
                SortKey::Epoch => (r.info.epoch as i64, String::new()),
                SortKey::TrainLoss => (f(r.last_loss()), String::new()),
                SortKey::BestVal => (f(r.info.best_val_accuracy), String::new()),
                SortKey::Duration => ((r.info.duration_s * 1000.0) as i64, String::new()),
                SortKey::Column => column.as_ref().map_or((0, String::new()), |c| c.sort_key(r)),
            }
        };
        v.sort_by(|a, b| {
            let o = key(a).cmp(&key(b)).then_with(|| a.info.id.cmp(&b.info.id));
            if self.sort_desc { o.reverse() } else { o }
        });
        v
    }

    /// The run under the cursor.
    pub fn selected(&self) -> Option<&RunState> {
        let v = self.visible();
        v.get(self.cursor.min(v.len().saturating_sub(1))).copied()
    }

    pub fn selected_id(&self) -> Option<RunId> {
        self.selected().map(|r| r.info.id.clone())
    }

    /// Runs that are training, paused or queued.
    pub fn active(&self) -> Vec<&RunState> {
        let mut v: Vec<&RunState> = self.runs.values().filter(|r| r.is_active()).collect();
        v.sort_by(|a, b| a.info.created.cmp(&b.info.created));
        v
    }

    /// The runs the compare view overlays: the marked ones, or else the visible ones (at most 8).
    pub fn compared(&self) -> Vec<&RunState> {
        if self.marked.is_empty() {
            self.visible().into_iter().take(8).collect()
        } else {
            self.marked.iter().filter_map(|id| self.runs.get(id)).collect()
        }
    }

    /// A compared run's colour slot: held for as long as it is compared (see
    /// [`CompareState::assign`]), so it never changes while others come, go or re-sort.
    pub fn color_slot(&self, id: &str) -> usize {
        self.compare.slot(id)
    }

    /// Puts the cursor on a run (when the filter shows it).
    pub fn select_run(&mut self, id: &RunId) {
        if let Some(i) = self.visible().iter().position(|r| r.info.id == *id) {
            self.cursor = i;
            self.pinned = true;
        }
    }

    /// Shows a message in the status line and keeps it in the history.
    pub fn say(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        self.messages.push(level, text.clone(), None);
        self.status = Some(Status { text, level, at: Instant::now() });
        self.dirty = true;
    }

    /// Announces, once, that a run finished, failed or diverged: a notice that stands out.
    pub fn announce(&mut self, id: &RunId, notice: Notice, text: String) {
        if self.messages.announce(id, notice, text.clone()) {
            let level = if notice == Notice::Finished { Level::Info } else { Level::Error };
            self.status = Some(Status { text, level, at: Instant::now() });
            self.dirty = true;
        }
    }

    /// Applies one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let reshapes = matches!(msg, Msg::Key(_) | Msg::Store(_) | Msg::Runner(_));
        let effects = self.apply(msg);
        if reshapes {
            let ids: Vec<RunId> = self.compared().iter().map(|r| r.info.id.clone()).collect();
            self.compare.assign(&ids);
        }
        effects
    }

    fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => {
                self.dirty = true;
                modes::key(self, k)
            }
            Msg::Store(u) => {
                // Once the user has picked a run, keep the cursor on it while others arrive,
                // finish or re-sort; until then it stays on the first row (the newest run).
                let keep = if self.pinned { self.selected_id() } else { None };
                self.store(u);
                if let Some(i) = keep.and_then(|id| self.visible().iter().position(|r| r.info.id == id)) {
                    self.cursor = i;
                }
                self.dirty = true;
                vec![]
            }
            Msg::Runner(e) => {
                self.runner(e);
                self.dirty = true;
                vec![]
            }
            Msg::System(s) => {
                if self.system_history.len() >= crate::engine::system::HISTORY {
                    self.system_history.pop_front();
                }
                self.system_history.push_back(s.clone());
                // A sample says when it was taken; one that does not is taken now.
                let t = if s.time > 0.0 { s.time } else { crate::engine::system::unix_now() };
                self.system_points.push(&s, t);
                self.system = Some(s);
                // Only the overview and system views show the machine.
                if matches!(self.view, View::Overview | View::System) {
                    self.dirty = true;
                }
                vec![]
            }
            Msg::Explain(e) => {
                self.explain.apply(e);
                self.dirty = true;
                vec![]
            }
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.dirty = true;
                vec![]
            }
            Msg::ServiceFeed(feed) => {
                self.service.feed(*feed);
                if matches!(self.view, View::Service | View::Overview) {
                    self.dirty = true;
                }
                vec![]
            }
            Msg::Service(e) => {
                if let Some((level, text)) = self.service.apply(e) {
                    self.say(level, text);
                }
                self.dirty |= self.view == View::Service;
                // An open try-it pane follows the service: a sample for what it now serves.
                super::state::try_it::refresh(self)
            }
            Msg::Theme(result) => {
                match result {
                    Ok(t) => {
                        let text = format!("theme {}", t.name);
                        self.theme = *t;
                        self.say(Level::Info, text);
                    }
                    Err(e) => self.say(Level::Error, e),
                }
                vec![]
            }
            Msg::Sweeps(feeds) => {
                self.sweeps.update(feeds);
                if self.view == View::Sweeps {
                    self.dirty = true;
                }
                vec![]
            }
            Msg::Llm(e) => {
                if let Some((level, text)) = self.playground.apply(e) {
                    self.say(level, text);
                }
                self.dirty |= self.view == View::Playground;
                vec![]
            }
            Msg::Keys(e) => {
                super::state::keys::apply(self, e);
                self.dirty = true;
                vec![]
            }
            Msg::Tick => {
                if self.messages.expire(Instant::now()) {
                    self.status = None;
                    self.dirty = true;
                }
                vec![]
            }
        }
    }

    fn store(&mut self, u: StoreUpdate) {
        match u {
            StoreUpdate::Run(feed) => {
                let feed = *feed;
                let r = self.runs.entry(feed.id.clone()).or_insert_with(|| RunState::new(feed.info.clone()));
                let was = r.info.status;
                r.apply(feed);
                let (id, now, failure) = (r.info.id.clone(), r.info.status, r.info.failure.clone());
                self.run_changed(&id, was, now, failure);
            }
            StoreUpdate::Removed(id) => {
                self.runs.remove(&id);
                self.marked.remove(&id);
                self.cursor = self.cursor.min(self.visible().len().saturating_sub(1));
            }
        }
    }

    /// A run's status changed in the store. A run that stops training is announced, whoever
    /// trained it (a run of `vigil train` in another terminal ends here too); one that trains
    /// again may be announced again when it ends.
    fn run_changed(&mut self, id: &RunId, was: RunStatus, now: RunStatus, failure: Option<String>) {
        let active = |s: RunStatus| matches!(s, RunStatus::Running | RunStatus::Paused | RunStatus::Queued);
        if was == now {
            return;
        }
        match now {
            RunStatus::Running | RunStatus::Queued => self.messages.rearm(id),
            RunStatus::Completed if active(was) => {
                self.announce(id, Notice::Finished, format!("{id} completed"))
            }
            RunStatus::Failed if active(was) => {
                let reason = failure.unwrap_or_default();
                let notice = super::state::messages::failure_notice(&reason);
                let text = if reason.is_empty() {
                    format!("{id} {}", notice.label())
                } else {
                    format!("{id} {}: {reason}", notice.label())
                };
                self.announce(id, notice, text)
            }
            _ => {}
        }
    }

    fn runner(&mut self, e: RunnerEvent) {
        match e {
            RunnerEvent::Queued(id) => self.say(Level::Info, format!("queued {id}")),
            RunnerEvent::Started(id) => {
                self.messages.rearm(&id);
                self.say(Level::Info, format!("started {id}"))
            }
            RunnerEvent::Completed(id) => self.announce(&id, Notice::Finished, format!("{id} completed")),
            RunnerEvent::Cancelled(id) => {
                self.say(Level::Warn, format!("{id} stopped; its last checkpoint is kept"))
            }
            RunnerEvent::Failed(id, reason) => {
                let notice = super::state::messages::failure_notice(&reason);
                self.announce(&id, notice, format!("{id} {}: {reason}", notice.label()))
            }
            RunnerEvent::Evaluated(id, which, e) => {
                let text = format!(
                    "{id} {} checkpoint on test: accuracy {:.2}%, macro F1 {:.4}",
                    if which == CheckpointKind::Best { "best" } else { "last" },
                    100.0 * e.accuracy,
                    e.macro_f1
                );
                if let Some(r) = self.runs.get_mut(&id) {
                    r.evaluations.push((which, *e));
                }
                self.say(Level::Info, text);
            }
            RunnerEvent::Deleted(id) => {
                self.runs.remove(&id);
                self.marked.remove(&id);
                self.say(Level::Info, format!("deleted {id}"));
            }
            RunnerEvent::Archived(id) => {
                self.runs.remove(&id);
                self.marked.remove(&id);
                self.say(Level::Info, format!("archived {id} to .archive/"));
            }
            RunnerEvent::ArchiveList(runs) => super::state::modes::show_archive(self, runs),
            RunnerEvent::Restored(id) => self.say(Level::Info, format!("restored {id} from .archive/")),
            RunnerEvent::Refused(text) => self.say(Level::Error, text),
            RunnerEvent::Load { active, queued } => self.runner_load = (active, queued),
        }
        self.cursor = self.cursor.min(self.visible().len().saturating_sub(1));
    }

    /// Carries out an action in normal mode: the panel keys of a view with panels (focus, zoom,
    /// the focused panel's scroll), the active view, then the chart keys, then the global keys.
    pub fn act(&mut self, action: Action) -> Vec<Effect> {
        if global::refuse_on_external(self, action) {
            return vec![];
        }
        if let Some(effects) = super::state::panes::handle(action, self) {
            return effects;
        }
        if let Some(effects) = self.offer(action) {
            return effects;
        }
        if let Some(effects) = chart::handle(action, self) {
            return effects;
        }
        global::handle(self, action)
    }

    /// Offers an action to the active view, its state taken out of the app meanwhile.
    fn offer(&mut self, action: Action) -> Option<Vec<Effect>> {
        fn taken<S: ViewState + Default>(
            app: &mut App,
            field: fn(&mut App) -> &mut S,
            action: Action,
        ) -> Option<Vec<Effect>> {
            let mut state = std::mem::take(field(app));
            let out = state.handle(action, app);
            *field(app) = state;
            out
        }
        match self.view {
            View::Overview => taken(self, |a| &mut a.overview, action),
            View::Runs => RunsView.handle(action, self),
            View::Detail => taken(self, |a| &mut a.detail, action),
            View::Compare => taken(self, |a| &mut a.compare, action),
            View::Logs => taken(self, |a| &mut a.logs, action),
            View::System => SystemView.handle(action, self),
            View::Explain => taken(self, |a| &mut a.explain, action),
            View::Service => taken(self, |a| &mut a.service, action),
            View::Security => SecurityView.handle(action, self),
            View::Sweeps => taken(self, |a| &mut a.sweeps, action),
            View::Playground => taken(self, |a| &mut a.playground, action),
            View::Extra(i) => {
                let mut state = std::mem::replace(self.extra.get_mut(i)?, Box::new(SystemView));
                let out = state.handle(action, self);
                self.extra[i] = state;
                out
            }
        }
    }

    /// The state (and so the keys) of a view.
    pub fn view_state(&self, v: View) -> &dyn ViewState {
        match v {
            View::Overview => &self.overview,
            View::Runs => &RunsView,
            View::Detail => &self.detail,
            View::Compare => &self.compare,
            View::Logs => &self.logs,
            View::System => &SystemView,
            View::Explain => &self.explain,
            View::Service => &self.service,
            View::Security => &SecurityView,
            View::Sweeps => &self.sweeps,
            View::Playground => &self.playground,
            View::Extra(i) => self.extra.get(i).map_or(&SystemView as &dyn ViewState, |s| s.as_ref()),
        }
    }

    /// The built-in views and the registered ones.
    pub fn all_views(&self) -> Vec<View> {
        View::ALL
            .into_iter()
            .chain([View::Sweeps, View::Playground])
            .chain((0..self.extra.len()).map(View::Extra))
            .collect()
    }

    /// Adds a view: its keys join the footer, the `:` commands and the help.
    pub fn register_view(&mut self, state: Box<dyn ViewState>) -> View {
        self.extra.push(state);
        View::Extra(self.extra.len() - 1)
    }

    /// Switches to a view; Detail and Logs remember where they were opened from.
    pub fn show(&mut self, v: View) {
        if !matches!(self.view, View::Detail | View::Logs) {
            self.previous = self.view;
        }
        self.view = v;
        if v == View::Logs {
            self.logs.scroll = 0;
        }
    }

    pub(crate) fn set_filter(&mut self, text: String) {
        self.filter = Filter::parse(&text);
        self.filter_text = text;
        self.cursor = 0;
        self.pinned = false;
    }

    pub(crate) fn move_cursor(&mut self, delta: i64) {
        self.pinned = true;
        let n = self.visible().len();
        if n == 0 {
            self.cursor = 0;
            return;
        }
        self.cursor = (self.cursor as i64 + delta).clamp(0, n as i64 - 1) as usize;
    }

    /// The x range of the chart currently shown (for zoom).
    pub fn full_x_range(&self) -> Option<(f64, f64)> {
        chart::full_x_range(self)
    }
}
