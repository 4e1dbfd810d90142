//! Tags and a note on a run, set by the user (`vigil tag`, `:tag` and `:note` in the console):
//! `runs/<id>/notes.json`. They describe the run and are not part of what was trained, so the
//! manifest leaves the file out and a signed run stays verifiable after it is tagged. A missing
//! file is a run with neither.

use serde::{Deserialize, Serialize};

use super::{RunDir, read_json, write_json};
use crate::error::{Error, Result};

/// The file's name in the run folder.
pub const FILE: &str = "notes.json";

/// A run's tags (sorted, unique) and note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunNotes {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Checks a tag: one word that a filter (`tag:NAME`) and a shell can carry as it is.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.chars().count() <= 32
        && tag.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::argument(format!(
            "tag {tag:?} must be 1 to 32 letters, digits, '-', '_', '.' or '/' (no spaces)"
        )))
    }
}

impl RunNotes {
    /// The run's notes; a run never tagged has none.
    pub fn load(run: &RunDir) -> Result<Self> {
        let path = run.file(FILE);
        if !path.exists() {
            return Ok(RunNotes::default());
        }
        read_json(&path)
    }

    /// Writes them atomically (and removes the file when nothing is left).
    pub fn save(&self, run: &RunDir) -> Result<()> {
        let path = run.file(FILE);
        if self.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
                _ => Ok(()),
            };
        }
        write_json(&path, self)
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.note.is_none()
    }

    /// Adds a tag; false when the run had it.
    pub fn add_tag(&mut self, tag: &str) -> Result<bool> {
        check_tag(tag)?;
        if self.tags.iter().any(|t| t == tag) {
            return Ok(false);
        }
        self.tags.push(tag.to_string());
        self.tags.sort();
        Ok(true)
    }

    /// Removes a tag; false when the run did not have it.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let before = self.tags.len();
        self.tags.retain(|t| t != tag);
        self.tags.len() != before
    }

    /// Sets the note; an empty text clears it.
    pub fn set_note(&mut self, text: &str) {
        let text = text.trim();
        self.note = (!text.is_empty()).then(|| text.to_string());
    }

    /// The tags as `#a #b`, for tables.
    pub fn tag_line(&self) -> String {
        self.tags.iter().map(|t| format!("#{t}")).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStore;

    #[test]
    fn tags_and_notes_round_trip_in_the_run_folder_and_stay_out_of_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let spec = crate::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
        let run = store.create(&spec).unwrap();
        assert_eq!(RunNotes::load(&run).unwrap(), RunNotes::default());
        let mut n = RunNotes::default();
        assert!(n.add_tag("baseline").unwrap());
        assert!(n.add_tag("a-first").unwrap());
        assert!(!n.add_tag("baseline").unwrap(), "a tag is kept once");
        assert!(n.add_tag("two words").is_err());
        assert!(n.add_tag("").is_err());
        n.set_note("  lr too high, diverged at epoch 3 ");
        n.save(&run).unwrap();
        let back = RunNotes::load(&run).unwrap();
        assert_eq!(back.tags, vec!["a-first", "baseline"], "sorted");
        assert_eq!(back.note.as_deref(), Some("lr too high, diverged at epoch 3"));
        assert_eq!(back.tag_line(), "#a-first #baseline");
        let manifest = run.write_manifest().unwrap();
        assert!(!manifest.files.contains_key(FILE), "notes are not part of what was trained");
        let mut cleared = back;
        assert!(cleared.remove_tag("a-first") && cleared.remove_tag("baseline"));
        assert!(!cleared.remove_tag("baseline"));
        cleared.set_note("");
        cleared.save(&run).unwrap();
        assert!(!run.file(FILE).exists(), "nothing left, no file");
    }

    #[test]
    fn a_broken_notes_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let spec = crate::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
        let run = store.create(&spec).unwrap();
        std::fs::write(run.file(FILE), "{\"tags\": 3}").unwrap();
        let err = RunNotes::load(&run).unwrap_err().to_string();
        assert!(err.contains("notes.json"), "{err}");
    }
}
