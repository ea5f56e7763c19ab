//! Scripted segment sequences from fabricated states, on a simulated clock. Every emitted
//! segment is parsed back with `wire::parse` (so checksums are verified too) and compared
//! field by field.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::wire::{
    parse, Packet, PartialSum, Segment, SegmentHeader, TcpFlags, TcpOptions, Timestamps,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;

fn local() -> SocketAddr {
    "169.254.169.254:80".parse().expect("addr")
}
fn remote() -> SocketAddr {
    "169.254.0.2:40000".parse().expect("addr")
}
const CLIENT_ISN: u32 = 1000;
const BUF: usize = 4096;

fn config() -> TcpConfig {
    let mut c = TcpConfig::default();
    c.listen.insert(local());
    c.recv_buffer = BUF;
    c
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// A segment the client sends; fields default to an in-order ACK.
#[derive(Clone)]
struct C {
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    options: TcpOptions,
    payload: Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
}

impl C {
    fn new(flags: TcpFlags, seq: u32, ack: u32) -> C {
        C {
            flags,
            seq,
            ack,
            window: 65535,
            options: TcpOptions::default(),
            payload: Vec::new(),
            src: remote(),
            dst: local(),
        }
    }
    fn data(mut self, d: &[u8]) -> C {
        self.payload = d.to_vec();
        self
    }
    fn win(mut self, w: u16) -> C {
        self.window = w;
        self
    }
    fn opts(mut self, o: TcpOptions) -> C {
        self.options = o;
        self
    }
    fn to(mut self, dst: SocketAddr) -> C {
        self.dst = dst;
        self
    }
}

/// What we saw on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    options: TcpOptions,
    payload: Vec<u8>,
    ttl: u8,
}

fn send(t: &mut ConnTable, now: Instant, c: &C) -> Option<ConnId> {
    let seg = Segment {
        header: SegmentHeader {
            src: c.src,
            dst: c.dst,
            seq: c.seq,
            ack: c.ack,
            flags: c.flags,
            window: c.window,
            options: c.options,
            hop_limit: 64,
        },
        payload: &c.payload,
    };
    t.handle_segment(now, &seg)
}

fn recv(t: &mut ConnTable, now: Instant) -> Vec<Out> {
    let mut outs = Vec::new();
    t.poll_transmit(now, &mut |tx: Transmit<'_>| {
        let mut bytes = tx.header.to_vec();
        bytes.extend_from_slice(tx.payload);
        let Ok(Packet::Tcp(s)) = parse(&bytes) else {
            panic!("emitted an unparsable segment")
        };
        outs.push(Out {
            flags: s.header.flags,
            seq: s.header.seq,
            ack: s.header.ack,
            window: s.header.window,
            options: s.header.options,
            payload: s.payload.to_vec(),
            ttl: s.header.hop_limit,
        });
    });
    outs
}

fn recv_one(t: &mut ConnTable, now: Instant) -> Out {
    let mut v = recv(t, now);
    assert_eq!(v.len(), 1, "expected exactly one segment, got {v:#?}");
    v.remove(0)
}

fn recv_nothing(t: &mut ConnTable, now: Instant) {
    let v = recv(t, now);
    assert!(v.is_empty(), "expected no segment, got {v:#?}");
}

/// Runs timers and collects what goes out.
fn tick(t: &mut ConnTable, now: Instant) -> Vec<Out> {
    t.handle_timeout(now);
    recv(t, now)
}

/// Handshake without options: returns (table, id, our ISS + 1 = first data seq).
fn established() -> (ConnTable, ConnId, u32) {
    established_with(config(), TcpOptions::default())
}

fn established_with(cfg: TcpConfig, opts: TcpOptions) -> (ConnTable, ConnId, u32) {
    let mut t = ConnTable::new(cfg, [1; 16]);
    assert_eq!(
        send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0).opts(opts)),
        None
    );
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(sa.flags, SYN | ACK);
    let iss1 = sa.seq.wrapping_add(1);
    assert_eq!(
        send(&mut t, ms(1), &C::new(ACK, CLIENT_ISN + 1, iss1)),
        None
    );
    recv_nothing(&mut t, ms(1));
    let id = t.lookup(local(), remote()).expect("connection");
    assert_eq!(t.state(id), Some(State::Established));
    (t, id, iss1)
}

fn linux_syn_opts() -> TcpOptions {
    TcpOptions {
        mss: Some(65495),
        window_scale: Some(10),
        sack_permitted: true,
        timestamps: Some(Timestamps {
            value: 5000,
            echo: 0,
        }),
    }
}

#[test]
fn syn_gets_synack_with_options() {
    let mut t = ConnTable::new(config(), [1; 16]);
    send(
        &mut t,
        ms(0),
        &C::new(SYN, CLIENT_ISN, 0).opts(linux_syn_opts()),
    );
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(sa.flags, SYN | ACK);
    assert_eq!(sa.ack, CLIENT_ISN + 1);
    assert_eq!(sa.window, BUF as u16);
    assert_eq!(sa.options.mss, Some(65495));
    assert_eq!(sa.options.window_scale, Some(0));
    assert!(!sa.options.sack_permitted, "SACK is never offered");
    assert_eq!(sa.options.timestamps.map(|t| t.echo), Some(5000));
    assert_eq!(sa.ttl, 64);
    assert_eq!(t.class_counts(), (1, 0, 0));

    // Without options in the SYN: no window scale, no timestamps; MSS always.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(
        sa.options,
        TcpOptions {
            mss: Some(65495),
            ..TcpOptions::default()
        }
    );
}

#[test]
fn retransmitted_syn_gets_identical_synack() {
    let mut t = ConnTable::new(config(), [1; 16]);
    let syn = C::new(SYN, CLIENT_ISN, 0);
    send(&mut t, ms(0), &syn);
    let first = recv_one(&mut t, ms(0));
    send(&mut t, ms(0), &syn);
    assert_eq!(recv_one(&mut t, ms(0)), first);
    // Later, with timestamps off, still byte-for-byte the same answer.
    send(&mut t, ms(900), &syn);
    assert_eq!(recv_one(&mut t, ms(900)), first);
    // A fresh table with the same key gives the same ISN for the same 4-tuple and time.
    let mut t2 = ConnTable::new(config(), [1; 16]);
    send(&mut t2, ms(0), &syn);
    assert_eq!(recv_one(&mut t2, ms(0)).seq, first.seq);
    assert_eq!(t.counters().connections_accepted, 1);
}

