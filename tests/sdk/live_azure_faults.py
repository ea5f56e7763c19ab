"""azure-identity's ManagedIdentityCredential against injected failures on the token path
(tests/live.rs configures them): with FAULT=429, one 429 and then normal service; with
FAULT=410, 410 for 70 s. Either way get_token must succeed; the server's log tells tests/live.rs
when each failure was served. Prints the seconds get_token took.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from azure.identity import ManagedIdentityCredential  # noqa: E402

start = time.monotonic()
token = ManagedIdentityCredential().get_token("https://management.azure.com/.default")
took = time.monotonic() - start
if not token.token.count(".") == 2:
    raise AssertionError("not a JWT")
print(f"ok: token after {took:.1f} s")
print(f"took {took:.3f}")
