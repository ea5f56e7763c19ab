//! The `/etc/hosts` block that makes `metadata.google.internal` and `metadata` resolve to
//! 169.254.169.254 while `up` runs (Google's clients look the name up; see spec/gce.md).
//!
//! # Format
//!
//! ```text
//! # BEGIN imds-tun device=imds0 pid=1234 (added by `imds-tun up`, removed on exit or by `imds-tun down`)
//! 169.254.169.254 metadata.google.internal metadata
//! # END imds-tun device=imds0
//! ```
//!
//! # Contract
//!
//! - Everything outside the block is preserved byte for byte: line endings (LF or CRLF), a
//!   missing final newline, comments, order. The block is inserted at the **start** of the
//!   file: the original content then follows unchanged whatever its last byte is, so removing
//!   the block's lines restores the exact original bytes; and the first match wins in glibc's
//!   `files` lookup, so our names take precedence over stale entries while we run.
//! - Blocks are per device: `remove` removes exactly the lines from our `BEGIN` line through
//!   the next matching `END` line, wherever they are. `add` first removes any block of the same
//!   device (left by a killed run), so there is never more than one.
//! - A `BEGIN` without its `END` is an error naming the line: guessing where a damaged block
//!   ends could delete the user's lines.
//! - Writes are atomic where the filesystem allows: a temporary file in the same directory,
//!   same mode and owner, fsync, `rename` over the original, fsync of the directory.
//! - When the file cannot be replaced (a bind mount, as in containers and `ip netns exec`:
//!   `rename` fails with `EBUSY`), it is edited so that a crash at any moment leaves the lines
//!   that were there before intact: `add` **appends** the block at the end with one `pwrite`
//!   after the original length (never writing over an original byte), and `remove` of a block
//!   that ends the file is one `ftruncate` to where it began. A file that did not end with a
//!   newline gets one before the block, and the `BEGIN` line says so (`newline-added`), so
//!   that removal takes it away again. A write torn by a crash (only possible where it
//!   crosses a page boundary) leaves a `BEGIN` line without its `END` at the very end of the
//!   file: that is recognised as ours and truncated too; a tear inside the `BEGIN` line itself
//!   leaves a partial comment line after the original ones (harmless, never an original line
//!   changed). Trade-off: an appended block comes after the file's own lines, so an entry of
//!   the user's for the same names wins while we run (glibc takes the first match).
//!   Removal of a block that does not end the file (the user appended lines while we ran, or
//!   a block inserted at the start) rewrites it whole: by rename, or in place with one
//!   `pwrite` then `ftruncate` (a crash between the two leaves the tail of the old content
//!   after the new; that case needs both a bind mount and a hand edit during the run).
//! - Symlinks are followed: the file the link points to is rewritten, the link stays.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const BEGIN: &str = "# BEGIN imds-tun device=";
const END: &str = "# END imds-tun device=";
/// The `BEGIN` of a block whose preceding newline was added by us (the file did not end with
/// one). The mark comes before the device name, so a `BEGIN` line cut short by a crash is
/// either recognisably this kind or not recognised at all.
const BEGIN_NEWLINE_ADDED: &str = "# BEGIN imds-tun newline-added device=";

/// The block `up` adds for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsBlock {
    /// The device (instance) this block belongs to.
    pub device: String,
    /// The process that added it (for humans reading the file).
    pub pid: u32,
    /// Host lines, without line endings, e.g. `169.254.169.254 metadata.google.internal metadata`.
    pub lines: Vec<String>,
}

impl HostsBlock {
    /// The standard block: `169.254.169.254 metadata.google.internal metadata`.
    pub fn metadata(device: &str, pid: u32) -> HostsBlock {
        HostsBlock {
            device: device.into(),
            pid,
            lines: vec!["169.254.169.254 metadata.google.internal metadata".into()],
        }
    }

    fn render(&self) -> Vec<u8> {
        self.render_after(false)
    }

    /// The block; with `newline_added`, preceded by the newline that ends the file's last
    /// line, which the `BEGIN` line records so that removal takes it away again.
    fn render_after(&self, newline_added: bool) -> Vec<u8> {
        let (nl, begin) = if newline_added {
            ("\n", BEGIN_NEWLINE_ADDED)
        } else {
            ("", BEGIN)
        };
        let mut s = format!(
            "{nl}{begin}{} pid={} (added by `imds-tun up`, removed on exit or by `imds-tun down`)\n",
            self.device, self.pid
        );
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(END);
        s.push_str(&self.device);
        s.push('\n');
        s.into_bytes()
    }
}

