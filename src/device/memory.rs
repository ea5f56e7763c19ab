//! An in-memory device pair, for tests.
//!
//! [`Memory::pair`] returns two ends joined by two bounded FIFO queues: what one end sends, the
//! other receives, in order, unchanged. One end plays the engine's TUN, the other the kernel (a
//! test peer such as smoltcp, or a scripted test). A full queue drops the packet and counts it,
//! as the TUN's txqueue does; `send` still returns `Ok` because the sender of a real packet
//! does not learn about the drop either.
//!
//! The queues are behind `Arc<Mutex<_>>` so the two ends may live on different threads; the
//! lock is held only to push or pop one packet.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{gather, Device};

#[derive(Debug, Default)]
struct Queue {
    packets: VecDeque<Vec<u8>>,
    dropped: u64,
}

/// One end of an in-memory device pair.
#[derive(Debug)]
pub struct Memory {
    inbound: Arc<Mutex<Queue>>,
    outbound: Arc<Mutex<Queue>>,
    capacity: usize,
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic elsewhere while holding this lock leaves only whole packets in the queue, so the
    // data is still consistent: recover rather than propagate the poison.
    q.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    /// Two connected ends, each direction holding at most `capacity` packets.
    pub fn pair(capacity: usize) -> (Memory, Memory) {
        let a_to_b = Arc::new(Mutex::new(Queue::default()));
        let b_to_a = Arc::new(Mutex::new(Queue::default()));
        let a = Memory {
            inbound: b_to_a.clone(),
            outbound: a_to_b.clone(),
            capacity,
        };
        let b = Memory {
            inbound: a_to_b,
            outbound: b_to_a,
            capacity,
        };
        (a, b)
    }

    /// Packets waiting to be received by this end.
    pub fn pending(&self) -> usize {
        lock(&self.inbound).packets.len()
    }

    /// Packets this end sent that were dropped because the other end's queue was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.outbound).dropped
    }
}

impl Device for Memory {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(packet) = lock(&self.inbound).packets.pop_front() else {
            return Ok(None);
        };
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Ok(Some(n))
    }

    fn send(&mut self, _now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()> {
        let mut q = lock(&self.outbound);
        if q.packets.len() >= self.capacity {
            q.dropped += 1;
        } else {
            q.packets.push_back(gather(packet));
        }
        Ok(())
    }

    fn readable_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_cross_in_order_and_unchanged() {
        let now = Instant::now();
        let (mut a, mut b) = Memory::pair(8);
        a.send(now, &[IoSlice::new(b"hdr"), IoSlice::new(b"-payload")])
            .unwrap();
        a.send(now, &[IoSlice::new(b"second")]).unwrap();
        assert_eq!(b.pending(), 2);
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(11));
        assert_eq!(&buf[..11], b"hdr-payload");
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(6));
        assert_eq!(&buf[..6], b"second");
        assert_eq!(b.recv(now, &mut buf).unwrap(), None);
        // Nothing leaked into the other direction.
        assert_eq!(a.recv(now, &mut buf).unwrap(), None);
        assert!(a.readable_fd().is_none() && a.poll_at().is_none());
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let now = Instant::now();
        let (mut a, mut b) = Memory::pair(2);
        for i in 0..5u8 {
            a.send(now, &[IoSlice::new(&[i])]).unwrap();
        }
        assert_eq!(a.dropped(), 3);
        let mut buf = [0u8; 4];
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(1));
        assert_eq!(buf[0], 0);
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(1));
        assert_eq!(buf[0], 1);
        assert_eq!(b.recv(now, &mut buf).unwrap(), None);
    }

    #[test]
    fn short_buffer_truncates() {
        let now = Instant::now();
        let (mut a, mut b) = Memory::pair(2);
        b.send(now, &[IoSlice::new(b"abcdef")]).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(a.recv(now, &mut buf).unwrap(), Some(3));
        assert_eq!(&buf, b"abc");
    }
}
