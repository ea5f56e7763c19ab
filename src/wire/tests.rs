//! Golden byte arrays, round trips and robustness of `wire`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// A real Linux 6.x SYN captured on `lo` (MTU 65536) in a fresh namespace: MSS 65495,
/// SACK-permitted, timestamps, NOP, window scale 10. The loopback capture carries a
/// CHECKSUM_PARTIAL TCP checksum (pseudo-header only, 0xfe30); the checksum below was
/// recomputed over the same bytes, everything else is as captured.
const LINUX_SYN_V4: &str = "4500003c975940004006a5607f0000017f0000018b100050cde4070900000000\
                            a002ffd7803400000204ffd70402080aae59c122000000000103030a";
const LINUX_SYN_V4_PARTIAL_CSUM: &str = "4500003c975940004006a5607f0000017f0000018b100050cde40709\
                            00000000a002ffd7fe3000000204ffd70402080aae59c122000000000103030a";
/// The same for IPv6 over `::1` (MSS 65476 = 65536 - 60), flow label 0x8298c.
const LINUX_SYN_V6: &str = "6008298c00280640000000000000000000000000000000010000000000000000\
                            0000000000000001acf400502b54e35900000000a002ffc4266a00000204ffc4\
                            0402080a970ed4ba000000000103030a";

fn linux_syn_options(mss: u16, tsval: u32) -> TcpOptions {
    TcpOptions {
        mss: Some(mss),
        window_scale: Some(10),
        sack_permitted: true,
        timestamps: Some(Timestamps {
            value: tsval,
            echo: 0,
        }),
    }
}

#[test]
fn golden_linux_syn_v4() {
    let bytes = hex(LINUX_SYN_V4);
    let Ok(Packet::Tcp(seg)) = parse(&bytes) else {
        panic!("not a TCP segment")
    };
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(
        seg.header,
        SegmentHeader {
            src: SocketAddr::new(lo, 0x8b10),
            dst: SocketAddr::new(lo, 80),
            seq: 0xcde4_0709,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 65495,
            options: linux_syn_options(65495, 0xae59_c122),
            hop_limit: 64,
        }
    );
    assert!(seg.payload.is_empty());

    // Emitting the parsed header gives the same bytes except the IPv4 identification (we send
    // 0 with DF, RFC 6864) and, consequently, the IP header checksum: the option layout is
    // Linux's.
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = emit_segment(&seg.header, 0, PartialSum::default(), &mut out).expect("emit");
    let mut expected = bytes.clone();
    expected[4..6].fill(0);
    expected[10..12].fill(0);
    let sum = PartialSum::of(&expected[..20]).checksum();
    expected[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(&out[..n], &expected[..]);
}

#[test]
fn golden_linux_syn_v6() {
    let bytes = hex(LINUX_SYN_V6);
    let Ok(Packet::Tcp(seg)) = parse(&bytes) else {
        panic!("not a TCP segment")
    };
    let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(seg.header.src, SocketAddr::new(lo, 0xacf4));
    assert_eq!(seg.header.dst, SocketAddr::new(lo, 80));
    assert_eq!(seg.header.seq, 0x2b54_e359);
    assert_eq!(seg.header.flags, TcpFlags::SYN);
    assert_eq!(seg.header.options, linux_syn_options(65476, 0x970e_d4ba));
    assert_eq!(seg.header.hop_limit, 64);

    let mut out = [0u8; MAX_HEADER_LEN];
    let n = emit_segment(&seg.header, 0, PartialSum::default(), &mut out).expect("emit");
    let mut expected = bytes.clone();
    expected[1..4].fill(0); // we send flow label 0
    assert_eq!(&out[..n], &expected[..]);
}

#[test]
fn unfinished_checksum_is_refused() {
    assert_eq!(
        parse(&hex(LINUX_SYN_V4_PARTIAL_CSUM)),
        Err(Malformed::BadTcpChecksum)
    );
}

fn kind(p: Packet<'_>) -> &'static str {
    match p {
        Packet::Tcp(_) => "tcp",
        Packet::EchoRequest(_) => "echo",
        Packet::Other { .. } => "other",
    }
}

/// Recomputes the IPv4 header checksum after a test edited the header.
fn fix_ip_sum(p: &mut [u8]) {
    p[10..12].fill(0);
    let s = PartialSum::of(&p[..20]).checksum();
    p[10..12].copy_from_slice(&s.to_be_bytes());
}

#[test]
fn malformed_reasons() {
    let good = hex(LINUX_SYN_V4);
    let case = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        parse(&p).map(kind)
    };
    assert_eq!(parse(&[]), Err(Malformed::Truncated));
    assert_eq!(case(&|p| p.truncate(19)), Err(Malformed::Truncated));
    assert_eq!(case(&|p| p.truncate(50)), Err(Malformed::Truncated));
    assert_eq!(case(&|p| p[0] = 0x55), Err(Malformed::BadVersion));
    assert_eq!(case(&|p| p[0] = 0x44), Err(Malformed::BadIpHeaderLength));
    assert_eq!(case(&|p| p[0] = 0x46), Err(Malformed::Ipv4Options));
    assert_eq!(
        case(&|p| {
            p[2..4].copy_from_slice(&10u16.to_be_bytes());
            fix_ip_sum(p)
        }),
        Err(Malformed::BadTotalLength)
    );
    assert_eq!(
        case(&|p| {
            p[2..4].copy_from_slice(&100u16.to_be_bytes());
            fix_ip_sum(p)
        }),
        Err(Malformed::Truncated)
    );
    assert_eq!(case(&|p| p[8] = 1), Err(Malformed::BadIpChecksum));
    assert_eq!(
        case(&|p| {
            p[6] = 0x20; // MF
            fix_ip_sum(p)
        }),
        Err(Malformed::Fragment)
    );
    assert_eq!(
        case(&|p| {
            p[6] = 0x00;
            p[7] = 0x08; // offset 64
            fix_ip_sum(p)
        }),
        Err(Malformed::Fragment)
    );
    assert_eq!(case(&|p| p[32] = 0x40), Err(Malformed::BadTcpHeaderLength));
    assert_eq!(case(&|p| p[32] = 0xf0), Err(Malformed::Truncated));
    assert_eq!(case(&|p| p[40] ^= 1), Err(Malformed::BadTcpChecksum));
    // Trailing link padding beyond the IP total length is ignored.
    assert_eq!(case(&|p| p.extend_from_slice(&[0; 6])), Ok("tcp"));

    let v6 = hex(LINUX_SYN_V6);
    let case6 = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = v6.clone();
        f(&mut p);
        parse(&p).map(kind)
    };
    assert_eq!(case6(&|p| p.truncate(39)), Err(Malformed::Truncated));
    assert_eq!(case6(&|p| p.truncate(70)), Err(Malformed::Truncated));
    assert_eq!(case6(&|p| p[4..6].fill(0)), Err(Malformed::BadTotalLength));
    assert_eq!(case6(&|p| p[6] = 44), Err(Malformed::Fragment));
    assert_eq!(case6(&|p| p[6] = 0), Ok("other"));
}

