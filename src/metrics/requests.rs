//! Requests by cloud, path class and status, and their latency.
//!
//! Contract: [`Route::of`] classifies a request by its door and path into one of a fixed set
//! of (cloud, class) pairs, so the label space is bounded whatever callers send (a path is
//! never a label). [`RequestMetrics::record`] counts one answered request: a table lookup and
//! four relaxed atomic additions, no allocation, no lock. Each engine thread records into its
//! own [`RequestMetrics`] (no cache line is shared between threads on the packet path); a
//! scrape adds them up.
//!
//! Classes (the `class` label) follow what operators ask: "how many tokens", "how many
//! instance documents", "how many 404s": Azure `instance`, `attested`, `token` (the managed
//! identity endpoint), `identity` (other `/metadata/identity/...`), `events`, `loadbalancer`,
//! `versions`, and the token doors `himds`, `app_service`, `legacy_msi`; GCE `instance`,
//! `project`, `token`, `identity` (ID tokens); AWS `session_token` (IMDSv2 PUT), `credentials`,
//! `identity_document`, `meta_data`, `user_data`, `container_credentials` (every request at
//! 169.254.170.2: ECS serves only credentials there); `keys` for imds-tun's JWKS and CA; `root`
//! for `/` (claimed by GCE and AWS); `other` for the rest of each cloud and for paths no cloud
//! owns (cloud `none`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::exposition::{Exposition, Kind};
use super::histogram::{Histogram, Totals};
use crate::cloud::{owner, Door, Owner};

/// The statuses the services answer with; any other is counted as `other`.
pub const STATUSES: [u16; 24] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 410, 411, 413, 429, 431, 500,
    501, 502, 503, 504, 505,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

macro_rules! routes {
    ($($variant:ident => ($cloud:literal, $class:literal)),* $(,)?) => {
        /// A (cloud, class) pair: what a request was for, in bounded labels.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Route { $($variant),* }

        impl Route {
            pub const ALL: &'static [Route] = &[$(Route::$variant),*];

            /// The `cloud` and `class` labels.
            pub fn labels(self) -> (&'static str, &'static str) {
                match self { $(Route::$variant => ($cloud, $class)),* }
            }
        }
    };
}

routes! {
    AzureInstance => ("azure", "instance"),
    AzureAttested => ("azure", "attested"),
    AzureToken => ("azure", "token"),
    AzureIdentity => ("azure", "identity"),
    AzureEvents => ("azure", "events"),
    AzureLoadbalancer => ("azure", "loadbalancer"),
    AzureVersions => ("azure", "versions"),
    AzureOther => ("azure", "other"),
    AzureHimds => ("azure", "himds"),
    AzureAppService => ("azure", "app_service"),
    AzureLegacyMsi => ("azure", "legacy_msi"),
    GceInstance => ("gce", "instance"),
    GceProject => ("gce", "project"),
    GceToken => ("gce", "token"),
    GceIdentity => ("gce", "identity"),
    GceOther => ("gce", "other"),
    AwsSessionToken => ("aws", "session_token"),
    AwsCredentials => ("aws", "credentials"),
    AwsIdentityDocument => ("aws", "identity_document"),
    AwsMetaData => ("aws", "meta_data"),
    AwsUserData => ("aws", "user_data"),
    AwsContainerCredentials => ("aws", "container_credentials"),
    AwsOther => ("aws", "other"),
    Root => ("shared", "root"),
    Keys => ("imds_tun", "keys"),
    Unknown => ("none", "other"),
}

impl Route {
    /// The route of a request at `door` for `path` (the raw path, without the query).
    pub fn of(door: Door, path: &str) -> Route {
        match door {
            Door::Himds => return Route::AzureHimds,
            Door::AppService => return Route::AzureAppService,
            Door::LegacyMsi => return Route::AzureLegacyMsi,
            Door::ContainerCredentials => return Route::AwsContainerCredentials,
            Door::Metadata => {}
        }
        match owner(path) {
            Owner::Azure => azure(path),
            Owner::Gce => gce(path),
            Owner::Aws => aws(path),
            Owner::Root => Route::Root,
            Owner::ImdsTun => Route::Keys,
            Owner::Unknown => Route::Unknown,
        }
    }
}

