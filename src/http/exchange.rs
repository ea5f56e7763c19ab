//! The request loop every front door shares: buffered bytes in, responses out.
//!
//! Contract: [`respond_all`] answers every complete request at the start of `buf`, in order
//! (HTTP/1.1 pipelining, RFC 9112 9.3.2), hands each response to the [`Sink`], and reports how
//! many bytes it consumed and whether the connection must close after the last response.
//! Incomplete trailing bytes are left for the next call. A request answered
//! [`Reply::Pending`] stops the loop: it is not consumed, [`Progress::pending`] holds its
//! ticket, and the caller calls again when the ticket is done. A parse error produces one error
//! response and `close`; what was answered before it stays answered.
//!
//! Bounded output: one call stops answering once its responses reach [`MAX_OUTPUT`] bytes
//! ([`Progress::more`]); the caller writes them and calls again only when its own send queue
//! has drained below that. A client that pipelines requests without reading the answers thus
//! makes the server hold less than 2 x [`MAX_OUTPUT`] of responses (plus one response) per
//! connection; the unread requests stay in the receive buffer, which closes the client's
//! window (our TCP) or fills its socket buffer (`serve`).
//!
//! Injected failures ([`crate::live::faults`]): a [`Reply::Later`] answer is pushed with
//! [`Outgoing::delay`] and ends the loop (the front door sends it, and reads on, only after
//! the delay); a [`Reply::Drop`] pushes nothing, ends the loop and sets [`Progress::drop`]
//! (the front door ends the connection without answering, after what was answered before).

use bytes::Bytes;

use super::parse::{header_array, parse_request, HttpError, Limits, Parsed};
use super::request::{Method, Request};
use super::response::{DropKind, Reply, Response};
use crate::cloud::RequestContext;
use crate::pending::Ticket;
use crate::snapshot::Snapshot;
use crate::wire::checksum::PartialSum;

/// The response bytes one call of [`respond_all`] produces before it stops (the last
/// response may cross it), and the send-queue level below which a front door calls again.
pub const MAX_OUTPUT: usize = 128 * 1024;

/// One response, ready for the transport.
#[derive(Debug)]
pub struct Outgoing {
    pub bytes: Bytes,
    /// Precomputed ones'-complement sum of `bytes`, when known.
    pub sum: Option<PartialSum>,
    /// IP TTL / hop limit to send it with, when not the default.
    pub ip_ttl: Option<u8>,
    /// Send it (and anything after it) only this much later.
    pub delay: Option<std::time::Duration>,
}

/// Where responses go; a transport queues or writes them.
pub trait Sink {
    fn push(&mut self, out: Outgoing);

    /// Told once per answered request, just before its response is pushed: the request
    /// (`None` when it could not be parsed) and the status answered. Front doors count and log
    /// here ([`crate::metrics::answered`]); the default ignores it.
    fn answered(&mut self, _request: Option<&Request<'_>>, _status: u16) {}
}

impl Sink for Vec<Outgoing> {
    fn push(&mut self, out: Outgoing) {
        Vec::push(self, out);
    }
}

/// What [`respond_all`] did with the buffer.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Bytes of `buf` consumed by answered requests.
    pub consumed: usize,
    /// Requests answered.
    pub answered: usize,
    /// The connection must be closed after the responses are sent.
    pub close: bool,
    /// The first unanswered request waits on this ticket: it and everything after it stay in
    /// the buffer (not consumed) until the front door re-runs them.
    pub pending: Option<Ticket>,
    /// Answering stopped at [`MAX_OUTPUT`] with complete requests possibly left in the buffer:
    /// call again once the responses are written (or queued below [`MAX_OUTPUT`]).
    pub more: bool,
    /// End the connection this way, without answering the last request (consumed).
    pub drop: Option<DropKind>,
}

/// Answers every complete request at the start of `buf` from `snapshot`.
pub fn respond_all(
    buf: &[u8],
    snapshot: &Snapshot,
    ctx: &RequestContext,
    limits: &Limits,
    sink: &mut impl Sink,
) -> Progress {
    respond_all_with(buf, limits, sink, |request| snapshot.respond(request, ctx))
}

