//! `vigil sweep` as a user runs it, on this machine: each kind of bad sweep file or setting is a
//! clear error with exit 2 and leaves nothing behind (an unknown parameter path, an empty domain,
//! a domain of the wrong type, `--on slurm` without sbatch, an sbatch that refuses the job, a
//! runs folder of this machine only for a cluster of other machines), and a
//! sweep whose driver is killed with SIGKILL is finished by `--resume` without losing or repeating
//! a trial. The Slurm cluster tests are in `sweep_slurm.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::cli::vigil;
use common::sweep::{assert_each_trial_once, kill_and_resume};

/// A tiny sweep over digits-mlp (2-3 epochs per trial) with the given parameters and extras.
fn sweep_file(dir: &Path, parameters: &str, extra: &str) -> PathBuf {
    let path = dir.join("tiny.sweep.ron");
    let text = format!(
        "(\n    spec: \"digits-mlp\",\n    fixed: {{ \"epochs\": 3, \"early_stopping\": None }},\n    parameters: {{ {parameters} }},\n    \
         method: Random(seed: 3),\n    objective: (metric: ValAccuracy),\n    trials: 4,\n    jobs: 2,\n{extra})\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str =
    "\"optimizer.lr\": LogUniform(low: 0.001, high: 0.01), \"model.hidden\": List([[32], [64]])";

/// What a refused sweep must leave: no run folder, no sweep folder.
fn assert_nothing_left(runs: &Path) {
    let left: Vec<String> = std::fs::read_dir(runs)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let sweeps: Vec<String> = std::fs::read_dir(runs.join("sweeps"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| n == "sweeps" || n == "slurm"), "runs left behind: {left:?}");
    assert!(sweeps.is_empty(), "sweeps left behind: {sweeps:?}");
}

fn refused(runs: &Path, args: &[&str], path_env: Option<&Path>) -> String {
    let mut cmd = vigil(runs);
    cmd.arg("sweep").args(args);
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let out = cmd.assert().code(2);
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

#[test]
fn an_unknown_parameter_path_is_named_with_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let f = sweep_file(dir.path(), "\"optimizer.learning_rate\": LogUniform(low: 0.001, high: 0.01)", "");
    let err = refused(&runs, &[f.to_str().unwrap()], None);
    assert!(err.contains("`optimizer.learning_rate` is not a field of spec \"digits-mlp\""), "{err}");
    assert!(
        err.contains("valid paths:") && err.contains("optimizer.lr") && err.contains("model.hidden"),
        "{err}"
    );
    assert_nothing_left(&runs);
}

#[test]
fn an_empty_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    for (domain, says) in [
        ("List([])", "the List is empty"),
        ("Range(low: 0.5, high: 0.1)", "is not at most high"),
        ("LogUniform(low: 0.0, high: 0.1)", "needs low > 0"),
    ] {
        let f = sweep_file(dir.path(), &format!("\"model.dropout\": {domain}"), "");
        let err = refused(&runs, &[f.to_str().unwrap()], None);
        assert!(
            err.contains("parameter `model.dropout`: empty domain") && err.contains(says),
            "{domain}: {err}"
        );
    }
    assert_nothing_left(&runs);
}

#[test]
fn a_domain_of_the_wrong_type_names_the_field_and_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Hidden layers are a list of sizes; a real-number range cannot fill them, nor text epochs.
    let f = sweep_file(dir.path(), "\"model.hidden\": Range(low: 16.0, high: 64.0)", "");
    let err = refused(&runs, &[f.to_str().unwrap()], None);
    assert!(err.contains("parameter `model.hidden`: a Range domain of the wrong type"), "{err}");
    assert!(err.contains("the spec has [256, 128]") && err.contains("invalid type"), "{err}");
    let f = sweep_file(dir.path(), "\"epochs\": List([\"three\"])", "");
    let err = refused(&runs, &[f.to_str().unwrap()], None);
    assert!(err.contains("a List domain of the wrong type") && err.contains("`epochs` = three"), "{err}");
    assert_nothing_left(&runs);
}

#[test]
fn slurm_without_sbatch_on_the_path_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let empty = dir.path().join("bin");
    std::fs::create_dir_all(&empty).unwrap();
    let f = sweep_file(dir.path(), GOOD, "");
    let err = refused(&runs, &[f.to_str().unwrap(), "--on", "slurm"], Some(&empty));
    assert!(err.contains("--on slurm needs `sbatch` on the PATH"), "{err}");
    // `vigil train --on slurm` refuses the same way, without creating its run.
    let out =
        vigil(&runs).env("PATH", &empty).args(["train", "digits-mlp", "--on", "slurm"]).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("needs `sbatch` on the PATH"), "{err}");
    assert_nothing_left(&runs);
}

