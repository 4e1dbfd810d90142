//! Pretrained BERT-family encoders on a tiny randomly initialised BERT that the tests write in
//! the Hugging Face layout (config.json, model.safetensors, tokenizer.json): tokenising, a
//! classification head trained on a frozen encoder (and one fine-tuned), `vigil embed` on the
//! folder and on the run, and every kind of unusable folder as a user meets it (exit 2, naming
//! the file and what is wrong).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::cli::{json, vigil};
use predicates::prelude::*;
use vigil::ml::model::pretrained::{Folder, SentenceEncoder};
use vigil::serve::model::{PredictBody, ServedModel};
use vigil::store::RunStore;

const VOCAB: [&str; 16] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "ran", "on", "mat", "a", "park", "##s",
    "in", "fast",
];
const HIDDEN: usize = 8;
const LAYERS: usize = 2;
const FF: usize = 16;
const POSITIONS: usize = 16;

fn config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": VOCAB.len(), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 2, "intermediate_size": FF, "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "position_embedding_type": "absolute"
    })
}

fn tokenizer() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> =
        VOCAB.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    let special = |id: usize| {
        serde_json::json!({"id": id, "content": VOCAB[id], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0), special(1), special(2), special(3)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// The weights of a BERT with the sizes above, as Hugging Face names them, seeded values.
fn weights() -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let mut seed = 1usize;
    let mut add = |name: &str, shape: &[usize], ones: bool| {
        let n: usize = shape.iter().product();
        seed += 1;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                if ones {
                    1.0 + 0.1 * ((i + seed) as f32).cos()
                } else {
                    0.3 * ((i * 31 + seed * 17) as f32).sin()
                }
            })
            .collect();
        out.insert(name.to_string(), Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    };
    add("embeddings.word_embeddings.weight", &[VOCAB.len(), HIDDEN], false);
    add("embeddings.position_embeddings.weight", &[POSITIONS, HIDDEN], false);
    add("embeddings.token_type_embeddings.weight", &[2, HIDDEN], false);
    add("embeddings.LayerNorm.weight", &[HIDDEN], true);
    add("embeddings.LayerNorm.bias", &[HIDDEN], false);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", FF, HIDDEN),
            ("output.dense", HIDDEN, FF),
        ] {
            add(&format!("{p}.{name}.weight"), &[o, i], false);
            add(&format!("{p}.{name}.bias"), &[o], false);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(&format!("{p}.{name}.weight"), &[HIDDEN], true);
            add(&format!("{p}.{name}.bias"), &[HIDDEN], false);
        }
    }
    // A pooler, as real checkpoints have: present, and not needed.
    add("pooler.dense.weight", &[HIDDEN, HIDDEN], false);
    out
}

fn write_folder(dir: &Path, weights: &HashMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer().to_string()).unwrap();
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
}

fn tiny_bert(dir: &Path) {
    write_folder(dir, &weights());
}

#[test]
fn tokenises_as_bert_with_special_tokens_and_padding() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(dir.path());
    let folder = Folder::open(dir.path()).unwrap();
    let pieces = folder.tokenizer(8).unwrap();
    // Lower-cased, split into word pieces (cats = cat ##s), unknown words as [UNK].
    assert_eq!(pieces.ids("The CATS sat on zebras").unwrap(), vec![2, 4, 5, 13, 7, 9, 1, 3]);
    assert_eq!(pieces.encode("a dog").unwrap(), vec![2, 11, 6, 3, 0, 0, 0, 0]);
    // Cut to max_len with [SEP] kept last.
    assert_eq!(pieces.encode("the cat sat on the mat in a park").unwrap(), vec![2, 4, 5, 7, 9, 4, 10, 3]);
}

#[test]
fn embeddings_are_unit_length_mean_pooled_and_ignore_padding() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(dir.path());
    let enc = SentenceEncoder::open(dir.path()).unwrap();
    let texts: Vec<String> =
        ["the cat sat", "a dog ran in the park fast", "the cat sat"].map(String::from).to_vec();
    let together = enc.embed(&texts).unwrap();
    // Alone, the first text has no padding; beside the longer one it has four positions of it.
    let alone = enc.embed(&texts[..1]).unwrap();
    for (a, b) in alone[0].iter().zip(&together[0]) {
        assert!((a - b).abs() < 1e-5, "padding changed the embedding: {:?} vs {:?}", alone[0], together[0]);
    }
    for e in &together {
        let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert_eq!(e.len(), HIDDEN);
    }
    assert!(together[0].iter().zip(&together[1]).any(|(a, b)| (a - b).abs() > 1e-3));
}

