//! Scheduled events [SE]: the document `GET /metadata/scheduledevents` returns, and the
//! `POST` that approves ("starts") events. The events themselves live in
//! [`crate::live::azure`], which moves them along in time.
//!
//! Contract: [`document`] renders `{"DocumentIncarnation": int, "Events": [...]}` with each
//! event's fields in the documented order, `DurationInSeconds` an integer (this endpoint is
//! not stringified like `/metadata/instance`), `NotBefore` as IMDS prints it
//! (`Mon, 19 Sep 2016 18:29:47 GMT`) while scheduled and blank once started [SE: "Will be
//! blank if the event has already started"]. [`start_requests`] accepts exactly
//! `{"StartRequests": [{"EventId": "<id>"}, ...]}` with at least one request; IMDS "always
//! returns a 200 success code if it's passed a valid event ID" and 400 when "the request
//! header or payload was malformed", which an id naming no current event is taken to be
//! (ids compare ASCII-case-insensitively: Microsoft's samples approve upper-case ids).

use serde_json::{json, Value};

use super::errors;
use crate::cloud::aws::timestamp::http_date;
use crate::http::Prebuilt;
use crate::live::azure::{AzureEvents, Phase};

/// The GET body.
pub fn document(state: &AzureEvents) -> String {
    let events: Vec<Value> = state
        .events()
        .iter()
        .map(|e| {
            let not_before = match e.phase() {
                Phase::Scheduled => http_date(crate::live::secs(e.not_before)),
                _ => String::new(),
            };
            let status = match e.phase() {
                Phase::Scheduled => "Scheduled",
                _ => "Started",
            };
            json!({
                "EventId": e.id,
                "EventType": e.event_type,
                "ResourceType": "VirtualMachine",
                "Resources": e.resources,
                "EventStatus": status,
                "NotBefore": not_before,
                "Description": e.description,
                "EventSource": e.source,
                "DurationInSeconds": e.duration_secs,
            })
        })
        .collect();
    json!({
        "DocumentIncarnation": state.incarnation(),
        "Events": events,
    })
    .to_string()
}

/// The whole GET answer, rendered once per incarnation by [`crate::live::Live`].
pub fn answer(state: &AzureEvents) -> Prebuilt {
    errors::json(200, document(state)).prebuild()
}

/// The ids a well-formed approval names, or `None` for a malformed one.
pub fn start_requests(body: &[u8]) -> Option<Vec<String>> {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::Array(requests)) = doc.get("StartRequests") else {
        return None;
    };
    if requests.is_empty() {
        return None;
    }
    requests
        .iter()
        .map(|r| r.get("EventId").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::azure::AzureEvent;
    use crate::live::Origin;
    use std::time::{Duration, UNIX_EPOCH};

    fn one_event(started: bool) -> AzureEvents {
        let mut s = AzureEvents::new(1);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_776_000_000);
        s.insert(
            AzureEvent::new(
                "C7061BAC-AFDC-4513-B24B-AA5F13A16123".into(),
                "Freeze".into(),
                vec!["WestNO_0".into()],
                "Virtual machine is being paused.".into(),
                "Platform".into(),
                5,
                t0 + Duration::from_secs(if started { 0 } else { 60 }),
                Origin::Command,
            ),
            t0,
            true,
        );
        s
    }

    #[test]
    fn document_has_documented_order_and_types() {
        assert_eq!(
            document(&one_event(false)),
            "{\"DocumentIncarnation\":2,\"Events\":[{\"EventId\":\"C7061BAC-AFDC-4513-B24B-\
             AA5F13A16123\",\"EventType\":\"Freeze\",\"ResourceType\":\"VirtualMachine\",\
             \"Resources\":[\"WestNO_0\"],\"EventStatus\":\"Scheduled\",\"NotBefore\":\"Sun, 12 \
             Apr 2026 13:21:00 GMT\",\"Description\":\"Virtual machine is being paused.\",\
             \"EventSource\":\"Platform\",\"DurationInSeconds\":5}]}"
        );
        let started = document(&one_event(true));
        assert!(
            started.contains("\"EventStatus\":\"Started\",\"NotBefore\":\"\","),
            "{started}"
        );
        assert_eq!(
            document(&AzureEvents::default()),
            r#"{"DocumentIncarnation":1,"Events":[]}"#
        );
    }

    #[test]
    fn start_requests_must_be_well_formed() {
        let ok = br#"{"StartRequests": [{"EventId": "A"}, {"EventId": "b"}]}"#;
        assert_eq!(start_requests(ok), Some(vec!["A".into(), "b".into()]));
        for bad in [
            &br#"{"StartRequests": []}"#[..],
            br#"{"StartRequests": [{"Id": "x"}]}"#,
            br#"{"StartRequests": [{"EventId": 7}]}"#,
            br#"{"StartRequests": {"EventId": "x"}}"#,
            br#"{"startrequests": [{"EventId": "x"}]}"#,
            br#"[1]"#,
            b"not json",
            b"",
        ] {
            assert_eq!(
                start_requests(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
