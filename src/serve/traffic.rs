//! `vigil traffic`: realistic client traffic for a running service. It asks the service which
//! models it serves, loads the test split of the served model's data (the run's own split when
//! the run is in the local store, else the spec's), and sends those raw inputs at a steady rate
//! (an open loop: requests leave on schedule whether or not earlier ones came back, as real
//! clients do), then reports the statuses, latency percentiles and how often the service's
//! labels agreed with the test labels. Later profiles (abusive clients) build on this.
//!
//! A client of the HTTP API only: it never touches the service's key file or log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::model::ModelInfo;
use crate::error::{Error, Result};
use crate::ml::data::preprocess::PreparedData;
use crate::ml::data::{RawInputs, load};
use crate::ml::spec;
use crate::store::RunStore;

/// What to send.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// `http://host:port` or `https://host:port` (a bare `host:port` means http).
    pub addr: String,
    pub key: String,
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// The model to call; the first one served when `None`.
    pub model: Option<String>,
    /// Inputs per request.
    pub batch: usize,
    /// A PEM CA certificate to trust (for a self-signed service certificate).
    pub ca_cert: Option<PathBuf>,
    /// Where to look for the served run, to use its own test split.
    pub runs_dir: PathBuf,
    pub models_dir: PathBuf,
    /// Most requests waiting for an answer at once; beyond it requests are skipped and counted.
    pub max_in_flight: usize,
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub model: String,
    pub url: String,
    /// Where the inputs came from.
    pub inputs_from: String,
    pub sent: u64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (refused connection, reset, timeout).
    pub transport_errors: u64,
    /// Requests not sent because `max_in_flight` were waiting.
    pub skipped: u64,
    pub elapsed_s: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Inputs the service labelled, and how many of those labels matched the test labels.
    pub labelled: u64,
    pub agreed: u64,
    /// An example error message per status (and one for requests without an answer).
    pub errors: Vec<String>,
}

impl TrafficReport {
    /// Responses received.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Normalises `--addr` to a base URL.
pub fn base_url(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") { a.to_string() } else { format!("http://{a}") }
}

/// An HTTP client for the service, trusting `ca_cert` when given.
pub fn client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client> {
    super::server::install_crypto();
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::data(path, format!("not a PEM certificate: {e}")))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| Error::Invalid(format!("cannot build the HTTP client: {e}")))
}

#[derive(Deserialize)]
struct ModelList {
    models: Vec<ModelInfo>,
}

/// Asks the service which models it serves.
pub async fn models(client: &reqwest::Client, url: &str, key: &str) -> Result<Vec<ModelInfo>> {
    let resp = client
        .get(format!("{url}/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| Error::Invalid(format!("cannot reach the service at {url}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Error::Invalid(format!("{url}/v1/models answered {status}: {}", text.trim())));
    }
    let list: ModelList = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{url}/v1/models did not answer a model list: {e}")))?;
    Ok(list.models)
}

/// One request's JSON body and the test labels of its inputs.
pub type TestRequest = (Vec<u8>, Vec<String>);

/// Request bodies made of test-split inputs, `batch` per request, with the true labels, and a
/// description of where they came from.
pub fn test_requests(
    info: &ModelInfo,
    runs_dir: &std::path::Path,
    models_dir: &std::path::Path,
    batch: usize,
) -> Result<(Vec<TestRequest>, String)> {
    let store = RunStore::new(runs_dir);
    let (spec, from) = match store.resolve(&info.run).and_then(|d| d.spec()) {
        Ok(s) => (s, format!("the test split of run {}", info.run)),
        Err(_) => {
            let (s, _) = spec::resolve(&info.name, models_dir).map_err(|_| {
                Error::Invalid(format!(
                    "cannot find test data for model {}: run {} is not in {} and no spec is named {}",
                    info.name,
                    info.run,
                    runs_dir.display(),
                    info.name
                ))
            })?;
            (s, format!("the test split of spec {}", info.name))
        }
    };
    let ds = load(&spec.data.source)?;
    let split = PreparedData::split_of(&spec, &ds);
    if split.test.is_empty() {
        return Err(Error::Invalid(format!("{from} is empty")));
    }
    let label = |i: usize| ds.classes[ds.labels[i] as usize].clone();
    let mut out = Vec::new();
    for chunk in split.test.chunks(batch.max(1)) {
        let body = match &ds.inputs {
            RawInputs::Dense { values, shape } => {
                let d = shape.numel();
                // NaN (a missing value) goes out as null, as a client would send it.
                let rows: Vec<Vec<Option<f32>>> = chunk
                    .iter()
                    .map(|&i| {
                        values[i * d..(i + 1) * d].iter().map(|v| (!v.is_nan()).then_some(*v)).collect()
                    })
                    .collect();
                serde_json::to_vec(&serde_json::json!({ "inputs": rows }))
            }
            RawInputs::Text(texts) => {
                let rows: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
                serde_json::to_vec(&serde_json::json!({ "texts": rows }))
            }
        }
        .expect("inputs serialise");
        out.push((body, chunk.iter().map(|&i| label(i)).collect()));
    }
    Ok((out, from))
}

enum Outcome {
    Answer { status: u16, latency: Duration, labelled: u64, agreed: u64, error: Option<String> },
    Failed(String),
}

