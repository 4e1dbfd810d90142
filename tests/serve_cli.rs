//! `vigil keys`, `vigil serve`, `vigil traffic` and `vigil audit verify` as an operator runs
//! them: what they print, the files they leave, exit codes, and every kind of bad input.

mod common;

use common::cli::{serve, train, vigil};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use predicates::prelude::*;

fn create_key(runs: &Path, name: &str, extra: &[&str]) -> String {
    let out = vigil(runs).args(["keys", "create", "--name", name]).args(extra).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap().trim().to_string()
}

#[test]
fn keys_are_printed_once_and_stored_as_hashes_in_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(dir.path())
        .args(["keys", "create", "--name", "alice", "--scope", "predict,admin", "--expires", "30d"])
        .args(["--budget", "1000/day", "--output", "top-k:3"])
        .assert()
        .success()
        .stderr(predicate::str::contains("store it now"))
        .stderr(predicate::str::contains("scopes predict,admin"));
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {stdout:?}");
    let key = lines[0];
    assert!(key.starts_with("vigil_") && key.len() == 6 + 64, "{key}");
    assert!(key[6..].chars().all(|c| c.is_ascii_hexdigit()));

    let path = dir.path().join("keys.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&key[6..]), "the key file holds the key");
    assert!(text.contains("sha256:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let list = vigil(dir.path()).args(["keys", "list"]).assert().success();
    let shown = String::from_utf8(list.get_output().stdout.clone()).unwrap();
    assert!(shown.contains("alice") && shown.contains("active") && shown.contains("1000/day (0)"), "{shown}");
    assert!(!shown.contains(&key[6..16]), "keys list shows a key");

    vigil(dir.path())
        .args(["keys", "revoke", "alice"])
        .assert()
        .success()
        .stdout(predicate::str::contains("revoked key \"alice\""));
    vigil(dir.path())
        .args(["keys", "revoke", "alice"])
        .assert()
        .success()
        .stdout(predicate::str::contains("already revoked"));
    let json = vigil(dir.path()).args(["keys", "list", "--json"]).assert().success();
    let rows: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    assert_eq!(rows[0]["status"], "revoked");
    assert_eq!(rows[0]["output"], "top-k:3");
    assert!(rows[0]["revoked"].is_string() && rows[0]["expires"].is_string());
    assert!(rows[0].get("hash").is_none() && rows[0].get("key").is_none());
}

#[test]
fn bad_key_commands_exit_2_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    create_key(dir.path(), "bob", &["--scope", "predict"]);
    let cases: &[(&[&str], &str)] = &[
        (&["keys", "create", "--name", "bob", "--scope", "predict"], "already exists"),
        (&["keys", "create", "--name", "x", "--scope", "root"], "unknown scope"),
        (&["keys", "create", "--name", "bad name", "--scope", "predict"], "must be 1 to 64 letters"),
        (&["keys", "create", "--name", "x", "--scope", "predict", "--expires", "10x"], "unknown unit"),
        (&["keys", "create", "--name", "x", "--scope", "predict", "--budget", "lots"], "10000/day"),
        (
            &["keys", "create", "--name", "x", "--scope", "predict", "--output", "all"],
            "unknown output policy",
        ),
        (&["keys", "create", "--name", "x", "--scope", "predict", "--rate", "0"], "at least 1"),
        (&["keys", "create", "--name", "x"], "--scope"),
        (&["keys", "revoke", "nobody"], "no key named"),
    ];
    for (args, msg) in cases {
        vigil(dir.path()).args(*args).assert().code(2).stderr(predicate::str::contains(*msg));
    }
    // A damaged key file is named, not overwritten.
    std::fs::write(dir.path().join("keys.json"), "{ not json").unwrap();
    vigil(dir.path())
        .args(["keys", "create", "--name", "y", "--scope", "predict"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("keys.json: line 1"));
    assert_eq!(std::fs::read_to_string(dir.path().join("keys.json")).unwrap(), "{ not json");
}

#[test]
fn serve_refuses_what_it_cannot_serve_safely() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    vigil(dir.path()).args(["serve"]).assert().code(2).stderr(predicate::str::contains("RUN"));
    vigil(dir.path())
        .args(["serve", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run \"nope\""));
    vigil(dir.path())
        .args(["serve", &run, "--addr", "0.0.0.0:0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("refusing to serve on 0.0.0.0:0 without TLS"));
    vigil(dir.path())
        .args(["serve", &run, "--tls-cert", "c.pem"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tls-key"));
    vigil(dir.path())
        .args(["serve", &run, "--max-body", "1 parsec"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown unit"));
    let ckpt = dir.path().join(&run).join("checkpoints/best.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&ckpt, bytes).unwrap();
    vigil(dir.path())
        .args(["serve", &run, "--addr", "127.0.0.1:0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("best.safetensors"))
        .stderr(predicate::str::contains("does not match the run's manifest"));
}

fn http(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_served_session_traffic_shutdown_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    let key = create_key(dir.path(), "client", &["--scope", "predict"]);
    let mut served = serve(dir.path(), &run);
    let health = http(&served.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200") && health.contains("x-request-id"), "{health}");
    let refused = http(&served.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let out = vigil(dir.path())
        .args(["traffic", "--addr", &served.addr, "--key", &key, "--rate", "30", "--duration", "1s"])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(text.contains("inputs from variations of the test split of run"), "{text}");
    assert!(text.contains("latency ms: p50"), "{text}");
    assert!(text.contains("labels agreeing with the test split"), "{text}");
    let sent: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    vigil(dir.path())
        .args(["traffic", "--addr", &served.addr, "--key", "vigil_wrong", "--duration", "1s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("401"));

    // Ctrl-C: in-flight requests finish and every line is written before the process ends.
    let pid = served.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    served.stdout.read_to_string(&mut rest).unwrap();
    // healthz, the refused request, traffic's GET /v1/models and its predictions, the bad key.
    let requests = 2 + 1 + sent + 1;
    assert!(rest.contains(&format!("stopped; {requests} requests logged")), "{rest}");

    let log = dir.path().join("access.jsonl");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count() as u64, requests);
    vigil(dir.path()).args(["audit", "verify"]).assert().success().stdout(predicate::str::contains(format!(
        "intact: {requests} lines in 1 file (seq 1 to {requests})"
    )));

    // Tampering, each kind on its own copy: the first bad line is named, exit 1.
    let original: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    let write = |lines: &[String]| {
        std::fs::write(&log, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap()
    };
    let mut edited = original.clone();
    edited[3] = edited[3].replace("\"status\":200", "\"status\":500");
    write(&edited);
    vigil(dir.path())
        .args(["audit", "verify"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("access.jsonl: line 4 (seq 4) was changed"));
    let mut removed = original.clone();
    removed.remove(2);
    write(&removed);
    vigil(dir.path())
        .args(["audit", "verify"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("line 3 (seq 4) follows a gap: seq 3 is missing"));
    let mut reordered = original.clone();
    reordered.swap(4, 5);
    write(&reordered);
    vigil(dir.path())
        .args(["audit", "verify", log.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("line 5 (seq 6) is out of order"));
    vigil(dir.path())
        .args(["audit", "verify", "--json"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\"kind\": \"reordered\""));
    vigil(dir.path())
        .args(["audit", "verify", "no-such-file.jsonl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a file"));
}
