//! Request → reply tests for the Azure router, on the embedded default configuration unless a
//! test says otherwise.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::Azure;
use crate::cloud::{Reply, RequestContext};
use crate::config::{self, AzureConfig, Problems};
use crate::http::parse::{header_array, parse_request, Limits, Parsed};
use crate::live::Live;
use crate::snapshot::Keys;

fn no_env(_: &str) -> Option<String> {
    None
}

fn default_azure() -> AzureConfig {
    config::default_config(&no_env)
        .unwrap_or_else(|e| panic!("{e}"))
        .azure
}

/// The router and the live state (scheduled events) it answers with.
struct Bench {
    azure: Azure,
    live: Live,
}

fn build(cfg: &AzureConfig) -> Bench {
    let whole = config::Config {
        azure: cfg.clone(),
        ..Default::default()
    };
    Bench {
        azure: Azure::build(cfg, &Keys::fixed(1), &mut Problems::new()),
        live: Live::new(&whole),
    }
}

fn ctx() -> RequestContext {
    let addr: SocketAddr = "169.254.0.2:1234".parse().unwrap_or_else(|e| panic!("{e}"));
    RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        peer: addr,
        local: addr,
        door: Default::default(),
        wait_over: false,
    }
}

/// An answer: status, content type, body, and whether it was static.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
    is_static: bool,
    head: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn ask(bench: &Bench, raw: &str) -> Answer {
    let mut headers = header_array();
    let request = match parse_request(raw.as_bytes(), &mut headers, &Limits::default()) {
        Ok(Parsed::Complete { request, .. }) => request,
        other => panic!("unparsed request: {other:?}"),
    };
    let (bytes, is_static) = match bench.azure.respond(&request, &ctx(), &bench.live) {
        Reply::Static(p) => (p.bytes().to_vec(), true),
        Reply::Shared(p) => (p.bytes().to_vec(), true),
        Reply::Later(..) | Reply::Drop(_) => panic!("no faults here"),
        Reply::Dynamic(r) => (r.render(false, false).0, false),
        Reply::Pending(t) => panic!("parked on {t:?}"),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    Answer {
        status,
        content_type,
        body: body.to_string(),
        is_static,
        head: head.to_string(),
    }
}

fn get(azure: &Bench, target: &str) -> Answer {
    ask(
        azure,
        &format!("GET {target} HTTP/1.1\r\nMetadata: true\r\n\r\n"),
    )
}

const V: &str = "api-version=2021-02-01";

#[test]
fn versions_list_needs_no_api_version() {
    let a = build(&default_azure());
    let r = get(&a, "/metadata/versions");
    assert_eq!(r.status, 200);
    let list = r.json()["apiVersions"].as_array().map(Vec::len);
    assert_eq!(list, Some(35));
    assert_eq!(r.json()["apiVersions"][0], "2017-03-01");
    assert!(r.is_static);
    assert!(r.head.contains("\r\nServer: IMDS/150.870.65.1854"));
}

#[test]
fn instance_document_and_sub_paths() {
    let cfg = default_azure();
    let a = build(&cfg);
    let r = get(&a, &format!("/metadata/instance?{V}"));
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json; charset=utf-8")
    );
    assert_eq!(r.json()["compute"]["vmId"], cfg.instance.compute["vmId"]);
    assert!(r.is_static);

    let r = get(
        &a,
        &format!("/metadata/instance/compute/vmId?{V}&format=text"),
    );
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );
    assert_eq!(Some(r.body.as_str()), cfg.instance.compute["vmId"].as_str());

    let r = get(
        &a,
        &format!("/metadata/instance/network/interface/0/ipv4/ipAddress/0/publicIpAddress?{V}&format=text"),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "20.61.15.203"));

    let slash = get(&a, &format!("/metadata/instance/compute/?{V}"));
    let plain = get(&a, &format!("/metadata/instance/compute?{V}"));
    assert_eq!((slash.status, &slash.body), (200, &plain.body));
    let escaped = get(
        &a,
        &format!("/metadata/instance/compute/vm%49d?{V}&format=text"),
    );
    assert_eq!(
        escaped.body,
        cfg.instance.compute["vmId"].as_str().unwrap_or("?")
    );
}

