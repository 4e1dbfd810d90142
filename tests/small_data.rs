//! A data set of the user's own, as small as scikit-learn's iris (150 rows), taken end to end
//! with the default split: train, serve (its input detector works, or the service says why it
//! has none), attack and explain.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::{serve, vigil};

/// 150 rows, 3 classes of 50, 4 features: Gaussian clusters about iris's class means, from a
/// fixed linear congruential generator so that the file is the same on every machine.
fn iris_like(dir: &Path) -> PathBuf {
    let means = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]];
    let names = ["setosa", "versicolor", "virginica"];
    let mut state: u64 = 12345;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width,species\n");
    for i in 0..150 {
        let c = i % 3;
        let row: Vec<String> = means[c]
            .iter()
            .map(|m| {
                // Sum of uniforms: roughly normal, standard deviation about 0.3.
                let z: f64 = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
                format!("{:.2}", m + 0.3 * z)
            })
            .collect();
        text.push_str(&format!("{},{}\n", row.join(","), names[c]));
    }
    let path = dir.join("iris.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn iris_spec(dir: &Path) -> PathBuf {
    iris_like(dir);
    let spec = dir.join("iris.ron");
    std::fs::write(
        &spec,
        r#"(
    name: "iris",
    data: (source: Csv(path: "iris.csv", label: "species")),
    preprocess: [Standardize(PerFeature)],
    model: Mlp(hidden: [16], activation: Relu),
    optimizer: Adam(lr: 0.02),
    batch: Mini(16),
    epochs: 30,
)"#,
    )
    .unwrap();
    spec
}

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn train(runs: &Path, spec: &Path) -> String {
    // From the spec's folder: the spec names its data file relative to it.
    let out =
        vigil(runs).current_dir(spec.parent().unwrap()).arg("train").arg(spec).arg("-q").assert().success();
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("run id: "))
        .expect("train prints the run id")
        .to_string()
}

fn predict(addr: &str, key: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn create_key(runs: &Path, name: &str, extra: &[&str]) -> String {
    let out = vigil(runs)
        .args(["keys", "create", "--name", name, "--scope", "predict"])
        .args(extra)
        .assert()
        .success();
    stdout(&out).trim().to_string()
}

#[test]
fn an_iris_sized_csv_trains_serves_attacks_and_explains_at_the_default_split() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let spec = iris_spec(dir.path());
    let run = train(&runs, &spec);

    // The detector is usable: its threshold is a number, and it says what it is calibrated to.
    let det: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(&run).join("detector.json")).unwrap())
            .unwrap();
    let threshold = det["threshold"].as_f64().expect("the threshold is a number, not null");
    assert!(threshold.is_finite(), "{det}");
    let bound = det["fpr_bound"].as_f64().expect("a small validation split states its bound");
    // 150 rows at the default 15% validation: 24 examples, so no rate under 1/25 can be promised.
    let n = det["validation_examples"].as_u64().unwrap();
    assert_eq!(n, 24, "{det}");
    assert!((bound - 1.0 / (n + 1) as f64).abs() < 1e-9, "{det}");

    let served = serve(&runs, &run);
    let plain = create_key(&runs, "plain", &[]);
    let strict = create_key(&runs, "strict", &["--reject-ood"]);
    let iris = r#"{"inputs": [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]}"#;
    let answer = predict(&served.addr, &plain, iris);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("setosa") && answer.contains("virginica"), "{answer}");
    let answer = predict(&served.addr, &strict, iris);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Far from every class: flagged, so the strict key is refused with the index.
    let odd = r#"{"inputs": [[5.0, 3.4, 1.5, 0.2], [12.0, -5.0, 12.0, -5.0]]}"#;
    let answer = predict(&served.addr, &strict, odd);
    assert!(answer.starts_with("HTTP/1.1 422") && answer.contains("inputs[1]"), "{answer}");
    drop(served);

    let out = vigil(&runs).args(["attack", &run, "--method", "fgsm", "--eps", "0,0.1"]).assert().success();
    assert!(stdout(&out).contains("flagged"), "{}", stdout(&out));
    let out = vigil(&runs).args(["explain", &run, "--sample", "3"]).assert().success();
    assert!(stdout(&out).contains("predicted ") && stdout(&out).contains("completeness"), "{}", stdout(&out));
}

#[test]
fn a_run_without_a_detector_serves_without_ood_flags_and_refuses_reject_ood_keys_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let spec = iris_spec(dir.path());
    let run = train(&runs, &spec);
    // As a run from before detectors, or one whose detector could not be fitted: no file.
    std::fs::remove_file(runs.join(&run).join("detector.json")).unwrap();
    let served = serve(&runs, &run);
    let plain = create_key(&runs, "plain", &[]);
    let strict = create_key(&runs, "strict", &["--reject-ood"]);
    let odd = r#"{"inputs": [[12.0, -5.0, 12.0, -5.0]]}"#;
    let answer = predict(&served.addr, &plain, odd);
    assert!(answer.starts_with("HTTP/1.1 200") && !answer.contains("ood"), "{answer}");
    let answer = predict(&served.addr, &strict, odd);
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains("has no input detector"), "{answer}");
}
