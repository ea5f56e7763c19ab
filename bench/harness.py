#!/usr/bin/env python3
"""bench/run: imds-tun `up` (TUN + own TCP) vs `serve` (kernel TCP) vs nginx on a loopback alias.

Run it through `bench/run` (as root); see bench/README.md for what every number means. Python
standard library only. Everything happens inside network namespaces this script creates and
deletes itself (also on an error or CTRL-C); the host's own interfaces, routes and /etc/hosts
are never touched: servers run in a private mount namespace whose /etc/hosts is a bind mount
of a scratch file.
"""

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
ADDR = "169.254.169.254"
PORT = 80

# The request of each cloud: path and the headers its real clients send.
CLOUDS = {
    "azure": ("/metadata/instance?api-version=2021-02-01", [("Metadata", "true")]),
    "gce": ("/computeMetadata/v1/instance/id", [("Metadata-Flavor", "Google")]),
    "aws": ("/latest/meta-data/instance-id", []),
}
CONTENDERS = ["up", "serve", "nginx"]

TARGETS = {
    "keepalive_up_vs_nginx": 2.0,
    "close_up_vs_nginx": 1.5,
    "keepalive_serve_vs_nginx": 1.0,
    "close_serve_vs_nginx": 1.0,
    "rss_mib_at_10k": 32.0,
    "ready_ms": 100.0,
}

# ---------------------------------------------------------------------------------------------
# Namespaces, through libc (the calling thread's network namespace is what children inherit).

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_void_p]
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns_path(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


HOST_NETNS_FD = None


def enter_host_netns():
    if HOST_NETNS_FD is not None:
        _check(libc.setns(HOST_NETNS_FD, CLONE_NEWNET), "setns back to the host")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-500:]}")
    return r


