//! `vigil explain-token MODEL --prompt TEXT --token N`: generates the completion greedily up to
//! token N (`--chat` formats the prompt as a user's turn, in `--chat-template`'s format when
//! given) and explains that token by occlusion over the prompt's tokens
//! ([`crate::llm::attribution`]): a table for people, one JSON object with `--json`. The
//! console's Playground shows the same explanation (pick a token, `e`).

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::Serialize;

use crate::engine::llm::GenerateRequest;
use crate::error::{Error, Result};
use crate::llm::attribution::{NO_GRADIENTS, TokenAttribution, explain_token};
use crate::llm::{SamplingParams, Step};

/// Arguments of `vigil explain-token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The language model: a GGUF file.
    pub model: PathBuf,
    /// The prompt the model completes.
    #[arg(long)]
    pub prompt: String,
    /// Which token of the (greedy) completion to explain, 0-based.
    #[arg(long)]
    pub token: usize,
    /// Send the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub chat_template: super::generate::ChatTemplateArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    model: String,
    /// The completion up to and including the explained token.
    completion: String,
    note: &'static str,
    #[serde(flatten)]
    attribution: &'a TokenAttribution,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.chat_template.load(&args.model)?;
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        chat: args.chat,
        params: SamplingParams { max_tokens: args.token + 1, ..SamplingParams::default() },
    };
    let prompt = model.user_prompt_ids(&request.prompt, request.chat)?;
    let mut generation = model.start(&prompt, &request.params)?;
    let mut generated = Vec::new();
    while generated.len() <= args.token {
        match generation.step()? {
            Step::Token(t) => generated.push(t.id),
            Step::Finished(reason) => {
                return Err(Error::argument(format!(
                    "--token {}: the model's greedy completion ended after {} tokens ({reason:?}); \
                     pick one from 0 to {}",
                    args.token,
                    generated.len(),
                    generated.len().saturating_sub(1)
                )));
            }
        }
    }
    let show = !args.json && std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize| {
        if show {
            eprint!("\rforward pass {done}/{total}");
        }
        true
    };
    let a = explain_token(model.as_ref(), &prompt, &generated, args.token, &mut progress)?
        .expect("the progress never stops it");
    if show {
        eprintln!();
    }
    let completion = model.decode(&generated)?;
    if args.json {
        let report = Report { model: model.info().name, completion, note: NO_GRADIENTS, attribution: &a };
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
        return Ok(());
    }
    println!(
        "token {} {:?} of the completion {:?}: p {:.4} (logprob {:.4})",
        a.position,
        a.text,
        completion,
        a.logprob.exp(),
        a.logprob
    );
    println!("{} ({} forward passes, {:.0} ms)", a.method, a.forward_passes, a.millis);
    println!("{NO_GRADIENTS}");
    println!();
    println!("{:>4}  {:<16} {:>12}  {:>14}", "#", "prompt token", "attribution", "logprob w/o it");
    let max = a.max_abs();
    for (i, p) in a.prompt.iter().enumerate().skip(a.prefix) {
        let bar = if max > 0.0 {
            "█".repeat((8.0 * p.attribution.abs() / max).round() as usize)
        } else {
            String::new()
        };
        let sign = if p.attribution < 0.0 { "-" } else { "+" };
        let line = format!(
            "{i:>4}  {:<16} {:>+12.4}  {:>14.4}  {}",
            format!("{:?}", p.text),
            p.attribution,
            p.occluded_logprob,
            if bar.is_empty() { String::new() } else { format!("{sign}{bar}") }
        );
        println!("{}", line.trim_end());
    }
    println!("\npositive: the prompt token made the explained token more likely");
    Ok(())
}
