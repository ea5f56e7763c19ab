//! `imds-tun status`: a human summary of a running instance.
//!
//! Contract: [`gather`] reads what `up` leaves in its state directory (the lock says whether
//! it runs and its pid, the record what it changed and where its metrics are) and, when a
//! metrics endpoint is known (from the record, or `--metrics` for a `serve`), scrapes it
//! ([`summarize`] reads the few numbers a person wants). It changes nothing on the host: a
//! missing state directory is "not running" and is not created.
//!
//! Exit codes follow the LSB convention for `status` actions, as `systemctl status` does:
//! [`EXIT_RUNNING`] 0, [`EXIT_DEAD`] 1 (a killed `up` left changes behind: run `imds-tun
//! down`), [`EXIT_STOPPED`] 3 (not running, nothing left behind).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::device::{Lock, Record};

pub const EXIT_RUNNING: u8 = 0;
pub const EXIT_DEAD: u8 = 1;
pub const EXIT_STOPPED: u8 = 3;

/// Whether `up` runs for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The lock is held (by this pid, when the lock file names it).
    Running(Option<u32>),
    /// No lock, but a record: a killed run's changes are still there.
    Dead,
    /// Neither.
    Stopped,
    /// The state directory could not be read (not root?).
    Unknown(String),
}

/// The numbers a person asks first, from one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests answered, by cloud label.
    pub requests: BTreeMap<String, u64>,
    /// Of those, answered with a 4xx or 5xx status.
    pub errors: u64,
    /// Tokens and credentials handed out.
    pub tokens: u64,
    /// Established TCP connections now (`up` only).
    pub established: Option<u64>,
}

/// What `status` found.
#[derive(Debug)]
pub struct Status {
    pub device: String,
    pub state: State,
    pub record: Option<Record>,
    pub metrics: Option<(SocketAddr, Result<Summary, String>)>,
}

impl Status {
    pub fn exit_code(&self) -> u8 {
        match self.state {
            State::Running(_) => EXIT_RUNNING,
            State::Dead | State::Unknown(_) => EXIT_DEAD,
            State::Stopped if self.metrics.as_ref().is_some_and(|(_, m)| m.is_ok()) => {
                EXIT_RUNNING // a `serve` found through --metrics
            }
            State::Stopped => EXIT_STOPPED,
        }
    }
}

/// Looks at `device`'s state in `state_dir`, and scrapes `metrics` (or the address the
/// record names).
pub fn gather(state_dir: &Path, device: &str, metrics: Option<SocketAddr>) -> Status {
    let (state, record) = if !state_dir.exists() {
        (State::Stopped, None)
    } else {
        match Record::load(state_dir, device) {
            Err(e) => (State::Unknown(e.to_string()), None),
            Ok(record) => match (Lock::holder(state_dir, device), &record) {
                (Some(pid), _) => (State::Running(pid), record),
                (None, Some(_)) => (State::Dead, record),
                (None, None) => (State::Stopped, None),
            },
        }
    };
    let running = matches!(state, State::Running(_));
    let addr = metrics.or_else(|| record.as_ref().filter(|_| running)?.metrics);
    let metrics = addr.map(|a| (a, scrape(a).map(|text| summarize(&text))));
    Status {
        device: device.to_string(),
        state,
        record,
        metrics,
    }
}

/// `GET http://addr/metrics`.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .build()
        .get(&format!("http://{addr}/metrics"))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())
}

/// Reads [`Summary`] out of an exposition ([`crate::metrics`]'s names).
pub fn summarize(text: &str) -> Summary {
    let mut s = Summary::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        if series.starts_with("imds_tun_requests_total{") {
            let cloud = label(series, "cloud").unwrap_or("none");
            *s.requests.entry(cloud.to_string()).or_insert(0) += value;
            if label(series, "code").is_some_and(|c| c.starts_with('4') || c.starts_with('5')) {
                s.errors += value;
            }
        } else if series.starts_with("imds_tun_tokens_issued_total{") {
            s.tokens += value;
        } else if series == "imds_tun_tcp_connections{state=\"established\"}" {
            s.established = Some(value);
        }
    }
    s
}

/// The value of label `name` in a series (`family{a="x",b="y"}`); our values never hold `"`
/// except escaped identities, which this does not read.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    rest.find('"').map(|end| &rest[..end])
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = &self.device;
        match &self.state {
            State::Running(pid) => {
                let pid = pid.map_or("pid unknown".into(), |p| format!("pid {p}"));
                writeln!(f, "imds-tun up: running on {device} ({pid})")?
            }
            State::Dead => writeln!(
                f,
                "imds-tun up: not running, but a killed run left changes on {device}: run `imds-tun down`"
            )?,
            State::Stopped => writeln!(f, "imds-tun up: not running on {device}")?,
            State::Unknown(e) => writeln!(f, "imds-tun up: cannot read the state: {e}")?,
        }
        if let Some(r) = &self.record {
            let list = |v: &[crate::device::Prefix]| {
                v.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(f, "  routes:    {}", list(&r.routes))?;
            if let Some(h) = &r.hosts_file {
                writeln!(f, "  hosts:     {}", h.display())?;
            }
            if r.himds_journal.is_some() {
                writeln!(f, "  himds:     key-file door open")?;
            }
        }
        if let Some((addr, m)) = &self.metrics {
            writeln!(f, "  metrics:   http://{addr}/metrics")?;
            match m {
                Ok(s) => {
                    let total: u64 = s.requests.values().sum();
                    let by_cloud: Vec<String> =
                        s.requests.iter().map(|(c, n)| format!("{c} {n}")).collect();
                    write!(f, "  requests:  {total}")?;
                    if !by_cloud.is_empty() {
                        write!(f, " ({})", by_cloud.join(", "))?;
                    }
                    writeln!(f, ", {} answered 4xx/5xx", s.errors)?;
                    writeln!(f, "  tokens:    {} issued", s.tokens)?;
                    if let Some(n) = s.established {
                        writeln!(f, "  tcp:       {n} established")?;
                    }
                }
                Err(e) => writeln!(f, "  (cannot scrape: {e})")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_scrape() {
        let text = "# HELP x\n\
            imds_tun_requests_total{cloud=\"azure\",class=\"instance\",code=\"200\"} 3\n\
            imds_tun_requests_total{cloud=\"azure\",class=\"token\",code=\"400\"} 1\n\
            imds_tun_requests_total{cloud=\"aws\",class=\"meta_data\",code=\"404\"} 2\n\
            imds_tun_tokens_issued_total{identity=\"a\",kind=\"access token\",source=\"minted\"} 5\n\
            imds_tun_tcp_connections{state=\"established\"} 4\n\
            imds_tun_request_duration_seconds_sum 0.5\n";
        let s = summarize(text);
        assert_eq!(s.requests.get("azure"), Some(&4));
        assert_eq!(s.requests.get("aws"), Some(&2));
        assert_eq!(s.errors, 3);
        assert_eq!(s.tokens, 5);
        assert_eq!(s.established, Some(4));
    }

    #[test]
    fn a_missing_state_directory_is_stopped_and_not_created() {
        let dir = std::env::temp_dir().join(format!("imds-tun-status-{}", std::process::id()));
        let status = gather(&dir, "imds0", None);
        assert_eq!(status.state, State::Stopped);
        assert_eq!(status.exit_code(), EXIT_STOPPED);
        assert!(!dir.exists());
        assert_eq!(status.to_string(), "imds-tun up: not running on imds0\n");
    }
}
