//! The service's router: shared state, the gate every request passes (request id, key, scope,
//! rate limit, timeout, access-log line, metrics), the route table's handlers, and the small
//! handlers; the prediction and explanation handlers, with their request bodies and responses,
//! are in [`handlers`].
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

use super::access_log::{AccessEvent, AccessLog, Flag, RequestNote};
use super::auth::{Caller, Denied, FileStamp, Keyring, now_unix};
use super::keys::OnExtraction;
use super::limits::unix_now;
use super::llm::LlmService;
use super::metrics::{Metrics, RequestLabels, RouteLabels};
use super::model::Batch;
use super::model::{PredictBody, ServedModel};
use super::routes::{self, Access, CHAT, COMPLETIONS, EMBED, EXPLAIN, PREDICT, ROUTES, RouteSpec};
use crate::ml::attack::prada::{Prada, PradaConfig};
use crate::store::seal::SealKey;

mod generate;
mod handlers;

use generate::{chat_completions, completions};
use handlers::{embed, explain, predict};

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
    /// Longest the body may take to arrive (408 beyond): a body that stalls, or is shorter than
    /// its Content-Length, is answered well before the request timeout.
    pub body_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body: 1024 * 1024,
            max_inputs: 256,
            timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
        }
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
    /// The store's sealing key, for a key file that `vigil seal` sealed.
    key_seal: Option<Arc<SealKey>>,
    /// Serialises reloads of the key file and remembers when it was last looked at.
    reload: Mutex<Instant>,
    pub log: AccessLog,
    pub metrics: Metrics,
    pub limits: RequestLimits,
    /// Random per process, so request ids from different runs of the server differ.
    boot: u32,
    next_id: AtomicU64,
    /// PRADA's state per key and model: the key's queries to that model, for extraction alarms.
    /// By key name, then model name: nested so that a lookup borrows the names (a tuple of
    /// Strings as the key cost two allocations per request).
    extraction: Mutex<HashMap<String, ModelWatches>>,
    /// The language model, when the service serves one (`--llm`).
    pub llm: Option<Arc<LlmService>>,
}

