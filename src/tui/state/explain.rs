//! The Explain view's state (the open run's test examples, the saved attacks, the logged
//! requests, where we are and the result) and its keys. Requests go to the explanation engine
//! as effects; its answers come back as [`ExplainEvent`]s.

use super::service::ServiceState;
use super::{App, Binding, Effect, Level, ViewState};
use crate::engine::explain::{
    AdversarialResult, AttackChoice, ExplainCommand, ExplainEvent, ExplainResult, ExplainSet, RequestResult,
};
use crate::tui::app::View;
use crate::tui::keymap::Action;

/// The method the view starts with: integrated gradients. Saliency, first in the list, gives
/// every token of a mean-pooled text model the same score (the pooled gradient reaches each
/// token's embedding alike, and summed over the embedding it is one number), so it ranks
/// nothing; IG weighs each token's gradient by its own embedding, ranks tokens, images and
/// tables alike, and is the command line's default too.
pub const DEFAULT_METHOD: &str = "ig";

/// The Explain view's state: the open run's test examples, where we are, and the result.
#[derive(Debug, Clone, PartialEq)]
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

impl Default for ExplainState {
    fn default() -> Self {
        ExplainState {
            set: None,
            index: 0,
            method: crate::ml::explain::METHOD_NAMES
                .iter()
                .position(|m| *m == DEFAULT_METHOD)
                .expect("the default method is one of the methods"),
            class: None,
            result: None,
            pending: false,
            error: None,
            attacks: Vec::new(),
            attack: 0,
            adversarial: false,
            adversarial_result: None,
            requests: RequestPick::default(),
        }
    }
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

/// Every key of the Explain view (the help and the `:` commands).
pub const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]),
    Binding::new(&[Action::NextMetric]),
    Binding::new(&[Action::NextMistake]),
    Binding::new(&[Action::CycleClass]),
    Binding::new(&[Action::ToggleAdversarial]),
    Binding::new(&[Action::NextAttack]),
    Binding::new(&[Action::ExplainRequests]),
    super::screens::PANE_KEYS[0],
    super::screens::PANE_KEYS[1],
    super::screens::PANE_KEYS[2],
];
/// The footer while test examples are shown.
const EXAMPLE_HINTS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]).hint("example"),
    Binding::new(&[Action::NextMetric]).hint("method"),
    Binding::new(&[Action::NextMistake]).hint("misclassified"),
    Binding::new(&[Action::CycleClass]).hint("class"),
    Binding::new(&[Action::ExplainRequests]).hint("requests"),
];
/// The footer when the run has saved attacks.
const ADVERSARIAL_HINTS: &[Binding] = &[
    Binding::new(&[Action::ToggleAdversarial]).hint("adversarial"),
    Binding::new(&[Action::Left, Action::Right]).hint("example"),
    Binding::new(&[Action::NextAttack]).hint("next attack"),
    Binding::new(&[Action::NextMetric]).hint("method"),
];
/// The footer while logged requests are shown.
const REQUEST_HINTS: &[Binding] = &[
    Binding::new(&[Action::Left, Action::Right]).hint("request"),
    Binding::new(&[Action::NextMetric]).hint("method"),
    Binding::new(&[Action::ExplainRequests]).hint("test examples"),
];

