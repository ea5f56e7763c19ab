//! The driver side of the HIMDS challenge: the door's [`KeyRing`] and the key files on disk.
//!
//! Contract: [`HimdsKeys::open`] prepares the key directory (created when missing, mode 0750
//! `root:himds` when running as root; the group is added when missing) and
//! [`HimdsKeys::respond`] answers one HIMDS request, making the key-file changes the cloud asks
//! for *before* its reply is sent (a 401 never names a file that does not exist yet). A key
//! file is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`), mode 0640 and owned by
//! `root:himds` when running as root (members of `himds` read it, as on Azure Arc), else 0600
//! and owned by the running user (only that user's processes can answer the challenge). It
//! holds the secret with no newline. [`HimdsKeys::close`] removes every outstanding key file,
//! then the directories and the group it created, and reports what it undid.
//!
//! If the directory or a key file cannot be written the token request gets 500 and the cause
//! is logged (never the secret).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::group::{self, AddedGroup};
use super::journal::Journal;
use crate::cloud::azure::himds::{KeyEffect, KeyRing, KEY_ENTROPY};
use crate::cloud::{Reply, Request, RequestContext};
use crate::config::doors::HimdsConfig;
use crate::http::Response;
use crate::snapshot::Snapshot;

/// A HIMDS door's keys and their directory.
pub struct HimdsKeys {
    ring: Mutex<KeyRing>,
    dir: PathBuf,
    /// The group key files belong to (running as root).
    gid: Option<u32>,
    /// What `open` created, undone by `close`.
    created: Mutex<Created>,
}

#[derive(Debug, Default)]
struct Created {
    /// Directories, deepest last.
    dirs: Vec<PathBuf>,
    group: Option<AddedGroup>,
    /// Every change, recorded before it is made (for `down` after a crash).
    journal: Journal,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks but an I/O error message; the data stays whole.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl std::fmt::Debug for HimdsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HimdsKeys")
            .field("dir", &self.dir)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl HimdsKeys {
    /// Prepares `config.keyDirectory` (and, as root, the group) for key files.
    /// `journal` is where `up` records the door's changes ([`super::journal`]); `None` for
    /// `serve`.
    pub fn open(config: &HimdsConfig, journal: Option<PathBuf>) -> io::Result<HimdsKeys> {
        let root = is_root();
        let mut added_group = None;
        let mut journal = Journal::new(journal);
        let gid = if root {
            let (gid, added) = group::ensure(
                Path::new(group::GROUP_FILE),
                Path::new(group::GSHADOW_FILE),
                &config.group,
                &mut |lines| journal.record(|c| c.group_lines.extend_from_slice(lines)),
            )
            .map_err(|e| context("cannot add the group to", Path::new(group::GROUP_FILE), e))?;
            added_group = added;
            Some(gid)
        } else {
            None
        };
        let keys = HimdsKeys {
            ring: Mutex::new(KeyRing::new()),
            dir: config.key_directory.clone(),
            gid,
            created: Mutex::new(Created {
                dirs: Vec::new(),
                group: added_group,
                journal,
            }),
        };
        if let Err(e) = keys.make_directory() {
            keys.close();
            return Err(e);
        }
        Ok(keys)
    }

    /// Creates the key directory and its missing parents; only the key directory itself gets
    /// the restrictive mode and the group.
    fn make_directory(&self) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut p = self.dir.as_path();
        while !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for dir in missing.iter().rev() {
            let mode = if *dir == self.dir { 0o750 } else { 0o755 };
            lock(&self.created)
                .journal
                .record(|c| c.dirs.push(dir.clone()))
                .map_err(|e| context("cannot record", dir, e))?;
            fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .map_err(|e| context("cannot create", dir, e))?;
            lock(&self.created).dirs.push(dir.clone());
        }
        if lock(&self.created).dirs.contains(&self.dir) {
            if let Some(gid) = self.gid {
                std::os::unix::fs::chown(&self.dir, Some(0), Some(gid))
                    .map_err(|e| context("cannot chown", &self.dir, e))?;
            }
        }
        Ok(())
    }