#[test]
fn option_list_edge_cases() {
    assert_eq!(
        parse::parse_options_for_test(&[]),
        Ok(TcpOptions::default())
    );
    // Unknown option kinds are skipped, EOL ends the list, wrong-length known options ignored.
    assert_eq!(
        parse::parse_options_for_test(&[30, 4, 1, 2, 2, 3, 0, 0, 0, 2, 4, 1, 1]),
        Ok(TcpOptions::default())
    );
    assert_eq!(
        parse::parse_options_for_test(&[1, 1, 2, 4, 0x05, 0xb4, 0, 9, 9, 9]),
        Ok(TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        })
    );
    for bad in [&[2][..], &[2, 0], &[2, 1], &[2, 5, 0, 0], &[8, 10, 0]] {
        assert_eq!(
            parse::parse_options_for_test(bad),
            Err(Malformed::BadTcpOptions),
            "{bad:?}"
        );
    }
}

fn echo_request_bytes(src: IpAddr, dst: IpAddr, data: &[u8]) -> Vec<u8> {
    // An echo request is an echo reply with the type changed: build the reply of a request
    // going the other way, then flip the type and fix the checksum.
    let req = EchoRequest {
        src: dst,
        dst: src,
        ident: 0x1234,
        seq_no: 7,
        data,
    };
    let mut buf = vec![0u8; 100 + data.len()];
    let n = emit_echo_reply(&req, 64, &mut buf).expect("emit");
    buf.truncate(n);
    let (off, v6) = if src.is_ipv4() {
        (20, false)
    } else {
        (40, true)
    };
    buf[off] = if v6 { 128 } else { 8 };
    buf[off + 2..off + 4].fill(0);
    let base = if v6 {
        pseudo_header_sum(src, dst, PROTO_ICMPV6, (n - off) as u32).expect("same family")
    } else {
        PartialSum::default()
    };
    let s = base.combine(PartialSum::of(&buf[off..])).checksum();
    buf[off + 2..off + 4].copy_from_slice(&s.to_be_bytes());
    buf
}

