//! The HTTP application: shared state, the gate every request passes (request id, key, scope,
//! rate limit, timeout, access-log line, metrics) and the route handlers.
//!
//! The gate wraps the whole router, unknown paths included, and takes its access rules from
//! [`super::routes::ROUTES`], from which the router is also built. Handlers only run for callers
//! the gate let through, and report what they did (model, inputs, labels) to the gate through
//! the response's extensions, so that every request, whatever its fate, gives exactly one line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use serde::Serialize;
use serde::ser::SerializeMap;

use super::access_log::{AccessEvent, AccessLog};
use super::auth::{Caller, Denied, FileStamp, Keyring, now_unix};
use super::keys::OnExtraction;
use super::limits::unix_now;
use super::metrics::{Metrics, RequestLabels, RouteLabels};
use super::model::Batch;
use super::model::{PredictBody, RawBatch, ServedModel};
use super::policy::OutputPolicy;
use super::routes::{self, Access, EXPLAIN, PREDICT, ROUTES, RouteSpec};
use crate::ml::attack::prada::{Prada, PradaConfig};

/// Work (inputs x parameters) up to which a prediction runs right on the async worker: a small
/// forward pass takes microseconds, less than handing it to a blocking thread and back.
/// Anything larger goes to `spawn_blocking` so that one big batch cannot stall other requests.
const INLINE_COST: usize = 1_000_000;

/// Limits on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request body in bytes (413 beyond).
    pub max_body: usize,
    /// Most inputs in one request (422 beyond).
    pub max_inputs: usize,
    /// Longest a request may take (503 beyond).
    pub timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_body: 1024 * 1024, max_inputs: 256, timeout: Duration::from_secs(10) }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub models: HashMap<String, Arc<ServedModel>>,
    /// The body of `GET /v1/models`, built once.
    models_json: Bytes,
    /// Each model's predictions counter, looked up once (labels are Strings: building them per
    /// request would allocate).
    prediction_counters: HashMap<String, prometheus_client::metrics::counter::Counter>,
    pub keys: RwLock<Arc<Keyring>>,
    key_path: PathBuf,
    /// Serialises reloads of the key file and remembers when it was last looked at.
    reload: Mutex<Instant>,
    pub log: AccessLog,
    pub metrics: Metrics,
    pub limits: RequestLimits,
    /// Random per process, so request ids from different runs of the server differ.
    boot: u32,
    next_id: AtomicU64,
    /// PRADA's state per key and model: the key's queries to that model, for extraction alarms.
    extraction: Mutex<HashMap<WatchKey, Arc<Mutex<Watch>>>>,
}

/// A key's name and a model's name.
type WatchKey = (String, String);

/// One key's extraction watch on one model.
struct Watch {
    prada: Prada,
    /// When a throttled key was last answered.
    last_answered: Option<Instant>,
}

