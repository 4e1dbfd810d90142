//! The language-model side of the service (`vigil serve --llm`): the loaded model and its
//! scheduler, the service-wide limits, the extraction watches per key, and what turns generated
//! tokens into what a caller sees ([`Shaper`]: the sensitive-data screen and the logprob policy).
//!
//! - [`scheduler`]: generation off the async runtime, round-robin, cancelled when the caller goes.
//! - [`openai`]: the OpenAI request and response shapes.
//! - [`screen`]: the sensitive-data screen; [`extraction`]: the distillation watch.
//! - [`load`]: the chat load check (`vigil traffic --profile chat`).
//!
//! The HTTP handlers are in `serve::router::generate`, behind the same gate (keys, scopes,
//! request rate, access log) as every other route. Nothing here knows the model's internals: it
//! sees a [`LanguageModel`] only.

pub mod extraction;
pub mod load;
pub mod openai;
pub mod scheduler;
pub mod screen;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::llm::{GeneratedToken, LanguageModel, ModelInfo};
use crate::serve::metrics::Metrics;
use extraction::{TextWatch, WatchConfig};
use openai::TokenOut;
use scheduler::Scheduler;
use screen::{Redactor, ScreenMode};

/// What `vigil serve --llm` is told.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// The model file (`crate::llm::load` reads it).
    pub path: PathBuf,
    /// The name clients use (default: the model's own).
    pub name: Option<String>,
    /// Longest prompt in tokens (400 beyond).
    pub max_prompt_tokens: usize,
    /// Most tokens one completion may ask for (400 beyond; the default when a request does not
    /// say).
    pub max_tokens: usize,
    /// Scheduler threads.
    pub workers: usize,
    pub screen: ScreenMode,
    /// Longest a request that is not streamed may take (503 beyond; the generation stops).
    pub timeout: Duration,
    pub watch: WatchConfig,
    /// The chat template in place of the model file's own (`--chat-template`).
    pub chat_template: Option<crate::llm::gguf::ChatTemplate>,
}

impl LlmConfig {
    /// Defaults: prompts up to 2,048 tokens, completions up to 512, one scheduler thread, the
    /// screen flagging, two minutes per unstreamed request.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LlmConfig {
            path: path.into(),
            name: None,
            max_prompt_tokens: 2048,
            max_tokens: 512,
            workers: 1,
            screen: ScreenMode::Flag,
            timeout: Duration::from_secs(120),
            watch: WatchConfig::default(),
            chat_template: None,
        }
    }
}

/// One key's extraction watch, with when a throttled key was last answered.
pub struct KeyWatch {
    pub watch: TextWatch,
    pub last_answered: Option<Instant>,
}

/// A served language model.
pub struct LlmService {
    pub model: Arc<dyn LanguageModel>,
    pub info: ModelInfo,
    pub scheduler: Scheduler,
    pub config: LlmConfig,
    watches: Mutex<HashMap<String, Arc<Mutex<KeyWatch>>>>,
}

impl LlmService {
    /// Loads the model and starts the scheduler.
    pub fn start(config: LlmConfig, metrics: &Metrics) -> Result<Self> {
        let model = crate::llm::load_with(&config.path, config.chat_template.clone())?;
        let mut info = model.info();
        if let Some(name) = &config.name {
            info.name = name.clone();
        }
        let scheduler = Scheduler::start(model.clone(), config.workers, metrics)?;
        Ok(LlmService { model, info, scheduler, config, watches: Mutex::new(HashMap::new()) })
    }

    /// The extraction watch of a key.
    pub fn watch(&self, key: &str) -> Arc<Mutex<KeyWatch>> {
        let mut all = self.watches.lock().expect("the watch map lock is never poisoned");
        all.entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(KeyWatch {
                    watch: TextWatch::new(self.config.watch),
                    last_answered: None,
                }))
            })
            .clone()
    }
}

/// What the caller is sent next: a piece of text and the tokens it came from (with their
/// logprobs, when the caller may see them).
#[derive(Debug, Default, PartialEq)]
pub struct Piece {
    pub text: String,
    pub tokens: Vec<TokenOut>,
}

impl Piece {
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.tokens.is_empty()
    }
}

/// Turns generated tokens into what the caller sees. Without redaction every token goes out as
/// it comes. With it, text waits in a [`Redactor`] until its word is complete, and each token
/// waits until all of its text has been screened; a token whose text was (partly) redacted is
/// sent as `[REDACTED]` with no alternatives, so logprobs do not leak what the text hid.
pub struct Shaper {
    mode: ScreenMode,
    /// Alternatives per token to report (`None`: no logprobs).
    logprobs: Option<usize>,
    redactor: Redactor,
    /// The completion as generated (before redaction).
    pub raw: String,
    /// Bytes of `raw` the redactor has released.
    released: usize,
    /// Tokens not yet sent, with the end of their text in `raw`.
    waiting: Vec<(TokenOut, usize, usize)>,
}

