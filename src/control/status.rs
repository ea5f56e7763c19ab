//! What `imds-tun ctl status` reports: counters the front doors publish for the control
//! socket to read on demand.
//!
//! Contract: a front door owns one [`FrontStats`] (one per `up` engine thread, one shared by the
//! tasks of `serve`) and updates it with relaxed atomic operations: no lock, and in `up` no
//! cache line shared between threads (each engine thread has its own). [`Status`] sums them
//! when asked. Counting a request costs one prefix match of its path ([`crate::cloud::owner`])
//! and one uncontended atomic add.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::cloud::Owner;
use crate::http::Reply;

/// Request counters of one front door (one engine thread, or all `serve` connections).
#[derive(Debug, Default)]
pub struct FrontStats {
    azure: AtomicU64,
    gce: AtomicU64,
    aws: AtomicU64,
    /// `/`, `/imds-tun/...` and paths no cloud owns.
    other: AtomicU64,
    /// Connections open now.
    connections: AtomicU64,
    /// Requests parked now (hanging GETs, token fetches).
    parked: AtomicU64,
}

impl FrontStats {
    /// Counts one request for the cloud that owns `path`.
    pub fn count_request(&self, path: &str) {
        let counter = match crate::cloud::owner(path) {
            Owner::Azure => &self.azure,
            Owner::Gce => &self.gce,
            Owner::Aws => &self.aws,
            Owner::Root | Owner::ImdsTun | Owner::Unknown => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `reply` as a request for `path`'s cloud unless it parks (its re-run counts).
    pub fn counted<'s>(&self, path: &str, reply: Reply<'s>) -> Reply<'s> {
        if !matches!(reply, Reply::Pending(_)) {
            self.count_request(path);
        }
        reply
    }

    /// Publishes the number of open connections (the owner counts them).
    pub fn set_connections(&self, n: u64) {
        self.connections.store(n, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes the number of parked requests.
    pub fn set_parked(&self, n: u64) {
        self.parked.store(n, Ordering::Relaxed);
    }

    pub fn parked_changed(&self, parked: bool) {
        if parked {
            self.parked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Requests per cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub azure: u64,
    pub gce: u64,
    pub aws: u64,
    pub other: u64,
}

/// The answer of `ctl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Seconds since the instance started.
    pub uptime_secs: u64,
    /// `up` or `serve`.
    pub mode: &'static str,
    /// The configuration file, or `<default>`.
    pub config: String,
    pub connections_open: u64,
    pub requests_parked: u64,
    pub requests: Requests,
    /// Tokens issued by every token source ([`crate::identity::source::tokens_issued`]).
    pub tokens_issued: u64,
}

/// Sums `fronts`.
pub fn sum(fronts: &[std::sync::Arc<FrontStats>]) -> (Requests, u64, u64) {
    let mut r = Requests::default();
    let (mut connections, mut parked) = (0, 0);
    for f in fronts {
        r.azure += f.azure.load(Ordering::Relaxed);
        r.gce += f.gce.load(Ordering::Relaxed);
        r.aws += f.aws.load(Ordering::Relaxed);
        r.other += f.other.load(Ordering::Relaxed);
        connections += f.connections.load(Ordering::Relaxed);
        parked += f.parked.load(Ordering::Relaxed);
    }
    (r, connections, parked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn requests_are_counted_per_cloud_and_summed() {
        let a = Arc::new(FrontStats::default());
        let b = Arc::new(FrontStats::default());
        a.count_request("/metadata/instance");
        a.count_request("/computeMetadata/v1/instance/zone");
        b.count_request("/latest/meta-data/");
        b.count_request("/");
        a.connection_opened();
        b.set_connections(3);
        b.parked_changed(true);
        let (r, connections, parked) = sum(&[a, b]);
        assert_eq!(
            r,
            Requests {
                azure: 1,
                gce: 1,
                aws: 1,
                other: 1
            }
        );
        assert_eq!((connections, parked), (4, 1));
    }
}
