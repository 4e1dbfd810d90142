//! Fuzzing of every parser that reads what someone else wrote: experiment specs, CSV and IDX
//! data files, request bodies (through the running service), access logs under verification,
//! safetensors checkpoints and GGUF variants. Any input may be refused with an error; none may
//! panic (a panic is a bug, to be made a clear error).
//!
//! Each target mutates real seed files (bit flips, inserted, deleted, duplicated and truncated
//! bytes, tokens of the format spliced in, numbers swapped for extreme ones) or sends arbitrary
//! bytes, with proptest, which shrinks a failing input to a small one and prints it. This is
//! random, structure-aware fuzzing on stable Rust, not coverage-guided.
//!
//! In the normal test suite each target runs for about a second. For a longer run, give each
//! target a time in seconds:
//!
//! ```text
//! VIGIL_FUZZ_SECS=600 cargo test --release --test fuzz -- --test-threads 1 --nocapture
//! VIGIL_FUZZ_SECS=600 cargo test --release --test fuzz csv     # one target
//! ```
//!
//! Each target prints how many inputs it tried.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vigil::ml::spec::ExperimentSpec;
use vigil::store::{CheckpointKind, RunDir, RunStore};

/// How long each target runs: `VIGIL_FUZZ_SECS`, or a second in the normal suite.
fn budget() -> Duration {
    let secs = std::env::var("VIGIL_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(1.0);
    Duration::from_secs_f64(secs.max(0.1))
}

/// One change to a seed.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, u8),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
    Splice(Index, Index),
    Number(Index, Index),
}

/// Numbers that break naive parsers: huge, negative, zero, non-finite, overlong.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "1e308",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-0",
    "0.0000000000000000000001",
    "99999999999999999999999999999",
    "1.5",
    "0x10",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..256).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Splice(i, t)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Mutation::Number(i, n)),
    ]
}

/// Applies mutations to a seed; `tokens` are pieces of the seed's format to splice in.
fn mutate(seed: &[u8], mutations: &[Mutation], tokens: &[&str]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
        match m {
            Mutation::FlipBit(i, bit) if !b.is_empty() => {
                let k = i.index(b.len());
                b[k] ^= 1 << bit;
            }
            Mutation::Insert(i, v) => {
                let k = at(i, b.len());
                b.insert(k, *v);
            }
            Mutation::Delete(i, n) if !b.is_empty() => {
                let k = i.index(b.len());
                let end = (k + n).min(b.len());
                b.drain(k..end);
            }
            Mutation::Duplicate(i, n) if !b.is_empty() => {
                let k = i.index(b.len());
                let end = (k + n).min(b.len());
                let copy = b[k..end].to_vec();
                b.splice(k..k, copy);
            }
            Mutation::Truncate(i) => {
                let k = at(i, b.len());
                b.truncate(k);
            }
            Mutation::Splice(i, t) if !tokens.is_empty() => {
                let k = at(i, b.len());
                let token = tokens[t.index(tokens.len())].as_bytes().to_vec();
                b.splice(k..k, token);
            }
            Mutation::Number(i, n) => {
                // Replace the run of digits at (or after) the position with an extreme number.
                let start = (at(i, b.len())..b.len()).find(|&k| b[k].is_ascii_digit()).unwrap_or(b.len());
                let end =
                    (start..b.len()).find(|&k| !b[k].is_ascii_digit() && b[k] != b'.').unwrap_or(b.len());
                b.splice(start..end, NUMBERS[n.index(NUMBERS.len())].bytes());
            }
            _ => {}
        }
    }
    b
}

