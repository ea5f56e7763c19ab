//! The opt-in per-request access log (`--access-log PATH|-`): one line per answered request.
//!
//! Contract: a line names the time the request was read, the caller's address:port, the
//! cloud and path class ([`crate::metrics::Route`]), the method, the path and query, the status
//! and the microseconds from the request's last byte read to its response handed to the
//! transport. It never holds a header, a body or a token: only the request line is looked
//! at. Query values are kept for the parameters the services define, none of which carries a
//! secret (`api-version`, `resource`, `client_id`, `audience`, `scopes`, ...); the value of
//! any other parameter is replaced by `-`, since a caller may put anything there. Everything
//! outside printable ASCII, and `"` and `\`, is percent-encoded, so a line is one line and a
//! JSON line is valid JSON whatever the caller sent; the target is cut at
//! [`MAX_TARGET`] bytes.
//!
//! Formats: `text` (space-separated, in the order above) or `json` (one object per line), as
//! chosen by `--log-format`. Lines are written under a lock, one `write` each: the log is for
//! audits and debugging, not for the packet path's budget.
//!
//! The log is process-wide ([`install`]): every front door finds it through
//! [`crate::metrics::answered::Observer::new`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::http::{Method, Request};
use crate::metrics::Route;

/// The longest target (path and query, after encoding) a line carries.
pub const MAX_TARGET: usize = 512;

/// Query parameters whose values are logged: those the services define. None is a secret.
const KNOWN_PARAMETERS: &[&str] = &[
    "api-version",
    "format",
    "resource",
    "client_id",
    "object_id",
    "principal_id",
    "msi_res_id",
    "mi_res_id",
    "bypass_cache",
    "audience",
    "scopes",
    "recursive",
    "alt",
    "wait_for_change",
    "timeout_sec",
    "last_etag",
    "licenses",
];

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Where lines go.
pub struct AccessLog {
    format: Format,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// A log appending to `path` (created 0640 if absent), or to standard output for `-`.
    pub fn open(path: &Path, format: Format) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)?,
            )
        };
        Ok(AccessLog::to_writer(out, format))
    }

    pub fn to_writer(out: Box<dyn Write + Send>, format: Format) -> AccessLog {
        AccessLog {
            format,
            out: Mutex::new(out),
        }
    }

    /// Writes the line of one answered request. A failed write is dropped (the request was
    /// answered; the log must not take the server down) and said once at debug level.
    pub fn write(&self, entry: &Entry, route: Route, status: u16, took: Duration) {
        let line = entry.line(self.format, route, status, took);
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "access log write failed");
        }
    }
}

static INSTALLED: OnceLock<Arc<AccessLog>> = OnceLock::new();

/// Makes `log` the process's access log; only the first call counts.
pub fn install(log: AccessLog) {
    let _ = INSTALLED.set(Arc::new(log));
}

/// The process's access log, if one was installed.
pub fn installed() -> Option<Arc<AccessLog>> {
    INSTALLED.get().cloned()
}

/// What the log keeps of a request, taken while its bytes are still in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: SystemTime,
    pub caller: SocketAddr,
    /// `None` for a request that could not be parsed.
    pub method: Option<Method>,
    /// Path and query, encoded and cut as the module docs say.
    pub target: String,
}

impl Entry {
    pub fn new(at: SystemTime, caller: SocketAddr, request: Option<&Request<'_>>) -> Entry {
        Entry {
            at,
            caller,
            method: request.map(|r| r.method),
            target: request.map_or_else(|| "-".to_string(), |r| target(r.path, r.query)),
        }
    }

    fn line(&self, format: Format, route: Route, status: u16, took: Duration) -> String {
        let (cloud, class) = route.labels();
        let time = rfc3339_micros(self.at);
        let method = self.method.map_or("-", method_name);
        let micros = took.as_micros();
        match format {
            Format::Text => format!(
                "{time} {} {cloud} {class} {method} {} {status} {micros}us\n",
                self.caller, self.target
            ),
            Format::Json => format!(
                "{{\"time\":\"{time}\",\"caller\":\"{}\",\"cloud\":\"{cloud}\",\"class\":\"{class}\",\
                 \"method\":\"{method}\",\"target\":\"{}\",\"status\":{status},\"micros\":{micros}}}\n",
                self.caller, self.target
            ),
        }
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Other => "OTHER",
    }
}

/// The logged form of a request target (see the module docs).
fn target(path: &str, query: &str) -> String {
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    encode_into(&mut out, path);
    let mut first = true;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        out.push(if first { '?' } else { '&' });
        first = false;
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        encode_into(&mut out, key);
        if pair.contains('=') {
            out.push('=');
            if KNOWN_PARAMETERS.contains(&key) {
                encode_into(&mut out, value);
            } else {
                out.push('-');
            }
        }
    }
    if out.len() > MAX_TARGET {
        let mut cut = MAX_TARGET;
        // Everything in `out` is ASCII, so any index is a character boundary.
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

fn encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let [y, m, day, hh, mm, ss] = crate::cloud::aws::timestamp::utc_parts(secs);
    format!(
        "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{:06}Z",
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_known_values_and_encode_the_rest() {
        assert_eq!(
            target("/metadata/identity/oauth2/token", "api-version=2018-02-01&resource=https://vault.azure.net&sig=abc"),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&sig=-"
        );
        assert_eq!(target("/a b\"\\\n", "flag&x="), "/a%20b%22%5C%0A?flag&x=-");
        assert_eq!(target("/é", ""), "/%C3%A9");
        let long = "/x".repeat(600);
        let t = target(&long, "");
        assert_eq!(t.len(), MAX_TARGET + 3);
        assert!(t.ends_with("..."));
    }

    #[test]
    fn lines_in_both_formats() {
        let entry = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_767_225_600_000_123),
            caller: SocketAddr::from(([127, 0, 0, 1], 40000)),
            method: Some(Method::Get),
            target: "/latest/meta-data/".into(),
        };
        let took = Duration::from_micros(42);
        assert_eq!(
            entry.line(Format::Text, Route::AwsMetaData, 200, took),
            "2026-01-01T00:00:00.000123Z 127.0.0.1:40000 aws meta_data GET /latest/meta-data/ 200 42us\n"
        );
        let json = entry.line(Format::Json, Route::AwsMetaData, 200, took);
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(v["caller"], "127.0.0.1:40000");
        assert_eq!(v["class"], "meta_data");
        assert_eq!(v["status"], 200);
        assert_eq!(v["micros"], 42);
        assert_eq!(v["time"], "2026-01-01T00:00:00.000123Z");
    }
}
