//! Hostile HTTP: what each cloud answers to requests no SDK sends but an attacker, a fuzzer
//! or a broken client may. Each decision is written next to its case; the ones that real
//! services do not document are marked "choice".
//!
//! Most cases go through [`respond_all`] over the default snapshot (the code both front doors
//! run); the framing cases (sizes, bodies, transfer codings, bytes that are not UTF-8) are
//! also sent over a real socket to `imds-tun serve`, which must answer and close only that
//! connection.
//!
//! Decisions:
//! - Sizes: a request line longer than the head limit (8 KiB) is 414 (RFC 9112 3 MUST); header
//!   fields over it, or more than 64 of them, are 431 (RFC 6585). Then the connection closes.
//! - A body on GET (Content-Length) is read and ignored; the request is answered and the
//!   connection stays in step for the next request.
//! - `Transfer-Encoding` (chunked or any other) is 501 and the connection closes (RFC 9112
//!   6.1 lets a server answer 501 to a coding it does not implement). Deviation: RFC 9112 7.1
//!   says a recipient MUST parse chunked; no metadata client sends a chunked request (their
//!   bodies are empty or small and sent with Content-Length), and refusing it also refuses
//!   every Content-Length/Transfer-Encoding smuggling combination.
//! - Paths are never normalised: `..`, `.` and `%2e%2e` are literal segment text that names
//!   no metadata key, so they get the cloud's 404 and never reach another path's value.
//!   (Choice: Go's ServeMux would redirect `/a/../b` to `/b`; no client sends such paths,
//!   and curl normalises them before sending.) A path is looked up percent-decoded (clients
//!   encode `@` in e-mails as `%40`) by Azure and GCE, so there `%2f` is a `/`: it reaches
//!   exactly the value the plain path does, under the same header rules, so it grants
//!   nothing. AWS looks paths up as sent, so there it names nothing (404).
//! - `Metadata: true` (Azure) and `Metadata-Flavor: Google` (GCE): any case of the name,
//!   whitespace around the value, the same header twice; Azure's value in any case (`TRUE`),
//!   GCE's exactly `Google`; two headers that disagree are refused whichever comes first.
//! - Duplicate query parameters are refused by Azure (400, documented by IMDS), also when one
//!   of them is percent-encoded.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use imds_tun::cloud::RequestContext;
use imds_tun::config;
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::snapshot::{Keys, Snapshot};

const VMID: &str = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text";

fn snapshot() -> Snapshot {
    let no_env = |_: &str| None;
    let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(cfg, &Keys::fixed(11), "hostile-http").unwrap_or_else(|e| panic!("{e}"))
}

/// Every response to `raw`, as text, and whether the connection is to be closed.
fn answer(s: &Snapshot, raw: &[u8]) -> (Vec<String>, bool) {
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
        wait_over: false,
    };
    let mut out: Vec<Outgoing> = Vec::new();
    let p = respond_all(raw, s, &ctx, &s.config.server.limits(), &mut out);
    let texts = out
        .iter()
        .map(|o| String::from_utf8_lossy(&o.bytes).into_owned())
        .collect();
    (texts, p.close)
}

fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// The status of the single response to `GET target` with `headers` (CRLF-separated lines).
fn get(s: &Snapshot, target: &str, headers: &str) -> (u16, String) {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}\r\n\r\n");
    let (texts, _) = answer(s, raw.as_bytes());
    assert_eq!(texts.len(), 1, "{raw:?}: {texts:?}");
    (status(&texts[0]), texts[0].clone())
}

#[test]
fn azure_metadata_header_variants() {
    let s = snapshot();
    let accepted = [
        "Metadata: true",
        "metadata: TRUE",
        "METADATA: True",
        "Metadata:true",
        "Metadata: true ",
        "Metadata:\ttrue\t",
        "Metadata: true\r\nMetadata: true",
        "Metadata: true\r\nmetadata: TRUE",
    ];
    for h in accepted {
        let (code, text) = get(&s, VMID, h);
        assert_eq!(code, 200, "{h:?}: {text}");
    }
    let refused = [
        "",
        "Metadata: false",
        "Metadata: yes",
        "Metadata: 1",
        "Metadata: true, true",
        "Metadata: \"true\"",
        "Metadata: false\r\nMetadata: true",
        "Metadata: true\r\nMetadata: false",
        "Metadata: true\r\nMetadata:",
        "Metadata-Flavor: Google",
        "X-Metadata: true",
    ];
    for h in refused {
        let (code, text) = get(&s, VMID, h);
        assert_eq!(code, 400, "{h:?}: {text}");
        assert!(
            text.contains("Required metadata header not specified"),
            "{h:?}: {text}"
        );
    }
    // A proxy's header is refused even with `Metadata: true`.
    let (code, text) = get(&s, VMID, "Metadata: true\r\nX-Forwarded-For: 169.254.9.9");
    assert_eq!(code, 400, "{text}");
    // The token endpoint answers the missing header in its own (OAuth) shape.
    let token = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";
    let (code, text) = get(&s, token, "Metadata: false\r\nMetadata: true");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("\"invalid_request\""), "{text}");
}

