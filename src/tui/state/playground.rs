//! The Playground's state: the language model loaded (or loading), the prompt being edited and
//! the settings beside it (max tokens, temperature, seed, alternatives per token, chat mode),
//! the completion streaming in token by token with the figures once it ends, the token picked
//! for inspection, and the explanation of a token over the prompt. While the prompt or a
//! setting is being edited, [`capture`] reads every key before the keymap (as the `:` line and
//! the new-run form do), so typing never switches views. Generating and explaining are effects
//! for [`crate::engine::llm`]; nothing here does I/O.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Binding, Effect, Level, ViewState};
use crate::engine::llm::{GenerateRequest, GenerationFigures, LlmCommand, LlmEvent};
use crate::llm::attribution::TokenAttribution;
use crate::llm::{GeneratedToken, ModelInfo, SamplingParams};
use crate::tui::app::View;
use crate::tui::keymap::Action;

/// The most alternatives per token the Playground asks for (and shows).
pub const MAX_ALTERNATIVES: usize = 10;

/// What is loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ModelStatus {
    #[default]
    None,
    Loading(std::path::PathBuf),
    Ready(Box<ModelInfo>),
    /// Loading failed: the message names the file.
    Failed(String),
}

/// What is being edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Prompt,
    MaxTokens,
    Temperature,
    Seed,
    Alternatives,
}

impl Field {
    pub const ALL: [Field; 5] =
        [Field::Prompt, Field::MaxTokens, Field::Temperature, Field::Seed, Field::Alternatives];

    /// The field's name as the settings line shows it and errors name it.
    pub fn label(&self) -> &'static str {
        match self {
            Field::Prompt => "prompt",
            Field::MaxTokens => "max tokens",
            Field::Temperature => "temperature",
            Field::Seed => "seed",
            Field::Alternatives => "alternatives",
        }
    }
}

/// One completion: the prompt's ids as the model read them, the tokens so far, and how it
/// ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub prompt: Vec<u32>,
    pub tokens: Vec<GeneratedToken>,
    pub running: bool,
    pub figures: Option<GenerationFigures>,
    pub error: Option<String>,
    /// Alternatives asked per token (0: the inspector shows the token's own probability only).
    pub alternatives: usize,
}

/// An explanation asked for or shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Explanation {
    /// Under way: `done` of `total` forward passes, for token `position`.
    Running {
        position: usize,
        done: usize,
        total: usize,
    },
    Done(Box<TokenAttribution>),
}

/// The Playground view.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaygroundState {
    pub model: ModelStatus,
    pub prompt: String,
    /// The settings as typed; checked when the prompt is sent.
    pub max_tokens: String,
    pub temperature: String,
    pub seed: String,
    pub alternatives: String,
    pub chat: bool,
    /// The field the keys type into; `None`: the keys are the view's and the global ones.
    pub editing: Option<Field>,
    pub completion: Option<Completion>,
    /// The completion's token being inspected.
    pub selected: Option<usize>,
    pub explanation: Option<Explanation>,
}

impl Default for PlaygroundState {
    fn default() -> Self {
        PlaygroundState {
            model: ModelStatus::None,
            prompt: String::new(),
            max_tokens: "64".into(),
            temperature: "0".into(),
            seed: "0".into(),
            alternatives: "5".into(),
            chat: false,
            editing: None,
            completion: None,
            selected: None,
            explanation: None,
        }
    }
}

const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Open]).hint("prompt").about(
        "Playground: edit the prompt (Enter sends · ctrl-j or alt-enter: new line · Tab: the settings · Esc: done)",
    ),
    Binding::new(&[Action::Left, Action::Right])
        .hint("token")
        .about("Playground: inspect the previous / next token: its probability and the alternatives"),
    Binding::new(&[Action::Evaluate])
        .hint("explain")
        .about("Playground: explain the inspected token over the prompt (occlusion; no gradients: quantised)"),
    Binding::new(&[Action::StopRun]).hint("stop").about("Playground: stop the generation or the explanation"),
    Binding::new(&[Action::CloneRun]).hint("chat").about("Playground: chat mode on/off (the chat template)"),
    Binding::new(&[Action::NextTab])
        .about("Playground: edit the settings: max tokens, temperature, seed, alternatives"),
    Binding::new(&[Action::LoadLanguageModel]).commands(&["llm"]),
];

