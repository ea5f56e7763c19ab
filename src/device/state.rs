//! The record of what `up` changed on the host, and the per-device lock.
//!
//! # Files (default directory `/run/imds-tun`, mode 0700; tmpfs, so a reboot clears it, as it
//! clears everything recorded)
//!
//! - `<device>.lock`: a pidfile held with `flock(LOCK_EX)` for as long as `up` runs. The lock,
//!   not the file's existence, is the truth: the kernel releases it when the process dies
//!   however it dies, so a leftover file from a SIGKILL never blocks the next `up`. The file
//!   holds the owner's pid so a second `up` can name it.
//! - `<device>.json`: the [`Record`]. It is written (atomically: temp file + fsync + rename)
//!   *before* each change is made, so after a crash it lists everything that may exist; undo
//!   treats "not there" as done. It is removed after a complete teardown. A record whose lock
//!   is free is therefore a leftover of a killed run.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An address with its prefix length, e.g. `169.254.169.254/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// A host prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Everything one `up` changed (or was about to change) on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version, for `down` run by a newer binary.
    pub version: u32,
    /// The `up` process.
    pub pid: u32,
    /// The TUN device name.
    pub device: String,
    /// The device's index once created. `down` deletes the device only if an interface with
    /// this name still has this index (indexes are not reused while a namespace lives), so it
    /// never deletes someone else's device that took the name later.
    pub ifindex: Option<u32>,
    /// Addresses added to the device.
    pub addresses: Vec<Prefix>,
    /// Routes added through the device (main table).
    pub routes: Vec<Prefix>,
    /// The hosts file a block of this device was added to.
    pub hosts_file: Option<PathBuf>,
    /// The HIMDS door's own record (key files, key directory, `himds` group lines), written
    /// by [`crate::doors::journal`] before each of those changes; named here before the door
    /// opens, so `down` finds it after a crash.
    #[serde(default)]
    pub himds_journal: Option<PathBuf>,
    /// Where the metrics endpoint listens (`--metrics`), for `imds-tun status`. Nothing to
    /// undo: the listener dies with the process.
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
    /// The control socket ([`crate::control`]), named here before it is bound.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
}

pub const RECORD_VERSION: u32 = 1;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("imds-tun is already running for device {device} ({}); stop it first (`imds-tun down` or kill it)",
        .pid.map_or("pid unknown".to_string(), |p| format!("pid {p}")))]
    Held { device: String, pid: Option<u32> },
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> LockError + 'a {
    move |source| LockError::Io {
        path: path.into(),
        action,
        source,
    }
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub fn lock_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.lock"))
}

pub fn record_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.json"))
}

/// Where the HIMDS door of `device`'s `up` keeps its journal.
pub fn himds_journal_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.himds.json"))
}

/// The held per-device lock. Dropping it removes the pidfile and releases the lock.
#[derive(Debug)]
pub struct Lock {
    /// Open only to keep the flock: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock of `device` without waiting, or says who holds it.
    pub fn acquire(dir: &Path, device: &str) -> Result<Lock, LockError> {
        ensure_dir(dir).map_err(io_err(dir, "creating the state directory"))?;
        let path = lock_path(dir, device);
        // Retry when the file we locked was unlinked meanwhile by a releasing owner: a lock on
        // an unlinked inode would exclude nobody.
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_err(&path, "opening the lock file"))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(io_err(&path, "locking")(e));
                }
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(LockError::Held {
                    device: device.into(),
                    pid: s.trim().parse().ok(),
                });
            }
            let same = match (file.metadata(), fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)
                .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
                .map_err(io_err(&path, "writing the pid"))?;
            return Ok(Lock { _file: file, path });
        }
        Err(io_err(&path, "locking")(io::Error::other(
            "the lock file keeps being replaced",
        )))
    }

    /// Whether the lock of `device` is held by a live process, and by which pid. Does not
    /// take it.
    pub fn holder(dir: &Path, device: &str) -> Option<Option<u32>> {
        match Lock::acquire(dir, device) {
            Err(LockError::Held { pid, .. }) => Some(pid),
            _ => None,
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, then let the close release it.
        // (`self.file` closes after this body runs.)
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file, fsync and rename, so a
/// crash leaves the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

impl Record {
    /// A fresh record for `device` owned by this process.
    pub fn new(device: &str) -> Record {
        Record {
            version: RECORD_VERSION,
            pid: std::process::id(),
            device: device.into(),
            ..Record::default()
        }
    }

    /// Writes the record atomically to `<dir>/<device>.json`.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        ensure_dir(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomic(&record_path(dir, &self.device), &json)
    }

    /// Reads the record of `device`, if there is one.
    pub fn load(dir: &Path, device: &str) -> io::Result<Option<Record>> {
        let path = record_path(dir, device);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record of `device` (absent is fine).
    pub fn remove(dir: &Path, device: &str) -> io::Result<()> {
        match fs::remove_file(record_path(dir, device)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("imds-tun-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn record_roundtrips_and_dir_is_private() {
        let d = temp_dir("record");
        let mut r = Record::new("imds0");
        r.ifindex = Some(7);
        r.addresses
            .push(Prefix::host("169.254.255.1".parse().unwrap()));
        r.routes
            .push(Prefix::host("fd00:ec2::254".parse().unwrap()));
        r.hosts_file = Some("/etc/hosts".into());
        r.save(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert_eq!(Record::load(&d, "imds0").unwrap(), Some(r));
        assert_eq!(Record::load(&d, "other").unwrap(), None);
        Record::remove(&d, "imds0").unwrap();
        Record::remove(&d, "imds0").unwrap();
        assert_eq!(Record::load(&d, "imds0").unwrap(), None);
        fs::write(record_path(&d, "bad"), b"{").unwrap();
        assert!(Record::load(&d, "bad").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn second_lock_fails_naming_the_pid_and_release_frees_it() {
        let d = temp_dir("lock");
        let lock = Lock::acquire(&d, "imds0").unwrap();
        let err = Lock::acquire(&d, "imds0").unwrap_err();
        let me = std::process::id();
        assert!(matches!(err, LockError::Held { pid: Some(p), .. } if p == me));
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        assert_eq!(Lock::holder(&d, "imds0"), Some(Some(me)));
        // Another device is independent.
        let other = Lock::acquire(&d, "imds1").unwrap();
        drop(lock);
        assert!(!lock_path(&d, "imds0").exists());
        assert_eq!(Lock::holder(&d, "imds0"), None);
        let again = Lock::acquire(&d, "imds0").unwrap();
        drop((again, other));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_pidfile_without_a_lock_does_not_block() {
        let d = temp_dir("stale");
        ensure_dir(&d).unwrap();
        fs::write(lock_path(&d, "imds0"), b"999999\n").unwrap();
        let lock = Lock::acquire(&d, "imds0").unwrap();
        let pid: u32 = fs::read_to_string(lock_path(&d, "imds0"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
        drop(lock);
        fs::remove_dir_all(&d).unwrap();
    }
}
