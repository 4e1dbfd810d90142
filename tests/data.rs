//! The loaders for data users bring (CSV, MNIST IDX, TSV), the split and preprocessing: good
//! files load, and each kind of bad file is refused with its path and first bad row.

use std::io::Write;
use std::path::{Path, PathBuf};

use vigil::error::Error;
use vigil::ml::data::preprocess::PreparedData;
use vigil::ml::data::{self, InputShape, RawInputs, loaders};
use vigil::ml::spec::{DataSource, ExperimentSpec, Split};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn data_error(result: Result<data::Dataset, Error>) -> (PathBuf, String) {
    match result {
        Err(Error::Data { path, msg }) => (path, msg),
        Err(other) => panic!("expected a data error, got {other}"),
        Ok(_) => panic!("a bad file was accepted"),
    }
}

#[test]
fn embedded_digits_are_the_uci_set() {
    let ds = loaders::digits().unwrap();
    assert_eq!(ds.len(), 1797);
    assert_eq!(ds.classes.len(), 10);
    let RawInputs::Dense { values, shape } = &ds.inputs else { panic!("numeric") };
    assert_eq!(shape, &InputShape::Image { channels: 1, height: 8, width: 8 });
    assert!(values.iter().all(|v| (0.0..=16.0).contains(v)));
    // First image of scikit-learn's load_digits() is a 0: its row 1 is [0, 0, 5, 13, 9, 1, 0, 0].
    assert_eq!(&values[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
    assert_eq!(ds.labels[0], 0);
}

#[test]
fn csv_loads_with_the_named_label_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "iris.csv", b"a,b,species\n1.0,2,setosa\n3,4.5,virginica\n5,6,setosa\n");
    let ds = loaders::csv(&p, "species", None).unwrap();
    assert_eq!(ds.classes, vec!["setosa", "virginica"]);
    assert_eq!(ds.labels, vec![0, 1, 0]);
    let RawInputs::Dense { values, shape } = ds.inputs else { panic!() };
    assert_eq!(shape, InputShape::Tabular { features: 2 });
    assert_eq!(values, vec![1.0, 2.0, 3.0, 4.5, 5.0, 6.0]);
}

#[test]
fn csv_numeric_labels_sort_as_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "n.csv", b"x,y\n1,10\n2,9\n3,2\n");
    let ds = loaders::csv(&p, "y", None).unwrap();
    assert_eq!(ds.classes, vec!["2", "9", "10"]);
}

#[test]
fn csv_reads_blank_and_na_cells_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.csv", b"x,z,y\n1,,a\nNA,2,b\n3,4,a\n");
    let ds = loaders::csv(&p, "y", None).unwrap();
    let RawInputs::Dense { values, .. } = ds.inputs else { panic!() };
    assert!(values[1].is_nan() && values[2].is_nan());
}

#[test]
fn csv_non_numeric_cell_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.csv", b"x,z,y\n1,2,a\n3,oops,b\n");
    let (path, msg) = data_error(loaders::csv(&p, "y", None));
    assert_eq!(path, p);
    assert_eq!(msg, "line 3, column \"z\": \"oops\" is not a number");
}

#[test]
fn csv_missing_label_column_names_the_closest_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.csv", b"x,z,y\n1,2,a\n");
    let (_, msg) = data_error(loaders::csv(&p, "label", None));
    assert_eq!(
        msg,
        "line 1: no column named \"label\" for the label; of its 3 columns the closest are: \"x\", \"z\", \"y\""
    );
}

#[test]
fn csv_ragged_row_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.csv", b"x,z,y\n1,2,a\n3,b\n");
    let (_, msg) = data_error(loaders::csv(&p, "y", None));
    assert!(msg.starts_with("line 3:"), "{msg}");
}

#[test]
fn csv_with_one_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "one.csv", b"x,y\n1,a\n2,a\n");
    let (_, msg) = data_error(loaders::csv(&p, "y", None));
    assert!(msg.contains("at least two classes"), "{msg}");
}

#[test]
fn a_missing_file_names_the_file() {
    let err = loaders::csv(Path::new("/nonexistent/data.csv"), "y", None).err().unwrap();
    assert!(err.to_string().starts_with("/nonexistent/data.csv:"), "{err}");
}

fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend((0..n * h * w).map(|i| (i % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

#[test]
fn idx_loads_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = write(dir.path(), "train-images-idx3-ubyte", &idx_images(3, 4, 5));
    let labs = write(dir.path(), "train-labels-idx1-ubyte", &idx_labels(&[7, 1, 7]));
    let ds = loaders::idx(&imgs, &labs, None).unwrap();
    assert_eq!(ds.classes, vec!["1", "7"]);
    assert_eq!(ds.labels, vec![1, 0, 1]);
    let RawInputs::Dense { values, shape } = &ds.inputs else { panic!() };
    assert_eq!(shape, &InputShape::Image { channels: 1, height: 4, width: 5 });
    assert_eq!(values.len(), 60);
    assert_eq!(values[59], 59.0);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx_images(3, 4, 5)).unwrap();
    let imgs_gz = write(dir.path(), "train-images-idx3-ubyte.gz", &gz.finish().unwrap());
    let again = loaders::idx(&imgs_gz, &labs, Some(2)).unwrap();
    assert_eq!(again.len(), 2);
}

#[test]
fn idx_bad_magic_and_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let labs = write(dir.path(), "l", &idx_labels(&[1, 2, 3]));
    let mut wrong_type = idx_images(3, 2, 2);
    wrong_type[2] = 0x0D;
    let p = write(dir.path(), "float", &wrong_type);
    assert!(data_error(loaders::idx(&p, &labs, None)).1.contains("0x0d"));
    let mut truncated = idx_images(3, 2, 2);
    truncated.pop();
    let p = write(dir.path(), "short", &truncated);
    assert!(data_error(loaders::idx(&p, &labs, None)).1.contains("size mismatch"));
    let p = write(dir.path(), "text", b"hello world, not idx");
    assert!(data_error(loaders::idx(&p, &labs, None)).1.contains("not an IDX file"));
    let imgs = write(dir.path(), "i", &idx_images(2, 2, 2));
    let (path, msg) = data_error(loaders::idx(&imgs, &labs, None));
    assert_eq!(path, labs);
    assert!(msg.contains("3 labels for 2 images"), "{msg}");
}

