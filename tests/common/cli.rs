//! The binary as a user runs it: one `vigil` command on a throwaway run store, `train` that
//! returns the new run's id, and `json` for a `--json` command's output. Every CLI test file
//! uses these instead of its own copy.

use std::path::Path;

use assert_cmd::Command;

/// `vigil --runs-dir RUNS`, with none of the environment's Vigil settings leaking in (a test
/// that wants one sets it again on the returned command).
pub fn vigil(runs: &Path) -> Command {
    let mut c = Command::cargo_bin("vigil").unwrap();
    c.arg("--runs-dir").arg(runs);
    for v in ["VIGIL_RUNS_DIR", "VIGIL_KEY", "VIGIL_SEAL_KEY", "VIGIL_SEAL_PASSPHRASE", "VIGIL_SEAL_KEY_FILE"]
    {
        c.env_remove(v);
    }
    c
}

/// `vigil train SPEC --epochs EPOCHS -q`; the id of the run it made.
pub fn train(runs: &Path, spec: &str, epochs: &str) -> String {
    let out = vigil(runs).args(["train", spec, "--epochs", epochs, "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    text.lines().find_map(|l| l.strip_prefix("run id: ")).expect("train prints the run id").to_string()
}

/// Runs a command that must succeed and print one JSON value.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("stdout is one JSON value")
}
