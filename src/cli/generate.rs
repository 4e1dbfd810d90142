//! `vigil generate MODEL.gguf --prompt TEXT`: one completion from a language model, streamed to
//! stdout as it is decoded, then its figures (prompt and completion tokens, time to first token,
//! tokens a second) on stderr; `--json` prints one object instead. And `vigil bench --llm`'s
//! report. The model is whatever `crate::llm::load` loads; nothing here knows GGUF.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::llm::{FinishReason, LanguageModel, SamplingParams, Step};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: a GGUF file (scripts/fetch_models.sh fetches Gemma 3 270M).
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Send the prompt as a user's chat message, with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub chat_template: ChatTemplateArg,
    /// Stop after this many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy; higher samples more freely.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability (0 < P <= 1).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seeds the sampler: the same seed gives the same completion.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// End the completion where this text appears (not printed); may be given several times.
    #[arg(long)]
    pub stop: Vec<String>,
    /// With --json: this many alternatives per token, with log-probabilities.
    #[arg(long, default_value_t = 0, requires = "json")]
    pub top_logprobs: usize,
    /// Print one JSON object at the end instead of streaming.
    #[arg(long)]
    pub json: bool,
}

/// `--chat-template`, as the commands that load a model to run one prompt take it (`generate`,
/// `explain-token`); the option's text and its reading are here once.
#[derive(Debug, clap::Args)]
pub struct ChatTemplateArg {
    /// The chat template for --chat: gemma, llama3, chatml, none (the text alone), or a .ron
    /// file of role prefixes and suffixes (default: the one the model's file names).
    #[arg(long, value_name = "NAME|FILE.ron")]
    pub chat_template: Option<String>,
}

impl ChatTemplateArg {
    /// Loads the model in `path` with the chosen chat template in place of its file's. A name
    /// or file that is not a template is the user's error (exit 2), before the model loads.
    pub fn load(&self, path: &Path) -> Result<Arc<dyn LanguageModel>> {
        let template =
            self.chat_template.as_deref().map(crate::llm::gguf::ChatTemplate::parse).transpose()?;
        crate::llm::load_with(path, template)
    }
}

/// One token of `--json`'s output.
#[derive(Serialize)]
struct TokenJson {
    id: u32,
    text: String,
    logprob: f32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_logprobs: Vec<crate::llm::TokenLogprob>,
}

/// `--json`'s object.
#[derive(Serialize)]
struct GenerateJson {
    model: String,
    text: String,
    finish_reason: FinishReason,
    prompt_tokens: usize,
    /// The prompt as the model's tokenizer split it (beginning-of-sequence included), so other
    /// implementations can be checked against the same ids.
    prompt_ids: Vec<u32>,
    completion_tokens: usize,
    time_to_first_token_ms: f64,
    tokens_per_second: f64,
    tokens: Vec<TokenJson>,
}

pub fn run(args: Args) -> Result<()> {
    crate::serve::server::ensure_thread_count_env();
    if args.max_tokens == 0 {
        return Err(Error::argument("--max-tokens must be at least 1"));
    }
    let model = args.chat_template.load(&args.model)?;
    let prompt = model.user_prompt_ids(&args.prompt, args.chat)?;
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop.clone(),
        top_logprobs: args.top_logprobs,
    };
    let started = Instant::now();
    let mut generation = model.start(&prompt, &params)?;
    let mut first_token = None;
    let mut tokens = Vec::new();
    let mut out = String::new();
    let mut stdout = std::io::stdout().lock();
    let reason = loop {
        match generation.step()? {
            Step::Token(token) => {
                first_token.get_or_insert_with(|| started.elapsed());
                if !args.json {
                    // Streamed as decoded; a closed pipe (`| head`) ends the command quietly.
                    write!(stdout, "{}", token.text)
                        .and_then(|_| stdout.flush())
                        .map_err(|e| Error::io("stdout", e))?;
                }
                out.push_str(&token.text);
                tokens.push(TokenJson {
                    id: token.id,
                    text: token.text,
                    logprob: token.logprob,
                    top_logprobs: token.top_logprobs,
                });
            }
            Step::Finished(reason) => break reason,
        }
    };
    let total = started.elapsed();
    let completion = generation.generated();
    let ttft = first_token.unwrap_or(total);
    // Decode speed: the tokens after the first, over the time after the first.
    let after = (total - ttft).as_secs_f64();
    let tps = if completion > 1 && after > 0.0 { (completion - 1) as f64 / after } else { 0.0 };
    if args.json {
        let json = GenerateJson {
            model: model.info().name,
            text: out,
            finish_reason: reason,
            prompt_tokens: prompt.len(),
            prompt_ids: prompt.clone(),
            completion_tokens: completion,
            time_to_first_token_ms: ttft.as_secs_f64() * 1000.0,
            tokens_per_second: tps,
            tokens,
        };
        writeln!(stdout, "{}", serde_json::to_string(&json).expect("plain data serialises"))
            .map_err(|e| Error::io("stdout", e))?;
    } else {
        writeln!(stdout).map_err(|e| Error::io("stdout", e))?;
        eprintln!(
            "{} prompt tokens, {completion} completion tokens ({}), time to first token {:.0} ms, {tps:.1} tokens/s",
            prompt.len(),
            match reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            },
            ttft.as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}

/// `vigil bench --llm FILE`: loads the model, measures it, prints the report.
pub fn bench(path: &Path, repeats: usize, json: bool) -> Result<()> {
    crate::serve::server::ensure_thread_count_env();
    let started = Instant::now();
    let model = crate::llm::load(path)?;
    let load_seconds = started.elapsed().as_secs_f64();
    if !json {
        eprintln!("measuring {} ({repeats} repeats) ...", path.display());
    }
    let report = crate::llm::bench::measure(model.as_ref(), load_seconds, repeats)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("plain data serialises"));
        return Ok(());
    }
    let m = &report.model;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "model         {} ({}, {:.1} M parameters, {:.1} MiB)",
        m.name,
        m.architecture,
        m.parameters as f64 / 1e6,
        mib(m.file_bytes)
    );
    println!("quantisation  {}", m.file_type.as_deref().unwrap_or("not stated in the file"));
    for q in &m.quantisations {
        println!("  {:<10} {:>4} tensors  {:>7.1} MiB", q.ggml_type, q.tensors, mib(q.bytes));
    }
    println!("context       {} tokens, vocabulary {}", m.context_length, m.vocab_size);
    println!("threads       {}   load {:.2} s", report.threads, report.load_seconds);
    println!(
        "prompt        {:.1} tokens/s (median of {}, {} tokens)",
        report.prompt_tokens_per_second, report.repeats, report.prompt_tokens
    );
    println!(
        "decode        {:.1} tokens/s (median of {}, {} tokens)",
        report.decode_tokens_per_second, report.repeats, report.decode_tokens
    );
    if let (Some(a), Some(b)) = (report.rss_loaded_bytes, report.rss_8_generations_bytes) {
        println!("memory        {:.0} MiB loaded, {:.0} MiB with 8 generations started", mib(a), mib(b));
    }
    Ok(())
}
