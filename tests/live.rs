//! Live metadata through `imds-tun serve`, observed with real clients: Azure scheduled events
//! (a poller approving one event, another starting by itself, both disappearing), an AWS spot
//! notice appearing and disappearing (IMDSv2 as a termination handler polls it), GCE's
//! maintenance-event changing (google-auth's metadata client), and azure-identity surviving
//! injected failures on the token path: 429 then 200, and 410 for 70 s (the one long test,
//! about 75 s: azure-identity retries a 410 for at least 70 s, with waits of 0, 5, 10, 20 and
//! 40 s). Each scenario is configured at start (relative times count from then); the times the
//! server served each failure are read from its log as it writes it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `imds-tun serve` on a loopback port with `config`; its log lines arrive with the instant
/// each was read. Killed on drop.
struct Served {
    child: Child,
    addr: String,
    log: mpsc::Receiver<(Instant, String)>,
    /// Wall-clock seconds just before the server started: configured times count from a
    /// moment a little after it.
    started_unix: f64,
    _dir: PathBuf,
}

impl Served {
    fn start(name: &str, config: &str) -> Served {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("live-{name}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
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
            .env("IMDS_TUN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start imds-tun: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = line
            .trim()
            .rsplit(" on ")
            .next()
            .map(str::to_string)
            .filter(|a| a.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"));
        Served {
            child,
            addr,
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
            .try_iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| t)
            .collect()
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
