//! Encryption at rest and signed models, driven through the command line as an operator would:
//! sealing round-trips byte for byte, a wrong key changes nothing, a flipped byte or a
//! truncated sealed file is named, and a signature catches a changed checkpoint.

mod common;

use common::cli::{train, vigil};
use predicates::prelude::*;

const FILES: [&str; 4] = [
    "checkpoints/best.safetensors",
    "checkpoints/last.safetensors",
    "checkpoints/optimizer.safetensors",
    "preprocess.json",
];

fn snapshot(run: &std::path::Path) -> Vec<Vec<u8>> {
    FILES.iter().map(|f| std::fs::read(run.join(f)).unwrap()).collect()
}

#[test]
fn seal_and_unseal_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let id = train(&runs, "digits-logreg", "2");
    let run = runs.join(&id);
    let before = snapshot(&run);
    let key = dir.path().join("seal.key");
    vigil(&runs)
        .args(["seal", &id, "--generate-key"])
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("sealed 4 file(s)"));
    for (f, b) in FILES.iter().zip(&before) {
        let now = std::fs::read(run.join(f)).unwrap();
        assert!(now.starts_with(b"VGSEAL01"), "{f} is not sealed");
        assert!(!now.windows(16).any(|w| b.windows(16).next() == Some(w)), "{f} leaks plaintext");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Without the key: a clear error; with it: evaluation works transparently.
    vigil(&runs)
        .args(["eval", &id])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is sealed: give the key"));
    vigil(&runs).arg("--seal-key-file").arg(&key).args(["eval", &id, "--json"]).assert().success();
    // The console's listing needs no key.
    vigil(&runs).args(["runs", "--json"]).assert().success().stdout(predicate::str::contains(&id));
    vigil(&runs).arg("--seal-key-file").arg(&key).args(["unseal", &id]).assert().success();
    assert_eq!(snapshot(&run), before);
}

#[test]
fn a_wrong_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let id = train(&runs, "digits-logreg", "2");
    let key = dir.path().join("k");
    vigil(&runs).args(["seal", "--all", "--generate-key"]).arg(&key).assert().success();
    let sealed = snapshot(&runs.join(&id));
    let wrong = "ab".repeat(32);
    for args in [vec!["unseal", id.as_str()], vec!["eval", id.as_str()], vec!["seal", id.as_str()]] {
        vigil(&runs)
            .env("VIGIL_SEAL_KEY", &wrong)
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("wrong sealing key"));
    }
    assert_eq!(snapshot(&runs.join(&id)), sealed);
}

#[test]
fn a_flipped_byte_and_a_truncated_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let id = train(&runs, "digits-logreg", "2");
    let key = dir.path().join("k");
    vigil(&runs).args(["seal", &id, "--generate-key"]).arg(&key).assert().success();
    let best = runs.join(&id).join("checkpoints/best.safetensors");
    let mut bytes = std::fs::read(&best).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&best, &bytes).unwrap();
    vigil(&runs)
        .arg("--seal-key-file")
        .arg(&key)
        .args(["eval", &id])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("best.safetensors: authentication failed"));
    // Unsealing checks every file before writing any: the good ones stay sealed.
    let pre = runs.join(&id).join("preprocess.json");
    vigil(&runs).arg("--seal-key-file").arg(&key).args(["unseal", &id]).assert().failure();
    assert!(std::fs::read(&pre).unwrap().starts_with(b"VGSEAL01"));
    let truncated = std::fs::read(&pre).unwrap();
    std::fs::write(&pre, &truncated[..truncated.len() - 7]).unwrap();
    vigil(&runs)
        .arg("--seal-key-file")
        .arg(&key)
        .args(["eval", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("preprocess.json"));
}

