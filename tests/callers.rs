//! The caller policy end to end, as root in a test host: `up` with `$.callers.tokens`
//! allowing one uid and one executable; curl run as two uids (setpriv) and as two
//! executables (the system curl and a copy the policy names) asks for an Azure, a GCE and an
//! AWS token. Allowed callers get their tokens; denied ones get each cloud's exact 403, and
//! still read metadata; the audit log has one line per decision with pid, uid and executable.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::netns::{Shape, TestHost};
use support::up::Up;

const ALLOWED_UID: u32 = 1234;
const DENIED_UID: u32 = 4321;

const AZURE_TOKEN: &str =
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";
const GCE_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const AWS_CREDENTIALS: &str =
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun-demo-role";

/// Status and body of one curl run in `host` as `uid` (root when `None`) with `curl`.
fn fetch(host: &TestHost, curl: &Path, uid: Option<u32>, url: &str, header: &str) -> (u16, String) {
    let mut cmd: Command = match uid {
        Some(uid) => {
            let mut c = host.command("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(curl);
            c
        }
        None => host.command(curl),
    };
    let out = cmd
        .args(["-s", "-m", "10", "-H", header, "-w", "\n%{http_code}", url])
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl said {text:?}")),
        body.to_string(),
    )
}

/// The three token requests; returns (status, body) of each.
fn tokens(host: &TestHost, curl: &Path, uid: Option<u32>) -> [(u16, String); 3] {
    [
        fetch(host, curl, uid, AZURE_TOKEN, "Metadata: true"),
        fetch(
            host,
            curl,
            uid,
            &format!("http://169.254.169.254{GCE_TOKEN_PATH}"),
            "Metadata-Flavor: Google",
        ),
        fetch(host, curl, uid, AWS_CREDENTIALS, "Accept: */*"),
    ]
}

fn assert_allowed(who: &str, got: &[(u16, String); 3]) {
    assert_eq!(got[0].0, 200, "{who}: azure {}", got[0].1);
    assert!(got[0].1.contains("\"access_token\""), "{who}: {}", got[0].1);
    assert_eq!(got[1].0, 200, "{who}: gce {}", got[1].1);
    assert!(got[1].1.contains("\"access_token\""), "{who}: {}", got[1].1);
    assert_eq!(got[2].0, 200, "{who}: aws {}", got[2].1);
    assert!(
        got[2].1.contains("\"SecretAccessKey\""),
        "{who}: {}",
        got[2].1
    );
}

fn assert_denied(who: &str, got: &[(u16, String); 3]) {
    assert_eq!(
        got[0],
        (
            403,
            r#"{"error":"access_denied","error_description":"The caller is not allowed to get tokens on this machine"}"#
                .to_string()
        ),
        "{who}: azure"
    );
    assert_eq!(got[1].0, 403, "{who}: gce");
    assert!(
        got[1].1.contains(&format!(
            "Your client does not have permission to get URL <code>{GCE_TOKEN_PATH}</code> from this server."
        )),
        "{who}: gce {}",
        got[1].1
    );
    assert_eq!(got[2], (403, String::new()), "{who}: aws");
}

fn config(allowed_exe: &Path) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    v["callers"] = serde_json::json!({
        "tokens": { "uids": [ALLOWED_UID], "executables": [allowed_exe] }
    });
    v.to_string()
}

#[test]
fn tokens_only_for_allowed_uids_and_executables() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let system_curl = std::fs::canonicalize("/usr/bin/curl").unwrap_or_else(|e| panic!("{e}"));
    let copy: PathBuf = host.dir().join("allowed-curl");
    std::fs::copy(&system_curl, &copy).unwrap_or_else(|e| panic!("{e}"));
    let config_file = host.dir().join("config.json");
    std::fs::write(&config_file, config(&copy)).unwrap_or_else(|e| panic!("{e}"));
    let log = host.dir().join("up.log");
    let up = Up::start_logged(&host, ["--config".as_ref(), config_file.as_os_str()], &log);

    // Two uids with the system curl: the allowed uid gets tokens, the other is refused.
    assert_allowed("uid 1234", &tokens(&host, &system_curl, Some(ALLOWED_UID)));
    assert_denied("uid 4321", &tokens(&host, &system_curl, Some(DENIED_UID)));
    // Two executables as root (not an allowed uid): the named copy passes, curl does not.
    assert_allowed("the allowed executable", &tokens(&host, &copy, None));
    assert_denied("/usr/bin/curl as root", &tokens(&host, &system_curl, None));
    // Metadata stays open to a refused caller.
    let (status, body) = fetch(
        &host,
        &system_curl,
        Some(DENIED_UID),
        "http://169.254.169.254/latest/meta-data/instance-id",
        "Accept: */*",
    );
    assert_eq!((status, body.starts_with("i-")), (200, true), "{body}");
    drop(up);

    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    let lines =
        |needle: &str| -> Vec<&str> { text.lines().filter(|l| l.contains(needle)).collect() };
    let curl = system_curl.display().to_string();
    let allowed_uid = lines("decision=allow by the caller policy: pid=");
    let by_uid: Vec<_> = allowed_uid
        .iter()
        .filter(|l| l.contains(&format!("uid={ALLOWED_UID} gid={ALLOWED_UID} exe={curl}")))
        .collect();
    assert_eq!(by_uid.len(), 3, "allow lines for uid 1234:\n{text}");
    let by_exe: Vec<_> = allowed_uid
        .iter()
        .filter(|l| l.contains(&format!("uid=0 gid=0 exe={}", copy.display())))
        .collect();
    assert_eq!(by_exe.len(), 3, "allow lines for the executable:\n{text}");
    let denied = lines("caller policy:");
    let denied_uid: Vec<_> = denied
        .iter()
        .filter(|l| {
            l.contains("refused to pid=")
                && l.contains(&format!("uid={DENIED_UID} gid={DENIED_UID} exe={curl}"))
        })
        .collect();
    assert_eq!(denied_uid.len(), 3, "deny lines for uid 4321:\n{text}");
    let denied_root: Vec<_> = denied
        .iter()
        .filter(|l| l.contains("refused to pid=") && l.contains(&format!("uid=0 gid=0 exe={curl}")))
        .collect();
    assert_eq!(denied_root.len(), 3, "deny lines for curl as root:\n{text}");
    for l in denied_uid.iter().chain(&denied_root) {
        assert!(l.contains("decision=\"deny\""), "{l}");
    }
}
