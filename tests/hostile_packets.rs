//! Hostile packets through the whole packet path `up` runs: raw bytes into the engine's
//! in-memory device, parsed by `wire`, demultiplexed by our TCP, answered by HTTP over the
//! default snapshot. Each case sends one kind of garbage or illegal segment and proves three
//! things:
//!
//! 1. it is dropped or answered exactly as it must be (RFC 9293, RFC 5961), and **counted**
//!    under its reason ([`EngineCounters::malformed`], `not_for_us`, `echo_replies`, and the
//!    TCP [`Counters`]);
//! 2. nothing is sent where nothing is due (the device's outbound queue is checked packet by
//!    packet);
//! 3. nothing is stuck: after each case a request on the connection that was open all along
//!    and a request on a fresh connection are answered, and at the end, once every client has
//!    closed and the timers have run, the connection table is empty.
//!
//! The engine runs on a simulated clock; a panic anywhere fails the test.
//!
//! Decisions shown here (see also the `tcp` and `wire` module docs):
//! - UDP to the metadata address is dropped and counted (`not_for_us`) without an ICMP port
//!   unreachable: the engine is not a full IP host, and a metadata client never sends UDP
//!   there. ICMP echo is answered (ping works as on a cloud VM); every other ICMP type is
//!   dropped and counted.
//! - SYN+FIN and SYN+RST are dropped in every state (`illegal_flags_dropped`); a segment with
//!   neither SYN nor ACK (null, FIN-only, Xmas) is dropped without reply (`no_ack_dropped`).

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use imds_tun::config;
use imds_tun::device::{Device as _, Memory, MAX_PACKET};
use imds_tun::engine::{Engine, EngineCounters};
use imds_tun::http::exchange::MAX_OUTPUT;
use imds_tun::snapshot::{Keys, Snapshot, SnapshotCell};
use imds_tun::tcp::{Counters, TcpConfig};
use imds_tun::wire::{
    self, emit_segment_with_payload, Packet, PartialSum, SegmentHeader, TcpFlags, TcpOptions,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const CLIENT: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 2);

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;
const URG: TcpFlags = TcpFlags::URG;

const REQUEST: &[u8] =
    b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";

/// What the engine sent, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Tcp {
        header: SegmentHeader,
        payload: Vec<u8>,
    },
    Echo {
        dst: IpAddr,
        ident: u16,
    },
    Other(Vec<u8>),
}

/// A client connection driven by hand: its next sequence number and what it has received.
#[derive(Debug, Clone, Copy)]
struct Conn {
    local: SocketAddr,
    remote: SocketAddr,
    /// Our (the client's) next sequence number.
    snd_nxt: u32,
    /// The server's next sequence number (what we acknowledge).
    rcv_nxt: u32,
}

struct Harness {
    engine: Engine<Memory>,
    peer: Memory,
    origin: Instant,
    now_ms: u64,
    next_port: u16,
    rx: Vec<u8>,
}

impl Harness {
    fn new() -> Harness {
        let no_env = |_: &str| None;
        let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
        let snapshot =
            Snapshot::build(cfg, &Keys::fixed(5), "hostile").unwrap_or_else(|e| panic!("{e}"));
        let cell = Arc::new(SnapshotCell::new(snapshot));
        let (peer, engine_end) = Memory::pair(1024);
        let mut tcp = TcpConfig::default();
        tcp.listen.insert(SocketAddr::new(IpAddr::V4(SERVER), 80));
        tcp.listen
            .insert(SocketAddr::new(IpAddr::V6(SERVER_V6), 80));
        tcp.time_wait = Duration::from_secs(2);
        let origin = Instant::now();
        Harness {
            engine: Engine::new(engine_end, tcp, [9; 16], cell, origin),
            peer,
            origin,
            now_ms: 0,
            next_port: 40000,
            rx: vec![0; MAX_PACKET],
        }
    }

