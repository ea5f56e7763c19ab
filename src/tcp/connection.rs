//! One server-side TCP connection: the RFC 9293 state machine from SYN-RECEIVED to CLOSED.
//!
//! Contract: [`Conn::handle_segment`] and [`Conn::handle_timeout`] only change state and set
//! flags; [`Conn::poll_transmit`] is the only place segments are produced. Nothing here panics
//! on any segment sequence: every slice index is bounded by a length checked just before.
//!
//! Invariants:
//! - `snd_una <= snd_nxt <= snd_max`; bytes `[snd_una, snd_max)` have been sent at least once.
//! - The send queue holds exactly the bytes `[queue_seq, queue_seq + queued)`: unacknowledged
//!   data followed by unsent data. The SYN is at `iss`, the FIN (once closed) right after the
//!   last queued byte.
//! - The right edge of the receive window (`rcv_nxt + space`) never moves left: data is only
//!   accepted into free buffer space and the app only frees space.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::{seq::Seq, Counters, Instant, State, TcpConfig, Transmit};
use crate::wire::{
    emit_segment, PartialSum, Segment, SegmentHeader, TcpFlags, TcpOptions, Timestamps,
    MAX_HEADER_LEN,
};

/// A piece of queued response data, referenced, never copied on the common path.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    data: Bytes,
    /// The sum of all of `data`, if the app precomputed it.
    sum: Option<PartialSum>,
    ttl: Option<u8>,
}

/// What a segment meant for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Nothing,
    /// New in-order bytes, or the peer's FIN, are readable.
    Readable,
    /// A SYN that may reopen this TIME-WAIT pair (RFC 6191): replace the entry.
    Reopen,
    /// Answer the segment with a reset (RFC 9293 3.10.7.4, SYN-RECEIVED, bad ACK).
    SendReset,
}

/// Mutable context shared with the table.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a TcpConfig,
    pub counters: &'a mut Counters,
}

/// Scratch space for one `poll_transmit` call.
pub(crate) struct Scratch {
    pub header: [u8; MAX_HEADER_LEN],
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: State,

    // Send side (RFC 9293 3.3.1 names).
    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    snd_max: Seq,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: Seq,
    snd_wl2: Seq,
    snd_wscale: u8,
    /// The peer offered window scaling, so our SYN-ACK carries it (RFC 7323 2.2).
    wscale_ok: bool,
    queue: VecDeque<Chunk>,
    queue_seq: Seq,
    queued: usize,
    /// The app called close(): a FIN follows the queued data.
    fin_requested: bool,
    smss: usize,
    cwnd: u32,
    ssthresh: u32,

    // Receive side.
    irs: Seq,
    rcv_nxt: Seq,
    rcv_buf: Vec<u8>,
    rcv_cap: usize,
    rcv_wscale: u8,
    last_adv_wnd: usize,
    peer_fin: bool,

    // Options.
    ts_recent: Option<u32>,
    ts_offset: u32,

    // RFC 6298 state, in microseconds.
    srtt: Option<u64>,
    rttvar: u64,
    rto: u64,
    retries: u32,
    rtt_sample: Option<(Seq, Instant)>,

    // Timers.
    rto_at: Option<Instant>,
    last_activity: Instant,
    /// When in-order data last arrived (the newest byte in `rcv_buf` came then).
    rcv_data_at: Instant,
    /// Header timeout: set while `rcv_buf` holds bytes the app has not consumed (a request
    /// still incomplete), never before the first byte arrives.
    header_at: Option<Instant>,
    time_wait_at: Option<Instant>,
    /// The app holds a complete request it answers later (a parked request, a hanging GET):
    /// neither the header nor the idle timeout runs meanwhile; the app has its own deadline.
    held: bool,

    // Output requests.
    ack_pending: bool,
    probe_pending: bool,
    rst_pending: bool,

