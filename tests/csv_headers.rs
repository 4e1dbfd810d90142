//! CSV files as users bring them: with a header, without one (detected, or said with
//! `header: false`), with scikit-learn's count line instead of column names, and with a label
//! column that is not there. Each case with the message it must print.

mod common;

use std::path::{Path, PathBuf};

use common::cli::vigil;
use predicates::prelude::*;
use vigil::error::Error;
use vigil::ml::data::{Dataset, loaders};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn message(result: Result<Dataset, Error>) -> String {
    match result {
        Err(Error::Data { msg, .. }) => msg,
        Err(other) => panic!("expected a data error, got {other}"),
        Ok(_) => panic!("a bad file was accepted"),
    }
}

/// 12 rows of two features and a class name, no header.
fn rows() -> String {
    (0..12)
        .map(|i| format!("{}.5,{},{}\n", i, i % 3, if i % 2 == 0 { "malignant" } else { "benign" }))
        .collect()
}

#[test]
fn a_first_line_like_the_others_is_read_as_data_and_the_origin_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "plain.csv", &rows());
    let ds = loaders::csv(&p, "2", None).unwrap();
    assert_eq!(ds.len(), 12, "no example lost to a header that was not there");
    assert!(ds.origin.ends_with("(no header: line 1 is an example, not column names)"), "{}", ds.origin);
    // Class names from the data are the labels.
    assert_eq!(ds.classes, vec!["benign", "malignant"]);
    assert_eq!(ds.labels[0], 1);
}

#[test]
fn header_false_reads_line_1_as_data_without_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "plain.csv", &rows());
    let ds = loaders::csv(&p, "2", Some(false)).unwrap();
    assert_eq!(ds.len(), 12);
    assert!(!ds.origin.contains("no header"), "said only when guessed: {}", ds.origin);
    let msg = message(loaders::csv(&p, "class", Some(false)));
    assert_eq!(msg, "no header (header: false), so the label is a column's position: 0 to 2, not \"class\"");
}

#[test]
fn a_label_named_in_a_file_without_a_header_says_how_to_choose_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "plain.csv", &rows());
    let msg = message(loaders::csv(&p, "class", None));
    assert_eq!(
        msg,
        "no header (line 1 is not column names but an example), so the label is a column's position: 0 \
         to 2, not \"class\" (or set `header: true` if line 1 names the columns)"
    );
}

#[test]
fn scikit_learns_count_line_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // As sklearn/datasets/data/breast_cancer.csv opens: examples, features, class names.
    let text = format!("12,2,malignant,benign\n{}", rows().replace("malignant", "0").replace("benign", "1"));
    let p = write(dir.path(), "breast_cancer.csv", &text);
    let msg = message(loaders::csv(&p, "target", None));
    assert_eq!(
        msg,
        "line 1 is not column names: it is scikit-learn's count line (12 examples, 2 features, classes \
         malignant, benign). Replace it with a line naming the 3 columns (e.g. `f0,...,f1,target`); to keep \
         the class names, write them in the label column instead of their numbers"
    );
    // Even when the spec says there is a header.
    assert!(message(loaders::csv(&p, "target", Some(true))).starts_with("line 1 is not column names"));
}

#[test]
fn a_wrong_label_on_a_785_column_file_names_the_closest_few() {
    let dir = tempfile::tempdir().unwrap();
    let header: Vec<String> =
        std::iter::once("label".to_string()).chain((0..784).map(|i| format!("pixel{i}"))).collect();
    let row: Vec<String> = (0..785).map(|i| (i % 2).to_string()).collect();
    let text = format!("{}\n{}\n", header.join(","), row.join(","));
    let p = write(dir.path(), "mnist.csv", &text);
    let msg = message(loaders::csv(&p, "lable", None));
    assert_eq!(
        msg,
        "line 1: no column named \"lable\" for the label; of its 785 columns the closest are: \"label\", \
         \"pixel0\", \"pixel1\", \"pixel2\", \"pixel3\""
    );
}

#[test]
fn a_data_source_with_unnamed_fields_is_told_the_accepted_form() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "plain.csv", &rows());
    let spec = write(
        dir.path(),
        "positional.ron",
        "(name: \"p\", data: (source: Csv(\"plain.csv\", \"2\")), model: LogReg, optimizer: Sgd(lr: 0.1), \
         batch: Full, epochs: 1)",
    );
    vigil(&dir.path().join("runs")).arg("train").arg(&spec).assert().code(2).stderr(
        predicate::str::contains(
            "a data source names its fields: `Csv(path: \"data.csv\", label: \"class\")`",
        ),
    );
}

#[test]
fn training_on_a_file_without_a_header_says_which_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let text: String =
        (0..60).map(|i| format!("{}.5,{},{}\n", i % 7, i % 3, if i % 2 == 0 { "a" } else { "b" })).collect();
    write(dir.path(), "plain.csv", &text);
    let spec = write(
        dir.path(),
        "plain.ron",
        "(name: \"plain\", data: (source: Csv(path: \"plain.csv\", label: \"2\")), model: LogReg, \
         optimizer: Sgd(lr: 0.1), batch: Full, epochs: 1)",
    );
    vigil(&dir.path().join("runs")).arg("train").arg(&spec).assert().success().stdout(
        predicate::str::contains("plain.csv (no header: line 1 is an example, not column names) (38 train"),
    );
}

#[test]
fn a_bare_batch_size_is_told_the_accepted_forms_not_a_raw_identifier() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "plain.csv", &rows());
    let spec = write(
        dir.path(),
        "b.ron",
        "(name: \"p\", data: (source: Csv(path: \"plain.csv\", label: \"2\")), model: LogReg, \
         optimizer: Sgd(lr: 0.1), batch: 32, epochs: 1)",
    );
    vigil(&dir.path().join("runs"))
        .arg("train")
        .arg(&spec)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "found the number 32 where a name is expected (`batch` is `Full`, `Mini(32)` for mini-batches of \
             32, or `Stochastic`)",
        ))
        .stderr(predicate::str::contains("r#32").not())
        .stderr(predicate::str::contains("a data source names its fields").not());
}
