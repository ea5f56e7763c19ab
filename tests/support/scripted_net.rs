//! Many scripted TCP clients and flood packets against an [`Engine`] through the in-memory
//! device, on a simulated clock: the deterministic half of the flood tests (the other half
//! runs `up` in a test host).
//!
//! A [`Client`] is the smallest honest TCP peer for this: it opens with a SYN, answers the
//! SYN-ACK, sends bytes in order, acknowledges every segment it receives in order, answers a
//! FIN with its own FIN, and notes a reset. It never retransmits (the device loses nothing).

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use imds_tun::config;
use imds_tun::device::{Device, Memory, MAX_PACKET};
use imds_tun::engine::Engine;
use imds_tun::snapshot::{Keys, Snapshot, SnapshotCell};
use imds_tun::tcp::TcpConfig;
use imds_tun::wire::{self, Packet, SegmentHeader, TcpFlags, TcpOptions};

pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// One scripted client connection.
#[derive(Debug, Default)]
pub struct Client {
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    pub established: bool,
    pub received: Vec<u8>,
    pub reset: bool,
    pub fin: bool,
}

/// The engine, the kernel's end of the device, and the clients.
pub struct Net {
    pub engine: Engine<Memory>,
    end: Memory,
    origin: Instant,
    pub now: Duration,
    pub clients: HashMap<SocketAddr, Client>,
    /// Segments the engine sent to addresses that are not clients (SYN-ACKs to a flood).
    pub unclaimed: u64,
    buf: Vec<u8>,
}

pub fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

impl Net {
    /// An engine over the default configuration with `tcp` (its listen set is filled in).
    pub fn new(mut tcp: TcpConfig) -> Net {
        let no_env = |_: &str| None;
        let cfg = config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
        let snapshot =
            Snapshot::build(cfg, &Keys::fixed(3), "test").unwrap_or_else(|e| panic!("{e}"));
        let cell = Arc::new(SnapshotCell::new(snapshot));
        tcp.listen.insert(SERVER);
        let (end, engine_end) = Memory::pair(1 << 16);
        let origin = Instant::now();
        Net {
            engine: Engine::new(engine_end, tcp, [9; 16], cell, origin),
            end,
            origin,
            now: Duration::ZERO,
            clients: HashMap::new(),
            unclaimed: 0,
            buf: vec![0; MAX_PACKET],
        }
    }

    /// Puts one segment on the wire towards the engine.
    pub fn inject(&mut self, src: SocketAddr, seq: u32, ack: u32, flags: TcpFlags, data: &[u8]) {
        let h = SegmentHeader {
            src,
            dst: SERVER,
            seq,
            ack,
            flags,
            window: 65535,
            options: TcpOptions::default(),
            hop_limit: 64,
        };
        let n = wire::emit_segment_with_payload(&h, data, &mut self.buf)
            .unwrap_or_else(|e| panic!("emit: {e:?}"));
        let at = self.origin + self.now;
        self.end
            .send(at, &[IoSlice::new(&self.buf[..n])])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A bare SYN from `src` that nobody will ever acknowledge (a flood packet).
    pub fn flood_syn(&mut self, src: SocketAddr) {
        self.inject(src, 1, 0, TcpFlags::SYN, b"");
    }

    /// Opens a client connection from `src` (its SYN; the handshake completes on `step`).
    pub fn connect(&mut self, src: SocketAddr) {
        self.clients.insert(
            src,
            Client {
                snd_nxt: 1001,
                ..Client::default()
            },
        );
        self.inject(src, 1000, 0, TcpFlags::SYN, b"");
    }

    /// Sends `data` on an established client connection.
    pub fn send(&mut self, src: SocketAddr, data: &[u8]) {
        let Some(c) = self.clients.get_mut(&src) else {
            panic!("no client {src}")
        };
        let (seq, ack) = (c.snd_nxt, c.rcv_nxt);
        c.snd_nxt = seq.wrapping_add(data.len() as u32);
        self.inject(src, seq, ack, TcpFlags::ACK | TcpFlags::PSH, data);
    }

    /// Advances the clock to `at` and lets the engine and the clients run until quiet.
    pub fn step(&mut self, at: Duration) {
        self.now = self.now.max(at);
        for _ in 0..64 {
            let now = self.origin + self.now;
            while self
                .engine
                .handle_ready(now, wall())
                .unwrap_or_else(|e| panic!("{e}"))
                > 0
            {}
            self.engine.handle_timeout(now);
            self.engine.flush(now);
            if !self.deliver() {
                return;
            }
        }
        panic!("the exchange did not settle");
    }

    /// Hands every segment the engine sent to its client; returns whether a client answered.
    fn deliver(&mut self) -> bool {
        let mut answers = Vec::new();
        let now = self.origin + self.now;
        let mut rx = vec![0u8; MAX_PACKET];
        while let Some(n) = self
            .end
            .recv(now, &mut rx)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            let Ok(Packet::Tcp(seg)) = wire::parse(&rx[..n]) else {
                panic!("the engine sent something unparsable")
            };
            let h = seg.header;
            let Some(c) = self.clients.get_mut(&h.dst) else {
                self.unclaimed += 1;
                continue;
            };
            if h.flags.rst() {
                c.reset = true;
                continue;
            }
            if h.flags.syn() {
                c.rcv_nxt = h.seq.wrapping_add(1);
                c.established = true;
                answers.push((h.dst, c.snd_nxt, c.rcv_nxt, TcpFlags::ACK));
                continue;
            }
            if h.seq == c.rcv_nxt && !seg.payload.is_empty() {
                c.received.extend_from_slice(seg.payload);
                c.rcv_nxt = c.rcv_nxt.wrapping_add(seg.payload.len() as u32);
                answers.push((h.dst, c.snd_nxt, c.rcv_nxt, TcpFlags::ACK));
            }
            if h.flags.fin() && !c.fin {
                c.fin = true;
                c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
                let seq = c.snd_nxt;
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
                answers.push((h.dst, seq, c.rcv_nxt, TcpFlags::ACK | TcpFlags::FIN));
            }
        }
        let any = !answers.is_empty();
        for (src, seq, ack, flags) in answers {
            self.inject(src, seq, ack, flags, b"");
        }
        any
    }

    pub fn client(&self, src: SocketAddr) -> &Client {
        self.clients
            .get(&src)
            .unwrap_or_else(|| panic!("no client {src}"))
    }
}

/// A deterministic stream of link-local source addresses and ports (xorshift), never the
/// metadata address itself.
pub struct Sources(u64);

impl Sources {
    pub fn new(seed: u64) -> Sources {
        Sources(seed | 1)
    }
}

impl Iterator for Sources {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let r = self.0;
        let (c, d) = (1 + (r % 253) as u8, 1 + ((r >> 8) % 253) as u8);
        let ip = Ipv4Addr::new(169, 254, if c == 169 { 170 } else { c }, d);
        let port = 1024 + ((r >> 16) % 64_000) as u16;
        Some(SocketAddr::new(IpAddr::V4(ip), port))
    }
}