/// Why the hosts file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{path}: line {line} opens an imds-tun block for device {device} that never ends; fix or remove it by hand")]
    UnterminatedBlock {
        path: PathBuf,
        line: usize,
        device: String,
    },
    #[error("invalid hosts block: {0}")]
    BadBlock(String),
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

/// How a write reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Temporary file renamed over the original (atomic).
    Renamed,
    /// Rewritten in place (the file could not be replaced, e.g. a bind mount).
    InPlace,
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Tolerate trailing blanks a hand edit may have left.
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn is_begin(line: &[u8], device: &str) -> bool {
    let l = trim_eol(line);
    let Some(rest) = l
        .strip_prefix(BEGIN.as_bytes())
        .or_else(|| l.strip_prefix(BEGIN_NEWLINE_ADDED.as_bytes()))
    else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(device.as_bytes()) else {
        return false;
    };
    rest.is_empty() || rest[0] == b' '
}

fn is_end(line: &[u8], device: &str) -> bool {
    let l = trim_eol(line);
    l.strip_prefix(END.as_bytes()) == Some(device.as_bytes())
}

/// Removes every block of `device` from `content`; returns the new content and how many blocks
/// were removed. Pure: `path` is only for the error message.
pub fn remove_block(
    content: &[u8],
    device: &str,
    path: &Path,
) -> Result<(Vec<u8>, usize), HostsError> {
    let mut out = Vec::with_capacity(content.len());
    let mut removed = 0;
    let mut open_at: Option<usize> = None;
    for (i, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        match open_at {
            None if is_begin(line, device) => open_at = Some(i + 1),
            None => out.extend_from_slice(line),
            Some(_) if is_end(line, device) => {
                open_at = None;
                removed += 1;
            }
            Some(_) => {}
        }
    }
    if let Some(line) = open_at {
        return Err(HostsError::UnterminatedBlock {
            path: path.into(),
            line,
            device: device.into(),
        });
    }
    Ok((out, removed))
}

/// Where to truncate `content` to remove the block of `device`, if the file's only block of
/// that device is its tail: either complete (its `END` line is the file's last line) or torn
/// (a `BEGIN` line with no `END` after it: an append cut short by a crash). Includes the
/// newline before it when its `BEGIN` line says that newline was added.
fn tail_block(content: &[u8], device: &str) -> Option<usize> {
    let mut begin: Option<(usize, bool)> = None;
    let mut after_end = false;
    let mut blocks = 0;
    let mut offset = 0;
    for line in content.split_inclusive(|&b| b == b'\n') {
        let at = offset;
        offset += line.len();
        if is_begin(line, device) {
            blocks += 1;
            let added = line.starts_with(BEGIN_NEWLINE_ADDED.as_bytes());
            begin = Some((at, added));
            after_end = false;
        } else if begin.is_some() && is_end(line, device) {
            after_end = true;
        } else if after_end {
            // Lines after the block's END: it is not the tail.
            return None;
        } else if begin.is_some() && !could_be_ours(line, device) {
            // Inside a block without END (yet), a line `up` never writes: a damaged block
            // of somebody's making, not a torn append; leave it to `remove_block`'s error.
            return None;
        }
    }
    let (at, added) = begin?;
    if blocks != 1 {
        return None;
    }
    if added && at > 0 && content[at - 1] == b'\n' {
        Some(at - 1)
    } else {
        Some(at)
    }
}

/// Whether `line` (possibly cut short by a torn write) is, or begins, a line that `up`
/// writes inside a block of `device`: a host line of [`HostsBlock::metadata`] or the `END`.
fn could_be_ours(line: &[u8], device: &str) -> bool {
    let line = trim_eol(line);
    let end = format!("{END}{device}");
    let mut ours = HostsBlock::metadata(device, 0).lines;
    ours.push(end);
    ours.iter().any(|l| l.as_bytes().starts_with(line))
}

