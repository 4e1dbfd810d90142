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
use crate::ml::attack::extraction::{Answer as ThiefAnswer, BenignStream, Judge, Oracle, ThiefConfig, steal};
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
    /// Where to look for the served run, to use its own test split (with the store's sealing
    /// key, for a sealed run).
    pub store: RunStore,
    pub models_dir: PathBuf,
    /// Most requests waiting for an answer at once; beyond it requests are skipped and counted.
    pub max_in_flight: usize,
    /// Who the client pretends to be.
    pub profile: Profile,
    /// Extraction: the thief's query budget.
    pub queries: usize,
}

/// The kinds of client `vigil traffic` plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Natural inputs: test-split examples, each shifted and noised afresh (no two alike), at
    /// the given rate.
    #[default]
    Benign,
    /// A model thief: from 10 seed inputs, Jacobian-based synthetic queries, a substitute
    /// trained on the answers, its agreement with the victim measured as queries grow.
    Extraction,
    /// An attacker: the adversarial examples `vigil attack` saved for the run (PGD, the radius
    /// nearest 0.1), sent at the given rate; the labels that still agree with the truth are
    /// what the attack failed to change.
    Adversarial,
    /// Chat users of a language model (`vigil serve --llm`): --clients streaming completions
    /// back to back; reports errors, finish reasons, time to first token and tokens per second.
    Chat,
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
    /// Extraction: the substitute's agreement with the victim's labels on the test split,
    /// after each number of queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agreement: Vec<crate::ml::attack::extraction::AgreementPoint>,
    /// Extraction: the query count at which the service first refused the thief (403/429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_after: Option<u64>,
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
    client_with_timeout(ca_cert, Duration::from_secs(30))
}

