//! The console's state and its update function (The Elm Architecture): every input (a key, a
//! change in the run store, a runner event, a system sample, a tick) is a [`Msg`];
//! [`App::update`] changes the state and returns [`Effect`]s for the event loop to carry out
//! (runner commands, exports, quitting). No I/O and no threads here, so every transition is
//! tested by feeding messages and reading the state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::filter::{Candidate, Filter};
use super::form::RunForm;
use super::keymap::{Action, Keymap};
use super::theme::Theme;
use crate::engine::explain::{
    AdversarialResult, AttackChoice, ExplainCommand, ExplainEvent, ExplainResult, ExplainSet, LoggedInput,
    RequestResult,
};
use crate::engine::runner::{RunnerCommand, RunnerEvent};
use crate::engine::service::{ServiceCommand, ServiceEvent, ServiceFeed};
use crate::engine::system::SystemSample;
use crate::engine::watch::{EpochPoint, RunFeed, StepPoint, StoreUpdate};
use crate::ml::metrics::Evaluation;
use crate::ml::spec::ExperimentSpec;
use crate::serve::access_log::AccessRecord;
use crate::serve::monitor::{Snapshot, TailFilter};
use crate::store::{CheckpointEntry, EventLine, RunInfo, Which};

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
        }
    }
}

/// Tabs of the run detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailTab {
    Curves,
    Evaluation,
    Params,
}

/// Which metric the charts show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Loss,
    Accuracy,
    LearningRate,
}

impl Metric {
    pub fn label(&self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::LearningRate => "learning rate",
        }
    }
}

/// The x axis of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    Step,
    Epoch,
    Time,
}

impl XAxis {
    pub fn label(&self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Epoch => "epoch",
            XAxis::Time => "seconds",
        }
    }
}

/// How the charts are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartOptions {
    pub metric: Metric,
    pub smoothing: bool,
    /// EMA weight in [0, 0.99].
    pub weight: f64,
    pub log_y: bool,
    pub x_axis: XAxis,
    /// The x window (zoom and pan); the whole range when `None`.
    pub window: Option<(f64, f64)>,
    /// The readout cursor, as a fraction of the window (0..1).
    pub cursor: Option<f64>,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            metric: Metric::Loss,
            smoothing: true,
            weight: 0.6,
            log_y: false,
            x_axis: XAxis::Step,
            window: None,
            cursor: None,
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
        }
    }
}

/// Everything the console knows about one run, rebuilt from its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub info: RunInfo,
    pub interrupted: bool,
    /// The spec as run, and its parameters flattened for tables and filters.
    pub spec: Option<ExperimentSpec>,
    pub params: BTreeMap<String, String>,
    pub steps: Vec<StepPoint>,
    pub epochs: Vec<EpochPoint>,
    pub events: Vec<EventLine>,
    pub checkpoints: Vec<CheckpointEntry>,
    /// Smaller variants of the model (`vigil optimize`), by name.
    pub variants: Vec<crate::ml::variants::Report>,
    /// Robustness curves `vigil attack` saved for the run.
    pub attacks: Vec<crate::ml::attack::curve::Curve>,
    pub evaluation: Option<Evaluation>,
    /// Evaluations asked for from the console (`e`), newest last.
    pub evaluations: Vec<(Which, Evaluation)>,
}

impl RunState {
    /// The status to show: `interrupted` for a run whose trainer is gone.
    pub fn status(&self) -> &'static str {
        if self.interrupted { "interrupted" } else { self.info.status.as_str() }
    }

    /// Whether it is queued, running or paused (and its trainer alive).
    pub fn is_active(&self) -> bool {
        self.info.status.is_active() && !self.interrupted
    }

    /// Fraction done, from steps.
    pub fn progress(&self) -> f64 {
        let total = self.info.epochs as f64 * self.info.steps_per_epoch.max(1) as f64;
        if total <= 0.0 { 0.0 } else { (self.info.step as f64 / total).clamp(0.0, 1.0) }
    }

    /// Seconds left at the pace so far.
    pub fn eta(&self) -> Option<f64> {
        let total = self.info.epochs as u64 * self.info.steps_per_epoch;
        let last = self.steps.last()?;
        if last.step == 0 || total <= last.step {
            return None;
        }
        Some(last.time / last.step as f64 * (total - last.step) as f64)
    }

    /// The recent training loss: the mean of the last 20 steps, since one mini-batch's loss
    /// is too noisy to compare runs by.
    pub fn last_loss(&self) -> Option<f64> {
        let recent = &self.steps[self.steps.len().saturating_sub(20)..];
        if recent.is_empty() {
            return self.info.train_loss;
        }
        Some(recent.iter().map(|s| s.loss).sum::<f64>() / recent.len() as f64)
    }
}

/// A question before something that cannot be undone.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Quit {
        active: usize,
    },
    Stop(String),
    Delete(String),
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
        completion: usize,
    },
    Form(Box<RunForm>),
    Confirm(Confirm),
    Help {
        scroll: u16,
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

/// The Explain view's state: the open run's test examples, where we are, and the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExplainState {
    pub set: Option<ExplainSet>,
    pub index: usize,
    /// Index into [`crate::ml::explain::METHOD_NAMES`].
    pub method: usize,
    /// Show only examples whose true class is this.
    pub class: Option<usize>,
    pub result: Option<ExplainResult>,
    /// A request is on its way to the engine.
    pub pending: bool,
    pub error: Option<String>,
    /// The adversarial examples saved with the run (`vigil attack`), one per curve and ε.
    pub attacks: Vec<AttackChoice>,
    /// Index into `attacks` of the one shown.
    pub attack: usize,
    /// Show the example beside its adversarial version instead of alone.
    pub adversarial: bool,
    pub adversarial_result: Option<AdversarialResult>,
    /// Requests from the service's access log, explained instead of test examples.
    pub requests: RequestPick,
}

/// The Explain view's pick among the inputs of logged requests (see
/// [`ServiceState::logged_inputs`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPick {
    /// Show logged requests instead of test examples.
    pub on: bool,
    /// The request id and the input of it shown.
    pub at: Option<(String, usize)>,
    pub result: Option<RequestResult>,
}

