//! Initial sequence numbers (RFC 6528) and timestamp offsets (RFC 7323 5.4).
//!
//! `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)` where F is SipHash-1-3
//! keyed with a 128-bit secret and M is the 4 µs clock of RFC 9293 3.4.1 taken from the
//! passed-in time. The half-open entry keeps its ISN, so a retransmitted SYN gets the same
//! SYN-ACK; M makes a later incarnation of the same 4-tuple (reuse of a TIME-WAIT pair) start
//! above the old sequence space, which RFC 1122 4.2.2.13 relies on.

use std::hash::Hasher;
use std::net::SocketAddr;

use siphasher::sip::SipHasher13;

use super::{seq::Seq, Instant};

/// Derives ISNs and per-connection timestamp offsets from a secret key.
#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    pub fn new(key: [u8; 16]) -> Self {
        IsnGenerator { key }
    }

    fn hash(&self, local: SocketAddr, remote: SocketAddr) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.key);
        for addr in [local, remote] {
            match addr {
                SocketAddr::V4(a) => h.write(&a.ip().octets()),
                SocketAddr::V6(a) => h.write(&a.ip().octets()),
            }
            h.write_u16(addr.port());
        }
        h.finish()
    }

    /// The ISN for a connection opened at `now`, and the offset added to our timestamp clock
    /// (RFC 7323 5.4 recommends a per-connection random offset).
    pub fn generate(&self, local: SocketAddr, remote: SocketAddr, now: Instant) -> (Seq, u32) {
        let f = self.hash(local, remote);
        let m = (now.as_micros() / 4) as u32;
        (Seq((f as u32).wrapping_add(m)), (f >> 32) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_clocked() {
        let l: SocketAddr = "169.254.169.254:80".parse().expect("addr");
        let r: SocketAddr = "169.254.0.2:40000".parse().expect("addr");
        let g = IsnGenerator::new([7; 16]);
        let t = Instant::from_secs(5);
        assert_eq!(g.generate(l, r, t), g.generate(l, r, t));
        // 4 µs clock: one second later the ISN moved forward by 250,000.
        let (a, _) = g.generate(l, r, t);
        let (b, _) = g.generate(l, r, t + std::time::Duration::from_secs(1));
        assert_eq!(b.diff(a), 250_000);
        let other: SocketAddr = "169.254.0.2:40001".parse().expect("addr");
        assert_ne!(g.generate(l, other, t).0, a);
        assert_ne!(IsnGenerator::new([8; 16]).generate(l, r, t).0, a);
    }
}
