//! Real tokens through `imds-tun serve`: upstream sources against a fake authority on
//! 127.0.0.1 started by each test (grants checked on the wire: form fields, RS256 assertions
//! verified with the key's public half, claims), one upstream call for 100 concurrent clients,
//! a slow authority that parks only its own request, and command sources printing the az,
//! gcloud and aws formats, failing and hanging.

mod support;

use imds_tun::cloud::aws::timestamp::format_utc;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use serde_json::{json, Value};
use sha2::Sha256;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One request the fake authority received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Seen {
    fn form(&self) -> HashMap<String, String> {
        self.body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An OAuth token service on 127.0.0.1: every answer after `delay`.
struct Authority {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Authority {
    fn start(delay: Duration) -> Authority {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve_one(stream, &log, delay));
            }
        });
        Authority { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn serve_one(stream: TcpStream, log: &Mutex<Vec<Seen>>, delay: Duration) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let n = {
        let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
        l.push(Seen {
            path: path.clone(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        l.len() - 1
    };
    std::thread::sleep(delay);
    let (status, answer) = if path.contains("/fail/") {
        (
            "400 Bad Request",
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"}),
        )
    } else if path.ends_with(":generateAccessToken") {
        let exp = std::time::SystemTime::now() + Duration::from_secs(3600);
        let secs = exp
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (
            "200 OK",
            json!({"accessToken": format!("ya29.impersonated-{n}"), "expireTime": format_utc(secs as i64)}),
        )
    } else if path == "/sts" {
        (
            "200 OK",
            json!({"access_token": format!("federated-{n}"), "issued_token_type":
                "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600}),
        )
    } else {
        (
            "200 OK",
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                "access_token": format!("upstream-token-{n}")}),
        )
    };
    let body = answer.to_string();
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A scratch directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("upstream-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// The default configuration with `edit` applied, written to `dir/config.json`.
fn config(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut c: Value = serde_json::from_str(include_str!("../fixtures/default.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    edit(&mut c);
    let path = dir.join("config.json");
    std::fs::write(&path, c.to_string()).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// An RSA key (PKCS#8 PEM) and, with `cert`, a self-signed certificate, by the openssl CLI.
fn openssl_key(dir: &Path, cert: bool) -> (String, String) {
    let key = dir.join("key.pem");
    let crt = dir.join("cert.pem");
    let mut cmd = Command::new("openssl");
    if cert {
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=imds-tun-test",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt);
    } else {
        cmd.args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (read(&key), if cert { read(&crt) } else { String::new() })
}

/// Verifies an RS256 JWT with the public half of `key_pem`; header and claims.
fn verify_rs256(jwt: &str, key_pem: &str) -> (Value, Value) {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem).unwrap_or_else(|e| panic!("{e}"));
    let verifier = VerifyingKey::<Sha256>::new(key.to_public_key());
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let sig = B64URL.decode(parts[2]).unwrap_or_else(|e| panic!("{e}"));
    let sig = Signature::try_from(sig.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .unwrap_or_else(|e| panic!("signature does not verify: {e}"));
    let json = |p: &str| -> Value {
        serde_json::from_slice(&B64URL.decode(p).unwrap_or_default()).unwrap_or(Value::Null)
    };
    (json(parts[0]), json(parts[1]))
}

/// One HTTP/1.1 GET with `Connection: close`: (status, body).
fn get(addr: &str, path: &str, header: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

const AZURE_TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";
const GCE_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const GCE_EMAIL: &str = "123456789012-compute@developer.gserviceaccount.com";

fn azure_upstream(c: &mut Value, upstream: Value) {
    c["azure"]["identities"][0]["token"] = json!({ "upstream": upstream });
}

#[test]
fn azure_client_secret_one_call_for_100_concurrent_clients() {
    let authority = Authority::start(Duration::from_millis(500));
    let dir = scratch("azure-secret");
    let cfg = config(&dir, |c| {
        azure_upstream(
            c,
            json!({"clientSecret": "s3cr3t-value", "authorityHost": authority.url}),
        )
    });
    let server = support::Server::start(Some(&cfg));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || get(&addr, AZURE_TOKEN, "Metadata: true"))
        })
        .collect();
    for t in threads {
        let (status, body) = t.join().unwrap_or_else(|_| panic!("client panicked"));
        assert_eq!(status, 200, "{body}");
        let b = json_of(&body);
        assert_eq!(b["access_token"], "upstream-token-0");
        assert_eq!(b["resource"], "https://vault.azure.net");
        let expires_in: u64 = b["expires_in"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!((3500..=3599).contains(&expires_in), "{expires_in}");
    }
    let seen = authority.seen();
    assert_eq!(seen.len(), 1, "one upstream call for 100 clients");
    assert_eq!(seen[0].path, format!("/{}/oauth2/v2.0/token", tenant()));
    assert_eq!(
        seen[0].headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    let form = seen[0].form();
    assert_eq!(form["client_id"], "3b6f1e2a-7c4d-4e9f-8a1b-2d5c6e7f8a90");
    assert_eq!(form["client_secret"], "s3cr3t-value");
    assert_eq!(form["scope"], "https://vault.azure.net/.default");
    assert_eq!(form["grant_type"], "client_credentials");
    // Another resource is another upstream call; the same one stays cached.
    let (status, _) = get(&server.addr, AZURE_TOKEN, "Metadata: true");
    assert_eq!(status, 200);
    let (status, body) = get(
        &server.addr,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        "Metadata: true",
    );
    assert_eq!(status, 200, "{body}");
    let seen = authority.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].form()["scope"],
        "https://management.azure.com//.default"
    );
}

fn tenant() -> String {
    let c: Value =
        serde_json::from_str(include_str!("../fixtures/default.json")).unwrap_or_default();
    c["azure"]["tenantId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn azure_certificate_assertion_is_signed_by_the_certificate_key() {
    let authority = Authority::start(Duration::ZERO);
    let dir = scratch("azure-cert");
    let (key, cert) = openssl_key(&dir, true);
    let pem = dir.join("sp.pem");
    std::fs::write(&pem, format!("{cert}{key}")).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&dir, |c| {
        azure_upstream(
            c,
            json!({"certificateFile": pem, "authorityHost": authority.url, "tenantId": "contoso.example"}),
        )
    });
    let server = support::Server::start(Some(&cfg));
    let (status, body) = get(&server.addr, AZURE_TOKEN, "Metadata: true");
    assert_eq!(status, 200, "{body}");
    let seen = authority.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/contoso.example/oauth2/v2.0/token");
    let form = seen[0].form();
    assert!(!form.contains_key("client_secret"));
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let (header, claims) = verify_rs256(&form["client_assertion"], &key);
    assert_eq!(header["alg"], "RS256");
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            cert.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap_or_default();
    use sha1::Digest;
    assert_eq!(header["x5t"], B64URL.encode(sha1::Sha1::digest(&der)));
    let token_url = format!("{}/contoso.example/oauth2/v2.0/token", authority.url);
    assert_eq!(claims["aud"], token_url.as_str());
    assert_eq!(claims["iss"], "3b6f1e2a-7c4d-4e9f-8a1b-2d5c6e7f8a90");
    assert_eq!(claims["sub"], claims["iss"]);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    assert!(exp > iat && exp - iat <= 3600, "{iat} {exp}");
}

#[test]
fn google_service_account_key_jwt_bearer() {
    let authority = Authority::start(Duration::ZERO);
    let dir = scratch("google-sa");
    let (key, _) = openssl_key(&dir, false);
    let key_file = dir.join("sa.json");
    let token_uri = format!("{}/token", authority.url);
    std::fs::write(
        &key_file,
        json!({"type": "service_account", "project_id": "p", "private_key_id": "kid-123",
            "private_key": key, "client_email": "sa@p.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri})
        .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&dir, |c| {
        c["gce"]["serviceAccounts"][GCE_EMAIL]["token"] =
            json!({"upstream": {"credentialsFile": key_file}});
    });
    let server = support::Server::start(Some(&cfg));
    let (status, body) = get(&server.addr, GCE_TOKEN, "Metadata-Flavor: Google");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["access_token"], "upstream-token-0");
    let (status, body) = get(
        &server.addr,
        &format!("{GCE_TOKEN}?scopes=https://www.googleapis.com/auth/devstorage.read_only"),
        "Metadata-Flavor: Google",
    );
    assert_eq!(status, 200, "{body}");
    let seen = authority.seen();
    assert_eq!(seen.len(), 2, "one call per scope set");
    let form = seen[0].form();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let (header, claims) = verify_rs256(&form["assertion"], &key);
    assert_eq!(header["kid"], "kid-123");
    assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], token_uri.as_str());
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"
    );
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    assert_eq!(exp - iat, 3600);
    let (_, second) = verify_rs256(&seen[1].form()["assertion"], &key);
    assert_eq!(
        second["scope"],
        "https://www.googleapis.com/auth/devstorage.read_only"
    );
}

#[test]
fn google_external_account_exchanges_then_impersonates() {
    let authority = Authority::start(Duration::ZERO);
    let dir = scratch("google-external");
    let subject = dir.join("subject.jwt");
    std::fs::write(&subject, "oidc-subject-token\n").unwrap_or_else(|e| panic!("{e}"));
    let audience =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q";
    let impersonation = format!(
        "{}/v1/projects/-/serviceAccounts/target@p.iam.gserviceaccount.com:generateAccessToken",
        authority.url
    );
    let file = dir.join("external.json");
    std::fs::write(
        &file,
        json!({"type": "external_account", "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/sts", authority.url),
            "service_account_impersonation_url": impersonation,
            "credential_source": {"file": subject}})
        .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&dir, |c| {
        c["gce"]["serviceAccounts"][GCE_EMAIL]["token"] =
            json!({"upstream": {"credentialsFile": file}});
    });
    let server = support::Server::start(Some(&cfg));
    let (status, body) = get(&server.addr, GCE_TOKEN, "Metadata-Flavor: Google");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["access_token"], "ya29.impersonated-1");
    let seen = authority.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/sts");
    let form = seen[0].form();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(form["audience"], audience);
    assert_eq!(form["subject_token"], "oidc-subject-token");
    assert_eq!(
        form["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(
        form["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(
        form["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert!(seen[1]
        .path
        .ends_with("target@p.iam.gserviceaccount.com:generateAccessToken"));
    assert_eq!(
        seen[1].headers.get("authorization").map(String::as_str),
        Some("Bearer federated-0")
    );
    let req = json_of(&seen[1].body);
    assert_eq!(req["lifetime"], "3600s");
    assert_eq!(
        req["scope"][0],
        "https://www.googleapis.com/auth/cloud-platform"
    );
}

#[test]
fn a_slow_authority_parks_only_its_own_request_and_a_failure_is_the_clouds_error() {
    let authority = Authority::start(Duration::from_secs(2));
    let dir = scratch("slow");
    let cfg = config(&dir, |c| {
        azure_upstream(
            c,
            json!({"clientSecret": "x", "authorityHost": authority.url}),
        );
        c["azure"]["identities"][1]["token"] = json!({"upstream": {"clientSecret": "x",
            "authorityHost": format!("{}/fail", authority.url)}});
    });
    let server = support::Server::start(Some(&cfg));
    let addr = server.addr.clone();
    let started = Instant::now();
    let slow = std::thread::spawn(move || get(&addr, AZURE_TOKEN, "Metadata: true"));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let (status, _) = get(
        &server.addr,
        "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
        "Metadata: true",
    );
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (status, body) = slow.join().unwrap_or_else(|_| panic!("client panicked"));
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The second identity's authority refuses: Azure's "unavailable" answer (500).
    let (status, body) = get(
        &server.addr,
        &format!("{AZURE_TOKEN}&client_id=c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"),
        "Metadata: true",
    );
    assert_eq!(status, 500, "{body}");
}

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{text}\n")).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success());
    path.display().to_string()
}

#[test]
fn command_sources_in_the_three_cli_formats() {
    let dir = scratch("command");
    let az = script(
        &dir,
        "az",
        r#"[ "$4" = "https://vault.azure.net" ] || exit 9
echo '{"accessToken": "az-token", "expiresOn": "2099-01-01 00:00:00.000000", "expires_on": 4070908800, "tokenType": "Bearer"}'"#,
    );
    let gcloud = script(&dir, "gcloud", "echo ya29.from-gcloud");
    let aws = script(
        &dir,
        "aws",
        r#"echo '{"Version": 1, "AccessKeyId": "ASIACOMMANDEXAMPLE01", "SecretAccessKey": "c0mmand", "SessionToken": "sess", "Expiration": "2099-01-01T00:00:00Z"}'"#,
    );
    let failing = script(&dir, "failing", "echo leaked-secret; exit 1");
    let hanging = script(&dir, "hanging", "sleep 30");
    let cfg = config(&dir, |c| {
        c["azure"]["identities"][0]["token"] = json!({"command": {"argv":
            [az, "account", "get-access-token", "--resource", "{resource}", "-o", "json"]}});
        c["azure"]["identities"][1]["token"] =
            json!({"command": {"argv": [hanging], "timeoutSecs": 1}});
        c["gce"]["serviceAccounts"][GCE_EMAIL]["token"] =
            json!({"command": {"argv": [gcloud, "auth", "print-access-token"]}});
        c["aws"]["iam"]["credentials"] = json!({"command": {"argv": [aws, "configure",
            "export-credentials", "--format", "process"]}});
        c["aws"]["imdsv2"] = json!("optional");
    });
    let server = support::Server::start(Some(&cfg));
    let (status, body) = get(&server.addr, AZURE_TOKEN, "Metadata: true");
    assert_eq!(status, 200, "{body}");
    let b = json_of(&body);
    assert_eq!(
        (b["access_token"].as_str(), b["expires_on"].as_str()),
        (Some("az-token"), Some("4070908800"))
    );
    let (status, body) = get(&server.addr, GCE_TOKEN, "Metadata-Flavor: Google");
    assert_eq!(status, 200, "{body}");
    let b = json_of(&body);
    assert_eq!(b["access_token"], "ya29.from-gcloud");
    assert!(
        b["expires_in"]
            .as_u64()
            .is_some_and(|e| e <= 300 && e > 200),
        "{b}"
    );
    let (status, body) = get(
        &server.addr,
        "/latest/meta-data/iam/security-credentials/imds-tun-demo-role",
        "Accept: */*",
    );
    assert_eq!(status, 200, "{body}");
    let b = json_of(&body);
    assert_eq!(b["AccessKeyId"], "ASIACOMMANDEXAMPLE01");
    assert_eq!(b["Token"], "sess");
    assert_eq!(b["Expiration"], "2099-01-01T00:00:00Z");
    // The hanging command is killed after 1 s: Azure's error, well before the park limit.
    let t = Instant::now();
    let (status, _) = get(
        &server.addr,
        &format!("{AZURE_TOKEN}&client_id=c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"),
        "Metadata: true",
    );
    assert_eq!(status, 500);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(server);
    let cfg = config(&dir, |c| {
        c["azure"]["identities"][0]["token"] = json!({"command": {"argv": [failing]}});
    });
    let server = support::Server::start(Some(&cfg));
    let (status, body) = get(&server.addr, AZURE_TOKEN, "Metadata: true");
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("leaked-secret"), "{body}");
}
