//! What can be done to the live state, from a `ctl` command line or from the configuration:
//! both become the same [`Command`]s, so a configured event and a typed one behave alike.
//!
//! Command lines (the words after `imds-tun ctl`):
//!
//! ```text
//! event azure [--type Reboot|Redeploy|Freeze|Preempt|Terminate] [--not-before WHEN]
//!             [--duration SECS] [--resources A,B] [--description TEXT] [--source Platform|User]
//!             [--id UUID]
//! event aws --spot stop|terminate|hibernate [--in DUR | --at WHEN] [--notice WHEN]
//! event aws --maintenance CODE [--not-before WHEN] [--not-after WHEN | --duration DUR]
//!           [--description TEXT] [--id instance-event-...]
//! event aws --lifecycle STATE [--in DUR]
//! event gce --maintenance NONE|MIGRATE_ON_HOST_MAINTENANCE|TERMINATE_ON_HOST_MAINTENANCE
//!           [--in DUR] [--duration DUR]
//! event gce --preempted [--in DUR]
//! event list
//! event cancel ID                  (an Azure EventId, an AWS instance-event id, spot, gce)
//! fault add [azure|gce|aws] PATH [--prefix]
//!           (--status 404|410|429|500|502|503|504 [--retry-after SECS] | --latency DUR
//!            | --drop [reset|close]) [--count N] [--for DUR]
//! fault list
//! fault clear [ID]
//! ```
//!
//! WHEN is a time as in the configuration ([`When`]: `+5m`, `5m`, an RFC 1123 or
//! `2026-01-01T00:00:00Z` time); DUR a duration (`90s`, `5m`, `500ms`). A fault's cloud and
//! path come first, as in `$.faults` (`cloud`, `path`, `prefix`): without a cloud the rule
//! matches the path whoever owns it; `--prefix` matches every path under PATH; `--drop` alone
//! resets the connection.
//!
//! Defaults follow Azure's minimum notice per event type [SE] (Freeze and Reboot 15 min,
//! Redeploy 10 min, Terminate 5 min, Preempt 30 s) and EC2's two-minute spot notice.
//!
//! Contract: parsing is pure and every error says which word is wrong and what was expected.

use std::time::Duration;

use crate::cloud::Owner;
use crate::config::events::{
    is_maintenance_id, parse_duration, When, FAULT_STATUSES, GCE_MAINTENANCE_VALUES,
    LIFECYCLE_STATES, MAINTENANCE_CODES, SPOT_ACTIONS,
};
use crate::config::Config;

use super::faults::FaultAction;
use crate::http::DropKind;

/// Azure event types and sources [SE].
pub const AZURE_EVENT_TYPES: [&str; 5] = ["Reboot", "Redeploy", "Freeze", "Preempt", "Terminate"];
pub const AZURE_EVENT_SOURCES: [&str; 2] = ["Platform", "User"];

/// One change of, or question to, the live state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Event(EventSpec),
    CancelEvent(String),
    ListEvents,
    AddFault(FaultSpec),
    ListFaults,
    /// One rule, or all of them.
    ClearFaults(Option<u32>),
}

/// An event to schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSpec {
    Azure {
        /// Generated when `None`.
        id: Option<String>,
        event_type: String,
        /// The VM's name when empty.
        resources: Vec<String>,
        /// A description in the style of [SE] for the type when `None`.
        description: Option<String>,
        source: String,
        duration_secs: i64,
        not_before: When,
        /// Already started (configured `eventStatus: Started`).
        started: bool,
    },
    Spot {
        action: String,
        time: When,
        notice: When,
    },
    Maintenance {
        id: Option<String>,
        code: String,
        description: Option<String>,
        not_before: When,
        end: MaintenanceEnd,
    },
    Lifecycle {
        state: String,
        at: When,
    },
    GceMaintenance {
        value: String,
        at: When,
        duration: Option<Duration>,
    },
    GcePreempted {
        at: When,
    },
}

/// When a maintenance window closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintenanceEnd {
    At(When),
    After(Duration),
}

/// A fault rule to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub cloud: Option<Owner>,
    pub path: String,
    pub prefix: bool,
    pub action: FaultAction,
    pub count: Option<u64>,
    pub lasts: Option<Duration>,
}

/// A maintenance window lasts this long unless told (EC2 windows are about two hours).
pub const DEFAULT_MAINTENANCE_WINDOW: Duration = Duration::from_secs(2 * 3600);