#[test]
fn request_response_piggybacks_ack_zero_copy() {
    let (mut t, id, iss1) = established();
    let req = b"GET /metadata HTTP/1.1\r\nHost: x\r\n\r\n";
    let got = send(
        &mut t,
        ms(10),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(req),
    );
    assert_eq!(got, Some(id));
    assert_eq!(t.recv_data(id), req);
    t.consume(id, req.len());
    let body = Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let sum = PartialSum::of(&body);
    t.send(id, body.clone(), Some(sum), None).expect("send");
    let mut seen = 0;
    let rcv_nxt = CLIENT_ISN + 1 + req.len() as u32;
    t.poll_transmit(ms(10), &mut |tx: Transmit<'_>| {
        seen += 1;
        // Zero copy: the payload is the queued Bytes itself.
        assert_eq!(tx.payload.as_ptr(), body.as_ptr());
        assert_eq!(tx.payload.len(), body.len());
        let mut bytes = tx.header.to_vec();
        bytes.extend_from_slice(tx.payload);
        let Ok(Packet::Tcp(s)) = parse(&bytes) else {
            panic!("bad segment")
        };
        assert_eq!(s.header.flags, ACK | PSH);
        assert_eq!((s.header.seq, s.header.ack), (iss1, rcv_nxt));
    });
    assert_eq!(seen, 1, "one segment carries response and ACK");
    assert_eq!(t.counters().segments_copied, 0);

    // A request the app does not answer yet gets a pure ACK from poll_transmit.
    let got = send(
        &mut t,
        ms(20),
        &C::new(ACK | PSH, rcv_nxt, iss1 + body.len() as u32).data(b"GET"),
    );
    assert_eq!(got, Some(id));
    let a = recv_one(&mut t, ms(20));
    assert_eq!(
        (a.flags, a.seq, a.ack),
        (ACK, iss1 + body.len() as u32, rcv_nxt + 3)
    );
    assert!(a.payload.is_empty());
}

#[test]
fn pipelined_responses_and_chunks() {
    // The peer's MSS of 10 forces splitting.
    let (mut t, id, iss1) = established_with(
        config(),
        TcpOptions {
            mss: Some(10),
            ..TcpOptions::default()
        },
    );
    send(
        &mut t,
        ms(5),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(b"req1req2"),
    );
    t.send(id, Bytes::from_static(b"aaaa"), None, None)
        .expect("send");
    t.send(id, Bytes::from_static(b"bbbbbbbbbbbb"), None, Some(1))
        .expect("send");
    t.send(id, Bytes::from_static(b"cc"), None, Some(1))
        .expect("send");
    let outs = recv(&mut t, ms(5));
    let shape: Vec<(u32, Vec<u8>, u8, bool)> = outs
        .iter()
        .map(|o| {
            (
                o.seq - iss1,
                o.payload.clone(),
                o.ttl,
                o.flags.contains(PSH),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            // The TTL-1 chunks never share a segment with the default-TTL one.
            (0, b"aaaa".to_vec(), 64, false),
            (4, b"bbbbbbbbbb".to_vec(), 1, false),
            (14, b"bbcc".to_vec(), 1, true),
        ]
    );
    assert_eq!(t.counters().segments_copied, 1);
}

#[test]
fn data_before_handshake_completes() {
    let mut t = ConnTable::new(config(), [1; 16]);
    // Data on the SYN is ignored (no TFO).
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0).data(b"early"));
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(sa.ack, CLIENT_ISN + 1);
    let iss1 = sa.seq.wrapping_add(1);
    // The handshake ACK is lost; the request (with ACK) completes the handshake.
    let id = send(
        &mut t,
        ms(5),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(b"GET /"),
    );
    let id = id.expect("readable");
    assert_eq!(t.state(id), Some(State::Established));
    assert_eq!(t.recv_data(id), b"GET /");
    let a = recv_one(&mut t, ms(5));
    assert_eq!((a.flags, a.ack), (ACK, CLIENT_ISN + 6));
    // A non-ACK data segment in SYN-RECEIVED is dropped.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    recv_one(&mut t, ms(0));
    assert_eq!(
        send(&mut t, ms(1), &C::new(PSH, CLIENT_ISN + 1, 0).data(b"x")),
        None
    );
    recv_nothing(&mut t, ms(1));
}

#[test]
fn bad_ack_in_syn_received_gets_reset() {
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let sa = recv_one(&mut t, ms(0));
    send(
        &mut t,
        ms(1),
        &C::new(ACK, CLIENT_ISN + 1, sa.seq.wrapping_add(7)),
    );
    let r = recv_one(&mut t, ms(1));
    assert_eq!((r.flags, r.seq), (RST, sa.seq.wrapping_add(7)));
    assert_eq!(t.len(), 1, "the half-open connection survives");
}

#[test]
fn out_of_order_is_dropped_with_dup_ack() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    assert_eq!(
        send(&mut t, ms(5), &C::new(ACK, base + 4, iss1).data(b"5678")),
        None
    );
    let a = recv_one(&mut t, ms(5));
    assert_eq!((a.flags, a.ack), (ACK, base));
    assert!(t.recv_data(id).is_empty());
    assert_eq!(
        send(&mut t, ms(6), &C::new(ACK, base, iss1).data(b"1234")),
        Some(id)
    );
    assert_eq!(t.recv_data(id), b"1234");
    assert_eq!(recv_one(&mut t, ms(6)).ack, base + 4);
    // The retransmission of the dropped segment is then accepted.
    assert_eq!(
        send(&mut t, ms(7), &C::new(ACK, base + 4, iss1).data(b"5678")),
        Some(id)
    );
    assert_eq!(t.recv_data(id), b"12345678");
    assert_eq!(t.counters().out_of_order_dropped, 1);
}

#[test]
fn duplicates_and_overlaps() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    send(&mut t, ms(5), &C::new(ACK, base, iss1).data(b"abcd"));
    recv_one(&mut t, ms(5));
    assert_eq!(
        send(&mut t, ms(6), &C::new(ACK, base, iss1).data(b"abcd")),
        None
    );
    let a = recv_one(&mut t, ms(6));
    assert_eq!(a.ack, base + 4);
    assert_eq!(
        t.counters().unacceptable_segments,
        1,
        "wholly old: fails the acceptability test"
    );
    // Overlap: only the new tail is taken.
    assert_eq!(
        send(&mut t, ms(7), &C::new(ACK, base + 2, iss1).data(b"cdef")),
        Some(id)
    );
    assert_eq!(t.recv_data(id), b"abcdef");
    assert_eq!(recv_one(&mut t, ms(7)).ack, base + 6);
}

