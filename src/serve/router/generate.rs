//! The language-model handlers, `POST /v1/chat/completions` and `POST /v1/completions`: the
//! request's checks in the order that costs least first (body, fields, model, prompt length,
//! logprob policy, the distillation watch, tokens per minute, the token budget), then the
//! generation handed to the scheduler, answered whole or streamed as server-sent events.
//!
//! Each request reports what it did through a [`GenerationNote`]: in the response's extensions
//! when answered whole, and in a [`StreamNote`] the gate reads when a stream ends (or its client
//! goes, which also drops the generation's channel and so stops the generation).

use std::convert::Infallible;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use super::handlers::read_json;
use super::*;
use crate::serve::access_log::GenerationNote;
use crate::serve::keys::Period;
use crate::serve::llm::openai::{self, Api, Asked, ChatRequest, CompletionRequest, Head, Usage};
use crate::serve::llm::scheduler::{Event, Job};
use crate::serve::llm::{Piece, Shaper};

pub(super) async fn chat_completions(
    State(st): State<Arc<AppState>>,
    Extension(ctx): Extension<Ctx>,
    req: Request,
) -> Response {
    generate(st, ctx, req, Api::Chat).await
}

pub(super) async fn completions(
    State(st): State<Arc<AppState>>,
    Extension(ctx): Extension<Ctx>,
    req: Request,
) -> Response {
    generate(st, ctx, req, Api::Completion).await
}

/// Parses a body, saying where it broke: the JSON's line and column, or the field's path.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Data if path == "." => format!("the body: {inner}"),
            Category::Data => format!("{path}: {inner}"),
            Category::Eof if inner.line() == 1 && inner.column() == 0 => {
                "the body is empty: send a JSON object such as {\"messages\": [...]} or {\"prompt\": \"...\"}"
                    .into()
            }
            _ => format!("the body is not valid JSON: {inner}"),
        }
    })?;
    de.end().map_err(|e| format!("the body is not valid JSON: {e}"))?;
    Ok(value)
}

/// Tokens a request has reserved from its key's budget and used: when it ends (finished,
/// failed, cancelled), what it did not use goes back to the budget and what it used is charged
/// to the key's tokens per minute.
struct Spend {
    caller: Arc<Caller>,
    reserved: u64,
    prompt: u64,
    completion: u64,
    now_s: u64,
}

impl Drop for Spend {
    fn drop(&mut self) {
        if let Some(b) = &self.caller.token_budget {
            b.refund(self.reserved.saturating_sub(self.prompt + self.completion), self.now_s);
        }
        if let Some(r) = &self.caller.token_rate {
            r.charge(self.prompt + self.completion);
        }
    }
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Hour => "hour",
        Period::Day => "day",
        Period::Month => "30-day",
    }
}

