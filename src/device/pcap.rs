//! A tracing wrapper that writes every packet, both directions, to a pcap file.
//!
//! Used by `up --pcap FILE`; the file opens in Wireshark and tcpdump (`tcpdump -r FILE`).
//! Format: classic libpcap, microsecond timestamps (magic `0xa1b2c3d4` in native byte order,
//! version 2.4), snaplen 65535, link type [`LINKTYPE_RAW`] (raw IPv4/IPv6, no link header,
//! which is exactly what a TUN carries). Modelled on smoltcp's `phy::PcapWriter`.
//!
//! Timestamps: devices never read the clock, so the wrapper pairs one wall-clock reading
//! taken at creation with the `now` of that moment, and stamps each packet with that wall time
//! plus `now - base`. Classic pcap has no direction field; the two directions are told apart
//! by their addresses (the metadata service is always one end).
//!
//! Every record is written with one `write_all` and flushed, so a killed process leaves a
//! readable file (at most the last record torn). Write errors are reported once through
//! `tracing` and tracing stops; they never fail the packet path.

use std::io::{self, IoSlice, Write};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{gather, Device};

/// Link type for raw IP packets (IPv4 or IPv6, told apart by the version nibble).
pub const LINKTYPE_RAW: u32 = 101;
/// Classic pcap magic number, microsecond timestamps.
const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const SNAPLEN: u32 = 65535;

/// A device wrapper that writes every packet to `W` in pcap format.
#[derive(Debug)]
pub struct Pcap<D, W: Write> {
    inner: D,
    sink: Option<W>,
    base_instant: Instant,
    base_wall: Duration,
}

impl<D: Device, W: Write> Pcap<D, W> {
    /// Wraps `inner` and writes the pcap file header to `sink`. `now` is the current time of
    /// the driver's clock, paired with the wall clock to stamp packets.
    pub fn new(inner: D, mut sink: W, now: Instant) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_USEC.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes()); // version major
        header.extend_from_slice(&4u16.to_ne_bytes()); // version minor
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: timestamps are UTC
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_ne_bytes());
        sink.write_all(&header)?;
        sink.flush()?;
        let base_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Pcap {
            inner,
            sink: Some(sink),
            base_instant: now,
            base_wall,
        })
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Stops tracing and returns the sink (flushed), e.g. to read back in a test.
    pub fn into_parts(mut self) -> (D, Option<W>) {
        if let Some(s) = self.sink.as_mut() {
            let _ = s.flush();
        }
        (self.inner, self.sink)
    }

    fn record(&mut self, now: Instant, packet: &[u8]) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let ts = self.base_wall + now.saturating_duration_since(self.base_instant);
        let incl = packet.len().min(SNAPLEN as usize);
        let mut rec = Vec::with_capacity(16 + incl);
        rec.extend_from_slice(&(ts.as_secs() as u32).to_ne_bytes());
        rec.extend_from_slice(&ts.subsec_micros().to_ne_bytes());
        rec.extend_from_slice(&(incl as u32).to_ne_bytes());
        rec.extend_from_slice(&(packet.len() as u32).to_ne_bytes());
        rec.extend_from_slice(&packet[..incl]);
        if let Err(e) = sink.write_all(&rec).and_then(|()| sink.flush()) {
            tracing::warn!(error = %e, "pcap trace write failed; tracing stopped");
            self.sink = None;
        }
    }
}

impl<D: Device, W: Write> Device for Pcap<D, W> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let got = self.inner.recv(now, buf)?;
        if let Some(n) = got {
            self.record(now, &buf[..n]);
        }
        Ok(got)
    }

    fn send(&mut self, now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()> {
        if self.sink.is_some() {
            self.record(now, &gather(packet));
        }
        self.inner.send(now, packet)
    }

    fn readable_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.readable_fd()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Memory;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn header_and_records_parse_back() {
        let t0 = Instant::now();
        let (engine_end, mut kernel_end) = Memory::pair(8);
        let mut dev = Pcap::new(engine_end, Vec::new(), t0).unwrap();
        // A minimal IPv4 header's first bytes stand in for packets: content is opaque here.
        kernel_end
            .send(t0, &[IoSlice::new(&[0x45, 0, 0, 20])])
            .unwrap();
        let mut buf = [0u8; 64];
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(dev.recv(later, &mut buf).unwrap(), Some(4));
        dev.send(later, &[IoSlice::new(&[0x60, 0]), IoSlice::new(&[1, 2, 3])])
            .unwrap();
        let (_, sink) = dev.into_parts();
        let file = sink.unwrap();

        assert_eq!(file.len(), 24 + (16 + 4) + (16 + 5));
        assert_eq!(u32_at(&file, 0), 0xa1b2_c3d4);
        assert_eq!(u16::from_ne_bytes([file[4], file[5]]), 2);
        assert_eq!(u16::from_ne_bytes([file[6], file[7]]), 4);
        assert_eq!(u32_at(&file, 16), 65535);
        assert_eq!(u32_at(&file, 20), LINKTYPE_RAW);

        let r1 = &file[24..];
        let (s1, us1) = (u32_at(r1, 0), u32_at(r1, 4));
        assert_eq!((u32_at(r1, 8), u32_at(r1, 12)), (4, 4));
        assert_eq!(&r1[16..20], &[0x45, 0, 0, 20]);
        assert!(us1 < 1_000_000);
        // Wall-clock timestamps, near now.
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!((wall.as_secs() as i64 - s1 as i64).abs() < 10);

        let r2 = &r1[20..];
        assert_eq!((u32_at(r2, 8), u32_at(r2, 12)), (5, 5));
        assert_eq!(&r2[16..21], &[0x60, 0, 1, 2, 3]);
        // The packet went through unchanged.
        assert_eq!(kernel_end.recv(later, &mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], &[0x60, 0, 1, 2, 3]);
    }

    #[test]
    fn failed_sink_stops_tracing_not_packets() {
        struct Broken(usize);
        impl Write for Broken {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let t0 = Instant::now();
        let (engine_end, mut kernel_end) = Memory::pair(8);
        let mut dev = Pcap::new(engine_end, Broken(1), t0).unwrap();
        dev.send(t0, &[IoSlice::new(b"x")]).unwrap();
        dev.send(t0, &[IoSlice::new(b"y")]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(kernel_end.recv(t0, &mut buf).unwrap(), Some(1));
        assert_eq!(kernel_end.recv(t0, &mut buf).unwrap(), Some(1));
        assert!(dev.into_parts().1.is_none());
    }
}