    /// Earliest deadline this connection has in the table's timer heap.
    pub scheduled: Option<Instant>,
    /// Already on the table's list of connections to transmit for.
    pub dirty: bool,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Conn {
    /// A connection in SYN-RECEIVED for the SYN `h` (LISTEN processing, RFC 9293 3.10.7.2).
    pub fn new_syn(
        h: &SegmentHeader,
        iss: Seq,
        ts_offset: u32,
        now: Instant,
        cfg: &TcpConfig,
    ) -> Conn {
        let local = h.dst;
        let opts = h.options;
        // RFC 7323 2.2/2.3: window scaling only if both sides send the option; shifts above
        // 14 are treated as 14.
        let (snd_wscale, rcv_wscale) = match opts.window_scale {
            Some(s) => (s.min(14), wscale_for(cfg.recv_buffer)),
            None => (0, 0),
        };
        let rcv_cap = if opts.window_scale.is_some() {
            cfg.recv_buffer.min(65535 << 14)
        } else {
            cfg.recv_buffer.min(65535)
        };
        // RFC 9293 3.7.1: without an MSS option assume 536 (IPv4) / 1220 (IPv6).
        let default_mss = if local.is_ipv4() { 536 } else { 1220 };
        let peer_mss = usize::from(opts.mss.unwrap_or(default_mss));
        // RFC 6691: the MSS excludes options, so the sender subtracts what it puts in each
        // segment (12 bytes of timestamps).
        let ts_len = if opts.timestamps.is_some() { 12 } else { 0 };
        let smss = peer_mss
            .min(usize::from(cfg.mss_for(local)))
            .saturating_sub(ts_len)
            .max(1);
        let irs = Seq(h.seq);
        Conn {
            local,
            remote: h.src,
            state: State::SynReceived,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            // RFC 7323 2.2: the window in a SYN is never scaled.
            snd_wnd: u32::from(h.window),
            max_snd_wnd: u32::from(h.window),
            snd_wl1: irs,
            snd_wl2: iss,
            snd_wscale,
            wscale_ok: opts.window_scale.is_some(),
            queue: VecDeque::new(),
            queue_seq: iss.plus(1),
            queued: 0,
            fin_requested: false,
            smss,
            // RFC 5681 3.1 / RFC 6928: an initial window of 10 segments.
            cwnd: (10 * smss).min(u32::MAX as usize) as u32,
            ssthresh: u32::MAX,
            irs,
            rcv_nxt: irs.plus(1),
            rcv_buf: Vec::new(),
            rcv_cap,
            rcv_wscale,
            last_adv_wnd: rcv_cap,
            peer_fin: false,
            ts_recent: opts.timestamps.map(|t| t.value),
            ts_offset,
            srtt: None,
            rttvar: 0,
            rto: micros(cfg.initial_rto),
            retries: 0,
            rtt_sample: None,
            rto_at: None,
            last_activity: now,
            rcv_data_at: now,
            header_at: None,
            time_wait_at: None,
            held: false,
            ack_pending: false,
            probe_pending: false,
            rst_pending: false,
            scheduled: None,
            dirty: false,
        }
    }

    // ---- getters -------------------------------------------------------------------------

    pub fn recv_data(&self) -> &[u8] {
        &self.rcv_buf
    }

    pub fn recv_closed(&self) -> bool {
        self.peer_fin
    }

    /// Bytes queued and not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.queued
    }

    pub fn may_send(&self) -> bool {
        matches!(
            self.state,
            State::SynReceived | State::Established | State::CloseWait
        ) && !self.fin_requested
    }

    fn rcv_space(&self) -> usize {
        self.rcv_cap.saturating_sub(self.rcv_buf.len())
    }

    fn data_end(&self) -> Seq {
        self.queue_seq.plus(self.queued)
    }

    fn fin_acked(&self) -> bool {
        self.fin_requested && self.snd_una > self.data_end()
    }

    /// The earliest instant at which [`Conn::handle_timeout`] has work.
    pub fn next_deadline(&self, cfg: &TcpConfig) -> Option<Instant> {
        // While data or a FIN of ours is unacknowledged the retransmission timer and its
        // limit govern (RFC 1122 4.2.3.5: R2 of at least 100 s); the idle timeout, shorter,
        // would cut off a live peer whose ACKs are being lost (seen at 30% loss).
        let in_flight = self.snd_una < self.snd_max;
        let idle = match self.state {
            State::SynReceived | State::TimeWait | State::Closed => None,
            _ if in_flight || self.held => None,
            _ => Some(self.last_activity + cfg.idle_timeout),
        };
        [self.rto_at, self.header_at, self.time_wait_at, idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// True once the connection can leave the table (nothing left to send either).
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && !self.rst_pending && !self.ack_pending
    }

    /// Checks the invariants of the module docs (for tests and fuzzing; read-only).
    pub fn check(&self, cfg: &TcpConfig) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{}->{}: {what}: {self:?}", self.remote, self.local));
        if !(self.snd_una <= self.snd_nxt && self.snd_nxt <= self.snd_max) {
            return fail("snd_una <= snd_nxt <= snd_max violated");
        }
        if self.queue.iter().map(|c| c.data.len()).sum::<usize>() != self.queued {
            return fail("queued differs from the chunks' length");
        }
        if self.rcv_buf.len() > self.rcv_cap || self.rcv_cap > cfg.recv_buffer {
            return fail("receive buffer over its capacity");
        }
        // Everything sent lies within the queue (plus SYN and FIN).
        let end = self.data_end().plus(usize::from(self.fin_requested));
        if self.state.is_synchronized() && self.snd_max > end {
            return fail("sent beyond the queued data and FIN");
        }
        // Something of ours in flight is always timed: else nothing would ever resend it,
        // and (the idle timer waiting for it) the connection would never leave.
        let live = self.state.is_synchronized() && self.state != State::TimeWait;
        if live && !self.dirty && self.snd_una < self.snd_max && self.rto_at.is_none() {
            return fail("unacknowledged data or FIN without a retransmission timer");
        }
        if self.snd_wscale > 14 || self.rcv_wscale > 14 {
            return fail("window scale above 14");
        }
        Ok(())
    }

