//! How IMDS frames its answers, and every error it sends.
//!
//! Contract: every Azure answer carries `Server: IMDS/150.870.65.1854` (MSAL .NET's probe reads a
//! build number > 1324 in it as real IMDS) and `Content-Type: application/json; charset=utf-8`
//! for JSON or `text/plain; charset=utf-8` for text. Error bodies that do not quote the request
//! are rendered once into [`Errors`]; the 404 and 405 bodies quote the path and method, so they
//! are built per request.
//!
//! Two error styles exist. Metadata endpoints send `{"error": "..."}` [Spec ErrorResponse];
//! identity endpoints (`/metadata/identity/oauth2/token`, `/metadata/identity/info`) send
//! `{"error": "<code>", "error_description": "..."}` [Spec IdentityErrorResponse], which is what
//! MSAL and azure-identity parse.
//!
//! Bodies confirmed by public sources: the bad api-version body with `newest-versions`
//! [IMDS], "Required metadata header not specified" (token endpoint and, in the Go simulator's
//! JSON wrapping, metadata paths), "Identity not found", the 404 "API is not found: Path = ...,
//! Method = ..." and 405 "Http method is not allowed: Path = ..., Method = ..." texts (IMDS's
//! load-balancer troubleshooting page), and "No load balancer metadata is found..." [LB].
//! Unconfirmed, chosen here in the same `"Bad request. ..."` style real bodies use: the
//! `X-Forwarded-For` rejection (400, like any request IMDS refuses to serve), a leaf asked for
//! without `format=text`, an unknown `format`, a duplicate or malformed query, an invalid
//! scheduled-events payload, an invalid attested-document `nonce`, and the token endpoint's
//! api-version, resource, selector and `bypass_cache` errors (`invalid_request`, the code IMDS
//! uses for request errors); a token or document that cannot be produced is a 500
//! (`server_error` for tokens), which every client retries.

use serde_json::json;

use super::rules::ApiVersions;
use crate::http::{Method, Prebuilt, Response};

/// The `Server` header real IMDS sends.
pub const SERVER: &str = "IMDS/150.870.65.1854";
pub const JSON_TYPE: &str = "application/json; charset=utf-8";
pub const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// A JSON answer.
pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(status)
        .header("Content-Type", JSON_TYPE)
        .header("Server", SERVER)
        .body(body)
}

/// A text answer.
pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(status)
        .header("Content-Type", TEXT_TYPE)
        .header("Server", SERVER)
        .body(body)
}

