//! A parsed request: a borrowed view of the bytes in the connection's buffer.
//!
//! Contract: every field borrows from the buffer; building a `Request` allocates nothing.
//! The target is split once into `path` and `query` (the raw, still percent-encoded text).

use super::query::QueryPairs;

/// Request methods the metadata services distinguish; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Other,
}

impl Method {
    pub(crate) fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// One header as received: the name as sent (any case), the raw value bytes.
pub type Header<'b> = httparse::Header<'b>;

/// A complete request (head and body) borrowed from the receive buffer.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: Method,
    /// The request target as sent, e.g. `/metadata/instance?api-version=2021-02-01`.
    pub target: &'b str,
    /// The target up to (not including) `?`, still percent-encoded.
    pub path: &'b str,
    /// The text after `?`, or `""`.
    pub query: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: &'b [Header<'b>],
    pub body: &'b [u8],
}

impl<'b> Request<'b> {
    /// The value of the first header named `name` (ASCII case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first header named `name`, trimmed of optional whitespace (RFC 9110 5.5) and as
    /// text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'b str> {
        let raw = self.header(name)?;
        std::str::from_utf8(raw)
            .ok()
            .map(|s| s.trim_matches([' ', '\t']))
    }

    /// True when at least one header named `name` is present and every one of them, trimmed
    /// of optional whitespace and as text, satisfies `accept`. For the headers that show a
    /// request was not relayed by a proxy or a server-side request forgery (`Metadata: true`,
    /// `Metadata-Flavor: Google`): RFC 9110 5.3 forbids repeating a field that is not a list,
    /// so two such headers that disagree (`Metadata: false` then `Metadata: true`) are
    /// ambiguous and count as absent, whichever comes first; the same value twice is accepted.
    pub fn header_unanimous(&self, name: &str, accept: impl Fn(&str) -> bool) -> bool {
        let mut seen = false;
        for h in self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
        {
            let value = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim_matches([' ', '\t']));
            if !value.is_some_and(&accept) {
                return false;
            }
            seen = true;
        }
        seen
    }

    /// True when a header named `name` is present at all (whatever its value).
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Query pairs in order, percent-decoding on demand.
    pub fn query_pairs(&self) -> QueryPairs<'b> {
        QueryPairs::new(self.query)
    }

    /// Whether the client asked the server to close after this response: HTTP/1.0 (we do
    /// not implement 1.0 keep-alive) or a `Connection: close` token (RFC 9112 9.6).
    pub fn wants_close(&self) -> bool {
        if self.minor_version == 0 {
            return true;
        }
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .any(|h| {
                h.value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            })
    }
}
