//! The control interface of a running instance: `imds-tun ctl ...` over a Unix socket.
//!
//! # Protocol
//!
//! One connection, one request line, one response line, both JSON ([`protocol`]). The socket
//! ([`server`]) is mode 0600 and answers only root and the user the server runs as (checked
//! with `SO_PEERCRED`); `up` puts it at `<state-dir>/ctl.sock` and records it, so it is
//! removed on exit and by `down`; `serve` opens one only with `--ctl PATH`.
//!
//! # Commands
//!
//! - `get`, `set`, `delete`: a cloud's metadata path mapped onto the configuration document
//!   ([`edit`]); an edit is made on a copy, loaded exactly as a file would be (same errors,
//!   with JSON paths), rendered into a whole new snapshot and swapped in
//!   ([`crate::snapshot::SnapshotCell::replace`], which wakes GCE's hanging GETs). An edit that
//!   does not validate changes nothing and returns every problem. `persist` also writes the
//!   edited document to the configuration file (temp file + rename, mode and owner kept),
//!   refused when running on the embedded default.
//! - `reload`: re-reads the file ([`Control::reload`], the one reload that SIGHUP and the
//!   file watcher, [`crate::reload::watch`], call too); edits that were not persisted are gone
//!   after it, since the file is the truth.
//! - `status`: uptime, open connections, parked requests, requests per cloud and tokens
//!   issued, read from the metrics registry ([`status`]), and the live state's counts (current events, fault rules, faults
//!   injected).
//! - `event`, `fault`: the live state ([`crate::live`]): schedule, list and cancel events,
//!   add, list and clear injected faults. The request carries the command line's words, read
//!   by [`crate::live::command::parse`] (the same commands the configuration becomes); the
//!   cell is ticked before answering, so a GCE value set by `event gce` is served (and wakes
//!   hanging GETs) by the time `ctl` returns. These never touch the configuration document:
//!   a reload keeps what commands added.
//!
//! # Adding a command
//!
//! Add a variant to [`protocol::Request`] (its fields are the JSON keys) and one arm to
//! [`Control::handle`] that returns a [`protocol::Response`]; the socket, the framing and the
//! client need nothing else. The `ctl` subcommand in `main.rs` then builds the variant from
//! its arguments.
//!
//! Invariants: edits and reloads are serialised (one lock around read-modify-swap), so two
//! `ctl set`s never lose one another and a reload never interleaves with an edit; the document
//! and the served snapshot always correspond (both change together or neither does). No I/O
//! but the configuration file's.

pub mod client;
pub mod edit;
pub mod protocol;
pub mod server;
pub mod status;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::config::doors::DoorFlags;
use crate::config::{self, ConfigErrors, DEFAULT_SOURCE};
use crate::reload::{self, ReloadError};
use crate::snapshot::{Keys, Snapshot, SnapshotCell};
use edit::{Op, Target};
use protocol::{Request, Response};

/// Why the control interface could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The running instance as the control interface sees it.
pub struct Control {
    started: Instant,
    mode: &'static str,
    cell: Arc<SnapshotCell>,
    keys: Keys,
    doors: DoorFlags,
    /// The configuration file; `None` for the embedded default.
    file: Option<PathBuf>,
    /// What is served and what the file last held. The lock also serialises edits and
    /// reloads.
    served: Mutex<Served>,
}