    fn now(&self) -> Instant {
        self.origin + Duration::from_millis(self.now_ms)
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + self.now_ms / 1000)
    }

    /// Hands `packet` to the engine, lets it run, and returns everything it sent.
    fn inject(&mut self, packet: &[u8]) -> Vec<Sent> {
        let now = self.now();
        self.peer
            .send(now, &[IoSlice::new(packet)])
            .unwrap_or_else(|e| panic!("{e}"));
        self.run()
    }

    /// One engine turn at the current time: read, timers, write.
    fn run(&mut self) -> Vec<Sent> {
        let (now, wall) = (self.now(), self.wall());
        self.engine
            .handle_ready(now, wall)
            .unwrap_or_else(|e| panic!("{e}"));
        self.engine.handle_timeout(now);
        self.engine.flush(now);
        if let Err(e) = self.engine.tcp().check_invariants() {
            panic!("TCP invariant broken: {e}");
        }
        let mut out = Vec::new();
        while let Some(n) = self
            .peer
            .recv(now, &mut self.rx)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            out.push(match wire::parse(&self.rx[..n]) {
                Ok(Packet::Tcp(seg)) => Sent::Tcp {
                    header: seg.header,
                    payload: seg.payload.to_vec(),
                },
                Ok(Packet::EchoRequest(_)) | Ok(Packet::Other { .. }) | Err(_) => {
                    echo_reply(&self.rx[..n]).unwrap_or_else(|| Sent::Other(self.rx[..n].to_vec()))
                }
            });
        }
        out
    }

    /// Advances the clock, running timers every 100 ms; returns what was sent.
    fn advance(&mut self, ms: u64) -> Vec<Sent> {
        let mut out = Vec::new();
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms = (self.now_ms + 100).min(end);
            out.extend(self.run());
        }
        out
    }

    fn counters(&self) -> (EngineCounters, Counters) {
        (
            self.engine.counters().clone(),
            self.engine.tcp().counters().clone(),
        )
    }

    /// A new client connection through the three-way handshake.
    fn connect(&mut self, v6: bool) -> Conn {
        self.next_port += 1;
        let (client, server) = if v6 {
            (IpAddr::V6(CLIENT_V6), IpAddr::V6(SERVER_V6))
        } else {
            (IpAddr::V4(CLIENT), IpAddr::V4(SERVER))
        };
        let mut c = Conn {
            local: SocketAddr::new(client, self.next_port),
            remote: SocketAddr::new(server, 80),
            snd_nxt: u32::from(self.next_port).wrapping_mul(1_000_003),
            rcv_nxt: 0,
        };
        let syn = segment(&c, SYN, c.snd_nxt, 0, b"", mss_option());
        let out = self.inject(&syn);
        let [Sent::Tcp { header: sa, .. }] = &out[..] else {
            panic!("expected one SYN-ACK, got {out:?}")
        };
        assert_eq!(sa.flags, SYN | ACK);
        assert_eq!(sa.ack, c.snd_nxt.wrapping_add(1));
        c.snd_nxt = c.snd_nxt.wrapping_add(1);
        c.rcv_nxt = sa.seq.wrapping_add(1);
        let ack = segment(&c, ACK, c.snd_nxt, c.rcv_nxt, b"", TcpOptions::default());
        let out = self.inject(&ack);
        assert!(out.is_empty(), "handshake ACK answered: {out:?}");
        c
    }

    /// Sends one request on `c` and returns the response bytes (one segment: the MSS is
    /// large), acknowledging them.
    fn request(&mut self, c: &mut Conn) -> Vec<u8> {
        let data = segment(
            c,
            ACK | PSH,
            c.snd_nxt,
            c.rcv_nxt,
            REQUEST,
            TcpOptions::default(),
        );
        c.snd_nxt = c.snd_nxt.wrapping_add(REQUEST.len() as u32);
        let out = self.inject(&data);
        let [Sent::Tcp { header, payload }] = &out[..] else {
            panic!("expected one response segment, got {out:?}")
        };
        assert_eq!(
            header.seq, c.rcv_nxt,
            "response at the wrong sequence number"
        );
        assert_eq!(header.ack, c.snd_nxt, "request not acknowledged");
        c.rcv_nxt = c.rcv_nxt.wrapping_add(payload.len() as u32);
        let ack = segment(c, ACK, c.snd_nxt, c.rcv_nxt, b"", TcpOptions::default());
        assert!(self.inject(&ack).is_empty());
        payload.clone()
    }

    /// Closes `c` from the client side (FIN, the server's FIN, our ACK).
    fn close(&mut self, c: &mut Conn) {
        let fin = segment(
            c,
            FIN | ACK,
            c.snd_nxt,
            c.rcv_nxt,
            b"",
            TcpOptions::default(),
        );
        c.snd_nxt = c.snd_nxt.wrapping_add(1);
        let out = self.inject(&fin);
        let fin_seen = out.iter().any(|s| {
            matches!(s, Sent::Tcp { header, .. } if header.flags.fin() && header.ack == c.snd_nxt)
        });
        assert!(fin_seen, "the server did not close after our FIN: {out:?}");
        c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
        let ack = segment(c, ACK, c.snd_nxt, c.rcv_nxt, b"", TcpOptions::default());
        assert!(self.inject(&ack).is_empty());
    }
}

/// Parses an echo reply sent by the engine.
fn echo_reply(p: &[u8]) -> Option<Sent> {
    if p.first()? >> 4 == 4 && *p.get(9)? == 1 && *p.get(20)? == 0 {
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let ident = u16::from_be_bytes([*p.get(24)?, *p.get(25)?]);
        return Some(Sent::Echo {
            dst: IpAddr::V4(dst),
            ident,
        });
    }
    None
}

