//! Settings shared by every front door: request bounds, connection limits and timeouts.
//!
//! Every limit has a safe default and is counted where it bites: `up`'s TCP table counts in
//! [`crate::tcp::Counters`] (`half_open_recycled`, `idle_evicted`,
//! `handshake_reset_table_full`, `syn_dropped_per_source`, `header_timeouts`,
//! `idle_timeouts`, `time_wait_skipped`), `serve` in [`crate::listen::ListenCounters`]. What
//! happens at each bound is documented in [`crate::tcp`]'s table and in [`crate::listen`].

use serde::Deserialize;

use super::error::Problems;
use crate::http::parse::{Limits, MAX_HEADERS};

/// `$.server`: bounds and timeouts. Every field has a safe default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerConfig {
    /// Request line plus headers, bytes (431 above).
    pub max_head_bytes: usize,
    /// Headers per request (431 above), at most 64.
    pub max_headers: usize,
    /// Request body bytes (413 above).
    pub max_body_bytes: usize,
    /// A connection with no request in flight is closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// A request must arrive complete within this many seconds of its first byte.
    pub header_timeout_secs: u64,
    /// Connections held at once: per engine thread under `up` (a handshake completing beyond
    /// it evicts the connection idle longest), in all under `serve` (accepting pauses at it).
    pub max_connections: usize,
    /// Connections from one source address (per engine thread under `up`); beyond it a SYN is
    /// dropped (`up`) or the accepted connection closed at once (`serve`). Unset: all of
    /// `max_connections` ([`ServerConfig::per_source_limit`]).
    pub max_connections_per_source: Option<usize>,
    /// Half-open (SYN-RECEIVED) connections per engine thread (`up`); a SYN flood beyond it
    /// recycles the oldest.
    pub max_half_open: usize,
    /// TIME-WAIT entries per engine thread (`up`); beyond it a closing connection skips
    /// TIME-WAIT.
    pub max_time_wait: usize,
    /// Addresses routed to the TUN device besides 169.254.169.254 (`up` only), e.g.
    /// `fd00:ec2::254` for IMDS over IPv6. Each answers every enabled cloud on port 80.
    /// (169.254.170.2 is routed by `$.aws.containerCredentials.enabled` too, and there the
    /// container-credentials path answers as well.)
    pub addresses: Vec<std::net::IpAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = Limits::default();
        ServerConfig {
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
            max_body_bytes: limits.max_body_bytes,
            idle_timeout_secs: 60,
            header_timeout_secs: 10,
            addresses: Vec::new(),
            // 10,000 idle keep-alive clients fit with room to spare; the benchmark measures
            // what they cost (bench/README.md: peak RSS with 10,000 idle connections).
            max_connections: 16 * 1024,
            // Unset, i.e. the whole table: under `up` every process of the host shares one
            // source address, and a host is a real VM's only client, so by default one source
            // may hold all of it (10,000 idle keep-alive connections from one host are a
            // benchmark case: a default of 4,096 refused the rest). Set it where several
            // sources share one `up` (a fleet of namespaces, containers) so that one cannot
            // crowd out the others.
            max_connections_per_source: None,
            // More than the TUN queue (txqueuelen 10,000) can hold: see `tcp`'s table docs.
            max_half_open: 16 * 1024,
            max_time_wait: 4 * 1024,
        }
    }
}

impl ServerConfig {
    /// Connections one source address may hold: `maxConnectionsPerSource`, else all of
    /// `maxConnections`.
    pub fn per_source_limit(&self) -> usize {
        self.max_connections_per_source
            .unwrap_or(self.max_connections)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_head_bytes: self.max_head_bytes,
            max_headers: self.max_headers,
            max_body_bytes: self.max_body_bytes,
        }
    }

    pub fn validate(&self, at: &str, problems: &mut Problems) {
        for (i, a) in self.addresses.iter().enumerate() {
            let ok = match a {
                std::net::IpAddr::V4(v4) => v4.is_link_local(),
                // Unique local (fc00::/7) or link-local (fe80::/10), as fd00:ec2::254 is.
                std::net::IpAddr::V6(v6) => {
                    (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
                }
            };
            if !ok {
                problems.push(
                    super::error::index(&format!("{at}.addresses"), i),
                    "a link-local IPv4 address (169.254.0.0/16) or a unique-local/link-local IPv6 address: routing anything else to the device would capture real traffic",
                );
            }
        }
        if !(256..=1024 * 1024).contains(&self.max_head_bytes) {
            problems.push(format!("{at}.maxHeadBytes"), "a number from 256 to 1048576");
        }
        if !(1..=MAX_HEADERS).contains(&self.max_headers) {
            problems.push(
                format!("{at}.maxHeaders"),
                format!("a number from 1 to {MAX_HEADERS}"),
            );
        }
        if self.max_body_bytes > 16 * 1024 * 1024 {
            problems.push(format!("{at}.maxBodyBytes"), "a number up to 16777216");
        }
        if !(1..=1 << 20).contains(&self.max_connections) {
            problems.push(format!("{at}.maxConnections"), "a number from 1 to 1048576");
        }
        if !(1..=1 << 20).contains(&self.max_half_open) {
            problems.push(format!("{at}.maxHalfOpen"), "a number from 1 to 1048576");
        }
        if !(1..=self.max_connections).contains(&self.per_source_limit()) {
            problems.push(
                format!("{at}.maxConnectionsPerSource"),
                "a number from 1 to maxConnections",
            );
        }
        if self.max_time_wait > 1 << 20 {
            problems.push(format!("{at}.maxTimeWait"), "a number up to 1048576");
        }
        if self.idle_timeout_secs == 0 {
            problems.push(
                format!("{at}.idleTimeoutSecs"),
                "a number of seconds above 0",
            );
        }
        if self.header_timeout_secs == 0 {
            problems.push(
                format!("{at}.headerTimeoutSecs"),
                "a number of seconds above 0",
            );
        }
    }
}
