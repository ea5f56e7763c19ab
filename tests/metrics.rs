//! Metrics and the access log, end to end: a known mix of requests (curl, and one garbage
//! request over bash's /dev/tcp) through `serve` and through `up` in a test host, then a
//! scrape of `--metrics` and a read of `--access-log`, with exact counts.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::netns::{Shape, TestHost};
use support::up::Up;

/// The statuses curl prints, in order, for [`mix_script`] (the token answers' go to a file).
const MIX_STATUSES: &str = "200\n200\n200\n400\n200\n200\n200\n404\n";

/// The status of every request of the mix, in order.
const MIX_ALL_STATUSES: [&str; 13] = [
    "200", "200", "200", "400", "200", "200", "200", "200", "200", "200", "200", "404", "400",
];

/// Every request of the mix: 13 in all (12 by curl, then one line of garbage).
const MIX_REQUESTS: usize = 13;

/// The series of `imds_tun_requests_total` the mix must produce, and nothing else.
const MIX_SERIES: [&str; 9] = [
    "imds_tun_requests_total{cloud=\"azure\",class=\"instance\",code=\"200\"} 3",
    "imds_tun_requests_total{cloud=\"azure\",class=\"instance\",code=\"400\"} 1",
    "imds_tun_requests_total{cloud=\"azure\",class=\"token\",code=\"200\"} 2",
    "imds_tun_requests_total{cloud=\"gce\",class=\"instance\",code=\"200\"} 2",
    "imds_tun_requests_total{cloud=\"gce\",class=\"token\",code=\"200\"} 1",
    "imds_tun_requests_total{cloud=\"aws\",class=\"session_token\",code=\"200\"} 1",
    "imds_tun_requests_total{cloud=\"aws\",class=\"credentials\",code=\"200\"} 1",
    "imds_tun_requests_total{cloud=\"none\",class=\"other\",code=\"404\"} 1",
    "imds_tun_requests_total{cloud=\"none\",class=\"other\",code=\"400\"} 1",
];

/// Tokens and credentials the mix is handed (the default configuration's identities).
const MIX_TOKENS: [&str; 3] = [
    "imds_tun_tokens_issued_total{identity=\"3b6f1e2a-7c4d-4e9f-8a1b-2d5c6e7f8a90\",kind=\"access token\",source=\"minted\"} 2",
    "imds_tun_tokens_issued_total{identity=\"123456789012-compute@developer.gserviceaccount.com\",kind=\"access token\",source=\"minted\"} 1",
    "imds_tun_tokens_issued_total{identity=\"imds-tun-demo-role\",kind=\"credentials\",source=\"minted\"} 1",
];

/// A bash script that sends the mix to `host:port`, one connection per request, printing
/// curl's status codes; the bodies of the token answers go to `tokens` (to check that no token
/// reaches the access log).
fn mix_script(host: &str, port: u16, tokens: &Path) -> String {
    let b = format!("http://{host}:{port}");
    let t = tokens.display();
    format!(
        r#"set -e
c() {{ curl -sS -o /dev/null -w '%{{http_code}}\n' "$@"; }}
for i in 1 2 3; do c -H Metadata:true "{b}/metadata/instance?api-version=2021-02-01"; done
c "{b}/metadata/instance?api-version=2021-02-01"
for i in 1 2; do curl -sS -w '\n%{{http_code}}\n' -H Metadata:true "{b}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/" >> {t}; done
for i in 1 2; do c -H Metadata-Flavor:Google "{b}/computeMetadata/v1/instance/id"; done
curl -sS -w '\n%{{http_code}}\n' -H Metadata-Flavor:Google "{b}/computeMetadata/v1/instance/service-accounts/default/token" >> {t}
c -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "{b}/latest/api/token"
curl -sS -w '\n%{{http_code}}\n' "{b}/latest/meta-data/iam/security-credentials/imds-tun-demo-role" >> {t}
c "{b}/favicon.ico"
exec 3<>/dev/tcp/{host}/{port}
printf 'BLAH\r\n\r\n' >&3
cat <&3 >/dev/null
"#
    )
}

/// Runs the mix with `bash` (given as a command, so it can run inside a test host) and
/// returns curl's status lines.
fn run_mix(mut bash: Command, host: &str, port: u16, tokens: &Path) -> String {
    let out = bash
        .arg("-c")
        .arg(mix_script(host, port, tokens))
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the request mix failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The token and credential values the mix was handed.
fn secrets(tokens: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut found = Vec::new();
    let mut body = String::new();
    for line in text.lines() {
        // Each body is followed by curl's status line.
        if line.len() == 3 && line.bytes().all(|b| b.is_ascii_digit()) {
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            for key in ["access_token", "SecretAccessKey", "Token"] {
                if let Some(s) = v[key].as_str() {
                    found.push(s.to_string());
                }
            }
            body.clear();
        } else {
            body.push_str(line);
        }
    }
    assert_eq!(found.len(), 5, "tokens and credentials in {text}");
    found
}

/// Checks the scrape against the mix: exact series, latency count and token counts.
fn assert_mix_counted(scrape: &str) {
    let requests: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("imds_tun_requests_total{"))
        .collect();
    let mut expected = MIX_SERIES.to_vec();
    let mut got = requests.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "requests in the scrape:\n{scrape}");
    let count = format!("imds_tun_request_duration_seconds_count {MIX_REQUESTS}");
    assert!(scrape.lines().any(|l| l == count), "{count} in\n{scrape}");
    for line in MIX_TOKENS {
        assert!(scrape.lines().any(|l| l == line), "{line} in\n{scrape}");
    }
    assert!(
        scrape.contains("# TYPE imds_tun_request_duration_seconds histogram\n"),
        "{scrape}"
    );
}