/// One key's extraction watches, by model name.
type ModelWatches = HashMap<String, Arc<Mutex<Watch>>>;

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
        key_seal: Option<Arc<SealKey>>,
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
            key_seal,
            reload: Mutex::new(Instant::now()),
            log,
            metrics,
            limits,
            boot: rand::random(),
            next_id: AtomicU64::new(1),
            extraction: Mutex::new(HashMap::new()),
            llm: None,
        }
    }

    /// Serves a language model too (`--llm`): its routes answer, and `/v1/models` names it.
    pub fn with_llm(mut self, llm: Option<Arc<LlmService>>) -> Self {
        self.models_json = models_json_with(self.models_json, llm.as_deref());
        self.llm = llm;
        self
    }

    /// The extraction watch of a key on a model.
    fn watch(&self, key: &str, model: &str) -> Arc<Mutex<Watch>> {
        let mut all = self.extraction.lock().expect("the watch map lock is never poisoned");
        if let Some(w) = all.get(key).and_then(|m| m.get(model)) {
            return w.clone();
        }
        all.entry(key.to_string())
            .or_default()
            .entry(model.to_string())
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
        match Keyring::load(
            &self.key_path,
            &current.usage(),
            Some(&current),
            &self.metrics,
            self.key_seal.as_deref(),
        ) {
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

/// `GET /v1/models` with a language model: the classifiers' `models` list as before, and the
/// OpenAI shape (`"object": "list"`, `data`) that OpenAI clients read, naming the language
/// model. Without one the body is what it always was.
fn models_json_with(classifiers: Bytes, llm: Option<&LlmService>) -> Bytes {
    let Some(llm) = llm else { return classifiers };
    let mut v: serde_json::Value = serde_json::from_slice(&classifiers).expect("the model list is JSON");
    v["object"] = "list".into();
    v["data"] = serde_json::json!([{
        "id": llm.info.name, "object": "model", "created": 0, "owned_by": "vigil",
        "architecture": llm.info.architecture, "context_length": llm.info.context_length,
        "parameters": llm.info.parameters, "file_bytes": llm.info.file_bytes,
        "quantisation": llm.info.file_type, "tensor_types": llm.info.quantisations,
        "chat_template": llm.info.chat_template,
    }]);
    Bytes::from(serde_json::to_vec(&v).expect("the model list serialises"))
}

/// What the gate hands a handler.
#[derive(Clone)]
pub struct Ctx {
    pub request_id: Arc<str>,
    pub caller: Option<Arc<Caller>>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// When the request's time is up.
    pub deadline: Instant,
}

/// A streamed answer's log note, filled in while its body streams: the gate writes the
/// request's line when the body ends (or, status 499, when the client goes before it does).
#[derive(Clone, Default)]
pub struct StreamNote(pub Arc<Mutex<RequestNote>>);

/// A streamed body that writes its request's access-log line when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    pending: Option<Pending>,
    note: StreamNote,
    status: u16,
    bytes: u64,
}

impl LoggedBody {
    fn note(&self) -> RequestNote {
        std::mem::take(&mut *self.note.0.lock().expect("the note lock is never poisoned"))
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            std::task::Poll::Ready(None) => {
                if let Some(mut pending) = self.pending.take() {
                    let note = self.note();
                    pending.record(self.status, self.bytes, note, None);
                }
            }
            _ => {}
        }
        polled
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(mut pending) = self.pending.take() {
            let mut note = self.note();
            let tokens = note.generation.as_ref().map_or(0, |g| g.completion_tokens);
            if let Some(g) = &mut note.generation
                && g.finish_reason.is_none()
            {
                g.finish_reason = Some("cancelled".into());
            }
            let why = format!(
                "the client closed the connection mid-stream; generation cancelled after {tokens} tokens"
            );
            pending.record(499, self.bytes, note, Some(why));
        }
    }
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

/// [`error`] carrying what the request had done so far, for its access-log line.
fn error_noted(status: StatusCode, message: String, request_id: &str, note: RequestNote) -> Response {
    let mut r = error(status, message, request_id);
    r.extensions_mut().insert(note);
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
        if let Some(shared) = resp.extensions_mut().remove::<StreamNote>() {
            // Streamed: the line is written when the body ends, with what it sent.
            let (parts, body) = resp.into_parts();
            let logged = LoggedBody { inner: body, pending: Some(self), note: shared, status, bytes: 0 };
            return Response::from_parts(parts, Body::new(logged));
        }
        let note = resp.extensions_mut().remove::<RequestNote>().unwrap_or_default();
        let error = resp.extensions_mut().remove::<ErrorText>().map(|e| e.0);
        self.record(status, bytes_out, note, error);
        resp
    }

    fn record(&mut self, status: u16, bytes_out: u64, note: RequestNote, error: Option<String>) {
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
            status,
            bytes_in: note.body_bytes.unwrap_or(self.bytes_in),
            bytes_out,
            latency_us: latency.as_micros() as u64,
            error,
            note,
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.record(
                499,
                0,
                RequestNote::default(),
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
    // Fail closed: while the access log cannot be written, nothing is served but the health
    // check and the metrics (whose lines wait in memory), which is how the operator sees why.
    if !matches!(route, Some("/healthz" | "/metrics"))
        && let Some(why) = st.log.refusal()
    {
        // No line for it (the log is what fails): the outage's line counts it.
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let labels = RequestLabels { route: route.unwrap_or("none"), method, status: status.as_u16() };
        st.metrics.requests.get_or_create(&labels).inc();
        let mut r = error(status, why, &st.request_id());
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        return r;
    }
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
    // A completion takes longer than a prediction: the language model's own limit applies.
    let limit = match &st.llm {
        Some(llm) if routes::is_generative(route) => llm.config.timeout,
        _ => st.limits.timeout,
    };
    req.extensions_mut().insert(Ctx {
        request_id: pending.request_id.clone(),
        caller: pending.caller.clone(),
        arrived: t0,
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
        ("POST", EMBED) => post(embed),
        ("POST", CHAT) => post(chat_completions),
        ("POST", COMPLETIONS) => post(completions),
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
    let json = HeaderValue::from_static("application/json");
    if !stats.writable() {
        let reason = format!("the access log cannot be written: {}", stats.error().unwrap_or_default());
        let body = serde_json::json!({ "status": "degraded", "reason": reason }).to_string();
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
