//! The command line's answers to bad input and to interruptions, as a user meets them: a file
//! that is not there, a value out of range, an option without the one it needs, a learning rate
//! below zero, a runs folder that does not exist (all exit 2, naming what is wrong); a run that
//! is stopped (exit 130) or killed and resumed (both in its log); traffic the service refuses.

mod common;

use std::time::{Duration, Instant};

use common::cli::{train, vigil};
use predicates::prelude::*;

/// Every command here runs under this limit, so that none can hang the suite.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn missing_files_given_to_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    let missing = dir.path().join("nope");
    let missing = missing.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--keymap", missing],
        vec!["verify", &run, "--public-key", missing],
        vec!["serve", &run, "--require-signed", "--trusted-key", missing],
        vec!["explain", &run, "--sample", "0", "--bench", "--reference", missing],
    ];
    for args in cases {
        let flag = args[args.iter().position(|a| *a == missing).unwrap() - 1].to_string();
        vigil(dir.path())
            .timeout(LIMIT)
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(flag.as_str()))
            .stderr(predicate::str::contains("no such file"));
    }
    // --png writes a file: its folder must exist.
    vigil(dir.path())
        .timeout(LIMIT)
        .args(["explain", &run, "--sample", "0", "--png", &format!("{missing}/x.png")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--png"))
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn values_clap_cannot_judge_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--repeats", "0"], "at least 1"),
        (&["bench", "--ui", "--repeats", "0"], "at least 1"),
        (&["sys", "--every", "2"], "--follow"),
        (&["sys", "--count", "2"], "--follow"),
        (&["train", "digits-logreg", "--lr", "-1"], "a learning rate must be a positive number"),
        (&["train", "digits-logreg", "--lr", "0"], "a learning rate must be a positive number"),
    ];
    for (args, says) in cases {
        let out = vigil(dir.path()).timeout(LIMIT).args(*args).assert().code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("'-- -1'"), "{args:?} gets clap's tip for flags: {err}");
    }
    // Nothing was trained by the refused commands.
    assert!(!dir.path().exists() || std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn a_runs_folder_that_does_not_exist_is_an_error_only_when_named() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nowhere");
    vigil(&gone)
        .timeout(LIMIT)
        .arg("runs")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nowhere"))
        .stderr(predicate::str::contains("does not exist"));
    vigil(&gone).timeout(LIMIT).arg("runs").env("VIGIL_RUNS_DIR", &gone).assert().code(2);
    // The default folder (./runs) missing only means nothing was trained here yet.
    let mut c = assert_cmd::Command::cargo_bin("vigil").unwrap();
    c.current_dir(dir.path()).env_remove("VIGIL_RUNS_DIR").arg("runs");
    c.timeout(LIMIT).assert().success().stdout(predicate::str::contains("no runs"));
}

#[test]
fn a_diverging_run_fails_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(dir.path())
        .timeout(LIMIT)
        .args(["train", "digits-logreg", "--epochs", "3", "--lr", "1e6", "-q"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("the training loss") && err.contains("Lower the learning rate"), "{err}");
    let runs = common::cli::json(vigil(dir.path()).args(["runs", "--json"]));
    assert_eq!(runs[0]["status"], "failed", "{runs}");
}

/// The run folder of the only run in `runs`, once it exists.
fn only_run(runs: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(runs).ok()?.flatten().map(|e| e.path()).find(|p| p.join("run.json").exists())
}

/// Waits until `done` holds (or panics after the limit).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(run: &std::path::Path) -> String {
    std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default()
}

#[test]
fn a_killed_run_is_recorded_when_resumed_and_stopping_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let bin = assert_cmd::cargo::cargo_bin("vigil");
    // digits-mlp without early stopping, so that the resumed run is still training when the
    // stop request lands (with it, the run can stop early in a third of a second, and exit 0).
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits-mlp.ron")).unwrap();
    let line = "    early_stopping: (monitor: ValLoss, patience: 10),\n";
    assert!(spec.contains(line), "digits-mlp.ron's early stopping line moved: update this test");
    std::fs::write(models.join("digits-mlp.ron"), spec.replace(line, "")).unwrap();
    // Long enough that it is still training when killed: the kill lands after a checkpoint.
    let mut child = std::process::Command::new(&bin)
        .arg("--runs-dir")
        .arg(&runs)
        .arg("--models-dir")
        .arg(&models)
        .args(["train", "digits-mlp", "--epochs", "400", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a checkpoint to resume from", || {
        only_run(&runs).is_some_and(|r| r.join("checkpoints/optimizer.safetensors").exists())
    });
    child.kill().unwrap(); // SIGKILL: no status is written.
    child.wait().unwrap();
    let run = only_run(&runs).unwrap();
    let id = run.file_name().unwrap().to_str().unwrap().to_string();

    // Resumed, then stopped through the run's control file as the console's `x` does: exit 130.
    let resumed = std::process::Command::new(&bin)
        .arg("--runs-dir")
        .arg(&runs)
        .arg("--models-dir")
        .arg(&models)
        .args(["train", "--resume", &id, "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the resume to start", || events(&run).contains("\"resumed\""));
    vigil::store::RunStore::new(&runs).dir(&id).write_control(vigil::store::ControlRequest::Stop).unwrap();
    let out = resumed.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("vigil train --resume {id}")));

    let log = events(&run);
    let kinds: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k} event: {log}"));
    assert!(at("started") < at("interrupted") && at("interrupted") < at("resumed"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("cancelled"), "{kinds:?}");
    assert!(log.contains("ended without a final status") && log.contains("resumed at epoch"), "{log}");
    // A clean stop is not taken for an interruption by the next resume.
    assert_eq!(kinds.iter().filter(|k| *k == "interrupted").count(), 1);
}

#[test]
fn ctrl_c_of_train_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"))
        .arg("--runs-dir")
        .arg(&runs)
        .args(["train", "digits-mlp", "--epochs", "400", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("training to start", || only_run(&runs).is_some_and(|r| events(&r).contains("\"started\"")));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let run = only_run(&runs).unwrap();
    assert!(events(&run).contains("\"cancelled\""));
}

#[test]
fn traffic_the_service_refuses_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    let out = vigil(dir.path())
        .args(["keys", "create", "--name", "reader", "--scope", "explain"])
        .assert()
        .success();
    let key = String::from_utf8(out.get_output().stdout.clone()).unwrap().trim().to_string();
    let served = common::cli::serve(dir.path(), &run);
    let out = vigil(dir.path())
        .timeout(LIMIT)
        .args(["traffic", "--addr", &served.addr, "--key", &key, "--duration", "1s", "--rate", "20"])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("none of the") && err.contains("403"), "{err}");
}
