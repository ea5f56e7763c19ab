//! Responses: rendered once into bytes ([`Prebuilt`]) or per request ([`Response`]).
//!
//! Contract: a [`Prebuilt`] holds the complete bytes of a response twice, once for a
//! connection that stays open and once ending in `Connection: close`, each with the
//! ones'-complement sum of its bytes precomputed for the TCP checksum. Handing one out is a
//! reference-count increment: no allocation, no copy. `Content-Length` and `Connection` are
//! always written by this module, never by a cloud, so framing cannot disagree with the body.
//!
//! There is no `Date` header: a pre-serialised answer cannot carry the time, and no metadata
//! client reads it (RFC 9110 6.6.1 lets a server without a usable clock omit it).

use bytes::Bytes;

use crate::wire::checksum::PartialSum;

/// What a cloud answers to one request.
#[derive(Debug)]
pub enum Reply<'s> {
    /// Pre-serialised bytes from the snapshot.
    Static(&'s Prebuilt),
    /// Rendered for this request (tokens, errors that echo input, event state).
    Dynamic(Response),
    /// Not yet: the answer waits on work off the packet path (an upstream token fetch). The
    /// front door keeps the request and re-runs it when the ticket is done
    /// ([`crate::pending`]).
    Pending(crate::pending::Ticket),
    /// Pre-serialised bytes that outlive no snapshot but are shared (a live document rendered
    /// once per change): handing it out is reference-count increments, no allocation.
    Shared(Prebuilt),
    /// This answer, sent this much later (an injected latency). The request is answered now
    /// and its bytes wait off the packet path; nothing after it on the connection is
    /// answered before they are sent.
    Later(std::time::Duration, Box<Reply<'s>>),
    /// No answer: the connection ends (an injected failure).
    Drop(DropKind),
}

/// How a connection ends without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    /// RST: the client sees "connection reset by peer".
    Reset,
    /// FIN without an answer: the client sees the server close the connection.
    Close,
}

/// A response rendered once for both connection modes.
#[derive(Clone, Debug)]
pub struct Prebuilt {
    status: u16,
    keep_alive: Rendered,
    close: Rendered,
}

#[derive(Clone, Debug)]
struct Rendered {
    bytes: Bytes,
    head_len: usize,
    sum: PartialSum,
}

impl Rendered {
    fn new(bytes: Vec<u8>, head_len: usize) -> Self {
        let sum = PartialSum::of(&bytes);
        let bytes = Bytes::from(bytes);
        // `Bytes::from(Vec)` allocates its shared header on the first clone; take that clone
        // now so that handing out the bytes on the request path never allocates.
        drop(bytes.clone());
        Rendered {
            bytes,
            head_len,
            sum,
        }
    }
}

impl Prebuilt {
    /// The bytes to send and their precomputed sum. `head_only` (for HEAD) cuts the body; its
    /// sum is then not precomputed.
    pub fn wire(&self, close: bool, head_only: bool) -> (Bytes, Option<PartialSum>) {
        let r = if close { &self.close } else { &self.keep_alive };
        if head_only {
            (r.bytes.slice(..r.head_len), None)
        } else {
            (r.bytes.clone(), Some(r.sum))
        }
    }

    /// The status code (for metrics and the access log).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The keep-alive bytes, for tests and golden files.
    pub fn bytes(&self) -> &[u8] {
        &self.keep_alive.bytes
    }
}

/// A response built per request, or the source a [`Prebuilt`] is rendered from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// IP TTL / hop limit for the segments carrying this response (AWS IMDSv2 PUT hop limit);
    /// `None` for the default. Only the TUN front door can honour it.
    pub ip_ttl: Option<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            ip_ttl: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn ip_ttl(mut self, ttl: u8) -> Self {
        self.ip_ttl = Some(ttl);
        self
    }

    /// The first header named `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Renders status line, headers, framing headers and (unless `head_only`) the body.
    /// Returns the bytes and the length of the head.
    pub fn render(&self, close: bool, head_only: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(160 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(self.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let head_len = out.len();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        (out, head_len)
    }

    /// Renders both connection variants once.
    pub fn prebuild(&self) -> Prebuilt {
        let (ka, ka_head) = self.render(false, false);
        let (cl, cl_head) = self.render(true, false);
        Prebuilt {
            status: self.status,
            keep_alive: Rendered::new(ka, ka_head),
            close: Rendered::new(cl, cl_head),
        }
    }
}

/// Reason phrases for the statuses the services send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_framing_for_both_modes() {
        let r = Response::new(200)
            .header("Content-Type", "text/plain")
            .body("hi");
        let p = r.prebuild();
        assert_eq!(
            p.bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        let (close, sum) = p.wire(true, false);
        assert_eq!(
            &close[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert_eq!(sum, Some(PartialSum::of(&close)));
        let (head, _) = p.wire(false, true);
        assert!(head.ends_with(b"Content-Length: 2\r\n\r\n"));
    }
}
