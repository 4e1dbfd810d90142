//! Exit codes chosen by the error's kind: 2 for the user's input only (a bad spec, an unknown
//! run), 1 for what the machine or the network refused (a port already bound, no terminal, a
//! service that does not answer). Every command runs under a timeout, so none can hang.

mod common;

use std::time::Duration;

use common::cli::{train, vigil};
use predicates::prelude::*;

/// Every command here runs under this limit, so that none can hang the suite.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_port_already_bound_exits_1_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "digits-logreg", "1");
    // Held for the whole test: the service must fail to bind it, not wait for it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    vigil(dir.path())
        .timeout(LIMIT)
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
        .timeout(LIMIT)
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
        .timeout(LIMIT)
        .args(["traffic", "--addr", &addr, "--key", "vk_none", "--duration", "1s"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot reach the service"));
}

// A bad spec (exit 2 with file:line:col) and an unknown run id (exit 2) are checked in
// tests/cli.rs: `a_malformed_spec_exits_2_naming_file_line_and_field` and
// `unknown_runs_and_bad_arguments_exit_2`.

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
