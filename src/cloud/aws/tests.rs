//! Request → reply tests of the AWS rules and tree, through the snapshot as a front door
//! would call it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::cloud::RequestContext;
use crate::config::{self, Config};
use crate::http::exchange::{respond_all, Outgoing};
use crate::snapshot::{Keys, Snapshot};

use super::token;

const NOW: u64 = 1_767_225_600;

fn ctx_at(now: u64) -> RequestContext {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
    RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        peer: addr("169.254.0.2:40000"),
        local: addr("169.254.169.254:80"),
        door: Default::default(),
        wait_over: false,
    }
}

fn default_config() -> Config {
    config::default_config(&|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn snapshot_with(edit: impl FnOnce(&mut Config)) -> Snapshot {
    let mut c = default_config();
    edit(&mut c);
    Snapshot::build(c, &Keys::fixed(7), "test").unwrap_or_else(|e| panic!("{e}"))
}

/// One exchange: (status, headers text, body, ip_ttl).
struct Answer {
    status: u16,
    head: String,
    body: String,
    ip_ttl: Option<u8>,
}

fn ask_at(s: &Snapshot, now: u64, request: &str) -> Answer {
    let raw = request.replace('\n', "\r\n");
    let mut out: Vec<Outgoing> = Vec::new();
    let limits = s.config.server.limits();
    let p = respond_all(raw.as_bytes(), s, &ctx_at(now), &limits, &mut out);
    assert_eq!(p.answered, 1, "{request}");
    let bytes = &out[0].bytes;
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap_or(0);
    Answer {
        status,
        head: format!("{head}\r\n"),
        body: body.to_string(),
        ip_ttl: out[0].ip_ttl,
    }
}

fn get(s: &Snapshot, path: &str, extra: &str) -> Answer {
    ask_at(
        s,
        NOW,
        &format!("GET {path} HTTP/1.1\nHost: 169.254.169.254\n{extra}\n"),
    )
}

fn put_token(s: &Snapshot, path: &str, extra: &str) -> Answer {
    ask_at(
        s,
        NOW,
        &format!("PUT {path} HTTP/1.1\nHost: 169.254.169.254\n{extra}\n"),
    )
}

fn valid_token(ttl: u32) -> String {
    token::mint(&[7; 32], NOW, ttl)
}

#[test]
fn token_put_echoes_ttl_and_sets_hop_limit() {
    let s = snapshot_with(|c| c.aws.hop_limit = 2);
    let a = put_token(
        &s,
        "/latest/api/token",
        "X-aws-ec2-metadata-token-ttl-seconds: 21600\n",
    );
    assert_eq!(a.status, 200);
    assert!(a
        .head
        .contains("\r\nX-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600\r\n"));
    assert!(a.head.contains("\r\nServer: EC2ws\r\n"));
    assert!(a.head.contains("\r\nContent-Type: text/plain\r\n"));
    assert_eq!(a.body.len(), 56);
    assert_eq!(a.ip_ttl, Some(2));
    assert_eq!(token::check(&[7; 32], NOW, a.body.as_bytes()), Ok(21_600));
}

#[test]
fn token_put_errors() {
    let s = snapshot_with(|_| {});
    let ttl = "X-aws-ec2-metadata-token-ttl-seconds: 60\n";
    assert_eq!(put_token(&s, "/latest/api/token", "").status, 400);
    for bad in ["0", "21601", "sixty", ""] {
        let h = format!("X-aws-ec2-metadata-token-ttl-seconds: {bad}\n");
        assert_eq!(put_token(&s, "/latest/api/token", &h).status, 400, "{bad}");
    }
    let forwarded = format!("{ttl}X-Forwarded-For: 203.0.113.9\n");
    assert_eq!(put_token(&s, "/latest/api/token", &forwarded).status, 403);
    assert_eq!(put_token(&s, "/2021-03-23/api/token", ttl).status, 403);
    assert_eq!(put_token(&s, "/1.0/api/token", ttl).status, 403);
    let a = get(&s, "/latest/api/token", "");
    assert_eq!(a.status, 405);
    assert!(a.head.contains("\r\nAllow: OPTIONS, PUT\r\n"), "{}", a.head);
    assert_eq!(a.body, "");
    let a = put_token(&s, "/latest/meta-data/", ttl);
    assert_eq!(a.status, 405);
    assert!(a.head.contains("\r\nAllow: GET, HEAD\r\n"));
}

#[test]
fn optional_mode_serves_v1_and_v2_but_not_bad_tokens() {
    let s = snapshot_with(|_| {});
    let v1 = get(&s, "/latest/meta-data/instance-id", "");
    assert_eq!((v1.status, v1.body.as_str()), (200, "i-0f1e2d3c4b5a69788"));
    let t = format!("X-aws-ec2-metadata-token: {}\n", valid_token(60));
    let v2 = get(&s, "/latest/meta-data/instance-id", &t);
    assert_eq!((v2.status, v2.body.as_str()), (200, "i-0f1e2d3c4b5a69788"));
    let bad = get(
        &s,
        "/latest/meta-data/instance-id",
        "X-aws-ec2-metadata-token: nonsense\n",
    );
    assert_eq!((bad.status, bad.body.as_str()), (401, ""));
    let expired = token::mint(&[7; 32], NOW - 100, 60);
    let h = format!("X-aws-ec2-metadata-token: {expired}\n");
    assert_eq!(get(&s, "/latest/meta-data/instance-id", &h).status, 401);
}

#[test]
fn required_mode_refuses_v1() {
    let s = snapshot_with(|c| c.aws.imdsv2 = crate::config::aws::Imdsv2::Required);
    assert_eq!(get(&s, "/latest/meta-data/instance-id", "").status, 401);
    // Even `/` and unknown paths: the token is checked before the path.
    assert_eq!(get(&s, "/", "").status, 401);
    assert_eq!(get(&s, "/latest/nothing", "").status, 401);
    let t = format!("X-aws-ec2-metadata-token: {}\n", valid_token(60));
    assert_eq!(get(&s, "/latest/meta-data/instance-id", &t).status, 200);
    assert_eq!(get(&s, "/latest/nothing", &t).status, 404);
    // A token minted under one snapshot is valid under the next (same keys).
    let reloaded = snapshot_with(|c| c.aws.imdsv2 = crate::config::aws::Imdsv2::Required);
    assert_eq!(get(&reloaded, "/latest/meta-data/ami-id", &t).status, 200);
}

#[test]
fn disabled_endpoint_forbids_everything() {
    let s = snapshot_with(|c| c.aws.http_endpoint = crate::config::aws::HttpEndpoint::Disabled);
    assert_eq!(get(&s, "/latest/meta-data/", "").status, 403);
    assert_eq!(get(&s, "/", "").status, 403);
    let ttl = "X-aws-ec2-metadata-token-ttl-seconds: 60\n";
    assert_eq!(put_token(&s, "/latest/api/token", ttl).status, 403);
}

#[test]
fn root_and_version_listings() {
    let s = snapshot_with(|c| c.gce.enabled = false);
    let a = get(&s, "/", "");
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with("1.0\n2007-01-19\n"));
    assert!(a.body.ends_with("\n2021-03-23\nlatest"));
    for p in ["/latest", "/latest/", "/2021-03-23/"] {
        let a = get(&s, p, "");
        assert_eq!(a.body, "dynamic\nmeta-data\nuser-data", "{p}");
    }
    let no_ud = snapshot_with(|c| c.aws.user_data = None);
    assert_eq!(get(&no_ud, "/latest/", "").body, "dynamic\nmeta-data");
    assert_eq!(get(&no_ud, "/latest/user-data", "").status, 404);
    assert_eq!(get(&s, "/2099-01-01/meta-data/", "").status, 404);
}

#[test]
fn root_errors_stay_errors_through_the_snapshot() {
    // The snapshot swaps a static `/` answer for the version list: errors must be dynamic.
    let s = snapshot_with(|_| {});
    let a = ask_at(&s, NOW, "DELETE / HTTP/1.1\nHost: x\n\n");
    assert_eq!(a.status, 405);
}

#[test]
fn meta_data_listing_is_sorted_and_generated_dirs_appear() {
    let s = snapshot_with(|c| c.aws.tags.enabled = true);
    let a = get(&s, "/latest/meta-data/", "");
    let lines: Vec<&str> = a.body.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.trim_end_matches('/'));
    assert_eq!(lines, sorted);
    for entry in [
        "iam/",
        "tags/",
        "public-keys/",
        "placement/",
        "network/",
        "ami-id",
    ] {
        assert!(lines.contains(&entry), "{entry} in {lines:?}");
    }
    assert!(!a.body.ends_with('\n'));
    assert_eq!(
        get(&s, "/latest/meta-data/tags/instance", "").body,
        "Name\nEnvironment"
    );
    assert_eq!(
        get(&s, "/latest/meta-data/tags/instance/Name", "").body,
        "imds-tun-demo"
    );
    let off = snapshot_with(|_| {});
    assert_eq!(get(&off, "/latest/meta-data/tags/instance", "").status, 404);
    assert!(!get(&off, "/latest/meta-data/", "").body.contains("tags/"));
}

