//! End to end, as root: `imds-tun up` inside a test host (a network namespace and a private
//! mount namespace, never the host's own), then curl and the real SDKs with NO environment
//! overrides, then shutdown and proof that everything `up` changed is undone.
//!
//! Two host shapes: only `lo` (the SYN must not leave from 0.0.0.0), and a veth link with
//! link-local addresses and a default route, like a normal host. CI runs as root and runs
//! these; without root they fail, they never skip.

mod support;

use std::time::Duration;

use support::netns::{Container, Shape, TestHost};
use support::up::Up;

/// `up` with no arguments beyond the test host's own directories.
const NO_ARGS: [&str; 0] = [];

/// Curl requests against all three clouds, by address and by GCE's DNS names.
fn curl_all_clouds(host: &TestHost) {
    let azure = host.sh(
        "curl -sS -m 5 -H Metadata:true \
         'http://169.254.169.254/metadata/instance/compute/vmId?api-version=2021-02-01&format=text'",
    );
    assert_eq!(azure.len(), 36, "Azure vmId: {azure:?}");
    let gce = host.sh("curl -sS -m 5 -H Metadata-Flavor:Google \
         http://metadata.google.internal/computeMetadata/v1/project/numeric-project-id");
    assert!(
        !gce.is_empty() && gce.bytes().all(|b| b.is_ascii_digit()),
        "GCE: {gce:?}"
    );
    let gce_short = host.sh(
        "curl -sS -m 5 -H Metadata-Flavor:Google http://metadata/computeMetadata/v1/project/numeric-project-id",
    );
    assert_eq!(gce_short, gce);
    let token = host.sh(
        "curl -sS -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token",
    );
    let aws = host.sh(&format!(
        "curl -sS -m 5 -H 'X-aws-ec2-metadata-token: {token}' http://169.254.169.254/latest/meta-data/instance-id"
    ));
    assert!(aws.starts_with("i-"), "AWS instance-id: {aws:?}");
}

/// The SDK scripts of `tests/sdk/`, run with no override at all: they must find the
/// metadata services where real VMs have them.
fn sdks_without_overrides(host: &TestHost) {
    let python = support::python();
    for cloud in ["azure", "gce", "aws"] {
        let script = format!("{}/tests/sdk/{cloud}.py", env!("CARGO_MANIFEST_DIR"));
        let out = host
            .command("env")
            .arg("-i")
            .arg(format!(
                "PATH={}",
                std::env::var("PATH").unwrap_or_default()
            ))
            .arg(format!("HOME={}", host.dir().display()))
            .arg("IMDS_TUN_ADDR=169.254.169.254:80")
            .arg("IMDS_TUN_NO_OVERRIDES=1")
            .arg("AWS_CONFIG_FILE=/dev/null")
            .arg("AWS_SHARED_CREDENTIALS_FILE=/dev/null")
            .arg(python)
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{cloud} SDKs without overrides failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        support::assert_checks(cloud, &String::from_utf8_lossy(&out.stdout), 10);
    }
}