#[test]
fn receive_buffer_bounds_the_window() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    let big = vec![b'x'; BUF + 100];
    assert_eq!(
        send(&mut t, ms(5), &C::new(ACK, base, iss1).data(&big)),
        Some(id)
    );
    assert_eq!(t.recv_data(id).len(), BUF);
    let a = recv_one(&mut t, ms(5));
    assert_eq!((a.ack, a.window), (base + BUF as u32, 0));
    // Zero window: data is refused, but its ACK field still counts.
    assert_eq!(
        send(
            &mut t,
            ms(6),
            &C::new(ACK, base + BUF as u32, iss1).data(b"more")
        ),
        None
    );
    assert_eq!(recv_one(&mut t, ms(6)).window, 0);
    // The app reads: a window update goes out by itself.
    t.consume(id, BUF);
    let u = recv_one(&mut t, ms(7));
    assert_eq!((u.flags, u.window), (ACK, BUF as u16));
}

#[test]
fn zero_window_persist_and_window_update() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    // The peer shuts its window, then asks.
    send(
        &mut t,
        ms(5),
        &C::new(ACK | PSH, base, iss1).data(b"GET").win(0),
    );
    t.consume(id, 3);
    t.send(id, Bytes::from_static(b"response"), None, None)
        .expect("send");
    let a = recv_one(&mut t, ms(5));
    assert_eq!(
        (a.flags, a.payload.len()),
        (ACK, 0),
        "only the ACK, no data into a zero window"
    );
    // Persist timer (RTO 200 ms after the 1 ms handshake sample): a one-byte probe.
    assert!(tick(&mut t, ms(204)).is_empty());
    let p = tick(&mut t, ms(205));
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].seq, p[0].payload.as_slice()), (iss1, &b"r"[..]));
    // The peer still has no room: it ACKs nothing new with window 0.
    send(&mut t, ms(210), &C::new(ACK, base + 3, iss1).win(0));
    assert!(recv(&mut t, ms(210)).is_empty());
    // The probe is repeated with backoff (400 ms), and the peer that answers is never dropped.
    assert!(tick(&mut t, ms(604)).is_empty());
    let p = tick(&mut t, ms(605));
    assert_eq!(
        (p.len(), p[0].seq),
        (1, iss1),
        "probe retransmitted after backoff: {p:?}"
    );
    for i in 0..20u64 {
        let now = 1000 + i * 60_000;
        send(&mut t, ms(now), &C::new(ACK, base + 3, iss1).win(0));
        tick(&mut t, ms(now + 59_999));
    }
    assert_eq!(t.state(id), Some(State::Established));
    // The window opens: everything goes.
    let now = 1_300_000;
    send(&mut t, ms(now), &C::new(ACK, base + 3, iss1).win(1000));
    let d = recv_one(&mut t, ms(now));
    // The probe byte is in flight; the rest follows it.
    assert_eq!((d.seq, d.payload.as_slice()), (iss1 + 1, &b"esponse"[..]));
    send(
        &mut t,
        ms(now + 1),
        &C::new(ACK, base + 3, iss1 + 8).win(1000),
    );
    assert_eq!(t.send_queued(id), 0);
    assert!(t.counters().persist_probes >= 1);
    assert_eq!(t.state(id), Some(State::Established));
}

#[test]
fn peer_window_limits_what_is_sent() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    send(
        &mut t,
        ms(5),
        &C::new(ACK | PSH, base, iss1).data(b"GET").win(3),
    );
    t.send(id, Bytes::from_static(b"abcdefgh"), None, None)
        .expect("send");
    let d = recv_one(&mut t, ms(5));
    assert_eq!(d.payload, b"abc");
    send(&mut t, ms(6), &C::new(ACK, base + 3, iss1 + 3).win(10));
    let d = recv_one(&mut t, ms(6));
    assert_eq!((d.seq, d.payload.as_slice()), (iss1 + 3, &b"defgh"[..]));
}

#[test]
fn fin_from_client_then_server_close() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    let got = send(
        &mut t,
        ms(5),
        &C::new(ACK | PSH | FIN, base, iss1).data(b"GET"),
    );
    assert_eq!(got, Some(id));
    assert!(t.recv_closed(id));
    assert_eq!(t.state(id), Some(State::CloseWait));
    t.send(id, Bytes::from_static(b"resp"), None, None)
        .expect("send");
    t.close(id);
    assert_eq!(t.state(id), Some(State::LastAck));
    let d = recv_one(&mut t, ms(5));
    assert_eq!(
        (d.flags, d.seq, d.ack, d.payload.as_slice()),
        (ACK | PSH | FIN, iss1, base + 4, &b"resp"[..])
    );
    assert_eq!(
        t.send(id, Bytes::from_static(b"x"), None, None),
        Err(SendError::Closed)
    );
    send(&mut t, ms(6), &C::new(ACK, base + 4, iss1 + 5));
    recv_nothing(&mut t, ms(6));
    assert!(t.is_empty(), "LAST-ACK -> CLOSED leaves the table");
    assert_eq!(t.state(id), None);
}

#[test]
fn server_close_after_response_full_sequence() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    send(&mut t, ms(5), &C::new(ACK | PSH, base, iss1).data(b"GET"));
    t.consume(id, 3);
    t.send(id, Bytes::from_static(b"resp"), None, None)
        .expect("send");
    t.close(id);
    assert_eq!(t.state(id), Some(State::FinWait1));
    let d = recv_one(&mut t, ms(5));
    assert_eq!((d.flags, d.seq, d.ack), (ACK | PSH | FIN, iss1, base + 3));
    // Client ACKs data + FIN: FIN-WAIT-2.
    send(&mut t, ms(6), &C::new(ACK, base + 3, iss1 + 5));
    recv_nothing(&mut t, ms(6));
    assert_eq!(t.state(id), Some(State::FinWait2));
    // Client FIN: TIME-WAIT, and we ACK it.
    send(&mut t, ms(7), &C::new(ACK | FIN, base + 3, iss1 + 5));
    let a = recv_one(&mut t, ms(7));
    assert_eq!((a.flags, a.seq, a.ack), (ACK, iss1 + 5, base + 4));
    assert_eq!(t.state(id), Some(State::TimeWait));
    assert_eq!(t.class_counts(), (0, 0, 1));
    // A retransmitted FIN is ACKed again.
    send(&mut t, ms(500), &C::new(ACK | FIN, base + 3, iss1 + 5));
    assert_eq!(recv_one(&mut t, ms(500)).ack, base + 4);
    // TIME-WAIT ends (60 s after the last FIN).
    assert!(tick(&mut t, ms(59_000)).is_empty());
    assert_eq!(t.len(), 1);
    assert!(tick(&mut t, ms(60_501)).is_empty());
    assert!(t.is_empty());
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let (mut t, id, iss1) = established();
    let base = CLIENT_ISN + 1;
    t.close(id);
    let f = recv_one(&mut t, ms(5));
    assert_eq!((f.flags, f.seq), (ACK | FIN, iss1));
    // The client's FIN crosses ours.
    send(&mut t, ms(6), &C::new(ACK | FIN, base, iss1));
    assert_eq!(t.state(id), Some(State::Closing));
    assert_eq!(recv_one(&mut t, ms(6)).ack, base + 1);
    send(&mut t, ms(7), &C::new(ACK, base + 1, iss1 + 1));
    assert_eq!(t.state(id), Some(State::TimeWait));
}

