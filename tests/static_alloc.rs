//! Answering from the snapshot allocates nothing (design principle 2): static answers, the
//! errors that do not echo input, and IMDSv2 token checks (decoded into a stack buffer, the
//! MAC computed on the stack).
//!
//! A counting global allocator counts allocations made by the current thread; each request
//! is answered once to warm up, then again with the count taken. The counter is thread-local,
//! so the tests of this file may run in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use imds_tun::cloud::aws::token;
use imds_tun::cloud::RequestContext;
use imds_tun::config::{self, aws::Imdsv2, Config};
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::snapshot::{Keys, Snapshot};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// 2026-01-01T00:00:00Z, the time of every request here.
const NOW: u64 = 1_767_225_600;

fn default_config() -> Config {
    config::default_config(&|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn snapshot(cfg: Config, keys: &Keys) -> Snapshot {
    Snapshot::build(cfg, keys, "test").unwrap_or_else(|e| panic!("{e}"))
}

/// Answers `request` twice and returns the allocations of the second answer, after checking
/// its status and that it came with a precomputed checksum sum (a static answer).
fn allocations(snapshot: &Snapshot, request: &[u8], status: &str) -> usize {
    allocations_from(snapshot, [169, 254, 0, 2], request, status).0
}

/// [`allocations`] for a caller at `peer`, with the work a front door does for it: the fleet
/// lookup, the answer and its count. Also returns the response.
fn allocations_from(
    snapshot: &Snapshot,
    peer: [u8; 4],
    request: &[u8],
    status: &str,
) -> (usize, bytes::Bytes) {
    let limits = snapshot.config.server.limits();
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        peer: SocketAddr::from((peer, 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
        wait_over: false,
    };
    let what = String::from_utf8_lossy(request);
    let answer = |out: &mut Vec<Outgoing>| {
        let instance = snapshot
            .for_peer(ctx.peer.ip())
            .unwrap_or_else(|| panic!("{peer:?} refused"));
        let progress = respond_all(request, instance, &ctx, &limits, out);
        instance.count_answered(progress.answered);
        progress
    };
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    answer(&mut out);
    let response = out.first().map(|o| o.bytes.clone()).unwrap_or_default();
    assert!(
        response.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
        "{what}: {}",
        String::from_utf8_lossy(&response)
    );
    out.clear();
    let before = ALLOCATIONS.with(Cell::get);
    let progress = answer(&mut out);
    let allocated = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(progress.answered, 1, "{what}");
    assert!(out[0].sum.is_some(), "{what}: static answers carry a sum");
    (allocated, response)
}

fn assert_no_allocations(snapshot: &Snapshot, request: &[u8], status: &str) {
    let n = allocations(snapshot, request, status);
    assert_eq!(
        n,
        0,
        "{} allocated {n} times",
        String::from_utf8_lossy(request)
    );
}

/// The requests of the benchmark, one per cloud.
#[test]
fn benchmark_requests_allocate_nothing() {
    let s = snapshot(default_config(), &Keys::fixed(1));
    for request in [
        &b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"[..],
        b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n",
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    ] {
        assert_no_allocations(&s, request, "200");
    }
}

/// Azure: static answers and errors that quote nothing from the request.
#[test]
fn azure_answers_allocate_nothing() {
    // (expected status, path and query, extra header lines).
    const REQUESTS: [(&str, &str, &str); 16] = [
        ("200", "/metadata/versions", ""),
        ("200", "/metadata/instance?api-version=2021-02-01", ""),
        ("200", "/metadata/instance/?api-version=2021-02-01&format=json", ""),
        ("200", "/metadata/instance?api-version=2021-02-01&format=text", ""),
        ("200", "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text", ""),
        (
            "200",
            "/metadata/instance/network/interface/0/ipv4/ipAddress/0/publicIpAddress?api-version=2025-04-07&format=text",
            "",
        ),
        ("200", "/metadata/loadbalancer?api-version=2020-10-01", ""),
        ("200", "/metadata/scheduledevents?api-version=2020-07-01", ""),
        ("200", "/metadata/identity/info?api-version=2018-02-01", ""),
        ("400", "/metadata/instance?api-version=2021-02-01", "X-Forwarded-For: 169.254.0.9\r\n"),
        ("400", "/metadata/instance", ""),
        ("400", "/metadata/instance?api-version=2021-02-01&api-version=2021-02-01", ""),
        ("400", "/metadata/instance/compute/vmId?api-version=2021-02-01", ""),
        ("400", "/metadata/identity/oauth2/token?api-version=2018-02-01", ""),
        (
            "400",
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id=x",
            "",
        ),
        ("400", "/metadata/loadbalancer?api-version=2019-06-01", ""),
    ];
    let s = snapshot(default_config(), &Keys::fixed(1));
    for (status, target, extra) in REQUESTS {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{extra}\r\n"
        );
        assert_no_allocations(&s, request.as_bytes(), status);
    }
}

/// AWS: with and without an IMDSv2 token, in both token modes.
#[test]
fn aws_answers_allocate_nothing() {
    let keys = Keys::fixed(1);
    let tok = token::mint(&keys.session, NOW, 21_600);
    let v1 =
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".to_vec();
    let v2 = format!(
        "GET /latest/meta-data/placement/availability-zone/ HTTP/1.1\r\n\
         Host: 169.254.169.254\r\nX-aws-ec2-metadata-token: {tok}\r\n\r\n"
    )
    .into_bytes();
    let missing = b"GET /latest/meta-data/nothing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let bad = b"GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: x\r\n\r\n".to_vec();
    for mode in [Imdsv2::Optional, Imdsv2::Required] {
        let mut cfg = default_config();
        cfg.aws.imdsv2 = mode;
        let s = snapshot(cfg, &keys);
        let required = mode == Imdsv2::Required;
        assert_no_allocations(&s, &v1, if required { "401" } else { "200" });
        assert_no_allocations(&s, &v2, "200");
        assert_no_allocations(&s, &missing, if required { "401" } else { "404" });
        assert_no_allocations(&s, &bad, "401");
    }
}

/// GCE: leaves, listings, recursive JSON, redirects and parameter errors (its 404 page quotes
/// the path, so it is rendered per request).
#[test]
fn gce_answers_allocate_nothing() {
    let s = snapshot(default_config(), &Keys::fixed(1));
    for (status, target) in [
        ("200", "/"),
        ("200", "/computeMetadata/v1/instance/hostname"),
        ("200", "/computeMetadata/v1/instance/"),
        ("200", "/computeMetadata/v1/instance/?recursive=true"),
        ("200", "/computeMetadata/v1/project/numeric-project-id"),
        ("200", "/computeMetadata/v1/instance/tags?alt=text"),
        ("301", "/computeMetadata/v1/instance"),
        ("400", "/computeMetadata/v1/instance/?alt=xml"),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n"
        );
        assert_no_allocations(&s, request.as_bytes(), status);
    }
}

/// A fleet: finding the caller's profile (longest prefix over two prefix lengths; an IPv6
/// profile beside them) and answering from its snapshot allocates nothing either, and each
/// caller gets its own instance's answer (a caller outside every profile, the base's).
#[test]
fn fleet_answers_allocate_nothing() {
    let patch = |n: u8| {
        serde_json::json!({
            "azure": {"instance": {"compute": {"vmId": format!("00000000-0000-4000-8000-00000000000{n}")}}},
            "gce": {"instance": {"id": 1000 + u64::from(n)}},
            "aws": {"metaData": {"instance-id": format!("i-0000000000000000{n}")}}
        })
    };
    let mut text: serde_json::Value =
        serde_json::from_str(config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    text["fleet"] = serde_json::json!({"profiles": [
        {"name": "net", "sources": ["169.254.20.0/24"], "patch": patch(1)},
        {"name": "host", "sources": ["169.254.20.7"], "patch": patch(2)},
        {"name": "v6", "sources": ["fe80::/64"], "patch": patch(3)},
    ]});
    let cfg = config::load_str(&text.to_string(), "fleet.json", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let s = snapshot(cfg, &Keys::fixed(1));
    let requests: [(&[u8], &str, [&str; 3]); 3] = [
        (
            b"GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n",
            "200",
            ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002", "5f3c9d2e-8b7a-4e1f-a6d0-3c9b2e7f4a18"],
        ),
        (
            b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n",
            "200",
            ["1001", "1002", "4520031799277581759"],
        ),
        (
            b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            "200",
            ["i-00000000000000001", "i-00000000000000002", "i-0f1e2d3c4b5a69788"],
        ),
    ];
    for (request, status, ids) in requests {
        for (peer, id) in [
            ([169, 254, 20, 1], ids[0]),
            ([169, 254, 20, 7], ids[1]),
            ([169, 254, 21, 1], ids[2]),
        ] {
            let (n, response) = allocations_from(&s, peer, request, status);
            let text = String::from_utf8_lossy(&response);
            assert_eq!(n, 0, "{peer:?} {text}");
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert!(body.starts_with(id), "{peer:?}: {body:?}, want {id}");
        }
    }
    let counts = s.fleet_counts();
    let answered: Vec<u64> = counts.answered.iter().map(|(_, n)| *n).collect();
    // Two answers per request (warm-up and counted) for each of three requests.
    assert_eq!(answered, [6, 6, 6, 0], "{counts:?}");
}

/// Counting and timing each request for the metrics, and publishing an engine's counters,
/// allocate nothing either: the engine and the kernel-socket loop answer through this sink
/// and publish once per loop iteration.
#[test]
fn metrics_recording_allocates_nothing() {
    use imds_tun::metrics::{EngineSlot, Observer, RequestMetrics, Route};
    use std::sync::Arc;
    use std::time::Instant;

    let s = snapshot(default_config(), &Keys::fixed(1));
    let limits = s.config.server.limits();
    let peer = SocketAddr::from(([169, 254, 0, 2], 40000));
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        peer,
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
        wait_over: false,
    };
    let observer = Observer::with(Arc::new(RequestMetrics::default()), None);
    let slot = EngineSlot::default();
    let tcp = imds_tun::tcp::Counters::default();
    let engine = imds_tun::engine::EngineCounters::default();
    let request =
        b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nMetadata: true\r\n\r\n";
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    let mut answered = Vec::with_capacity(8);
    let mut allocated = 0;
    for round in 0..2u64 {
        let before = ALLOCATIONS.with(Cell::get);
        let arrival = (Instant::now(), ctx.now);
        let mut sink = observer.sink(&mut out, &mut answered, ctx.door, peer, arrival);
        respond_all(request, &s, &ctx, &limits, &mut sink);
        observer.finish(&mut answered, Instant::now());
        slot.publish(&tcp, &engine, (0, 1, 0), round);
        allocated = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(out.len(), 1, "round {round}");
        out.clear();
    }
    assert_eq!(
        allocated, 0,
        "recording a request allocated {allocated} times"
    );
    assert_eq!(observer.metrics().count(Route::AzureInstance, 200), 2);
}
