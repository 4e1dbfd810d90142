//! `vigil serve`: serves runs' models over HTTP until Ctrl-C or SIGTERM, then stops gracefully
//! (in-flight requests finish, every access-log line is written).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::invalid;
use crate::error::{Error, Result};
use crate::serve::edge::EdgeLimits;
use crate::serve::keys::parse_duration;
use crate::serve::llm::LlmConfig;
use crate::serve::llm::screen::ScreenMode;
use crate::serve::router::RequestLimits;
use crate::serve::{ServeConfig, Server, TlsFiles};
use crate::store::RunStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs to serve: ids, unique prefixes or suffixes, or `latest`. Each is served under its
    /// spec's name, from its best checkpoint, or `RUN@VARIANT` from a variant made by
    /// `vigil optimize` (e.g. `digits-mlp-3f2a1c@q8_0`).
    #[arg(required_unless_present = "llm", value_name = "RUN")]
    pub runs: Vec<String>,
    /// A language model (GGUF file) to serve on the OpenAI-compatible routes,
    /// POST /v1/chat/completions and POST /v1/completions (keys need the generate scope); alone
    /// or beside runs.
    #[arg(long, value_name = "MODEL.gguf")]
    pub llm: Option<PathBuf>,
    /// The name clients give in the `model` field (default: the model's own).
    #[arg(long, requires = "llm", value_name = "NAME")]
    pub llm_name: Option<String>,
    /// Longest prompt, in tokens (400 beyond).
    #[arg(long, default_value_t = 2048, requires = "llm")]
    pub llm_max_prompt_tokens: usize,
    /// The chat template of /v1/chat/completions: gemma, llama3, chatml, none (the messages'
    /// text alone), or a .ron file of role prefixes and suffixes (default: the one the model's
    /// file names).
    #[arg(long, value_name = "NAME|FILE.ron", requires = "llm")]
    pub chat_template: Option<String>,
    /// Most tokens a completion may ask for with max_tokens (400 beyond; also the default).
    #[arg(long, default_value_t = 512, requires = "llm")]
    pub llm_max_tokens: usize,
    /// Threads decoding generations, each stepping its generations in turn (one is right when
    /// the model's matrix products already use every core).
    #[arg(long, default_value_t = 1, requires = "llm")]
    pub llm_workers: usize,
    /// Longest a completion that is not streamed may take (503 beyond; the generation stops).
    #[arg(long, default_value = "120s", value_parser = parse_duration, requires = "llm")]
    pub llm_timeout: Duration,
    /// The screen for sensitive data in completions (e-mail addresses, key-like strings):
    /// flag (report it in the access log), redact (and replace it in the answer), off.
    #[arg(long, value_enum, default_value = "flag", requires = "llm")]
    pub screen: ScreenMode,
    /// Prompts within 10 minutes after which a key's traffic is judged for extraction by
    /// distillation (templated, diverse prompts, or logprobs at scale).
    #[arg(long, default_value_t = 100, requires = "llm")]
    pub extraction_min_requests: usize,
    /// Address to listen on. Anything but a loopback address needs --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body (413 beyond), e.g. 1MiB, 512KiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Most inputs in one request (422 beyond).
    #[arg(long, default_value_t = 256)]
    pub max_inputs: usize,
    /// Longest a request may take (503 beyond), e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Longest a request body may take to arrive (408 beyond), e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Longest a client may take to send a request's head, from connecting or between requests
    /// (the connection is dropped beyond: slowloris), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Most open connections in all (503 and closed beyond).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most open connections from one client address (503 and closed beyond).
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_client: usize,
    /// Keep serving while the access log cannot be written (a full disk), and record the outage
    /// in the log once it can again. By default the service fails closed: it answers 503 until
    /// it can log again.
    #[arg(long)]
    pub log_fail_open: bool,
    /// Size at which the access log is rotated, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub log_max_size: u64,
    /// Threads answering requests (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write raw inputs to the access log (by default only their SHA-256: inputs may be
    /// personal data).
    #[arg(long)]
    pub log_raw_inputs: bool,
    /// Serve only runs signed with `vigil sign` whose files still match the signed manifest.
    #[arg(long)]
    pub require_signed: bool,
    /// With --require-signed: accept only signatures by this public key (a .pub file).
    #[arg(long, value_name = "FILE", requires = "require_signed", value_parser = super::existing_file)]
    pub trusted_key: Option<PathBuf>,
}

/// Parses a size such as `1MiB`, `512KiB`, `64MB` or `1048576` (units are powers of 1024).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 =
        n.replace('_', "").parse().map_err(|_| format!("{text:?} must look like 1MiB, 512KiB or 1048576"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use B, KiB, MiB or GiB")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{text:?} must be more than zero and less than 16 EiB")),
        Some(v) => Ok(v),
    }
}

/// Resolves `host:port` (a name such as `localhost` included) to one address.
pub fn resolve_addr(text: &str) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| invalid(format!("--addr {text:?} is not an address like 127.0.0.1:7878: {e}")))?;
    addrs.next().ok_or_else(|| invalid(format!("--addr {text:?} resolves to no address")))
}

