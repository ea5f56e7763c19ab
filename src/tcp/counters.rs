//! Counters of everything the state machine drops, resets or retransmits, by reason.
//!
//! A plain struct of `u64`s: the engine reads it and exports it; nothing here allocates.

/// Event counts since the table was created. Field names are metric names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// SYNs that created a half-open connection.
    pub connections_accepted: u64,
    /// Handshakes completed.
    pub connections_established: u64,
    /// Connections that left the table (any reason).
    pub connections_closed: u64,
    /// SYNs dropped because the half-open table was full.
    pub syn_dropped_half_open_full: u64,
    /// SYNs dropped because the established table was full.
    pub syn_dropped_table_full: u64,
    /// Resets sent for segments to an endpoint that does not listen.
    pub rst_sent_no_listener: u64,
    /// Resets sent for non-SYN segments to a listening endpoint with no connection.
    pub rst_sent_no_connection: u64,
    /// Resets sent for unacceptable ACKs in SYN-RECEIVED (RFC 9293 3.10.7.4).
    pub rst_sent_bad_ack: u64,
    /// Resets sent when we abort (retransmission limit, timeouts while closing, app abort).
    pub rst_sent_abort: u64,
    /// Resets not sent because the pending-reset queue was full.
    pub rst_dropped_queue_full: u64,
    /// Resets received that closed a connection.
    pub rst_received: u64,
    /// Resets received that were ignored (out of window) or answered by a challenge ACK.
    pub rst_ignored: u64,
    /// RFC 5961 challenge ACKs sent (in-window RST not exact, SYN in a synchronized state).
    pub challenge_acks: u64,
    /// Segments that failed the sequence acceptability test (answered with an ACK).
    pub unacceptable_segments: u64,
    /// Segments dropped by PAWS (RFC 7323 5).
    pub paws_dropped: u64,
    /// Segments beyond RCV.NXT dropped (out-of-order policy: drop and dup-ACK).
    pub out_of_order_dropped: u64,
    /// Segments whose data had all been received before.
    pub duplicate_segments: u64,
    /// Received bytes dropped because the receive buffer was full.
    pub recv_bytes_dropped: u64,
    /// ACKs for data we never sent (RFC 5961 5.2), answered with an ACK.
    pub bad_acks: u64,
    /// Segments without ACK in a synchronized state, or without SYN or ACK to a listening
    /// endpoint (null, FIN-only, PSH/URG-only probes), dropped.
    pub no_ack_dropped: u64,
    /// Segments with SYN and FIN, or SYN and RST, dropped in every state (no TCP sends them;
    /// scanners and fingerprinting tools do).
    pub illegal_flags_dropped: u64,
    /// Segments retransmitted (SYN-ACK, data, FIN) after an RTO.
    pub retransmissions: u64,
    /// RTO expirations.
    pub rto_expired: u64,
    /// Connections aborted at the retransmission limit.
    pub retransmit_give_ups: u64,
    /// Half-open connections dropped at the SYN-ACK retransmission limit.
    pub synack_give_ups: u64,
    /// Zero-window probes sent.
    pub persist_probes: u64,
    /// Connections closed for idleness.
    pub idle_timeouts: u64,
    /// Connections closed for sending no request in time.
    pub header_timeouts: u64,
    /// Connections that skipped TIME-WAIT because its table was full.
    pub time_wait_skipped: u64,
    /// TIME-WAIT entries replaced by a new connection (RFC 6191 / RFC 1122 4.2.2.13).
    pub time_wait_reused: u64,
    /// Segments emitted (including resets).
    pub segments_sent: u64,
    /// Segments whose payload had to be copied into the scratch buffer (several chunks).
    pub segments_copied: u64,
    /// Segments not emitted because the header did not fit (a bug if ever non-zero).
    pub emit_errors: u64,
}
