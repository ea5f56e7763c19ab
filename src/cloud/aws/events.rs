//! The live paths of EC2 metadata: spot interruption notices, scheduled maintenance and the
//! Auto Scaling lifecycle state, answered from [`crate::live::aws`] at the request's time.
//!
//! Paths (below a version, EC2 user guide "Instance metadata categories"):
//! - `meta-data/spot/instance-action`: `{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`
//!   (the guide's spacing), and `meta-data/spot/termination-time` (`2017-09-18T08:22:00Z`, for
//!   `terminate` only: the guide says it is set when the instance "has been marked for
//!   termination"), only while a notice shows; `spot/` is listed in `meta-data/` only then
//!   (unconfirmed: the guide only says the items are absent).
//! - `meta-data/events/maintenance/scheduled` and `.../history`: JSON arrays of
//!   `{NotBefore, Code, Description, EventId, NotAfter, State}` with times as
//!   `21 Jan 2019 09:00:43 GMT`, printed like IMDS's other documents ([`super::jackson`]); an
//!   empty list is `[]`. Once any event was scheduled they replace the configured values.
//! - `meta-data/autoscaling/target-lifecycle-state`: the state, as text.
//!
//! Contract: [`LiveListings::respond`] returns `None` for every path the live state does not
//! change at `now`, so the static answer stands (and allocates nothing); live answers are
//! rendered per request.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::answers::{ok, TEXT};
use super::jackson::pretty;
use super::timestamp::{format_utc, http_date};
use crate::http::{Prebuilt, Response};
use crate::live::aws::AwsEvents;
use crate::live::Live;

const META_DATA: &str = "meta-data";
const SPOT: &str = "meta-data/spot";
const INSTANCE_ACTION: &str = "meta-data/spot/instance-action";
const TERMINATION_TIME: &str = "meta-data/spot/termination-time";
const EVENTS: &str = "meta-data/events";
const MAINTENANCE: &str = "meta-data/events/maintenance";
const SCHEDULED: &str = "meta-data/events/maintenance/scheduled";
const HISTORY: &str = "meta-data/events/maintenance/history";
const AUTOSCALING: &str = "meta-data/autoscaling";
const LIFECYCLE: &str = "meta-data/autoscaling/target-lifecycle-state";

/// The configured listings of the directories live entries may add to.
#[derive(Debug, Default)]
pub struct LiveListings {
    by_dir: HashMap<&'static str, Vec<String>>,
}

impl LiveListings {
    /// Takes the listings out of the rendered routes.
    pub fn from_routes(routes: &HashMap<Box<str>, Prebuilt>) -> LiveListings {
        let mut by_dir = HashMap::new();
        for dir in [META_DATA, SPOT, EVENTS, MAINTENANCE, AUTOSCALING] {
            if let Some(pre) = routes.get(dir) {
                let bytes = pre.bytes();
                let body = bytes
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(&[][..], |i| &bytes[i + 4..]);
                let lines = String::from_utf8_lossy(body)
                    .split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                by_dir.insert(dir, lines);
            }
        }
        LiveListings { by_dir }
    }

    /// The live answer for `key` (a path below the version, without the trailing `/`).
    pub fn respond(&self, key: &str, live: &Live, now: SystemTime) -> Option<Response> {
        if !key.starts_with(META_DATA) {
            return None;
        }
        live.aws(now, |events| self.answer(key, events, now))
    }

    fn answer(&self, key: &str, events: &AwsEvents, now: SystemTime) -> Option<Response> {
        let spot = events.spot_at(now);
        let maintenance = events.has_maintenance();
        let lifecycle = events.lifecycle_at(now);
        match key {
            INSTANCE_ACTION => spot.map(|s| {
                text(format!(
                    "{{\"action\": \"{}\", \"time\": \"{}\"}}",
                    s.action,
                    format_utc(crate::live::secs(s.time))
                ))
            }),
            TERMINATION_TIME => spot
                .filter(|s| s.action == "terminate")
                .map(|s| text(format_utc(crate::live::secs(s.time)))),
            SPOT => spot.map(|s| {
                let mut entries = vec!["instance-action"];
                if s.action == "terminate" {
                    entries.push("termination-time");
                }
                self.listing(SPOT, &entries)
            }),
            SCHEDULED | HISTORY if maintenance => {
                Some(text(maintenance_document(events, now, key == HISTORY)))
            }
            MAINTENANCE if maintenance => {
                Some(self.listing(MAINTENANCE, &["history", "scheduled"]))
            }
            EVENTS if maintenance => Some(self.listing(EVENTS, &["maintenance/"])),
            LIFECYCLE => lifecycle.map(|l| text(l.to_string())),
            AUTOSCALING => {
                lifecycle.map(|_| self.listing(AUTOSCALING, &["target-lifecycle-state"]))
            }
            META_DATA => {
                let mut extra = Vec::new();
                if spot.is_some() {
                    extra.push("spot/");
                }
                if maintenance {
                    extra.push("events/");
                }
                if lifecycle.is_some() {
                    extra.push("autoscaling/");
                }
                let listed = self.by_dir.get(META_DATA);
                let missing = extra
                    .iter()
                    .any(|e| !listed.is_some_and(|l| l.iter().any(|x| x == e)));
                missing.then(|| self.listing(META_DATA, &extra))
            }
            _ => None,
        }
    }

    /// The configured listing of `dir` with `extra` entries, sorted as EC2 lists.
    fn listing(&self, dir: &str, extra: &[&str]) -> Response {
        let mut lines: Vec<&str> = self
            .by_dir
            .get(dir)
            .map(|l| l.iter().map(String::as_str).collect())
            .unwrap_or_default();
        lines.extend_from_slice(extra);
        lines.sort_unstable();
        lines.dedup();
        text(lines.join("\n"))
    }
}

