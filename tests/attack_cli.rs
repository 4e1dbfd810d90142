//! `vigil attack` as an operator runs it: the table, `--json`, the adversarial examples saved
//! with the run, and every kind of bad argument (exit code 2, with what is wrong).

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
    let cases: [(&[&str], &str); 7] = [
        (&["--eps", "-0.1"], "--eps -0.1 is not a radius"),
        (&["--eps", "NaN"], "--eps NaN is not a radius"),
        (&["--eps", "a"], "invalid value 'a'"),
        (&["--method", "fgsm", "--steps", "3"], "--steps applies to pgd"),
        (&["--targeted", "cat"], "--targeted \"cat\" is not a class of this run; the classes are 0, 1"),
        (&["--step-size", "0"], "--step-size 0 must be a positive number"),
        (&["--steps", "0"], "0 steps: an attack takes between 1 and 10000 steps"),
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
