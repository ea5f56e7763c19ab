//! The engine: the packet loop that joins a device, the wire codec, our TCP and the HTTP
//! exchange over the current snapshot.
//!
//! Contract: [`Engine`] owns one device (one TUN queue) and the connections the kernel steers
//! to it. It is driven with time passed in: [`Engine::handle_ready`] drains up to a batch of
//! packets and answers every request they complete, [`Engine::handle_timeout`] runs TCP
//! timers, [`Engine::flush`] writes every pending segment (one writev each),
//! [`Engine::handle_flushed`] records the answered requests' latency and publishes the
//! counters ([`crate::metrics`]), and [`Engine::poll_at`] says when to come back. A request answered
//! [`crate::http::Reply::Pending`] parks its connection (see [`crate::pending`]);
//! [`Engine::handle_wakeup`] answers it when the engine's wake-up eventfd says its ticket is
//! done, or at its deadline (the error for a token flight, the current value for a hanging
//! GET), while every other connection is served as usual. Only the request that waited is
//! past its wait: requests pipelined behind it are answered as on a first run, and one that
//! parks gets its own limit ([`RequestContext::next_request`]). A parked request is a ticket in
//! its connection's state, held from TCP's header and idle timeouts: thousands cost only
//! their connections. [`driver`] is the thin blocking loop around it
//! that reads the clock and waits on the device; [`up`] is the `imds-tun up` command.
//!
//! A caller that the configuration's fleet refuses ([`crate::fleet`]) is reset when its first
//! bytes arrive.
//!
//! Invariants: per keep-alive request the work is one device read, one parse, one snapshot
//! lookup (with a fleet, one lookup of the caller's profile) and one device write of header +
//! snapshot slice; nothing on that path allocates or copies the response. A malformed packet costs only itself (counted); a bad request costs
//! only its connection. A connection holds less than twice
//! [`crate::http::exchange::MAX_OUTPUT`] of unacknowledged responses (plus one response):
//! further pipelined requests wait, unread, in its receive buffer until the client reads.

pub mod driver;
pub mod eventfd;
pub mod up;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cloud::{Door, RequestContext};
use crate::device::{Device, MAX_PACKET};
use crate::http::exchange::{respond_all_with, Outgoing, MAX_OUTPUT};
use crate::http::DropKind;
use crate::metrics::answered::Answered;
use crate::metrics::{EngineSlot, Observer};
use crate::pending::{Ticket, Wake};
use crate::snapshot::SnapshotCell;
use crate::tcp::{ConnId, ConnTable, TcpConfig};
use crate::wire::{self, Malformed, Packet};
use eventfd::EventFd;

/// Packets read before the pending segments are written: batching lets one `poll_transmit`
/// answer several connections, and bounds the latency a burst adds to the first of them.
pub const BATCH: usize = 64;

/// The IPv4 TTL / IPv6 hop limit of echo replies.
const ECHO_HOP_LIMIT: u8 = 64;

/// What the engine did with packets, beyond what TCP counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub packets_in: u64,
    pub packets_out: u64,
    /// Malformed packets, by reason ([`Malformed::as_str`]).
    pub malformed: std::collections::BTreeMap<&'static str, u64>,
    /// Well-formed packets for no service of ours (UDP, other ICMP, MLD, ...).
    pub not_for_us: u64,
    pub echo_replies: u64,
    pub requests: u64,
    /// Writes the device refused (queue full, ...): the segment is lost and TCP retransmits.
    pub send_errors: u64,
}

/// Per-connection HTTP state.
#[derive(Debug, Default)]
pub struct Exchange {
    /// A response with `Connection: close` (or an HTTP error) was queued: no more requests
    /// are read on this connection.
    closing: bool,
    /// The first unanswered request waits on this ticket until the deadline; it and the
    /// bytes after it stay in the receive buffer, held from TCP's header and idle timeouts.
    parked: Option<(Ticket, std::time::Instant)>,
    /// Requests wait in the receive buffer because [`MAX_OUTPUT`] of responses are queued and
    /// unacknowledged (a client pipelining without reading): answered again once the send
    /// queue drains below it.
    backlogged: bool,
    /// An answer injected latency holds back until its time; nothing after it is answered
    /// before it is sent.
    held: Option<Held>,
}

