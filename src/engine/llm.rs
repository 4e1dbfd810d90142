//! The language-model engine behind the console's Playground: it loads a model (`--llm PATH`,
//! `:llm PATH`), generates a completion token by token, and explains a generated token by
//! occlusion over the prompt ([`crate::llm::attribution`]). Everything runs on one named thread:
//! `Generation::step` is blocking CPU work and never touches the async runtime. Between two
//! steps (and two forward passes of an explanation) the thread looks at its commands, so a stop
//! takes effect within one token. It sends plain data only: each token with its text and
//! log-probability, the figures when a generation ends, errors as text.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::error::TryRecvError;

use super::{Commands, Handle, Sink};
use crate::error::Result;
use crate::llm::attribution::{TokenAttribution, explain_token};
use crate::llm::{FinishReason, GeneratedToken, LanguageModel, ModelInfo, SamplingParams, Step};

/// A prompt to complete.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    /// Wrap the prompt as one user message in the model's chat template.
    pub chat: bool,
    pub params: SamplingParams,
}

/// What the console asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmCommand {
    /// Load a model (a GGUF file; `scripted:` is the test stand-in), replacing the loaded one,
    /// with the chat template the operator chose (a `--chat-template` value) or the file's own.
    Load {
        path: PathBuf,
        chat_template: Option<String>,
    },
    Generate(Box<GenerateRequest>),
    /// Explain token `position` of `generated`, the completion of `prompt` (ids as the model
    /// read them).
    Explain {
        prompt: Vec<u32>,
        generated: Vec<u32>,
        position: usize,
    },
    /// Stop the generation or the explanation under way.
    Stop,
}

/// How a generation went, when it is over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationFigures {
    /// Why it ended; `None` when the user stopped it.
    pub reason: Option<FinishReason>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// From the request to the first token (prompt processing included), in milliseconds.
    pub ttft_ms: f64,
    /// Decode speed: tokens after the first per second after the first (the whole time when
    /// only one token came).
    pub tokens_per_s: f64,
    pub total_ms: f64,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Loading(PathBuf),
    Loaded(Box<ModelInfo>),
    /// The model could not be loaded: the message names the file.
    LoadFailed(String),
    /// The prompt was read; its ids, as the model reads them.
    Started {
        prompt: Vec<u32>,
    },
    Token(GeneratedToken),
    Finished(GenerationFigures),
    /// The generation or explanation failed (a prompt too long for the context, no model).
    Failed(String),
    /// An explanation is under way: `done` of `total` forward passes.
    Explaining {
        done: usize,
        total: usize,
    },
    Explained(Box<TokenAttribution>),
    /// The user stopped an explanation.
    ExplainStopped,
}

/// Starts the engine on its own thread.
pub fn spawn(sink: impl Sink<LlmEvent>) -> Result<Handle<LlmCommand>> {
    let (tx, rx) = super::channel();
    let join = super::thread("vigil-llm", "the language-model engine", move || run(rx, sink))?;
    Ok(Handle { commands: tx, join })
}

/// What became of a check of the commands between two steps.
enum Between {
    Go,
    /// Stop this work (a stop, or a command that replaces it: kept in `pending`).
    Stop,
    /// Nobody listens any more.
    Quit,
}

struct Engine<S> {
    sink: S,
    model: Option<Arc<dyn LanguageModel>>,
    commands: Commands<LlmCommand>,
    pending: VecDeque<LlmCommand>,
}

fn run(commands: Commands<LlmCommand>, sink: impl Sink<LlmEvent>) {
    let mut e = Engine { sink, model: None, commands, pending: VecDeque::new() };
    loop {
        let command = match e.pending.pop_front() {
            Some(c) => c,
            None => match e.commands.blocking_recv() {
                Some(c) => c,
                None => return,
            },
        };
        let listening = match command {
            LlmCommand::Load { path, chat_template } => e.load(path, chat_template.as_deref()),
            LlmCommand::Generate(request) => e.generate(&request),
            LlmCommand::Explain { prompt, generated, position } => e.explain(&prompt, &generated, position),
            // Nothing is under way.
            LlmCommand::Stop => true,
        };
        if !listening {
            return;
        }
    }
}