impl AppState {
    pub fn new(
        models: Vec<Arc<ServedModel>>,
        keys: Keyring,
        key_path: PathBuf,
        log: AccessLog,
        metrics: Metrics,
        limits: RequestLimits,
    ) -> Self {
        #[derive(Serialize)]
        struct List<'a> {
            models: Vec<&'a super::model::ModelInfo>,
        }
        let list = List { models: models.iter().map(|m| &m.info).collect() };
        let models_json = Bytes::from(serde_json::to_vec(&list).expect("model infos serialise"));
        let mut prediction_counters = HashMap::new();
        for m in &models {
            metrics.add_model(&m.info.name, &m.info.version, &m.info.run);
            let labels =
                super::metrics::ModelLabels { model: m.info.name.clone(), version: m.info.version.clone() };
            prediction_counters.insert(m.info.name.clone(), metrics.predictions.get_or_create_owned(&labels));
        }
        AppState {
            models: models.into_iter().map(|m| (m.info.name.clone(), m)).collect(),
            models_json,
            prediction_counters,
            keys: RwLock::new(Arc::new(keys)),
            key_path,
            reload: Mutex::new(Instant::now()),
            log,
            metrics,
            limits,
            boot: rand::random(),
            next_id: AtomicU64::new(1),
            extraction: Mutex::new(HashMap::new()),
        }
    }

    /// The extraction watch of a key on a model.
    fn watch(&self, key: &str, model: &str) -> Arc<Mutex<Watch>> {
        let mut all = self.extraction.lock().expect("the watch map lock is never poisoned");
        all.entry((key.to_string(), model.to_string()))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Watch { prada: Prada::new(PradaConfig::default()), last_answered: None }))
            })
            .clone()
    }

    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:08x}", self.boot, n as u32)
    }

    /// The keys in force.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keys.read().expect("the key lock is never poisoned: no panics inside").clone()
    }

    /// Reloads the key file when `vigil keys` changed it, at most once per `min_interval`;
    /// returns whether the keys changed. A half-written or broken file keeps the keys in force.
    pub fn reload_keys_if_changed(&self, min_interval: Duration) -> bool {
        let Ok(mut last) = self.reload.try_lock() else { return false };
        if last.elapsed() < min_interval {
            return false;
        }
        *last = Instant::now();
        let current = self.keyring();
        if FileStamp::of(&self.key_path) == current.stamp {
            return false;
        }
        match Keyring::load(&self.key_path, &current.usage(), Some(&current), &self.metrics) {
            Ok(ring) => {
                *self.keys.write().expect("the key lock is never poisoned: no panics inside") =
                    Arc::new(ring);
                true
            }
            Err(e) => {
                eprintln!("keys: keeping the keys in force, cannot reload: {e}");
                false
            }
        }
    }
}

/// What the gate hands a handler.
#[derive(Clone)]
pub struct Ctx {
    pub request_id: Arc<str>,
    pub caller: Option<Arc<Caller>>,
    /// When the request's time is up.
    pub deadline: Instant,
}

/// What a predict handler tells the gate for the log (a response extension).
#[derive(Clone, Default)]
struct PredictNote {
    model: Option<Arc<ServedModel>>,
    inputs: usize,
    labels: Vec<u32>,
    raw: Option<RawBatch>,
    policy: Option<OutputPolicy>,
    budget_left: Option<u64>,
    bytes_in: Option<u64>,
    /// Detector marks for the log (`ood`, `extraction`).
    flags: Vec<String>,
    /// The key's PRADA W after this request.
    extraction_w: Option<f64>,
}

/// Why a request failed, for the log (a response extension).
#[derive(Clone)]
struct ErrorText(String);

/// A JSON error response: `{"error": "...", "request_id": "..."}`.
fn error(status: StatusCode, message: String, request_id: &str) -> Response {
    #[derive(Serialize)]
    struct E<'a> {
        error: &'a str,
        request_id: &'a str,
    }
    let body = serde_json::to_vec(&E { error: &message, request_id }).expect("errors serialise");
    let mut r = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response();
    r.extensions_mut().insert(ErrorText(message));
    r
}

fn denied(d: &Denied, request_id: &str) -> Response {
    let status = StatusCode::from_u16(d.status()).expect("401 and 403 are valid");
    let mut r = error(status, d.message(), request_id);
    if let Ok(v) = HeaderValue::from_str(&d.challenge()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn too_many(message: String, retry_after_s: u64, request_id: &str) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, message, request_id);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
    r
}

/// A request on its way through the gate. Dropped before it is finished (the client hung up
/// and hyper dropped the request), it still writes its line, with status 499 as nginx does,
/// so the log never has fewer lines than requests.
struct Pending {
    st: Arc<AppState>,
    time: SystemTime,
    t0: Instant,
    request_id: Arc<str>,
    client: Option<SocketAddr>,
    method: &'static str,
    route: Option<&'static str>,
    path: String,
    caller: Option<Arc<Caller>>,
    bytes_in: u64,
    done: bool,
}