fn mss_option() -> TcpOptions {
    TcpOptions {
        mss: Some(65495),
        ..TcpOptions::default()
    }
}

/// A checksummed segment from the client side of `c`.
fn segment(
    c: &Conn,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: &[u8],
    options: TcpOptions,
) -> Vec<u8> {
    let h = SegmentHeader {
        src: c.local,
        dst: c.remote,
        seq,
        ack,
        flags,
        window: 65535,
        options,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 80 + payload.len()];
    let n = emit_segment_with_payload(&h, payload, &mut buf).unwrap_or_else(|e| panic!("{e:?}"));
    buf.truncate(n);
    buf
}

/// Recomputes the IPv4 header checksum after an edit.
fn fix_ip_sum(p: &mut [u8]) {
    p[10..12].fill(0);
    let s = PartialSum::of(&p[..20]).checksum();
    p[10..12].copy_from_slice(&s.to_be_bytes());
}

/// Recomputes the TCP (or UDP, ICMP) checksum of an IPv4 packet with a 20-byte header whose
/// transport checksum field is at `at` (relative to the transport header); `pseudo` adds the
/// pseudo-header (TCP, UDP) or not (ICMP).
fn fix_l4_sum(p: &mut [u8], at: usize, pseudo: bool) {
    let body = 20;
    p[body + at..body + at + 2].fill(0);
    let mut sum = PartialSum::of(&p[body..]);
    if pseudo {
        let len = (p.len() - body) as u16;
        let ph = PartialSum::of(&p[12..20])
            .add_u16(u16::from(p[9]))
            .add_u16(len);
        sum = ph.combine(sum);
    }
    let c = sum.checksum();
    p[body + at..body + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 packet of `protocol` with `body` from the client to `dst`, checksums right.
fn ipv4(protocol: u8, dst: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let total = 20 + body.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&CLIENT.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(body);
    fix_ip_sum(&mut p);
    p
}

fn icmp(kind: u8, code: u8, ident: u16, dst: Ipv4Addr) -> Vec<u8> {
    let mut body = vec![kind, code, 0, 0];
    body.extend_from_slice(&ident.to_be_bytes());
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(b"imds-tun ping data");
    let mut p = ipv4(1, dst, &body);
    fix_l4_sum(&mut p, 2, false);
    p
}

fn udp(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let payload = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    let len = (8 + payload.len()) as u16;
    let mut body = Vec::new();
    body.extend_from_slice(&5353u16.to_be_bytes());
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(payload);
    let mut p = ipv4(17, dst, &body);
    fix_l4_sum(&mut p, 6, true);
    p
}

/// After a hostile case: the long-lived connection and a fresh one both still work.
fn still_serving(h: &mut Harness, existing: &mut Conn) {
    let expected = h.request(existing);
    assert!(
        expected.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&expected)
    );
    let mut fresh = h.connect(false);
    assert_eq!(
        h.request(&mut fresh),
        expected,
        "fresh connection answered differently"
    );
    h.close(&mut fresh);
}

/// One malformed packet: counted under `reason`, nothing sent, nothing else counted.
fn malformed(h: &mut Harness, existing: &mut Conn, what: &str, packet: &[u8], reason: &str) {
    let (e0, t0) = h.counters();
    let out = h.inject(packet);
    assert!(out.is_empty(), "{what}: answered {out:?}");
    let (e1, t1) = h.counters();
    let got = e1.malformed.get(reason).copied().unwrap_or(0);
    let before = e0.malformed.get(reason).copied().unwrap_or(0);
    assert_eq!(
        got,
        before + 1,
        "{what}: not counted as {reason}: {:?}",
        e1.malformed
    );
    assert_eq!(e1.packets_in, e0.packets_in + 1, "{what}");
    assert_eq!(e1.packets_out, e0.packets_out, "{what}");
    assert_eq!(t1, t0, "{what}: reached TCP");
    still_serving(h, existing);
}

#[test]
fn malformed_packets_are_dropped_and_counted_by_reason() {
    let mut h = Harness::new();
    let mut conn = h.connect(false);
    // A valid data segment on the open connection, as the base of every edit: the edits are
    // what makes it invalid, the rest would be accepted.
    let base = |c: &Conn| {
        segment(
            c,
            ACK | PSH,
            c.snd_nxt,
            c.rcv_nxt,
            REQUEST,
            TcpOptions::default(),
        )
    };

    let mut p = base(&conn);
    p[8] = 3; // TTL changed, IP checksum not updated
    malformed(
        &mut h,
        &mut conn,
        "bad IPv4 checksum",
        &p,
        "bad_ip_checksum",
    );

    let mut p = base(&conn);
    p[40] ^= 0x20; // one payload byte, TCP checksum not updated
    malformed(
        &mut h,
        &mut conn,
        "bad TCP checksum",
        &p,
        "bad_tcp_checksum",
    );

    let p = base(&conn);
    malformed(&mut h, &mut conn, "IPv4 header cut", &p[..12], "truncated");
    malformed(&mut h, &mut conn, "TCP header cut", &p[..30], "truncated");
    malformed(&mut h, &mut conn, "empty packet", &[], "truncated");

    let mut p = base(&conn);
    let len = (p.len() + 100) as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    fix_ip_sum(&mut p);
    malformed(
        &mut h,
        &mut conn,
        "total length past the buffer",
        &p,
        "truncated",
    );

    let mut p = base(&conn);
    p[2..4].copy_from_slice(&12u16.to_be_bytes());
    fix_ip_sum(&mut p);
    malformed(
        &mut h,
        &mut conn,
        "total length below the header",
        &p,
        "bad_total_length",
    );

    let mut p = base(&conn);
    p[0] = 0x44;
    malformed(&mut h, &mut conn, "IHL below 5", &p, "bad_ip_header_length");

    let mut p = base(&conn);
    p[0] = 0x75;
    malformed(&mut h, &mut conn, "IP version 7", &p, "bad_version");

    // IPv4 options: a header of 24 bytes (NOP NOP NOP EOL), everything else consistent.
    let b = base(&conn);
    let mut p = b[..20].to_vec();
    p.extend_from_slice(&[1, 1, 1, 0]);
    p.extend_from_slice(&b[20..]);
    p[0] = 0x46;
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[10..12].fill(0);
    let s = PartialSum::of(&p[..24]).checksum();
    p[10..12].copy_from_slice(&s.to_be_bytes());
    malformed(&mut h, &mut conn, "IPv4 options", &p, "ipv4_options");

    let mut p = base(&conn);
    p[6] = 0x20; // MF, offset 0
    fix_ip_sum(&mut p);
    malformed(&mut h, &mut conn, "first fragment (MF)", &p, "fragment");
    let mut p = base(&conn);
    p[6..8].copy_from_slice(&0x0010u16.to_be_bytes()); // offset 16 * 8
    fix_ip_sum(&mut p);
    malformed(&mut h, &mut conn, "later fragment (offset)", &p, "fragment");

    let mut p = base(&conn);
    p[32] = 0x40; // data offset 4 (16 bytes)
    fix_l4_sum(&mut p, 16, true);
    malformed(
        &mut h,
        &mut conn,
        "data offset below 5",
        &p,
        "bad_tcp_header_length",
    );
    let mut p = base(&conn);
    p.truncate(20 + 24); // data offset 15 (60 bytes), but only 24 bytes of TCP
    p[32] = 0xf0;
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    fix_ip_sum(&mut p);
    fix_l4_sum(&mut p, 16, true);
    malformed(
        &mut h,
        &mut conn,
        "data offset past the end",
        &p,
        "truncated",
    );

    // A TCP option whose length runs past the header.
    let mut p = segment(&conn, ACK, conn.snd_nxt, conn.rcv_nxt, b"", mss_option());
    p[20 + 21] = 40; // MSS option length 40 in a 4-byte option area
    fix_l4_sum(&mut p, 16, true);
    malformed(
        &mut h,
        &mut conn,
        "TCP option past the header",
        &p,
        "bad_tcp_options",
    );

    let mut p = icmp(8, 0, 7, SERVER);
    p[30] ^= 1;
    malformed(
        &mut h,
        &mut conn,
        "bad ICMP checksum",
        &p,
        "bad_icmp_checksum",
    );

    // IPv6: a fragment header, and a payload length past the buffer.
    let mut c6 = h.connect(true);
    let mut p = segment(&c6, ACK, c6.snd_nxt, c6.rcv_nxt, b"", TcpOptions::default());
    p[6] = 44;
    malformed(&mut h, &mut conn, "IPv6 fragment", &p, "fragment");
    let mut p = segment(&c6, ACK, c6.snd_nxt, c6.rcv_nxt, b"", TcpOptions::default());
    p[4..6].copy_from_slice(&200u16.to_be_bytes());
    malformed(
        &mut h,
        &mut conn,
        "IPv6 payload length past the buffer",
        &p,
        "truncated",
    );
    h.request(&mut c6);
    h.close(&mut c6);

    h.close(&mut conn);
    drains(&mut h);
}

/// Every client closed: after TIME-WAIT nothing is left, and every counter of a
/// resource problem is zero.
fn drains(h: &mut Harness) {
    h.advance(3_000);
    assert!(
        h.engine.tcp().is_empty(),
        "connections left: {:?}",
        h.engine.tcp().class_counts()
    );
    let t = h.engine.tcp().counters();
    assert_eq!(t.emit_errors, 0);
    assert_eq!(h.engine.counters().send_errors, 0);
}

/// What the engine must answer to one hostile segment.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Nothing,
    /// One pure ACK for the connection at its current sequence numbers (RFC 9293 3.10.7.4
    /// for unacceptable segments, RFC 5961 challenge ACKs).
    Ack,
    /// One RST with this sequence number (RFC 9293 3.10.7.1).
    Rst(u32),
}

