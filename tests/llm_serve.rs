//! The language-model service as its clients meet it, in-process on 127.0.0.1 with the scripted
//! stand-in model (`scripted:` paths, which `vigil::llm::load` takes): every bad input of issue
//! 16 with its status and message, the OpenAI shapes (whole and streamed), usage counts,
//! interleaving, cancellation when a client leaves mid-stream, token budgets and rates (429 with
//! Retry-After), the logprob policy, the screen's redaction, the distillation watch, and the
//! access log: one chained line per request with its generation fields.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{Reply, add_key, post_json};
use serde_json::{Value, json};
use vigil::llm::scripted::SCRIPT;
use vigil::serve::access_log::{ACCESS_LOG, AccessRecord, Flag};
use vigil::serve::audit::verify_dir;
use vigil::serve::keys::{Budget, GeneratePolicy, Guard, OnExtraction, Period, Scope};
use vigil::serve::llm::LlmConfig;
use vigil::serve::llm::screen::ScreenMode;
use vigil::serve::{ServeConfig, Server};

/// Starts a service with only the scripted model (`options` after `scripted:`).
async fn start(store: &Path, options: &str, tweak: impl FnOnce(&mut LlmConfig)) -> Server {
    let mut llm = LlmConfig::new(format!("scripted:{options}"));
    llm.max_tokens = 600;
    llm.max_prompt_tokens = 200;
    tweak(&mut llm);
    let mut c = ServeConfig::new(store, Vec::new());
    c.addr = "127.0.0.1:0".parse().unwrap();
    c.llm = Some(llm);
    Server::start(c).await.unwrap()
}

fn key(store: &Path, name: &str) -> String {
    add_key(store, name, &[Scope::Generate], GeneratePolicy::default(), Guard::default())
}

