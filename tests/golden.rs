//! Golden request/response pairs for every cloud, under `fixtures/golden/<cloud>/`.
//!
//! Each case is `NAME.request` and `NAME.response`. A request file is the request head with
//! LF line endings (turned into CRLF here), optionally followed by an empty line and a body
//! sent as-is. A response file holds the exact bytes the server must send on a keep-alive
//! connection. The configuration is `fixtures/default.json`, or `config.json` beside the cases.
//! The clock is fixed at 2026-01-01T00:00:00Z and the keys are fixed, so dynamic answers
//! (tokens, signatures) are reproducible too.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the response files; review the diff.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use imds_tun::cloud::RequestContext;
use imds_tun::config;
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::snapshot::{Keys, Snapshot};

fn context() -> RequestContext {
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    RequestContext {
        // 2026-01-01T00:00:00Z
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        peer: addr("169.254.0.2:40000"),
        local: addr("169.254.169.254:80"),
        door: Default::default(),
        wait_over: false,
    }
}

fn request_bytes(text: &str) -> Vec<u8> {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, Some(b)),
        None => (text.trim_end_matches('\n'), None),
    };
    let mut out = head.replace('\n', "\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn snapshot_for(dir: &Path) -> Snapshot {
    let no_env = |_: &str| None;
    let cfg_path = dir.join("config.json");
    let cfg = if cfg_path.exists() {
        config::load_file(&cfg_path, &no_env)
    } else {
        config::default_config(&no_env)
    };
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(cfg, &Keys::fixed(7), "golden").unwrap_or_else(|e| panic!("{e}"))
}

fn answer(snapshot: &Snapshot, request: &[u8]) -> Vec<u8> {
    let mut out: Vec<Outgoing> = Vec::new();
    let limits = snapshot.config.server.limits();
    let progress = respond_all(request, snapshot, &context(), &limits, &mut out);
    assert_eq!(progress.answered, 1, "expected exactly one response");
    out.iter().flat_map(|o| o.bytes.iter().copied()).collect()
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "request"))
        .collect();
    v.sort();
    v
}

fn run_cloud(cloud: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(cloud);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases(&dir);
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    let mut failures = Vec::new();
    for case in cases {
        // A fresh instance per case: some cases change live state (a guest attribute PUT),
        // and no case may see another's.
        let snapshot = snapshot_for(&dir);
        let text = std::fs::read_to_string(&case).unwrap_or_else(|e| panic!("{e}"));
        let got = answer(&snapshot, &request_bytes(&text));
        let expected_path = case.with_extension("response");
        if update {
            std::fs::write(&expected_path, &got).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let expected = std::fs::read(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                case.display(),
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn azure() {
    run_cloud("azure");
}

/// Azure with a sparse instance document (absent fields shown as ""), a pending scheduled
/// event, no load balancer and no identity.
#[test]
fn azure_bare() {
    run_cloud("azure-bare");
}

#[test]
fn gce() {
    run_cloud("gce");
}

#[test]
fn aws() {
    run_cloud("aws");
}

/// AWS with `imdsv2: required`, hop limit 2, tags exposed, no user data and no IAM role.
#[test]
fn aws_required() {
    run_cloud("aws-required");
}

/// AWS with `httpEndpoint: disabled`.
#[test]
fn aws_disabled() {
    run_cloud("aws-disabled");
}
