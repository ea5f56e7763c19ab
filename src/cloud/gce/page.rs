//! Response framing for the GCE metadata server: the headers every answer carries and the
//! Google front-end error pages.
//!
//! Contract: every response built here carries, in this order, `Metadata-Flavor: Google`,
//! `Content-Type`, `ETag`, (`Location`), `Server: Metadata Server for VM`,
//! `X-XSS-Protection: 0` and `X-Frame-Options: SAMEORIGIN` (spec/gce.md: "headers on EVERY
//! response, 404 included"). The ETag is 16 lowercase hex digits derived from the body, so a
//! pre-rendered answer's ETag is fixed at build time.
//!
//! ETag: Google's emulator uses the last 16 hex digits of an MD5 of the content; clients only
//! compare ETags for equality (Go's `Subscribe`, `last_etag`), so any stable 64-bit content
//! hash serves. We use SipHash-2-4 with a fixed key (already a dependency) rather than MD5.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::http::Response;

/// Leaf values and listings (spec: `application/text`, not `text/plain`).
pub const TEXT: &str = "application/text";
/// Exactly this, with no charset: old gcloud compares the whole header.
pub const JSON: &str = "application/json";
/// Error pages, as Google's front end sends them.
pub const HTML: &str = "text/html; charset=UTF-8";

/// The ETag of `body`: 16 hex digits.
pub fn etag(body: &[u8]) -> String {
    let mut h = SipHasher24::new_with_keys(0x696d_6473_2d74_756e, 0x6763_652d_6574_6167);
    h.write(body);
    format!("{:016x}", h.finish())
}

/// A response with the GCE headers and `body`.
pub fn answer(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
    answer_with(status, content_type, None, body.into())
}

/// A 301 to `location`; the body is the location, as the server writes it.
pub fn redirect(location: &str) -> Response {
    answer_with(301, HTML, Some(location), location.as_bytes().to_vec())
}

fn answer_with(
    status: u16,
    content_type: &'static str,
    location: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut r = Response::new(status)
        .header("Metadata-Flavor", "Google")
        .header("Content-Type", content_type)
        .header("ETag", etag(&body));
    if let Some(l) = location {
        r = r.header("Location", l);
    }
    r.header("Server", "Metadata Server for VM")
        .header("X-XSS-Protection", "0")
        .header("X-Frame-Options", "SAMEORIGIN")
        .body(body)
}

/// Google's front-end error page: `Error 404 (Not Found)!!1` and a message in HTML.
pub fn google_error(status: u16, message_html: &str) -> Response {
    let reason = crate::http::response::reason(status);
    let body = format!(
        "<!DOCTYPE html>\n\
<html lang=en>\n  \
<meta charset=utf-8>\n  \
<meta name=viewport content=\"initial-scale=1, minimum-scale=1, width=device-width\">\n  \
<title>Error {status} ({reason})!!1</title>\n  \
<style>\n    {STYLE}\n  </style>\n  \
<a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n  \
<p><b>{status}.</b> <ins>That\u{2019}s an error.</ins>\n  \
<p>{message_html}  <ins>That\u{2019}s all we know.</ins>\n"
    );
    answer(status, HTML, body)
}

/// 404 for `path`.
pub fn not_found(path: &str) -> Response {
    google_error(
        404,
        &format!(
            "The requested URL <code>{}</code> was not found on this server.",
            escape(path)
        ),
    )
}

/// 403 for a request without `Metadata-Flavor: Google`.
pub fn missing_flavor(path: &str) -> Response {
    google_error(
        403,
        &format!(
            "Your client does not have permission to get URL <code>{}</code> from this server. \
             Missing Metadata-Flavor:Google header.",
            escape(path)
        ),
    )
}

/// 403 for a request that came through a proxy (`X-Forwarded-For`). Google's front end
/// gives no reason beyond the permission sentence; the status is SR's (unconfirmed).
pub fn forwarded(path: &str) -> Response {
    google_error(
        403,
        &format!(
            "Your client does not have permission to get URL <code>{}</code> from this server.",
            escape(path)
        ),
    )
}

/// An injected failure in the style of Google's front end. The metadata server answers 503
/// briefly during maintenance and 429 when rate-limited (spec/gce.md); its texts are
/// unconfirmed.
pub fn fault(status: u16, path: &str) -> Response {
    let message = match status {
        429 => "Too many requests; retry later.".to_string(),
        503 => "The service is currently unavailable; retry.".to_string(),
        410 | 404 => format!(
            "The requested URL <code>{}</code> was not found on this server.",
            escape(path)
        ),
        _ => "The server encountered an error and could not complete your request.".to_string(),
    };
    google_error(status, &message)
}

/// 400 for bad query parameters.
pub fn bad_request() -> Response {
    google_error(
        400,
        "Your client has issued a malformed or illegal request.",
    )
}

/// 405 for a method the path does not take.
pub fn method_not_allowed(method: &str, path: &str) -> Response {
    google_error(
        405,
        &format!(
            "The request method <code>{}</code> is inappropriate for the URL <code>{}</code>.",
            escape(method),
            escape(path)
        ),
    )
}

/// HTML-escapes text quoted from the request.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}html{background:#fff;color:#222;padding:15px}body{margin:7% auto 0;max-width:390px;min-height:180px;padding:30px 0 15px}* > body{background:url(//www.google.com/images/errors/robot.png) 100% 5px no-repeat;padding-right:205px}p{margin:11px 0 22px;overflow:hidden}ins{color:#777;text-decoration:none}a img{border:0}@media screen and (max-width:772px){body{background:none;margin-top:0;max-width:none;padding-right:0}}#logo{background:url(//www.google.com/images/branding/googlelogo/1x/googlelogo_color_150x54dp.png) no-repeat;margin-left:-5px}@media only screen and (min-resolution:192dpi){#logo{background:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) no-repeat 0% 0%/100% 100%;-moz-border-image:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) 0}}@media only screen and (-webkit-min-device-pixel-ratio:2){#logo{background:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) no-repeat;-webkit-background-size:100% 100%}}#logo{display:inline-block;height:54px;width:150px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_the_four_headers_and_an_etag() {
        for r in [answer(200, TEXT, "x"), not_found("/a<b"), redirect("/v1/")] {
            assert_eq!(r.header_value("Metadata-Flavor"), Some("Google"));
            assert_eq!(r.header_value("Server"), Some("Metadata Server for VM"));
            assert_eq!(r.header_value("X-XSS-Protection"), Some("0"));
            assert_eq!(r.header_value("X-Frame-Options"), Some("SAMEORIGIN"));
            let e = r.header_value("ETag").unwrap_or_default();
            assert!(
                e.len() == 16 && e.bytes().all(|b| b.is_ascii_hexdigit()),
                "{e}"
            );
        }
    }

    #[test]
    fn etag_is_deterministic_and_content_bound() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
    }

    #[test]
    fn error_pages_escape_the_path() {
        let body = String::from_utf8(not_found("/a<b>").body).unwrap_or_default();
        assert!(body.contains("<code>/a&lt;b&gt;</code> was not found on this server."));
        assert!(body.contains("<title>Error 404 (Not Found)!!1</title>"));
    }
}
