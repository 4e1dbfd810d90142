//! `vigil bench` as a script reads it: one JSON object per reference model, with its rate, the
//! matrix-product work of a step and, with `--peak`, the machine's matrix-product peak.

use assert_cmd::Command;

#[test]
fn bench_json_reports_rates_flops_and_the_peak() {
    let out = Command::cargo_bin("vigil")
        .unwrap()
        .args(["bench", "--json", "--repeats", "1", "--peak"])
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON on stdout");
    let rows = rows.as_array().expect("an array of models");
    assert_eq!(rows.len(), 2);
    // Work per step, counted by hand (see `bench::step_flops`): MLP 784-256-128-10 at batch 128,
    // 2·128·(784·256 + 256·128 + 128·10) forward and again for the weight gradients, plus
    // 2·128·(256·128 + 128·10) for the hidden layers' input gradients; the CNN's two convolutions
    // and its dense layer likewise (the first convolution needs no input gradient).
    let expected = [128_909_312.0, 381_739_008.0];
    for (row, flops) in rows.iter().zip(expected) {
        let get = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
        assert_eq!(get("flops_per_step"), flops, "{row}");
        let rate = get("samples_per_sec_median");
        assert!(rate > 0.0);
        // GFLOP/s is the step's work at the median rate.
        let want = flops * rate / get("batch") / 1e9;
        assert!((get("gflops") - want).abs() < 1e-6 * want, "{row}");
        assert!(get("matmul_peak_gflops") > 0.0, "{row}");
    }
}

#[test]
fn bench_refuses_a_repeat_count_that_is_not_a_number() {
    Command::cargo_bin("vigil")
        .unwrap()
        .args(["bench", "--repeats", "many"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("invalid value 'many' for '--repeats"));
}
