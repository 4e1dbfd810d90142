//! The Service view's state: the console's own server, the service's numbers, the tail of the
//! access log with its filter, and the view's keys (serve/stop, filters, scrolling, explain the
//! request under the cursor).

use std::collections::{BTreeSet, VecDeque};

use super::{App, Binding, Effect, Level, ViewState};
use crate::engine::explain::LoggedInput;
use crate::engine::service::{ServiceCommand, ServiceEvent, ServiceFeed};
use crate::serve::access_log::AccessRecord;
use crate::serve::monitor::Snapshot;
use crate::store::RunId;
use crate::tui::app::{Confirm, Mode, View};
use crate::tui::keymap::Action;

/// Lines of the access log the console keeps for the Service view's tail.
pub const SERVICE_TAIL: usize = 5000;

/// Which lines the tail shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailFilter {
    /// 2 for 2xx, 4 for 4xx, ...
    pub status_class: Option<u16>,
    pub key: Option<String>,
    /// A route template (`/v1/models/{name}/predict`) or, for unknown paths, the path.
    pub route: Option<String>,
    pub flagged_only: bool,
}

impl TailFilter {
    /// Whether a line passes.
    pub fn matches(&self, r: &AccessRecord) -> bool {
        self.status_class.is_none_or(|c| r.status / 100 == c)
            && self.key.as_deref().is_none_or(|k| r.key.as_deref() == Some(k))
            && self.route.as_deref().is_none_or(|route| r.route.as_deref().unwrap_or(&r.path) == route)
            && (!self.flagged_only || !r.flags.is_empty())
    }
}

/// The model service's server, as far as this console knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ServerState {
    /// Not started here (one started by `vigil serve` elsewhere still shows in the numbers).
    #[default]
    Stopped,
    /// Starting to serve this run.
    Starting(RunId),
    Running {
        url: String,
        run: RunId,
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
    /// The console's own server's health (log writable, edge rejections), once reported.
    pub health: Option<crate::serve::server::Health>,
}

/// The Service view's keys.
pub const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::ToggleService]).hint("serve/stop").commands(&["serve"]),
    Binding::new(&[Action::Open]).hint("explain"),
    Binding::new(&[Action::ServiceStatusFilter]).hint("status"),
    Binding::new(&[Action::ServiceKeyFilter]).hint("key"),
    Binding::new(&[Action::ServiceRouteFilter]).hint("route"),
    Binding::new(&[Action::ServiceFlaggedOnly]).hint("flagged"),
    Binding::new(&[Action::Up, Action::Down]),
    Binding::new(&[Action::Bottom]).hint("follow"),
    Binding::new(&[Action::ManageKeys]).hint("keys").commands(&["keys"]),
    Binding::new(&[Action::TryIt]).hint("try it").commands(&["try"]),
    super::screens::PANE_BINDINGS[0],
    super::screens::PANE_BINDINGS[1],
    super::screens::PANE_BINDINGS[2],
];

impl ViewState for ServiceState {
    fn title(&self) -> &'static str {
        "Service"
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        match action {
            Action::ManageKeys => return Some(super::keys::open(app)),
            Action::TryIt => return Some(self.toggle_try_it(app)),
            Action::Open => return Some(self.explain_cursor(app)),
            Action::ServiceStatusFilter => self.cycle_status(),
            Action::ServiceKeyFilter => self.cycle_key(),
            Action::ServiceRouteFilter => self.cycle_route(),
            Action::ServiceFlaggedOnly => {
                self.filter.flagged_only = !self.filter.flagged_only;
                self.scroll = 0;
            }
            Action::Up => self.scroll_by(1),
            Action::Down => self.scroll_by(-1),
            Action::PageUp => self.scroll_by(10),
            Action::PageDown => self.scroll_by(-10),
            Action::Top => self.scroll_by(i64::MAX / 2),
            Action::Bottom => self.scroll = 0,
            _ => return None,
        }
        Some(vec![])
    }
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

    /// New access-log lines and numbers.
    pub fn feed(&mut self, feed: ServiceFeed) {
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

    /// What became of a start or stop; returns the status-line message, if any.
    pub fn apply(&mut self, e: ServiceEvent) -> Option<(Level, String)> {
        if let ServiceEvent::Health(h) = e {
            let was_failing = self.health.as_ref().is_some_and(|o| o.log_error.is_some());
            let say = match &h.log_error {
                Some(why) if !was_failing => {
                    Some((Level::Error, format!("the access log cannot be written: {why}")))
                }
                None if was_failing => Some((Level::Info, "the access log is written again".into())),
                _ => None,
            };
            self.health = Some(h);
            return say;
        }
        Some(match e {
            ServiceEvent::Started { url, run, models, warnings } => {
                let mut msg = format!("serving {run} on {url}");
                if let Some(w) = warnings.first() {
                    msg.push_str(&format!(" (warning: {w})"));
                }
                self.server = ServerState::Running { url, run, models };
                (Level::Info, msg)
            }
            ServiceEvent::Stopped => {
                self.server = ServerState::Stopped;
                self.health = None;
                (Level::Info, "the model service stopped".into())
            }
            ServiceEvent::Failed(reason) => {
                let msg = format!("the model service did not start: {reason}");
                self.server = ServerState::Failed(reason);
                (Level::Error, msg)
            }
            ServiceEvent::Health(_) => unreachable!("handled above"),
        })
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

    /// `y`: the try-it pane on or off; on, it asks for a sample request for the served model.
    fn toggle_try_it(&mut self, app: &mut App) -> Vec<Effect> {
        app.keys.try_it.on = !app.keys.try_it.on;
        app.keys.try_it.scroll = 0;
        // The view's state is taken out of the app while it handles a key: lend it back.
        let server = std::mem::take(&mut self.server);
        app.service.server = server;
        let effects = super::try_it::refresh(app);
        self.server = std::mem::take(&mut app.service.server);
        effects
    }

    /// `enter`: explain the request under the tail's cursor.
    fn explain_cursor(&mut self, app: &mut App) -> Vec<Effect> {
        let Some(r) = self.cursor() else {
            app.say(Level::Info, "no request in the access log yet");
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
            app.say(Level::Warn, why);
            return vec![];
        }
        app.explain.requests.on = true;
        app.explain.requests.at = Some((id, 0));
        app.explain.error = None;
        app.show(View::Explain);
        app.explain.request_explanation(self)
    }
}

/// `s`: serve the selected run, or, when the console's service is running, ask before stopping
/// it. A global key: it works from every view.
pub fn toggle_service(app: &mut App) -> Vec<Effect> {
    match &app.service.server {
        ServerState::Running { url, .. } => {
            app.mode = Mode::Confirm(Confirm::StopService { url: url.clone() });
            vec![]
        }
        ServerState::Starting(run) => {
            let msg = format!("the service is starting for {run}");
            app.say(Level::Warn, msg);
            vec![]
        }
        ServerState::Stopped | ServerState::Failed(_) => match app.selected() {
            Some(r)
                if r.info.best_epoch.is_some()
                    || r.status() == super::run::ShownStatus::Run(crate::store::RunStatus::Completed) =>
            {
                let id = r.info.id.clone();
                app.service.server = ServerState::Starting(id.clone());
                vec![Effect::Service(ServiceCommand::Start(id))]
            }
            Some(r) => {
                let msg = format!("{} has no checkpoint to serve yet", r.info.id);
                app.say(Level::Warn, msg);
                vec![]
            }
            None => {
                app.say(Level::Warn, "select a run to serve");
                vec![]
            }
        },
    }
}
