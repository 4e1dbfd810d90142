//! Generative language models: a GGUF model loaded with candle-transformers' quantised
//! architectures, its tokenizer and chat template, and token-by-token generation with sampling.
//! The service (`vigil serve --llm`) sees a model only through the [`LanguageModel`] trait in
//! [`backend`], so the HTTP side and the engine side are built and tested on their own.

pub mod backend;

pub use backend::{
    ChatMessage, FinishReason, GeneratedToken, Generation, LanguageModel, ModelInfo, SamplingParams, Step,
    TokenLogprob,
};
