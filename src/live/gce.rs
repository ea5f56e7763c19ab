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

use super::Origin;

/// One set value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GceMaintenance {
    pub value: String,
    pub from: SystemTime,
    pub until: Option<SystemTime>,
    pub origin: Origin,
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
    pub preempted: Option<(SystemTime, Origin)>,
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
            preempted: self.preempted.is_some_and(|(t, _)| t <= now),
        }
    }

    /// Drops values that are over.
    pub fn prune(&mut self, now: SystemTime) {
        self.maintenance.retain(|m| m.until.is_none_or(|u| now < u));
    }

    /// Cancels `gce` (every value set): true if there was one.
    pub fn cancel(&mut self) -> bool {
        let any = !self.maintenance.is_empty() || self.preempted.is_some();
        *self = GceEvents::default();
        any
    }

    pub fn remove_origin(&mut self, origin: Origin) {
        self.maintenance.retain(|m| m.origin != origin);
        if self.preempted.is_some_and(|(_, o)| o == origin) {
            self.preempted = None;
        }
    }

    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        let maintenance = self
            .maintenance
            .iter()
            .flat_map(|m| std::iter::once(m.from).chain(m.until))
            .filter(|t| *t > now);
        let preempted = self.preempted.map(|(t, _)| t).filter(|t| *t > now);
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
            }],
            preempted: Some((at(100), Origin::Command)),
        };
        assert_eq!(g.overlay_at(at(9)), GceOverlay::default());
        assert_eq!(
            g.overlay_at(at(10)).maintenance_event.as_deref(),
            Some("MIGRATE_ON_HOST_MAINTENANCE")
        );
        assert_eq!(g.next_change(at(10)), Some(at(70)));
        assert_eq!(g.overlay_at(at(70)), GceOverlay::default());
        assert!(g.overlay_at(at(100)).preempted);
        g.prune(at(100));
        assert!(g.maintenance.is_empty());
        let mut tree = serde_json::Map::new();
        g.overlay_at(at(100)).apply(&mut tree);
        assert_eq!(tree.get("preempted").and_then(|v| v.as_str()), Some("TRUE"));
        assert!(g.cancel());
        assert!(!g.cancel());
    }
}
