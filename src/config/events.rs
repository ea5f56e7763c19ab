//! Live events and injected failures as configuration: what a running instance starts with.
//!
//! Shape (every part optional):
//!
//! ```json
//! "azure":  { "scheduledEvents": { "events": [ { "eventType": "Reboot", "notBefore": "+5m",
//!                                                "durationInSeconds": 300 } ] } },
//! "aws":    { "events": { "spot": { "action": "terminate", "time": "+2m" },
//!                         "maintenance": [ { "code": "system-reboot", "notBefore": "+1h",
//!                                            "duration": "2h" } ],
//!                         "targetLifecycleState": "InService" } },
//! "gce":    { "events": [ { "maintenanceEvent": "MIGRATE_ON_HOST_MAINTENANCE", "at": "+30s",
//!                           "duration": "60s" }, { "preempted": true, "at": "+5m" } ] },
//! "faults": [ { "path": "/metadata/identity/oauth2/token", "status": 429, "count": 1 } ]
//! ```
//!
//! Times ([`When`]) are relative to the moment the configuration takes effect (`+5m`, `+90s`)
//! or absolute (`Mon, 19 Sep 2016 18:29:47 GMT` as Azure prints it, or
//! `2026-01-01T00:00:00Z`); durations are a number with a unit (`500ms`, `90s`, `5m`, `2h`)
//! or bare seconds. The state these become, and how it changes over time, is
//! [`crate::live`]'s; here are only the schema and its checks.
//!
//! Contract: every check names the exact JSON path; whatever passes converts into live
//! commands without further errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::error::{index, join, Problems};
use crate::cloud::aws::timestamp::parse_utc;

/// A point in time as configured or typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// This long after the configuration (or command) takes effect; `+0s` is "now".
    After(Duration),
    /// Seconds since the Unix epoch.
    At(i64),
}

impl When {
    /// `+5m`, `+90s`, `5m` (relative), or an absolute RFC 1123 / `YYYY-MM-DDTHH:MM:SSZ` time.
    pub fn parse(text: &str) -> Option<When> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix('+') {
            return parse_duration(rest).map(When::After);
        }
        if let Some(d) = parse_duration(t) {
            return Some(When::After(d));
        }
        parse_utc(t).or_else(|| parse_rfc1123(t)).map(When::At)
    }

    /// The instant, with relative times counted from `origin`.
    pub fn resolve(self, origin: SystemTime) -> SystemTime {
        match self {
            When::After(d) => origin + d,
            When::At(secs) => UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        }
    }
}

/// `500ms`, `90s`, `5m`, `2h`, or bare seconds (`300`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (digits, scale_ms): (&str, u64) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 9 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(scale_ms)?))
}

/// `Mon, 19 Sep 2016 18:29:47 GMT` (IMF-fixdate, RFC 9110 5.6.7; the weekday is not checked).
pub fn parse_rfc1123(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rest = text.split_once(", ").map_or(text, |(_, r)| r);
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    parse_utc(&format!("{year}-{month:02}-{day}T{time}Z"))
}

/// `$.aws.events`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsEvents {
    /// A spot interruption (`meta-data/spot/instance-action`).
    #[serde(default)]
    pub spot: Option<SpotInterruption>,
    /// Scheduled maintenance (`meta-data/events/maintenance/`).
    #[serde(default)]
    pub maintenance: Vec<MaintenanceEvent>,
    /// `meta-data/autoscaling/target-lifecycle-state` from the start (`InService`, ...).
    #[serde(default)]
    pub target_lifecycle_state: Option<String>,
}

/// `$.aws.events.spot`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpotInterruption {
    /// `stop`, `terminate` or `hibernate`.
    pub action: String,
    /// When the instance is interrupted (the notice's `time`); the notice is gone after it.
    pub time: String,
    /// When the notice appears; at once when absent (EC2 gives two minutes).
    #[serde(default)]
    pub notice: Option<String>,
}

/// `$.aws.events.maintenance[i]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaintenanceEvent {
    /// `instance-reboot`, `system-reboot`, `system-maintenance`, `instance-retirement` or
    /// `instance-stop`.
    pub code: String,
    pub not_before: String,
    /// When the event window closes (then it is `completed`); `notBefore` + `duration`, or
    /// `notBefore` + 2 h when neither is given.
    #[serde(default)]
    pub not_after: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `instance-event-` and 17 hex digits; generated when absent.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// `$.gce.events[i]`: one value of `instance/maintenance-event` or `instance/preempted`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GceEvent {
    #[serde(default)]
    pub maintenance_event: Option<String>,
    #[serde(default)]
    pub preempted: Option<bool>,
    /// When the value takes effect; at once when absent.
    #[serde(default)]
    pub at: Option<String>,
    /// How long a maintenance event lasts before the value is the configured one again.
    #[serde(default)]
    pub duration: Option<String>,
}

