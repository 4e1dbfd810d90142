//! The console's config file, `~/.config/vigil/config.ron` (or `$VIGIL_CONFIG`): for now the
//! directories to watch for external runs, as `--watch` gives them.
//!
//! ```ron
//! (
//!     watch: ["~/experiments/lightning_logs", "/data/tensorboard"],
//! )
//! ```
//!
//! Relative paths are taken from the file's folder, `~/` from the home folder. A directory that
//! does not exist is an error naming the file, the line and the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ConfigError, Error, Result};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    watch: Vec<String>,
}

/// The config file's path: `$VIGIL_CONFIG`, else `$XDG_CONFIG_HOME/vigil/config.ron` (or
/// `~/.config/vigil/config.ron`) when it exists.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIGIL_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("vigil").join("config.ron");
    p.exists().then_some(p)
}

fn expand(p: &str, base: &Path) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    let p = PathBuf::from(p);
    if p.is_relative() { base.join(p) } else { p }
}

/// The directories the config file at `path` says to watch.
pub fn watch_dirs(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let file: ConfigFile = ron::from_str(&text).map_err(|e| ConfigError::from_ron(&e, &text, path))?;
    let base = path.parent().unwrap_or(Path::new("."));
    file.watch
        .iter()
        .map(|w| {
            let dir = expand(w, base);
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(ConfigError::at_field(&text, path, "watch", format!("{w:?} is not a directory")).into())
            }
        })
        .collect()
}

/// The directories to watch: those given on the command line (each must be a directory), then
/// the config file's.
pub fn resolve(cli: &[PathBuf], config: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in cli {
        if !d.is_dir() {
            return Err(Error::argument(format!("--watch {}: not a directory", d.display())));
        }
        out.push(d.clone());
    }
    if let Some(p) = config {
        for d in watch_dirs(p)? {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_dirs_resolve_from_the_file_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let p = dir.path().join("config.ron");
        std::fs::write(&p, "(watch: [\"logs\"])").unwrap();
        assert_eq!(watch_dirs(&p).unwrap(), vec![dir.path().join("logs")]);
        std::fs::write(&p, "(\n  watch: [\"nope\"],\n)").unwrap();
        let e = watch_dirs(&p).unwrap_err().to_string();
        assert!(e.contains("config.ron:2:3") && e.contains("\"nope\" is not a directory"), "{e}");
        std::fs::write(&p, "(watcher: [])").unwrap();
        let e = watch_dirs(&p).unwrap_err().to_string();
        assert!(e.contains("watcher"), "{e}");
    }
}
