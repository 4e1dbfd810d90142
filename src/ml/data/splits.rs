//! A run's splits, fixed when it trains: which examples went to train, validation and test,
//! with the SHA-256 of every data file they index (`splits.json` in the run's folder). `eval`,
//! `explain`, `attack` and the console rebuild a run's data through [`for_run`], so that its
//! test split is the one it was tested on, and a data file that changed since is refused rather
//! than silently split anew (18 of 30 "test" examples of a shuffled file had trained the model).
//! Nothing here trains; it reads the data files and the run's `splits.json` only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SplitIndices;
use super::preprocess::{Pipeline, PreparedData};
use crate::error::{Error, Result};
use crate::ml::spec::{DataSource, DataSpec, ExperimentSpec};
use crate::store::{RunDir, read_json, sha256_hex, write_json};

/// Where a run keeps its splits.
pub const FILE: &str = "splits.json";

/// A data file a run read, as it was when the run trained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Absolute path.
    pub path: PathBuf,
    pub sha256: String,
}

/// The splits a run trained, validated and tested on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSplits {
    /// The files the indices refer to (none for built-in and generated data).
    pub sources: Vec<SourceFile>,
    /// Examples in the data set after loading (and `DropMissing`), which the indices index.
    pub examples: usize,
    #[serde(flatten)]
    pub indices: SplitIndices,
}

/// The files a spec's data reads, its separate validation and test sources included.
pub fn data_paths(data: &DataSpec) -> Vec<PathBuf> {
    data.sources().flat_map(source_paths).collect()
}

/// The files a data source reads.
pub fn source_paths(source: &DataSource) -> Vec<PathBuf> {
    match source {
        DataSource::Csv { path, .. } | DataSource::Tsv { path } => vec![path.into()],
        DataSource::Idx { images, labels, .. } => vec![images.into(), labels.into()],
        DataSource::Digits | DataSource::Topics | DataSource::Waveforms { .. } => vec![],
    }
}

/// The files of a spec's data with their SHA-256 now.
fn hash_sources(data: &DataSpec) -> Result<Vec<SourceFile>> {
    data_paths(data)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::data(&path, format!("cannot read the data file: {e}")))?;
            let path = std::path::absolute(&path).unwrap_or(path);
            Ok(SourceFile { sha256: sha256_hex(&bytes), path })
        })
        .collect()
}

/// Records the splits of freshly built `data` in the run.
pub fn record(run: &RunDir, spec: &ExperimentSpec, data: &PreparedData) -> Result<()> {
    let rec = RecordedSplits {
        sources: hash_sources(&spec.data)?,
        examples: data.examples,
        indices: data.indices.clone(),
    };
    write_json(&run.file(FILE), &rec)
}

/// The run's data with the splits it trained on, preprocessed by its fitted `pipeline`. A data
/// file that changed since is refused with the reason, unless `split_from_file` asks for a
/// deliberate re-split of the file as it is now. A run from before splits were recorded is
/// split from the file, as it always was.
pub fn for_run(
    run: &RunDir,
    spec: &ExperimentSpec,
    pipeline: &Pipeline,
    split_from_file: bool,
) -> Result<PreparedData> {
    let path = run.file(FILE);
    if split_from_file {
        return PreparedData::build(spec, Some(pipeline));
    }
    if !path.exists() {
        // Runs from before splits were recorded split with the experiment's seed when the spec
        // named no split seed (the default is fixed now): rebuild theirs as they were.
        let mut then = spec.clone();
        then.data.split.seed = Some(spec.data.split.seed.unwrap_or(spec.seed));
        return PreparedData::build(&then, Some(pipeline));
    }
    let rec: RecordedSplits = read_json(&path)?;
    let now = hash_sources(&spec.data)?;
    for (then, now) in rec.sources.iter().zip(&now) {
        if then.sha256 != now.sha256 {
            return Err(Error::data(
                &now.path,
                format!(
                    "changed since run {} trained on it (SHA-256 {} then, {} now), so the examples its \
                     recorded splits name are not these: its test split cannot be rebuilt. Restore the \
                     file, or pass --split-from-file to split it as it is now (the test examples may \
                     then include ones the model trained on)",
                    run.id,
                    &then.sha256[..12],
                    &now.sha256[..12]
                ),
            ));
        }
    }
    PreparedData::build_with(spec, Some(pipeline), Some(&rec))
}
