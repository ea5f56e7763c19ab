//! The kernel-socket front door: `imds-tun serve --listen ADDR:PORT`.
//!
//! Every listener is one front door ([`FrontDoor`]): the metadata door of `serve --listen`, or
//! one of the token doors ([`crate::doors`]).
//!
//! Contract: accepts TCP connections on each address and runs the shared request loop
//! ([`crate::http::exchange::respond_all`]) over them, with HTTP/1.1 keep-alive and
//! pipelining, HTTP/1.0 (closed after one response), bounded buffering, an idle timeout (no
//! request in progress) and a header timeout (a request started but not complete). No root is
//! needed; this is also the contender "kernel TCP" in the benchmark.
//!
//! A request answered [`crate::http::Reply::Pending`] (a token fetched upstream, a hanging
//! GET) parks its connection: the task waits on the ticket (at most
//! [`crate::pending::Ticket::limit`] from its
//! first park) without reading further, then answers the buffer again, with
//! [`RequestContext::wait_over`] once the deadline has passed (for that request only: one
//! pipelined behind it parks with a limit of its own, [`RequestContext::next_request`]). Other
//! connections, being other tasks, are not held up; a parked connection is a sleeping task,
//! not a thread.
//!
//! A caller the configuration's fleet refuses ([`crate::fleet`]) is reset on accept (and, after
//! a reload that starts refusing it, at its next request).
//! An injected failure ([`crate::live::faults`]) that drops the connection ends it with a RST
//! (`SO_LINGER` 0, then close) or a FIN, without an answer; an injected latency delays the
//! connection's task only.
//!
//! Limits ([`Admission`]): the kernel does the TCP here, so a SYN flood meets the kernel's
//! listen backlog and its SYN cookies, not us. What `serve` bounds is what it holds: at most
//! `maxConnections` connections in all (at the bound accepting pauses, so further clients
//! wait in the kernel's backlog and are taken as soon as one closes; idle ones close after
//! `idleTimeoutSecs`), and at most `maxConnectionsPerSource` from one address (beyond it an
//! accepted connection is closed at once). A slowloris request is cut off by the header
//! timeout, counted from its first byte. Each of these is counted in [`ListenCounters`].
//!
//! Invariants: a connection buffers at most one request's worth of bytes (head and body
//! limits), and between requests none at all: whole requests are read into and answered from
//! the worker thread's scratch buffer, so a static answer allocates nothing and an idle
//! keep-alive connection costs its task and socket only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::caller::{CallerLookup, Callers};
use crate::cloud::{Door, RequestContext};
use crate::doors::HimdsKeys;
use crate::http::exchange::{respond_all_with, Outgoing};
use crate::http::DropKind;
use crate::metrics::answered::Answered;
use crate::metrics::{Counter, Gauge, Observer, SocketConnection};
use crate::pending::Wake;
use crate::snapshot::SnapshotCell;

/// How many bytes one read may bring.
const READ_SIZE: usize = 4096;

thread_local! {
    /// Each runtime worker thread's read buffer: a read whose bytes are all answered at once
    /// (nearly every read) needs no buffer of the connection's own. Borrowed only between
    /// awaits, so tasks moving between threads never share it.
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(READ_SIZE));
}

/// What one non-blocking read brought.
enum Filled {
    Data,
    WouldBlock,
    Closed,
}

/// Appends at most one read's worth of bytes from `stream` to `buf`.
fn fill(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Filled> {
    if buf.capacity() - buf.len() < READ_SIZE {
        buf.reserve(READ_SIZE);
    }
    match stream.try_read_buf(buf) {
        Ok(0) => Ok(Filled::Closed),
        Ok(_) => Ok(Filled::Data),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Filled::WouldBlock),
        Err(e) => Err(e),
    }
}

/// Binds every address; fails on the first that cannot be bound.
pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Which door a listener is, and the state of its own a door may need.
#[derive(Clone, Debug)]
pub enum FrontDoor {
    /// A door whose answers depend on the snapshot alone.
    Plain(Door),
    /// Azure Arc's HIMDS, with its key ring and key files.
    Himds(Arc<HimdsKeys>),
}