/// The footer while a field is edited.
const EDITING_HINTS: &[(&str, &str)] =
    &[("enter", "send"), ("ctrl-j", "new line"), ("tab", "next field"), ("esc", "done")];

impl PlaygroundState {
    /// The footer's hints while editing (keys the capture reads, not the keymap's).
    pub fn editing_hints(&self) -> Option<&'static [(&'static str, &'static str)]> {
        self.editing.map(|_| EDITING_HINTS)
    }

    /// Whether a generation or an explanation is under way.
    pub fn busy(&self) -> bool {
        self.completion.as_ref().is_some_and(|c| c.running)
            || matches!(self.explanation, Some(Explanation::Running { .. }))
    }

    fn field_mut(&mut self, f: Field) -> &mut String {
        match f {
            Field::Prompt => &mut self.prompt,
            Field::MaxTokens => &mut self.max_tokens,
            Field::Temperature => &mut self.temperature,
            Field::Seed => &mut self.seed,
            Field::Alternatives => &mut self.alternatives,
        }
    }

    /// The sampling parameters the settings say, or what is wrong with one (named).
    pub fn params(&self) -> Result<SamplingParams, String> {
        let context = match &self.model {
            ModelStatus::Ready(info) => info.context_length,
            _ => usize::MAX,
        };
        let max_tokens: usize =
            self.max_tokens.trim().parse().ok().filter(|n| (1..context).contains(n)).ok_or_else(|| {
                format!(
                    "max tokens: expected a whole number from 1 to {}, got {:?}",
                    context.min(1 << 20) - 1,
                    self.max_tokens
                )
            })?;
        let temperature: f64 =
            self.temperature.trim().parse().ok().filter(|t: &f64| t.is_finite() && *t >= 0.0).ok_or_else(
                || format!("temperature: expected a number ≥ 0 (0 is greedy), got {:?}", self.temperature),
            )?;
        let seed: u64 = self
            .seed
            .trim()
            .parse()
            .map_err(|_| format!("seed: expected a whole number ≥ 0, got {:?}", self.seed))?;
        let top_logprobs: usize =
            self.alternatives.trim().parse().ok().filter(|n| *n <= MAX_ALTERNATIVES).ok_or_else(|| {
                format!(
                    "alternatives: expected a whole number from 0 to {MAX_ALTERNATIVES}, got {:?}",
                    self.alternatives
                )
            })?;
        Ok(SamplingParams { max_tokens, temperature, seed, top_logprobs, ..SamplingParams::default() })
    }

    /// Takes one of the engine's events; returns a message for the status line.
    pub fn apply(&mut self, e: LlmEvent) -> Option<(Level, String)> {
        match e {
            LlmEvent::Loading(path) => {
                let text = format!("loading {}…", path.display());
                self.model = ModelStatus::Loading(path);
                return Some((Level::Info, text));
            }
            LlmEvent::Loaded(info) => {
                let text = match &info.chat_template {
                    Some(t) => format!("loaded {} ({}, chat template {t})", info.name, info.architecture),
                    None => format!("loaded {} ({}, no chat template)", info.name, info.architecture),
                };
                self.model = ModelStatus::Ready(info);
                return Some((Level::Info, text));
            }
            LlmEvent::LoadFailed(err) => {
                self.model = ModelStatus::Failed(err.clone());
                return Some((Level::Error, err));
            }
            LlmEvent::Started { prompt } => {
                if let Some(c) = self.completion.as_mut() {
                    c.prompt = prompt;
                }
            }
            LlmEvent::Token(t) => {
                if let Some(c) = self.completion.as_mut().filter(|c| c.running) {
                    c.tokens.push(t);
                }
            }
            LlmEvent::Finished(figures) => {
                if let Some(c) = self.completion.as_mut() {
                    c.running = false;
                    let stopped = figures.reason.is_none();
                    c.figures = Some(figures);
                    if stopped {
                        return Some((Level::Warn, "generation stopped".into()));
                    }
                }
            }
            LlmEvent::Failed(err) => {
                // The failure belongs to what was under way: an explanation, else the completion.
                if matches!(self.explanation, Some(Explanation::Running { .. })) {
                    self.explanation = None;
                } else if let Some(c) = self.completion.as_mut() {
                    c.running = false;
                    c.error = Some(err.clone());
                }
                return Some((Level::Error, err));
            }
            LlmEvent::Explaining { done, total } => {
                if let Some(Explanation::Running { done: d, total: t, .. }) = self.explanation.as_mut() {
                    (*d, *t) = (done, total);
                }
            }
            LlmEvent::Explained(a) => {
                let text = format!(
                    "explained token {} ({} forward passes, {:.0} ms)",
                    a.position, a.forward_passes, a.millis
                );
                self.explanation = Some(Explanation::Done(a));
                return Some((Level::Info, text));
            }
            LlmEvent::ExplainStopped => {
                self.explanation = None;
                return Some((Level::Warn, "explanation stopped".into()));
            }
        }
        None
    }

    /// Sends the prompt with the settings.
    fn send(&mut self, app: &mut App) -> Vec<Effect> {
        let refuse = |app: &mut App, text: String| {
            app.say(Level::Error, text);
            vec![]
        };
        match &self.model {
            ModelStatus::Ready(_) => {}
            ModelStatus::Loading(p) => return refuse(app, format!("{} is still loading", p.display())),
            _ => {
                return refuse(
                    app,
                    "no model is loaded: :llm PATH.gguf loads one (or vigil --llm PATH)".into(),
                );
            }
        }
        if self.busy() {
            let x = app.keymap.hint(Action::StopRun);
            return refuse(app, format!("a generation or explanation is under way: Esc, then {x} stops it"));
        }
        if self.prompt.trim().is_empty() {
            return refuse(app, "the prompt is empty: type one first".into());
        }
        let params = match self.params() {
            Ok(p) => p,
            Err(e) => return refuse(app, e),
        };
        self.editing = None;
        self.selected = None;
        self.explanation = None;
        self.completion =
            Some(Completion { running: true, alternatives: params.top_logprobs, ..Completion::default() });
        let request = GenerateRequest { prompt: self.prompt.clone(), chat: self.chat, params };
        vec![Effect::Llm(LlmCommand::Generate(Box::new(request)))]
    }

    /// Moves the inspected token.
    fn select(&mut self, forward: bool) {
        let n = self.completion.as_ref().map_or(0, |c| c.tokens.len());
        if n == 0 {
            return;
        }
        self.selected = Some(match (self.selected, forward) {
            (None, true) => 0,
            (None, false) => n - 1,
            (Some(i), true) => (i + 1).min(n - 1),
            (Some(i), false) => i.saturating_sub(1),
        });
    }

    /// The explanation shown for the inspected token, if it is the one explained.
    pub fn attribution(&self) -> Option<&TokenAttribution> {
        match &self.explanation {
            Some(Explanation::Done(a)) if Some(a.position) == self.selected => Some(a),
            _ => None,
        }
    }
}