#[test]
fn gce_metadata_flavor_variants() {
    let s = snapshot();
    let id = "/computeMetadata/v1/instance/id";
    let accepted = [
        "Metadata-Flavor: Google",
        "metadata-flavor: Google",
        "METADATA-FLAVOR: Google",
        "Metadata-Flavor:Google",
        "Metadata-Flavor: Google  ",
        "Metadata-Flavor: Google\r\nMetadata-Flavor: Google",
        "X-Google-Metadata-Request: True",
        "x-google-metadata-request: true",
    ];
    for h in accepted {
        let (code, text) = get(&s, id, h);
        assert_eq!(code, 200, "{h:?}: {text}");
        assert!(text.contains("Metadata-Flavor: Google\r\n"), "{text}");
    }
    let refused = [
        "",
        "Metadata-Flavor: google",
        "Metadata-Flavor: GOOGLE",
        "Metadata-Flavor: Google, Google",
        "Metadata-Flavor: Other\r\nMetadata-Flavor: Google",
        "Metadata-Flavor: Google\r\nMetadata-Flavor: Other",
        "Metadata: true",
    ];
    for h in refused {
        let (code, text) = get(&s, id, h);
        assert_eq!(code, 403, "{h:?}: {text}");
        assert!(
            text.contains("Missing Metadata-Flavor:Google header"),
            "{h:?}: {text}"
        );
    }
}

#[test]
fn duplicate_query_parameters() {
    let s = snapshot();
    let base = "/metadata/instance/compute/vmId";
    for q in [
        "api-version=2021-02-01&api-version=2021-02-01&format=text",
        "api-version=2021-02-01&format=text&format=text",
        "api-version=2021-02-01&format=text&format=json",
        // The same name once percent-encoded is still the same name.
        "api%2Dversion=2021-02-01&api-version=2021-02-01&format=text",
    ] {
        let (code, text) = get(&s, &format!("{base}?{q}"), "Metadata: true");
        assert_eq!(code, 400, "{q}: {text}");
        assert!(text.contains("Duplicate query parameter"), "{q}: {text}");
    }
    // Invalid percent escapes and escapes that are not UTF-8: 400, never a guess.
    for q in [
        "api-version=2021-02-01&format=text%",
        "api-version=2021-02-01&format=te%zzxt",
        "api-version=2021-02-01&format=%ff%fe",
    ] {
        let (code, text) = get(&s, &format!("{base}?{q}"), "Metadata: true");
        assert_eq!(code, 400, "{q}: {text}");
    }
}

