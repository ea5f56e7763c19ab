//! Prometheus metrics: the registry of everything `up` and `serve` expose, and its endpoint.
//!
//! # Contract
//!
//! One process-wide [`Registry`] ([`global`]) holds three kinds of numbers, all atomics that
//! writers update without locks and a scrape reads with relaxed loads:
//!
//! - per-request counts and latency ([`RequestMetrics`], one block per engine thread, one per
//!   `serve` process): requests by cloud, path class and status code, and a latency histogram;
//! - per-engine-thread TCP and packet counters ([`EngineSlot`]), which the engine keeps as
//!   plain integers and publishes once per loop iteration;
//! - labelled counters and gauges any module registers by name ([`Registry::counter`],
//!   [`Registry::gauge`]): tokens issued by identity and source, configuration reloads, and
//!   whatever other features count (limits, caller policy, events, the control socket);
//!   among them the front doors' open connections and parked requests ([`fronts`]).
//!
//! `imds-tun ctl status` reads its counts from here too ([`Registry::requests_by_cloud`],
//! [`Registry::connections_open`], [`Registry::requests_parked`]): one way to count.
//!
//! [`Registry::render`] writes the text exposition format 0.0.4 ([`exposition`]); [`endpoint`]
//! serves it on an opt-in loopback address (`--metrics 127.0.0.1:PORT`).
//!
//! # How to export a number (for every feature)
//!
//! ```
//! use imds_tun::metrics;
//! // Once, where the feature is set up (this takes a lock and may allocate):
//! let refused = metrics::global().counter(
//!     "imds_tun_example_refused_total",
//!     "Requests refused by the example policy, by reason.",
//!     &[("reason", "rate")],
//! );
//! // On the hot path (one relaxed atomic add):
//! refused.inc();
//! ```
//!
//! Names follow Prometheus conventions: `imds_tun_` prefix, `_total` for counters, base units
//! (`_seconds`, `_bytes`). Label values must come from a bounded set (configuration names, enum
//! variants), never from what callers send (paths, audiences): an unbounded label is a memory
//! leak in every scraper. Tokens, keys and secrets are never label values.
//!
//! # Invariants
//!
//! Nothing on the packet path allocates or locks for metrics: [`RequestMetrics::record`] is
//! four relaxed atomic additions on the calling thread's own block, [`EngineSlot::publish`]
//! about fifty relaxed stores per loop iteration, [`Counter::inc`] one relaxed addition.

pub mod answered;
pub mod endpoint;
pub mod engine;
pub mod exposition;
pub mod fronts;
pub mod histogram;
pub mod requests;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

pub use answered::Observer;
pub use engine::EngineSlot;
pub use exposition::{Exposition, Kind};
pub use fronts::{RequestsByCloud, SocketConnection};
pub use requests::{RequestMetrics, Route};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug)]
enum Value {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

/// One labelled series registered by name.
#[derive(Debug)]
struct Series {
    family: &'static str,
    help: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// Everything a scrape reports. See the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    requests: Mutex<Vec<Arc<RequestMetrics>>>,
    engines: Mutex<Vec<Arc<EngineSlot>>>,
    series: Mutex<Vec<Series>>,
}

/// The registry of this process.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// Locks `m`; a panic elsewhere while it was held leaves a list that is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// A new request block, included in every scrape from now on (one per engine thread, so
    /// that threads never write the same cache lines).
    pub fn request_metrics(&self) -> Arc<RequestMetrics> {
        let m = Arc::new(RequestMetrics::default());
        lock(&self.requests).push(Arc::clone(&m));
        m
    }

    /// A new engine slot, included in every scrape from now on.
    pub fn engine_slot(&self) -> Arc<EngineSlot> {
        let s = Arc::new(EngineSlot::with_parked(self.requests_parked_gauge()));
        lock(&self.engines).push(Arc::clone(&s));
        s
    }

    /// The counter `family{labels}`, created at 0 on first use; the same one on every later
    /// call with the same family and labels (so a reload that rebuilds its users keeps
    /// counting). Keep the returned `Arc`: this call takes a lock.
    pub fn counter(
        &self,
        family: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<Counter> {
        let pick = |v: &Value| match v {
            Value::Counter(c) => Some(Arc::clone(c)),
            Value::Gauge(_) => None,
        };
        self.series(family, help, labels, pick, Value::Counter)
    }

    /// The gauge `family{labels}`, created at 0 on first use (see [`Registry::counter`]).
    pub fn gauge(
        &self,
        family: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<Gauge> {
        let pick = |v: &Value| match v {
            Value::Gauge(g) => Some(Arc::clone(g)),
            Value::Counter(_) => None,
        };
        self.series(family, help, labels, pick, Value::Gauge)
    }

    /// The sum of every counter of `family`, whatever its labels (`ctl status` totals).
    pub fn counter_total(&self, family: &str) -> u64 {
        lock(&self.series)
            .iter()
            .filter(|s| s.family == family)
            .map(|s| match &s.value {
                Value::Counter(c) => c.get(),
                Value::Gauge(_) => 0,
            })
            .sum()
    }

    /// The series `family{labels}` that `pick` recognises, or a new one `wrap` makes.
    fn series<T: Default>(
        &self,
        family: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        pick: impl Fn(&Value) -> Option<Arc<T>>,
        wrap: impl FnOnce(Arc<T>) -> Value,
    ) -> Arc<T> {
        let mut series = lock(&self.series);
        let same = |s: &&Series| {
            s.family == family
                && s.labels.len() == labels.len()
                && s.labels
                    .iter()
                    .zip(labels)
                    .all(|((n, v), (wn, wv))| n == wn && v == wv)
        };
        if let Some(found) = series.iter().filter(same).find_map(|s| pick(&s.value)) {
            return found;
        }
        let value = Arc::new(T::default());
        series.push(Series {
            family,
            help,
            labels: labels.iter().map(|(n, v)| (*n, v.to_string())).collect(),
            value: wrap(Arc::clone(&value)),
        });
        value
    }

    /// The whole scrape, in the text format 0.0.4.
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        requests::render(&lock(&self.requests), &mut e);
        engine::render(&lock(&self.engines), &mut e);
        for s in lock(&self.series).iter() {
            let labels: Vec<(&str, &str)> =
                s.labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
            match &s.value {
                Value::Counter(c) => {
                    e.sample(s.family, s.help, Kind::Counter, "", &labels, c.get())
                }
                Value::Gauge(g) => e.sample(s.family, s.help, Kind::Gauge, "", &labels, g.get()),
            }
        }
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_series_are_shared_by_family_and_labels() {
        let r = Registry::default();
        let a = r.counter("t_total", "T.", &[("x", "1")]);
        let b = r.counter("t_total", "T.", &[("x", "1")]);
        let c = r.counter("t_total", "T.", &[("x", "2")]);
        a.inc();
        b.add(2);
        c.inc();
        r.gauge("g", "G.", &[]).set(-4);
        let text = r.render();
        assert!(text.contains("t_total{x=\"1\"} 3\n"), "{text}");
        assert!(text.contains("t_total{x=\"2\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE g gauge\ng -4\n"), "{text}");
        // Every scrape has the request and engine families, even before any traffic.
        assert!(
            text.contains("imds_tun_request_duration_seconds_count 0\n"),
            "{text}"
        );
        assert!(
            text.contains("imds_tun_tcp_retransmissions_total 0\n"),
            "{text}"
        );
    }
}