    // ---- app commands --------------------------------------------------------------------

    pub fn consume(&mut self, n: usize, cfg: &TcpConfig) {
        let n = n.min(self.rcv_buf.len());
        self.rcv_buf.drain(..n);
        if self.rcv_buf.is_empty() {
            self.header_at = None;
        } else if n > 0 {
            // What is left starts the next request; its first byte came at the latest with the
            // newest data, so its time runs from there (lenient by at most one segment gap).
            self.header_at = Some(self.rcv_data_at + cfg.header_timeout);
        }
        // Window update (RFC 9293 3.8.6.2.2, receiver SWS avoidance): announce reopened space
        // once it is worth it, i.e. after a zero/small window grew by at least half a buffer or
        // one segment.
        let space = self.rcv_space();
        let step = (self.rcv_cap / 2).min(self.smss).max(1);
        if n > 0 && space >= self.last_adv_wnd + step && self.state.is_synchronized() {
            self.ack_pending = true;
        }
    }

    /// The app holds (or releases) the complete request at the start of the receive buffer
    /// (see `held`). Releasing restarts the idle clock, and the header clock when bytes are
    /// still unconsumed.
    pub fn hold(&mut self, held: bool, now: Instant, cfg: &TcpConfig) {
        self.held = held;
        if held {
            self.header_at = None;
        } else {
            self.last_activity = now;
            if !self.rcv_buf.is_empty() && self.header_at.is_none() {
                self.header_at = Some(now + cfg.header_timeout);
            }
        }
    }

