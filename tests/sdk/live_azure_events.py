"""An Azure scheduled-events poller, as users write them (requests, the documented loop), against
`imds-tun serve` started with two configured events (tests/live.rs):

- A: a Freeze due in 30 s lasting 2 s; the poller approves it (POST StartRequests), sees it
  Started at once, and sees it disappear 2 s later.
- B: a Reboot due 6 s after start lasting 2 s; nobody approves it: it starts by itself at its
  NotBefore, then disappears.

Every change must raise DocumentIncarnation by one. Also checks POST validation (400 for bad
JSON, an unknown EventId, an empty list; 400 without the Metadata header).
"""

import os
import re
import time

import requests

BASE = "http://" + os.environ["IMDS_TUN_ADDR"]
URL = BASE + "/metadata/scheduledevents?api-version=2020-07-01"
HEADERS = {"Metadata": "true"}
SESSION = requests.Session()
SESSION.trust_env = False


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def poll():
    r = SESSION.get(URL, headers=HEADERS, timeout=5)
    r.raise_for_status()
    return r.json()


def by_type(doc, event_type):
    return next((e for e in doc["Events"] if e["EventType"] == event_type), None)


def wait_for(what, predicate, timeout):
    """Polls once every 100 ms (IMDS allows 5 requests a second) until predicate(doc)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = poll()
        if predicate(doc):
            print(f"ok: {what}")
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; last document {doc}")
        time.sleep(0.1)


check("no Metadata header", SESSION.get(URL, timeout=5).status_code, 400)
for name, body in [
    ("bad JSON", "{not json"),
    ("unknown EventId", '{"StartRequests": [{"EventId": "00000000-0000-0000-0000-000000000000"}]}'),
    ("empty StartRequests", '{"StartRequests": []}'),
    ("no EventId", '{"StartRequests": [{"Id": "x"}]}'),
]:
    r = SESSION.post(URL, headers=HEADERS, data=body, timeout=5)
    check(f"POST with {name}", r.status_code, 400)

first = poll()
n = first["DocumentIncarnation"]
check("two events at start", sorted(e["EventType"] for e in first["Events"]), ["Freeze", "Reboot"])
freeze = by_type(first, "Freeze")
check("Reboot is scheduled", by_type(first, "Reboot")["EventStatus"], "Scheduled")
check("Freeze is scheduled", freeze["EventStatus"], "Scheduled")
check("NotBefore as IMDS prints it", bool(re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", freeze["NotBefore"])), True)
check("DurationInSeconds is a number", freeze["DurationInSeconds"], 2)
check("ResourceType", freeze["ResourceType"], "VirtualMachine")
check("Resources name the VM", freeze["Resources"], [os.environ["VM_NAME"]])

# Approve the Freeze: it starts at once.
r = SESSION.post(URL, headers=HEADERS, json={"StartRequests": [{"EventId": freeze["EventId"]}]}, timeout=5)
check("approval accepted", r.status_code, 200)
doc = poll()
check("approved event started", by_type(doc, "Freeze")["EventStatus"], "Started")
check("a started event has no NotBefore", by_type(doc, "Freeze")["NotBefore"], "")
check("incarnation +1 for the start", doc["DocumentIncarnation"], n + 1)
r = SESSION.post(URL, headers=HEADERS, json={"StartRequests": [{"EventId": freeze["EventId"]}]}, timeout=5)
check("approving again is still 200", r.status_code, 200)

# The Reboot starts by itself at its NotBefore (6 s after start).
doc = wait_for("Reboot starts at its NotBefore", lambda d: (by_type(d, "Reboot") or {}).get("EventStatus") == "Started", 10)
# Both events end 2 s after they started.
doc = wait_for("both events are gone after their durations", lambda d: d["Events"] == [], 10)
# Freeze started (+1), Reboot started (+1), Freeze gone (+1), Reboot gone (+1).
check("every change counted", doc["DocumentIncarnation"], n + 4)
