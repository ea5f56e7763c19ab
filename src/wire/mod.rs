//! Wire formats: IPv4, IPv6, TCP and ICMP echo, parsed from untrusted bytes and emitted for
//! replies.
//!
//! Purpose: turn a raw IP packet as read from a TUN device (no packet-information header) into
//! one small validated value ([`Packet`]) exactly once, and write every reply from one path
//! ([`emit_segment`], [`emit_echo_reply`]).
//!
//! Contract:
//! - [`parse`] never panics on any input. What it cannot accept is reported as a unit-like
//!   [`Malformed`] reason (usable as a metrics label) and the caller drops the packet. What it
//!   accepts has a verified IPv4 header checksum and a verified TCP/ICMP checksum; fragments and
//!   IPv4 options are refused (a metadata client never needs them).
//! - Emitting writes only headers into a caller buffer; a TCP payload is never copied. Its
//!   checksum contribution comes in as a [`PartialSum`], so a pre-serialised response's sum is
//!   computed once at load time and combined here with the header and pseudo-header (RFC 1624).
//! - `parse(emit(x)) == x` for every header this module can emit (tested).
//!
//! `etherparse` is used only inside this module.

pub mod checksum;
mod emit;
mod parse;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

pub use checksum::PartialSum;
pub use emit::{emit_echo_reply, emit_segment, emit_segment_with_payload, EmitError};
pub use parse::parse;

/// The largest header [`emit_segment`] writes: IPv6 (40) + TCP (20) + options (at most 20).
/// A buffer of this size always suffices for the header part of a segment.
pub const MAX_HEADER_LEN: usize = 40 + 20 + 20;

/// TCP control bits (RFC 9293 section 3.1), as the raw flag byte.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const NONE: TcpFlags = TcpFlags(0);

    /// True if every bit of `other` is set in `self`.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    pub fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    pub fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    pub fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl std::fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(u8, &str); 8] = [
            (0x02, "SYN"),
            (0x10, "ACK"),
            (0x08, "PSH"),
            (0x01, "FIN"),
            (0x04, "RST"),
            (0x20, "URG"),
            (0x40, "ECE"),
            (0x80, "CWR"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// The RFC 7323 timestamps option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamps {
    /// TSval: the sender's clock.
    pub value: u32,
    /// TSecr: the echoed peer clock.
    pub echo: u32,
}

/// The TCP options this stack understands; all others are skipped on parse (RFC 9293 3.1:
/// "A TCP implementation MUST ignore without error any TCP option it does not implement").
/// SACK blocks are skipped too: this server does not use them (see `tcp` module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: Option<Timestamps>,
}

impl TcpOptions {
    /// Bytes these options take in an emitted header (a multiple of 4, at most 20).
    pub fn emitted_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        n += match (self.sack_permitted, self.timestamps.is_some()) {
            (true, true) | (false, true) => 12,
            (true, false) => 4,
            (false, false) => 0,
        };
        if self.window_scale.is_some() {
            n += 4;
        }
        n
    }
}

/// The header of a TCP segment and its IP envelope: what [`parse`] reads and
/// [`emit_segment`] writes. `src` and `dst` are the IP-level source and destination, so for a
/// received segment `src` is the remote peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The raw (unscaled) window field.
    pub window: u16,
    pub options: TcpOptions,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
}

/// A parsed, checksum-verified TCP segment borrowing its payload from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub header: SegmentHeader,
    pub payload: &'a [u8],
}

/// A parsed, checksum-verified ICMP (v4) or ICMPv6 echo request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoRequest<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ident: u16,
    pub seq_no: u16,
    pub data: &'a [u8],
}

/// What a well-formed packet turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Tcp(Segment<'a>),
    EchoRequest(EchoRequest<'a>),
    /// Well-formed but not for this service (UDP, other ICMP types, IPv6 extension headers,
    /// MLD, router solicitations...): drop and count. `protocol` is the IP protocol number or
    /// IPv6 next header.
    Other {
        protocol: u8,
    },
}

/// Why a packet was refused. Unit-like on purpose: it is a metrics label, not a diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    #[error("empty or truncated packet")]
    Truncated,
    #[error("IP version is neither 4 nor 6")]
    BadVersion,
    #[error("IPv4 header length below 20 bytes")]
    BadIpHeaderLength,
    #[error("IP total/payload length impossible")]
    BadTotalLength,
    #[error("IPv4 options present")]
    Ipv4Options,
    #[error("IP fragment")]
    Fragment,
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    #[error("TCP data offset impossible")]
    BadTcpHeaderLength,
    #[error("TCP option list malformed")]
    BadTcpOptions,
    #[error("bad TCP checksum")]
    BadTcpChecksum,
    #[error("bad ICMP checksum")]
    BadIcmpChecksum,
}

impl Malformed {
    /// Every reason, for exporting a counter per reason (`crate::metrics`).
    pub const ALL: [Malformed; 11] = [
        Malformed::Truncated,
        Malformed::BadVersion,
        Malformed::BadIpHeaderLength,
        Malformed::BadTotalLength,
        Malformed::Ipv4Options,
        Malformed::Fragment,
        Malformed::BadIpChecksum,
        Malformed::BadTcpHeaderLength,
        Malformed::BadTcpOptions,
        Malformed::BadTcpChecksum,
        Malformed::BadIcmpChecksum,
    ];

    /// A stable snake_case name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::BadVersion => "bad_version",
            Malformed::BadIpHeaderLength => "bad_ip_header_length",
            Malformed::BadTotalLength => "bad_total_length",
            Malformed::Ipv4Options => "ipv4_options",
            Malformed::Fragment => "fragment",
            Malformed::BadIpChecksum => "bad_ip_checksum",
            Malformed::BadTcpHeaderLength => "bad_tcp_header_length",
            Malformed::BadTcpOptions => "bad_tcp_options",
            Malformed::BadTcpChecksum => "bad_tcp_checksum",
            Malformed::BadIcmpChecksum => "bad_icmp_checksum",
        }
    }
}

/// IP protocol numbers used here.
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// The ones'-complement sum of the TCP/ICMPv6 pseudo-header (RFC 9293 3.1, RFC 8200 8.1).
/// `None` if the addresses are of different families.
pub(crate) fn pseudo_header_sum(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    len: u32,
) -> Option<PartialSum> {
    let mut s = PartialSum::default();
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            s = add_words(s, &a.octets());
            s = add_words(s, &b.octets());
            // RFC 9293: the TCP length is 16 bits in the IPv4 pseudo-header.
            s = s.add_u16(u16::from(protocol)).add_u16(len as u16);
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            s = add_words(s, &a.octets());
            s = add_words(s, &b.octets());
            s = s
                .add_u16((len >> 16) as u16)
                .add_u16(len as u16)
                .add_u16(u16::from(protocol));
        }
        _ => return None,
    }
    Some(s)
}

fn add_words(mut s: PartialSum, bytes: &[u8]) -> PartialSum {
    for p in bytes.chunks_exact(2) {
        s = s.add_u16(u16::from_be_bytes([p[0], p[1]]));
    }
    s
}