impl Shaper {
    pub fn new(mode: ScreenMode, logprobs: Option<usize>) -> Self {
        Shaper {
            mode,
            logprobs,
            redactor: Redactor::default(),
            raw: String::new(),
            released: 0,
            waiting: Vec::new(),
        }
    }

    fn token_out(&self, t: &GeneratedToken) -> TokenOut {
        let k = self.logprobs.unwrap_or(0);
        TokenOut {
            token: t.text.clone(),
            logprob: t.logprob,
            top: t.top_logprobs.iter().take(k).map(|a| (a.token.clone(), a.logprob)).collect(),
        }
    }

    /// Takes the next token.
    pub fn push(&mut self, t: &GeneratedToken) -> Piece {
        let start = self.raw.len();
        self.raw.push_str(&t.text);
        let out = self.token_out(t);
        if self.mode != ScreenMode::Redact {
            let tokens = if self.logprobs.is_some() { vec![out] } else { Vec::new() };
            return Piece { text: t.text.clone(), tokens };
        }
        self.waiting.push((out, start, self.raw.len()));
        let text = self.redactor.push(&t.text);
        self.release(text)
    }

    /// The completion is over: everything still held.
    pub fn finish(&mut self) -> Piece {
        if self.mode != ScreenMode::Redact {
            return Piece::default();
        }
        let text = self.redactor.finish();
        self.release(text)
    }

    /// Sends `text` (the redactor released it) with every token now wholly screened.
    fn release(&mut self, text: String) -> Piece {
        let from = self.released;
        self.released = self.raw.len() - self.redactor.held_len();
        let hidden = screen::ranges(&self.raw[from..self.released]);
        let upto = self.waiting.iter().take_while(|(_, _, end)| *end <= self.released).count();
        let mut tokens = Vec::new();
        for (mut out, start, end) in self.waiting.drain(..upto) {
            let covered = hidden.iter().any(|r| start < from + r.end && from + r.start < end);
            if covered {
                out = TokenOut { token: "[REDACTED]".into(), logprob: out.logprob, top: Vec::new() };
            }
            tokens.push(out);
        }
        if self.logprobs.is_none() {
            tokens.clear();
        }
        Piece { text, tokens }
    }

    /// Kinds of sensitive data in the completion, and whether they were redacted.
    pub fn screened(&self) -> (Vec<String>, bool) {
        match self.mode {
            ScreenMode::Off => (Vec::new(), false),
            ScreenMode::Flag => (screen::find(&self.raw), false),
            ScreenMode::Redact => (self.redactor.found.clone(), !self.redactor.found.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::TokenLogprob;

    fn token(text: &str) -> GeneratedToken {
        GeneratedToken {
            id: 5,
            text: text.into(),
            logprob: -0.5,
            top_logprobs: vec![TokenLogprob { token: text.into(), logprob: -0.5 }],
        }
    }

    fn run(mode: ScreenMode, logprobs: Option<usize>, text: &str) -> (String, Vec<TokenOut>, Vec<String>) {
        let mut s = Shaper::new(mode, logprobs);
        let (mut out, mut tokens) = (String::new(), Vec::new());
        for c in text.chars() {
            let p = s.push(&token(&c.to_string()));
            out.push_str(&p.text);
            tokens.extend(p.tokens);
        }
        let p = s.finish();
        out.push_str(&p.text);
        tokens.extend(p.tokens);
        (out, tokens, s.screened().0)
    }

    #[test]
    fn redaction_hides_the_text_and_its_tokens_and_keeps_the_rest() {
        let text = "mail ops@example.com now";
        let (out, tokens, found) = run(ScreenMode::Redact, Some(1), text);
        assert_eq!(out, "mail [REDACTED:email] now");
        assert_eq!(found, vec!["email"]);
        assert_eq!(tokens.len(), text.len(), "one logprob entry per token, none lost");
        let shown: String = tokens.iter().map(|t| t.token.as_str()).filter(|t| *t != "[REDACTED]").collect();
        assert_eq!(shown, "mail  now");
        assert!(tokens.iter().all(|t| t.token != "@"), "no token of the address is shown");
    }

    #[test]
    fn flagging_sends_everything_and_reports_what_it_saw() {
        let (out, tokens, found) = run(ScreenMode::Flag, None, "mail ops@example.com now");
        assert_eq!(out, "mail ops@example.com now");
        assert!(tokens.is_empty(), "no logprobs unless asked");
        assert_eq!(found, vec!["email"]);
        let (_, _, found) = run(ScreenMode::Off, None, "mail ops@example.com now");
        assert!(found.is_empty());
    }
}
