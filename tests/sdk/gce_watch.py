"""The GCE metadata "watch" loop as Google's documentation writes it (python-docs-samples,
compute/metadata): a hanging GET with wait_for_change and the last ETag, forever.

Usage: gce_watch.py BASE_URL PATH. Prints one line per value received:
`<CLOCK_MONOTONIC seconds> <value>`, flushed at once, so the test can time each change.
The first answer is immediate (last_etag "0" never matches).
"""

import sys
import time

import requests

base, path = sys.argv[1], sys.argv[2]
url = f"{base}/computeMetadata/v1/{path}"
headers = {"Metadata-Flavor": "Google"}
last_etag = "0"
session = requests.Session()
while True:
    r = session.get(
        url,
        params={"wait_for_change": True, "last_etag": last_etag, "timeout_sec": 30},
        headers=headers,
        timeout=60,
    )
    if r.status_code == 503:
        time.sleep(1)
        continue
    r.raise_for_status()
    if r.headers["etag"] == last_etag:
        continue  # timed out with no change
    last_etag = r.headers["etag"]
    print(f"{time.clock_gettime(time.CLOCK_MONOTONIC):.6f} {r.text}", flush=True)