#[test]
fn a_passphrase_seals_and_a_sealed_run_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // A run stopped after 2 of 4 epochs, sealed, then resumed with the passphrase.
    let id = train(&runs, "digits-logreg", "2");
    let info = runs.join(&id).join("run.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    v["status"] = "cancelled".into();
    std::fs::write(&info, v.to_string()).unwrap();
    let spec = runs.join(&id).join("spec.ron");
    std::fs::write(&spec, std::fs::read_to_string(&spec).unwrap().replace("epochs: 2,", "epochs: 4,"))
        .unwrap();
    vigil(&runs)
        .env("VIGIL_SEAL_PASSPHRASE", "correct horse battery staple")
        .args(["seal", &id])
        .assert()
        .success();
    vigil(&runs)
        .env("VIGIL_SEAL_PASSPHRASE", "correct horse battery staple")
        .args(["train", "--resume", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("epoch   4/4"));
    // What it wrote while training is sealed too.
    assert!(
        std::fs::read(runs.join(&id).join("checkpoints/last.safetensors")).unwrap().starts_with(b"VGSEAL01")
    );
    vigil(&runs).env("VIGIL_SEAL_PASSPHRASE", "wrong").args(["eval", &id]).assert().code(2);
}

#[test]
fn signatures_catch_a_changed_checkpoint_and_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let id = train(&runs, "digits-logreg", "2");
    vigil(&runs).args(["sign", &id]).assert().code(2).stderr(predicate::str::contains("signing-create"));
    vigil(&runs)
        .args(["keys", "signing-create"])
        .assert()
        .success()
        .stdout(predicate::str::contains("public key"));
    vigil(&runs).args(["sign", &id]).assert().success();
    vigil(&runs).args(["verify", &id]).assert().success().stdout(predicate::str::contains("signature good"));
    // Only a trusted key is accepted when one is named.
    let other = dir.path().join("other.key");
    vigil(&runs).args(["keys", "signing-create", "--file"]).arg(&other).assert().success();
    vigil(&runs)
        .args(["verify", &id, "--public-key"])
        .arg(dir.path().join("other.key.pub"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("not the trusted one"));
    let best = runs.join(&id).join("checkpoints/best.safetensors");
    let mut bytes = std::fs::read(&best).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&best, bytes).unwrap();
    vigil(&runs)
        .args(["verify", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("best.safetensors: differs from the signed manifest"));
    // Rewriting the manifest to match does not help: the signature no longer fits it.
    let manifest = runs.join(&id).join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let new_hash = vigil::store::sha256_hex(&std::fs::read(&best).unwrap());
    m["files"]["checkpoints/best.safetensors"] = new_hash.into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    vigil(&runs)
        .args(["verify", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("the signature does not match the manifest"));
}

#[test]
fn the_api_key_file_is_sealed_with_the_runs_and_stays_private() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    train(&runs, "digits-logreg", "2");
    vigil(&runs).args(["keys", "create", "--name", "alice", "--scope", "predict"]).assert().success();
    let key = dir.path().join("k");
    vigil(&runs)
        .args(["seal", "--all", "--generate-key"])
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("keys.json: sealed"));
    let file = runs.join("keys.json");
    assert!(std::fs::read(&file).unwrap().starts_with(b"VGSEAL01"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    vigil(&runs).args(["keys", "list"]).assert().code(2).stderr(predicate::str::contains("is sealed"));
    vigil(&runs)
        .arg("--seal-key-file")
        .arg(&key)
        .args(["keys", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("alice"));
    // Adding a key keeps the file sealed.
    vigil(&runs)
        .arg("--seal-key-file")
        .arg(&key)
        .args(["keys", "create", "--name", "bob", "--scope", "admin"])
        .assert()
        .success();
    assert!(std::fs::read(&file).unwrap().starts_with(b"VGSEAL01"));
}

#[test]
fn the_service_can_be_told_to_serve_only_signed_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let id = train(&runs, "digits-logreg", "2");
    let store = vigil::store::RunStore::new(&runs);
    let load = |trusted: Option<&ed25519_dalek::VerifyingKey>| {
        vigil::serve::server::load_models_checked(&store, std::slice::from_ref(&id), Some(trusted))
    };
    // Unsigned: refused, by name, before a port is opened.
    let Err(err) = load(None) else { panic!("an unsigned run is refused") };
    let err = err.to_string();
    assert!(err.contains(&id) && err.contains("not signed"), "{err}");
    vigil(&runs).args(["serve", &id, "--require-signed", "--addr", "127.0.0.1:0"]).assert().code(2).stderr(
        predicate::str::contains("refusing to serve run").and(predicate::str::contains("not signed")),
    );
    // Signed: served; without the flag an unsigned run would have been served too.
    vigil(&runs).args(["keys", "signing-create"]).assert().success();
    vigil(&runs).args(["sign", &id]).assert().success();
    assert_eq!(load(None).unwrap().len(), 1);
    // Signed by another key than the trusted one: refused.
    let other = dir.path().join("other.key");
    vigil(&runs).args(["keys", "signing-create", "--file"]).arg(&other).assert().success();
    let other_pub = vigil::store::sign::load_public(&dir.path().join("other.key.pub")).unwrap();
    let Err(err) = load(Some(&other_pub)) else { panic!("a signature by another key is refused") };
    let err = err.to_string();
    assert!(err.contains("not the trusted one"), "{err}");
    vigil(&runs)
        .args(["serve", &id, "--require-signed", "--addr", "127.0.0.1:0", "--trusted-key"])
        .arg(dir.path().join("other.key.pub"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not the trusted one"));
    // A changed file after signing: refused, naming the file.
    let spec = runs.join(&id).join("preprocess.json");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replacen('1', "2", 1)).unwrap();
    let Err(err) = load(None) else { panic!("a changed run is refused") };
    let err = err.to_string();
    assert!(err.contains("preprocess.json") && err.contains("differs from the signed manifest"), "{err}");
}