/// A metadata-style error body.
fn error_body(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// An identity-style error body.
fn identity_body(code: &str, description: &str) -> String {
    json!({ "error": code, "error_description": description }).to_string()
}

/// The bad api-version body [IMDS]: the message and the three newest versions.
fn api_version_body(versions: &ApiVersions) -> String {
    let newest: Vec<&str> = versions.newest(3).collect();
    json!({
        "error": "Bad request. api-version is invalid or was not specified in the request. \
                  For more information refer to aka.ms/azureimds",
        "newest-versions": newest,
    })
    .to_string()
}

/// Error answers rendered once per snapshot.
#[derive(Debug)]
pub struct Errors {
    pub missing_metadata: Prebuilt,
    pub forwarded: Prebuilt,
    pub bad_api_version: Prebuilt,
    pub bad_events_api_version: Prebuilt,
    pub leaf_needs_text: Prebuilt,
    pub bad_format: Prebuilt,
    pub bad_query: Prebuilt,
    pub duplicate_query: Prebuilt,
    pub no_loadbalancer: Prebuilt,
    pub bad_start_requests: Prebuilt,
    pub bad_nonce: Prebuilt,
    /// The attested document could not be signed (500, retryable).
    pub attested_unavailable: Prebuilt,
    pub identity: IdentityErrors,
}

/// Identity-style error answers.
#[derive(Debug)]
pub struct IdentityErrors {
    pub missing_metadata: Prebuilt,
    pub forwarded: Prebuilt,
    pub bad_query: Prebuilt,
    pub duplicate_query: Prebuilt,
    pub bad_api_version: Prebuilt,
    pub missing_resource: Prebuilt,
    pub many_selectors: Prebuilt,
    pub bad_bypass_cache: Prebuilt,
    pub not_found: Prebuilt,
    /// The identity's source has no token now (500: every client retries 5xx [VMtok]).
    pub unavailable: Prebuilt,
}

impl Errors {
    pub fn new(versions: &ApiVersions, events_versions: &ApiVersions) -> Errors {
        let bad = |m: &str| json(400, error_body(m)).prebuild();
        let id = |m: &str| json(400, identity_body("invalid_request", m)).prebuild();
        Errors {
            missing_metadata: bad("Bad request. Required metadata header not specified"),
            forwarded: bad("Bad request. X-Forwarded-For header is not allowed"),
            bad_api_version: json(400, api_version_body(versions)).prebuild(),
            bad_events_api_version: json(400, api_version_body(events_versions)).prebuild(),
            leaf_needs_text: bad(
                "Bad request. Leaf nodes must be requested with format=text. For more \
                 information refer to aka.ms/azureimds",
            ),
            bad_format: bad("Bad request. format is invalid: use json or text"),
            bad_query: bad("Bad request. The query string is malformed"),
            duplicate_query: bad("Bad request. Duplicate query parameter names are not allowed"),
            no_loadbalancer: json(
                404,
                error_body(
                    "No load balancer metadata is found. Please check if your VM is using any \
                     non-basic SKU load balancer and retry later.",
                ),
            )
            .prebuild(),
            bad_start_requests: bad(
                "Bad request. Expected {\"StartRequests\":[{\"EventId\":\"<id>\"}]} naming \
                 scheduled events",
            ),
            bad_nonce: bad(
                "Bad request. nonce is invalid: use 1 to 32 letters or digits. For more \
                 information refer to aka.ms/azureimds",
            ),
            attested_unavailable: json(
                500,
                error_body("Internal server error. The attested document could not be signed"),
            )
            .prebuild(),
            identity: IdentityErrors {
                missing_metadata: id("Required metadata header not specified"),
                forwarded: id("X-Forwarded-For header is not allowed"),
                bad_query: id("The query string is malformed"),
                duplicate_query: id("Duplicate query parameter names are not allowed"),
                bad_api_version: id(
                    "api-version is invalid or was not specified in the request; use \
                     2018-02-01 or later",
                ),
                missing_resource: id("Required query variable 'resource' is missing"),
                many_selectors: id(
                    "Only one of client_id, object_id and msi_res_id may be specified",
                ),
                bad_bypass_cache: id("bypass_cache must be 'true' when specified"),
                not_found: id("Identity not found"),
                unavailable: json(
                    500,
                    identity_body(
                        "server_error",
                        "The token could not be obtained from its source; retry later",
                    ),
                )
                .prebuild(),
            },
        }
    }
}

/// An injected failure at `path`. Identity paths answer in the identity style; the 429 there
/// is IMDS's observed answer (`{"error":"invalid_request","error_description":"Temporarily
/// throttled, too many requests"}`, no `Retry-After`, azure-sdk-for-net#39574 and
/// dotnet/SqlClient#2344). The other texts are unconfirmed, in the same styles.
pub fn fault(path: &str, status: u16) -> Response {
    if path.starts_with("/metadata/identity/") {
        let (code, description) = match status {
            429 => (
                "invalid_request",
                "Temporarily throttled, too many requests",
            ),
            410 => (
                "service_unavailable",
                "The identity endpoint is being updated; retry for up to 70 seconds",
            ),
            404 => ("not_found", "The identity endpoint is being updated; retry"),
            500 => ("server_error", "Internal server error"),
            _ => (
                "service_unavailable",
                "The service is temporarily unavailable; retry",
            ),
        };
        return json(status, identity_body(code, description));
    }
    let message = match status {
        429 => "Too many requests. For more information refer to aka.ms/azureimds",
        410 => "IMDS is being updated; retry for up to 70 seconds",
        404 => "IMDS is being updated; retry",
        500 => "Internal server error",
        _ => "Service temporarily unavailable; retry",
    };
    json(status, error_body(message))
}

/// The name of a method as the error texts quote it.
fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Other => "UNKNOWN",
    }
}

/// 404 for a path IMDS has no API or element for.
pub fn not_found(path: &str, method: Method) -> Response {
    let m = format!(
        "API is not found: Path = \"{path}\", Method = \"{}\"",
        method_name(method)
    );
    json(404, error_body(&m))
}

/// 405 for a method the endpoint does not take; `allow` lists the ones it does.
pub fn method_not_allowed(path: &str, method: Method, allow: &'static str) -> Response {
    let m = format!(
        "Http method is not allowed: Path = \"{path}\", Method = \"{}\"",
        method_name(method)
    );
    json(405, error_body(&m)).header("Allow", allow)
}

/// 405 in the identity style.
pub fn identity_method_not_allowed(path: &str, method: Method) -> Response {
    let m = format!(
        "Http method is not allowed: Path = \"{path}\", Method = \"{}\"",
        method_name(method)
    );
    json(405, identity_body("method_not_allowed", &m)).header("Allow", "GET")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_body_is_exactly_the_documented_one() {
        let e = Errors::new(
            &ApiVersions::new(None),
            &ApiVersions::from_static(&super::super::rules::SCHEDULED_EVENTS_API_VERSIONS),
        );
        let bytes = e.bad_api_version.bytes();
        let body = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| &bytes[i + 4..])
            .unwrap_or_default();
        assert_eq!(
            std::str::from_utf8(body).ok(),
            Some(
                "{\"error\":\"Bad request. api-version is invalid or was not specified in the \
                 request. For more information refer to aka.ms/azureimds\",\"newest-versions\":\
                 [\"2025-04-07\",\"2024-07-17\",\"2024-03-15\"]}"
            )
        );
        assert!(bytes.starts_with(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n\
              Server: IMDS/150.870.65.1854\r\n"
        ));
    }

    #[test]
    fn not_found_quotes_path_and_method_as_json() {
        let r = not_found("/metadata/\"x", Method::Post);
        assert_eq!(r.status, 404);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            r#"{"error":"API is not found: Path = \"/metadata/\"x\", Method = \"POST\""}"#
        );
    }
}
