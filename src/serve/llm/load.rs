//! The chat load check (`vigil traffic --profile chat`): N clients, each streaming one chat
//! completion after another from a language-model service for a while, and what the issue asks
//! of it: no errors, every stream ends with a finish reason and `data: [DONE]`, time to first
//! token p50/p99, tokens per second, and (when the service logs into this run store) one
//! access-log line per request. Loopback or TLS like `vigil traffic`; bounded by the duration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::serve::access_log::{ACCESS_LOG, AccessRecord};
use crate::serve::routes::CHAT;

/// What to send.
#[derive(Debug, Clone)]
pub struct ChatLoad {
    /// The service's base URL.
    pub url: String,
    pub key: String,
    /// Clients streaming at once.
    pub clients: usize,
    pub duration: Duration,
    pub max_tokens: usize,
    /// The run store whose access log the service writes, to count its lines.
    pub log_dir: Option<PathBuf>,
    /// A PEM CA certificate to trust, for a service with a self-signed certificate.
    pub ca_cert: Option<PathBuf>,
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLoadReport {
    pub url: String,
    pub model: String,
    pub clients: usize,
    pub elapsed_s: f64,
    pub requests: u64,
    /// Statuses answered, by code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that failed: not 200, no answer, or a stream that did not end properly.
    pub errors: u64,
    /// Streams that ended with a finish reason and `[DONE]`.
    pub finished: u64,
    /// Finish reasons, by name.
    pub finish_reasons: BTreeMap<String, u64>,
    pub completion_tokens: u64,
    pub tokens_per_s: f64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub ttft_max_ms: Option<f64>,
    /// Access-log lines on the chat route written during the check (`None`: log not found).
    pub log_lines: Option<u64>,
    /// The first few errors, as the client saw them.
    pub first_errors: Vec<String>,
}

/// One request's fate.
struct Outcome {
    status: Option<u16>,
    ttft: Option<Duration>,
    finish: Option<String>,
    done: bool,
    tokens: u64,
    error: Option<String>,
}

fn chat_lines(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(ACCESS_LOG)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str::<AccessRecord>(l).ok())
            .filter(|r| r.route.as_deref() == Some(CHAT))
            .count() as u64,
    )
}

/// Streams one chat completion and reads it to the end.
async fn one(client: &reqwest::Client, url: &str, key: &str, prompt: String, max_tokens: usize) -> Outcome {
    let mut out = Outcome { status: None, ttft: None, finish: None, done: false, tokens: 0, error: None };
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "stream": true, "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let sent = client
        .post(format!("{url}{CHAT}"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("no answer: {e}"));
            return out;
        }
    };
    let status = resp.status().as_u16();
    out.status = Some(status);
    let mut buf = String::new();
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => break,
            Err(e) => {
                out.error = Some(format!("the stream broke: {e}"));
                return out;
            }
        }
        // Events are complete once their blank line has come.
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim_end().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                out.done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { continue };
            if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                out.tokens = u;
            }
            let choice = &v["choices"][0];
            if choice["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) && out.ttft.is_none() {
                out.ttft = Some(t0.elapsed());
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                out.finish = Some(f.to_string());
            }
        }
    }
    if status != 200 {
        out.error = Some(format!("{status}: {}", buf.chars().take(200).collect::<String>()));
    } else if out.finish.is_none() || !out.done {
        out.error = Some("the stream ended without a finish reason and [DONE]".into());
    }
    out
}

/// Runs the check.
pub async fn run(load: ChatLoad) -> Result<ChatLoadReport> {
    if load.clients == 0 {
        return Err(Error::argument("--clients must be at least 1"));
    }
    let client =
        crate::serve::traffic::client_with_timeout(load.ca_cert.as_deref(), Duration::from_secs(600))?;
    let models = client
        .get(format!("{}/v1/models", load.url))
        .bearer_auth(&load.key)
        .send()
        .await
        .map_err(|e| Error::service_failed(format!("cannot reach {}: {e}", load.url)))?;
    let models: serde_json::Value =
        serde_json::from_str(&models.text().await.unwrap_or_default()).unwrap_or_default();
    let model = models["data"][0]["id"].as_str().map(String::from).ok_or_else(|| {
        Error::not_found(format!("{} serves no language model (`vigil serve --llm MODEL.gguf`)", load.url))
    })?;
    // A service that has not logged yet has no file: its count starts at 0.
    let before = load.log_dir.as_deref().map(|d| chat_lines(d).unwrap_or(0));
    let started = Instant::now();
    let deadline = started + load.duration;
    let url: Arc<str> = Arc::from(load.url.as_str());
    let key: Arc<str> = Arc::from(load.key.as_str());
    let mut tasks = Vec::new();
    for c in 0..load.clients {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        let max_tokens = load.max_tokens;
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Varied prompts, as people ask: no two alike.
                let prompt = format!(
                    "Client {c}, question {n}: tell me something about the number {}.",
                    n * 7 + c as u64
                );
                outcomes.push(one(&client, &url, &key, prompt, max_tokens).await);
                n += 1;
            }
            outcomes
        }));
    }
    let mut report =
        ChatLoadReport { url: load.url.clone(), model, clients: load.clients, ..Default::default() };
    let mut ttft = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for t in tasks {
        let outcomes = t.await.map_err(|e| Error::internal(format!("a client failed: {e}")))?;
        for o in outcomes {
            report.requests += 1;
            if let Some(s) = o.status {
                *report.statuses.entry(s).or_default() += 1;
            }
            if let Some(t) = o.ttft {
                let _ = ttft.record((t.as_micros() as u64).max(1));
            }
            if let (Some(f), true) = (&o.finish, o.done) {
                report.finished += 1;
                *report.finish_reasons.entry(f.clone()).or_default() += 1;
            }
            report.completion_tokens += o.tokens;
            if let Some(e) = o.error {
                report.errors += 1;
                if report.first_errors.len() < 5 {
                    report.first_errors.push(e);
                }
            }
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.tokens_per_s = report.completion_tokens as f64 / report.elapsed_s.max(1e-9);
    let q = |p: f64| (!ttft.is_empty()).then(|| ttft.value_at_quantile(p) as f64 / 1000.0);
    report.ttft_p50_ms = q(0.5);
    report.ttft_p99_ms = q(0.99);
    report.ttft_max_ms = (!ttft.is_empty()).then(|| ttft.max() as f64 / 1000.0);
    if let (Some(dir), Some(before)) = (load.log_dir.as_deref(), before) {
        // The writer puts lines on disk within a moment of each request ending.
        let want = before + report.requests;
        let t0 = Instant::now();
        let mut now = chat_lines(dir);
        while now.is_some_and(|n| n < want) && t0.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = chat_lines(dir);
        }
        report.log_lines = now.map(|n| n - before);
    }
    Ok(report)
}
