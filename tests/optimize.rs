//! `vigil optimize` as an operator uses it: digits-mlp's Q8_0, Q4_0 and pruned variants against
//! the targets, quantised layers that need padding, every model kind (what stays f32 is
//! named), variants read back from their files, and each kind of bad input refused with its
//! reason and exit code 2.

mod common;

use common::cli::vigil;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use predicates::prelude::*;
use vigil::ml::data::InputShape;
use vigil::ml::model::Network;
use vigil::ml::spec::{self, Activation, Init, ModelSpec};
use vigil::ml::train::{Silent, TrainControl, train};
use vigil::ml::variants::{Precision, Prune, VariantSpec, load_variant, optimize, variant_dir};
use vigil::store::{RunDir, RunStore};

fn trained(store: &RunStore, name: &str, epochs: Option<usize>) -> RunDir {
    let mut s = spec::resolve(name, Path::new("models")).unwrap().0;
    if let Some(e) = epochs {
        s.epochs = e;
    }
    let run = store.create(&s).unwrap();
    train(&run, false, &mut Silent, &TrainControl::default()).unwrap();
    run
}

fn quantize(p: Precision) -> VariantSpec {
    VariantSpec { precision: p, prune: None }
}

/// The targets on the default experiment, trained in full: Q8_0 loses at most 0.5 points
/// at ≥ 3.7x smaller weights, Q4_0 at most 2 points at ≥ 7x, and 50% pruning with one epoch of
/// fine-tuning at most 1 point, with its zeros kept and its file smaller.
#[test]
fn digits_mlp_variants_meet_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = trained(&store, "digits-mlp", None);

    let q8 = optimize(&run, &quantize(Precision::Q8_0), 1).unwrap();
    assert!(q8.accuracy_delta_points() >= -0.5, "q8_0 lost {:.2} points", -q8.accuracy_delta_points());
    assert!(q8.weight_ratio() >= 3.7, "q8_0 weights only {:.2}x smaller", q8.weight_ratio());
    assert!(q8.agreement >= 0.99, "{}", q8.agreement);
    assert!(q8.layers.iter().all(|l| l.stored == "q8_0" && l.why.is_none()), "{:?}", q8.layers);

    let q4 = optimize(&run, &quantize(Precision::Q4_0), 1).unwrap();
    assert!(q4.accuracy_delta_points() >= -2.0, "q4_0 lost {:.2} points", -q4.accuracy_delta_points());
    assert!(q4.weight_ratio() >= 7.0, "q4_0 weights only {:.2}x smaller", q4.weight_ratio());

    let pruned = VariantSpec {
        precision: Precision::F32,
        prune: Some(Prune { ratio: 0.5, per_layer: false, finetune_epochs: 1 }),
    };
    let p = optimize(&run, &pruned, 1).unwrap();
    assert_eq!(p.variant, "prune50-ft1");
    assert!(p.accuracy_delta_points() >= -1.0, "pruning lost {:.2} points", -p.accuracy_delta_points());
    let sparsity = p.sparsity.unwrap();
    assert!((0.5..0.51).contains(&sparsity), "fine-tuning kept the pruned weights at zero: {sparsity}");
    assert!(p.measured.disk_bytes * 10 < p.original.disk_bytes * 6, "the pruned file is compressed");

    // What is stored is what was measured: each variant read back predicts as reported.
    for name in ["q8_0", "q4_0", "prune50-ft1"] {
        let v = load_variant(&run, name).unwrap();
        let data =
            vigil::ml::data::preprocess::PreparedData::build(&v.trained.spec, Some(&v.trained.pipeline))
                .unwrap();
        let (_, preds, _) = vigil::ml::train::predict(&v.trained.network, &data.test).unwrap();
        let acc =
            preds.iter().zip(&data.test.labels).filter(|(a, b)| a == b).count() as f64 / preds.len() as f64;
        assert!((acc - v.report.measured.test_accuracy).abs() < 1e-12, "{name}");
        let zeros = vigil::ml::variants::sparsity(&v.trained.network).unwrap();
        if name.starts_with("prune") {
            assert!(zeros >= 0.5, "{name} read back with {zeros} zeros");
        }
    }
    let listed: Vec<String> = vigil::ml::variants::list(&run).into_iter().map(|r| r.variant).collect();
    assert_eq!(listed, ["prune50-ft1", "q4_0", "q8_0"]);
}

