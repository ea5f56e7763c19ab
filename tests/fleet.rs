//! A fleet on one host (`$.fleet`): callers at different source addresses see different
//! instances — identity, tags and tokens — from one process; callers of no profile get the base
//! instance or a reset, as configured.
//!
//! Through `serve`, cheaply: curl bound to 127.0.0.2, 127.0.0.3 and 127.0.0.4. Through `up`, as
//! on a host with containers: two network namespaces routed behind the test host (their
//! addresses are their identity), where curl and the real SDKs (tests/sdk/*.py with no
//! override at all, each checking its whole profile) run; a third namespace and the host
//! itself are refused.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{json, Value};
use support::netns::{Container, Shape, TestHost};
use support::up::Up;

/// The default configuration with fleet profiles `a` and `b` at `sources`.
fn fleet_config(sources: [&str; 2], unknown: &str) -> Value {
    let mut cfg: Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    let profiles: Vec<Value> = ["a", "b"]
        .iter()
        .zip(sources)
        .enumerate()
        .map(|(i, (name, source))| json!({"name": name, "sources": [source], "patch": patch(i)}))
        .collect();
    cfg["fleet"] = json!({"profiles": profiles, "unknownSources": unknown});
    // Containers are a routed hop away: as on EC2, IMDSv2 tokens need a hop limit of 2 to
    // reach them (the answer to the token PUT leaves with this TTL).
    cfg["aws"]["hopLimit"] = 2.into();
    cfg
}

/// What makes instance `i` itself: names, ids, tags, consistently everywhere they appear.
fn patch(i: usize) -> Value {
    let name = format!("fleet-vm-{i}");
    json!({
        "azure": {"instance": {"compute": {
            "name": name,
            "vmId": format!("00000000-0000-4000-8000-00000000000{i}"),
            "resourceId": format!("/subscriptions/6c3e8a1f-9b2d-4f7e-8a5c-1d0b3e9f7a24/resourceGroups/imds-tun-rg/providers/Microsoft.Compute/virtualMachines/{name}"),
            "osProfile": {"computerName": name},
            "tags": format!("role:web-{i}"),
            "tagsList": [{"name": "role", "value": format!("web-{i}")}],
        }}},
        "gce": {"instance": {
            "name": name,
            "id": 7_000_000_000_000_000_000u64 + i as u64,
            "hostname": format!("{name}.us-central1-a.c.imds-tun-demo.internal"),
            "tags": [format!("web-{i}")],
        }},
        "aws": {
            "metaData": {"instance-id": format!("i-0000000000000000{i}")},
            "tags": {"enabled": true, "instance": {"Name": name}},
        },
    })
}

/// Profile `i`'s whole configuration document, as the server derives it (for the SDK scripts,
/// which check everything they see against the document they are given).
fn profile_document(cfg: &Value, i: usize) -> Value {
    let mut doc = cfg.clone();
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("fleet");
    }
    imds_tun::config::fleet::merge_patch(&mut doc, &cfg["fleet"]["profiles"][i]["patch"]);
    doc
}

/// What one caller sees of its instance, over plain HTTP.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    azure_vm_id: String,
    azure_name: String,
    azure_tags: String,
    /// `xms_mirid` of a managed-identity token: the VM's resource id.
    azure_token_mirid: String,
    gce_id: String,
    gce_name: String,
    gce_tags: String,
    /// `google.compute_engine.instance_id` of an identity token.
    gce_token_instance_id: String,
    aws_instance_id: String,
    /// `instanceId` of the instance identity document.
    aws_document_instance_id: String,
    aws_tag_name: String,
}

impl Seen {
    /// What a configuration document says a caller must see.
    fn expected(doc: &Value) -> Seen {
        let compute = &doc["azure"]["instance"]["compute"];
        let gce = &doc["gce"]["instance"];
        let aws = &doc["aws"];
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        Seen {
            azure_vm_id: text(&compute["vmId"]),
            azure_name: text(&compute["name"]),
            azure_tags: text(&compute["tags"]),
            azure_token_mirid: text(&compute["resourceId"]),
            gce_id: text(&gce["id"]),
            gce_name: text(&gce["name"]),
            gce_tags: gce["tags"].to_string(),
            gce_token_instance_id: text(&gce["id"]),
            aws_instance_id: text(&aws["metaData"]["instance-id"]),
            aws_document_instance_id: text(&aws["metaData"]["instance-id"]),
            aws_tag_name: match aws["tags"]["enabled"].as_bool() {
                Some(true) => text(&aws["tags"]["instance"]["Name"]),
                _ => "404".into(),
            },
        }
    }