async fn generate(st: Arc<AppState>, ctx: Ctx, req: Request, api: Api) -> Response {
    let id = ctx.request_id.clone();
    let fail = |status: StatusCode, msg: String, note: RequestNote| error_noted(status, msg, &id, note);
    let mut note = RequestNote::default();
    let Some(llm) = st.llm.clone() else {
        let msg = "this service serves no language model: start it with `vigil serve --llm MODEL.gguf`";
        return fail(StatusCode::NOT_FOUND, msg.into(), note);
    };
    let Some(caller) = ctx.caller.clone() else {
        return fail(StatusCode::UNAUTHORIZED, "no key".into(), note);
    };
    let bytes = match read_json(&st, &ctx, req, &mut note).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let limit = llm.config.max_tokens;
    let asked: Result<Asked, String> = match api {
        Api::Chat => parse::<ChatRequest>(&bytes).and_then(|r| r.check(limit)),
        Api::Completion => parse::<CompletionRequest>(&bytes).and_then(|r| r.check(limit)),
    };
    let asked = match asked {
        Ok(a) => a,
        Err(msg) => return fail(StatusCode::BAD_REQUEST, msg, note),
    };
    if let Some(m) = &asked.model
        && *m != llm.info.name
    {
        let msg = format!("model: no model named {m:?}; this service serves {:?}", llm.info.name);
        return fail(StatusCode::NOT_FOUND, msg, note);
    }
    let model = &llm.model;
    // The prompt as the model sees it, and the caller's own words (what the watch compares:
    // the chat template is the same in every prompt).
    let (prompt_text, own_text) = match (&asked.messages, &asked.prompt) {
        (Some(messages), _) => match model.chat_prompt(messages) {
            Ok(p) => {
                let last = messages.iter().rev().find(|m| m.role == "user").or(messages.last());
                (p, last.map(|m| m.content.clone()).unwrap_or_default())
            }
            // The model's own message names the field (`messages: role "x" is not ...`).
            Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string(), note),
        },
        (None, Some(p)) => (p.clone(), p.clone()),
        (None, None) => unreachable!("a checked request has messages or a prompt"),
    };
    let prompt = match model.prompt_ids(&prompt_text) {
        Ok(ids) => ids,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("the prompt cannot be tokenised: {e}"), note),
    };
    let prompt_tokens = prompt.len() as u64;
    let max_tokens = asked.params.max_tokens as u64;
    note.generation = Some(GenerationNote {
        model: llm.info.name.clone(),
        stream: asked.stream,
        prompt_tokens,
        max_tokens,
        prompt: prompt_text,
        logprobs: asked.logprobs,
        ..GenerationNote::default()
    });
    let most = llm.config.max_prompt_tokens;
    if prompt.len() > most {
        let msg = format!(
            "the prompt is {} tokens; this service takes prompts of at most {most} tokens \
             (--llm-max-prompt-tokens): shorten it",
            prompt.len()
        );
        return fail(StatusCode::BAD_REQUEST, msg, note);
    }
    if let Some(k) = asked.logprobs {
        match caller.record.generate.logprobs {
            None => {
                let msg = "this key may not ask for logprobs (they make distilling the model cheap); an \
                           operator can allow them with `vigil keys create ... --logprobs K`";
                return fail(StatusCode::FORBIDDEN, msg.into(), note);
            }
            Some(allowed) if k > allowed => {
                let msg = format!("this key may ask for at most {allowed} alternatives per token, not {k}");
                return fail(StatusCode::FORBIDDEN, msg, note);
            }
            Some(_) => {}
        }
    }
    {
        let watch = llm.watch(&caller.name);
        let mut w = watch.lock().expect("a watch lock is never poisoned: no panics inside");
        if w.watch.observe(&own_text, asked.logprobs.is_some(), Instant::now()) {
            note.flags.push(Flag::Extraction);
            let reason = w.watch.alarm.clone().unwrap_or_default();
            if let Some(g) = note.generation.as_mut() {
                g.extraction = Some(reason.clone());
            }
            match caller.record.guard.on_extraction {
                OnExtraction::Flag => {}
                OnExtraction::Block => {
                    let msg = format!(
                        "this key's traffic looks like extraction by distillation ({reason}); it is \
                         blocked until the service restarts or the key is replaced"
                    );
                    return fail(StatusCode::FORBIDDEN, msg, note);
                }
                OnExtraction::Throttle => {
                    if w.last_answered.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                        let msg = format!(
                            "this key's traffic looks like extraction by distillation ({reason}); it is \
                             throttled to one request per second"
                        );
                        let mut r = too_many(msg, 1, &id);
                        r.extensions_mut().insert(note);
                        return r;
                    }
                    w.last_answered = Some(Instant::now());
                }
            }
        }
    }
    if let Some(rate) = &caller.token_rate
        && let Err(wait) = rate.check()
    {
        let msg = format!(
            "token rate limit: this key may use {} tokens per minute (prompt and completion) and has used \
             them; retry in {} s",
            rate.per_minute,
            wait.as_secs_f64().ceil()
        );
        let mut r = too_many(msg, wait.as_secs_f64().ceil() as u64, &id);
        r.extensions_mut().insert(note);
        return r;
    }
    let now_s = unix_now();
    let reserved = prompt_tokens + max_tokens;
    if let Some(b) = &caller.token_budget {
        match b.try_spend(reserved, now_s) {
            Ok(left) => note.budget_left = Some(left),
            Err(r) => {
                note.budget_left = Some(r.limit.saturating_sub(r.used));
                let msg = format!(
                    "token budget spent: this key may use {} tokens per {} window, has used {}, and this \
                     request could use {reserved} ({prompt_tokens} in the prompt + max_tokens {max_tokens}); \
                     lower max_tokens or retry in {} s",
                    r.limit,
                    period_name(b.budget.period),
                    r.used,
                    r.retry_after_s
                );
                let mut resp = too_many(msg, r.retry_after_s, &id);
                resp.extensions_mut().insert(note);
                return resp;
            }
        }
    }
    let spend = Spend { caller: caller.clone(), reserved, prompt: prompt_tokens, completion: 0, now_s };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if let Err(e) = llm.scheduler.submit(Job { prompt, params: asked.params.clone(), events: tx }) {
        return fail(StatusCode::SERVICE_UNAVAILABLE, e, note);
    }
    // Wait for the prompt to be processed, so that a prompt the model refuses is a plain 400
    // and not an error in the middle of a stream.
    match rx.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed { input, message }) => {
            if let Some(g) = &mut note.generation {
                g.finish_reason = Some("error".into());
            }
            let status = if input { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
            return fail(status, message, note);
        }
        _ => {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the generation stopped before it began".into(),
                note,
            );
        }
    }
    let head = Head {
        api,
        id: format!("{}-{id}", if api == Api::Chat { "chatcmpl" } else { "cmpl" }),
        created: unix_now() as i64,
        model: llm.info.name.clone(),
    };
    let run = Run {
        rx,
        shaper: Shaper::new(llm.config.screen, asked.logprobs),
        spend,
        arrived: ctx.arrived,
        first: None,
        seen: 0,
        sent: 0,
    };
    if asked.stream {
        stream(run, head, note, asked.include_usage)
    } else {
        whole(run, head, note, &id).await
    }
}

