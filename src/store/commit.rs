//! Saving a checkpoint as one step: the weights, the optimizer state, the checkpoint index (with
//! the resume state) and the manifest that vouches for them change together or not at all, even
//! when the trainer is killed (`kill -9`, out of memory) in the middle of the save.
//!
//! Each file is renamed into place whole, but a save writes several files, and a kill between
//! two renames used to leave `last.safetensors` newer than `manifest.json`, so the resume then
//! failed the SHA check (issue 19). The save now goes in three steps:
//! 1. **stage**: every file is written whole beside its place as `<file>.pending`; the files in
//!    place and the manifest are untouched, so a kill here leaves the previous checkpoint valid;
//! 2. **commit**: the manifest is rewritten with the staged files' hashes. Its rename is the
//!    commit point: from here on the new checkpoint is the one the manifest vouches for;
//! 3. **promote**: each `.pending` file is renamed over its place.
//!
//! [`RunDir::recover_checkpoint`], run by the trainer before it resumes, finishes a save cut off
//! in step 3 (a pending file whose hash the manifest lists is renamed into place) and throws away
//! one cut off before it (any other pending file). Readers never change files: one that meets a
//! checkpoint the manifest does not vouch for reads the pending file that it does (a trainer in
//! the middle of step 3). This module owns the protocol only; what goes into a checkpoint is the
//! trainer's (`ml::train`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{CheckpointIndex, Manifest, RunDir, seal, sha256_hex};
use crate::error::{Error, Result};

/// The suffix of a staged file; the manifest never lists one.
pub const PENDING: &str = ".pending";

/// The pending twin of a run's file `rel`.
pub fn pending_rel(rel: &str) -> String {
    format!("{rel}{PENDING}")
}

/// A checkpoint save in progress: files staged so far and their (plain) SHA-256.
#[must_use = "a save changes nothing until it is committed"]
pub struct CheckpointSave<'a> {
    run: &'a RunDir,
    staged: Vec<(String, String)>,
}

/// What [`RunDir::recover_checkpoint`] found after an interruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No save was cut off.
    Clean,
    /// A committed save was cut off while its files were renamed into place; these were moved.
    Completed(Vec<String>),
    /// A save was cut off before its commit; these staged files were thrown away and the
    /// previous checkpoint stands.
    Discarded(Vec<String>),
}

impl RunDir {
    /// Starts a checkpoint save; nothing changes on disk until [`CheckpointSave::commit`].
    pub fn begin_save(&self) -> CheckpointSave<'_> {
        CheckpointSave { run: self, staged: Vec::new() }
    }

    /// Finishes or throws away a checkpoint save cut off by a crash, so that the checkpoint in
    /// place is the one the manifest vouches for. Only the process that trains the run may call
    /// this (a reader would throw away the pending files of a save still being written).
    pub fn recover_checkpoint(&self) -> Result<Recovery> {
        let dir = self.file("checkpoints");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Recovery::Clean) };
        let mut pending: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(PENDING))
            .map(|n| format!("checkpoints/{n}"))
            .collect();
        if pending.is_empty() {
            return Ok(Recovery::Clean);
        }
        pending.sort();
        let manifest = self.manifest().unwrap_or_default();
        let committed = |rel: &str, staged: &str| -> bool {
            let Some(want) = manifest.files.get(rel) else { return false };
            self.plain(staged, rel).is_ok_and(|bytes| &sha256_hex(&bytes) == want)
        };
        // Committed or not is decided for the whole save: the manifest lists every staged file
        // of a committed save, and at least one of an uncommitted save under its old hash.
        let all = pending.iter().all(|p| committed(p.trim_end_matches(PENDING), p));
        for p in &pending {
            let from = self.file(p);
            if all {
                let rel = p.trim_end_matches(PENDING);
                std::fs::rename(&from, self.file(rel)).map_err(|e| Error::io(&from, e))?;
            } else {
                std::fs::remove_file(&from).map_err(|e| Error::io(&from, e))?;
            }
        }
        let names = pending.into_iter().map(|p| p.trim_end_matches(PENDING).to_string()).collect();
        Ok(if all { Recovery::Completed(names) } else { Recovery::Discarded(names) })
    }

    /// The plain bytes of the run's file `path_rel`, sealed (if it is) as the file `rel`.
    fn plain(&self, path_rel: &str, rel: &str) -> Result<Vec<u8>> {
        let path = self.file(path_rel);
        let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        seal::open_bytes(raw, &path, rel, self.key())
    }

    /// Reads the file `rel` as the manifest vouches for it: the file in place, or its pending
    /// twin while a committed save is being renamed into place by another process.
    pub(super) fn vouched_bytes(&self, rel: &str, manifest: &Manifest) -> Result<Vec<u8>> {
        let path = self.file(rel);
        let placed = self.plain(rel, rel);
        if let Ok(bytes) = &placed
            && manifest.vouch(rel, &path, bytes).is_ok()
        {
            return placed;
        }
        if let Ok(bytes) = self.plain(&pending_rel(rel), rel)
            && manifest.vouch(rel, &path, &bytes).is_ok()
        {
            return Ok(bytes);
        }
        // Neither: the error is the one about the file in place.
        let bytes = placed?;
        manifest.vouch(rel, &path, &bytes)?;
        Ok(bytes)
    }
}

