//! A fault-injecting wrapper: drop, duplicate, reorder and delay packets, seeded.
//!
//! `tc netem` is not available on the target kernel, so loss, duplication, reordering and
//! delay are injected here, between the engine and the real (or in-memory) device, in both
//! directions. Modelled on smoltcp's `phy::FaultInjector`, with time passed in.
//!
//! # Contract
//!
//! - **Deterministic**: the same seed, configuration and sequence of calls (packets and `now`
//!   values) produce the same packets in the same order and the same [`FaultStats`]. Each
//!   direction draws from its own random stream (SplitMix64, written out here so the sequence
//!   can never change under us with a dependency upgrade), so the faults applied to received
//!   packets do not depend on how many packets were sent, and vice versa.
//! - **Per packet, in order**: drop with probability `drop`; otherwise duplicate with
//!   probability `duplicate`; then each copy is delayed with probability `delay` by a uniform
//!   time in `(0, max_delay]`, or else, with probability `reorder`, held back until the next
//!   packet in the same direction has passed it (or until `reorder_hold` elapses, so a reorder
//!   never turns into a loss). At most one packet per direction is held for reordering.
//! - Held packets are released by any later `recv`/`send` call at or after their time;
//!   [`Device::poll_at`] says when that is.
//! - Rates are probabilities in `[0, 1]`; values outside are clamped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use super::{gather, Device, MAX_PACKET};

/// Fault probabilities for one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// Probability that a packet is dropped.
    pub drop: f64,
    /// Probability that a (not dropped) packet is delivered twice.
    pub duplicate: f64,
    /// Probability that a copy is held back until the next packet has passed it.
    pub reorder: f64,
    /// Probability that a copy is delayed.
    pub delay: f64,
    /// Upper bound of a delay (uniform in `(0, max_delay]`).
    pub max_delay: Duration,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: FaultRates = FaultRates {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: 0.0,
        max_delay: Duration::ZERO,
    };
}

impl Default for FaultRates {
    fn default() -> Self {
        Self::NONE
    }
}

/// Configuration of a [`Fault`] wrapper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seed of the random streams; the same seed replays the same faults.
    pub seed: u64,
    /// Faults applied to packets coming from the inner device (towards the engine).
    pub rx: FaultRates,
    /// Faults applied to packets the engine sends (towards the inner device).
    pub tx: FaultRates,
    /// Longest time a reordered packet waits for a successor before it is released anyway.
    pub reorder_hold: Duration,
}

impl FaultConfig {
    /// The same rates in both directions.
    pub fn symmetric(seed: u64, rates: FaultRates) -> Self {
        FaultConfig {
            seed,
            rx: rates,
            tx: rates,
            reorder_hold: Duration::from_millis(10),
        }
    }
}

/// What the wrapper did in one direction. `seen` counts packets offered to the wrapper;
/// the others count decisions (a duplicated packet counts once in `duplicated`; each delayed
/// or reordered copy counts once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub seen: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    /// Copies handed on (to the engine for rx, to the inner device for tx).
    pub delivered: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub rx: DirectionStats,
    pub tx: DirectionStats,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified here.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits → uniform in [0, 1).
        let x = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        x < p
    }

    /// Uniform in `1..=n` (n > 0).
    fn up_to(&mut self, n: u64) -> u64 {
        1 + self.next_u64() % n
    }
}

/// One direction's state.
#[derive(Debug)]
struct Lane {
    rates: FaultRates,
    rng: SplitMix64,
    stats: DirectionStats,
    /// Delayed copies: (due, arrival number) keeps equal due times in arrival order.
    timed: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    /// The copy held for reordering and the time it is released regardless.
    held: Option<(Instant, Vec<u8>)>,
    arrivals: u64,
    reorder_hold: Duration,
}

impl Lane {
    fn new(rates: FaultRates, seed: u64, reorder_hold: Duration) -> Self {
        Lane {
            rates,
            rng: SplitMix64(seed),
            stats: DirectionStats::default(),
            timed: BinaryHeap::new(),
            held: None,
            arrivals: 0,
            reorder_hold,
        }
    }