/// A generation being read.
struct Run {
    rx: UnboundedReceiver<Event>,
    shaper: Shaper,
    spend: Spend,
    arrived: Instant,
    /// When the first token came.
    first: Option<Instant>,
    /// Token events so far.
    seen: u64,
    /// Bytes of completion text sent so far (for `text_offset`).
    sent: usize,
}

/// What reading a generation gives next.
enum Next {
    Piece(Piece),
    Done { piece: Piece, reason: &'static str },
    Failed(String),
}

impl Run {
    async fn next(&mut self) -> Next {
        match self.rx.recv().await {
            Some(Event::Token(t)) => {
                self.first.get_or_insert_with(Instant::now);
                self.seen += 1;
                self.spend.completion = self.seen;
                Next::Piece(self.shaper.push(&t))
            }
            Some(Event::Finished { reason, generated }) => {
                self.spend.completion = generated as u64;
                Next::Done { piece: self.shaper.finish(), reason: openai::finish_name(reason) }
            }
            Some(Event::Failed { message, .. }) => Next::Failed(message),
            Some(Event::Started { .. }) => Next::Piece(Piece::default()),
            None => Next::Failed("the generation scheduler stopped".into()),
        }
    }

    /// Brings a request's log note up to date.
    fn fill(&self, note: &mut RequestNote, finish: Option<&str>) {
        let Some(g) = &mut note.generation else { return };
        g.completion_tokens = self.spend.completion;
        g.ttft = self.first.map(|f| f.duration_since(self.arrived));
        g.decode = self.first.map(|f| f.elapsed());
        g.completion.clone_from(&self.shaper.raw);
        if let Some(f) = finish {
            g.finish_reason = Some(f.to_string());
            let (screened, redacted) = self.shaper.screened();
            if !screened.is_empty() && !note.flags.contains(&Flag::Sensitive) {
                note.flags.push(Flag::Sensitive);
            }
            g.screened = screened;
            g.redacted = redacted;
        }
    }

    fn usage(&self) -> Usage {
        Usage::new(self.spend.prompt, self.spend.completion)
    }

