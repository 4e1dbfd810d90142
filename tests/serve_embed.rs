//! The service's embed route, `POST /v1/models/{name}/embed`, as a client meets it: a
//! Transformer run's embeddings equal `vigil embed`'s for the same run, unit length; the route
//! needs the `embed` scope (a predict key is refused); a model without a text encoder, bad JSON,
//! unknown fields, an empty batch, too many and too long inputs each get their 4xx and message;
//! every request leaves one line in the hash-chained access log.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use vigil::ml::spec;
use vigil::ml::train::{Silent, TrainControl, train};
use vigil::serve::access_log::{ACCESS_LOG, AccessRecord};
use vigil::serve::audit::verify_dir;
use vigil::serve::keys::Scope;
use vigil::serve::{ServeConfig, Server};
use vigil::store::RunStore;

/// A store with a topics-transformer run and a topics-text run, one epoch each, trained once.
fn store() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        for name in ["topics-transformer", "topics-text"] {
            let mut s = spec::resolve(name, Path::new("models")).unwrap().0;
            s.epochs = 1;
            let run = store.create(&s).unwrap();
            train(&run, false, &mut Silent, &TrainControl::default()).unwrap();
        }
        dir
    })
    .path()
}

fn run_id(spec: &str) -> String {
    RunStore::new(store()).list().into_iter().find(|r| r.spec == spec).unwrap().id.into()
}

fn add_key(name: &str, scopes: &[Scope]) -> String {
    common::http::add_key(store(), name, scopes, Default::default(), Default::default())
}

async fn post(c: &reqwest::Client, url: &str, key: &str, body: &[u8]) -> (u16, Value, String) {
    let r = common::http::post_json(c, url, key, body).await;
    (r.status, r.body, r.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embed_route_gives_vigil_embeds_embeddings_and_refuses_bad_requests() {
    let dir = store();
    let embed_key = add_key("e", &[Scope::Embed]);
    let predict_key = add_key("p", &[Scope::Predict]);
    let mut config = ServeConfig::new(dir, vec![run_id("topics-transformer"), run_id("topics-text")]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.limits.max_inputs = 4;
    let server = Server::start(config).await.unwrap();
    vigil::serve::server::install_crypto();
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = |m: &str| format!("{}/v1/models/{m}/embed", server.url());
    // `/v1/models` says which models embed, and how wide their embeddings are.
    let listed: Value = c
        .get(format!("{}/v1/models", server.url()))
        .bearer_auth(&embed_key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let dim_of = |name: &str| {
        let m = listed["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
        m.get("embedding_dim").map(|d| d.as_u64().unwrap())
    };
    assert_eq!((dim_of("topics-transformer"), dim_of("topics-text")), (Some(32), None), "{listed}");
    let texts = ["the striker scored twice in the final", "bake the bread for an hour", ""];
    let (status, body, text) =
        post(&c, &url("topics-transformer"), &embed_key, json!({"texts": texts}).to_string().as_bytes())
            .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!((body["dim"].as_u64(), body["pooling"].as_str()), (Some(32), Some("mean")), "{text}");
    let served: Vec<Vec<f64>> = serde_json::from_value(body["embeddings"].clone()).unwrap();

    // `vigil embed` on the same run, as a user runs it.
    let out = assert_cmd::Command::cargo_bin("vigil")
        .unwrap()
        .args(["embed", &run_id("topics-transformer"), "--json", "--runs-dir"])
        .arg(dir)
        .arg("--text")
        .args(texts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, (s, e)) in served.iter().zip(cli["embeddings"].as_array().unwrap()).enumerate() {
        let e: Vec<f64> = serde_json::from_value(e["embedding"].clone()).unwrap();
        assert_eq!(s.len(), e.len());
        assert!(s.iter().zip(&e).all(|(a, b)| (a - b).abs() < 1e-6), "text {i}: {s:?} vs {e:?}");
        let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !texts[i].is_empty() {
            assert!((norm - 1.0).abs() < 1e-5, "text {i} has norm {norm}");
        }
    }
    assert_ne!(served[0], served[1]);

    // The predict route's field name and `inputs` are both taken.
    let (status, body, text) =
        post(&c, &url("topics-transformer"), &embed_key, br#"{"inputs": ["bake the bread for an hour"]}"#)
            .await;
    assert_eq!(status, 200, "{text}");
    let again: Vec<Vec<f64>> = serde_json::from_value(body["embeddings"].clone()).unwrap();
    // Alone, the text is padded less than in the batch: the same up to rounding.
    assert!(again[0].iter().zip(&served[1]).all(|(a, b)| (a - b).abs() < 1e-6), "{again:?}");

    let long = "word ".repeat(30_000);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("a predict key", "topics-transformer", br#"{"texts": ["a"]}"#.to_vec(), 403, "needs the"),
        (
            "a model without an encoder",
            "topics-text",
            br#"{"texts": ["a"]}"#.to_vec(),
            422,
            "cannot give embeddings",
        ),
        ("an unknown model", "nope", br#"{"texts": ["a"]}"#.to_vec(), 404, "no model named"),
        ("bad JSON", "topics-transformer", br#"{"texts": ["a"#.to_vec(), 400, "not valid JSON"),
        ("an empty body", "topics-transformer", Vec::new(), 400, "the body is empty"),
        (
            "an unknown field",
            "topics-transformer",
            br#"{"texts": ["a"], "pool": "cls"}"#.to_vec(),
            422,
            "unknown field `pool`",
        ),
        ("numbers", "topics-transformer", br#"{"texts": [[1, 2]]}"#.to_vec(), 422, "texts[0]"),
        ("an empty batch", "topics-transformer", br#"{"texts": []}"#.to_vec(), 422, "the batch is empty"),
        (
            "too many inputs",
            "topics-transformer",
            json!({"texts": vec!["a"; 5]}).to_string().into_bytes(),
            422,
            "at most 4",
        ),
        (
            "a text too long",
            "topics-transformer",
            json!({"texts": ["a", long]}).to_string().into_bytes(),
            422,
            "inputs[1] has 150000 characters",
        ),
    ];
    let n_cases = cases.len();
    for (what, model, body, want, says) in cases {
        let key = if what == "a predict key" { &predict_key } else { &embed_key };
        let (status, reply, text) = post(&c, &url(model), key, &body).await;
        assert_eq!(status, want, "{what}: {text}");
        let msg = reply["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{what}: {msg}");
    }
    server.shutdown().await.unwrap();

    let log = std::fs::read_to_string(dir.join(ACCESS_LOG)).unwrap();
    let lines: Vec<AccessRecord> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3 + n_cases, "one line per request");
    assert_eq!(lines[0].route.as_deref(), Some("/v1/models"));
    let ok = &lines[1];
    assert_eq!((ok.status, ok.inputs, ok.model.as_deref()), (200, 3, Some("topics-transformer")));
    assert_eq!(ok.input_sha256.len(), 3, "each input is hashed in the log");
    assert_eq!(ok.route.as_deref(), Some("/v1/models/{name}/embed"));
    assert_eq!(verify_dir(dir).unwrap().finding, None, "the hash chain is intact");
}