/// The configuration behind the served snapshot.
struct Served {
    /// The configuration document now served (the file's, plus unpersisted edits).
    document: Value,
    /// The file's text as last read or written here: the watcher does not reload a file whose
    /// bytes are the same (a `--persist` it just wrote, an editor's save without a change).
    file_text: Option<String>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("mode", &self.mode)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Controls `cell`, which serves `file` (or the embedded default) with `doors` on top.
    pub fn new(
        mode: &'static str,
        cell: Arc<SnapshotCell>,
        keys: Keys,
        doors: DoorFlags,
        file: Option<PathBuf>,
    ) -> Result<Control, ControlError> {
        let (path, text) = match &file {
            Some(path) => (
                path.clone(),
                std::fs::read_to_string(path).map_err(|source| ControlError::Read {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => (
                PathBuf::from(DEFAULT_SOURCE),
                config::DEFAULT_JSON.to_string(),
            ),
        };
        let document =
            serde_json::from_str(&text).map_err(|source| ControlError::Parse { path, source })?;
        let file_text = file.as_ref().map(|_| text);
        Ok(Control {
            started: Instant::now(),
            mode,
            cell,
            keys,
            doors,
            file,
            served: Mutex::new(Served {
                document,
                file_text,
            }),
        })
    }

    /// The configuration file; `None` for the embedded default.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Get { cloud, path } => {
                let served = lock(&self.served);
                let doc = &served.document;
                match Target::parse(cloud, &path, doc).and_then(|t| t.get(doc)) {
                    Ok(v) => Response::ok(v),
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Request::Set {
                cloud,
                path,
                value,
                persist,
            } => self.edit(cloud, &path, Op::Set(value), persist),
            Request::Delete {
                cloud,
                path,
                persist,
            } => self.edit(cloud, &path, Op::Delete, persist),
            Request::Event { args } => self.live("event", &args),
            Request::Fault { args } => self.live("fault", &args),
            Request::Reload {} => match self.reload("ctl reload") {
                Ok(()) => Response::ok(Value::String(format!(
                    "reloaded {}",
                    self.file
                        .as_deref()
                        .unwrap_or(Path::new(DEFAULT_SOURCE))
                        .display()
                ))),
                Err(ReloadError::Invalid(errors)) => Response::invalid("reload", &errors),
                Err(e) => Response::error(e.to_string()),
            },
            Request::Status {} => {
                let mut status = self.status();
                if let Some(result) = status.result.as_mut() {
                    self.live_counts(result);
                }
                status
            }
        }
    }

    /// `event ...` and `fault ...`: one command to the live state, at the current time.
    fn live(&self, noun: &str, args: &[String]) -> Response {
        let words: Vec<&str> = std::iter::once(noun)
            .chain(args.iter().map(String::as_str))
            .collect();
        let command = match crate::live::command::parse(&words) {
            Ok(c) => c,
            Err(e) => return Response::error(format!("{noun}: {e}")),
        };
        let now = SystemTime::now();
        match self.cell.live().apply(command, now) {
            Ok(result) => {
                self.cell.tick(now);
                tracing::info!(
                    command = noun,
                    action = args.first().map_or("", String::as_str),
                    "live command applied"
                );
                Response::ok(result)
            }
            Err(e) => Response::error(format!("{noun}: {e}")),
        }
    }

    /// The live state's counts in `ctl status`.
    fn live_counts(&self, status: &mut Value) {
        let live = self.cell.live();
        let (events, faults) = live.current(SystemTime::now());
        if let Value::Object(m) = status {
            m.insert("events_current".into(), events.into());
            m.insert(
                "events_scheduled".into(),
                live.counters.events_scheduled().into(),
            );
            m.insert("fault_rules".into(), faults.into());
            m.insert(
                "faults_injected".into(),
                live.counters.faults_injected().into(),
            );
        }
    }

    /// The one reload (SIGHUP, `ctl reload`, and the file watcher through
    /// [`Control::reload_if_changed`]; `trigger` names who asked, for the log). Re-reads the
    /// configuration file, loads it exactly as at start (environment overrides, full
    /// validation, the command line's doors) and renders a whole snapshot; only one that built
    /// is swapped in, and the document live edits work on becomes the file's (unpersisted
    /// edits are dropped: the file is the truth). Otherwise everything stays as it was and the
    /// errors (file, JSON path, what was expected) are logged and returned. Counted in
    /// `imds_tun_config_reloads_total{result}`. See [`crate::reload`] for what a reload does
    /// not change.
    pub fn reload(&self, trigger: &str) -> Result<(), ReloadError> {
        self.attempt(trigger, false)
    }

    /// [`Control::reload`] if the file's bytes differ from what was last read or written here
    /// (the watcher's entry: a burst of events, or a rename of the same content, is no
    /// reload).
    pub fn reload_if_changed(&self, trigger: &str) -> Result<(), ReloadError> {
        self.attempt(trigger, true)
    }

    fn attempt(&self, trigger: &str, only_if_changed: bool) -> Result<(), ReloadError> {
        let Some(path) = &self.file else {
            tracing::info!("{trigger}: running on the embedded default; nothing to reload");
            return Err(ReloadError::NoFile);
        };
        let mut served = lock(&self.served);
        let source = path.display().to_string();
        let text = config::read_file(path);
        if only_if_changed && text.as_ref().ok() == served.file_text.as_ref() {
            return Ok(());
        }
        let loaded = text.and_then(|text| {
            // Remembered even when invalid: the watcher waits for the next change of it.
            let loaded = load_text(&text, &source);
            served.file_text = Some(text);
            loaded
        });
        let built = loaded.and_then(|(mut cfg, document)| {
            self.doors.apply(&mut cfg);
            Ok((Snapshot::build(cfg, &self.keys, &source)?, document))
        });
        crate::metrics::global()
            .counter(
                "imds_tun_config_reloads_total",
                "Configuration reloads (SIGHUP, the watched file, ctl reload), by result; a \
                 failed one keeps the previous configuration.",
                &[("result", if built.is_ok() { "ok" } else { "failed" })],
            )
            .inc();
        match built {
            Ok((snapshot, document)) => {
                if reload::fixed_at_start(&self.cell.load().config.server)
                    != reload::fixed_at_start(&snapshot.config.server)
                {
                    tracing::warn!(
                        "{trigger}: $.server addresses and connection bounds changed; they apply at the next start"
                    );
                }
                self.cell.replace(snapshot);
                served.document = document;
                tracing::info!("{trigger}: reloaded {source}");
                Ok(())
            }
            Err(errors) => {
                tracing::error!(
                    "{trigger}: reload of {source} failed, still serving the previous configuration:\n{errors}"
                );
                Err(ReloadError::Invalid(errors))
            }
        }
    }

    fn edit(&self, cloud: edit::Cloud, path: &str, op: Op, persist: bool) -> Response {
        if persist && self.file.is_none() {
            return Response::error(
                "--persist: running on the embedded default, there is no file to write \
                 (start with --config FILE)",
            );
        }
        let mut served = lock(&self.served);
        let mut edited = served.document.clone();
        let target = match Target::parse(cloud, path, &served.document) {
            Ok(t) => t,
            Err(e) => return Response::error(e.to_string()),
        };
        if let Err(e) = target.apply(&mut edited, &op) {
            return Response::error(e.to_string());
        }
        let snapshot = match self.build(&edited) {
            Ok(s) => s,
            Err(errors) => return Response::invalid("edit", &errors),
        };
        if persist {
            if let Some(file) = &self.file {
                match write_document(file, &edited) {
                    Ok(text) => served.file_text = Some(text),
                    Err(e) => {
                        return Response::error(format!(
                            "--persist: cannot write {}: {e}; nothing changed",
                            file.display()
                        ))
                    }
                }
            }
        }
        self.cell.replace(snapshot);
        let result = target.get(&edited).unwrap_or(Value::Null);
        served.document = edited;
        tracing::info!(
            cloud = ?cloud,
            path = %target.path,
            persisted = persist,
            "live edit applied"
        );
        Response::ok(result)
    }

    fn status(&self) -> Response {
        let s = status::Status::read(
            crate::metrics::global(),
            self.started.elapsed().as_secs(),
            self.mode,
            self.file
                .as_ref()
                .map_or(DEFAULT_SOURCE.to_string(), |p| p.display().to_string()),
        );
        Response::ok(serde_json::to_value(s).unwrap_or(Value::Null))
    }

    /// Loads `doc` exactly as a file (environment overrides, validation), with the command
    /// line's doors, and renders it.
    fn build(&self, doc: &Value) -> Result<Snapshot, ConfigErrors> {
        let source = self
            .file
            .as_ref()
            .map_or(DEFAULT_SOURCE.to_string(), |p| p.display().to_string());
        let mut cfg = config::load_str(&doc.to_string(), &source, &config::process_env)?;
        self.doors.apply(&mut cfg);
        Snapshot::build(cfg, &self.keys, &source)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is a single assignment after all fallible work.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads a file's text as at start, and its document for live edits.
fn load_text(text: &str, source: &str) -> Result<(config::Config, Value), ConfigErrors> {
    let cfg = config::load_str(text, source, &config::process_env)?;
    // `load_str` parsed the same text as JSON already.
    let document = serde_json::from_str(text).map_err(|e| {
        ConfigErrors(vec![config::ConfigError {
            file: source.to_string(),
            path: "$".into(),
            expected: format!("valid JSON ({e})"),
        }])
    })?;
    Ok((cfg, document))
}

/// Writes `doc` to `path` atomically: a temp file beside it with the file's mode and owner,
/// synced, renamed over it, and the directory synced. Returns the text written.
fn write_document(path: &Path, doc: &Value) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.imds-tun-ctl.tmp"));
    let mut text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    text.push('\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(meta.mode() & 0o7777)
            .open(&tmp)?;
        // The mode given at creation is filtered by the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        if let Err(e) = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())) {
            // Only root may give a file away; a user editing their own file keeps it anyway.
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control of a snapshot of `text` in a fresh file, with `doors` from the command line.
    fn control_of(name: &str, text: &str, doors: DoorFlags) -> (Control, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("imds-tun-control-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("config.json");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let keys = Keys::fixed(3);
        let mut cfg = config::load_str(text, "t", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        doors.apply(&mut cfg);
        let snapshot = Snapshot::build(cfg, &keys, "t").unwrap_or_else(|e| panic!("{e}"));
        let cell = Arc::new(SnapshotCell::new(snapshot));
        let control = Control::new("test", cell, keys, doors, Some(file.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        (control, dir)
    }

    fn set_role(persist: bool) -> Request {
        Request::Set {
            cloud: edit::Cloud::Gce,
            path: "instance/attributes/role".into(),
            value: "web".into(),
            persist,
        }
    }

    fn get_role() -> Request {
        Request::Get {
            cloud: edit::Cloud::Gce,
            path: "instance/attributes/role".into(),
        }
    }

    #[test]
    fn a_reload_keeps_the_command_lines_doors() {
        let doors = DoorFlags {
            legacy_msi: true,
            ..DoorFlags::default()
        };
        let (control, dir) = control_of("doors", config::DEFAULT_JSON, doors);
        assert!(
            !config::load_str(config::DEFAULT_JSON, "t", &|_| None)
                .unwrap_or_else(|e| panic!("{e}"))
                .azure
                .legacy_msi
                .enabled
        );
        let before = control.cell.load();
        control.reload("test").unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&before, &control.cell.load()), "not reloaded");
        assert!(control.cell.load().config.azure.legacy_msi.enabled);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_watchers_reload_skips_bytes_already_served() {
        let (control, dir) = control_of("same", config::DEFAULT_JSON, DoorFlags::default());
        let before = control.cell.load();
        control
            .reload_if_changed("test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Arc::ptr_eq(&before, &control.cell.load()),
            "reloaded the same bytes"
        );
        // A persisted edit is the file's text: not reloaded again either.
        assert!(control.handle(set_role(true)).ok);
        let edited = control.cell.load();
        control
            .reload_if_changed("test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Arc::ptr_eq(&edited, &control.cell.load()),
            "reloaded its own write"
        );
        // A real change is.
        let file = control.file().map(Path::to_path_buf).unwrap_or_default();
        std::fs::write(&file, config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
        control
            .reload_if_changed("test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&edited, &control.cell.load()));
        assert!(
            !control.handle(get_role()).ok,
            "the document is the file's again"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_invalid_file_keeps_snapshot_and_document_and_says_where() {
        let (control, dir) = control_of("bad", config::DEFAULT_JSON, DoorFlags::default());
        assert!(control.handle(set_role(false)).ok);
        let before = control.cell.load();
        let file = control.file().map(Path::to_path_buf).unwrap_or_default();
        std::fs::write(&file, "{\"server\": {\"maxHeaders\": 0}}")
            .unwrap_or_else(|e| panic!("{e}"));
        match control.reload("test") {
            Err(ReloadError::Invalid(e)) => {
                assert!(e.to_string().contains("$.server.maxHeaders"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(Arc::ptr_eq(&before, &control.cell.load()));
        assert!(
            control.handle(get_role()).ok,
            "the edit was dropped by a failed reload"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_embedded_default_has_nothing_to_reload() {
        let keys = Keys::fixed(3);
        let cfg = config::default_config(&|_| None).unwrap_or_else(|e| panic!("{e}"));
        let snapshot = Snapshot::build(cfg, &keys, "t").unwrap_or_else(|e| panic!("{e}"));
        let cell = Arc::new(SnapshotCell::new(snapshot));
        let control = Control::new("test", cell, keys, DoorFlags::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(control.reload("t"), Err(ReloadError::NoFile)));
        let response = control.handle(Request::Reload {});
        assert_eq!(
            response.error.as_deref(),
            Some("running on the embedded default: there is no file to reload")
        );
    }
}