    /// Applies the faults to a fresh packet; copies to hand on now go to `out`.
    fn admit(&mut self, now: Instant, packet: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.stats.seen += 1;
        if self.rng.chance(self.rates.drop) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.rates.duplicate) {
            self.stats.duplicated += 1;
            vec![packet.clone(), packet]
        } else {
            vec![packet]
        };
        for copy in copies {
            let max = self.rates.max_delay.as_nanos().min(u64::MAX as u128) as u64;
            if max > 0 && self.rng.chance(self.rates.delay) {
                self.stats.delayed += 1;
                let due = now + Duration::from_nanos(self.rng.up_to(max));
                self.arrivals += 1;
                self.timed.push(Reverse((due, self.arrivals, copy)));
            } else if self.held.is_none() && self.rng.chance(self.rates.reorder) {
                self.stats.reordered += 1;
                self.held = Some((now + self.reorder_hold, copy));
            } else {
                out.push(copy);
                // The held packet goes right after one that arrived later: that is the reorder.
                if let Some((_, held)) = self.held.take() {
                    out.push(held);
                }
            }
        }
    }

    /// Moves copies whose time has come to `out`.
    fn release(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        while let Some(Reverse((due, _, _))) = self.timed.peek() {
            if *due > now {
                break;
            }
            if let Some(Reverse((_, _, p))) = self.timed.pop() {
                out.push(p);
            }
        }
        if matches!(self.held, Some((due, _)) if due <= now) {
            if let Some((_, p)) = self.held.take() {
                out.push(p);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let timed = self.timed.peek().map(|Reverse((due, _, _))| *due);
        let held = self.held.as_ref().map(|(due, _)| *due);
        min_opt(timed, held)
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A device wrapper that injects faults; see the module documentation.
#[derive(Debug)]
pub struct Fault<D> {
    inner: D,
    rx: Lane,
    tx: Lane,
    /// Received copies ready for the engine, with the time they became ready.
    rx_ready: VecDeque<(Instant, Vec<u8>)>,
    scratch: Vec<u8>,
}

impl<D: Device> Fault<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, config: FaultConfig) -> Self {
        let mut seeds = SplitMix64(config.seed);
        let clamp = |r: FaultRates| FaultRates {
            drop: r.drop.clamp(0.0, 1.0),
            duplicate: r.duplicate.clamp(0.0, 1.0),
            reorder: r.reorder.clamp(0.0, 1.0),
            delay: r.delay.clamp(0.0, 1.0),
            max_delay: r.max_delay,
        };
        Fault {
            rx: Lane::new(clamp(config.rx), seeds.next_u64(), config.reorder_hold),
            tx: Lane::new(clamp(config.tx), seeds.next_u64(), config.reorder_hold),
            inner,
            rx_ready: VecDeque::new(),
            scratch: vec![0; MAX_PACKET],
        }
    }

    /// What the wrapper has done so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            rx: self.rx.stats,
            tx: self.tx.stats,
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably (e.g. to inject packets into a memory device).
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Sends transmit copies whose time has come.
    fn flush_tx(&mut self, now: Instant) -> io::Result<()> {
        let mut due = Vec::new();
        self.tx.release(now, &mut due);
        self.send_copies(now, due)
    }

    fn send_copies(&mut self, now: Instant, copies: Vec<Vec<u8>>) -> io::Result<()> {
        let mut first_err = None;
        for p in copies {
            self.tx.stats.delivered += 1;
            // Keep sending the rest: one failed copy must not strand those behind it.
            if let Err(e) = self.inner.send(now, &[IoSlice::new(&p)]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl<D: Device> Device for Fault<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.flush_tx(now)?;
        loop {
            if let Some((_, p)) = self.rx_ready.pop_front() {
                self.rx.stats.delivered += 1;
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                return Ok(Some(n));
            }
            let mut out = Vec::new();
            self.rx.release(now, &mut out);
            if out.is_empty() {
                let Some(n) = self.inner.recv(now, &mut self.scratch)? else {
                    return Ok(None);
                };
                let packet = self.scratch[..n].to_vec();
                self.rx.admit(now, packet, &mut out);
            }
            self.rx_ready.extend(out.into_iter().map(|p| (now, p)));
        }
    }

    fn send(&mut self, now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()> {
        let mut out = Vec::new();
        self.tx.release(now, &mut out);
        self.tx.admit(now, gather(packet), &mut out);
        self.send_copies(now, out)
    }

    fn readable_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.readable_fd()
    }

    fn poll_at(&self) -> Option<Instant> {
        let ready = self.rx_ready.front().map(|(t, _)| *t);
        [
            ready,
            self.rx.next_due(),
            self.tx.next_due(),
            self.inner.poll_at(),
        ]
        .into_iter()
        .fold(None, min_opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Memory;

    /// Sends `n` numbered packets through a fault wrapper in the tx direction, advancing a
    /// simulated clock by 1 ms per packet, then drains; returns what arrived.
    fn run_tx(config: FaultConfig, n: u32) -> (Vec<u32>, FaultStats) {
        let t0 = Instant::now();
        let (engine_end, mut kernel_end) = Memory::pair(usize::MAX);
        let mut dev = Fault::new(engine_end, config);
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        let mut now = t0;
        for i in 0..n {
            now = t0 + Duration::from_millis(i as u64);
            dev.send(now, &[IoSlice::new(&i.to_be_bytes())]).unwrap();
        }
        // Let every delay and reorder hold expire.
        let end = now + Duration::from_secs(10);
        assert!(dev.poll_at().is_none_or(|t| t <= end));
        dev.recv(end, &mut buf).unwrap();
        assert!(dev.poll_at().is_none());
        while let Some(len) = kernel_end.recv(end, &mut buf).unwrap() {
            assert_eq!(len, 4);
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
        (got, dev.stats())
    }

    fn busy(seed: u64) -> FaultConfig {
        FaultConfig::symmetric(
            seed,
            FaultRates {
                drop: 0.1,
                duplicate: 0.05,
                reorder: 0.1,
                delay: 0.1,
                max_delay: Duration::from_millis(20),
            },
        )
    }

    #[test]
    fn no_faults_is_transparent() {
        let (got, stats) = run_tx(FaultConfig::symmetric(1, FaultRates::NONE), 1000);
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(stats.tx.seen, 1000);
        assert_eq!(stats.tx.delivered, 1000);
    }

    #[test]
    fn same_seed_same_faults_different_seed_different() {
        let (a, sa) = run_tx(busy(42), 2000);
        let (b, sb) = run_tx(busy(42), 2000);
        let (c, _) = run_tx(busy(43), 2000);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_ne!(a, c);
        // Faults really happened: something missing, something doubled, something out of order.
        assert!(sa.tx.dropped > 0 && sa.tx.duplicated > 0);
        assert!(sa.tx.reordered > 0 && sa.tx.delayed > 0);
        assert!(a.windows(2).any(|w| w[0] > w[1]));
        assert_eq!(sa.tx.delivered as usize, a.len());
        assert_eq!(
            sa.tx.delivered,
            sa.tx.seen - sa.tx.dropped + sa.tx.duplicated
        );
    }

    #[test]
    fn rates_are_accurate_over_many_packets() {
        let n = 100_000u32;
        let rates = FaultRates {
            drop: 0.2,
            duplicate: 0.1,
            ..FaultRates::NONE
        };
        let (got, stats) = run_tx(FaultConfig::symmetric(7, rates), n);
        let drop_rate = stats.tx.dropped as f64 / n as f64;
        let dup_rate = stats.tx.duplicated as f64 / (n as u64 - stats.tx.dropped) as f64;
        // Binomial standard deviations are ~0.0013 and ~0.001: allow about 4 of them.
        assert!((drop_rate - 0.2).abs() < 0.005, "drop rate {drop_rate}");
        assert!((dup_rate - 0.1).abs() < 0.005, "duplicate rate {dup_rate}");
        assert_eq!(got.len() as u64, stats.tx.delivered);
        // Without delay or reorder, order is preserved (duplicates are adjacent).
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn delay_is_bounded_and_announced_by_poll_at() {
        let t0 = Instant::now();
        let (engine_end, mut kernel_end) = Memory::pair(16);
        let rates = FaultRates {
            delay: 1.0,
            max_delay: Duration::from_millis(5),
            ..FaultRates::NONE
        };
        let mut dev = Fault::new(engine_end, FaultConfig::symmetric(3, rates));
        let mut buf = [0u8; 8];
        // rx: a packet from the kernel is held, then released no later than 5 ms.
        kernel_end.send(t0, &[IoSlice::new(b"in")]).unwrap();
        assert_eq!(dev.recv(t0, &mut buf).unwrap(), None);
        let due = dev.poll_at().unwrap();
        assert!(due > t0 && due <= t0 + Duration::from_millis(5));
        assert_eq!(dev.recv(due, &mut buf).unwrap(), Some(2));
        assert_eq!(&buf[..2], b"in");
        // tx: held until its time, released by a later call.
        dev.send(t0, &[IoSlice::new(b"out")]).unwrap();
        assert_eq!(kernel_end.recv(t0, &mut buf).unwrap(), None);
        let due = dev.poll_at().unwrap();
        assert_eq!(dev.recv(due, &mut buf).unwrap(), None);
        assert_eq!(kernel_end.recv(due, &mut buf).unwrap(), Some(3));
        assert_eq!(dev.stats().rx.delayed, 1);
        assert_eq!(dev.stats().tx.delayed, 1);
    }

    #[test]
    fn reordered_packet_follows_its_successor_or_times_out() {
        let t0 = Instant::now();
        let (mut engine_end, kernel_end) = Memory::pair(16);
        let rates = FaultRates {
            reorder: 1.0,
            ..FaultRates::NONE
        };
        let mut dev = Fault::new(kernel_end, FaultConfig::symmetric(9, rates));
        let mut buf = [0u8; 8];
        engine_end.send(t0, &[IoSlice::new(&[1])]).unwrap();
        engine_end.send(t0, &[IoSlice::new(&[2])]).unwrap();
        engine_end.send(t0, &[IoSlice::new(&[3])]).unwrap();
        // 1 is held, 2 passes and releases 1, 3 is held (reorder rate 1).
        let mut got = Vec::new();
        while dev.recv(t0, &mut buf).unwrap().is_some() {
            got.push(buf[0]);
        }
        assert_eq!(got, vec![2, 1]);
        let due = dev.poll_at().unwrap();
        assert_eq!(due, t0 + Duration::from_millis(10));
        assert_eq!(dev.recv(due, &mut buf).unwrap(), Some(1));
        assert_eq!(buf[0], 3);
        assert_eq!(dev.stats().rx.reordered, 2);
    }
}