#[test]
fn echo_request_and_reply() {
    let client4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let meta4 = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));
    let client6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let meta6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254));
    for (c, m) in [(client4, meta4), (client6, meta6)] {
        let bytes = echo_request_bytes(c, m, b"ping data!");
        let Ok(Packet::EchoRequest(req)) = parse(&bytes) else {
            panic!("not an echo request")
        };
        assert_eq!((req.src, req.dst, req.ident, req.seq_no), (c, m, 0x1234, 7));
        assert_eq!(req.data, b"ping data!");
        let mut out = [0u8; 200];
        let n = emit_echo_reply(&req, 64, &mut out).expect("emit");
        // A reply is well-formed (checksums verified) and is not a request.
        let protocol = if c.is_ipv4() {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        assert_eq!(parse(&out[..n]), Ok(Packet::Other { protocol }));
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(parse(&corrupt), Err(Malformed::BadIcmpChecksum));
    }
}

#[test]
fn emit_errors() {
    let h = SegmentHeader {
        src: "169.254.0.1:80".parse().expect("addr"),
        dst: "[::1]:80".parse().expect("addr"),
        seq: 0,
        ack: 0,
        flags: TcpFlags::ACK,
        window: 0,
        options: TcpOptions::default(),
        hop_limit: 64,
    };
    let mut buf = [0u8; MAX_HEADER_LEN];
    assert_eq!(
        emit_segment(&h, 0, PartialSum::default(), &mut buf),
        Err(EmitError::MixedFamilies)
    );
    let h = SegmentHeader {
        dst: "169.254.0.2:1".parse().expect("addr"),
        ..h
    };
    assert_eq!(
        emit_segment(&h, 0, PartialSum::default(), &mut buf[..39]),
        Err(EmitError::BufferTooSmall)
    );
    assert_eq!(
        emit_segment(&h, 65496, PartialSum::default(), &mut buf),
        Err(EmitError::PayloadTooLarge)
    );
    assert_eq!(
        emit_segment(&h, 65495, PartialSum::default(), &mut buf),
        Ok(40)
    );
}

fn arb_addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| (
                SocketAddr::new(IpAddr::V4(a.into()), p),
                SocketAddr::new(IpAddr::V4(b.into()), q)
            )),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| (
                SocketAddr::new(IpAddr::V6(a.into()), p),
                SocketAddr::new(IpAddr::V6(b.into()), q)
            )),
    ]
}

fn arb_options() -> impl Strategy<Value = TcpOptions> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u8>()),
        any::<bool>(),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
        .prop_map(|(mss, window_scale, sack_permitted, ts)| TcpOptions {
            mss,
            window_scale,
            sack_permitted,
            timestamps: ts.map(|(value, echo)| Timestamps { value, echo }),
        })
}

fn arb_header() -> impl Strategy<Value = SegmentHeader> {
    (
        arb_addr_pair(),
        any::<(u32, u32, u8, u16, u8)>(),
        arb_options(),
    )
        .prop_map(
            |((src, dst), (seq, ack, flags, window, hop_limit), options)| SegmentHeader {
                src,
                dst,
                seq,
                ack,
                flags: TcpFlags(flags),
                window,
                options,
                hop_limit,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_emit_round_trip(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..300) {
        let mut buf = vec![0u8; MAX_HEADER_LEN + payload.len()];
        let n = emit_segment_with_payload(&h, &payload, &mut buf).expect("emit");
        let parsed = parse(&buf[..n]);
        prop_assert_eq!(parsed, Ok(Packet::Tcp(Segment { header: h, payload: &payload })));
        // A payload sum assembled from two parts (odd split included) gives the same bytes.
        let split = split.min(payload.len());
        let sum = PartialSum::of(&payload[..split]).combine(PartialSum::of(&payload[split..]));
        let mut buf2 = vec![0u8; MAX_HEADER_LEN];
        let hn = emit_segment(&h, payload.len(), sum, &mut buf2).expect("emit");
        prop_assert_eq!(&buf2[..hn], &buf[..hn]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(which in 0usize..2, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut p = hex(if which == 0 { LINUX_SYN_V4 } else { LINUX_SYN_V6 });
        for (i, b) in edits {
            let len = p.len();
            p[i % len] = b;
        }
        p.truncate(cut % (p.len() + 1));
        let _ = parse(&p);
    }
}
