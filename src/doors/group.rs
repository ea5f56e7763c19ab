//! The `himds` group: looked up in `/etc/group`, and added there when missing (and removed
//! again when the door closes), so that its members can read HIMDS key files as on Azure Arc.
//!
//! Contract: [`ensure`] returns the group's id and, when it added the group, an [`AddedGroup`]
//! whose [`AddedGroup::undo`] removes exactly the lines it added. Files are edited in place
//! (read, then rewrite the same inode), never replaced by rename: in containers and in the
//! tests `/etc/group` is often a bind mount, which a rename cannot replace. The gid chosen is
//! the highest free one in the system range 100..=999, as `groupadd --system` chooses.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const GROUP_FILE: &str = "/etc/group";
pub const GSHADOW_FILE: &str = "/etc/gshadow";

/// System gids `groupadd --system` picks from (login.defs SYS_GID_MIN..SYS_GID_MAX).
const SYSTEM_GIDS: std::ops::RangeInclusive<u32> = 100..=999;

/// A line in a file: (file, line).
pub type FileLine = (PathBuf, String);

/// Lines this process added to the group files.
#[derive(Debug)]
pub struct AddedGroup {
    pub name: String,
    pub gid: u32,
    lines: Vec<(PathBuf, String)>,
}

/// The gid of `name` in `group_file`, if it is there.
pub fn lookup(group_file: &Path, name: &str) -> io::Result<Option<u32>> {
    let text = fs::read_to_string(group_file)?;
    let gid = entries(&text).find(|(n, _)| *n == name).map(|(_, gid)| gid);
    Ok(gid)
}

/// (name, gid) of every well-formed line.
fn entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        Some((name, gid))
    })
}

/// The gid of `name`, adding the group to `group_file` (and `gshadow_file`, when it exists)
/// if it is missing. `before` is told the lines about to be added, before any is (to record
/// them); an error from it adds nothing.
pub fn ensure(
    group_file: &Path,
    gshadow_file: &Path,
    name: &str,
    before: &mut dyn FnMut(&[FileLine]) -> io::Result<()>,
) -> io::Result<(u32, Option<AddedGroup>)> {
    let text = fs::read_to_string(group_file)?;
    if let Some((_, gid)) = entries(&text).find(|(n, _)| *n == name) {
        return Ok((gid, None));
    }
    let taken: Vec<u32> = entries(&text).map(|(_, g)| g).collect();
    let gid = SYSTEM_GIDS
        .rev()
        .find(|g| !taken.contains(g))
        .ok_or_else(|| io::Error::other("no free system gid in 100..=999"))?;
    let mut added = AddedGroup {
        name: name.to_string(),
        gid,
        lines: Vec::new(),
    };
    let line = format!("{name}:x:{gid}:");
    let shadow = fs::read_to_string(gshadow_file).ok();
    let shadow_line = format!("{name}:!::");
    let mut planned = vec![(group_file.to_path_buf(), line.clone())];
    if shadow.is_some() {
        planned.push((gshadow_file.to_path_buf(), shadow_line.clone()));
    }
    before(&planned)?;
    append_line(group_file, &text, &line)?;
    added.lines.push((group_file.to_path_buf(), line));
    if let Some(shadow) = shadow {
        if append_line(gshadow_file, &shadow, &shadow_line).is_ok() {
            added.lines.push((gshadow_file.to_path_buf(), shadow_line));
        }
    }
    Ok((gid, Some(added)))
}

/// Appends `line` to `path` whose current content is `text`, in place.
fn append_line(path: &Path, text: &str, line: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{line}\n").as_bytes())?;
    f.sync_all()
}

impl AddedGroup {
    /// Removes the added lines, in place; lines changed since by someone else are left alone.
    pub fn undo(&self) -> io::Result<()> {
        for (path, line) in &self.lines {
            remove_line(path, line)?;
        }
        Ok(())
    }
}

/// Removes every line equal to `line` from `path`, in place; whether there was one. A file
/// that is gone has nothing to remove.
pub fn remove_line(path: &Path, line: &str) -> io::Result<bool> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let kept: Vec<&str> = text.lines().filter(|l| *l != line).collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if out == text {
        return Ok(false);
    }
    fs::write(path, out)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_with_a_free_system_gid_and_undoes_exactly() {
        let dir = std::env::temp_dir().join(format!("imds-tun-group-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let group = dir.join("group");
        let shadow = dir.join("gshadow");
        let original = "root:x:0:\nsyslog:x:999:\nusers:x:100:\n";
        fs::write(&group, original).unwrap_or_else(|e| panic!("{e}"));
        fs::write(&shadow, "root:*::\n").unwrap_or_else(|e| panic!("{e}"));

        let mut planned = Vec::new();
        let (gid, added) = ensure(&group, &shadow, "himds", &mut |lines| {
            planned.extend_from_slice(lines);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            planned,
            [
                (group.clone(), "himds:x:998:".to_string()),
                (shadow.clone(), "himds:!::".to_string())
            ]
        );
        assert_eq!(gid, 998);
        assert_eq!(lookup(&group, "himds").ok().flatten(), Some(998));
        assert!(fs::read_to_string(&shadow)
            .unwrap_or_default()
            .ends_with("himds:!::\n"));
        // Present now: found, nothing added.
        let (again, none) =
            ensure(&group, &shadow, "himds", &mut |_| Ok(())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again, none.is_none()), (998, true));

        added
            .unwrap_or_else(|| panic!("nothing added"))
            .undo()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read_to_string(&group).unwrap_or_default(), original);
        assert_eq!(
            fs::read_to_string(&shadow).unwrap_or_default(),
            "root:*::\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