impl ViewState for ExplainState {
    fn title(&self) -> &'static str {
        "Explain"
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn hints(&self, _app: &App) -> Vec<Binding> {
        if self.requests.on {
            REQUEST_HINTS.to_vec()
        } else if !self.attacks.is_empty() {
            ADVERSARIAL_HINTS.to_vec()
        } else {
            EXAMPLE_HINTS.to_vec()
        }
    }

    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        let delta = if action == Action::Left { -1 } else { 1 };
        if self.requests.on {
            return match action {
                Action::Left | Action::Right => Some(self.step_request(delta, &app.service)),
                Action::NextMistake | Action::CycleClass | Action::ToggleAdversarial | Action::NextAttack => {
                    let back = app.keymap.hint(Action::ExplainRequests);
                    app.say(
                        Level::Info,
                        format!("showing logged requests: {back} goes back to test examples"),
                    );
                    Some(vec![])
                }
                Action::NextMetric => Some(self.next_method(&app.service)),
                _ => None,
            };
        }
        Some(match action {
            Action::Left | Action::Right => self.step_example(delta, &app.service),
            Action::NextMetric => self.next_method(&app.service),
            Action::NextMistake => self.next_mistake(app),
            Action::CycleClass => self.cycle_class(&app.service),
            Action::ToggleAdversarial => self.toggle_adversarial(app),
            Action::NextAttack => self.next_attack(app),
            _ => return None,
        })
    }
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

    /// Opens the selected run (once; the engine keeps it loaded).
    pub fn open(&mut self, app: &App) -> Vec<Effect> {
        let Some(id) = app.selected_id() else {
            self.error = Some("no run selected: pick one in the runs view (2)".into());
            return vec![];
        };
        if self.set.as_ref().is_some_and(|s| s.run == id) {
            return vec![];
        }
        if !app.runs.get(&id).is_some_and(|r| r.has_best()) {
            *self = ExplainState {
                error: Some(format!("{id} has no checkpoint to explain yet")),
                ..Default::default()
            };
            return vec![];
        }
        let method = self.method;
        let requests = std::mem::take(&mut self.requests);
        *self = ExplainState { method, pending: true, requests, ..Default::default() };
        vec![
            Effect::Explain(ExplainCommand::Open(id.clone())),
            Effect::Explain(ExplainCommand::Explain { run: id, index: 0, method: self.method_name().into() }),
        ]
    }

    /// Asks the engine for what is shown now.
    pub fn request_explanation(&mut self, service: &ServiceState) -> Vec<Effect> {
        if self.requests.on {
            let Some((id, input)) = &self.requests.at else { return vec![] };
            let Some(logged) = service.logged_input(id, *input) else {
                self.error = Some(format!("request {id} has left the console's tail of the log"));
                return vec![];
            };
            self.pending = true;
            return vec![Effect::Explain(ExplainCommand::Request {
                input: Box::new(logged),
                method: self.method_name().into(),
            })];
        }
        let Some(set) = &self.set else { return vec![] };
        self.pending = true;
        if self.adversarial
            && let Some(attack) = self.current_attack()
        {
            return vec![Effect::Explain(ExplainCommand::Adversarial {
                run: set.run.clone(),
                index: self.index,
                method: self.method_name().into(),
                attack: attack.clone(),
            })];
        }
        vec![Effect::Explain(ExplainCommand::Explain {
            run: set.run.clone(),
            index: self.index,
            method: self.method_name().into(),
        })]
    }

    /// The next method; attention rollout is passed over where the open run has no attention
    /// (logged requests may come from any served model, so there it stays in the cycle).
    fn next_method(&mut self, service: &ServiceState) -> Vec<Effect> {
        let names = crate::ml::explain::METHOD_NAMES;
        self.method = (self.method + 1) % names.len();
        let no_attention = !self.requests.on && self.set.as_ref().is_some_and(|s| !s.attention);
        if no_attention && names[self.method] == crate::ml::explain::MethodKind::Rollout.as_str() {
            self.method = (self.method + 1) % names.len();
        }
        self.request_explanation(service)
    }

    fn step_example(&mut self, delta: i64, service: &ServiceState) -> Vec<Effect> {
        let c = self.candidates();
        if c.is_empty() {
            return vec![];
        }
        let pos = c.iter().position(|&i| i == self.index).unwrap_or(0) as i64;
        self.index = c[(pos + delta).rem_euclid(c.len() as i64) as usize];
        self.request_explanation(service)
    }

    fn next_mistake(&mut self, app: &mut App) -> Vec<Effect> {
        let Some(set) = &self.set else { return vec![] };
        let c = self.candidates();
        let after = c.iter().copied().filter(|&i| i > self.index).chain(c.iter().copied());
        let found = after.into_iter().find(|&i| set.examples[i].label != set.examples[i].predicted);
        match found {
            Some(i) => {
                self.index = i;
                self.request_explanation(&app.service)
            }
            None => {
                app.say(Level::Info, "no misclassified example here");
                vec![]
            }
        }
    }

    fn cycle_class(&mut self, service: &ServiceState) -> Vec<Effect> {
        let Some(set) = &self.set else { return vec![] };
        let k = set.classes.len();
        self.class = match self.class {
            None => Some(0),
            Some(c) if c + 1 < k => Some(c + 1),
            Some(_) => None,
        };
        let c = self.candidates();
        match c.first() {
            Some(&i) if !c.contains(&self.index) => {
                self.index = i;
                self.request_explanation(service)
            }
            _ => vec![],
        }
    }

    /// Shows the example beside its adversarial version, or alone again.
    fn toggle_adversarial(&mut self, app: &mut App) -> Vec<Effect> {
        let Some(set) = &self.set else { return vec![] };
        if self.attacks.is_empty() {
            let run = set.run.clone();
            app.say(
                Level::Warn,
                format!("no adversarial examples saved for {run}: `vigil attack {run}` makes them"),
            );
            return vec![];
        }
        self.adversarial = !self.adversarial;
        if self.adversarial
            && let Some(a) = self.current_attack()
        {
            let text = format!("adversarial: {} (A: next attack)", a.describe());
            app.say(Level::Info, text);
        }
        self.request_explanation(&app.service)
    }

    /// The next saved attack (curve and ε).
    fn next_attack(&mut self, app: &mut App) -> Vec<Effect> {
        if self.attacks.is_empty() {
            return self.toggle_adversarial(app);
        }
        self.attack = (self.attack + 1) % self.attacks.len();
        self.adversarial = true;
        self.request_explanation(&app.service)
    }

    fn step_request(&mut self, delta: i64, service: &ServiceState) -> Vec<Effect> {
        let inputs = service.logged_inputs();
        if inputs.is_empty() {
            return vec![];
        }
        let pos = self
            .requests
            .at
            .as_ref()
            .and_then(|(id, i)| inputs.iter().position(|&(r, j)| r == id && j == *i))
            .map_or(inputs.len() as i64 - 1, |p| p as i64 + delta);
        let (id, i) = inputs[pos.clamp(0, inputs.len() as i64 - 1) as usize];
        let at = Some((id.to_string(), i));
        if at == self.requests.at && self.requests.result.is_some() {
            return vec![];
        }
        self.requests.at = at;
        self.request_explanation(service)
    }

    /// An answer from the explanation engine.
    pub fn apply(&mut self, e: ExplainEvent) {
        match e {
            ExplainEvent::ExplainedRequest(r) => {
                self.pending = false;
                self.error = None;
                self.requests.result = Some(*r);
            }
            ExplainEvent::Attacks { run, attacks } => {
                if self.set.as_ref().is_some_and(|s| s.run == run) {
                    self.attacks = attacks;
                    self.attack = 0;
                }
            }
            ExplainEvent::ExplainedAdversarial(r) => {
                self.pending = false;
                self.error = None;
                self.adversarial_result = Some(*r);
            }
            ExplainEvent::Opened(set) => {
                self.set = Some(*set);
                self.error = None;
            }
            ExplainEvent::Explained(r) => {
                // A result for a request that was overtaken is still the freshest picture.
                self.pending = false;
                self.error = None;
                self.result = Some(*r);
            }
            ExplainEvent::Failed(msg) => {
                self.pending = false;
                self.error = Some(msg);
            }
        }
    }
}