impl ViewState for PlaygroundState {
    fn title(&self) -> &'static str {
        "Playground"
    }
    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }
    fn handle(&mut self, action: Action, app: &mut App) -> Option<Vec<Effect>> {
        match action {
            Action::Open => self.editing = Some(Field::Prompt),
            Action::NextTab => self.editing = Some(Field::MaxTokens),
            Action::Left | Action::Right => self.select(action == Action::Right),
            Action::CloneRun => {
                self.chat = !self.chat;
                let text = if self.chat {
                    "chat mode: the prompt is sent as a user message in the model's chat template"
                } else {
                    "completion mode: the prompt is sent as it is"
                };
                app.say(Level::Info, text);
            }
            Action::StopRun => {
                if !self.busy() {
                    app.say(Level::Info, "nothing to stop");
                    return Some(vec![]);
                }
                return Some(vec![Effect::Llm(LlmCommand::Stop)]);
            }
            Action::Evaluate => return Some(self.explain(app)),
            _ => return None,
        }
        Some(vec![])
    }
}

impl PlaygroundState {
    fn explain(&mut self, app: &mut App) -> Vec<Effect> {
        let (Some(c), Some(position)) = (&self.completion, self.selected) else {
            let keys = format!("{}{}", app.keymap.hint(Action::Left), app.keymap.hint(Action::Right));
            app.say(Level::Warn, format!("pick a token of the completion first ({keys})"));
            return vec![];
        };
        if self.busy() {
            app.say(Level::Warn, "wait for the generation to end (or stop it) before explaining a token");
            return vec![];
        }
        let generated: Vec<u32> = c.tokens.iter().map(|t| t.id).collect();
        let prompt = c.prompt.clone();
        self.explanation = Some(Explanation::Running { position, done: 0, total: prompt.len() });
        vec![Effect::Llm(LlmCommand::Explain { prompt, generated, position })]
    }
}

