//! `vigil explain` as an operator runs it: the summary, `--json`, `--png`, `--sanity`, `--bench`
//! with a reference file, and every kind of bad argument (exit code 2, with what is wrong).

mod common;

use common::cli::{json, train, vigil};
use predicates::prelude::*;

#[test]
fn explain_prints_a_summary_json_and_a_picture() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "3");
    vigil(dir.path())
        .args(["explain", &run, "--sample", "4"])
        .assert()
        .success()
        .stdout(predicate::str::contains("test sample 4 / label"))
        .stdout(predicate::str::contains("top 3:"))
        .stdout(predicate::str::contains("integrated gradients (50 steps, gauss-legendre, zero baseline)"))
        .stdout(predicate::str::contains("completeness: sum of attributions"))
        .stdout(predicate::str::contains("most important pixels (row, column):"));

    let v = json(vigil(dir.path()).args(["explain", &run, "--sample", "4", "--json"]));
    assert_eq!(v["method"], "ig");
    assert_eq!(v["settings"]["steps"], 50);
    assert_eq!(v["shape"], serde_json::json!([1, 8, 8]));
    assert_eq!(v["attributions"].as_array().unwrap().len(), 64);
    assert_eq!(v["probabilities"].as_array().unwrap().len(), 10);
    let p: f64 = v["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((p - 1.0).abs() < 1e-4);
    assert_eq!(v["target"], v["predicted"]);
    // Softmax regression is linear in its input: IG from zero is exact whatever the rule.
    assert!(v["completeness_delta"].as_f64().unwrap() < 1e-4, "{}", v["completeness_delta"]);

    // Another target, another method: the attributions differ, and there is no IG delta.
    let v = json(vigil(dir.path()).args([
        "explain",
        &run,
        "--sample",
        "4",
        "--method",
        "occlusion",
        "--target",
        "0",
        "--json",
    ]));
    assert_eq!(v["method"], "occlusion");
    assert_eq!(v["target"], 0);
    assert!(v["completeness_delta"].is_null());

    let png = dir.path().join("four.png");
    vigil(dir.path())
        .args(["explain", &run, "--sample", "4", "--method", "smoothgrad", "--png"])
        .arg(&png)
        .assert()
        .success()
        .stdout(predicate::str::contains("picture written to"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    // Two 256-pixel panels (8x8 pixels, 32 each) side by side, with the header and the scale.
    assert!(info.width >= 2 * 256 && info.height >= 256 + 60, "{}x{}", info.width, info.height);
}

#[test]
fn text_models_are_explained_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "topics-text", "8");
    vigil(dir.path())
        .args(["explain", &run, "--sample", "0", "--method", "grad-input"])
        .assert()
        .success()
        .stdout(predicate::str::contains("tokens: "))
        .stdout(predicate::str::contains("most important tokens:"));
    let v = json(vigil(dir.path()).args(["explain", &run, "--sample", "0", "--json"]));
    assert_eq!(v["shape"], serde_json::json!([24]));
    let words = v["input"]["tokens"]["words"].as_array().unwrap();
    let ids = v["input"]["tokens"]["ids"].as_array().unwrap();
    let attributions = v["attributions"].as_array().unwrap();
    for ((w, id), a) in words.iter().zip(ids).zip(attributions) {
        if id == 0 {
            assert_eq!(w, "<pad>");
            assert_eq!(a.as_f64().unwrap(), 0.0, "padding gets no attribution");
        }
    }
    let png = dir.path().join("text.png");
    vigil(dir.path()).args(["explain", &run, "--sample", "0", "--png"]).arg(&png).assert().success();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn sanity_reports_both_tests_and_fails_the_control() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "3");
    vigil(dir.path())
        .args(["explain", &run, "--sanity", "--inputs", "20", "--method", "saliency"])
        .assert()
        .success()
        .stdout(predicate::str::contains("model-parameter randomisation test"))
        .stdout(predicate::str::contains("+layers.0"))
        .stdout(predicate::str::contains("as it must: it does not depend on the model"))
        .stdout(predicate::str::contains("reference, not judged"))
        .stdout(predicate::str::contains("deletion test"))
        .stdout(predicate::str::contains("random"));
    let v = json(vigil(dir.path()).args(["explain", &run, "--sanity", "--inputs", "20", "--json"]));
    let curves = v["randomisation"]["curves"].as_array().unwrap();
    let names: Vec<&str> = curves.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["saliency", "grad-input", "ig", "smoothgrad", "occlusion", "control"]);
    assert_eq!(curves[5]["passed"], false);
    assert_eq!(v["deletion"]["fractions"].as_array().unwrap().len(), 21);
}