fn client() -> reqwest::Client {
    vigil::serve::server::install_crypto();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn post(c: &reqwest::Client, s: &Server, route: &str, key: &str, body: &str) -> Reply {
    post_json(c, &format!("{}{route}", s.url()), key, body.as_bytes()).await
}

async fn complete(c: &reqwest::Client, s: &Server, key: &str, body: Value) -> Reply {
    post(c, s, "/v1/completions", key, &body.to_string()).await
}

async fn chat(c: &reqwest::Client, s: &Server, key: &str, body: Value) -> Reply {
    post(c, s, "/v1/chat/completions", key, &body.to_string()).await
}

fn log_lines(store: &Path) -> Vec<AccessRecord> {
    let text = std::fs::read_to_string(store.join(ACCESS_LOG)).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The parsed `data:` events of a stream, and whether it ended with `data: [DONE]`.
fn events(text: &str) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data event: {event:?}"));
        assert!(!done, "an event after [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            out.push(serde_json::from_str(data).unwrap());
        }
    }
    (out, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_is_refused_with_its_status_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let good = key(store, "alice");
    let predictor = add_key(store, "pred", &[Scope::Predict], GeneratePolicy::default(), Guard::default());
    let s = start(store, "", |_| {}).await;
    let c = client();
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("malformed JSON", "/v1/chat/completions", r#"{"messages": [{"role": "user""#, 400, "line 1 column"),
        ("not JSON", "/v1/completions", "prompt=hi", 400, "not valid JSON"),
        ("empty body", "/v1/completions", "", 400, "the body is empty"),
        (
            "unknown field",
            "/v1/completions",
            r#"{"prompt": "hi", "max_token": 3}"#,
            400,
            "unknown field `max_token`",
        ),
        (
            "unknown field in a message",
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "hi", "mood": "x"}]}"#,
            400,
            "messages[0].mood: unknown field `mood`",
        ),
        (
            "wrong type",
            "/v1/completions",
            r#"{"prompt": "hi", "max_tokens": "many"}"#,
            400,
            "max_tokens: invalid type",
        ),
        (
            "max_tokens over the limit",
            "/v1/completions",
            r#"{"prompt": "hi", "max_tokens": 601}"#,
            400,
            "limit of 600",
        ),
        ("no messages", "/v1/chat/completions", r#"{"messages": []}"#, 400, "at least one message"),
        (
            "a role the template lacks",
            "/v1/chat/completions",
            r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#,
            400,
            "role \"wizard\"",
        ),
        (
            "temperature out of range",
            "/v1/completions",
            r#"{"prompt": "hi", "temperature": 7}"#,
            400,
            "temperature",
        ),
        ("several choices", "/v1/completions", r#"{"prompt": "hi", "n": 3}"#, 400, "one choice"),
        (
            "another model",
            "/v1/completions",
            r#"{"prompt": "hi", "model": "gpt-9"}"#,
            404,
            "no model named \"gpt-9\"",
        ),
    ];
    for (what, route, body, status, says) in &cases {
        let r = post(&c, &s, route, &good, body).await;
        assert_eq!(r.status, *status, "{what}: {}", r.text);
        let msg = r.body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{what}: {msg:?} should say {says:?}");
    }
    // A prompt over the service's limit (200 tokens: the scripted model has one per byte).
    let long = complete(&c, &s, &good, json!({"prompt": "a".repeat(300)})).await;
    assert_eq!(long.status, 400, "{}", long.text);
    assert!(long.body["error"].as_str().unwrap().contains("301 tokens"), "{}", long.text);
    // A wrong key, a key without the generate scope.
    let wrong = complete(&c, &s, "vigil_0000", json!({"prompt": "hi"})).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let scope = complete(&c, &s, &predictor, json!({"prompt": "hi"})).await;
    assert_eq!(scope.status, 403);
    assert!(scope.body["error"].as_str().unwrap().contains("needs the generate scope"), "{}", scope.text);
    // No logprobs for a key not allowed them.
    let lp = complete(&c, &s, &good, json!({"prompt": "hi", "logprobs": 1})).await;
    assert_eq!(lp.status, 403);
    assert!(lp.body["error"].as_str().unwrap().contains("--logprobs"), "{}", lp.text);
    s.shutdown().await.unwrap();
    // One line for each request, refused ones included, and the chain holds.
    let lines = log_lines(store);
    assert_eq!(lines.len(), cases.len() + 4);
    assert!(lines.iter().all(|l| l.status >= 400));
    let report = verify_dir(store).unwrap();
    assert!(report.finding.is_none(), "{:?}", report.finding);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_have_the_openai_shape_and_count_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let s = start(store, "", |_| {}).await;
    let c = client();
    let r = complete(&c, &s, &k, json!({"prompt": "Once", "max_tokens": 9, "temperature": 0})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "text_completion");
    assert_eq!(r.body["choices"][0]["text"], "The quick");
    assert_eq!(r.body["choices"][0]["finish_reason"], "length");
    // <bos> and one token per byte of "Once".
    assert_eq!(r.body["usage"], json!({"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}));
    let stop =
        complete(&c, &s, &k, json!({"prompt": "Once", "stop": ["fox", "dog"], "temperature": 0})).await;
    assert_eq!(stop.body["choices"][0]["text"], "The quick brown ");
    assert_eq!(stop.body["choices"][0]["finish_reason"], "stop");
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let r = chat(
        &c,
        &s,
        &k,
        json!({"model": "scripted", "messages": messages, "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "chat.completion");
    assert_eq!(r.body["choices"][0]["message"], json!({"role": "assistant", "content": "The"}));
    // The template "<system>Be brief.\n<user>Hi\n<assistant>" and <bos>.
    let prompt = "<system>Be brief.\n<user>Hi\n<assistant>";
    assert_eq!(r.body["usage"]["prompt_tokens"], prompt.len() as u64 + 1);
    let models = c.get(format!("{}/v1/models", s.url())).bearer_auth(&k).send().await.unwrap();
    let models: Value = serde_json::from_str(&models.text().await.unwrap()).unwrap();
    assert_eq!(models["data"][0]["id"], "scripted");
    s.shutdown().await.unwrap();
    let lines = log_lines(store);
    let g = lines[0].generation.as_ref().expect("a generation line");
    assert_eq!((g.prompt_tokens, g.completion_tokens, g.max_tokens), (5, 9, 9));
    assert_eq!(g.finish_reason.as_deref(), Some("length"));
    assert!(g.ttft_us.is_some() && g.tokens_per_s.is_some());
    use sha2::Digest;
    assert_eq!(g.completion_sha256, hex::encode(sha2::Sha256::digest(b"The quick")));
    assert!(g.raw_prompt.is_none() && g.raw_completion.is_none(), "texts only with --log-raw-inputs");
    assert_eq!(lines[0].model.as_deref(), Some("scripted"));
    assert_eq!(lines[1].generation.as_ref().unwrap().finish_reason.as_deref(), Some("stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_server_sent_events_ending_in_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let s = start(store, "", |_| {}).await;
    let c = client();
    let body = json!({
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let r = chat(&c, &s, &k, body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let (chunks, done) = events(&r.text);
    assert!(done, "the stream ends with data: [DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(text, &SCRIPT[..12]);
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    // The legacy route streams text chunks.
    let r =
        complete(&c, &s, &k, json!({"prompt": "x", "max_tokens": 4, "stream": true, "stop": "quick"})).await;
    let (chunks, done) = events(&r.text);
    assert!(done);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
    s.shutdown().await.unwrap();
    let lines = log_lines(store);
    assert_eq!(lines.len(), 2);
    let g = lines[0].generation.as_ref().unwrap();
    assert!(g.stream);
    assert_eq!((g.completion_tokens, g.finish_reason.as_deref()), (12, Some("length")));
    assert!(lines[0].bytes_out > 0, "a stream's line counts the bytes it sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_cancels_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let admin = add_key(store, "ops", &[Scope::Admin], GeneratePolicy::default(), Guard::default());
    let s = start(store, "delay_ms=10", |_| {}).await;
    let c = client();
    let mut resp = c
        .post(format!("{}/v1/completions", s.url()))
        .bearer_auth(&k)
        .header("content-type", "application/json")
        .body(json!({"prompt": "x", "max_tokens": 600, "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    for _ in 0..5 {
        resp.chunk().await.unwrap().expect("a chunk");
    }
    drop(resp);
    let left = Instant::now();
    // The line is written (status 499, `cancelled`) and the scheduler drops the generation.
    let line = loop {
        let metrics = c.get(format!("{}/metrics", s.url())).bearer_auth(&admin).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        let stream_line =
            log_lines(store).into_iter().find(|l| l.route.as_deref() == Some("/v1/completions"));
        if text.contains("vigil_llm_generations_active 0")
            && text.contains("vigil_llm_generations_cancelled_total 1")
            && let Some(l) = stream_line
        {
            break l;
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "the generation went on after its client left:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(line.status, 499);
    assert!(line.error.as_deref().unwrap().contains("client closed the connection"), "{:?}", line.error);
    let g = line.generation.unwrap();
    assert_eq!(g.finish_reason.as_deref(), Some("cancelled"));
    // 600 tokens at 10 ms would take 6 s; it stopped within a few tokens of the client leaving.
    assert!(g.completion_tokens < 100, "{} tokens", g.completion_tokens);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_requests_interleave_rather_than_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let s = start(store, "delay_ms=20", |_| {}).await;
    let c = client();
    let url = format!("{}/v1/completions", s.url());
    let one = |name: &'static str| {
        let (c, url, k) = (c.clone(), url.clone(), k.clone());
        tokio::spawn(async move {
            let mut resp = c
                .post(url)
                .bearer_auth(k)
                .header("content-type", "application/json")
                .body(json!({"prompt": name, "max_tokens": 25, "stream": true}).to_string())
                .send()
                .await
                .unwrap();
            let mut times = Vec::new();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                if chunk.starts_with(b"data: {") {
                    times.push(Instant::now());
                }
            }
            times
        })
    };
    let (a, b) = (one("a"), one("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    // Each got its 25 tokens, and each's first token came before the other's last: the one
    // scheduler thread stepped them in turn.
    assert!(a.len() >= 25 && b.len() >= 25, "{} and {} chunks", a.len(), b.len());
    assert!(b[0] < *a.last().unwrap() && a[0] < *b.last().unwrap(), "one waited for the other to finish");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_and_rates_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let budget = GeneratePolicy {
        token_budget: Some(Budget { limit: 100, period: Period::Day }),
        ..GeneratePolicy::default()
    };
    let kb = add_key(store, "budgeted", &[Scope::Generate], budget, Guard::default());
    let rate = GeneratePolicy { tokens_per_minute: Some(60), ..GeneratePolicy::default() };
    let kr = add_key(store, "rated", &[Scope::Generate], rate, Guard::default());
    let s = start(store, "", |_| {}).await;
    let c = client();
    // 2 prompt tokens + 50 reserved: fits; the second would need 104 of 100.
    let ask = json!({"prompt": "x", "max_tokens": 50});
    assert_eq!(complete(&c, &s, &kb, ask.clone()).await.status, 200);
    let r = complete(&c, &s, &kb, ask.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let msg = r.body["error"].as_str().unwrap();
    assert!(msg.contains("token budget") && msg.contains("lower max_tokens"), "{msg}");
    // What a request does not use goes back: a short one still fits (2 + 40 of the 48 left).
    let short = complete(&c, &s, &kb, json!({"prompt": "x", "max_tokens": 40})).await;
    assert_eq!(short.status, 200, "{}", short.text);
    // 60 tokens a minute: two requests of 52 go (the first spends, the second starts while
    // some allowance is left), the third waits about 45 s.
    for _ in 0..2 {
        assert_eq!(complete(&c, &s, &kr, ask.clone()).await.status, 200);
    }
    let r = complete(&c, &s, &kr, ask).await;
    assert_eq!(r.status, 429, "{}", r.text);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((30..=60).contains(&retry), "{retry}");
    assert!(r.body["error"].as_str().unwrap().contains("60 tokens per minute"));
    s.shutdown().await.unwrap();
    let lines = log_lines(store);
    assert_eq!(lines[0].budget_left, Some(48));
    assert_eq!(lines.iter().filter(|l| l.status == 429).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_given_only_as_far_as_the_key_allows() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let allowed = GeneratePolicy { logprobs: Some(2), ..GeneratePolicy::default() };
    let k = add_key(store, "researcher", &[Scope::Generate], allowed, Guard::default());
    let s = start(store, "", |_| {}).await;
    let c = client();
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0,
        "logprobs": true, "top_logprobs": 2});
    let r = chat(&c, &s, &k, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let content = r.body["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 4, "one entry per token");
    assert_eq!(content[0]["token"], "T");
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    let more = chat(
        &c,
        &s,
        &k,
        json!({"messages": [{"role": "user", "content": "Hi"}], "logprobs": true,
        "top_logprobs": 3}),
    )
    .await;
    assert_eq!(more.status, 403);
    assert!(more.body["error"].as_str().unwrap().contains("at most 2"), "{}", more.text);
    let legacy =
        complete(&c, &s, &k, json!({"prompt": "x", "max_tokens": 2, "logprobs": 1, "temperature": 0})).await;
    assert_eq!(legacy.body["choices"][0]["logprobs"]["tokens"], json!(["T", "h"]));
    s.shutdown().await.unwrap();
    let lines = log_lines(store);
    assert_eq!(lines[0].generation.as_ref().unwrap().logprobs, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_redacts_what_it_finds_and_says_so_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let allowed = GeneratePolicy { logprobs: Some(1), ..GeneratePolicy::default() };
    let k = add_key(store, "alice", &[Scope::Generate], allowed, Guard::default());
    let s = start(store, "", |l| l.screen = ScreenMode::Redact).await;
    let c = client();
    // The script's 90 bytes hold an e-mail address.
    let r = complete(&c, &s, &k, json!({"prompt": "x", "max_tokens": 90, "temperature": 0})).await;
    let text = r.body["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Write to [REDACTED:email] for access."), "{text}");
    assert!(!text.contains("ops@"), "{text}");
    let r = complete(
        &c,
        &s,
        &k,
        json!({"prompt": "x", "max_tokens": 90, "temperature": 0, "stream": true,
        "logprobs": 1}),
    )
    .await;
    let (chunks, done) = events(&r.text);
    assert!(done);
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert!(streamed.contains("[REDACTED:email]") && !streamed.contains("ops@"), "{streamed}");
    let tokens: Vec<String> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 90, "one logprob entry per token");
    assert!(!tokens.iter().any(|t| t == "@"), "the logprobs do not spell the address out");
    s.shutdown().await.unwrap();
    for line in log_lines(store) {
        assert!(line.flags.contains(&Flag::Sensitive), "{:?}", line.flags);
        let g = line.generation.unwrap();
        assert_eq!((g.screened, g.redacted), (vec!["email".to_string()], true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_prompts_at_volume_flag_the_key_and_block_it_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let guard = Guard { on_extraction: OnExtraction::Block, ..Guard::default() };
    let thief = add_key(store, "thief", &[Scope::Generate], GeneratePolicy::default(), guard);
    let user = key(store, "user");
    let s = start(store, "", |l| l.watch.min_requests = 20).await;
    let c = client();
    for i in 0..19 {
        let prompt = format!("Translate into French, word for word: sentence {i} about {}", i * 37);
        assert_eq!(complete(&c, &s, &thief, json!({"prompt": prompt, "max_tokens": 1})).await.status, 200);
        let ordinary = format!("{} then {}?", i * 7919 % 1009, ["why", "how", "when", "who"][i % 4]);
        assert_eq!(complete(&c, &s, &user, json!({"prompt": ordinary, "max_tokens": 1})).await.status, 200);
    }
    let r = complete(
        &c,
        &s,
        &thief,
        json!({"prompt": "Translate into French, word for word: the end", "max_tokens": 1}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains("distillation"), "{}", r.text);
    let ok = complete(&c, &s, &user, json!({"prompt": "and one more", "max_tokens": 1})).await;
    assert_eq!(ok.status, 200, "the other key is not touched");
    s.shutdown().await.unwrap();
    let lines = log_lines(store);
    let flagged: Vec<_> = lines.iter().filter(|l| l.flags.contains(&Flag::Extraction)).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].key.as_deref(), Some("thief"));
    // The line says why, for the console's Security view.
    let why = flagged[0].generation.as_ref().and_then(|g| g.extraction.clone()).unwrap_or_default();
    assert!(why.contains("20 prompts within 600 s") && why.contains("from one template"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_chooses_the_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let file = store.join("turns.ron");
    std::fs::write(
        &file,
        r#"(user: (prefix: "U:", suffix: ";"), assistant: (prefix: "A:"), end_of_turn: ";")"#,
    )
    .unwrap();
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    for (template, prompt) in [
        (
            "chatml",
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        ("none", "Be brief.\n\nHi"),
        (file.to_str().unwrap(), "U:Be brief.\n\nHi;A:"),
    ] {
        let chosen = vigil::llm::gguf::ChatTemplate::parse(template).unwrap();
        let s = start(store, "", |l| l.chat_template = Some(chosen)).await;
        let r = chat(&client(), &s, &k, json!({"messages": messages, "max_tokens": 2})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // The scripted model reads one token a byte, after <bos>.
        assert_eq!(r.body["usage"]["prompt_tokens"], prompt.len() + 1, "{template}: {}", r.text);
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_texts_are_logged_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let k = key(store, "alice");
    let mut c = ServeConfig::new(store, Vec::new());
    c.addr = "127.0.0.1:0".parse().unwrap();
    c.log_raw_inputs = true;
    c.llm = Some(LlmConfig::new("scripted:"));
    let s = Server::start(c).await.unwrap();
    let r = complete(&client(), &s, &k, json!({"prompt": "Once", "max_tokens": 3, "temperature": 0})).await;
    assert_eq!(r.status, 200);
    s.shutdown().await.unwrap();
    let g = log_lines(store).remove(0).generation.unwrap();
    assert_eq!((g.raw_prompt.as_deref(), g.raw_completion.as_deref()), (Some("Once"), Some("The")));
}

#[test]
fn the_command_line_refuses_bad_llm_options_with_exit_2() {
    use predicates::str::contains;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", "--llm", "/no/such/model.gguf", "--addr", "127.0.0.1:0"], "/no/such/model.gguf"),
        (
            vec!["serve", "--llm", "scripted:speed=3", "--addr", "127.0.0.1:0"],
            "scripted model option \"speed\"",
        ),
        (vec!["serve", "--llm", "scripted:", "--llm-max-tokens", "0"], "must be at least 1"),
        (vec!["serve", "--llm-name", "x"], "--llm"),
        (
            vec!["serve", "--llm", "scripted:", "--chat-template", "mistral"],
            "--chat-template \"mistral\": expected one of gemma, llama3, chatml, none",
        ),
        (vec!["serve", "--llm", "scripted:", "--chat-template", "/no/such/turns.ron"], "/no/such/turns.ron"),
        (vec!["keys", "create", "--name", "k", "--scope", "generate", "--logprobs", "50"], "at most 20"),
        (
            vec!["keys", "create", "--name", "k", "--scope", "generate", "--tokens-per-minute", "lots"],
            "--tokens-per-minute",
        ),
        (
            vec!["keys", "create", "--name", "k", "--scope", "generate", "--token-budget", "5/year"],
            "unknown period",
        ),
        (
            vec!["keys", "create", "--name", "k", "--scope", "generation"],
            "predict, explain, admin, generate or embed",
        ),
    ];
    for (args, says) in cases {
        common::cli::vigil(runs).args(&args).assert().code(2).stderr(contains(says));
    }
    // What a key may do with a language model is saved and listed.
    common::cli::vigil(runs)
        .args([
            "keys",
            "create",
            "--name",
            "lab",
            "--scope",
            "generate",
            "--logprobs",
            "3",
            "--token-budget",
            "1000/day",
        ])
        .args(["--tokens-per-minute", "600"])
        .assert()
        .success();
    let listed = common::cli::json(common::cli::vigil(runs).args(["keys", "list", "--json"]));
    let lab = &listed[0];
    assert_eq!((lab["logprobs"].as_u64(), lab["tokens_per_minute"].as_u64()), (Some(3), Some(600)));
    assert_eq!(
        (lab["token_budget"].as_str(), lab["token_budget_used"].as_u64()),
        (Some("1000/day"), Some(0))
    );
    let table = common::cli::vigil(runs).args(["keys", "list"]).assert().success();
    let table = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    assert!(table.contains("tokens/min") && table.contains("top-3"), "{table}");
}