/// Checks the access log against the mix: one line per request with the right statuses and
/// fields, and none of the secrets handed out.
fn assert_access_log(log: &str, secrets: &[String]) {
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), MIX_REQUESTS, "access log:\n{log}");
    let mut statuses: Vec<&str> = Vec::new();
    for line in &lines {
        // time caller cloud class method target status micros
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 8, "{line}");
        assert!(f[0].ends_with('Z') && f[0].contains('T'), "{line}");
        assert!(f[1].contains(':'), "{line}");
        assert!(f[7].ends_with("us"), "{line}");
        statuses.push(f[6]);
    }
    let mut expected = MIX_ALL_STATUSES.to_vec();
    statuses.sort_unstable();
    expected.sort_unstable();
    assert_eq!(statuses, expected, "statuses in\n{log}");
    assert!(
        log.contains(" azure token GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/ 200 "),
        "{log}"
    );
    assert!(log.contains(" none other - - 400 "), "{log}");
    for s in secrets {
        assert!(
            !log.contains(s.as_str()),
            "a token reached the access log:\n{log}"
        );
    }
    assert!(
        !log.to_ascii_lowercase().contains("metadata-flavor"),
        "{log}"
    );
}

/// Fetches the metrics over HTTP (curl) through `command`.
fn scrape(mut curl: Command, port: u16) -> String {
    let out = curl
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Scrapes until the request count reaches the mix (the engine records a request just after
/// its response is written, so the last one may land a moment after the client has it).
fn scrape_settled(curl: impl Fn() -> Command, port: u16) -> String {
    let want = format!("imds_tun_request_duration_seconds_count {MIX_REQUESTS}\n");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = scrape(curl(), port);
        if text.contains(&want) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_counts_a_known_mix() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("metrics-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("access.log");
    let tokens = dir.join("tokens");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&tokens);
    let port = support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let server = support::Server::start_with(
        None,
        [
            "--metrics",
            &metrics,
            "--access-log",
            &log.display().to_string(),
        ],
    );
    let before = scrape(Command::new("curl"), port);
    assert!(
        !before.contains("imds_tun_requests_total{"),
        "requests before any:\n{before}"
    );
    let server_port: u16 = server
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{}", server.addr));
    let statuses = run_mix(Command::new("bash"), "127.0.0.1", server_port, &tokens);
    assert_eq!(statuses, MIX_STATUSES);
    let text = scrape(Command::new("curl"), port);
    assert_mix_counted(&text);
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    assert_access_log(&log, &secrets(&tokens));
}

#[test]
fn serve_refuses_metrics_beyond_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "0.0.0.0:0",
            "--key-dir",
        ])
        .arg(support::key_dir())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn up_counts_a_known_mix() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let log = host.dir().join("access.log");
    let tokens = host.dir().join("tokens");
    let up = Up::start(
        &host,
        [
            "--threads",
            "2",
            "--metrics",
            "127.0.0.1:9100",
            "--access-log",
            &log.display().to_string(),
        ],
    );
    let statuses = run_mix(host.command("bash"), "169.254.169.254", 80, &tokens);
    assert_eq!(statuses, MIX_STATUSES);
    let text = scrape_settled(|| host.command("curl"), 9100);
    assert_mix_counted(&text);
    // Our own TCP saw exactly one connection per request (curl and bash each open one).
    let established =
        format!("imds_tun_tcp_connections_opened_total{{stage=\"established\"}} {MIX_REQUESTS}");
    assert!(
        text.lines().any(|l| l == established),
        "{established} in\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("imds_tun_packets_total{direction=\"in\"} ")),
        "{text}"
    );
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    assert_access_log(&log, &secrets(&tokens));
    drop(up);
}

#[test]
fn json_logs_and_json_access_log() {
    // The log on standard error: one JSON object per line.
    let out = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["--log-format", "json", "jwks", "--key-dir"])
        .arg(support::key_dir())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.trim().is_empty(), "no log lines");
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }

    // The access log follows --log-format.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("metrics-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("access.json");
    let _ = std::fs::remove_file(&log);
    let server = support::Server::start_with(
        None,
        [
            "--log-format",
            "json",
            "--access-log",
            &log.display().to_string(),
        ],
    );
    let got = Command::new("curl")
        .args(["-sS", "-H", "Metadata:true"])
        .arg(format!(
            "http://{}/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
            server.addr
        ))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(got.status.success());
    // The line is written just after the response: give it a moment, not a race.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut text = String::new();
    while text.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    }
    drop(server);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["cloud"], "azure");
    assert_eq!(v["class"], "instance");
    assert_eq!(v["method"], "GET");
    assert_eq!(
        v["target"],
        "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
    );
    assert_eq!(v["status"], 200);
    assert!(
        v["micros"].is_u64()
            && v["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
}
