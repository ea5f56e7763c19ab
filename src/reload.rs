//! Reloading the configuration: what a reload is, and the file watcher that triggers one.
//!
//! Contract: there is one reload, [`crate::control::Control::reload`], and every trigger
//! calls it: SIGHUP (`up`, `serve`), `imds-tun ctl reload`, and [`watch`] when the file
//! changes. It reads the configuration file, applies the command line's doors, validates it
//! in full and renders the whole snapshot ([`crate::snapshot::Snapshot::build`]); only a
//! snapshot that built swaps in ([`crate::snapshot::SnapshotCell::replace`]), together with
//! the document live edits work on (unpersisted `ctl set`s are dropped: the file is the
//! truth). On any problem the running snapshot and document stay, and the error (file, JSON
//! path, what was expected) is logged and returned, so `ctl reload` can show it to its caller.
//! Connections are never touched: each request takes the snapshot current when it is
//! answered, so an open keep-alive connection sees the old answers before the swap and the new
//! ones after it, and nothing is reset.
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
//! [`SETTLE`] and a file whose bytes did not change since it was last read or written (by
//! `ctl set --persist`) is not reloaded again
//! ([`crate::control::Control::reload_if_changed`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::config::{ConfigErrors, ServerConfig};
use crate::control::Control;

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

/// The parts of `$.server` that size tables and routes (see the module docs).
pub(crate) fn fixed_at_start(s: &ServerConfig) -> impl PartialEq + '_ {
    (
        &s.addresses,
        s.max_connections,
        s.per_source_limit(),
        s.max_half_open,
        s.max_time_wait,
    )
}

/// Starts a thread that reloads whenever the configuration file changes (see the module
/// docs). Does nothing without a file. The thread lives as long as the process.
pub fn watch(control: Arc<Control>) -> std::io::Result<()> {
    let Some(file) = control.file() else {
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
                // Logged by the reload itself, success or failure.
                let _ = control.reload_if_changed("configuration file changed");
            }
        })?;
    Ok(())
}
