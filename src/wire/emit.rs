//! Emitting IP + TCP headers and ICMP echo replies into caller buffers.
//!
//! The TCP payload is never copied by [`emit_segment`]: the caller passes its length and its
//! [`PartialSum`] and later writes the header and the payload slice together (writev). The
//! checksum is the pseudo-header sum + the header sum + the payload sum (RFC 1071, RFC 1624);
//! every TCP header length is a multiple of 4, so combining the payload sum after the header
//! needs no byte swap.

use std::net::IpAddr;

use super::{
    pseudo_header_sum, EchoRequest, PartialSum, SegmentHeader, TcpOptions, PROTO_ICMPV6, PROTO_TCP,
};

/// Why an emit did not happen. These are caller bugs or configuration limits, never peer input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("buffer too small")]
    BufferTooSmall,
    #[error("source and destination address families differ")]
    MixedFamilies,
    #[error("payload too large for one IP packet")]
    PayloadTooLarge,
}

/// Writes the IP and TCP headers (with options) of a segment carrying `payload_len` bytes whose
/// sum is `payload_sum`, into the front of `buf`. Returns the header length; the payload goes
/// right after it on the wire.
pub fn emit_segment(
    h: &SegmentHeader,
    payload_len: usize,
    payload_sum: PartialSum,
    buf: &mut [u8],
) -> Result<usize, EmitError> {
    let opt_len = h.options.emitted_len();
    let tcp_len = 20 + opt_len;
    let (ip_len, v6) = match (h.src.ip(), h.dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (20, false),
        (IpAddr::V6(_), IpAddr::V6(_)) => (40, true),
        _ => return Err(EmitError::MixedFamilies),
    };
    let header_len = ip_len + tcp_len;
    let tcp_total = tcp_len + payload_len;
    // IPv4 total length and IPv6 payload length are both 16-bit fields.
    let limit = if v6 { 65535 } else { 65535 - ip_len };
    if tcp_total > limit {
        return Err(EmitError::PayloadTooLarge);
    }
    let buf = buf.get_mut(..header_len).ok_or(EmitError::BufferTooSmall)?;
    let (ip, tcp) = buf.split_at_mut(ip_len);
    emit_ip(
        ip,
        h.src.ip(),
        h.dst.ip(),
        PROTO_TCP,
        tcp_total,
        h.hop_limit,
    );

    tcp[0..2].copy_from_slice(&h.src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&h.dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&h.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&h.ack.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    tcp[13] = h.flags.0;
    tcp[14..16].copy_from_slice(&h.window.to_be_bytes());
    tcp[16..20].fill(0); // checksum (filled below) and urgent pointer
    emit_options(&h.options, &mut tcp[20..]);

    let pseudo = pseudo_header_sum(h.src.ip(), h.dst.ip(), PROTO_TCP, tcp_total as u32)
        .ok_or(EmitError::MixedFamilies)?;
    let sum = pseudo
        .combine(PartialSum::of(tcp))
        .combine(payload_sum)
        .checksum();
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    Ok(header_len)
}

/// Convenience for tests and the scratch path: header and payload written contiguously.
/// Returns the total packet length.
pub fn emit_segment_with_payload(
    h: &SegmentHeader,
    payload: &[u8],
    buf: &mut [u8],
) -> Result<usize, EmitError> {
    let n = emit_segment(h, payload.len(), PartialSum::of(payload), buf)?;
    let end = n + payload.len();
    buf.get_mut(n..end)
        .ok_or(EmitError::BufferTooSmall)?
        .copy_from_slice(payload);
    Ok(end)
}

/// Writes the ICMP echo reply (IPv4 type 0 / ICMPv6 type 129) to `req` into `buf`, swapping
/// addresses and copying the request's data. Returns the packet length.
pub fn emit_echo_reply(
    req: &EchoRequest<'_>,
    hop_limit: u8,
    buf: &mut [u8],
) -> Result<usize, EmitError> {
    let (ip_len, v6) = match (req.src, req.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (20, false),
        (IpAddr::V6(_), IpAddr::V6(_)) => (40, true),
        _ => return Err(EmitError::MixedFamilies),
    };
    let icmp_len = 8 + req.data.len();
    if icmp_len > if v6 { 65535 } else { 65535 - ip_len } {
        return Err(EmitError::PayloadTooLarge);
    }
    let buf = buf
        .get_mut(..ip_len + icmp_len)
        .ok_or(EmitError::BufferTooSmall)?;
    let (ip, icmp) = buf.split_at_mut(ip_len);
    let protocol = if v6 { PROTO_ICMPV6 } else { super::PROTO_ICMP };
    emit_ip(ip, req.dst, req.src, protocol, icmp_len, hop_limit);
    icmp[0] = if v6 { 129 } else { 0 };
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..6].copy_from_slice(&req.ident.to_be_bytes());
    icmp[6..8].copy_from_slice(&req.seq_no.to_be_bytes());
    icmp[8..].copy_from_slice(req.data);
    let base = if v6 {
        pseudo_header_sum(req.dst, req.src, PROTO_ICMPV6, icmp_len as u32)
            .ok_or(EmitError::MixedFamilies)?
    } else {
        PartialSum::default()
    };
    let sum = base.combine(PartialSum::of(icmp)).checksum();
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(ip_len + icmp_len)
}

/// Writes an IPv4 (20 bytes, DF, no options) or IPv6 (40 bytes) header; `ip` has exactly that
/// length and the families of `src` and `dst` have been checked to match.
fn emit_ip(
    ip: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    payload_len: usize,
    hop_limit: u8,
) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + payload_len) as u16;
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].fill(0); // identification: unused with DF (RFC 6864)
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            ip[8] = hop_limit;
            ip[9] = protocol;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = PartialSum::of(ip).checksum();
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip[0] = 0x60;
            ip[1..4].fill(0);
            ip[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            ip[6] = protocol;
            ip[7] = hop_limit;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
        }
        _ => {}
    }
}

/// Writes options in Linux's layout, padded to 4-byte words; `out` is at least
/// `opts.emitted_len()` long.
fn emit_options(opts: &TcpOptions, out: &mut [u8]) {
    let mut i = 0;
    let mut put = |bytes: &[u8]| {
        out[i..i + bytes.len()].copy_from_slice(bytes);
        i += bytes.len();
    };
    if let Some(mss) = opts.mss {
        let m = mss.to_be_bytes();
        put(&[2, 4, m[0], m[1]]);
    }
    match (opts.sack_permitted, opts.timestamps) {
        (sack, Some(ts)) => {
            if sack {
                put(&[4, 2]);
            } else {
                put(&[1, 1]);
            }
            put(&[8, 10]);
            put(&ts.value.to_be_bytes());
            put(&ts.echo.to_be_bytes());
        }
        (true, None) => put(&[1, 1, 4, 2]),
        (false, None) => {}
    }
    if let Some(shift) = opts.window_scale {
        put(&[1, 3, 3, shift]);
    }
}
