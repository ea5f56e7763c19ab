//! `imds-tun ctl` against a running instance, observed with real clients: curl, Python's
//! requests running Google's documented metadata watch loop, and plain sockets for a thousand
//! concurrent hanging GETs. `serve --ctl` on loopback, and `up` inside a test host (a network
//! namespace, never the machine's own), where `ctl event` and `ctl fault` are also seen by
//! curl through the TUN (tests/live.rs drives them with the SDKs on `serve`).
//!
//! The control socket must be 0600 and owned by the user running the server (root in CI);
//! `up` runs only as root, so its tests fail (never skip) without root.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::netns::{Shape, TestHost};
use support::up::Up;
use support::{monotonic_secs, rss_kib, Server};

/// The tests of this file run one at a time: two of them time latencies, and one loads the
/// machine with a thousand connections.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A scratch directory under the target directory, fresh for each test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A copy of the embedded default configuration with AWS instance tags on, at `dir/config.json`.
fn config_in(dir: &Path) -> PathBuf {
    let mut doc: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    doc["aws"]["tags"]["enabled"] = true.into();
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ctl: {e}"))
}

/// Runs `ctl`, expects success, returns its stdout.
fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ctl`, expects exit 1 and exactly one line on stderr; returns it.
fn ctl_err(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert_eq!(out.status.code(), Some(1), "ctl {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    err.trim_end().to_string()
}

/// `curl -s` with the given arguments; the body (with `-w '%{http_code}'` appended: the status
/// last).
fn curl(args: &[&str]) -> (String, u16) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (body.to_string(), code.parse().unwrap_or(0))
}

fn gce(addr: &str, path: &str) -> (String, u16) {
    curl(&[
        "-H",
        "Metadata-Flavor: Google",
        &format!("http://{addr}/computeMetadata/v1/{path}"),
    ])
}

fn status_json(socket: &Path) -> serde_json::Value {
    let text = ctl_ok(socket, &["--json", "status"]);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["result"].clone()
}

fn assert_socket_private(socket: &Path, owner: u32) {
    let meta = std::fs::metadata(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "socket mode");
    assert_eq!(meta.uid(), owner, "socket owner");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
}

#[test]
fn ctl_edits_reloads_and_reports_on_serve() {
    let _serial = one_at_a_time();
    let dir = scratch("serve");
    let config = config_in(&dir);
    let socket = dir.join("ctl.sock");
    let server = Server::start_with(Some(&config), ["--ctl".as_ref(), socket.as_os_str()]);
    let addr = server.addr.clone();
    // SAFETY: geteuid has no preconditions.
    assert_socket_private(&socket, unsafe { libc::geteuid() });

    // GCE attribute: set, read back through the socket and through HTTP, delete.
    assert_eq!(gce(&addr, "instance/attributes/role").1, 404);
    assert_eq!(
        ctl_ok(&socket, &["set", "gce", "instance/attributes/role=web"]),
        "web\n"
    );
    assert_eq!(gce(&addr, "instance/attributes/role"), ("web".into(), 200));
    assert_eq!(
        ctl_ok(&socket, &["get", "gce", "instance/attributes/role"]),
        "web\n"
    );
    ctl_ok(&socket, &["set", "gce", "instance/tags", "a,b"]);
    assert_eq!(gce(&addr, "instance/tags?alt=text"), ("a\nb\n".into(), 200));
    assert_eq!(
        ctl_ok(&socket, &["delete", "gce", "instance/attributes/role"]),
        "deleted\n"
    );
    assert_eq!(gce(&addr, "instance/attributes/role").1, 404);

    // AWS instance tag, read with IMDSv2 as the SDKs do.
    ctl_ok(&socket, &["set", "aws", "tags/instance/Name=web-1"]);
    let (token, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        &format!("http://{addr}/latest/api/token"),
    ]);
    let (name, code) = curl(&[
        "-H",
        &format!("X-aws-ec2-metadata-token: {token}"),
        &format!("http://{addr}/latest/meta-data/tags/instance/Name"),
    ]);
    assert_eq!((name.as_str(), code), ("web-1", 200));

    // Azure tags: tagsList set as JSON; IMDS derives the `tags` string from it.
    ctl_ok(
        &socket,
        &[
            "set",
            "azure",
            "compute/tagsList",
            r#"[{"name":"team","value":"blue"}]"#,
        ],
    );
    let (tags, code) = curl(&[
        "-H",
        "Metadata: true",
        &format!("http://{addr}/metadata/instance/compute/tags?api-version=2021-02-01&format=text"),
    ]);
    assert_eq!((tags.as_str(), code), ("team:blue", 200));

    // An invalid edit: the exact validation error, nothing changed.
    let (zone, _) = gce(&addr, "instance/zone");
    let err = ctl_err(&socket, &["set", "gce", "instance/zone=us-central1-a"]);
    assert_eq!(
        err,
        "imds-tun: edit: nothing changed: $.gce.instance.zone: projects/<numeric-project-id>/zones/<name>"
    );
    assert_eq!(gce(&addr, "instance/zone"), (zone.clone(), 200));
    let err = ctl_err(
        &socket,
        &["set", "gce", "instance/service-accounts/default/email=x"],
    );
    assert!(
        err.contains("not editable; editable are instance/attributes/KEY"),
        "{err}"
    );
    let err = ctl_err(&socket, &["--json", "set", "gce", "instance/zone=bad"]);
    assert!(err.contains("nothing changed"), "{err}");

    // --persist writes the file atomically, keeping its mode; a restart serves the edit.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|e| panic!("{e}"));
    ctl_ok(
        &socket,
        &["set", "--persist", "gce", "project/attributes/env=staging"],
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written["gce"]["project"]["attributes"]["env"], "staging");
    assert_eq!(
        written["aws"]["tags"]["instance"]["Name"], "web-1",
        "earlier edits persist too"
    );
    let meta = std::fs::metadata(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);

    // Reload: the file's state comes back; an invalid file changes nothing.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap_or_default()
            .replace("\"env\": \"staging\"", "\"env\": \"prod\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ctl_ok(&socket, &["reload"]).starts_with("reloaded "));
    assert_eq!(gce(&addr, "project/attributes/env"), ("prod".into(), 200));
    let good = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        good.replace("\"env\": \"prod\"", "\"env\": 7, \"x\": {\"y\": [1]}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = ctl_err(&socket, &["reload"]);
    assert!(
        err.starts_with("imds-tun: reload: nothing changed: $.gce.project.attributes"),
        "{err}"
    );
    assert_eq!(gce(&addr, "project/attributes/env"), ("prod".into(), 200));
    std::fs::write(&config, &good).unwrap_or_else(|e| panic!("{e}"));

    // Status counts what was asked.
    let (_, code) = gce(&addr, "instance/service-accounts/default/token");
    assert_eq!(code, 200);
    let s = status_json(&socket);
    assert_eq!(s["mode"], "serve");
    assert!(s["requests"]["gce"].as_u64().unwrap_or(0) >= 8, "{s}");
    assert!(s["requests"]["aws"].as_u64().unwrap_or(0) >= 2, "{s}");
    assert!(s["requests"]["azure"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["tokens_issued"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(ctl_ok(&socket, &["status"]).contains("requests: azure "));

    // A restart on the persisted file serves the edit.
    assert!(server.terminate().success());
    assert!(!socket.exists(), "the socket is removed on exit");
    let server = Server::start_with(Some(&config), ["--ctl".as_ref(), socket.as_os_str()]);
    assert_eq!(
        gce(&server.addr, "project/attributes/env"),
        ("prod".into(), 200)
    );
    assert_eq!(gce(&server.addr, "instance/zone"), (zone, 200));
    drop(server);

    // On the embedded default there is no file to write.
    let server = Server::start_with(None, ["--ctl".as_ref(), socket.as_os_str()]);
    let err = ctl_err(
        &socket,
        &["set", "--persist", "gce", "instance/attributes/a=b"],
    );
    assert!(err.contains("running on the embedded default"), "{err}");
    assert_eq!(gce(&server.addr, "instance/attributes/a").1, 404);
}

/// Google's watch loop, running: its stdout lines are `<monotonic seconds> <value>`.
struct Watch {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Watch {
    fn start(mut cmd: Command, base: &str, path: &str) -> Watch {
        let script = format!("{}/tests/sdk/gce_watch.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = cmd
            .arg(script)
            .arg(base)
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the watch script: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        Watch {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    fn next(&mut self) -> (f64, String) {
        let line = self
            .lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the watch script ended"));
        let (t, value) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        (
            t.parse().unwrap_or_else(|e| panic!("{e}: {line:?}")),
            value.to_string(),
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the watched attribute `rounds` times and returns each latency from just before
/// `ctl set` starts to the watch loop's receipt of the new value, in milliseconds.
fn watch_latencies(watch: &mut Watch, set: impl Fn(&str), rounds: usize) -> Vec<f64> {
    let (_, first) = watch.next();
    assert_eq!(first, "v0", "the first answer is the current value");
    (1..=rounds)
        .map(|i| {
            // Let the loop park its next hanging GET first.
            std::thread::sleep(Duration::from_millis(150));
            let value = format!("v{i}");
            let before = monotonic_secs();
            set(&value);
            let (at, got) = watch.next();
            assert_eq!(got, value);
            (at - before) * 1000.0
        })
        .collect()
}

#[test]
fn watch_loop_sees_a_ctl_set_within_100_ms_on_serve() {
    let _serial = one_at_a_time();
    let dir = scratch("watch");
    let config = config_in(&dir);
    let socket = dir.join("ctl.sock");
    let server = Server::start_with(Some(&config), ["--ctl".as_ref(), socket.as_os_str()]);
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=v0"]);
    let mut cmd = Command::new(support::python());
    cmd.env_clear();
    let mut watch = Watch::start(
        cmd,
        &format!("http://{}", server.addr),
        "instance/attributes/role",
    );
    let set = |v: &str| {
        ctl_ok(
            &socket,
            &["set", "gce", &format!("instance/attributes/role={v}")],
        );
    };
    let ms = watch_latencies(&mut watch, set, 5);
    eprintln!("serve: ctl set -> watch loop, ms: {ms:.1?}");
    assert!(
        ms.iter().all(|m| *m < 100.0),
        "latencies over 100 ms: {ms:?}"
    );
    // Another attribute changing does not answer the watcher (its ETag is unchanged): the
    // next value it sees is its own.
    std::thread::sleep(Duration::from_millis(150));
    ctl_ok(&socket, &["set", "gce", "instance/attributes/other=x"]);
    std::thread::sleep(Duration::from_millis(150));
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=after"]);
    assert_eq!(watch.next().1, "after");
}

/// Parks `count` hanging GETs through `script` (already running, printing `sent N`), checks
/// with `ctl status` that all are parked, measures the server's RSS growth, then answers them
/// all with one `ctl set`. Returns the growth in KiB.
fn thousand_hanging_gets(
    mut script: Child,
    count: usize,
    pid: u32,
    socket: &Path,
    baseline_kib: u64,
) -> u64 {
    let stdout = script.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let sent = lines.next().unwrap_or_default();
    assert_eq!(sent, format!("sent {count}"));
    let start = Instant::now();
    loop {
        let parked = status_json(socket)["requests_parked"].as_u64().unwrap_or(0);
        if parked == count as u64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {parked} of {count} hanging GETs parked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = rss_kib(pid).saturating_sub(baseline_kib);
    ctl_ok(socket, &["set", "gce", "instance/attributes/role=changed"]);
    let rest: Vec<String> = lines.collect();
    let _ = script.wait();
    assert_eq!(
        rest,
        [
            format!("answered {count} 200 changed"),
            "unanswered 0".to_string(),
            "done".to_string()
        ],
        "every hanging GET gets the new value"
    );
    grown
}

#[test]
fn a_thousand_hanging_gets_cost_under_10_mib_on_serve() {
    let _serial = one_at_a_time();
    const COUNT: usize = 1000;
    let dir = scratch("many-serve");
    let config = config_in(&dir);
    let socket = dir.join("ctl.sock");
    let server = Server::start_with(Some(&config), ["--ctl".as_ref(), socket.as_os_str()]);
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=start"]);
    let (_, code) = gce(&server.addr, "instance/attributes/role");
    assert_eq!(code, 200);
    let etag = etag_of(&server.addr, "instance/attributes/role");
    let (host, port) = server.addr.split_once(':').unwrap_or_default();
    let baseline = rss_kib(server.pid());
    let script = Command::new(support::python())
        .arg(format!(
            "{}/tests/sdk/hanging_gets.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            host,
            port,
            &COUNT.to_string(),
            "instance/attributes/role",
            &etag,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let grown = thousand_hanging_gets(script, COUNT, server.pid(), &socket, baseline);
    eprintln!("serve: {COUNT} parked hanging GETs grew RSS by {grown} KiB");
    assert!(grown < 10 * 1024, "{COUNT} hanging GETs cost {grown} KiB");
}

fn etag_of(addr: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Metadata-Flavor: Google",
        ])
        .arg(format!("http://{addr}/computeMetadata/v1/{path}"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").map(|e| e.trim().to_string()))
        .unwrap_or_else(|| panic!("no ETag"))
}

#[test]
fn ctl_and_hanging_gets_on_up_in_a_test_host() {
    let _serial = one_at_a_time();
    const COUNT: usize = 1000;
    let host = TestHost::new(Shape::LoopbackOnly);
    let config = config_in(host.dir());
    let state = host.dir().join("state");
    let socket = state.join("ctl.sock");
    let up = Up::start(
        &host,
        [
            "--config".as_ref(),
            config.as_os_str(),
            "--threads".as_ref(),
            "1".as_ref(),
        ],
    );
    assert_socket_private(&socket, 0);
    let pid = up.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "imds-tun", "the child is up itself");

    // An edit seen by curl inside the host, at the metadata address and name.
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=v0"]);
    let role = host.sh(
        "curl -sS -m 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/role",
    );
    assert_eq!(role, "v0");
    // The default socket path is found from --state-dir.
    let out = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["ctl", "--state-dir"])
        .arg(&state)
        .args(["get", "gce", "instance/attributes/role"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v0\n");

    // Google's watch loop inside the host, through the TUN and our TCP.
    let mut watch = Watch::start(
        host.command(support::python()),
        "http://metadata.google.internal",
        "instance/attributes/role",
    );
    let set = |v: &str| {
        ctl_ok(
            &socket,
            &["set", "gce", &format!("instance/attributes/role={v}")],
        );
    };
    let ms = watch_latencies(&mut watch, set, 5);
    eprintln!("up: ctl set -> watch loop, ms: {ms:.1?}");
    assert!(
        ms.iter().all(|m| *m < 100.0),
        "latencies over 100 ms: {ms:?}"
    );
    drop(watch);

    // A thousand hanging GETs: parked connection state, not threads.
    set("start");
    let etag = host
        .sh("curl -sS -m 5 -D - -o /dev/null -H Metadata-Flavor:Google http://169.254.169.254/computeMetadata/v1/instance/attributes/role")
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").map(|e| e.trim().to_string()))
        .unwrap_or_else(|| panic!("no ETag"));
    let baseline = rss_kib(pid);
    let script = host
        .command(support::python())
        .arg(format!(
            "{}/tests/sdk/hanging_gets.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            "169.254.169.254",
            "80",
            &COUNT.to_string(),
            "instance/attributes/role",
            &etag,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let grown = thousand_hanging_gets(script, COUNT, pid, &socket, baseline);
    eprintln!("up: {COUNT} parked hanging GETs grew RSS by {grown} KiB");
    assert!(grown < 10 * 1024, "{COUNT} hanging GETs cost {grown} KiB");

    // Pipelined hanging GETs through our TCP: each waits its own timeout.
    let times = pipelined_wait_times(host.command(support::python()), "169.254.169.254", "80");
    eprintln!("up: pipelined hanging GETs answered after {times:?} s");
    assert_each_waits_its_own_timeout(&times);

    let s = status_json(&socket);
    assert_eq!(s["mode"], "up");
    assert!(
        s["requests"]["gce"].as_u64().unwrap_or(0) >= COUNT as u64,
        "{s}"
    );

    // SIGTERM: the socket goes with everything else.
    up.signal(libc::SIGTERM);
    let status = up.wait(Duration::from_secs(10));
    assert!(status.success());
    assert!(!socket.exists(), "the control socket is removed on exit");
}

/// `curl` inside `host` with `args`; (body, status), the status last as `-w` writes it.
fn host_curl(host: &TestHost, args: &str) -> (String, u16) {
    let text = host.sh(&format!("curl -sS -m 5 -w '\\n%{{http_code}}' {args}"));
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (body.to_string(), code.trim().parse().unwrap_or(0))
}

#[test]
fn ctl_events_and_faults_on_up_in_a_test_host() {
    let _serial = one_at_a_time();
    let host = TestHost::new(Shape::LoopbackOnly);
    let socket = host.dir().join("state").join("ctl.sock");
    let up = Up::start(&host, ["--threads", "1"]);

    // A hanging GET on maintenance-event inside the host, through the TUN, woken by ctl.
    let url = "http://metadata.google.internal/computeMetadata/v1/instance/maintenance-event";
    let etag = host
        .sh(&format!(
            "curl -sS -m 5 -D - -o /dev/null -H Metadata-Flavor:Google {url}"
        ))
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").map(|e| e.trim().to_string()))
        .unwrap_or_else(|| panic!("no ETag"));
    let mut watch = host
        .command("curl")
        .args(["-sS", "-m", "20", "-H", "Metadata-Flavor: Google"])
        .arg(format!(
            "{url}?wait_for_change=true&last_etag={etag}&timeout_sec=15"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        watch.try_wait().unwrap_or(None).is_none(),
        "the hanging GET answered before any change"
    );
    let asked = Instant::now();
    ctl_ok(
        &socket,
        &[
            "event",
            "gce",
            "--maintenance",
            "MIGRATE_ON_HOST_MAINTENANCE",
        ],
    );
    let mut value = String::new();
    if let Some(out) = watch.stdout.as_mut() {
        std::io::Read::read_to_string(out, &mut value).unwrap_or_else(|e| panic!("{e}"));
    }
    let woke = asked.elapsed();
    let _ = watch.wait();
    assert_eq!(value, "MIGRATE_ON_HOST_MAINTENANCE");
    eprintln!("up: ctl event gce -> hanging GET answered in {woke:?}");
    assert!(woke < Duration::from_secs(1), "woken after {woke:?}");

    // A spot notice through IMDSv2, then cancelled.
    let spot = "-H \"X-aws-ec2-metadata-token: $(curl -sS -m 5 -X PUT \
                -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)\" \
                http://169.254.169.254/latest/meta-data/spot/instance-action";
    assert_eq!(host_curl(&host, spot).1, 404);
    ctl_ok(
        &socket,
        &["event", "aws", "--spot", "terminate", "--in", "2m"],
    );
    let (body, code) = host_curl(&host, spot);
    assert_eq!(code, 200);
    assert!(body.starts_with("{\"action\": \"terminate\""), "{body}");
    ctl_ok(&socket, &["event", "cancel", "spot"]);
    assert_eq!(host_curl(&host, spot).1, 404);

    // One injected 500, then normal service.
    ctl_ok(
        &socket,
        &[
            "fault",
            "add",
            "aws",
            "/latest/meta-data/instance-id",
            "--status",
            "500",
            "--count",
            "1",
        ],
    );
    let id = "http://169.254.169.254/latest/meta-data/instance-id";
    assert_eq!(host_curl(&host, id).1, 500);
    assert_eq!(host_curl(&host, id).1, 200);
    let s = status_json(&socket);
    assert_eq!(
        (s["faults_injected"].as_u64(), s["fault_rules"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    assert_eq!(s["events_current"].as_u64(), Some(1), "the GCE value: {s}");

    up.signal(libc::SIGTERM);
    assert!(up.wait(Duration::from_secs(10)).success());
}

/// Polls `ctl status` until `done` accepts it (at most 5 s: the counts of a response are
/// recorded just after it is written); returns the last one.
fn status_when(socket: &Path, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status_json(socket);
        if done(&s) || start.elapsed() > Duration::from_secs(5) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ctl status` counts exactly what was asked, read from the metrics registry: requests per
