//! The connection table: demultiplexing by 4-tuple, LISTEN processing, reset generation,
//! limits, timers and the transmit queue. This is the type the engine drives.
//!
//! Contract: `handle_*` methods never emit; [`ConnTable::poll_transmit`] emits everything
//! pending (resets for unknown connections first, then every connection touched since the last
//! call). Per segment the work is one hash lookup plus the state machine; per `poll_transmit`
//! only touched connections are visited.
//!
//! Invariants: `by_tuple` maps exactly the occupied slots; the class counts (`half_open`,
//! `established`, `time_wait`) match the states of the occupied slots; a [`ConnId`] names one
//! incarnation of a slot (its generation), so a stale id never reaches a newer connection.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::connection::{Conn, Ctx, Input, Scratch};
use super::isn::IsnGenerator;
use super::timer::TimerQueue;
use super::{Counters, Instant, State, TcpConfig, Transmit};
use crate::wire::{
    emit_segment, PartialSum, Segment, SegmentHeader, TcpFlags, TcpOptions, MAX_HEADER_LEN,
};

/// Names one connection (one incarnation of a table slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

/// Why [`ConnTable::send`] refused data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such connection")]
    UnknownConnection,
    #[error("connection closed for sending")]
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    HalfOpen,
    Established,
    TimeWait,
    Closed,
}

fn class(s: State) -> Class {
    match s {
        State::SynReceived => Class::HalfOpen,
        State::TimeWait => Class::TimeWait,
        State::Closed => Class::Closed,
        _ => Class::Established,
    }
}

struct Entry<A> {
    conn: Conn,
    app: A,
}

struct Slot<A> {
    generation: u32,
    entry: Option<Entry<A>>,
}

/// All connections of one engine (one TUN queue). `A` is per-connection application state
/// (e.g. the HTTP exchange), created with `Default` on accept and dropped on removal.
pub struct ConnTable<A = ()> {
    cfg: TcpConfig,
    isn: IsnGenerator,
    slots: Vec<Slot<A>>,
    free: Vec<u32>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), u32>,
    timers: TimerQueue,
    due: Vec<(Instant, u32, u32)>,
    dirty: Vec<u32>,
    resets: VecDeque<SegmentHeader>,
    counters: Counters,
    half_open: usize,
    established: usize,
    time_wait: usize,
    scratch: Scratch,
}

impl<A: Default> ConnTable<A> {
    /// `isn_key` is the RFC 6528 secret; take it from a CSPRNG at startup.
    pub fn new(config: TcpConfig, isn_key: [u8; 16]) -> Self {
        ConnTable {
            cfg: config,
            isn: IsnGenerator::new(isn_key),
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::new(),
            timers: TimerQueue::default(),
            due: Vec::new(),
            dirty: Vec::new(),
            resets: VecDeque::new(),
            counters: Counters::default(),
            half_open: 0,
            established: 0,
            time_wait: 0,
            scratch: Scratch {
                header: [0; MAX_HEADER_LEN],
                payload: Vec::new(),
            },
        }
    }

    // ---- getters -------------------------------------------------------------------------

