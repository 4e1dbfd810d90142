//! The headless command line as a script or an operator uses it: output, JSON shapes and exit
//! codes, including every kind of bad input.

mod common;

use common::cli::{train, vigil};
use predicates::prelude::*;

#[test]
fn train_prints_epochs_a_metrics_table_and_the_run_id() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["train", "digits-logreg", "--epochs", "2", "--seed", "3"])
        .assert()
        .success()
        // Not a terminal: plain log lines, one per epoch, no progress bar escapes.
        .stdout(predicate::str::contains("epoch   1/2"))
        .stdout(predicate::str::contains("epoch   2/2"))
        .stdout(predicate::str::contains("macro avg"))
        .stdout(predicate::str::contains("run id: digits-logreg-"))
        .stdout(predicate::str::contains("\u{1b}[").not());
}

#[test]
fn runs_and_eval_json_have_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), "digits-logreg", "2");
    let second = train(dir.path(), "digits-logreg", "2");
    let out = vigil(dir.path()).args(["runs", "--json"]).assert().success();
    let runs: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], first.as_str(), "newest last");
    assert_eq!(runs[1]["id"], second.as_str());
    for field in ["id", "spec", "status", "epoch", "best_val_accuracy", "duration_s"] {
        assert!(runs[0].get(field).is_some(), "runs --json lacks {field}");
    }
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["epoch"], 2);

    let out = vigil(dir.path()).args(["eval", &first, "--json"]).assert().success();
    let e: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let acc = e["accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "{acc}");
    assert!(e["macro_f1"].as_f64().is_some());
    assert_eq!(e["per_class"].as_array().unwrap().len(), 10);
    let cm = e["confusion_matrix"].as_array().unwrap();
    assert_eq!(cm.len(), 10);
    let total: u64 = cm.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 359);
    // eval reproduces the test metrics stored at the end of training.
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(&first).join("eval.json")).unwrap())
            .unwrap();
    assert_eq!(stored["confusion_matrix"], e["confusion_matrix"]);

    // The table form and a unique suffix of the id.
    let suffix = &first[first.len() - 6..];
    vigil(dir.path()).args(["eval", suffix]).assert().success().stdout(predicate::str::contains("accuracy"));
    vigil(dir.path()).args(["runs"]).assert().success().stdout(predicate::str::contains(first.as_str()));
}

#[test]
fn models_lists_builtin_and_local_specs() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .arg("models")
        .assert()
        .success()
        .stdout(predicate::str::contains("digits-mlp"))
        .stdout(predicate::str::contains("waves-lstm"))
        .stdout(predicate::str::contains("topics-text"));
}

#[test]
fn a_malformed_spec_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["train", "tests/fixtures/bad-specs/wrong-type.ron"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tests/fixtures/bad-specs/wrong-type.ron:5:24: in field `lr`"));
    // Nothing was created for a spec that never parsed.
    assert!(std::fs::read_dir(dir.path()).map(|d| d.count() == 0).unwrap_or(true));
}

#[test]
fn a_missing_data_file_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("csv.ron");
    std::fs::write(
        &spec,
        "(name: \"mine\", data: (source: Csv(path: \"/no/such/file.csv\", label: \"y\")), \
         model: LogReg, optimizer: Sgd(lr: 0.1), batch: Mini(8), epochs: 1)",
    )
    .unwrap();
    vigil(&dir.path().join("runs"))
        .args(["train", spec.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/no/such/file.csv: cannot read the data file"));
}

#[test]
fn a_malformed_data_file_exits_2_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "x,y\n1,a\n2,b\nthree,a\n").unwrap();
    let spec = dir.path().join("csv.ron");
    std::fs::write(
        &spec,
        format!(
            "(name: \"mine\", data: (source: Csv(path: {:?}, label: \"y\")), model: LogReg, \
             optimizer: Sgd(lr: 0.1), batch: Mini(8), epochs: 1)",
            csv.display().to_string()
        ),
    )
    .unwrap();
    vigil(&dir.path().join("runs"))
        .args(["train", spec.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("d.csv: line 4, column \"x\": \"three\" is not a number"));
}