/// cloud (a token door's and an unparsable request included), AWS credentials as tokens
/// issued, an open connection and a parked hanging GET while they last.
#[test]
fn ctl_status_counts_exactly_on_serve() {
    let _serial = one_at_a_time();
    let dir = scratch("status");
    let socket = dir.join("ctl.sock");
    let server = Server::start_with(None, ["--ctl".as_ref(), socket.as_os_str()]);
    let addr = server.addr.clone();
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=web"]);
    let zero = serde_json::json!({"azure": 0, "gce": 0, "aws": 0, "other": 0});
    let s = status_json(&socket);
    assert_eq!(s["requests"], zero, "{s}");
    assert_eq!(s["tokens_issued"], 0, "{s}");

    let azure = format!("http://{addr}/metadata/instance?api-version=2021-02-01");
    for _ in 0..2 {
        assert_eq!(curl(&["-H", "Metadata: true", &azure]).1, 200);
    }
    assert_eq!(gce(&addr, "instance/id").1, 200);
    let creds =
        format!("http://{addr}/latest/meta-data/iam/security-credentials/imds-tun-demo-role");
    let (body, code) = curl(&[&creds]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"AccessKeyId\""), "{body}");
    assert_eq!(curl(&[&format!("http://{addr}/favicon.ico")]).1, 404);
    let expected = serde_json::json!({"azure": 2, "gce": 1, "aws": 1, "other": 1});
    let s = status_when(&socket, |s| {
        s["requests"] == expected && s["connections_open"] == 0
    });
    assert_eq!(s["requests"], expected, "{s}");
    assert_eq!(s["connections_open"], 0, "{s}");
    assert_eq!(s["requests_parked"], 0, "{s}");
    assert_eq!(s["tokens_issued"], 1, "the AWS credentials: {s}");

    // A hanging GET: one connection open and one request parked, until it is answered.
    let mut hanging = Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "/dev/null", "-H", "Metadata-Flavor: Google"])
        .arg(format!(
            "http://{addr}/computeMetadata/v1/instance/attributes/role?wait_for_change=true&timeout_sec=8"
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let s = status_when(&socket, |s| s["requests_parked"] == 1);
    assert_eq!(
        (&s["requests_parked"], &s["connections_open"]),
        (&1.into(), &1.into()),
        "{s}"
    );
    assert_eq!(
        s["requests"], expected,
        "a parked request is not answered yet: {s}"
    );
    ctl_ok(&socket, &["set", "gce", "instance/attributes/role=db"]);
    assert!(hanging.wait().unwrap_or_else(|e| panic!("{e}")).success());
    let expected = serde_json::json!({"azure": 2, "gce": 2, "aws": 1, "other": 1});
    let s = status_when(&socket, |s| {
        s["requests"] == expected && s["connections_open"] == 0
    });
    assert_eq!(s["requests"], expected, "{s}");
    assert_eq!(
        (&s["requests_parked"], &s["connections_open"]),
        (&0.into(), &0.into()),
        "{s}"
    );
}

/// Control clients that connect and say nothing hold only their own connections: up to
/// `MAX_CLIENTS` of them, `ctl` is answered at once; beyond that a client is told at once that
/// the server is busy, and served again once the stalled ones go.
#[test]
fn stalled_control_clients_do_not_hold_up_others() {
    use imds_tun::control::server::MAX_CLIENTS;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    let _serial = one_at_a_time();
    let dir = scratch("stalled");
    let socket = dir.join("ctl.sock");
    let _server = Server::start_with(None, ["--ctl".as_ref(), socket.as_os_str()]);
    let connect = || UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{e}"));
    let mut stalled: Vec<UnixStream> = (0..MAX_CLIENTS - 1).map(|_| connect()).collect();
    let start = Instant::now();
    assert_eq!(status_json(&socket)["mode"], "serve");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "status took {took:?} behind {} stalled clients",
        MAX_CLIENTS - 1
    );
    // The last free place; it may take the status client's thread a moment to give it back
    // (a refused client is told so at once).
    let last = (0..50)
        .find_map(|_| {
            let mut s = connect();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Some(s),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no place for client {MAX_CLIENTS}"));
    stalled.push(last);
    let start = Instant::now();
    let err = ctl_err(&socket, &["status"]);
    assert!(err.contains("busy"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    drop(stalled);
    let start = Instant::now();
    while !ctl(&socket, &["status"]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "places not given back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `pipelined_waits.py` with `python` (a command, so that it can run inside a test host)
/// against `host` `port` on GCE's `instance/id` with a 1 s timeout each, and
/// returns when each answer came, in seconds, checking both are 200.
fn pipelined_wait_times(mut python: Command, host: &str, port: &str) -> Vec<f64> {
    let out = python
        .arg(format!(
            "{}/tests/sdk/pipelined_waits.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([host, port, "instance/id", "1"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("answer "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.get(2), Some(&"200"), "{text}");
            f.get(1).and_then(|t| t.parse().ok()).unwrap_or(-1.0)
        })
        .collect();
    assert_eq!(times.len(), 2, "{text}");
    times
}

/// Two hanging GETs pipelined on one connection each wait their own `timeout_sec`: the
/// second is not answered when the first's deadline passes, but parks for its own second.
fn assert_each_waits_its_own_timeout(times: &[f64]) {
    assert!(
        (0.9..1.8).contains(&times[0]),
        "first answer after {times:?} s"
    );
    assert!(
        times[1] - times[0] >= 0.9,
        "the second hanging GET was answered with the first: {times:?} s"
    );
}

#[test]
fn pipelined_hanging_gets_each_wait_their_own_timeout_on_serve() {
    let _serial = one_at_a_time();
    let server = Server::start(None);
    let (host, port) = server.addr.split_once(':').unwrap_or_default();
    let times = pipelined_wait_times(Command::new(support::python()), host, port);
    eprintln!("serve: pipelined hanging GETs answered after {times:?} s");
    assert_each_waits_its_own_timeout(&times);
}
