//! The real SDKs against `imds-tun serve` on a loopback port, pointed at it through each
//! SDK's documented override (the TUN front door is tested without overrides in
//! `tests/e2e_*.rs`). Each cloud's assertions live in `tests/sdk/<cloud>.py`; the script exits
//! non-zero on any mismatch.

mod support;

use std::process::Command;

fn run_script(cloud: &str) {
    let python = support::python();
    let server = support::Server::start(None);
    let url = format!("http://{}", server.addr);
    let script = format!("{}/tests/sdk/{cloud}.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .arg(&script)
        // Nothing from the developer's own cloud setup may leak into the test.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .env("IMDS_TUN_ADDR", &server.addr)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &url)
        .env("GCE_METADATA_HOST", &server.addr)
        .env("GCE_METADATA_IP", &server.addr)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{url}/"))
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    support::assert_checks(&script, &String::from_utf8_lossy(&out.stdout), 10);
}

#[test]
fn azure_identity() {
    run_script("azure");
}

#[test]
fn google_auth() {
    run_script("gce");
}

#[test]
fn botocore() {
    run_script("aws");
}