/// One hostile segment: flags, sequence and acknowledgment numbers relative to the target
/// connection, payload, the TCP counter that must count it, and the reply due.
struct Case {
    what: &'static str,
    flags: TcpFlags,
    seq: fn(&Conn) -> u32,
    ack: fn(&Conn) -> u32,
    payload: &'static [u8],
    counter: fn(&Counters) -> u64,
    reply: Reply,
}

/// Sends `case` as `target` (the open connection, or a client the listener has not seen),
/// checks the reply and the counters, then that `existing` and a fresh connection still work.
fn run_case(h: &mut Harness, existing: &mut Conn, target: Conn, case: &Case) {
    let what = case.what;
    let p = segment(
        &target,
        case.flags,
        (case.seq)(&target),
        (case.ack)(&target),
        case.payload,
        TcpOptions::default(),
    );
    let (e0, t0) = h.counters();
    let out = h.inject(&p);
    match (case.reply, &out[..]) {
        (Reply::Nothing, []) => {}
        (Reply::Ack, [Sent::Tcp { header, payload }]) => {
            assert_eq!(header.flags, ACK, "{what}");
            let c = target;
            assert_eq!((header.seq, header.ack), (c.rcv_nxt, c.snd_nxt), "{what}");
            assert!(payload.is_empty(), "{what}");
            assert_eq!((header.src, header.dst), (c.remote, c.local), "{what}");
        }
        (Reply::Rst(seq), [Sent::Tcp { header, .. }]) => {
            assert!(header.flags.rst(), "{what}: {:?}", header.flags);
            assert_eq!(header.seq, seq, "{what}");
        }
        (reply, out) => panic!("{what}: expected {reply:?}, got {out:?}"),
    }
    let (e1, t1) = h.counters();
    assert_eq!(
        (case.counter)(&t1),
        (case.counter)(&t0) + 1,
        "{what}: not counted: {t1:?}"
    );
    assert_eq!(e1.malformed, e0.malformed, "{what}: counted as malformed");
    assert_eq!(e1.requests, e0.requests, "{what}: answered as a request");
    if target.local != existing.local {
        assert!(
            h.engine.tcp().lookup(target.remote, target.local).is_none(),
            "{what} opened a connection"
        );
    }
    still_serving(h, existing);
}

