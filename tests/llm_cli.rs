//! `vigil generate` and `vigil bench --llm` as a user runs them, on the tiny Gemma 3 model the
//! test writes: a streamed completion with its figures, one JSON object, and each kind of bad
//! model file or argument answered with exit 2 naming what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::vigil;
use predicates::prelude::*;
use vigil::llm::tiny::TinyModel;

const LIMIT: Duration = Duration::from_secs(120);

fn tiny(dir: &Path, name: &str, model: TinyModel) -> PathBuf {
    let path = dir.join(name);
    model.write(&path).unwrap();
    path
}

#[test]
fn generate_streams_the_completion_then_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny.gguf", TinyModel::default());
    let out = vigil(dir.path())
        .timeout(LIMIT)
        .args(["generate", model.to_str().unwrap(), "--prompt", "the cat", "--max-tokens", "6"])
        .assert()
        .success()
        .stderr(predicate::str::is_match(r"^5 prompt tokens, \d completion tokens \((length|stop)\), time to first token \d+ ms, [\d.]+ tokens/s\n$").unwrap())
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().ends_with('\n'));
}

#[test]
fn generate_json_is_one_object_and_the_same_seed_repeats_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny.gguf", TinyModel::default());
    let run = |seed: &str| -> serde_json::Value {
        let out = vigil(dir.path())
            .timeout(LIMIT)
            .args([
                "generate",
                model.to_str().unwrap(),
                "--prompt",
                "hello world",
                "--max-tokens",
                "8",
                "--json",
            ])
            .args(["--temperature", "1.2", "--top-p", "0.9", "--seed", seed, "--top-logprobs", "2"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    };
    let a = run("5");
    assert_eq!(a, {
        let mut b = run("5");
        // Timings differ between runs; everything else is the same.
        for key in ["time_to_first_token_ms", "tokens_per_second"] {
            b[key] = a[key].clone();
        }
        b
    });
    assert_eq!(a["model"], "tiny");
    assert_eq!(a["prompt_ids"][0], 2, "<bos> first");
    let tokens = a["tokens"].as_array().unwrap();
    assert_eq!(tokens.len() as u64, a["completion_tokens"].as_u64().unwrap());
    assert!(tokens.iter().all(|t| t["top_logprobs"].as_array().unwrap().len() == 2));
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(a["text"].as_str().unwrap(), text);
}

#[test]
fn bad_model_files_exit_2_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let good = tiny(dir.path(), "cut.gguf", TinyModel::default());
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() / 2]).unwrap();
    let cases = [
        (text, "not a GGUF file"),
        (dir.path().join("missing.gguf"), "cannot open the model"),
        (good, "the file is truncated"),
        (
            tiny(dir.path(), "rwkv.gguf", TinyModel { architecture: "rwkv6".into(), ..Default::default() }),
            "\"rwkv6\" is not supported",
        ),
        (
            tiny(
                dir.path(),
                "holed.gguf",
                TinyModel { drop_tensor: Some("output_norm.weight".into()), ..Default::default() },
            ),
            "output_norm.weight",
        ),
    ];
    for (path, says) in cases {
        vigil(dir.path())
            .timeout(LIMIT)
            .args(["generate", path.to_str().unwrap(), "--prompt", "hi"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(path.to_str().unwrap()))
            .stderr(predicate::str::contains(says));
    }
}

#[test]
fn bad_arguments_exit_2_saying_which() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny.gguf", TinyModel::default());
    let plain = tiny(dir.path(), "plain.gguf", TinyModel { no_turn_tokens: true, ..Default::default() });
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![model.to_str().unwrap(), "--temperature=-1"], "temperature -1"),
        (vec![model.to_str().unwrap(), "--top-p", "0"], "top_p 0"),
        (vec![model.to_str().unwrap(), "--max-tokens", "0"], "--max-tokens"),
        (vec![plain.to_str().unwrap(), "--chat"], "chat template"),
    ];
    for (args, says) in cases {
        vigil(dir.path())
            .timeout(LIMIT)
            .arg("generate")
            .args(&args)
            .args(["--prompt", "hi"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
}

#[test]
fn bench_llm_reports_speeds_size_and_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), "tiny.gguf", TinyModel::default());
    let out = vigil(dir.path())
        .timeout(LIMIT)
        .args(["bench", "--llm", model.to_str().unwrap(), "--repeats", "2", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(r["prompt_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["prompt_runs"].as_array().unwrap().len(), 2);
    assert_eq!(r["model"]["architecture"], "gemma3");
    assert!(r["model"]["quantisations"].as_array().unwrap().iter().any(|q| q[0] == "Q8_0"));
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["bench", "--llm", model.to_str().unwrap(), "--repeats", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("tensor types  Q8_0"))
        .stdout(predicate::str::contains("decode"));
}
