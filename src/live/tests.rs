//! The live state behind its mutex: configuration seeding, reloads, the Azure render cache,
//! the fault fast path, and the text `ctl` prints.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::command::{parse, Command};
use super::faults::FaultAction;
use super::Live;
use crate::cloud::Owner;
use crate::config::{self, Config};
use crate::http::Response;

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s)
}

fn config(text: &str) -> Config {
    let no_env = |_: &str| None;
    config::load_str(text, "x.json", &no_env).unwrap_or_else(|e| panic!("{e}"))
}

fn cmd(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse(&words).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The Azure document's JSON at `now`, rendered with a counter of renders.
fn azure(live: &Live, now: SystemTime, renders: &mut u32) -> serde_json::Value {
    let pre = live.azure_document(now, |s| {
        *renders += 1;
        Response::new(200)
            .body(crate::cloud::azure_events_document(s))
            .prebuild()
    });
    let bytes = pre.bytes();
    let body = &bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4..];
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

const AZURE: &str = r#"{"azure": {"enabled": true,
    "instance": {"compute": {"name": "vm-7"}},
    "scheduledEvents": {"documentIncarnation": 4, "events": [
        {"eventType": "Freeze", "notBefore": "+60s", "durationInSeconds": 5}]}}}"#;

#[test]
fn configured_events_count_from_the_first_time_and_render_once_per_change() {
    let live = Live::new(&config(AZURE));
    let mut renders = 0;
    let doc = azure(&live, at(0), &mut renders);
    assert_eq!(doc["DocumentIncarnation"], 4);
    assert_eq!(doc["Events"][0]["EventType"], "Freeze");
    assert_eq!(doc["Events"][0]["Resources"][0], "vm-7");
    assert_eq!(
        doc["Events"][0]["NotBefore"],
        "Thu, 01 Jan 2026 00:01:00 GMT"
    );
    azure(&live, at(30), &mut renders);
    assert_eq!(renders, 1, "unchanged document: rendered once");
    assert_eq!(live.next_change(at(30)), Some(at(60)));
    let doc = azure(&live, at(60), &mut renders);
    assert_eq!(
        (
            doc["DocumentIncarnation"].clone(),
            doc["Events"][0]["EventStatus"].clone()
        ),
        (5.into(), "Started".into())
    );
    let doc = azure(&live, at(65), &mut renders);
    assert_eq!(doc["DocumentIncarnation"], 6);
    assert_eq!(doc["Events"].as_array().map(Vec::len), Some(0));
    assert_eq!(renders, 3);
}

