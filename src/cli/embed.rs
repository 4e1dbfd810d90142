//! `vigil embed PATH_OR_RUN --text T... [--json]`: sentence embeddings from a pretrained encoder
//! folder (or `cache:NAME`), or from the encoder of a run trained on one (fine-tuned or frozen)
//! or of a Transformer trained on text here: mean pooling over the real tokens, scaled to unit
//! length, as sentence-transformers gives them. The service's embed route gives the same.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ml::model::pretrained::{self, SentenceEncoder};
use crate::ml::train::load_trained;
use crate::store::{CheckpointKind, RunStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hugging Face folder (config.json, model.safetensors, tokenizer.json), `cache:NAME` for
    /// one in the model cache, or a run whose model is `Pretrained` or a `Transformer` on text.
    pub model: String,
    /// The texts to embed, one embedding each.
    #[arg(long = "text", value_name = "TEXT", required = true, num_args = 1..)]
    pub texts: Vec<String>,
    /// Print one JSON object: the model, the dimension and each text's embedding.
    #[arg(long)]
    pub json: bool,
}

pub fn run(store: &RunStore, args: Args) -> Result<()> {
    let folder = pretrained::resolve(&args.model);
    let encoder =
        if folder.is_dir() || args.model.contains('/') || args.model.starts_with(pretrained::CACHE_PREFIX) {
            SentenceEncoder::open(&folder)?
        } else {
            from_run(store, &args.model)?
        };
    let embeddings = encoder.embed(&args.texts)?;
    let dim = embeddings.first().map_or(0, Vec::len);
    if args.json {
        let rows: Vec<serde_json::Value> = args
            .texts
            .iter()
            .zip(&embeddings)
            .map(|(t, e)| serde_json::json!({ "text": t, "embedding": e }))
            .collect();
        let out = serde_json::json!({ "model": args.model, "dim": dim, "pooling": "mean", "normalized": true, "embeddings": rows });
        println!("{out}");
        return Ok(());
    }
    println!("{}: {} texts, {dim} values each (mean pooling, unit length)", args.model, embeddings.len());
    for (t, e) in args.texts.iter().zip(&embeddings) {
        let head: Vec<String> = e.iter().take(6).map(|v| format!("{v:+.4}")).collect();
        println!("{t}\n  [{} ...]", head.join(" "));
    }
    Ok(())
}

/// The encoder and tokenizer of a run trained on a pretrained encoder, with its trained weights.
fn from_run(store: &RunStore, run: &str) -> Result<SentenceEncoder> {
    let dir = store.resolve(run).map_err(|e| {
        if Path::new(run).exists() {
            e
        } else {
            Error::argument(format!(
                "{run:?} is neither a pretrained encoder folder nor a run ({e}); fetch all-MiniLM-L6-v2 with \
                 scripts/fetch_models.sh minilm and use cache:all-minilm-l6-v2"
            ))
        }
    })?;
    let trained = load_trained(&dir, CheckpointKind::Best)?;
    SentenceEncoder::from_network(&trained.network, &trained.pipeline)
        .map_err(|why| Error::argument(format!("run {} cannot embed texts: {why}", dir.id)))
}
