//! DP-SGD end to end: a private run records the ε it spends each epoch within its target, its
//! settings are checked with their place in the spec, and an unreachable target is refused
//! before anything trains; on a tiny Transformer, the privatised gradient is exactly the mean of
//! each example's own gradient (taken from a backward pass of the whole batch) clipped by hand.
//! The closed form for MLPs and the noise scale are checked in `src/ml/privacy/dpsgd.rs`'s unit
//! tests; the accountant against Opacus in the library's.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use vigil::error::{ConfigError, Error};
use vigil::ml::spec::ExperimentSpec;
use vigil::store::RunStore;

fn parse(text: &str) -> Result<ExperimentSpec, Error> {
    ExperimentSpec::parse(text, Path::new("bad.ron"))
}

fn with_privacy(dp: &str) -> String {
    let text = std::fs::read_to_string("models/digits-mlp.ron").unwrap();
    text.replace("    model: ", &format!("    privacy: {dp},\n    model: "))
}

#[test]
fn privacy_settings_are_checked_with_their_place() {
    let ok = parse(&with_privacy("(clip_norm: 1.0, noise_multiplier: 1.1)")).unwrap();
    let dp = ok.privacy.clone().unwrap();
    assert_eq!((dp.clip_norm, dp.noise_multiplier, dp.delta), (1.0, Some(1.1), 1e-5));
    assert_eq!(parse(&ok.to_ron()).unwrap(), ok, "the setting survives being stored");

    let cases = [
        ("(clip_norm: 0.0, noise_multiplier: 1.0)", "privacy.clip_norm", "positive"),
        ("(clip_norm: 1.0, noise_multiplier: -1.0)", "privacy.noise_multiplier", "positive"),
        ("(clip_norm: 1.0, target_epsilon: 0.0)", "privacy.target_epsilon", "positive"),
        ("(clip_norm: 1.0, target_epsilon: 3.0, delta: 1.5)", "privacy.delta", "(0, 1)"),
        ("(clip_norm: 1.0)", "privacy", "exactly one of"),
        ("(clip_norm: 1.0, noise_multiplier: 1.0, target_epsilon: 3.0)", "privacy", "exactly one of"),
    ];
    for (dp, field, what) in cases {
        let text = with_privacy(dp);
        let line = text.lines().position(|l| l.contains("privacy:")).unwrap() + 1;
        match parse(&text) {
            Err(Error::Config(ConfigError { line: l, msg, .. })) => {
                assert_eq!(l, line, "{dp}: the error points at the privacy line");
                assert!(msg.contains(field) && msg.contains(what), "{dp}: {msg}");
            }
            other => panic!("{dp}: expected a spec error, got {other:?}"),
        }
    }
    match parse(&with_privacy("(clip_norm: 1.0, noise: 1.0)")) {
        Err(Error::Config(ConfigError { msg, .. })) => assert!(msg.contains("noise"), "{msg}"),
        other => panic!("an unknown field is refused: {other:?}"),
    }
    let both = with_privacy("(clip_norm: 1.0, noise_multiplier: 1.0)")
        .replace("    model: ", "    adversarial: (method: Fgsm, eps: 0.1),\n    model: ");
    match parse(&both) {
        Err(Error::Config(ConfigError { msg, .. })) => assert!(msg.contains("cannot be combined"), "{msg}"),
        other => panic!("DP with adversarial training is refused: {other:?}"),
    }
}