impl FrontDoor {
    fn door(&self) -> Door {
        match self {
            FrontDoor::Plain(d) => *d,
            FrontDoor::Himds(_) => Door::Himds,
        }
    }
}

/// What the kernel-socket doors accept, shed and time out, exported as
/// `imds_tun_listen_connections_total{event=...}` (shared by every listener of the process).
#[derive(Debug)]
pub struct ListenCounters {
    /// Connections accepted and served.
    pub connections_accepted: Arc<Counter>,
    /// Times accepting paused because `maxConnections` were open.
    pub accept_paused_at_limit: Arc<Counter>,
    /// Connections closed at once because their source had `maxConnectionsPerSource`.
    pub refused_per_source: Arc<Counter>,
    /// Connections closed for an incomplete request past the header timeout.
    pub header_timeouts: Arc<Counter>,
    /// Connections closed for idleness.
    pub idle_timeouts: Arc<Counter>,
}

impl Default for ListenCounters {
    fn default() -> Self {
        let c = |event: &str| {
            crate::metrics::global().counter(
                "imds_tun_listen_connections_total",
                "Kernel-socket connections (serve and the token doors): accepted, accept \
                 paused at maxConnections, refused at maxConnectionsPerSource, closed by the \
                 header or idle timeout.",
                &[("event", event)],
            )
        };
        ListenCounters {
            connections_accepted: c("accepted"),
            accept_paused_at_limit: c("accept_paused_at_limit"),
            refused_per_source: c("refused_per_source"),
            header_timeouts: c("header_timeout"),
            idle_timeouts: c("idle_timeout"),
        }
    }
}

fn bump(counter: &Counter) {
    counter.inc();
}

/// The connection bounds of a set of listeners (see the module docs), shared by all of them.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<tokio::sync::Semaphore>,
    max_per_source: usize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    pub counters: ListenCounters,
}

impl Admission {
    /// Bounds from `$.server` (taken at start: a reload does not resize them).
    pub fn new(server: &crate::config::ServerConfig) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(tokio::sync::Semaphore::new(server.max_connections)),
            max_per_source: server.per_source_limit(),
            per_source: Mutex::new(HashMap::new()),
            counters: ListenCounters::default(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.with_sources(|m| m.values().sum())
    }

    fn with_sources<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, usize>) -> T) -> T {
        match self.per_source.lock() {
            Ok(mut g) => f(&mut g),
            // Counts are whole after any panic: each update is one assignment.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Counts a connection from `source`, or refuses it if the source is at its bound.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<SourceGuard> {
        let admitted = self.with_sources(|m| {
            let n = m.entry(source).or_insert(0);
            if *n >= self.max_per_source {
                return false;
            }
            *n += 1;
            true
        });
        if !admitted {
            bump(&self.counters.refused_per_source);
            return None;
        }
        Some(SourceGuard {
            admission: Arc::clone(self),
            source,
        })
    }
}

/// One admitted connection's place in the per-source count, given back on drop.
struct SourceGuard {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        self.admission.with_sources(|m| {
            if let Some(n) = m.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.source);
                }
            }
        });
    }
}

/// Serves connections on `listener` as the metadata door until the task is dropped, within
/// `admission`'s bounds.
pub async fn serve(listener: TcpListener, cell: Arc<SnapshotCell>, admission: Arc<Admission>) {
    serve_door(listener, cell, FrontDoor::Plain(Door::Metadata), admission).await
}