impl CheckpointSave<'_> {
    /// Stages the run's file `rel` (sealed when the run is sealed and the file is sensitive).
    pub fn stage(&mut self, rel: &str, plain: &[u8]) -> Result<()> {
        let sealed = self.run.is_sealed() && seal::SENSITIVE.contains(&rel);
        seal::write(&self.run.file(&pending_rel(rel)), rel, plain, sealed, self.run.key())?;
        self.staged.retain(|(r, _)| r != rel);
        self.staged.push((rel.to_string(), sha256_hex(plain)));
        Ok(())
    }

    /// Stages `checkpoints/index.json`.
    pub fn stage_index(&mut self, index: &CheckpointIndex) -> Result<()> {
        self.stage(super::INDEX, &serde_json::to_vec_pretty(index).expect("store types always serialise"))
    }

    /// Commits the save (the manifest now vouches for the staged files) and renames the staged
    /// files into place.
    pub fn commit(self) -> Result<Manifest> {
        crash_point("staged");
        let manifest = self.run.write_manifest_with(&self.staged)?;
        crash_point("committed");
        for (i, (rel, _)) in self.staged.iter().enumerate() {
            let from = self.run.file(&pending_rel(rel));
            std::fs::rename(&from, self.run.file(rel)).map_err(|e| Error::io(&from, e))?;
            if i == 0 {
                crash_point("promoting");
            }
        }
        Ok(manifest)
    }
}

/// How many saves this process has reached each crash point in (for the test hook).
static SAVES: AtomicUsize = AtomicUsize::new(0);

/// Test hook: `VIGIL_CRASH_AT=POINT:N` aborts the process, as `kill -9` would (no destructor
/// runs, nothing is flushed), the N-th time a save reaches POINT (`staged`, `committed` or
/// `promoting`), so that tests can cut a save off exactly between two of its writes. Read only
/// while a checkpoint is saved, so it costs nothing elsewhere.
fn crash_point(point: &str) {
    let Ok(spec) = std::env::var("VIGIL_CRASH_AT") else { return };
    let Some((at, n)) = spec.split_once(':') else { return };
    if at != point {
        return;
    }
    let reached = SAVES.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse::<usize>().is_ok_and(|n| n == reached) {
        eprintln!("VIGIL_CRASH_AT={spec}: aborting in the middle of a checkpoint save");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CheckpointKind;

    fn run_with_checkpoint(dir: &std::path::Path, weights: &[u8]) -> RunDir {
        let run = crate::store::RunStore::new(dir).dir("r1");
        std::fs::create_dir_all(run.file("checkpoints")).unwrap();
        let mut save = run.begin_save();
        save.stage(CheckpointKind::Last.file(), weights).unwrap();
        save.stage_index(&CheckpointIndex::default()).unwrap();
        save.commit().unwrap();
        run
    }

    #[test]
    fn a_save_cut_off_before_its_commit_leaves_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_with_checkpoint(dir.path(), b"epoch 1");
        // The new weights staged, then the process dies before the manifest is written.
        let mut save = run.begin_save();
        save.stage(CheckpointKind::Last.file(), b"epoch 2").unwrap();
        drop(save);
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 1");
        let recovery = run.recover_checkpoint().unwrap();
        assert_eq!(recovery, Recovery::Discarded(vec![CheckpointKind::Last.file().into()]));
        assert!(!run.file(&pending_rel(CheckpointKind::Last.file())).exists());
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 1");
        assert_eq!(run.recover_checkpoint().unwrap(), Recovery::Clean);
    }

    #[test]
    fn a_save_cut_off_after_its_commit_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_with_checkpoint(dir.path(), b"epoch 1");
        // Staged and committed (the manifest lists the new hashes); the process dies before the
        // pending files are renamed: the state the old code left as "last newer than manifest",
        // the other way round.
        let mut save = run.begin_save();
        save.stage(CheckpointKind::Last.file(), b"epoch 2").unwrap();
        save.stage_index(&CheckpointIndex { entries: vec![], resume: None }).unwrap();
        run.write_manifest_with(&save.staged).unwrap();
        drop(save);
        // A reader (the console, a service) already gets the committed checkpoint.
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 2");
        let Recovery::Completed(moved) = run.recover_checkpoint().unwrap() else { panic!("not completed") };
        assert_eq!(moved.len(), 2);
        assert_eq!(std::fs::read(run.file(CheckpointKind::Last.file())).unwrap(), b"epoch 2");
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 2");
    }

    #[test]
    fn a_half_promoted_save_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_with_checkpoint(dir.path(), b"epoch 1");
        let mut save = run.begin_save();
        save.stage(CheckpointKind::Last.file(), b"epoch 2").unwrap();
        save.stage("checkpoints/optimizer.safetensors", b"moments 2").unwrap();
        run.write_manifest_with(&save.staged).unwrap();
        // The first file was renamed into place, the second not.
        let last = CheckpointKind::Last.file();
        std::fs::rename(run.file(&pending_rel(last)), run.file(last)).unwrap();
        drop(save);
        let recovery = run.recover_checkpoint().unwrap();
        assert_eq!(recovery, Recovery::Completed(vec!["checkpoints/optimizer.safetensors".into()]));
        assert_eq!(std::fs::read(run.file("checkpoints/optimizer.safetensors")).unwrap(), b"moments 2");
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 2");
    }

    #[test]
    fn the_manifest_never_lists_a_pending_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_with_checkpoint(dir.path(), b"epoch 1");
        let mut save = run.begin_save();
        save.stage(CheckpointKind::Last.file(), b"epoch 2").unwrap();
        let manifest = run.write_manifest().unwrap();
        assert!(manifest.files.keys().all(|k| !k.ends_with(PENDING)), "{manifest:?}");
        // And a manifest written meanwhile still vouches for the checkpoint in place.
        assert_eq!(run.checkpoint_bytes(CheckpointKind::Last).unwrap(), b"epoch 1");
        drop(save);
    }
}
