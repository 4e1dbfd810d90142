//! `vigil traffic`: sends test-split inputs of a served model to a running service at a steady
//! rate and reports what came back (statuses, latency percentiles, agreement with the test
//! labels). Ctrl-C stops early and still reports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};

use super::invalid;
use crate::error::{Error, Result};
use crate::serve::keys::parse_duration;
use crate::serve::traffic::{Profile, TrafficConfig, TrafficReport, run as send_traffic};
use crate::store::RunStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service: host:port or an http(s):// URL.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// A key with the predict scope (generate for --profile chat).
    #[arg(long, env = "VIGIL_KEY", hide_env_values = true)]
    pub key: String,
    /// Requests per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to send, e.g. 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The model to call (default: the first one the service lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Inputs per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A PEM CA certificate to trust, for a service with a self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Who to play: benign (varied test inputs at --rate), extraction (a model thief) or
    /// adversarial (the run's saved PGD examples at --rate).
    #[arg(long, value_enum, default_value = "benign")]
    pub profile: Profile,
    /// Extraction: the thief's query budget (its agreement is measured at 100, 1,000, 10,000
    /// queries on the way).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Chat: clients streaming completions at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Chat: max_tokens of each completion.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(store: &RunStore, models_dir: &Path, args: Args) -> Result<()> {
    if args.profile == Profile::Chat {
        return chat(store, args);
    }
    if args.batch == 0 {
        return Err(invalid("--batch must be at least 1"));
    }
    if args.queries == 0 {
        return Err(invalid("--queries must be at least 1"));
    }
    let config = TrafficConfig {
        addr: args.addr,
        key: args.key,
        rate: args.rate,
        duration: args.duration,
        model: args.model,
        batch: args.batch,
        ca_cert: args.ca_cert,
        store: store.clone(),
        models_dir: models_dir.to_path_buf(),
        max_in_flight: 256,
        profile: args.profile,
        queries: args.queries,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::startup("the async runtime", e))?;
    let live = !args.json && std::io::stderr().is_terminal();
    let report = runtime.block_on(send_traffic(
        config,
        |r| {
            if live {
                eprint!(
                    "\r{} sent, {} answered, {} ok, p50 {} ms, {:.0}s   ",
                    r.sent,
                    r.answered(),
                    r.statuses.get(&200).copied().unwrap_or(0),
                    r.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
                    r.elapsed_s
                );
            }
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    ))?;
    if live {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        print_report(&report);
    }
    nothing_answered(&report).map_or(Ok(()), Err)
}

/// The error for traffic of which no request was answered with success (every one refused,
/// 401/403/429, or failed): the report says what came back, the exit status that it failed.
/// A thief refused after some answers is the protection working, not a failure.
fn nothing_answered(r: &TrafficReport) -> Option<Error> {
    let ok: u64 = r.statuses.range(200..300).map(|(_, n)| n).sum();
    if r.sent == 0 || ok > 0 {
        return None;
    }
    let what = |status: u16| match status {
        401 => " (the key is unknown or revoked)",
        403 => " (forbidden: the key may not use this model or route)",
        429 => " (rate limited)",
        _ => "",
    };
    let mut counts: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{n} x {s}{}", what(*s))).collect();
    if r.transport_errors > 0 {
        counts.push(format!("{} without an answer", r.transport_errors));
    }
    let first = r.errors.first().map_or(String::new(), |e| format!("; the service said {e:?}"));
    Some(Error::bad_answer(format!(
        "none of the {} requests succeeded: {}{first}",
        r.sent,
        counts.join(", ")
    )))
}