fn method_name(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

impl Pending {
    fn finish(mut self, mut resp: Response) -> Response {
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        let status = resp.status().as_u16();
        let bytes_out = axum::body::HttpBody::size_hint(resp.body()).exact().unwrap_or(0);
        let note = resp.extensions_mut().remove::<PredictNote>().unwrap_or_default();
        let error = resp.extensions_mut().remove::<ErrorText>().map(|e| e.0);
        self.record(status, bytes_out, note, error);
        resp
    }

    fn record(&mut self, status: u16, bytes_out: u64, note: PredictNote, error: Option<String>) {
        self.done = true;
        let latency = self.t0.elapsed();
        let st = &self.st;
        st.metrics.in_flight.dec();
        let route = self.route.unwrap_or("none");
        st.metrics.requests.get_or_create(&RequestLabels { route, method: self.method, status }).inc();
        st.metrics.latency.get_or_create(&RouteLabels { route }).observe(latency.as_secs_f64());
        if let Some(c) = &self.caller {
            c.requests.inc();
            if let (Some(left), Some(g)) = (note.budget_left, &c.budget_gauge) {
                g.set(left as i64);
            }
        }
        if let Some(m) = &note.model
            && status == 200
            && let Some(counter) = st.prediction_counters.get(&m.info.name)
        {
            counter.inc_by(note.inputs as u64);
        }
        st.log.record(AccessEvent {
            time: self.time,
            request_id: self.request_id.clone(),
            key: self.caller.as_ref().map(|c| c.name.clone()),
            client: self.client,
            method: self.method,
            route: self.route,
            path: std::mem::take(&mut self.path),
            model: note.model,
            status,
            bytes_in: note.bytes_in.unwrap_or(self.bytes_in),
            bytes_out,
            latency_us: latency.as_micros() as u64,
            inputs: note.inputs,
            labels: note.labels,
            raw: note.raw,
            policy: note.policy,
            budget_left: note.budget_left,
            error,
            flags: note.flags,
            extraction_w: note.extraction_w,
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.record(
                499,
                0,
                PredictNote::default(),
                Some("the client closed the connection before the response".into()),
            );
        }
    }
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The gate in front of every route: see the module documentation.
pub async fn gate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = method_name(req.method());
    let (route, access) = routes::classify(method, req.uri().path());
    st.metrics.in_flight.inc();
    let mut pending = Pending {
        time: SystemTime::now(),
        t0,
        request_id: Arc::from(st.request_id()),
        client: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        method,
        route,
        path: req.uri().path().to_string(),
        caller: None,
        bytes_in: content_length(req.headers()),
        done: false,
        st: st.clone(),
    };
    if access != Access::Open {
        let check = |keys: &Keyring| {
            keys.authenticate(req.headers().get(header::AUTHORIZATION), access.scope(), now_unix())
        };
        let mut result = check(&st.keyring());
        if let Err(r) = &result
            && r.denied == Denied::Unknown
            && st.reload_keys_if_changed(Duration::ZERO)
        {
            // A key created a moment ago works at once, not only after the next periodic
            // reload. An unknown key costs one stat of the key file; the file is only read
            // again when it changed, so a flood of bad keys is not a flood of file reads.
            result = check(&st.keyring());
        }
        let caller = match result {
            Ok(c) => c,
            Err(refusal) => {
                pending.caller = refusal.caller;
                let r = denied(&refusal.denied, &pending.request_id);
                return pending.finish(r);
            }
        };
        pending.caller = Some(caller.clone());
        if let Some(rate) = &caller.rate
            && let Err(wait) = rate.check()
        {
            let cfg = rate.config;
            let msg = format!(
                "rate limit: this key may send {} requests per second (bursts of {}); retry in {} ms",
                cfg.per_second,
                cfg.burst,
                wait.as_millis().max(1)
            );
            let r = too_many(msg, wait.as_secs_f64().ceil() as u64, &pending.request_id);
            return pending.finish(r);
        }
    }
    let limit = st.limits.timeout;
    req.extensions_mut().insert(Ctx {
        request_id: pending.request_id.clone(),
        caller: pending.caller.clone(),
        deadline: t0 + limit,
    });
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than the service's limit of {} ms", limit.as_millis()),
            &pending.request_id,
        ),
    };
    pending.finish(resp)
}

