//! Server-side TCP as a pure state machine: no I/O, no clock reads, no tasks.
//!
//! Read first: RFC 9293 (TCP, obsoletes 793; section 3.10 is the event processing this code
//! follows step by step), RFC 1122 section 4.2 (host requirements), RFC 5681 (congestion
//! control), RFC 6298 (retransmission timer), RFC 6528 (ISNs), RFC 7323 (window scale,
//! timestamps, PAWS), RFC 5961 (blind in-window attacks: challenge ACKs).
//!
//! # Shape
//!
//! [`ConnTable`] is driven by the engine (quinn-proto style): `handle_segment(now, seg)` and
//! `handle_timeout(now)` take inputs, `poll_transmit(now, out)` yields every segment to send,
//! `poll_at()` says when to call `handle_timeout` next. Time is an [`Instant`] passed in.
//! Segments in and out are [`crate::wire`] types; a [`Transmit`] is a header slice plus a
//! payload slice that the engine writes with one writev: a response chunk queued with
//! [`ConnTable::send`] goes out by reference with its precomputed checksum sum whenever one
//! segment carries exactly that chunk (the common case: one pre-serialised response under
//! 64 KiB to a peer with MSS 65495).
//!
//! # Decisions (and where they deviate from the RFCs)
//!
//! - **Passive open only.** States carry RFC names; LISTEN is the table itself (a set of
//!   endpoints in [`TcpConfig::listen`]), CLOSED is absence from it.
//! - **SACK is not offered.** The SYN-ACK never carries SACK-permitted (RFC 2018 makes SACK
//!   optional). Responses are one or a few segments on a lossless local path; recovery by
//!   cumulative ACK and RTO is enough, and there is no scoreboard to keep.
//! - **Out-of-order segments are dropped and answered with a duplicate ACK**; no reassembly
//!   queue. RFC 9293 3.10.7.4 allows it ("segments with higher beginning sequence numbers MAY
//!   be held for later processing"): MAY, not MUST. Requests are small, so the cost is a
//!   client retransmission in the rare reordering case, and memory stays bounded.
//! - **ACK policy: no delayed-ACK timer; ACKs ride on responses.** `handle_segment` never
//!   emits. The engine calls `poll_transmit` after the app had its chance to queue a response,
//!   so the ACK of a request is piggybacked on it; if the app queued nothing, that same
//!   `poll_transmit` sends a pure ACK. RFC 1122 4.2.3.2 allows delaying an ACK up to 0.5 s; we
//!   delay it only until the app has run, which is strictly sooner.
//! - **No Nagle.** RFC 1122 4.2.3.4 says a TCP SHOULD implement Nagle; a request/response server
//!   that writes whole responses gains nothing from it and would pay an RTT.
//! - **Retransmission: RFC 6298 with min RTO 200 ms** (Linux's value). RFC 6298 2.4: "Whenever
//!   RTO is computed, if it is less than 1 second, then the RTO SHOULD be rounded up to 1
//!   second." The peer is on the same host; 1 s would make every loss cost a second.
//!   For the same reason the initial RTO (RFC 6298 2.1: 1 s) is 200 ms too. It matters more
//!   than it looks: it times the SYN-ACK, so after a lost SYN-ACK the client's first RTT
//!   sample is the initial RTO, and its RTO becomes three times that (2.2); with 1 s the
//!   client then takes 3 s to resend each lost request, each such resend that carries an ACK
//!   of ours becomes a 3 s RTT sample for our RTO, our slow retransmissions in turn inflate
//!   the client's samples, and a few more losses push both RTOs past 10 s (seen in the
//!   fault soak as a request unanswered for 30 s).
//!   Go-back-N from SND.UNA on RTO, exponential backoff, abort with RST after
//!   [`TcpConfig::max_retransmits`] (15, Linux's `tcp_retries2`). The back-off stops at a
//!   10 s RTO, where RFC 6298 2.5 allows a maximum only "provided it is at least 60 seconds":
//!   that floor protects shared Internet paths from retransmission storms, and our peer is
//!   the local kernel. With it a lossy path costs seconds per loss, not minutes (at 30% loss
//!   in both directions a 60 s cap left requests unanswered for over two minutes), and 15
//!   retransmissions still span ~103 s before the connection is given up (RFC 1122 4.2.3.5). No fast retransmit (RFC 5681 3.2): see "not done" below.
//! - **Zero window: persist timer** (RFC 9293 3.8.6.1) with one-byte probes and backoff; a
//!   peer that keeps acknowledging probes is never given up on (RFC 1122 4.2.2.17), but the
//!   idle timeout still applies to it.
//! - **Server-initiated close, bounded TIME-WAIT.** The server closes first on
//!   `Connection: close`, so TIME-WAIT lands here. Entries are kept for
//!   [`TcpConfig::time_wait`] (RFC 9293 3.3.2 says 2*MSL) up to [`TcpConfig::max_time_wait`];
//!   beyond that a connection goes straight to CLOSED (counted as `time_wait_skipped`). What
//!   this gives up: a retransmitted FIN from the peer then gets a RST instead of an ACK, which
//!   the peer's LAST-ACK treats as the end of the connection anyway. Old duplicates cannot
//!   confuse a new incarnation because we echo timestamps (PAWS on the client) and our ISN
//!   moves with a 4 µs clock. A SYN for a pair in TIME-WAIT reopens it (RFC 6191 with
//!   timestamps, RFC 1122 4.2.2.13 without).
//! - **RFC 5961**: RST must match RCV.NXT exactly to reset; an in-window RST or any SYN in a
//!   synchronized state gets a challenge ACK; ACKs outside [SND.UNA - MAX.SND.WND, SND.NXT]
//!   are dropped with an ACK. Challenge ACKs are not rate-limited separately (RFC 5961 7
//!   "SHOULD"): at most one ACK per connection per `poll_transmit` goes out anyway.
//! - **Illegal flag combinations**: SYN+FIN and SYN+RST are dropped in every state and
//!   counted, before the connection is looked up. A segment without SYN or ACK (null,
//!   FIN-only, PSH/URG-only) is dropped without a reply in LISTEN and in synchronized states
//!   (RFC 9293 3.10.7.2 and 3.10.7.4 "if the ACK bit is off, drop the segment").
//! - **Idle and header timeouts.** A connection that sends nothing for
//!   [`TcpConfig::idle_timeout`], or holds received bytes the app has not consumed (an
//!   incomplete request) for [`TcpConfig::header_timeout`] after the first of them arrived, is
//!   closed with FIN if it is quiet, or reset if it has data queued or is already closing.
//!   The idle timer does not run while data or a FIN of ours is unacknowledged: then the
//!   retransmission timer and [`TcpConfig::max_retransmits`] decide (RFC 1122 4.2.3.5), so a
//!   live peer whose ACKs are being lost is not cut off after the idle timeout.
//!   The header timer never runs before the first request byte: a fresh connection waits for
//!   it under the idle timeout, as `serve` does. A shorter wait cuts off live clients whose
//!   handshake met loss: one lost SYN-ACK gives the client an RTT sample of ~1 s, hence an
//!   RTO of ~3 s (RFC 6298 2.2), and its request then leaves at 0, 3, 9 and 21 s.
//! - **Bounded everything.** Half-open and established counts are capped (a full table drops
//!   the SYN, counted); the receive buffer per connection is [`TcpConfig::recv_buffer`] and is
//!   the advertised window; pending resets are capped. Sending is bounded by the app.
//!
//! Not done: fast retransmit/recovery, SACK, keep-alive probes (the idle timeout replaces
//! them), urgent data (ignored), ECN, TCP Fast Open, MSS clamping by ICMP (PMTUD).

mod config;
mod connection;
mod counters;
mod isn;
mod seq;
mod table;
#[cfg(test)]
mod tests;
mod time;
mod timer;

pub use config::TcpConfig;
pub use counters::Counters;
pub use seq::Seq;
pub use table::{ConnId, ConnTable, SendError};
pub use time::Instant;

/// TCP connection states, with their RFC 9293 names (LISTEN is the table, CLOSED is absence;
/// `Closed` here is a connection about to leave the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
    Closed,
}

impl State {
    /// Past the handshake (RFC 9293 "synchronized states").
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::SynReceived | State::Closed)
    }
}

/// One segment to write: `header` (IP + TCP, checksummed over the payload) followed by
/// `payload`, which borrows the queued response bytes (or a scratch copy when a segment spans
/// several chunks). Write both with one writev.
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    pub header: &'a [u8],
    pub payload: &'a [u8],
}
