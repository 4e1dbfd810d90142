//! A trainer killed in the middle of a checkpoint save resumes, and ends exactly where an
//! uninterrupted run ends. `VIGIL_CRASH_AT=POINT:N` makes `vigil train` abort (no destructor, no
//! flush: what `kill -9` leaves) the N-th time a save reaches POINT: after its files are staged
//! and before the manifest commits them, after the commit and before any file is moved into
//! place, and after the first file is moved (issue 19: `last.safetensors` newer than
//! `manifest.json` used to fail the resume's SHA check).

mod common;

use std::path::Path;

use common::cli::vigil;

/// The one run folder in a store.
fn only_run(runs: &Path) -> String {
    let ids: Vec<String> = std::fs::read_dir(runs)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

/// The run's epoch lines and test accuracy, which a resume must reproduce exactly.
fn outcome(runs: &Path, id: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let metrics = std::fs::read_to_string(runs.join(id).join("metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("val_loss").is_some())
        .map(|mut v| {
            // Wall time differs between two runs of the same training.
            v.as_object_mut().unwrap().remove("time");
            v
        })
        .collect();
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(id).join("eval.json")).unwrap()).unwrap();
    (epochs, eval["accuracy"].clone())
}

#[test]
fn a_crash_anywhere_in_a_checkpoint_save_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    vigil(&reference).args(["train", "digits-logreg", "--epochs", "3", "-q"]).assert().success();
    let want = outcome(&reference, &only_run(&reference));
    assert_eq!(want.0.len(), 3, "three epoch lines: {:?}", want.0);

    for point in ["staged", "committed", "promoting"] {
        let runs = dir.path().join(point);
        // The third save: epoch 1 saves best and last, so this is epoch 2's first save.
        let out = vigil(&runs)
            .env("VIGIL_CRASH_AT", format!("{point}:3"))
            .args(["train", "digits-logreg", "--epochs", "3", "-q"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the crash hook did not fire");
        assert!(String::from_utf8_lossy(&out.stderr).contains("aborting in the middle of a checkpoint save"));
        let id = only_run(&runs);
        let pending = std::fs::read_dir(runs.join(&id).join("checkpoints"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".pending"));
        assert!(pending, "{point}: the crash left no save half done, so it tests nothing");

        let resumed = vigil(&runs).args(["train", "--resume", &id, "-q"]).assert().success();
        let stdout = String::from_utf8_lossy(&resumed.get_output().stdout).into_owned();
        assert_eq!(outcome(&runs, &id), want, "{point}: the resumed run differs\n{stdout}");
        let events = std::fs::read_to_string(runs.join(&id).join("events.jsonl")).unwrap();
        let said = if point == "staged" {
            "threw away the unfinished checkpoint save"
        } else {
            "finished the checkpoint save"
        };
        assert!(events.contains(said), "{point}: {events}");
        // Both checkpoints are what the manifest vouches for, and no staged file is left.
        let run = vigil::store::RunStore::new(&runs).dir(&id);
        for kind in [vigil::store::CheckpointKind::Best, vigil::store::CheckpointKind::Last] {
            run.checkpoint_bytes(kind).unwrap_or_else(|e| panic!("{point}: {kind}: {e}"));
        }
        let left = std::fs::read_dir(runs.join(&id).join("checkpoints"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pending"))
            .count();
        assert_eq!(left, 0, "{point}: staged files left behind");
    }
}