/// Returns `content` with `block` at the start and no other block of the same device.
pub fn insert_block(
    content: &[u8],
    block: &HostsBlock,
    path: &Path,
) -> Result<Vec<u8>, HostsError> {
    let bad = |what: &str| HostsError::BadBlock(what.into());
    if block.device.is_empty() || block.device.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(bad("device name must be non-empty without whitespace"));
    }
    if block.lines.iter().any(|l| {
        l.contains(['\n', '\r'])
            || l.starts_with("# BEGIN imds-tun")
            || l.starts_with("# END imds-tun")
    }) {
        return Err(bad("host lines must be single lines and not markers"));
    }
    let (rest, _) = remove_block(content, &block.device, path)?;
    let mut out = block.render();
    out.extend_from_slice(&rest);
    Ok(out)
}

/// A hosts file at a configurable path (`/etc/hosts` in production, a temporary file in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    path: PathBuf,
}

impl HostsFile {
    pub fn new(path: impl Into<PathBuf>) -> HostsFile {
        HostsFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> HostsError + '_ {
        move |source| HostsError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Adds `block` (replacing a stale block of the same device). A missing file is created.
    /// Atomically at the start of the file where it can be replaced, else appended in place
    /// (module docs).
    pub fn add(&self, block: &HostsBlock) -> Result<WriteMode, HostsError> {
        // A stale block of this device (a killed run) goes first.
        self.remove(&block.device)?;
        let content = match fs::read(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.io("reading")(e)),
        };
        let new = insert_block(&content, block, &self.path)?;
        if !self.path.exists() {
            fs::write(&self.path, &new).map_err(self.io("creating"))?;
            return Ok(WriteMode::Renamed);
        }
        let real = fs::canonicalize(&self.path).map_err(self.io("resolving"))?;
        match write_by_rename(&real, &new) {
            Ok(()) => Ok(WriteMode::Renamed),
            Err(e) => {
                tracing::debug!(path = %real.display(), error = %e, "cannot replace the file; appending in place");
                let joined = !content.is_empty() && !content.ends_with(b"\n");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&real)
                    .map_err(self.io("opening"))?;
                f.write_all_at(&block.render_after(joined), content.len() as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(self.io("appending"))?;
                Ok(WriteMode::InPlace)
            }
        }
    }

    /// Removes the block of `device`; `Ok(false)` (and no write) when there is none. A block
    /// that ends the file (an appended one, or a torn append) is cut off with one truncation.
    pub fn remove(&self, device: &str) -> Result<bool, HostsError> {
        let content = match fs::read(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io("reading")(e)),
        };
        if let Some(at) = tail_block(&content, device) {
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(self.io("opening"))?;
            f.set_len(at as u64)
                .and_then(|()| f.sync_all())
                .map_err(self.io("truncating"))?;
            return Ok(true);
        }
        let (new, removed) = remove_block(&content, device, &self.path)?;
        if removed == 0 {
            return Ok(false);
        }
        write_replacing(&self.path, &new).map_err(self.io("writing"))?;
        Ok(true)
    }

    /// Whether the file holds a block of `device`.
    pub fn has_block(&self, device: &str) -> Result<bool, HostsError> {
        match fs::read(&self.path) {
            Ok(c) => Ok(c
                .split_inclusive(|&b| b == b'\n')
                .any(|l| is_begin(l, device))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("reading")(e)),
        }
    }
}

/// Replaces the content of the existing file at `path`: atomically by rename when possible,
/// else in place. See the module documentation.
pub fn write_replacing(path: &Path, content: &[u8]) -> io::Result<WriteMode> {
    let real = fs::canonicalize(path)?;
    match write_by_rename(&real, content) {
        Ok(()) => Ok(WriteMode::Renamed),
        Err(e) => {
            tracing::debug!(path = %real.display(), error = %e, "cannot replace the file; rewriting it in place");
            write_in_place(&real, content)?;
            Ok(WriteMode::InPlace)
        }
    }
}