/// Builds the router from the route table, behind the gate.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r: Router<Arc<AppState>> = Router::new();
    for spec in ROUTES {
        r = r.route(spec.path, handler(spec));
    }
    r.fallback(not_found).layer(axum::middleware::from_fn_with_state(state.clone(), gate)).with_state(state)
}

fn handler(spec: &RouteSpec) -> MethodRouter<Arc<AppState>> {
    match (spec.method, spec.path) {
        ("GET", "/healthz") => get(healthz),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/models") => get(list_models),
        ("POST", PREDICT) => post(predict),
        ("POST", EXPLAIN) => post(explain),
        _ => unreachable!("route {} {} is in ROUTES without a handler", spec.method, spec.path),
    }
}

async fn not_found(Extension(ctx): Extension<Ctx>, req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route {} {}; the service has {}", req.method(), req.uri().path(), route_list()),
        &ctx.request_id,
    )
}

fn route_list() -> String {
    ROUTES.iter().map(|r| format!("{} {}", r.method, r.path)).collect::<Vec<_>>().join(", ")
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let stats = &st.log.stats;
    let failing = stats.last_error.lock().map(|e| e.is_some()).unwrap_or(true);
    let json = HeaderValue::from_static("application/json");
    if failing {
        let body = r#"{"status":"degraded","reason":"the access log cannot be written"}"#;
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, json)], body).into_response()
    } else {
        ([(header::CONTENT_TYPE, json)], r#"{"status":"ok"}"#).into_response()
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let text = st.metrics.encode(&st.log.stats);
    let ct = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, ct)], text).into_response()
}

async fn list_models(State(st): State<Arc<AppState>>) -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], st.models_json.clone()).into_response()
}

/// Class probabilities as a JSON object, class name → probability, in class order.
struct Probabilities<'a> {
    shown: &'a [(usize, f32)],
    classes: &'a [String],
}

impl Serialize for Probabilities<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.shown.len()))?;
        for (i, p) in self.shown {
            m.serialize_entry(&self.classes[*i], p)?;
        }
        m.end()
    }
}

/// The top k classes as an array, most probable first: an array because its order is the
/// point, and JSON objects have none (JavaScript even reorders keys like "0".."9").
struct TopK<'a> {
    shown: &'a [(usize, f32)],
    classes: &'a [String],
}

impl Serialize for TopK<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            class: &'a str,
            probability: f32,
        }
        s.collect_seq(self.shown.iter().map(|(i, p)| Entry { class: &self.classes[*i], probability: *p }))
    }
}

/// One input's answer: the label always; the probabilities (`full`, `round:D`) or the top
/// classes (`top-k:K`) as the key's output policy allows.
#[derive(Serialize)]
struct Prediction<'a> {
    label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Probabilities<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<TopK<'a>>,
}

#[derive(Serialize)]
struct PredictResponse<'a> {
    model: &'a str,
    version: &'a str,
    predictions: Vec<Prediction<'a>>,
}

