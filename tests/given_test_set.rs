//! A data source with a separate test (and validation) source, as MNIST's train/t10k pairs or
//! a given `train.csv` + `test.csv`: the test split is exactly the examples given.

mod common;

use std::path::Path;

use common::cli::vigil;
use predicates::prelude::*;
use vigil::error::Error;
use vigil::ml::data::Features;
use vigil::ml::data::preprocess::PreparedData;
use vigil::ml::spec::ExperimentSpec;

/// `n` rows of two features and a class, the first feature numbering the rows from `start` so
/// that every example can be told apart.
fn rows(start: usize, n: usize, classes: &[&str]) -> String {
    let mut text = String::from("id,x,y\n");
    for i in start..start + n {
        text.push_str(&format!("{i},{},{}\n", (i % 5) as f32 * 0.5, classes[i % classes.len()]));
    }
    text
}

fn spec(dir: &Path, extra: &str) -> ExperimentSpec {
    let text = format!(
        "(name: \"given\", data: (source: Csv(path: \"train.csv\", label: \"y\"){extra}), model: LogReg, \
         optimizer: Sgd(lr: 0.1), batch: Full, epochs: 2)"
    );
    let path = dir.join("given.ron");
    std::fs::write(&path, text).unwrap();
    ExperimentSpec::load(&path).unwrap()
}

fn ids(f: &Features) -> Vec<f32> {
    let Features::Dense { values, .. } = f else { panic!("numeric") };
    values.chunks(2).map(|r| r[0]).collect()
}

#[test]
fn the_test_split_is_exactly_the_given_test_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), rows(0, 100, &["a", "b"])).unwrap();
    std::fs::write(dir.path().join("test.csv"), rows(1000, 17, &["b", "a"])).unwrap();
    let data = PreparedData::build(&spec(dir.path(), ", test: Csv(path: \"test.csv\", label: \"y\")"), None)
        .unwrap();
    // The given rows, in their order, and none of the training file's.
    assert_eq!(ids(&data.test.features), (1000..1017).map(|i| i as f32).collect::<Vec<_>>());
    // Labels by class name: test.csv's first row is "b", class 1 of the training data's [a, b].
    assert_eq!(data.test.labels[..3], [1, 0, 1]);
    // All of train.csv trains or validates (15% by default), none of it tests.
    assert_eq!(data.train.labels.len() + data.validation.labels.len(), 100);
    assert!(ids(&data.validation.features).iter().chain(&ids(&data.train.features)).all(|&i| i < 100.0));

    // With a validation file too, train.csv only trains.
    std::fs::write(dir.path().join("valid.csv"), rows(500, 9, &["a", "b"])).unwrap();
    let both = spec(
        dir.path(),
        ", validation: Csv(path: \"valid.csv\", label: \"y\"), test: Csv(path: \"test.csv\", label: \"y\")",
    );
    let data = PreparedData::build(&both, None).unwrap();
    assert_eq!(data.train.labels.len(), 100);
    assert_eq!(ids(&data.validation.features), (500..509).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(data.test.labels.len(), 17);
}

#[test]
fn a_test_file_with_a_class_the_training_data_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), rows(0, 40, &["a", "b"])).unwrap();
    std::fs::write(dir.path().join("test.csv"), rows(0, 9, &["a", "c"])).unwrap();
    let err =
        PreparedData::build(&spec(dir.path(), ", test: Csv(path: \"test.csv\", label: \"y\")"), None).err();
    let Some(Error::Data { path, msg }) = err else { panic!("expected a data error, got {err:?}") };
    assert_eq!(path, dir.path().join("test.csv"));
    assert!(msg.starts_with("class \"c\" does not occur in the training data"), "{msg}");
}

#[test]
fn a_run_with_a_given_test_file_is_evaluated_on_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), rows(0, 100, &["a", "b"])).unwrap();
    std::fs::write(dir.path().join("test.csv"), rows(1000, 17, &["b", "a"])).unwrap();
    spec(dir.path(), ", test: Csv(path: \"test.csv\", label: \"y\")");
    let runs = dir.path().join("runs");
    let out = vigil(&runs)
        .arg("train")
        .arg(dir.path().join("given.ron"))
        .arg("-q")
        .assert()
        .success()
        .stdout(predicate::str::contains("test split (17 examples)"));
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(&run).join("splits.json")).unwrap()).unwrap();
    // Both files recorded with their hashes; the test indices are the appended test rows.
    assert_eq!(splits["sources"].as_array().unwrap().len(), 2);
    let test: Vec<u64> = splits["test"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(test, (100..117).collect::<Vec<u64>>());
}