/// [`respond_all`] with the answer of each request given by `respond` (a door with state of
/// its own, such as HIMDS's key ring, wraps the snapshot in it).
pub fn respond_all_with<'s>(
    buf: &[u8],
    limits: &Limits,
    sink: &mut impl Sink,
    mut respond: impl FnMut(&Request<'_>) -> Reply<'s>,
) -> Progress {
    let mut progress = Progress {
        consumed: 0,
        answered: 0,
        close: false,
        pending: None,
        more: false,
        drop: None,
    };
    let sink = &mut CountingSink {
        inner: sink,
        bytes: 0,
    };
    while progress.consumed < buf.len() {
        if sink.bytes >= MAX_OUTPUT {
            progress.more = true;
            break;
        }
        let mut headers = header_array();
        match parse_request(&buf[progress.consumed..], &mut headers, limits) {
            Ok(Parsed::Partial) => break,
            Ok(Parsed::Complete { request, len }) => {
                let close = request.wants_close();
                let head_only = request.method == Method::Head;
                let (reply, delay) = match respond(&request) {
                    Reply::Later(d, inner) => (*inner, Some(d)),
                    reply => (reply, None),
                };
                match reply {
                    Reply::Static(pre) => {
                        sink.answered(Some(&request), pre.status());
                        push_prebuilt(sink, pre, close, head_only, delay);
                    }
                    Reply::Shared(pre) => {
                        sink.answered(Some(&request), pre.status());
                        push_prebuilt(sink, &pre, close, head_only, delay);
                    }
                    Reply::Dynamic(resp) => {
                        sink.answered(Some(&request), resp.status);
                        push_dynamic(sink, &resp, close, head_only, delay);
                    }
                    Reply::Pending(ticket) => {
                        progress.pending = Some(ticket);
                        break;
                    }
                    Reply::Later(d, _) => {
                        // Not produced (a fault wraps a cloud's answer once); answered as a
                        // failure of the server rather than guessed at.
                        let resp = Response::new(500).body("nested delay\n");
                        sink.answered(Some(&request), resp.status);
                        push_dynamic(sink, &resp, true, head_only, Some(d));
                        progress.close = true;
                    }
                    Reply::Drop(kind) => {
                        // No status was sent: counted and logged as 0.
                        sink.answered(Some(&request), 0);
                        progress.consumed += len;
                        progress.drop = Some(kind);
                        progress.close = true;
                        break;
                    }
                }
                progress.consumed += len;
                progress.answered += 1;
                if close || progress.close {
                    progress.close = true;
                    break;
                }
                if delay.is_some() {
                    break;
                }
            }
            Err(e) => {
                let resp = error_response(e);
                sink.answered(None, resp.status);
                push_dynamic(sink, &resp, true, false, None);
                progress.close = true;
                break;
            }
        }
    }
    progress
}

/// The response to a request that could not be parsed. No cloud can be told apart yet, so
/// the answer is a plain-text status, as the services' front ends give for framing errors.
pub fn error_response(e: HttpError) -> Response {
    Response::new(e.status())
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(format!("{e}\n"))
}

/// Counts the bytes pushed through it, for the [`MAX_OUTPUT`] bound.
struct CountingSink<'a, S> {
    inner: &'a mut S,
    bytes: usize,
}

impl<S: Sink> Sink for CountingSink<'_, S> {
    fn push(&mut self, out: Outgoing) {
        self.bytes += out.bytes.len();
        self.inner.push(out);
    }

    fn answered(&mut self, request: Option<&Request<'_>>, status: u16) {
        self.inner.answered(request, status);
    }
}

fn push_prebuilt(
    sink: &mut impl Sink,
    pre: &super::response::Prebuilt,
    close: bool,
    head_only: bool,
    delay: Option<std::time::Duration>,
) {
    let (bytes, sum) = pre.wire(close, head_only);
    sink.push(Outgoing {
        bytes,
        sum,
        ip_ttl: None,
        delay,
    });
}

fn push_dynamic(
    sink: &mut impl Sink,
    resp: &Response,
    close: bool,
    head_only: bool,
    delay: Option<std::time::Duration>,
) {
    let (bytes, _) = resp.render(close, head_only);
    sink.push(Outgoing {
        bytes: Bytes::from(bytes),
        sum: None,
        ip_ttl: resp.ip_ttl,
        delay,
    });
}