#[test]
fn bench_times_and_compares_with_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "2");
    let ours = json(vigil(dir.path()).args(["explain", &run, "--sample", "1", "--json"]));
    // A reference as bench/captum_reference.py writes it, holding our own attributions.
    let reference = dir.path().join("reference.json");
    let r = serde_json::json!({
        "tool": "test reference", "sample": 1, "target": ours["target"], "steps": 50,
        "attributions": ours["attributions"], "median_ms": 2.0, "delta": 0.0, "threads": 2,
    });
    std::fs::write(&reference, r.to_string()).unwrap();
    vigil(dir.path())
        .args(["explain", &run, "--sample", "1", "--bench", "--repeats", "5", "--reference"])
        .arg(&reference)
        .assert()
        .success()
        .stdout(predicate::str::contains("vigil: median"))
        .stdout(predicate::str::contains("test reference: median 2.00 ms"))
        .stdout(predicate::str::contains("agree to 1e-4"));
    // A reference for another sample is refused rather than compared.
    vigil(dir.path())
        .args(["explain", &run, "--sample", "2", "--bench", "--repeats", "1", "--reference"])
        .arg(&reference)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the reference is for sample 1"));
    std::fs::write(&reference, "{\"tool\": 3}").unwrap();
    vigil(dir.path())
        .args(["explain", &run, "--sample", "1", "--bench", "--repeats", "1", "--reference"])
        .arg(&reference)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a Captum reference file"));
}

#[test]
fn bad_arguments_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    let refused = |args: &[&str], needle: &str| {
        vigil(dir.path()).arg("explain").args(args).assert().code(2).stderr(predicate::str::contains(needle));
    };
    refused(&[&run, "--sample", "5000"], "--sample 5000 is out of range: the test split");
    refused(&[&run, "--sample", "1", "--method", "gradcam"], "unknown attribution method \"gradcam\"");
    refused(&[&run, "--sample", "1", "--target", "12"], "--target \"12\" is not a class of this run");
    refused(
        &[&run, "--sample", "1", "--method", "saliency", "--steps", "20"],
        "--steps applies to ig, not to saliency",
    );
    refused(&[&run, "--sample", "1", "--steps", "0"], "between 1 and 10000 steps");
    refused(&[&run, "--sample", "1", "--rule", "simpson"], "unknown integration rule");
    refused(&[&run, "--sample", "1", "--baseline", "grey"], "must be `zero` or a number");
    refused(
        &[&run, "--sample", "1", "--method", "occlusion", "--window", "9"],
        "window 9 must be between 1 and 8",
    );
    refused(&[&run, "--sample", "1", "--method", "smoothgrad", "--noise", "-1"], "noise level -1");
    refused(&[&run, "--sanity", "--inputs", "1"], "--inputs 1 is too few");
    refused(
        &[&run, "--sample", "1", "--method", "rollout"],
        "attention rollout needs an attention model (transformer or pretrained); this run's model is",
    );
    refused(&[&run, "--sample", "1", "--method", "rollout", "--target", "3"], "the same for every class");
    refused(
        &[&run, "--sample", "1", "--method", "rollout", "--steps", "3"],
        "--steps applies to ig, not to rollout",
    );
    refused(&["nosuchrun", "--sample", "1"], "no run \"nosuchrun\"");
    // clap's own refusals (a missing --sample, --sanity with --png) also exit with 2.
    refused(&[&run], "--sample");
    refused(&[&run, "--sanity", "--png", "x.png"], "cannot be used with");
}