impl ExplainState {
    pub fn method_name(&self) -> &'static str {
        crate::ml::explain::METHOD_NAMES[self.method % crate::ml::explain::METHOD_NAMES.len()]
    }

    /// The saved attack shown when `adversarial` is on.
    pub fn current_attack(&self) -> Option<&AttackChoice> {
        self.attacks.get(self.attack % self.attacks.len().max(1))
    }

    /// Test examples the navigation visits, in order.
    pub fn candidates(&self) -> Vec<usize> {
        let Some(set) = &self.set else { return vec![] };
        (0..set.examples.len()).filter(|&i| self.class.is_none_or(|c| set.examples[i].label == c)).collect()
    }
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
    /// Time passes (messages expire, durations advance).
    Tick,
}

/// Lines of the access log the console keeps for the Service view's tail.
pub const SERVICE_TAIL: usize = 5000;

/// The model service's server, as far as this console knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ServerState {
    /// Not started here (one started by `vigil serve` elsewhere still shows in the numbers).
    #[default]
    Stopped,
    Starting(String),
    Running {
        url: String,
        run: String,
        models: Vec<String>,
    },
    Failed(String),
}

/// What the Service view shows.
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    pub server: ServerState,
    /// The numbers over the last minute, from the access log.
    pub snapshot: Option<Snapshot>,
    /// The newest lines of the access log, oldest first, at most [`SERVICE_TAIL`].
    pub tail: VecDeque<AccessRecord>,
    /// How many matching lines the view is scrolled back from the newest; 0 follows new lines.
    pub scroll: usize,
    pub filter: TailFilter,
}

impl ServiceState {
    /// The tail's lines that pass the filter, oldest first.
    pub fn visible(&self) -> Vec<&AccessRecord> {
        self.tail.iter().filter(|r| self.filter.matches(r)).collect()
    }

    /// The line the tail's cursor is on: the newest line shown.
    pub fn cursor(&self) -> Option<&AccessRecord> {
        let visible = self.visible();
        let end = visible.len().saturating_sub(self.scroll);
        end.checked_sub(1).map(|i| visible[i])
    }

    /// The inputs of logged requests the Explain view can show, oldest first, as (request id,
    /// input): answered requests whose raw inputs the service logged.
    pub fn logged_inputs(&self) -> Vec<(&str, usize)> {
        self.tail
            .iter()
            .flat_map(|r| (0..LoggedInput::count(r)).map(move |i| (r.request_id.as_str(), i)))
            .collect()
    }

    /// One of [`Self::logged_inputs`], with what explaining it needs.
    pub fn logged_input(&self, request_id: &str, input: usize) -> Option<LoggedInput> {
        let r = self.tail.iter().rev().find(|r| r.request_id == request_id)?;
        LoggedInput::of_record(r).into_iter().nth(input)
    }

    fn feed(&mut self, feed: ServiceFeed) {
        // Scrolled back, the view stays on the lines it shows (like `less +F` stopped): new
        // matching lines push the offset from the end up by as many.
        if self.scroll > 0 {
            self.scroll += feed.records.iter().filter(|r| self.filter.matches(r)).count();
        }
        for r in feed.records {
            if self.tail.len() == SERVICE_TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(r);
        }
        self.snapshot = Some(feed.snapshot);
        self.clamp_scroll();
    }

    fn clamp_scroll(&mut self) {
        let n = self.visible().len();
        self.scroll = self.scroll.min(n.saturating_sub(1));
    }

    fn scroll_by(&mut self, delta: i64) {
        self.scroll = (self.scroll as i64 + delta).max(0) as usize;
        self.clamp_scroll();
    }

    /// The next value of a filter among those in the tail: none, then each in order.
    fn next_of(values: BTreeSet<String>, current: &Option<String>) -> Option<String> {
        match current {
            None => values.into_iter().next(),
            Some(c) => values.into_iter().find(|v| v > c),
        }
    }

    fn cycle_status(&mut self) {
        self.filter.status_class = match self.filter.status_class {
            None => Some(2),
            Some(2) => Some(4),
            Some(4) => Some(5),
            _ => None,
        };
        self.scroll = 0;
    }

    fn cycle_key(&mut self) {
        let mut keys: BTreeSet<String> = self.tail.iter().filter_map(|r| r.key.clone()).collect();
        keys.extend(self.snapshot.iter().flat_map(|s| s.keys.iter().map(|k| k.name.clone())));
        self.filter.key = Self::next_of(keys, &self.filter.key);
        self.scroll = 0;
    }

    fn cycle_route(&mut self) {
        let routes = self.tail.iter().map(|r| r.route.clone().unwrap_or_else(|| r.path.clone())).collect();
        self.filter.route = Self::next_of(routes, &self.filter.route);
        self.scroll = 0;
    }
}

/// The console's state.
pub struct App {
    pub runs: BTreeMap<String, RunState>,
    pub view: View,
    /// The view to return to from Detail and Logs.
    pub previous: View,
    pub mode: Mode,
    /// Index into [`App::visible`].
    pub cursor: usize,
    /// Whether the user moved the cursor (then it follows its run, not its row).
    pub pinned: bool,
    pub marked: BTreeSet<String>,
    pub sort: SortKey,
    pub sort_desc: bool,
    pub filter_text: String,
    filter: Filter,
    pub tab: DetailTab,
    pub chart: ChartOptions,
    /// Scroll of the logs view from the end (0 follows new lines).
    pub log_scroll: usize,
    /// First hyperparameter shown in the detail's parameters tab.
    pub params_scroll: usize,
    pub system: Option<SystemSample>,
    pub system_history: VecDeque<SystemSample>,
    pub runner_load: (usize, usize),
    pub explain: ExplainState,
    pub service: ServiceState,
    pub status: Option<Status>,
    pub theme: Theme,
    pub keymap: Keymap,
    /// The specs the new-run form offers.
    pub specs: Vec<ExperimentSpec>,
    pub size: (u16, u16),
    pub quit: bool,
    /// Whether anything changed since the last draw.
    pub dirty: bool,
}

