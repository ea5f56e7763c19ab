//! Incremental, bounded parsing of one HTTP/1.x request (head and body) from a buffer.
//!
//! Contract: `parse_request` never buffers anything itself; the caller keeps the bytes and
//! calls again when more arrive. It returns [`Parsed::Partial`] until a whole request is in the
//! buffer, then the request and its length, so pipelined requests are taken one at a time.
//! Bounds are checked on partial input too: a client cannot make the caller hold more than
//! `max_head_bytes` of head or `max_body_bytes` of body.
//!
//! Only `Content-Length` bodies are accepted. A `Transfer-Encoding` request gets 501 (RFC 9112
//! 6.1 lets a server reject a transfer coding it does not implement); no metadata client sends
//! chunked bodies.

use super::request::{Header, Method, Request};

/// The most headers a request may carry; the header array lives on the stack.
pub const MAX_HEADERS: usize = 64;

/// Bounds on what one request may make the server buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes (431 above it).
    pub max_head_bytes: usize,
    /// Headers per request, at most [`MAX_HEADERS`] (431 above it).
    pub max_headers: usize,
    /// Body bytes (413 above it).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: MAX_HEADERS,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a request could not be parsed. Each maps to one status; the connection is closed after
/// the error response because the request boundary is no longer known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request header fields too large")]
    HeadTooLarge,
    #[error("request target too long")]
    UriTooLong,
    #[error("too many request header fields")]
    TooManyHeaders,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("transfer codings are not implemented")]
    TransferCoding,
    #[error("HTTP version not supported")]
    Version,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            // RFC 9112 3: a request-target longer than the server parses MUST get 414.
            HttpError::UriTooLong => 414,
            HttpError::BodyTooLarge => 413,
            HttpError::TransferCoding => 501,
            HttpError::Version => 505,
        }
    }
}

/// Outcome of looking at a buffer.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// More bytes are needed; nothing is wrong yet.
    Partial,
    /// A whole request occupying the first `len` bytes of the buffer.
    Complete { request: Request<'b>, len: usize },
}

/// An empty header array for [`parse_request`].
pub fn header_array<'b>() -> [Header<'b>; MAX_HEADERS] {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// Parses the request at the start of `buf`, using `headers` as scratch space.
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &'b mut [Header<'b>],
    limits: &Limits,
) -> Result<Parsed<'b>, HttpError> {
    let max_headers = limits.max_headers.min(headers.len());
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head_bytes {
                Err(too_large(buf, limits))
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::Version),
        Err(e) => return Err(HttpError::Malformed(malformed_reason(e))),
    };
    if head_len > limits.max_head_bytes {
        return Err(too_large(buf, limits));
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    if !target.starts_with('/') {
        // Absolute-form and authority-form targets are for proxies (RFC 9112 3.2).
        return Err(HttpError::Malformed("request target is not a path"));
    }
    let headers: &'b [Header<'b>] = req.headers;
    let body_len = body_length(headers)?;
    if body_len > limits.max_body_bytes {
        return Err(HttpError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(Parsed::Partial);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Parsed::Complete {
        request: Request {
            method: Method::from_token(method),
            target,
            path,
            query,
            minor_version,
            headers,
            body: &buf[head_len..total],
        },
        len: total,
    })
}

/// Over the head limit: 414 when the request line alone does not fit (the target is what
/// is long), else 431 (the header fields are).
fn too_large(buf: &[u8], limits: &Limits) -> HttpError {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.is_none_or(|end| end >= limits.max_head_bytes) {
        HttpError::UriTooLong
    } else {
        HttpError::HeadTooLarge
    }
}

/// The body length from `Content-Length`; several differing values are an error
/// (RFC 9112 6.3 item 5).
fn body_length(headers: &[Header<'_>]) -> Result<usize, HttpError> {
    let mut length: Option<usize> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferCoding);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::Malformed("invalid Content-Length"))?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Malformed("invalid Content-Length"));
            }
            let n: usize = text.parse().map_err(|_| HttpError::BodyTooLarge)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

fn malformed_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        _ => "invalid request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method, path, query, body length and request length of a complete request.
    type Summary = (Method, String, String, usize, usize);

    fn parse(buf: &[u8]) -> Result<Option<Summary>, HttpError> {
        let mut headers = header_array();
        match parse_request(buf, &mut headers, &Limits::default())? {
            Parsed::Partial => Ok(None),
            Parsed::Complete { request, len } => Ok(Some((
                request.method,
                request.path.to_string(),
                request.query.to_string(),
                request.body.len(),
                len,
            ))),
        }
    }

    #[test]
    fn complete_get_splits_path_and_query() {
        let buf =
            b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nMetadata: true\r\n\r\n";
        let got = parse(buf).ok().flatten();
        assert_eq!(
            got,
            Some((
                Method::Get,
                "/metadata/instance".into(),
                "api-version=2021-02-01".into(),
                0,
                buf.len()
            ))
        );
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"PUT /latest/api/token HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..buf.len() {
            assert!(matches!(parse(&buf[..cut]), Ok(None)), "prefix {cut}");
        }
        assert_eq!(
            parse(buf).ok().flatten().map(|r| (r.3, r.4)),
            Some((3, buf.len()))
        );
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let one = b"GET /a HTTP/1.1\r\n\r\n";
        let mut two = one.to_vec();
        two.extend_from_slice(b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&two).ok().flatten().map(|r| r.4), Some(one.len()));
    }

    #[test]
    fn bounds_are_enforced_before_completion() {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse(&long), Err(HttpError::UriTooLong));
        let mut fields = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        fields.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse(&fields), Err(HttpError::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(HttpError::TooManyHeaders));
        let big = b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n";
        assert_eq!(parse(big), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn garbage_and_framing_errors() {
        assert!(matches!(
            parse(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::TransferCoding)
        );
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(HttpError::Version));
    }
}
