//! A scripted language model: a stand-in with the real model's contract and none of its
//! weights, so the service, the console and their tests can drive generations quickly and
//! deterministically. Its vocabulary is the 256 bytes plus `<bos>` and `<eos>`; it "writes" a
//! fixed text from an offset the seed picks (greedy requests always start at the beginning), one
//! byte a token, with made-up probabilities, and can be slowed down per token so concurrency,
//! fairness and cancellation can be observed. It is never offered to users as a model.

use std::time::Duration;

use super::backend::{
    ChatMessage, FinishReason, GeneratedToken, Generation, LanguageModel, ModelInfo, SamplingParams, Step,
    StopScanner, TokenLogprob,
};
use super::gguf::ChatTemplate;
use crate::error::{Error, Result};

/// The end-of-sequence token.
pub const EOS: u32 = 0;
/// The beginning-of-sequence token.
pub const BOS: u32 = 1;
const BYTE_BASE: u32 = 2;

/// The text every generation writes (from a seeded offset when sampling).
pub const SCRIPT: &str = "The quick brown fox jumps over the lazy dog. Write to ops@example.com \
for access. ";

/// How the scripted model behaves.
#[derive(Debug, Clone)]
pub struct ScriptedModel {
    pub name: String,
    /// Longest prompt plus completion, in tokens (bytes).
    pub context_length: usize,
    /// Time each `step` sleeps before it answers, standing in for a forward pass.
    pub step_delay: Duration,
    /// Time `start` sleeps per prompt token, standing in for prompt processing.
    pub prompt_delay_per_token: Duration,
    /// End the sequence with `<eos>` after this many tokens (None: only `max_tokens` ends it).
    pub eos_after: Option<usize>,
    /// The chat template chosen by the operator; without one, chats are written
    /// `<role>text` a line each.
    pub chat_template: Option<ChatTemplate>,
}

impl Default for ScriptedModel {
    fn default() -> Self {
        ScriptedModel {
            name: "scripted".into(),
            context_length: 4096,
            step_delay: Duration::ZERO,
            prompt_delay_per_token: Duration::ZERO,
            eos_after: None,
            chat_template: None,
        }
    }
}

impl LanguageModel for ScriptedModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.clone(),
            architecture: "scripted".into(),
            parameters: 0,
            file_bytes: 0,
            context_length: self.context_length,
            vocab_size: 256 + BYTE_BASE as usize,
            quantisations: Vec::new(),
            chat_template: Some(
                self.chat_template.as_ref().map_or("scripted".into(), ChatTemplate::describe),
            ),
            ..ModelInfo::default()
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(|b| b as u32 + BYTE_BASE).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> =
            ids.iter().filter(|&&id| id >= BYTE_BASE).map(|&id| (id - BYTE_BASE) as u8).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        if let Some(template) = &self.chat_template {
            return template.format(messages);
        }
        let mut prompt = String::new();
        for message in messages {
            if !matches!(message.role.as_str(), "system" | "user" | "assistant") {
                return Err(Error::argument(format!(
                    "messages: role {:?} is not one of system, user, assistant",
                    message.role
                )));
            }
            prompt.push_str(&format!("<{}>{}\n", message.role, message.content));
        }
        prompt.push_str("<assistant>");
        Ok(prompt)
    }

    fn start(&self, prompt: &[u32], params: &SamplingParams) -> Result<Box<dyn Generation>> {
        params.check()?;
        if prompt.len() >= self.context_length {
            return Err(Error::argument(format!(
                "the prompt is {} tokens and the model's context holds {}",
                prompt.len(),
                self.context_length
            )));
        }
        std::thread::sleep(self.prompt_delay_per_token * prompt.len() as u32);
        let offset = if params.temperature == 0.0 { 0 } else { (params.seed as usize) % SCRIPT.len() };
        Ok(Box::new(ScriptedGeneration {
            offset,
            done: 0,
            room: self.context_length - prompt.len(),
            params: params.clone(),
            stops: StopScanner::new(&params.stop),
            delay: self.step_delay,
            eos_after: self.eos_after,
            finished: None,
        }))
    }

    fn prompt_prefix(&self) -> Vec<u32> {
        vec![BOS]
    }

    /// The fixed probability of a byte (the script's distribution ignores the context);
    /// `<bos>` and `<eos>` are never written, so they get none.
    fn logprob_of(&self, _context: &[u32], next: u32) -> Result<f32> {
        Ok(if (BYTE_BASE..BYTE_BASE + 256).contains(&next) {
            byte_logprob((next - BYTE_BASE) as u8)
        } else {
            f32::NEG_INFINITY
        })
    }
}