#[test]
fn trailing_slash_on_a_leaf_answers_the_value() {
    let s = snapshot_with(|_| {});
    for p in [
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/placement/availability-zone/",
    ] {
        assert_eq!(get(&s, p, "").body, "eu-west-1a");
    }
    assert_eq!(
        get(&s, "/latest/meta-data/placement/region//", "").status,
        404
    );
    assert_eq!(get(&s, "/latest//meta-data/", "").status, 404);
}

#[test]
fn public_keys_layout() {
    let s = snapshot_with(|_| {});
    assert_eq!(
        get(&s, "/latest/meta-data/public-keys/", "").body,
        "0=imds-tun-demo"
    );
    assert_eq!(
        get(&s, "/latest/meta-data/public-keys/0/", "").body,
        "openssh-key"
    );
    assert!(get(&s, "/latest/meta-data/public-keys/0/openssh-key", "")
        .body
        .starts_with("ssh-ed25519 "));
}

#[test]
fn iam_documents() {
    let s = snapshot_with(|_| {});
    assert_eq!(
        get(&s, "/latest/meta-data/iam/security-credentials/", "").body,
        "imds-tun-demo-role"
    );
    assert_eq!(
        get(&s, "/latest/meta-data/iam/", "").body,
        "info\nsecurity-credentials/"
    );
    let path = "/latest/meta-data/iam/security-credentials/imds-tun-demo-role";
    // Minted: LastUpdated is the start of the hour, Expiration six hours later.
    let creds = ask_at(&s, NOW + 1800, &format!("GET {path} HTTP/1.1\n\n"));
    assert!(creds.head.contains("\r\nContent-Type: text/plain\r\n"));
    assert!(creds
        .head
        .contains("\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n"));
    let v: serde_json::Value =
        serde_json::from_str(&creds.body).unwrap_or_else(|e| panic!("{e}: {}", creds.body));
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["Type"], "AWS-HMAC");
    assert_eq!(v["LastUpdated"], "2026-01-01T00:00:00Z");
    assert_eq!(v["Expiration"], "2026-01-01T06:00:00Z");
    assert!(v["AccessKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("ASIA") && k.len() == 20));
    assert!(creds.body.starts_with("{\n  \"Code\" : \"Success\",\n"));
    let info = ask_at(
        &s,
        NOW + 1800,
        "GET /latest/meta-data/iam/info HTTP/1.1\n\n",
    );
    assert!(info
        .body
        .contains("\"InstanceProfileId\" : \"AIPAQ3IMDSTUNEXAMPLE7\""));
    assert!(info
        .body
        .contains("\"LastUpdated\" : \"2026-01-01T00:00:00Z\""));
    let later = ask_at(&s, NOW + 3600, &format!("GET {path}/ HTTP/1.1\n\n"));
    assert_ne!(later.body, creds.body, "rotated at the hour");
    assert_eq!(get(&s, "/2009-04-04/meta-data/iam/info", "").status, 200);
    assert_eq!(get(&s, "/2000-01-01/meta-data/iam/info", "").status, 404);

    // Static credentials are served as configured.
    let fixed = snapshot_with(|c| {
        let iam = c.aws.iam.as_mut().unwrap_or_else(|| panic!("iam"));
        iam.credentials = serde_json::from_value(serde_json::json!({"static": {
            "accessKeyId": "ASIAQ3IMDSTUNEXAMPLE", "secretAccessKey": "s", "token": "t",
            "expiration": "2035-12-31T23:00:00Z", "lastUpdated": "2025-12-31T23:00:00Z"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    });
    let creds = get(&fixed, path, "");
    assert!(creds
        .head
        .contains("\r\nLast-Modified: Wed, 31 Dec 2025 23:00:00 GMT\r\n"));
    let v: serde_json::Value = serde_json::from_str(&creds.body).unwrap_or_default();
    assert_eq!(v["AccessKeyId"], "ASIAQ3IMDSTUNEXAMPLE");
    assert_eq!(v["Expiration"], "2035-12-31T23:00:00Z");
    let none = snapshot_with(|c| c.aws.iam = None);
    assert_eq!(get(&none, "/latest/meta-data/iam/info", "").status, 404);
}

#[test]
fn identity_document_agrees_with_meta_data() {
    let s = snapshot_with(|_| {});
    let a = get(&s, "/latest/dynamic/instance-identity/document", "");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["instanceId"], "i-0f1e2d3c4b5a69788");
    assert_eq!(v["region"], "eu-west-1");
    assert_eq!(v["availabilityZone"], "eu-west-1a");
    assert_eq!(v["privateIp"], "10.0.1.23");
    assert_eq!(v["billingProducts"], serde_json::Value::Null);
    let keys: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("accountId"));
    assert_eq!(keys.last().map(|k| k.as_str()), Some("version"));
    assert_eq!(
        get(&s, "/latest/dynamic/instance-identity/", "").body,
        "document\nrsa2048\npkcs7\nsignature"
    );
    // The signature is RSA-SHA256 over the document's bytes, by the AWS leaf's key.
    use base64::Engine as _;
    use rsa::signature::Verifier;
    let sig = get(&s, "/latest/dynamic/instance-identity/signature", "").body;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .unwrap_or_default();
    let keys = crate::identity::IdentityKeys::fixed();
    let spki = keys
        .leaf(crate::identity::Leaf::Aws)
        .tbs_certificate
        .subject_public_key_info
        .clone();
    let der = x509_cert::der::Encode::to_der(&spki).unwrap_or_default();
    let public = <rsa::RsaPublicKey as x509_cert::spki::DecodePublicKey>::from_public_key_der(&der)
        .unwrap_or_else(|e| panic!("{e}"));
    let signature =
        rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public)
        .verify(a.body.as_bytes(), &signature)
        .unwrap_or_else(|e| panic!("{e}"));
    let pkcs7 = get(&s, "/latest/dynamic/instance-identity/pkcs7", "").body;
    assert!(pkcs7.lines().all(|l| l.len() <= 64) && pkcs7.lines().count() > 10);
    assert_eq!(
        get(&s, "/latest/dynamic/instance-identity/rsa2048", "").body,
        pkcs7
    );
}

#[test]
fn user_data_is_octets() {
    let s = snapshot_with(|_| {});
    let a = get(&s, "/latest/user-data", "");
    assert!(a
        .head
        .contains("\r\nContent-Type: application/octet-stream\r\n"));
    assert!(a.body.starts_with("#cloud-config\n"));
}

#[test]
fn not_found_is_the_xhtml_page() {
    let s = snapshot_with(|_| {});
    let a = get(&s, "/latest/meta-data/nothing-here", "");
    assert_eq!(a.status, 404);
    assert!(a.head.contains("\r\nContent-Type: text/html\r\n"));
    assert!(a.head.contains("\r\nContent-Length: 339\r\n"));
    assert_eq!(
        get(&s, "/latest/meta-data/spot/instance-action", "").status,
        404
    );
}

#[test]
fn head_is_answered_as_get() {
    let s = snapshot_with(|_| {});
    let a = ask_at(
        &s,
        NOW,
        "HEAD /latest/meta-data/ami-id HTTP/1.1\nHost: x\n\n",
    );
    assert_eq!(a.status, 200);
    assert!(a.head.contains("\r\nContent-Length: 21\r\n"));
    assert_eq!(a.body, "");
}

#[test]
fn hostile_paths_never_panic() {
    let s = snapshot_with(|_| {});
    for p in [
        "/latest/../latest/meta-data/",
        "/latest/meta-data/%2e%2e/",
        "/latest/meta-data/\u{e9}",
        "//",
        "//latest/meta-data/",
        "/latest/api/token/..",
    ] {
        let a = get(&s, p, "");
        assert!(a.status == 404 || a.status == 405, "{p}: {}", a.status);
    }
}