class Netns:
    """A network namespace of our own, with lo up; deleted on close (killing what runs in it)."""

    live = []

    def __init__(self, name):
        self.name = name
        run(["ip", "netns", "add", name])
        Netns.live.append(self)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def add_loopback_alias(self):
        run(["ip", "-n", self.name, "addr", "add", f"{ADDR}/32", "dev", "lo"])

    def enter(self):
        setns_path(f"/run/netns/{self.name}")

    def sysctl(self, key, value):
        """Per-netns sysctl; written from inside the namespace and read back."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.enter()
        try:
            with open(path, "w") as f:
                f.write(str(value))
            with open(path) as f:
                got = f.read().strip()
        finally:
            enter_host_netns()
        if got.split() != str(value).split():
            raise RuntimeError(f"{key}={value} did not stick in {self.name} (reads {got})")

    def close(self):
        enter_host_netns()
        r = run(["ip", "netns", "pids", self.name], check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)  # only ever our own processes live here
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "delete", self.name], check=False)
        if self in Netns.live:
            Netns.live.remove(self)


def cleanup_all():
    for ns in list(Netns.live):
        ns.close()


# ---------------------------------------------------------------------------------------------
# Processes.

def proc_tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime+stime (all threads) of each pid, summed; a vanished pid counts 0."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    """A server process in a namespace: private mount namespace, scratch /etc/hosts, pinned."""

    def __init__(self, ns, argv, hosts_file, cpus, logfile):
        self.ns, self.argv, self.logfile = ns, argv, logfile
        hosts = hosts_file.encode()

        def child():
            # Runs in the forked child before exec: it already is in `ns` (inherited from the
            # calling thread). Give it its own mount namespace so /etc/hosts edits (by `up`)
            # land in a scratch file, and a sysfs that shows this namespace's devices.
            if libc.unshare(CLONE_NEWNS) != 0:
                os._exit(121)
            if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                os._exit(122)
            if libc.mount(hosts, b"/etc/hosts", None, MS_BIND, None) != 0:
                os._exit(123)
            if libc.umount2(b"/sys", MNT_DETACH) == 0:
                libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None)
            if cpus:
                os.sched_setaffinity(0, cpus)

        ns.enter()
        try:
            self.log = open(logfile, "wb")
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=subprocess.STDOUT, preexec_fn=child,
                                         start_new_session=True)
        finally:
            enter_host_netns()
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def pids(self):
        return proc_tree(self.pid) if self.alive() else []

    def log_tail(self, n=600):
        try:
            with open(self.logfile, "rb") as f:
                data = f.read()
            return data[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for p in proc_tree(self.pid):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------------------------
# HTTP by hand (probes and answer checks run inside the namespace, from this thread).

def http_request_bytes(cloud, extra_headers=()):
    path, headers = CLOUDS[cloud]
    lines = [f"GET {path} HTTP/1.1", f"Host: {ADDR}"]
    lines += [f"{k}: {v}" for k, v in list(headers) + list(extra_headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_exchange(raw, timeout=2.0):
    """Sends raw bytes to ADDR:PORT, returns (status, head_bytes, body) of one response."""
    with socket.create_connection((ADDR, PORT), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(raw)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the end of the head")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        if length is None:
            raise ConnectionError("no Content-Length")
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the end of the body")
            body += chunk
        return status, head + b"\r\n\r\n", body[:length]


def header_value(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode(errors="replace")
    return None


def probe_ready(ns, server, raw, limit_s):
    """Tight loop (0.2 ms apart) until the first complete HTTP response; ms since spawn."""
    ns.enter()
    try:
        deadline = server.t0 + limit_s
        last = None
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"exited with {server.proc.returncode} before answering: "
                                   f"{server.log_tail()}")
            try:
                http_exchange(raw, timeout=0.5)
                return (time.monotonic() - server.t0) * 1000.0
            except (OSError, ValueError, IndexError) as e:
                last = e
                time.sleep(0.0002)
        raise RuntimeError(f"no answer within {limit_s:.0f} s (last error: {last}); "
                           f"log: {server.log_tail()}")
    finally:
        enter_host_netns()


# ---------------------------------------------------------------------------------------------
# Load: wrk, inside the namespace.

def run_wrk(ns, args, cloud, extra_headers, close, cpus):
    path, headers = CLOUDS[cloud]
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
           "--timeout", "2s", "-s", os.path.join(BENCH_DIR, "report.lua")]
    for k, v in list(headers) + list(extra_headers):
        cmd += ["-H", f"{k}: {v}"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://{ADDR}:{PORT}{path}")

    def child():
        if cpus:
            os.sched_setaffinity(0, cpus)

    ns.enter()
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=child)
    finally:
        enter_host_netns()
    deadline = time.monotonic() + args.duration + 30
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    out = p.stdout.read().decode(errors="replace")
    p.stdout.close()
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result (exit {p.returncode}): {out.strip()[-400:]}")
    res = json.loads(m.group(1))
    res["command"] = shlex.join(cmd)
    res["wrk_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    return res


def measure_mode(ns, server, args, cloud, extra_headers, close, cpus):
    pids = server.pids()
    c0 = cpu_seconds(pids)
    res = run_wrk(ns, args, cloud, extra_headers, close, cpus)
    c1 = cpu_seconds(pids)
    if not server.alive():
        raise RuntimeError(f"server exited during the run: {server.log_tail()}")
    secs = res["duration_us"] / 1e6
    n = res["requests"]
    errs = sum(v for k, v in res["errors"].items() if k != "status")
    out = {
        "requests": n,
        "seconds": round(secs, 3),
        "rps": round(n / secs, 1) if secs > 0 else 0.0,
        "errors": res["errors"],
        "socket_errors": errs,
        "non_2xx": res["errors"]["status"],
        "latency_us": res["latency_us"],
        "server_cpu_s": round(c1 - c0, 3),
        "server_cpu_s_per_100k": round((c1 - c0) / n * 1e5, 4) if n else None,
        "wrk_cpu_s": res["wrk_cpu_s"],
        "wrk_cpu_s_per_100k": round(res["wrk_cpu_s"] / n * 1e5, 4) if n else None,
        "bytes": res["bytes"],
        "command": res["command"],
    }
    return out


def idle_connections(ns, server, args, raw, cpus, tmp):
    """Peak RSS of the server while args.idle_conns keep-alive connections sit idle."""
    pids = server.pids()
    before = {p: status_kib(p, "VmRSS") for p in pids}
    for p in pids:  # reset VmHWM to the current RSS: the peak of the load runs must not count
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    reqfile = os.path.join(tmp, "idle-request")
    with open(reqfile, "wb") as f:
        f.write(raw)
    cmd = [sys.executable, os.path.join(BENCH_DIR, "idle_conns.py"), "--host", ADDR,
           "--port", str(PORT), "--count", str(args.idle_conns), "--request-file", reqfile,
           "--open-timeout", "60", "--hold", "30"]

    def child():
        if cpus:
            os.sched_setaffinity(0, cpus)

    ns.enter()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=child)
    finally:
        enter_host_netns()
    try:
        line = p.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"idle client failed: {p.stderr.read().decode()[-400:]}")
        client = json.loads(line)
        time.sleep(0.5)
        pids = server.pids()
        hwm = {p_: status_kib(p_, "VmHWM") for p_ in pids}
        rss = {p_: status_kib(p_, "VmRSS") for p_ in pids}
        pss = {p_: pss_kib(p_) for p_ in pids}
    finally:
        p.stdin.close()
        try:
            p.wait(40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()

    def total(d):
        vals = [v for v in d.values() if v is not None]
        return sum(vals) if vals else None

    hwm_kib = total(hwm)
    return {
        "connections_wanted": args.idle_conns,
        "connections_held": client["opened"],
        "closed_by_server_already": client["closed_by_server_already"],
        "open_seconds": client["open_seconds"],
        "client_errors": client["errors"],
        "statuses": client["statuses"],
        "processes": len(pids),
        "rss_before_kib": total(before),
        "vmhwm_kib": hwm_kib,
        "vmhwm_mib": round(hwm_kib / 1024, 1) if hwm_kib else None,
        "vmrss_kib": total(rss),
        "pss_kib": total(pss),
    }


# ---------------------------------------------------------------------------------------------
# Setup: packages, the imds-tun binary, versions.

APT_UPDATED = False


def ensure_tools(need_nginx):
    global APT_UPDATED
    want = {"wrk": "wrk", "curl": "curl", "ip": "iproute2"}
    if need_nginx:
        want["nginx"] = "nginx"
    missing = [pkg for exe, pkg in want.items() if not find_exe(exe)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise RuntimeError(f"missing {', '.join(missing)} and no apt-get: install them and rerun")
    log(f"installing {' '.join(missing)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not APT_UPDATED:
        run(["apt-get", "update", "-qq"], env=env)
        APT_UPDATED = True
    # Installing nginx must not start the distribution's own nginx on the host: a temporary
    # policy-rc.d (the standard Debian mechanism) forbids service starts during the install.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, from imds-tun bench/run: no service starts\nexit 101\n")
        os.chmod(policy, 0o755)
        made_policy = True
    try:
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env)
    finally:
        if made_policy:
            os.unlink(policy)


def find_exe(name):
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
        None)


def build_imds_tun():
    """cargo build --release in the repository (as the invoking user under sudo)."""
    cmd = ["cargo", "build", "--release", "--locked", "--bin", "imds-tun"]
    user = os.environ.get("SUDO_USER")
    env = dict(os.environ)
    if user and user != "root" and os.stat(REPO).st_uid != 0:
        home = os.path.expanduser(f"~{user}")
        env["PATH"] = f"{home}/.cargo/bin:" + env.get("PATH", "")
        cmd = ["runuser", "-u", user, "--", "env", f"PATH={env['PATH']}", f"HOME={home}"] + cmd
    elif not shutil.which("cargo"):
        env["PATH"] = os.path.expanduser("~/.cargo/bin") + ":" + env.get("PATH", "")
    log("building imds-tun: " + shlex.join(cmd))
    r = subprocess.run(cmd, cwd=REPO, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        raise RuntimeError("cargo build --release failed")
    meta = run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, env=env,
               check=False)
    target = os.path.join(REPO, "target")
    if meta.returncode == 0:
        target = json.loads(meta.stdout).get("target_directory", target)
    return os.path.join(target, "release", "imds-tun")


def versions(binary):
    def first_line(cmd):
        r = run(cmd, check=False)
        text = (r.stdout + r.stderr).strip()
        return text.splitlines()[0] if text else None

    v = {
        "nginx": first_line([find_exe("nginx") or "nginx", "-v"]) if find_exe("nginx") else None,
        "wrk": first_line(["wrk", "-v"]) if find_exe("wrk") else None,
        "imds_tun": first_line([binary, "--version"]) if binary else None,
        "python": platform.python_version(),
    }
    r = run(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False)
    v["imds_tun_git"] = r.stdout.strip() or None
    return v


def has_subcommand(binary, sub):
    r = run([binary, sub, "--help"], check=False)
    return r.returncode == 0, (r.stderr or r.stdout).strip()


def scratch_dirs(binary, sub, where, keys=None):
    """`--state-dir`/`--key-dir` options pointing into the run's scratch directory, for the
    options this build has: the benchmark must not create the machine's /run/imds-tun or
    /var/lib/imds-tun. `keys` is the key directory to use (default: one under `where`).

    The contenders share the run's key directory, which the reference step (a `serve`)
    fills first: a machine running imds-tun made its signing keys once, at its first start
    (RSA key generation takes 100-300 ms), so "ready" measures a start with keys in place,
    as every start but the very first is."""
    _, text = has_subcommand(binary, sub)
    argv = []
    for opt, name in (("--state-dir", "state"), ("--key-dir", "keys")):
        if opt in text:
            path = keys if (name == "keys" and keys) else os.path.join(where, name)
            argv += [opt, path]
    return argv


# ---------------------------------------------------------------------------------------------
# The contenders.

NGINX_CONF = """\
# nginx as the conventional contender: static files on a 169.254.169.254 loopback alias,
# tuned the usual way for small static responses.
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
user root;
events {{
    worker_connections 20000;
    multi_accept on;
    use epoll;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    server_tokens off;
    etag off;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen {addr}:{port} backlog=4096 reuseport;
        root {root};
{locations}
    }}
}}
"""


def nginx_setup(tmp, reference, workers):
    root = os.path.join(tmp, "www")
    locations = []
    for cloud, ref in reference.items():
        path = CLOUDS[cloud][0].split("?")[0]
        fpath = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(fpath), exist_ok=True)
        with open(fpath, "wb") as f:
            f.write(ref["body"])
        ctype = ref.get("content_type") or "application/octet-stream"
        locations.append(f"        location = {path} {{ default_type \"{ctype}\"; }}")
    for d, _, files in os.walk(tmp):
        os.chmod(d, 0o755)
        for name in files:
            os.chmod(os.path.join(d, name), 0o644)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(workers=workers, tmp=tmp, addr=ADDR, port=PORT, root=root,
                                  locations="\n".join(locations)))
    return conf


def fetch_reference(args, binary, tmp, cpus_server):
    """Asks `imds-tun serve` (in a scratch namespace) for each cloud's answer, with curl."""
    ns = Netns(f"{args.ns_prefix}-ref")
    try:
        ns.add_loopback_alias()
        hosts = os.path.join(tmp, "hosts-ref")
        shutil.copy("/etc/hosts", hosts)
        argv = [binary, "serve", "--listen", f"{ADDR}:{PORT}"] + scratch_dirs(binary, "serve", tmp)
        srv = Server(ns, argv, hosts, cpus_server, os.path.join(tmp, "ref-serve.log"))
        try:
            probe_ready(ns, srv, http_request_bytes(args.clouds[0]), 10)
            ref = {}
            for cloud in args.clouds:
                path, headers = CLOUDS[cloud]
                extra = []
                body, head, status = curl(ns, tmp, cloud, headers)
                if cloud == "aws" and status == 401:
                    # IMDSv2-only configuration: every contender is asked with a fresh token.
                    extra = [("X-aws-ec2-metadata-token", "TOKEN")]
                    tok = aws_token(ns)
                    body, head, status = curl(ns, tmp, cloud,
                                              headers + [("X-aws-ec2-metadata-token", tok)])
                ref[cloud] = {
                    "status": status,
                    "body": body,
                    "body_bytes": len(body),
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                    "head_bytes": len(head),
                    "content_type": header_value(head, "content-type"),
                    "needs_aws_token": bool(extra),
                }
            return ref
        finally:
            srv.stop()
    finally:
        ns.close()


