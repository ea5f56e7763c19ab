//! The HIMDS door's record of what it changed on the host: key files, the key directory (and
//! its missing parents) and the lines of the `himds` group, so `imds-tun down` removes them
//! after `up` was killed (design principle 7: nothing changed that is not recorded and undone).
//!
//! Contract: every change is written to the journal (atomically, 0600, in the state directory)
//! *before* it is made, and dropped from it after it is undone; [`undo`] undoes whatever a
//! journal lists, treating "already gone" as done, then removes the journal. A door without a
//! journal path (`serve`, which keeps no host record) journals nothing and undoes on close.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::group;
use crate::device::write_atomic;

/// What the door may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Key files that may exist.
    pub key_files: Vec<PathBuf>,
    /// Directories created, outermost first.
    pub dirs: Vec<PathBuf>,
    /// Lines added to the group files: (file, line).
    pub group_lines: Vec<(PathBuf, String)>,
}

/// The journal: its path (none for `serve`) and what it lists.
#[derive(Debug, Default)]
pub struct Journal {
    path: Option<PathBuf>,
    changes: Changes,
}

impl Journal {
    pub fn new(path: Option<PathBuf>) -> Journal {
        Journal {
            path,
            changes: Changes::default(),
        }
    }

    /// Applies `edit` to the list and saves it.
    pub fn record(&mut self, edit: impl FnOnce(&mut Changes)) -> io::Result<()> {
        edit(&mut self.changes);
        match &self.path {
            Some(p) => {
                let json = serde_json::to_vec_pretty(&self.changes).map_err(io::Error::other)?;
                write_atomic(p, &json)
            }
            None => Ok(()),
        }
    }

    /// Whether no key file is listed any more.
    pub fn is_clean_of_keys(&self) -> bool {
        self.changes.key_files.is_empty()
    }

    /// Removes the journal file (after a complete undo).
    pub fn remove(&self) {
        if let Some(p) = &self.path {
            if let Err(e) = fs::remove_file(p) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", p.display());
                }
            }
        }
    }
}

/// Undoes what the journal at `path` lists (for `down` after a crash); a line per thing undone.
pub fn undo(path: &Path) -> io::Result<Vec<String>> {
    let changes: Changes = match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut undone = Vec::new();
    let mut removed = 0;
    for f in &changes.key_files {
        match fs::remove_file(f) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", f.display()))),
        }
    }
    if removed > 0 {
        undone.push(format!("removed {removed} HIMDS key file(s)"));
    }
    for d in changes.dirs.iter().rev() {
        match fs::remove_dir(d) {
            Ok(()) => undone.push(format!("removed directory {}", d.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
        }
    }
    for (file, line) in &changes.group_lines {
        if group::remove_line(file, line)? {
            undone.push(format!("removed {line:?} from {}", file.display()));
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(undone)
}
