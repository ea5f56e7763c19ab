//! The HTTP layer and every cloud's router: arbitrary bytes as a connection's receive buffer,
//! answered by `respond_all` over the default snapshot (what both front doors run). Never a
//! panic; the consumed length never exceeds the input; a parse error closes with one
//! response; every response is a complete HTTP/1.1 response with a matching Content-Length.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use imds_tun::cloud::RequestContext;
use imds_tun::config;
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::http::{parse::header_array, parse_request, Limits};
use imds_tun::snapshot::{Keys, Snapshot};
use libfuzzer_sys::fuzz_target;

fn snapshot() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| {
        let no_env = |_: &str| None;
        let cfg = config::default_config(&no_env).expect("default configuration");
        Snapshot::build(cfg, &Keys::fixed(1), "fuzz").expect("snapshot")
    })
}

fuzz_target!(|data: &[u8]| {
    // The parser alone, with the default bounds.
    let mut headers = header_array();
    let _ = parse_request(data, &mut headers, &Limits::default());

    let s = snapshot();
    let ctx = RequestContext {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        peer: SocketAddr::from(([169, 254, 0, 2], 40000)),
        local: SocketAddr::from(([169, 254, 169, 254], 80)),
        door: Default::default(),
        wait_over: false,
    };
    let mut out: Vec<Outgoing> = Vec::new();
    let p = respond_all(data, s, &ctx, &s.config.server.limits(), &mut out);
    assert!(p.consumed <= data.len());
    assert!(out.len() >= p.answered);
    for o in &out {
        let text = &o.bytes[..];
        assert!(text.starts_with(b"HTTP/1.1 "), "not a status line");
        let head_end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head")
            + 4;
        let head = std::str::from_utf8(&text[..head_end]).expect("an ASCII head");
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
        {
            let len: usize = len.trim().parse().expect("a numeric Content-Length");
            // HEAD answers carry the length of the body they leave out.
            assert!(text.len() == head_end + len || text.len() == head_end);
        }
    }
});