/// Maps a body that is not JSON, or not the right JSON, to 400 or 422 with the place it broke.
fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> (StatusCode, String) {
    let path = e.path().to_string();
    let inner = e.into_inner();
    use serde_json::error::Category;
    match inner.classify() {
        Category::Data => {
            let at = if path == "." { "the body".to_string() } else { path };
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{at}: {inner}"))
        }
        Category::Eof if inner.line() == 1 && inner.column() == 0 => (
            StatusCode::BAD_REQUEST,
            "the body is empty: send {\"inputs\": [[...], ...]} or {\"texts\": [...]}".into(),
        ),
        Category::Eof => {
            (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: it ends early ({inner})"))
        }
        _ => (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {inner}")),
    }
}

/// Bytes of an oversized body read and thrown away before the 413 goes out. Closing a socket
/// with unread data makes the kernel reset the connection, and a client still sending then
/// never sees the answer; draining a moderately oversized body (as nginx's lingering close
/// does) lets it read the 413. Larger bodies are cut off.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads a body of at most `max` bytes; past that, drains up to [`DRAIN_LIMIT`] and says it was
/// too large. A body in one frame (the usual case) is returned without copying.
async fn read_body(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut frames: Vec<Bytes> = Vec::new();
    let (mut kept, mut seen) = (0usize, 0u64);
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if over || kept + data.len() > max {
            over = true;
            if seen > DRAIN_LIMIT.max(max as u64) {
                break;
            }
            continue;
        }
        kept += data.len();
        frames.push(data);
    }
    if over {
        return Err(BodyError::TooLarge);
    }
    Ok(match frames.len() {
        1 => frames.pop().expect("one frame"),
        _ => Bytes::from(frames.concat()),
    })
}

/// Parses a predict body. The fast path is plain serde_json; only a body that fails is parsed
/// again with path tracking, to say where it broke (tracking every value of every good body
/// cost a few percent of the server's CPU).
fn parse_body(bytes: &[u8]) -> Result<PredictBody, (StatusCode, String)> {
    if let Ok(b) = serde_json::from_slice(bytes) {
        return Ok(b);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: PredictBody = serde_path_to_error::deserialize(&mut de).map_err(body_error)?;
    de.end().map_err(|e| (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
    Ok(body)
}

/// A request that passed every check before the model runs: model found, key known, body read
/// and parsed, inputs prepared, budget spent, time left.
struct Accepted {
    model: Arc<ServedModel>,
    caller: Arc<Caller>,
    batch: super::model::Batch,
    n: usize,
    now: u64,
    note: PredictNote,
}

impl Accepted {
    /// Gives the budget back when the model fails or time runs out: the caller got nothing.
    fn refund(&self) {
        if let Some(b) = &self.caller.budget {
            b.refund(self.n as u64, self.now);
        }
    }
}

/// The checks predict and explain share, in the order that costs least first; a refusal comes
/// back as the response to send.
async fn accept(st: &AppState, ctx: &Ctx, name: &str, req: Request) -> Result<Accepted, Response> {
    let id = &*ctx.request_id;
    let mut note = PredictNote::default();
    let fail = |status: StatusCode, msg: String, note: PredictNote| {
        let mut r = error(status, msg, id);
        r.extensions_mut().insert(note);
        r
    };
    let Some(model) = st.models.get(name).cloned() else {
        let names: Vec<&str> = st.models.keys().map(String::as_str).collect();
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("no model named {name:?}; this service has {}", names.join(", ")),
            note,
        ));
    };
    note.model = Some(model.clone());
    let Some(caller) = ctx.caller.clone() else {
        // The gate always sets a caller on this route; refuse rather than serve anonymously.
        return Err(fail(StatusCode::UNAUTHORIZED, "no key".into(), note));
    };
    note.policy = Some(caller.policy);
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ok = ct.to_str().is_ok_and(|v| {
            let v = v.split(';').next().unwrap_or("").trim();
            v.eq_ignore_ascii_case("application/json")
        });
        if !ok {
            return Err(fail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the body must be JSON: send Content-Type: application/json (got {:?})",
                    ct.to_str().unwrap_or("?")
                ),
                note,
            ));
        }
    }
    let max = st.limits.max_body;
    let too_large = || {
        format!("the body is larger than the service's limit of {max} bytes; send fewer inputs per request")
    };
    let length = content_length(req.headers());
    if length > max as u64 && length > DRAIN_LIMIT {
        // Far too large to be worth reading: answer at once (the connection then closes).
        return Err(fail(StatusCode::PAYLOAD_TOO_LARGE, too_large(), note));
    }
    let bytes = match read_body(req.into_body(), max).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(fail(StatusCode::PAYLOAD_TOO_LARGE, too_large(), note)),
        Err(BodyError::Read(e)) => {
            return Err(fail(StatusCode::BAD_REQUEST, format!("could not read the body: {e}"), note));
        }
    };
    note.bytes_in = Some(bytes.len() as u64);
    let body: PredictBody = match parse_body(&bytes) {
        Ok(b) => b,
        Err((status, msg)) => return Err(fail(status, msg, note)),
    };
    let (batch, raw) = match model.prepare(body, st.limits.max_inputs) {
        Ok(v) => v,
        Err(e) => return Err(fail(StatusCode::UNPROCESSABLE_ENTITY, e.0, note)),
    };
    let n = batch.len();
    note.inputs = n;
    note.raw = Some(raw);
    let now = unix_now();
    if let Some(budget) = &caller.budget {
        match budget.try_spend(n as u64, now) {
            Ok(left) => note.budget_left = Some(left),
            Err(r) => {
                note.budget_left = Some(r.limit.saturating_sub(r.used));
                let msg = format!(
                    "query budget spent: this key may predict {} inputs per {} window, has used {} and \
                     asked for {} more; it renews in {} s",
                    r.limit,
                    match budget.budget.period {
                        super::keys::Period::Hour => "hour",
                        super::keys::Period::Day => "day",
                        super::keys::Period::Month => "30-day",
                    },
                    r.used,
                    r.asked,
                    r.retry_after_s
                );
                let mut resp = too_many(msg, r.retry_after_s, id);
                resp.extensions_mut().insert(note);
                return Err(resp);
            }
        }
    }
    if Instant::now() >= ctx.deadline {
        if let Some(b) = &caller.budget {
            b.refund(n as u64, now);
        }
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than the service's limit of {} ms",
                st.limits.timeout.as_millis()
            ),
            note,
        ));
    }
    Ok(Accepted { model, caller, batch, n, now, note })
}

