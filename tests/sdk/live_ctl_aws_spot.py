"""Spot and maintenance notices as botocore's IMDS client reads them (IMDSFetcher: a token
PUT, then GETs with the token, as its credential and region providers do) while
`imds-tun ctl` schedules and cancels them on a running `imds-tun serve` (tests/live.rs):

- `ctl event aws --spot terminate --in 2m`: spot/instance-action appears (terminate, the
  time 2 minutes on) with termination-time; `ctl event cancel spot`: 404 again.
- `ctl event aws --spot stop --in 2s`: appears, then disappears by itself at its time.
- `ctl event aws --maintenance system-reboot ...`: listed in events/maintenance/scheduled;
  cancelled, it moves to history as canceled.
"""

import calendar
import json
import os
import time

from botocore.utils import IMDSFetcher

from imds_ctl import check, ctl, wait_for

FETCHER = IMDSFetcher(base_url="http://" + os.environ["IMDS_TUN_ADDR"], timeout=2)
TOKEN = FETCHER._fetch_metadata_token()
check("an IMDSv2 token", bool(TOKEN), True)


def get(path):
    r = FETCHER._get_request("latest/meta-data/" + path, retry_func=lambda r: False, token=TOKEN)
    return r.status_code, r.text


check("no notice at start", get("spot/instance-action")[0], 404)
added = ctl("event", "aws", "--spot", "terminate", "--in", "2m")
check("ctl says the notice shows", (added["id"], added["status"]), ("spot", "started"))
(status, body), _ = wait_for("instance-action appears", lambda: get("spot/instance-action"), lambda r: r[0] == 200, 1)
action = json.loads(body)
check("action", action["action"], "terminate")
left = calendar.timegm(time.strptime(action["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.time()
if not 115 <= left <= 121:
    raise AssertionError(f"interruption in {left:.0f} s, want 120 s")
print(f"ok: interruption in {left:.0f} s")
check("termination-time", get("spot/termination-time"), (200, action["time"]))
check("cancel spot", ctl("event", "cancel", "spot"), {"cancelled": "spot"})
check("404 after ctl event cancel", get("spot/instance-action")[0], 404)
check("termination-time gone too", get("spot/termination-time")[0], 404)

ctl("event", "aws", "--spot", "stop", "--in", "2s")
(status, body), _ = wait_for("a stop notice appears", lambda: get("spot/instance-action"), lambda r: r[0] == 200, 1)
check("action stop", json.loads(body)["action"], "stop")
check("no termination-time for stop", get("spot/termination-time")[0], 404)
_, took = wait_for("the notice disappears at its time", lambda: get("spot/instance-action"), lambda r: r[0] == 404, 4)
if took < 1.0:
    raise AssertionError(f"gone after {took:.2f} s, want about 2 s")

m = ctl("event", "aws", "--maintenance", "system-reboot", "--not-before", "+1h", "--duration", "2h")
status, body = get("events/maintenance/scheduled")
events = json.loads(body)
check("maintenance scheduled", [(e["EventId"], e["Code"], e["State"]) for e in events], [(m["id"], "system-reboot", "active")])
check("cancel it", ctl("event", "cancel", m["id"]), {"cancelled": m["id"]})
check("scheduled empty", json.loads(get("events/maintenance/scheduled")[1]), [])
history = json.loads(get("events/maintenance/history")[1])
check("history has it canceled", [(e["EventId"], e["State"]) for e in history], [(m["id"], "canceled")])
