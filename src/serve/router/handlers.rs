//! The prediction, explanation and embedding handlers: reading and checking a request body,
//! running the model off the async workers when the work is large, and the JSON responses. Each reports
//! what it did to the gate ([`super::gate`]) through the response's extensions.

use super::*;
use crate::ml::explain::{Method, MethodKind};

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
/// `shape` is the body the route takes, for the message about an empty one.
fn body_error(e: serde_path_to_error::Error<serde_json::Error>, shape: &str) -> (StatusCode, String) {
    let path = e.path().to_string();
    let inner = e.into_inner();
    use serde_json::error::Category;
    match inner.classify() {
        Category::Data => {
            let at = if path == "." { "the body".to_string() } else { path };
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{at}: {inner}"))
        }
        Category::Eof if inner.line() == 1 && inner.column() == 0 => {
            (StatusCode::BAD_REQUEST, format!("the body is empty: send {shape}"))
        }
        Category::Eof => {
            (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: it ends early ({inner})"))
        }
        _ => (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {inner}")),
    }
}

/// Bytes of an oversized body read and thrown away after the 413 has gone out. Closing a socket
/// with unread data makes the kernel reset the connection, and a client still sending then
/// never sees the answer; draining the body (as nginx's lingering close does) lets it read the
/// 413. Past this, or past the body timeout, the connection is cut.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

enum BodyError {
    TooLarge(Body),
    Read(String),
}

/// Reads a body of at most `max` bytes, counting what arrived in `seen` (so a caller that times
/// the read out can say how much came). Past `max` it stops and hands the body back, to be
/// drained after the answer. A body in one frame (the usual case) is returned without copying.
async fn read_body(mut body: Body, max: usize, seen: &mut u64) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut frames: Vec<Bytes> = Vec::new();
    let mut kept = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        *seen += data.len() as u64;
        if kept + data.len() > max {
            return Err(BodyError::TooLarge(body));
        }
        kept += data.len();
        frames.push(data);
    }
    Ok(match frames.len() {
        1 => frames.pop().expect("one frame"),
        _ => Bytes::from(frames.concat()),
    })
}

/// Reads and throws away the rest of an oversized body in the background, while the 413 goes
/// out (see [`DRAIN_LIMIT`]); gives up after `limit`.
fn drain_later(mut body: Body, limit: Duration) {
    use http_body_util::BodyExt;
    tokio::spawn(tokio::time::timeout(limit, async move {
        let mut drained = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len() as u64);
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    }));
}

