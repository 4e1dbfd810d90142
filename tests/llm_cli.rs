//! `vigil generate` and `vigil bench --llm` as a user runs them, on the tiny Gemma 3 model the
//! test writes: a streamed completion with its figures, one JSON object, and each kind of bad
//! model file or argument answered with exit 2 naming what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::vigil;
use predicates::prelude::*;
use vigil::llm::gguf::{ChatFormat, ChatTemplate};
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
        (vec![plain.to_str().unwrap(), "--chat"], "choose one with --chat-template"),
        (vec![plain.to_str().unwrap(), "--chat", "--chat-template", "alpaca"], "expected one of gemma"),
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
    // Per tensor type: how many tensors and their bytes (the tiny model's matrices are Q8_0).
    let q8 =
        r["model"]["quantisations"].as_array().unwrap().iter().find(|q| q["ggml_type"] == "Q8_0").unwrap();
    assert!(q8["tensors"].as_u64().unwrap() > 0 && q8["bytes"].as_u64().unwrap() > 0, "{q8}");
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["bench", "--llm", model.to_str().unwrap(), "--repeats", "1"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"\n  Q8_0 +\d+ tensors +[0-9.]+ MiB").unwrap())
        .stdout(predicate::str::contains("decode"));
}

/// `--chat-template` formats `--chat` prompts for a model whose file names no template: the
/// prompt is the ids of the template's text, and `none` sends the text alone.
#[test]
fn generate_takes_the_chat_template_the_operator_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tiny(dir.path(), "plain.gguf", TinyModel { no_turn_tokens: true, ..Default::default() });
    let ids = |extra: &[&str], prompt: &str| -> Vec<u64> {
        let out = vigil(dir.path())
            .timeout(LIMIT)
            .args(["generate", plain.to_str().unwrap(), "--max-tokens", "1", "--json", "--prompt", prompt])
            .args(extra)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
        r["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
    };
    assert_eq!(
        ids(&["--chat", "--chat-template", "chatml"], "hi"),
        ids(&[], "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_eq!(ids(&["--chat", "--chat-template", "none"], "hi"), ids(&[], "hi"));
    let file = dir.path().join("bad.ron");
    std::fs::write(&file, "(\n  user: (prefix: \"U\"),\n  assistant: (prefix: \"A\", sufix: \"\"),\n)")
        .unwrap();
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["generate", plain.to_str().unwrap(), "--chat", "--prompt", "hi", "--chat-template"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.ron:3:").and(predicate::str::contains("sufix")));
}

/// A GGUF file that `vigil optimize` wrote is a classifier: the language-model path says so
/// rather than that its metadata lacks an architecture.
#[test]
fn a_classifier_variant_is_not_taken_for_a_language_model() {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let t = candle_core::Tensor::zeros((4, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let name = gguf_file::Value::String("q8_0".into());
    let mut out = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut out, &[(vigil::ml::variants::VARIANT_KEY, &name)], &[("dense0.weight", &q)])
        .unwrap();
    drop(out);
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["generate", path.to_str().unwrap(), "--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("a classifier variant that `vigil optimize` wrote (q8_0)"));
    let packed = dir.path().join("model.gguf.gz");
    std::fs::write(&packed, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["generate", packed.to_str().unwrap(), "--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("a gzip file, not GGUF"));
}

// ---- chat templates (vigil::llm::gguf::ChatTemplate) ----------------------------------------

fn msg(role: &str, content: &str) -> vigil::llm::ChatMessage {
    vigil::llm::ChatMessage { role: role.into(), content: content.into() }
}

#[test]
fn a_template_is_chosen_by_name_or_file() {
    assert_eq!(ChatTemplate::parse("Gemma").unwrap(), ChatTemplate::Family(ChatFormat::Gemma));
    assert_eq!(ChatTemplate::parse("none").unwrap(), ChatTemplate::None);
    let err = ChatTemplate::parse("mistral").unwrap_err().to_string();
    assert!(
        err.contains("--chat-template \"mistral\": expected one of gemma, llama3, chatml, none"),
        "{err}"
    );
    let none = ChatTemplate::None.format(&[msg("system", "Be brief."), msg("user", "Hi")]).unwrap();
    assert_eq!(none, "Be brief.\n\nHi");
    assert_eq!(ChatTemplate::None.end_of_turn(), None);
}

#[test]
fn a_template_file_formats_turns_and_names_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi3.ron");
    std::fs::write(
        &path,
        r#"(
user: (prefix: "<|user|>\n", suffix: "<|end|>\n"),
assistant: (prefix: "<|assistant|>\n", suffix: "<|end|>\n"),
end_of_turn: "<|end|>",
)"#,
    )
    .unwrap();
    let t = ChatTemplate::parse(path.to_str().unwrap()).unwrap();
    assert_eq!(t.end_of_turn(), Some("<|end|>"));
    // No system turn: the system text heads the first user message.
    assert_eq!(
        t.format(&[msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Yo"), msg("user", "?")])
            .unwrap(),
        "<|user|>\nBe brief.\n\nHi<|end|>\n<|assistant|>\nYo<|end|>\n<|user|>\n?<|end|>\n<|assistant|>\n"
    );
    assert!(t.format(&[msg("tool", "x")]).is_err());

    std::fs::write(&path, "(\n    user: (prefix: \"U\"),\n    assistant: (prefx: \"A\"),\n)").unwrap();
    let err = ChatTemplate::parse(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("phi3.ron:3:") && err.contains("prefx"), "{err}");
    std::fs::write(&path, "(user: (), assistant: ())").unwrap();
    let err = ChatTemplate::parse(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("prefixes are both empty"), "{err}");
    let err = ChatTemplate::parse(dir.path().join("missing.ron").to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("missing.ron"), "{err}");
}
