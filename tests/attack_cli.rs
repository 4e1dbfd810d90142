//! `vigil attack` as an operator runs it: the table, `--json`, the adversarial examples saved
//! with the run, and every kind of bad argument (exit code 2, with what is wrong); on text
//! models, embedding-space PGD reported as such and HotFlip's token substitutions.

mod common;

use common::cli::{json, train, vigil};
use predicates::prelude::*;

#[test]
fn attack_prints_a_curve_json_and_saves_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "5");
    vigil(dir.path())
        .args(["attack", &run, "--method", "fgsm", "--eps", "0,0.1,0.25"])
        .assert()
        .success()
        .stdout(predicate::str::contains("FGSM (L∞, untargeted) on the test split (359 examples)"))
        .stdout(predicate::str::contains("ε is in the model's input after MinMax(Global)"))
        .stdout(predicate::str::contains("clipped to the valid input range [0, 1]"))
        .stdout(predicate::str::contains("success rate"))
        .stdout(predicate::str::contains("mean ‖δ‖∞"))
        .stdout(predicate::str::contains("flagged"));

    let v = json(vigil(dir.path()).args([
        "attack",
        &run,
        "--method",
        "pgd",
        "--eps",
        "0.1,0,0.05",
        "--steps",
        "5",
        "--json",
    ]));
    assert_eq!(v["method"], "pgd");
    assert_eq!(v["norm"], "linf");
    assert_eq!(v["steps"], 5);
    assert_eq!(v["random_start"], false);
    let points = v["points"].as_array().unwrap();
    // Sorted by ε, each with the four figures the issue names.
    let eps: Vec<f64> = points.iter().map(|p| p["eps"].as_f64().unwrap()).collect();
    assert_eq!(eps.len(), 3);
    assert!(eps[0] == 0.0 && (eps[2] - 0.1).abs() < 1e-6, "{eps:?}");
    for p in points {
        for k in ["accuracy", "success_rate", "mean_norm", "detected"] {
            assert!(p[k].is_number(), "{k} in {p}");
        }
    }
    assert_eq!(points[0]["success_rate"], 0.0);
    assert!(points[2]["accuracy"].as_f64() < points[0]["accuracy"].as_f64());
    // PGD stops moving an example once it is fooled: the mean norm is at most ε.
    let n = points[1]["mean_norm"].as_f64().unwrap();
    assert!(n > 0.03 && n <= 0.05 + 1e-6, "{}", points[1]);
    assert!(v["units"].as_str().unwrap().contains("MinMax(Global)"));
    assert_eq!(v["range"], "[0, 1]");
    // Saved with the run, listed in the index with their hashes.
    let base = dir.path().join(&run).join("attacks");
    assert!(base.join("pgd-linf-5").join("eps-0.05.safetensors").is_file());
    assert!(base.join("fgsm-linf").join("eps-0.25.safetensors").is_file());
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("index.json")).unwrap()).unwrap();
    let keys: Vec<&str> =
        index["curves"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["fgsm-linf", "pgd-linf-5"]);
    assert!(index["curves"][1]["points"][1]["sha256"].as_str().unwrap().len() == 64);

    // Targeted, L2, not saved.
    let v = json(vigil(dir.path()).args([
        "attack",
        &run,
        "--norm",
        "l2",
        "--eps",
        "1",
        "--targeted",
        "3",
        "--no-save",
        "--json",
        "--random-start",
    ]));
    assert_eq!(v["targeted"], 3);
    assert_eq!(v["saved"], false);
    assert!(v["points"][0]["success_rate"].as_f64().unwrap() > 0.2, "{}", v["points"][0]);
    assert!(!base.join("pgd-l2-20-to3").exists());
}

#[test]
fn attack_refuses_bad_arguments_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    let cases: [(&[&str], &str); 10] = [
        (&["--eps", "-0.1"], "--eps -0.1 is not a radius"),
        (&["--eps", "NaN"], "--eps NaN is not a radius"),
        (&["--eps", "a"], "invalid value 'a'"),
        (&["--method", "fgsm", "--steps", "3"], "--steps applies to pgd"),
        (&["--targeted", "cat"], "--targeted \"cat\" is not a class of this run; the classes are 0, 1"),
        (&["--step-size", "0"], "--step-size 0 must be a positive number"),
        (&["--steps", "0"], "0 steps: an attack takes between 1 and 10000 steps"),
        // HotFlip swaps tokens: a model of numbers has none.
        (&["--attack", "hotflip"], "--method hotflip swaps tokens of a text model, but"),
        (&["--method", "pgd", "--flips", "2"], "--flips applies to hotflip"),
        (&["--method", "hotflip", "--eps", "0.1"], "--eps applies to fgsm and pgd"),
    ];
    for (args, msg) in cases {
        let mut cmd = vigil(dir.path());
        cmd.args(["attack", &run]).args(args);
        cmd.assert().code(2).stderr(predicate::str::contains(msg));
    }
    vigil(dir.path())
        .args(["attack", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run \"nope\""));
}

/// A Transformer trained here is attacked in its embedding space (it used to be refused with
/// "only text models have words to snap to") and with HotFlip, each reported for what it is.
#[test]
fn text_models_get_embedding_pgd_and_hotflip() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "topics-transformer", "3");
    vigil(dir.path())
        .args(["attack", &run, "--eps", "0,1", "--steps", "5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("embedding-space attack"))
        .stdout(predicate::str::contains("inputs that are not text"))
        .stdout(predicate::str::contains("a token embedding of this model has a mean L2 norm of"))
        .stdout(predicate::str::contains("words"));
    vigil(dir.path())
        .args(["attack", &run, "--attack", "hotflip", "--flips", "2", "--candidates", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("HotFlip (untargeted, greedy, 3 candidate flips"))
        .stdout(predicate::str::contains("tokens changed"))
        .stdout(predicate::str::contains("≤ 2"))
        .stdout(predicate::str::contains("adversarial sentences (changed tokens in *stars*)"))
        .stdout(predicate::str::contains("Security view"));
    let v = json(vigil(dir.path()).args(["attack", &run, "--method", "hotflip", "--json", "--no-save"]));
    assert_eq!(v["method"], "hotflip");
    assert_eq!(v["max_flips"], 3);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["flips"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    let first = &v["adversarial"][0];
    assert!(first["adversarial"].as_str().unwrap().contains('*'), "{first}");
    // The first run saved its report; the --no-save one did not replace it.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(&run).join("attacks/index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["flips"][0]["max_flips"], 2);
    assert_eq!(index["curves"][0]["space"], "embedding");
    for (args, msg) in [
        (&["--flips", "0"][..], "--flips 0: HotFlip changes between 1 and 20 tokens"),
        (&["--candidates", "0"][..], "--candidates 0"),
        (&["--targeted", "nope"][..], "--targeted \"nope\" is not a class of this run"),
    ] {
        vigil(dir.path())
            .args(["attack", &run, "--method", "hotflip"])
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(msg));
    }
}