/// An answer waiting for its time ([`crate::http::Reply::Later`]).
#[derive(Debug)]
struct Held {
    out: Outgoing,
    at: std::time::Instant,
    /// The connection closes after it (`Connection: close`).
    close: bool,
}

/// How a request is being answered: for the first time, or re-run after it was parked.
#[derive(Clone, Copy, Debug)]
struct Rerun {
    /// The deadline of its first park: parking the same request again keeps it.
    deadline: std::time::Instant,
    /// The deadline has passed: a hanging GET answers now.
    over: bool,
    /// When the request's bytes were read (its first park began then): latency counts from it.
    arrival: std::time::Instant,
}

/// A monotonic clock origin, so TCP's microsecond [`crate::tcp::Instant`] can be derived from
/// `std::time::Instant` values the driver passes in.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub fn new(origin: std::time::Instant) -> Clock {
        Clock { origin }
    }

    pub fn tcp(&self, now: std::time::Instant) -> crate::tcp::Instant {
        let us = now.saturating_duration_since(self.origin).as_micros();
        crate::tcp::Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    pub fn std(&self, t: crate::tcp::Instant) -> std::time::Instant {
        self.origin + std::time::Duration::from_micros(t.as_micros())
    }
}

/// One device queue and its connections.
pub struct Engine<D: Device> {
    device: D,
    tcp: ConnTable<Exchange>,
    cell: Arc<SnapshotCell>,
    clock: Clock,
    counters: EngineCounters,
    rx: Box<[u8]>,
    echo: Box<[u8]>,
    out: Vec<Outgoing>,
    /// Connections with a parked request (see [`crate::pending`]).
    parked: Vec<ConnId>,
    /// The earliest deadline of the parked requests (kept so that `poll_at` and
    /// `handle_wakeup` cost nothing per loop while thousands of hanging GETs wait).
    parked_until: Option<std::time::Instant>,
    /// Signalled when a ticket of a parked request is done; made on the first park, so an
    /// engine that never parks has no extra descriptor.
    wakeup: Option<Arc<EventFd>>,
    /// Connections with requests held back by the output bound (see [`Exchange`]).
    backlogged: Vec<ConnId>,
    /// Where answered requests are counted and logged, and this thread's counters published
    /// ([`Engine::export`]); `None` in tests that do not look.
    observer: Option<(Observer, Arc<EngineSlot>)>,
    /// Requests answered since the last [`Engine::handle_flushed`] (capacity reused).
    answered: Vec<Answered>,
}

impl<D: Device> Engine<D> {
    /// `isn_key` is the RFC 6528 secret; `origin` the zero of the engine's clock.
    pub fn new(
        device: D,
        tcp: TcpConfig,
        isn_key: [u8; 16],
        cell: Arc<SnapshotCell>,
        origin: std::time::Instant,
    ) -> Self {
        Engine {
            device,
            tcp: ConnTable::new(tcp, isn_key),
            cell,
            clock: Clock::new(origin),
            counters: EngineCounters::default(),
            rx: vec![0u8; MAX_PACKET].into_boxed_slice(),
            echo: vec![0u8; MAX_PACKET].into_boxed_slice(),
            out: Vec::with_capacity(8),
            parked: Vec::new(),
            parked_until: None,
            wakeup: None,
            backlogged: Vec::new(),
            observer: None,
            answered: Vec::with_capacity(BATCH),
        }
    }

    /// Counts and logs every answered request through `observer`, and publishes this
    /// engine's TCP and packet counters to `slot` at each [`Engine::handle_flushed`].
    pub fn export(&mut self, observer: Observer, slot: Arc<EngineSlot>) {
        self.observer = Some((observer, slot));
    }

    /// The responses queued so far were written at `done`: records their requests' latency
    /// (and access log lines) and publishes the counters. The driver calls it after
    /// [`Engine::flush`].
    pub fn handle_flushed(&mut self, done: std::time::Instant) {
        if let Some((observer, slot)) = &self.observer {
            observer.finish(&mut self.answered, done);
            let parked = self.parked.len() as u64;
            slot.publish(
                self.tcp.counters(),
                &self.counters,
                self.tcp.class_counts(),
                parked,
            );
        }
    }