fn azure(path: &str) -> Route {
    let rest = path.strip_prefix("/metadata").unwrap_or("");
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "instance" => Route::AzureInstance,
        "attested" => Route::AzureAttested,
        "identity" if rest.starts_with("/identity/oauth2/token") => Route::AzureToken,
        "identity" => Route::AzureIdentity,
        "scheduledevents" => Route::AzureEvents,
        "loadbalancer" => Route::AzureLoadbalancer,
        "versions" => Route::AzureVersions,
        _ => Route::AzureOther,
    }
}

fn gce(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/computeMetadata/v1/") else {
        return Route::GceOther;
    };
    if let Some(account) = rest.strip_prefix("instance/service-accounts/") {
        let leaf = account.trim_end_matches('/').rsplit('/').next();
        match leaf {
            Some("token") => return Route::GceToken,
            Some("identity") => return Route::GceIdentity,
            _ => {}
        }
    }
    match rest.split('/').next() {
        Some("instance") => Route::GceInstance,
        Some("project") => Route::GceProject,
        _ => Route::GceOther,
    }
}

fn aws(path: &str) -> Route {
    // After the version segment (`latest`, `1.0` or a date).
    let rest = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, r)| r);
    if rest == "api/token" {
        Route::AwsSessionToken
    } else if rest.starts_with("meta-data/iam/security-credentials") {
        Route::AwsCredentials
    } else if rest.starts_with("dynamic/instance-identity") {
        Route::AwsIdentityDocument
    } else if rest.starts_with("meta-data") {
        Route::AwsMetaData
    } else if rest.starts_with("user-data") {
        Route::AwsUserData
    } else {
        Route::AwsOther
    }
}

/// Counts by (route, status) and the latency of every answered request.
#[derive(Debug)]
pub struct RequestMetrics {
    counts: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            counts: (0..Route::ALL.len() * STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency: Histogram::default(),
        }
    }
}

impl RequestMetrics {
    /// Counts one answered request and the time from its last byte read to its response
    /// handed to the transport.
    pub fn record(&self, route: Route, status: u16, latency: Duration) {
        self.counts[slot(route, status)].fetch_add(1, Relaxed);
        self.latency.observe(latency);
    }

    /// Calls `f` with every route and its requests over all statuses.
    pub fn for_each_route(&self, mut f: impl FnMut(Route, u64)) {
        for (route, row) in Route::ALL.iter().zip(self.counts.chunks(STATUS_SLOTS)) {
            f(*route, row.iter().map(|c| c.load(Relaxed)).sum());
        }
    }

    /// Requests recorded for `route` with `status`.
    pub fn count(&self, route: Route, status: u16) -> u64 {
        self.counts[slot(route, status)].load(Relaxed)
    }
}

/// The counter of (`route`, `status`): routes are rows, statuses columns.
fn slot(route: Route, status: u16) -> usize {
    let column = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len());
    route as usize * STATUS_SLOTS + column
}

