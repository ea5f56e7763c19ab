//! Live metadata through `imds-tun serve`, observed with real clients: Azure scheduled events
//! (a poller approving one event, another starting by itself, both disappearing), an AWS spot
//! notice appearing and disappearing (IMDSv2 as a termination handler polls it), GCE's
//! maintenance-event changing (google-auth's metadata client), and azure-identity surviving
//! injected failures on the token path: 429 then 200, and 410 for 70 s (the one long test,
//! about 75 s: azure-identity retries a 410 for at least 70 s, with waits of 0, 5, 10, 20 and
//! 40 s). Each scenario is configured at start (relative times count from then); the times the
//! server served each failure are read from its log as it writes it.
//!
//! The same, driven by `imds-tun ctl` while the clients watch (the `ctl_` tests): the scripts
//! run `ctl event ...` themselves (tests/sdk/imds_ctl.py) and see events appear, start and
//! go; `ctl fault add` makes azure-identity retry, curl wait or lose its connection; and the
//! metrics endpoint counts what happened.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `imds-tun serve` on a loopback port with `config` and a control socket; its log lines are
/// kept with the instant each was read. Killed on drop.
struct Served {
    child: Child,
    addr: String,
    ctl: PathBuf,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Wall-clock seconds just before the server started: configured times count from a
    /// moment a little after it.
    started_unix: f64,
    _dir: PathBuf,
}

impl Served {
    fn start(name: &str, config: &str) -> Served {
        Served::start_with(name, config, &[])
    }

    /// [`Served::start`] with more `serve` arguments.
    fn start_with(name: &str, config: &str, args: &[&str]) -> Served {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("live-{name}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let ctl = dir.join("ctl.sock");
        let path = dir.join("config.json");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
        // The venv first: creating it may take a while, and the configured times run.
        support::python();
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut child = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
            .args(["serve", "--listen", "127.0.0.1:0", "--key-dir"])
            .arg(support::key_dir())
            .arg("--config")
            .arg(&path)
            .arg("--ctl")
            .arg(&ctl)
            .args(args)
            .env("IMDS_TUN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start imds-tun: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                kept.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((Instant::now(), line));
            }
        });
        let addr = support::serving_addr(&mut child);
        Served {
            child,
            addr,
            ctl,
            log,
            started_unix,
            _dir: dir,
        }
    }

    /// Runs `tests/sdk/<script>` against the server; returns its standard output.
    fn run(&self, script: &str, env: &[(&str, &str)]) -> String {
        let url = format!("http://{}", self.addr);
        let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(support::python())
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .env("IMDS_TUN_ADDR", &self.addr)
            .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &url)
            .env("GCE_METADATA_HOST", &self.addr)
            .env("GCE_METADATA_IP", &self.addr)
            .env("SERVER_STARTED", self.started_unix.to_string())
            .env("IMDS_TUN_BIN", env!("CARGO_BIN_EXE_imds-tun"))
            .env("IMDS_TUN_CTL", &self.ctl)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The instants at which the server logged a line containing `needle`, so far.
    fn logged(&self, needle: &str) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .collect()
    }

    /// The first log line containing `needle`, waiting up to 5 s for it.
    fn log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(_, l)| l.contains(needle))
                .map(|(_, l)| l.clone());
            match found {
                Some(line) => return line,
                None if Instant::now() > deadline => panic!("no log line with {needle:?}"),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// `imds-tun ctl --socket <ours> ARGS`.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_imds-tun"))
            .arg("ctl")
            .arg("--socket")
            .arg(&self.ctl)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctl: {e}"))
    }

    /// `ctl ARGS`, which must succeed; its standard output.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn azure_poller_approves_and_sees_events_start_and_end() {
    let server = Served::start(
        "azure-events",
        r#"{"azure": {"enabled": true,
            "instance": {"compute": {"name": "poller-vm"}},
            "scheduledEvents": {"documentIncarnation": 7, "events": [
              {"eventType": "Freeze", "notBefore": "+30s", "durationInSeconds": 2},
              {"eventType": "Reboot", "notBefore": "+6s", "durationInSeconds": 2}]}}}"#,
    );
    let out = server.run("live_azure_events.py", &[("VM_NAME", "poller-vm")]);
    support::assert_checks("live_azure_events.py", &out, 18);
}

#[test]
fn spot_notice_appears_and_disappears() {
    let server = Served::start(
        "aws-spot",
        r#"{"aws": {"enabled": true, "imdsv2": "required",
            "metaData": {"ami-id": "ami-0c1c30571d2dae5c9", "instance-id": "i-0f1e2d3c4b5a69788"},
            "events": {
              "spot": {"action": "terminate", "notice": "+4s", "time": "+7s"},
              "maintenance": [{"code": "system-reboot", "notBefore": "+1h", "duration": "2h",
                               "eventId": "instance-event-0d59937288b749b32"}],
              "targetLifecycleState": "InService"}}}"#,
    );
    let out = server.run("live_aws_spot.py", &[]);
    support::assert_checks("live_aws_spot.py", &out, 12);
}

