//! Request → reply tests for the token doors besides IMDS (HIMDS, App Service, legacy MSI)
//! and ECS container credentials, through [`Snapshot`] with the door set in the context.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cloud::azure::himds::{KeyEffect, KeyRing, KEY_ENTROPY};
use crate::cloud::{Door, Reply, RequestContext};
use crate::config;
use crate::http::parse::{header_array, parse_request, Limits, Parsed};
use crate::snapshot::{Keys, Snapshot};

const NOW: u64 = 1_767_225_600;

fn snapshot(edit: impl FnOnce(&mut Value)) -> Snapshot {
    let mut v: Value = serde_json::from_str(config::DEFAULT_JSON).unwrap_or_default();
    edit(&mut v);
    let cfg = config::load_str(&v.to_string(), "test", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(cfg, &Keys::fixed(3), "test").unwrap_or_else(|e| panic!("{e}"))
}

fn ctx(door: Door, secs: u64) -> RequestContext {
    let addr: SocketAddr = "127.0.0.1:40342".parse().unwrap_or_else(|e| panic!("{e}"));
    RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        peer: addr,
        local: addr,
        door,
        wait_over: false,
    }
}

/// (status, head, body) of a rendered reply.
fn render(reply: Reply<'_>) -> (u16, String, String) {
    let bytes = match reply {
        Reply::Static(p) => p.bytes().to_vec(),
        Reply::Dynamic(r) => r.render(false, false).0,
        Reply::Pending(t) => panic!("parked on {t:?}"),
        other => panic!("not an answer: {other:?}"),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // "HTTP/1.1 200 OK": the status is bytes 9..12.
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (status, head.to_string(), body.to_string()),
        None => (status, text, String::new()),
    }
}