    /// Asks the instance at `base` through `curl` (a function running curl with the given
    /// arguments where the caller is).
    fn observe(curl: &dyn Fn(&[&str]) -> String, base: &str) -> Seen {
        let get = |headers: &[&str], path: &str| {
            let mut args = vec!["-sS", "-m", "5"];
            for h in headers {
                args.extend(["-H", h]);
            }
            let url = format!("{base}{path}");
            args.push(&url);
            curl(&args)
        };
        let az = |path: &str| get(&["Metadata: true"], path);
        let gce = |path: &str| get(&["Metadata-Flavor: Google"], path);
        let compute = parse(&az("/metadata/instance/compute?api-version=2021-02-01"));
        let token = parse(&az(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        ));
        let instance = parse(&gce("/computeMetadata/v1/instance/?recursive=true"));
        let identity = gce(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://fleet.test&format=full",
        );
        let document = parse(&get(&[], "/latest/dynamic/instance-identity/document"));
        let tag = curl(&[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/latest/meta-data/tags/instance/Name"),
        ]);
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        Seen {
            azure_vm_id: text(&compute["vmId"]),
            azure_name: text(&compute["name"]),
            azure_tags: text(&compute["tags"]),
            azure_token_mirid: text(&claims(text(&token["access_token"]).as_str())["xms_mirid"]),
            gce_id: text(&instance["id"]),
            gce_name: text(&instance["name"]),
            gce_tags: instance["tags"].to_string(),
            gce_token_instance_id: text(
                &claims(&identity)["google"]["compute_engine"]["instance_id"],
            ),
            aws_instance_id: get(&[], "/latest/meta-data/instance-id"),
            aws_document_instance_id: text(&document["instanceId"]),
            aws_tag_name: match tag.as_str() {
                "200" => get(&[], "/latest/meta-data/tags/instance/Name"),
                other => other.to_string(),
            },
        }
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The claims of a JWT (not verified here: the SDK scripts verify signatures).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("not a JWT ({e}): {jwt:?}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT claims: {e}"))
}

