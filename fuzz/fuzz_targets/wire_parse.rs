//! Packet parsing: `wire::parse` on arbitrary bytes never panics, and every TCP segment it
//! accepts round-trips: emitting its header and payload and parsing that again gives the same
//! segment (`parse(emit(x)) == x`), as does every echo reply it would send.
#![no_main]

use imds_tun::wire::{self, emit_echo_reply, emit_segment_with_payload, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 65535 + 80];
    match wire::parse(data) {
        Ok(Packet::Tcp(seg)) => {
            let n = emit_segment_with_payload(&seg.header, seg.payload, &mut out)
                .expect("a parsed segment can be emitted");
            match wire::parse(&out[..n]) {
                Ok(Packet::Tcp(again)) => assert_eq!(again, seg, "round trip changed the segment"),
                other => panic!("emitted segment parses as {other:?}"),
            }
        }
        Ok(Packet::EchoRequest(req)) => {
            // The reply parses (as a packet that is not an echo request: an echo reply).
            if let Ok(n) = emit_echo_reply(&req, 64, &mut out) {
                assert!(
                    matches!(wire::parse(&out[..n]), Ok(Packet::Other { .. })),
                    "echo reply does not parse"
                );
            }
        }
        Ok(Packet::Other { .. }) | Err(_) => {}
    }
});