#[derive(Deserialize)]
struct Answer {
    predictions: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    label: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

async fn send(
    client: reqwest::Client,
    url: Arc<str>,
    key: Arc<str>,
    body: Vec<u8>,
    truth: Vec<String>,
) -> Outcome {
    let t0 = Instant::now();
    let resp = client
        .post(&*url)
        .bearer_auth(&*key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let status = resp.status().as_u16();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let latency = t0.elapsed();
    if status == 200 {
        let (labelled, agreed) = match serde_json::from_slice::<Answer>(&bytes) {
            Ok(a) => (
                a.predictions.len() as u64,
                a.predictions.iter().zip(&truth).filter(|(p, t)| &p.label == *t).count() as u64,
            ),
            Err(_) => (0, 0),
        };
        Outcome::Answer { status, latency, labelled, agreed, error: None }
    } else {
        let error = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        Outcome::Answer { status, latency, labelled: 0, agreed: 0, error: Some(format!("{status}: {error}")) }
    }
}

fn fill(report: &mut TrafficReport, hist: &Histogram<u64>, started: Instant) {
    report.elapsed_s = started.elapsed().as_secs_f64();
    let q = |p: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(p) as f64 / 1000.0);
    report.p50_ms = q(0.5);
    report.p90_ms = q(0.9);
    report.p99_ms = q(0.99);
    report.max_ms = (!hist.is_empty()).then(|| hist.max() as f64 / 1000.0);
}

/// Sends traffic until the duration is up or `stop` resolves, calling `progress` about once a
/// second with the report so far.
pub async fn run(
    config: TrafficConfig,
    mut progress: impl FnMut(&TrafficReport),
    stop: impl std::future::Future<Output = ()>,
) -> Result<TrafficReport> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        return Err(Error::Invalid(format!(
            "--rate {} must be a positive number of requests per second",
            config.rate
        )));
    }
    let url = base_url(&config.addr);
    let client = client(config.ca_cert.as_deref())?;
    let served = models(&client, &url, &config.key).await?;
    let info = match &config.model {
        Some(name) => served.iter().find(|m| &m.name == name).cloned().ok_or_else(|| {
            let names: Vec<&str> = served.iter().map(|m| m.name.as_str()).collect();
            Error::Invalid(format!("the service has no model {name:?}; it serves {}", names.join(", ")))
        })?,
        None => {
            served.first().cloned().ok_or_else(|| Error::Invalid("the service serves no model".into()))?
        }
    };
    let (requests, from) = test_requests(&info, &config.runs_dir, &config.models_dir, config.batch)?;
    let predict_url: Arc<str> = Arc::from(format!("{url}/v1/models/{}/predict", info.name));
    let key: Arc<str> = Arc::from(config.key.as_str());
    let mut report =
        TrafficReport { model: info.name.clone(), url: url.clone(), inputs_from: from, ..Default::default() };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut in_flight = 0usize;
    let mut next = 0usize;
    let mut last_progress = Instant::now();
    tokio::pin!(stop);
    let record = |o: Outcome, report: &mut TrafficReport, hist: &mut Histogram<u64>| match o {
        Outcome::Answer { status, latency, labelled, agreed, error } => {
            *report.statuses.entry(status).or_default() += 1;
            let _ = hist.record((latency.as_micros() as u64).max(1));
            report.labelled += labelled;
            report.agreed += agreed;
            // One example per status: messages differ in details (wait times, request ids).
            if let Some(e) = error
                && report.errors.len() < 5
                && !report.errors.iter().any(|x| x.starts_with(&format!("{status}:")))
            {
                report.errors.push(e);
            }
        }
        Outcome::Failed(e) => {
            report.transport_errors += 1;
            if report.errors.len() < 5 && !report.errors.iter().any(|x| x.starts_with("no answer:")) {
                report.errors.push(format!("no answer: {e}"));
            }
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                if in_flight >= config.max_in_flight {
                    report.skipped += 1;
                    continue;
                }
                let (body, truth) = requests[next % requests.len()].clone();
                next += 1;
                in_flight += 1;
                report.sent += 1;
                let tx = tx.clone();
                let fut = send(client.clone(), predict_url.clone(), key.clone(), body, truth);
                tokio::spawn(async move {
                    let _ = tx.send(fut.await);
                });
            }
            Some(o) = rx.recv() => {
                in_flight -= 1;
                record(o, &mut report, &mut hist);
            }
            _ = &mut stop => break,
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            fill(&mut report, &hist, started);
            progress(&report);
            last_progress = Instant::now();
        }
    }
    // Wait for the answers still on their way (bounded by the client's timeout).
    let drain = tokio::time::Instant::now() + Duration::from_secs(35);
    while in_flight > 0 {
        match tokio::time::timeout_at(drain, rx.recv()).await {
            Ok(Some(o)) => {
                in_flight -= 1;
                record(o, &mut report, &mut hist);
            }
            _ => break,
        }
    }
    fill(&mut report, &hist, started);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_urls() {
        assert_eq!(base_url("127.0.0.1:7878"), "http://127.0.0.1:7878");
        assert_eq!(base_url("https://h:1/"), "https://h:1");
    }
}
