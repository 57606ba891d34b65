//! Files of a dataset that cannot be used: why each one was left out, the one-line summary,
//! the full list (`skipped.txt`) and `--strict`, which turns any of them into an error.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::checkpoint;

/// A file that cannot be used, and why: displayed as "PATH REASON", e.g.
/// "a.png is not a readable image: unexpected end of file".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unusable {
    pub path: PathBuf,
    /// A predicate on the file: "is empty (0 bytes)", "has no mask", ….
    pub reason: String,
}

impl Unusable {
    pub fn new(path: &Path, reason: impl Into<String>) -> Unusable {
        Unusable { path: path.to_path_buf(), reason: reason.into() }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Unusable {}

/// The file fault an error is about, if it is one; any other error (a bad option, a full
/// disk) is handed back, as it must stop the run.
pub fn file_fault(e: anyhow::Error) -> Result<Unusable> {
    e.downcast::<Unusable>()
}

/// The name of the list of skipped files in a run (or eval, or predict) folder.
pub const LIST_NAME: &str = "skipped.txt";

/// The files left out of one dataset, sorted by path.
#[derive(Clone, Debug, Default)]
pub struct Skipped(Vec<Unusable>);

impl Skipped {
    pub fn new(mut files: Vec<Unusable>) -> Skipped {
        files.sort();
        files.dedup();
        Skipped(files)
    }

    pub fn files(&self) -> &[Unusable] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `PATH<TAB>REASON`, one file a line.
    pub fn list(&self) -> String {
        self.0.iter().map(|u| format!("{}\t{}\n", u.path.display(), u.reason)).collect()
    }

    /// Writes `dir/skipped.txt` (empty when nothing was skipped, so no list of an earlier run
    /// there is left to mislead) and, when something was, prints "skipped 4 of 18 pairs; see
    /// DIR/skipped.txt", where `of` counts the pairs (and unpaired files) looked at.
    pub fn report(&self, of: usize, what: &str, dir: &Path) -> Result<()> {
        let path = dir.join(LIST_NAME);
        checkpoint::write_atomic(&path, self.list().as_bytes())?;
        if !self.0.is_empty() {
            println!("skipped {} of {of} {what}; see {}", self.0.len(), path.display());
        }
        Ok(())
    }

    /// `--strict`: an error naming the first skipped file and its reason.
    pub fn refuse(&self, dir: &Path) -> Result<()> {
        if let Some(first) = self.0.first() {
            let more = match self.0.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more, listed in {})", dir.join(LIST_NAME).display()),
            };
            bail!("--strict: {first}{more}; fix or remove it, or run without --strict to skip it");
        }
        Ok(())
    }

    /// "a.png is empty (0 bytes); b.png has no mask; …" for an error message: the first few.
    pub fn examples(&self) -> String {
        const SHOWN: usize = 3;
        let mut s = self.0.iter().take(SHOWN).map(Unusable::to_string).collect::<Vec<_>>().join("; ");
        if self.0.len() > SHOWN {
            s += "; …";
        }
        s
    }
}