    pub fn send(&mut self, data: Bytes, sum: Option<PartialSum>, ttl: Option<u8>) -> bool {
        if !self.may_send() {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        self.queued += data.len();
        self.queue.push_back(Chunk { data, sum, ttl });
        true
    }

    pub fn close(&mut self) {
        match self.state {
            // Nothing was exchanged yet: abort rather than run a FIN handshake.
            State::SynReceived => {
                self.state = State::Closed;
            }
            State::Established => {
                self.fin_requested = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_requested = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    pub fn abort(&mut self, counters: &mut Counters) {
        if self.state.is_synchronized() && self.state != State::TimeWait {
            self.rst_pending = true;
            counters.rst_sent_abort += 1;
        }
        self.state = State::Closed;
        self.ack_pending = false;
    }

    // ---- segment arrival (RFC 9293 3.10.7.4) --------------------------------------------

    pub fn handle_segment(&mut self, now: Instant, seg: &Segment<'_>, ctx: &mut Ctx<'_>) -> Input {
        let h = &seg.header;
        let flags = h.flags;
        let seq = Seq(h.seq);
        match self.state {
            State::Closed => return Input::Nothing,
            State::SynReceived => {
                if let Some(input) = self.handle_syn_received(seg, ctx) {
                    return input;
                }
            }
            State::TimeWait if flags.syn() && !flags.ack() && !flags.rst() => {
                // RFC 6191 (timestamps) / RFC 1122 4.2.2.13 (sequence numbers): a new SYN may
                // reopen a TIME-WAIT pair if it cannot be confused with the old incarnation.
                let newer = match (self.ts_recent, h.options.timestamps) {
                    (Some(recent), Some(ts)) => Seq(ts.value) > Seq(recent),
                    _ => seq > self.rcv_nxt,
                };
                if newer {
                    return Input::Reopen;
                }
            }
            _ => {}
        }

        // First: sequence number acceptability.
        let wnd = self.rcv_space();
        let acceptable = self.acceptable(seg);
        // RFC 7323 5.3 (PAWS): a segment older than TS.Recent is a duplicate from the past.
        if let (Some(recent), Some(ts)) = (self.ts_recent, h.options.timestamps) {
            if !flags.rst() && Seq(ts.value) < Seq(recent) {
                ctx.counters.paws_dropped += 1;
                self.ack_pending = true;
                return Input::Nothing;
            }
        }
        let mut drop_text = false;
        if !acceptable {
            if flags.rst() {
                ctx.counters.rst_ignored += 1;
                return Input::Nothing;
            }
            // RFC 9293 3.10.7.4: "If the RCV.WND is zero, no segments will be acceptable, but
            // special allowance should be made to accept valid ACKs": process the ACK field of
            // a segment at RCV.NXT, drop its text.
            if wnd == 0 && seq == self.rcv_nxt && flags.ack() {
                drop_text = true;
                ctx.counters.recv_bytes_dropped += seg.payload.len() as u64;
            } else {
                ctx.counters.unacceptable_segments += 1;
            }
            self.ack_pending = true;
            if !drop_text {
                return Input::Nothing;
            }
        }

        // Second: RST (RFC 5961 3.2): exact match resets, in-window gets a challenge ACK.
        if flags.rst() {
            if seq == self.rcv_nxt {
                ctx.counters.rst_received += 1;
                self.state = State::Closed;
                self.ack_pending = false;
                return Input::Readable;
            }
            ctx.counters.rst_ignored += 1;
            ctx.counters.challenge_acks += 1;
            self.ack_pending = true;
            return Input::Nothing;
        }

        // Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK.
        if flags.syn() {
            ctx.counters.challenge_acks += 1;
            self.ack_pending = true;
            return Input::Nothing;
        }

        // Fifth: ACK.
        if !flags.ack() {
            ctx.counters.no_ack_dropped += 1;
            return Input::Nothing;
        }
        if self.state == State::SynReceived {
            // `handle_syn_received` checked the ACK number is ISS + 1; it acknowledges our
            // SYN only if the SYN-ACK has gone out (a guessed ACK may arrive in the same batch
            // as the SYN, before it did).
            if Seq(h.ack) > self.snd_max {
                ctx.counters.bad_acks += 1;
                return Input::Nothing;
            }
            self.complete_handshake(ctx);
        }
        if !self.handle_ack(now, h, ctx) {
            return Input::Nothing;
        }
        self.last_activity = now;
        if self.state == State::Closed {
            return Input::Nothing;
        }
        // RFC 7323 4.3: remember the latest timestamp of an in-order segment.
        if let (Some(recent), Some(ts)) = (self.ts_recent, h.options.timestamps) {
            if seq <= self.rcv_nxt && Seq(ts.value) >= Seq(recent) {
                self.ts_recent = Some(ts.value);
            }
        }
        if drop_text {
            return Input::Nothing;
        }
        if self.state == State::TimeWait {
            // RFC 9293: the only thing that can arrive in TIME-WAIT is a retransmission of
            // the remote FIN. Acknowledge it, and restart the 2 MSL timeout.
            if flags.fin() {
                self.ack_pending = true;
                self.time_wait_at = Some(now + ctx.cfg.time_wait);
            }
            return Input::Nothing;
        }
        self.handle_text(now, seg, ctx)
    }

    /// The sequence-number test of RFC 9293 3.10.7.4 ("first, check sequence number").
    fn acceptable(&self, seg: &Segment<'_>) -> bool {
        let flags = seg.header.flags;
        let seq = Seq(seg.header.seq);
        let seg_len = seg.payload.len() + usize::from(flags.syn()) + usize::from(flags.fin());
        let wnd = self.rcv_space();
        let win_end = self.rcv_nxt.plus(wnd);
        match (seg_len, wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => seq.in_range(self.rcv_nxt, win_end),
            (_, 0) => false,
            (_, _) => {
                seq.in_range(self.rcv_nxt, win_end)
                    || seq.plus(seg_len - 1).in_range(self.rcv_nxt, win_end)
            }
        }
    }

    /// SYN-RECEIVED processing. `Some` ends processing; `None` continues with the
    /// synchronized-state steps (the handshake completed).
    fn handle_syn_received(&mut self, seg: &Segment<'_>, ctx: &mut Ctx<'_>) -> Option<Input> {
        let h = &seg.header;
        let flags = h.flags;
        let seq = Seq(h.seq);
        if flags.rst() {
            // RFC 5961 3.2 exact match; a passive open just goes away (RFC 9293: "return to
            // LISTEN").
            if seq == self.rcv_nxt {
                ctx.counters.rst_received += 1;
                self.state = State::Closed;
            } else {
                ctx.counters.rst_ignored += 1;
            }
            return Some(Input::Nothing);
        }
        if flags.syn() {
            if !flags.ack() && seq == self.irs {
                // A retransmitted SYN: our SYN-ACK was lost. Send it again, identical.
                self.snd_nxt = self.iss;
                self.rtt_sample = None;
            }
            return Some(Input::Nothing);
        }
        if !flags.ack() {
            ctx.counters.no_ack_dropped += 1;
            return Some(Input::Nothing);
        }
        if !self.acceptable(seg) {
            // RFC 9293 3.10.7.4: the sequence test comes first in SYN-RECEIVED too. Found by
            // fuzzing (tcp_state): a right ACK number on an out-of-window segment used to
            // complete the handshake while the ACK step, after the failed test, never ran,
            // leaving an ESTABLISHED connection with its SYN-ACK unacknowledged and no timer:
            // a table slot lost for good per crafted segment.
            ctx.counters.unacceptable_segments += 1;
            return Some(Input::Nothing);
        }
        if Seq(h.ack) != self.iss.plus(1) {
            ctx.counters.rst_sent_bad_ack += 1;
            return Some(Input::SendReset);
        }
        // The handshake completes in the ACK step ([`Conn::complete_handshake`]), once the
        // segment has passed every test before it (sequence, PAWS).
        None
    }

    /// SYN-RECEIVED -> ESTABLISHED, when the ACK step accepts the handshake ACK. Only here:
    /// fuzzing (tcp_state) found that completing earlier, before the PAWS test dropped the
    /// segment, left ESTABLISHED connections whose SYN-ACK was never acknowledged.
    fn complete_handshake(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Established;
        // No header timer yet: it starts with the first request byte (see `handle_text`).
        // Until then only the idle timeout applies, because a live client whose handshake
        // went through loss may legitimately take tens of seconds to get its first segment
        // here: after one lost SYN-ACK its RTT sample is ~1 s, so its RTO is ~3 s (RFC 6298
        // 2.2: SRTT + 4 * RTT/2) and its retransmissions of the request leave at 3, 9, 21 s.
        self.retries = 0;
        ctx.counters.connections_established += 1;
    }

    /// Step five of RFC 9293 3.10.7.4. Returns false if the segment is to be dropped.
    fn handle_ack(&mut self, now: Instant, h: &SegmentHeader, ctx: &mut Ctx<'_>) -> bool {
        let ack = Seq(h.ack);
        // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT]; we use the
        // highest sequence sent as SND.NXT because a retransmission may have rewound ours.
        if ack > self.snd_max || ack < Seq(self.snd_una.0.wrapping_sub(self.max_snd_wnd)) {
            ctx.counters.bad_acks += 1;
            self.ack_pending = true;
            return false;
        }
        let seq = Seq(h.seq);
        if ack > self.snd_una {
            let acked = ack.since(self.snd_una);
            // Data bytes acknowledged: the part of [snd_una, ack) inside the queue.
            let data_acked = ack.min(self.data_end()).since(self.queue_seq);
            self.pop_acked(data_acked);
            self.snd_una = ack;
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            self.retries = 0;
            if let Some((end, sent_at)) = self.rtt_sample {
                if ack >= end {
                    self.rtt_sample = None;
                    self.update_rto(micros(now.since(sent_at)), ctx.cfg);
                }
            }
            // RFC 5681 3.1: slow start below ssthresh, congestion avoidance above.
            let smss = self.smss as u32;
            if self.cwnd < self.ssthresh {
                self.cwnd = self.cwnd.saturating_add((acked as u32).min(smss));
            } else {
                self.cwnd = self
                    .cwnd
                    .saturating_add((smss.saturating_mul(smss) / self.cwnd.max(1)).max(1));
            }
            // RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it.
            self.rto_at = if self.snd_una == self.snd_max {
                None
            } else {
                Some(now + Duration::from_micros(self.rto))
            };
            if self.fin_acked() {
                match self.state {
                    State::FinWait1 => self.state = State::FinWait2,
                    State::Closing => self.enter_time_wait(now, ctx.cfg),
                    State::LastAck => self.state = State::Closed,
                    _ => {}
                }
            }
        } else if ack == self.snd_una && h.window == 0 {
            // The peer answers our zero-window probes: it is alive, keep probing
            // (RFC 1122 4.2.2.17) without counting towards the retransmission limit.
            self.retries = 0;
        }
        // RFC 9293 3.10.7.4: update the send window from the newest segment only.
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            self.snd_wnd = u32::from(h.window) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
        }
        true
    }

    fn pop_acked(&mut self, mut n: usize) {
        self.queued -= n.min(self.queued);
        self.queue_seq = self.queue_seq.plus(n);
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.data.len() <= n {
                n -= front.data.len();
                self.queue.pop_front();
            } else {
                front.data = front.data.slice(n..);
                front.sum = None;
                n = 0;
            }
        }
    }

    /// RFC 6298 2.2 / 2.3 with alpha 1/8, beta 1/4, K 4.
    fn update_rto(&mut self, r: u64, cfg: &TcpConfig) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                self.rttvar = (3 * self.rttvar + srtt.abs_diff(r)) / 4;
                self.srtt = Some((7 * srtt + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + 4 * self.rttvar).clamp(micros(cfg.min_rto), micros(cfg.max_rto));
    }

    /// Steps seven (text) and eight (FIN). Out-of-order policy: drop and dup-ACK (no
    /// reassembly queue; see the module docs of `tcp`).
    fn handle_text(&mut self, now: Instant, seg: &Segment<'_>, ctx: &mut Ctx<'_>) -> Input {
        let h = &seg.header;
        let seq = Seq(h.seq);
        let data = seg.payload;
        if data.is_empty() && !h.flags.fin() {
            // A pure ACK ahead of RCV.NXT (our view lags because data was lost) carries
            // nothing to reorder; its ACK field was already used.
            return Input::Nothing;
        }
        if seq > self.rcv_nxt {
            ctx.counters.out_of_order_dropped += 1;
            self.ack_pending = true;
            return Input::Nothing;
        }
        let mut readable = false;
        let skip = self.rcv_nxt.since(seq);
        let new = data.get(skip..).unwrap_or(&[]);
        if !data.is_empty() && new.is_empty() {
            ctx.counters.duplicate_segments += 1;
            self.ack_pending = true;
        }
        let receiving = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if receiving && !new.is_empty() {
            let take = new.len().min(self.rcv_space());
            if take < new.len() {
                ctx.counters.recv_bytes_dropped += (new.len() - take) as u64;
            }
            if take > 0 {
                if self.rcv_buf.is_empty() && !self.held {
                    // The first byte of a request: it must be complete (consumed by the app)
                    // within the header timeout.
                    self.header_at = Some(now + ctx.cfg.header_timeout);
                }
                self.rcv_buf.extend_from_slice(&new[..take]);
                self.rcv_nxt = self.rcv_nxt.plus(take);
                self.rcv_data_at = now;
                readable = true;
            }
            self.ack_pending = true;
        }
        if h.flags.fin() {
            let fin_seq = seq.plus(data.len());
            if !self.peer_fin && fin_seq == self.rcv_nxt {
                self.rcv_nxt = self.rcv_nxt.plus(1);
                self.peer_fin = true;
                self.header_at = None;
                readable = true;
                match self.state {
                    State::Established => self.state = State::CloseWait,
                    State::FinWait1 if self.fin_acked() => self.enter_time_wait(now, ctx.cfg),
                    State::FinWait1 => self.state = State::Closing,
                    State::FinWait2 => self.enter_time_wait(now, ctx.cfg),
                    _ => {}
                }
            }
            // Also re-acknowledges a retransmitted FIN.
            self.ack_pending = true;
        }
        if readable {
            Input::Readable
        } else {
            Input::Nothing
        }
    }

    fn enter_time_wait(&mut self, now: Instant, cfg: &TcpConfig) {
        self.state = State::TimeWait;
        self.time_wait_at = Some(now + cfg.time_wait);
        self.rto_at = None;
        self.header_at = None;
        self.queue = VecDeque::new();
        self.rcv_buf = Vec::new();
    }

    /// TIME-WAIT entry refused by the table (full): close now, still ACK the FIN.
    pub fn skip_time_wait(&mut self) {
        self.state = State::Closed;
        self.time_wait_at = None;
    }

    // ---- timers --------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.state == State::Closed {
            return;
        }
        if self.time_wait_at.is_some_and(|t| t <= now) {
            self.state = State::Closed;
            self.time_wait_at = None;
            return;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.on_rto(ctx);
            if self.state == State::Closed {
                return;
            }
        }
        if self.header_at.is_some_and(|t| t <= now) {
            self.header_at = None;
            ctx.counters.header_timeouts += 1;
            self.close_for_timeout(now, ctx);
        } else if self.next_deadline(ctx.cfg).is_some_and(|t| t <= now)
            && self.state != State::SynReceived
        {
            ctx.counters.idle_timeouts += 1;
            self.close_for_timeout(now, ctx);
        }
    }

