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
//! A request answered [`crate::http::Reply::Pending`] (a token fetched upstream) parks its
//! connection: the task waits on the ticket (at most [`PARK_LIMIT`]) without reading further,
//! then answers the buffer again. Other connections, being other tasks, are not held up.
//!
//! Invariants: a connection buffers at most one request's worth of bytes (head and body
//! limits); the per-connection buffers are reused, so a static answer allocates nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::cloud::{Door, RequestContext};
use crate::doors::HimdsKeys;
use crate::http::exchange::{respond_all, respond_all_with, Outgoing};
use crate::pending::{Wake, PARK_LIMIT};
use crate::snapshot::SnapshotCell;

/// How many bytes one read may bring.
const READ_SIZE: usize = 4096;

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

/// Serves connections on `listener` as the metadata door until the task is dropped.
pub async fn serve(listener: TcpListener, cell: Arc<SnapshotCell>) {
    serve_door(listener, cell, FrontDoor::Plain(Door::Metadata)).await
}

/// Serves connections on `listener` as `door` until the task is dropped.
pub async fn serve_door(listener: TcpListener, cell: Arc<SnapshotCell>, door: FrontDoor) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let cell = Arc::clone(&cell);
                let door = door.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, peer, cell, door).await {
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
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let mut snapshot = cell.load();
    let limits = snapshot.config.server.limits();
    let idle = Duration::from_secs(snapshot.config.server.idle_timeout_secs);
    let header = Duration::from_secs(snapshot.config.server.header_timeout_secs);
    let cap = limits.max_head_bytes + limits.max_body_bytes;
    // Buffers are taken on the first request, not on accept: an idle connection costs only
    // its task and socket (10,000 idle clients are a benchmark case). Once taken they are kept
    // for the connection's life, so keep-alive requests allocate nothing.
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<Outgoing> = Vec::new();
    // When the request now buffered began: it must be complete within the header timeout
    // however slowly its bytes trickle in (a per-read timeout would let a slowloris client
    // hold the connection forever with one byte per interval).
    let mut request_started: Option<tokio::time::Instant> = None;
    // Set after a parked request's ticket is done: answer the buffer again before reading.
    let mut rerun = false;
    // Created on the first parked request only (the common path never parks).
    let mut wakeup: Option<Arc<tokio::sync::Notify>> = None;
    loop {
        if !std::mem::take(&mut rerun) {
            let deadline = match request_started {
                Some(t) => t + header,
                None => tokio::time::Instant::now() + idle,
            };
            match tokio::time::timeout_at(deadline, stream.readable()).await {
                Err(_) => return Ok(()),
                Ok(r) => r?,
            }
            // Never hold more than one request's worth of bytes plus one read; the parser
            // rejects anything over its limits before that matters.
            if buf.len() > cap {
                return Ok(());
            }
            if buf.capacity() - buf.len() < READ_SIZE {
                buf.reserve(READ_SIZE);
            }
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        snapshot = cell.load();
        let ctx = RequestContext {
            now: SystemTime::now(),
            peer,
            local,
            door: door.door(),
        };
        let progress = match &door {
            FrontDoor::Plain(_) => respond_all(&buf, &snapshot, &ctx, &limits, &mut out),
            FrontDoor::Himds(keys) => respond_all_with(&buf, &limits, &mut out, |req| {
                keys.respond(&snapshot, req, &ctx)
            }),
        };
        for o in out.drain(..) {
            stream.write_all(&o.bytes).await?;
        }
        // Stopped at the output bound: the rest of the buffer's requests are answered once
        // these responses are written (write_all waits for a client that does not read).
        rerun = progress.more;
        buf.drain(..progress.consumed);
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
            let notify = wakeup.get_or_insert_with(|| Arc::new(tokio::sync::Notify::new()));
            let waker: Arc<dyn Wake> = notify.clone();
            ticket.on_done(&waker);
            let parked = tokio::time::timeout(PARK_LIMIT, notify.notified()).await;
            if parked.is_err() {
                ticket.time_out();
            }
            rerun = true;
            request_started = None;
        }
    }
}
