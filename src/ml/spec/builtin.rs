//! The specs shipped inside the binary (embedded from `models/`), and finding a spec by name or
//! path, a user's file overriding the built-in one of the same name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ExperimentSpec;
use crate::error::{Error, Result};

/// A spec shipped inside the binary.
pub struct BuiltinSpec {
    pub file: &'static str,
    pub text: &'static str,
}

/// The specs in `models/`, embedded so that `vigil` works from any directory.
pub const BUILTIN_SPECS: &[BuiltinSpec] = &[
    BuiltinSpec { file: "digits-mlp.ron", text: include_str!("../../../models/digits-mlp.ron") },
    BuiltinSpec { file: "digits-mlp-pgd.ron", text: include_str!("../../../models/digits-mlp-pgd.ron") },
    BuiltinSpec { file: "digits-mlp-dp.ron", text: include_str!("../../../models/digits-mlp-dp.ron") },
    BuiltinSpec { file: "digits-cnn.ron", text: include_str!("../../../models/digits-cnn.ron") },
    BuiltinSpec { file: "digits-logreg.ron", text: include_str!("../../../models/digits-logreg.ron") },
    BuiltinSpec { file: "waves-lstm.ron", text: include_str!("../../../models/waves-lstm.ron") },
    BuiltinSpec { file: "waves-gru.ron", text: include_str!("../../../models/waves-gru.ron") },
    BuiltinSpec { file: "topics-text.ron", text: include_str!("../../../models/topics-text.ron") },
    BuiltinSpec { file: "topics-textcnn.ron", text: include_str!("../../../models/topics-textcnn.ron") },
    BuiltinSpec {
        file: "topics-transformer.ron",
        text: include_str!("../../../models/topics-transformer.ron"),
    },
    BuiltinSpec {
        file: "topics-transformer-dp.ron",
        text: include_str!("../../../models/topics-transformer-dp.ron"),
    },
    BuiltinSpec {
        file: "waves-transformer.ron",
        text: include_str!("../../../models/waves-transformer.ron"),
    },
    BuiltinSpec { file: "topics-minilm.ron", text: include_str!("../../../models/topics-minilm.ron") },
    BuiltinSpec { file: "topics-minilm-ft.ron", text: include_str!("../../../models/topics-minilm-ft.ron") },
];

/// The default experiment, run by the console on an empty store.
pub const DEFAULT_SPEC: &str = "digits-mlp";

/// Where a spec was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecOrigin {
    /// A file on disk (in `models/` or given by path).
    File(PathBuf),
    /// Embedded in the binary.
    Builtin(&'static str),
}

impl std::fmt::Display for SpecOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecOrigin::File(p) => write!(f, "{}", p.display()),
            SpecOrigin::Builtin(name) => write!(f, "built-in {name}"),
        }
    }
}

/// One spec that `vigil models` lists.
#[derive(Debug, Clone)]
pub struct SpecEntry {
    pub name: String,
    pub origin: SpecOrigin,
    pub spec: Result<ExperimentSpec, String>,
}

/// Finds a spec by path (`models/x.ron`), or by name in `models_dir` and then among the built-in
/// ones. A user's file overrides the built-in spec of the same file name.
pub fn resolve(name_or_path: &str, models_dir: &Path) -> Result<(ExperimentSpec, SpecOrigin)> {
    let as_path = Path::new(name_or_path);
    let looks_like_path = name_or_path.ends_with(".ron") || name_or_path.contains('/');
    if looks_like_path && as_path.exists() {
        return Ok((ExperimentSpec::load(as_path)?, SpecOrigin::File(as_path.to_path_buf())));
    }
    let stem = as_path.file_name().and_then(|s| s.to_str()).unwrap_or(name_or_path).trim_end_matches(".ron");
    let local = models_dir.join(format!("{stem}.ron"));
    if local.exists() {
        return Ok((ExperimentSpec::load(&local)?, SpecOrigin::File(local)));
    }
    if let Some(b) = BUILTIN_SPECS.iter().find(|b| b.file.trim_end_matches(".ron") == stem) {
        let origin = Path::new("built-in").join(b.file);
        return Ok((ExperimentSpec::parse(b.text, &origin)?, SpecOrigin::Builtin(b.file)));
    }
    if looks_like_path {
        return Err(Error::not_found(format!("spec file {name_or_path} does not exist")));
    }
    let known: Vec<String> = list(models_dir).into_iter().map(|e| e.name).collect();
    Err(Error::not_found(format!(
        "no spec named {stem:?} in {} or built in; known specs: {}",
        models_dir.display(),
        known.join(", ")
    )))
}

/// Every spec in `models_dir` and every built-in one not overridden there, sorted by name.
pub fn list(models_dir: &Path) -> Vec<SpecEntry> {
    let mut out: BTreeMap<String, SpecEntry> = BTreeMap::new();
    for b in BUILTIN_SPECS {
        let name = b.file.trim_end_matches(".ron").to_string();
        let origin = Path::new("built-in").join(b.file);
        out.insert(
            name.clone(),
            SpecEntry {
                name,
                origin: SpecOrigin::Builtin(b.file),
                spec: ExperimentSpec::parse(b.text, &origin).map_err(|e| e.to_string()),
            },
        );
    }
    if let Ok(dir) = std::fs::read_dir(models_dir) {
        for entry in dir.flatten() {
            let path = entry.path();
            // Sweep files live beside the specs and are not specs.
            let sweep = path.to_str().is_some_and(|p| p.ends_with(crate::sweep::SWEEP_SUFFIX));
            if path.extension().and_then(|e| e.to_str()) != Some("ron") || sweep {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            out.insert(
                name.clone(),
                SpecEntry {
                    name,
                    spec: ExperimentSpec::load(&path).map_err(|e| e.to_string()),
                    origin: SpecOrigin::File(path),
                },
            );
        }
    }
    out.into_values().collect()
}