#[test]
fn time_wait_is_bounded() {
    let mut cfg = config();
    cfg.max_time_wait = 0;
    let (mut t, id, iss1) = established_with(cfg, TcpOptions::default());
    let base = CLIENT_ISN + 1;
    t.close(id);
    recv_one(&mut t, ms(5));
    send(&mut t, ms(6), &C::new(ACK | FIN, base, iss1 + 1));
    // The FIN is still acknowledged, then the entry is gone.
    assert_eq!(recv_one(&mut t, ms(6)).ack, base + 1);
    assert!(t.is_empty());
    assert_eq!(t.counters().time_wait_skipped, 1);
}

#[test]
fn syn_reopens_time_wait() {
    let ts = |v| TcpOptions {
        timestamps: Some(Timestamps { value: v, echo: 0 }),
        ..TcpOptions::default()
    };
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0).opts(ts(100)));
    let iss1 = recv_one(&mut t, ms(0)).seq.wrapping_add(1);
    let base = CLIENT_ISN + 1;
    send(&mut t, ms(1), &C::new(ACK, base, iss1).opts(ts(101)));
    let id = t.lookup(local(), remote()).expect("conn");
    t.close(id);
    recv_one(&mut t, ms(2));
    send(
        &mut t,
        ms(3),
        &C::new(ACK | FIN, base, iss1 + 1).opts(ts(102)),
    );
    recv_one(&mut t, ms(3));
    assert_eq!(t.state(id), Some(State::TimeWait));
    // An old SYN (older timestamp) does not reopen.
    send(&mut t, ms(4), &C::new(SYN, 5, 0).opts(ts(50)));
    assert_eq!(t.state(id), Some(State::TimeWait));
    // A newer one does: a fresh SYN-RECEIVED connection answers.
    send(&mut t, ms(5), &C::new(SYN, 5, 0).opts(ts(200)));
    let sa = recv(&mut t, ms(5));
    assert!(
        sa.iter().any(|o| o.flags == SYN | ACK && o.ack == 6),
        "{sa:?}"
    );
    assert_eq!(t.counters().time_wait_reused, 1);
    assert_eq!(t.class_counts(), (1, 0, 0));
}

#[test]
fn rst_in_each_state() {
    // SYN-RECEIVED: exact RST removes, out-of-window RST is ignored.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    recv_one(&mut t, ms(0));
    send(&mut t, ms(1), &C::new(RST, CLIENT_ISN + 100_000, 0));
    assert_eq!(t.len(), 1);
    send(&mut t, ms(1), &C::new(RST, CLIENT_ISN + 1, 0));
    recv_nothing(&mut t, ms(1));
    assert!(t.is_empty());

    let base = CLIENT_ISN + 1;
    // Each synchronized state, reached by a script, then reset.
    type Setup = fn(&mut ConnTable, ConnId, u32);
    let setups: [(State, Setup); 6] = [
        (State::Established, |_, _, _| {}),
        (State::FinWait1, |t, id, _| {
            t.close(id);
            recv(t, ms(2));
        }),
        (State::FinWait2, |t, id, iss1| {
            t.close(id);
            recv(t, ms(2));
            send(t, ms(3), &C::new(ACK, CLIENT_ISN + 1, iss1 + 1));
        }),
        (State::CloseWait, |t, _, iss1| {
            send(t, ms(2), &C::new(ACK | FIN, CLIENT_ISN + 1, iss1));
            recv(t, ms(2));
        }),
        (State::LastAck, |t, id, iss1| {
            send(t, ms(2), &C::new(ACK | FIN, CLIENT_ISN + 1, iss1));
            t.close(id);
            recv(t, ms(2));
        }),
        (State::Closing, |t, id, iss1| {
            t.close(id);
            recv(t, ms(2));
            send(t, ms(3), &C::new(ACK | FIN, CLIENT_ISN + 1, iss1));
            recv(t, ms(3));
        }),
    ];
    for (state, setup) in setups {
        let (mut t, id, iss1) = established();
        setup(&mut t, id, iss1);
        assert_eq!(t.state(id), Some(state));
        let rcv_nxt = if matches!(state, State::CloseWait | State::LastAck | State::Closing) {
            base + 1
        } else {
            base
        };
        // In window but not exact: challenge ACK (RFC 5961 3.2), connection survives.
        send(&mut t, ms(10), &C::new(RST, rcv_nxt + 10, 0));
        let c = recv_one(&mut t, ms(10));
        assert_eq!((c.flags, c.ack), (ACK, rcv_nxt), "{state:?}");
        assert_eq!(t.state(id), Some(state));
        // Out of window: ignored silently.
        send(
            &mut t,
            ms(11),
            &C::new(RST, rcv_nxt.wrapping_sub(10_000), 0),
        );
        recv_nothing(&mut t, ms(11));
        // Exact: gone, without a reply.
        send(&mut t, ms(12), &C::new(RST, rcv_nxt, 0));
        recv_nothing(&mut t, ms(12));
        assert!(t.is_empty(), "{state:?}");
        assert_eq!(t.class_counts(), (0, 0, 0));
    }

    // TIME-WAIT: an exact RST ends it too.
    let (mut t, id, iss1) = established();
    t.close(id);
    recv(&mut t, ms(2));
    send(&mut t, ms(3), &C::new(ACK | FIN, base, iss1 + 1));
    recv(&mut t, ms(3));
    assert_eq!(t.state(id), Some(State::TimeWait));
    send(&mut t, ms(4), &C::new(RST, base + 1, 0));
    recv_nothing(&mut t, ms(4));
    assert!(t.is_empty());
}