/// Keys while a field of the Playground is edited, before the keymap sees them; `None` lets the
/// key go on as usual (Ctrl-C still quits).
pub fn capture(app: &mut App, k: &KeyEvent) -> Option<Vec<Effect>> {
    let field = app.playground.editing.filter(|_| app.view == View::Playground)?;
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let alt = k.modifiers.contains(KeyModifiers::ALT);
    let s = &mut app.playground;
    let step = |forward: bool| {
        let i = Field::ALL.iter().position(|f| *f == field).unwrap_or(0);
        let n = Field::ALL.len();
        Field::ALL[if forward { (i + 1) % n } else { (i + n - 1) % n }]
    };
    match k.code {
        KeyCode::Char('c') if ctrl => return None,
        KeyCode::Esc => s.editing = None,
        // A new line in the prompt: alt-enter, or ctrl-j (what a terminal sends for a line feed).
        KeyCode::Enter if alt && field == Field::Prompt => s.prompt.push('\n'),
        KeyCode::Char('j') if ctrl && field == Field::Prompt => s.prompt.push('\n'),
        KeyCode::Enter => {
            let mut state = std::mem::take(&mut app.playground);
            let effects = state.send(app);
            app.playground = state;
            return Some(effects);
        }
        KeyCode::Tab => s.editing = Some(step(true)),
        KeyCode::BackTab => s.editing = Some(step(false)),
        KeyCode::Backspace => {
            s.field_mut(field).pop();
        }
        KeyCode::Char(c) if !ctrl => s.field_mut(field).push(c),
        _ => {}
    }
    Some(vec![])
}

/// `:llm PATH [TEMPLATE]`: loads a model and shows the Playground. A last word that names a
/// chat template (gemma, llama3, chatml, none, or a .ron file) is the `--chat-template`.
pub fn load(app: &mut App, arg: &str) -> Vec<Effect> {
    let arg = arg.trim();
    if arg.is_empty() {
        app.say(
            Level::Error,
            "llm takes the model's path: :llm PATH.gguf [gemma|llama3|chatml|none|FILE.ron]",
        );
        return vec![];
    }
    let (path, chat_template) = match arg.rsplit_once(char::is_whitespace) {
        Some((path, last))
            if last.ends_with(".ron")
                || ["gemma", "llama3", "chatml", "none"].contains(&last.to_ascii_lowercase().as_str()) =>
        {
            (path.trim_end(), Some(last.to_string()))
        }
        _ => (arg, None),
    };
    app.show(View::Playground);
    vec![Effect::Llm(LlmCommand::Load { path: path.into(), chat_template })]
}
