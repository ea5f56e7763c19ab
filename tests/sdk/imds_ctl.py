"""`imds-tun ctl` for the scripts that change a running server's live state while they watch it
with a real client (tests/live.rs sets IMDS_TUN_BIN and IMDS_TUN_CTL, the control socket).
"""

import json
import os
import subprocess
import time


def ctl(*args):
    """Runs `imds-tun ctl --json ARGS`; returns its result, or fails with its one-line error."""
    out = subprocess.run(
        [os.environ["IMDS_TUN_BIN"], "ctl", "--socket", os.environ["IMDS_TUN_CTL"], "--json", *args],
        capture_output=True, text=True, timeout=10,
    )
    if out.returncode != 0:
        raise AssertionError(f"ctl {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)["result"]


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


def wait_for(what, read, predicate, timeout, every=0.1):
    """Calls read() every `every` seconds until predicate(value); returns (value, seconds)."""
    start = time.monotonic()
    while True:
        value = read()
        if predicate(value):
            took = time.monotonic() - start
            print(f"ok: {what} ({took:.2f} s)")
            return value, took
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s; last {value!r}")
        time.sleep(every)
