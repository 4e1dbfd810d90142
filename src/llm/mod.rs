//! Generative language models: a GGUF model loaded with candle-transformers' quantised
//! architectures, its tokenizer and chat template, and token-by-token generation with sampling.
//! The service (`vigil serve --llm`) and the console's Playground see a model only through the
//! [`LanguageModel`] trait in [`backend`], so the HTTP side and the engine side are built and
//! tested on their own; [`scripted`] is the stand-in their tests drive.

pub mod attribution;
pub mod backend;
pub mod bench;
pub mod gguf;
pub mod scripted;
pub mod tiny;

use std::path::Path;
use std::sync::Arc;

pub use backend::{
    ChatMessage, FinishReason, GeneratedToken, Generation, LanguageModel, ModelInfo, SamplingParams, Scanned,
    Step, StopScanner, TensorType, TokenLogprob,
};

use crate::error::{Error, Result};

/// Loads the language model in `path` (a GGUF file). A missing or malformed file is
/// `Error::Data` naming it (exit 2).
///
/// `scripted:` (optionally `scripted:delay_ms=20,prompt_delay_us=50,eos_after=40,context=512`)
/// loads the [`scripted`] stand-in instead. It is for tests and for trying the service and the
/// console without a model file; it is not listed in `--help`, since it is no model.
pub fn load(path: &Path) -> Result<Arc<dyn LanguageModel>> {
    load_with(path, None)
}

/// [`load`], with `chat_template` (the operator's `--chat-template`, read by
/// [`gguf::ChatTemplate::parse`]) in place of the chat template the model's file names.
pub fn load_with(path: &Path, chat_template: Option<gguf::ChatTemplate>) -> Result<Arc<dyn LanguageModel>> {
    if let Some(options) = path.to_str().and_then(|p| p.strip_prefix("scripted:")) {
        let mut model = scripted_from(options)?;
        model.chat_template = chat_template;
        return Ok(Arc::new(model));
    }
    Ok(Arc::new(gguf::GgufModel::load_with(path, chat_template)?))
}

/// Reads the `key=value` options of a `scripted:` path.
fn scripted_from(options: &str) -> Result<scripted::ScriptedModel> {
    let mut model = scripted::ScriptedModel::default();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        let number: u64 = value.parse().map_err(|_| {
            Error::argument(format!("scripted model option {option:?}: expected {key}=<whole number>"))
        })?;
        match key {
            "delay_ms" => model.step_delay = std::time::Duration::from_millis(number),
            "prompt_delay_us" => model.prompt_delay_per_token = std::time::Duration::from_micros(number),
            "eos_after" => model.eos_after = Some(number as usize),
            "context" => model.context_length = number as usize,
            _ => {
                return Err(Error::argument(format!(
                    "scripted model option {key:?}: expected delay_ms, prompt_delay_us, eos_after or context"
                )));
            }
        }
    }
    Ok(model)
}