/// [`client`] with a longer limit per request, for streamed completions that take minutes.
pub fn client_with_timeout(ca_cert: Option<&std::path::Path>, timeout: Duration) -> Result<reqwest::Client> {
    super::server::install_crypto();
    let mut b = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(256);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::data(path, format!("not a PEM certificate: {e}")))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| Error::service_failed(format!("cannot build the HTTP client: {e}")))
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
        .map_err(|e| Error::unreachable(format!("cannot reach the service at {url}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = format!("{url}/v1/models answered {status}: {}", text.trim());
        // 401/403: the key the user gave is refused (bad input); anything else is the service's.
        let refused = matches!(status.as_u16(), 401 | 403);
        return Err(if refused { Error::refused(msg) } else { Error::bad_answer(msg) });
    }
    let list: ModelList = serde_json::from_str(&text)
        .map_err(|e| Error::bad_answer(format!("{url}/v1/models did not answer a model list: {e}")))?;
    Ok(list.models)
}

/// One request's JSON body and the test labels of its inputs.
pub type TestRequest = (Vec<u8>, Vec<String>);

/// Request bodies made of test-split inputs, `batch` per request, with the true labels, and a
/// description of where they came from.
pub fn test_requests(
    info: &ModelInfo,
    store: &RunStore,
    models_dir: &std::path::Path,
    batch: usize,
) -> Result<(Vec<TestRequest>, String)> {
    let (ds, test, from) = test_split(info, store, models_dir)?;
    let label = |i: usize| ds.classes[ds.labels[i] as usize].clone();
    let mut out = Vec::new();
    for chunk in test.chunks(batch.max(1)) {
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

/// Where request bodies come from.
pub enum Source {
    /// Requests made in advance, sent in turn (texts).
    Cycle { requests: Vec<TestRequest>, next: usize },
    /// Fresh benign queries around the test split's numeric inputs, `batch` per request.
    Benign { stream: Box<BenignStream>, labels: Vec<String>, batch: usize },
}

impl Source {
    /// The next request body and the true labels of its inputs.
    pub fn next_request(&mut self) -> TestRequest {
        match self {
            Source::Cycle { requests, next } => {
                *next += 1;
                requests[(*next - 1) % requests.len()].clone()
            }
            Source::Benign { stream, labels, batch } => {
                let (rows, truth): (Vec<Vec<f32>>, Vec<String>) = (0..*batch)
                    .map(|_| {
                        let (i, q) = stream.next_query();
                        (q, labels[i].clone())
                    })
                    .unzip();
                let body =
                    serde_json::to_vec(&serde_json::json!({ "inputs": rows })).expect("inputs serialise");
                (body, truth)
            }
        }
    }
}

/// The test split of the served run (or of its spec), raw, with labels.
fn test_split(
    info: &ModelInfo,
    store: &RunStore,
    models_dir: &std::path::Path,
) -> Result<(crate::ml::data::Dataset, Vec<usize>, String)> {
    let (spec, from) = match store.resolve(&info.run).and_then(|d| d.spec()) {
        Ok(s) => (s, format!("the test split of run {}", info.run)),
        Err(_) => {
            let (s, _) = spec::resolve(&info.name, models_dir).map_err(|_| {
                Error::not_found(format!(
                    "cannot find test data for model {}: run {} is not in {} and no spec is named {}",
                    info.name,
                    info.run,
                    store.root().display(),
                    info.name
                ))
            })?;
            (s, format!("the test split of spec {}", info.name))
        }
    };
    let ds = load(&spec.data.source)?;
    let split = PreparedData::split_of(&spec, &ds);
    if split.test.is_empty() {
        return Err(Error::unsuitable(format!("{from} is empty")));
    }
    Ok((ds, split.test, from))
}

/// A benign client's requests: fresh variations of test inputs for numeric models (a client
/// repeating the same inputs would look like nothing real), test texts in turn for text models.
pub fn request_source(
    info: &ModelInfo,
    store: &RunStore,
    models_dir: &std::path::Path,
    batch: usize,
) -> Result<(Source, String)> {
    let (ds, test, from) = test_split(info, store, models_dir)?;
    match &ds.inputs {
        RawInputs::Dense { values, shape } if !values.iter().any(|v| v.is_nan()) => {
            let d = shape.numel();
            let pool: Vec<Vec<f32>> = test.iter().map(|&i| values[i * d..(i + 1) * d].to_vec()).collect();
            let labels = test.iter().map(|&i| ds.classes[ds.labels[i] as usize].clone()).collect();
            let stream = Box::new(BenignStream::new(pool, shape.clone(), 7));
            Ok((Source::Benign { stream, labels, batch: batch.max(1) }, format!("variations of {from}")))
        }
        _ => {
            let (requests, from) = test_requests(info, store, models_dir, batch)?;
            Ok((Source::Cycle { requests, next: 0 }, from))
        }
    }
}

/// The adversarial profile's requests: the examples `vigil attack` saved for the served run (the
/// PGD L∞ curve's radius nearest 0.1, else any saved curve's), mapped back to raw values through
/// the run's preprocessing, as an attacker would send them.
pub fn adversarial_source(info: &ModelInfo, store: &RunStore, batch: usize) -> Result<(Source, String)> {
    use crate::ml::attack::curve::{index, load_set};
    let run = store.resolve(&info.run).map_err(|e| {
        Error::not_found(format!(
            "the adversarial profile needs the served run in {}: {e}",
            store.root().display()
        ))
    })?;
    let curves = index(&run)?.curves;
    let saved = |c: &&crate::ml::attack::curve::Curve| {
        c.split == "test" && c.points.iter().any(|p| p.eps > 0.0 && p.file.is_some())
    };
    let curve =
        curves.iter().filter(saved).min_by_key(|c| (c.key != "pgd-linf-20", c.key.clone())).ok_or_else(
            || {
                Error::not_found(format!(
                    "run {} has no saved adversarial examples: make them with `vigil attack {} --method pgd`",
                    run.id, run.id
                ))
            },
        )?;
    let point = curve
        .points
        .iter()
        .filter(|p| p.eps > 0.0 && p.file.is_some())
        .min_by(|a, b| (a.eps - 0.1).abs().total_cmp(&(b.eps - 0.1).abs()))
        .expect("the curve has a saved point");
    let set = load_set(&run, point)?;
    let pipeline = run.pipeline()?;
    let crate::ml::data::Features::Dense { values, .. } = &set.adversarial else {
        return Err(Error::refused(format!(
            "{}: text attacks are replayed with `vigil attack`, not as traffic",
            run.id
        )));
    };
    let n = set.labels.len();
    let d = values.len() / n.max(1);
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|i| pipeline.untransform(&values[i * d..(i + 1) * d]).map_err(Error::unsuitable))
        .collect::<Result<_>>()?;
    let labels: Vec<String> = set.labels.iter().map(|&l| pipeline.classes[l as usize].clone()).collect();
    let requests = rows
        .chunks(batch.max(1))
        .zip(labels.chunks(batch.max(1)))
        .map(|(r, l)| {
            (serde_json::to_vec(&serde_json::json!({ "inputs": r })).expect("inputs serialise"), l.to_vec())
        })
        .collect();
    let from = format!(
        "{} adversarial examples at ε = {} `vigil attack` saved for run {} ({})",
        n,
        crate::ml::attack::fmt_num(point.eps),
        run.id,
        curve.label()
    );
    Ok((Source::Cycle { requests, next: 0 }, from))
}

/// The victim over HTTP, as the thief queries it.
struct HttpOracle {
    handle: tokio::runtime::Handle,
    client: reqwest::Client,
    url: String,
    key: String,
    classes: Vec<String>,
    report: TrafficReport,
    hist: Histogram<u64>,
    /// Inputs answered so far.
    answered: u64,
}

impl Oracle for HttpOracle {
    fn query(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<ThiefAnswer>> {
        let mut out = Vec::with_capacity(inputs.len());
        // Small requests, as a careful thief sends them (and within the service's default
        // limit of 256 inputs); they also show to within 50 queries when it was caught.
        for chunk in inputs.chunks(50) {
            let body = serde_json::to_vec(&serde_json::json!({ "inputs": chunk })).expect("inputs serialise");
            let t0 = Instant::now();
            self.report.sent += 1;
            let (status, text) = self.handle.block_on(async {
                let resp = self
                    .client
                    .post(&self.url)
                    .bearer_auth(&self.key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Error::unreachable(format!("no answer from {}: {e}", self.url)))?;
                let status = resp.status().as_u16();
                Ok::<_, Error>((status, resp.text().await.unwrap_or_default()))
            })?;
            let _ = self.hist.record((t0.elapsed().as_micros() as u64).max(1));
            *self.report.statuses.entry(status).or_default() += 1;
            if status != 200 {
                let msg = serde_json::from_str::<ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
                if matches!(status, 403 | 429) && self.report.refused_after.is_none() {
                    self.report.refused_after = Some(self.answered);
                }
                self.report.errors.push(format!("{status}: {msg}"));
                let msg = format!("the service refused the thief ({status}): {msg}");
                // As for the model list: a refused key is the user's input, the rest the service's.
                return Err(if matches!(status, 401 | 403) {
                    Error::refused(msg)
                } else {
                    Error::bad_answer(msg)
                });
            }
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::bad_answer(format!("the service's answer is not JSON: {e}")))?;
            let preds = v["predictions"].as_array().cloned().unwrap_or_default();
            for p in preds {
                let class = |name: &str| self.classes.iter().position(|c| c == name);
                let label = p["label"].as_str().and_then(class).unwrap_or(0);
                let mut shown: Vec<(usize, f32)> = Vec::new();
                if let Some(m) = p["probabilities"].as_object() {
                    shown.extend(m.iter().filter_map(|(c, x)| Some((class(c)?, x.as_f64()? as f32))));
                }
                if let Some(top) = p["top_k"].as_array() {
                    shown.extend(top.iter().filter_map(|e| {
                        Some((class(e["class"].as_str()?)?, e["probability"].as_f64()? as f32))
                    }));
                }
                self.answered += 1;
                out.push(ThiefAnswer { label, shown });
            }
        }
        Ok(out)
    }
}

/// The extraction profile: the thief of [`crate::ml::attack::extraction`] against the service.
/// Its seeds are 10 validation inputs of the served run; its agreement is judged on the test
/// split against the run's own predictions (the operator's copy of the model).
async fn extraction(
    config: &TrafficConfig,
    info: &ModelInfo,
    client: reqwest::Client,
    url: &str,
) -> Result<TrafficReport> {
    let store = &config.store;
    let run = store.resolve(&info.run).map_err(|e| {
        Error::not_found(format!(
            "the extraction profile needs the served run in {}: {e}",
            config.store.root().display()
        ))
    })?;
    let trained = crate::ml::train::load_trained(&run, crate::store::CheckpointKind::Best)?;
    let ds = load(&trained.spec.data.source)?;
    let split = PreparedData::split_of(&trained.spec, &ds);
    let RawInputs::Dense { values, shape } = &ds.inputs else {
        return Err(Error::unsuitable(format!(
            "the extraction profile steals numeric models; {} takes texts",
            info.name
        )));
    };
    let d = shape.numel();
    let raw = |i: usize| values[i * d..(i + 1) * d].to_vec();
    let seeds: Vec<Vec<f32>> = split.validation.iter().take(10).map(|&i| raw(i)).collect();
    let test: Vec<Vec<f32>> = split.test.iter().map(|&i| raw(i)).collect();
    let data = PreparedData::build(&trained.spec, Some(&trained.pipeline))?;
    let (_, victim, _) = crate::ml::train::predict(&trained.network, &data.test)?;
    let mut thief = ThiefConfig::default();
    thief.checkpoints.retain(|&c| c < config.queries);
    thief.checkpoints.push(config.queries);
    let shape = shape.clone();
    let classes = info.classes.clone();
    let mut oracle = HttpOracle {
        handle: tokio::runtime::Handle::current(),
        client,
        url: format!("{url}/v1/models/{}/predict", info.name),
        key: config.key.clone(),
        classes: classes.clone(),
        report: TrafficReport {
            model: info.name.clone(),
            url: url.to_string(),
            inputs_from: format!("a thief's synthetic queries from 10 validation inputs of run {}", info.run),
            ..Default::default()
        },
        hist: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        answered: 0,
    };
    let started = Instant::now();
    let (mut oracle, points) = tokio::task::spawn_blocking(move || {
        let judge = Judge { inputs: &test, victim_labels: &victim };
        let points = steal(&mut oracle, &seeds, &shape, classes.len(), judge, &thief, |_| {});
        (oracle, points)
    })
    .await
    .map_err(|e| Error::internal(format!("the thief's task failed: {e}")))?;
    match points {
        Ok(p) => oracle.report.agreement = p,
        // A refusal ends the theft; the report says where.
        Err(e) if oracle.report.refused_after.is_some() => {
            if oracle.report.errors.is_empty() {
                oracle.report.errors.push(e.to_string());
            }
        }
        Err(e) => return Err(e),
    }
    let hist = std::mem::replace(&mut oracle.hist, Histogram::new(3).expect("valid"));
    fill(&mut oracle.report, &hist, started);
    Ok(oracle.report)
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
        return Err(Error::argument(format!(
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
            Error::not_found(format!("the service has no model {name:?}; it serves {}", names.join(", ")))
        })?,
        None => served.first().cloned().ok_or_else(|| Error::not_found("the service serves no model"))?,
    };
    if config.profile == Profile::Extraction {
        return extraction(&config, &info, client, &url).await;
    }
    let (mut source, from) = match config.profile {
        Profile::Adversarial => adversarial_source(&info, &config.store, config.batch)?,
        _ => request_source(&info, &config.store, &config.models_dir, config.batch)?,
    };
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
                let (body, truth) = source.next_request();
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
