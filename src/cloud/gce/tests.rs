//! Request → reply tests for the GCE rules, against the embedded default configuration.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::default_config;
use crate::http::parse::{header_array, parse_request, Limits, Parsed};

fn ctx() -> RequestContext {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
    RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        peer: addr("127.0.0.1:40000"),
        local: addr("169.254.169.254:80"),
        door: Default::default(),
        wait_over: false,
    }
}

fn config() -> GceConfig {
    default_config(&|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .gce
}

fn gce_with(config: &GceConfig) -> Gce {
    let mut problems = Problems::new();
    let gce = Gce::build(config, &Keys::fixed(1), &mut problems);
    assert!(problems.is_empty());
    gce
}

/// The answer as (status, header lines, body).
struct Answer {
    status: u16,
    head: String,
    body: String,
    is_static: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

fn ask(gce: &Gce, method: &str, target: &str, headers: &[&str], body: &str) -> Answer {
    match ask_in(gce, method, target, headers, body, &ctx()) {
        Ok(a) => a,
        Err(t) => panic!("parked on {t:?}"),
    }
}

/// The answer, or the ticket the request parked on.
fn ask_in(
    gce: &Gce,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
    ctx: &RequestContext,
) -> Result<Answer, Ticket> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: metadata.google.internal\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    if !body.is_empty() {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    let mut hs = header_array();
    let Ok(Parsed::Complete { request, .. }) =
        parse_request(raw.as_bytes(), &mut hs, &Limits::default())
    else {
        panic!("unparsable test request {raw:?}")
    };
    let (bytes, is_static) = match gce.respond(&request, ctx) {
        Reply::Static(p) => (p.bytes().to_vec(), true),
        Reply::Dynamic(r) => (r.render(false, false).0, false),
        Reply::Pending(t) => return Err(t),
        other => panic!("not an answer: {other:?}"),
    };
    let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap_or(0);
    Ok(Answer {
        status,
        head: head.replace("\r\n", "\n"),
        body: body.to_string(),
        is_static,
    })
}

const FLAVOR: &str = "Metadata-Flavor: Google";

fn get(gce: &Gce, target: &str) -> Answer {
    ask(gce, "GET", target, &[FLAVOR], "")
}

#[test]
fn root_answers_without_the_request_header() {
    let gce = gce_with(&config());
    let a = ask(&gce, "GET", "/", &[], "");
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "0.1/\ncomputeMetadata/\n");
    assert_eq!(a.header("Metadata-Flavor"), Some("Google"));
    assert!(a.is_static);
    let a = ask(&gce, "GET", "/computeMetadata/", &[FLAVOR], "");
    assert_eq!(a.body, "v1/\nv1beta1/\n");
}

#[test]
fn v1_needs_the_flavor_header() {
    let gce = gce_with(&config());
    let a = ask(&gce, "GET", "/computeMetadata/v1/instance/", &[], "");
    assert_eq!(a.status, 403);
    assert_eq!(a.header("Content-Type"), Some("text/html; charset=UTF-8"));
    assert!(a.body.contains(
        "Your client does not have permission to get URL <code>/computeMetadata/v1/instance/</code> \
         from this server. Missing Metadata-Flavor:Google header."
    ));
    let a = ask(
        &gce,
        "GET",
        "/computeMetadata/v1/instance/",
        &["Metadata-Flavor: google"],
        "",
    );
    assert_eq!(a.status, 403);
    let a = ask(
        &gce,
        "GET",
        "/computeMetadata/v1/project/project-id",
        &["X-Google-Metadata-Request: True"],
        "",
    );
    assert_eq!((a.status, a.body.as_str()), (200, "imds-tun-demo"));
}

#[test]
fn forwarded_requests_are_refused_everywhere() {
    let gce = gce_with(&config());
    for path in [
        "/",
        "/computeMetadata/v1/project/project-id",
        "/computeMetadata/v1beta1/",
    ] {
        let a = ask(
            &gce,
            "GET",
            path,
            &[FLAVOR, "X-Forwarded-For: 10.0.0.1"],
            "",
        );
        assert_eq!(a.status, 403, "{path}");
        assert_eq!(a.header("Metadata-Flavor"), Some("Google"));
    }
}

#[test]
fn every_answer_carries_the_google_headers() {
    let gce = gce_with(&config());
    for (method, target, headers) in [
        ("GET", "/", &[][..]),
        ("GET", "/computeMetadata/v1/instance/zone", &[FLAVOR][..]),
        ("GET", "/computeMetadata/v1/nope", &[FLAVOR][..]),
        ("GET", "/computeMetadata/v1/instance", &[FLAVOR][..]),
        ("GET", "/computeMetadata/v1/instance/", &[][..]),
        (
            "GET",
            "/computeMetadata/v1/instance/?alt=json",
            &[FLAVOR][..],
        ),
        ("DELETE", "/computeMetadata/v1/instance/", &[FLAVOR][..]),
    ] {
        let a = ask(&gce, method, target, headers, "");
        for (name, value) in [
            ("Metadata-Flavor", "Google"),
            ("Server", "Metadata Server for VM"),
            ("X-XSS-Protection", "0"),
            ("X-Frame-Options", "SAMEORIGIN"),
        ] {
            assert_eq!(a.header(name), Some(value), "{method} {target}: {name}");
        }
        let etag = a.header("ETag").unwrap_or_default();
        assert_eq!(etag.len(), 16, "{target}");
    }
}

#[test]
fn leaves_are_text_without_newline() {
    let gce = gce_with(&config());
    let a = get(&gce, "/computeMetadata/v1/project/numeric-project-id");
    assert_eq!((a.status, a.body.as_str()), (200, "123456789012"));
    assert_eq!(a.header("Content-Type"), Some("application/text"));
    assert!(a.is_static);
    let a = get(&gce, "/computeMetadata/v1/instance/zone?alt=json");
    assert_eq!(a.body, "\"projects/123456789012/zones/us-central1-a\"");
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    let a = get(&gce, "/computeMetadata/v1/universe/universe-domain");
    assert_eq!(a.body, "googleapis.com");
}

#[test]
fn tags_default_to_json_and_scopes_to_text() {
    let gce = gce_with(&config());
    let a = get(&gce, "/computeMetadata/v1/instance/tags");
    assert_eq!(a.body, "[\"http-server\",\"https-server\"]");
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    let b = get(&gce, "/computeMetadata/v1/instance/tags?alt=text");
    assert_eq!(b.body, "http-server\nhttps-server\n");
    assert_eq!(
        a.header("ETag"),
        b.header("ETag"),
        "the ETag names the value"
    );
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/default/scopes",
    );
    assert_eq!(
        a.body,
        "https://www.googleapis.com/auth/cloud-platform\nhttps://www.googleapis.com/auth/userinfo.email\n"
    );
}

