//! The binary as a user runs it: one `vigil` command on a throwaway run store, `train` that
//! returns the new run's id, and `json` for a `--json` command's output. Every CLI test file
//! uses these instead of its own copy.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};

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

/// `vigil serve RUN` in the background on a free port, with the address it printed; killed when
/// dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// Held open: a closed pipe would end the server at its next line of output.
    pub stdout: BufReader<ChildStdout>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vigil serve RUN --addr 127.0.0.1:0` and waits for its address; panics with the
/// server's error output when it does not start.
pub fn serve(runs: &Path, run: &str) -> Served {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"))
        .arg("--runs-dir")
        .arg(runs)
        .args(["serve", run, "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    let mut addr = None;
    for _ in 0..20 {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("serving on http://") {
            addr = Some(a.to_string());
            break;
        }
    }
    let Some(addr) = addr else {
        let mut err = String::new();
        stderr.read_to_string(&mut err).unwrap();
        panic!("serve did not start: {err}");
    };
    // Drained, so that warnings never fill the pipe and stall the server.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Served { child, addr, stdout }
}
