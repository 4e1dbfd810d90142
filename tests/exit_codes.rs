//! Exit codes chosen by the error's kind: 2 for the user's input only (a bad spec, an unknown
//! run), 1 for what the machine or the network refused (a port already bound, no terminal, a
//! service that does not answer). Every command runs under a timeout, so none can hang.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

const LIMIT: Duration = Duration::from_secs(120);

fn vigil(runs: &Path) -> Command {
    let mut c = Command::cargo_bin("vigil").unwrap();
    c.arg("--runs-dir").arg(runs).timeout(LIMIT);
    c.env_remove("VIGIL_RUNS_DIR").env_remove("VIGIL_KEY").env_remove("VIGIL_THEME");
    c
}

#[test]
fn a_port_already_bound_exits_1_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(dir.path()).args(["train", "digits-logreg", "--epochs", "1", "-q"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let run =
        text.lines().find_map(|l| l.strip_prefix("run id: ")).expect("train prints the run id").to_string();
    // Held for the whole test: the service must fail to bind it, not wait for it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    vigil(dir.path())
        .args(["serve", &run, "--addr", &addr])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("cannot listen on {addr}")))
        .stderr(predicate::str::contains("in use"));
}

#[test]
fn a_console_without_a_terminal_exits_1_with_the_reason() {
    // assert_cmd gives the child pipes, not a terminal, for stdin and stdout.
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .write_stdin("")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot start the console"))
        .stderr(predicate::str::contains("needs a terminal"));
}

#[test]
fn a_service_that_does_not_answer_exits_1() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["traffic", "--addr", &addr, "--key", "vk_none", "--duration", "1s"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot reach the service"));
}

#[test]
fn a_bad_spec_still_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["train", "tests/fixtures/bad-specs/wrong-type.ron"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tests/fixtures/bad-specs/wrong-type.ron:5:24: in field `lr`"));
}

#[test]
fn an_unknown_run_id_still_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    vigil(dir.path())
        .args(["eval", "no-such-run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run \"no-such-run\""));
}

#[test]
fn an_unknown_run_is_a_typed_input_error() {
    use vigil::error::{Error, InputError};
    let dir = tempfile::tempdir().unwrap();
    match vigil::store::RunStore::new(dir.path()).resolve("nope") {
        Err(Error::Input(InputError::UnknownRun { query, store })) => {
            assert_eq!((query.as_str(), store.as_path()), ("nope", dir.path()));
        }
        Err(other) => panic!("expected an unknown run, got {other:?}"),
        Ok(_) => panic!("an empty store has no run \"nope\""),
    }
}