/// An input for a target: a mutated seed most of the time, arbitrary bytes sometimes.
fn input(seeds: Vec<Vec<u8>>, tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        8 => (0..n, proptest::collection::vec(mutation(), 1..8))
            .prop_map(move |(s, ms)| mutate(&seeds[s], &ms, tokens)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Runs `check` on inputs from `strategy` until the budget is spent; a panic or a failed check
/// fails the test with the smallest input proptest finds.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let deadline = Instant::now() + budget();
    let config = Config { cases: 64, failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let mut tried = 0u64;
    while Instant::now() < deadline {
        // A runner runs its cases once; each batch gets a new one, with a new random seed.
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("fuzz target {name}: {e}");
        }
        tried += 64;
    }
    eprintln!("fuzz target {name}: {tried} inputs, no failure");
}

/// A panic-free result: anything but a panic passes.
fn no_panic<T, E>(_: Result<T, E>) -> Result<(), TestCaseError> {
    Ok(())
}

/// A run store with a trained digits-logreg run (and a q8_0 variant of it), made once.
fn run() -> &'static (tempfile::TempDir, RunDir) {
    static RUN: OnceLock<(tempfile::TempDir, RunDir)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = common::trained_logreg(&RunStore::new(dir.path()), 1);
        let spec =
            vigil::ml::variants::VariantSpec { precision: vigil::ml::variants::Precision::Q8_0, prune: None };
        vigil::ml::variants::optimize(&run, &spec, 1).unwrap();
        (dir, run)
    })
}

fn spec_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir("models")
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ron"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn fuzz_spec_parser() {
    const TOKENS: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "Some(",
        "None",
        "epochs: ",
        "layers: [",
        "Dense(",
        "0.5",
        "-",
        "model: ",
        "data: ",
        "batch_size: ",
        "lr: ",
        "#",
        "//",
        "/*",
        "r#\"",
        "\\u{0}",
        "Conv2d(",
        "Csv(",
    ];
    fuzz("spec", input(spec_seeds(), TOKENS), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        no_panic(ExperimentSpec::parse(&text, Path::new("fuzz.ron")))
    });
}

fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    // One file per thread: the targets run in parallel.
    dir.path().join(format!("{name}-{:?}", std::thread::current().id()))
}

#[test]
fn fuzz_csv_loader() {
    const TOKENS: &[&str] = &["\"", ",", "\n", "\r\n", "NA", "?", "null", "label", ";", "\"\"", "1e400", " "];
    let seeds = vec![
        b"a,b,label\n1,2,x\n3,4,y\n5,NA,x\n".to_vec(),
        b"0.5,1.5,0\n2.5,3.5,1\n4.5,,1\n".to_vec(),
        b"\"f,1\",label\n\"1\",\"a\"\n2,b\n".to_vec(),
    ];
    let path = scratch("data.csv");
    fuzz("csv", input(seeds, TOKENS), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        no_panic(vigil::ml::data::loaders::csv(&path, "label", None))?;
        no_panic(vigil::ml::data::loaders::csv(&path, "2", Some(false)))
    });
}