#[test]
fn leaves_need_format_text_and_containers_list_with_it() {
    let a = build(&default_azure());
    for q in ["", "&format=json"] {
        let r = get(&a, &format!("/metadata/instance/compute/vmId?{V}{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("format=text")));
    }
    let r = get(&a, &format!("/metadata/instance?{V}&format=text"));
    assert_eq!((r.status, r.body.as_str()), (200, "compute/\nnetwork/"));
    let r = get(
        &a,
        &format!("/metadata/instance/network/interface?{V}&format=text"),
    );
    assert_eq!(r.body, "0/");
    let r = get(&a, &format!("/metadata/instance?{V}&format=xml"));
    assert_eq!(r.status, 400);
}

#[test]
fn header_rules_come_first() {
    let a = build(&default_azure());
    let r = ask(&a, &format!("GET /metadata/instance?{V} HTTP/1.1\r\n\r\n"));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "Bad request. Required metadata header not specified"
    );
    let r = ask(
        &a,
        "GET /metadata/nothing HTTP/1.1\r\nMetadata: false\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let r = ask(
        &a,
        &format!("GET /metadata/instance?{V} HTTP/1.1\r\nMetadata: true\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("X-Forwarded-For"));
}

#[test]
fn api_version_is_checked_per_endpoint() {
    let a = build(&default_azure());
    let expected = r#"{"error":"Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds","newest-versions":["2025-04-07","2024-07-17","2024-03-15"]}"#;
    for target in [
        "/metadata/instance",
        "/metadata/instance?api-version=2099-01-01",
        "/metadata/instance/compute/nothing",
        "/metadata/loadbalancer?api-version=2020-09-01",
    ] {
        let r = get(&a, target);
        assert_eq!((r.status, r.body.as_str()), (400, expected), "{target}");
    }
    let r = get(&a, "/metadata/loadbalancer?api-version=2020-10-01");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["loadbalancer"]["inboundRules"][0]["frontendPort"],
        443
    );
    let r = get(&a, "/metadata/scheduledevents?api-version=2021-02-01");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["newest-versions"][0], "2020-07-01");
    let r = get(&a, "/metadata/scheduledevents?api-version=2019-01-01");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"DocumentIncarnation":1,"Events":[]}"#)
    );
}

#[test]
fn configured_api_versions_replace_the_list() {
    let mut cfg = default_azure();
    cfg.api_versions = Some(vec!["2021-02-01".into(), "2030-01-01".into()]);
    let a = build(&cfg);
    assert_eq!(
        get(&a, "/metadata/instance?api-version=2030-01-01").status,
        200
    );
    let r = get(&a, "/metadata/instance?api-version=2019-06-01");
    assert_eq!(
        r.json()["newest-versions"],
        serde_json::json!(["2030-01-01", "2021-02-01"])
    );
    assert_eq!(
        get(&a, "/metadata/versions").json()["apiVersions"],
        serde_json::json!(["2021-02-01", "2030-01-01"])
    );
}

#[test]
fn bad_queries_paths_and_methods() {
    let a = build(&default_azure());
    let r = get(&a, &format!("/metadata/instance?{V}&{V}"));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Duplicate"));
    assert_eq!(
        get(&a, &format!("/metadata/instance?{V}&x=%zz")).status,
        400
    );
    let r = get(&a, &format!("/metadata/instance/compute/nothing?{V}"));
    assert_eq!(r.status, 404);
    assert!(!r.is_static);
    assert_eq!(
        r.body,
        r#"{"error":"API is not found: Path = \"/metadata/instance/compute/nothing\", Method = \"GET\""}"#
    );
    assert_eq!(
        get(&a, &format!("/metadata/instance/../versions?{V}")).status,
        404
    );
    assert_eq!(
        get(&a, &format!("/metadata/instance/network/interface/7?{V}")).status,
        404
    );
    assert_eq!(
        get(&a, "/metadata/attested/document?api-version=2018-04-02").status,
        400
    );
    assert_eq!(
        get(
            &a,
            "/metadata/attested/document?api-version=2021-02-01&nonce=12-34"
        )
        .status,
        400
    );
    let r = ask(
        &a,
        &format!("POST /metadata/instance?{V} HTTP/1.1\r\nMetadata: true\r\n\r\n"),
    );
    assert_eq!(r.status, 405);
    assert!(r.head.contains("\r\nAllow: GET"));
    let r = ask(
        &a,
        &format!("DELETE /metadata/scheduledevents?{V} HTTP/1.1\r\nMetadata: true\r\n\r\n"),
    );
    assert_eq!(r.status, 405);
    assert!(r.head.contains("\r\nAllow: GET, POST"));
}

