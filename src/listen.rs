//! The kernel-socket front door: `imds-tun serve --listen ADDR:PORT`.
//!
//! Contract: accepts TCP connections on each address and runs the shared request loop
//! ([`crate::http::exchange::respond_all`]) over them, with HTTP/1.1 keep-alive and
//! pipelining, HTTP/1.0 (closed after one response), bounded buffering, an idle timeout (no
//! request in progress) and a header timeout (a request started but not complete). No root is
//! needed; this is also the contender "kernel TCP" in the benchmark.
//!
//! Invariants: a connection buffers at most one request's worth of bytes (head and body
//! limits); the per-connection buffers are reused, so a static answer allocates nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cloud::RequestContext;
use crate::http::exchange::{respond_all, Outgoing};
use crate::snapshot::SnapshotCell;

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

/// Serves connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cell: Arc<SnapshotCell>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let cell = Arc::clone(&cell);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, peer, cell).await {
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
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let mut snapshot = cell.load();
    let limits = snapshot.config.server.limits();
    let idle = Duration::from_secs(snapshot.config.server.idle_timeout_secs);
    let header = Duration::from_secs(snapshot.config.server.header_timeout_secs);
    let cap = limits.max_head_bytes + limits.max_body_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<Outgoing> = Vec::with_capacity(4);
    let mut read_chunk = vec![0u8; 16 * 1024];
    // When the request now buffered began: it must be complete within the header timeout
    // however slowly its bytes trickle in (a per-read timeout would let a slowloris client
    // hold the connection forever with one byte per interval).
    let mut request_started: Option<tokio::time::Instant> = None;
    loop {
        let deadline = match request_started {
            Some(t) => t + header,
            None => tokio::time::Instant::now() + idle,
        };
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut read_chunk)).await {
            Err(_) => return Ok(()),
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        // Never hold more than one request's worth of bytes plus what one read brings; the
        // parser rejects anything over its limits before that matters.
        if buf.len() + n > cap + read_chunk.len() {
            return Ok(());
        }
        buf.extend_from_slice(&read_chunk[..n]);
        snapshot = cell.load();
        let ctx = RequestContext {
            now: SystemTime::now(),
            peer,
            local,
        };
        let progress = respond_all(&buf, &snapshot, &ctx, &limits, &mut out);
        for o in out.drain(..) {
            stream.write_all(&o.bytes).await?;
        }
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
    }
}
