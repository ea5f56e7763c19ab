"""Spot interruption notices as a termination handler sees them, with IMDSv2 (a token PUT, then
GETs with the token), polled every 200 ms: `spot/instance-action` is 404 until the notice
appears 4 s after the server started, then `{"action": "terminate", "time": ...}` with
`termination-time`, and 404 again from the interruption time (7 s after start). Also `events/maintenance/scheduled`
with the configured maintenance event and `autoscaling/target-lifecycle-state`.
"""

import json
import os
import time
import urllib.error
import urllib.request

BASE = "http://" + os.environ["IMDS_TUN_ADDR"]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def token():
    req = urllib.request.Request(BASE + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    with OPENER.open(req, timeout=5) as r:
        return r.read().decode()


TOKEN = token()


def get(path):
    req = urllib.request.Request(BASE + "/latest/meta-data/" + path,
                                 headers={"X-aws-ec2-metadata-token": TOKEN})
    try:
        with OPENER.open(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


start = float(os.environ["SERVER_STARTED"])
seen = []  # (seconds since the server started, status)
action = None
while time.time() - start < 9:
    status, body = get("spot/instance-action")
    seen.append((time.time() - start, status))
    if status == 200 and action is None:
        action = json.loads(body)
        check("termination-time while the notice shows", get("spot/termination-time")[0], 200)
        check("spot/ listed in meta-data/", "spot/" in get("")[1].split("\n"), True)
    time.sleep(0.2)

statuses = [s for _, s in seen]
check("404 before the notice", statuses[0], 404)
check("the notice appeared", 200 in statuses, True)
check("and disappeared", statuses[-1], 404)
first = statuses.index(200)
last = len(statuses) - 1 - statuses[::-1].index(200)
check("one continuous notice", set(statuses[first:last + 1]), {200})
appeared, gone = seen[first][0], seen[last + 1][0]
if not (4.0 <= appeared < 5.5 and 7.0 <= gone < 8.5):
    raise AssertionError(f"notice from {appeared:.1f} s to {gone:.1f} s, want about 4 s to 7 s")
print(f"ok: notice showed from {appeared:.1f} s to {gone:.1f} s")
check("action", action["action"], "terminate")
if not action["time"].endswith("Z") or len(action["time"]) != 20:
    raise AssertionError(f"time {action['time']!r} is not YYYY-MM-DDTHH:MM:SSZ")
print("ok: time format")
check("no spot/ in meta-data/ after", "spot/" in get("")[1].split("\n"), False)

status, body = get("events/maintenance/scheduled")
check("maintenance scheduled", status, 200)
events = json.loads(body)
check("one active system-reboot", [(e["Code"], e["State"]) for e in events], [("system-reboot", "active")])
check("event id", events[0]["EventId"], "instance-event-0d59937288b749b32")
check("history empty", json.loads(get("events/maintenance/history")[1]), [])
check("lifecycle state", get("autoscaling/target-lifecycle-state"), (200, "InService"))