#[test]
fn syn_in_established_gets_challenge_ack() {
    let (mut t, id, iss1) = established();
    send(&mut t, ms(5), &C::new(SYN, CLIENT_ISN + 50, 0));
    let c = recv_one(&mut t, ms(5));
    assert_eq!((c.flags, c.seq, c.ack), (ACK, iss1, CLIENT_ISN + 1));
    assert_eq!(t.state(id), Some(State::Established));
    assert_eq!(t.counters().challenge_acks, 1);
}

#[test]
fn ack_of_unsent_data_is_dropped_with_ack() {
    let (mut t, id, iss1) = established();
    send(
        &mut t,
        ms(5),
        &C::new(ACK, CLIENT_ISN + 1, iss1 + 1000).data(b"x"),
    );
    let a = recv_one(&mut t, ms(5));
    assert_eq!(
        a.ack,
        CLIENT_ISN + 1,
        "the data of a bad-ACK segment is not taken"
    );
    assert!(t.recv_data(id).is_empty());
    assert_eq!(t.counters().bad_acks, 1);
}

#[test]
fn resets_for_unknown_ports_and_connections() {
    let mut t = ConnTable::new(config(), [1; 16]);
    let other: SocketAddr = "169.254.169.254:81".parse().expect("addr");
    // SYN to a closed port: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    send(&mut t, ms(0), &C::new(SYN, 7000, 0).to(other));
    let r = recv_one(&mut t, ms(0));
    assert_eq!((r.flags, r.seq, r.ack, r.window), (RST | ACK, 0, 7001, 0));
    // Data with ACK to the listening port, no connection: <SEQ=SEG.ACK><CTL=RST>.
    send(&mut t, ms(0), &C::new(ACK | PSH, 7000, 4242).data(b"hello"));
    let r = recv_one(&mut t, ms(0));
    assert_eq!((r.flags, r.seq), (RST, 4242));
    // FIN without ACK to a closed port counts the FIN.
    send(&mut t, ms(0), &C::new(FIN, 9, 0).data(b"ab").to(other));
    assert_eq!(recv_one(&mut t, ms(0)).ack, 12);
    // A RST never gets a RST.
    send(&mut t, ms(0), &C::new(RST, 1, 0).to(other));
    send(&mut t, ms(0), &C::new(RST | ACK, 1, 1));
    recv_nothing(&mut t, ms(0));
    // Unknown address, and IPv6.
    let v6l: SocketAddr = "[fd00:ec2::254]:80".parse().expect("addr");
    let v6r: SocketAddr = "[fd00::2]:5555".parse().expect("addr");
    let mut c = C::new(SYN, 1, 0).to(v6l);
    c.src = v6r;
    send(&mut t, ms(0), &c);
    assert_eq!(recv_one(&mut t, ms(0)).flags, RST | ACK);
    assert!(t.is_empty());
    assert_eq!(t.counters().rst_sent_no_listener, 3);
    assert_eq!(t.counters().rst_sent_no_connection, 1);
}

#[test]
fn ipv6_connection() {
    let v6l: SocketAddr = "[fd00:ec2::254]:80".parse().expect("addr");
    let v6r: SocketAddr = "[fd00::2]:5555".parse().expect("addr");
    let mut cfg = config();
    cfg.listen.insert("[::]:80".parse().expect("addr"));
    let mut t = ConnTable::new(cfg, [1; 16]);
    let mut c = C::new(SYN, 1, 0).to(v6l);
    c.src = v6r;
    send(&mut t, ms(0), &c);
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(sa.options.mss, Some(65475));
    c.flags = ACK | PSH;
    c.seq = 2;
    c.ack = sa.seq.wrapping_add(1);
    c.payload = b"GET".to_vec();
    let id = send(&mut t, ms(1), &c).expect("readable");
    assert_eq!(t.endpoints(id), Some((v6l, v6r)));
}

#[test]
fn rto_backoff_then_give_up() {
    let mut cfg = config();
    cfg.max_retransmits = 3;
    let (mut t, id, iss1) = established_with(cfg, TcpOptions::default());
    send(
        &mut t,
        ms(0),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(b"GET"),
    );
    t.send(id, Bytes::from_static(b"resp"), None, None)
        .expect("send");
    let d = recv_one(&mut t, ms(0));
    assert_eq!(d.payload, b"resp");
    // Handshake RTT sample was 1 ms: RTO = max(min_rto 200 ms, srtt + 4 rttvar).
    let mut now = 0;
    let mut expected_gap = 200;
    for i in 0..3 {
        assert!(
            tick(&mut t, ms(now + expected_gap - 1)).is_empty(),
            "early retransmission #{i}"
        );
        now += expected_gap;
        let r = tick(&mut t, ms(now));
        assert_eq!(r.len(), 1, "retransmission #{i}");
        assert_eq!((r[0].seq, r[0].payload.as_slice()), (iss1, &b"resp"[..]));
        expected_gap *= 2;
    }
    assert_eq!(t.counters().retransmissions, 3);
    now += expected_gap;
    let r = tick(&mut t, ms(now));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].flags, RST | ACK);
    assert!(t.is_empty());
    assert_eq!(t.counters().retransmit_give_ups, 1);
}