    /// The descriptor that becomes readable when a parked request can be answered.
    pub fn wakeup_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.wakeup.as_ref().map(|w| w.fd())
    }

    /// Re-runs every parked request whose ticket is done, and those whose deadline passed (a
    /// token flight then fails; a hanging GET answers its current value). Costs nothing while
    /// none is parked, and only an eventfd read while none is due.
    pub fn handle_wakeup(&mut self, now: std::time::Instant, wall: SystemTime) {
        if self.parked.is_empty() {
            return;
        }
        let signalled = self.wakeup.as_ref().is_some_and(|w| w.drain());
        if !signalled && self.parked_until.is_none_or(|at| at > now) {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        self.parked_until = None;
        for id in parked {
            let Some(app) = self.tcp.app_mut(id) else {
                continue; // the connection is gone
            };
            if let Some(held) = app.held.take_if(|h| h.at <= now) {
                self.tcp.hold(id, false, self.clock.tcp(now));
                self.release(id, held, now, wall);
                continue;
            }
            if let Some(at) = app.held.as_ref().map(|h| h.at) {
                self.parked.push(id);
                self.parked_until = Some(self.parked_until.map_or(at, |t| t.min(at)));
                continue;
            }
            let rerun = match &app.parked {
                None => continue,
                Some((ticket, deadline)) if ticket.is_done() => Rerun {
                    deadline: *deadline,
                    over: *deadline <= now,
                    arrival: deadline.checked_sub(ticket.limit()).unwrap_or(now),
                },
                Some((ticket, deadline)) if *deadline <= now => {
                    ticket.time_out();
                    Rerun {
                        deadline: *deadline,
                        over: true,
                        arrival: deadline.checked_sub(ticket.limit()).unwrap_or(now),
                    }
                }
                Some((_, deadline)) => {
                    let at = *deadline;
                    self.parked.push(id);
                    self.parked_until = Some(self.parked_until.map_or(at, |t| t.min(at)));
                    continue;
                }
            };
            app.parked = None;
            self.tcp.hold(id, false, self.clock.tcp(now));
            self.answer(id, now, wall, Some(rerun));
        }
    }

    /// Requests parked now (hanging GETs, token fetches), over all connections.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    pub fn tcp(&self) -> &ConnTable<Exchange> {
        &self.tcp
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Reads up to [`BATCH`] packets and handles each; returns how many were read (a full
    /// batch means more may be waiting). `wall` is the time requests are answered at.
    pub fn handle_ready(
        &mut self,
        now: std::time::Instant,
        wall: SystemTime,
    ) -> std::io::Result<usize> {
        let mut read = 0;
        while read < BATCH {
            let Some(len) = self.device.recv(now, &mut self.rx)? else {
                break;
            };
            read += 1;
            self.counters.packets_in += 1;
            self.handle_packet(now, wall, len);
        }
        if !self.backlogged.is_empty() {
            self.handle_backlog(now, wall);
        }
        Ok(read)
    }

    /// Answers again the connections whose held-back requests now fit under the output bound
    /// (their client acknowledged enough of the responses).
    fn handle_backlog(&mut self, now: std::time::Instant, wall: SystemTime) {
        let backlogged = std::mem::take(&mut self.backlogged);
        for id in backlogged {
            let drained = self.tcp.send_queued(id) < MAX_OUTPUT;
            let Some(app) = self.tcp.app_mut(id) else {
                continue; // the connection is gone
            };
            if drained {
                app.backlogged = false;
                self.answer(id, now, wall, None);
            } else {
                self.backlogged.push(id);
            }
        }
    }

    /// Holds `id`'s buffered requests until its send queue drains below [`MAX_OUTPUT`].
    fn backlog(&mut self, id: ConnId) {
        if let Some(app) = self.tcp.app_mut(id) {
            if !app.backlogged {
                app.backlogged = true;
                self.backlogged.push(id);
            }
        }
    }

    /// Runs TCP timers that are due.
    pub fn handle_timeout(&mut self, now: std::time::Instant) {
        let t = self.clock.tcp(now);
        if self.tcp.poll_at().is_some_and(|at| at <= t) {
            self.tcp.handle_timeout(t);
        }
    }

    /// Writes every pending segment.
    pub fn flush(&mut self, now: std::time::Instant) {
        let t = self.clock.tcp(now);
        let device = &mut self.device;
        let counters = &mut self.counters;
        self.tcp.poll_transmit(t, &mut |tx| {
            let iov = [IoSlice::new(tx.header), IoSlice::new(tx.payload)];
            let parts = if tx.payload.is_empty() { 1 } else { 2 };
            match device.send(now, &iov[..parts]) {
                Ok(()) => counters.packets_out += 1,
                Err(_) => counters.send_errors += 1,
            }
        });
    }

    /// When the engine next has something to do without new packets.
    pub fn poll_at(&self) -> Option<std::time::Instant> {
        let tcp = self.tcp.poll_at().map(|t| self.clock.std(t));
        [tcp, self.device.poll_at(), self.parked_until]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_packet(&mut self, now: std::time::Instant, wall: SystemTime, len: usize) {
        let packet = match wire::parse(&self.rx[..len]) {
            Ok(p) => p,
            Err(reason) => {
                self.count_malformed(reason);
                return;
            }
        };
        match packet {
            Packet::Tcp(seg) => {
                if let Some(id) = self.tcp.handle_segment(self.clock.tcp(now), &seg) {
                    self.answer(id, now, wall, None);
                }
            }
            Packet::EchoRequest(req) => {
                if !self.is_ours(req.dst) {
                    self.counters.not_for_us += 1;
                    return;
                }
                match wire::emit_echo_reply(&req, ECHO_HOP_LIMIT, &mut self.echo) {
                    Ok(n) => match self.device.send(now, &[IoSlice::new(&self.echo[..n])]) {
                        Ok(()) => {
                            self.counters.echo_replies += 1;
                            self.counters.packets_out += 1;
                        }
                        Err(_) => self.counters.send_errors += 1,
                    },
                    Err(_) => self.counters.not_for_us += 1,
                }
            }
            Packet::Other { .. } => self.counters.not_for_us += 1,
        }
    }

    /// Echo replies only for addresses we serve (the routes point only those at us, but a
    /// hand-made route must not turn us into a ping responder for anything).
    fn is_ours(&self, dst: std::net::IpAddr) -> bool {
        self.tcp.config().is_listening(SocketAddr::new(dst, 80))
    }

    /// Answers every complete request buffered on `id`, and closes when HTTP says so or the
    /// peer has finished sending. A parked connection is left alone until its ticket is done
    /// ([`Engine::handle_wakeup`]), which re-runs it with `rerun`. `now` is when the
    /// request's bytes were read, for a first run.
    fn answer(
        &mut self,
        id: ConnId,
        now: std::time::Instant,
        wall: SystemTime,
        rerun: Option<Rerun>,
    ) {
        let Some((local, peer)) = self.tcp.endpoints(id) else {
            return;
        };
        if self
            .tcp
            .app(id)
            .is_some_and(|a| a.parked.is_some() || a.held.is_some() || a.backlogged)
        {
            return;
        }
        let closing = self.tcp.app(id).is_some_and(|a| a.closing);
        let data = self.tcp.recv_data(id);
        if closing {
            // After `Connection: close` nothing more is read; discard to keep the window open.
            let n = data.len();
            self.tcp.consume(id, n);
            return;
        }
        if !data.is_empty() && self.tcp.send_queued(id) >= MAX_OUTPUT {
            // Bounded output: the requests wait in the receive buffer (whose window closes)
            // until the client reads what it was sent.
            self.backlog(id);
            return;
        }
        let data = self.tcp.recv_data(id);
        if !data.is_empty() {
            let current = self.cell.load();
            let Some(snapshot) = current.for_peer(peer.ip()) else {
                // A caller no fleet profile knows, refused (crate::fleet): a reset.
                self.tcp.abort(id);
                return;
            };
            let limits = snapshot.config.server.limits();
            let mut ctx = RequestContext {
                now: wall,
                peer,
                local,
                door: Door::at_address(local.ip()),
                wait_over: rerun.is_some_and(|r| r.over),
            };
            let door = ctx.door;
            let respond =
                |request: &crate::http::Request<'_>| snapshot.respond(request, &ctx.next_request());
            let progress = match &self.observer {
                Some((observer, _)) => {
                    let arrival = rerun.map_or(now, |r| r.arrival);
                    let mut sink = observer.sink(
                        &mut self.out,
                        &mut self.answered,
                        door,
                        peer,
                        (arrival, wall),
                    );
                    respond_all_with(data, &limits, &mut sink, respond)
                }
                None => respond_all_with(data, &limits, &mut self.out, respond),
            };
            snapshot.count_answered(progress.answered);
            self.counters.requests += progress.answered as u64;
            self.tcp.consume(id, progress.consumed);
            let mut held = None;
            for o in self.out.drain(..) {
                if let Some(delay) = o.delay {
                    held = Some(Held {
                        out: o,
                        at: now + delay,
                        close: progress.close,
                    });
                    break;
                }
                if self.tcp.send(id, o.bytes, o.sum, o.ip_ttl).is_err() {
                    break;
                }
            }
            if let Some(held) = held {
                // Sent by `handle_wakeup` at its time; the close (if any) after it. TCP's
                // idle and header timeouts wait meanwhile, as for a parked request.
                let at = held.at;
                if let Some(app) = self.tcp.app_mut(id) {
                    app.held = Some(held);
                    self.parked.push(id);
                    self.parked_until = Some(self.parked_until.map_or(at, |t| t.min(at)));
                    self.tcp.hold(id, true, self.clock.tcp(now));
                }
                return;
            }
            if let Some(kind) = progress.drop {
                if let Some(app) = self.tcp.app_mut(id) {
                    app.closing = true;
                }
                match kind {
                    DropKind::Reset => self.tcp.abort(id),
                    DropKind::Close => self.tcp.close(id),
                }
                return;
            }
            if progress.close {
                if let Some(app) = self.tcp.app_mut(id) {
                    app.closing = true;
                }
                self.tcp.close(id);
                let rest = self.tcp.recv_data(id).len();
                self.tcp.consume(id, rest);
                return;
            }
            if let Some(ticket) = progress.pending {
                // The same request parking again keeps its first deadline.
                let keep = rerun.filter(|_| progress.answered == 0).map(|r| r.deadline);
                self.park(id, ticket, now, keep);
                // The parked request is complete: a FIN after it does not end the exchange.
                return;
            }
            if progress.more {
                // Answered up to the output bound; a FIN after the held-back requests does
                // not end the exchange either.
                self.backlog(id);
                return;
            }
        }
        // The peer sent FIN: whatever is left is an incomplete request that cannot complete.
        if self.tcp.recv_closed(id) {
            self.tcp.close(id);
        }
    }

    /// Sends an answer whose time has come, then closes or answers what followed it.
    fn release(&mut self, id: ConnId, held: Held, now: std::time::Instant, wall: SystemTime) {
        let o = held.out;
        let _ = self.tcp.send(id, o.bytes, o.sum, o.ip_ttl);
        if held.close {
            if let Some(app) = self.tcp.app_mut(id) {
                app.closing = true;
            }
            self.tcp.close(id);
            let rest = self.tcp.recv_data(id).len();
            self.tcp.consume(id, rest);
        } else {
            self.answer(id, now, wall, None);
        }
    }

    /// Holds `id`'s first unanswered request until `ticket` is done or its deadline passes:
    /// `keep`, else the ticket's limit from now.
    fn park(
        &mut self,
        id: ConnId,
        ticket: Ticket,
        now: std::time::Instant,
        keep: Option<std::time::Instant>,
    ) {
        if self.wakeup.is_none() {
            match EventFd::new() {
                Ok(fd) => self.wakeup = Some(Arc::new(fd)),
                // Without it the deadline still re-runs the request (and answers the error).
                Err(e) => tracing::warn!(error = %e, "cannot create the wake-up eventfd"),
            }
        }
        if let Some(w) = &self.wakeup {
            let waker: Arc<dyn Wake> = w.clone();
            ticket.on_done(&waker);
        }
        let deadline = keep.unwrap_or(now + ticket.limit());
        if let Some(app) = self.tcp.app_mut(id) {
            app.parked = Some((ticket, deadline));
            self.parked.push(id);
            self.parked_until = Some(self.parked_until.map_or(deadline, |t| t.min(deadline)));
            self.tcp.hold(id, true, self.clock.tcp(now));
        }
    }

    fn count_malformed(&mut self, reason: Malformed) {
        *self.counters.malformed.entry(reason.as_str()).or_insert(0) += 1;
    }
}
