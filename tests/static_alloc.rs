//! Answering a static request allocates nothing (design principle 2).
//!
//! A counting global allocator counts allocations made by this thread; the request loop is
//! run once to warm up, then again with the counter armed. The requests are the static
//! answers of each cloud the benchmark uses.

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

/// The static requests of the benchmark, one per cloud, with the statuses they must get.
pub const STATIC_REQUESTS: [(&str, &[u8]); 4] = [
    (
        "200",
        b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n",
    ),
    (
        "200",
        b"GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\r\nMetadata: true\r\n\r\n",
    ),
    (
        "200",
        b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n",
    ),
    (
        "200",
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    ),
];

#[test]
fn static_answers_allocate_nothing() {
    let no_env = |_: &str| None;
    let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = Snapshot::build(cfg, &Keys::fixed(1), "test").unwrap_or_else(|e| panic!("{e}"));
    let limits = snapshot.config.server.limits();
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH,
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
    };
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    for (status, request) in STATIC_REQUESTS {
        out.clear();
        respond_all(request, &snapshot, &ctx, &limits, &mut out);
        let head = out.first().map(|o| o.bytes.clone()).unwrap_or_default();
        let expect = format!("HTTP/1.1 {status} ");
        assert!(
            head.starts_with(expect.as_bytes()),
            "{}: {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&head)
        );
        out.clear();
        let before = ALLOCATIONS.with(Cell::get);
        let progress = respond_all(request, &snapshot, &ctx, &limits, &mut out);
        let allocated = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(progress.answered, 1);
        assert!(
            out[0].sum.is_some(),
            "static answers carry a precomputed sum"
        );
        assert_eq!(
            allocated,
            0,
            "{} allocated {allocated} times",
            String::from_utf8_lossy(request)
        );
    }
}
