"""GCE maintenance-event and preempted changed by `imds-tun ctl` on a running `imds-tun serve`
(tests/live.rs), read with google-auth's metadata client and watched with the hanging GET
agents use (wait_for_change with the last ETag):

- a hanging GET parked on instance/maintenance-event is woken by `ctl event gce --maintenance
  MIGRATE_ON_HOST_MAINTENANCE --duration 2s`, well within a second, with the new value;
- a second one, parked on that value, is woken when its 2 s are over (time, not a command);
- `ctl event gce --preempted` makes instance/preempted TRUE; `ctl event cancel gce` undoes it.
"""

import os
import threading
import time

import google.auth.transport.requests
import requests
from google.auth.compute_engine import _metadata

from imds_ctl import check, ctl

SESSION = requests.Session()
SESSION.trust_env = False
REQUEST = google.auth.transport.requests.Request(session=SESSION)
URL = "http://" + os.environ["IMDS_TUN_ADDR"] + "/computeMetadata/v1/instance/maintenance-event"
HEADERS = {"Metadata-Flavor": "Google"}


def hanging_get(etag, into):
    r = SESSION.get(URL, params={"wait_for_change": "true", "last_etag": etag, "timeout_sec": 20},
                    headers=HEADERS, timeout=30)
    into.append((time.monotonic(), r.status_code, r.text, r.headers.get("ETag")))


def watch(etag):
    got = []
    t = threading.Thread(target=hanging_get, args=(etag, got))
    t.start()
    return t, got


check("NONE at start", _metadata.get(REQUEST, "instance/maintenance-event"), "NONE")
etag = SESSION.get(URL, headers=HEADERS, timeout=5).headers["ETag"]
thread, got = watch(etag)
time.sleep(0.5)
check("the hanging GET is parked", got, [])
asked = time.monotonic()
ctl("event", "gce", "--maintenance", "MIGRATE_ON_HOST_MAINTENANCE", "--duration", "2s")
thread.join(5)
check("woken with the new value", [(s, v) for _, s, v, _ in got], [(200, "MIGRATE_ON_HOST_MAINTENANCE")])
woke = got[0][0] - asked
if woke > 0.5:
    raise AssertionError(f"woken {woke:.3f} s after ctl started, want well under a second")
print(f"ok: woken {woke * 1000:.0f} ms after ctl started")
check("google-auth reads it", _metadata.get(REQUEST, "instance/maintenance-event"), "MIGRATE_ON_HOST_MAINTENANCE")
check("the recursive document agrees", _metadata.get(REQUEST, "instance/", recursive=True)["maintenanceEvent"], "MIGRATE_ON_HOST_MAINTENANCE")

thread, got = watch(got[0][3])
thread.join(6)
check("woken again when the 2 s are over", [(s, v) for _, s, v, _ in got], [(200, "NONE")])
ended = got[0][0] - asked
if not 1.5 <= ended <= 3.5:
    raise AssertionError(f"back to NONE {ended:.2f} s after ctl, want about 2 s")
print(f"ok: back to NONE {ended:.2f} s after ctl")

check("not preempted", _metadata.get(REQUEST, "instance/preempted"), "FALSE")
ctl("event", "gce", "--preempted")
check("preempted TRUE", _metadata.get(REQUEST, "instance/preempted"), "TRUE")
check("cancel gce", ctl("event", "cancel", "gce"), {"cancelled": "gce"})
check("preempted FALSE again", _metadata.get(REQUEST, "instance/preempted"), "FALSE")