fn text(body: String) -> Response {
    ok(TEXT, None, body)
}

/// `21 Jan 2019 09:00:43 GMT`: an IMF-fixdate without the weekday, as the guide shows.
fn event_time(t: SystemTime) -> String {
    let full = http_date(crate::live::secs(t));
    full.get(5..).unwrap_or(&full).to_string()
}

/// `scheduled` (active events) or `history` (completed and canceled ones).
fn maintenance_document(events: &AwsEvents, now: SystemTime, history: bool) -> String {
    let items: Vec<Value> = events
        .maintenance_at(now, history)
        .map(|(m, state)| {
            let mut o = Map::new();
            o.insert("NotBefore".into(), event_time(m.not_before).into());
            o.insert("Code".into(), m.code.as_str().into());
            o.insert("Description".into(), m.description.as_str().into());
            o.insert("EventId".into(), m.id.as_str().into());
            o.insert("NotAfter".into(), event_time(m.not_after).into());
            o.insert("State".into(), state.as_str().into());
            Value::Object(o)
        })
        .collect();
    if items.is_empty() {
        "[]".into()
    } else {
        pretty(&Value::Array(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::command::parse;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s)
    }

    fn body(r: Option<Response>) -> Option<String> {
        r.map(|r| String::from_utf8_lossy(&r.body).into_owned())
    }

    fn live_with(lines: &[&str]) -> Live {
        let no_env = |_: &str| None;
        let cfg = crate::config::load_str(r#"{"aws": {"enabled": true}}"#, "x", &no_env)
            .unwrap_or_else(|e| panic!("{e}"));
        let live = Live::new(&cfg);
        for l in lines {
            let words: Vec<&str> = l.split_whitespace().collect();
            let cmd = parse(&words).unwrap_or_else(|e| panic!("{e}"));
            live.apply(cmd, at(0)).unwrap_or_else(|e| panic!("{e}"));
        }
        live
    }

    #[test]
    fn spot_notice_appears_and_disappears() {
        let listings = LiveListings {
            by_dir: HashMap::from([(META_DATA, vec!["ami-id".to_string(), "tags/".into()])]),
        };
        let live = live_with(&["event aws --spot terminate --in 2m --notice +10s"]);
        let ask = |key, s| body(listings.respond(key, &live, at(s)));
        assert_eq!(ask(INSTANCE_ACTION, 9), None);
        assert_eq!(ask(META_DATA, 9), None, "the configured listing stands");
        assert_eq!(
            ask(INSTANCE_ACTION, 10).as_deref(),
            Some("{\"action\": \"terminate\", \"time\": \"2026-01-01T00:02:00Z\"}")
        );
        assert_eq!(
            ask(TERMINATION_TIME, 10).as_deref(),
            Some("2026-01-01T00:02:00Z")
        );
        assert_eq!(
            ask(SPOT, 10).as_deref(),
            Some("instance-action\ntermination-time")
        );
        assert_eq!(ask(META_DATA, 10).as_deref(), Some("ami-id\nspot/\ntags/"));
        assert_eq!(ask(INSTANCE_ACTION, 120), None);
        let stop = live_with(&["event aws --spot stop"]);
        assert_eq!(body(listings.respond(TERMINATION_TIME, &stop, at(1))), None);
        assert_eq!(
            body(listings.respond(SPOT, &stop, at(1))).as_deref(),
            Some("instance-action")
        );
    }

    #[test]
    fn maintenance_documents_follow_the_state() {
        let listings = LiveListings::default();
        let live = live_with(&[
            "event aws --maintenance system-reboot --not-before +1h --duration 30m \
             --id instance-event-0d59937288b749b32",
        ]);
        let scheduled = body(listings.respond(SCHEDULED, &live, at(0)));
        assert_eq!(
            scheduled.as_deref(),
            Some(
                "[ {\n  \"NotBefore\" : \"01 Jan 2026 01:00:00 GMT\",\n  \"Code\" : \
                 \"system-reboot\",\n  \"Description\" : \"scheduled reboot\",\n  \"EventId\" : \
                 \"instance-event-0d59937288b749b32\",\n  \"NotAfter\" : \"01 Jan 2026 01:30:00 \
                 GMT\",\n  \"State\" : \"active\"\n} ]"
            )
        );
        assert_eq!(
            body(listings.respond(HISTORY, &live, at(0))).as_deref(),
            Some("[]")
        );
        let done = body(listings.respond(HISTORY, &live, at(5400)));
        assert!(done.is_some_and(|d| d.contains("\"State\" : \"completed\"")));
        assert_eq!(
            body(listings.respond(SCHEDULED, &live, at(5400))).as_deref(),
            Some("[]")
        );
        assert!(live
            .apply(
                crate::live::command::Command::CancelEvent(
                    "instance-event-0d59937288b749b32".into()
                ),
                at(1)
            )
            .is_ok());
        let canceled = body(listings.respond(HISTORY, &live, at(2)));
        assert!(canceled.is_some_and(|d| d.contains("\"State\" : \"canceled\"")));
    }

    #[test]
    fn lifecycle_state_is_text() {
        let listings = LiveListings::default();
        let live = live_with(&["event aws --lifecycle Terminated --in 30s"]);
        assert_eq!(body(listings.respond(LIFECYCLE, &live, at(29))), None);
        assert_eq!(
            body(listings.respond(LIFECYCLE, &live, at(30))).as_deref(),
            Some("Terminated")
        );
        assert_eq!(
            body(listings.respond(AUTOSCALING, &live, at(30))).as_deref(),
            Some("target-lifecycle-state")
        );
    }
}