#[test]
fn approval_by_id_starts_the_event() {
    let live = Live::new(&config(AZURE));
    live.settle(at(0));
    let id = {
        let mut r = 0;
        azure(&live, at(0), &mut r)["Events"][0]["EventId"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(live.azure_approve(&["not-an-event"], at(1)).is_err());
    assert!(live.azure_approve(&[&id.to_uppercase()], at(1)).is_ok());
    let mut r = 0;
    let doc = azure(&live, at(2), &mut r);
    assert_eq!(doc["Events"][0]["EventStatus"], "Started");
    assert_eq!(doc["Events"][0]["NotBefore"], "");
    assert_eq!(live.counters.approved(), 1);
}

#[test]
fn reloads_keep_the_state_unless_the_configured_events_change() {
    let first = config(AZURE);
    assert!(Live::same_events(&first, &config(AZURE)));
    let live = Live::new(&first);
    live.settle(at(0));
    live.apply(
        cmd("event azure --type Reboot --not-before +1h --id by-hand"),
        at(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut r = 0;
    assert_eq!(
        azure(&live, at(2), &mut r)["Events"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let changed = config(&AZURE.replace("Freeze", "Redeploy"));
    assert!(!Live::same_events(&first, &changed));
    live.reseed(&changed, at(3));
    let doc = azure(&live, at(3), &mut r);
    let types: Vec<&str> = doc["Events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["EventType"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["Reboot", "Redeploy"], "the command's event stays");
    assert_eq!(
        doc["DocumentIncarnation"], 6,
        "added by hand, then the reload"
    );
    assert_eq!(
        doc["Events"][1]["NotBefore"], "Thu, 01 Jan 2026 00:01:03 GMT",
        "relative to the reload"
    );
}

#[test]
fn faults_cost_one_load_when_none_and_end_after_their_count() {
    let live = Live::new(&config(r#"{"azure": {"enabled": true}}"#));
    assert!(!live.faults_on.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(live.fault(Owner::Azure, "/metadata/instance", at(0)), None);
    live.apply(
        cmd("fault add /metadata/identity/oauth2/token --status 429 --count 2"),
        at(0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = "/metadata/identity/oauth2/token";
    assert!(live.peek_fault(Owner::Azure, token, at(0)).is_some());
    assert!(
        live.peek_fault(Owner::Azure, token, at(0)).is_some(),
        "peeking counts nothing"
    );
    for _ in 0..2 {
        assert!(matches!(
            live.fault(Owner::Azure, token, at(0)),
            Some(FaultAction::Status { status: 429, .. })
        ));
    }
    assert_eq!(live.fault(Owner::Azure, token, at(0)), None);
    assert!(!live.faults_on.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(live.counters.faults_injected(), 2);
}

#[test]
fn ctl_lists_and_cancels() {
    let live = Live::new(&config(
        r#"{"aws": {"enabled": true}, "gce": {"enabled": true}}"#,
    ));
    let say = |line: &str, s| live.apply(cmd(line), at(s));
    assert!(say("event aws --spot terminate --in 2m", 0).is_ok());
    assert!(say(
        "event gce --maintenance MIGRATE_ON_HOST_MAINTENANCE --duration 60s",
        0
    )
    .is_ok());
    assert!(say(
        "fault add gce /computeMetadata/ --prefix --latency 200ms --for 10s",
        0
    )
    .is_ok());
    let events = say("event list", 1).unwrap_or_default();
    assert_eq!(
        events,
        json!([
            {"id": "spot", "cloud": "aws", "type": "spot", "status": "started",
             "action": "terminate", "notice": "2026-01-01T00:00:00Z",
             "time": "2026-01-01T00:02:00Z"},
            {"id": "gce", "cloud": "gce", "type": "maintenance-event", "status": "started",
             "value": "MIGRATE_ON_HOST_MAINTENANCE", "at": "2026-01-01T00:00:00Z",
             "until": "2026-01-01T00:01:00Z"}
        ])
    );
    assert_eq!(
        say("fault list", 1),
        Ok(
            json!([{"id": 1, "cloud": "gce", "prefix": "/computeMetadata/",
                   "latency": "200ms", "until": "2026-01-01T00:00:10Z", "hits": 0}])
        )
    );
    assert_eq!(
        live.next_change(at(1)),
        Some(at(10)),
        "the fault ends first"
    );
    assert_eq!(
        say("event cancel spot", 2),
        Ok(json!({"cancelled": "spot"}))
    );
    assert!(say("event cancel spot", 2).is_err());
    assert_eq!(say("event cancel gce", 2), Ok(json!({"cancelled": "gce"})));
    assert_eq!(
        say("fault clear 7", 2),
        Err("no fault 7 (see fault list)".into())
    );
    assert_eq!(say("fault clear", 2), Ok(json!({"cleared": 1})));
    assert_eq!(say("event list", 3), Ok(json!([])));
}

#[test]
fn commands_wake_whoever_waits_for_a_change() {
    let live = Arc::new(Live::new(&config("{}")));
    let seen = live.generation();
    let waiter = {
        let live = Arc::clone(&live);
        std::thread::spawn(move || live.wait_change(seen, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(20));
    live.apply(cmd("event aws --lifecycle InService"), at(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let woke = waiter.join().unwrap_or(0);
    assert_eq!(woke, seen + 1);
    assert_eq!(
        live.wait_change(woke, Duration::from_millis(1)),
        woke,
        "timed out"
    );
}

#[test]
fn event_steps_reach_the_metrics_registry() {
    // Terminate events and lifecycle values are used by no other test here, so the global
    // series move only by this test.
    let count = |cloud: &str, kind: &str, stage: &str| {
        crate::metrics::global()
            .counter(
                "imds_tun_events_total",
                "",
                &[("cloud", cloud), ("type", kind), ("stage", stage)],
            )
            .get()
    };
    let terminate = |stage| count("azure", "Terminate", stage);
    let before = ["scheduled", "started", "completed", "cancelled"].map(terminate);
    let live = Live::new(&config(
        r#"{"azure": {"enabled": true}, "aws": {"enabled": true}}"#,
    ));
    let say = |line: &str, s| live.apply(cmd(line), at(s));
    let first = say(
        "event azure --type Terminate --not-before +10s --duration 5",
        0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first["status"], "scheduled");
    let second =
        say("event azure --type Terminate --not-before +60s", 0).unwrap_or_else(|e| panic!("{e}"));
    live.settle(at(9));
    live.settle(at(10));
    live.settle(at(12));
    live.settle(at(20));
    let id = second["id"].as_str().unwrap_or_default().to_string();
    assert!(say(&format!("event cancel {id}"), 21).is_ok());
    let after = ["scheduled", "started", "completed", "cancelled"].map(terminate);
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [2, 1, 1, 1],
        "scheduled, started, completed, cancelled"
    );

    let lifecycle = |stage| count("aws", "lifecycle", stage);
    let before = ["scheduled", "started"].map(lifecycle);
    assert!(say("event aws --lifecycle Terminated --in 5s", 30).is_ok());
    // Started and seen by nobody until long after: counted once, when first looked at.
    live.settle(at(100));
    live.settle(at(101));
    let after = ["scheduled", "started"].map(lifecycle);
    assert_eq!([after[0] - before[0], after[1] - before[1]], [1, 1]);
    assert_eq!(live.current(at(101)), (0, 0), "no current event or fault");
}
