//! The headers and error answers of EC2 IMDS, as observed on instances.
//!
//! Observed (curl -v on EC2, 2020-2025):
//! - 200: `Content-Type: text/plain`, `Accept-Ranges: none`, `Last-Modified`, `Server: EC2ws`
//!   (user-data: `application/octet-stream`). JSON documents are `text/plain` too.
//! - token PUT 200: `X-Aws-Ec2-Metadata-Token-Ttl-Seconds: <ttl>`, `Server: EC2ws`,
//!   `Content-Type: text/plain`, the 56-character token as the body.
//! - 401: empty body, `Content-Type: text/plain`, `Server: EC2ws`.
//! - 405 on the token path: empty body, `Allow: OPTIONS, PUT`, same two headers.
//! - 404: `Content-Type: text/html` and the XHTML page in [`NOT_FOUND_PAGE`], byte for byte
//!   (339 bytes, tabs included).
//!
//! Unconfirmed and chosen: 400 and 403 have the same empty `text/plain` shape as 401 and 405
//! (they come from the same token front end); 405 on other paths says `Allow: GET, HEAD`.
//!
//! Differences we accept: real IMDS sends `Date` and `Connection: close` on every answer and
//! HTTP/1.1 keep-alive is ours to keep (no client depends on either). Real IMDS also adds the
//! token's remaining lifetime (`X-Aws-Ec2-Metadata-Token-Ttl-Seconds`) to GETs made with a
//! token; no SDK reads it (botocore, JS v3, Go v2 and Rust read it only from the PUT), and it
//! would make every IMDSv2 answer per-request, so GETs are answered from the snapshot without
//! it. The status line says `Method Not Allowed` where EC2 says `Not Allowed`: the reason
//! phrase belongs to the shared HTTP layer and no client reads it.

use crate::http::{Prebuilt, Response};

pub const SERVER: &str = "EC2ws";
pub const TEXT: &str = "text/plain";
pub const OCTETS: &str = "application/octet-stream";

/// The 404 body, exactly as EC2 sends it.
pub const NOT_FOUND_PAGE: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
\t\t \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
<head>\n  \
<title>404 - Not Found</title>\n \
</head>\n \
<body>\n  \
<h1>404 - Not Found</h1>\n \
</body>\n\
</html>\n";

/// A 200 metadata answer.
pub fn ok(content_type: &str, last_modified: Option<&str>, body: impl Into<Vec<u8>>) -> Response {
    let mut r = Response::new(200)
        .header("Content-Type", content_type)
        .header("Accept-Ranges", "none");
    if let Some(lm) = last_modified {
        r = r.header("Last-Modified", lm);
    }
    r.header("Server", SERVER).body(body)
}

/// The answer to a good token PUT; sent with IP TTL `hop_limit`.
pub fn token(token: String, ttl: u32, hop_limit: u8) -> Response {
    Response::new(200)
        .header("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl.to_string())
        .header("Server", SERVER)
        .header("Content-Type", TEXT)
        .body(token)
        .ip_ttl(hop_limit)
}

/// An injected failure: EC2's XHTML error page (the shape of its 404, [`NOT_FOUND_PAGE`]) with
/// the status in the title. EC2 throttles IMDS per instance; its pages for statuses other
/// than 404 are unconfirmed.
pub fn fault(status: u16) -> Response {
    let title = format!("{status} - {}", crate::http::response::reason(status));
    Response::new(status)
        .header("Content-Type", "text/html")
        .header("Server", SERVER)
        .body(NOT_FOUND_PAGE.replace("404 - Not Found", &title))
}

/// An empty-bodied error from the token front end.
fn empty(status: u16) -> Response {
    Response::new(status)
        .header("Server", SERVER)
        .header("Content-Type", TEXT)
}

/// Every error answer, rendered once. The `Response` forms stay for `/`, whose static
/// answers the snapshot replaces with the shared version list (so errors there must be
/// dynamic).
#[derive(Debug)]
pub struct Errors {
    pub bad_request: Response,
    pub unauthorized: Response,
    pub forbidden: Response,
    pub not_found: Response,
    pub method_not_allowed: Response,
    pub token_method_not_allowed: Response,
    pub bad_request_pre: Prebuilt,
    pub unauthorized_pre: Prebuilt,
    pub forbidden_pre: Prebuilt,
    pub not_found_pre: Prebuilt,
    pub method_not_allowed_pre: Prebuilt,
    pub token_method_not_allowed_pre: Prebuilt,
}

impl Errors {
    pub fn render() -> Errors {
        let bad_request = empty(400);
        let unauthorized = empty(401);
        let forbidden = empty(403);
        let not_found = Response::new(404)
            .header("Content-Type", "text/html")
            .header("Server", SERVER)
            .body(NOT_FOUND_PAGE);
        let method_not_allowed = Response::new(405)
            .header("Allow", "GET, HEAD")
            .header("Server", SERVER)
            .header("Content-Type", TEXT);
        let token_method_not_allowed = Response::new(405)
            .header("Allow", "OPTIONS, PUT")
            .header("Server", SERVER)
            .header("Content-Type", TEXT);
        Errors {
            bad_request_pre: bad_request.prebuild(),
            unauthorized_pre: unauthorized.prebuild(),
            forbidden_pre: forbidden.prebuild(),
            not_found_pre: not_found.prebuild(),
            method_not_allowed_pre: method_not_allowed.prebuild(),
            token_method_not_allowed_pre: token_method_not_allowed.prebuild(),
            bad_request,
            unauthorized,
            forbidden,
            not_found,
            method_not_allowed,
            token_method_not_allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_page_is_the_observed_339_bytes() {
        assert_eq!(NOT_FOUND_PAGE.len(), 339);
        assert!(NOT_FOUND_PAGE.contains("\n\t\t \"http://www.w3.org/TR/xhtml1/DTD/"));
        assert!(NOT_FOUND_PAGE.contains("\n <head>\n  <title>404 - Not Found</title>\n </head>"));
    }
}