    /// The key directory.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// Answers one request at the HIMDS door.
    pub fn respond<'s>(
        &self,
        snapshot: &'s Snapshot,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Reply<'s> {
        let mut ring = lock(&self.ring);
        let answer = snapshot.respond_himds(req, ctx, &mut ring, &mut random_entropy);
        for effect in &answer.effects {
            if let Err(e) = self.apply(effect) {
                tracing::error!(error = %e, "HIMDS key file");
                if matches!(effect, KeyEffect::Write { .. }) {
                    return Reply::Dynamic(server_error());
                }
            }
        }
        answer.reply
    }

    /// Removes the files of keys whose time is up (called periodically by the door).
    pub fn expire(&self, now: SystemTime) {
        let effects = lock(&self.ring).expire(now);
        for effect in &effects {
            if let Err(e) = self.apply(effect) {
                tracing::warn!(error = %e, "HIMDS key file");
            }
        }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    fn apply(&self, effect: &KeyEffect) -> io::Result<()> {
        match effect {
            KeyEffect::Write { name, secret } => {
                let path = self.path_of(name);
                lock(&self.created)
                    .journal
                    .record(|c| c.key_files.push(path.clone()))
                    .map_err(|e| context("cannot record", &path, e))?;
                let mode = if self.gid.is_some() { 0o640 } else { 0o600 };
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| context("cannot create", &path, e))?;
                if let Some(gid) = self.gid {
                    std::os::unix::fs::fchown(&f, Some(0), Some(gid))
                        .map_err(|e| context("cannot chown", &path, e))?;
                }
                f.write_all(secret.as_bytes())
                    .map_err(|e| context("cannot write", &path, e))
            }
            KeyEffect::Remove { name } => {
                let path = self.path_of(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(context("cannot remove", &path, e))
                    }
                    _ => lock(&self.created)
                        .journal
                        .record(|c| c.key_files.retain(|f| *f != path))
                        .map_err(|e| context("cannot record", &path, e)),
                }
            }
        }
    }

    /// Removes every outstanding key file, then what [`HimdsKeys::open`] created; returns a
    /// line per thing undone. Idempotent; requests answered afterwards get no key files
    /// removed from under them that they were promised, since none remain.
    pub fn close(&self) -> Vec<String> {
        let mut undone = Vec::new();
        let effects = lock(&self.ring).drain();
        let keys = effects.len();
        for effect in &effects {
            if let Err(e) = self.apply(effect) {
                tracing::warn!(error = %e, "HIMDS key file");
            }
        }
        if keys > 0 {
            undone.push(format!("removed {keys} HIMDS key file(s)"));
        }
        let mut created = lock(&self.created);
        let mut clean = created.journal.is_clean_of_keys();
        for dir in created.dirs.drain(..).rev() {
            match fs::remove_dir(&dir) {
                Ok(()) => undone.push(format!("removed directory {}", dir.display())),
                Err(e) => {
                    clean = false;
                    tracing::warn!("cannot remove {}: {e}", dir.display())
                }
            }
        }
        if let Some(added) = created.group.take() {
            match added.undo() {
                Ok(()) => undone.push(format!("removed group {} ({})", added.name, added.gid)),
                Err(e) => {
                    clean = false;
                    tracing::warn!("cannot remove group {}: {e}", added.name)
                }
            }
        }
        // Everything is undone: the journal has nothing left for `down`.
        if clean {
            created.journal.remove();
        }
        undone
    }
}

impl Drop for HimdsKeys {
    fn drop(&mut self) {
        self.close();
    }
}

fn server_error() -> Response {
    Response::new(500)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(
            serde_json::json!({
                "error": "server_error",
                "error_description": "the HIMDS key file could not be written",
            })
            .to_string(),
        )
}

/// Fresh key material from the kernel.
fn random_entropy() -> [u8; KEY_ENTROPY] {
    let mut buf = [0u8; KEY_ENTROPY];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the valid buffer slice given.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // getrandom(2) without GRND_NONBLOCK only fails before the pool is initialised
            // or on EINTR; /dev/urandom is the fallback.
            if let Ok(mut f) = fs::File::open("/dev/urandom") {
                if io::Read::read_exact(&mut f, &mut buf).is_ok() {
                    return buf;
                }
            }
            panic!("no randomness available for HIMDS keys");
        }
    }
    buf
}
