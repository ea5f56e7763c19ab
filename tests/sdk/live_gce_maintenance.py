"""GCE maintenance-event as an agent reads it with google-auth's metadata client: NONE, then
MIGRATE_ON_HOST_MAINTENANCE from 4 s after the server started for 3 s, then NONE again, each value with its
own ETag; the recursive instance document agrees.
"""

import os
import time

import google.auth.transport.requests
import requests
from google.auth.compute_engine import _metadata

SESSION = requests.Session()
SESSION.trust_env = False
REQUEST = google.auth.transport.requests.Request(session=SESSION)
BASE = "http://" + os.environ["IMDS_TUN_ADDR"] + "/computeMetadata/v1/"


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def etag():
    r = SESSION.get(BASE + "instance/maintenance-event", headers={"Metadata-Flavor": "Google"}, timeout=5)
    return r.headers["ETag"]


start = float(os.environ["SERVER_STARTED"])
values = []
etags = {}
while time.time() - start < 9:
    value = _metadata.get(REQUEST, "instance/maintenance-event")
    values.append((time.time() - start, value))
    etags.setdefault(value, etag())
    if value == "MIGRATE_ON_HOST_MAINTENANCE" and "recursive" not in etags:
        doc = _metadata.get(REQUEST, "instance/", recursive=True)
        check("recursive document agrees", doc["maintenanceEvent"], "MIGRATE_ON_HOST_MAINTENANCE")
        etags["recursive"] = True
    time.sleep(0.2)

sequence = [v for i, (_, v) in enumerate(values) if i == 0 or values[i - 1][1] != v]
check("NONE, then the maintenance, then NONE", sequence, ["NONE", "MIGRATE_ON_HOST_MAINTENANCE", "NONE"])
began = next(t for t, v in values if v != "NONE")
ended = next(t for t, v in values if t > began and v == "NONE")
if not (4.0 <= began < 5.5 and 7.0 <= ended < 8.5):
    raise AssertionError(f"maintenance from {began:.1f} s to {ended:.1f} s, want about 4 s to 7 s")
print(f"ok: maintenance from {began:.1f} s to {ended:.1f} s")
check("the ETag changed with the value", etags["NONE"] != etags["MIGRATE_ON_HOST_MAINTENANCE"], True)
check("preempted untouched", _metadata.get(REQUEST, "instance/preempted"), "FALSE")