/// `7`: show the Explain view on the selected run's test examples.
pub fn show(app: &mut App) -> Vec<Effect> {
    app.show(View::Explain);
    app.explain.requests.on = false;
    let mut e = std::mem::take(&mut app.explain);
    let out = e.open(app);
    app.explain = e;
    out
}

/// `r`: show logged requests in the Explain view (the newest, or the one shown before), or go
/// back to test examples. A global key: from any view it opens the Explain view on requests.
pub fn toggle_requests(app: &mut App) -> Vec<Effect> {
    if app.view == View::Explain && app.explain.requests.on {
        app.explain.requests.on = false;
        app.explain.error = None;
        if app.explain.set.is_none() {
            return show_examples(app);
        }
        return app.explain.request_explanation(&app.service);
    }
    app.show(View::Explain);
    let e = &mut app.explain;
    e.requests.on = true;
    e.error = None;
    let inputs = app.service.logged_inputs();
    let kept = e.requests.at.as_ref().is_some_and(|(id, i)| inputs.contains(&(id.as_str(), *i)));
    if !kept {
        e.requests.at = inputs.last().map(|(id, i)| (id.to_string(), *i));
    }
    e.request_explanation(&app.service)
}

fn show_examples(app: &mut App) -> Vec<Effect> {
    let mut e = std::mem::take(&mut app.explain);
    let out = e.open(app);
    app.explain = e;
    out
}