    /// Idle and header timeouts: a quiet connection is closed gracefully (FIN); one that is
    /// already closing or has unacknowledged data is aborted (RST).
    fn close_for_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let quiet = matches!(self.state, State::Established | State::CloseWait) && self.queued == 0;
        if quiet {
            self.close();
            self.last_activity = now;
        } else {
            self.abort(ctx.counters);
        }
    }

    fn on_rto(&mut self, ctx: &mut Ctx<'_>) {
        let in_flight = self.snd_max.since(self.snd_una);
        let unsent = self.snd_nxt < self.data_end();
        if in_flight == 0 {
            if unsent && self.snd_wnd == 0 {
                // Persist timer (RFC 9293 3.8.6.1): probe the zero window with one byte.
                self.probe_pending = true;
                ctx.counters.persist_probes += 1;
                self.retries += 1;
                self.back_off(ctx.cfg);
                if self.retries > ctx.cfg.max_retransmits {
                    ctx.counters.retransmit_give_ups += 1;
                    self.abort(ctx.counters);
                }
            }
            return;
        }
        ctx.counters.rto_expired += 1;
        self.retries += 1;
        let limit = if self.state == State::SynReceived {
            ctx.cfg.max_synack_retransmits
        } else {
            ctx.cfg.max_retransmits
        };
        if self.retries > limit {
            if self.state == State::SynReceived {
                ctx.counters.synack_give_ups += 1;
                self.state = State::Closed;
            } else {
                ctx.counters.retransmit_give_ups += 1;
                self.abort(ctx.counters);
            }
            return;
        }
        // RFC 6298 5.5: back off; RFC 5681 3.1 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS),
        // cwnd = 1 segment; go back to SND.UNA (no SACK scoreboard to be smarter with).
        self.back_off(ctx.cfg);
        let smss = self.smss as u32;
        self.ssthresh = (in_flight as u32 / 2).max(2 * smss);
        self.cwnd = smss;
        self.snd_nxt = self.snd_una;
        self.rtt_sample = None; // Karn: never time a retransmitted segment.
        if self.snd_wnd == 0 {
            // The lost segment was a zero-window probe: probe again.
            self.probe_pending = true;
            ctx.counters.persist_probes += 1;
        }
    }

    fn back_off(&mut self, cfg: &TcpConfig) {
        self.rto = (self.rto.saturating_mul(2)).min(micros(cfg.max_rto));
    }

    // ---- output --------------------------------------------------------------------------

    /// The header of our next segment; records the window it advertises.
    fn header(
        &mut self,
        now: Instant,
        flags: TcpFlags,
        seq: Seq,
        ttl: Option<u8>,
        cfg: &TcpConfig,
    ) -> SegmentHeader {
        let space = self.rcv_space();
        self.last_adv_wnd = space;
        let window = if flags.syn() {
            space.min(65535) as u16
        } else {
            (space >> self.rcv_wscale).min(65535) as u16
        };
        SegmentHeader {
            src: self.local,
            dst: self.remote,
            seq: seq.0,
            ack: if flags.ack() { self.rcv_nxt.0 } else { 0 },
            flags,
            window,
            options: TcpOptions {
                timestamps: self.ts_recent.map(|echo| Timestamps {
                    value: (now.as_millis() as u32).wrapping_add(self.ts_offset),
                    echo,
                }),
                ..TcpOptions::default()
            },
            hop_limit: ttl.unwrap_or(cfg.hop_limit),
        }
    }

    fn emit(
        header: &SegmentHeader,
        payload: &[u8],
        sum: PartialSum,
        hdr: &mut [u8; MAX_HEADER_LEN],
        counters: &mut Counters,
        out: &mut dyn FnMut(Transmit<'_>),
    ) {
        match emit_segment(header, payload.len(), sum, hdr) {
            Ok(n) => {
                counters.segments_sent += 1;
                out(Transmit {
                    header: &hdr[..n],
                    payload,
                });
            }
            Err(_) => counters.emit_errors += 1,
        }
    }

    /// Emits a segment without payload (SYN-ACK, pure ACK, FIN, RST).
    fn emit_control(
        header: &SegmentHeader,
        hdr: &mut [u8; MAX_HEADER_LEN],
        counters: &mut Counters,
        out: &mut dyn FnMut(Transmit<'_>),
    ) {
        Self::emit(header, &[], PartialSum::default(), hdr, counters, out);
    }

    fn note_sent(&mut self, now: Instant, start: Seq, end: Seq, ctx: &mut Ctx<'_>) {
        if start < self.snd_max {
            ctx.counters.retransmissions += 1;
        } else if self.rtt_sample.is_none() {
            self.rtt_sample = Some((end, now));
        }
        self.snd_nxt = end;
        if end > self.snd_max {
            self.snd_max = end;
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + Duration::from_micros(self.rto));
        }
        self.ack_pending = false;
    }

    /// Emits everything this connection has to send now: RST, SYN-ACK, data (within the
    /// peer's window and the congestion window), FIN, or a pure ACK.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        scratch: &mut Scratch,
        out: &mut dyn FnMut(Transmit<'_>),
    ) {
        let cfg = ctx.cfg;
        if self.rst_pending {
            self.rst_pending = false;
            let h = self.header(now, TcpFlags::RST | TcpFlags::ACK, self.snd_nxt, None, cfg);
            Self::emit_control(&h, &mut scratch.header, ctx.counters, out);
            return;
        }
        if self.state == State::SynReceived {
            // Nothing but the SYN-ACK is sent in SYN-RECEIVED; an ACK asked for by a dropped
            // segment is not owed (and must not keep a given-up connection in the table).
            self.ack_pending = false;
            if self.snd_nxt == self.iss {
                let mut h = self.header(now, TcpFlags::SYN | TcpFlags::ACK, self.iss, None, cfg);
                // SACK-permitted is never offered: see the module docs.
                h.options.mss = Some(cfg.mss_for(self.local));
                if self.wscale_ok {
                    h.options.window_scale = Some(self.rcv_wscale);
                }
                self.note_sent(now, self.iss, self.iss.plus(1), ctx);
                Self::emit_control(&h, &mut scratch.header, ctx.counters, out);
            }
            return;
        }
        if self.state.is_synchronized() && self.state != State::TimeWait {
            self.transmit_data(now, ctx, scratch, out);
        }
        if self.ack_pending {
            self.ack_pending = false;
            let h = self.header(now, TcpFlags::ACK, self.snd_nxt, None, cfg);
            Self::emit_control(&h, &mut scratch.header, ctx.counters, out);
        }
        // Arm the persist timer when the window is shut and nothing is in flight.
        if self.rto_at.is_none() && self.snd_nxt < self.data_end() && self.snd_una == self.snd_max {
            self.rto_at = Some(now + Duration::from_micros(self.rto));
        }
    }

    fn transmit_data(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        scratch: &mut Scratch,
        out: &mut dyn FnMut(Transmit<'_>),
    ) {
        loop {
            let data_end = self.data_end();
            let fin_after_data = self.fin_requested && !self.fin_acked();
            if self.snd_nxt < data_end {
                let limit = self.snd_una.plus(self.snd_wnd.min(self.cwnd) as usize);
                let mut room = limit.since(self.snd_nxt);
                if room == 0 {
                    if !self.probe_pending {
                        return;
                    }
                    room = 1;
                }
                self.probe_pending = false;
                let off = self.snd_nxt.since(self.queue_seq);
                let Some((len, ttl)) = self.segment_extent(off, room) else {
                    return;
                };
                let start = self.snd_nxt;
                let end_data = start.plus(len);
                let fin = fin_after_data && end_data == data_end;
                let mut flags = TcpFlags::ACK;
                if end_data == data_end {
                    flags = flags | TcpFlags::PSH;
                }
                if fin {
                    flags = flags | TcpFlags::FIN;
                }
                let h = self.header(now, flags, start, ttl, ctx.cfg);
                self.note_sent(now, start, end_data.plus(usize::from(fin)), ctx);
                let (payload, sum) = self.payload(off, len, scratch, ctx.counters);
                Self::emit(
                    &h,
                    payload.unwrap_or(&scratch.payload),
                    sum,
                    &mut scratch.header,
                    ctx.counters,
                    out,
                );
                continue;
            }
            if fin_after_data && self.snd_nxt == data_end {
                // A FIN takes no window space the peer could refuse; send it even into a zero
                // window (the peer ACKs what it can).
                let h = self.header(now, TcpFlags::FIN | TcpFlags::ACK, data_end, None, ctx.cfg);
                self.note_sent(now, data_end, data_end.plus(1), ctx);
                Self::emit_control(&h, &mut scratch.header, ctx.counters, out);
            }
            return;
        }
    }

    /// Length and TTL of the next segment starting at queue offset `off`, with at most `room`
    /// bytes: bounded by the MSS, and never mixing chunks of different TTLs (so an AWS
    /// hop-limited response keeps its TTL exactly).
    fn segment_extent(&self, off: usize, room: usize) -> Option<(usize, Option<u8>)> {
        let max = room.min(self.smss);
        let mut pos = 0;
        let mut len = 0;
        let mut ttl = None;
        for c in &self.queue {
            let c_end = pos + c.data.len();
            if c_end <= off {
                pos = c_end;
                continue;
            }
            if len == 0 {
                ttl = c.ttl;
            } else if c.ttl != ttl {
                break;
            }
            let from = off.max(pos) - pos;
            len += c.data.len() - from;
            pos = c_end;
            if len >= max {
                break;
            }
        }
        let len = len.min(max);
        (len > 0).then_some((len, ttl))
    }

    /// The payload `[off, off + len)` of the queue: a slice of one chunk (zero copy, with the
    /// precomputed sum if it is the whole chunk), or else copied into `scratch` (returns None).
    fn payload<'a>(
        &'a self,
        off: usize,
        len: usize,
        scratch: &mut Scratch,
        counters: &mut Counters,
    ) -> (Option<&'a [u8]>, PartialSum) {
        let mut pos = 0;
        for c in &self.queue {
            let c_end = pos + c.data.len();
            if c_end <= off {
                pos = c_end;
                continue;
            }
            let from = off - pos;
            if from + len <= c.data.len() {
                let slice = &c.data[from..from + len];
                let sum = match c.sum {
                    Some(s) if from == 0 && len == c.data.len() => s,
                    _ => PartialSum::of(slice),
                };
                return (Some(slice), sum);
            }
            break;
        }
        counters.segments_copied += 1;
        scratch.payload.clear();
        let mut pos = 0;
        for c in &self.queue {
            let c_end = pos + c.data.len();
            if c_end > off && pos < off + len {
                let from = off.max(pos) - pos;
                let to = (off + len).min(c_end) - pos;
                scratch.payload.extend_from_slice(&c.data[from..to]);
            }
            pos = c_end;
        }
        (None, PartialSum::of(&scratch.payload))
    }
}

/// The smallest window shift that lets `buf` be advertised in 16 bits (RFC 7323 2.3).
fn wscale_for(buf: usize) -> u8 {
    let mut shift = 0;
    while shift < 14 && (buf >> shift) > 65535 {
        shift += 1;
    }
    shift
}
