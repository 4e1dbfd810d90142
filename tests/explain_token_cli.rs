//! `vigil explain-token` as a user runs it, on the scripted stand-in (`scripted:`): the JSON and
//! the table, and each kind of bad input with exit 2 and what is wrong. Also `vigil --llm` with
//! a file that is not there. (That the attribution is right is tested in `llm::attribution`
//! with a model whose probabilities depend on one prompt token.)

mod common;

use common::cli::vigil;
use predicates::prelude::*;

#[test]
fn explains_a_token_as_json_and_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let v = common::cli::json(vigil(dir.path()).args([
        "explain-token",
        "scripted:",
        "--prompt",
        "hi",
        "--token",
        "2",
        "--json",
    ]));
    assert_eq!(v["position"], 2);
    assert_eq!(v["text"], "e");
    assert_eq!(v["completion"], "The");
    assert_eq!(v["prefix"], 1);
    assert_eq!(v["forward_passes"], 3);
    let prompt = v["prompt"].as_array().unwrap();
    assert_eq!(prompt.iter().map(|p| p["text"].as_str().unwrap()).collect::<Vec<_>>(), ["", "h", "i"]);
    // The stand-in's probabilities ignore the prompt: nothing to attribute.
    assert!(prompt.iter().all(|p| p["attribution"] == 0.0));
    assert!(v["note"].as_str().unwrap().contains("gradient methods are not available"));
    vigil(dir.path())
        .args(["explain-token", "scripted:", "--prompt", "hi", "--token", "0", "--chat"])
        .assert()
        .success()
        .stdout(predicate::str::contains("token 0 \"T\""))
        .stdout(predicate::str::contains("occlusion"))
        .stdout(predicate::str::contains("\"<\""));
}

/// `--chat-template` formats the `--chat` prompt that is explained, as `generate`'s does: the
/// explained prompt is the template's text, and `none` is the text alone.
#[test]
fn explains_the_prompt_in_the_chat_template_the_operator_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = |extra: &[&str]| -> String {
        let v = common::cli::json(
            vigil(dir.path())
                .args(["explain-token", "scripted:", "--prompt", "hi", "--token", "0", "--json"])
                .args(extra),
        );
        v["prompt"].as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap()).collect()
    };
    assert_eq!(prompt(&["--chat"]), "<user>hi\n<assistant>", "the model's own format");
    assert_eq!(
        prompt(&["--chat", "--chat-template", "chatml"]),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(prompt(&["--chat", "--chat-template", "none"]), "hi");
}

#[test]
fn bad_input_exits_2_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let missing = missing.to_str().unwrap();
    for (args, says) in [
        (vec!["explain-token", missing, "--prompt", "hi", "--token", "0"], "nope.gguf"),
        (
            vec!["explain-token", "scripted:eos_after=3", "--prompt", "hi", "--token", "7"],
            "ended after 3 tokens",
        ),
        (vec!["explain-token", "scripted:", "--prompt", "", "--token", "0"], "the prompt is empty"),
        (vec!["explain-token", "scripted:context=4", "--prompt", "hello", "--token", "0"], "context holds 4"),
        (vec!["explain-token", "scripted:speed=3", "--prompt", "hi", "--token", "0"], "speed"),
        (vec!["explain-token", "scripted:", "--prompt", "hi", "--token", "-1"], "-1"),
        (
            vec![
                "explain-token",
                "scripted:",
                "--prompt",
                "hi",
                "--token",
                "0",
                "--chat",
                "--chat-template",
                "alpaca",
            ],
            "expected one of gemma",
        ),
        (vec!["--llm", missing], "--llm"),
    ] {
        vigil(dir.path()).args(&args).assert().code(2).stderr(predicate::str::contains(says));
    }
}
