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
//! - `reload`: re-reads the file, as SIGHUP does (it is the same code); edits that were not
//!   persisted are gone after it, since the file is the truth.
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
//! Invariants: edits are serialised (one lock around read-modify-swap), so two `ctl set`s
//! never lose one another; the document and the served snapshot always correspond (both
//! change together or neither does). No I/O but the configuration file's.

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
    /// The configuration document now served (the file's text, plus unpersisted edits). The
    /// lock also serialises edits and reloads.
    document: Mutex<Value>,
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
        let document = match &file {
            Some(path) => read_document(path)?,
            None => serde_json::from_str(config::DEFAULT_JSON).map_err(|source| {
                ControlError::Parse {
                    path: PathBuf::from(DEFAULT_SOURCE),
                    source,
                }
            })?,
        };
        Ok(Control {
            started: Instant::now(),
            mode,
            cell,
            keys,
            doors,
            file,
            document: Mutex::new(document),
        })
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Get { cloud, path } => {
                let doc = lock(&self.document);
                match Target::parse(cloud, &path, &doc).and_then(|t| t.get(&doc)) {
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
            Request::Reload {} => self.reload(),
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

    /// Re-reads the configuration file and swaps the snapshot, or keeps everything and says
    /// why (SIGHUP and `ctl reload`).
    pub fn reload(&self) -> Response {
        let Some(path) = &self.file else {
            return Response::error("running on the embedded default: there is no file to reload");
        };
        let mut doc = lock(&self.document);
        let reloads = |result| {
            crate::metrics::global()
                .counter(
                    "imds_tun_config_reloads_total",
                    "Configuration reloads (SIGHUP, ctl reload), by result; a failed one keeps \
                     the previous configuration.",
                    &[("result", result)],
                )
                .inc()
        };
        let fresh = match read_document(path) {
            Ok(d) => d,
            Err(e) => {
                reloads("failed");
                return Response::error(format!("reload: nothing changed: {e}"));
            }
        };
        let built = self.build(&fresh);
        reloads(if built.is_ok() { "ok" } else { "failed" });
        match built {
            Ok(snapshot) => {
                self.cell.replace(snapshot);
                *doc = fresh;
                tracing::info!("reloaded {}", path.display());
                Response::ok(Value::String(format!("reloaded {}", path.display())))
            }
            Err(errors) => {
                tracing::error!(
                    "reload of {} failed, still serving the previous configuration:\n{errors}",
                    path.display()
                );
                Response::invalid("reload", &errors)
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
        let mut doc = lock(&self.document);
        let mut edited = doc.clone();
        let target = match Target::parse(cloud, path, &doc) {
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
                if let Err(e) = write_document(file, &edited) {
                    return Response::error(format!(
                        "--persist: cannot write {}: {e}; nothing changed",
                        file.display()
                    ));
                }
            }
        }
        self.cell.replace(snapshot);
        let result = target.get(&edited).unwrap_or(Value::Null);
        *doc = edited;
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

fn read_document(path: &Path) -> Result<Value, ControlError> {
    let text = std::fs::read_to_string(path).map_err(|source| ControlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ControlError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `doc` to `path` atomically: a temp file beside it with the file's mode and owner,
/// synced, renamed over it, and the directory synced.
fn write_document(path: &Path, doc: &Value) -> std::io::Result<()> {
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
    result
}