#[test]
fn directories_list_redirect_and_recurse() {
    let gce = gce_with(&config());
    let a = get(&gce, "/computeMetadata/v1/");
    assert_eq!(a.body, "instance/\nproject/\nuniverse/\n");
    let a = get(&gce, "/computeMetadata/v1/instance");
    assert_eq!(a.status, 301);
    assert_eq!(a.header("Location"), Some("/computeMetadata/v1/instance/"));
    assert_eq!(a.body, "/computeMetadata/v1/instance/");
    assert!(a.is_static);
    let a = get(&gce, "/computeMetadata/v1/instance?recursive=true");
    assert_eq!(
        a.header("Location"),
        Some("/computeMetadata/v1/instance/?recursive=true")
    );
    let a = get(&gce, "/computeMetadata/v1/instance/service-accounts/");
    assert_eq!(
        a.body,
        "default/\n123456789012-compute@developer.gserviceaccount.com/\n"
    );
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/default/",
    );
    assert_eq!(a.body, "aliases\nemail\nidentity\nscopes\ntoken\n");
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
    );
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    assert_eq!(
        v["email"],
        "123456789012-compute@developer.gserviceaccount.com"
    );
    assert_eq!(v["aliases"][0], "default");
    assert!(v.get("token").is_none() && v.get("identity").is_none());
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/network-interfaces/0/?recursive=true&alt=text",
    );
    assert!(
        a.body
            .contains("access-configs/0/external-ip 34.121.5.10\n"),
        "{}",
        a.body
    );
    assert_eq!(a.header("Content-Type"), Some("application/text"));
    let a = get(&gce, "/computeMetadata/v1/?recursive=true");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    assert_eq!(v["project"]["numericProjectId"], 123456789012u64);
    assert_eq!(
        v["instance"]["machineType"],
        "projects/123456789012/machineTypes/e2-medium"
    );
    assert_eq!(v["instance"]["id"], 4520031799277581759u64);
    assert_eq!(v["instance"]["attributes"]["enable-oslogin"], "FALSE");
}