#[test]
fn synack_retransmission_then_give_up() {
    let mut cfg = config();
    cfg.max_synack_retransmits = 2;
    cfg.initial_rto = Duration::from_secs(1);
    let mut t = ConnTable::new(cfg, [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(t.poll_at(), Some(ms(1000)));
    assert_eq!(tick(&mut t, ms(1000)), vec![sa.clone()]);
    assert_eq!(tick(&mut t, ms(3000)), vec![sa]);
    assert!(tick(&mut t, ms(7000)).is_empty());
    assert!(t.is_empty());
    assert_eq!(t.counters().synack_give_ups, 1);

    // The default initial RTO is the 200 ms minimum (the peer is on this host): a lost
    // SYN-ACK costs the client 200 ms, and its RTT sample (hence its RTO) stays small.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let sa = recv_one(&mut t, ms(0));
    assert_eq!(t.poll_at(), Some(ms(200)));
    assert_eq!(tick(&mut t, ms(200)), vec![sa.clone()]);
    assert_eq!(tick(&mut t, ms(600)), vec![sa]);
    assert_eq!(
        t.state(t.lookup(local(), remote()).expect("conn")),
        Some(State::SynReceived)
    );
}

#[test]
fn a_held_request_runs_neither_header_nor_idle_timeout() {
    let mut cfg = config();
    cfg.header_timeout = Duration::from_secs(5);
    cfg.idle_timeout = Duration::from_secs(30);
    let (mut t, id, iss1) = established_with(cfg, TcpOptions::default());
    // A complete hanging GET the app parks (holds) without consuming it.
    let req = b"GET /watch HTTP/1.1\r\n\r\n";
    send(
        &mut t,
        ms(100),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(req),
    );
    t.hold(id, true, ms(100));
    recv_one(&mut t, ms(100));
    assert!(tick(&mut t, ms(120_000)).is_empty(), "held for 2 minutes");
    assert_eq!(t.state(id), Some(State::Established));
    // Released (answered) at 120 s: the idle clock starts again from there.
    t.hold(id, false, ms(120_000));
    t.consume(id, req.len());
    assert!(tick(&mut t, ms(149_999)).is_empty());
    let f = tick(&mut t, ms(150_001));
    assert_eq!((f[0].flags, f[0].seq), (ACK | FIN, iss1));
    assert_eq!(t.counters().idle_timeouts, 1);
    assert_eq!(t.counters().header_timeouts, 0);
}

#[test]
fn header_and_idle_timeouts() {
    let mut cfg = config();
    cfg.header_timeout = Duration::from_secs(5);
    cfg.idle_timeout = Duration::from_secs(30);
    let (mut t, id, iss1) = established_with(cfg.clone(), TcpOptions::default());
    // The first bytes of a request at 100 ms; the rest never comes. The header timeout runs
    // from the first byte: FIN 5 s later.
    let part = b"GET /metadata HTTP/1.1\r\n";
    send(
        &mut t,
        ms(100),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(part),
    );
    recv_one(&mut t, ms(100));
    // More of it later does not restart the clock.
    send(
        &mut t,
        ms(3000),
        &C::new(ACK | PSH, CLIENT_ISN + 1 + part.len() as u32, iss1).data(b"Host: x\r\n"),
    );
    recv_one(&mut t, ms(3000));
    assert!(tick(&mut t, ms(5099)).is_empty());
    let f = tick(&mut t, ms(5100));
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].flags, f[0].seq), (ACK | FIN, iss1));
    assert_eq!(t.state(id), Some(State::FinWait1));
    assert_eq!(t.counters().header_timeouts, 1);
    // The peer never answers: the FIN is retransmitted, and the connection is finally reset.
    let mut now = 5100;
    while !t.is_empty() && now < 1_000_000 {
        now += 100;
        tick(&mut t, ms(now));
    }
    assert!(t.is_empty());

    // A complete request consumed at once stops the header clock; bytes left over (the start
    // of the next, pipelined request) restart it from their arrival.
    let (mut t, id, iss1) = established_with(cfg.clone(), TcpOptions::default());
    let two = b"GET / HTTP/1.1\r\n\r\nGET /";
    send(
        &mut t,
        ms(2000),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(two),
    );
    t.consume(id, 18);
    recv_one(&mut t, ms(2000));
    assert!(tick(&mut t, ms(6999)).is_empty());
    assert_eq!(tick(&mut t, ms(7000))[0].flags, ACK | FIN);
    assert_eq!(t.counters().header_timeouts, 1);

    // Idle: a request was answered, then silence.
    let (mut t, _, iss1) = answered_ok(cfg.clone());
    recv_one(&mut t, ms(100));
    send(&mut t, ms(110), &C::new(ACK, CLIENT_ISN + 4, iss1 + 2));
    assert!(tick(&mut t, ms(30_000)).is_empty());
    let f = tick(&mut t, ms(30_111));
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].flags, f[0].seq), (ACK | FIN, iss1 + 2));
    assert_eq!(t.counters().idle_timeouts, 1);
    assert_eq!(t.counters().header_timeouts, 0);

    // Idle before the first request: a connection that never sends one is closed by the idle
    // timeout (not the header timeout, which needs a first byte).
    let (mut t, _, iss1) = established_with(cfg, TcpOptions::default());
    assert!(tick(&mut t, ms(30_000)).is_empty());
    let f = tick(&mut t, ms(30_001));
    assert_eq!((f[0].flags, f[0].seq), (ACK | FIN, iss1));
    assert_eq!(t.counters().idle_timeouts, 1);
    assert_eq!(t.counters().header_timeouts, 0);
}

/// Soak regression (`tests/soak_fault.rs`, pipelined client on port 36694, 51 s in): our first
/// SYN-ACK was lost, so the handshake took our 1 s RTO; the Linux client, with an RTT sample
/// of 1 s, had an RTO of 3 s and sent its request at 0, 3, 9 and 21 s after the handshake; the
/// first three copies were lost too. The header timeout, then running from the handshake,
/// closed the connection with FIN at 10 s, and the client read EOF instead of its responses.
/// The same sequence, with the trace's sequence numbers and timestamps, must end in an answer.
#[test]
fn first_request_after_lossy_handshake_is_answered() {
    let mut cfg = config();
    // `up`'s defaults (server.headerTimeoutSecs, server.idleTimeoutSecs), and the initial RTO
    // of the run that failed (1 s then; 200 ms now, which makes this sequence rarer).
    cfg.header_timeout = Duration::from_secs(10);
    cfg.idle_timeout = Duration::from_secs(60);
    cfg.initial_rto = Duration::from_secs(1);
    let mut t = ConnTable::new(cfg, [1; 16]);
    let isn: u32 = 3_225_053_557;
    let ts = |value, echo| TcpOptions {
        timestamps: Some(Timestamps { value, echo }),
        ..TcpOptions::default()
    };
    let syn = C::new(SYN, isn, 0).win(65495).opts(TcpOptions {
        mss: Some(65495),
        window_scale: Some(10),
        sack_permitted: true,
        timestamps: Some(Timestamps {
            value: 1_535_549_147,
            echo: 0,
        }),
    });
    send(&mut t, ms(0), &syn);
    let lost = recv_one(&mut t, ms(0));
    assert_eq!(lost.flags, SYN | ACK);
    // Our RTO (1 s, RFC 6298 2.1) resends the SYN-ACK; the client completes the handshake.
    let sa = tick(&mut t, ms(1001));
    assert_eq!(sa.len(), 1);
    assert_eq!((sa[0].flags, sa[0].seq), (SYN | ACK, lost.seq));
    let iss1 = lost.seq.wrapping_add(1);
    let their_ts = sa[0].options.timestamps.map_or(0, |t| t.value);
    send(
        &mut t,
        ms(1001),
        &C::new(ACK, isn + 1, iss1)
            .win(64)
            .opts(ts(1_535_550_149, their_ts)),
    );
    let id = t.lookup(local(), remote()).expect("connection");
    assert_eq!(t.state(id), Some(State::Established));
    recv_nothing(&mut t, ms(1001));
    // The request leaves at +0, +3 and +9 s and is lost each time: we see nothing, and must
    // not give up on the client (before: FIN at +10 s, header_timeouts = 1).
    for at in [4_001, 10_001, 11_002, 16_000, 22_000] {
        assert!(tick(&mut t, ms(at)).is_empty(), "sent something at {at} ms");
    }
    assert_eq!(t.state(id), Some(State::Established));
    assert_eq!(t.counters().header_timeouts, 0);
    // The fourth copy, 21.4 s after the handshake, gets through and is answered.
    let req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
    let got = send(
        &mut t,
        ms(22_405),
        &C::new(ACK | PSH, isn + 1, iss1)
            .win(64)
            .data(req)
            .opts(ts(1_535_571_553, their_ts)),
    );
    assert_eq!(got, Some(id));
    assert_eq!(t.recv_data(id), req);
    t.consume(id, req.len());
    let body = Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    t.send(id, body.clone(), None, None).expect("send");
    let r = recv_one(&mut t, ms(22_405));
    assert_eq!(
        (r.flags, r.seq, r.ack),
        (ACK | PSH, iss1, isn + 1 + req.len() as u32)
    );
    assert_eq!(r.payload, body);
    assert_eq!(t.counters().header_timeouts, 0);
    assert_eq!(t.counters().idle_timeouts, 0);
}

