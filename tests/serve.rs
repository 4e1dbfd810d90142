//! The model service as its clients and operators meet it, in-process on 127.0.0.1: the route
//! matrix (every registered route, with and without keys), the key lifecycle, every limit with
//! its status and message, output policies on batches, a tampered checkpoint, a corpus of
//! malformed bodies, TLS, the access log (one line per request, hashed inputs, an intact chain),
//! metrics, the traffic client and the log follower.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vigil::ml::data::{RawInputs, load};
use vigil::ml::model::softmax;
use vigil::ml::spec;
use vigil::ml::train::{Silent, TrainControl, load_trained, train};
use vigil::serve::access_log::{ACCESS_LOG, AccessRecord, Flag};
use vigil::serve::audit::verify_dir;
use vigil::serve::keys::{Budget, KeyFile, NewKey, Period, RateLimit, Scope, key_file_path};
use vigil::serve::monitor::{LogFollower, ServiceStats};
use vigil::serve::router::RequestLimits;
use vigil::serve::routes::{Access, ROUTES};
use vigil::serve::traffic::{self, TrafficConfig};
use vigil::serve::{ServeConfig, Server, ServerThread, TlsFiles};
use vigil::store::{CheckpointKind, RunStore};

/// A run store with a trained digits-logreg run (1 epoch) and topics-text run, trained once.
fn trained_store() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        for (name, epochs) in [("digits-logreg", 2), ("topics-text", 2)] {
            let mut s = spec::resolve(name, Path::new("models")).unwrap().0;
            s.epochs = epochs;
            let run = store.create(&s).unwrap();
            train(&run, false, &mut Silent, &TrainControl::default()).unwrap();
        }
        dir
    })
    .path()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of the trained store, so that each test has its own keys and log.
fn fresh_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(trained_store(), dir.path());
    dir
}

fn run_id(store: &Path, spec: &str) -> String {
    RunStore::new(store).list().into_iter().find(|r| r.spec == spec).unwrap().id.into()
}

fn config(store: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(store, vec![run_id(store, "digits-logreg"), run_id(store, "topics-text")]);
    c.addr = "127.0.0.1:0".parse().unwrap();
    c
}

struct KeySpec<'a> {
    name: &'a str,
    scopes: &'a [Scope],
    output: &'a str,
    rate: Option<RateLimit>,
    budget: Option<Budget>,
    expires_in: Option<Duration>,
}

impl<'a> KeySpec<'a> {
    fn new(name: &'a str, scopes: &'a [Scope]) -> Self {
        KeySpec { name, scopes, output: "full", rate: None, budget: None, expires_in: None }
    }
}