#[test]
fn bad_queries_are_400() {
    let gce = gce_with(&config());
    for target in [
        "/computeMetadata/v1/instance/?alt=json",
        "/computeMetadata/v1/instance/?alt=text",
        "/computeMetadata/v1/instance/?wait_for_change=true",
        "/computeMetadata/v1/instance/zone?alt=yaml",
        "/computeMetadata/v1/instance/zone?recursive=maybe",
        "/computeMetadata/v1/instance/zone?alt=json&alt=text",
        "/computeMetadata/v1/instance/zone?wait_for_change=true&timeout_sec=x",
    ] {
        let a = get(&gce, target);
        assert_eq!(a.status, 400, "{target}");
        assert!(a.is_static);
    }
}

#[test]
fn wait_for_change_answers_at_once_when_the_etag_differs() {
    let gce = gce_with(&config());
    let a = get(&gce, "/computeMetadata/v1/instance/zone");
    let etag = a.header("ETag").unwrap_or_default().to_string();
    let b = get(
        &gce,
        "/computeMetadata/v1/instance/zone?wait_for_change=true&last_etag=0000000000000000&timeout_sec=5",
    );
    assert_eq!((b.status, b.body.as_str()), (200, a.body.as_str()));
    assert_eq!(b.header("ETag"), Some(etag.as_str()));
    // alt=json names the same value: the same ETag.
    let j = get(&gce, "/computeMetadata/v1/instance/zone?alt=json");
    assert_eq!(j.header("ETag"), Some(etag.as_str()));
}

#[test]
fn wait_for_change_parks_on_the_same_etag_until_retired_or_over() {
    let gce = gce_with(&config());
    for path in [
        "/computeMetadata/v1/instance/zone",
        "/computeMetadata/v1/instance/?recursive=true",
        "/computeMetadata/v1/project/attributes/?recursive=true&alt=text",
    ] {
        let a = get(&gce, path);
        let etag = a.header("ETag").unwrap_or_default().to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let target = format!("{path}{sep}wait_for_change=true&last_etag={etag}&timeout_sec=7");
        let ticket = match ask_in(&gce, "GET", &target, &[FLAVOR], "", &ctx()) {
            Err(t) => t,
            Ok(a) => panic!("{path}: answered {} at once", a.status),
        };
        assert_eq!(ticket.limit(), Duration::from_secs(7), "{path}");
        assert!(!ticket.is_done());
        // Without last_etag it waits for the next change, at most WATCH_LIMIT.
        let no_etag = format!("{path}{sep}wait_for_change=true");
        match ask_in(&gce, "GET", &no_etag, &[FLAVOR], "", &ctx()) {
            Err(t) => assert_eq!(t.limit(), WATCH_LIMIT),
            Ok(_) => panic!("{path}: no last_etag answered at once"),
        }
        // At its deadline the re-run answers the current value.
        let mut over = ctx();
        over.wait_over = true;
        let b = ask_in(&gce, "GET", &target, &[FLAVOR], "", &over)
            .unwrap_or_else(|t| panic!("parked again on {t:?}"));
        assert_eq!((b.status, b.body.as_str()), (200, a.body.as_str()));
    }
    let ticket = ask_in(
        &gce,
        "GET",
        "/computeMetadata/v1/instance/zone?wait_for_change=true",
        &[FLAVOR],
        "",
        &ctx(),
    )
    .err();
    gce.retire();
    assert!(
        ticket.is_some_and(|t| t.is_done()),
        "a retired rendering wakes its watchers"
    );
    // timeout_sec=0 answers at once; a non-recursive directory is a 400.
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/zone?wait_for_change=true&timeout_sec=0",
    );
    assert_eq!(a.status, 200);
    let a = get(&gce, "/computeMetadata/v1/instance/?wait_for_change=true");
    assert_eq!(a.status, 400);
}