#[test]
fn loadbalancer_absent_is_404() {
    let mut cfg = default_azure();
    cfg.loadbalancer = None;
    let a = build(&cfg);
    for target in [
        "/metadata/loadbalancer?api-version=2021-02-01",
        "/metadata/loadbalancer/x?api-version=2021-02-01",
    ] {
        let r = get(&a, target);
        assert_eq!(r.status, 404, "{target}");
        assert!(r.body.contains("No load balancer metadata is found"));
    }
}

#[test]
fn scheduled_event_approvals_are_validated() {
    let cfg: AzureConfig = {
        let text = r#"{"azure": {"enabled": true, "scheduledEvents": {"documentIncarnation": 3,
            "events": [{"eventId": "602d9444-d2cd-49c7-8624-8643e7171297", "eventType": "Reboot",
            "resources": ["vm"], "notBefore": "Thu, 01 Jan 2026 00:15:00 GMT"}]}}}"#;
        config::load_str(text, "t.json", &no_env)
            .unwrap_or_else(|e| panic!("{e}"))
            .azure
    };
    let a = build(&cfg);
    let post = |body: &str| {
        ask(
            &a,
            &format!(
                "POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nMetadata: true\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let r = post(r#"{"StartRequests": [{"EventId": "602D9444-D2CD-49C7-8624-8643E7171297"}]}"#);
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(
        post(r#"{"StartRequests": [{"EventId": "nope"}]}"#).status,
        400
    );
    assert_eq!(post("garbage").status, 400);
    let r = get(&a, "/metadata/scheduledevents?api-version=2020-07-01");
    assert_eq!(
        r.json()["DocumentIncarnation"],
        4,
        "the approval started it"
    );
    assert_eq!(r.json()["Events"][0]["DurationInSeconds"], -1);
    assert_eq!(r.json()["Events"][0]["EventStatus"], "Started");
    assert_eq!(r.json()["Events"][0]["NotBefore"], "");
    assert!(r.is_static, "shared bytes, rendered once");
}

#[test]
fn identity_info_and_token() {
    let cfg = default_azure();
    let a = build(&cfg);
    let r = get(&a, "/metadata/identity/info?api-version=2018-02-01");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tenantId"], cfg.tenant_id.as_str());

    let r = get(
        &a,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    );
    assert_eq!(r.status, 200);
    assert!(!r.is_static);
    let body = r.json();
    let system = cfg
        .system_identity()
        .unwrap_or_else(|| panic!("no system identity"));
    assert_eq!(body["client_id"], system.client_id.as_str());
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["token_type"], "Bearer");
    // Minted at the start of the 5-minute window, valid 24 h.
    assert_eq!(body["expires_on"], "1767312000");
    assert_eq!(body["expires_in"], "86400");
    assert_eq!(body["not_before"], "1767225600");

    let user = &cfg.identities[1];
    let r = get(
        &a,
        &format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id={}",
            user.client_id.to_uppercase()
        ),
    );
    assert_eq!(r.json()["client_id"], user.client_id.as_str());
}

#[test]
fn token_errors_are_identity_style() {
    let a = build(&default_azure());
    let err = |target: &str, headers: &str| {
        let r = ask(&a, &format!("GET {target} HTTP/1.1\r\n{headers}\r\n"));
        (
            r.status,
            r.json()["error"].clone(),
            r.json()["error_description"].clone(),
        )
    };
    let t = "/metadata/identity/oauth2/token";
    let m = "Metadata: true\r\n";
    assert_eq!(
        err(&format!("{t}?api-version=2018-02-01&resource=r"), ""),
        (
            400,
            "invalid_request".into(),
            "Required metadata header not specified".into()
        )
    );
    assert_eq!(
        err(t, m).2,
        "api-version is invalid or was not specified in the request; use 2018-02-01 or later"
    );
    assert_eq!(
        err(&format!("{t}?api-version=2017-12-01&resource=r"), m).0,
        400
    );
    assert_eq!(
        err(&format!("{t}?api-version=2018-02-01"), m).2,
        "Required query variable 'resource' is missing"
    );
    assert_eq!(
        err(&format!("{t}?api-version=2018-02-01&resource=r&client_id=00000000-0000-0000-0000-000000000000"), m).2,
        "Identity not found"
    );
    assert_eq!(
        err(
            &format!("{t}?api-version=2018-02-01&resource=r&client_id=a&object_id=b"),
            m
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &format!("{t}?api-version=2018-02-01&resource=r&bypass_cache=false"),
            m
        )
        .0,
        400
    );
    let r = ask(
        &a,
        &format!("POST {t}?api-version=2018-02-01&resource=r HTTP/1.1\r\n{m}\r\n"),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"], "method_not_allowed");
}

#[test]
fn attested_document_is_signed_pkcs7_of_the_documented_content() {
    use base64::Engine as _;
    use x509_cert::der::Decode;
    let cfg = default_azure();
    let a = build(&cfg);
    let r = get(
        &a,
        "/metadata/attested/document?api-version=2021-02-01&nonce=1234567890",
    );
    assert_eq!(r.status, 200);
    assert!(!r.is_static);
    assert_eq!(r.json()["encoding"], "pkcs7");
    let der = base64::engine::general_purpose::STANDARD
        .decode(r.json()["signature"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let info = cms::content_info::ContentInfo::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
    let signed: cms::signed_data::SignedData =
        info.content.decode_as().unwrap_or_else(|e| panic!("{e}"));
    let content = signed
        .encap_content_info
        .econtent
        .map(|c| c.value().to_vec())
        .unwrap_or_default();
    let doc: Value = serde_json::from_slice(&content).unwrap_or_default();
    let compute = &cfg.instance.compute;
    assert_eq!(doc["nonce"], "1234567890");
    assert_eq!(doc["vmId"], compute["vmId"]);
    assert_eq!(doc["subscriptionId"], compute["subscriptionId"]);
    assert_eq!(doc["sku"], compute["sku"]);
    assert_eq!(doc["plan"], compute["plan"]);
    assert_eq!(doc["timeStamp"]["createdOn"], "01/01/26 00:00:00 -0000");
    assert_eq!(doc["timeStamp"]["expiresOn"], "01/01/26 06:00:00 -0000");
    assert!(
        doc.get("licenseType").is_none(),
        "no Hybrid Benefit license"
    );
    let r = get(&a, "/metadata/attested/document?api-version=2021-02-01");
    let der = base64::engine::general_purpose::STANDARD
        .decode(r.json()["signature"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&der).into_owned();
    assert!(
        text.contains("\"nonce\":\"20260101-000000\""),
        "default nonce"
    );
}

#[test]
fn no_identity_means_identity_not_found() {
    let mut cfg = default_azure();
    cfg.identities.clear();
    let a = build(&cfg);
    let r = get(
        &a,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_description"], "Identity not found");
}

#[test]
fn default_tokens_agree_with_the_instance() {
    let cfg = default_azure();
    let compute = &cfg.instance.compute;
    let a = build(&cfg);
    let keys = crate::identity::IdentityKeys::fixed();
    for id in &cfg.identities {
        let r = get(
            &a,
            &format!(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id={}",
                id.client_id
            ),
        );
        let token = r.json()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let claims = crate::identity::jwt::verify_with_jwks(&token, keys.jwks())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["tid"], cfg.tenant_id.as_str());
        assert_eq!(
            claims["iss"],
            format!("https://sts.windows.net/{}/", cfg.tenant_id)
        );
        assert_eq!(claims["appid"], id.client_id.as_str());
        assert_eq!(claims["oid"], id.object_id.as_str());
        let mirid = id.msi_res_id.as_deref().or(compute["resourceId"].as_str());
        assert_eq!(claims["xms_mirid"].as_str(), mirid);
        assert_eq!(
            claims["exp"].as_u64().map(|e| e.to_string()),
            r.json()["expires_on"].as_str().map(String::from)
        );
        for k in ["iat", "nbf"] {
            assert!(!claims[k].is_null(), "{k}");
        }
    }
    let sub = compute["subscriptionId"].as_str().unwrap_or("?");
    assert!(compute["resourceId"]
        .as_str()
        .is_some_and(|r| r.contains(sub)));
    let zone_prefix = compute["physicalZone"].as_str().unwrap_or("");
    assert!(zone_prefix.starts_with(compute["location"].as_str().unwrap_or("?")));
}
