//! DP-SGD end to end: a private run records the ε it spends each epoch within its target, its
//! settings are checked with their place in the spec, and an unreachable target is refused
//! before anything trains. The per-example clipping and the noise scale are checked in
//! `src/ml/privacy/dpsgd.rs`'s unit tests; the accountant against Opacus in the library's.

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
