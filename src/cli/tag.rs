//! `vigil tag RUN [TAG]... [--remove TAG]... [--note TEXT]`: the tags and note on a run, kept in
//! its folder's `notes.json` (the console's `:tag` and `:note` write the same file). Without
//! changes it prints what the run has.

use crate::error::Result;
use crate::store::notes::RunNotes;
use crate::store::{RunInfo, RunStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id, a unique prefix or suffix of one, or `latest`.
    pub run: String,
    /// Tags to add (one word each: letters, digits, - _ . /).
    pub tags: Vec<String>,
    /// Tags to remove.
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Set the run's note; an empty text clears it.
    #[arg(long)]
    pub note: Option<String>,
}

/// A run's notes for listings: a broken notes file lists as none (`vigil tag RUN` says why).
pub fn notes_of(store: &RunStore, r: &RunInfo) -> RunNotes {
    RunNotes::load(&store.dir(&r.id)).unwrap_or_default()
}

pub fn run(store: &RunStore, args: Args) -> Result<()> {
    let dir = store.resolve(&args.run)?;
    let mut notes = RunNotes::load(&dir)?;
    // Check every tag before changing anything: a bad one leaves the file as it was.
    for t in &args.tags {
        crate::store::notes::check_tag(t)?;
    }
    let changed = !args.tags.is_empty() || !args.remove.is_empty() || args.note.is_some();
    for t in &args.tags {
        notes.add_tag(t)?;
    }
    for t in &args.remove {
        notes.remove_tag(t);
    }
    if let Some(n) = &args.note {
        notes.set_note(n);
    }
    if changed {
        notes.save(&dir)?;
    }
    let tags = if notes.tags.is_empty() { "no tags".to_string() } else { notes.tag_line() };
    match &notes.note {
        Some(n) => println!("{}: {tags}; note: {n}", dir.id),
        None => println!("{}: {tags}", dir.id),
    }
    Ok(())
}