impl<S: Sink<LlmEvent>> Engine<S> {
    fn load(&mut self, path: PathBuf, chat_template: Option<&str>) -> bool {
        // The old model goes first: two models need not fit in memory at once, and a failed
        // load leaves none (as the Playground then says).
        self.model = None;
        if !(self.sink)(LlmEvent::Loading(path.clone())) {
            return false;
        }
        let loaded = chat_template
            .map(crate::llm::gguf::ChatTemplate::parse)
            .transpose()
            .and_then(|template| crate::llm::load_with(&path, template));
        match loaded {
            Ok(model) => {
                let info = model.info();
                self.model = Some(model);
                (self.sink)(LlmEvent::Loaded(Box::new(info)))
            }
            Err(err) => (self.sink)(LlmEvent::LoadFailed(err.to_string())),
        }
    }

    fn model(&mut self) -> Option<Arc<dyn LanguageModel>> {
        let m = self.model.clone();
        if m.is_none() {
            (self.sink)(LlmEvent::Failed("no model is loaded: :llm PATH.gguf loads one".into()));
        }
        m
    }

    fn generate(&mut self, request: &GenerateRequest) -> bool {
        let Some(model) = self.model() else { return true };
        let t0 = Instant::now();
        let prompt = match model.user_prompt_ids(&request.prompt, request.chat) {
            Ok(p) => p,
            Err(err) => return (self.sink)(LlmEvent::Failed(err.to_string())),
        };
        if !(self.sink)(LlmEvent::Started { prompt: prompt.clone() }) {
            return false;
        }
        let mut generation = match model.start(&prompt, &request.params) {
            Ok(g) => g,
            Err(err) => return (self.sink)(LlmEvent::Failed(err.to_string())),
        };
        let mut first: Option<Instant> = None;
        let mut tokens = 0usize;
        let reason = loop {
            match between(&mut self.commands, &mut self.pending) {
                Between::Go => {}
                Between::Stop => break None,
                Between::Quit => return false,
            }
            match generation.step() {
                Ok(Step::Token(token)) => {
                    first.get_or_insert_with(Instant::now);
                    tokens += 1;
                    if !(self.sink)(LlmEvent::Token(token)) {
                        return false;
                    }
                }
                Ok(Step::Finished(reason)) => break Some(reason),
                Err(err) => return (self.sink)(LlmEvent::Failed(err.to_string())),
            }
        };
        let end = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let total = end - t0;
        let ttft = first.map_or(total, |f| f - t0);
        let tokens_per_s = match first {
            Some(f) if tokens > 1 && end > f => (tokens - 1) as f64 / (end - f).as_secs_f64(),
            _ if tokens > 0 && !total.is_zero() => tokens as f64 / total.as_secs_f64(),
            _ => 0.0,
        };
        (self.sink)(LlmEvent::Finished(GenerationFigures {
            reason,
            prompt_tokens: prompt.len(),
            completion_tokens: tokens,
            ttft_ms: ms(ttft),
            tokens_per_s,
            total_ms: ms(total),
        }))
    }

    fn explain(&mut self, prompt: &[u32], generated: &[u32], position: usize) -> bool {
        let Some(model) = self.model() else { return true };
        let mut quit = false;
        let result = {
            let sink = &self.sink;
            let commands = &mut self.commands;
            let pending = &mut self.pending;
            let mut progress = |done: usize, total: usize| {
                if !sink(LlmEvent::Explaining { done, total }) {
                    quit = true;
                    return false;
                }
                match between(commands, pending) {
                    Between::Go => true,
                    Between::Stop => false,
                    Between::Quit => {
                        quit = true;
                        false
                    }
                }
            };
            explain_token(model.as_ref(), prompt, generated, position, &mut progress)
        };
        if quit {
            return false;
        }
        match result {
            Ok(Some(a)) => (self.sink)(LlmEvent::Explained(Box::new(a))),
            Ok(None) => (self.sink)(LlmEvent::ExplainStopped),
            Err(err) => (self.sink)(LlmEvent::Failed(err.to_string())),
        }
    }
}

/// Looks at the commands that came in during a generation or an explanation.
fn between(commands: &mut Commands<LlmCommand>, pending: &mut VecDeque<LlmCommand>) -> Between {
    match commands.try_recv() {
        Ok(LlmCommand::Stop) => Between::Stop,
        // A new task replaces this one: stop here, do it next.
        Ok(other) => {
            pending.push_back(other);
            Between::Stop
        }
        Err(TryRecvError::Empty) => Between::Go,
        Err(TryRecvError::Disconnected) => Between::Quit,
    }
}