fn add_key(store: &Path, k: KeySpec) -> String {
    let path = key_file_path(store);
    let mut file = KeyFile::load(&path).unwrap();
    let (_, key) = file
        .create(
            NewKey {
                name: k.name.into(),
                scopes: k.scopes.to_vec(),
                expires_in: k.expires_in,
                rate: k.rate,
                budget: k.budget,
                output: k.output.parse().unwrap(),
                guard: Default::default(),
                generate: Default::default(),
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    file.save(&path).unwrap();
    key
}

fn client() -> reqwest::Client {
    vigil::serve::server::install_crypto();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// Raw test-split digits (0..16 pixels), `n` of them.
fn digits(n: usize) -> Vec<Vec<f32>> {
    let ds = load(&spec::DataSource::Digits).unwrap();
    let RawInputs::Dense { values, .. } = &ds.inputs else { unreachable!() };
    (0..n).map(|i| values[i * 64..(i + 1) * 64].to_vec()).collect()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

async fn call(
    c: &reqwest::Client,
    method: &str,
    url: String,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut r = c.request(method.parse().unwrap(), url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

async fn predict(c: &reqwest::Client, s: &Server, key: &str, body: Value) -> Reply {
    call(
        c,
        "POST",
        format!("{}/v1/models/digits-logreg/predict", s.url()),
        Some(key),
        Some(body.to_string().into_bytes()),
    )
    .await
}

fn log_lines(store: &Path) -> Vec<AccessRecord> {
    let text = std::fs::read_to_string(store.join(ACCESS_LOG)).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_route_refuses_a_request_without_a_key() {
    let dir = fresh_store();
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let mut sent = 0;
    for r in ROUTES {
        let path = r.path.replace("{name}", "digits-logreg");
        let body = (r.method == "POST").then(|| json!({"inputs": [digits(1)[0]]}).to_string().into_bytes());
        let reply = call(&c, r.method, format!("{}{path}", server.url()), None, body).await;
        sent += 1;
        match r.access {
            Access::Open => assert_eq!(reply.status, 200, "{} {path}", r.method),
            _ => {
                assert_eq!(reply.status, 401, "{} {path} answered without a key", r.method);
                let challenge = reply.headers["www-authenticate"].to_str().unwrap();
                assert!(challenge.starts_with("Bearer"), "{challenge}");
                assert!(reply.body["error"].as_str().unwrap().contains("Authorization: Bearer"));
            }
        }
        // Every other method on a registered path needs a key too.
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if other != r.method {
                let reply = call(&c, other, format!("{}{path}", server.url()), None, None).await;
                sent += 1;
                assert_eq!(reply.status, 401, "{other} {path}");
            }
        }
    }
    // And so does a path the service lacks: without a key nobody learns which routes exist.
    for path in
        ["/", "/v1", "/v1/models/digits-logreg", "/admin", "/v2/models", "/healthz/x", "/../etc/passwd"]
    {
        let reply = call(&c, "GET", format!("{}{path}", server.url()), None, None).await;
        sent += 1;
        assert_eq!(reply.status, 401, "{path}");
    }
    server.shutdown().await.unwrap();
    assert_eq!(log_lines(dir.path()).len(), sent, "one access-log line per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_reaches_its_routes_only() {
    let dir = fresh_store();
    let predict_key = add_key(dir.path(), KeySpec::new("p", &[Scope::Predict]));
    let explain_key = add_key(dir.path(), KeySpec::new("e", &[Scope::Explain]));
    let admin_key = add_key(dir.path(), KeySpec::new("a", &[Scope::Admin]));
    let all_key = add_key(dir.path(), KeySpec::new("all", &[Scope::Predict, Scope::Explain, Scope::Admin]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let body = || Some(json!({"inputs": [digits(1)[0]]}).to_string().into_bytes());
    let u = |p: &str| format!("{}{p}", server.url());
    // (key, route, expected status)
    let matrix = [
        (&predict_key, "GET /v1/models", 200),
        (&predict_key, "POST /v1/models/digits-logreg/predict", 200),
        (&predict_key, "GET /metrics", 403),
        (&explain_key, "GET /v1/models", 200),
        (&explain_key, "POST /v1/models/digits-logreg/predict", 403),
        (&explain_key, "GET /metrics", 403),
        (&admin_key, "GET /v1/models", 200),
        (&admin_key, "POST /v1/models/digits-logreg/predict", 403),
        (&admin_key, "GET /metrics", 200),
        (&all_key, "POST /v1/models/digits-logreg/predict", 200),
        (&all_key, "GET /metrics", 200),
        (&predict_key, "POST /v1/models/digits-logreg/explain", 403),
        (&explain_key, "POST /v1/models/digits-logreg/explain", 200),
        (&admin_key, "POST /v1/models/digits-logreg/explain", 403),
        (&all_key, "POST /v1/models/digits-logreg/explain", 200),
        (&all_key, "GET /nothing", 404),
        (&all_key, "DELETE /v1/models", 405),
        (&all_key, "POST /v1/models/nope/predict", 404),
    ];
    for (key, route, want) in matrix {
        let (method, path) = route.split_once(' ').unwrap();
        let reply = call(&c, method, u(path), Some(key), (method == "POST").then(body).flatten()).await;
        assert_eq!(reply.status, want, "{route}: {}", reply.text);
        if want == 403 {
            let challenge = reply.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.contains("insufficient_scope"), "{challenge}");
            assert!(reply.body["error"].as_str().unwrap().contains("needs the"), "{}", reply.text);
        }
    }
    let models = call(&c, "GET", u("/v1/models"), Some(&predict_key), None).await.body;
    let names: Vec<&str> =
        models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"digits-logreg") && names.contains(&"topics-text"));
    server.shutdown().await.unwrap();
    // Refused requests name the key that tried, so the log shows who probed what.
    let lines = log_lines(dir.path());
    assert!(lines.iter().any(|l| l.status == 403 && l.key.as_deref() == Some("e")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_work_until_they_expire_or_are_revoked() {
    let dir = fresh_store();
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    // Created while the server runs: usable at once.
    let key = add_key(dir.path(), KeySpec::new("late", &[Scope::Predict]));
    let input = json!({"inputs": [digits(1)[0]]});
    assert_eq!(predict(&c, &server, &key, input.clone()).await.status, 200);
    // A wrong key of the right shape is refused.
    let mut wrong = key.clone();
    wrong.replace_range(wrong.len() - 1.., if key.ends_with('0') { "1" } else { "0" });
    let reply = predict(&c, &server, &wrong, input.clone()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["error"], "the key is not valid");
    assert!(reply.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // Expiry.
    let short = add_key(
        dir.path(),
        KeySpec { expires_in: Some(Duration::from_secs(1)), ..KeySpec::new("short", &[Scope::Predict]) },
    );
    assert_eq!(predict(&c, &server, &short, input.clone()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = predict(&c, &server, &short, input.clone()).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert!(reply.body["error"].as_str().unwrap().starts_with("the key expired at"), "{}", reply.text);
    // Revocation takes effect without a restart.
    let path = key_file_path(dir.path());
    let mut file = KeyFile::load(&path).unwrap();
    file.revoke("late", OffsetDateTime::now_utc()).unwrap();
    file.save(&path).unwrap();
    let mut reply = predict(&c, &server, &key, input.clone()).await;
    for _ in 0..50 {
        if reply.status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = predict(&c, &server, &key, input.clone()).await;
    }
    assert_eq!(reply.status, 401, "a revoked key still works after 5 s");
    assert!(reply.body["error"].as_str().unwrap().starts_with("the key was revoked at"), "{}", reply.text);
    server.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&key[6..]), "the key file holds a raw key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_answers_its_status_and_says_why() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("k", &[Scope::Predict]));
    let slow = add_key(
        dir.path(),
        KeySpec {
            rate: Some(RateLimit { per_second: 1, burst: 2 }),
            ..KeySpec::new("slow", &[Scope::Predict])
        },
    );
    let mut cfg = config(dir.path());
    cfg.limits = RequestLimits { max_body: 8 * 1024, max_inputs: 4, ..RequestLimits::default() };
    let server = Server::start(cfg).await.unwrap();
    let c = client();
    let d = digits(5);

    // 413: a body over the limit, announced by Content-Length or not.
    let big = json!({"inputs": vec![d[0].clone(); 40]}).to_string().into_bytes();
    assert!(big.len() > 8 * 1024);
    let url = format!("{}/v1/models/digits-logreg/predict", server.url());
    let reply = call(&c, "POST", url.clone(), Some(&key), Some(big.clone())).await;
    assert_eq!(reply.status, 413);
    assert!(reply.body["error"].as_str().unwrap().contains("larger than the service's limit of 8192 bytes"));
    // Chunked, without a Content-Length: the server counts while it reads.
    let mut chunked = format!(
        "POST /v1/models/digits-logreg/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in big.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_http(server.addr(), chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // 422: too many inputs, a wrong shape, out of range, a missing value.
    let reply = predict(&c, &server, &key, json!({"inputs": d.clone()})).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.body["error"],
        "this request has 5 inputs; the service takes at most 4 per request: split the batch"
    );
    let reply = predict(&c, &server, &key, json!({"inputs": [d[0].clone(), d[1][..63].to_vec()]})).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.body["error"], "inputs[1]: expected 64 values (1x8x8 image), got 63");
    let mut far = d[0].clone();
    far[7] = 1e6;
    let reply = predict(&c, &server, &key, json!({"inputs": [d[0].clone(), far]})).await;
    assert_eq!(reply.status, 422);
    let msg = reply.body["error"].as_str().unwrap();
    assert!(msg.starts_with("inputs[1][7] = 1000000 is outside the range this model accepts"), "{msg}");
    let mut gap: Vec<Value> = d[0].iter().map(|v| json!(v)).collect();
    gap[3] = Value::Null;
    let reply = predict(&c, &server, &key, json!({"inputs": [gap]})).await;
    assert_eq!(reply.status, 422);
    assert!(reply.body["error"].as_str().unwrap().starts_with("inputs[0][3] is null"), "{}", reply.text);

    // 429: the rate limit, with Retry-After.
    let mut statuses = vec![];
    let mut retry_after = None;
    for _ in 0..4 {
        let r = predict(&c, &server, &slow, json!({"inputs": [d[0].clone()]})).await;
        if r.status == 429 {
            retry_after = Some(r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
            assert!(
                r.body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("rate limit: this key may send 1 requests per second")
            );
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..2], &[200, 200], "the burst passes");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "{retry_after:?}");
    server.shutdown().await.unwrap();

    // 503: a request that outlives the timeout.
    let mut cfg = config(dir.path());
    cfg.limits.timeout = Duration::from_nanos(1);
    let server = Server::start(cfg).await.unwrap();
    let reply = predict(&c, &server, &key, json!({"inputs": [d[0].clone()]})).await;
    assert_eq!(reply.status, 503);
    assert!(reply.body["error"].as_str().unwrap().contains("took longer than the service's limit"));
    server.shutdown().await.unwrap();
}

/// Sends bytes as they are and returns the whole answer (the request must say Connection: close).
async fn raw_http(addr: std::net::SocketAddr, request: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer (and close) before it has read everything; that is fine.
        let _ = s.write_all(&request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_budget_answers_429_and_survives_a_restart() {
    let dir = fresh_store();
    let key = add_key(
        dir.path(),
        KeySpec {
            budget: Some(Budget { limit: 5, period: Period::Day }),
            ..KeySpec::new("b", &[Scope::Predict])
        },
    );
    let d = digits(3);
    let c = client();
    let server = Server::start(config(dir.path())).await.unwrap();
    assert_eq!(predict(&c, &server, &key, json!({"inputs": d.clone()})).await.status, 200);
    // 3 used, 2 left: a batch of 3 is refused whole, with the time until the day renews.
    let reply = predict(&c, &server, &key, json!({"inputs": d.clone()})).await;
    assert_eq!(reply.status, 429);
    let msg = reply.body["error"].as_str().unwrap();
    assert!(msg.starts_with("query budget spent: this key may predict 5 inputs per day window, has used 3 and asked for 3 more"), "{msg}");
    let retry: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    // A request that fails validation spends nothing.
    let reply = predict(&c, &server, &key, json!({"inputs": [[1.0]]})).await;
    assert_eq!(reply.status, 422);
    server.shutdown().await.unwrap();

    let server = Server::start(config(dir.path())).await.unwrap();
    assert_eq!(predict(&c, &server, &key, json!({"inputs": d[..2].to_vec()})).await.status, 200);
    let reply = predict(&c, &server, &key, json!({"inputs": [d[0].clone()]})).await;
    assert_eq!(reply.status, 429, "the restart handed out a fresh budget: {}", reply.text);
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let left: Vec<Option<u64>> = lines.iter().map(|l| l.budget_left).collect();
    assert_eq!(left, vec![Some(2), Some(2), None, Some(0), Some(0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_policies_apply_to_every_input_of_a_batch() {
    let dir = fresh_store();
    let keys: Vec<(&str, String)> = ["full", "top-k:3", "label", "round:2", "top-k:2,round:1"]
        .into_iter()
        .map(|p| {
            let name = p.replace([':', ','], "-");
            (p, add_key(dir.path(), KeySpec { output: p, ..KeySpec::new(&name, &[Scope::Predict]) }))
        })
        .collect();
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let d = digits(4);
    let body = json!({"inputs": d.clone()});
    let full = predict(&c, &server, &keys[0].1, body.clone()).await.body;

    // The served probabilities are the model's on the run's own preprocessing: compare with
    // the network loaded directly from the run.
    let store = RunStore::new(dir.path());
    let run = store.resolve(&run_id(dir.path(), "digits-logreg")).unwrap();
    let trained = load_trained(&run, CheckpointKind::Best).unwrap();
    let rows: Vec<f32> = d.iter().flat_map(|x| trained.pipeline.transform(x).unwrap()).collect();
    let x = candle_core::Tensor::from_vec(rows, (4, 1, 8, 8), &candle_core::Device::Cpu).unwrap();
    let expected = softmax(&trained.network.forward(&x, None).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    let preds = full["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 4);
    assert_eq!(full["version"].as_str().unwrap().len(), 12);
    for (p, want) in preds.iter().zip(&expected) {
        let probs = p["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 10);
        for (class, w) in want.iter().enumerate() {
            let got = probs[&class.to_string()].as_f64().unwrap();
            assert!((got - *w as f64).abs() < 1e-6, "class {class}: {got} vs {w}");
        }
        let best = want.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(p["label"], best.to_string());
    }

    for (policy, key) in &keys[1..] {
        let reply = predict(&c, &server, key, body.clone()).await.body;
        let got = reply["predictions"].as_array().unwrap();
        assert_eq!(got.len(), 4, "{policy}");
        for (g, f) in got.iter().zip(preds) {
            assert_eq!(g["label"], f["label"], "{policy}: the label is always the model's");
            let full_probs = f["probabilities"].as_object().unwrap();
            let mut ranked: Vec<(&String, f64)> =
                full_probs.iter().map(|(k, v)| (k, v.as_f64().unwrap())).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let round = |v: f64, d: i32| (v * 10f64.powi(d)).round() / 10f64.powi(d);
            match *policy {
                "label" => assert!(g.get("probabilities").is_none(), "{g}"),
                "top-k:3" => {
                    assert!(g.get("probabilities").is_none());
                    let shown: Vec<(&str, f64)> = top_k(g);
                    let want: Vec<(&str, f64)> = ranked[..3].iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    assert_eq!(shown, want, "most probable first");
                }
                "round:2" => {
                    let shown = g["probabilities"].as_object().unwrap();
                    assert_eq!(shown.len(), 10);
                    for (k, v) in shown {
                        let want = round(full_probs[k].as_f64().unwrap(), 2);
                        assert!((v.as_f64().unwrap() - want).abs() < 1e-6, "{k}: {v} vs {want}");
                    }
                }
                "top-k:2,round:1" => {
                    let shown = top_k(g);
                    assert_eq!(shown.len(), 2);
                    for ((k, v), (rk, rv)) in shown.iter().zip(&ranked) {
                        assert_eq!(k, rk);
                        assert!((v - round(*rv, 1)).abs() < 1e-6);
                    }
                }
                other => unreachable!("{other}"),
            }
        }
    }
    server.shutdown().await.unwrap();
    let policies: Vec<String> = log_lines(dir.path()).iter().filter_map(|l| l.policy.clone()).collect();
    assert_eq!(policies, vec!["full", "top-k:3", "label", "full,round:2", "top-k:2,round:1"]);
}

/// The `top_k` array of a prediction as (class, probability) pairs, in the order sent.
fn top_k(prediction: &Value) -> Vec<(&str, f64)> {
    prediction["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["class"].as_str().unwrap(), e["probability"].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_models_take_texts_tokenised_as_in_training() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("t", &[Scope::Predict]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let url = format!("{}/v1/models/topics-text/predict", server.url());
    let texts = ["the striker scored twice in the final", "", "Parliament passed the BUDGET bill"];
    let reply =
        call(&c, "POST", url.clone(), Some(&key), Some(json!({"texts": texts}).to_string().into_bytes()))
            .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The same texts through the run's own pipeline and network.
    let run = RunStore::new(dir.path()).resolve(&run_id(dir.path(), "topics-text")).unwrap();
    let trained = load_trained(&run, CheckpointKind::Best).unwrap();
    let ids: Vec<u32> = texts.iter().flat_map(|t| trained.pipeline.encode(t).unwrap()).collect();
    let len = ids.len() / 3;
    let x = candle_core::Tensor::from_vec(ids, (3, len), &candle_core::Device::Cpu).unwrap();
    let probs = softmax(&trained.network.forward(&x, None).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    for (p, want) in reply.body["predictions"].as_array().unwrap().iter().zip(&probs) {
        let best = want.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(p["label"].as_str().unwrap(), trained.pipeline.classes[best]);
        let got = &p["probabilities"][&trained.pipeline.classes[best]];
        assert!((got.as_f64().unwrap() - want[best] as f64).abs() < 1e-6);
    }
    // Numbers to a text model, texts to a numeric one: 422 saying what to send.
    let reply = call(&c, "POST", url.clone(), Some(&key), Some(br#"{"inputs": [[1, 2]]}"#.to_vec())).await;
    assert_eq!(reply.status, 422);
    assert!(reply.body["error"].as_str().unwrap().contains("takes texts"), "{}", reply.text);
    let reply = predict(&c, &server, &key, json!({"texts": ["a"]})).await;
    assert_eq!(reply.status, 422);
    assert!(reply.body["error"].as_str().unwrap().contains("takes numbers"), "{}", reply.text);
    // The right kind of values in the other field fail to parse: the message says where, and
    // which field the model takes.
    let reply = call(&c, "POST", url, Some(&key), Some(br#"{"inputs": ["a goal"]}"#.to_vec())).await;
    assert_eq!(reply.status, 422);
    let msg = reply.body["error"].as_str().unwrap();
    assert!(msg.starts_with("inputs[0]: invalid type: string") && msg.contains("takes texts"), "{msg}");
    let reply = predict(&c, &server, &key, json!({"texts": [[1, 2]]})).await;
    assert_eq!(reply.status, 422);
    let msg = reply.body["error"].as_str().unwrap();
    assert!(msg.starts_with("texts[0]: invalid type") && msg.contains("takes numbers"), "{msg}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_checkpoint_is_refused_by_name() {
    let dir = fresh_store();
    let id = run_id(dir.path(), "digits-logreg");
    let file = dir.path().join(&id).join("checkpoints/best.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let err =
        Server::start(config(dir.path())).await.err().expect("a tampered checkpoint must not be served");
    let msg = err.to_string();
    assert!(msg.contains("best.safetensors") && msg.contains("does not match the run's manifest"), "{msg}");
    assert_eq!(err.exit_code(), 1);

    // So is a run whose preprocessing was changed: the weights would meet other inputs.
    let dir = fresh_store();
    let id = run_id(dir.path(), "digits-logreg");
    let file = dir.path().join(&id).join("preprocess.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("16.0"), "{text}");
    std::fs::write(&file, text.replacen("16.0", "160.0", 1)).unwrap();
    let err = Server::start(config(dir.path())).await.err().expect("a changed pipeline must not be served");
    let msg = err.to_string();
    assert!(msg.contains("preprocess.json") && msg.contains("does not match the run's manifest"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_4xx_and_the_server_keeps_serving() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("fuzz", &[Scope::Predict]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let good = json!({"inputs": [digits(1)[0]]}).to_string();
    let row = digits(1)[0].iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let deep = format!("{{\"inputs\": {}{}}}", "[".repeat(50_000), "]".repeat(50_000));
    let corpus: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", b"".to_vec(), 400),
        ("truncated", br#"{"inputs": [[1, 2"#.to_vec(), 400),
        ("truncated after a value", format!("{{\"inputs\": [[{row}]]").into_bytes(), 400),
        ("not json", b"inputs=1,2,3".to_vec(), 400),
        ("trailing garbage", format!("{good} x").into_bytes(), 400),
        ("NaN", format!("{{\"inputs\": [[NaN,{}]]}}", &row[row.find(',').unwrap() + 1..]).into_bytes(), 400),
        ("Infinity", br#"{"inputs": [[Infinity]]}"#.to_vec(), 400),
        ("number beyond f64", br#"{"inputs": [[1e400]]}"#.to_vec(), 400),
        (
            "huge but finite",
            format!("{{\"inputs\": [[1e300,{}]]}}", &row[row.find(',').unwrap() + 1..]).into_bytes(),
            422,
        ),
        ("invalid utf-8", b"{\"inputs\": [[\xff\xfe]]}".to_vec(), 400),
        ("deep nesting", deep.into_bytes(), 422),
        ("deep nesting at the root", "[".repeat(100_000).into_bytes(), 422),
        ("string values", br#"{"inputs": [["1", "2"]]}"#.to_vec(), 422),
        ("bool values", br#"{"inputs": [[true]]}"#.to_vec(), 422),
        ("object values", br#"{"inputs": [[{"a": 1}]]}"#.to_vec(), 422),
        ("inputs a string", br#"{"inputs": "everything"}"#.to_vec(), 422),
        ("flat array", format!("{{\"inputs\": [{row}]}}").into_bytes(), 422),
        ("three levels", format!("{{\"inputs\": [[[{row}]]]}}").into_bytes(), 422),
        ("wrong length", br#"{"inputs": [[1, 2, 3]]}"#.to_vec(), 422),
        ("empty input", br#"{"inputs": [[]]}"#.to_vec(), 422),
        ("empty batch", br#"{"inputs": []}"#.to_vec(), 422),
        ("null", b"null".to_vec(), 422),
        ("a number", b"42".to_vec(), 422),
        ("an array", b"[]".to_vec(), 422),
        ("no field", b"{}".to_vec(), 422),
        ("unknown field", format!("{{\"inputs\": [[{row}]], \"debug\": true}}").into_bytes(), 422),
        ("duplicate field", format!("{{\"inputs\": [[{row}]], \"inputs\": [[{row}]]}}").into_bytes(), 422),
        ("both fields", format!("{{\"inputs\": [[{row}]], \"texts\": [\"a\"]}}").into_bytes(), 422),
        (
            "negative pixels",
            format!("{{\"inputs\": [[-500,{}]]}}", &row[row.find(',').unwrap() + 1..]).into_bytes(),
            422,
        ),
        ("over the body limit", vec![b' '; 2 * 1024 * 1024], 413),
    ];
    let url = format!("{}/v1/models/digits-logreg/predict", server.url());
    let mut sent = 0;
    for (what, body, want) in corpus {
        let reply = call(&c, "POST", url.clone(), Some(&key), Some(body)).await;
        sent += 1;
        assert_eq!(reply.status, want, "{what}: {}", reply.text);
        let msg = reply.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message: {}", reply.text));
        assert!(!msg.is_empty() && reply.body["request_id"].is_string(), "{what}");
        let ok = call(&c, "POST", url.clone(), Some(&key), Some(good.clone().into_bytes())).await;
        sent += 1;
        assert_eq!(ok.status, 200, "after {what} the server stopped serving: {}", ok.text);
    }
    // A wrong Content-Type is refused before the body is read.
    let reply = c
        .post(url.clone())
        .bearer_auth(&key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    sent += 1;
    assert_eq!(reply.status().as_u16(), 415);
    server.shutdown().await.unwrap();
    assert_eq!(log_lines(dir.path()).len(), sent);
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!((report.finding, report.lines), (None, sent as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_hashed_line_per_request() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("logger", &[Scope::Predict]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let d = digits(3);
    let n = 40;
    // Concurrent requests, so lines are written while others arrive.
    let mut tasks = vec![];
    for i in 0..n {
        let c = c.clone();
        let url = format!("{}/v1/models/digits-logreg/predict", server.url());
        let body = json!({"inputs": [d[i % 3].clone()]}).to_string();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            call(&c, "POST", url, Some(&key), Some(body.into_bytes())).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let health = call(&c, "GET", format!("{}/healthz", server.url()), None, None).await;
    assert_eq!(health.status, 200);
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    assert_eq!(lines.len(), n + 1);
    let sha = |x: &[f32]| {
        let mut h = Sha256::new();
        for v in x {
            h.update(v.to_le_bytes());
        }
        hex::encode(h.finalize())
    };
    let hashes: Vec<String> = d.iter().map(|x| sha(x)).collect();
    let raw = std::fs::read_to_string(dir.path().join(ACCESS_LOG)).unwrap();
    for l in &lines[..n] {
        assert_eq!((l.status, l.method.as_str(), l.key.as_deref()), (200, "POST", Some("logger")));
        assert_eq!(l.route.as_deref(), Some("/v1/models/{name}/predict"));
        assert_eq!(l.model.as_deref(), Some("digits-logreg"));
        assert_eq!(l.version.as_ref().map(|v| v.len()), Some(12));
        assert_eq!((l.inputs, l.labels.len(), l.input_sha256.len()), (1, 1, 1));
        assert!(hashes.contains(&l.input_sha256[0]), "the hash is of the input's f32 values");
        assert!(l.client.as_deref().unwrap().starts_with("127.0.0.1:"));
        assert!(l.bytes_in > 100 && l.bytes_out > 50 && l.latency_us > 0);
        assert!(l.raw_inputs.is_none() && l.flags.is_empty() && l.error.is_none());
        assert_eq!(l.policy.as_deref(), Some("full"));
    }
    assert!(!raw.contains(&key[6..]), "the log must not hold the key");
    assert!(!raw.contains("\"raw_inputs\""));
    let last = &lines[n];
    assert_eq!((last.route.as_deref(), last.key.as_deref(), last.status), (Some("/healthz"), None, 200));
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=n as u64 + 1).collect::<Vec<_>>());
    assert_eq!(verify_dir(dir.path()).unwrap().finding, None);

    // Raw inputs only when the operator asks.
    let mut cfg = config(dir.path());
    cfg.log_raw_inputs = true;
    let server = Server::start(cfg).await.unwrap();
    assert_eq!(predict(&c, &server, &key, json!({"inputs": [d[0].clone()]})).await.status, 200);
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let l = lines.last().unwrap();
    assert_eq!(l.seq, n as u64 + 2, "the chain continues across restarts");
    let logged: Vec<f32> = l.raw_inputs.as_ref().unwrap()[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(logged, d[0]);
    assert_eq!(verify_dir(dir.path()).unwrap().finding, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_in_prometheus_text() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("p", &[Scope::Predict]));
    let admin = add_key(dir.path(), KeySpec::new("ops", &[Scope::Admin]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    for _ in 0..3 {
        assert_eq!(predict(&c, &server, &key, json!({"inputs": digits(2)})).await.status, 200);
    }
    assert_eq!(predict(&c, &server, &key, json!({"inputs": [[1]]})).await.status, 422);
    let m = call(&c, "GET", format!("{}/metrics", server.url()), Some(&admin), None).await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = m.text;
    for line in [
        r#"vigil_http_requests_total{route="/v1/models/{name}/predict",method="POST",status="200"} 3"#,
        r#"vigil_http_requests_total{route="/v1/models/{name}/predict",method="POST",status="422"} 1"#,
        r#"vigil_key_requests_total{key="p"} 4"#,
        r#"vigil_predictions_total{model="digits-logreg""#,
        "# TYPE vigil_http_request_duration_seconds histogram",
        "vigil_model_info{model=\"topics-text\"",
        "# EOF",
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    let predictions =
        text.lines().find(|l| l.starts_with("vigil_predictions_total{model=\"digits-logreg\"")).unwrap();
    assert!(predictions.ends_with(" 6"), "{predictions}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_plain_binds_stay_on_loopback() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("p", &[Scope::Predict]));
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(TlsFiles { cert: cert_path.clone(), key: key_path.clone() });
    let server = Server::start(cfg).await.unwrap();
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let tls_client = traffic::client(Some(&cert_path)).unwrap();
    let reply = predict(&tls_client, &server, &key, json!({"inputs": [digits(1)[0]]})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A client that does not trust the certificate gets no answer, nor does plain HTTP.
    assert!(client().get(format!("{}/healthz", server.url())).send().await.is_err());
    let plain = format!("http://{}/healthz", server.addr());
    assert!(client().get(plain).send().await.is_err());
    server.shutdown().await.unwrap();

    // Not loopback and no TLS: refused before anything binds.
    let mut cfg = config(dir.path());
    cfg.addr = "0.0.0.0:0".parse().unwrap();
    let err = Server::start(cfg).await.err().unwrap();
    assert!(err.to_string().starts_with("refusing to serve on 0.0.0.0:0 without TLS"), "{err}");
    assert_eq!(err.exit_code(), 2);
    // A broken certificate names the files.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(TlsFiles { cert: cert_path, key: key_path });
    let err = Server::start(cfg).await.err().unwrap().to_string();
    assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_sends_test_inputs_and_the_follower_sees_every_line() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("client", &[Scope::Predict]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let report = traffic::run(
        TrafficConfig {
            addr: server.addr().to_string(),
            key,
            rate: 40.0,
            duration: Duration::from_millis(1500),
            model: Some("digits-logreg".into()),
            batch: 2,
            ca_cert: None,
            store: RunStore::new(dir.path()),
            models_dir: PathBuf::from("models"),
            max_in_flight: 64,
            profile: traffic::Profile::Benign,
            queries: 0,
        },
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(report.sent >= 40, "{report:?}");
    assert_eq!(report.statuses.get(&200).copied(), Some(report.sent), "{report:?}");
    assert_eq!(report.labelled, 2 * report.sent);
    // Varied inputs (each test digit shifted by up to a pixel and noised) on a model trained
    // for 2 epochs: well above the 10% of chance, not the test accuracy.
    assert!(report.agreed as f64 / report.labelled as f64 > 0.2, "{report:?}");
    assert!(report.inputs_from.contains("variations of the test split of run digits-logreg-"));
    assert!(report.p50_ms.unwrap() <= report.p99_ms.unwrap());

    // The follower reads what the server wrote, and the stats count it.
    let log = server.log_stats();
    let mut follower = LogFollower::new(dir.path());
    let mut stats = ServiceStats::new(60);
    let mut seen = 0;
    for _ in 0..100 {
        let batch = follower.poll().unwrap();
        seen += batch.len();
        stats.extend(batch);
        if seen as u64 > report.sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One GET /v1/models to find the model, then the predictions.
    assert_eq!(seen as u64, report.sent + 1);
    assert_eq!(log.written.load(std::sync::atomic::Ordering::Relaxed), report.sent + 1);
    let snap = stats.snapshot(OffsetDateTime::now_utc().unix_timestamp());
    assert_eq!(snap.requests, report.sent + 1);
    assert_eq!(snap.error_rate, 0.0);
    assert_eq!(snap.keys.len(), 1);
    assert_eq!(snap.keys[0].requests, report.sent + 1);
    server.shutdown().await.unwrap();
}

#[test]
fn a_server_on_its_own_thread_starts_and_stops() {
    let dir = fresh_store();
    let mut cfg = config(dir.path());
    cfg.runs = vec![run_id(dir.path(), "digits-logreg")];
    let thread = ServerThread::spawn(cfg).unwrap();
    let addr = thread.server().addr();
    assert!(thread.server().is_running());
    assert_eq!(thread.server().models().len(), 1);
    assert!(
        thread.server().warnings().iter().any(|w| w.contains("no active key")),
        "{:?}",
        thread.server().warnings()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status =
        rt.block_on(async { client().get(format!("http://{addr}/healthz")).send().await.unwrap().status() });
    assert_eq!(status.as_u16(), 200);
    thread.shutdown().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "still listening after shutdown");
    assert_eq!(log_lines(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_spec_cannot_share_a_name() {
    let dir = fresh_store();
    let id = run_id(dir.path(), "digits-logreg");
    let mut cfg = config(dir.path());
    cfg.runs = vec![id.clone(), id];
    let err = Server::start(cfg).await.err().unwrap().to_string();
    assert!(err.contains("would both be served as \"digits-logreg\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_from_the_service_equal_the_command_lines_and_refuse_bad_options() {
    let dir = fresh_store();
    let key = add_key(dir.path(), KeySpec::new("e", &[Scope::Explain]));
    let label_only = add_key(dir.path(), KeySpec { output: "label", ..KeySpec::new("l", &[Scope::Explain]) });
    let server = Server::start(config(dir.path())).await.unwrap();
    let c = client();
    let inputs = digits(2);
    let url = |q: &str| format!("{}/v1/models/digits-logreg/explain{q}", server.url());
    let body = || Some(json!({ "inputs": inputs }).to_string().into_bytes());
    let reply = call(&c, "POST", url("?method=ig&target=3"), Some(&key), body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let got = reply.body["explanations"].as_array().unwrap();
    assert_eq!(got.len(), 2);

    // The same run, input and method through the library, as `vigil explain` computes them.
    let run = RunStore::new(dir.path()).resolve(&run_id(dir.path(), "digits-logreg")).unwrap();
    let t = load_trained(&run, CheckpointKind::Best).unwrap();
    let rows: Vec<f32> = inputs.iter().flat_map(|r| t.pipeline.transform(r).unwrap()).collect();
    let mut dims = vec![2];
    dims.extend(t.pipeline.input.dims());
    let x = candle_core::Tensor::from_vec(rows, dims, &candle_core::Device::Cpu).unwrap();
    let method = vigil::ml::explain::Method::named("ig", &t.pipeline.input).unwrap();
    let want = vigil::ml::explain::Explainer::new(&t.network).explain(&x, &method, Some(&[3, 3])).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["target"], "3");
        let a: Vec<f64> = g["attributions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(a.len(), 64);
        let diff = a.iter().zip(&w.attributions).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-6, "largest difference {diff}");
        assert!(g["completeness_delta"].as_f64().is_some());
        assert!(g["probabilities"].is_object(), "{g}");
    }
    // The key's output policy shapes the answer here too: label only, no probabilities.
    let reply = call(&c, "POST", url(""), Some(&label_only), body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let first = &reply.body["explanations"][0];
    assert!(first["probabilities"].is_null() && first["label"].is_string(), "{first}");

    // Bad options: each refused with what is wrong, and no budget spent.
    for (q, status, says) in [
        ("?method=magic", 400, "unknown method"),
        ("?colour=red", 400, "bad query string"),
        ("?target=eleven", 422, "is not a class"),
        ("?target=10", 422, "is not a class"),
    ] {
        let reply = call(&c, "POST", url(q), Some(&key), body()).await;
        assert_eq!(reply.status, status, "{q}: {}", reply.text);
        assert!(reply.body["error"].as_str().unwrap().contains(says), "{q}: {}", reply.text);
    }
    let reply = call(&c, "POST", url(""), Some(&key), Some(b"{\"inputs\": [[1, 2]]}".to_vec())).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    // Text models are explained per token.
    let reply = call(
        &c,
        "POST",
        format!("{}/v1/models/topics-text/explain?method=saliency", server.url()),
        Some(&key),
        Some(json!({"texts": ["the striker scored a late goal"]}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.body["explanations"][0]["attributions"].as_array().unwrap().is_empty());
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let explained: Vec<_> =
        lines.iter().filter(|l| l.route.as_deref() == Some("/v1/models/{name}/explain")).collect();
    assert_eq!(explained.len(), 8, "every explain request is in the access log");
    assert!(explained.iter().any(|l| l.status == 200 && l.labels.len() == 2));
}

/// `RUN@VARIANT` serves a variant made by `vigil optimize`: it answers under the spec's name
/// with the variant file's version, says so in `/v1/models` and in every access-log line, and
/// explains its predictions (on the CPU a quantised layer widens its weight to pass gradients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_is_served_and_named_in_the_log() {
    use vigil::ml::variants::{Precision, VariantSpec, load_variant, optimize};
    let dir = fresh_store();
    let store = RunStore::new(dir.path());
    let id = run_id(dir.path(), "digits-logreg");
    let run = store.resolve(&id).unwrap();
    optimize(&run, &VariantSpec { precision: Precision::Q8_0, prune: None }, 1).unwrap();
    let variant = load_variant(&run, "q8_0").unwrap();
    let mut c = ServeConfig::new(dir.path(), vec![format!("{id}@q8_0")]);
    c.addr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(c).await.unwrap();
    let key = add_key(
        dir.path(),
        KeySpec {
            budget: Some(Budget { limit: 10, period: Period::Day }),
            ..KeySpec::new("v", &[Scope::Predict, Scope::Explain])
        },
    );
    let http = client();
    let inputs = digits(3);
    let r = predict(&http, &server, &key, json!({ "inputs": inputs })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], variant.sha256[..12]);
    // The variant's own predictions, computed outside the service.
    let t = &variant.trained;
    let x: Vec<f32> = inputs.iter().flat_map(|i| t.pipeline.transform(i).unwrap()).collect();
    let x = candle_core::Tensor::from_vec(x, (3, 1, 8, 8), &candle_core::Device::Cpu).unwrap();
    let want = t.network.forward(&x, None).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
    for (p, w) in r.body["predictions"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(p["label"], w.to_string());
    }
    let models = call(&http, "GET", format!("{}/v1/models", server.url()), Some(&key), None).await;
    assert_eq!(models.body["models"][0]["variant"], "q8_0");
    let explain = call(
        &http,
        "POST",
        format!("{}/v1/models/digits-logreg/explain?method=saliency", server.url()),
        Some(&key),
        Some(json!({ "inputs": digits(1) }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(explain.status, 200, "{}", explain.text);
    let attributions = explain.text.matches("attributions").count();
    assert!(attributions >= 1, "{}", explain.text);
    // 3 inputs predicted, 1 explained, 1 predicted: 5 of 10 are left.
    let again = predict(&http, &server, &key, json!({ "inputs": digits(1) })).await;
    assert_eq!(again.status, 200);
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let model_lines: Vec<_> = lines.iter().filter(|l| l.model.is_some()).collect();
    assert_eq!(model_lines.len(), 3);
    assert!(model_lines.iter().all(|l| l.variant.as_deref() == Some("q8_0")), "{model_lines:?}");
    assert_eq!(model_lines[2].budget_left, Some(5));
}

fn traffic_config(store: &Path, server: &Server, key: String, profile: traffic::Profile) -> TrafficConfig {
    TrafficConfig {
        addr: server.addr().to_string(),
        key,
        rate: 200.0,
        duration: Duration::from_millis(1000),
        model: Some("digits-logreg".into()),
        batch: 100,
        ca_cert: None,
        store: RunStore::new(store),
        models_dir: PathBuf::from("models"),
        max_in_flight: 64,
        profile,
        queries: 1000,
    }
}

/// PRADA in the running service, end to end through `vigil traffic`'s profiles: a benign
/// client's 10,000+ queries raise no alarm; the thief raises one within 300 queries, its lines
/// say `extraction` with the key's W, and a key whose guard blocks on extraction is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extraction_is_caught_and_benign_traffic_is_not() {
    use vigil::serve::keys::{Guard, OnExtraction};
    let dir = fresh_store();
    let benign = add_key(dir.path(), KeySpec::new("benign", &[Scope::Predict]));
    let thief = add_key(dir.path(), KeySpec::new("thief", &[Scope::Predict]));
    let server = Server::start(config(dir.path())).await.unwrap();
    let mut file = KeyFile::load(&key_file_path(dir.path())).unwrap();
    file.keys.iter_mut().find(|k| k.name == "thief").unwrap().guard =
        Guard { reject_ood: false, on_extraction: OnExtraction::Block };
    file.save(&key_file_path(dir.path())).unwrap();
    // The server rereads the key file within a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = traffic::run(
        traffic_config(dir.path(), &server, benign, traffic::Profile::Benign),
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.statuses.get(&200).copied(), Some(report.sent), "{report:?}");
    let thief_report = traffic::run(
        traffic_config(dir.path(), &server, thief, traffic::Profile::Extraction),
        |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    server.shutdown().await.unwrap();

    let lines = log_lines(dir.path());
    let of = |key: &str| {
        lines.iter().filter(|l| l.key.as_deref() == Some(key) && l.model.is_some()).collect::<Vec<_>>()
    };
    let benign_lines = of("benign");
    let queries: usize = benign_lines.iter().map(|l| l.inputs).sum();
    assert!(queries >= 10_000, "only {queries} benign queries were sent");
    let ws: Vec<(usize, Option<f64>)> = benign_lines
        .iter()
        .scan(0, |n, l| {
            *n += l.inputs;
            Some((*n, l.extraction_w))
        })
        .collect();
    assert!(
        benign_lines.iter().all(|l| !l.flags.contains(&Flag::Extraction)),
        "a benign client was flagged: {ws:?}"
    );
    let w = benign_lines.last().unwrap().extraction_w.unwrap();
    assert!(w >= 0.9, "benign W {w}");

    let thief_lines = of("thief");
    let mut seen = 0;
    let mut caught_at = None;
    for l in &thief_lines {
        if l.status == 200 {
            seen += l.inputs;
        }
        if caught_at.is_none() && l.flags.contains(&Flag::Extraction) {
            caught_at = Some(seen);
            // The key's W at the end of the request (the alarm, raised on the way, stays).
            assert!(l.extraction_w.is_some(), "{l:?}");
        }
    }
    let caught_at = caught_at.expect("the thief was never flagged");
    eprintln!("benign: {queries} queries, final W {w}; thief flagged by query {caught_at}");
    assert!(caught_at <= 300, "the alarm came after {caught_at} queries");
    // Blocked from the request after the alarm on, and the client's report says so.
    let refused = thief_lines.iter().find(|l| l.status == 403).expect("the thief was blocked");
    assert!(refused.error.as_deref().unwrap().contains("model extraction"), "{refused:?}");
    assert!(thief_report.refused_after.unwrap() <= 300, "{thief_report:?}");
}

/// Inputs the run's detector flags are marked `ood` in the log; a key whose guard refuses them
/// gets 422 with the reason, and its budget is not spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_distribution_inputs_are_flagged_and_refused_per_key() {
    use vigil::serve::keys::Guard;
    let dir = fresh_store();
    let flag = add_key(dir.path(), KeySpec::new("flag", &[Scope::Predict]));
    let strict = add_key(
        dir.path(),
        KeySpec {
            budget: Some(Budget { limit: 10, period: Period::Day }),
            ..KeySpec::new("strict", &[Scope::Predict])
        },
    );
    let mut file = KeyFile::load(&key_file_path(dir.path())).unwrap();
    file.keys.iter_mut().find(|k| k.name == "strict").unwrap().guard =
        Guard { reject_ood: true, ..Guard::default() };
    file.save(&key_file_path(dir.path())).unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    let http = client();
    // A checkerboard at full intensity: no digit looks like it.
    let odd: Vec<f32> = (0..64).map(|i| if (i + i / 8) % 2 == 0 { 16.0 } else { 0.0 }).collect();
    let natural = digits(1).remove(0);
    let ok = predict(&http, &server, &flag, json!({ "inputs": [odd.clone()] })).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let refused = predict(&http, &server, &strict, json!({ "inputs": [natural.clone(), odd] })).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    let msg = refused.body["error"].as_str().unwrap();
    assert!(msg.contains("inputs[1]") && msg.contains("unlike the data"), "{msg}");
    let fine = predict(&http, &server, &strict, json!({ "inputs": [natural] })).await;
    assert_eq!(fine.status, 200, "{}", fine.text);
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let models: Vec<_> = lines.iter().filter(|l| l.model.is_some()).collect();
    assert_eq!(models[0].flags, [Flag::Ood]);
    assert_eq!((models[1].status, models[1].flags.clone()), (422, vec![Flag::Ood]));
    assert!(models[2].flags.is_empty(), "{:?}", models[2]);
    // The refused request's 2 inputs were refunded: 1 of 10 spent.
    assert_eq!(models[2].budget_left, Some(9));
}

/// `vigil traffic --profile adversarial` replays the PGD examples `vigil attack` saved, mapped
/// back to raw inputs: the service answers them as the attack measured (same labels), and a key
/// that refuses out-of-distribution inputs gets 422 for the ones the detector flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_traffic_replays_the_saved_attack() {
    use vigil::ml::attack::curve::{CurveOptions, robustness_curve, save};
    use vigil::ml::attack::{Attack, Norm};
    use vigil::ml::data::preprocess::PreparedData;
    use vigil::serve::keys::Guard;
    let dir = fresh_store();
    let store = RunStore::new(dir.path());
    let run = store.resolve(&run_id(dir.path(), "digits-logreg")).unwrap();
    let t = load_trained(&run, CheckpointKind::Best).unwrap();
    let data = PreparedData::build(&t.spec, Some(&t.pipeline)).unwrap();
    let det = vigil::ml::attack::detector::load(&run).unwrap();
    let opts = CurveOptions {
        attack: Attack::pgd(Norm::Linf, 0.0, 10),
        eps: vec![0.0, 0.1],
        fixed_step: None,
        detector: det.as_ref().ok(),
        split: "test".into(),
        checkpoint: "best".into(),
    };
    let (mut c, sets) = robustness_curve(&t.network, &t.pipeline, &data.test, &opts).unwrap();
    save(&run, &mut c, &sets).unwrap();
    let flag = add_key(dir.path(), KeySpec::new("flag", &[Scope::Predict]));
    let strict = add_key(dir.path(), KeySpec::new("strict", &[Scope::Predict]));
    let mut file = KeyFile::load(&key_file_path(dir.path())).unwrap();
    file.keys.iter_mut().find(|k| k.name == "strict").unwrap().guard =
        Guard { reject_ood: true, ..Guard::default() };
    file.save(&key_file_path(dir.path())).unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    let cfg = |key: String| TrafficConfig {
        batch: 1,
        rate: 400.0,
        duration: Duration::from_millis(900),
        ..traffic_config(dir.path(), &server, key, traffic::Profile::Adversarial)
    };
    let answered = traffic::run(cfg(flag), |_| {}, std::future::pending()).await.unwrap();
    assert!(answered.inputs_from.contains("adversarial examples at ε = 0.1"), "{answered:?}");
    assert_eq!(answered.statuses.get(&200).copied(), Some(answered.sent), "{answered:?}");
    // The service's labels are the attack's: what agrees with the truth is what survived it.
    let set = &sets[1];
    let sent = answered.sent as usize;
    let survived = (0..sent)
        .filter(|&i| set.adversarial_pred[i % set.labels.len()] == set.labels[i % set.labels.len()])
        .count();
    assert_eq!(answered.agreed as usize, survived, "{answered:?}");
    let refused = traffic::run(cfg(strict), |_| {}, std::future::pending()).await.unwrap();
    assert!(refused.statuses.get(&422).copied().unwrap_or(0) > 0, "{refused:?}");
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    let flag_lines: Vec<_> =
        lines.iter().filter(|l| l.key.as_deref() == Some("flag") && l.model.is_some()).collect();
    let marked = flag_lines.iter().filter(|l| l.flags.contains(&Flag::Ood)).count();
    let strict_lines: Vec<_> =
        lines.iter().filter(|l| l.key.as_deref() == Some("strict") && l.model.is_some()).collect();
    let strict_422 = strict_lines.iter().filter(|l| l.status == 422).count();
    // The same inputs in the same order: the share refused is the share marked (the two runs
    // may send a few more or fewer requests).
    let share = |k: usize, n: usize| k as f64 / n.max(1) as f64;
    let (a, b) = (share(marked, flag_lines.len()), share(strict_422, strict_lines.len()));
    assert!(
        marked > 0 && (a - b).abs() < 0.05,
        "{marked} of {} marked, {strict_422} of {} refused",
        flag_lines.len(),
        strict_lines.len()
    );
}
