"""An Azure scheduled-events poller (requests, the documented loop) against a running
`imds-tun serve` whose events are added by `imds-tun ctl` while it polls (tests/live.rs):

- `ctl event azure --type Reboot --not-before +60s --duration 2`: the event appears, Scheduled,
  with the id ctl printed; the poller approves it by POST; it is Started at once and gone 2 s
  later.
- `ctl event azure --type Freeze`, then `ctl event cancel ID`: it appears, then disappears.

DocumentIncarnation rises by one at each change; `ctl event list` agrees with the document.
"""

import os

import requests

from imds_ctl import check, ctl, wait_for

URL = "http://" + os.environ["IMDS_TUN_ADDR"] + "/metadata/scheduledevents?api-version=2020-07-01"
HEADERS = {"Metadata": "true"}
SESSION = requests.Session()
SESSION.trust_env = False


def poll():
    r = SESSION.get(URL, headers=HEADERS, timeout=5)
    r.raise_for_status()
    return r.json()


first = poll()
n = first["DocumentIncarnation"]
check("no events at start", first["Events"], [])

added = ctl("event", "azure", "--type", "Reboot", "--not-before", "+60s", "--duration", "2")
check("ctl says it is scheduled", added["status"], "scheduled")
doc, _ = wait_for("the event appears while polling", poll, lambda d: d["Events"] != [], 1)
event = doc["Events"][0]
check("the id ctl printed", event["EventId"], added["id"])
check("Reboot, Scheduled", (event["EventType"], event["EventStatus"]), ("Reboot", "Scheduled"))
check("DurationInSeconds", event["DurationInSeconds"], 2)
check("incarnation +1 for the new event", doc["DocumentIncarnation"], n + 1)
check("ctl event list shows it", [e["id"] for e in ctl("event", "list")], [added["id"]])

r = SESSION.post(URL, headers=HEADERS, json={"StartRequests": [{"EventId": event["EventId"]}]}, timeout=5)
check("approval accepted", r.status_code, 200)
doc = poll()
check("approved: Started at once", doc["Events"][0]["EventStatus"], "Started")
check("incarnation +1 for the start", doc["DocumentIncarnation"], n + 2)
check("ctl event list says started", ctl("event", "list")[0]["status"], "started")
doc, took = wait_for("gone after its 2 s", poll, lambda d: d["Events"] == [], 5)
if not 1.0 <= took <= 3.5:
    raise AssertionError(f"gone {took:.2f} s after the start, want about 2 s")
check("incarnation +1 for the end", doc["DocumentIncarnation"], n + 3)

freeze = ctl("event", "azure", "--type", "Freeze")
doc, _ = wait_for("a Freeze appears", poll, lambda d: d["Events"] != [], 1)
check("Freeze, Scheduled", (doc["Events"][0]["EventType"], doc["Events"][0]["EventStatus"]), ("Freeze", "Scheduled"))
check("cancelled by id", ctl("event", "cancel", freeze["id"]), {"cancelled": freeze["id"]})
doc = poll()
check("gone after ctl event cancel", doc["Events"], [])
check("incarnation counted both", doc["DocumentIncarnation"], n + 5)
check("ctl event list empty", ctl("event", "list"), [])