#[test]
fn dot_segments_and_encoded_separators_reach_no_other_path() {
    let s = snapshot();
    let azure = "Metadata: true";
    let gce = "Metadata-Flavor: Google";
    // Each of these would name an existing value if the path were normalised or decoded.
    let cases = [
        (
            "/metadata/instance/network/../compute/vmId?api-version=2021-02-01&format=text",
            azure,
        ),
        (
            "/metadata/instance/compute/./vmId?api-version=2021-02-01&format=text",
            azure,
        ),
        (
            "/metadata/instance/network/%2e%2e/compute/vmId?api-version=2021-02-01&format=text",
            azure,
        ),
        (
            "/metadata/instance/network/%252e%252e/compute/vmId?api-version=2021-02-01&format=text",
            azure,
        ),
        ("/computeMetadata/v1/project/../instance/id", gce),
        ("/computeMetadata/v1/project/%2e%2e/instance/id", gce),
        ("/computeMetadata/v1/instance/./id", gce),
        ("/latest/meta-data/placement/../instance-id", ""),
        ("/latest/meta-data/placement/%2e%2e/instance-id", ""),
        ("/latest/meta-data/./instance-id", ""),
        ("/../latest/meta-data/instance-id", ""),
        ("/latest/../latest/meta-data/instance-id", ""),
    ];
    for (target, header) in cases {
        let (code, text) = get(&s, target, header);
        assert!(
            code == 404 || code == 400,
            "{target}: {code} (a dot segment or an encoded separator reached a value)\n{text}"
        );
    }
    // An encoded `/` is a `/`: the same answer as the plain path, nothing more.
    for (encoded, plain, header) in [
        (
            "/metadata/instance/compute%2fvmId?api-version=2021-02-01&format=text",
            VMID,
            azure,
        ),
        (
            "/computeMetadata/v1/instance%2fid",
            "/computeMetadata/v1/instance/id",
            gce,
        ),
    ] {
        assert_eq!(
            get(&s, encoded, header),
            get(&s, plain, header),
            "{encoded}"
        );
        if !header.is_empty() {
            let (code, _) = get(&s, encoded, "");
            assert_ne!(code, 200, "{encoded} without its header");
        }
    }
    // AWS looks paths up as sent: there `%2F` is text, and the path names nothing.
    let (code, _) = get(&s, "/latest/meta-data%2Finstance-id", "");
    assert_eq!(code, 404);
    // Not UTF-8 once decoded, in a path segment: no panic, no value.
    let (code, _) = get(&s, "/computeMetadata/v1/instance/%ff%fe", gce);
    assert!(code == 404 || code == 400, "{code}");
    let (code, _) = get(
        &s,
        "/metadata/instance/compute/%c3%28?api-version=2021-02-01&format=text",
        azure,
    );
    assert!(code == 404 || code == 400, "{code}");
}

#[test]
fn framing_in_process() {
    let s = snapshot();
    let vmid = format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\n\r\n");

    // A body on GET is read and ignored; the next request is still understood.
    let raw = format!(
        "GET {VMID} HTTP/1.1\r\nMetadata: true\r\nContent-Length: 11\r\n\r\nGET / HTTP/{vmid}"
    );
    let (texts, close) = answer(&s, raw.as_bytes());
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts.iter().all(|t| status(t) == 200), "{texts:?}");
    assert_eq!(texts[0], texts[1]);
    assert!(!close);

    // Transfer codings: 501 and close, with or without a Content-Length beside them.
    for te in [
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "transfer-encoding: identity\r\n",
    ] {
        let raw = format!(
            "POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nMetadata: true\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n{vmid}"
        );
        let (texts, close) = answer(&s, raw.as_bytes());
        assert_eq!(texts.len(), 1, "{te:?}: {texts:?}");
        assert_eq!(status(&texts[0]), 501, "{te:?}: {}", texts[0]);
        assert!(close, "{te:?}: the connection must close");
    }

    // Conflicting lengths and bad lengths: 400 and close.
    for cl in [
        "Content-Length: 1\r\nContent-Length: 2\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 1e3\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length: \r\n",
    ] {
        let raw = format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\n{cl}\r\n");
        let (texts, close) = answer(&s, raw.as_bytes());
        assert_eq!(status(&texts[0]), 400, "{cl:?}: {}", texts[0]);
        assert!(close);
    }

    // Sizes: a long target is 414, long or many header fields 431.
    let long_target = format!(
        "GET /latest/meta-data/{} HTTP/1.1\r\n\r\n",
        "a".repeat(9000)
    );
    let long_field = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(9000));
    let mut thousands = String::from("GET / HTTP/1.1\r\n");
    for i in 0..5000 {
        thousands.push_str(&format!("X-{i}: v\r\n"));
    }
    thousands.push_str("\r\n");
    for (what, raw, want) in [
        ("long target", long_target, 414),
        ("long field", long_field, 431),
        ("5000 fields", thousands, 431),
    ] {
        let (texts, close) = answer(&s, raw.as_bytes());
        assert_eq!(status(&texts[0]), want, "{what}: {}", texts[0]);
        assert!(close, "{what}");
    }

    // Whitespace between a field name and its colon is a 400 (RFC 9112 5.1 MUST); so is a
    // NUL or a bare CR in a value, and a request line that is not one.
    for raw in [
        format!("GET {VMID} HTTP/1.1\r\nMetadata : true\r\n\r\n"),
        format!("GET {VMID} HTTP/1.1\r\nMetadata: tr\0ue\r\n\r\n"),
        format!("GET {VMID} HTTP/1.1\r\nMetadata: tr\rue\r\n\r\n"),
        "GET\r\n\r\n".to_string(),
        "GET  / HTTP/1.1\r\n\r\n".to_string(),
        "GET / HTTP/1.1 extra\r\n\r\n".to_string(),
        "\r\n\r\n\r\nGET / FTP/1.0\r\n\r\n".to_string(),
    ] {
        let (texts, close) = answer(&s, raw.as_bytes());
        assert_eq!(texts.len(), 1, "{raw:?}: {texts:?}");
        assert!(
            status(&texts[0]) == 400 || status(&texts[0]) == 505,
            "{raw:?}: {}",
            texts[0]
        );
        assert!(close, "{raw:?}");
    }

    // Bytes that are not UTF-8: in the target (400, the request line is invalid), in the
    // security header's value (missing header: 400 for Azure), in an unrelated header
    // (ignored: 200).
    let mut raw = b"GET /latest/meta-data/\xff\xfe HTTP/1.1\r\n\r\n".to_vec();
    let (texts, close) = answer(&s, &raw);
    assert_eq!(status(&texts[0]), 400, "{}", texts[0]);
    assert!(close);
    raw = format!("GET {VMID} HTTP/1.1\r\nMetadata: tru\u{0}e\r\n\r\n").into_bytes();
    raw.retain(|&b| b != 0);
    let pos = raw
        .windows(3)
        .position(|w| w == b"tru")
        .unwrap_or_else(|| panic!("no value"));
    raw[pos + 3] = 0xe9; // "tru\xe9"
    let (texts, _) = answer(&s, &raw);
    assert_eq!(status(&texts[0]), 400, "{}", texts[0]);
    let raw = [
        format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\nUser-Agent: ").as_bytes(),
        b"\xff\xfe\xfd",
        b"\r\n\r\n",
    ]
    .concat();
    let (texts, _) = answer(&s, &raw);
    assert_eq!(status(&texts[0]), 200, "{}", texts[0]);
}