/// Parses the words after `imds-tun ctl` that concern events and faults.
pub fn parse(words: &[&str]) -> Result<Command, String> {
    match words {
        ["event", "list"] => Ok(Command::ListEvents),
        ["event", "cancel", id] => Ok(Command::CancelEvent((*id).to_string())),
        ["event", "azure", rest @ ..] => azure(&Flags::parse(rest)?),
        ["event", "aws", rest @ ..] => aws(&Flags::parse(rest)?),
        ["event", "gce", rest @ ..] => gce(&Flags::parse(rest)?),
        ["event", ..] => {
            Err("usage: event azure|aws|gce OPTIONS, event list, event cancel ID".into())
        }
        ["fault", "add", rest @ ..] => {
            let words = rest.iter().take_while(|w| !w.starts_with("--")).count();
            fault(&rest[..words], &Flags::parse(&rest[words..])?)
        }
        ["fault", "list"] => Ok(Command::ListFaults),
        ["fault", "clear"] => Ok(Command::ClearFaults(None)),
        ["fault", "clear", id] => id
            .parse()
            .map(|id| Command::ClearFaults(Some(id)))
            .map_err(|_| format!("`{id}`: expected a fault id (a number, see fault list)")),
        ["fault", ..] => Err("usage: fault add OPTIONS, fault list, fault clear [ID]".into()),
        _ => Err("expected `event ...` or `fault ...`".into()),
    }
}

/// `--name value` and `--switch` words.
struct Flags<'a> {
    pairs: Vec<(&'a str, Option<&'a str>)>,
}

/// Flags that take no value.
const SWITCHES: [&str; 2] = ["--preempted", "--prefix"];
/// Flags whose value may be left out (the next word is theirs unless it is a flag).
const OPTIONAL_VALUE: [&str; 1] = ["--drop"];

impl<'a> Flags<'a> {
    fn parse(words: &[&'a str]) -> Result<Flags<'a>, String> {
        let mut pairs = Vec::new();
        let mut it = words.iter();
        while let Some(w) = it.next() {
            if !w.starts_with("--") {
                return Err(format!("`{w}`: expected an option such as --type"));
            }
            if pairs.iter().any(|(n, _)| n == w) {
                return Err(format!("`{w}` given twice"));
            }
            if SWITCHES.contains(w) {
                pairs.push((*w, None));
            } else if OPTIONAL_VALUE.contains(w) {
                let value = it.clone().next().filter(|v| !v.starts_with("--"));
                if value.is_some() {
                    it.next();
                }
                pairs.push((*w, value.copied()));
            } else {
                match it.next() {
                    Some(v) => pairs.push((*w, Some(*v))),
                    None => return Err(format!("`{w}` needs a value")),
                }
            }
        }
        Ok(Flags { pairs })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }

    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| *n == name)
    }

    /// Fails on any flag not in `known`.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.pairs.iter().find(|(n, _)| !known.contains(n)) {
            Some((n, _)) => Err(format!(
                "`{n}` is not an option here ({})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }
}

fn one_of(name: &str, value: &str, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{name} `{value}`: expected one of {}",
            allowed.join(", ")
        ))
    }
}

fn when(name: &str, value: &str) -> Result<When, String> {
    When::parse(value).ok_or_else(|| {
        format!("{name} `{value}`: expected a time such as +5m, 90s or 2026-01-01T00:00:00Z")
    })
}

fn duration(name: &str, value: &str) -> Result<Duration, String> {
    parse_duration(value)
        .ok_or_else(|| format!("{name} `{value}`: expected a duration such as 90s, 5m or 500ms"))
}

/// Azure's minimum notice per event type [SE].
fn azure_notice(event_type: &str) -> Duration {
    Duration::from_secs(match event_type {
        "Redeploy" => 600,
        "Terminate" => 300,
        "Preempt" => 30,
        _ => 900,
    })
}

