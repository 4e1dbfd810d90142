//! `vigil keys create|list|revoke`: the service's API keys. A new key is printed once, alone on
//! stdout (so `KEY=$(vigil keys create ...)` works), with what it allows on stderr; the key file
//! keeps only its hash. A running `vigil serve` picks up changes within a second.

use std::path::Path;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use time::OffsetDateTime;

use super::invalid;
use crate::error::Result;
use crate::serve::keys::{
    GeneratePolicy, Guard, KeyFile, KeyStatus, KeyStore, NewKey, OnExtraction, Scope, key_file_path,
    parse_budget, parse_duration, parse_rate, permission_warning, rate_text,
};
use crate::serve::limits::{UsageFile, unix_now};
use crate::serve::policy::OutputPolicy;
use crate::store::RunStore;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create a key and print it once (only its hash is kept).
    Create {
        /// The caller's name, as it appears in the access log and metrics.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: predict, explain, admin, generate, embed.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<Scope>,
        /// Expire after this long, e.g. 30d, 12h.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// Requests per second on average, or `none` for no limit.
        #[arg(long, default_value = "100")]
        rate: String,
        /// Requests allowed at once above the rate (default: twice the rate).
        #[arg(long)]
        burst: Option<u32>,
        /// Inputs predicted per hour, day or month (e.g. 10000/day), or `none`.
        #[arg(long, default_value = "none")]
        budget: String,
        /// What the caller sees: full, label, top-k:K, round:D, or e.g. top-k:3,round:2.
        #[arg(long, default_value = "full")]
        output: OutputPolicy,
        /// Refuse requests with an input the model's input detector flags as out of
        /// distribution (422); they are marked `ood` in the access log either way.
        #[arg(long)]
        reject_ood: bool,
        /// What a PRADA extraction alarm does to the key: flag (log only), throttle (one
        /// request per second), block.
        #[arg(long, value_enum, default_value = "flag")]
        on_extraction: OnExtraction,
        /// Language models: tokens (prompt and completion) per minute, or `none`.
        #[arg(long, default_value = "none")]
        tokens_per_minute: String,
        /// Language models: tokens per hour, day or month (e.g. 200000/day), or `none`.
        #[arg(long, default_value = "none")]
        token_budget: String,
        /// Language models: allow log-probabilities, with up to K alternatives per token (by
        /// default none: logprobs make distilling the model cheap).
        #[arg(long, value_name = "K")]
        logprobs: Option<usize>,
        /// Print one JSON object (the key included) instead of the key alone.
        #[arg(long)]
        json: bool,
    },
    /// List the keys (never the keys themselves).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it is refused from then on (within a second by a running server).
    Revoke {
        /// The key's name.
        name: String,
    },
    /// Create the Ed25519 key that `vigil sign` signs runs with (secret, mode 0600, and a .pub).
    SigningCreate {
        /// Where to write it (default: <runs-dir>/signing.key).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
}

pub fn run(store: &RunStore, action: Action) -> Result<()> {
    let runs_dir = store.root();
    let path = key_file_path(runs_dir);
    if let Some(w) = permission_warning(&path) {
        eprintln!("warning: {w}");
    }
    match action {
        Action::Create {
            name,
            scope,
            expires,
            rate,
            burst,
            budget,
            output,
            reject_ood,
            on_extraction,
            tokens_per_minute,
            token_budget,
            logprobs,
            json,
        } => {
            let tokens_per_minute = crate::serve::keys::parse_tokens_per_minute(&tokens_per_minute)
                .map_err(|e| invalid(format!("--tokens-per-minute {e}")))?;
            let token_budget =
                parse_budget(&token_budget).map_err(|e| invalid(format!("--token-budget: {e}")))?;
            let logprobs = crate::serve::keys::check_logprobs(logprobs)
                .map_err(|e| invalid(format!("--logprobs {e}")))?;
            let generate = GeneratePolicy { tokens_per_minute, token_budget, logprobs };
            let rate = parse_rate(&rate, burst).map_err(|e| invalid(format!("--rate/--burst: {e}")))?;
            let budget = parse_budget(&budget).map_err(invalid)?;
            let guard = Guard { reject_ood, on_extraction };
            let new =
                NewKey { name, scopes: scope, expires_in: expires, rate, budget, output, guard, generate };
            let (rec, key) = KeyStore::of(store).create(new)?;
            if json {
                let v = serde_json::json!({
                    "name": rec.name, "key": key, "scopes": rec.scopes, "expires": rec.expires,
                    "rate": rec.rate, "budget": rec.budget.map(|b| b.to_string()), "output": rec.output,
                    "guard": rec.guard, "generate": rec.generate,
                });
                println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
            } else {
                eprintln!(
                    "created key {:?}: scopes {}, expires {}, rate {}, budget {}, output {}, ood inputs {}, \
                     on extraction alarm: {}",
                    rec.name,
                    rec.scope_list(),
                    rec.expires.as_deref().unwrap_or("never"),
                    rate_text(rec.rate),
                    rec.budget.map_or("none".into(), |b| b.to_string()),
                    rec.output,
                    if rec.guard.reject_ood { "refused" } else { "flagged" },
                    rec.guard.on_extraction
                );
                if rec.has(Scope::Generate) {
                    eprintln!(
                        "language models: {} tokens per minute, token budget {}, logprobs {}",
                        rec.generate.tokens_per_minute.map_or("unlimited".into(), |n| n.to_string()),
                        rec.generate.token_budget.map_or("none".into(), |b| b.to_string()),
                        rec.generate.logprobs_text()
                    );
                }
                eprintln!("store it now: Vigil keeps only its hash and cannot show it again");
                println!("{key}");
            }
            Ok(())
        }
        Action::List { json } => list(&path, store, json),
        Action::SigningCreate { file } => super::protect::create_signing_key(store, file),
        Action::Revoke { name } => {
            let keys = KeyStore::of(store);
            if keys.revoke(&name)? {
                println!("revoked key {name:?}; a running server refuses it within a second");
            } else {
                let when = keys.list()?.into_iter().find(|k| k.name == name).and_then(|k| k.revoked);
                println!("key {name:?} was already revoked ({})", when.unwrap_or_default());
            }
            Ok(())
        }
    }
}

