//! Parsing of raw IP packets (as read from a TUN device) into [`Packet`].
//!
//! Every length is checked before it is used and every slice is taken with a checked range,
//! so no input can panic. etherparse's header slices give field access; the TCP option list is
//! walked here because etherparse's iterator refuses unknown options, which RFC 9293 requires
//! us to skip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{err, Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice};

use super::{
    pseudo_header_sum, EchoRequest, Malformed, Packet, PartialSum, Segment, SegmentHeader,
    TcpFlags, TcpOptions, Timestamps, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
};

/// IPv6 next-header value of the fragment extension header.
const IPV6_FRAGMENT: u8 = 44;

/// Parses one raw IPv4 or IPv6 packet. See the module contract in [`crate::wire`].
pub fn parse(packet: &[u8]) -> Result<Packet<'_>, Malformed> {
    match packet.first().map(|b| b >> 4) {
        None => Err(Malformed::Truncated),
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        Some(_) => Err(Malformed::BadVersion),
    }
}

fn parse_v4(packet: &[u8]) -> Result<Packet<'_>, Malformed> {
    use err::ipv4::{HeaderError, HeaderSliceError};
    let ip = Ipv4HeaderSlice::from_slice(packet).map_err(|e| match e {
        HeaderSliceError::Len(_) => Malformed::Truncated,
        HeaderSliceError::Content(HeaderError::UnexpectedVersion { .. }) => Malformed::BadVersion,
        HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { .. }) => {
            Malformed::BadIpHeaderLength
        }
    })?;
    let header_len = ip.slice().len();
    if header_len != 20 {
        return Err(Malformed::Ipv4Options);
    }
    let total = usize::from(ip.total_len());
    if total < header_len {
        return Err(Malformed::BadTotalLength);
    }
    // Bytes beyond the total length (link padding) are ignored; fewer is a truncation.
    let packet = packet.get(..total).ok_or(Malformed::Truncated)?;
    if PartialSum::of(ip.slice()).checksum() != 0 {
        return Err(Malformed::BadIpChecksum);
    }
    if ip.more_fragments() || ip.fragments_offset().value() != 0 {
        return Err(Malformed::Fragment);
    }
    let src = IpAddr::V4(Ipv4Addr::from(ip.source()));
    let dst = IpAddr::V4(Ipv4Addr::from(ip.destination()));
    let body = packet.get(header_len..).ok_or(Malformed::Truncated)?;
    match ip.protocol().0 {
        PROTO_TCP => parse_tcp(src, dst, ip.ttl(), body),
        PROTO_ICMP => parse_icmp(src, dst, body, false),
        other => Ok(Packet::Other { protocol: other }),
    }
}

fn parse_v6(packet: &[u8]) -> Result<Packet<'_>, Malformed> {
    use err::ipv6::HeaderSliceError;
    let ip = Ipv6HeaderSlice::from_slice(packet).map_err(|e| match e {
        HeaderSliceError::Len(_) => Malformed::Truncated,
        HeaderSliceError::Content(_) => Malformed::BadVersion,
    })?;
    let payload_len = usize::from(ip.payload_length());
    // A zero payload length means a jumbogram (RFC 2675), which cannot arrive over a TUN.
    if payload_len == 0 {
        return Err(Malformed::BadTotalLength);
    }
    let body = packet
        .get(40..40 + payload_len)
        .ok_or(Malformed::Truncated)?;
    let src = IpAddr::V6(Ipv6Addr::from(ip.source()));
    let dst = IpAddr::V6(Ipv6Addr::from(ip.destination()));
    match ip.next_header().0 {
        PROTO_TCP => parse_tcp(src, dst, ip.hop_limit(), body),
        PROTO_ICMPV6 => parse_icmp(src, dst, body, true),
        IPV6_FRAGMENT => Err(Malformed::Fragment),
        // Extension headers (hop-by-hop for MLD, routing...) are never used by metadata
        // clients; such packets are counted and dropped rather than walked.
        other => Ok(Packet::Other { protocol: other }),
    }
}