#[cfg(unix)]
fn fake_bin(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
#[test]
fn an_sbatch_that_refuses_the_job_is_shown_and_nothing_half_submitted_stays() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_bin(
        &bin,
        "sbatch",
        "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\nexit 1",
    );
    fake_bin(&bin, "squeue", "exit 0");
    fake_bin(&bin, "scancel", "exit 0");
    // A cluster of this one machine: its local runs folder passes the shared-folder check.
    fake_bin(&bin, "sinfo", "echo 'localhost|localhost|127.0.0.1'");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    for array in [false, true] {
        let f = sweep_file(dir.path(), GOOD, "");
        let mut args = vec![f.to_str().unwrap(), "--on", "slurm", "--partition", "nosuch"];
        if array {
            args.push("--array");
        }
        let err = refused(&runs, &args, Some(Path::new(&path)));
        assert!(err.contains("sbatch refused the job"), "{err}");
        assert!(err.contains("Invalid partition name specified"), "sbatch's own message: {err}");
        assert_nothing_left(&runs);
    }
    let out = vigil(&runs).env("PATH", &path).args(["train", "digits-mlp", "--on", "slurm"]).assert().code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("Invalid partition name specified"));
    assert_nothing_left(&runs);
}

#[cfg(unix)]
#[test]
fn a_local_runs_folder_is_refused_for_other_nodes_unless_declared_shared() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    if let Some(vigil::sweep::shared::Filesystem::Shared(fs)) =
        vigil::sweep::shared::filesystem_of(dir.path())
    {
        eprintln!("skipped: the temporary folder is on {fs}, which nodes may share");
        return;
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A cluster of two other machines, and an sbatch that refuses every job: reaching sbatch
    // shows the check passed.
    fake_bin(&bin, "sinfo", "echo 'gpu01|gpu01.cluster|10.1.0.1'\necho 'gpu02|gpu02.cluster|10.1.0.2'");
    fake_bin(&bin, "sbatch", "echo 'sbatch: error: reached' >&2\nexit 1");
    fake_bin(&bin, "squeue", "exit 0");
    fake_bin(&bin, "scancel", "exit 0");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let f = sweep_file(dir.path(), GOOD, "");
    let err = refused(&runs, &[f.to_str().unwrap(), "--on", "slurm"], Some(Path::new(&path)));
    assert!(err.contains("which only this machine sees"), "{err}");
    assert!(err.contains("the cluster's nodes (gpu01, gpu02) are not all this machine"), "{err}");
    assert!(err.contains("--shared-runs-dir"), "says what to do: {err}");
    assert!(!err.contains("reached"), "nothing was submitted: {err}");
    assert_nothing_left(&runs);
    let out = vigil(&runs).env("PATH", &path).args(["train", "digits-mlp", "--on", "slurm"]).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("which only this machine sees") && !err.contains("reached"), "{err}");
    assert_nothing_left(&runs);
    // Declared shared: the check steps aside and sbatch is asked.
    let err =
        refused(&runs, &[f.to_str().unwrap(), "--on", "slurm", "--shared-runs-dir"], Some(Path::new(&path)));
    assert!(err.contains("sbatch refused the job") && err.contains("reached"), "{err}");
    let out = vigil(&runs)
        .env("PATH", &path)
        .args(["train", "digits-mlp", "--on", "slurm", "--shared-runs-dir"])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("reached"));
    assert_nothing_left(&runs);
    // A cluster whose nodes are all this machine needs no flag.
    fake_bin(&bin, "sinfo", "echo 'localhost|localhost|127.0.0.1'");
    let err = refused(&runs, &[f.to_str().unwrap(), "--on", "slurm"], Some(Path::new(&path)));
    assert!(err.contains("reached"), "{err}");
    assert_nothing_left(&runs);
}

#[test]
fn a_killed_local_driver_is_resumed_without_losing_or_repeating_a_trial() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // ASHA at epoch 1 as well, so that pruning survives the resume too.
    let f = sweep_file(dir.path(), GOOD, "    early_stopping: (rungs: [1], reduction: 2),\n");
    let driver = std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"))
        .arg("--runs-dir")
        .arg(&runs)
        .args(["sweep", f.to_str().unwrap(), "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while trials are out: at least one submitted, not all done.
    let out = kill_and_resume(
        &runs,
        driver,
        |s| s["trials"].as_array().is_some_and(|t| t.iter().any(|t| t["status"] != "planned")),
        vigil(&runs),
    );
    assert_each_trial_once(&runs, &out, 4);
    let best = &out["best"];
    assert!(best["objective"].as_f64().unwrap() > 0.5, "{best}");
    assert_eq!(out["objective"]["metric"], "val_accuracy");
    assert_eq!(out["backend"], "local");
}
