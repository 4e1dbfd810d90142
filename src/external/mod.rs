//! Runs trained by other programs, followed from the files they write: TensorBoard event files
//! (PyTorch's `SummaryWriter`, tensorboardX, TensorFlow, Lightning's TensorBoard logger) and
//! plain metric logs (a CSV with a header, JSON lines). `vigil --watch DIR` (or `watch:` in the
//! config file) finds every run folder under the directories ([`discover`]), and each folder is
//! read from where the last read stopped ([`source`]): what it yields is scalar points per tag and
//! warnings naming the file and the position of anything unreadable, the rest of the run read on.
//!
//! Headless: no UI, no threads. The store follower ([`crate::engine::follow`]) polls a
//! [`watch::Watcher`] beside the run store and sends what it finds as the same run feeds Vigil's
//! own runs produce; the console shows them read-only.

pub mod config;
pub mod csv_log;
pub mod discover;
pub mod event;
pub mod jsonl;
pub mod process;
pub mod source;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The prefix of every external run's id, so that they never collide with the store's
/// `<spec>-<hex>` ids and a filter `ext:` finds them all.
pub const ID_PREFIX: &str = "ext:";

/// One value of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScalarPoint {
    pub step: i64,
    /// Seconds since the Unix epoch when the writer recorded it; NaN when the log has no time.
    pub wall: f64,
    pub value: f64,
}

/// New points per tag, in the order read.
pub type Scalars = BTreeMap<String, Vec<ScalarPoint>>;

/// Appends a point to its tag's list (no allocation when the tag is known).
pub(crate) fn push(out: &mut Scalars, tag: &str, p: ScalarPoint) {
    match out.get_mut(tag) {
        Some(v) => v.push(p),
        None => {
            out.insert(tag.to_string(), vec![p]);
        }
    }
}

/// Where in a file something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// A byte offset (event files).
    Offset(u64),
    /// A 1-based line (CSV and JSON lines).
    Line(u64),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Offset(o) => write!(f, "offset {o}"),
            Position::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// Something in a log that could not be read; the rest of the file is read on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub file: PathBuf,
    pub at: Position,
    pub msg: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.at, self.msg)
    }
}

/// The kinds of log a run folder can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    TensorBoard,
    Csv,
    JsonLines,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::TensorBoard => "tensorboard",
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }
}

/// What a tag measures, guessed from its name, so that an external run's curves join Vigil's
/// own on the loss, accuracy and learning-rate charts (`train/loss`, `val_acc`, `lr-Adam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Loss,
    Accuracy,
    LearningRate,
    Other,
}

/// The kind of a tag, from its name.
pub fn classify(tag: &str) -> TagKind {
    let t = tag.to_ascii_lowercase();
    let words: Vec<&str> = t.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    if t.contains("loss") {
        TagKind::Loss
    } else if t.contains("acc") {
        TagKind::Accuracy
    } else if words.contains(&"lr") || t.contains("learning_rate") || t.contains("learningrate") {
        TagKind::LearningRate
    } else {
        TagKind::Other
    }
}

/// Whether a tag is measured on held-out data (`val_loss`, `Loss/validation`, `eval/acc`).
pub fn is_held_out(tag: &str) -> bool {
    let t = tag.to_ascii_lowercase();
    t.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.starts_with("val") || w == "eval" || w == "test" || w == "dev")
}

/// The tag that stands for the run on a chart of one kind: for the loss, the training loss
/// (a tag not measured on held-out data) if there is one; for accuracy, the held-out one.
pub fn primary<'a>(tags: impl IntoIterator<Item = &'a str>, kind: TagKind) -> Option<&'a str> {
    let mut of_kind: Vec<&str> = tags.into_iter().filter(|t| classify(t) == kind).collect();
    of_kind.sort_by_key(|t| {
        let held_out = is_held_out(t);
        let rank = if kind == TagKind::Accuracy { !held_out } else { held_out };
        (rank, t.len())
    });
    of_kind.first().copied()
}

/// What an external run's feed carries beyond the run's info and log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExternalFeed {
    /// The run folder.
    pub dir: PathBuf,
    /// The log files read, with their format.
    pub files: Vec<(PathBuf, Format)>,
    /// New points per tag; with `reset`, every point anew.
    pub scalars: Scalars,
    /// A file was rewritten or replaced: forget the points sent before.
    pub reset: bool,
}

