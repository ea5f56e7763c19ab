//! The metrics endpoint: `GET /metrics` on an opt-in address (`--metrics 127.0.0.1:PORT`).
//!
//! Contract: [`check_address`] refuses an address that is not loopback unless the operator
//! said `--metrics-any`: the metrics name the identities this host hands tokens for and the
//! callers' traffic, which is nobody else's business by default. [`start`] binds (errors are
//! the caller's, before anything is served) and answers on one background thread, one
//! connection at a time, each bounded by [`IO_TIMEOUT`] and closed after one response; a
//! scrape every few seconds needs no more. Requests go through the same bounded parser and
//! exchange loop as every front door ([`crate::http::exchange`]).
//!
//! Paths: `/metrics` (the exposition, [`super::exposition::CONTENT_TYPE`]), `/` (a line
//! naming it); anything else 404, any method but GET and HEAD 405.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::exposition::CONTENT_TYPE;
use super::Registry;
use crate::http::exchange::{respond_all_with, Outgoing};
use crate::http::{Limits, Method, Reply, Response};

/// How long one scrape connection may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a metrics address was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "--metrics {0}: not a loopback address; the metrics name identities and callers, so \
         they are served on 127.0.0.1 or ::1 unless --metrics-any is given"
    )]
    NotLoopback(SocketAddr),
    #[error("--metrics {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Accepts loopback addresses, and any address when `any` is set.
pub fn check_address(addr: SocketAddr, any: bool) -> Result<(), EndpointError> {
    if any || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(EndpointError::NotLoopback(addr))
    }
}

/// Binds `addr` and serves `registry` on it from a background thread for the life of the
/// process; returns the bound address (the port, when `addr` asked for port 0).
pub fn start(
    addr: SocketAddr,
    any: bool,
    registry: &'static Registry,
) -> Result<SocketAddr, EndpointError> {
    check_address(addr, any)?;
    let bind = |source| EndpointError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    std::thread::Builder::new()
        .name("imds-tun-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s, registry) {
                            tracing::debug!(error = %e, "metrics scrape failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map_err(bind)?;
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(bound)
}

/// Reads one request from `stream`, answers it and closes.
fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut out: Vec<Outgoing> = Vec::new();
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let progress = respond_all_with(&buf, &limits, &mut out, |req| {
            Reply::Dynamic(respond(req.method, req.path, registry))
        });
        if progress.answered > 0 || progress.close {
            for o in out.drain(..) {
                stream.write_all(&o.bytes)?;
            }
            return Ok(());
        }
        if buf.len() > limits.max_head_bytes + limits.max_body_bytes {
            return Ok(());
        }
    }
}

fn respond(method: Method, path: &str, registry: &Registry) -> Response {
    let text = |status, body: &str| {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
    };
    match (method, path) {
        (Method::Get | Method::Head, "/metrics") => Response::new(200)
            .header("Content-Type", CONTENT_TYPE)
            .body(registry.render()),
        (Method::Get | Method::Head, "/") => text(200, "imds-tun metrics: GET /metrics\n"),
        (Method::Get | Method::Head, _) => text(404, "not found: the metrics are at /metrics\n"),
        _ => text(405, "only GET and HEAD\n").header("Allow", "GET, HEAD"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_any() {
        let lo: SocketAddr = "127.0.0.1:9100".parse().unwrap_or_else(|e| panic!("{e}"));
        let lo6: SocketAddr = "[::1]:9100".parse().unwrap_or_else(|e| panic!("{e}"));
        let all: SocketAddr = "0.0.0.0:9100".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(check_address(lo, false).is_ok());
        assert!(check_address(lo6, false).is_ok());
        assert!(matches!(
            check_address(all, false),
            Err(EndpointError::NotLoopback(_))
        ));
        assert!(check_address(all, true).is_ok());
    }

    #[test]
    fn scrape_over_a_socket() {
        static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        let registry = REGISTRY.get_or_init(Registry::default);
        registry
            .counter("imds_tun_endpoint_test_total", "Test.", &[])
            .add(5);
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let addr = start(lo, false, registry).unwrap_or_else(|e| panic!("{e}"));
        let get = |request: &str| {
            let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
            s.write_all(request.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            let mut answer = String::new();
            s.read_to_string(&mut answer)
                .unwrap_or_else(|e| panic!("{e}"));
            answer
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("\r\n\r\n# HELP "), "{ok}");
        assert!(ok.contains("\nimds_tun_endpoint_test_total 5\n"), "{ok}");
        let missing = get("GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let bad = get("NOT HTTP\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    }
}