fn topics_like_tsv(path: &Path) {
    let mut lines = String::new();
    for i in 0..40 {
        let (label, text) = match i % 2 {
            0 => ("cats", ["the cat sat on the mat", "a cat sat", "the cats sat on a mat"][i % 3]),
            _ => ("dogs", ["the dog ran in the park", "a dog ran fast", "the dogs ran in a park"][i % 3]),
        };
        lines.push_str(&format!("{label}\t{text}\n"));
    }
    std::fs::write(path, lines).unwrap();
}

fn spec(dir: &Path, freeze: bool) -> std::path::PathBuf {
    let path = dir.join(format!("tiny-bert-{freeze}.ron"));
    std::fs::write(
        &path,
        format!(
            r#"(
    name: "tiny-bert",
    data: (source: Tsv(path: "texts.tsv")),
    model: Pretrained(path: "bert", pooling: Mean, head: [6], freeze: {freeze}, max_len: 12),
    optimizer: AdamW(lr: 0.03),
    batch: Mini(8),
    epochs: 25,
)"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_head_trains_on_a_frozen_encoder_and_embed_reads_the_run() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    topics_like_tsv(&dir.path().join("texts.tsv"));
    let runs = dir.path().join("runs");
    let spec = spec(dir.path(), true);
    let out = vigil(&runs).args(["train", spec.to_str().unwrap(), "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).expect("a run id").to_string();
    let eval = json(vigil(&runs).args(["eval", &run, "--json"]));
    // Cats and dogs differ in their words, so even a random encoder separates them for the head.
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.8, "the head learned nothing: test accuracy {accuracy}");
    // The checkpoint holds the head only: the frozen encoder is read from its folder.
    let best = std::fs::read(runs.join(&run).join("checkpoints/best.safetensors")).unwrap();
    let names: Vec<String> =
        candle_core::safetensors::load_buffer(&best, &Device::Cpu).unwrap().into_keys().collect();
    assert!(names.iter().all(|n| n.starts_with("dense.") || n.starts_with("out.")), "{names:?}");
    // The frozen encoder ran once over each split, not once an epoch.
    let events = std::fs::read_to_string(runs.join(&run).join("events.jsonl")).unwrap();
    assert!(events.contains("encoded the") && events.contains("once"), "{events}");
    // The run's embeddings are the folder's: a frozen encoder did not change.
    let texts = ["the cat sat", "a dog ran"];
    let of = |model: &str| {
        let mut cmd = vigil(&runs);
        cmd.args(["embed", model, "--json"]);
        for t in texts {
            cmd.args(["--text", t]);
        }
        json(&mut cmd)
    };
    let folder = of(dir.path().join("bert").to_str().unwrap());
    let from_run = of(&run);
    assert_eq!(folder["dim"], HIDDEN);
    assert_eq!(folder["embeddings"], from_run["embeddings"]);
    // The service predicts texts for it, tokenised into the encoder's word pieces: the cats and
    // the dogs of the training set get their own class.
    let served = ServedModel::load(&RunStore::new(&runs).resolve(&run).unwrap()).unwrap();
    assert!(served.takes_text());
    let body: PredictBody = serde_json::from_value(serde_json::json!({
        "texts": ["the cat sat on the mat", "the dog ran in the park"]
    }))
    .unwrap();
    let (batch, _) = served.prepare(body, 8).unwrap();
    let probs = served.predict(batch).unwrap();
    let classes = served.info.classes.clone();
    let top = |row: &[f32]| classes[(row[1] > row[0]) as usize].clone();
    assert_eq!((top(&probs[0..2]), top(&probs[2..4])), ("cats".to_string(), "dogs".to_string()), "{probs:?}");
    // A number where a text belongs is refused with the field to send.
    let numbers: PredictBody = serde_json::from_value(serde_json::json!({"inputs": [[1.0]]})).unwrap();
    let err = served.prepare(numbers, 8).unwrap_err();
    assert!(err.0.contains("takes texts"), "{}", err.0);
    // People get a line per text.
    vigil(&runs)
        .args(["embed", &run, "--text", "the cat"])
        .assert()
        .success()
        .stdout(predicate::str::contains("8 values each").and(predicate::str::contains("the cat")));

    // Attention rollout per token: shares of the mean-pooled tokens, summing to 1, none on padding.
    let r = json(vigil(&runs).args(["explain", &run, "--sample", "0", "--method", "rollout", "--json"]));
    assert_eq!(r["method"], "rollout");
    let ids = r["input"]["tokens"]["ids"].as_array().unwrap();
    let scores: Vec<f64> =
        r["attributions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(scores.len(), ids.len());
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{scores:?}");
    for (id, s) in ids.iter().zip(&scores) {
        assert!(if id == 0 { *s == 0.0 } else { *s > 0.0 }, "{ids:?} {scores:?}");
    }

    // The frozen encoder's linear layers quantise (stored in the variant, the rest read from the
    // folder); its layer norms and embeddings stay f32 with their reasons.
    let q = json(vigil(&runs).args(["optimize", &run, "--quantize", "q8_0", "--rounds", "1", "--json"]));
    let layer = |name: &str| {
        q["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {}", q["layers"]))
    };
    assert_eq!(layer("encoder.layer.1.intermediate.dense")["stored"], "q8_0");
    assert_eq!(layer("encoder.layer.0.attention.self.query")["stored"], "q8_0");
    assert_eq!(layer("out")["stored"], "q8_0");
    assert!(layer("encoder.layer.0.output.LayerNorm")["why"].as_str().unwrap().starts_with("layer norm"));
    assert!(layer("embeddings.word_embeddings")["why"].as_str().unwrap().contains("table lookup"));
    assert!(q["agreement"].as_f64().unwrap() >= 0.9, "{}", q["agreement"]);
    // The report says the original's file leaves the frozen encoder out, and where it is read.
    let folder = q["frozen_encoder"].as_str().expect("frozen_encoder in the report");
    assert!(folder.ends_with("bert"), "{folder}");
}

/// HotFlip on a pretrained encoder swaps word pieces only: [CLS], [SEP], [PAD] and [UNK] are
/// never changed nor put in, and the sentences come back as text without them.
#[test]
fn hotflip_on_a_pretrained_encoder_leaves_special_tokens_alone() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    topics_like_tsv(&dir.path().join("texts.tsv"));
    let runs = dir.path().join("runs");
    let spec = spec(dir.path(), true);
    let out = vigil(&runs).args(["train", spec.to_str().unwrap(), "--epochs", "10", "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).expect("a run id").to_string();
    let v = json(vigil(&runs).args(["attack", &run, "--method", "hotflip", "--flips", "4", "--json"]));
    let special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let examples = v["adversarial"].as_array().unwrap();
    assert!(!examples.is_empty(), "four word pieces fool the head at least once: {v}");
    for e in examples {
        for f in e["flips"].as_array().unwrap() {
            let (from, to) = (f["from"].as_str().unwrap(), f["to"].as_str().unwrap());
            assert!(!special.contains(&from) && !special.contains(&to), "{f}");
            // Position 0 holds [CLS].
            assert!(f["position"].as_u64().unwrap() > 0, "{f}");
        }
        let s = e["adversarial"].as_str().unwrap();
        assert!(special.iter().all(|t| !s.contains(t)), "{s}");
    }
    // Embedding-space PGD on the same model, snapped to word pieces.
    vigil(&runs)
        .args(["attack", &run, "--eps", "0,2", "--steps", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("embedding-space attack"));
}

#[test]
fn fine_tuning_changes_the_encoder_and_saves_it() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    topics_like_tsv(&dir.path().join("texts.tsv"));
    let runs = dir.path().join("runs");
    let spec = spec(dir.path(), false);
    let out = vigil(&runs).args(["train", spec.to_str().unwrap(), "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).expect("a run id").to_string();
    // An encoder that trains is no fixed feature extractor: it runs every step.
    let events = std::fs::read_to_string(runs.join(&run).join("events.jsonl")).unwrap();
    assert!(!events.contains("encoded the"), "{events}");
    let last = std::fs::read(runs.join(&run).join("checkpoints/last.safetensors")).unwrap();
    let saved = candle_core::safetensors::load_buffer(&last, &Device::Cpu).unwrap();
    let name = "encoder.layer.0.attention.self.query.weight";
    let before: Vec<f32> = weights()[name].flatten_all().unwrap().to_vec1().unwrap();
    let after: Vec<f32> = saved[name].flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-4),
        "fine-tuning left the encoder as loaded"
    );
}

#[test]
fn the_head_on_frozen_features_gives_the_whole_networks_logits() {
    // What the training loop's cached features rely on: the head applied to the frozen
    // encoder's pooled output is the network's forward pass, padding included.
    use vigil::ml::data::InputShape;
    use vigil::ml::model::Network;
    use vigil::ml::spec::{Init, ModelSpec, Pooling};
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    let model = |freeze: bool| ModelSpec::Pretrained {
        path: dir.path().join("bert").display().to_string(),
        pooling: Pooling::Mean,
        head: vec![4],
        freeze,
        max_len: 6,
        dropout: 0.1,
    };
    let input = InputShape::Text { max_len: 6 };
    let net = Network::build(&model(true), &input, 3, None, Init::default(), 1, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[2u32, 4, 5, 7, 3, 0], [2, 11, 6, 8, 12, 3]], &Device::Cpu).unwrap();
    let features = net.frozen_features(&ids).unwrap().expect("a frozen encoder has features");
    let via_head: Vec<Vec<f32>> = net.forward_head(&features, None).unwrap().to_vec2().unwrap();
    let whole: Vec<Vec<f32>> = net.forward(&ids, None).unwrap().to_vec2().unwrap();
    for (a, b) in via_head.iter().flatten().zip(whole.iter().flatten()) {
        assert!((a - b).abs() < 1e-6, "{via_head:?} vs {whole:?}");
    }
    // A fine-tuned encoder has none: it changes every step.
    let tuned = Network::build(&model(false), &input, 3, None, Init::default(), 1, &Device::Cpu).unwrap();
    assert!(tuned.frozen_features(&ids).unwrap().is_none());
}

/// `vigil embed DIR --text x` on a broken folder: exit 2, and the message names `file` and says
/// `what`.
fn refused(dir: &Path, file: &str, what: &str) {
    let runs = dir.join("runs");
    vigil(&runs)
        .args(["embed", dir.join("bert").to_str().unwrap(), "--text", "the cat"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(file).and(predicate::str::contains(what)));
}

#[test]
fn a_folder_missing_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    std::fs::remove_file(dir.path().join("bert/tokenizer.json")).unwrap();
    refused(dir.path(), "bert", "has no tokenizer.json");
}

#[test]
fn an_unsupported_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    let mut c = config();
    c["model_type"] = "gpt2".into();
    c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(dir.path().join("bert/config.json"), c.to_string()).unwrap();
    refused(dir.path(), "config.json", "model_type \"gpt2\"");
}

#[test]
fn a_missing_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    w.remove("encoder.layer.1.output.dense.weight");
    write_folder(&dir.path().join("bert"), &w);
    refused(dir.path(), "model.safetensors", "has no tensor \"encoder.layer.1.output.dense.weight\"");
}

#[test]
fn a_tensor_of_another_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    let mut c = config();
    c["intermediate_size"] = 32.into();
    std::fs::write(dir.path().join("bert/config.json"), c.to_string()).unwrap();
    refused(
        dir.path(),
        "model.safetensors",
        "tensor \"encoder.layer.0.intermediate.dense.weight\" has shape [16, 8]",
    );
}

#[test]
fn a_tokenizer_that_does_not_parse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_bert(&dir.path().join("bert"));
    std::fs::write(dir.path().join("bert/tokenizer.json"), "{\"model\": {\"type\": \"WordPiece\"").unwrap();
    refused(dir.path(), "tokenizer.json", "not a tokenizer");
}

#[test]
fn a_path_that_is_no_folder_and_no_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    vigil(&dir.path().join("runs"))
        .args(["embed", "cache:no-such-model", "--text", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no-such-model").and(predicate::str::contains("not a folder")));
}
