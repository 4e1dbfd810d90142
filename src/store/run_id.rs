//! [`RunId`]: the name of a run in the store (`<spec>-<6 hex digits>`, its folder's name).
//! A newtype so a run id cannot be mixed up with a spec name, a model name or a request id; it
//! serialises as a plain string, so `run.json` and the other files are unchanged, and it reads
//! like a `&str` (`Deref`, `Borrow`, comparisons) so most code handles it as before.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The id of a run in the store.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Debug-printed as the string it is (`"digits-mlp-0a1b2c"`), so messages that quote a run id
/// with `{:?}` read as they did.
impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for RunId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RunId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A run's id is its folder's name: `root.join(&id)` works as with a string.
impl AsRef<Path> for RunId {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

/// A run id is a command-line argument as it is (`vigil eval <id>`).
impl AsRef<std::ffi::OsStr> for RunId {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_ref()
    }
}

/// Maps keyed by `RunId` are looked up with a `&str`.
impl Borrow<str> for RunId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for RunId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RunId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for RunId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<RunId> for str {
    fn eq(&self, other: &RunId) -> bool {
        self == other.0
    }
}

impl PartialEq<RunId> for &str {
    fn eq(&self, other: &RunId) -> bool {
        *self == other.0
    }
}

impl PartialEq<RunId> for String {
    fn eq(&self, other: &RunId) -> bool {
        *self == other.0
    }
}

impl From<String> for RunId {
    fn from(s: String) -> Self {
        RunId(s)
    }
}

impl From<&str> for RunId {
    fn from(s: &str) -> Self {
        RunId(s.to_string())
    }
}

impl From<&String> for RunId {
    fn from(s: &String) -> Self {
        RunId(s.clone())
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_a_plain_string_on_disk_and_reads_like_one() {
        let id = RunId::from("digits-mlp-0a1b2c");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"digits-mlp-0a1b2c\"");
        assert_eq!(serde_json::from_str::<RunId>("\"digits-mlp-0a1b2c\"").unwrap(), id);
        assert_eq!(id, "digits-mlp-0a1b2c");
        assert!(id.starts_with("digits-mlp"));
        assert_eq!(format!("{id}"), "digits-mlp-0a1b2c");
        assert_eq!(format!("{id:?}"), "\"digits-mlp-0a1b2c\"");
        let mut runs = std::collections::BTreeMap::new();
        runs.insert(id.clone(), 1);
        assert_eq!(runs.get("digits-mlp-0a1b2c"), Some(&1));
        assert_eq!(Path::new("runs").join(&id), Path::new("runs/digits-mlp-0a1b2c"));
    }
}
