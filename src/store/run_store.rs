//! [`RunStore`]: the folder that holds all runs. It creates runs, lists them, resolves what a
//! user types (an id, a unique prefix or suffix, `latest`) to a run's folder, and hands every
//! [`RunDir`] it opens the store's sealing key, if one was given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::seal::SealKey;
use super::{RunDir, RunId, RunInfo, RunStatus, now, write_atomic};
use crate::error::{Error, InputError, Result};
use crate::ml::spec::ExperimentSpec;

/// The folder that holds all runs, and the key its sealed files open with, if one was given.
/// Cloning is cheap: the key is shared, and zeroed when the last holder drops it.
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
    key: Option<Arc<SealKey>>,
}

impl From<&Path> for RunStore {
    fn from(root: &Path) -> Self {
        RunStore::new(root)
    }
}

impl From<PathBuf> for RunStore {
    fn from(root: PathBuf) -> Self {
        RunStore::new(root)
    }
}

impl RunStore {
    /// A store without a sealing key: sealed files are refused by name.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunStore { root: root.into(), key: None }
    }

    /// The same store opening (and writing) sealed files with `key`.
    pub fn with_key(self, key: Option<Arc<SealKey>>) -> Self {
        RunStore { key, ..self }
    }

    /// The key sealed files open with, if one was given.
    pub fn key(&self) -> Option<&SealKey> {
        self.key.as_deref()
    }

    /// The key, shared, for a holder that outlives this borrow (a server, an engine).
    pub fn shared_key(&self) -> Option<Arc<SealKey>> {
        self.key.clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a new run for a spec: a fresh id, its folder, the spec as run, and a `run.json`
    /// in the `queued` state.
    pub fn create(&self, spec: &ExperimentSpec) -> Result<RunDir> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for attempt in 0u32.. {
            let id = RunId::from(format!("{}-{}", spec.name, short_hash(attempt)));
            let path = self.root.join(&id);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let run = RunDir { id: id.clone(), path, key: self.key.clone() };
                    std::fs::create_dir_all(run.path.join("checkpoints"))
                        .map_err(|e| Error::io(&run.path, e))?;
                    write_atomic(&run.file("spec.ron"), spec.to_ron().as_bytes())?;
                    let t = now();
                    run.write_info(&RunInfo {
                        id,
                        spec: spec.name.clone(),
                        model: spec.model.kind().to_string(),
                        status: RunStatus::Queued,
                        created: t.clone(),
                        started: None,
                        finished: None,
                        updated: t,
                        epoch: 0,
                        epochs: spec.epochs,
                        step: 0,
                        steps_per_epoch: 0,
                        train_loss: None,
                        val_loss: None,
                        val_accuracy: None,
                        best_val_accuracy: None,
                        best_epoch: None,
                        test_accuracy: None,
                        test_macro_f1: None,
                        membership_advantage: None,
                        dp: None,
                        duration_s: 0.0,
                        samples_per_sec: None,
                        failure: None,
                        pid: None,
                        seed: spec.seed,
                    })?;
                    return Ok(run);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        unreachable!("the loop returns within 100 attempts")
    }

    /// Every run in the store with a readable `run.json`, oldest first.
    pub fn list(&self) -> Vec<RunInfo> {
        let mut out: Vec<RunInfo> = self.dirs().into_iter().filter_map(|d| d.info().ok()).collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// The run folders (those holding a `run.json`).
    pub fn dirs(&self) -> Vec<RunDir> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return vec![] };
        entries
            .flatten()
            .filter(|e| e.path().join("run.json").is_file())
            .filter_map(|e| Some(self.dir(e.file_name().to_str()?)))
            .collect()
    }

    /// Finds a run by id, unique prefix or unique suffix, or `latest` for the newest.
    pub fn resolve(&self, query: &str) -> Result<RunDir> {
        let runs = self.list();
        if query == "latest" {
            return runs.last().map(|r| self.dir(&r.id)).ok_or_else(|| {
                Error::not_found(format!("the run store {} holds no runs", self.root.display()))
            });
        }
        if let Some(r) = runs.iter().find(|r| r.id == query) {
            return Ok(self.dir(&r.id));
        }
        let matches: Vec<&RunInfo> =
            runs.iter().filter(|r| r.id.starts_with(query) || r.id.ends_with(query)).collect();
        match matches.as_slice() {
            [one] => Ok(self.dir(&one.id)),
            [] => Err(InputError::UnknownRun { query: query.into(), store: self.root.clone() }.into()),
            many => Err(InputError::AmbiguousRun {
                query: query.into(),
                matches: many.iter().map(|r| r.id.to_string()).collect(),
            }
            .into()),
        }
    }

    /// The folder of run `id` (which need not exist yet).
    pub fn dir(&self, id: &str) -> RunDir {
        RunDir { id: id.into(), path: self.root.join(id), key: self.key.clone() }
    }
}

/// Six hex digits from the clock, the process and an attempt counter: short enough to type,
/// unique enough for one store.
fn short_hash(attempt: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(attempt.to_le_bytes());
    hex::encode(&h.finalize()[..3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seal;

    #[test]
    fn resolve_by_prefix_suffix_and_latest_and_explain_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let spec = crate::ml::spec::resolve("digits-logreg", Path::new("models")).unwrap().0;
        let a = store.create(&spec).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = store.create(&spec).unwrap();
        assert_eq!(store.resolve(&a.id).unwrap().id, a.id);
        assert_eq!(store.resolve(&b.id[b.id.len() - 6..]).unwrap().id, b.id);
        assert_eq!(store.resolve("latest").unwrap().id, b.id);
        let err = store.resolve("digits-logreg").unwrap_err().to_string();
        assert!(err.contains("matches 2 runs"), "{err}");
        let err = store.resolve("zzz").unwrap_err().to_string();
        assert!(err.contains("vigil runs"), "{err}");
    }

    #[test]
    fn the_seal_key_travels_with_the_store_not_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(SealKey::generate());
        let keyed = RunStore::new(dir.path()).with_key(Some(key.clone()));
        let spec = crate::ml::spec::resolve("digits-logreg", Path::new("models")).unwrap().0;
        let run = keyed.create(&spec).unwrap();
        run.write_sensitive("preprocess.json", b"{}").unwrap();
        run.seal(&key).unwrap();
        // The store's key opens the file; stores without it, or with another, in the same
        // process do not: nothing about the key is global.
        assert_eq!(keyed.resolve(&run.id).unwrap().read_sensitive("preprocess.json").unwrap(), b"{}");
        let bare = RunStore::new(dir.path()).resolve(&run.id).unwrap();
        let err = bare.read_sensitive("preprocess.json").unwrap_err().to_string();
        assert!(err.contains("is sealed"), "{err}");
        assert!(bare.write_sensitive("preprocess.json", b"{}").is_err());
        let other = RunStore::new(dir.path()).with_key(Some(Arc::new(SealKey::generate())));
        assert!(other.resolve(&run.id).unwrap().read_sensitive("preprocess.json").is_err());
        // A sealed write with the store's key stays sealed and opens again.
        let again = keyed.dir(&run.id);
        again.write_sensitive("preprocess.json", b"[]").unwrap();
        assert!(seal::is_sealed(&std::fs::read(again.file("preprocess.json")).unwrap()));
        assert_eq!(again.read_sensitive("preprocess.json").unwrap(), b"[]");
    }
}
