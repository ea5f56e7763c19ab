//! What the live state counts, for `ctl status` (its own totals) and for the metrics registry
//! ([`crate::metrics`]):
//!
//! - `imds_tun_faults_injected_total{cloud, kind}`: requests answered by a fault rule; `cloud`
//!   is the owner of the path as the request metrics name it (`azure`, `gce`, `aws`, `shared`,
//!   `imds_tun`, `none`), `kind` is `status`, `latency` or `drop`.
//! - `imds_tun_events_total{cloud, type, stage}`: steps events took ([`super::steps`]): `type`
//!   is the Azure event type (`Reboot`, ...), AWS `spot`, `maintenance` or `lifecycle`, GCE
//!   `maintenance-event` or `preempted`; `stage` is `scheduled`, `started`, `completed` or
//!   `cancelled`.
//! - `imds_tun_azure_event_approvals_total`: event ids approved by `POST StartRequests`.
//!
//! Every label value comes from a fixed set, never from a request. Fault counters are
//! registered on first use and then cost one relaxed addition (no lock on the request path);
//! event steps are rare (a few per event) and look their series up each time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use super::faults::FaultAction;
use super::steps::Step;
use crate::cloud::Owner;
use crate::metrics::{self, Counter};

const FAULTS: &str = "imds_tun_faults_injected_total";
const FAULTS_HELP: &str = "Requests answered by an injected fault (ctl fault, $.faults), by the \
                           cloud owning the path and the kind of fault.";
const EVENTS: &str = "imds_tun_events_total";
const EVENTS_HELP: &str = "Steps of live events (scheduled, started, completed, cancelled), by \
                           cloud and event type.";
const APPROVALS: &str = "imds_tun_azure_event_approvals_total";
const APPROVALS_HELP: &str = "Azure scheduled events approved by POST StartRequests (each id).";

/// The owners fault counters are kept for, with their `cloud` label.
const OWNERS: [(Owner, &str); 6] = [
    (Owner::Azure, "azure"),
    (Owner::Gce, "gce"),
    (Owner::Aws, "aws"),
    (Owner::Root, "shared"),
    (Owner::ImdsTun, "imds_tun"),
    (Owner::Unknown, "none"),
];
const KINDS: [&str; 3] = ["status", "latency", "drop"];

/// The `cloud` label of `owner`.
pub fn owner_label(owner: Owner) -> &'static str {
    OWNERS
        .iter()
        .find(|(o, _)| *o == owner)
        .map_or("none", |(_, l)| l)
}

/// The live state's counters: totals of its own and their registry series.
#[derive(Debug, Default)]
pub struct LiveCounters {
    faults_injected: AtomicU64,
    events_scheduled: AtomicU64,
    approvals: AtomicU64,
    fault_series: [[OnceLock<Arc<Counter>>; KINDS.len()]; OWNERS.len()],
    approval_series: OnceLock<Arc<Counter>>,
}

impl LiveCounters {
    /// Counts one request answered by `action` for a path `owner` owns.
    pub fn fault(&self, owner: Owner, action: &FaultAction) {
        self.faults_injected.fetch_add(1, Relaxed);
        let o = OWNERS.iter().position(|(w, _)| *w == owner).unwrap_or(0);
        let k = match action {
            FaultAction::Status { .. } => 0,
            FaultAction::Latency(_) => 1,
            FaultAction::Drop(_) => 2,
        };
        self.fault_series[o][k]
            .get_or_init(|| {
                metrics::global().counter(
                    FAULTS,
                    FAULTS_HELP,
                    &[("cloud", OWNERS[o].1), ("kind", KINDS[k])],
                )
            })
            .inc();
    }

    /// Counts the steps events took.
    pub fn steps(&self, steps: &[Step]) {
        for s in steps {
            if s.stage == super::steps::Stage::Scheduled {
                self.events_scheduled.fetch_add(1, Relaxed);
            }
            metrics::global()
                .counter(
                    EVENTS,
                    EVENTS_HELP,
                    &[
                        ("cloud", s.cloud),
                        ("type", s.kind),
                        ("stage", s.stage.label()),
                    ],
                )
                .inc();
        }
    }

    /// Counts `n` approved event ids.
    pub fn approvals(&self, n: u64) {
        self.approvals.fetch_add(n, Relaxed);
        self.approval_series
            .get_or_init(|| metrics::global().counter(APPROVALS, APPROVALS_HELP, &[]))
            .add(n);
    }

    /// Requests answered by a fault rule so far.
    pub fn faults_injected(&self) -> u64 {
        self.faults_injected.load(Relaxed)
    }

    /// Events scheduled so far (configured or by command).
    pub fn events_scheduled(&self) -> u64 {
        self.events_scheduled.load(Relaxed)
    }

    /// Event ids approved so far.
    pub fn approved(&self) -> u64 {
        self.approvals.load(Relaxed)
    }
}