fn full_cycle(shape: Shape) {
    let host = TestHost::new(shape);
    let before = host.restorable();
    let addresses_before = &before.addresses;
    let original_hosts = &before.hosts;

    let up = Up::start(&host, NO_ARGS);
    let hosts_during = std::fs::read_to_string(&host.hosts_file).unwrap_or_default();
    assert!(
        hosts_during.contains("169.254.169.254")
            && hosts_during.contains("metadata.google.internal"),
        "hosts block missing:\n{hosts_during}"
    );
    // The test host's /etc/hosts is a bind mount, so the block is appended in place (see
    // `device::hosts`): the original bytes are kept, untouched, in front of it.
    assert!(
        hosts_during.starts_with(original_hosts.as_str()),
        "the original /etc/hosts must be kept:\n{hosts_during}"
    );
    curl_all_clouds(&host);
    sdks_without_overrides(&host);

    // No address was added to any interface other than the TUN device itself.
    let addresses_during = host.addresses();
    for line in addresses_during.lines().filter(|l| !l.contains("imds0")) {
        assert!(
            addresses_before.contains(line.split_whitespace().nth(3).unwrap_or("")),
            "address added outside the TUN device: {line}\nbefore:\n{addresses_before}"
        );
    }

    up.signal(libc::SIGTERM);
    let status = up.wait(Duration::from_secs(10));
    assert!(status.success(), "up exited with {status}");
    host.assert_restored(&before, "after SIGTERM");

    // A crash leaves things behind; the next `up` starts cleanly and `down` restores.
    let up = Up::start(&host, NO_ARGS);
    up.signal(libc::SIGKILL);
    let _ = up.wait(Duration::from_secs(10));
    let up = Up::start(&host, NO_ARGS);
    curl_all_clouds(&host);
    up.signal(libc::SIGKILL);
    let _ = up.wait(Duration::from_secs(10));
    let down = host
        .command(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["down", "--state-dir"])
        .arg(host.dir().join("state"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    host.assert_restored(&before, "after SIGKILL and down");
    // Idempotent.
    let again = host
        .command(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["down", "--state-dir"])
        .arg(host.dir().join("state"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.status.success(), "second down failed");
}

#[test]
fn loopback_only_host() {
    full_cycle(Shape::LoopbackOnly);
}

#[test]
fn veth_host() {
    full_cycle(Shape::Veth);
}

/// Ping, IPv6, a second `up`, `--pcap`, and the refusal without root, in one test host.
#[test]
fn ping_ipv6_second_instance_pcap_and_no_root() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let mut cfg: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    cfg["server"] = serde_json::json!({"addresses": ["fd00:ec2::254", "169.254.170.2"]});
    let config = host.dir().join("config.json");
    std::fs::write(&config, cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let pcap = host.dir().join("trace.pcap");
    let addresses_before = host.addresses();

    let up = Up::start(
        &host,
        [
            "--config".as_ref(),
            config.as_os_str(),
            "--pcap".as_ref(),
            pcap.as_os_str(),
        ],
    );
    let line = up.ready_line().to_string();
    assert!(
        line.contains("ready") && line.contains("fd00:ec2::254"),
        "{line:?}"
    );

    // ICMP echo to the metadata address is answered.
    host.sh("ping -c 2 -W 2 169.254.169.254 >/dev/null");
    // IMDS over IPv6 and the container-credentials address.
    let v6 = host.sh("curl -sS -m 5 -g 'http://[fd00:ec2::254]/latest/meta-data/instance-id'");
    assert!(v6.starts_with("i-"), "{v6:?}");
    let ecs = host.sh("curl -sS -m 5 http://169.254.170.2/latest/meta-data/instance-id");
    assert_eq!(ecs, v6);
    // Any port but 80 is refused at once (RST), not left to time out.
    let refused = host
        .command("curl")
        .args(["-sS", "-m", "5", "http://169.254.169.254:8080/"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused.status.code(),
        Some(7),
        "curl: connection refused expected"
    );

    // A second `up` fails with one line naming the running process, and changes nothing.
    let second = host
        .command(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["up", "--state-dir"])
        .arg(host.dir().join("state"))
        .arg("--key-dir")
        .arg(host.dir().join("keys"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains(&up.child.id().to_string()),
        "must name the pid: {err}"
    );
    host.sh("curl -sS -m 5 http://169.254.169.254/latest/meta-data/instance-id >/dev/null");

    up.signal(libc::SIGTERM);
    assert!(up.wait(Duration::from_secs(10)).success());
    assert_eq!(host.addresses(), addresses_before);

    // The trace has the pcap magic and more than a handful of records.
    let trace = std::fs::read(&pcap).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        trace.len() > 24 + 10 * 16,
        "pcap too short: {} bytes",
        trace.len()
    );
    assert_eq!(&trace[..4], &0xa1b2_c3d4u32.to_ne_bytes(), "pcap magic");

    // Without root: one clear line, non-zero exit, nothing left behind.
    let denied = host
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["up", "--state-dir"])
        .arg(host.dir().join("state-nobody"))
        .arg("--key-dir")
        .arg(host.dir().join("keys-nobody"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains("root") || err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert_eq!(host.addresses(), addresses_before);
}

/// `up` with `config` (the default, changed by `edit`) in `host`; returns the process and
/// its first `lines` lines of output (the ready line, then the doors' env lines).
fn up_with(
    host: &TestHost,
    edit: impl FnOnce(&mut serde_json::Value),
    lines: usize,
) -> (Up, Vec<String>) {
    let mut cfg: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    edit(&mut cfg);
    let config = host.dir().join("config.json");
    std::fs::write(&config, cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let up = Up::start_in(
        host,
        host.command(env!("CARGO_BIN_EXE_imds-tun")),
        ["--config".as_ref(), config.as_os_str()],
        lines.saturating_sub(1),
    );
    let out = up.lines.clone();
    (up, out)
}

/// ECS container credentials at 169.254.170.2 under `up`, turned on by the AWS section alone:
/// botocore's container provider (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` and
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, no other override) gets the role's credentials.
#[test]
fn ecs_container_credentials() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let uri = "/v2/credentials/3f1b2c4d-task";
    let (up, out) = up_with(
        &host,
        |cfg| {
            cfg["aws"]["containerCredentials"] = serde_json::json!({
                "enabled": true, "relativeUri": uri, "authorizationToken": "ecs-test-token"
            });
        },
        3,
    );
    assert!(out[0].contains("169.254.170.2"), "route: {out:?}");
    assert_eq!(
        out[2],
        format!("export AWS_CONTAINER_CREDENTIALS_RELATIVE_URI={uri}")
    );
    // The role's credentials are minted: IMDS and the ECS door give the same ones.
    let role: serde_json::Value = serde_json::from_str(&host.sh(
        "curl -sS -m 5 http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun-demo-role",
    ))
    .unwrap_or_default();
    let role = serde_json::json!({
        "accessKeyId": role["AccessKeyId"], "secretAccessKey": role["SecretAccessKey"],
        "token": role["Token"], "expiration": role["Expiration"],
    });
    assert!(role["accessKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("ASIA")));

    let body = host.sh(&format!(
        "curl -sS -m 5 -H 'Authorization: ecs-test-token' http://169.254.170.2{uri}"
    ));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        doc["RoleArn"],
        "arn:aws:iam::123456789012:role/imds-tun-demo-role"
    );
    assert_eq!(doc["AccountId"], "123456789012");
    assert_eq!(doc["AccessKeyId"], role["accessKeyId"]);
    assert_eq!(doc["Expiration"], role["expiration"]);
    let unauthorized = host.sh(&format!(
        "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://169.254.170.2{uri}"
    ));
    assert_eq!(unauthorized, "401");
    let other = host.sh(
        "curl -sS -m 5 -o /dev/null -w '%{http_code}' -H 'Authorization: ecs-test-token' \
         http://169.254.170.2/v2/credentials/other",
    );
    assert_eq!(other, "400");

    let script = "import json, botocore.session\n\
                  c = botocore.session.Session().get_credentials()\n\
                  f = c.get_frozen_credentials()\n\
                  print(json.dumps([c.method, f.access_key, f.secret_key, f.token]))";
    let got = host
        .command("env")
        .arg("-i")
        .arg(format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_default()
        ))
        .arg(format!("HOME={}", host.dir().display()))
        .arg(format!("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI={uri}"))
        .arg("AWS_CONTAINER_AUTHORIZATION_TOKEN=ecs-test-token")
        .arg("AWS_EC2_METADATA_DISABLED=true")
        .arg("AWS_CONFIG_FILE=/dev/null")
        .arg("AWS_SHARED_CREDENTIALS_FILE=/dev/null")
        .arg(support::python())
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "botocore: {text}\n{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(
        got,
        serde_json::json!([
            "container-role",
            role["accessKeyId"],
            role["secretAccessKey"],
            role["token"]
        ])
    );
    up.signal(libc::SIGTERM);
    assert!(up.wait(Duration::from_secs(10)).success());
}

/// The IMDSv2 hop limit, end to end: the token PUT's answer leaves with IP TTL = hopLimit, so a
/// container one routed hop away gets no token with hop limit 1 (the router drops the answer
/// when the TTL runs out; the client times out) and gets one with hop limit 2. With
/// `imdsv2: required`, botocore there gets no credentials, then the role's.
#[test]
fn hop_limit_reaches_a_routed_container_only_when_above_one() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let container = Container::behind(&host, 0);
    let python = support::python().display().to_string();
    let put = [
        "-sS",
        "-m",
        "3",
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "http://169.254.169.254/latest/api/token",
    ];
    let botocore = "import botocore.session\n\
                    from botocore.utils import InstanceMetadataFetcher\n\
                    t = InstanceMetadataFetcher(timeout=2, num_attempts=1)._fetch_metadata_token()\n\
                    c = botocore.session.Session().get_credentials()\n\
                    print('token' if t else 'no-token', c.method if c else 'no-credentials', \
                    c.get_frozen_credentials().access_key if c else '')";

    for hop_limit in [1, 2] {
        let (up, _) = up_with(
            &host,
            |cfg| {
                cfg["aws"]["imdsv2"] = "required".into();
                cfg["aws"]["hopLimit"] = hop_limit.into();
            },
            1,
        );
        // The host itself is zero hops away: always served.
        let local = host.sh(&format!("curl {}", put.map(|a| format!("'{a}'")).join(" ")));
        assert_eq!(local.len(), 56, "token on the host itself: {local:?}");
        // A routed plain request works at any hop limit (only the token answer is limited).
        let (code, _) = container.run(
            host.dir(),
            &[],
            "curl",
            &[
                "-sS",
                "-m",
                "3",
                "-o",
                "/dev/null",
                "http://169.254.169.254/latest/meta-data/",
            ],
        );
        assert_eq!(code, Some(0), "the container reaches IMDS");

        let (code, token) = container.run(host.dir(), &[], "curl", &put);
        let (_, boto) = container.run(host.dir(), &[], &python, &["-c", botocore]);
        if hop_limit == 1 {
            assert_eq!(code, Some(28), "curl must time out, got {code:?} {token:?}");
            assert_eq!(boto.trim(), "no-token no-credentials", "botocore");
        } else {
            assert_eq!((code, token.len()), (Some(0), 56), "token: {token:?}");
            // The role's minted credentials (an STS-style temporary key id).
            let words: Vec<&str> = boto.split_whitespace().collect();
            assert_eq!(
                words.get(..2),
                Some(&["token", "iam-role"][..]),
                "botocore: {boto}"
            );
            assert!(
                words
                    .get(2)
                    .is_some_and(|k| k.starts_with("ASIA") && k.len() == 20),
                "botocore: {boto}"
            );
        }
        up.signal(libc::SIGTERM);
        assert!(up.wait(Duration::from_secs(10)).success());
    }
}

/// A token whose source is slow (a command that takes 2 s: the same parking as an upstream
/// fetch) parks only its own connection in the packet engine: a static request on another
/// connection is answered at once, the token request after the fetch, with the token; a
/// keep-alive connection pipelining a static request behind the parked one gets both answers
/// in order.
#[test]
fn a_slow_token_source_parks_only_its_request_under_up() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let (up, _) = up_with(
        &host,
        |cfg| {
            cfg["azure"]["identities"][0]["token"] = serde_json::json!({
                "command": {"argv": ["sh", "-c", "sleep 2; echo slow-token-for-$0", "{resource}"]}
            });
        },
        1,
    );
    let out = host.sh(
        "T='http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net'
         S='http://169.254.169.254/metadata/instance/compute/vmId?api-version=2021-02-01&format=text'
         start=$(date +%s%N)
         curl -sS -m 10 -H Metadata:true \"$T\" > tok.out &
         sleep 0.3
         t0=$(date +%s%N)
         curl -sS -m 10 -H Metadata:true \"$S\" > static.out
         t1=$(date +%s%N)
         wait
         t2=$(date +%s%N)
         echo static_ms=$(( (t1 - t0) / 1000000 ))
         echo token_ms=$(( (t2 - start) / 1000000 ))
         echo token=$(cat tok.out)
         echo static=$(cat static.out)
         rm -f tok.out static.out",
    );
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    let static_ms: u64 = field("static_ms").parse().unwrap_or(u64::MAX);
    let token_ms: u64 = field("token_ms").parse().unwrap_or(0);
    assert!(
        static_ms < 500,
        "static answer waited {static_ms} ms:\n{out}"
    );
    assert!(
        token_ms >= 2000,
        "token came before the source: {token_ms} ms"
    );
    assert!(
        field("token").contains("slow-token-for-https://vault.azure.net"),
        "{out}"
    );
    assert!(!field("static").is_empty(), "{out}");
    // Pipelined behind a parked request (another resource: another fetch), in order.
    let out = host.sh(
        "printf 'GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com HTTP/1.1\\r\\nHost: x\\r\\nMetadata: true\\r\\n\\r\\nGET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\\r\\nHost: x\\r\\nMetadata: true\\r\\nConnection: close\\r\\n\\r\\n' \
           | timeout 10 python3 -c 'import socket,sys; s=socket.create_connection((\"169.254.169.254\",80)); s.sendall(sys.stdin.buffer.read()); d=b\"\"
while True:
    c=s.recv(65536)
    if not c: break
    d+=c
sys.stdout.write(d.decode())'",
    );
    let first = out.find("slow-token-for-https://storage.azure.com");
    let second = out.rfind("HTTP/1.1 200");
    assert!(
        first.is_some() && second.is_some_and(|s| Some(s) > first),
        "answers out of order or missing:\n{out}"
    );
    up.signal(libc::SIGTERM);
    assert!(up.wait(Duration::from_secs(10)).success());
}

/// Injected faults under `up` (configured at start): a 700 ms latency holds only its own
/// request, off the packet path (a request on another connection meanwhile is answered at
/// once, and one pipelined behind the late one comes after it, in order); a drop fault resets
/// the connection without an answer; a 503 answers AWS's error page with `Retry-After`.
#[test]
fn injected_latency_drop_and_status_under_up() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let (up, _) = up_with(
        &host,
        |cfg| {
            cfg["aws"]["imdsv2"] = serde_json::json!("optional");
            cfg["faults"] = serde_json::json!([
                {"path": "/latest/meta-data/ami-id", "latency": "700ms"},
                {"path": "/latest/meta-data/instance-id", "drop": "reset", "count": 1},
                {"cloud": "aws", "path": "/latest/meta-data/placement/", "prefix": true, "status": 503,
                 "retryAfter": 2, "count": 1}
            ]);
        },
        1,
    );
    let out = host.sh(
        "B=http://169.254.169.254/latest/meta-data
         t0=$(date +%s%N)
         curl -sS -m 5 $B/ami-id $B/instance-type > late.out &
         sleep 0.2
         t1=$(date +%s%N)
         curl -sS -m 5 $B/hostname > other.out
         t2=$(date +%s%N)
         wait
         t3=$(date +%s%N)
         echo other_ms=$(( (t2 - t1) / 1000000 ))
         echo late_ms=$(( (t3 - t0) / 1000000 ))
         echo late=$(cat late.out)
         curl -sS -m 5 $B/instance-id > /dev/null 2> drop.err; echo drop_rc=$?
         echo again=$(curl -sS -m 5 $B/instance-id)
         curl -sS -m 5 -D - -o /dev/null $B/placement/region | tr -d '\\r' | grep -E '^(HTTP|Retry-After)' | tr '\\n' ' '; echo
         echo region=$(curl -sS -m 5 $B/placement/region)
         rm -f late.out other.out drop.err",
    );
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    let ms = |k: &str| field(k).parse::<u64>().unwrap_or(u64::MAX);
    assert!(ms("other_ms") < 400, "the other request waited:\n{out}");
    assert!((700..3000).contains(&ms("late_ms")), "{out}");
    assert_eq!(
        field("late"),
        "ami-0c1c30571d2dae5c9t3.micro",
        "in order:\n{out}"
    );
    assert_eq!(field("drop_rc"), "56", "curl: connection reset:\n{out}");
    assert!(field("again").starts_with("i-"), "one drop only:\n{out}");
    assert!(
        out.contains("HTTP/1.1 503 Service Unavailable Retry-After: 2"),
        "{out}"
    );
    assert_eq!(field("region"), "eu-west-1", "{out}");
    up.signal(libc::SIGTERM);
    assert!(up.wait(Duration::from_secs(10)).success());
}