#[test]
fn table_full_drops_syns() {
    let mut cfg = config();
    cfg.max_half_open = 2;
    cfg.max_established = 3;
    let mut t = ConnTable::new(cfg, [1; 16]);
    let client = |port: u16| -> SocketAddr { SocketAddr::new(remote().ip(), port) };
    for p in 1..=3 {
        let mut c = C::new(SYN, 1, 0);
        c.src = client(p);
        send(&mut t, ms(0), &c);
    }
    assert_eq!(recv(&mut t, ms(0)).len(), 2);
    assert_eq!(t.counters().syn_dropped_half_open_full, 1);
    assert_eq!(t.class_counts(), (2, 0, 0));
}

#[test]
fn established_limit() {
    let mut cfg = config();
    cfg.max_established = 1;
    let (mut t, _, _) = established_with(cfg, TcpOptions::default());
    let mut c = C::new(SYN, 1, 0);
    c.src = SocketAddr::new(remote().ip(), 1);
    send(&mut t, ms(5), &c);
    recv_nothing(&mut t, ms(5));
    assert_eq!(t.counters().syn_dropped_table_full, 1);
}

#[test]
fn paws_drops_old_segments() {
    let ts = |v| TcpOptions {
        timestamps: Some(Timestamps { value: v, echo: 0 }),
        ..TcpOptions::default()
    };
    let (mut t, id, iss1) = established_with(config(), ts(1000));
    let base = CLIENT_ISN + 1;
    assert_eq!(
        send(
            &mut t,
            ms(5),
            &C::new(ACK, base, iss1).data(b"ab").opts(ts(1005))
        ),
        Some(id)
    );
    let a = recv_one(&mut t, ms(5));
    assert_eq!(a.options.timestamps.map(|t| t.echo), Some(1005));
    assert_eq!(
        send(
            &mut t,
            ms(6),
            &C::new(ACK, base + 2, iss1).data(b"cd").opts(ts(900))
        ),
        None
    );
    recv_one(&mut t, ms(6));
    assert_eq!(t.counters().paws_dropped, 1);
}

#[test]
fn app_abort_and_stale_ids() {
    let (mut t, id, _) = established();
    t.abort(id);
    assert_eq!(recv_one(&mut t, ms(5)).flags, RST | ACK);
    assert!(t.is_empty());
    // The id is stale now; commands on it are no-ops.
    t.close(id);
    t.consume(id, 10);
    assert_eq!(
        t.send(id, Bytes::from_static(b"x"), None, None),
        Err(SendError::UnknownConnection)
    );
    assert!(t.recv_data(id).is_empty());
    recv_nothing(&mut t, ms(6));
}

mod fuzz {
    //! Random segment sequences and app commands: nothing panics, the class counts always
    //! match the table, and everything drains once time runs out.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Seg {
            flags: u8,
            seq_off: i32,
            ack_off: i32,
            window: u16,
            len: usize,
            port: u16,
        },
        Send(usize),
        Consume(usize),
        Close,
        Abort,
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (any::<u8>(), -70_000i32..70_000, -70_000i32..70_000, any::<u16>(), 0usize..3000, 0u16..3)
                .prop_map(|(flags, seq_off, ack_off, window, len, port)| Step::Seg { flags, seq_off, ack_off, window, len, port }),
            1 => (0usize..5000).prop_map(Step::Send),
            1 => (0usize..5000).prop_map(Step::Consume),
            1 => Just(Step::Close),
            1 => Just(Step::Abort),
            2 => (0u64..70_000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn random_sequences_never_panic(steps in proptest::collection::vec(step(), 1..60)) {
            let mut cfg = config();
            cfg.max_half_open = 2;
            cfg.max_established = 2;
            cfg.max_time_wait = 1;
            let mut t = ConnTable::new(cfg, [3; 16]);
            let mut now = 0u64;
            let mut iss1 = 0u32;
            let data = vec![7u8; 3000];
            for s in steps {
                let id = t.lookup(local(), remote());
                match s {
                    Step::Seg { flags, seq_off, ack_off, window, len, port } => {
                        let mut c = C::new(TcpFlags(flags), (CLIENT_ISN as i32).wrapping_add(seq_off) as u32, iss1.wrapping_add(ack_off as u32))
                            .win(window)
                            .data(&data[..len]);
                        c.src = SocketAddr::new(remote().ip(), 40000 + port);
                        send(&mut t, ms(now), &c);
                    }
                    Step::Send(n) => if let Some(id) = id { let _ = t.send(id, Bytes::from(vec![1u8; n]), None, None); },
                    Step::Consume(n) => if let Some(id) = id { t.consume(id, n) },
                    Step::Close => if let Some(id) = id { t.close(id) },
                    Step::Abort => if let Some(id) = id { t.abort(id) },
                    Step::Wait(d) => { now += d; t.handle_timeout(ms(now)); }
                }
                for o in recv(&mut t, ms(now)) {
                    if o.flags.contains(SYN) {
                        iss1 = o.seq.wrapping_add(1);
                    }
                }
                let (h, e, w) = t.class_counts();
                prop_assert_eq!(h + e + w, t.len());
                if let Err(e) = t.check_invariants() {
                    return Err(TestCaseError::fail(e));
                }
            }
            // Every connection eventually leaves: idle/retransmission limits and TIME-WAIT.
            for _ in 0..200 {
                now += 60_000;
                t.handle_timeout(ms(now));
                recv(&mut t, ms(now));
            }
            prop_assert!(t.is_empty(), "left: {:?}", t.class_counts());
        }
    }
}