fn parse_tcp(
    src: IpAddr,
    dst: IpAddr,
    hop_limit: u8,
    body: &[u8],
) -> Result<Packet<'_>, Malformed> {
    use err::tcp::HeaderSliceError;
    let tcp = TcpHeaderSlice::from_slice(body).map_err(|e| match e {
        HeaderSliceError::Len(_) => Malformed::Truncated,
        HeaderSliceError::Content(_) => Malformed::BadTcpHeaderLength,
    })?;
    let len = u32::try_from(body.len()).map_err(|_| Malformed::BadTotalLength)?;
    let pseudo = pseudo_header_sum(src, dst, PROTO_TCP, len).ok_or(Malformed::BadVersion)?;
    if pseudo.combine(PartialSum::of(body)).checksum() != 0 {
        return Err(Malformed::BadTcpChecksum);
    }
    let options = parse_options(tcp.options())?;
    let header_len = tcp.slice().len();
    let payload = body.get(header_len..).ok_or(Malformed::Truncated)?;
    // Byte 13 holds all eight control bits (CWR..FIN).
    let flags = TcpFlags(body.get(13).copied().unwrap_or(0));
    Ok(Packet::Tcp(Segment {
        header: SegmentHeader {
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            flags,
            window: tcp.window_size(),
            options,
            hop_limit,
        },
        payload,
    }))
}

/// Walks the TCP option list (RFC 9293 3.1). Unknown kinds are skipped by their length;
/// known kinds with a wrong length are ignored, as Linux does. A length byte that is missing,
/// below 2 or past the end makes the whole list malformed.
fn parse_options(mut opts: &[u8]) -> Result<TcpOptions, Malformed> {
    let mut out = TcpOptions::default();
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(*opts.get(1).ok_or(Malformed::BadTcpOptions)?);
        if len < 2 {
            return Err(Malformed::BadTcpOptions);
        }
        let opt = opts.get(..len).ok_or(Malformed::BadTcpOptions)?;
        match (kind, opt) {
            (2, &[_, _, a, b]) => out.mss = Some(u16::from_be_bytes([a, b])),
            (3, &[_, _, shift]) => out.window_scale = Some(shift),
            (4, &[_, _]) => out.sack_permitted = true,
            (8, &[_, _, v0, v1, v2, v3, e0, e1, e2, e3]) => {
                out.timestamps = Some(Timestamps {
                    value: u32::from_be_bytes([v0, v1, v2, v3]),
                    echo: u32::from_be_bytes([e0, e1, e2, e3]),
                })
            }
            _ => {}
        }
        opts = &opts[len..];
    }
    Ok(out)
}

fn parse_icmp(src: IpAddr, dst: IpAddr, body: &[u8], v6: bool) -> Result<Packet<'_>, Malformed> {
    let header = body.get(..8).ok_or(Malformed::Truncated)?;
    let sum = if v6 {
        let len = u32::try_from(body.len()).map_err(|_| Malformed::BadTotalLength)?;
        pseudo_header_sum(src, dst, PROTO_ICMPV6, len).ok_or(Malformed::BadVersion)?
    } else {
        PartialSum::default()
    };
    if sum.combine(PartialSum::of(body)).checksum() != 0 {
        return Err(Malformed::BadIcmpChecksum);
    }
    let (echo_request_type, protocol) = if v6 {
        (128, PROTO_ICMPV6)
    } else {
        (8, PROTO_ICMP)
    };
    if header[0] != echo_request_type || header[1] != 0 {
        return Ok(Packet::Other { protocol });
    }
    Ok(Packet::EchoRequest(EchoRequest {
        src,
        dst,
        ident: u16::from_be_bytes([header[4], header[5]]),
        seq_no: u16::from_be_bytes([header[6], header[7]]),
        data: &body[8..],
    }))
}

#[cfg(test)]
pub(super) fn parse_options_for_test(opts: &[u8]) -> Result<TcpOptions, Malformed> {
    parse_options(opts)
}