/// Serves connections on `listener` as `door` until the task is dropped, within
/// `admission`'s bounds; its requests are counted in a request block of its own
/// ([`Observer::new`]), its open connections and parked requests in the registry's gauges
/// ([`crate::metrics::fronts`]).
pub async fn serve_door(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    door: FrontDoor,
    admission: Arc<Admission>,
) {
    let observer = Observer::new();
    let registry = crate::metrics::global();
    let parked = registry.requests_parked_gauge();
    loop {
        let slot = match Arc::clone(&admission.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                bump(&admission.counters.accept_paused_at_limit);
                match Arc::clone(&admission.slots).acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return, // the semaphore is never closed
                }
            }
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                if cell.load().for_peer(peer.ip()).is_none() {
                    // Refused at once, before a task is spent on it.
                    let _ = drop_connection(stream, DropKind::Reset).await;
                    continue;
                }
                let Some(source) = admission.admit(peer.ip()) else {
                    drop(stream);
                    continue;
                };
                bump(&admission.counters.connections_accepted);
                let cell = Arc::clone(&cell);
                let door = door.clone();
                let observer = observer.clone();
                let admission = Arc::clone(&admission);
                let parked = Arc::clone(&parked);
                let open = SocketConnection::open(registry);
                tokio::spawn(async move {
                    let _held = (slot, source);
                    let result =
                        connection(stream, peer, cell, door, observer, &admission, &parked).await;
                    drop(open);
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Err(e) => {
                // Running out of descriptors must not end the server; back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    cell: Arc<SnapshotCell>,
    door: FrontDoor,
    observer: Observer,
    admission: &Admission,
    parked: &Gauge,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let mut snapshot = cell.load();
    let limits = snapshot.config.server.limits();
    let idle = Duration::from_secs(snapshot.config.server.idle_timeout_secs);
    let header = Duration::from_secs(snapshot.config.server.header_timeout_secs);
    let cap = limits.max_head_bytes + limits.max_body_bytes;
    // Bytes a connection keeps between reads: only an unfinished request (or pipelined
    // requests behind a parked one). The common case, a whole request per read, goes through
    // the worker thread's scratch buffer instead, so an idle keep-alive connection owns no
    // buffer at all (10,000 idle clients are a benchmark case) and a static answer allocates
    // nothing.
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<Outgoing> = Vec::new();
    let mut answered: Vec<Answered> = Vec::new();
    // When the bytes that completed the buffered requests were read (latency counts from it).
    let mut arrival = std::time::Instant::now();
    // When the request now buffered began: it must be complete within the header timeout
    // however slowly its bytes trickle in (a per-read timeout would let a slowloris client
    // hold the connection forever with one byte per interval).
    let mut request_started: Option<tokio::time::Instant> = None;
    // Set after a parked request's ticket is done or its time is up: answer the buffer again
    // before reading. `deadline` is the first park's; `over` says it has passed.
    let mut rerun: Option<(tokio::time::Instant, bool)> = None;
    // Created on the first parked request only (the common path never parks).
    let mut wakeup: Option<Arc<tokio::sync::Notify>> = None;
    // A client usually sends its request right after connecting, so by the time the
    // connection is accepted the bytes are often there: read before waiting for readiness
    // (a wait costs an epoll round and a task switch; a miss costs one EAGAIN).
    let mut maybe_readable = true;
    // Who the peer is, looked up once if a caller policy asks (`crate::caller`).
    let caller = CallerLookup::default();
    loop {
        let this_run = rerun.take();
        if this_run.is_none() && !std::mem::take(&mut maybe_readable) {
            let deadline = match request_started {
                Some(t) => t + header,
                None => tokio::time::Instant::now() + idle,
            };
            match tokio::time::timeout_at(deadline, stream.readable()).await {
                Err(_) => {
                    bump(match request_started {
                        Some(_) => &admission.counters.header_timeouts,
                        None => &admission.counters.idle_timeouts,
                    });
                    return Ok(());
                }
                Ok(r) => r?,
            }
        }
        snapshot = cell.load();
        let Some(instance) = snapshot.for_peer(peer.ip()) else {
            return drop_connection(stream, DropKind::Reset).await;
        };
        let ctx = RequestContext {
            now: SystemTime::now(),
            peer,
            local,
            door: door.door(),
            callers: Callers::new(&instance.config.callers, &caller),
            wait_over: this_run.is_some_and(|(_, over)| over),
        };
        let answer = |input: &[u8],
                      out: &mut Vec<Outgoing>,
                      answered: &mut Vec<Answered>,
                      arrival: std::time::Instant| {
            let mut sink = observer.sink(out, answered, ctx.door, peer, (arrival, ctx.now));
            let mut ctx = ctx;
            match &door {
                FrontDoor::Plain(_) => respond_all_with(input, &limits, &mut sink, |req| {
                    instance.respond(req, &ctx.next_request())
                }),
                FrontDoor::Himds(keys) => respond_all_with(input, &limits, &mut sink, |req| {
                    keys.respond(instance, req, &ctx.next_request())
                }),
            }
        };
        let progress = if this_run.is_some() || !buf.is_empty() {
            if this_run.is_none() {
                // Never hold more than one request's worth of bytes plus one read; the
                // parser rejects anything over its limits before that matters.
                if buf.len() > cap {
                    return Ok(());
                }
                match fill(&stream, &mut buf)? {
                    Filled::Data => arrival = std::time::Instant::now(),
                    Filled::WouldBlock => continue,
                    Filled::Closed => return Ok(()),
                }
            }
            let progress = answer(&buf, &mut out, &mut answered, arrival);
            buf.drain(..progress.consumed);
            if buf.is_empty() {
                // Back to owning nothing once the slow path is over.
                buf = Vec::new();
            }
            progress
        } else {
            let step = SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                match fill(&stream, scratch)? {
                    Filled::Data => arrival = std::time::Instant::now(),
                    other => return Ok::<_, std::io::Error>(Err(other)),
                }
                let progress = answer(scratch, &mut out, &mut answered, arrival);
                // An unfinished (or pipelined, parked) tail stays with the connection.
                buf.extend_from_slice(&scratch[progress.consumed..]);
                Ok(Ok(progress))
            })?;
            match step {
                Ok(progress) => progress,
                Err(Filled::WouldBlock) => continue,
                Err(_) => return Ok(()),
            }
        };
        instance.count_answered(progress.answered);
        // A delayed answer ends a round: requests pipelined behind it are answered after it,
        // from the buffer, without waiting for more bytes.
        let delayed = out.iter().any(|o| o.delay.is_some());
        for o in out.drain(..) {
            if let Some(delay) = o.delay {
                // An injected latency: only this connection's task waits.
                parked.add(1);
                tokio::time::sleep(delay).await;
                parked.add(-1);
            }
            stream.write_all(&o.bytes).await?;
        }
        observer.finish(&mut answered, std::time::Instant::now());
        if let Some(kind) = progress.drop {
            return drop_connection(stream, kind).await;
        }
        // After a delayed answer, or stopped at the output bound (`Progress::more`: the rest
        // of the buffer's requests are answered once these responses are written, and
        // write_all waits for a client that does not read), answer on from the buffer.
        if (delayed || progress.more) && !buf.is_empty() && !progress.close {
            // No deadline to keep (it is already now): a park of the next request gets its
            // own limit.
            rerun = Some((tokio::time::Instant::now(), false));
        }
        request_started = match (buf.is_empty(), progress.consumed > 0) {
            (true, _) => None,
            // A pipelined request already began; its clock starts now.
            (false, true) => Some(tokio::time::Instant::now()),
            (false, false) => request_started.or_else(|| Some(tokio::time::Instant::now())),
        };
        if progress.close {
            stream.shutdown().await?;
            return Ok(());
        }
        if let Some(ticket) = progress.pending {
            // The request stays in `buf` (unconsumed): nothing after it is read or answered
            // until it is, which keeps pipelined answers in order. Other connections are
            // their own tasks and go on meanwhile.
            // The same request parking again keeps its first deadline.
            let deadline = match this_run {
                Some((deadline, over))
                    if progress.answered == 0
                        && (over || deadline > tokio::time::Instant::now()) =>
                {
                    deadline
                }
                _ => tokio::time::Instant::now() + ticket.limit(),
            };
            let notify = wakeup.get_or_insert_with(|| Arc::new(tokio::sync::Notify::new()));
            let waker: Arc<dyn Wake> = notify.clone();
            ticket.on_done(&waker);
            parked.add(1);
            let waited = tokio::time::timeout_at(deadline, notify.notified()).await;
            parked.add(-1);
            let over = waited.is_err() || tokio::time::Instant::now() >= deadline;
            if waited.is_err() {
                ticket.time_out();
            }
            rerun = Some((deadline, over));
            request_started = None;
        }
    }
}

/// Ends a connection without answering: RST (linger 0) or FIN.
async fn drop_connection(mut stream: TcpStream, kind: DropKind) -> std::io::Result<()> {
    match kind {
        DropKind::Reset => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger)
                .map_err(std::io::Error::from)?;
            drop(stream);
        }
        DropKind::Close => stream.shutdown().await?,
    }
    Ok(())
}