def curl(ns, tmp, cloud, headers):
    path, _ = CLOUDS[cloud]
    bodyf, headf = os.path.join(tmp, f"ref-{cloud}.body"), os.path.join(tmp, f"ref-{cloud}.head")
    cmd = ["curl", "-sS", "-m", "5", "-o", bodyf, "-D", headf]
    for k, v in headers:
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://{ADDR}:{PORT}{path}")
    ns.enter()
    try:
        run(cmd)
    finally:
        enter_host_netns()
    with open(bodyf, "rb") as f:
        body = f.read()
    with open(headf, "rb") as f:
        head = f.read()
    status = int(head.split(b"\r\n", 1)[0].split()[1])
    return body, head, status


def aws_token(ns):
    raw = (f"PUT /latest/api/token HTTP/1.1\r\nHost: {ADDR}\r\n"
           "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n").encode()
    ns.enter()
    try:
        status, _, body = http_exchange(raw)
    finally:
        enter_host_netns()
    if status != 200:
        return None
    return body.decode().strip()


def run_contender(name, args, binary, reference, tmp, cpus_server, cpus_client, do_idle=True):
    """Runs one contender in a fresh namespace; returns its result dict (never raises)."""
    res = {"ok": False, "error": None, "clouds": {}}
    if name in ("up", "serve") and not binary:
        res["error"] = "no imds-tun binary"
        return res
    if name == "up":
        ok, text = has_subcommand(binary, "up")
        if not ok:
            first = next((l for l in text.splitlines() if l.startswith("error")), text[:200])
            res["error"] = f"`imds-tun up` is not available in this build ({first.strip()})"
            return res
    ctmp = tempfile.mkdtemp(prefix=name + "-", dir=tmp)
    os.chmod(ctmp, 0o755)
    hosts = os.path.join(ctmp, "hosts")
    shutil.copy("/etc/hosts", hosts)
    ns = None
    srv = None
    try:
        ns = Netns(f"{args.ns_prefix}-{name}-{os.path.basename(ctmp).split('-')[-1]}")
        ns.sysctl("net.ipv4.tcp_tw_reuse", 1)
        if name == "up":
            argv = [binary, "up"] + scratch_dirs(binary, "up", ctmp, os.path.join(tmp, "keys"))
        elif name == "serve":
            ns.add_loopback_alias()
            argv = [binary, "serve", "--listen", f"{ADDR}:{PORT}"] + scratch_dirs(
                binary, "serve", ctmp, os.path.join(tmp, "keys"))
        else:
            ns.add_loopback_alias()
            workers = "auto" if not args.pin else str(len(cpus_server))
            conf = nginx_setup(ctmp, reference, workers)
            nginx = find_exe("nginx")
            argv = [nginx, "-p", ctmp, "-e", os.path.join(ctmp, "nginx-error.log"), "-c", conf,
                    "-g", "daemon off; master_process on;"]
        res["argv"] = argv
        log(f"{name}: starting in namespace {ns.name}: {shlex.join(argv)}")
        srv = Server(ns, argv, hosts, cpus_server, os.path.join(ctmp, "server.log"))
        first_cloud = args.clouds[0]
        res["ready_ms"] = round(probe_ready(ns, srv, http_request_bytes(first_cloud), 10), 2)
        log(f"{name}: first answer after {res['ready_ms']} ms")
        for cloud in args.clouds:
            cres = {}
            res["clouds"][cloud] = cres
            try:
                extra = []
                if reference[cloud].get("needs_aws_token") and name != "nginx":
                    tok = aws_token(ns)
                    if tok:
                        extra = [("X-aws-ec2-metadata-token", tok)]
                raw = http_request_bytes(cloud, extra)
                ns.enter()
                try:
                    status, head, body = http_exchange(raw)
                finally:
                    enter_host_netns()
                cres["response"] = {
                    "status": status,
                    "head_bytes": len(head),
                    "body_bytes": len(body),
                    "response_bytes": len(head) + len(body),
                    "body_matches_reference": body == reference[cloud]["body"],
                }
                for mode, close in (("keepalive", False), ("close", True)):
                    log(f"{name}/{cloud}: {mode} for {args.duration} s")
                    cres[mode] = measure_mode(ns, srv, args, cloud, extra, close, cpus_client)
                    log(f"{name}/{cloud}: {mode}: {cres[mode]['rps']:.0f} req/s, "
                        f"p99 {cres[mode]['latency_us']['p99']:.0f} µs, "
                        f"socket errors {cres[mode]['socket_errors']}, non-2xx {cres[mode]['non_2xx']}")
            except Exception as e:  # one cloud failing must not hide the others
                cres["error"] = str(e)
                log(f"{name}/{cloud}: FAILED: {e}")
                if not srv.alive():
                    raise RuntimeError(f"server died: {e}")
        if args.idle_conns > 0 and do_idle:
            log(f"{name}: {args.idle_conns} idle keep-alive connections")
            try:
                res["idle"] = idle_connections(ns, srv, args, http_request_bytes(first_cloud),
                                               cpus_client, ctmp)
                log(f"{name}: VmHWM {res['idle']['vmhwm_mib']} MiB with "
                    f"{res['idle']['connections_held']} connections")
            except Exception as e:
                res["idle"] = {"error": str(e)}
                log(f"{name}: idle test FAILED: {e}")
        errs = [c.get("error") for c in res["clouds"].values() if c.get("error")]
        if errs:
            res["error"] = "; ".join(errs)
        else:
            res["ok"] = True
    except Exception as e:
        res["error"] = str(e)
        log(f"{name}: FAILED: {e}")
    finally:
        if srv:
            rc = srv.stop()
            res["exit_code_after_sigterm"] = rc
            if name == "up":
                ok, text = has_subcommand(binary, "down")
                if ok and "--state-dir" in text:
                    run([binary, "down", "--state-dir", os.path.join(ctmp, "state")],
                        check=False)
            res["log_tail"] = srv.log_tail(2000)
        if ns:
            ns.close()
    return res


