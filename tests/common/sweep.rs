//! Sweep helpers shared by the local and the Slurm sweep tests: the state file, killing a
//! driver with SIGKILL and resuming it, and the check that every trial ran exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cli::json;

/// The sweep's state file, once it exists.
pub fn state_of(runs: &Path) -> Option<serde_json::Value> {
    let dir = std::fs::read_dir(runs.join("sweeps")).ok()?.flatten().next()?.path();
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).ok()?).ok()
}

/// Kills the driver with SIGKILL once `ready` holds for its state, then resumes with --json
/// (through `vigil`, which the caller may have given a cluster's environment).
pub fn kill_and_resume(
    runs: &Path,
    mut driver: std::process::Child,
    ready: impl Fn(&serde_json::Value) -> bool,
    mut vigil: assert_cmd::Command,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if state_of(runs).is_some_and(|s| ready(&s)) {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep never got going: {:?}", state_of(runs));
        assert!(driver.try_wait().unwrap().is_none(), "the driver ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    driver.kill().unwrap(); // SIGKILL: no handler runs, the state is what was last written.
    driver.wait().unwrap();
    let state = state_of(runs).unwrap();
    assert!(!state["finished"].as_bool().unwrap());
    json(vigil.args(["sweep", "--resume", "latest", "--json"]))
}

/// Every trial ran once: numbers 0..n, one run folder each, none left active, all in the store.
pub fn assert_each_trial_once(runs: &Path, out: &serde_json::Value, n: usize) {
    let trials = out["trials"].as_array().unwrap();
    assert_eq!(trials.len(), n, "{out:#}");
    let numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..n as u64).collect::<Vec<_>>());
    let mut ids: Vec<&str> = trials.iter().map(|t| t["run"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a trial was repeated under another run");
    let folders =
        std::fs::read_dir(runs).unwrap().flatten().filter(|e| e.path().join("run.json").exists()).count();
    assert_eq!(folders, n, "one run per trial in the store, no more");
    for t in trials {
        let status = t["status"].as_str().unwrap();
        assert!(!["planned", "pending", "running"].contains(&status), "{t}");
        let member: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(runs.join(t["run"].as_str().unwrap()).join("sweep.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(member["trial"], t["number"], "the run says which trial it is");
        assert_eq!(member["params"], t["params"]);
    }
    assert!(out["finished"].as_bool().unwrap());
}