/// A valid IDX pair: `n` images of 2x3 bytes and their labels.
fn idx_pair(n: u32) -> (Vec<u8>, Vec<u8>) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 2, 3] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend((0..n * 6).map(|i| (i * 37 % 256) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    labels.extend((0..n).map(|i| (i % 3) as u8));
    (images, labels)
}

#[test]
fn fuzz_idx_loader() {
    let (images, labels) = idx_pair(4);
    let seeds = vec![images.clone(), labels.clone(), idx_pair(1).0];
    let (img_path, lbl_path) = (scratch("images-idx3-ubyte"), scratch("labels-idx1-ubyte"));
    fuzz("idx", (input(seeds, &[]), any::<bool>()), |(bytes, which)| {
        // One of the pair broken, the other whole.
        let (img, lbl) = if which { (&bytes, &labels) } else { (&images, &bytes) };
        std::fs::write(&img_path, img).unwrap();
        std::fs::write(&lbl_path, lbl).unwrap();
        no_panic(vigil::ml::data::loaders::idx(&img_path, &lbl_path, None))
    });
}

#[test]
fn fuzz_checkpoint_loader() {
    let (_, run) = run();
    let bytes = std::fs::read(run.file(CheckpointKind::Best.file())).unwrap();
    let trained = vigil::ml::train::load_trained(run, CheckpointKind::Best).unwrap();
    fuzz("checkpoint", input(vec![bytes], &[]), |b| no_panic(trained.network.load_safetensors(&b, "fuzz")));
}

#[test]
fn fuzz_gguf_loader() {
    let (_, run) = run();
    let path = vigil::ml::variants::variant_dir(run, "q8_0").join("model.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let trained = vigil::ml::train::load_trained(run, CheckpointKind::Best).unwrap();
    let network = std::cell::RefCell::new(trained.network);
    let device = candle_core::Device::Cpu;
    fuzz("gguf", input(vec![bytes], &[]), |b| {
        no_panic(vigil::ml::variants::read_gguf(&mut network.borrow_mut(), &b, &path, &device))
    });
}

#[test]
fn fuzz_access_log_verifier() {
    use vigil::serve::access_log::{AccessEvent, LogOptions, start};
    let seed_dir = tempfile::tempdir().unwrap();
    let (log, writer) = start(LogOptions::new(seed_dir.path())).unwrap();
    for i in 0..6u16 {
        let mut ev = AccessEvent::new(format!("r{i}"), "POST", Some("/v1/models/{name}/predict"), "/p");
        ev.status = 200 + i;
        log.record(ev);
    }
    drop(log);
    writer.close();
    let seed = std::fs::read(seed_dir.path().join("access.jsonl")).unwrap();
    const TOKENS: &[&str] =
        &["\n", "{", "}", "\"seq\":", "\"hash\":\"", "\"prev\":\"", "\\u0000", "\"", "0000"];
    let dir = scratch("log");
    std::fs::create_dir_all(&dir).unwrap();
    fuzz("access-log", input(vec![seed], TOKENS), |bytes| {
        std::fs::write(dir.join("access.jsonl"), &bytes).unwrap();
        no_panic(vigil::serve::audit::verify_dir(&dir))
    });
}

#[test]
fn fuzz_request_bodies_through_the_service() {
    use vigil::serve::keys::{KeyFile, NewKey, Scope, key_file_path};
    let (store, run) = run();
    let path = key_file_path(store.path());
    let mut file = KeyFile::load(&path).unwrap();
    let new = NewKey {
        name: format!("fuzz-{}", std::process::id()),
        scopes: vec![Scope::Predict, Scope::Explain],
        expires_in: None,
        rate: None,
        budget: None,
        output: "full".parse().unwrap(),
        guard: Default::default(),
        generate: Default::default(),
    };
    let (_, key) = file.create(new, time::OffsetDateTime::now_utc()).unwrap();
    file.save(&path).unwrap();
    let mut config = vigil::serve::ServeConfig::new(store.path(), vec![run.id.to_string()]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    let server = vigil::serve::ServerThread::spawn(config).unwrap();
    let base = server.server().url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    vigil::serve::server::install_crypto();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let row = |v: &str| format!("[{}]", vec![v; 64].join(","));
    let seeds: Vec<Vec<u8>> = [
        format!(r#"{{"inputs": [{}]}}"#, row("0")),
        format!(r#"{{"inputs": [{}, {}]}}"#, row("1.5"), row("null")),
        format!(r#"{{"inputs": [{}], "target": 3, "method": "integrated-gradients"}}"#, row("2")),
        r#"{"texts": ["some text"]}"#.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    const TOKENS: &[&str] =
        &["[", "]", "{", "}", ",", "null", "\"inputs\":", "\"texts\":", "1e999", "-", "\""];
    let routes = ["predict", "explain"];
    fuzz("request-body", (input(seeds, TOKENS), 0..2usize), |(bytes, route)| {
        let url = format!("{base}/v1/models/digits-logreg/{}", routes[route]);
        let (status, text) = runtime.block_on(async {
            let r = client
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer (did the handler panic?): {e}")))?;
            let status = r.status().as_u16();
            Ok::<_, TestCaseError>((status, r.text().await.unwrap_or_default()))
        })?;
        prop_assert!([200, 400, 413, 422].contains(&status), "status {status}: {text}");
        if status != 200 {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "no reason: {text}");
        }
        Ok(())
    });
    server.shutdown().unwrap();
}
