//! Injected failures: rules that make chosen paths fail for a number of requests or for a
//! while, then let normal service resume.
//!
//! A rule matches a request by cloud (optional) and path (exact, or prefix), and does one
//! thing: answer a status with the cloud's own body ([`crate::cloud::fault`]), answer normally
//! but late, or drop the connection without an answer (RST, or FIN). Each match counts against
//! the rule's `count`; a rule whose count is spent or whose time is up is removed. The first
//! matching rule wins, in the order rules were added.
//!
//! Contract: pure, with time passed in; [`Faults::take`] is the only call on the request path
//! and costs one comparison per rule.

use std::time::{Duration, SystemTime};

use super::Origin;
use crate::cloud::Owner;
pub use crate::http::DropKind;

/// How to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status; `retry_after` seconds in `Retry-After` when given.
    Status {
        status: u16,
        retry_after: Option<u32>,
    },
    /// Answer normally after this long (the request waits off the packet path).
    Latency(Duration),
    /// Close the connection without answering.
    Drop(DropKind),
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub id: u32,
    pub cloud: Option<Owner>,
    pub path: String,
    pub prefix: bool,
    pub action: FaultAction,
    /// Requests left; `None` for no limit.
    pub remaining: Option<u64>,
    /// When the rule ends; `None` for no end.
    pub until: Option<SystemTime>,
    pub origin: Origin,
    /// Requests it failed so far.
    pub hits: u64,
}

impl Fault {
    fn matches(&self, owner: Owner, path: &str) -> bool {
        self.cloud.is_none_or(|c| c == owner)
            && if self.prefix {
                path.starts_with(self.path.as_str())
            } else {
                path == self.path
            }
    }

    fn live_at(&self, now: SystemTime) -> bool {
        self.remaining != Some(0) && self.until.is_none_or(|u| now < u)
    }
}

/// Every rule, in the order added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    rules: Vec<Fault>,
    next_id: u32,
}

impl Faults {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Fault] {
        &self.rules
    }

    /// Adds a rule (its `id` is assigned here) and returns the id.
    pub fn add(&mut self, mut fault: Fault) -> u32 {
        self.next_id += 1;
        fault.id = self.next_id;
        self.rules.push(fault);
        self.next_id
    }

    /// The action for a request to `path` (owned by `owner`) at `now`, counted against its
    /// rule; `None` when no rule applies.
    pub fn take(&mut self, owner: Owner, path: &str, now: SystemTime) -> Option<FaultAction> {
        self.rules.retain(|r| r.live_at(now));
        let rule = self.rules.iter_mut().find(|r| r.matches(owner, path))?;
        rule.hits += 1;
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        let action = rule.action;
        self.rules.retain(|r| r.live_at(now));
        Some(action)
    }

    /// The action [`Faults::take`] would return, without counting it.
    pub fn peek(&self, owner: Owner, path: &str, now: SystemTime) -> Option<FaultAction> {
        self.rules
            .iter()
            .find(|r| r.live_at(now) && r.matches(owner, path))
            .map(|r| r.action)
    }

    /// Removes the rule `id`, or every rule when `None`; returns how many were removed.
    pub fn clear(&mut self, id: Option<u32>) -> usize {
        let n = self.rules.len();
        self.rules.retain(|r| id.is_some_and(|id| r.id != id));
        n - self.rules.len()
    }

    pub fn remove_origin(&mut self, origin: Origin) {
        self.rules.retain(|r| r.origin != origin);
    }

    /// When a rule ends by itself.
    pub fn next_change(&self) -> Option<SystemTime> {
        self.rules.iter().filter_map(|r| r.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s)
    }

    fn rule(path: &str, prefix: bool, remaining: Option<u64>, until: Option<u64>) -> Fault {
        Fault {
            id: 0,
            cloud: Some(Owner::Azure),
            path: path.into(),
            prefix,
            action: FaultAction::Status {
                status: 429,
                retry_after: None,
            },
            remaining,
            until: until.map(at),
            origin: Origin::Command,
            hits: 0,
        }
    }

    #[test]
    fn counted_rules_end_after_their_count() {
        let mut f = Faults::default();
        assert_eq!(
            f.add(rule(
                "/metadata/identity/oauth2/token",
                false,
                Some(2),
                None
            )),
            1
        );
        let token = "/metadata/identity/oauth2/token";
        assert!(f.take(Owner::Azure, "/metadata/instance", at(0)).is_none());
        assert!(f.take(Owner::Gce, token, at(0)).is_none(), "another cloud");
        assert!(f.take(Owner::Azure, token, at(0)).is_some());
        assert!(f.take(Owner::Azure, token, at(0)).is_some());
        assert!(f.take(Owner::Azure, token, at(0)).is_none());
        assert!(f.is_empty());
    }

    #[test]
    fn timed_rules_end_at_their_time_and_prefixes_match_below() {
        let mut f = Faults::default();
        f.add(rule("/metadata/", true, None, Some(70)));
        assert_eq!(f.next_change(), Some(at(70)));
        assert!(f
            .take(Owner::Azure, "/metadata/instance/compute", at(69))
            .is_some());
        assert!(f.take(Owner::Azure, "/metadata", at(69)).is_none());
        assert!(f.take(Owner::Azure, "/metadata/instance", at(70)).is_none());
        assert!(f.is_empty());
    }

    #[test]
    fn the_first_rule_wins_and_rules_can_be_cleared() {
        let mut f = Faults::default();
        f.add(rule("/a", false, Some(1), None));
        let mut late = rule("/a", false, None, None);
        late.action = FaultAction::Drop(DropKind::Reset);
        f.add(late);
        assert!(matches!(
            f.take(Owner::Azure, "/a", at(0)),
            Some(FaultAction::Status { status: 429, .. })
        ));
        assert_eq!(
            f.take(Owner::Azure, "/a", at(0)),
            Some(FaultAction::Drop(DropKind::Reset))
        );
        assert_eq!(f.rules()[0].hits, 1);
        assert_eq!(f.clear(Some(99)), 0);
        assert_eq!(f.clear(None), 1);
    }
}