/// Parses a predict body. The fast path is plain serde_json; only a body that fails is parsed
/// again with path tracking, to say where it broke (tracking every value of every good body
/// cost a few percent of the server's CPU).
fn parse_body(bytes: &[u8]) -> Result<PredictBody, (StatusCode, String)> {
    if let Ok(b) = serde_json::from_slice(bytes) {
        return Ok(b);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: PredictBody = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| body_error(e, "{\"inputs\": [[...], ...]} or {\"texts\": [...]}"))?;
    de.end().map_err(|e| (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
    Ok(body)
}

/// A body that failed to parse because it sent texts in `inputs`, or numbers in `texts`, also
/// says which field the model takes (serde alone says only `expected a sequence`).
fn field_hint(model: &ServedModel, msg: String) -> String {
    let wrong_field = if model.takes_text() {
        msg.starts_with("inputs[") && msg.contains("invalid type: string")
    } else {
        msg.starts_with("texts[") && msg.contains("expected a string")
    };
    match (wrong_field, model.takes_text()) {
        (false, _) => msg,
        (true, true) => format!("{msg}; model {} takes texts: send {{\"texts\": [\"...\"]}}", model.name()),
        (true, false) => {
            format!("{msg}; model {} takes numbers: send {{\"inputs\": [[...], ...]}}", model.name())
        }
    }
}

/// A request that passed every check before the model runs: model found, key known, body read
/// and parsed, inputs prepared, budget spent, time left.
struct Accepted {
    model: Arc<ServedModel>,
    caller: Arc<Caller>,
    batch: crate::serve::model::Batch,
    n: usize,
    now: u64,
    note: RequestNote,
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
    let mut note = RequestNote::default();
    let fail = |status: StatusCode, msg: String, note: RequestNote| error_noted(status, msg, id, note);
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
    let bytes = read_json(st, ctx, req, &mut note).await?;
    let body: PredictBody = match parse_body(&bytes) {
        Ok(b) => b,
        Err((status, msg)) => return Err(fail(status, field_hint(&model, msg), note)),
    };
    accept_rest(st, ctx, model, caller, body, note)
}

/// Reads a JSON request body within the service's limits (content type, size, body timeout);
/// a refusal comes back as the response to send, with `note` attached.
pub(super) async fn read_json(
    st: &AppState,
    ctx: &Ctx,
    req: Request,
    note: &mut RequestNote,
) -> Result<Bytes, Response> {
    let id = &*ctx.request_id;
    let fail = |status: StatusCode, msg: String, note: &mut RequestNote| {
        error_noted(status, msg, id, std::mem::take(note))
    };
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
    let body_timeout = st.limits.body_timeout;
    if length > max as u64 {
        // Announced too large: answered before reading it. A client that asked to continue
        // (`Expect: 100-continue`) has not sent it and never will; any other is sending it
        // now, and reads the answer while the rest drains.
        let waits = req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            drain_later(req.into_body(), body_timeout);
        }
        return Err(fail(StatusCode::PAYLOAD_TOO_LARGE, too_large(), note));
    }
    let mut seen = 0u64;
    // The body's own deadline, within the request's.
    let wait = body_timeout.min(ctx.deadline.saturating_duration_since(Instant::now()));
    let bytes = match tokio::time::timeout(wait, read_body(req.into_body(), max, &mut seen)).await {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge(rest))) => {
            drain_later(rest, body_timeout);
            return Err(fail(StatusCode::PAYLOAD_TOO_LARGE, too_large(), note));
        }
        Ok(Err(BodyError::Read(e))) => {
            return Err(fail(StatusCode::BAD_REQUEST, format!("could not read the body: {e}"), note));
        }
        Err(_) => {
            let announced = if length > 0 { format!(" of the {length} announced") } else { String::new() };
            let msg = format!(
                "the body did not arrive within {} ms ({seen} bytes{announced} came); send the whole body \
                 at once",
                wait.as_millis()
            );
            note.body_bytes = Some(seen);
            return Err(fail(StatusCode::REQUEST_TIMEOUT, msg, note));
        }
    };
    note.body_bytes = Some(bytes.len() as u64);
    Ok(bytes)
}

/// The rest of [`accept`] once the body is parsed.
#[allow(clippy::result_large_err)] // the refusal is the response to send, built once per refusal
fn accept_rest(
    st: &AppState,
    ctx: &Ctx,
    model: Arc<ServedModel>,
    caller: Arc<Caller>,
    body: PredictBody,
    mut note: RequestNote,
) -> Result<Accepted, Response> {
    let id = &*ctx.request_id;
    let fail = |status: StatusCode, msg: String, note: RequestNote| error_noted(status, msg, id, note);
    let (batch, raw) = match model.prepare(body, st.limits.max_inputs) {
        Ok(v) => v,
        Err(e) => return Err(fail(StatusCode::UNPROCESSABLE_ENTITY, e.0, note)),
    };
    let n = batch.len();
    note.inputs = n;
    note.raw = Some(raw);
    let now = unix_now();
    spend_budget(&caller, n, now, id, &mut note)?;
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

/// Takes `n` inputs from the key's query budget, or answers 429 with when it renews.
#[allow(clippy::result_large_err)] // the refusal is the response to send, built once per refusal
fn spend_budget(
    caller: &Caller,
    n: usize,
    now: u64,
    id: &str,
    note: &mut RequestNote,
) -> Result<(), Response> {
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
                        crate::serve::keys::Period::Hour => "hour",
                        crate::serve::keys::Period::Day => "day",
                        crate::serve::keys::Period::Month => "30-day",
                    },
                    r.used,
                    r.asked,
                    r.retry_after_s
                );
                let mut resp = too_many(msg, r.retry_after_s, id);
                resp.extensions_mut().insert(std::mem::take(note));
                return Err(resp);
            }
        }
    }
    Ok(())
}