async fn predict(
    State(st): State<Arc<AppState>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let id = &*ctx.request_id;
    let Accepted { model, caller, batch, n, now, mut note } = match accept(&st, &ctx, &name, req).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let fail = |status: StatusCode, msg: String, note: PredictNote| {
        let mut r = error(status, msg, id);
        r.extensions_mut().insert(note);
        r
    };
    let refund = |_: &PredictNote| {
        if let Some(b) = &caller.budget {
            b.refund(n as u64, now);
        }
    };
    let guard = caller.record.guard;
    let watch = st.watch(&caller.name, &model.info.name);
    // A key already in extraction alarm is blocked or throttled before any work, per its guard.
    {
        let mut w = watch.lock().expect("a watch lock is never poisoned");
        if w.prada.alarm() {
            note.flags.push("extraction".into());
            note.extraction_w = w.prada.w();
            let stat = w.prada.w().map_or("?".into(), |v| format!("{v:.3}"));
            let why = format!(
                "this key's queries look like model extraction (PRADA: W = {stat} below {})",
                PradaConfig::default().delta
            );
            match guard.on_extraction {
                OnExtraction::Block => {
                    refund(&note);
                    let msg = format!("{why}; the key is blocked: ask the operator for another");
                    return fail(StatusCode::FORBIDDEN, msg, note);
                }
                OnExtraction::Throttle
                    if w.last_answered.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) =>
                {
                    refund(&note);
                    let msg = format!("{why}; the key is throttled to one request per second");
                    return fail(StatusCode::TOO_MANY_REQUESTS, msg, note);
                }
                _ => w.last_answered = Some(Instant::now()),
            }
        }
    }
    // A key that refuses unusual inputs cannot be served by a model that cannot tell them.
    if let (true, Err(reason)) = (guard.reject_ood, model.detector()) {
        refund(&note);
        let msg = format!(
            "this key refuses inputs unlike the training data, but {name} has no input detector to \
             tell them ({reason}); use a key without --reject-ood"
        );
        return fail(StatusCode::UNPROCESSABLE_ENTITY, msg, note);
    }
    let m = model.clone();
    // The batch comes back with the answer: PRADA needs the inputs afterwards.
    let work = move || -> crate::error::Result<(Vec<f32>, Vec<bool>, Batch)> {
        let (probs, ood) = m.predict_guarded(&batch)?;
        Ok((probs, ood, batch))
    };
    let result = if model.cost(n) <= INLINE_COST {
        work()
    } else {
        match tokio::task::spawn_blocking(work).await {
            Ok(r) => r,
            Err(e) => Err(crate::error::Error::internal(format!("the prediction task failed: {e}"))),
        }
    };
    let (probs, ood, batch) = match result {
        Ok(p) => p,
        Err(e) => {
            refund(&note);
            return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("the model failed: {e}"), note);
        }
    };
    if let Some(i) = ood.iter().position(|&f| f) {
        note.flags.insert(0, "ood".into());
        if guard.reject_ood {
            refund(&note);
            let msg = format!(
                "inputs[{i}] is unlike the data {name} was trained on (its input detector flags it; \
                 calibrated to {}), and this key refuses such inputs",
                model.detector().map(|d| d.calibration()).unwrap_or_default()
            );
            return fail(StatusCode::UNPROCESSABLE_ENTITY, msg, note);
        }
    }
    let k = model.classes.len();
    let shown: Vec<_> = probs.chunks(k).map(|p| caller.policy.apply(p)).collect();
    note.labels = shown.iter().map(|s| s.label as u32).collect();
    // PRADA sees each input as the model does, with the class the model gave it. Text inputs
    // are token ids: no distance between them means anything to it.
    if let Batch::Dense { n, values } = &batch {
        let width = values.len() / (*n).max(1);
        let mut w = watch.lock().expect("a watch lock is never poisoned");
        let predicted = probs.chunks(k).map(argmax);
        for (x, class) in values.chunks(width.max(1)).zip(predicted) {
            w.prada.observe(x, class);
        }
        if w.prada.alarm() && !note.flags.iter().any(|f| f == "extraction") {
            note.flags.push("extraction".into());
        }
        note.extraction_w = w.prada.w();
    }
    let classes = model.classes.as_slice();
    let out = PredictResponse {
        model: &model.info.name,
        version: &model.info.version,
        predictions: shown
            .iter()
            .map(|s| {
                let shown = s.probabilities.as_deref();
                let top = matches!(caller.policy.view, super::policy::View::TopK(_));
                Prediction {
                    label: &classes[s.label],
                    probabilities: shown.filter(|_| !top).map(|shown| Probabilities { shown, classes }),
                    top_k: shown.filter(|_| top).map(|shown| TopK { shown, classes }),
                }
            })
            .collect(),
    };
    let body = serde_json::to_vec(&out).expect("predictions serialise");
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::from(body))
        .into_response();
    resp.extensions_mut().insert(note);
    resp
}

