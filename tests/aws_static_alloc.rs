//! AWS answers from the snapshot allocate nothing, with or without an IMDSv2 token, in both
//! token modes (design principle 2): checking a token decodes into a stack buffer and
//! computes the MAC on the stack.
//!
//! Same counting allocator as `tests/static_alloc.rs`: allocations made by this thread are
//! counted while the request loop runs a second time (the first run warms up).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use imds_tun::cloud::aws::token;
use imds_tun::cloud::RequestContext;
use imds_tun::config::{self, aws::Imdsv2};
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

const NOW: u64 = 1_767_225_600;

fn count(snapshot: &Snapshot, request: &[u8], status: &str) -> usize {
    let limits = snapshot.config.server.limits();
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
    };
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    respond_all(request, snapshot, &ctx, &limits, &mut out);
    let head = out.first().map(|o| o.bytes.clone()).unwrap_or_default();
    assert!(
        head.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
        "{}: {}",
        String::from_utf8_lossy(request),
        String::from_utf8_lossy(&head)
    );
    out.clear();
    let before = ALLOCATIONS.with(Cell::get);
    respond_all(request, snapshot, &ctx, &limits, &mut out);
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn aws_static_answers_allocate_nothing() {
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
        let mut cfg = config::default_config(&|_| None).unwrap_or_else(|e| panic!("{e}"));
        cfg.aws.imdsv2 = mode;
        let snapshot = Snapshot::build(cfg, &keys, "test").unwrap_or_else(|e| panic!("{e}"));
        let v1_status = if mode == Imdsv2::Required {
            "401"
        } else {
            "200"
        };
        for (request, status) in [
            (&v1, v1_status),
            (&v2, "200"),
            (
                &missing,
                if mode == Imdsv2::Required {
                    "401"
                } else {
                    "404"
                },
            ),
            (&bad, "401"),
        ] {
            let n = count(&snapshot, request, status);
            assert_eq!(
                n,
                0,
                "{mode:?}: {} allocated {n} times",
                String::from_utf8_lossy(request)
            );
        }
    }
}