fn list(path: &Path, store: &RunStore, json: bool) -> Result<()> {
    let file = KeyFile::load_with_key(path, store.key())?;
    let usage = UsageFile::load(&UsageFile::path(store.root()))?;
    let now = OffsetDateTime::now_utc();
    let now_s = unix_now();
    let rows: Vec<serde_json::Value> = file
        .keys
        .iter()
        .map(|k| {
            let status = match k.status(now) {
                KeyStatus::Active => "active".to_string(),
                KeyStatus::Expired(_) => "expired".into(),
                KeyStatus::Revoked(_) => "revoked".into(),
            };
            let used = k.budget.and_then(|b| {
                let u = usage.keys.get(&k.name)?;
                (u.window == now_s / b.period.seconds()).then_some(u.used)
            });
            serde_json::json!({
                "name": k.name, "prefix": k.prefix, "scopes": k.scopes, "status": status, "created": k.created,
                "expires": k.expires, "revoked": k.revoked, "rate": k.rate,
                "budget": k.budget.map(|b| b.to_string()),
                "budget_used": k.budget.map(|_| used.unwrap_or(0)), "output": k.output,
                "tokens_per_minute": k.generate.tokens_per_minute,
                "token_budget": k.generate.token_budget.map(|b| b.to_string()),
                "token_budget_used": k.generate.token_budget.map(|b| {
                    usage.tokens.get(&k.name).filter(|u| u.window == now_s / b.period.seconds()).map_or(0, |u| u.used)
                }),
                "logprobs": k.generate.logprobs,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialises"));
        return Ok(());
    }
    if file.keys.is_empty() {
        println!(
            "no keys in {} yet: `vigil keys create --name NAME --scope predict` makes one",
            path.display()
        );
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    // The token columns only when some key may generate, so classifier-only listings stay as
    // narrow as they were.
    let generating = file.keys.iter().any(|k| k.has(Scope::Generate));
    let mut header = vec!["name", "scopes", "status", "expires", "rate", "budget (used)", "output"];
    if generating {
        header.extend(["tokens/min", "token budget (used)", "logprobs"]);
    }
    t.set_header(header);
    for (k, row) in file.keys.iter().zip(&rows) {
        let budget = match k.budget {
            Some(b) => format!("{b} ({})", row["budget_used"].as_u64().unwrap_or(0)),
            None => "none".into(),
        };
        let mut cells = vec![
            k.name.clone(),
            k.scope_list(),
            row["status"].as_str().unwrap_or_default().to_string(),
            k.expires.clone().unwrap_or_else(|| "never".into()),
            rate_text(k.rate),
            budget,
            k.output.to_string(),
        ];
        if generating {
            cells.push(k.generate.tokens_per_minute.map_or("none".into(), |n| n.to_string()));
            cells.push(match k.generate.token_budget {
                Some(b) => format!("{b} ({})", row["token_budget_used"].as_u64().unwrap_or(0)),
                None => "none".into(),
            });
            cells.push(k.generate.logprobs_text());
        }
        t.add_row(cells);
    }
    println!("{t}");
    Ok(())
}
