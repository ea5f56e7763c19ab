//! Azure scheduled events [SE] over time: the state behind `GET /metadata/scheduledevents`.
//!
//! Lifecycle of one event: `Scheduled` until its `NotBefore`, or until a `POST` with
//! `StartRequests` approves it, whichever comes first; then `Started` (its `NotBefore` blank,
//! as [SE] shows a started event); then gone, `DurationInSeconds` after it started. An event
//! whose duration is unknown (`-1`) or zero stays `Started` until it is cancelled (the
//! platform removes it when the impact is over, which an emulator cannot know).
//!
//! `DocumentIncarnation` [SE] "increments on every change": each event added, cancelled or
//! removed, and each step from `Scheduled` to `Started`, counts one, including steps that
//! happened between two polls.
//!
//! Contract: pure, with time passed in. [`AzureEvents::advance`] brings every event to its
//! phase at `now` (phases never go back, even if the wall clock does) and is called before
//! every read and every command; the document is a function of the state alone.

use std::time::{Duration, SystemTime};

use super::command::AZURE_EVENT_TYPES;
pub use super::steps::Phase;
use super::steps::{phase_between, reach, Stage, Step};
use super::Origin;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvent {
    pub id: String,
    /// Reboot, Redeploy, Freeze, Preempt or Terminate.
    pub event_type: String,
    pub resources: Vec<String>,
    pub description: String,
    /// Platform or User.
    pub source: String,
    /// `-1` when unknown.
    pub duration_secs: i64,
    pub not_before: SystemTime,
    /// When a `POST` approved it.
    pub approved: Option<SystemTime>,
    pub origin: Origin,
    phase: Phase,
}

impl AzureEvent {
    /// A new event; `phase` is set by [`AzureEvents::insert`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        event_type: String,
        resources: Vec<String>,
        description: String,
        source: String,
        duration_secs: i64,
        not_before: SystemTime,
        origin: Origin,
    ) -> AzureEvent {
        AzureEvent {
            id,
            event_type,
            resources,
            description,
            source,
            duration_secs,
            not_before,
            approved: None,
            origin,
            phase: Phase::Scheduled,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When it starts (or started).
    pub fn start(&self) -> SystemTime {
        match self.approved {
            Some(a) if a < self.not_before => a,
            _ => self.not_before,
        }
    }

    /// When it is gone, if it ever is by itself.
    pub fn end(&self) -> Option<SystemTime> {
        u64::try_from(self.duration_secs)
            .ok()
            .filter(|d| *d > 0)
            .map(|d| self.start() + Duration::from_secs(d))
    }

    fn phase_at(&self, now: SystemTime) -> Phase {
        phase_between(now, self.start(), self.end())
    }

    /// The `type` label ([`kind`]).
    pub fn kind(&self) -> &'static str {
        kind(&self.event_type)
    }
}

/// The `type` label of an event type: itself (validated to be one of [`AZURE_EVENT_TYPES`]).
pub fn kind(event_type: &str) -> &'static str {
    AZURE_EVENT_TYPES
        .iter()
        .find(|t| **t == event_type)
        .copied()
        .unwrap_or("other")
}

/// An approval named an event that is not in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEvent(pub String);

/// Every current event and the document's incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvents {
    incarnation: u64,
    events: Vec<AzureEvent>,
    /// Steps taken since [`AzureEvents::take_steps`] (see [`super::steps`]).
    steps: Vec<Step>,
}

impl Default for AzureEvents {
    fn default() -> Self {
        AzureEvents::new(1)
    }
}