fn azure(f: &Flags<'_>) -> Result<Command, String> {
    f.only(&[
        "--type",
        "--not-before",
        "--duration",
        "--resources",
        "--description",
        "--source",
        "--id",
    ])?;
    let event_type = one_of(
        "--type",
        f.get("--type").unwrap_or("Reboot"),
        &AZURE_EVENT_TYPES,
    )?;
    let source = one_of(
        "--source",
        f.get("--source").unwrap_or("Platform"),
        &AZURE_EVENT_SOURCES,
    )?;
    let not_before = match f.get("--not-before") {
        Some(v) => when("--not-before", v)?,
        None => When::After(azure_notice(&event_type)),
    };
    let duration_secs = match f.get("--duration") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= -1)
            .ok_or_else(|| format!("--duration `{v}`: expected seconds, or -1 for unknown"))?,
        // Azure gives a Freeze's length and -1 for the others [SE].
        None if event_type == "Freeze" => 5,
        None => -1,
    };
    Ok(Command::Event(EventSpec::Azure {
        id: f.get("--id").map(str::to_string),
        event_type,
        resources: f
            .get("--resources")
            .map(|r| {
                r.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        description: f.get("--description").map(str::to_string),
        source,
        duration_secs,
        not_before,
        started: false,
    }))
}

fn aws(f: &Flags<'_>) -> Result<Command, String> {
    let kinds = ["--spot", "--maintenance", "--lifecycle"]
        .iter()
        .filter(|k| f.has(k))
        .count();
    if kinds != 1 {
        return Err("event aws needs exactly one of --spot, --maintenance, --lifecycle".into());
    }
    if let Some(action) = f.get("--spot") {
        f.only(&["--spot", "--in", "--at", "--notice"])?;
        let time = match (f.get("--in"), f.get("--at")) {
            (Some(d), None) => When::After(duration("--in", d)?),
            (None, Some(t)) => when("--at", t)?,
            (None, None) => When::After(Duration::from_secs(120)),
            (Some(_), Some(_)) => return Err("--in or --at, not both".into()),
        };
        let notice = match f.get("--notice") {
            Some(t) => when("--notice", t)?,
            None => When::After(Duration::ZERO),
        };
        return Ok(Command::Event(EventSpec::Spot {
            action: one_of("--spot", action, &SPOT_ACTIONS)?,
            time,
            notice,
        }));
    }
    if let Some(code) = f.get("--maintenance") {
        f.only(&[
            "--maintenance",
            "--not-before",
            "--not-after",
            "--duration",
            "--description",
            "--id",
        ])?;
        let end = match (f.get("--not-after"), f.get("--duration")) {
            (Some(t), None) => MaintenanceEnd::At(when("--not-after", t)?),
            (None, Some(d)) => MaintenanceEnd::After(duration("--duration", d)?),
            (None, None) => MaintenanceEnd::After(DEFAULT_MAINTENANCE_WINDOW),
            (Some(_), Some(_)) => return Err("--not-after or --duration, not both".into()),
        };
        let id = f.get("--id").map(str::to_string);
        if let Some(id) = id.as_deref().filter(|id| !is_maintenance_id(id)) {
            return Err(format!(
                "--id `{id}`: expected instance-event- and 17 hex digits"
            ));
        }
        return Ok(Command::Event(EventSpec::Maintenance {
            id,
            code: one_of("--maintenance", code, &MAINTENANCE_CODES)?,
            description: f.get("--description").map(str::to_string),
            not_before: match f.get("--not-before") {
                Some(t) => when("--not-before", t)?,
                None => When::After(Duration::from_secs(600)),
            },
            end,
        }));
    }
    f.only(&["--lifecycle", "--in"])?;
    let state = f.get("--lifecycle").unwrap_or_default();
    Ok(Command::Event(EventSpec::Lifecycle {
        state: one_of("--lifecycle", state, &LIFECYCLE_STATES)?,
        at: match f.get("--in") {
            Some(d) => When::After(duration("--in", d)?),
            None => When::After(Duration::ZERO),
        },
    }))
}

fn gce(f: &Flags<'_>) -> Result<Command, String> {
    let at = match f.get("--in") {
        Some(d) => When::After(duration("--in", d)?),
        None => When::After(Duration::ZERO),
    };
    match (f.get("--maintenance"), f.has("--preempted")) {
        (Some(v), false) => {
            f.only(&["--maintenance", "--in", "--duration"])?;
            Ok(Command::Event(EventSpec::GceMaintenance {
                value: one_of("--maintenance", v, &GCE_MAINTENANCE_VALUES)?,
                at,
                duration: f
                    .get("--duration")
                    .map(|d| duration("--duration", d))
                    .transpose()?,
            }))
        }
        (None, true) => {
            f.only(&["--preempted", "--in"])?;
            Ok(Command::Event(EventSpec::GcePreempted { at }))
        }
        _ => Err("event gce needs exactly one of --maintenance VALUE, --preempted".into()),
    }
}

/// `fault add [CLOUD] PATH OPTIONS`: `words` are those before the first option.
fn fault(words: &[&str], f: &Flags<'_>) -> Result<Command, String> {
    f.only(&[
        "--prefix",
        "--status",
        "--retry-after",
        "--latency",
        "--drop",
        "--count",
        "--for",
    ])?;
    let (cloud, path) =
        match words {
            [path] if path.starts_with('/') => (None, *path),
            [c, path] => (Some(cloud(c)?), *path),
            _ => return Err(
                "fault add needs a path, optionally after its cloud: fault add [azure|gce|aws] \
                 PATH OPTIONS"
                    .into(),
            ),
        };
    if !path.starts_with('/') {
        return Err(format!("`{path}`: expected a path starting with /"));
    }
    let prefix = f.has("--prefix");
    let drop = f.has("--drop").then(|| f.get("--drop").unwrap_or("reset"));
    let action = match (f.get("--status"), f.get("--latency"), drop) {
        (Some(s), None, None) => {
            let status = s
                .parse::<u16>()
                .ok()
                .filter(|s| FAULT_STATUSES.contains(s))
                .ok_or_else(|| format!("--status `{s}`: expected one of {FAULT_STATUSES:?}"))?;
            let retry_after = f
                .get("--retry-after")
                .map(|r| {
                    r.parse::<u32>()
                        .map_err(|_| format!("--retry-after `{r}`: expected seconds"))
                })
                .transpose()?;
            FaultAction::Status {
                status,
                retry_after,
            }
        }
        (None, Some(l), None) => FaultAction::Latency(duration("--latency", l)?),
        (None, None, Some(d)) => FaultAction::Drop(drop_kind(d)?),
        _ => return Err("fault add needs exactly one of --status, --latency, --drop".into()),
    };
    if f.has("--retry-after") && !matches!(action, FaultAction::Status { .. }) {
        return Err("--retry-after goes with --status".into());
    }
    let count =
        f.get("--count")
            .map(|c| {
                c.parse::<u64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                    format!("--count `{c}`: expected a number of requests, 1 or more")
                })
            })
            .transpose()?;
    Ok(Command::AddFault(FaultSpec {
        cloud,
        path: path.to_string(),
        prefix,
        action,
        count,
        lasts: f.get("--for").map(|d| duration("--for", d)).transpose()?,
    }))
}

