//! Checks of a user's data at the edges of a run: a bad file leaves no run behind, and
//! `--seed` changes the training, not the test split.

mod common;

use std::path::Path;

use common::cli::vigil;
use predicates::prelude::*;

#[test]
fn a_data_error_leaves_no_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(dir.path().join("bad.csv"), "x,y\n1,a\n2,a\noops,b\n").unwrap();
    let spec = dir.path().join("bad.ron");
    std::fs::write(
        &spec,
        "(name: \"bad\", data: (source: Csv(path: \"bad.csv\", label: \"y\")), model: LogReg, \
         optimizer: Sgd(lr: 0.1), batch: Full, epochs: 1)",
    )
    .unwrap();
    vigil(&runs)
        .arg("train")
        .arg(&spec)
        .assert()
        .code(2)
        .stdout(predicate::str::contains("run id").not())
        .stderr(predicate::str::contains("bad.csv: line 4, column \"x\": \"oops\" is not a number"));
    vigil(&runs).args(["runs", "--json"]).assert().success().stdout(predicate::str::diff("[]\n"));
}

fn test_split(runs: &Path, seed: &str) -> serde_json::Value {
    let out = vigil(runs)
        .args(["train", "digits-logreg", "--epochs", "1", "-q", "--seed", seed])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(run).join("splits.json")).unwrap()).unwrap();
    splits["test"].clone()
}

#[test]
fn another_seed_keeps_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let a = test_split(dir.path(), "1");
    let b = test_split(dir.path(), "2");
    assert_eq!(a.as_array().unwrap().len(), 359);
    assert_eq!(a, b);
}

#[test]
fn eval_json_predictions_agree_with_its_metrics_and_the_recorded_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(dir.path()).args(["train", "digits-logreg", "--epochs", "1", "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let out = vigil(dir.path()).args(["eval", &run, "--json", "--predictions"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["confusion_matrix_orientation"], "rows are the true class, columns the predicted class");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len() as u64, v["samples"].as_u64().unwrap());
    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(&run).join("splits.json")).unwrap())
            .unwrap();
    let indices: Vec<&serde_json::Value> = preds.iter().map(|p| &p["index"]).collect();
    assert_eq!(indices, splits["test"].as_array().unwrap().iter().collect::<Vec<_>>());
    let classes: Vec<&str> = v["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let mut cm = vec![vec![0u64; classes.len()]; classes.len()];
    let mut right = 0;
    for p in preds {
        let t = classes.iter().position(|c| *c == p["true_label"]).unwrap();
        let q = classes.iter().position(|c| *c == p["predicted_label"]).unwrap();
        cm[t][q] += 1;
        right += usize::from(t == q);
        let probs = p["probabilities"].as_array().unwrap();
        let sum: f64 = probs.iter().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
    assert_eq!(serde_json::to_value(&cm).unwrap(), v["confusion_matrix"]);
    assert!((right as f64 / preds.len() as f64 - v["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    // --predictions needs --json.
    vigil(dir.path()).args(["eval", &run, "--predictions"]).assert().code(2);
}