#[test]
fn gce_maintenance_event_changes() {
    let mut config = default_config();
    config["gce"]["events"] = serde_json::json!([
        {"maintenanceEvent": "MIGRATE_ON_HOST_MAINTENANCE", "at": "+4s", "duration": "3s"}
    ]);
    let server = Served::start("gce-maintenance", &config.to_string());
    let out = server.run("live_gce_maintenance.py", &[]);
    support::assert_checks("live_gce_maintenance.py", &out, 5);
}

/// The embedded default configuration with `faults`.
fn default_with_faults(faults: serde_json::Value) -> String {
    let mut config = default_config();
    config["faults"] = faults;
    config.to_string()
}

fn default_config() -> serde_json::Value {
    let text = std::fs::read_to_string(format!(
        "{}/fixtures/default.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// The seconds azure-identity reported its get_token took.
fn took(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("took "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in:\n{out}"))
}

#[test]
fn azure_identity_retries_a_throttled_token_request() {
    let server = Served::start(
        "azure-429",
        &default_with_faults(serde_json::json!([{"cloud": "azure",
            "path": "/metadata/identity/oauth2/token", "status": 429, "count": 1}])),
    );
    let out = server.run("live_azure_faults.py", &[]);
    support::assert_checks("live_azure_faults.py", &out, 1);
    std::thread::sleep(Duration::from_millis(200));
    let faults = server.logged("injected fault");
    assert_eq!(faults.len(), 1, "exactly one 429 was served");
    // IMDS sends no Retry-After with its 429, so azure-core retries at once.
    assert!(took(&out) < 5.0, "took {} s", took(&out));
}

#[test]
fn azure_identity_waits_out_a_410_for_70_seconds() {
    let server = Served::start(
        "azure-410",
        &default_with_faults(serde_json::json!([{
            "path": "/metadata/identity/oauth2/token", "status": 410, "for": "70s"}])),
    );
    let started = Instant::now();
    let out = server.run("live_azure_faults.py", &[]);
    support::assert_checks("live_azure_faults.py", &out, 1);
    std::thread::sleep(Duration::from_millis(200));
    let faults: Vec<f64> = server
        .logged("injected fault")
        .iter()
        .map(|t| t.duration_since(started).as_secs_f64())
        .collect();
    // azure-identity 1.24: attempts at about 0, 0, 5, 15, 35 s get 410; the one at about 75 s
    // (after the rule's 70 s) gets the token.
    assert!(faults.len() >= 4, "410s served at {faults:?}");
    let last = faults.last().copied().unwrap_or_default();
    assert!(
        (25.0..70.5).contains(&last),
        "the last 410 at {last:.1} s (all: {faults:?})"
    );
    let took = took(&out);
    assert!(
        (70.0..100.0).contains(&took),
        "get_token took {took:.1} s; 410s at {faults:?}"
    );
    let gaps: Vec<f64> = faults.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .skip(1)
            .zip(gaps.iter().skip(2))
            .all(|(a, b)| b > a),
        "the waits grow: {gaps:?}"
    );
}

/// The metrics scrape of a server started with `--metrics 127.0.0.1:0`.
fn scrape(server: &Served) -> String {
    let line = server.log_line("metrics at http://");
    let url = line
        .split("metrics at ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("{line}"));
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", url])
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the scrape has `series` with exactly `value`.
fn assert_series(text: &str, series: &str, value: u64) {
    let want = format!("{series} {value}\n");
    assert!(text.contains(&want), "want `{want}` in:\n{text}");
}

/// `curl` of a GCE path on `server`: (exit code, status, seconds taken).
fn curl_gce(server: &Served, path: &str) -> (i32, String, f64) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Metadata-Flavor: Google"])
        .arg(format!("http://{}/computeMetadata/v1/{path}", server.addr))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

#[test]
fn ctl_event_azure_appears_is_approved_starts_and_goes() {
    let server = Served::start_with(
        "ctl-azure",
        r#"{"azure": {"enabled": true, "instance": {"compute": {"name": "ctl-vm"}}}}"#,
        &["--metrics", "127.0.0.1:0"],
    );
    let out = server.run("live_ctl_azure_events.py", &[]);
    support::assert_checks("live_ctl_azure_events.py", &out, 20);
    let text = scrape(&server);
    for (kind, stage, n) in [
        ("Reboot", "scheduled", 1),
        ("Reboot", "started", 1),
        ("Reboot", "completed", 1),
        ("Freeze", "scheduled", 1),
        ("Freeze", "cancelled", 1),
    ] {
        assert_series(
            &text,
            &format!("imds_tun_events_total{{cloud=\"azure\",type=\"{kind}\",stage=\"{stage}\"}}"),
            n,
        );
    }
    assert_series(&text, "imds_tun_azure_event_approvals_total", 1);
    assert!(
        !text.contains("type=\"Freeze\",stage=\"started\""),
        "a cancelled event never started:\n{text}"
    );
}

#[test]
fn ctl_event_aws_spot_and_maintenance_seen_by_botocore() {
    let server = Served::start(
        "ctl-aws",
        r#"{"aws": {"enabled": true, "imdsv2": "required",
            "metaData": {"ami-id": "ami-0c1c30571d2dae5c9", "instance-id": "i-0f1e2d3c4b5a69788"}}}"#,
    );
    let out = server.run("live_ctl_aws_spot.py", &[]);
    support::assert_checks("live_ctl_aws_spot.py", &out, 18);
    let list = server.ctl_ok(&["event", "list"]);
    let statuses: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split(' ').find(|w| w.starts_with("status=")))
        .collect();
    assert_eq!(
        statuses,
        ["status=completed", "status=cancelled"],
        "the stop notice past its time, the maintenance in history:\n{list}"
    );
}

#[test]
fn ctl_event_gce_wakes_a_hanging_get() {
    let server = Served::start("ctl-gce", &default_config().to_string());
    let out = server.run("live_ctl_gce_maintenance.py", &[]);
    support::assert_checks("live_ctl_gce_maintenance.py", &out, 12);
}

#[test]
fn ctl_fault_add_then_clients_see_it_and_it_ends() {
    let server = Served::start_with(
        "ctl-faults",
        &default_config().to_string(),
        &["--metrics", "127.0.0.1:0"],
    );
    // azure-identity retries a 429 (IMDS sends no Retry-After: at once) and gets its token.
    let added = server.ctl_ok(&[
        "fault",
        "add",
        "azure",
        "/metadata/identity/oauth2/token",
        "--status",
        "429",
        "--count",
        "1",
    ]);
    assert_eq!(
        added,
        "1 cloud=azure path=/metadata/identity/oauth2/token status=429 remaining=1 hits=0\n"
    );
    let out = server.run("live_azure_faults.py", &[]);
    support::assert_checks("live_azure_faults.py", &out, 1);
    assert!(took(&out) < 5.0, "took {} s", took(&out));
    assert_eq!(server.ctl_ok(&["fault", "list"]), "", "its count is spent");

    // Latency for one request, then none.
    server.ctl_ok(&[
        "fault",
        "add",
        "gce",
        "/computeMetadata/v1/instance/id",
        "--latency",
        "2s",
        "--count",
        "1",
    ]);
    let (code, status, secs) = curl_gce(&server, "instance/id");
    assert_eq!((code, status.as_str()), (0, "200"));
    assert!((2.0..4.0).contains(&secs), "late by {secs:.2} s");
    let (_, _, secs) = curl_gce(&server, "instance/id");
    assert!(secs < 1.0, "the second request waited {secs:.2} s");

    // A dropped connection for 70 s, unless cleared first.
    let added = server.ctl_ok(&[
        "fault",
        "add",
        "/computeMetadata/v1/instance/zone",
        "--drop",
        "--for",
        "70s",
    ]);
    assert!(
        added.starts_with("3 cloud=any path=/computeMetadata/v1/instance/zone drop=reset until=")
    );
    let (code, status, _) = curl_gce(&server, "instance/zone");
    assert_eq!((code, status.as_str()), (56, "000"), "curl: reset by peer");
    assert_eq!(server.ctl_ok(&["fault", "clear"]), "1 fault cleared\n");
    assert_eq!(curl_gce(&server, "instance/zone").1, "200");

    // Mistakes: usage (exit 2) before sending, or the server's one-line refusal (exit 1).
    let bad = server.ctl(&["fault", "add", "/x", "--status", "418"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--status `418`"), "{err}");
    let bad = server.ctl(&["event", "cancel", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "imds-tun: event: no current event `nope` (see event list)\n"
    );

    let status = server.ctl_ok(&["status"]);
    assert!(
        status.contains("fault rules 0, faults injected 3"),
        "{status}"
    );
    let text = scrape(&server);
    for (cloud, kind) in [("azure", "status"), ("gce", "latency"), ("gce", "drop")] {
        assert_series(
            &text,
            &format!("imds_tun_faults_injected_total{{cloud=\"{cloud}\",kind=\"{kind}\"}}"),
            1,
        );
    }
}