/// `$.faults[i]`: an injected failure.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultConfig {
    /// `azure`, `gce` or `aws`: only requests for that cloud's paths; any cloud when absent.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The request path (before `?`) that fails.
    pub path: String,
    /// Every path starting with `path`, not only `path` itself.
    #[serde(default)]
    pub prefix: bool,
    /// Answer this status ([`FAULT_STATUSES`]) with the cloud's own body.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with `status`.
    #[serde(default)]
    pub retry_after: Option<u32>,
    /// Answer normally, this much later.
    #[serde(default)]
    pub latency: Option<String>,
    /// `reset` (RST) or `close` (FIN) instead of answering.
    #[serde(default)]
    pub drop: Option<String>,
    /// For this many matching requests, then normal service.
    #[serde(default)]
    pub count: Option<u64>,
    /// For this long after the configuration takes effect, then normal service.
    #[serde(default, rename = "for")]
    pub lasts: Option<String>,
}

/// The statuses a fault may answer.
pub const FAULT_STATUSES: [u16; 7] = [404, 410, 429, 500, 502, 503, 504];
pub const SPOT_ACTIONS: [&str; 3] = ["stop", "terminate", "hibernate"];
pub const MAINTENANCE_CODES: [&str; 5] = [
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
    "instance-retirement",
    "instance-stop",
];
/// `autoscaling/target-lifecycle-state` values (EC2 Auto Scaling user guide).
pub const LIFECYCLE_STATES: [&str; 6] = [
    "InService",
    "Terminated",
    "Standby",
    "Warmed:Stopped",
    "Warmed:Running",
    "Warmed:Hibernated",
];
pub const GCE_MAINTENANCE_VALUES: [&str; 3] = [
    "NONE",
    "MIGRATE_ON_HOST_MAINTENANCE",
    "TERMINATE_ON_HOST_MAINTENANCE",
];

fn check_when(value: &str, at: &str, problems: &mut Problems) {
    if When::parse(value).is_none() {
        problems.push(
            at,
            "a time: \"+5m\" (from start), \"Mon, 19 Sep 2016 18:29:47 GMT\" or \
             \"2026-01-01T00:00:00Z\"",
        );
    }
}

fn check_duration(value: &str, at: &str, problems: &mut Problems) {
    if parse_duration(value).is_none() {
        problems.push(
            at,
            "a duration such as \"90s\", \"5m\", \"2h\" or \"500ms\"",
        );
    }
}

fn one_of(value: &str, allowed: &[&str], at: &str, problems: &mut Problems) {
    if !allowed.contains(&value) {
        problems.push(at, format!("one of {}", allowed.join(", ")));
    }
}

impl AwsEvents {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        if let Some(spot) = &self.spot {
            let s = join(at, "spot");
            one_of(&spot.action, &SPOT_ACTIONS, &join(&s, "action"), problems);
            check_when(&spot.time, &join(&s, "time"), problems);
            if let Some(n) = &spot.notice {
                check_when(n, &join(&s, "notice"), problems);
            }
        }
        let m_at = join(at, "maintenance");
        for (i, m) in self.maintenance.iter().enumerate() {
            let e = index(&m_at, i);
            one_of(&m.code, &MAINTENANCE_CODES, &join(&e, "code"), problems);
            check_when(&m.not_before, &join(&e, "notBefore"), problems);
            if let Some(t) = &m.not_after {
                check_when(t, &join(&e, "notAfter"), problems);
            }
            if let Some(d) = &m.duration {
                check_duration(d, &join(&e, "duration"), problems);
            }
            if m.not_after.is_some() && m.duration.is_some() {
                problems.push(
                    join(&e, "duration"),
                    "either notAfter or duration, not both",
                );
            }
            if let Some(id) = &m.event_id {
                if !is_maintenance_id(id) {
                    problems.push(
                        join(&e, "eventId"),
                        "\"instance-event-\" and 17 hex digits, e.g. instance-event-0d59937288b749b32",
                    );
                }
            }
        }
        if let Some(s) = &self.target_lifecycle_state {
            one_of(
                s,
                &LIFECYCLE_STATES,
                &join(at, "targetLifecycleState"),
                problems,
            );
        }
    }
}

