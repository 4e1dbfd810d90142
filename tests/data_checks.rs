//! Checks of a user's data at the edges of a run: a bad file leaves no run behind, and
//! `--seed` changes the training, not the test split.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn vigil(runs: &Path) -> Command {
    let mut c = Command::cargo_bin("vigil").unwrap();
    c.arg("--runs-dir").arg(runs);
    c.env_remove("VIGIL_RUNS_DIR").env_remove("VIGIL_KEY");
    c
}

#[test]
fn a_data_error_leaves_no_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
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
