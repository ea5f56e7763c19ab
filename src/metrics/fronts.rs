//! What the front doors have open and waiting, and the totals `imds-tun ctl status` reads.
//!
//! Contract: two gauges besides what [`super::EngineSlot`] publishes:
//!
//! - [`SOCKET_CONNECTIONS`]: connections open on kernel sockets (`serve --listen` and the
//!   token doors); each connection task holds a [`SocketConnection`], which counts it until
//!   dropped (however the task ends, cancellation included).
//! - [`REQUESTS_PARKED`]: requests waiting now on a ticket (GCE's hanging GETs, token
//!   fetches) or on an injected latency. A `serve` task adds and removes its own; an engine
//!   thread publishes the change in its count once per loop ([`super::EngineSlot::publish`]),
//!   so parking touches no shared cache line more than once per loop.
//!
//! The queries ([`Registry::requests_by_cloud`], [`Registry::connections_open`],
//! [`Registry::requests_parked`]) read the same atomics a scrape reads, so `ctl status` and
//! `/metrics` never disagree. Connections through the TUN device are the engine slots'
//! `imds_tun_tcp_connections` classes half-open and established (TIME-WAIT is not open).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;

use super::{Gauge, Registry};

/// The gauge of connections open on kernel sockets.
pub const SOCKET_CONNECTIONS: &str = "imds_tun_socket_connections";
const SOCKET_CONNECTIONS_HELP: &str =
    "Connections open on kernel sockets (serve --listen and the token doors).";

/// The gauge of parked requests.
pub const REQUESTS_PARKED: &str = "imds_tun_requests_parked";
const REQUESTS_PARKED_HELP: &str = "Requests waiting now: GCE hanging GETs, token fetches, \
     answers held by an injected latency.";

/// Requests answered, per cloud (summed over classes and statuses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestsByCloud {
    pub azure: u64,
    pub gce: u64,
    pub aws: u64,
    /// `/` (claimed by GCE and AWS), imds-tun's own documents, paths no cloud owns, and
    /// requests that could not be parsed.
    pub other: u64,
}

/// One open kernel-socket connection, counted until dropped.
#[derive(Debug)]
pub struct SocketConnection(Arc<Gauge>);

impl SocketConnection {
    pub fn open(registry: &Registry) -> SocketConnection {
        let g = registry.socket_connections();
        g.add(1);
        SocketConnection(g)
    }
}

impl Drop for SocketConnection {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl Registry {
    /// [`SOCKET_CONNECTIONS`]; keep it (this takes a lock).
    pub fn socket_connections(&self) -> Arc<Gauge> {
        self.gauge(SOCKET_CONNECTIONS, SOCKET_CONNECTIONS_HELP, &[])
    }

    /// [`REQUESTS_PARKED`]; keep it (this takes a lock).
    pub fn requests_parked_gauge(&self) -> Arc<Gauge> {
        self.gauge(REQUESTS_PARKED, REQUESTS_PARKED_HELP, &[])
    }

    /// Requests answered so far by every front door, per cloud.
    pub fn requests_by_cloud(&self) -> RequestsByCloud {
        let mut by = RequestsByCloud::default();
        for m in super::lock(&self.requests).iter() {
            m.for_each_route(|route, n| {
                let counter = match route.labels().0 {
                    "azure" => &mut by.azure,
                    "gce" => &mut by.gce,
                    "aws" => &mut by.aws,
                    _ => &mut by.other,
                };
                *counter += n;
            });
        }
        by
    }

    /// Connections open now: half-open and established in every engine's table, and those
    /// on kernel sockets.
    pub fn connections_open(&self) -> u64 {
        let tun: u64 = super::lock(&self.engines)
            .iter()
            .map(|s| {
                let (half_open, established, _) = s.classes();
                (half_open + established) as u64
            })
            .sum();
        let sockets = self.socket_connections().get();
        tun + u64::try_from(sockets).unwrap_or(0)
    }

    /// Requests parked now, over every front door.
    pub fn requests_parked(&self) -> u64 {
        u64::try_from(self.requests_parked_gauge().get()).unwrap_or(0)
    }
}

/// Adds what the owner of a count publishes since its last publication to `gauge` (the
/// engine's parked requests): `published` is the owner's own record of what it added.
pub(super) fn publish_change(gauge: &Gauge, published: &std::sync::atomic::AtomicU64, now: u64) {
    let before = published.load(Relaxed);
    if before != now {
        published.store(now, Relaxed);
        gauge.add(now as i64 - before as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineCounters;
    use crate::metrics::Route;
    use crate::tcp::Counters;
    use std::time::Duration;

    #[test]
    fn status_totals_read_what_a_scrape_reads() {
        let r = Registry::default();
        let a = r.request_metrics();
        let b = r.request_metrics();
        a.record(Route::AzureInstance, 200, Duration::ZERO);
        a.record(Route::AzureHimds, 401, Duration::ZERO);
        b.record(Route::GceToken, 200, Duration::ZERO);
        b.record(Route::AwsCredentials, 0, Duration::ZERO);
        b.record(Route::Root, 200, Duration::ZERO);
        b.record(Route::Keys, 200, Duration::ZERO);
        b.record(Route::Unknown, 400, Duration::ZERO);
        assert_eq!(
            r.requests_by_cloud(),
            RequestsByCloud {
                azure: 2,
                gce: 1,
                aws: 1,
                other: 3
            }
        );

        let (e1, e2) = (r.engine_slot(), r.engine_slot());
        let (tcp, eng) = (Counters::default(), EngineCounters::default());
        e1.publish(&tcp, &eng, (1, 2, 7), 3);
        e2.publish(&tcp, &eng, (0, 4, 0), 1);
        let socket = SocketConnection::open(&r);
        assert_eq!(r.connections_open(), 1 + 2 + 4 + 1);
        drop(socket);
        assert_eq!(r.connections_open(), 7);
        assert_eq!(r.requests_parked(), 4);
        e1.publish(&tcp, &eng, (0, 0, 0), 0);
        r.requests_parked_gauge().add(2);
        assert_eq!(r.requests_parked(), 3);
        let text = r.render();
        assert!(text.contains("imds_tun_requests_parked 3\n"), "{text}");
        assert!(text.contains("imds_tun_socket_connections 0\n"), "{text}");
    }
}