#[test]
fn a_diverging_run_exits_2_with_the_reason_and_shows_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("hot.ron");
    std::fs::write(
        &spec,
        "(name: \"hot\", data: (source: Digits), preprocess: [MinMax(Global)], model: LogReg, \
         optimizer: Sgd(lr: 0.1), schedule: Step(every: 1, gamma: 1e38), batch: Mini(64), epochs: 4)",
    )
    .unwrap();
    let runs = dir.path().join("runs");
    vigil(&runs)
        .args(["train", spec.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the training loss "))
        .stderr(predicate::str::contains("Lower the learning rate"));
    let out = vigil(&runs).args(["runs", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v[0]["status"], "failed");
    assert!(v[0]["failure"].as_str().unwrap().contains("learning rate"));
}

#[test]
fn unknown_runs_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["eval", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run \"nope\""));
    vigil(dir.path())
        .args(["train", "no-such-spec"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("known specs"));
    vigil(dir.path()).args(["train", "digits-mlp", "--epochs", "0"]).assert().code(2);
    vigil(dir.path()).args(["train", "digits-mlp", "--lr", "-1"]).assert().code(2);
    vigil(dir.path()).args(["eval"]).assert().code(2);
}

#[test]
fn resume_continues_a_cancelled_run_and_refuses_a_completed_one() {
    let dir = tempfile::tempdir().unwrap();
    let id = train(dir.path(), "digits-logreg", "2");
    vigil(dir.path())
        .args(["train", "--resume", &id])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has completed"));
    // Make it look interrupted after epoch 2 of 4: a killed trainer leaves status running.
    let info_path = dir.path().join(&id).join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    info["status"] = "running".into();
    info["epochs"] = 4.into();
    info["pid"] = 999_999_999u32.into();
    std::fs::write(&info_path, info.to_string()).unwrap();
    let spec_path = dir.path().join(&id).join("spec.ron");
    let spec = std::fs::read_to_string(&spec_path).unwrap().replace("epochs: 2,", "epochs: 4,");
    std::fs::write(&spec_path, spec).unwrap();
    let out = vigil(dir.path()).args(["runs", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v[0]["status"], "interrupted");
    vigil(dir.path())
        .args(["train", "--resume", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("resuming"))
        .stdout(predicate::str::contains("epoch   3/4"))
        .stdout(predicate::str::contains("epoch   1/4").not());
}

#[test]
fn sys_json_has_one_entry_per_core_and_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(dir.path()).args(["sys", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(v["cpus"].as_array().unwrap().len(), cores);
    assert!(v["memory"]["total"].as_u64().unwrap() > 0);
    assert!(v["swap"].is_object());
    assert!(v["gpus"].is_array(), "an array, empty without a GPU");
    assert!(v["processes"].is_array());
    if v["gpus"].as_array().unwrap().is_empty() {
        let note = v["gpu_note"].as_str().unwrap();
        assert!(note.ends_with("GPU readings off") || note.contains("NVML"), "{note}");
    }
}

#[test]
fn sys_follow_prints_one_line_per_sample_and_refuses_bad_periods() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        vigil(dir.path()).args(["sys", "--follow", "--count", "2", "--every", "0.2"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("cpu ")).count(), 2, "{text}");
    vigil(dir.path())
        .args(["sys", "--follow", "--every", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not between 0.2 and 3600 seconds"));
}

#[test]
fn privacy_accountant_prints_opacus_figures_and_refuses_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args([
            "privacy",
            "epsilon",
            "--sigma",
            "1.5",
            "--sample-rate",
            "0.04",
            "--steps",
            "2250",
            "--delta",
            "1e-5",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ε = 7.329 "));
    vigil(dir.path())
        .args([
            "privacy",
            "sigma",
            "--epsilon",
            "8",
            "--sample-rate",
            "0.04",
            "--epochs",
            "90",
            "--delta",
            "1e-5",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("σ = 1.4160 "));
    vigil(dir.path())
        .args(["privacy", "epsilon", "--sigma", "0", "--sample-rate", "0.04", "--steps", "10"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--sigma 0 must be positive"));
    vigil(dir.path())
        .args(["privacy", "sigma", "--epsilon", "1", "--sample-rate", "1.5", "--epochs", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--sample-rate 1.5 must be in (0, 1]"));
}
