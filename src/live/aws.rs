//! AWS instance events over time: spot interruptions, scheduled maintenance and the Auto
//! Scaling lifecycle state.
//!
//! - Spot: `spot/instance-action` (and `spot/termination-time` for `terminate`) exist from the
//!   notice until the interruption time, and not otherwise (EC2 user guide, "Spot Instance
//!   interruption notices": the item "is present only if" an interruption is scheduled).
//! - Maintenance: an event is `active` until its `NotAfter`, then `completed`; a cancelled
//!   one is `canceled`. `events/maintenance/scheduled` lists the active ones,
//!   `events/maintenance/history` the others (EC2 user guide, "View scheduled events").
//! - Lifecycle: `autoscaling/target-lifecycle-state` takes each set value from its time on.
//!
//! Contract: pure, with time passed in; the views are functions of the state and `now`.

use std::time::SystemTime;

use super::steps::{phase_between, reach, Phase, Stage, Step};
use super::Origin;

/// A spot interruption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spot {
    /// stop, terminate or hibernate.
    pub action: String,
    /// The interruption.
    pub time: SystemTime,
    /// When the notice appears.
    pub notice: SystemTime,
    pub origin: Origin,
    /// Counted so far ([`super::steps`]).
    pub seen: Phase,
}

impl Spot {
    pub fn visible(&self, now: SystemTime) -> bool {
        self.phase(now) == Phase::Started
    }

    /// Started while the notice shows.
    pub fn phase(&self, now: SystemTime) -> Phase {
        phase_between(now, self.notice, Some(self.time))
    }
}

/// State of a maintenance event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintenanceState {
    Active,
    Completed,
    Canceled,
}

impl MaintenanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceState::Active => "active",
            MaintenanceState::Completed => "completed",
            MaintenanceState::Canceled => "canceled",
        }
    }
}

/// A scheduled maintenance event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maintenance {
    /// `instance-event-` and 17 hex digits.
    pub id: String,
    pub code: String,
    pub description: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub canceled: bool,
    pub origin: Origin,
    /// Counted so far ([`super::steps`]).
    pub seen: Phase,
}

impl Maintenance {
    pub fn state(&self, now: SystemTime) -> MaintenanceState {
        if self.canceled {
            MaintenanceState::Canceled
        } else if now >= self.not_after {
            MaintenanceState::Completed
        } else {
            MaintenanceState::Active
        }
    }
}

/// One value of the lifecycle state, from its time on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: String,
    pub from: SystemTime,
    pub origin: Origin,
    /// Counted so far ([`super::steps`]).
    pub seen: Phase,
}

/// Everything AWS shows of events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsEvents {
    pub spot: Option<Spot>,
    pub maintenance: Vec<Maintenance>,
    /// In the order set; the last whose time has come is current.
    pub lifecycle: Vec<Lifecycle>,
    /// Steps taken since [`AwsEvents::take_steps`].
    steps: Vec<Step>,
}

impl AwsEvents {
    /// Records the steps every event took by `now` ([`super::steps`]).
    pub fn advance(&mut self, now: SystemTime) {
        let steps = &mut self.steps;
        if let Some(s) = &mut self.spot {
            let phase = s.phase(now);
            reach(&mut s.seen, phase, "aws", "spot", steps);
        }
        for m in self.maintenance.iter_mut().filter(|m| !m.canceled) {
            let phase = phase_between(now, m.not_before, Some(m.not_after));
            reach(&mut m.seen, phase, "aws", "maintenance", steps);
        }
        for l in &mut self.lifecycle {
            let phase = phase_between(now, l.from, None);
            reach(&mut l.seen, phase, "aws", "lifecycle", steps);
        }
    }