fn with_request<T>(raw: &str, f: impl FnOnce(&crate::http::Request<'_>) -> T) -> T {
    let mut headers = header_array();
    match parse_request(raw.as_bytes(), &mut headers, &Limits::default()) {
        Ok(Parsed::Complete { request, .. }) => f(&request),
        other => panic!("unparsed: {other:?}"),
    }
}

fn ask(s: &Snapshot, door: Door, raw: &str) -> (u16, String, String) {
    with_request(raw, |req| render(s.respond(req, &ctx(door, NOW))))
}

const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https://management.azure.com";

fn himds(s: &Snapshot, ring: &mut KeyRing, raw: &str) -> ((u16, String, String), Vec<KeyEffect>) {
    let mut n = 0u8;
    let mut entropy = || {
        n += 1;
        [n; KEY_ENTROPY]
    };
    with_request(raw, |req| {
        let a = s.respond_himds(req, &ctx(Door::Himds, NOW), ring, &mut entropy);
        (render(a.reply), a.effects)
    })
}

#[test]
fn himds_challenges_then_serves_once() {
    let s = snapshot(|_| {});
    let mut ring = KeyRing::new();
    let ((status, head, _), effects) = himds(
        &s,
        &mut ring,
        &format!("GET {TOKEN} HTTP/1.1\r\nMetadata: true\r\n\r\n"),
    );
    assert_eq!(status, 401);
    let [KeyEffect::Write { name, secret }] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    assert!(head.contains(&format!(
        "\r\nWWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/{name}.key"
    )));
    let with_key =
        format!("GET {TOKEN} HTTP/1.1\r\nMetadata: true\r\nAuthorization: Basic {secret}\r\n\r\n");
    let ((status, _, body), effects) = himds(&s, &mut ring, &with_key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(effects, vec![KeyEffect::Remove { name: name.clone() }]);
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    assert!(body["access_token"].is_string() && body["expires_in"].is_string());
    // Used: a fresh challenge.
    let ((status, _, _), effects) = himds(&s, &mut ring, &with_key);
    assert_eq!(status, 401);
    assert!(matches!(effects.as_slice(), [KeyEffect::Write { .. }]));
}

#[test]
fn himds_checks_come_before_the_challenge_and_other_paths_need_none() {
    let s = snapshot(|_| {});
    let mut ring = KeyRing::new();
    let cases = [
        (format!("GET {TOKEN} HTTP/1.1\r\n\r\n"), 400),
        (
            "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=r HTTP/1.1\r\nMetadata: true\r\n\r\n".to_string(),
            400,
        ),
        (format!("POST {TOKEN} HTTP/1.1\r\nMetadata: true\r\n\r\n"), 405),
        (
            "GET /metadata/instance?api-version=2020-06-01 HTTP/1.1\r\nMetadata: true\r\n\r\n".to_string(),
            200,
        ),
        (
            "GET /metadata/instance/compute/vmId?api-version=2020-06-01&format=text HTTP/1.1\r\nMetadata: true\r\n\r\n".to_string(),
            200,
        ),
        (
            "GET /metadata/identity/info?api-version=2019-11-01 HTTP/1.1\r\nMetadata: true\r\n\r\n".to_string(),
            200,
        ),
        (
            "GET /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nMetadata: true\r\n\r\n".to_string(),
            404,
        ),
    ];
    for (raw, want) in cases {
        let ((status, _, body), effects) = himds(&s, &mut ring, &raw);
        assert_eq!(status, want, "{raw}: {body}");
        assert!(effects.is_empty(), "{raw}");
    }
    assert!(ring.is_empty());
    // Without its key ring the door cannot challenge.
    assert_eq!(
        ask(
            &s,
            Door::Himds,
            &format!("GET {TOKEN} HTTP/1.1\r\nMetadata: true\r\n\r\n")
        )
        .0,
        500
    );
}

#[test]
fn app_service_door() {
    let s = snapshot(|v| v["azure"]["appService"] = serde_json::json!({"header": "h3ader"}));
    let url = "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net";
    let (status, _, body) = ask(
        &s,
        Door::AppService,
        &format!("GET {url} HTTP/1.1\r\nX-IDENTITY-HEADER: h3ader\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let mut keys: Vec<&str> = body
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ]
    );
    let bad = [
        (format!("GET {url} HTTP/1.1\r\nX-IDENTITY-HEADER: nope\r\n\r\n"), 401),
        (format!("GET {url} HTTP/1.1\r\n\r\n"), 401),
        (
            "GET /msi/token?api-version=2018-02-01&resource=r HTTP/1.1\r\nX-IDENTITY-HEADER: h3ader\r\n\r\n".to_string(),
            400,
        ),
        (
            format!("GET {url}&principal_id=a&object_id=b HTTP/1.1\r\nX-IDENTITY-HEADER: h3ader\r\n\r\n"),
            400,
        ),
        (
            "GET /metadata/instance HTTP/1.1\r\nX-IDENTITY-HEADER: h3ader\r\n\r\n".to_string(),
            404,
        ),
    ];
    for (raw, want) in bad {
        assert_eq!(ask(&s, Door::AppService, &raw).0, want, "{raw}");
    }
}

#[test]
fn legacy_msi_door_needs_metadata_but_no_api_version() {
    let s = snapshot(|_| {});
    let url = "/oauth2/token?resource=https://vault.azure.net";
    let (status, _, body) = ask(
        &s,
        Door::LegacyMsi,
        &format!("GET {url} HTTP/1.1\r\nMetadata: true\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ask(&s, Door::LegacyMsi, &format!("GET {url} HTTP/1.1\r\n\r\n")).0,
        400
    );
    assert_eq!(
        ask(
            &s,
            Door::LegacyMsi,
            "GET /metadata/identity/oauth2/token HTTP/1.1\r\nMetadata: true\r\n\r\n"
        )
        .0,
        404
    );
}

#[test]
fn ecs_credentials_only_at_their_door() {
    let s = snapshot(|v| {
        v["aws"]["containerCredentials"] =
            serde_json::json!({"enabled": true, "relativeUri": "/v2/credentials/t"})
    });
    let raw = "GET /v2/credentials/t HTTP/1.1\r\n\r\n";
    let (status, _, body) = ask(&s, Door::ContainerCredentials, raw);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        doc["RoleArn"],
        "arn:aws:iam::123456789012:role/imds-tun-demo-role"
    );
    // The same minted credentials as IMDS gives at the same moment.
    let imds = ask(
        &s,
        Door::Metadata,
        "GET /latest/meta-data/iam/security-credentials/imds-tun-demo-role HTTP/1.1\r\n\r\n",
    );
    let imds: Value = serde_json::from_str(&imds.2).unwrap_or_default();
    assert!(doc["AccessKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("ASIA")));
    for key in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert_eq!(doc[key], imds[key], "{key}");
    }
    assert_eq!(
        ask(&s, Door::Metadata, raw).0,
        404,
        "not at 169.254.169.254"
    );
    let other = "GET /v2/credentials/x HTTP/1.1\r\n\r\n";
    assert_eq!(ask(&s, Door::ContainerCredentials, other).0, 400);
    // Everything else at 169.254.170.2 is answered as at 169.254.169.254.
    let id = "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
    assert_eq!(ask(&s, Door::ContainerCredentials, id).0, 200);
    assert_eq!(
        ask(
            &s,
            Door::ContainerCredentials,
            "PUT /v2/credentials/t HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
}