impl AzureEvents {
    pub fn new(incarnation: u64) -> AzureEvents {
        AzureEvents {
            incarnation,
            events: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// The steps events took since last asked.
    pub fn take_steps(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.steps)
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn events(&self) -> &[AzureEvent] {
        &self.events
    }

    /// Brings every event to its phase at `now`; true when the document changed.
    pub fn advance(&mut self, now: SystemTime) -> bool {
        let before = self.incarnation;
        for e in &mut self.events {
            let phase = e.phase_at(now).max(e.phase);
            self.incarnation += (phase as u64).saturating_sub(e.phase as u64);
            let kind = e.kind();
            reach(&mut e.phase, phase, "azure", kind, &mut self.steps);
        }
        self.events.retain(|e| e.phase != Phase::Gone);
        self.incarnation != before
    }

    /// Adds `event` as it stands at `now`. `counted`: whether this is a change of the document
    /// (an event added while running) or part of the document as configured.
    pub fn insert(&mut self, mut event: AzureEvent, now: SystemTime, counted: bool) {
        self.advance(now);
        let phase = event.phase_at(now);
        let kind = event.kind();
        reach(&mut event.phase, phase, "azure", kind, &mut self.steps);
        if event.phase == Phase::Gone {
            return;
        }
        if counted {
            self.incarnation += 1;
        }
        self.events.push(event);
    }

    /// Removes the event with this id (ASCII case-insensitive); true if there was one.
    pub fn cancel(&mut self, id: &str, now: SystemTime) -> bool {
        self.advance(now);
        let n = self.events.len();
        let steps = &mut self.steps;
        self.events.retain(|e| {
            let keep = !e.id.eq_ignore_ascii_case(id);
            if !keep {
                steps.push(Step {
                    cloud: "azure",
                    kind: e.kind(),
                    stage: Stage::Cancelled,
                });
            }
            keep
        });
        let removed = self.events.len() != n;
        if removed {
            self.incarnation += 1;
        }
        removed
    }

    /// Removes every event of `origin` (a reload replaces the configured events); true if any.
    pub fn remove_origin(&mut self, origin: Origin) -> bool {
        let n = self.events.len();
        self.events.retain(|e| e.origin != origin);
        n != self.events.len()
    }

    /// Counts one change made outside the events (a reload that replaced them).
    pub fn bump(&mut self) {
        self.incarnation += 1;
    }

    /// Approves the named events at `now`: all of them, or none when one is unknown. An
    /// event already started stays as it is (IMDS answers 200 for it [SE]).
    pub fn approve(&mut self, ids: &[&str], now: SystemTime) -> Result<(), UnknownEvent> {
        self.advance(now);
        if let Some(unknown) = ids
            .iter()
            .find(|id| !self.events.iter().any(|e| e.id.eq_ignore_ascii_case(id)))
        {
            return Err(UnknownEvent((*unknown).to_string()));
        }
        for e in &mut self.events {
            if e.phase == Phase::Scheduled && ids.iter().any(|id| e.id.eq_ignore_ascii_case(id)) {
                e.approved = Some(now);
            }
        }
        self.advance(now);
        Ok(())
    }

    /// The next time the document changes by itself.
    pub fn next_change(&self) -> Option<SystemTime> {
        self.events
            .iter()
            .filter_map(|e| match e.phase {
                Phase::Scheduled => Some(e.start()),
                Phase::Started => e.end(),
                Phase::Gone => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s)
    }

    fn event(id: &str, not_before: u64, duration: i64) -> AzureEvent {
        AzureEvent::new(
            id.into(),
            "Reboot".into(),
            vec!["vm".into()],
            "".into(),
            "Platform".into(),
            duration,
            at(not_before),
            Origin::Command,
        )
    }

    #[test]
    fn scheduled_started_gone_each_count_one() {
        let mut s = AzureEvents::new(5);
        s.insert(event("A", 10, 5), at(0), true);
        assert_eq!(s.incarnation(), 6);
        assert_eq!(s.events()[0].phase(), Phase::Scheduled);
        assert_eq!(s.next_change(), Some(at(10)));
        assert!(!s.advance(at(9)));
        assert!(s.advance(at(10)));
        assert_eq!(
            (s.incarnation(), s.events()[0].phase()),
            (7, Phase::Started)
        );
        assert_eq!(s.next_change(), Some(at(15)));
        assert!(!s.advance(at(14)));
        assert!(s.advance(at(15)));
        assert_eq!((s.incarnation(), s.events().len()), (8, 0));
        assert_eq!(s.next_change(), None);
    }

    #[test]
    fn steps_between_polls_all_count_and_time_never_goes_back() {
        let mut s = AzureEvents::new(1);
        s.insert(event("A", 10, 5), at(0), true);
        assert!(s.advance(at(100)));
        assert_eq!((s.incarnation(), s.events().len()), (4, 0));
        let mut s = AzureEvents::new(1);
        s.insert(event("B", 10, -1), at(0), true);
        s.advance(at(20));
        assert!(!s.advance(at(5)), "the wall clock went back");
        assert_eq!(s.events()[0].phase(), Phase::Started);
        assert_eq!(
            s.next_change(),
            None,
            "unknown duration: started until cancelled"
        );
        assert!(s.cancel("b", at(30)));
        assert_eq!((s.incarnation(), s.events().len()), (4, 0));
        assert!(!s.cancel("b", at(30)));
        assert_eq!(s.incarnation(), 4);
    }

    #[test]
    fn approval_starts_at_once_and_is_all_or_nothing() {
        let mut s = AzureEvents::new(1);
        s.insert(event("A", 300, 5), at(0), true);
        s.insert(event("B", 300, 5), at(0), true);
        assert_eq!(s.incarnation(), 3);
        assert_eq!(
            s.approve(&["a", "nope"], at(1)),
            Err(UnknownEvent("nope".into()))
        );
        assert_eq!(s.incarnation(), 3);
        assert!(s.events().iter().all(|e| e.phase() == Phase::Scheduled));
        assert_eq!(s.approve(&["a"], at(2)), Ok(()));
        assert_eq!(s.incarnation(), 4);
        assert_eq!(s.events()[0].phase(), Phase::Started);
        assert_eq!(s.events()[0].start(), at(2));
        assert_eq!(s.next_change(), Some(at(7)));
        // Approving a started event again changes nothing.
        assert_eq!(s.approve(&["A"], at(3)), Ok(()));
        assert_eq!(s.incarnation(), 4);
        s.advance(at(7));
        assert_eq!(s.events().len(), 1);
        assert_eq!(s.incarnation(), 5);
    }

    #[test]
    fn configured_events_do_not_count_and_past_ones_are_dropped() {
        let mut s = AzureEvents::new(2);
        s.insert(event("A", 0, -1), at(10), false);
        s.insert(event("old", 0, 5), at(10), false);
        assert_eq!(s.incarnation(), 2);
        assert_eq!(s.events().len(), 1);
        assert_eq!(s.events()[0].phase(), Phase::Started);
        assert!(s.remove_origin(Origin::Command));
        assert!(s.events().is_empty());
    }
}
