//! No secret in any log or error: `up` in a test host with trace logging, a full mix of minted
//! tokens from all three clouds (Azure access tokens, GCE access and identity tokens, AWS
//! IMDSv2 session tokens and role credentials) and a set of refused requests; every token,
//! secret key and session token taken from the responses, and the signing key's own material,
//! must be absent from the log, from the ready output, and from every error body. The key
//! store's files must be 0600 in 0700 directories.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use support::netns::{Shape, TestHost};
use support::up::Up;

fn curl(host: &TestHost, args: &[&str]) -> String {
    let out: Output = host
        .command("curl")
        .args(["-s", "-m", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The parts of a token worth searching for: the whole, and each JWT segment long enough to
/// be telling (the signature above all).
fn needles(token: &str) -> Vec<String> {
    let mut v = vec![token.to_string()];
    v.extend(
        token
            .split('.')
            .filter(|p| p.len() >= 16 && *p != token)
            .filter(|p| !p.starts_with("eyJ")) // headers and claims are not secret
            .map(str::to_string),
    );
    v
}

fn assert_modes(dir: &Path) {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            assert_modes(&path);
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files > 0 || dir.file_name().is_some(), "{}", dir.display());
}

#[test]
fn no_token_or_key_reaches_logs_or_errors() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let log = host.dir().join("up.log");
    std::env::set_var("IMDS_TUN_LOG", "trace");
    std::env::set_var("RUST_LOG", "trace");
    let up = Up::start_logged(&host, Vec::<&str>::new(), &log);
    let ready = up.ready_line().to_string();

    let mut secrets: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let base = "http://169.254.169.254";

    // Azure: two resources.
    for resource in ["https://vault.azure.net", "https://management.azure.com/"] {
        let url = format!(
            "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}"
        );
        let v = json(&curl(&host, &["-H", "Metadata: true", &url]));
        let t = v["access_token"].as_str().unwrap_or_else(|| panic!("{v}"));
        secrets.extend(needles(t));
    }
    // GCE: access token with scopes, identity tokens standard and full.
    let gce = |path: &str| {
        curl(
            &host,
            &[
                "-H",
                "Metadata-Flavor: Google",
                &format!("{base}/computeMetadata/v1/instance/service-accounts/default/{path}"),
            ],
        )
    };
    let v = json(&gce(
        "token?scopes=https://www.googleapis.com/auth/cloud-platform",
    ));
    secrets.extend(needles(
        v["access_token"].as_str().unwrap_or_else(|| panic!("{v}")),
    ));
    for q in [
        "identity?audience=https://a.example",
        "identity?audience=https://b.example&format=full",
    ] {
        let t = gce(q);
        assert!(t.starts_with("eyJ"), "{t}");
        secrets.extend(needles(&t));
    }
    // AWS: an IMDSv2 session token, then the role's credentials with it.
    let session = curl(
        &host,
        &[
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 300",
            &format!("{base}/latest/api/token"),
        ],
    );
    assert!(session.len() >= 40, "{session}");
    secrets.push(session.clone());
    let role = curl(
        &host,
        &[
            "-H",
            &format!("X-aws-ec2-metadata-token: {session}"),
            &format!("{base}/latest/meta-data/iam/security-credentials/"),
        ],
    );
    let v = json(&curl(
        &host,
        &[
            "-H",
            &format!("X-aws-ec2-metadata-token: {session}"),
            &format!(
                "{base}/latest/meta-data/iam/security-credentials/{}",
                role.trim()
            ),
        ],
    ));
    for field in ["SecretAccessKey", "Token"] {
        secrets.push(
            v[field]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string(),
        );
    }

    // Refused requests, some carrying a real secret in the wrong place: their bodies are
    // checked as well.
    let wrong_token = format!("{}x", &session[..session.len() - 1]);
    for args in [
        vec![
            "-H".to_string(),
            format!("X-aws-ec2-metadata-token: {wrong_token}"),
            format!("{base}/latest/meta-data/iam/security-credentials/"),
        ],
        vec![format!(
            "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x"
        )],
        vec![
            "-H".into(),
            "Metadata: true".into(),
            format!("{base}/metadata/identity/oauth2/token?api-version=1999-01-01&resource=x"),
        ],
        vec![
            "-H".into(),
            "Metadata-Flavor: Google".into(),
            format!("{base}/computeMetadata/v1/instance/service-accounts/default/identity"),
        ],
        vec![
            "-H".into(),
            format!("Authorization: Bearer {}", secrets[0]),
            format!("{base}/computeMetadata/v1/instance/service-accounts/nobody/token"),
        ],
        vec![
            "-X".into(),
            "PUT".into(),
            format!("{base}/latest/api/token"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = host
            .command("curl")
            .args(["-s", "-m", "10", "-i"])
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.contains(" 200 "),
            "expected an error for {args:?}: {text}"
        );
        errors.push(text);
    }
    drop(up);
    std::env::remove_var("IMDS_TUN_LOG");
    std::env::remove_var("RUST_LOG");

    // The signing key's own material.
    let keys = host.dir().join("keys");
    assert_modes(&keys);
    let mut key_lines = 0;
    for entry in std::fs::read_dir(&keys).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("PRIVATE KEY") {
            for line in text
                .lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
            {
                secrets.push(line.to_string());
                key_lines += 1;
            }
        }
    }
    assert!(
        key_lines > 10,
        "no private key material found in {}",
        keys.display()
    );
    assert!(
        secrets.len() > 20,
        "too few secrets collected: {}",
        secrets.len()
    );

    let log_text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "the log is not at trace level"
    );
    assert!(
        log_text.contains("issued token"),
        "no audit lines:\n{log_text}"
    );
    for (what, text) in [("the log", &log_text), ("the ready output", &ready)]
        .into_iter()
        .chain(errors.iter().map(|e| ("an error answer", e)))
    {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what} contains a secret ({}...):\n{text}",
                &s[..12.min(s.len())]
            );
        }
    }
}