fn at_nxt(c: &Conn) -> u32 {
    c.snd_nxt
}
fn zero(_: &Conn) -> u32 {
    0
}
fn rcv_nxt(c: &Conn) -> u32 {
    c.rcv_nxt
}

#[test]
fn illegal_flags_and_out_of_window_segments() {
    let mut h = Harness::new();
    let mut conn = h.connect(false);

    // To the listener (no connection yet): nothing may open a connection or be answered
    // except as RFC 9293 3.10.7.2 says.
    let illegal: fn(&Counters) -> u64 = |t| t.illegal_flags_dropped;
    let no_ack: fn(&Counters) -> u64 = |t| t.no_ack_dropped;
    let get = b"GET / HTTP/1.1\r\n\r\n";
    let to_listener = [
        ("SYN+FIN", SYN | FIN, illegal, Reply::Nothing),
        ("SYN+RST", SYN | RST, illegal, Reply::Nothing),
        (
            "SYN+FIN+PSH+URG",
            SYN | FIN | PSH | URG,
            illegal,
            Reply::Nothing,
        ),
        ("no flags", TcpFlags::NONE, no_ack, Reply::Nothing),
        ("FIN without ACK", FIN, no_ack, Reply::Nothing),
        (
            "Xmas (FIN+PSH+URG)",
            FIN | PSH | URG,
            no_ack,
            Reply::Nothing,
        ),
        ("PSH without ACK", PSH, no_ack, Reply::Nothing),
        ("RST", RST, |t: &Counters| t.rst_ignored, Reply::Nothing),
        // An ACK for no connection: RST with the ACK's number as its sequence number.
        (
            "ACK",
            ACK,
            |t: &Counters| t.rst_sent_no_connection,
            Reply::Rst(777),
        ),
    ];
    for (what, flags, counter, reply) in to_listener {
        h.next_port += 1;
        let target = Conn {
            local: SocketAddr::new(IpAddr::V4(CLIENT), h.next_port),
            remote: SocketAddr::new(IpAddr::V4(SERVER), 80),
            snd_nxt: 5_000,
            rcv_nxt: 777,
        };
        let case = Case {
            what,
            flags,
            seq: at_nxt,
            ack: rcv_nxt,
            payload: if flags.syn() { b"" } else { get },
            counter,
            reply,
        };
        run_case(&mut h, &mut conn, target, &case);
    }
    // A SYN to a port nobody listens on: RST+ACK with sequence number 0.
    h.next_port += 1;
    let target = Conn {
        local: SocketAddr::new(IpAddr::V4(CLIENT), h.next_port),
        remote: SocketAddr::new(IpAddr::V4(SERVER), 81),
        snd_nxt: 5_000,
        rcv_nxt: 0,
    };
    let closed_port = Case {
        what: "SYN to port 81",
        flags: SYN,
        seq: at_nxt,
        ack: zero,
        payload: b"",
        counter: |t| t.rst_sent_no_listener,
        reply: Reply::Rst(0),
    };
    run_case(&mut h, &mut conn, target, &closed_port);

    // On the established connection. RFC 9293 3.10.7.4: an unacceptable segment gets an ACK;
    // RFC 5961 5.2: an ACK of data never sent gets an ACK; 4.2: a SYN gets a challenge ACK;
    // 3.2: a RST outside the window is dropped silently, inside it but not at RCV.NXT it gets
    // a challenge ACK (exactly at RCV.NXT it resets: below).
    let on_conn = [
        Case {
            what: "SYN+FIN+ACK",
            flags: SYN | FIN | ACK,
            seq: at_nxt,
            ack: rcv_nxt,
            payload: b"",
            counter: illegal,
            reply: Reply::Nothing,
        },
        Case {
            what: "SYN+RST at RCV.NXT",
            flags: SYN | RST,
            seq: at_nxt,
            ack: zero,
            payload: b"",
            counter: illegal,
            reply: Reply::Nothing,
        },
        Case {
            what: "no flags",
            flags: TcpFlags::NONE,
            seq: at_nxt,
            ack: rcv_nxt,
            payload: b"",
            counter: no_ack,
            reply: Reply::Nothing,
        },
        Case {
            what: "FIN without ACK",
            flags: FIN,
            seq: at_nxt,
            ack: rcv_nxt,
            payload: b"",
            counter: no_ack,
            reply: Reply::Nothing,
        },
        Case {
            what: "PSH+URG without ACK",
            flags: PSH | URG,
            seq: at_nxt,
            ack: rcv_nxt,
            payload: get,
            counter: no_ack,
            reply: Reply::Nothing,
        },
        Case {
            what: "data far beyond the window",
            flags: ACK | PSH,
            seq: |c| c.snd_nxt.wrapping_add(1 << 30),
            ack: rcv_nxt,
            payload: REQUEST,
            counter: |t| t.unacceptable_segments,
            reply: Reply::Ack,
        },
        Case {
            what: "data far before the window",
            flags: ACK | PSH,
            seq: |c| c.snd_nxt.wrapping_sub(1 << 30),
            ack: rcv_nxt,
            payload: REQUEST,
            counter: |t| t.unacceptable_segments,
            reply: Reply::Ack,
        },
        Case {
            what: "ACK of data never sent",
            flags: ACK,
            seq: at_nxt,
            ack: |c| c.rcv_nxt.wrapping_add(100_000),
            payload: b"",
            counter: |t| t.bad_acks,
            reply: Reply::Ack,
        },
        Case {
            what: "SYN in the window",
            flags: SYN,
            seq: |c| c.snd_nxt.wrapping_add(12_345),
            ack: zero,
            payload: b"",
            counter: |t| t.challenge_acks,
            reply: Reply::Ack,
        },
        Case {
            what: "RST beyond the window",
            flags: RST,
            seq: |c| c.snd_nxt.wrapping_add(1 << 20),
            ack: zero,
            payload: b"",
            counter: |t| t.rst_ignored,
            reply: Reply::Nothing,
        },
        Case {
            what: "RST before the window",
            flags: RST,
            seq: |c| c.snd_nxt.wrapping_sub(1),
            ack: zero,
            payload: b"",
            counter: |t| t.rst_ignored,
            reply: Reply::Nothing,
        },
        Case {
            what: "RST in the window, not exact",
            flags: RST,
            seq: |c| c.snd_nxt.wrapping_add(100),
            ack: zero,
            payload: b"",
            counter: |t| t.challenge_acks,
            reply: Reply::Ack,
        },
        Case {
            what: "RST+ACK in the window, not exact",
            flags: RST | ACK,
            seq: |c| c.snd_nxt.wrapping_add(1),
            ack: rcv_nxt,
            payload: b"",
            counter: |t| t.challenge_acks,
            reply: Reply::Ack,
        },
    ];
    for case in &on_conn {
        let target = conn;
        run_case(&mut h, &mut conn, target, case);
    }

    // The exact RST resets: the connection is gone, and segments on it get a RST.
    let (_, t0) = h.counters();
    let c = conn;
    let out = h.inject(&segment(&c, RST, c.snd_nxt, 0, b"", TcpOptions::default()));
    assert!(out.is_empty(), "exact RST answered: {out:?}");
    assert_eq!(h.counters().1.rst_received, t0.rst_received + 1);
    assert!(
        h.engine.tcp().lookup(c.remote, c.local).is_none(),
        "the exact RST did not remove the connection"
    );
    let p = segment(
        &c,
        ACK | PSH,
        c.snd_nxt,
        c.rcv_nxt,
        REQUEST,
        TcpOptions::default(),
    );
    let out = h.inject(&p);
    assert!(
        matches!(&out[..], [Sent::Tcp { header, .. }] if header.flags.rst() && header.seq == c.rcv_nxt),
        "{out:?}"
    );
    conn = h.connect(false);
    still_serving(&mut h, &mut conn);

    h.close(&mut conn);
    drains(&mut h);
}

