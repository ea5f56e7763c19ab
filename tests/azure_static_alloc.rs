//! Azure answers from the snapshot allocate nothing (design principle 2): every endpoint's
//! static answer and every error that quotes nothing, on the keep-alive path.
//!
//! Same counting allocator as `tests/static_alloc.rs`: allocations made by this thread are
//! counted while the request loop runs a second time (the first run warms up).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::SystemTime;

use imds_tun::cloud::RequestContext;
use imds_tun::config;
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

/// (expected status, path and query, extra header lines).
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
    ("400", "/metadata/instance?api-version=2021-02-01", "X-Forwarded-For: 10.0.0.1\r\n"),
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

#[test]
fn azure_static_answers_allocate_nothing() {
    let no_env = |_: &str| None;
    let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = Snapshot::build(cfg, &Keys::fixed(1), "test").unwrap_or_else(|e| panic!("{e}"));
    let limits = snapshot.config.server.limits();
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH,
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
    };
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    for (status, target, extra) in REQUESTS {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{extra}\r\n"
        );
        let request = request.as_bytes();
        out.clear();
        respond_all(request, &snapshot, &ctx, &limits, &mut out);
        let head = out.first().map(|o| o.bytes.clone()).unwrap_or_default();
        assert!(
            head.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
            "{target}: {}",
            String::from_utf8_lossy(&head)
        );
        out.clear();
        let before = ALLOCATIONS.with(Cell::get);
        let progress = respond_all(request, &snapshot, &ctx, &limits, &mut out);
        let allocated = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(progress.answered, 1);
        assert!(out[0].sum.is_some(), "{target}: static answers carry a sum");
        assert_eq!(allocated, 0, "{target} allocated {allocated} times");
    }
}
