//! Scheduled events [SE]: the document `GET /metadata/scheduledevents` returns, and the check of
//! a `POST` that approves ("starts") events.
//!
//! Contract: [`document`] renders `{"DocumentIncarnation": int, "Events": [...]}` with each
//! event's fields in the documented order and `DurationInSeconds` an integer (this endpoint is
//! not stringified like `/metadata/instance`). [`start_requests_valid`] accepts exactly
//! `{"StartRequests": [{"EventId": "<id>"}, ...]}` with at least one request, every id naming a
//! current event (compared ASCII-case-insensitively: Microsoft's samples approve upper-case
//! ids); IMDS "always returns a 200 success code if it's passed a valid event ID" and 400 when
//! "the request header or payload was malformed". Approvals change no state yet.

use serde_json::{json, Value};

use crate::config::azure::ScheduledEvents;

/// The GET body.
pub fn document(config: &ScheduledEvents) -> String {
    let events: Vec<Value> = config
        .events
        .iter()
        .map(|e| {
            json!({
                "EventId": e.event_id,
                "EventType": e.event_type,
                "ResourceType": e.resource_type,
                "Resources": e.resources,
                "EventStatus": e.event_status,
                "NotBefore": e.not_before,
                "Description": e.description,
                "EventSource": e.event_source,
                "DurationInSeconds": e.duration_in_seconds,
            })
        })
        .collect();
    json!({
        "DocumentIncarnation": config.document_incarnation,
        "Events": events,
    })
    .to_string()
}

/// True when `body` is a well-formed approval of known events.
pub fn start_requests_valid(body: &[u8], known: &[Box<str>]) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(Value::Array(requests)) = doc.get("StartRequests") else {
        return false;
    };
    !requests.is_empty()
        && requests.iter().all(|r| {
            r.get("EventId")
                .and_then(Value::as_str)
                .is_some_and(|id| known.iter().any(|k| k.eq_ignore_ascii_case(id)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::azure::ScheduledEvent;

    fn one_event() -> ScheduledEvents {
        ScheduledEvents {
            document_incarnation: 2,
            events: vec![ScheduledEvent {
                event_id: "C7061BAC-AFDC-4513-B24B-AA5F13A16123".into(),
                event_type: "Freeze".into(),
                resource_type: "VirtualMachine".into(),
                resources: vec!["WestNO_0".into()],
                event_status: "Scheduled".into(),
                not_before: "Mon, 11 Apr 2026 22:26:58 GMT".into(),
                description: "Virtual machine is being paused.".into(),
                event_source: "Platform".into(),
                duration_in_seconds: 5,
            }],
        }
    }

    #[test]
    fn document_has_documented_order_and_types() {
        assert_eq!(
            document(&one_event()),
            "{\"DocumentIncarnation\":2,\"Events\":[{\"EventId\":\"C7061BAC-AFDC-4513-B24B-\
             AA5F13A16123\",\"EventType\":\"Freeze\",\"ResourceType\":\"VirtualMachine\",\
             \"Resources\":[\"WestNO_0\"],\"EventStatus\":\"Scheduled\",\"NotBefore\":\"Mon, 11 \
             Apr 2026 22:26:58 GMT\",\"Description\":\"Virtual machine is being paused.\",\
             \"EventSource\":\"Platform\",\"DurationInSeconds\":5}]}"
        );
        assert_eq!(
            document(&ScheduledEvents::default()),
            r#"{"DocumentIncarnation":1,"Events":[]}"#
        );
    }

    #[test]
    fn start_requests_must_name_known_events() {
        let known: Vec<Box<str>> = vec!["c7061bac-afdc-4513-b24b-aa5f13a16123".into()];
        let ok = br#"{"StartRequests": [{"EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123"}]}"#;
        assert!(start_requests_valid(ok, &known));
        for bad in [
            &br#"{"StartRequests": [{"EventId": "other"}]}"#[..],
            br#"{"StartRequests": []}"#,
            br#"{"StartRequests": [{"Id": "x"}]}"#,
            br#"{"startrequests": [{"EventId": "c7061bac-afdc-4513-b24b-aa5f13a16123"}]}"#,
            br#"[1]"#,
            b"not json",
            b"",
        ] {
            assert!(
                !start_requests_valid(bad, &known),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