const STATUS_FOR: Duration = Duration::from_secs(6);

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
            tab: DetailTab::Curves,
            chart: ChartOptions::default(),
            log_scroll: 0,
            params_scroll: 0,
            system: None,
            system_history: VecDeque::new(),
            runner_load: (0, 0),
            explain: ExplainState::default(),
            service: ServiceState::default(),
            status: None,
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
                        status: r.status(),
                        params: &r.params,
                    })
            })
            .collect();
        let key = |r: &RunState| -> (i64, String) {
            let f = |x: Option<f64>| (x.unwrap_or(f64::NEG_INFINITY) * 1e6) as i64;
            match self.sort {
                SortKey::Started => (0, r.info.created.clone()),
                SortKey::Id => (0, r.info.id.clone()),
                SortKey::Status => (0, r.status().to_string()),
                SortKey::Epoch => (r.info.epoch as i64, String::new()),
                SortKey::TrainLoss => (f(r.last_loss()), String::new()),
                SortKey::BestVal => (f(r.info.best_val_accuracy), String::new()),
                SortKey::Duration => ((r.info.duration_s * 1000.0) as i64, String::new()),
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

    pub fn selected_id(&self) -> Option<String> {
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

    /// A stable colour slot for a run: its place among all runs by id, so a run keeps its colour
    /// while others come, go or are re-sorted.
    pub fn color_slot(&self, id: &str) -> usize {
        self.runs.keys().position(|k| k == id).unwrap_or(0)
    }

    pub fn say(&mut self, level: Level, text: impl Into<String>) {
        self.status = Some(Status { text: text.into(), level, at: Instant::now() });
        self.dirty = true;
    }

    /// Applies one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => {
                self.dirty = true;
                self.key(k)
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
                self.system = Some(s);
                // Only the overview and system views show the machine.
                if matches!(self.view, View::Overview | View::System) {
                    self.dirty = true;
                }
                vec![]
            }
            Msg::Explain(e) => {
                self.explained(e);
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
                match e {
                    ServiceEvent::Started { url, run, models, warnings } => {
                        let mut msg = format!("serving {run} on {url}");
                        if let Some(w) = warnings.first() {
                            msg.push_str(&format!(" (warning: {w})"));
                        }
                        self.say(Level::Info, msg);
                        self.service.server = ServerState::Running { url, run, models };
                    }
                    ServiceEvent::Stopped => {
                        self.say(Level::Info, "the model service stopped");
                        self.service.server = ServerState::Stopped;
                    }
                    ServiceEvent::Failed(reason) => {
                        self.say(Level::Error, format!("the model service did not start: {reason}"));
                        self.service.server = ServerState::Failed(reason);
                    }
                }
                self.dirty = true;
                vec![]
            }
            Msg::Tick => {
                if self.status.as_ref().is_some_and(|s| s.at.elapsed() > STATUS_FOR) {
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
                let RunFeed {
                    id,
                    info,
                    spec,
                    steps,
                    epochs,
                    reset,
                    events,
                    checkpoints,
                    evaluation,
                    variants,
                    attacks,
                    interrupted,
                } = *feed;
                let r = self.runs.entry(id).or_insert_with(|| RunState {
                    info: info.clone(),
                    interrupted,
                    spec: None,
                    params: BTreeMap::new(),
                    steps: vec![],
                    epochs: vec![],
                    events: vec![],
                    checkpoints: vec![],
                    variants: vec![],
                    attacks: vec![],
                    evaluation: None,
                    evaluations: vec![],
                });
                r.info = info;
                r.interrupted = interrupted;
                if let Some(s) = spec {
                    r.params = s.params();
                    r.spec = Some(*s);
                }
                if reset {
                    r.steps.clear();
                    r.epochs.clear();
                }
                r.steps.extend(steps);
                r.epochs.extend(epochs);
                r.events.extend(events);
                if let Some(c) = checkpoints {
                    r.checkpoints = c;
                }
                if let Some(v) = variants {
                    r.variants = v;
                }
                if let Some(a) = attacks {
                    r.attacks = a;
                }
                if evaluation.is_some() {
                    r.evaluation = evaluation;
                }
            }
            StoreUpdate::Removed(id) => {
                self.runs.remove(&id);
                self.marked.remove(&id);
                self.cursor = self.cursor.min(self.visible().len().saturating_sub(1));
            }
        }
    }

    fn runner(&mut self, e: RunnerEvent) {
        match e {
            RunnerEvent::Queued(id) => self.say(Level::Info, format!("queued {id}")),
            RunnerEvent::Started(id) => self.say(Level::Info, format!("started {id}")),
            RunnerEvent::Completed(id) => self.say(Level::Info, format!("{id} completed")),
            RunnerEvent::Cancelled(id) => {
                self.say(Level::Warn, format!("{id} stopped; its last checkpoint is kept"))
            }
            RunnerEvent::Failed(id, reason) => self.say(Level::Error, format!("{id} failed: {reason}")),
            RunnerEvent::Evaluated(id, which, e) => {
                let text = format!(
                    "{id} {} checkpoint on test: accuracy {:.2}%, macro F1 {:.4}",
                    if which == Which::Best { "best" } else { "last" },
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
            RunnerEvent::Refused(text) => self.say(Level::Error, text),
            RunnerEvent::Load { active, queued } => self.runner_load = (active, queued),
        }
        self.cursor = self.cursor.min(self.visible().len().saturating_sub(1));
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => {
                let Some(action) = self.keymap.action(&k) else { return vec![] };
                self.act(action)
            }
            Mode::Help { scroll } => {
                match self.keymap.action(&k) {
                    Some(Action::Down) => self.mode = Mode::Help { scroll: scroll.saturating_add(1) },
                    Some(Action::Up) => self.mode = Mode::Help { scroll: scroll.saturating_sub(1) },
                    Some(Action::PageDown) => self.mode = Mode::Help { scroll: scroll.saturating_add(10) },
                    Some(Action::PageUp) => self.mode = Mode::Help { scroll: scroll.saturating_sub(10) },
                    Some(Action::Quit) if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return self.act(Action::Quit);
                    }
                    _ => {}
                }
                vec![]
            }
            Mode::Filter(mut text) => {
                match k.code {
                    KeyCode::Esc => {
                        text.clear();
                        self.set_filter(text);
                    }
                    KeyCode::Enter => {}
                    KeyCode::Backspace => {
                        text.pop();
                        self.set_filter(text.clone());
                        self.mode = Mode::Filter(text);
                    }
                    KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                        text.push(c);
                        self.set_filter(text.clone());
                        self.mode = Mode::Filter(text);
                    }
                    _ => self.mode = Mode::Filter(text),
                }
                vec![]
            }
            Mode::Command { mut input, completion } => match k.code {
                KeyCode::Esc => vec![],
                KeyCode::Enter => self.command(input.trim()),
                KeyCode::Tab => {
                    let options = completions(&input, self);
                    if let Some(c) = options.get(completion % options.len().max(1)) {
                        input = c.clone();
                    }
                    self.mode = Mode::Command { input, completion: completion + 1 };
                    vec![]
                }
                KeyCode::Backspace => {
                    if input.pop().is_some() {
                        self.mode = Mode::Command { input, completion: 0 };
                    }
                    vec![]
                }
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                    input.push(c);
                    self.mode = Mode::Command { input, completion: 0 };
                    vec![]
                }
                _ => {
                    self.mode = Mode::Command { input, completion };
                    vec![]
                }
            },
            Mode::Form(mut form) => match k.code {
                KeyCode::Esc => vec![],
                KeyCode::Enter
                    if form.focus >= form.fields.len() || k.modifiers.contains(KeyModifiers::CONTROL) =>
                {
                    self.submit_form(form)
                }
                KeyCode::Enter | KeyCode::Down | KeyCode::Tab => {
                    form.next();
                    self.mode = Mode::Form(form);
                    vec![]
                }
                KeyCode::Up | KeyCode::BackTab => {
                    form.prev();
                    self.mode = Mode::Form(form);
                    vec![]
                }
                KeyCode::Left if form.focus == 0 => {
                    form.cycle_spec(false);
                    self.mode = Mode::Form(form);
                    vec![]
                }
                KeyCode::Right if form.focus == 0 => {
                    form.cycle_spec(true);
                    self.mode = Mode::Form(form);
                    vec![]
                }
                KeyCode::Backspace => {
                    form.backspace();
                    self.mode = Mode::Form(form);
                    vec![]
                }
                KeyCode::Char('s') if k.modifiers.contains(KeyModifiers::CONTROL) => self.submit_form(form),
                KeyCode::Char(c) => {
                    form.type_char(c);
                    self.mode = Mode::Form(form);
                    vec![]
                }
                _ => {
                    self.mode = Mode::Form(form);
                    vec![]
                }
            },
            Mode::Confirm(c) => {
                let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter);
                match (c, k.code) {
                    (Confirm::Quit { .. }, KeyCode::Char('s'))
                    | (Confirm::Quit { .. }, KeyCode::Char('y')) => {
                        self.quit = true;
                        vec![Effect::Quit { stop_runs: true }]
                    }
                    (Confirm::Stop(id), _) if yes => vec![Effect::Runner(RunnerCommand::Stop(id))],
                    (Confirm::StopService { .. }, _) if yes => vec![Effect::Service(ServiceCommand::Stop)],
                    (Confirm::Delete(id), KeyCode::Char('d')) => {
                        vec![Effect::Runner(RunnerCommand::Delete(id))]
                    }
                    (Confirm::Delete(id), KeyCode::Char('a')) => {
                        vec![Effect::Runner(RunnerCommand::Archive(id))]
                    }
                    _ => vec![],
                }
            }
        }
    }

    fn set_filter(&mut self, text: String) {
        self.filter = Filter::parse(&text);
        self.filter_text = text;
        self.cursor = 0;
        self.pinned = false;
    }

    fn submit_form(&mut self, mut form: Box<RunForm>) -> Vec<Effect> {
        match form.submit() {
            Some(spec) => {
                let what = match &form.clone_of {
                    Some(id) => format!("cloning {id}"),
                    None => format!("starting {}", spec.name),
                };
                self.say(Level::Info, what);
                vec![Effect::Runner(RunnerCommand::Start(Box::new(spec)))]
            }
            None => {
                self.mode = Mode::Form(form);
                vec![]
            }
        }
    }

    fn move_cursor(&mut self, delta: i64) {
        self.pinned = true;
        let n = self.visible().len();
        if n == 0 {
            self.cursor = 0;
            return;
        }
        self.cursor = (self.cursor as i64 + delta).clamp(0, n as i64 - 1) as usize;
    }

    fn chart_view(&self) -> bool {
        matches!(self.view, View::Detail | View::Compare | View::Overview)
    }

    /// Carries out an action in normal mode.
    pub fn act(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => {
                // Only runs this console trains stop with it; others train on in their process.
                let active = self.runner_load.0 + self.runner_load.1;
                if active > 0 {
                    self.mode = Mode::Confirm(Confirm::Quit { active });
                    vec![]
                } else {
                    self.quit = true;
                    vec![Effect::Quit { stop_runs: false }]
                }
            }
            Action::Help => {
                self.mode = Mode::Help { scroll: 0 };
                vec![]
            }
            Action::Back => {
                if !self.filter_text.is_empty() {
                    self.set_filter(String::new());
                } else if matches!(self.view, View::Detail | View::Logs) {
                    self.view = self.previous;
                } else if !self.marked.is_empty() {
                    self.marked.clear();
                }
                vec![]
            }
            Action::ShowOverview => self.show(View::Overview),
            Action::ShowRuns => self.show(View::Runs),
            Action::Open if self.view == View::Service => self.explain_cursor(),
            Action::ShowDetail | Action::Open => self.show(View::Detail),
            Action::ShowCompare => self.show(View::Compare),
            Action::ShowLogs => self.show(View::Logs),
            Action::ShowSystem => self.show(View::System),
            Action::ShowService => self.show(View::Service),
            Action::ShowSecurity => self.show(View::Security),
            Action::ToggleService => self.toggle_service(),
            Action::ServiceStatusFilter => {
                self.service.cycle_status();
                vec![]
            }
            Action::ServiceKeyFilter => {
                self.service.cycle_key();
                vec![]
            }
            Action::ServiceRouteFilter => {
                self.service.cycle_route();
                vec![]
            }
            Action::ServiceFlaggedOnly => {
                self.service.filter.flagged_only = !self.service.filter.flagged_only;
                self.service.scroll = 0;
                vec![]
            }
            Action::Up | Action::Down | Action::PageUp | Action::PageDown if self.view == View::Service => {
                let d = match action {
                    Action::Up => 1,
                    Action::Down => -1,
                    Action::PageUp => 10,
                    _ => -10,
                };
                self.service.scroll_by(d);
                vec![]
            }
            Action::Top if self.view == View::Service => {
                self.service.scroll_by(i64::MAX / 2);
                vec![]
            }
            Action::Bottom if self.view == View::Service => {
                self.service.scroll = 0;
                vec![]
            }
            Action::ShowExplain => {
                self.show(View::Explain);
                self.explain.requests.on = false;
                self.open_explain()
            }
            Action::ExplainRequests => self.toggle_requests(),
            Action::Left | Action::Right if self.view == View::Explain && self.explain.requests.on => {
                self.step_request(if action == Action::Left { -1 } else { 1 })
            }
            Action::NextMistake | Action::CycleClass | Action::ToggleAdversarial | Action::NextAttack
                if self.view == View::Explain && self.explain.requests.on =>
            {
                let back = self.keymap.hint(Action::ExplainRequests);
                self.say(Level::Info, format!("showing logged requests: {back} goes back to test examples"));
                vec![]
            }
            Action::NextMistake => self.next_mistake(),
            Action::ToggleAdversarial if self.view == View::Explain => self.toggle_adversarial(),
            Action::NextAttack if self.view == View::Explain => self.next_attack(),
            Action::ToggleAdversarial | Action::NextAttack => vec![],
            Action::CycleClass => self.cycle_class(),
            Action::Left | Action::Right if self.view == View::Explain => {
                self.step_example(if action == Action::Left { -1 } else { 1 })
            }
            Action::NextMetric if self.view == View::Explain => {
                self.explain.method = (self.explain.method + 1) % crate::ml::explain::METHOD_NAMES.len();
                self.request_explanation()
            }
            Action::Up => {
                match self.view {
                    View::Logs => self.log_scroll += 1,
                    _ => self.move_cursor(-1),
                }
                vec![]
            }
            Action::Down => {
                match self.view {
                    View::Logs => self.log_scroll = self.log_scroll.saturating_sub(1),
                    _ => self.move_cursor(1),
                }
                vec![]
            }
            Action::PageUp => {
                match self.view {
                    View::Logs => self.log_scroll += 10,
                    View::Detail if self.tab == DetailTab::Params => {
                        self.params_scroll = self.params_scroll.saturating_sub(10)
                    }
                    _ => self.move_cursor(-10),
                }
                vec![]
            }
            Action::PageDown => {
                match self.view {
                    View::Logs => self.log_scroll = self.log_scroll.saturating_sub(10),
                    View::Detail if self.tab == DetailTab::Params => {
                        let n = self.selected().map_or(0, |r| r.params.len());
                        self.params_scroll = (self.params_scroll + 10).min(n.saturating_sub(1));
                    }
                    _ => self.move_cursor(10),
                }
                vec![]
            }
            Action::Top => {
                match self.view {
                    View::Logs => self.log_scroll = usize::MAX / 2,
                    _ => self.cursor = 0,
                }
                vec![]
            }
            Action::Bottom => {
                match self.view {
                    View::Logs => self.log_scroll = 0,
                    _ => self.move_cursor(i64::MAX / 2),
                }
                vec![]
            }
            Action::Left | Action::Right if self.chart_view() && self.view != View::Overview => {
                let step = if action == Action::Left { -0.02 } else { 0.02 };
                let c = self.chart.cursor.unwrap_or(if step < 0.0 { 1.0 } else { 0.0 });
                self.chart.cursor = Some((c + step).clamp(0.0, 1.0));
                vec![]
            }
            Action::Left | Action::Right => vec![],
            Action::ToggleMark => {
                if let Some(id) = self.selected_id() {
                    if !self.marked.remove(&id) {
                        self.marked.insert(id);
                    }
                    self.move_cursor(1);
                }
                vec![]
            }
            Action::Filter => {
                self.mode = Mode::Filter(self.filter_text.clone());
                if !matches!(self.view, View::Runs | View::Compare) {
                    self.view = View::Runs;
                }
                vec![]
            }
            Action::Command => {
                self.mode = Mode::Command { input: String::new(), completion: 0 };
                vec![]
            }
            Action::NewRun => {
                let preferred = self
                    .selected()
                    .map(|r| r.info.spec.clone())
                    .unwrap_or_else(|| crate::ml::spec::DEFAULT_SPEC.into());
                match RunForm::new_run(self.specs.clone(), &preferred) {
                    Some(f) => self.mode = Mode::Form(Box::new(f)),
                    None => self.say(Level::Error, "no specs found in models/ or built in"),
                }
                vec![]
            }
            Action::CloneRun => {
                match self.selected() {
                    Some(r) => match r.spec.clone() {
                        Some(spec) => self.mode = Mode::Form(Box::new(RunForm::clone_run(&r.info.id, spec))),
                        None => self.say(Level::Error, format!("the spec of {} is not readable", r.info.id)),
                    },
                    None => self.say(Level::Warn, "no run selected"),
                }
                vec![]
            }
            Action::PauseResume => match self.selected() {
                Some(r) => {
                    let id = r.info.id.clone();
                    use crate::store::RunStatus;
                    match (r.info.status, r.interrupted) {
                        (RunStatus::Running, false) | (RunStatus::Queued, false) => {
                            self.say(Level::Info, format!("pausing {id}"));
                            vec![Effect::Runner(RunnerCommand::Pause(id))]
                        }
                        (RunStatus::Paused, false) => {
                            self.say(Level::Info, format!("resuming {id}"));
                            vec![Effect::Runner(RunnerCommand::Unpause(id))]
                        }
                        (RunStatus::Completed, _) => {
                            self.say(Level::Warn, format!("{id} has completed"));
                            vec![]
                        }
                        _ => {
                            self.say(Level::Info, format!("continuing {id} from its last checkpoint"));
                            vec![Effect::Runner(RunnerCommand::Resume(id))]
                        }
                    }
                }
                None => vec![],
            },
            Action::StopRun => {
                match self.selected() {
                    Some(r) if r.is_active() => self.mode = Mode::Confirm(Confirm::Stop(r.info.id.clone())),
                    Some(r) => self.say(Level::Warn, format!("{} is not training", r.info.id)),
                    None => {}
                }
                vec![]
            }
            Action::Evaluate => {
                let Some((id, ready)) = self
                    .selected()
                    .map(|r| (r.info.id.clone(), r.checkpoints.iter().any(|c| c.kind == "best")))
                else {
                    return vec![];
                };
                if ready {
                    self.say(Level::Info, format!("evaluating {id} on the test split"));
                    vec![Effect::Runner(RunnerCommand::Evaluate(id, Which::Best))]
                } else {
                    self.say(Level::Warn, format!("{id} has no checkpoint yet"));
                    vec![]
                }
            }
            Action::DeleteRun => {
                match self.selected() {
                    Some(r) if r.is_active() => {
                        self.say(Level::Warn, format!("{} is training: stop it first (x)", r.info.id))
                    }
                    Some(r) => self.mode = Mode::Confirm(Confirm::Delete(r.info.id.clone())),
                    None => {}
                }
                vec![]
            }
            Action::CycleTheme => {
                let names = Theme::names();
                let i = names.iter().position(|n| *n == self.theme.name).map_or(0, |i| (i + 1) % names.len());
                self.set_theme(&names[i]);
                vec![]
            }
            Action::SortNext => {
                let i = SortKey::ALL.iter().position(|k| *k == self.sort).unwrap_or(0);
                self.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
                self.say(Level::Info, format!("sorted by {}", self.sort.label()));
                vec![]
            }
            Action::SortReverse => {
                self.sort_desc = !self.sort_desc;
                vec![]
            }
            Action::NextTab => {
                self.tab = match self.tab {
                    DetailTab::Curves => DetailTab::Evaluation,
                    DetailTab::Evaluation => DetailTab::Params,
                    DetailTab::Params => DetailTab::Curves,
                };
                if self.view != View::Detail {
                    self.show(View::Detail);
                }
                vec![]
            }
            Action::NextMetric => {
                self.chart.metric = match self.chart.metric {
                    Metric::Loss => Metric::Accuracy,
                    Metric::Accuracy => Metric::LearningRate,
                    Metric::LearningRate => Metric::Loss,
                };
                vec![]
            }
            Action::ToggleSmoothing => {
                self.chart.smoothing = !self.chart.smoothing;
                vec![]
            }
            Action::SmoothMore | Action::SmoothLess => {
                let d = if action == Action::SmoothMore { 0.1 } else { -0.1 };
                self.chart.weight = ((self.chart.weight + d) * 10.0).round().clamp(0.0, 9.9) / 10.0;
                self.chart.weight = self.chart.weight.min(0.99);
                self.chart.smoothing = self.chart.weight > 0.0;
                self.say(Level::Info, format!("smoothing {:.1}", self.chart.weight));
                vec![]
            }
            Action::ToggleLogScale => {
                self.chart.log_y = !self.chart.log_y;
                vec![]
            }
            Action::CycleXAxis => {
                self.chart.x_axis = match self.chart.x_axis {
                    XAxis::Step => XAxis::Epoch,
                    XAxis::Epoch => XAxis::Time,
                    XAxis::Time => XAxis::Step,
                };
                self.chart.window = None;
                vec![]
            }
            Action::ZoomIn | Action::ZoomOut | Action::PanLeft | Action::PanRight => {
                self.zoom(action);
                vec![]
            }
            Action::ResetZoom => {
                self.chart.window = None;
                self.chart.cursor = None;
                vec![]
            }
            Action::ExportCsv => vec![Effect::ExportCsv],
            Action::ExportPng => vec![Effect::ExportPng],
            Action::Nothing => vec![],
        }
    }

    /// Opens the selected run in the Explain view (once; the engine keeps it loaded).
    fn open_explain(&mut self) -> Vec<Effect> {
        let Some(id) = self.selected_id() else {
            self.explain.error = Some("no run selected: pick one in the runs view (2)".into());
            return vec![];
        };
        if self.explain.set.as_ref().is_some_and(|s| s.run == id) {
            return vec![];
        }
        let has_model = self.runs.get(&id).is_some_and(|r| r.checkpoints.iter().any(|c| c.kind == "best"));
        if !has_model {
            self.explain = ExplainState {
                error: Some(format!("{id} has no checkpoint to explain yet")),
                ..Default::default()
            };
            return vec![];
        }
        let method = self.explain.method;
        let requests = std::mem::take(&mut self.explain.requests);
        self.explain = ExplainState { method, pending: true, requests, ..Default::default() };
        vec![
            Effect::Explain(ExplainCommand::Open(id.clone())),
            Effect::Explain(ExplainCommand::Explain {
                run: id,
                index: 0,
                method: self.explain.method_name().into(),
            }),
        ]
    }

    fn request_explanation(&mut self) -> Vec<Effect> {
        if self.explain.requests.on {
            let Some((id, input)) = &self.explain.requests.at else { return vec![] };
            let Some(logged) = self.service.logged_input(id, *input) else {
                self.explain.error = Some(format!("request {id} has left the console's tail of the log"));
                return vec![];
            };
            self.explain.pending = true;
            return vec![Effect::Explain(ExplainCommand::Request {
                input: Box::new(logged),
                method: self.explain.method_name().into(),
            })];
        }
        let Some(set) = &self.explain.set else { return vec![] };
        self.explain.pending = true;
        if self.explain.adversarial
            && let Some(attack) = self.explain.current_attack()
        {
            return vec![Effect::Explain(ExplainCommand::Adversarial {
                run: set.run.clone(),
                index: self.explain.index,
                method: self.explain.method_name().into(),
                attack: attack.clone(),
            })];
        }
        vec![Effect::Explain(ExplainCommand::Explain {
            run: set.run.clone(),
            index: self.explain.index,
            method: self.explain.method_name().into(),
        })]
    }

    fn step_example(&mut self, delta: i64) -> Vec<Effect> {
        let c = self.explain.candidates();
        if c.is_empty() {
            return vec![];
        }
        let pos = c.iter().position(|&i| i == self.explain.index).unwrap_or(0) as i64;
        self.explain.index = c[(pos + delta).rem_euclid(c.len() as i64) as usize];
        self.request_explanation()
    }

    fn next_mistake(&mut self) -> Vec<Effect> {
        let Some(set) = &self.explain.set else { return vec![] };
        let c = self.explain.candidates();
        let after = c.iter().copied().filter(|&i| i > self.explain.index).chain(c.iter().copied());
        let found = after.into_iter().find(|&i| set.examples[i].label != set.examples[i].predicted);
        match found {
            Some(i) => {
                self.explain.index = i;
                self.request_explanation()
            }
            None => {
                self.say(Level::Info, "no misclassified example here");
                vec![]
            }
        }
    }

    fn cycle_class(&mut self) -> Vec<Effect> {
        let Some(set) = &self.explain.set else { return vec![] };
        let k = set.classes.len();
        self.explain.class = match self.explain.class {
            None => Some(0),
            Some(c) if c + 1 < k => Some(c + 1),
            Some(_) => None,
        };
        let c = self.explain.candidates();
        match c.first() {
            Some(&i) if !c.contains(&self.explain.index) => {
                self.explain.index = i;
                self.request_explanation()
            }
            _ => vec![],
        }
    }

    /// Shows the example beside its adversarial version, or alone again.
    fn toggle_adversarial(&mut self) -> Vec<Effect> {
        let Some(set) = &self.explain.set else { return vec![] };
        if self.explain.attacks.is_empty() {
            let run = set.run.clone();
            self.say(
                Level::Warn,
                format!("no adversarial examples saved for {run}: `vigil attack {run}` makes them"),
            );
            return vec![];
        }
        self.explain.adversarial = !self.explain.adversarial;
        if self.explain.adversarial
            && let Some(a) = self.explain.current_attack()
        {
            let text = format!("adversarial: {} (A: next attack)", a.describe());
            self.say(Level::Info, text);
        }
        self.request_explanation()
    }

    /// The next saved attack (curve and ε).
    fn next_attack(&mut self) -> Vec<Effect> {
        if self.explain.attacks.is_empty() {
            return self.toggle_adversarial();
        }
        self.explain.attack = (self.explain.attack + 1) % self.explain.attacks.len();
        self.explain.adversarial = true;
        self.request_explanation()
    }

    /// `enter` in the Service view: explain the request under the tail's cursor.
    fn explain_cursor(&mut self) -> Vec<Effect> {
        let Some(r) = self.service.cursor() else {
            self.say(Level::Info, "no request in the access log yet");
            return vec![];
        };
        let id = r.request_id.clone();
        if LoggedInput::count(r) == 0 {
            let why = if r.model.is_none() || !(200..300).contains(&r.status) {
                format!("request {id} was not answered by a model ({})", r.status)
            } else {
                format!(
                    "request {id}: the log keeps only hashes of its inputs; serve with \
                     --log-raw-inputs (the console: vigil --serve-log-raw-inputs) to explain requests"
                )
            };
            self.say(Level::Warn, why);
            return vec![];
        }
        self.explain.requests.on = true;
        self.explain.requests.at = Some((id, 0));
        self.explain.error = None;
        self.show(View::Explain);
        self.request_explanation()
    }

    /// `r`: show logged requests in the Explain view (the newest, or the one shown before), or
    /// go back to test examples.
    fn toggle_requests(&mut self) -> Vec<Effect> {
        if self.view == View::Explain && self.explain.requests.on {
            self.explain.requests.on = false;
            self.explain.error = None;
            return if self.explain.set.is_some() { self.request_explanation() } else { self.open_explain() };
        }
        self.show(View::Explain);
        self.explain.requests.on = true;
        self.explain.error = None;
        let inputs = self.service.logged_inputs();
        let kept =
            self.explain.requests.at.as_ref().is_some_and(|(id, i)| inputs.contains(&(id.as_str(), *i)));
        if !kept {
            self.explain.requests.at = inputs.last().map(|(id, i)| (id.to_string(), *i));
        }
        self.request_explanation()
    }

    fn step_request(&mut self, delta: i64) -> Vec<Effect> {
        let inputs = self.service.logged_inputs();
        if inputs.is_empty() {
            return vec![];
        }
        let pos = self
            .explain
            .requests
            .at
            .as_ref()
            .and_then(|(id, i)| inputs.iter().position(|&(r, j)| r == id && j == *i))
            .map_or(inputs.len() as i64 - 1, |p| p as i64 + delta);
        let (id, i) = inputs[pos.clamp(0, inputs.len() as i64 - 1) as usize];
        let at = Some((id.to_string(), i));
        if at == self.explain.requests.at && self.explain.requests.result.is_some() {
            return vec![];
        }
        self.explain.requests.at = at;
        self.request_explanation()
    }

    fn explained(&mut self, e: ExplainEvent) {
        match e {
            ExplainEvent::ExplainedRequest(r) => {
                self.explain.pending = false;
                self.explain.error = None;
                self.explain.requests.result = Some(*r);
            }
            ExplainEvent::Attacks { run, attacks } => {
                if self.explain.set.as_ref().is_some_and(|s| s.run == run) {
                    self.explain.attacks = attacks;
                    self.explain.attack = 0;
                }
            }
            ExplainEvent::ExplainedAdversarial(r) => {
                self.explain.pending = false;
                self.explain.error = None;
                self.explain.adversarial_result = Some(*r);
            }
            ExplainEvent::Opened(set) => {
                self.explain.set = Some(*set);
                self.explain.error = None;
            }
            ExplainEvent::Explained(r) => {
                // A result for a request that was overtaken is still the freshest picture.
                self.explain.pending = false;
                self.explain.error = None;
                self.explain.result = Some(*r);
            }
            ExplainEvent::Failed(msg) => {
                self.explain.pending = false;
                self.explain.error = Some(msg);
            }
        }
    }

    /// `s`: serve the selected run, or, when the console's service is running, ask before
    /// stopping it.
    fn toggle_service(&mut self) -> Vec<Effect> {
        match &self.service.server {
            ServerState::Running { url, .. } => {
                self.mode = Mode::Confirm(Confirm::StopService { url: url.clone() });
                vec![]
            }
            ServerState::Starting(run) => {
                self.say(Level::Warn, format!("the service is starting for {run}"));
                vec![]
            }
            ServerState::Stopped | ServerState::Failed(_) => match self.selected() {
                Some(r) if r.info.best_epoch.is_some() || r.status() == "completed" => {
                    let id = r.info.id.clone();
                    self.service.server = ServerState::Starting(id.clone());
                    vec![Effect::Service(ServiceCommand::Start(id))]
                }
                Some(r) => {
                    let msg = format!("{} has no checkpoint to serve yet", r.info.id);
                    self.say(Level::Warn, msg);
                    vec![]
                }
                None => {
                    self.say(Level::Warn, "select a run to serve");
                    vec![]
                }
            },
        }
    }

    fn show(&mut self, v: View) -> Vec<Effect> {
        if !matches!(self.view, View::Detail | View::Logs) {
            self.previous = self.view;
        }
        self.view = v;
        if v == View::Logs {
            self.log_scroll = 0;
        }
        vec![]
    }

    /// Zooms or pans the x window of the charts, around the cursor when there is one.
    fn zoom(&mut self, action: Action) {
        let Some((lo, hi)) = self.full_x_range() else { return };
        let (wlo, whi) = self.chart.window.unwrap_or((lo, hi));
        let width = whi - wlo;
        let (nlo, nhi) = match action {
            Action::ZoomIn => {
                let center = wlo + width * self.chart.cursor.unwrap_or(0.5);
                (center - width / 4.0, center + width / 4.0)
            }
            Action::ZoomOut => {
                let center = (wlo + whi) / 2.0;
                (center - width, center + width)
            }
            Action::PanLeft => (wlo - width / 4.0, whi - width / 4.0),
            _ => (wlo + width / 4.0, whi + width / 4.0),
        };
        // Keep the window inside the data and at least a few points wide.
        let w = (nhi - nlo).clamp((hi - lo) / 1000.0, hi - lo);
        let nlo = nlo.clamp(lo, (hi - w).max(lo));
        self.chart.window = if w >= hi - lo { None } else { Some((nlo, nlo + w)) };
    }

    /// The x range of the chart currently shown (for zoom).
    pub fn full_x_range(&self) -> Option<(f64, f64)> {
        let runs: Vec<&RunState> = match self.view {
            View::Compare => self.compared(),
            _ => self.selected().into_iter().collect(),
        };
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for r in runs {
            for (x, _) in super::views::series_points(r, self.chart.metric, self.chart.x_axis)
                .into_iter()
                .flat_map(|s| s.1)
            {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        (lo < hi).then_some((lo, hi))
    }

    pub fn set_theme(&mut self, name: &str) {
        match Theme::find(name, self.theme.depth) {
            Ok(t) => {
                self.theme = t;
                self.say(Level::Info, format!("theme {name}"));
            }
            Err(e) => self.say(Level::Error, e.to_string()),
        }
    }

    /// Runs a `:` command.
    fn command(&mut self, line: &str) -> Vec<Effect> {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { return vec![] };
        let arg = words.collect::<Vec<_>>().join(" ");
        match cmd {
            "q" | "quit" => self.act(Action::Quit),
            "help" => self.act(Action::Help),
            "overview" => self.act(Action::ShowOverview),
            "runs" => self.act(Action::ShowRuns),
            "detail" => self.act(Action::ShowDetail),
            "compare" => self.act(Action::ShowCompare),
            "logs" => self.act(Action::ShowLogs),
            "system" => self.act(Action::ShowSystem),
            "explain" => self.act(Action::ShowExplain),
            "new" => {
                let name = if arg.is_empty() { crate::ml::spec::DEFAULT_SPEC.to_string() } else { arg };
                match RunForm::new_run(self.specs.clone(), &name) {
                    Some(f) if f.spec().name == name => self.mode = Mode::Form(Box::new(f)),
                    _ => self.say(Level::Error, format!("no spec named {name:?} (:new <Tab> lists them)")),
                }
                vec![]
            }
            "clone" => self.act(Action::CloneRun),
            "pause" | "resume" => self.act(Action::PauseResume),
            "stop" => self.act(Action::StopRun),
            "eval" => match (self.selected_id(), arg.as_str()) {
                (Some(id), "last") => vec![Effect::Runner(RunnerCommand::Evaluate(id, Which::Last))],
                (Some(id), "" | "best") => vec![Effect::Runner(RunnerCommand::Evaluate(id, Which::Best))],
                (Some(_), other) => {
                    self.say(Level::Error, format!("eval takes best or last, not {other:?}"));
                    vec![]
                }
                (None, _) => vec![],
            },
            "delete" | "archive" => self.act(Action::DeleteRun),
            "theme" => {
                if arg.is_empty() {
                    self.act(Action::CycleTheme)
                } else {
                    self.set_theme(&arg);
                    vec![]
                }
            }
            "filter" => {
                self.set_filter(arg);
                self.view = View::Runs;
                vec![]
            }
            "sort" => {
                match SortKey::ALL.iter().find(|k| k.label().replace(' ', "") == arg.replace(' ', "")) {
                    Some(k) => self.sort = *k,
                    None => self.say(
                        Level::Error,
                        format!(
                            "sort by one of: {}",
                            SortKey::ALL.iter().map(|k| k.label()).collect::<Vec<_>>().join(", ")
                        ),
                    ),
                }
                vec![]
            }
            "export" => match arg.as_str() {
                "csv" | "" => vec![Effect::ExportCsv],
                "png" => vec![Effect::ExportPng],
                other => {
                    self.say(Level::Error, format!("export csv or png, not {other:?}"));
                    vec![]
                }
            },
            other => {
                self.say(Level::Error, format!("unknown command :{other} (Tab completes; ? lists keys)"));
                vec![]
            }
        }
    }
}

/// Every `:` command, for completion.
pub const COMMANDS: &[&str] = &[
    "overview", "runs", "detail", "compare", "logs", "system", "explain", "new", "clone", "pause", "resume",
    "stop", "eval", "delete", "archive", "theme", "filter", "sort", "export", "help", "quit",
];

/// Completions of a partial command line.
pub fn completions(input: &str, app: &App) -> Vec<String> {
    let parts: Vec<&str> = input.split_whitespace().collect();
    let trailing_space = input.ends_with(' ');
    match (parts.as_slice(), trailing_space) {
        ([], _) => COMMANDS.iter().map(|c| c.to_string()).collect(),
        ([p], false) => COMMANDS.iter().filter(|c| c.starts_with(p)).map(|c| c.to_string()).collect(),
        ([cmd], true) | ([cmd, _], false) => {
            let prefix = if trailing_space { "" } else { parts[1] };
            let options: Vec<String> = match *cmd {
                "new" => app.specs.iter().map(|s| s.name.clone()).collect(),
                "theme" => Theme::names(),
                "eval" => vec!["best".into(), "last".into()],
                "export" => vec!["csv".into(), "png".into()],
                "sort" => SortKey::ALL.iter().map(|k| k.label().replace(' ', "")).collect(),
                _ => vec![],
            };
            options.into_iter().filter(|o| o.starts_with(prefix)).map(|o| format!("{cmd} {o}")).collect()
        }
        _ => vec![],
    }
}