/// The explain route's options, from the query string.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    /// saliency, grad-input, ig (the default), smoothgrad or occlusion.
    method: Option<String>,
    /// The class to attribute, by name or index; each input's predicted class when absent.
    target: Option<String>,
}

/// One input's explanation as the caller sees it: the answer shaped by the key's output policy,
/// and the attributions, one per input value (per token for text).
#[derive(Serialize)]
struct ExplainedOut<'a> {
    #[serde(flatten)]
    prediction: Prediction<'a>,
    target: &'a str,
    attributions: &'a [f32],
    /// Integrated gradients: how far the attributions' sum is from the output's change.
    #[serde(skip_serializing_if = "Option::is_none")]
    completeness_delta: Option<f64>,
}

async fn explain(
    State(st): State<Arc<AppState>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    query: Result<axum::extract::Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let id = &*ctx.request_id;
    // The options are checked before the body is read or the budget spent.
    let query = match query {
        Ok(q) => q.0,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad query string: {e}; it takes method=saliency|grad-input|ig|smoothgrad|occlusion and target=CLASS"
                ),
                id,
            );
        }
    };
    let method_name = query.method.as_deref().unwrap_or("ig");
    if !crate::ml::explain::METHOD_NAMES.contains(&method_name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown method {method_name:?}; the methods are {}",
                crate::ml::explain::METHOD_NAMES.join(", ")
            ),
            id,
        );
    }
    let acc = match accept(&st, &ctx, &name, req).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let fail = |status: StatusCode, msg: String, acc: Accepted| {
        acc.refund();
        let mut r = error(status, msg, id);
        r.extensions_mut().insert(acc.note);
        r
    };
    let model = acc.model.clone();
    if let Some(why) = model.cannot_explain() {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, why, acc);
    }
    let classes = model.classes.as_slice();
    let target = match query.target.as_deref() {
        None => None,
        Some(t) => match classes
            .iter()
            .position(|c| c == t)
            .or_else(|| t.parse::<usize>().ok().filter(|&i| i < classes.len()))
        {
            Some(i) => Some(i),
            None => {
                let msg =
                    format!("target {t:?} is not a class of {name}; the classes are {}", classes.join(", "));
                return fail(StatusCode::UNPROCESSABLE_ENTITY, msg, acc);
            }
        },
    };
    let method = match crate::ml::explain::Method::named(method_name, &model.pipeline.input) {
        Ok(m) => m,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string(), acc),
    };
    let batch = acc.batch.clone();
    let m = model.clone();
    let method_for_task = method.clone();
    // Attribution costs many forward and backward passes: never on the async workers.
    let result = match tokio::task::spawn_blocking(move || m.explain(batch, &method_for_task, target)).await {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::internal(format!("the explanation task failed: {e}"))),
    };
    let explanations = match result {
        Ok(e) => e,
        Err(e) => {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("the explanation failed: {e}"), acc);
        }
    };
    if Instant::now() >= ctx.deadline {
        let msg = format!(
            "the request took longer than the service's limit of {} ms",
            st.limits.timeout.as_millis()
        );
        return fail(StatusCode::SERVICE_UNAVAILABLE, msg, acc);
    }
    let Accepted { caller, mut note, .. } = acc;
    let shown: Vec<_> = explanations.iter().map(|e| caller.policy.apply(&e.probabilities)).collect();
    note.labels = shown.iter().map(|s| s.label as u32).collect();
    let top = matches!(caller.policy.view, super::policy::View::TopK(_));
    let out: Vec<ExplainedOut> = explanations
        .iter()
        .zip(&shown)
        .map(|(e, s)| {
            let p = s.probabilities.as_deref();
            ExplainedOut {
                prediction: Prediction {
                    label: &classes[s.label],
                    probabilities: p.filter(|_| !top).map(|shown| Probabilities { shown, classes }),
                    top_k: p.filter(|_| top).map(|shown| TopK { shown, classes }),
                },
                target: &classes[e.target],
                attributions: &e.attributions,
                completeness_delta: e.completeness.as_ref().map(|c| c.gap),
            }
        })
        .collect();
    #[derive(Serialize)]
    struct ExplainResponse<'a> {
        model: &'a str,
        version: &'a str,
        method: String,
        explanations: Vec<ExplainedOut<'a>>,
    }
    let body = ExplainResponse {
        model: &model.info.name,
        version: &model.info.version,
        method: method.describe(),
        explanations: out,
    };
    let body = serde_json::to_vec(&body).expect("explanations serialise");
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::from(body))
        .into_response();
    resp.extensions_mut().insert(note);
    resp
}

/// The index of the largest value.
fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}