fn connect(server: &support::Server) -> TcpStream {
    let s = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// Sends `raw` on a new connection and reads until the server closes it.
fn exchange_to_close(server: &support::Server, raw: &[u8]) -> String {
    let mut s = connect(server);
    s.write_all(raw).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("the server did not close: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// The framing cases over a real socket: each gets its status and costs only its own
/// connection; a well-formed request afterwards is answered.
#[test]
fn framing_over_a_socket() {
    let server = support::Server::start(None);
    let vmid_close = format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\nConnection: close\r\n\r\n");
    let mut thousands = String::from("GET / HTTP/1.1\r\n");
    for i in 0..3000 {
        thousands.push_str(&format!("X-Header-{i}: value\r\n"));
    }
    thousands.push_str("\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "long target",
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            414,
        ),
        (
            "long header",
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        ("thousands of headers", thousands.into_bytes(), 431),
        (
            "chunked body",
            b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        (
            "not UTF-8 in the target",
            b"GET /latest/meta-data/\xc3\x28 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "body on GET, then close",
            format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody").into_bytes(),
            200,
        ),
    ];
    for (what, raw, want) in cases {
        let text = exchange_to_close(&server, &raw);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "{what}: {}",
            text.lines().next().unwrap_or("")
        );
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{what}: {text}");
        let ok = exchange_to_close(&server, vmid_close.as_bytes());
        assert!(ok.starts_with("HTTP/1.1 200 "), "after {what}: {ok}");
    }
}

/// `serve` with a client that pipelines without reading: the server stops reading once its
/// output is bounded (the client's writes then block), and when the client reads, every
/// response arrives in order.
#[test]
fn pipelined_flood_over_a_socket_is_answered_in_order() {
    let server = support::Server::start(None);
    let req = format!("GET {VMID} HTTP/1.1\r\nMetadata: true\r\n\r\n");
    let n = 20_000;
    let mut s = connect(&server);
    let mut reader = s.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let writer = std::thread::spawn(move || {
        let batch = req.repeat(100);
        for _ in 0..n / 100 {
            s.write_all(batch.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        s
    });
    // Let the writer run ahead of any reading.
    std::thread::sleep(Duration::from_millis(500));
    let one = {
        let mut head = vec![0u8; 4096];
        let k = reader.read(&mut head).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&head[..k]).into_owned()
    };
    assert!(one.starts_with("HTTP/1.1 200 OK\r\n"), "{one}");
    let len = one.find("\r\n\r\n").map(|h| h + 4).unwrap_or(0)
        + one
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{one}"));
    let mut total = one.len();
    let mut buf = vec![0u8; 1 << 16];
    while total < len * n {
        let k = reader.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert!(k > 0, "closed after {} of {} bytes", total, len * n);
        total += k;
    }
    assert_eq!(total, len * n);
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
}