/// The most points kept per tag; past it every other point is dropped (the first and the newest
/// always stay), as TensorBoard keeps a sample of each tag rather than every point.
pub const MAX_POINTS: usize = 20_000;

/// A tag's points, in step order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagSeries {
    pub points: Vec<ScalarPoint>,
}

impl TagSeries {
    /// Adds points; ones that come before the last (a second file of the run, a restarted
    /// writer) are put in step order, so several files merge into one curve per tag.
    pub fn extend(&mut self, new: &[ScalarPoint]) {
        let start = self.points.len();
        self.points.extend_from_slice(new);
        let from = start.saturating_sub(1);
        if self.points[from..].windows(2).any(|w| w[0].step > w[1].step) {
            // Stable: points of one step keep the order they were written in.
            self.points.sort_by_key(|p| p.step);
        }
        if self.points.len() > MAX_POINTS {
            let last = *self.points.last().expect("not empty");
            self.points = self.points.iter().step_by(2).copied().collect();
            if self.points.last() != Some(&last) {
                self.points.push(last);
            }
        }
    }

    pub fn last(&self) -> Option<&ScalarPoint> {
        self.points.last()
    }
}

/// What the console knows of an external run beyond its info: where it is and its tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExternalRun {
    pub dir: PathBuf,
    pub files: Vec<(PathBuf, Format)>,
    pub tags: BTreeMap<String, TagSeries>,
}

impl ExternalRun {
    /// Lays a feed over what is known.
    pub fn apply(&mut self, feed: ExternalFeed) {
        self.dir = feed.dir;
        if !feed.files.is_empty() {
            self.files = feed.files;
        }
        if feed.reset {
            self.tags.clear();
        }
        for (tag, points) in feed.scalars {
            self.tags.entry(tag).or_default().extend(&points);
        }
    }

    /// The formats of its files, as one word (`tensorboard`, `csv+jsonl`).
    pub fn format(&self) -> String {
        let mut f: Vec<Format> = self.files.iter().map(|(_, f)| *f).collect();
        f.sort();
        f.dedup();
        f.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("+")
    }

    /// The tags of a kind, the primary one first.
    pub fn tags_of(&self, kind: TagKind) -> Vec<&str> {
        let first = primary(self.tags.keys().map(String::as_str), kind);
        let mut v: Vec<&str> = first.into_iter().collect();
        v.extend(self.tags.keys().map(String::as_str).filter(|t| classify(t) == kind && Some(*t) != first));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(step: i64) -> ScalarPoint {
        ScalarPoint { step, wall: 0.0, value: step as f64 }
    }

    #[test]
    fn tags_are_classified_by_name_and_the_primary_is_the_training_loss_and_held_out_accuracy() {
        assert_eq!(classify("train/loss"), TagKind::Loss);
        assert_eq!(classify("Accuracy/val"), TagKind::Accuracy);
        assert_eq!(classify("lr-Adam"), TagKind::LearningRate);
        assert_eq!(classify("epoch"), TagKind::Other);
        let tags = ["val_loss", "train_loss", "val_acc", "train_acc", "epoch"];
        assert_eq!(primary(tags, TagKind::Loss), Some("train_loss"));
        assert_eq!(primary(tags, TagKind::Accuracy), Some("val_acc"));
        assert_eq!(primary(tags, TagKind::LearningRate), None);
    }

    #[test]
    fn series_merge_in_step_order_and_stay_bounded() {
        let mut s = TagSeries::default();
        s.extend(&[p(1), p(3)]);
        s.extend(&[p(2), p(4)]);
        assert_eq!(s.points.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let many: Vec<ScalarPoint> = (5..(MAX_POINTS as i64 + 10)).map(p).collect();
        s.extend(&many);
        assert!((MAX_POINTS / 2..=MAX_POINTS).contains(&s.points.len()), "{}", s.points.len());
        assert_eq!(s.points.first().map(|p| p.step), Some(1));
        assert_eq!(s.last().map(|p| p.step), Some(MAX_POINTS as i64 + 9));
    }
}