    pub fn config(&self) -> &TcpConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Connections in the table, all states.
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_tuple.is_empty()
    }
    /// Entries in the timer queue, stale ones included (bounded by a small multiple of the
    /// connection count; exposed for tests and metrics).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }
    /// (half-open, established-or-closing, TIME-WAIT) counts.
    pub fn class_counts(&self) -> (usize, usize, usize) {
        (self.half_open, self.established, self.time_wait)
    }
    pub fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<ConnId> {
        let slot = *self.by_tuple.get(&(local, remote))?;
        let generation = self.slots.get(slot as usize)?.generation;
        Some(ConnId { slot, generation })
    }
    pub fn state(&self, id: ConnId) -> Option<State> {
        self.get(id).map(|e| e.conn.state)
    }
    /// The 4-tuple of a connection: (local, remote).
    pub fn endpoints(&self, id: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        self.get(id).map(|e| (e.conn.local, e.conn.remote))
    }
    /// In-order bytes received and not yet consumed (empty for an unknown id).
    pub fn recv_data(&self, id: ConnId) -> &[u8] {
        self.get(id).map_or(&[], |e| e.conn.recv_data())
    }
    /// The peer sent FIN: no more bytes will arrive.
    pub fn recv_closed(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|e| e.conn.recv_closed())
    }
    /// Bytes queued by `send` and not yet acknowledged.
    pub fn send_queued(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, |e| e.conn.send_queued())
    }
    pub fn app(&self, id: ConnId) -> Option<&A> {
        self.get(id).map(|e| &e.app)
    }
    pub fn app_mut(&mut self, id: ConnId) -> Option<&mut A> {
        self.get_mut(id).map(|e| &mut e.app)
    }
    /// When [`ConnTable::handle_timeout`] should next be called. May be early (a stale timer),
    /// never late.
    pub fn poll_at(&self) -> Option<Instant> {
        self.timers.peek()
    }

    /// Checks the table's invariants (module docs) and every connection's (for tests and
    /// fuzzing; read-only, O(connections)): the tuple map names exactly the occupied slots,
    /// the class counts match the states, the limits hold, the timer queue is bounded.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counts = (0, 0, 0);
        let mut occupied = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(e) = &s.entry else { continue };
            occupied += 1;
            if self.by_tuple.get(&(e.conn.local, e.conn.remote)) != Some(&(i as u32)) {
                return Err(format!("slot {i} is not in the tuple map"));
            }
            match class(e.conn.state) {
                Class::HalfOpen => counts.0 += 1,
                Class::Established => counts.1 += 1,
                Class::TimeWait => counts.2 += 1,
                Class::Closed => {}
            }
            e.conn.check(&self.cfg)?;
            // A connection with something to do later has a timer entry at or before it
            // (once `poll_transmit` has run for it: until then it may re-arm a timer).
            if e.conn.dirty {
                continue;
            }
            if let Some(d) = e.conn.next_deadline(&self.cfg) {
                if e.conn.scheduled.is_none_or(|s| s > d) {
                    return Err(format!(
                        "slot {i}: deadline {d:?} not scheduled: {:?}",
                        e.conn
                    ));
                }
            } else if e.conn.state != State::Closed {
                return Err(format!("slot {i}: no deadline at all: {:?}", e.conn));
            }
        }
        if occupied != self.by_tuple.len() {
            return Err(format!(
                "{occupied} occupied slots, {} tuples",
                self.by_tuple.len()
            ));
        }
        if counts != (self.half_open, self.established, self.time_wait) {
            return Err(format!(
                "class counts {:?} recorded as {:?}",
                counts,
                (self.half_open, self.established, self.time_wait)
            ));
        }
        if self.half_open > self.cfg.max_half_open
            || self.established > self.cfg.max_established
            || self.time_wait > self.cfg.max_time_wait
            || self.resets.len() > self.cfg.max_pending_resets
        {
            return Err("a table limit is exceeded".into());
        }
        if self.timers.len() > 8 * self.slots.len() + 64 {
            return Err(format!(
                "{} timer entries for {} slots",
                self.timers.len(),
                self.slots.len()
            ));
        }
        Ok(())
    }

    fn get(&self, id: ConnId) -> Option<&Entry<A>> {
        let s = self.slots.get(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.entry.as_ref()
    }
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Entry<A>> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.entry.as_mut()
    }

    // ---- inputs --------------------------------------------------------------------------

    /// Processes one received segment. Returns the connection if it has new readable bytes or
    /// just received the peer's FIN (or was reset): the app should look at it, queue any
    /// response, and then the engine calls [`ConnTable::poll_transmit`].
    pub fn handle_segment(&mut self, now: Instant, seg: &Segment<'_>) -> Option<ConnId> {
        let h = &seg.header;
        // SYN+FIN and SYN+RST have no meaning in RFC 9293 and no TCP sends them; Linux drops
        // SYN+FIN in LISTEN and FreeBSD drops both. Dropping them before any state is looked
        // at keeps a crafted combination from opening, resetting or answering anything.
        if h.flags.syn() && (h.flags.fin() || h.flags.rst()) {
            self.counters.illegal_flags_dropped += 1;
            return None;
        }
        if let Some(&slot) = self.by_tuple.get(&(h.dst, h.src)) {
            let input = self
                .update(slot, |c, ctx| c.handle_segment(now, seg, ctx))
                .unwrap_or(Input::Nothing);
            let id = ConnId {
                slot,
                generation: self.slots[slot as usize].generation,
            };
            match input {
                Input::Nothing => return None,
                Input::Readable => return Some(id),
                Input::SendReset => {
                    self.queue_reset(seg);
                    return None;
                }
                Input::Reopen => {
                    self.counters.time_wait_reused += 1;
                    self.remove(slot);
                }
            }
        }
        if !self.cfg.is_listening(h.dst) {
            if !h.flags.rst() {
                self.counters.rst_sent_no_listener += 1;
                self.queue_reset(seg);
            }
            return None;
        }
        // LISTEN state (RFC 9293 3.10.7.2).
        if h.flags.rst() {
            self.counters.rst_ignored += 1;
            return None;
        }
        if h.flags.ack() {
            self.counters.rst_sent_no_connection += 1;
            self.queue_reset(seg);
            return None;
        }
        if !h.flags.syn() {
            self.counters.no_ack_dropped += 1;
            return None;
        }
        if !is_unicast(h.src.ip()) {
            return None;
        }
        if self.half_open >= self.cfg.max_half_open {
            self.counters.syn_dropped_half_open_full += 1;
            return None;
        }
        if self.established >= self.cfg.max_established {
            self.counters.syn_dropped_table_full += 1;
            return None;
        }
        // Data on a SYN is not accepted (no TCP Fast Open); the peer retransmits it.
        let (iss, ts_offset) = self.isn.generate(h.dst, h.src, now);
        let conn = Conn::new_syn(h, iss, ts_offset, now, &self.cfg);
        self.insert(conn);
        self.counters.connections_accepted += 1;
        None
    }

    /// Runs every timer due at `now` (RTO, persist, idle, header, TIME-WAIT).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(e) = self.timers.pop_due(now) {
            due.push(e);
        }
        for &(at, slot, generation) in &due {
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            let Some(e) = s.entry.as_mut() else { continue };
            if e.conn.scheduled == Some(at) {
                e.conn.scheduled = None;
            }
            if e.conn.next_deadline(&self.cfg).is_some_and(|d| d <= now) {
                self.update(slot, |c, ctx| c.handle_timeout(now, ctx));
            } else {
                self.reschedule(slot);
            }
        }
        due.clear();
        self.due = due;
    }

    // ---- app commands --------------------------------------------------------------------

    /// Marks `n` received bytes as read, freeing receive window.
    pub fn consume(&mut self, id: ConnId, n: usize) {
        if self.get(id).is_some() {
            self.update(id.slot, |c, ctx| c.consume(n, ctx.cfg));
        }
    }

    /// Queues `chunk` for sending, by reference. `payload_sum` is the precomputed checksum sum
    /// of the whole chunk (used when the chunk goes out as one segment); `ttl` overrides the
    /// IP TTL / hop limit of the segments carrying it.
    pub fn send(
        &mut self,
        id: ConnId,
        chunk: Bytes,
        payload_sum: Option<PartialSum>,
        ttl: Option<u8>,
    ) -> Result<(), SendError> {
        if self.get(id).is_none() {
            return Err(SendError::UnknownConnection);
        }
        if self.update(id.slot, |c, _| c.send(chunk, payload_sum, ttl)) == Some(true) {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    /// Holds (`true`) or releases the complete request at the start of `id`'s receive buffer:
    /// while held, the header and idle timeouts do not run (the app answers it by its own
    /// deadline: a parked request, a hanging GET).
    pub fn hold(&mut self, id: ConnId, held: bool, now: Instant) {
        if self.get(id).is_some() {
            self.update(id.slot, |c, ctx| c.hold(held, now, ctx.cfg));
        }
    }

    /// Closes the sending side: FIN after all queued data.
    pub fn close(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            self.update(id.slot, |c, _| c.close());
        }
    }

    /// Resets the connection (RST) and forgets it.
    pub fn abort(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            self.update(id.slot, |c, ctx| c.abort(ctx.counters));
        }
    }

    // ---- outputs -------------------------------------------------------------------------

    /// Emits every pending segment: each [`Transmit`] is an IP+TCP header and a payload slice
    /// to be written together (writev). Connections that are done leave the table here.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut impl FnMut(Transmit<'_>)) {
        while let Some(h) = self.resets.pop_front() {
            match emit_segment(&h, 0, PartialSum::default(), &mut self.scratch.header) {
                Ok(n) => {
                    self.counters.segments_sent += 1;
                    out(Transmit {
                        header: &self.scratch.header[..n],
                        payload: &[],
                    });
                }
                Err(_) => self.counters.emit_errors += 1,
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(Slot { entry: Some(e), .. }) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            e.conn.dirty = false;
            let mut ctx = Ctx {
                cfg: &self.cfg,
                counters: &mut self.counters,
            };
            e.conn.poll_transmit(now, &mut ctx, &mut self.scratch, out);
            if e.conn.is_finished() {
                self.remove(slot);
            } else {
                self.reschedule(slot);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    // ---- internals -----------------------------------------------------------------------

    /// Runs `f` on a connection, keeps the class counts right, applies the TIME-WAIT bound,
    /// and marks the connection for transmission and rescheduling.
    fn update<R>(&mut self, slot: u32, f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> R) -> Option<R> {
        let Some(Slot { entry: Some(e), .. }) = self.slots.get_mut(slot as usize) else {
            return None;
        };
        let before = class(e.conn.state);
        let mut ctx = Ctx {
            cfg: &self.cfg,
            counters: &mut self.counters,
        };
        let r = f(&mut e.conn, &mut ctx);
        let mut after = class(e.conn.state);
        if after != before {
            if after == Class::TimeWait && self.time_wait >= self.cfg.max_time_wait {
                // Bounded TIME-WAIT: see the module docs of `tcp` for why this is safe enough.
                e.conn.skip_time_wait();
                self.counters.time_wait_skipped += 1;
                after = Class::Closed;
            }
            if before == Class::HalfOpen
                && after == Class::Established
                && self.established >= self.cfg.max_established
            {
                e.conn.abort(&mut self.counters);
                after = Class::Closed;
            }
        }
        let newly_dirty = !e.conn.dirty;
        e.conn.dirty = true;
        if after != before {
            self.count(before, -1);
            self.count(after, 1);
        }
        if newly_dirty {
            self.dirty.push(slot);
        }
        self.reschedule(slot);
        Some(r)
    }

    fn count(&mut self, c: Class, delta: isize) {
        let n = match c {
            Class::HalfOpen => &mut self.half_open,
            Class::Established => &mut self.established,
            Class::TimeWait => &mut self.time_wait,
            Class::Closed => return,
        };
        *n = n.saturating_add_signed(delta);
    }

    fn reschedule(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(e) = s.entry.as_mut() else { return };
        if let Some(d) = e.conn.next_deadline(&self.cfg) {
            if e.conn.scheduled.is_none_or(|s| d < s) {
                e.conn.scheduled = Some(d);
                self.timers.push(d, slot, s.generation);
            }
        }
    }

    fn insert(&mut self, conn: Conn) {
        let key = (conn.local, conn.remote);
        let cls = class(conn.state);
        let entry = Entry {
            conn,
            app: A::default(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize].entry = Some(entry);
                slot
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: Some(entry),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_tuple.insert(key, slot);
        self.count(cls, 1);
        if let Some(e) = self.slots[slot as usize].entry.as_mut() {
            e.conn.dirty = true;
            self.dirty.push(slot);
        }
        self.reschedule(slot);
    }

    fn remove(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(e) = s.entry.take() else { return };
        s.generation = s.generation.wrapping_add(1);
        self.by_tuple.remove(&(e.conn.local, e.conn.remote));
        self.free.push(slot);
        self.count(class(e.conn.state), -1);
        self.counters.connections_closed += 1;
    }

    /// Queues the reset RFC 9293 3.10.7.1 prescribes for `seg`: "If the incoming segment has
    /// an ACK field, the reset takes its sequence number from the ACK field of the segment,
    /// otherwise the reset has sequence number zero and the ACK field is set to the sum of the
    /// sequence number and segment length of the incoming segment."
    fn queue_reset(&mut self, seg: &Segment<'_>) {
        let h = &seg.header;
        if h.flags.rst() || !is_unicast(h.src.ip()) {
            return;
        }
        if self.resets.len() >= self.cfg.max_pending_resets {
            self.counters.rst_dropped_queue_full += 1;
            return;
        }
        let (seq, ack, flags) = if h.flags.ack() {
            (h.ack, 0, TcpFlags::RST)
        } else {
            let len = seg.payload.len() + usize::from(h.flags.syn()) + usize::from(h.flags.fin());
            (
                0,
                h.seq.wrapping_add(len as u32),
                TcpFlags::RST | TcpFlags::ACK,
            )
        };
        self.resets.push_back(SegmentHeader {
            src: h.dst,
            dst: h.src,
            seq,
            ack,
            flags,
            window: 0,
            options: TcpOptions::default(),
            hop_limit: self.cfg.hop_limit,
        });
    }
}

/// Resets and SYN-ACKs go only to unicast peers (RFC 1122 4.2.3.10).
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}
