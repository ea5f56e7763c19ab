//! The TCP state machine fed arbitrary sequences of segments, timer runs and application
//! commands for four client ports, with small limits so every bound is reached. After every
//! step the table's invariants hold (`ConnTable::check_invariants`: SND.UNA <= SND.NXT <=
//! SND.MAX, queue and buffer bounds, class counts, table and reset-queue limits, timer queue
//! size), and every segment it emits parses back as a TCP segment from port 80.
//!
//! Sequence and acknowledgment numbers are either raw input or derived from what the server
//! last sent on that port (with a small offset), so the fuzzer reaches the synchronized
//! states instead of being refused at the first acceptability test.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use imds_tun::tcp::{ConnTable, Instant, TcpConfig};
use imds_tun::wire::{self, Packet, Segment, SegmentHeader, TcpFlags, TcpOptions, Timestamps};
use libfuzzer_sys::fuzz_target;

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// Reads the input a byte or word at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// What the client on one port believes: its next sequence number and the server's.
#[derive(Clone, Copy, Default)]
struct Peer {
    snd_nxt: u32,
    rcv_nxt: u32,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut cfg = TcpConfig::default();
    cfg.listen.insert(SERVER);
    cfg.max_half_open = 3;
    cfg.max_established = 3;
    cfg.max_time_wait = 2;
    cfg.max_pending_resets = 4;
    cfg.recv_buffer = 512;
    cfg.mtu = 600;
    cfg.time_wait = Duration::from_secs(2);
    cfg.header_timeout = Duration::from_secs(3);
    cfg.idle_timeout = Duration::from_secs(5);
    let mut t: ConnTable = ConnTable::new(cfg, [3; 16]);
    let client = |i: u8| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(169, 254, 0, 2)),
            40000 + u16::from(i % 4),
        )
    };
    let mut peers = [Peer::default(); 4];
    let mut now_ms: u64 = 0;
    let payload_src = [b'x'; 700];
    let mut steps = 0;
    while !input.0.is_empty() && steps < 2000 {
        steps += 1;
        let now = Instant::from_millis(now_ms);
        let op = input.u8();
        let port = input.u8() % 4;
        let remote = client(port);
        let id = t.lookup(SERVER, remote);
        match op % 8 {
            0..=2 => {
                let flags = TcpFlags(input.u8());
                let sel = input.u8();
                let delta = i32::from(input.u8() as i8);
                let p = &mut peers[usize::from(port)];
                let seq = if sel & 1 == 0 {
                    p.snd_nxt.wrapping_add_signed(delta)
                } else {
                    input.u32()
                };
                let ack = if sel & 2 == 0 {
                    p.rcv_nxt.wrapping_add_signed(delta)
                } else {
                    input.u32()
                };
                let window = input.u16();
                let len = usize::from(input.u8()) % 700;
                let o = input.u8();
                let options = TcpOptions {
                    mss: (o & 1 != 0).then(|| input.u16()),
                    window_scale: (o & 2 != 0).then(|| input.u8() % 20),
                    sack_permitted: o & 4 != 0,
                    timestamps: (o & 8 != 0).then(|| Timestamps {
                        value: (now_ms as u32).wrapping_add(u32::from(o >> 4)),
                        echo: input.u32(),
                    }),
                };
                let seg = Segment {
                    header: SegmentHeader {
                        src: remote,
                        dst: if sel & 4 == 0 {
                            SERVER
                        } else {
                            SocketAddr::new(SERVER.ip(), 81)
                        },
                        seq,
                        ack,
                        flags,
                        window,
                        options,
                        hop_limit: 64,
                    },
                    payload: &payload_src[..len],
                };
                if sel & 8 == 0 {
                    p.snd_nxt = seq
                        .wrapping_add(len as u32)
                        .wrapping_add(u32::from(flags.syn()) + u32::from(flags.fin()));
                }
                let _ = t.handle_segment(now, &seg);
            }
            3 => {
                now_ms += u64::from(input.u16());
                t.handle_timeout(Instant::from_millis(now_ms));
            }
            4 => {
                if let Some(id) = id {
                    t.consume(id, usize::from(input.u16()));
                }
            }
            5 => {
                if let Some(id) = id {
                    let n = usize::from(input.u16()) % 3000;
                    let _ = t.send(id, Bytes::from(vec![b'r'; n]), None, None);
                }
            }
            6 => {
                if let Some(id) = id {
                    t.close(id);
                }
            }
            _ => {
                if let Some(id) = id {
                    t.abort(id);
                }
            }
        }
        let now = Instant::from_millis(now_ms);
        t.poll_transmit(now, &mut |tx| {
            let mut packet = tx.header.to_vec();
            packet.extend_from_slice(tx.payload);
            let Ok(Packet::Tcp(seg)) = wire::parse(&packet) else {
                panic!("emitted segment does not parse: {packet:?}")
            };
            let h = seg.header;
            assert_eq!(h.src.ip(), SERVER.ip());
            if let Some(i) = (0..4u8).find(|&i| client(i) == h.dst) {
                let p = &mut peers[usize::from(i)];
                if h.flags.syn() {
                    p.snd_nxt = h.ack;
                }
                if !h.flags.rst() {
                    p.rcv_nxt = h
                        .seq
                        .wrapping_add(seg.payload.len() as u32)
                        .wrapping_add(u32::from(h.flags.syn()) + u32::from(h.flags.fin()));
                }
            }
        });
        if let Err(e) = t.check_invariants() {
            panic!("after step {steps}: {e}");
        }
    }
    // However it was left, the timers empty the table.
    for _ in 0..400 {
        now_ms += 1000;
        t.handle_timeout(Instant::from_millis(now_ms));
        t.poll_transmit(Instant::from_millis(now_ms), &mut |_| {});
        if let Err(e) = t.check_invariants() {
            panic!("draining, at {now_ms} ms: {e}");
        }
    }
    if !t.is_empty() {
        let states: Vec<_> = (0..4u8)
            .filter_map(|i| t.lookup(SERVER, client(i)))
            .map(|id| (t.state(id), t.send_queued(id), t.recv_data(id).len()))
            .collect();
        panic!(
            "left in the table: {:?} {states:?}, next timer {:?} at {now_ms} ms, {:?}",
            t.class_counts(),
            t.poll_at(),
            t.counters()
        );
    }
});
