//! End to end: the real binary in a detached tmux session at 80x24 on a temporary run store,
//! driven with keys and read back with capture-pane, as an operator would use it. Needs tmux
//! (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`; panics with the screen when it does not in time.
    fn wait_for(&self, text: &str, secs: u64) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("waited {secs}s for {text:?}; the screen shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen no longer shows `text`. Keys sent right after `Escape` can reach
    /// the console in the same read as it, and an escape followed by `2` is Alt+2: a test (or
    /// a user) must see the overlay close before typing on.
    fn wait_gone(&self, text: &str, secs: u64) {
        let start = Instant::now();
        while self.screen().contains(text) {
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("waited {secs}s for {text:?} to go; the screen shows:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", &self.session])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn console_drives_a_run_from_the_keyboard_at_80x24() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "this test needs tmux (apt-get install -y tmux); .ci/run installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    // The default experiment, made long enough to pause and resume while it trains.
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let spec = std::fs::read_to_string("models/digits-mlp.ron")
        .unwrap()
        .replace("epochs: 40,", "epochs: 20000,")
        .replace("early_stopping: (monitor: ValLoss, patience: 10),", "");
    std::fs::write(models.join("digits-mlp.ron"), spec).unwrap();
    let runs = dir.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_vigil");
    let t = Tmux { socket: format!("vigil-e2e-{}", std::process::id()), session: "console".into() };
    let cmd = format!(
        "cd {} && {bin} --runs-dir {} --models-dir {}; echo VIGIL-EXITED $?; sleep 30",
        Path::new(".").canonicalize().unwrap().display(),
        runs.display(),
        models.display()
    );
    let status = Command::new("tmux")
        .args(["-L", &t.socket, "new-session", "-d", "-s", &t.session, "-x", "80", "-y", "24"])
        .arg(cmd)
        .env("TERM", "xterm-256color")
        .status()
        .unwrap();
    assert!(status.success());

    // An empty store starts the default experiment, and its progress shows.
    let s = t.wait_for("Active runs (1)", 30);
    assert!(s.contains("digits-mlp-"), "{s}");
    t.wait_for(" training", 30);
    t.wait_for("ETA", 30);

    // Help overlay, generated from the keymap.
    t.keys(&["?"]);
    let s = t.wait_for("Keys · ", 5);
    assert!(s.contains("Show or hide this help"), "{s}");
    // Page down until the run keys show: the list grows as features land.
    let mut s = t.screen();
    for _ in 0..5 {
        if s.contains("Pause or resume the selected run") {
            break;
        }
        t.keys(&["PageDown"]);
        std::thread::sleep(Duration::from_millis(300));
        s = t.screen();
    }
    let s = t.wait_for("Pause or resume the selected run", 5);
    assert!(s.contains("Filter runs") || s.contains("Command line"), "{s}");
    t.keys(&["Escape"]);
    t.wait_gone("Keys · ", 5);

    // Runs view and the filter.
    t.keys(&["2"]);
    t.wait_for("Runs (1)", 5);
    t.keys(&["/", "m", "l", "p", "Enter"]);
    t.wait_for("filter: mlp", 5);
    t.keys(&["Escape"]);
    t.wait_gone("filter: mlp", 5);
    t.keys(&["/", "c", "n", "n", "Enter"]);
    t.wait_for("no run matches the filter", 5);
    t.keys(&["Escape"]);
    t.wait_for("Runs (1)", 5);

    // Pause, then resume.
    t.keys(&["p"]);
    t.wait_for("paused", 10);
    t.wait_for("1 paused", 10);
    t.keys(&["p"]);
    t.wait_for("1 training", 10);

    // The detail view and its evaluation tab while training.
    t.keys(&["Enter"]);
    t.wait_for("Curves", 5);
    t.keys(&["Tab"]);
    t.wait_for("the test evaluation appears when training ends", 5);

    // Quit asks first while a run trains; yes stops it (checkpoint kept) and exits.
    t.keys(&["q"]);
    t.wait_for("Quit?", 5);
    t.keys(&["y"]);
    let s = t.wait_for("VIGIL-EXITED 0", 30);
    assert!(!s.contains("panicked"), "{s}");

    let out = Command::new(bin).arg("--runs-dir").arg(&runs).args(["runs", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "cancelled", "{v}");
    assert!(v[0]["epoch"].as_u64().unwrap() >= 1, "{v}");
    assert!(t.alive());
}
