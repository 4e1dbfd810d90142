//! `vigil bench --llm`: prompt-processing and decode speed of a language model, as medians over
//! repeats, with what the file holds (size, tensor types) and what concurrent generations cost
//! in memory. Figures only, never assertions: the machine decides the numbers.

use std::time::Instant;

use serde::Serialize;

use super::backend::{LanguageModel, ModelInfo, SamplingParams, Step};
use crate::error::Result;

/// Prompt tokens for the prompt-processing figure (llama-bench's default is 512; 128 keeps a
/// run short on two cores and is still a batched forward pass).
pub const PROMPT_TOKENS: usize = 128;
/// Tokens decoded for the decode figure.
pub const DECODE_TOKENS: usize = 64;

/// What one `vigil bench --llm` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LlmBench {
    pub model: ModelInfo,
    pub threads: usize,
    pub repeats: usize,
    pub load_seconds: f64,
    pub prompt_tokens: usize,
    /// Median prompt-processing speed, tokens a second.
    pub prompt_tokens_per_second: f64,
    pub decode_tokens: usize,
    /// Median decode speed (one token a forward pass), tokens a second.
    pub decode_tokens_per_second: f64,
    /// Every repeat's figures, in order.
    pub prompt_runs: Vec<f64>,
    pub decode_runs: Vec<f64>,
    /// Resident memory after loading, and with 8 generations started at once (each with its
    /// own cache, sharing the weights).
    pub rss_loaded_bytes: Option<u64>,
    pub rss_8_generations_bytes: Option<u64>,
}

/// Measures `model`, loaded in `load_seconds`.
pub fn measure(model: &dyn LanguageModel, load_seconds: f64, repeats: usize) -> Result<LlmBench> {
    let text = "The history of the lighthouse begins with fires lit on hills to guide ships at night. \
                Later, towers were built of stone, and lamps burned oil behind glass. ";
    let mut body = model.encode(&text.repeat(16))?;
    body.truncate(PROMPT_TOKENS - model.prompt_prefix().len());
    let prompt = [model.prompt_prefix(), body].concat();
    let rss_loaded_bytes = resident_bytes();

    let mut prompt_runs = Vec::new();
    let mut decode_runs = Vec::new();
    // One untimed run first: page faults and allocator growth are not the model's speed.
    for run in 0..=repeats {
        let start = Instant::now();
        let generation = model.start(&prompt, &SamplingParams { max_tokens: 1, ..Default::default() })?;
        let pp = prompt.len() as f64 / start.elapsed().as_secs_f64();
        drop(generation);

        // Decode from a short prompt, so the figure is the steady one-token forward pass.
        let short = &prompt[..prompt.len().min(8)];
        let params = SamplingParams { max_tokens: DECODE_TOKENS + 1, ..Default::default() };
        let mut generation = model.start(short, &params)?;
        // The first step only samples from the prompt's logits: time the ones after it.
        let mut first = true;
        let mut timed = 0usize;
        let mut clock = Instant::now();
        while let Step::Token(_) = generation.step()? {
            if first {
                first = false;
                clock = Instant::now();
            } else {
                timed += 1;
            }
        }
        let decode = if timed == 0 { 0.0 } else { timed as f64 / clock.elapsed().as_secs_f64() };
        if run > 0 {
            prompt_runs.push(pp);
            decode_runs.push(decode);
        }
    }
    let generations: Vec<_> = (0..8)
        .map(|_| model.start(&prompt[..16.min(prompt.len())], &SamplingParams::default()))
        .collect::<Result<_>>()?;
    let rss_8_generations_bytes = resident_bytes();
    drop(generations);
    Ok(LlmBench {
        model: model.info(),
        threads: candle_core::utils::get_num_threads(),
        repeats,
        load_seconds,
        prompt_tokens: prompt.len(),
        prompt_tokens_per_second: median(&prompt_runs),
        decode_tokens: DECODE_TOKENS,
        decode_tokens_per_second: median(&decode_runs),
        prompt_runs,
        decode_runs,
        rss_loaded_bytes,
        rss_8_generations_bytes,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// This process's resident memory (Linux; None elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