fn write_by_rename(real: &Path, content: &[u8]) -> io::Result<()> {
    let meta = fs::metadata(real)?;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let file_name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.imds-tun.{}.tmp", std::process::id()));
    // A leftover from a killed run of ours with the same pid would block O_EXCL.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(content)?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        f.sync_all()?;
        fs::rename(&tmp, real)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_in_place(real: &Path, content: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(real)?;
    // One write of the whole content first, then the truncate: readers never see an empty
    // file, and the torn window is as short as we can make it.
    f.write_all_at(content, 0)?;
    f.set_len(content.len() as u64)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/test/hosts")
    }

    fn roundtrip(original: &[u8]) {
        let block = HostsBlock::metadata("imds0", 42);
        let added = insert_block(original, &block, p()).unwrap();
        assert!(added.starts_with(b"# BEGIN imds-tun device=imds0 pid=42 "));
        assert!(added.ends_with(original));
        let text = String::from_utf8_lossy(&added);
        assert!(text.contains("\n169.254.169.254 metadata.google.internal metadata\n"));
        let (removed, n) = remove_block(&added, "imds0", p()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(removed, original, "bytes must be restored exactly");
    }

    #[test]
    fn add_remove_preserves_bytes() {
        roundtrip(b"127.0.0.1 localhost\n::1 localhost\n");
        roundtrip(b"127.0.0.1 localhost\n# no newline at end");
        roundtrip(b"127.0.0.1 localhost\r\n10.1.1.1 x\r\n");
        roundtrip(b"127.0.0.1 localhost\r\n# crlf, no final newline");
        roundtrip(b"");
        roundtrip(b"\n\n  \t\n");
        roundtrip(b"\xff\xfe not utf-8 \x00 at all\n");
    }

    #[test]
    fn stale_block_from_a_crashed_run_is_replaced_not_duplicated() {
        let original = b"127.0.0.1 localhost\n".to_vec();
        let crashed = insert_block(&original, &HostsBlock::metadata("imds0", 7), p()).unwrap();
        // The user appended lines after the crash; the stale block stays where it was.
        let mut edited = crashed.clone();
        edited.extend_from_slice(b"1.2.3.4 later\n");
        let fresh = insert_block(&edited, &HostsBlock::metadata("imds0", 8), p()).unwrap();
        let text = String::from_utf8(fresh.clone()).unwrap();
        assert_eq!(text.matches("# BEGIN imds-tun").count(), 1);
        assert!(text.contains("pid=8") && !text.contains("pid=7"));
        let (back, n) = remove_block(&fresh, "imds0", p()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(back, b"127.0.0.1 localhost\n1.2.3.4 later\n");
    }

    #[test]
    fn block_in_the_middle_with_crlf_is_removed_exactly() {
        let content = b"a\r\n# BEGIN imds-tun device=imds0 pid=1 (x)\r\n169.254.169.254 metadata\r\n# END imds-tun device=imds0\r\nb\r\n";
        let (out, n) = remove_block(content, "imds0", p()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(out, b"a\r\nb\r\n");
    }

    #[test]
    fn other_devices_blocks_and_lookalikes_are_untouched() {
        let other = insert_block(b"x\n", &HostsBlock::metadata("imds1", 1), p()).unwrap();
        let mut content = other.clone();
        content.extend_from_slice(
            b"# BEGIN imds-tun device=imds00 pid=1\n# END imds-tun device=imds00\n",
        );
        let (out, n) = remove_block(&content, "imds0", p()).unwrap();
        assert_eq!(n, 0);
        assert_eq!(out, content);
    }

    #[test]
    fn unterminated_block_is_an_error_not_a_guess() {
        let content = b"a\n# BEGIN imds-tun device=imds0 pid=1\n169.254.169.254 metadata\nb\n";
        let err = remove_block(content, "imds0", p()).unwrap_err();
        assert!(matches!(err, HostsError::UnterminatedBlock { line: 2, .. }));
        assert!(err.to_string().contains("line 2"));
    }

    #[test]
    fn bad_blocks_are_refused() {
        let mut b = HostsBlock::metadata("imds0", 1);
        b.lines.push("1.1.1.1 a\n2.2.2.2 b".into());
        assert!(insert_block(b"", &b, p()).is_err());
        let b = HostsBlock::metadata("im ds", 1);
        assert!(insert_block(b"", &b, p()).is_err());
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("imds-tun-hosts-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn file_add_remove_keeps_bytes_mode_and_follows_symlinks() {
        let d = temp_dir("file");
        let real = d.join("hosts.real");
        let link = d.join("hosts");
        let original = b"127.0.0.1 localhost\r\n# tail without newline";
        fs::write(&real, original).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let hosts = HostsFile::new(&link);
        assert!(!hosts.has_block("imds0").unwrap());
        assert_eq!(
            hosts.add(&HostsBlock::metadata("imds0", 5)).unwrap(),
            WriteMode::Renamed
        );
        assert!(hosts.has_block("imds0").unwrap());
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::metadata(&real).unwrap().mode() & 0o7777, 0o640);
        assert!(hosts.remove("imds0").unwrap());
        assert!(!hosts.remove("imds0").unwrap(), "second removal is a no-op");
        assert_eq!(fs::read(&real).unwrap(), original);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A crash can cut the in-place append anywhere: at every cut the original bytes are an
    /// untouched prefix, and `remove` restores them exactly (or, for a cut inside the `BEGIN`
    /// line's marker text, leaves the original followed by a partial comment line).
    #[test]
    fn torn_append_at_every_byte_keeps_the_original_lines() {
        let d = temp_dir("torn");
        let f = d.join("hosts");
        for original in [
            &b"127.0.0.1 localhost\n# keep\n"[..],
            b"127.0.0.1 localhost\n# no eol",
        ] {
            let joined = !original.ends_with(b"\n");
            let block = HostsBlock::metadata("imds0", 77).render_after(joined);
            let begin_len = block.iter().position(|&b| b == b' ').unwrap_or(0);
            for cut in 0..=block.len() {
                let mut content = original.to_vec();
                content.extend_from_slice(&block[..cut]);
                fs::write(&f, &content).unwrap();
                let hosts = HostsFile::new(&f);
                let result = hosts.remove("imds0");
                let now = fs::read(&f).unwrap();
                assert!(now.starts_with(original), "cut {cut}: original damaged");
                let begin = if joined { BEGIN_NEWLINE_ADDED } else { BEGIN };
                let marker = usize::from(joined) + begin.len() + "imds0".len();
                if cut >= marker {
                    assert!(result.unwrap(), "cut {cut}: torn block not removed");
                    assert_eq!(now, original, "cut {cut}");
                } else {
                    // Not yet recognisable as a block: a partial comment, left alone.
                    assert!(!result.unwrap(), "cut {cut} ({begin_len})");
                }
            }
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn appended_block_is_removed_by_truncation_even_after_a_stale_one() {
        let d = temp_dir("append");
        let f = d.join("hosts");
        let original = b"127.0.0.1 localhost\n# tail without newline";
        let block = HostsBlock::metadata("imds0", 5);
        let mut appended = original.to_vec();
        appended.extend_from_slice(&block.render_after(true));
        fs::write(&f, &appended).unwrap();
        let hosts = HostsFile::new(&f);
        assert!(hosts.has_block("imds0").unwrap());
        assert_eq!(tail_block(&appended, "imds0"), Some(original.len()));
        assert!(hosts.remove("imds0").unwrap());
        assert_eq!(fs::read(&f).unwrap(), original);
        // A user line after the block: not a tail, removed by rewriting, still exact.
        let mut edited = appended.clone();
        edited.extend_from_slice(b"169.254.1.1 later\n");
        assert_eq!(tail_block(&edited, "imds0"), None);
        fs::write(&f, &edited).unwrap();
        assert!(hosts.remove("imds0").unwrap());
        let mut want = original.to_vec();
        want.extend_from_slice(b"\n169.254.1.1 later\n");
        assert_eq!(fs::read(&f).unwrap(), want);
        // A damaged block followed by lines `up` never writes is an error, not a truncation.
        let damaged = b"# BEGIN imds-tun device=imds0 pid=1\n127.0.0.1 mine\n";
        assert_eq!(tail_block(damaged, "imds0"), None);
        fs::write(&f, damaged).unwrap();
        assert!(hosts.remove("imds0").is_err());
        assert_eq!(fs::read(&f).unwrap(), damaged);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn in_place_rewrite_shrinks_and_grows() {
        let d = temp_dir("inplace");
        let f = d.join("hosts");
        fs::write(&f, b"0123456789").unwrap();
        write_in_place(&f, b"abc").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"abc");
        write_in_place(&f, b"abcdefghijklmnop").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"abcdefghijklmnop");
        fs::remove_dir_all(&d).unwrap();
    }
}