    /// The logprobs of a piece, where asked for.
    fn logprobs(&mut self, api: Api, piece: &Piece, asked: bool) -> Option<serde_json::Value> {
        let at = self.sent;
        self.sent += piece.text.len();
        asked.then(|| openai::logprobs_json(api, &piece.tokens, at))
    }
}

/// Answers once the whole completion is there.
async fn whole(mut run: Run, head: Head, mut note: RequestNote, id: &str) -> Response {
    let asked = note.generation.as_ref().is_some_and(|g| g.logprobs.is_some());
    let mut all = Piece::default();
    let finish = loop {
        match run.next().await {
            Next::Piece(p) => {
                all.text.push_str(&p.text);
                all.tokens.extend(p.tokens);
            }
            Next::Done { piece, reason } => {
                all.text.push_str(&piece.text);
                all.tokens.extend(piece.tokens);
                break reason;
            }
            Next::Failed(message) => {
                run.fill(&mut note, Some("error"));
                return error_noted(StatusCode::INTERNAL_SERVER_ERROR, message, id, note);
            }
        }
    };
    run.fill(&mut note, Some(finish));
    let logprobs = run.logprobs(head.api, &all, asked);
    let body = head.answer(&all.text, logprobs, finish, run.usage());
    let json = HeaderValue::from_static("application/json");
    let mut r = ([(header::CONTENT_TYPE, json)], body.to_string()).into_response();
    r.extensions_mut().insert(note);
    r
}

/// Where a stream is.
enum Phase {
    Opening,
    Tokens,
    Over,
}

/// Answers with server-sent events: one chunk per piece of text, the finish reason, the usage
/// when asked, then `data: [DONE]`.
fn stream(run: Run, head: Head, note: RequestNote, include_usage: bool) -> Response {
    let asked = note.generation.as_ref().is_some_and(|g| g.logprobs.is_some());
    let shared = StreamNote(Arc::new(Mutex::new(note)));
    let state = (run, head, shared.clone(), Phase::Opening);
    let events = futures_util::stream::unfold(state, move |(mut run, head, shared, phase)| async move {
        let update = |run: &Run, finish: Option<&str>| {
            let mut note = shared.0.lock().expect("the note lock is never poisoned");
            run.fill(&mut note, finish);
        };
        let out = match phase {
            Phase::Over => return None,
            Phase::Opening if head.api == Api::Chat => {
                let first = openai::sse(&head.chunk(None, true, None, None));
                return Some((Ok::<_, Infallible>(Bytes::from(first)), (run, head, shared, Phase::Tokens)));
            }
            Phase::Opening | Phase::Tokens => loop {
                match run.next().await {
                    Next::Piece(p) if p.is_empty() => continue,
                    Next::Piece(p) => {
                        update(&run, None);
                        let lp = run.logprobs(head.api, &p, asked);
                        break (openai::sse(&head.chunk(Some(&p.text), false, lp, None)), Phase::Tokens);
                    }
                    Next::Done { piece, reason } => {
                        let mut text = String::new();
                        if !piece.is_empty() {
                            let lp = run.logprobs(head.api, &piece, asked);
                            text.push_str(&openai::sse(&head.chunk(Some(&piece.text), false, lp, None)));
                        }
                        text.push_str(&openai::sse(&head.chunk(None, false, None, Some(reason))));
                        if include_usage {
                            text.push_str(&openai::sse(&head.usage_chunk(run.usage())));
                        }
                        text.push_str(openai::DONE);
                        update(&run, Some(reason));
                        break (text, Phase::Over);
                    }
                    Next::Failed(message) => {
                        update(&run, Some("error"));
                        let event =
                            serde_json::json!({"error": {"message": message, "type": "server_error"}});
                        break (format!("{}{}", openai::sse(&event), openai::DONE), Phase::Over);
                    }
                }
            },
        };
        Some((Ok(Bytes::from(out.0)), (run, head, shared, out.1)))
    });
    let mut r = Response::new(Body::from_stream(events));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.extensions_mut().insert(shared);
    r
}