/// `imds_tun_requests_total` and `imds_tun_request_duration_seconds`, summed over `all`.
pub fn render(all: &[std::sync::Arc<RequestMetrics>], e: &mut Exposition) {
    const REQUESTS: &str = "imds_tun_requests_total";
    const REQUESTS_HELP: &str = "HTTP requests answered, by cloud, path class and status code.";
    const LATENCY: &str = "imds_tun_request_duration_seconds";
    const LATENCY_HELP: &str =
        "Time from a request's last byte read to its response handed to the transport.";
    let mut totals = Totals::default();
    let mut counts = vec![0u64; Route::ALL.len() * STATUS_SLOTS];
    for m in all {
        for (t, c) in counts.iter_mut().zip(m.counts.iter()) {
            *t += c.load(Relaxed);
        }
        m.latency.add_to(&mut totals);
    }
    for (i, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let (cloud, class) = Route::ALL[i / STATUS_SLOTS].labels();
        let code = STATUSES
            .get(i % STATUS_SLOTS)
            .map_or_else(|| "other".to_string(), u16::to_string);
        let labels = [("cloud", cloud), ("class", class), ("code", code.as_str())];
        e.sample(REQUESTS, REQUESTS_HELP, Kind::Counter, "", &labels, n);
    }
    totals.render(e, LATENCY, LATENCY_HELP);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_classify_into_bounded_routes() {
        let m = Door::Metadata;
        for (path, route) in [
            ("/metadata/instance", Route::AzureInstance),
            ("/metadata/instance/compute/vmId", Route::AzureInstance),
            ("/metadata/attested/document", Route::AzureAttested),
            ("/metadata/identity/oauth2/token", Route::AzureToken),
            ("/metadata/identity/info", Route::AzureIdentity),
            ("/metadata/scheduledevents", Route::AzureEvents),
            ("/metadata/versions", Route::AzureVersions),
            ("/metadata/nothing", Route::AzureOther),
            ("/computeMetadata/v1/instance/id", Route::GceInstance),
            (
                "/computeMetadata/v1/instance/service-accounts/default/token",
                Route::GceToken,
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/a@b/identity",
                Route::GceIdentity,
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/",
                Route::GceInstance,
            ),
            ("/computeMetadata/v1/project/project-id", Route::GceProject),
            ("/computeMetadata/v1/", Route::GceOther),
            ("/latest/api/token", Route::AwsSessionToken),
            (
                "/latest/meta-data/iam/security-credentials/role",
                Route::AwsCredentials,
            ),
            (
                "/2021-03-23/dynamic/instance-identity/document",
                Route::AwsIdentityDocument,
            ),
            ("/latest/meta-data/instance-id", Route::AwsMetaData),
            ("/latest/user-data", Route::AwsUserData),
            ("/latest", Route::AwsOther),
            ("/", Route::Root),
            ("/imds-tun/jwks", Route::Keys),
            ("/favicon.ico", Route::Unknown),
        ] {
            assert_eq!(Route::of(m, path), route, "{path}");
        }
        assert_eq!(
            Route::of(Door::Himds, "/metadata/identity/oauth2/token"),
            Route::AzureHimds
        );
        assert_eq!(
            Route::of(Door::ContainerCredentials, "/v2/credentials/x"),
            Route::AwsContainerCredentials
        );
    }

    #[test]
    fn counts_render_summed_over_threads() {
        let a = std::sync::Arc::new(RequestMetrics::default());
        let b = std::sync::Arc::new(RequestMetrics::default());
        a.record(Route::AzureInstance, 200, Duration::from_micros(3));
        b.record(Route::AzureInstance, 200, Duration::from_micros(30));
        b.record(Route::Unknown, 404, Duration::from_micros(1));
        b.record(Route::AwsOther, 299, Duration::from_micros(1));
        let mut e = Exposition::new();
        render(&[a, b], &mut e);
        let text = e.finish();
        for line in [
            "imds_tun_requests_total{cloud=\"azure\",class=\"instance\",code=\"200\"} 2\n",
            "imds_tun_requests_total{cloud=\"none\",class=\"other\",code=\"404\"} 1\n",
            "imds_tun_requests_total{cloud=\"aws\",class=\"other\",code=\"other\"} 1\n",
            "imds_tun_request_duration_seconds_count 4\n",
            "imds_tun_request_duration_seconds_bucket{le=\"0.000025\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("imds_tun_requests_total{").count(), 3);
    }
}
