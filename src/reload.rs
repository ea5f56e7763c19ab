//! Reloading the configuration: the one function every trigger calls (SIGHUP, the watched
//! file, and a control command), and the file watcher.
//!
//! Contract: [`Reloader::reload`] reads the configuration file, applies the command line's
//! overrides, validates it in full and renders the whole snapshot ([`Snapshot::build`]);
//! only a snapshot that built swaps in ([`SnapshotCell::replace`]). On any problem the running
//! snapshot stays, the error (file, JSON path, what was expected) is logged and returned, so a
//! control command can show it to its caller. Connections are never touched: each request
//! takes the snapshot current when it is answered, so an open keep-alive connection sees the
//! old answers before the swap and the new ones after it, and nothing is reset.
//!
//! What a reload does not change: the keys (they outlive snapshots), the addresses `up`
//! routes and `serve` listens on, and the connection bounds that size `up`'s tables and
//! `serve`'s admission (`$.server.maxConnections`, `maxConnectionsPerSource`, `maxHalfOpen`,
//! `maxTimeWait`, `addresses`); a reload that changes those says they apply at the next start.
//!
//! [`watch`] follows the file with inotify on its directory, not on the file: editors and
//! configuration tools replace a file by writing a new one and renaming it over the old
//! (`IN_MOVED_TO`), which a watch on the old inode would never see; in-place writes end with
//! `IN_CLOSE_WRITE`. A path that is a symbolic link (Kubernetes ConfigMap volumes swap a
//! `..data` link) is reloaded on any change in its directory. Events are settled for
//! [`SETTLE`] and a file whose bytes did not change since the last attempt is not reloaded
//! again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::config::{self, ConfigErrors, Overrides};
use crate::snapshot::{Keys, Snapshot, SnapshotCell};

/// How long the watcher lets a burst of events settle before it reads the file.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Why a reload kept the running configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("running on the embedded default: there is no file to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Everything a reload needs; shared by every trigger.
#[derive(Debug)]
pub struct Reloader {
    cell: Arc<SnapshotCell>,
    keys: Keys,
    file: Option<PathBuf>,
    overrides: Overrides,
    /// The text of the last attempt (serialises reloads, and lets the watcher skip a file
    /// that did not change).
    last: Mutex<Option<String>>,
}

impl Reloader {
    pub fn new(
        cell: Arc<SnapshotCell>,
        keys: Keys,
        file: Option<PathBuf>,
        overrides: Overrides,
    ) -> Arc<Reloader> {
        let last = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
        Arc::new(Reloader {
            cell,
            keys,
            file,
            overrides,
            last: Mutex::new(last),
        })
    }

    /// The configuration file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reloads now (`trigger` names who asked, for the log).
    pub fn reload(&self, trigger: &str) -> Result<(), ReloadError> {
        self.attempt(trigger, false)
    }

    /// Reloads if the file's bytes differ from the last attempt's (the watcher's entry).
    pub fn reload_if_changed(&self, trigger: &str) -> Result<(), ReloadError> {
        self.attempt(trigger, true)
    }

    fn attempt(&self, trigger: &str, only_if_changed: bool) -> Result<(), ReloadError> {
        let Some(path) = &self.file else {
            tracing::info!("{trigger}: running on the embedded default; nothing to reload");
            return Err(ReloadError::NoFile);
        };
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let source = path.display().to_string();
        let text = config::read_file(path);
        if only_if_changed && text.as_ref().ok() == last.as_ref() {
            return Ok(());
        }
        let result = text.and_then(|t| {
            let r = config::load_str(&t, &source, &config::process_env);
            *last = Some(t);
            r
        });
        let result = result.and_then(|mut c| {
            self.overrides.apply(&mut c);
            Snapshot::build(c, &self.keys, &source)
        });
        crate::metrics::global()
            .counter(
                "imds_tun_config_reloads_total",
                "Configuration reloads (SIGHUP, the watched file, control), by result; a failed \
                 one keeps the previous configuration.",
                &[("result", if result.is_ok() { "ok" } else { "failed" })],
            )
            .inc();
        match result {
            Ok(s) => {
                let before = self.cell.load();
                if fixed_at_start(&before.config.server) != fixed_at_start(&s.config.server) {
                    tracing::warn!(
                        "{trigger}: $.server addresses and connection bounds changed; they apply at the next start"
                    );
                }
                self.cell.replace(s);
                tracing::info!("{trigger}: reloaded {source}");
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    "{trigger}: reload of {source} failed, still serving the previous configuration:\n{e}"
                );
                Err(ReloadError::Invalid(e))
            }
        }
    }
}

/// The parts of `$.server` that size tables and routes (see the module docs).
fn fixed_at_start(s: &config::ServerConfig) -> impl PartialEq + '_ {
    (
        &s.addresses,
        s.max_connections,
        s.max_connections_per_source,
        s.max_half_open,
        s.max_time_wait,
    )
}

/// Starts a thread that reloads whenever the configuration file changes (see the module
/// docs). Does nothing without a file. The thread lives as long as the process.
pub fn watch(reloader: Arc<Reloader>) -> std::io::Result<()> {
    let Some(file) = reloader.file() else {
        return Ok(());
    };
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(|n| n.to_os_string());
    let follows_link = std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        &dir,
        AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
    )?;
    tracing::info!("watching {} for changes", file.display());
    std::thread::Builder::new()
        .name("imds-tun-watch".into())
        .spawn(move || loop {
            let events = match inotify.read_events() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("watching the configuration failed, reload with SIGHUP: {e}");
                    return;
                }
            };
            let ours = events
                .iter()
                .any(|e| follows_link || (e.name.is_some() && e.name == name));
            if ours {
                // Let a burst of writes and renames finish, then read the file once.
                std::thread::sleep(SETTLE);
                let _ = reloader.reload_if_changed("configuration file changed");
            }
        })?;
    Ok(())
}
