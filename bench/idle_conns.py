#!/usr/bin/env python3
"""Holds N idle HTTP/1.1 keep-alive connections to a server, for bench/run's memory test.

Opens the connections one after another (blocking, so the server's accept queue and a
userspace TCP's half-open table never see a burst), sends one request on each and reads its
complete answer (so the server has really served and kept every connection), then prints one
JSON line and holds them all open until standard input closes or --hold seconds pass, whichever
comes first. Everything is bounded: --open-timeout for the whole opening phase, 2 s per
socket operation, --hold for the idle phase. Gives up opening after 3 failures in a row
(a server that stops accepting is reported as such, with what it holds at that point). Raises its own RLIMIT_NOFILE soft limit to the
hard limit (bench/run raises the hard limit).

Usage: idle_conns.py --host 169.254.169.254 --port 80 --count 10000 --request-file FILE
"""

import argparse
import json
import os
import resource
import select
import socket
import sys
import time


def read_response(sock):
    """Reads one complete HTTP/1.x response (Content-Length framed); returns its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        body += chunk
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="169.254.169.254")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--request-file", required=True)
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=30.0)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))

    with open(args.request_file, "rb") as f:
        request = f.read()

    socks = []
    errors = {}
    statuses = {}
    start = time.monotonic()
    deadline = start + args.open_timeout
    failures_in_a_row = 0
    while len(socks) < args.count and time.monotonic() < deadline and failures_in_a_row < 3:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect((args.host, args.port))
            s.sendall(request)
            st = read_response(s)
            statuses[str(st)] = statuses.get(str(st), 0) + 1
            socks.append(s)
            failures_in_a_row = 0
        except (OSError, ValueError, IndexError) as e:
            key = type(e).__name__ + (": " + e.strerror if getattr(e, "strerror", None) else "")
            errors[key] = errors.get(key, 0) + 1
            failures_in_a_row += 1
            s.close()
    open_s = time.monotonic() - start
    # Are they all still open? A closed one is readable (EOF) now. (poll, not select: the
    # descriptors are far above FD_SETSIZE.)
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLHUP)
    closed = len(poller.poll(0))
    print(json.dumps({"opened": len(socks), "wanted": args.count, "open_seconds": round(open_s, 3),
                      "closed_by_server_already": closed, "statuses": statuses, "errors": errors}),
          flush=True)
    # Hold until stdin closes (the harness is done measuring) or the hold time passes.
    end = time.monotonic() + args.hold
    stdin = select.poll()
    stdin.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    while time.monotonic() < end:
        ready = stdin.poll(max(0, min(1000, int((end - time.monotonic()) * 1000))))
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