#[test]
fn a_private_run_spends_no_more_than_its_target_and_says_so_each_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let spec =
        std::fs::read_to_string("models/digits-mlp-dp.ron").unwrap().replace("epochs: 30,", "epochs: 6,");
    std::fs::write(models.join("digits-mlp-dp.ron"), spec).unwrap();
    let runs = dir.path().join("runs");
    Command::cargo_bin("vigil")
        .unwrap()
        .arg("--runs-dir")
        .arg(&runs)
        .arg("--models-dir")
        .arg(&models)
        .args(["train", "digits-mlp-dp", "-q"])
        .assert()
        .success();
    let store = RunStore::new(&runs);
    let run = store.resolve("latest").unwrap();
    let info = run.info().unwrap();
    let dp = info.dp.expect("a DP run records the privacy it spent");
    assert!(dp.epsilon <= 3.0 && dp.epsilon > 2.5, "ε {} for a target of 3 over all epochs", dp.epsilon);
    assert_eq!(dp.steps, info.step);
    // The accountant agrees with what the run recorded.
    let again = vigil::ml::privacy::accountant::epsilon_for(dp.sigma, dp.sample_rate, dp.steps, dp.delta);
    assert!((again - dp.epsilon).abs() < 1e-9);
    let events = std::fs::read_to_string(run.file("events.jsonl")).unwrap();
    let per_epoch: Vec<&str> =
        events.lines().filter(|l| l.contains("\"privacy\"") && l.contains("spent")).collect();
    assert_eq!(per_epoch.len(), 6, "{events}");
    // ε grows epoch by epoch.
    let eps: Vec<f64> = per_epoch
        .iter()
        .map(|l| l.split("ε = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(eps.windows(2).all(|w| w[1] > w[0]), "{eps:?}");
    // Private training still learns something.
    assert!(info.test_accuracy.unwrap() > 0.5, "{:?}", info.test_accuracy);
}

#[test]
fn an_unreachable_target_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let spec = std::fs::read_to_string("models/digits-mlp-dp.ron")
        .unwrap()
        .replace("target_epsilon: 3.0", "target_epsilon: 0.000000001");
    std::fs::write(models.join("digits-mlp-dp.ron"), spec).unwrap();
    Command::cargo_bin("vigil")
        .unwrap()
        .arg("--runs-dir")
        .arg(dir.path().join("runs"))
        .arg("--models-dir")
        .arg(&models)
        .args(["train", "digits-mlp-dp", "-q"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("target_epsilon").and(predicate::str::contains("cannot be reached")),
        );
}

/// The micro-batched path on a Transformer (attention, layer norm, a CLS vector, padding): each
/// example's gradient is taken here from the whole padded batch's forward pass (its own loss
/// term's backward), clipped by hand to C, and the mean must equal what DP-SGD computed one
/// example at a time. Padding and batching must not leak into an example's gradient.
#[test]
fn per_example_clipping_is_exact_on_a_transformer() {
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use vigil::ml::data::InputShape;
    use vigil::ml::model::Network;
    use vigil::ml::privacy::dpsgd::{DpPlan, private_gradients};
    use vigil::ml::spec::{Init, ModelSpec, NormPlacement, Pooling};

    let spec = ModelSpec::Transformer {
        dim: 8,
        heads: 2,
        layers: 2,
        ff: 12,
        dropout: 0.0,
        pooling: Pooling::Cls,
        norm: NormPlacement::Post,
        head: vec![5],
        patch: 1,
    };
    let net = Network::build(
        &spec,
        &InputShape::Text { max_len: 5 },
        3,
        Some(10),
        Init::XavierUniform,
        4,
        &Device::Cpu,
    )
    .unwrap();
    // Token 0 is padding: the examples have 5, 3, 1 and 4 real tokens.
    let ids = vec![2u32, 5, 3, 7, 4, 6, 9, 8, 0, 0, 1, 0, 0, 0, 0, 3, 3, 2, 9, 0];
    let x = Tensor::from_vec(ids, (4, 5), &Device::Cpu).unwrap();
    let labels = [0u32, 2, 1, 2];
    let clip = 20.0;
    let plan = DpPlan { sigma: 0.0, clip_norm: clip, delta: 1e-5, sample_rate: 0.1, expected_batch: 4.0 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (got, stats) = private_gradients(&net, Some(&x), &labels, &plan, &mut rng).unwrap();

    let logits = net.forward(&x, None).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    let mut want: Vec<Vec<f64>> = net.vars().iter().map(|(_, v)| vec![0.0; v.elem_count()]).collect();
    let mut clipped = 0;
    let mut norms = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        let loss = logp
            .narrow(0, i, 1)
            .unwrap()
            .narrow(1, label as usize, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        let grads = vigil::ml::kernels::backward(&loss).unwrap();
        let g: Vec<Vec<f32>> = net
            .vars()
            .iter()
            .map(|(name, v)| match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
                None => panic!("{name} has no gradient"),
            })
            .collect();
        let norm = g.iter().flatten().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        norms.push(norm);
        let f = (clip / (norm + 1e-6)).min(1.0);
        clipped += usize::from(f < 1.0);
        for (w, gi) in want.iter_mut().zip(g) {
            for (a, b) in w.iter_mut().zip(gi) {
                *a += b as f64 * f / 4.0;
            }
        }
    }
    assert_eq!(stats.clipped, clipped, "per-example norms {norms:?}");
    assert!((2..4).contains(&clipped), "the clip must bite for some examples only: norms {norms:?}");
    let mut largest = 0f64;
    for ((name, _), (g, w)) in net.vars().iter().zip(got.iter().zip(&want)) {
        for (k, (a, b)) in g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(w).enumerate() {
            largest = largest.max(b.abs());
            assert!((*a as f64 - b).abs() < 1e-6 + 1e-4 * b.abs(), "{name}[{k}]: DP-SGD {a}, by hand {b}");
        }
    }
    assert!(largest > 1e-3, "the gradients are all near zero ({largest})");
}
