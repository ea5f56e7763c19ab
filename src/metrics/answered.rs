//! What a front door records of each answered request: the metrics and the access log line.
//!
//! Contract: a front door answers a buffer through a [`Recording`] sink, which passes every
//! response on and notes each answered request ([`Answered`]: its route, status and arrival
//! time, and what the access log keeps when one is installed). Once the responses are handed
//! to the transport, [`Observer::finish`] records them with the time that took. Nothing here
//! reads the clock: both instants are the front door's.
//!
//! Without an access log nothing here allocates once the `Vec`s have grown to a batch (the
//! engine and the kernel-socket loop reuse theirs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{RequestMetrics, Route};
use crate::access_log::{self, AccessLog, Entry};
use crate::cloud::Door;
use crate::http::exchange::{Outgoing, Sink};
use crate::http::Request;

/// One answered request, until its response has been handed to the transport.
#[derive(Debug)]
pub struct Answered {
    route: Route,
    status: u16,
    arrival: Instant,
    entry: Option<Entry>,
}

/// Where a front door's answered requests are counted and logged.
#[derive(Debug, Clone)]
pub struct Observer {
    metrics: Arc<RequestMetrics>,
    access: Option<Arc<AccessLog>>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// A new request block in the [`super::global`] registry, and the installed access log.
    pub fn new() -> Observer {
        Observer::with(super::global().request_metrics(), access_log::installed())
    }

    pub fn with(metrics: Arc<RequestMetrics>, access: Option<Arc<AccessLog>>) -> Observer {
        Observer { metrics, access }
    }

    pub fn metrics(&self) -> &RequestMetrics {
        &self.metrics
    }

    /// A sink that passes responses to `out` and notes answered requests in `answered`.
    /// `arrival` is when the bytes that completed the requests were read, `wall` the same
    /// moment on the wall clock (for the access log).
    pub fn sink<'a>(
        &self,
        out: &'a mut Vec<Outgoing>,
        answered: &'a mut Vec<Answered>,
        door: Door,
        peer: SocketAddr,
        arrival: (Instant, SystemTime),
    ) -> Recording<'a> {
        Recording {
            out,
            answered,
            door,
            peer,
            arrival,
            log: self.access.is_some(),
        }
    }

    /// Records every request in `answered` (emptying it) as done at `done`.
    pub fn finish(&self, answered: &mut Vec<Answered>, done: Instant) {
        for a in answered.drain(..) {
            let took = done.saturating_duration_since(a.arrival);
            self.metrics.record(a.route, a.status, took);
            if let (Some(log), Some(entry)) = (&self.access, &a.entry) {
                log.write(entry, a.route, a.status, took);
            }
        }
    }
}

/// The sink of [`Observer::sink`].
pub struct Recording<'a> {
    out: &'a mut Vec<Outgoing>,
    answered: &'a mut Vec<Answered>,
    door: Door,
    peer: SocketAddr,
    arrival: (Instant, SystemTime),
    log: bool,
}

impl Sink for Recording<'_> {
    fn push(&mut self, out: Outgoing) {
        self.out.push(out);
    }

    fn answered(&mut self, request: Option<&Request<'_>>, status: u16) {
        let route = request.map_or(Route::Unknown, |r| Route::of(self.door, r.path));
        let entry = self
            .log
            .then(|| Entry::new(self.arrival.1, self.peer, request));
        self.answered.push(Answered {
            route,
            status,
            arrival: self.arrival.0,
            entry,
        });
    }
}
