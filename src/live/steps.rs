//! The life of every event, whatever its cloud, and the record of each step it takes: what the
//! live state reports to the metrics registry ([`super::counted`]).
//!
//! Every event is `Scheduled` (known, not yet under way), then `Started` (under way as clients
//! see it), then `Gone` (over by itself); phases never go back. What those are per cloud:
//!
//! | event | started | gone |
//! |---|---|---|
//! | Azure scheduled event | `EventStatus: Started` (its `NotBefore`, or approved) | removed after `DurationInSeconds` |
//! | AWS spot interruption | the notice appears | the interruption time (the notice disappears) |
//! | AWS maintenance | its `NotBefore` | its `NotAfter` (`completed`) |
//! | AWS lifecycle state | its time (never gone: a later value takes over) | |
//! | GCE maintenance-event | its time | its duration is over |
//! | GCE preempted | its time (never gone) | |
//!
//! An event removed by `ctl event cancel` before it is gone takes the step `Cancelled`.
//!
//! Contract: pure. The per-cloud state calls [`reach`] wherever it learns an event's phase
//! at a time and keeps the [`Step`]s in a buffer that [`super::Live`] drains (and counts)
//! after each operation, so a step is counted once, however many requests see it.

/// Where an event is in its life; ordered, never goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Scheduled,
    Started,
    Gone,
}

/// A step an event took, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Scheduled,
    Started,
    Completed,
    Cancelled,
}

impl Stage {
    /// The `stage` label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Scheduled => "scheduled",
            Stage::Started => "started",
            Stage::Completed => "completed",
            Stage::Cancelled => "cancelled",
        }
    }
}

/// One step of one event: its cloud and kind (bounded label values) and the stage reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub cloud: &'static str,
    pub kind: &'static str,
    pub stage: Stage,
}

/// Moves `seen` forward to `phase` (never back), recording each stage passed on the way: an
/// event may start and end between two looks, and both steps count.
pub fn reach(
    seen: &mut Phase,
    phase: Phase,
    cloud: &'static str,
    kind: &'static str,
    steps: &mut Vec<Step>,
) {
    for (p, stage) in [
        (Phase::Started, Stage::Started),
        (Phase::Gone, Stage::Completed),
    ] {
        if *seen < p && p <= phase {
            steps.push(Step { cloud, kind, stage });
        }
    }
    *seen = (*seen).max(phase);
}

/// The phase at `now` of an event under way from `start` until `end` (for good when `None`).
pub fn phase_between(
    now: std::time::SystemTime,
    start: std::time::SystemTime,
    end: Option<std::time::SystemTime>,
) -> Phase {
    if now < start {
        Phase::Scheduled
    } else if end.is_some_and(|e| now >= e) {
        Phase::Gone
    } else {
        Phase::Started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_passed_is_recorded_once() {
        let mut steps = Vec::new();
        let mut seen = Phase::Scheduled;
        reach(&mut seen, Phase::Scheduled, "aws", "spot", &mut steps);
        assert!(steps.is_empty());
        reach(&mut seen, Phase::Gone, "aws", "spot", &mut steps);
        let stages: Vec<Stage> = steps.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Started, Stage::Completed]);
        reach(&mut seen, Phase::Started, "aws", "spot", &mut steps);
        reach(&mut seen, Phase::Gone, "aws", "spot", &mut steps);
        assert_eq!(steps.len(), 2, "never back, never twice");
        assert_eq!(seen, Phase::Gone);
    }
}
