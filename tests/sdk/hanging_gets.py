"""Many concurrent hanging GETs on one value, each on its own TCP connection.

Usage: hanging_gets.py HOST PORT COUNT PATH ETAG. Opens COUNT connections, sends one
`wait_for_change=true&last_etag=ETAG` request on each, prints `sent COUNT`, then waits for every
answer (at most 60 s) and prints `answered N BODY` for each distinct body, then `done`.
"""

import selectors
import socket
import sys
import time

host, port, count, path, etag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
request = (
    f"GET /computeMetadata/v1/{path}?wait_for_change=true&last_etag={etag}&timeout_sec=60 HTTP/1.1\r\n"
    f"Host: metadata.google.internal\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n"
).encode()
sel = selectors.DefaultSelector()
buffers = {}
for _ in range(count):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(request)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    buffers[s] = b""
print(f"sent {count}", flush=True)
bodies = {}
deadline = time.monotonic() + 60
while buffers and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        chunk = s.recv(65536)
        if chunk:
            buffers[s] += chunk
            continue
        sel.unregister(s)
        s.close()
        raw = buffers.pop(s)
        body = raw.split(b"\r\n\r\n", 1)[-1].decode()
        status = raw.split(b" ", 2)[1].decode() if b" " in raw else "none"
        bodies[(status, body)] = bodies.get((status, body), 0) + 1
for (status, body), n in sorted(bodies.items()):
    print(f"answered {n} {status} {body}", flush=True)
print(f"unanswered {len(buffers)}", flush=True)
print("done", flush=True)