pub(super) async fn predict(
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
    let fail = |status: StatusCode, msg: String, note: RequestNote| error_noted(status, msg, id, note);
    let refund = |_: &RequestNote| {
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
            note.flags.push(Flag::Extraction);
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
        note.flags.insert(0, Flag::Ood);
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
        if w.prada.alarm() && !note.flags.contains(&Flag::Extraction) {
            note.flags.push(Flag::Extraction);
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
                let top = matches!(caller.policy.view, crate::serve::policy::View::TopK(_));
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
pub(super) struct ExplainQuery {
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

pub(super) async fn explain(
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
    // The short names only (not the longer names the command line also takes).
    let Some(kind) = MethodKind::ALL.into_iter().find(|k| k.as_str() == method_name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown method {method_name:?}; the methods are {}",
                crate::ml::explain::METHOD_NAMES.join(", ")
            ),
            id,
        );
    };
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
    let method = Method::with_defaults(kind, &model.pipeline.input);
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
    let top = matches!(caller.policy.view, crate::serve::policy::View::TopK(_));
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

/// The body of `POST /v1/models/{name}/embed`: the predict route's `texts`, also taken as
/// `inputs`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedBody {
    #[serde(alias = "inputs")]
    texts: Vec<String>,
}

/// What the embed route answers.
#[derive(Serialize)]
struct EmbedResponse<'a> {
    model: &'a str,
    version: &'a str,
    dim: usize,
    pooling: &'static str,
    normalized: bool,
    embeddings: Vec<Vec<f32>>,
}

/// Sentence embeddings from a Transformer or pretrained encoder, with predict's keys, limits,
/// budget and access log (no output policy: the answer is not class probabilities).
pub(super) async fn embed(
    State(st): State<Arc<AppState>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let id = &*ctx.request_id;
    let mut note = RequestNote::default();
    let fail = |status: StatusCode, msg: String, note: RequestNote| error_noted(status, msg, id, note);
    let Some(model) = st.models.get(&name).cloned() else {
        let names: Vec<&str> = st.models.keys().map(String::as_str).collect();
        let msg = format!("no model named {name:?}; this service has {}", names.join(", "));
        return fail(StatusCode::NOT_FOUND, msg, note);
    };
    note.model = Some(model.clone());
    let Some(caller) = ctx.caller.clone() else {
        return fail(StatusCode::UNAUTHORIZED, "no key".into(), note);
    };
    // Refused before the body is read or the budget spent.
    if let Some(why) = model.cannot_embed() {
        let msg = format!("model {name} cannot give embeddings: {why}");
        return fail(StatusCode::UNPROCESSABLE_ENTITY, msg, note);
    }
    let bytes = match read_json(&st, &ctx, req, &mut note).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| body_error(e, "{\"texts\": [\"...\", ...]}"))
        .and_then(|b: EmbedBody| {
            de.end().map_err(|e| (StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
            Ok(b)
        });
    let texts = match parsed {
        Ok(b) => b.texts,
        Err((status, msg)) => return fail(status, msg, note),
    };
    if let Err(e) = model.check_texts(&texts, st.limits.max_inputs) {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, e.0, note);
    }
    let n = texts.len();
    note.inputs = n;
    note.raw = Some(crate::serve::model::RawBatch::Texts(texts.clone()));
    let now = unix_now();
    if let Err(resp) = spend_budget(&caller, n, now, id, &mut note) {
        return resp;
    }
    let refund = || {
        if let Some(b) = &caller.budget {
            b.refund(n as u64, now);
        }
    };
    let m = model.clone();
    // An encoder's forward pass is the heaviest work the service does: never on the async workers.
    let result = match tokio::task::spawn_blocking(move || m.embed(&texts)).await {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::internal(format!("the embedding task failed: {e}"))),
    };
    let embeddings = match result {
        Ok(e) => e,
        Err(e) => {
            refund();
            return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("the model failed: {e}"), note);
        }
    };
    if Instant::now() >= ctx.deadline {
        refund();
        let msg = format!(
            "the request took longer than the service's limit of {} ms",
            st.limits.timeout.as_millis()
        );
        return fail(StatusCode::SERVICE_UNAVAILABLE, msg, note);
    }
    let out = EmbedResponse {
        model: &model.info.name,
        version: &model.info.version,
        dim: model.embedding_dim().unwrap_or(0),
        pooling: "mean",
        normalized: true,
        embeddings,
    };
    let body = serde_json::to_vec(&out).expect("embeddings serialise");
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::from(body))
        .into_response();
    resp.extensions_mut().insert(note);
    resp
}
