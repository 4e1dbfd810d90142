//! The seam between a language model and whatever drives it (the OpenAI-compatible routes, the
//! console's Playground, `vigil generate`). Plain data in, plain data out; no HTTP and no UI.
//!
//! A [`Generation`] is one sequence being decoded. Its `step` is CPU-bound and blocking: the
//! caller runs it off the async runtime and interleaves several generations fairly (or batches
//! them, where the model supports it). Bad model files are `Error::Data` naming the file (exit
//! 2); a prompt that cannot be used is `Error::Input` (exit 2); a tensor failure is
//! `Error::Tensor` (exit 1).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One message of a chat, as the OpenAI chat-completions API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// How to pick each next token, and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Generation ends with [`FinishReason::Length`] after this many tokens.
    pub max_tokens: usize,
    /// 0 is greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (1.0 keeps them all).
    pub top_p: f64,
    /// Seeds the sampler, so the same request gives the same completion.
    pub seed: u64,
    /// Generation ends with [`FinishReason::Stop`] when the completion text contains one of
    /// these; the stop string itself is not returned.
    pub stop: Vec<String>,
    /// How many alternatives to report with each token, with their log-probabilities
    /// (0: none). The service decides per key whether a caller may ask for them.
    pub top_logprobs: usize,
}

impl SamplingParams {
    /// Refuses parameters no model can sample with (exit 2). Every model's `start` calls it, so
    /// the stand-in refuses what the real engine refuses.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(crate::error::Error::argument(format!(
                "temperature {} must be a number >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(crate::error::Error::argument(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            top_logprobs: 0,
        }
    }
}

/// An alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
}

/// One decoded token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedToken {
    /// The token's id in the vocabulary.
    pub id: u32,
    /// The text this token adds to the completion. Empty while a multi-byte character is still
    /// incomplete; the next token's text then carries the whole character.
    pub text: String,
    /// Natural-log probability of this token under the (temperature-scaled) distribution.
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens at this position, best first.
    pub top_logprobs: Vec<TokenLogprob>,
}

/// Why a generation ended, with the OpenAI API's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token or the text met a stop string.
    Stop,
    /// `max_tokens` was reached, or the model's context is full.
    Length,
}

/// What one call to [`Generation::step`] produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Token(GeneratedToken),
    /// The generation is over; further calls return `Finished` again.
    Finished(FinishReason),
}

/// One tensor type a model file holds: how many tensors are stored in it and their bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorType {
    /// ggml's name of the type (`Q4K`, `Q6K`, `Q8_0`, `F32`, ...).
    pub ggml_type: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// What a loaded model is, for `/v1/models`, the console and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name clients use in the `model` field (the file's stem unless configured).
    pub name: String,
    /// The GGUF `general.architecture` (`gemma3`, `llama`, `qwen2`, ...).
    pub architecture: String,
    pub parameters: u64,
    pub file_bytes: u64,
    /// Longest prompt plus completion, in tokens.
    pub context_length: usize,
    pub vocab_size: usize,
    /// Tensor types in the file, the most bytes first.
    pub quantisations: Vec<TensorType>,
    /// The quantisation the file says it was made with (`general.file_type`: `Q4_K_M`,
    /// `Q8_0`, ...), when it says.
    #[serde(default)]
    pub file_type: Option<String>,
    /// The chat template prompts are formatted with (`gemma`, `llama3`, `chatml`, `none`,
    /// `file`), when the model has one.
    #[serde(default)]
    pub chat_template: Option<String>,
}