fn cloud(name: &str) -> Result<Owner, String> {
    match name {
        "azure" => Ok(Owner::Azure),
        "gce" => Ok(Owner::Gce),
        "aws" => Ok(Owner::Aws),
        other => Err(format!("`{other}`: expected a cloud (azure, gce or aws)")),
    }
}

fn drop_kind(name: &str) -> Result<DropKind, String> {
    match name {
        "reset" => Ok(DropKind::Reset),
        "close" => Ok(DropKind::Close),
        other => Err(format!("--drop `{other}`: expected reset or close")),
    }
}

/// The commands a configuration starts with, in a fixed order (Azure, AWS, GCE, faults).
/// Only validated configurations get here, so nothing fails; an unparsable value (which
/// validation rejects) is skipped.
pub fn from_config(config: &Config) -> Vec<Command> {
    let mut out = Vec::new();
    for e in &config.azure.scheduled_events.events {
        let not_before = match e.not_before.as_str() {
            "" => Some(When::After(Duration::ZERO)),
            t => When::parse(t),
        };
        let Some(not_before) = not_before else {
            continue;
        };
        out.push(Command::Event(EventSpec::Azure {
            id: Some(e.event_id.clone()).filter(|id| !id.is_empty()),
            event_type: e.event_type.clone(),
            resources: e.resources.clone(),
            description: Some(e.description.clone()).filter(|d| !d.is_empty()),
            source: e.event_source.clone(),
            duration_secs: e.duration_in_seconds,
            not_before,
            started: e.event_status == "Started",
        }));
    }
    let aws = &config.aws.events;
    if let Some(s) = &aws.spot {
        let notice = s
            .notice
            .as_deref()
            .map_or(Some(When::After(Duration::ZERO)), When::parse);
        if let (Some(time), Some(notice)) = (When::parse(&s.time), notice) {
            out.push(Command::Event(EventSpec::Spot {
                action: s.action.clone(),
                time,
                notice,
            }));
        }
    }
    for m in &aws.maintenance {
        let end = match (&m.not_after, &m.duration) {
            (Some(t), _) => When::parse(t).map(MaintenanceEnd::At),
            (None, Some(d)) => parse_duration(d).map(MaintenanceEnd::After),
            (None, None) => Some(MaintenanceEnd::After(DEFAULT_MAINTENANCE_WINDOW)),
        };
        if let (Some(not_before), Some(end)) = (When::parse(&m.not_before), end) {
            out.push(Command::Event(EventSpec::Maintenance {
                id: m.event_id.clone(),
                code: m.code.clone(),
                description: m.description.clone(),
                not_before,
                end,
            }));
        }
    }
    if let Some(state) = &aws.target_lifecycle_state {
        out.push(Command::Event(EventSpec::Lifecycle {
            state: state.clone(),
            at: When::After(Duration::ZERO),
        }));
    }
    for e in &config.gce.events {
        let at =
            e.at.as_deref()
                .map_or(Some(When::After(Duration::ZERO)), When::parse);
        let Some(at) = at else {
            continue;
        };
        match (&e.maintenance_event, e.preempted) {
            (Some(value), _) => out.push(Command::Event(EventSpec::GceMaintenance {
                value: value.clone(),
                at,
                duration: e.duration.as_deref().and_then(parse_duration),
            })),
            (None, Some(true)) => out.push(Command::Event(EventSpec::GcePreempted { at })),
            _ => {}
        }
    }
    for f in &config.faults {
        let action = match (f.status, &f.latency, &f.drop) {
            (Some(status), _, _) => Some(FaultAction::Status {
                status,
                retry_after: f.retry_after,
            }),
            (None, Some(l), _) => parse_duration(l).map(FaultAction::Latency),
            (None, None, Some(d)) => drop_kind(d).ok().map(FaultAction::Drop),
            _ => None,
        };
        let Some(action) = action else {
            continue;
        };
        out.push(Command::AddFault(FaultSpec {
            cloud: f.cloud.as_deref().and_then(|c| cloud(c).ok()),
            path: f.path.clone(),
            prefix: f.prefix,
            action,
            count: f.count,
            lasts: f.lasts.as_deref().and_then(parse_duration),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    fn ok(line: &str) -> Command {
        parse(&words(line)).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> String {
        match parse(&words(line)) {
            Ok(c) => panic!("{line}: accepted as {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_issue_examples_parse() {
        assert_eq!(
            ok("event azure --type Reboot --not-before +5m --duration 300"),
            Command::Event(EventSpec::Azure {
                id: None,
                event_type: "Reboot".into(),
                resources: vec![],
                description: None,
                source: "Platform".into(),
                duration_secs: 300,
                not_before: When::After(Duration::from_secs(300)),
                started: false,
            })
        );
        assert_eq!(
            ok("event aws --spot terminate --in 2m"),
            Command::Event(EventSpec::Spot {
                action: "terminate".into(),
                time: When::After(Duration::from_secs(120)),
                notice: When::After(Duration::ZERO),
            })
        );
        assert_eq!(
            ok("event aws --maintenance system-reboot --not-before +1h --duration 2h"),
            Command::Event(EventSpec::Maintenance {
                id: None,
                code: "system-reboot".into(),
                description: None,
                not_before: When::After(Duration::from_secs(3600)),
                end: MaintenanceEnd::After(Duration::from_secs(7200)),
            })
        );
        assert_eq!(
            ok("event gce --maintenance MIGRATE_ON_HOST_MAINTENANCE"),
            Command::Event(EventSpec::GceMaintenance {
                value: "MIGRATE_ON_HOST_MAINTENANCE".into(),
                at: When::After(Duration::ZERO),
                duration: None,
            })
        );
        assert_eq!(ok("event list"), Command::ListEvents);
        assert_eq!(ok("event cancel spot"), Command::CancelEvent("spot".into()));
        assert_eq!(
            ok("fault add azure /metadata/identity/oauth2/token --status 429 --count 1"),
            Command::AddFault(FaultSpec {
                cloud: Some(Owner::Azure),
                path: "/metadata/identity/oauth2/token".into(),
                prefix: false,
                action: FaultAction::Status {
                    status: 429,
                    retry_after: None
                },
                count: Some(1),
                lasts: None,
            })
        );
        assert_eq!(ok("fault list"), Command::ListFaults);
        assert_eq!(ok("fault clear"), Command::ClearFaults(None));
        assert_eq!(ok("fault clear 3"), Command::ClearFaults(Some(3)));
    }

    #[test]
    fn defaults_follow_the_clouds() {
        let Command::Event(EventSpec::Azure {
            not_before,
            duration_secs,
            ..
        }) = ok("event azure --type Freeze")
        else {
            panic!("not an azure event")
        };
        assert_eq!(not_before, When::After(Duration::from_secs(900)));
        assert_eq!(duration_secs, 5);
        let Command::Event(EventSpec::Azure { not_before, .. }) = ok("event azure --type Preempt")
        else {
            panic!("not an azure event")
        };
        assert_eq!(not_before, When::After(Duration::from_secs(30)));
        assert!(matches!(
            ok("fault add /computeMetadata/ --prefix --drop reset --for 70s"),
            Command::AddFault(FaultSpec {
                prefix: true,
                action: FaultAction::Drop(DropKind::Reset),
                lasts: Some(d),
                ..
            }) if d == Duration::from_secs(70)
        ));
        assert!(matches!(
            ok("fault add /latest/meta-data/ --latency 500ms"),
            Command::AddFault(FaultSpec {
                action: FaultAction::Latency(d),
                ..
            }) if d == Duration::from_millis(500)
        ));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(err("event azure --type Nap").contains("--type `Nap`"));
        assert!(err("event azure --type").contains("needs a value"));
        assert!(err("event azure --kind Reboot").contains("`--kind` is not an option"));
        assert!(err("event azure --id a --id b").contains("given twice"));
        assert!(
            err("event aws --spot terminate --maintenance system-reboot").contains("exactly one")
        );
        assert!(err("event aws --spot explode").contains("--spot `explode`"));
        assert!(err("event aws --spot stop --in soon").contains("--in `soon`"));
        assert!(err("event aws --maintenance system-reboot --id x").contains("--id `x`"));
        assert!(err("event gce --maintenance MIGRATE").contains("--maintenance `MIGRATE`"));
        assert!(err("event gce --preempted --duration 5s").contains("`--duration`"));
        assert!(err("fault add gce x --status 429").contains("starting with /"));
        assert!(err("fault add x --status 429").contains("needs a path"));
        assert!(err("fault add --status 429").contains("needs a path"));
        assert!(err("fault add oracle /x --status 429").contains("`oracle`: expected a cloud"));
        assert!(err("fault add /x --status 418").contains("--status `418`"));
        assert!(err("fault add /x --status 429 --drop reset").contains("exactly one"));
        assert!(err("fault add /x --drop --retry-after 3").contains("with --status"));
        assert!(err("fault add /x --drop rst").contains("--drop `rst`"));
        assert!(err("fault add /x --status 503 --count 0").contains("--count `0`"));
        assert!(err("fault add /x --path /y --status 503").contains("`--path` is not an option"));
        assert!(err("fault clear all").contains("fault id"));
        assert!(err("reboot").contains("expected `event"));
    }

    #[test]
    fn configuration_becomes_the_same_commands() {
        let no_env = |_: &str| None;
        let text = r#"{
          "azure": {"enabled": true, "scheduledEvents": {"events": [
            {"eventType": "Reboot", "notBefore": "+5m", "durationInSeconds": 300}]}},
          "aws": {"enabled": true, "events": {"spot": {"action": "terminate", "time": "+2m"},
            "targetLifecycleState": "InService"}},
          "gce": {"enabled": true, "events": [{"preempted": true, "at": "+1m"}]},
          "faults": [{"path": "/metadata/identity/oauth2/token", "status": 429, "count": 1}]
        }"#;
        let cfg =
            crate::config::load_str(text, "x.json", &no_env).unwrap_or_else(|e| panic!("{e}"));
        let cmds = from_config(&cfg);
        assert_eq!(cmds.len(), 5);
        assert!(matches!(
            &cmds[0],
            Command::Event(EventSpec::Azure {
                duration_secs: 300,
                ..
            })
        ));
        assert_eq!(
            cmds[1],
            Command::Event(EventSpec::Spot {
                action: "terminate".into(),
                time: When::After(Duration::from_secs(120)),
                notice: When::After(Duration::ZERO),
            })
        );
        assert_eq!(
            cmds[3],
            Command::Event(EventSpec::GcePreempted {
                at: When::After(Duration::from_secs(60))
            })
        );
        assert_eq!(
            cmds[4],
            ok("fault add /metadata/identity/oauth2/token --status 429 --count 1")
        );
    }
}