/// curl on this host, from source address `from`; its exit code and standard output.
fn curl_from(from: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("curl")
        .args(["--interface", from])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A curl that must succeed.
fn ok((code, out): (Option<i32>, String)) -> String {
    assert_eq!(code, Some(0), "curl failed: {out}");
    out
}

/// curl's exit code for a connection reset by the server: 7 when the reset arrives while curl
/// still completes its connect (serve resets on accept), 56 (receive failure) or 55 (send
/// failure) after it.
fn is_reset(code: Option<i32>) -> bool {
    matches!(code, Some(7 | 55 | 56))
}

fn write_config(dir: &Path, name: &str, cfg: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// `serve`: callers bound to 127.0.0.2 and 127.0.0.3 are instances a and b (a single address
/// and a /32); 127.0.0.4 is in no profile and gets the base instance.
#[test]
fn serve_answers_each_source_address_as_its_own_instance() {
    let dir = scratch_dir("serve");
    let cfg = fleet_config(["127.0.0.2", "127.0.0.3/32"], "default");
    let file = write_config(&dir, "fleet.json", &cfg);
    let check = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        format!(
            "{}: valid\nfleet profile a: 127.0.0.2/32\nfleet profile b: 127.0.0.3/32\n\
             other callers: the base configuration\n",
            file.display()
        )
    );
    let server = support::Server::start(Some(&file));
    let base = format!("http://{}", server.addr);
    let seen = |from: &str| Seen::observe(&|args| ok(curl_from(from, args)), &base);
    let (a, b, other) = (seen("127.0.0.2"), seen("127.0.0.3"), seen("127.0.0.4"));
    assert_eq!(a, Seen::expected(&profile_document(&cfg, 0)));
    assert_eq!(b, Seen::expected(&profile_document(&cfg, 1)));
    assert_eq!(other, Seen::expected(&cfg));
    // Every field differs between the two instances (the expectations could coincide only by
    // a mistake in the patches above).
    assert_ne!(a.azure_vm_id, b.azure_vm_id);
    assert_ne!(a.azure_token_mirid, b.azure_token_mirid);
    assert_ne!(a.gce_token_instance_id, b.gce_token_instance_id);
    assert_ne!(a.aws_document_instance_id, b.aws_document_instance_id);
    assert_ne!(a.aws_tag_name, other.aws_tag_name);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve` with `"unknownSources": "refuse"`: a caller of no profile is reset, whatever it
/// asks; the profiles' callers are served; the metrics count both per profile.
#[test]
fn serve_resets_unknown_sources_when_told_to_refuse() {
    let dir = scratch_dir("refuse");
    let cfg = fleet_config(["127.0.0.2", "127.0.0.3"], "refuse");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let server = support::Server::start_with(
        Some(&write_config(&dir, "fleet.json", &cfg)),
        ["--metrics", &metrics],
    );
    let url = format!("http://{}/latest/meta-data/instance-id", server.addr);
    for from in ["127.0.0.4", "127.0.0.1"] {
        let (code, out) = curl_from(from, &["-sS", "-m", "5", &url]);
        assert!(is_reset(code), "{from}: curl exit {code:?}, {out:?}");
    }
    assert_eq!(
        ok(curl_from("127.0.0.2", &["-sS", "-m", "5", &url])),
        "i-00000000000000000"
    );
    assert_eq!(
        ok(curl_from("127.0.0.3", &["-sS", "-m", "5", &url])),
        "i-00000000000000001"
    );
    let scrape = ok(curl_from(
        "127.0.0.1",
        &["-sS", "-m", "5", &format!("http://{metrics}/metrics")],
    ));
    let mut fleet: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("imds_tun_fleet_"))
        .collect();
    fleet.sort_unstable();
    assert_eq!(
        fleet,
        [
            "imds_tun_fleet_refused_total 2",
            "imds_tun_fleet_requests_total{profile=\"a\"} 1",
            "imds_tun_fleet_requests_total{profile=\"b\"} 1",
            "imds_tun_fleet_requests_total{profile=\"default\"} 0",
        ],
        "{scrape}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SDK scripts of tests/sdk/ in `container`, with no override, each checking everything it
/// sees against `document` (the caller's profile).
fn sdks_in(container: &Container, host: &TestHost, document: &Path) {
    let python = support::python();
    let document = document.display().to_string();
    for cloud in ["azure", "gce", "aws"] {
        let script = format!("{}/tests/sdk/{cloud}.py", env!("CARGO_MANIFEST_DIR"));
        let (code, out) = container.run(
            host.dir(),
            &[
                ("IMDS_TUN_ADDR", "169.254.169.254:80"),
                ("IMDS_TUN_NO_OVERRIDES", "1"),
                ("IMDS_TUN_CONFIG", &document),
            ],
            python,
            &[&script],
        );
        assert_eq!(
            code,
            Some(0),
            "{cloud} SDKs in {} failed:\n{out}",
            container.name
        );
        support::assert_checks(cloud, &out, 10);
    }
}

/// Two network namespaces behind the same `up` receive different instance identities and
/// tokens (issue 7): the real SDKs in each pass against their own profile. A third namespace
/// and the host itself (source 169.254.255.1) match no profile and are reset: curl fails at
/// once, and every SDK concludes there is no metadata service instead of hanging.
#[test]
fn containers_behind_up_are_different_instances() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let (a, b, stranger) = (
        Container::behind(&host, 0),
        Container::behind(&host, 1),
        Container::behind(&host, 2),
    );
    // A network for one, a single address for the other.
    let cfg = fleet_config(["169.254.80.0/24", &b.address], "refuse");
    let config = write_config(host.dir(), "fleet.json", &cfg);
    let _up = Up::start(&host, ["--config".as_ref(), config.as_os_str()]);
    let base = "http://169.254.169.254";
    let home = host.dir();
    let seen_a = Seen::observe(&|args| ok(a.run(home, &[], "curl", args)), base);
    let seen_b = Seen::observe(&|args| ok(b.run(home, &[], "curl", args)), base);
    assert_eq!(seen_a, Seen::expected(&profile_document(&cfg, 0)));
    assert_eq!(seen_b, Seen::expected(&profile_document(&cfg, 1)));
    assert_ne!(seen_a.azure_token_mirid, seen_b.azure_token_mirid);
    assert_ne!(seen_a.gce_token_instance_id, seen_b.gce_token_instance_id);

    for (i, c) in [&a, &b].into_iter().enumerate() {
        let doc = write_config(
            host.dir(),
            &format!("profile-{i}.json"),
            &profile_document(&cfg, i),
        );
        sdks_in(c, &host, &doc);
    }

    let url = format!("{base}/metadata/instance?api-version=2021-02-01");
    let (code, out) = stranger.run(
        host.dir(),
        &[],
        "curl",
        &["-sS", "-m", "5", "-H", "Metadata: true", &url],
    );
    assert!(is_reset(code), "a stranger: curl exit {code:?}, {out:?}");
    let host_curl = host
        .command("curl")
        .args(["-sS", "-m", "5", "-H", "Metadata: true", &url])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        is_reset(host_curl.status.code()),
        "the host itself: {host_curl:?}"
    );
    // What clients make of a reset: no metadata service, found out at once.
    let probe = "import time, botocore.session, google.auth.transport.requests\n\
                 from google.auth.compute_engine import _metadata\n\
                 from azure.identity import ManagedIdentityCredential\n\
                 from azure.core.exceptions import ClientAuthenticationError\n\
                 start = time.monotonic()\n\
                 gce = _metadata.is_on_gce(google.auth.transport.requests.Request())\n\
                 aws = botocore.session.Session().get_credentials()\n\
                 try:\n    ManagedIdentityCredential().get_token('https://management.azure.com/.default'); azure = 'token'\n\
                 except ClientAuthenticationError as e:\n    azure = type(e).__name__\n\
                 print(gce, aws, azure, time.monotonic() - start < 20)";
    let python = support::python();
    let (code, out) = stranger.run(host.dir(), &[], python, &["-c", probe]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.trim(),
        "False None CredentialUnavailableError True",
        "SDKs in a refused namespace"
    );
}
