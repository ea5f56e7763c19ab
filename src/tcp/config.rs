//! Configuration of the TCP state machine: listening endpoints, limits, timers.
//!
//! Every limit here bounds memory or time spent on a peer; the defaults suit a host-local
//! metadata service behind a 65535-MTU TUN device.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Tunables of [`super::ConnTable`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Endpoints that accept connections. An unspecified address (0.0.0.0 or ::) matches every
    /// local address of its family on that port.
    pub listen: HashSet<SocketAddr>,
    /// MTU of the device; our MSS is this minus 40 (IPv4) or 60 (IPv6) (RFC 9293 3.7.1).
    pub mtu: u16,
    /// Receive buffer per connection (bytes): also the largest window we advertise.
    pub recv_buffer: usize,
    /// Connections in SYN-RECEIVED at once; further SYNs are dropped and counted.
    pub max_half_open: usize,
    /// Synchronized connections (all states but SYN-RECEIVED and TIME-WAIT) at once.
    pub max_established: usize,
    /// TIME-WAIT entries kept at once; beyond it a connection closes straight to CLOSED.
    pub max_time_wait: usize,
    /// RFC 6298 2.1 says 1 s; we use the minimum RTO, 200 ms, because the peer is on this host
    /// (see module docs). It times the SYN-ACK, and a client's first RTT sample after a lost
    /// SYN-ACK is this long, so it sets that client's RTO (three times it) for a long while.
    pub initial_rto: Duration,
    /// RFC 6298 2.4 says 1 s; Linux uses 200 ms, and so do we (see module docs).
    pub min_rto: Duration,
    /// The largest RTO after back-off. RFC 6298 2.5 allows a maximum "provided it is at least
    /// 60 seconds"; we use 10 s because the peer is the local kernel behind a TUN device, with
    /// no shared path to congest (see the module docs of `tcp`).
    pub max_rto: Duration,
    /// Retransmissions of one segment before the connection is aborted (RFC 1122 4.2.3.5 R2).
    pub max_retransmits: u32,
    /// SYN-ACK retransmissions before a half-open connection is dropped.
    pub max_synack_retransmits: u32,
    /// A connection with no segment from the peer for this long is closed.
    pub idle_timeout: Duration,
    /// Received bytes the app leaves unconsumed (an incomplete request) for this long after
    /// the first of them arrived close the connection. Not applied before the first byte:
    /// a new connection waits for its request under `idle_timeout`.
    pub header_timeout: Duration,
    /// How long a TIME-WAIT entry is kept (RFC 9293 says 2*MSL; see module docs).
    pub time_wait: Duration,
    /// Default IPv4 TTL / IPv6 hop limit of emitted segments.
    pub hop_limit: u8,
    /// Resets for unknown connections waiting to be sent; more are dropped and counted.
    pub max_pending_resets: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            listen: HashSet::new(),
            mtu: 65535,
            recv_buffer: 64 * 1024,
            max_half_open: 1024,
            max_established: 4096,
            max_time_wait: 4096,
            initial_rto: Duration::from_millis(200),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(10),
            // Linux's tcp_retries2. With the 200 ms initial RTO doubling up to 10 s the
            // connection is given up ~103 s after the first send (RFC 1122 4.2.3.5: R2 of at
            // least 100 s). The earlier 8 retransmissions (up to a 60 s RTO, also ~100 s)
            // aborted ~0.2% of responses at 30% loss in both directions, where a round trip
            // fails with probability 0.51 (0.51^9 ≈ 0.2%; now 0.51^16 ≈ 2e-5).
            max_retransmits: 15,
            // With the 200 ms initial RTO: SYN-ACKs at 0.2, 0.6, ... 25.4 s, given up at 51 s
            // (Linux: 5 retries from 1 s, 63 s).
            max_synack_retransmits: 7,
            idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(10),
            time_wait: Duration::from_secs(60),
            hop_limit: 64,
            max_pending_resets: 256,
        }
    }
}

impl TcpConfig {
    /// True if `local` is a listening endpoint.
    pub fn is_listening(&self, local: SocketAddr) -> bool {
        if self.listen.contains(&local) {
            return true;
        }
        let any = match local {
            SocketAddr::V4(_) => {
                SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), local.port())
            }
            SocketAddr::V6(_) => {
                SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port())
            }
        };
        self.listen.contains(&any)
    }

    /// The MSS we advertise for a connection of `local`'s family.
    pub fn mss_for(&self, local: SocketAddr) -> u16 {
        let overhead = if local.is_ipv4() { 40 } else { 60 };
        self.mtu.saturating_sub(overhead).max(536)
    }
}