/// A layer whose input width is not a whole number of Q8_0 blocks (20 and 9 here) is padded
/// with zeros: the quantised network's logits stay close to the f32 ones, and f16 closer still,
/// both through the quantised product (one input) and the widened weight (a batch of 80, more
/// rows than the quantised product takes), which agree with each other.
#[test]
fn padded_layers_quantise_and_keep_their_outputs() {
    let spec = ModelSpec::Mlp { hidden: vec![20], activation: Activation::Relu, dropout: 0.0 };
    let input = InputShape::Tabular { features: 9 };
    let net = Network::build(&spec, &input, 3, None, Init::KaimingUniform, 5, &Device::Cpu).unwrap();
    let x = Tensor::rand(-1.0f32, 1.0, (80, 9), &Device::Cpu).unwrap();
    let want = net.forward(&x, None).unwrap();
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    for (dtype, tolerance) in [(GgmlDType::F16, 2e-3), (GgmlDType::Q8_0, 3e-2), (GgmlDType::Q4_0, 0.25)] {
        let mut q = net.clone();
        q.quantize(dtype).unwrap();
        let got = q.forward(&x, None).unwrap();
        let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err <= tolerance * scale, "{dtype:?}: max error {err} against logits up to {scale}");
        for i in [0, 7, 79] {
            let one = q.forward(&x.narrow(0, i, 1).unwrap(), None).unwrap();
            let row = got.narrow(0, i, 1).unwrap();
            let err = (one - &row).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // The quantised product also rounds the input to 8-bit blocks; the widened weight
            // does not.
            assert!(err <= tolerance * scale, "{dtype:?} row {i}: one at a time differs by {err}");
        }
        assert!(q.quantized().iter().all(|w| w.padded % dtype.block_size() == 0 && w.padded >= w.inputs));
        assert!(q.weight_bytes() < net.weight_bytes());
    }
}

/// Every model kind the core trains can be quantised: its dense layers are, the rest stay f32
/// with the reason given, and the variant predicts like the original.
#[test]
fn every_model_kind_quantises_what_it_can_and_names_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    for (name, f32_layer, why) in [
        ("digits-cnn", "convs.0", "convolution"),
        ("waves-gru", "rnn.l0", "recurrent"),
        ("topics-text", "embedding", "table lookup"),
    ] {
        let run = trained(&store, name, Some(2));
        let r = optimize(&run, &quantize(Precision::Q8_0), 1).unwrap();
        let layer = r.layers.iter().find(|l| l.layer == f32_layer).unwrap();
        assert_eq!(layer.stored, "f32", "{name}");
        assert!(layer.why.as_deref().unwrap().contains(why), "{name}: {:?}", layer.why);
        assert!(r.layers.iter().any(|l| l.stored == "q8_0"), "{name}: {:?}", r.layers);
        assert!(r.agreement >= 0.95, "{name}: agreement {}", r.agreement);
        load_variant(&run, "q8_0").unwrap();
    }
}

/// A Transformer's linear layers (Q, K, V, attention output, intermediate, output) and its head
/// are quantised; layer norms and embeddings stay f32 with their reasons. The variant read back
/// predicts as reported and is explained like the original: its integrated gradients (through
/// the widened weights, since candle's quantised product passes no gradient) stay close to the
/// f32 model's.
#[test]
fn a_transformers_linear_layers_quantise_and_the_variant_explains() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = trained(&store, "topics-transformer", Some(2));
    let r = optimize(&run, &quantize(Precision::Q8_0), 1).unwrap();
    let stored =
        |layer: &str| r.layers.iter().find(|l| l.layer == layer).unwrap_or_else(|| panic!("{layer}"));
    for l in 0..2 {
        for name in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ] {
            assert_eq!(stored(&format!("encoder.layer.{l}.{name}")).stored, "q8_0", "{:?}", r.layers);
        }
        let norm = stored(&format!("encoder.layer.{l}.attention.output.LayerNorm"));
        assert!(norm.why.as_deref().unwrap().starts_with("layer norm"), "{norm:?}");
    }
    assert_eq!(stored("out").stored, "q8_0");
    let emb = stored("embeddings.word_embeddings");
    assert!(emb.why.as_deref().unwrap().contains("table lookup"), "{emb:?}");
    assert!(r.layers.iter().all(|l| l.stored == "q8_0" || l.why.is_some()), "{:?}", r.layers);
    assert!(r.weight_ratio() >= 3.5, "q8_0 linear weights only {:.2}x smaller", r.weight_ratio());
    assert!(r.agreement >= 0.95, "agreement {}", r.agreement);

    let v = load_variant(&run, "q8_0").unwrap();
    let data =
        vigil::ml::data::preprocess::PreparedData::build(&v.trained.spec, Some(&v.trained.pipeline)).unwrap();
    let (_, preds, _) = vigil::ml::train::predict(&v.trained.network, &data.test).unwrap();
    let acc = preds.iter().zip(&data.test.labels).filter(|(a, b)| a == b).count() as f64 / preds.len() as f64;
    assert!((acc - r.measured.test_accuracy).abs() < 1e-12);

    use vigil::ml::explain::{Explainer, Method};
    let original = vigil::ml::train::load_trained(&run, vigil::store::CheckpointKind::Best).unwrap();
    let x = data.test.features.batch(&[0], &Device::Cpu).unwrap();
    let ig = Method::named("ig", &original.network.input).unwrap();
    let want = Explainer::new(&original.network).explain(&x, &ig, Some(&[0])).unwrap().remove(0);
    let got = Explainer::new(&v.trained.network).explain(&x, &ig, Some(&[0])).unwrap().remove(0);
    let scale = want.attributions.iter().fold(0f32, |m, a| m.max(a.abs()));
    assert!(scale > 0.0);
    for (a, b) in got.attributions.iter().zip(&want.attributions) {
        assert!((a - b).abs() <= 0.1 * scale, "{:?} vs {:?}", got.attributions, want.attributions);
    }
    assert!(got.completeness.unwrap().gap < 1e-2, "{:?}", got.completeness);
}