    /// The steps events took since last asked.
    pub fn take_steps(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.steps)
    }

    fn cancelled(&mut self, kind: &'static str) {
        self.steps.push(Step {
            cloud: "aws",
            kind,
            stage: Stage::Cancelled,
        });
    }

    /// The interruption whose notice shows at `now`.
    pub fn spot_at(&self, now: SystemTime) -> Option<&Spot> {
        self.spot.as_ref().filter(|s| s.visible(now))
    }

    /// Whether the maintenance documents are live (any event was ever scheduled); otherwise
    /// the configured `metaData` values stand.
    pub fn has_maintenance(&self) -> bool {
        !self.maintenance.is_empty()
    }

    /// The events of `scheduled` (active) or of `history` (the others) at `now`.
    pub fn maintenance_at(
        &self,
        now: SystemTime,
        history: bool,
    ) -> impl Iterator<Item = (&Maintenance, MaintenanceState)> {
        self.maintenance
            .iter()
            .map(move |m| (m, m.state(now)))
            .filter(move |(_, s)| (*s != MaintenanceState::Active) == history)
    }

    /// `autoscaling/target-lifecycle-state` at `now`.
    pub fn lifecycle_at(&self, now: SystemTime) -> Option<&str> {
        self.lifecycle
            .iter()
            .rev()
            .find(|l| l.from <= now)
            .map(|l| l.state.as_str())
    }

    /// Cancels the event `id`: a maintenance event id, or `spot`; true if it was there.
    pub fn cancel(&mut self, id: &str, now: SystemTime) -> bool {
        if id == "spot" {
            let Some(spot) = self.spot.take() else {
                return false;
            };
            if spot.phase(now) != Phase::Gone {
                self.cancelled("spot");
            }
            return true;
        }
        match self
            .maintenance
            .iter_mut()
            .find(|m| m.id == id && m.state(now) == MaintenanceState::Active)
        {
            Some(m) => {
                m.canceled = true;
                self.cancelled("maintenance");
                true
            }
            None => false,
        }
    }

    /// Removes everything of `origin`.
    pub fn remove_origin(&mut self, origin: Origin) {
        if self.spot.as_ref().is_some_and(|s| s.origin == origin) {
            self.spot = None;
        }
        self.maintenance.retain(|m| m.origin != origin);
        self.lifecycle.retain(|l| l.origin != origin);
    }

    /// The next time a view changes by itself.
    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        let spot = self
            .spot
            .iter()
            .flat_map(|s| [s.notice, s.time])
            .filter(|t| *t > now);
        let maintenance = self
            .maintenance
            .iter()
            .filter(|m| !m.canceled)
            .map(|m| m.not_after)
            .filter(|t| *t > now);
        let lifecycle = self.lifecycle.iter().map(|l| l.from).filter(|t| *t > now);
        spot.chain(maintenance).chain(lifecycle).min()
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
    fn spot_notice_shows_from_notice_until_the_interruption() {
        let mut e = AwsEvents {
            spot: Some(Spot {
                action: "terminate".into(),
                time: at(120),
                notice: at(10),
                origin: Origin::Command,
                seen: Phase::Scheduled,
            }),
            ..Default::default()
        };
        assert!(e.spot_at(at(9)).is_none());
        assert!(e.spot_at(at(10)).is_some());
        assert!(e.spot_at(at(119)).is_some());
        assert!(e.spot_at(at(120)).is_none());
        assert_eq!(e.next_change(at(0)), Some(at(10)));
        assert_eq!(e.next_change(at(10)), Some(at(120)));
        assert!(e.cancel("spot", at(11)));
        assert!(e.spot_at(at(11)).is_none());
    }

    #[test]
    fn maintenance_moves_from_scheduled_to_history() {
        let m = |id: &str| Maintenance {
            id: id.into(),
            code: "system-reboot".into(),
            description: "scheduled reboot".into(),
            not_before: at(60),
            not_after: at(600),
            canceled: false,
            origin: Origin::Command,
            seen: Phase::Scheduled,
        };
        let mut e = AwsEvents {
            maintenance: vec![m("instance-event-0"), m("instance-event-1")],
            ..Default::default()
        };
        let ids = |e: &AwsEvents, now, history| -> Vec<(String, &'static str)> {
            e.maintenance_at(now, history)
                .map(|(m, s)| (m.id.clone(), s.as_str()))
                .collect()
        };
        assert_eq!(ids(&e, at(0), false).len(), 2);
        assert!(ids(&e, at(0), true).is_empty());
        assert!(e.cancel("instance-event-1", at(1)));
        assert!(!e.cancel("instance-event-1", at(1)), "already cancelled");
        assert_eq!(
            ids(&e, at(1), true),
            [("instance-event-1".to_string(), "canceled")]
        );
        assert_eq!(
            ids(&e, at(600), true),
            [
                ("instance-event-0".to_string(), "completed"),
                ("instance-event-1".to_string(), "canceled")
            ]
        );
        assert!(ids(&e, at(600), false).is_empty());
    }

    #[test]
    fn lifecycle_takes_the_latest_value_whose_time_has_come() {
        let l = |state: &str, s| Lifecycle {
            state: state.into(),
            from: at(s),
            origin: Origin::Config,
            seen: Phase::Scheduled,
        };
        let e = AwsEvents {
            lifecycle: vec![l("InService", 0), l("Terminated", 30)],
            ..Default::default()
        };
        assert_eq!(e.lifecycle_at(at(29)), Some("InService"));
        assert_eq!(e.lifecycle_at(at(30)), Some("Terminated"));
        assert_eq!(e.next_change(at(0)), Some(at(30)));
    }
}
