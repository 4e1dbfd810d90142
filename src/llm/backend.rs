//! The seam between a language model and whatever drives it (the OpenAI-compatible routes, the
//! console's Playground, `vigil generate`). Plain data in, plain data out; no HTTP and no UI.
//!
//! A [`Generation`] is one sequence being decoded. Its `step` is CPU-bound and blocking: the
//! caller runs it off the async runtime and interleaves several generations fairly (or batches
//! them, where the model supports it). Bad model files are `Error::Data` naming the file (exit
//! 2); a prompt that cannot be used is `Error::Input` (exit 2); a tensor failure is
//! `Error::Tensor` (exit 1).

use serde::{Deserialize, Serialize};

use crate::error::Result;

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

/// What a loaded model is, for `/v1/models`, the console and the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Tensor types in the file and the bytes each holds (`Q4K`, `Q6K`, `F32`, ...).
    pub quantisations: Vec<(String, u64)>,
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
}

/// One sequence being decoded, with its own cache.
pub trait Generation: Send {
    /// Decode the next token. Blocking and CPU-bound.
    fn step(&mut self) -> Result<Step>;
    /// Tokens generated so far.
    fn generated(&self) -> usize;
}