/// Made-up but fixed probabilities: spaces are certain, letters less so. They do not depend on
/// the prompt, so an attribution over the prompt is zero everywhere for this model.
fn byte_logprob(byte: u8) -> f32 {
    if byte == b' ' { -0.01 } else { -0.1 - 0.05 * (byte % 7) as f32 }
}

struct ScriptedGeneration {
    offset: usize,
    done: usize,
    room: usize,
    params: SamplingParams,
    stops: StopScanner,
    delay: Duration,
    eos_after: Option<usize>,
    finished: Option<FinishReason>,
}

impl ScriptedGeneration {
    fn finish(&mut self, reason: FinishReason) -> Step {
        self.finished = Some(reason);
        self.stops.finish(reason, EOS)
    }
}

impl Generation for ScriptedGeneration {
    fn step(&mut self) -> Result<Step> {
        if let Some(reason) = self.finished {
            return Ok(Step::Finished(reason));
        }
        if self.done >= self.params.max_tokens || self.done >= self.room {
            return Ok(self.finish(FinishReason::Length));
        }
        if self.eos_after.is_some_and(|n| self.done >= n) {
            return Ok(self.finish(FinishReason::Stop));
        }
        std::thread::sleep(self.delay);
        let byte = SCRIPT.as_bytes()[(self.offset + self.done) % SCRIPT.len()];
        self.done += 1;
        let logprob = byte_logprob(byte);
        let top_logprobs = (0..self.params.top_logprobs)
            .map(|k| {
                let alt = if k == 0 { byte } else { b'a' + (byte + k as u8) % 26 };
                TokenLogprob { token: (alt as char).to_string(), logprob: logprob - k as f32 }
            })
            .collect();
        let scanned = self.stops.push(&(byte as char).to_string());
        if scanned.stopped {
            self.finished = Some(FinishReason::Stop);
        }
        Ok(Step::Token(GeneratedToken {
            id: byte as u32 + BYTE_BASE,
            text: scanned.emit,
            logprob,
            top_logprobs,
        }))
    }

    fn generated(&self) -> usize {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(model: &ScriptedModel, params: &SamplingParams) -> (String, FinishReason) {
        let prompt = [model.prompt_prefix(), model.encode("hi").unwrap()].concat();
        let mut generation = model.start(&prompt, params).unwrap();
        let mut text = String::new();
        loop {
            match generation.step().unwrap() {
                Step::Token(token) => text.push_str(&token.text),
                Step::Finished(reason) => return (text, reason),
            }
        }
    }

    #[test]
    fn greedy_writes_the_script_and_stops_where_asked() {
        let model = ScriptedModel::default();
        let params = SamplingParams { max_tokens: 9, ..Default::default() };
        assert_eq!(complete(&model, &params), ("The quick".to_string(), FinishReason::Length));
        let params = SamplingParams { max_tokens: 100, stop: vec!["fox".into()], ..Default::default() };
        assert_eq!(complete(&model, &params), ("The quick brown ".to_string(), FinishReason::Stop));
        let model = ScriptedModel { eos_after: Some(3), ..Default::default() };
        assert_eq!(complete(&model, &SamplingParams::default()), ("The".to_string(), FinishReason::Stop));
    }

    #[test]
    fn a_prompt_longer_than_the_context_is_refused() {
        let model = ScriptedModel { context_length: 4, ..Default::default() };
        let err = model.start(&[2; 10], &SamplingParams::default()).err().unwrap();
        assert!(err.to_string().contains("10 tokens"), "{err}");
    }
}