/// At 30% loss in both directions (`tests/soak_fault.rs`) the idle timeout reset connections
/// whose response was still being retransmitted because every ACK of it had been lost: the
/// idle timer must wait while data is in flight, and the retransmission limit decides.
#[test]
fn idle_timeout_waits_while_data_is_in_flight() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_secs(30);
    let (mut t, id, iss1) = answered_ok(cfg);
    let first = recv_one(&mut t, ms(100));
    assert_eq!(first.payload, b"ok");
    // No ACK for 60 s, twice the idle timeout: only retransmissions of the data go out.
    let mut resent = 0;
    for now in (200..=60_000).step_by(100) {
        for s in tick(&mut t, ms(now)) {
            assert!(
                !s.flags.fin() && !s.flags.rst(),
                "{:?} at {now} ms",
                s.flags
            );
            assert_eq!((s.seq, &s.payload[..]), (iss1, &b"ok"[..]));
            resent += 1;
        }
    }
    assert!(resent >= 5, "only {resent} retransmissions");
    assert_eq!(t.counters().idle_timeouts, 0);
    assert_eq!(t.state(id), Some(State::Established));
    // The ACK finally arrives: now the idle timer runs, from that ACK.
    send(&mut t, ms(60_050), &C::new(ACK, CLIENT_ISN + 4, iss1 + 2));
    assert!(tick(&mut t, ms(90_049)).is_empty());
    let f = tick(&mut t, ms(90_050));
    assert_eq!((f[0].flags, f[0].seq), (ACK | FIN, iss1 + 2));
    assert_eq!(t.counters().idle_timeouts, 1);
}

/// An established connection that received `GET` at 100 ms and has `ok` queued in answer.
fn answered_ok(cfg: TcpConfig) -> (ConnTable, ConnId, u32) {
    let (mut t, id, iss1) = established_with(cfg, TcpOptions::default());
    send(
        &mut t,
        ms(100),
        &C::new(ACK | PSH, CLIENT_ISN + 1, iss1).data(b"GET"),
    );
    t.consume(id, 3);
    t.send(id, Bytes::from_static(b"ok"), None, None)
        .expect("send");
    (t, id, iss1)
}

/// Fuzzing regression (`fuzz/fuzz_targets/tcp_state.rs`, crash-9a8fd6e9): in SYN-RECEIVED an
/// ACK with the right acknowledgment number but a sequence number outside the window, after
/// the SYN-ACK's RTO had fired, completed the handshake without the ACK step running: the
/// connection sat in ESTABLISHED with its SYN-ACK unacknowledged and no timer, forever (the
/// idle timer waits while something is in flight). The sequence test must come first.
#[test]
fn out_of_window_ack_does_not_complete_the_handshake() {
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let sa = recv_one(&mut t, ms(0));
    let iss1 = sa.seq.wrapping_add(1);
    // The SYN-ACK's RTO fires; its retransmission is lost with everything after it.
    t.handle_timeout(ms(250));
    let id = t.lookup(local(), remote()).expect("half-open connection");
    let far = CLIENT_ISN.wrapping_add(1_000_000);
    assert_eq!(send(&mut t, ms(260), &C::new(ACK, far, iss1)), None);
    assert_eq!(t.state(id), Some(State::SynReceived));
    assert_eq!(t.counters().unacceptable_segments, 1);
    assert_eq!(t.counters().connections_established, 0);
    t.check_invariants().expect("invariants");
    // Nothing else arrives: the half-open connection is given up, the table empties.
    let mut now = 260;
    while !t.is_empty() && now < 200_000 {
        now += 100;
        tick(&mut t, ms(now));
        t.check_invariants().expect("invariants");
    }
    assert!(t.is_empty(), "left: {:?}", t.class_counts());
    assert_eq!(t.counters().synack_give_ups, 1);

    // The same, then the right ACK in the window: the handshake completes normally.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0));
    let iss1 = recv_one(&mut t, ms(0)).seq.wrapping_add(1);
    send(&mut t, ms(10), &C::new(ACK, far, iss1));
    send(&mut t, ms(20), &C::new(ACK, CLIENT_ISN + 1, iss1));
    let id = t.lookup(local(), remote()).expect("connection");
    assert_eq!(t.state(id), Some(State::Established));
    t.check_invariants().expect("invariants");
}

/// Fuzzing regression (`tcp_state`, crash-182dc4e1 / crash-aa22d84e): the same lost
/// handshake, through the PAWS test: a right ACK number with a timestamp older than the SYN's
/// was dropped by PAWS after the handshake had already been marked complete, leaving an
/// ESTABLISHED connection with its SYN-ACK unacknowledged and no timer.
#[test]
fn paws_dropped_ack_does_not_complete_the_handshake() {
    let ts = |value| TcpOptions {
        timestamps: Some(Timestamps { value, echo: 0 }),
        ..TcpOptions::default()
    };
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0).opts(ts(100)));
    let iss1 = recv_one(&mut t, ms(0)).seq.wrapping_add(1);
    t.handle_timeout(ms(250));
    let id = t.lookup(local(), remote()).expect("half-open connection");
    let old = C::new(ACK, CLIENT_ISN + 1, iss1).opts(ts(50));
    assert_eq!(send(&mut t, ms(260), &old), None);
    assert_eq!(t.state(id), Some(State::SynReceived));
    assert_eq!(t.counters().paws_dropped, 1);
    assert_eq!(t.counters().connections_established, 0);
    let mut now = 260;
    while !t.is_empty() && now < 200_000 {
        now += 100;
        tick(&mut t, ms(now));
        t.check_invariants().expect("invariants");
    }
    assert!(t.is_empty(), "left: {:?}", t.class_counts());
    // A current timestamp completes it.
    let mut t = ConnTable::new(config(), [1; 16]);
    send(&mut t, ms(0), &C::new(SYN, CLIENT_ISN, 0).opts(ts(100)));
    let iss1 = recv_one(&mut t, ms(0)).seq.wrapping_add(1);
    send(
        &mut t,
        ms(10),
        &C::new(ACK, CLIENT_ISN + 1, iss1).opts(ts(50)),
    );
    send(
        &mut t,
        ms(20),
        &C::new(ACK, CLIENT_ISN + 1, iss1).opts(ts(101)),
    );
    let id = t.lookup(local(), remote()).expect("connection");
    assert_eq!(t.state(id), Some(State::Established));
    recv(&mut t, ms(20));
    t.check_invariants().expect("invariants");
}