#[test]
fn icmp_and_udp_to_the_address() {
    let mut h = Harness::new();
    let mut conn = h.connect(false);

    // Echo to the metadata address: answered (ping works as on a VM).
    let (e0, _) = h.counters();
    let out = h.inject(&icmp(8, 0, 4242, SERVER));
    assert_eq!(
        out,
        [Sent::Echo {
            dst: IpAddr::V4(CLIENT),
            ident: 4242
        }]
    );
    assert_eq!(h.counters().0.echo_replies, e0.echo_replies + 1);
    still_serving(&mut h, &mut conn);

    // Everything else is dropped and counted as not for us, without any answer.
    let other = Ipv4Addr::new(169, 254, 1, 1);
    let cases: [(&str, Vec<u8>); 7] = [
        ("echo to an address we do not serve", icmp(8, 0, 1, other)),
        ("echo reply", icmp(0, 0, 1, SERVER)),
        ("destination unreachable", icmp(3, 3, 0, SERVER)),
        ("timestamp request", icmp(13, 0, 1, SERVER)),
        ("echo request with code 1", icmp(8, 1, 1, SERVER)),
        ("UDP to port 80", udp(SERVER, 80)),
        ("UDP to port 53", udp(SERVER, 53)),
    ];
    for (what, p) in cases {
        let (e0, t0) = h.counters();
        let out = h.inject(&p);
        assert!(out.is_empty(), "{what}: answered {out:?}");
        let (e1, t1) = h.counters();
        assert_eq!(e1.not_for_us, e0.not_for_us + 1, "{what}");
        assert_eq!(e1.echo_replies, e0.echo_replies, "{what}");
        assert_eq!(e1.malformed, e0.malformed, "{what}");
        assert_eq!(t1, t0, "{what}: reached TCP");
        still_serving(&mut h, &mut conn);
    }

    // Unknown IP protocols (SCTP, GRE) likewise.
    for proto in [132u8, 47] {
        let (e0, _) = h.counters();
        assert!(h.inject(&ipv4(proto, SERVER, &[0; 24])).is_empty());
        assert_eq!(h.counters().0.not_for_us, e0.not_for_us + 1);
    }

    h.close(&mut conn);
    drains(&mut h);
}

