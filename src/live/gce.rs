//! GCE host events over time: the values of `instance/maintenance-event` and
//! `instance/preempted`.
//!
//! A maintenance event (`MIGRATE_ON_HOST_MAINTENANCE`, `TERMINATE_ON_HOST_MAINTENANCE`, or
//! `NONE`) holds from its time for its duration (for good without one); then the configured
//! value is back. `preempted` is `TRUE` from its time on. These values are part of recursive
//! documents and ETags, so the snapshot renders them ([`GceOverlay`]); a change is a snapshot
//! change (see [`crate::live`]).
//!
//! Contract: pure, with time passed in.

use std::time::SystemTime;

use super::steps::{phase_between, reach, Phase, Stage, Step};
use super::Origin;

/// One set value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GceMaintenance {
    pub value: String,
    pub from: SystemTime,
    pub until: Option<SystemTime>,
    pub origin: Origin,
    /// Counted so far ([`super::steps`]).
    pub seen: Phase,
}

/// `preempted` is `TRUE` from `at` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preempted {
    pub at: SystemTime,
    pub origin: Origin,
    /// Counted so far ([`super::steps`]).
    pub seen: Phase,
}

/// What the live state changes in the GCE tree; `Default` changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GceOverlay {
    pub maintenance_event: Option<String>,
    pub preempted: bool,
}

impl GceOverlay {
    /// Applies the overlay to an `instance` tree.
    pub fn apply(&self, instance: &mut serde_json::Map<String, serde_json::Value>) {
        if let Some(m) = &self.maintenance_event {
            instance.insert("maintenance-event".into(), m.as_str().into());
        }
        if self.preempted {
            instance.insert("preempted".into(), "TRUE".into());
        }
    }
}

/// Every GCE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GceEvents {
    /// In the order set; the last one holding at a time wins.
    pub maintenance: Vec<GceMaintenance>,
    pub preempted: Option<Preempted>,
    /// Steps taken since [`GceEvents::take_steps`].
    steps: Vec<Step>,
}

impl GceEvents {
    pub fn overlay_at(&self, now: SystemTime) -> GceOverlay {
        GceOverlay {
            maintenance_event: self
                .maintenance
                .iter()
                .rev()
                .find(|m| m.from <= now && m.until.is_none_or(|u| now < u))
                .map(|m| m.value.clone()),
            preempted: self.preempted.is_some_and(|p| p.at <= now),
        }
    }

    /// Records the steps every value took by `now` ([`super::steps`]) and drops values that
    /// are over.
    pub fn advance(&mut self, now: SystemTime) {
        let steps = &mut self.steps;
        for m in &mut self.maintenance {
            let phase = phase_between(now, m.from, m.until);
            reach(&mut m.seen, phase, "gce", "maintenance-event", steps);
        }
        if let Some(p) = &mut self.preempted {
            let phase = phase_between(now, p.at, None);
            reach(&mut p.seen, phase, "gce", "preempted", steps);
        }
        self.maintenance.retain(|m| m.seen != Phase::Gone);
    }

    /// The steps values took since last asked.
    pub fn take_steps(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.steps)
    }

    /// Cancels `gce` (every value set): true if there was one.
    pub fn cancel(&mut self) -> bool {
        let kinds = self
            .maintenance
            .iter()
            .map(|_| "maintenance-event")
            .chain(self.preempted.iter().map(|_| "preempted"));
        let cancelled: Vec<Step> = kinds
            .map(|kind| Step {
                cloud: "gce",
                kind,
                stage: Stage::Cancelled,
            })
            .collect();
        let any = !cancelled.is_empty();
        self.maintenance.clear();
        self.preempted = None;
        self.steps.extend(cancelled);
        any
    }

    pub fn remove_origin(&mut self, origin: Origin) {
        self.maintenance.retain(|m| m.origin != origin);
        if self.preempted.is_some_and(|p| p.origin == origin) {
            self.preempted = None;
        }
    }

    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        let maintenance = self
            .maintenance
            .iter()
            .flat_map(|m| std::iter::once(m.from).chain(m.until))
            .filter(|t| *t > now);
        let preempted = self.preempted.map(|p| p.at).filter(|t| *t > now);
        maintenance.chain(preempted).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s)
    }

    #[test]
    fn maintenance_holds_for_its_duration_and_preemption_for_good() {
        let mut g = GceEvents {
            maintenance: vec![GceMaintenance {
                value: "MIGRATE_ON_HOST_MAINTENANCE".into(),
                from: at(10),
                until: Some(at(70)),
                origin: Origin::Command,
                seen: Phase::Scheduled,
            }],
            preempted: Some(Preempted {
                at: at(100),
                origin: Origin::Command,
                seen: Phase::Scheduled,
            }),
            ..Default::default()
        };
        assert_eq!(g.overlay_at(at(9)), GceOverlay::default());
        assert_eq!(
            g.overlay_at(at(10)).maintenance_event.as_deref(),
            Some("MIGRATE_ON_HOST_MAINTENANCE")
        );
        assert_eq!(g.next_change(at(10)), Some(at(70)));
        assert_eq!(g.overlay_at(at(70)), GceOverlay::default());
        assert!(g.overlay_at(at(100)).preempted);
        g.advance(at(100));
        assert!(g.maintenance.is_empty());
        let stages: Vec<(&str, Stage)> = g.take_steps().iter().map(|s| (s.kind, s.stage)).collect();
        assert_eq!(
            stages,
            [
                ("maintenance-event", Stage::Started),
                ("maintenance-event", Stage::Completed),
                ("preempted", Stage::Started)
            ]
        );
        let mut tree = serde_json::Map::new();
        g.overlay_at(at(100)).apply(&mut tree);
        assert_eq!(tree.get("preempted").and_then(|v| v.as_str()), Some("TRUE"));
        assert!(g.cancel());
        assert_eq!(g.take_steps().len(), 1, "preempted cancelled");
        assert!(!g.cancel());
    }
}