#[test]
fn tsv_loads_and_names_a_line_without_a_tab() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "t.tsv", b"# comment\npos\tgreat film\n\nneg\tawful\n");
    let ds = loaders::tsv(&p).unwrap();
    assert_eq!(ds.len(), 2);
    let bad = write(dir.path(), "bad.tsv", b"pos\tgreat\nneg awful\n");
    assert_eq!(data_error(loaders::tsv(&bad)).1, "line 2: expected `label<TAB>text`, found no tab");
    let empty = write(dir.path(), "e.tsv", b"pos\t  \n");
    assert!(data_error(loaders::tsv(&empty)).1.contains("line 1"));
    let binary = write(dir.path(), "b.tsv", &[0xff, 0xfe, 0x00, 0x09]);
    assert!(data_error(loaders::tsv(&binary)).1.contains("UTF-8"));
}

#[test]
fn split_is_seeded_stratified_and_disjoint() {
    let labels: Vec<u32> = (0..1000).map(|i| (i % 4) as u32).collect();
    let s = Split { validation: 0.15, test: 0.2, seed: None };
    let a = data::split(&labels, 4, &s, 9);
    assert_eq!(a, data::split(&labels, 4, &s, 9));
    // 250 per class: round(37.5) = 38 validation and 50 test examples each.
    assert_ne!(a, data::split(&labels, 4, &s, 10));
    assert_eq!((a.train.len(), a.validation.len(), a.test.len()), (648, 152, 200));
    let mut all: Vec<usize> = a.train.iter().chain(&a.validation).chain(&a.test).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    for c in 0..4u32 {
        assert_eq!(a.test.iter().filter(|&&i| labels[i] == c).count(), 50);
    }
}

fn csv_spec(path: &Path, preprocess: &str) -> ExperimentSpec {
    let text = format!(
        "(name: \"t\", data: (source: Csv(path: {:?}, label: \"y\"), split: (validation: 0.2, test: 0.2)), \
         preprocess: [{preprocess}], model: LogReg, optimizer: Sgd(lr: 0.1), batch: Mini(4), epochs: 1)",
        path.display().to_string()
    );
    ExperimentSpec::parse(&text, Path::new("inline.ron")).unwrap()
}

fn missing_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("a,b,y\n");
    for i in 0..40 {
        let a = if i % 10 == 3 { String::new() } else { format!("{}", i % 7) };
        text.push_str(&format!("{a},{},{}\n", i % 5, if i % 2 == 0 { "even" } else { "odd" }));
    }
    write(dir, "missing.csv", text.as_bytes())
}

#[test]
fn drop_missing_reports_how_many_rows_went() {
    let dir = tempfile::tempdir().unwrap();
    let p = missing_csv(dir.path());
    let data = PreparedData::build(&csv_spec(&p, "DropMissing, Standardize(PerFeature)"), None).unwrap();
    assert_eq!(data.report.dropped_missing, 4);
    assert_eq!(data.report.train + data.report.validation + data.report.test, 36);
}

#[test]
fn impute_reports_how_many_values_were_filled() {
    let dir = tempfile::tempdir().unwrap();
    let p = missing_csv(dir.path());
    let data = PreparedData::build(&csv_spec(&p, "Impute(Median), MinMax(PerFeature)"), None).unwrap();
    assert_eq!(data.report.imputed_values, 4);
    assert_eq!(data.report.dropped_missing, 0);
}

#[test]
fn missing_values_without_a_rule_are_refused_with_the_first_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = missing_csv(dir.path());
    let err = PreparedData::build(&csv_spec(&p, "Standardize(PerFeature)"), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("4 examples have missing values") && msg.contains("example 4 at feature 1"),
        "{msg}"
    );
    assert!(msg.contains("DropMissing"), "{msg}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn scaling_is_fitted_on_the_training_split_only() {
    let spec: ExperimentSpec = vigil::ml::spec::resolve("digits-mlp", Path::new("models")).unwrap().0;
    let data = PreparedData::build(&spec, None).unwrap();
    // Global min-max fitted on training pixels: training data spans exactly [0, 1].
    let vigil::ml::data::Features::Dense { values, .. } = &data.train.features else { panic!() };
    let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(data.pipeline.transform(&[16.0; 64]).unwrap(), vec![1.0; 64]);
    let _ = DataSource::Digits;
}