def merge_rounds(runs):
    """One result from several rounds: per cloud and mode, the round with the highest req/s
    (so its latency and CPU figures come from that same run); every round's req/s is kept.
    The best, not the median: on a shared machine other load only ever slows a run down, so
    the fastest round is the least disturbed one. ready_ms is the median."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    out["rounds"] = len(runs)
    out["ok"] = all(r.get("ok") for r in runs)
    out["error"] = next((r["error"] for r in runs if r.get("error")), None)
    ready = sorted(r["ready_ms"] for r in runs if r.get("ready_ms") is not None)
    if ready:
        out["ready_ms"] = ready[(len(ready) - 1) // 2]
        out["ready_ms_rounds"] = [r.get("ready_ms") for r in runs]
    out["clouds"] = {}
    for cloud in runs[0].get("clouds", {}):
        merged = dict(runs[0]["clouds"][cloud])
        for mode in ("keepalive", "close"):
            cands = [r["clouds"][cloud][mode] for r in runs
                     if mode in r.get("clouds", {}).get(cloud, {})]
            if not cands:
                continue
            cands.sort(key=lambda m: m["rps"])
            best = dict(cands[-1])
            best["rps_rounds"] = [m["rps"] for m in cands]
            merged[mode] = best
        errs = [r["clouds"][cloud]["error"] for r in runs
                if r.get("clouds", {}).get(cloud, {}).get("error")]
        if errs:
            merged["error"] = errs[0]
        out["clouds"][cloud] = merged
    return out


# ---------------------------------------------------------------------------------------------
# Report.

def ratio(a, b):
    return round(a / b, 3) if a and b else None


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def compute_ratios(results, clouds):
    out = {}
    for cloud in clouds:
        n = results.get("nginx", {}).get("clouds", {}).get(cloud, {})
        for c in ("up", "serve"):
            r = results.get(c, {}).get("clouds", {}).get(cloud, {})
            for mode in ("keepalive", "close"):
                out.setdefault(cloud, {})[f"{mode}_{c}_vs_nginx"] = ratio(
                    get(r, mode, "rps"), get(n, mode, "rps"))
    return out


def evaluate_targets(results, ratios, clouds, contenders, idle_conns):
    lines = []

    def skipped(label, who):
        missing = [w for w in who if w not in contenders]
        if missing:
            lines.append({"target": label, "status": "SKIP", "values": None,
                          "detail": f"{', '.join(missing)} not in --contenders"})
            return True
        return False

    def per_cloud(key, minimum, label, who):
        if skipped(label, [who, "nginx"]):
            return
        vals = {c: ratios.get(c, {}).get(key) for c in clouds}
        missing = [c for c, v in vals.items() if v is None]
        why = results.get(who, {}).get("error")
        ok = not missing and all(v >= minimum for v in vals.values())
        detail = " ".join(f"{c} {v:.2f}×" if v is not None else f"{c} n/a" for c, v in vals.items())
        if missing and why:
            detail += f" ({who} not measured: {why[:120]})"
        lines.append({"target": label, "status": "PASS" if ok else "FAIL", "values": vals,
                      "detail": detail})

    per_cloud("keepalive_up_vs_nginx", TARGETS["keepalive_up_vs_nginx"],
              "keep-alive req/s: up >= 2.0x nginx", "up")
    per_cloud("close_up_vs_nginx", TARGETS["close_up_vs_nginx"],
              "new-connection req/s: up >= 1.5x nginx", "up")
    # p99 at 50 connections (keep-alive): up <= nginx
    vals = {}
    label = "keep-alive p99 at 50 connections: up <= nginx"
    for c in clouds:
        u = get(results, "up", "clouds", c, "keepalive", "latency_us", "p99")
        n = get(results, "nginx", "clouds", c, "keepalive", "latency_us", "p99")
        vals[c] = (u, n)
    ok = all(u is not None and n is not None and u <= n for u, n in vals.values())
    skip = skipped(label, ["up", "nginx"])
    detail = " ".join(f"{c} {u:.0f}/{n:.0f} µs" if u is not None and n is not None else f"{c} n/a"
                      for c, (u, n) in vals.items())
    if not ok and results.get("up", {}).get("error"):
        detail += f" (up: {results['up']['error'][:120]})"
    if not skip:
        lines.append({"target": label, "status": "PASS" if ok else "FAIL",
                      "values": {c: {"up": u, "nginx": n} for c, (u, n) in vals.items()},
                      "detail": detail})
    per_cloud("keepalive_serve_vs_nginx", 1.0, "keep-alive req/s: serve >= 1.0x nginx", "serve")
    per_cloud("close_serve_vs_nginx", 1.0, "new-connection req/s: serve >= 1.0x nginx", "serve")
    for who in ("up", "serve"):
        label = f"{who}: peak RSS <= 32 MiB at 10,000 idle connections"
        if skipped(label, [who]):
            continue
        if idle_conns == 0:
            lines.append({"target": label, "status": "SKIP", "values": None,
                          "detail": "--idle-conns 0"})
            continue
        rss = get(results, who, "idle", "vmhwm_mib")
        held = get(results, who, "idle", "connections_held")
        wanted = get(results, who, "idle", "connections_wanted")
        ok = rss is not None and rss <= 32.0 and held == wanted and wanted == 10000
        detail = (f"{rss} MiB with {held}/{wanted} connections" if rss is not None
                  else f"n/a ({results[who].get('error') or get(results, who, 'idle', 'error') or 'not measured'})")
        status = "PASS" if ok else "FAIL"
        if wanted is not None and wanted != 10000 and held == wanted:
            detail += " (--idle-conns is not the 10,000 of the target)"
            status = "SKIP"
        lines.append({"target": label, "status": status, "values": rss, "detail": detail})
    r = get(results, "up", "ready_ms")
    if skipped("up: first answer <= 100 ms after start", ["up"]):
        return lines
    lines.append({"target": "up: first answer <= 100 ms after start",
                  "status": "PASS" if r is not None and r <= 100 else "FAIL", "values": r,
                  "detail": f"{r} ms" if r is not None else
                  f"n/a ({get(results, 'up', 'error') or 'not measured'})"})
    return lines


def fmt(v, spec="{:.0f}", none="-"):
    return none if v is None else spec.format(v)


def render_table(doc):
    out = []
    s = doc["settings"]
    out.append(f"imds-tun bench  {doc['date']}  Linux {doc['host']['kernel']}  "
               f"{doc['host']['nproc']} CPUs  ({doc['host']['cpu_model']})")
    out.append(f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, "
               f"{s.get('rounds', 1)} round(s) (best); pinning: "
               f"{s['pinning']}; load average at start {doc['host']['loadavg_start']}")
    out.append("")
    hdr = ("cloud", "contender", "keep-alive/s", "x nginx", "new-conn/s", "x nginx",
           "p50 us", "p99 us", "p99.9 us", "srv CPU s/100k ka|nc", "wrk CPU s/100k ka|nc",
           "resp B", "sock err ka|nc")
    rows = [hdr]
    for cloud in s["clouds"]:
        for c in s["contenders"]:
            r = doc["results"].get(c, {})
            cr = r.get("clouds", {}).get(cloud)
            if not cr or ("keepalive" not in cr and "error" in cr) or (not cr and r.get("error")):
                why = (cr or {}).get("error") or r.get("error") or "not run"
                rows.append((cloud, c, "FAILED: " + why.replace("\n", " ")[:100]))
                continue
            ka, nc = cr.get("keepalive", {}), cr.get("close", {})
            rat = doc["ratios"].get(cloud, {})
            resp = cr.get("response", {})
            size = f"{resp.get('head_bytes')}+{resp.get('body_bytes')}"
            if resp and not resp.get("body_matches_reference"):
                size += " (body differs!)"
            if resp and resp.get("status") != 200:
                size += f" [{resp.get('status')}]"
            rows.append((
                cloud, c, fmt(ka.get("rps")),
                fmt(rat.get(f"keepalive_{c}_vs_nginx"), "{:.2f}") if c != "nginx" else "1.00",
                fmt(nc.get("rps")),
                fmt(rat.get(f"close_{c}_vs_nginx"), "{:.2f}") if c != "nginx" else "1.00",
                fmt(get(ka, "latency_us", "p50")), fmt(get(ka, "latency_us", "p99")),
                fmt(get(ka, "latency_us", "p999")),
                f"{fmt(ka.get('server_cpu_s_per_100k'), '{:.2f}')}|{fmt(nc.get('server_cpu_s_per_100k'), '{:.2f}')}",
                f"{fmt(ka.get('wrk_cpu_s_per_100k'), '{:.2f}')}|{fmt(nc.get('wrk_cpu_s_per_100k'), '{:.2f}')}",
                size,
                f"{fmt(ka.get('socket_errors'))}|{fmt(nc.get('socket_errors'))}",
            ))
    out += table(rows)
    out.append("")
    rows = [("contender", "ready ms", "idle conns held", "peak RSS MiB (VmHWM)", "PSS MiB",
             "procs", "status")]
    for c in s["contenders"]:
        r = doc["results"].get(c, {})
        idle = r.get("idle") or {}
        rows.append((c, fmt(r.get("ready_ms"), "{:.1f}"),
                     f"{idle.get('connections_held', '-')}/{idle.get('connections_wanted', '-')}",
                     fmt(idle.get("vmhwm_mib"), "{:.1f}"),
                     fmt(idle["pss_kib"] / 1024 if idle.get("pss_kib") else None, "{:.1f}"),
                     fmt(idle.get("processes")),
                     "ok" if r.get("ok") else "FAILED: " + (r.get("error") or idle.get("error") or "")[:90]))
    out += table(rows, left=1)
    notes = []
    for cloud, ref in doc["reference"].items():
        if ref.get("status") != 200:
            notes.append(f"imds-tun answers {cloud} with status {ref.get('status')} "
                         f"({ref.get('body_bytes')} B body); nginx serves those bytes with 200")
    if notes:
        out.append("")
        out += ["note: " + n for n in notes]
    out.append("resp B = head+body bytes of one answer; srv CPU = server utime+stime; "
               "ka = keep-alive, nc = new connection per request")
    out.append("")
    out.append("targets (measured ratios; reported, never asserted):")
    for t in doc["targets"]:
        out.append(f"  {t['status']}  {t['target']}: {t['detail']}")
    return "\n".join(out)


def render_svg(doc):
    """A grouped bar chart (req/s per cloud and contender, keep-alive and new connection) as
    SVG: standard library only, opens in any browser."""
    s = doc["settings"]
    colors = {"up": "#1b7837", "serve": "#2166ac", "nginx": "#b2182b"}
    panels = [("keepalive", "keep-alive req/s (wrk -t1 -c50)"),
              ("close", "new connection per request, req/s")]
    bw, gap, ph, top, left = 26, 30, 220, 40, 60
    group_w = bw * len(s["contenders"]) + gap
    pw = left + group_w * len(s["clouds"]) + 20
    width, height = pw * len(panels) + 20, top + ph + 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="14">imds-tun bench {doc["date"]} — '
           f'{doc["host"]["nproc"]} CPUs, Linux {doc["host"]["kernel"]}, {s["duration"]} s runs, '
           f'{s.get("rounds", 1)} round(s)</text>']
    for pi, (mode, title) in enumerate(panels):
        x0 = 10 + pi * pw
        vals = [get(doc["results"], c, "clouds", cl, mode, "rps") or 0
                for cl in s["clouds"] for c in s["contenders"]]
        vmax = max(vals + [1]) * 1.1
        out.append(f'<text x="{x0 + left}" y="{top - 6}">{title}</text>')
        out.append(f'<line x1="{x0 + left - 4}" y1="{top + ph}" x2="{x0 + pw - 10}" '
                   f'y2="{top + ph}" stroke="black"/>')
        for t in range(5):
            v = vmax * t / 4
            y = top + ph - ph * t / 4
            out.append(f'<text x="{x0 + left - 8}" y="{y + 4:.0f}" text-anchor="end">'
                       f'{v / 1000:.0f}k</text>')
        for gi, cl in enumerate(s["clouds"]):
            gx = x0 + left + gi * group_w
            for ci, c in enumerate(s["contenders"]):
                v = get(doc["results"], c, "clouds", cl, mode, "rps")
                x = gx + ci * bw
                if v:
                    h = ph * v / vmax
                    out.append(f'<rect x="{x}" y="{top + ph - h:.1f}" width="{bw - 3}" '
                               f'height="{h:.1f}" fill="{colors.get(c, "gray")}"/>')
                    out.append(f'<text x="{x + (bw - 3) / 2:.1f}" y="{top + ph - h - 3:.1f}" '
                               f'font-size="9" text-anchor="middle">{v / 1000:.0f}k</text>')
                else:
                    out.append(f'<text x="{x + (bw - 3) / 2:.1f}" y="{top + ph - 3}" '
                               f'font-size="9" text-anchor="middle">n/a</text>')
            out.append(f'<text x="{gx + (group_w - gap) / 2:.0f}" y="{top + ph + 16}" '
                       f'text-anchor="middle">{cl}</text>')
    for ci, c in enumerate(s["contenders"]):
        x = 10 + left + ci * 90
        out.append(f'<rect x="{x}" y="{top + ph + 40}" width="12" height="12" '
                   f'fill="{colors.get(c, "gray")}"/>')
        out.append(f'<text x="{x + 16}" y="{top + ph + 50}">{c}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(rows, left=2):
    widths = {}
    for r in rows:
        if len(r) == len(rows[0]):
            for i, cell in enumerate(r):
                widths[i] = max(widths.get(i, 0), len(str(cell)))
    lines = []
    for r in rows:
        if len(r) == len(rows[0]):
            lines.append("  ".join(str(c).ljust(widths[i]) if i < left or i == len(r) - 1 and
                                   left == 1 else str(c).rjust(widths[i])
                                   for i, c in enumerate(r)).rstrip())
        else:  # a failure row: first columns, then the reason
            lines.append("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r[:2])) + "  " +
                         " ".join(r[2:]))
    if lines:
        lines.insert(1, "-" * max(len(line) for line in lines[:1]))
    return lines


# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="imds-tun up (TUN + own TCP) vs serve (kernel TCP) vs nginx on a loopback "
                    "alias, each in a fresh network namespace. Needs root.")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per wrk run (default 10; --quick: 1)")
    ap.add_argument("--clouds", default="azure,gce,aws", help="comma list of azure,gce,aws")
    ap.add_argument("--contenders", default="up,serve,nginx", help="comma list of up,serve,nginx")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every contender this many times (fresh namespace each, order "
                         "rotated) and report the best round per measurement (default 1)")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--idle-conns", type=int, default=None,
                    help="idle keep-alive connections for the RSS test (default 10000; "
                         "--quick: 1000; 0 skips it)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 s per wrk run, 1000 idle connections")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the server and the load generator to separate CPUs")
    ap.add_argument("--bin", help="use this imds-tun binary instead of cargo build --release")
    ap.add_argument("--render", metavar="JSON",
                    help="only print the table of an earlier run's JSON and write its chart "
                         "(no root, nothing run)")
    ap.add_argument("--out", default=None,
                    help="JSON results file (default bench/results/latest.json; --quick: "
                         "bench/out/quick.json, git-ignored)")
    args = ap.parse_args(argv)
    if args.quick:
        if "--duration" not in " ".join(argv):
            args.duration = 1.0
        if args.idle_conns is None:
            args.idle_conns = 1000
    if args.idle_conns is None:
        args.idle_conns = 10000
    if args.out is None:
        args.out = os.path.join(BENCH_DIR, *(("out", "quick.json") if args.quick
                                             else ("results", "latest.json")))
    args.clouds = [c for c in args.clouds.split(",") if c]
    args.contenders = [c for c in args.contenders.split(",") if c]
    for c in args.clouds:
        if c not in CLOUDS:
            ap.error(f"unknown cloud {c!r} (azure, gce, aws)")
    for c in args.contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r} (up, serve, nginx)")
    if not args.clouds or not args.contenders:
        ap.error("need at least one cloud and one contender")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.duration < 1:
        ap.error("--duration must be at least 1 second")
    args.duration = int(round(args.duration))
    args.ns_prefix = f"imdsbench-{os.getpid()}"
    return args


def cpu_plan(pin):
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None, "none (all CPUs shared by server and wrk)"
    server, client = set(cpus[:-1]), {cpus[-1]}
    return server, client, (f"server on CPU {','.join(map(str, sorted(server)))}, "
                            f"wrk and clients on CPU {cpus[-1]}")


def main(argv):
    global HOST_NETNS_FD
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            doc = json.load(f)
        svg = os.path.splitext(args.render)[0] + ".svg"
        with open(svg, "w") as f:
            f.write(render_svg(doc))
        print(render_table(doc))
        print(f"\nchart: {svg}")
        return 0
    if os.geteuid() != 0:
        print("bench/run needs root (network namespaces, a TUN device): sudo bench/run",
              file=sys.stderr)
        return 2
    HOST_NETNS_FD = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    # Enough descriptors for 10,000 connections, inherited by the servers and the clients.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, args.idle_conns + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError) as e:
        log(f"cannot raise RLIMIT_NOFILE to {want}: {e}")

    cpus_server, cpus_client, pinning = cpu_plan(args.pin)
    if cpus_client:
        os.sched_setaffinity(0, cpus_client)  # this script's probes and clients stay off the server's CPU

    ensure_tools("nginx" in args.contenders)
    binary = args.bin
    build_error = None
    if binary:
        binary = os.path.abspath(binary)
    else:
        try:
            binary = build_imds_tun()
        except Exception as e:
            build_error = str(e)
            binary = None

    tmp = tempfile.mkdtemp(prefix="imds-tun-bench-")
    os.chmod(tmp, 0o755)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    reference = {}
    try:
        if not binary:
            raise RuntimeError(f"no imds-tun binary: {build_error}")
        reference = fetch_reference(args, binary, tmp, cpus_server)
        for cloud, ref in reference.items():
            log(f"reference {cloud}: status {ref['status']}, body {ref['body_bytes']} B "
                f"(sha256 {ref['body_sha256'][:12]})")
            if ref["status"] != 200:
                log(f"warning: imds-tun serve answers {cloud} with status {ref['status']}; "
                    "nginx serves the same body with 200")
        rounds = {name: [] for name in args.contenders}
        for rnd in range(args.rounds):
            # Rotate the order each round so that no contender always runs first or last
            # while the machine's background load drifts.
            order = args.contenders[rnd % len(args.contenders):] + \
                args.contenders[:rnd % len(args.contenders)]
            for name in order:
                if args.rounds > 1:
                    log(f"round {rnd + 1}/{args.rounds}: {name}")
                if rounds[name] and rounds[name][0].get("error") and \
                        not rounds[name][0].get("clouds"):
                    continue  # it could not start at all; once is enough
                rounds[name].append(run_contender(name, args, binary, reference, tmp,
                                                  cpus_server, cpus_client, do_idle=rnd == 0))
        for name in args.contenders:
            results[name] = merge_rounds(rounds[name])
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        cleanup_all()
        return 130
    except Exception as e:
        log(f"FAILED: {e}")
        for name in args.contenders:
            results.setdefault(name, {"ok": False, "error": str(e), "clouds": {}})
    finally:
        cleanup_all()
        shutil.rmtree(tmp, ignore_errors=True)

    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])
    doc = {
        "schema": "imds-tun-bench/1",
        "command": " ".join(["bench/run"] + [shlex.quote(a) for a in argv]),
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {
            "kernel": platform.release(),
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_start": LOAD_START,
            "loadavg_end": load_end,
        },
        "versions": versions(binary),
        "settings": {
            "duration": args.duration, "rounds": args.rounds, "threads": args.threads,
            "connections": args.connections, "idle_connections": args.idle_conns,
            "clouds": args.clouds, "contenders": args.contenders,
            "pinning": pinning, "address": f"{ADDR}:{PORT}",
            "sysctls_in_namespace": {"net.ipv4.tcp_tw_reuse": 1},
            "binary": binary,
        },
        "requests": {c: {"path": CLOUDS[c][0], "headers": dict(CLOUDS[c][1])} for c in args.clouds},
        "reference": {c: {k: v for k, v in r.items() if k != "body"} for c, r in reference.items()},
        "results": results,
    }
    doc["ratios"] = compute_ratios(results, args.clouds)
    doc["targets"] = evaluate_targets(results, doc["ratios"], args.clouds, args.contenders,
                                      args.idle_conns)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    svg = os.path.splitext(args.out)[0] + ".svg"
    with open(svg, "w") as f:
        f.write(render_svg(doc))
    print(render_table(doc))
    print(f"\nJSON: {args.out}\nchart: {svg}")
    failed = [c for c in args.contenders if not results.get(c, {}).get("ok")]
    if failed:
        print(f"contenders that did not complete: {', '.join(failed)}")
        return 1
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


with open("/proc/loadavg") as _f:
    LOAD_START = " ".join(_f.read().split()[:3])

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        cleanup_all()
