"""Two GCE hanging GETs pipelined on one connection, each with its own timeout.

Usage: pipelined_waits.py HOST PORT PATH TIMEOUT_SEC. Sends both requests at once
(`wait_for_change=true&timeout_sec=TIMEOUT_SEC`, no ETag: each waits for a change or its
timeout), then prints `answer N SECONDS STATUS` for each response as it completes (seconds since
the requests were sent), then `done`.
"""

import socket
import sys
import time

host, port, path, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def request(last):
    close = "Connection: close\r\n" if last else ""
    return (
        f"GET /computeMetadata/v1/{path}?wait_for_change=true&timeout_sec={timeout} HTTP/1.1\r\n"
        f"Host: metadata.google.internal\r\nMetadata-Flavor: Google\r\n{close}\r\n"
    ).encode()


s = socket.create_connection((host, port), timeout=30)
start = time.monotonic()
s.sendall(request(False) + request(True))
buf = b""
answered = 0
while answered < 2:
    head_end = buf.find(b"\r\n\r\n")
    if head_end >= 0:
        head = buf[:head_end].decode()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        end = head_end + 4 + length
        if len(buf) >= end:
            answered += 1
            status = head.split(" ", 2)[1]
            print(f"answer {answered} {time.monotonic() - start:.3f} {status}", flush=True)
            buf = buf[end:]
            continue
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print("done", flush=True)