#[test]
fn guest_attributes_are_stored_read_back_and_watched() {
    let gce = gce_with(&config());
    let base = "/computeMetadata/v1/instance/guest-attributes";
    let key = format!("{base}/testing/key1");
    let watch = |last: &str| {
        ask_in(
            &gce,
            "GET",
            &format!("{key}?wait_for_change=true&last_etag={last}"),
            &[FLAVOR],
            "",
            &ctx(),
        )
    };
    assert_eq!(get(&gce, &key).status, 404);
    let a = ask(&gce, "PUT", &key, &[FLAVOR], "value one");
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    let a = get(&gce, &key);
    assert_eq!((a.status, a.body.as_str()), (200, "value one"));
    assert_eq!(a.header("Content-Type"), Some("application/text"));
    let etag = a.header("ETag").unwrap_or_default().to_string();
    let ticket = watch(&etag).err().unwrap_or_else(|| panic!("did not park"));
    assert_eq!(ask(&gce, "PUT", &key, &[FLAVOR], "value two").status, 200);
    assert!(ticket.is_done(), "a write wakes the watcher");
    let b = watch(&etag).unwrap_or_else(|t| panic!("parked on {t:?}"));
    assert_eq!(b.body, "value two");
    assert_ne!(b.header("ETag"), Some(etag.as_str()));
    assert_eq!(
        get(&gce, &format!("{base}/")).body,
        "hostkeys/
testing/
"
    );
    assert_eq!(
        get(&gce, &format!("{base}/testing/")).body,
        "key1
"
    );
    let r = get(&gce, &format!("{base}/?recursive=true"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert_eq!(v["testing"]["key1"], "value two");
    assert!(v["hostkeys"]["ssh-ed25519"].is_string());
    let t = get(&gce, &format!("{base}/testing/?recursive=true&alt=text"));
    assert_eq!(
        t.body,
        "key1 value two
"
    );
    assert_eq!(
        get(&gce, &format!("{base}/testing/key1?alt=json")).body,
        "\"value two\""
    );
    let r = get(&gce, &format!("{base}/testing"));
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("Location"),
        Some(format!("{base}/testing/").as_str())
    );
    // Written values outlive the rendering: a new one (a reload) over the same store shows them.
    let keys = Keys::fixed(1);
    let mut problems = Problems::new();
    let first = Gce::build(&config(), &keys, &mut problems);
    assert_eq!(ask(&first, "PUT", &key, &[FLAVOR], "kept").status, 200);
    let second = Gce::build(&config(), &keys, &mut problems);
    assert_eq!(get(&second, &key).body, "kept");
}

#[test]
fn token_is_json_with_numeric_expiry() {
    let gce = gce_with(&config());
    for who in [
        "default",
        "123456789012-compute@developer.gserviceaccount.com",
        "123456789012-compute%40developer.gserviceaccount.com",
    ] {
        let a = get(
            &gce,
            &format!("/computeMetadata/v1/instance/service-accounts/{who}/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform"),
        );
        assert_eq!(a.status, 200, "{who}");
        assert_eq!(a.header("Content-Type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        assert!(v["expires_in"].is_u64());
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["access_token"]
            .as_str()
            .unwrap_or("")
            .starts_with("ya29."));
    }
    let a = ask(
        &gce,
        "POST",
        "/computeMetadata/v1/instance/service-accounts/default/token",
        &[FLAVOR],
        "{}",
    );
    assert_eq!(a.status, 200);
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/default/token/",
    );
    assert_eq!(a.status, 404);
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/nobody@x.com/token",
    );
    assert_eq!(a.status, 404);
    let a = get(
        &gce,
        "/computeMetadata/v1/instance/service-accounts/default/token?alt=text",
    );
    assert!(a.body.starts_with("access_token ya29.") && a.body.ends_with("\ntoken_type Bearer\n"));
}

#[test]
fn identity_needs_an_audience() {
    let gce = gce_with(&config());
    let base = "/computeMetadata/v1/instance/service-accounts/default/identity";
    let a = get(&gce, base);
    assert_eq!(a.status, 400);
    assert_eq!(a.body, "non-empty audience parameter required\n");
    let a = get(&gce, &format!("{base}?audience="));
    assert_eq!(a.status, 400);
    let a = get(
        &gce,
        &format!("{base}?audience=https://example.com&format=full&licenses=TRUE"),
    );
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with("eyJ"));
    let a = get(&gce, &format!("{base}?audience=x&format=weird"));
    assert_eq!(a.status, 400);
}

