//! Micro-benchmark: parse + route + respond for one static request per cloud, the work the
//! userspace side adds to every keep-alive request (target: well under 300 ns on a 2-core
//! machine; the kernel's own share is ~4 µs, see spec/tun-tcp.md).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use imds_tun::cloud::RequestContext;
use imds_tun::config;
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::metrics::{Observer, RequestMetrics};
use imds_tun::snapshot::{Keys, Snapshot};

const REQUESTS: [(&str, &[u8]); 3] = [
    (
        "azure_instance",
        b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: wrk\r\nMetadata: true\r\n\r\n",
    ),
    (
        "gce_instance_id",
        b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nHost: metadata.google.internal\r\nUser-Agent: wrk\r\nMetadata-Flavor: Google\r\n\r\n",
    ),
    (
        "aws_instance_id",
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: wrk\r\n\r\n",
    ),
];

fn static_request(c: &mut Criterion) {
    let no_env = |_: &str| None;
    let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = Snapshot::build(cfg, &Keys::fixed(1), "bench").unwrap_or_else(|e| panic!("{e}"));
    let limits = snapshot.config.server.limits();
    let ctx = RequestContext {
        now: SystemTime::now(),
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
        wait_over: false,
    };
    let mut group = c.benchmark_group("parse_route_respond");
    group.throughput(Throughput::Elements(1));
    for (name, request) in REQUESTS {
        let mut out: Vec<Outgoing> = Vec::with_capacity(4);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let p = respond_all(black_box(request), &snapshot, &ctx, &limits, &mut out);
                black_box(p);
            })
        });
    }
    // The same through the front doors' recording sink: the request counted by route and
    // status and its latency observed (what metrics add per request; no access log).
    let observer = Observer::with(Arc::new(RequestMetrics::default()), None);
    for (name, request) in REQUESTS {
        let mut out: Vec<Outgoing> = Vec::with_capacity(4);
        let mut answered = Vec::with_capacity(4);
        group.bench_function(format!("{name}_counted"), |b| {
            b.iter(|| {
                out.clear();
                let arrival = (Instant::now(), ctx.now);
                let mut sink = observer.sink(&mut out, &mut answered, ctx.door, ctx.peer, arrival);
                let p = respond_all(black_box(request), &snapshot, &ctx, &limits, &mut sink);
                observer.finish(&mut answered, arrival.0);
                black_box(p);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, static_request);
criterion_main!(benches);