fn print_report(r: &TrafficReport) {
    println!(
        "{} requests to {} at {}/v1/models/{}/predict over {:.1}s ({:.1}/s), inputs from {}",
        r.sent,
        r.model,
        r.url,
        r.model,
        r.elapsed_s,
        r.sent as f64 / r.elapsed_s.max(1e-9),
        r.inputs_from
    );
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(vec!["status", "responses"]);
    for (s, n) in &r.statuses {
        t.add_row(vec![s.to_string(), n.to_string()]);
    }
    if r.transport_errors > 0 {
        t.add_row(vec!["no answer".to_string(), r.transport_errors.to_string()]);
    }
    if r.skipped > 0 {
        t.add_row(vec!["not sent (too many waiting)".to_string(), r.skipped.to_string()]);
    }
    println!("{t}");
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    println!(
        "latency ms: p50 {}  p90 {}  p99 {}  max {}",
        ms(r.p50_ms),
        ms(r.p90_ms),
        ms(r.p99_ms),
        ms(r.max_ms)
    );
    if r.labelled > 0 {
        println!(
            "labels agreeing with the test split: {} of {} ({:.2}%)",
            r.agreed,
            r.labelled,
            100.0 * r.agreed as f64 / r.labelled as f64
        );
    }
    if !r.agreement.is_empty() {
        println!("the thief's substitute, agreeing with the victim on the test split:");
        for p in &r.agreement {
            println!("  after {:>6} queries: {:.1}%", p.queries, 100.0 * p.agreement);
        }
    }
    if let Some(q) = r.refused_after {
        println!("the service refused the thief after {q} queries");
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}

/// `3 x 200, 1 x 429`: counts by what they count.
fn counts<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, u64>) -> String {
    m.iter().map(|(k, n)| format!("{n} x {k}")).collect::<Vec<_>>().join(", ")
}

/// `--profile chat`: the load check of a language-model service.
fn chat(store: &RunStore, args: Args) -> Result<()> {
    use crate::serve::llm::load::{ChatLoad, run as load};
    if args.clients == 0 || args.max_tokens == 0 {
        return Err(invalid("--clients and --max-tokens must be at least 1"));
    }
    let config = ChatLoad {
        url: crate::serve::traffic::base_url(&args.addr),
        key: args.key,
        clients: args.clients,
        duration: args.duration,
        max_tokens: args.max_tokens,
        log_dir: Some(store.root().to_path_buf()),
        ca_cert: args.ca_cert,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::startup("the async runtime", e))?;
    if std::io::stderr().is_terminal() && !args.json {
        eprintln!(
            "{} clients streaming chat completions from {} for {:.0} s ...",
            config.clients,
            config.url,
            config.duration.as_secs_f64()
        );
    }
    let r = runtime.block_on(load(config))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serialises"));
    } else {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));

        println!(
            "{} chat completions from {} ({}) by {} clients over {:.1} s",
            r.requests, r.model, r.url, r.clients, r.elapsed_s
        );
        println!("statuses: {}", counts(&r.statuses));
        println!("errors: {}", r.errors);
        println!(
            "streams ending with a finish reason and [DONE]: {} of {} ({})",
            r.finished,
            r.requests,
            counts(&r.finish_reasons)
        );
        println!(
            "time to first token ms: p50 {}  p99 {}  max {}",
            ms(r.ttft_p50_ms),
            ms(r.ttft_p99_ms),
            ms(r.ttft_max_ms)
        );
        println!("completion tokens: {} ({:.1}/s)", r.completion_tokens, r.tokens_per_s);
        match r.log_lines {
            Some(n) => println!(
                "access-log lines on the chat route: {n} ({})",
                if n == r.requests { "one per request" } else { "NOT one per request" }
            ),
            None => println!(
                "access log: not in {} (pass the service's --runs-dir to compare)",
                store.root().display()
            ),
        }
        for e in &r.first_errors {
            println!("error: {e}");
        }
    }
    if r.errors > 0 || r.log_lines.is_some_and(|n| n != r.requests) {
        return Err(Error::bad_answer(format!(
            "{} of {} chat completions failed or the log does not have one line per request",
            r.errors, r.requests
        )));
    }
    Ok(())
}