/// A burst of every hostile kind interleaved, many times over, with requests in between:
/// nothing panics, every request is answered, and the table drains.
#[test]
fn interleaved_garbage_does_not_disturb_requests() {
    let mut h = Harness::new();
    let mut conn = h.connect(false);
    let mut answered = 0;
    for round in 0u32..200 {
        let c = conn;
        let garbage = [
            segment(&c, SYN | FIN, c.snd_nxt, 0, b"", TcpOptions::default()),
            segment(
                &c,
                RST,
                c.snd_nxt.wrapping_add(round + 1),
                0,
                b"",
                TcpOptions::default(),
            ),
            segment(
                &c,
                ACK,
                c.snd_nxt.wrapping_add(1 << 31),
                c.rcv_nxt,
                b"x",
                TcpOptions::default(),
            ),
            icmp(3, 1, 0, SERVER),
            udp(SERVER, 80),
            segment(&c, TcpFlags::NONE, c.snd_nxt, 0, b"", TcpOptions::default())[..30].to_vec(),
        ];
        for g in &garbage[..(round as usize % garbage.len()) + 1] {
            for s in h.inject(g) {
                // Only ACKs to this connection may come back (challenge / unacceptable).
                assert!(
                    matches!(&s, Sent::Tcp { header, payload } if header.flags == ACK && payload.is_empty()),
                    "round {round}: unexpected {s:?}"
                );
            }
        }
        let r = h.request(&mut conn);
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        answered += 1;
        h.now_ms += 7;
    }
    assert_eq!(answered, 200);
    h.close(&mut conn);
    drains(&mut h);
}