#[test]
fn unknown_paths_get_googles_404() {
    let gce = gce_with(&config());
    for target in [
        "/computeMetadata/v1/instance/nope",
        "/computeMetadata/v1/instance/zone/",
        "/computeMetadata/v1/instance/../project/project-id",
        "/computeMetadata/v1//instance/",
        "/computeMetadata/v2/",
    ] {
        let a = get(&gce, target);
        assert_eq!(a.status, 404, "{target}");
        assert_eq!(a.header("Content-Type"), Some("text/html; charset=UTF-8"));
        assert!(a.body.contains("<title>Error 404 (Not Found)!!1</title>"));
    }
    assert_eq!(get(&gce, "/computeMetadata/v1/instance/%zz").status, 400);
}

#[test]
fn methods_are_checked() {
    let gce = gce_with(&config());
    assert_eq!(
        ask(
            &gce,
            "POST",
            "/computeMetadata/v1/instance/zone",
            &[FLAVOR],
            "x"
        )
        .status,
        405
    );
    assert_eq!(ask(&gce, "DELETE", "/", &[], "").status, 405);
    assert_eq!(
        ask(
            &gce,
            "PUT",
            "/computeMetadata/v1/instance/zone",
            &[FLAVOR],
            "x"
        )
        .status,
        405
    );
    let a = ask(
        &gce,
        "HEAD",
        "/computeMetadata/v1/instance/zone",
        &[FLAVOR],
        "",
    );
    assert_eq!(a.status, 200);
}

#[test]
fn legacy_endpoints_follow_the_attribute() {
    let gce = gce_with(&config());
    let a = ask(
        &gce,
        "GET",
        "/computeMetadata/v1beta1/project/project-id",
        &[],
        "",
    );
    assert_eq!((a.status, a.body.as_str()), (200, "imds-tun-demo"));
    let a = ask(&gce, "GET", "/0.1/meta-data/project-id", &[], "");
    assert_eq!((a.status, a.body.as_str()), (200, "imds-tun-demo"));
    let a = ask(&gce, "GET", "/0.1/", &[], "");
    assert_eq!(a.body, "meta-data/\n");
    let mut c = config();
    c.instance["attributes"]["disable-legacy-endpoints"] = "true".into();
    let gce = gce_with(&c);
    for target in [
        "/computeMetadata/v1beta1/project/project-id",
        "/0.1/meta-data/",
    ] {
        assert_eq!(ask(&gce, "GET", target, &[], "").status, 404, "{target}");
    }
}

#[test]
fn guest_attributes_put_is_validated() {
    let gce = gce_with(&config());
    let base = "/computeMetadata/v1/instance/guest-attributes";
    let a = ask(
        &gce,
        "PUT",
        &format!("{base}/testing/key1"),
        &[FLAVOR],
        "value",
    );
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    assert_eq!(
        ask(&gce, "PUT", &format!("{base}/testing/key1"), &[], "v").status,
        403
    );
    for bad in ["/testing", "/testing/a/b", "/te$t/key", "/testing/key/"] {
        assert_eq!(
            ask(&gce, "PUT", &format!("{base}{bad}"), &[FLAVOR], "v").status,
            400,
            "{bad}"
        );
    }
    let a = get(&gce, &format!("{base}/"));
    assert_eq!(a.body, "hostkeys/\ntesting/\n");
    let big = "v".repeat(guest::MAX_VALUE_BYTES + 1);
    let a = ask(&gce, "PUT", &format!("{base}/testing/big"), &[FLAVOR], &big);
    assert_eq!(a.status, 400);
    let mut c = config();
    c.instance["attributes"]["enable-guest-attributes"] = "FALSE".into();
    let gce = gce_with(&c);
    let a = ask(&gce, "PUT", &format!("{base}/testing/key1"), &[FLAVOR], "v");
    assert_eq!(a.status, 403);
    assert_eq!(a.body, "Guest attributes endpoint access is disabled.\n");
    assert_eq!(get(&gce, &format!("{base}/")).status, 403);
    let a = get(&gce, "/computeMetadata/v1/instance/");
    assert!(a.body.contains("guest-attributes/\n"));
}