#[test]
fn bad_requests_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = trained(&store, "digits-logreg", Some(2));
    let id = run.id.clone();
    for (args, msg) in [
        (vec!["--quantize", "q3_k"], "unknown format"),
        (vec!["--prune", "1.5"], "between 0 and 1"),
        (vec!["--prune", "0"], "between 0 and 1"),
        (vec!["--finetune-epochs", "1"], "--finetune-epochs needs --prune"),
        (vec!["--per-layer"], "--per-layer needs --prune"),
        (vec![], "nothing to do"),
        (vec!["--quantize", "q8_0", "--rounds", "0"], "--rounds"),
    ] {
        vigil(dir.path())
            .arg("optimize")
            .arg(&id)
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(msg));
    }
    vigil(dir.path())
        .args(["optimize", "no-such-run", "--quantize", "q8_0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no-such-run"));
    // Nothing was written by the refusals.
    assert!(!run.file("variants").exists());

    // A variant that exists is replaced, and the CLI says where it went.
    for _ in 0..2 {
        vigil(dir.path())
            .args(["optimize", &id, "--quantize", "q8_0", "--rounds", "1"])
            .assert()
            .success()
            .stdout(predicate::str::contains("variants/q8_0").and(predicate::str::contains("test accuracy")));
    }
    let json = vigil(dir.path())
        .args(["optimize", &id, "--quantize", "q4_0", "--rounds", "1", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["variant"], "q4_0");
    assert!(report["variant_measured"]["latency_ms"].as_f64().unwrap() > 0.0);

    // Serving a variant that does not exist names those that do.
    vigil(dir.path())
        .args(["serve", &format!("{id}@q5_0")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no variant \"q5_0\"").and(predicate::str::contains("q4_0, q8_0")));
}

#[test]
fn a_changed_variant_file_or_a_retrained_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = trained(&store, "digits-logreg", Some(2));
    optimize(&run, &quantize(Precision::Q8_0), 1).unwrap();
    let file = variant_dir(&run, "q8_0").join("model.gguf");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 7] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let err = load_variant(&run, "q8_0").err().unwrap().to_string();
    assert!(err.contains("model.gguf"), "{err}");

    // The run's best checkpoint changes under the variant (trained further, say).
    optimize(&run, &quantize(Precision::Q8_0), 1).unwrap();
    let mut m = run.manifest().unwrap();
    m.files.insert("checkpoints/best.safetensors".into(), "0".repeat(64));
    vigil::store::write_json(&run.file("manifest.json"), &m).unwrap();
    let err = load_variant(&run, "q8_0").err().unwrap().to_string();
    assert!(err.contains("no longer has as its best"), "{err}");
}

#[test]
fn a_private_run_is_not_fine_tuned_without_its_noise_and_sealed_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = trained(&store, "digits-mlp-dp", Some(2));
    let ft = VariantSpec {
        precision: Precision::F32,
        prune: Some(Prune { ratio: 0.5, per_layer: true, finetune_epochs: 1 }),
    };
    let err = optimize(&run, &ft, 1).err().unwrap().to_string();
    assert!(err.contains("privacy"), "{err}");
    let key = vigil::store::seal::SealKey::generate();
    run.seal(&key).unwrap();
    let err = optimize(&run, &quantize(Precision::Q8_0), 1).err().unwrap().to_string();
    assert!(err.contains("sealed") && err.contains("unseal"), "{err}");
}
