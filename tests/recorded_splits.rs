//! A run fixes its splits when it trains: `eval`, `explain` and `attack` use exactly those,
//! from any directory, and refuse a data file that changed since (unless `--split-from-file`).

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

/// The shared harness, run from `/` so that nothing depends on the current directory.
fn vigil(runs: &Path) -> Command {
    let mut c = common::cli::vigil(runs);
    c.current_dir("/");
    c
}

/// 150 rows of three noisy classes (overlapping, so that the test accuracy is not 100% and a
/// different split would show), from a fixed generator.
fn data_file(dir: &Path) -> PathBuf {
    let mut state: u64 = 7;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let mut text = String::from("a,b,c,class\n");
    for i in 0..150 {
        let c = i % 3;
        let v: Vec<String> =
            (0..3).map(|j| format!("{:.3}", (c * (j + 1)) as f64 * 0.4 + 2.0 * uniform())).collect();
        text.push_str(&format!("{},k{c}\n", v.join(",")));
    }
    let p = dir.join("blobs.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn a_shuffled_data_file_is_refused_and_the_recorded_splits_reproduce_the_test_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let data = data_file(dir.path());
    let spec = dir.path().join("blobs.ron");
    std::fs::write(
        &spec,
        "(name: \"blobs\", data: (source: Csv(path: \"blobs.csv\", label: \"class\")), \
         preprocess: [Standardize(PerFeature)], model: LogReg, optimizer: Sgd(lr: 0.1), batch: Mini(16), epochs: 5)",
    )
    .unwrap();
    let out = vigil(&runs).arg("train").arg(&spec).arg("-q").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let trained: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(&run).join("eval.json")).unwrap()).unwrap();
    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(&run).join("splits.json")).unwrap()).unwrap();
    assert_eq!(splits["sources"][0]["path"], data.display().to_string(), "recorded absolute");
    assert_eq!(splits["test"].as_array().unwrap().len(), 30);

    // From another directory (`/`), with the recorded splits: the training-time numbers exactly.
    let again = json(vigil(&runs).args(["eval", &run, "--json"]));
    assert_eq!(again["accuracy"], trained["accuracy"]);
    assert_eq!(again["confusion_matrix"], trained["confusion_matrix"]);

    // Shuffle the rows (keeping the header): every command that splits refuses, with the reason.
    let original = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<&str> = original.lines().collect();
    let body = &mut lines[1..];
    body.reverse();
    body.swap(3, 70);
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let reason = format!("changed since run {run} trained on it");
    for args in
        [vec!["eval", &run], vec!["explain", &run, "--sample", "0"], vec!["attack", &run, "--eps", "0.1"]]
    {
        vigil(&runs)
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(data.display().to_string()))
            .stderr(predicate::str::contains(&reason))
            .stderr(predicate::str::contains("--split-from-file"));
    }
    // A deliberate re-split is allowed, and says so.
    vigil(&runs)
        .args(["eval", &run, "--split-from-file"])
        .assert()
        .success()
        .stderr(predicate::str::contains("not the run's recorded splits"));

    std::fs::write(&data, &original).unwrap();
    let restored = json(vigil(&runs).args(["eval", &run, "--json"]));
    assert_eq!(restored["accuracy"], trained["accuracy"]);
}
