//! What `imds-tun ctl status` reports.
//!
//! Contract: every count is read from the metrics registry ([`crate::metrics::global`]) when
//! asked, so `ctl status` and a scrape of `/metrics` agree: requests per cloud are the sum of
//! `imds_tun_requests_total` by its `cloud` label ([`crate::metrics::Registry::requests_by_cloud`]),
//! connections open and requests parked the front doors' gauges
//! ([`crate::metrics::fronts`]), tokens issued the sum of `imds_tun_tokens_issued_total`
//! (access tokens and AWS credentials alike). Nothing here is on the packet path.

use serde::Serialize;

use crate::metrics::{Registry, RequestsByCloud};

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
    /// Requests answered, per cloud.
    pub requests: RequestsByCloud,
    /// Tokens and credentials issued by every source ([`crate::identity::source::tokens_issued`]).
    pub tokens_issued: u64,
}

impl Status {
    /// The counts of `registry` now, with the instance's own facts.
    pub fn read(
        registry: &Registry,
        uptime_secs: u64,
        mode: &'static str,
        config: String,
    ) -> Status {
        Status {
            uptime_secs,
            mode,
            config,
            connections_open: registry.connections_open(),
            requests_parked: registry.requests_parked(),
            requests: registry.requests_by_cloud(),
            tokens_issued: crate::identity::source::tokens_issued(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::source::IssueCounts;
    use crate::metrics::Route;
    use std::time::Duration;

    #[test]
    fn status_reads_the_registry() {
        let r = Registry::default();
        r.request_metrics()
            .record(Route::AwsCredentials, 200, Duration::ZERO);
        r.requests_parked_gauge().add(2);
        IssueCounts::in_registry(&r, "role", "credentials", "minted")
            .issued
            .inc();
        IssueCounts::in_registry(&r, "id", "access token", "minted")
            .issued
            .add(2);
        let s = Status::read(&r, 5, "serve", "c.json".into());
        assert_eq!(
            s.requests,
            RequestsByCloud {
                aws: 1,
                ..RequestsByCloud::default()
            }
        );
        assert_eq!((s.requests_parked, s.connections_open), (2, 0));
        assert_eq!(s.tokens_issued, 3);
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["requests"]["aws"], 1);
        assert_eq!(json["requests"]["other"], 0);
    }
}