/// `instance-event-` and 17 lower-case hex digits, as EC2 names events.
pub fn is_maintenance_id(id: &str) -> bool {
    id.strip_prefix("instance-event-").is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks `$.gce.events`.
pub fn validate_gce_events(events: &[GceEvent], at: &str, problems: &mut Problems) {
    for (i, e) in events.iter().enumerate() {
        let e_at = index(at, i);
        match (&e.maintenance_event, e.preempted) {
            (Some(v), None) => one_of(
                v,
                &GCE_MAINTENANCE_VALUES,
                &join(&e_at, "maintenanceEvent"),
                problems,
            ),
            (None, Some(_)) => {
                if e.duration.is_some() {
                    problems.push(
                        join(&e_at, "duration"),
                        "no duration: a preempted VM stays preempted",
                    );
                }
            }
            _ => problems.push(&e_at, "exactly one of maintenanceEvent and preempted"),
        }
        if let Some(t) = &e.at {
            check_when(t, &join(&e_at, "at"), problems);
        }
        if let Some(d) = &e.duration {
            check_duration(d, &join(&e_at, "duration"), problems);
        }
    }
}

/// Checks `$.faults`.
pub fn validate_faults(faults: &[FaultConfig], at: &str, problems: &mut Problems) {
    for (i, f) in faults.iter().enumerate() {
        let f_at = index(at, i);
        if let Some(c) = &f.cloud {
            one_of(c, &["azure", "gce", "aws"], &join(&f_at, "cloud"), problems);
        }
        if !f.path.starts_with('/') {
            problems.push(join(&f_at, "path"), "a path starting with /");
        }
        let actions = usize::from(f.status.is_some())
            + usize::from(f.latency.is_some())
            + usize::from(f.drop.is_some());
        if actions != 1 {
            problems.push(&f_at, "exactly one of status, latency and drop");
        }
        if let Some(s) = f.status {
            if !FAULT_STATUSES.contains(&s) {
                let list: Vec<String> = FAULT_STATUSES.iter().map(u16::to_string).collect();
                problems.push(join(&f_at, "status"), format!("one of {}", list.join(", ")));
            }
        }
        if f.retry_after.is_some() && f.status.is_none() {
            problems.push(join(&f_at, "retryAfter"), "retryAfter only with status");
        }
        if let Some(l) = &f.latency {
            check_duration(l, &join(&f_at, "latency"), problems);
        }
        if let Some(d) = &f.drop {
            one_of(d, &["reset", "close"], &join(&f_at, "drop"), problems);
        }
        if f.count == Some(0) {
            problems.push(join(&f_at, "count"), "at least 1 request");
        }
        if let Some(d) = &f.lasts {
            check_duration(d, &join(&f_at, "for"), problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(
            When::parse("+5m"),
            Some(When::After(Duration::from_secs(300)))
        );
        assert_eq!(
            When::parse("90s"),
            Some(When::After(Duration::from_secs(90)))
        );
        assert_eq!(When::parse("+0"), Some(When::After(Duration::ZERO)));
        assert_eq!(
            When::parse("Mon, 19 Sep 2016 18:29:47 GMT"),
            Some(When::At(1_474_309_787))
        );
        assert_eq!(
            When::parse("2016-09-19T18:29:47Z"),
            Some(When::At(1_474_309_787))
        );
        for bad in [
            "",
            "+",
            "5x",
            "+-5s",
            "Mon, 19 Sep 2016 18:29:47 UTC",
            "19 Sept 2016",
        ] {
            assert_eq!(When::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("99999999999"), None);
    }

    #[test]
    fn problems_name_their_paths() {
        let mut p = Problems::new();
        validate_faults(
            &[FaultConfig {
                path: "metadata".into(),
                status: Some(418),
                drop: Some("rst".into()),
                count: Some(0),
                ..Default::default()
            }],
            "$.faults",
            &mut p,
        );
        let found: Vec<String> = p.into_errors("x").into_iter().map(|e| e.path).collect();
        assert_eq!(
            found,
            [
                "$.faults[0].path",
                "$.faults[0]",
                "$.faults[0].status",
                "$.faults[0].drop",
                "$.faults[0].count"
            ]
        );
        let mut p = Problems::new();
        validate_gce_events(
            &[GceEvent {
                maintenance_event: Some("MIGRATE".into()),
                ..Default::default()
            }],
            "$.gce.events",
            &mut p,
        );
        let found: Vec<String> = p.into_errors("x").into_iter().map(|e| e.path).collect();
        assert_eq!(found, ["$.gce.events[0].maintenanceEvent"]);
    }
}