/// A loaded language model that can start generations. Shared between requests.
pub trait LanguageModel: Send + Sync + 'static {
    fn info(&self) -> ModelInfo;
    /// The token ids of `text`, as the model's own tokenizer splits it (no special tokens added).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The text of `ids` (special tokens skipped).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// The prompt text for a chat, with the model's chat template applied, ending where the
    /// assistant's answer begins.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String>;
    /// Start decoding after `prompt` (token ids, beginning-of-sequence included where the model
    /// wants one). Processes the prompt before it returns: the caller times this as the first
    /// part of time-to-first-token. Fails with `Error::Input` when the prompt does not fit the
    /// context.
    fn start(&self, prompt: &[u32], params: &SamplingParams) -> Result<Box<dyn Generation>>;
    /// The tokens a completion prompt starts with (the beginning-of-sequence token, if any).
    fn prompt_prefix(&self) -> Vec<u32>;
    /// The ids the model reads for a prompt's text: [`prompt_prefix`](Self::prompt_prefix)
    /// first, then the text's tokens. Every prompt is built through this (the CLI, the
    /// console's engine, the service), so the prefix rule is written once.
    fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok([self.prompt_prefix(), self.encode(text)?].concat())
    }
    /// The ids for `text` sent as one user message with the chat template when `chat`, or as
    /// plain text otherwise (`vigil generate`, `vigil explain-token`, the Playground).
    fn user_prompt_ids(&self, text: &str, chat: bool) -> Result<Vec<u32>> {
        if chat {
            self.prompt_ids(&self.chat_prompt(&[ChatMessage { role: "user".into(), content: text.into() }])?)
        } else {
            self.prompt_ids(text)
        }
    }

    /// The natural-log probability the model gives token `next` right after `context` (the
    /// model's own distribution: greedy settings, no temperature). What occlusion attribution
    /// ([`super::attribution`]) reads once per prompt token.
    ///
    /// The default needs nothing but [`LanguageModel::start`]: one step asking for every
    /// token's log-probability (`top_logprobs` = the vocabulary), then `next` is found by id
    /// (the token taken) or by its text among the alternatives. A model that can read its
    /// logits directly should override it (one forward pass, no sort of the vocabulary). It
    /// fails when the model would end the sequence there (no token is stepped, so there is no
    /// distribution to read), or when the alternatives do not list `next`.
    fn logprob_of(&self, context: &[u32], next: u32) -> Result<f32> {
        let params = SamplingParams {
            max_tokens: 1,
            top_logprobs: self.info().vocab_size.max(1),
            ..SamplingParams::default()
        };
        let mut generation = self.start(context, &params)?;
        let Step::Token(token) = generation.step()? else {
            return Err(Error::Internal(
                "the model ends the sequence here, so the log-probability of another token cannot be read \
                 through `start`; the model should implement `logprob_of`"
                    .into(),
            ));
        };
        if token.id == next {
            return Ok(token.logprob);
        }
        let text = self.decode(&[next])?;
        token.top_logprobs.iter().find(|alt| alt.token == text).map(|alt| alt.logprob).ok_or_else(|| {
            Error::Internal(format!(
                "token {next} ({text:?}) is not among the {} alternatives the model listed; the model \
                 should implement `logprob_of`",
                token.top_logprobs.len()
            ))
        })
    }
}

/// One sequence being decoded, with its own cache.
pub trait Generation: Send {
    /// Decode the next token. Blocking and CPU-bound.
    fn step(&mut self) -> Result<Step>;
    /// Tokens generated so far.
    fn generated(&self) -> usize;
}

/// What [`StopScanner::push`] decided about one token's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Text that is now safe to hand to the client: it cannot be part of a stop string.
    pub emit: String,
    /// A stop string was met; `emit` holds the text before it and generation ends.
    pub stopped: bool,
}

/// Applies the `stop` strings of [`SamplingParams`] to text that arrives a token at a time.
/// Text that could still turn into a stop string is held back until the next token says
/// whether it did, so a stop string is never streamed to the client, even in part. Every
/// [`Generation`] runs its text through one of these, so the rule is written once.
#[derive(Debug, Clone, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    held: String,
}

impl StopScanner {
    pub fn new(stops: &[String]) -> Self {
        StopScanner { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new() }
    }

    /// Takes the next token's text.
    pub fn push(&mut self, text: &str) -> Scanned {
        self.held.push_str(text);
        // The earliest stop string in what is held ends the completion there.
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return Scanned { emit, stopped: true };
        }
        // Hold back the longest tail of the text that is a prefix of some stop string.
        let mut keep = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let tail = &self.held[i..];
                if tail.len() > keep && stop.starts_with(tail) {
                    keep = tail.len();
                    break;
                }
            }
        }
        let split = self.held.len() - keep;
        let emit = self.held[..split].to_string();
        self.held.drain(..split);
        Scanned { emit, stopped: false }
    }

    /// The text held back when generation ends for another reason (length, end of sequence):
    /// it did not become a stop string, so it belongs to the completion.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The step a generation returns when it ends for `reason` (length, end of sequence): the
    /// held-back text as a last token (carrying `id`), after which the generation reports
    /// `Finished(reason)`; or the finish itself when nothing was held back.
    pub fn finish(&mut self, reason: FinishReason, id: u32) -> Step {
        let rest = self.flush();
        if rest.is_empty() {
            Step::Finished(reason)
        } else {
            Step::Token(GeneratedToken { id, text: rest, logprob: 0.0, top_logprobs: Vec::new() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut scanner = StopScanner::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            let scanned = scanner.push(piece);
            out.push_str(&scanned.emit);
            if scanned.stopped {
                return (out, true);
            }
        }
        out.push_str(&scanner.flush());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_over_tokens_is_never_emitted() {
        assert_eq!(run(&["\n\n"], &["Hello", "\n", "\n", "world"]), ("Hello".to_string(), true));
        assert_eq!(run(&["END"], &["ab", "cE", "N", "Dxyz"]), ("abc".to_string(), true));
    }

    #[test]
    fn a_false_start_is_released_and_nothing_is_lost() {
        assert_eq!(run(&["END"], &["E", "N", "x", "!"]), ("ENx!".to_string(), false));
        assert_eq!(run(&["END"], &["the E", "N"]), ("the EN".to_string(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["dog", "fox"], &["the fox and the dog"]), ("the ".to_string(), true));
    }

    #[test]
    fn multibyte_text_is_split_on_character_boundaries() {
        assert_eq!(run(&["éé"], &["aé", "éb"]), ("a".to_string(), true));
        assert_eq!(run(&["éx"], &["aé", "b"]), ("aéb".to_string(), false));
    }
}