pub fn run(store: &RunStore, args: Args) -> Result<()> {
    crate::serve::server::ensure_thread_count_env();
    let addr = resolve_addr(&args.addr)?;
    let max_body = usize::try_from(args.max_body).map_err(|_| invalid("--max-body is too large"))?;
    if args.max_inputs == 0 {
        return Err(invalid("--max-inputs must be at least 1"));
    }
    let mut config = ServeConfig::new(store.clone(), args.runs);
    config.addr = addr;
    config.tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles { cert, key });
    if args.max_connections == 0 || args.max_connections_per_client == 0 {
        return Err(invalid("--max-connections and --max-connections-per-client must be at least 1"));
    }
    config.limits = RequestLimits {
        max_body,
        max_inputs: args.max_inputs,
        timeout: args.timeout,
        body_timeout: args.body_timeout,
    };
    config.edge = EdgeLimits {
        max_connections: args.max_connections,
        max_per_client: args.max_connections_per_client,
        header_timeout: args.header_timeout,
    };
    config.log_fail_open = args.log_fail_open;
    config.log_max_bytes = args.log_max_size;
    config.log_raw_inputs = args.log_raw_inputs;
    config.require_signed = args.require_signed;
    config.trusted_key = args.trusted_key.as_deref().map(crate::store::sign::load_public).transpose()?;
    if let Some(path) = args.llm {
        if args.llm_max_prompt_tokens == 0 || args.llm_max_tokens == 0 || args.llm_workers == 0 {
            return Err(invalid(
                "--llm-max-prompt-tokens, --llm-max-tokens and --llm-workers must be at least 1",
            ));
        }
        if args.extraction_min_requests < 10 {
            return Err(invalid("--extraction-min-requests must be at least 10: fewer tells nothing"));
        }
        let mut llm = LlmConfig::new(path);
        llm.name = args.llm_name;
        llm.chat_template =
            args.chat_template.as_deref().map(crate::llm::gguf::ChatTemplate::parse).transpose()?;
        llm.max_prompt_tokens = args.llm_max_prompt_tokens;
        llm.max_tokens = args.llm_max_tokens;
        llm.workers = args.llm_workers;
        llm.timeout = args.llm_timeout;
        llm.screen = args.screen;
        llm.watch.min_requests = args.extraction_min_requests;
        config.llm = Some(llm);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        if n == 0 {
            return Err(invalid("--threads must be at least 1"));
        }
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build().map_err(|e| Error::startup("the async runtime", e))?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        print_banner(&server, store.root());
        // What the edge turned away, at most one line every 10 s however much arrives.
        let edge = server.edge_stats();
        let reporter = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(line) = edge.report() {
                    eprintln!("{line}");
                }
            }
        });
        wait_for_stop().await;
        reporter.abort();
        eprintln!("stopping: finishing requests in flight and writing the access log ...");
        let stats = server.log_stats();
        let log = server.access_log().to_path_buf();
        server.shutdown().await?;
        let written = stats.written.load(std::sync::atomic::Ordering::Relaxed);
        println!("stopped; {written} requests logged to {}", log.display());
        Ok(())
    })
}

fn print_banner(server: &Server, runs_dir: &Path) {
    for w in server.warnings() {
        eprintln!("warning: {w}");
    }
    println!("serving on {}", server.url());
    for m in server.models() {
        let input = match m.values {
            Some(v) => format!("{v} values ({})", m.input),
            None => m.input.clone(),
        };
        let run = match &m.variant {
            Some(v) => format!("{}@{v}", m.run),
            None => m.run.to_string(),
        };
        println!("  {}  version {}  run {run}  {input} -> {} classes", m.name, m.version, m.classes.len());
    }
    if let Some(l) = server.llm() {
        println!(
            "  {}  language model ({}, {}, {:.1} MiB, context {} tokens, chat template {})  POST \
             /v1/chat/completions, POST /v1/completions",
            l.name,
            l.architecture,
            l.file_type.as_deref().unwrap_or("quantisation not stated"),
            l.file_bytes as f64 / (1024.0 * 1024.0),
            l.context_length,
            l.chat_template.as_deref().unwrap_or("none known: the chat route refuses")
        );
        let types: Vec<String> = l
            .quantisations
            .iter()
            .map(|q| {
                format!("{} {} tensors {:.1} MiB", q.ggml_type, q.tensors, q.bytes as f64 / (1024.0 * 1024.0))
            })
            .collect();
        if !types.is_empty() {
            println!("    tensor types: {}", types.join(", "));
        }
    }
    println!(
        "keys: {}   access log: {}",
        crate::serve::keys::key_file_path(runs_dir).display(),
        server.access_log().display()
    );
    if let Some(l) = server.llm() {
        println!(
            "try: curl -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{{\"model\": \"{}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}' {}/v1/chat/completions",
            l.name,
            server.url()
        );
    } else if let Some(m) = server.models().first() {
        let body = if m.accepts == "texts" {
            r#"{"texts": ["some text"]}"#.to_string()
        } else {
            format!(r#"{{"inputs": [[{} numbers]]}}"#, m.values.unwrap_or(0))
        };
        println!(
            "try: curl -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{body}' {}/v1/models/{}/predict",
            server.url(),
            m.name
        );
    }
    println!("Ctrl-C stops it");
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512kib").unwrap(), 512 << 10);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert!(parse_size("1 parsec").unwrap_err().contains("unknown unit"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