/// A pipelined flood from a client that does not read: the engine holds less than twice
/// [`MAX_OUTPUT`] (plus one response) of answers for it, the rest of the requests wait unread
/// in the receive buffer (its window closes), and once the client reads, every request is
/// answered, in order and byte-exact. 2000 requests of 78 bytes answered with 2.8 KB each are
/// more than the 64 KiB receive buffer and the bound together.
#[test]
fn pipelined_flood_without_reading_is_bounded_then_answered() {
    const BIG: &[u8] =
        b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nMetadata: true\r\n\r\n";
    const N: usize = 2000;
    let mut h = Harness::new();
    let mut c = h.connect(false);
    let requests: Vec<u8> = BIG.repeat(N);
    let client_isn = c.snd_nxt;
    let server_isn = c.rcv_nxt;
    let id = h
        .engine
        .tcp()
        .lookup(c.remote, c.local)
        .unwrap_or_else(|| panic!("no connection"));

    // Responses by sequence offset; what the server accepted of the requests; its window.
    let mut segments: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    let mut accepted = 0usize;
    let mut window = 65535usize;
    let absorb = |out: Vec<Sent>,
                  segments: &mut std::collections::BTreeMap<u32, Vec<u8>>,
                  accepted: &mut usize,
                  window: &mut usize| {
        for s in out {
            let Sent::Tcp { header, payload } = s else {
                panic!("unexpected {s:?}")
            };
            assert!(!header.flags.rst() && !header.flags.fin(), "{header:?}");
            *accepted = (*accepted).max(header.ack.wrapping_sub(client_isn) as usize);
            *window = usize::from(header.window);
            if !payload.is_empty() {
                segments.insert(header.seq.wrapping_sub(server_isn), payload);
            }
        }
    };

    // Phase 1: write while the window allows, never acknowledging a response byte.
    let mut stalled = 0;
    while accepted < requests.len() && stalled < 3 {
        let len = window.min(4096).min(requests.len() - accepted);
        if len == 0 {
            stalled += 1;
            // A zero-window probe of one byte: answered by an ACK with the window.
            let p = segment(
                &c,
                ACK,
                client_isn.wrapping_add(accepted as u32),
                c.rcv_nxt,
                &requests[accepted..accepted + 1],
                TcpOptions::default(),
            );
            let out = h.inject(&p);
            absorb(out, &mut segments, &mut accepted, &mut window);
            continue;
        }
        let seq = client_isn.wrapping_add(accepted as u32);
        let p = segment(
            &c,
            ACK | PSH,
            seq,
            c.rcv_nxt,
            &requests[accepted..accepted + len],
            TcpOptions::default(),
        );
        let out = h.inject(&p);
        absorb(out, &mut segments, &mut accepted, &mut window);
    }
    let queued = h.engine.tcp().send_queued(id);
    let answered = h.engine.counters().requests as usize;
    assert!(
        accepted < requests.len(),
        "the server read all {N} requests without the client reading a byte"
    );
    assert!(answered < N, "all {N} requests answered into memory");
    assert!(
        queued < 2 * MAX_OUTPUT + 4096,
        "{queued} bytes of responses queued for a client that does not read"
    );
    assert!(
        queued >= MAX_OUTPUT / 2,
        "only {queued} bytes queued: the bound is not what binds"
    );

    // Phase 2: the client reads (acknowledges) in order and keeps writing.
    let mut received: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        while let Some(chunk) = segments.remove(&(received.len() as u32)) {
            received.extend_from_slice(&chunk);
        }
        segments.retain(|&off, _| (off as usize) > received.len());
        c.rcv_nxt = server_isn.wrapping_add(received.len() as u32);
        if received.len() >= N * 2000 && accepted == requests.len() && segments.is_empty() {
            let first_len = received.len() / N;
            if received.len() == first_len * N && h.engine.tcp().send_queued(id) == 0 {
                break;
            }
        }
        let len = window.min(4096).min(requests.len() - accepted);
        let seq = client_isn.wrapping_add(accepted as u32);
        let p = segment(
            &c,
            ACK | PSH,
            seq,
            c.rcv_nxt,
            &requests[accepted..accepted + len],
            TcpOptions::default(),
        );
        let out = h.inject(&p);
        absorb(out, &mut segments, &mut accepted, &mut window);
    }
    assert_eq!(accepted, requests.len(), "not every request was read");
    assert_eq!(h.engine.counters().requests as usize, N);
    let one = received.len() / N;
    assert!(received[..one].starts_with(b"HTTP/1.1 200 OK\r\n"));
    for (i, r) in received.chunks(one).enumerate() {
        assert_eq!(r, &received[..one], "response {i} differs");
    }
    assert_eq!(received.len(), one * N);
    c.snd_nxt = client_isn.wrapping_add(requests.len() as u32);
    h.close(&mut c);
    drains(&mut h);
}
