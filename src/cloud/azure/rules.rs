//! The per-request rules every IMDS endpoint applies before answering [IMDS]: the `Metadata`
//! and `X-Forwarded-For` headers, the query string (duplicates rejected), `api-version` and
//! `format`.
//!
//! Contract: nothing here allocates for a request whose query has no `%` or `+` escapes, so the
//! static path stays allocation-free. Query keys are matched exactly (IMDS documents them in
//! lower case); values of `format` ASCII-case-insensitively.

use std::borrow::Cow;

use crate::http::query::QueryPairs;
use crate::http::Request;

/// Every api-version IMDS accepts, newest first [IMDS].
pub const SUPPORTED_API_VERSIONS: [&str; 35] = [
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-11-15",
    "2023-07-01",
    "2021-12-13",
    "2021-11-15",
    "2021-11-01",
    "2021-10-01",
    "2021-08-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2021-01-01",
    "2020-12-01",
    "2020-10-01",
    "2020-09-01",
    "2020-07-15",
    "2020-06-01",
    "2019-11-01",
    "2019-08-15",
    "2019-08-01",
    "2019-06-04",
    "2019-06-01",
    "2019-04-30",
    "2019-03-11",
    "2019-02-01",
    "2018-10-01",
    "2018-04-02",
    "2018-02-01",
    "2017-12-01",
    "2017-10-01",
    "2017-08-01",
    "2017-04-02",
    "2017-03-01",
];

/// Scheduled events are versioned on their own [SE], newest first.
pub const SCHEDULED_EVENTS_API_VERSIONS: [&str; 7] = [
    "2020-07-01",
    "2019-08-01",
    "2019-04-01",
    "2019-01-01",
    "2017-11-01",
    "2017-08-01",
    "2017-03-01",
];

/// `/metadata/loadbalancer` exists from this api-version on [LB].
pub const LOADBALANCER_MIN_API_VERSION: &str = "2020-10-01";

/// `/metadata/identity` exists from this api-version on [IMDS].
pub const IDENTITY_MIN_API_VERSION: &str = "2018-02-01";

/// `/metadata/attested/document` exists from this api-version on [IMDS].
pub const ATTESTED_MIN_API_VERSION: &str = "2018-10-01";

/// At most this many query parameters are looked at; more is answered as a bad query.
const MAX_QUERY_PARAMS: usize = 32;

/// An api-version list, newest first. Dates compare as text (`YYYY-MM-DD`).
#[derive(Clone, Debug)]
pub struct ApiVersions {
    newest_first: Vec<Box<str>>,
}

impl ApiVersions {
    /// The configured override, or the built-in list.
    pub fn new(configured: Option<&[String]>) -> Self {
        let mut newest_first: Vec<Box<str>> = match configured {
            Some(list) => list.iter().map(|v| v.as_str().into()).collect(),
            None => SUPPORTED_API_VERSIONS.iter().map(|v| (*v).into()).collect(),
        };
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        newest_first.dedup();
        ApiVersions { newest_first }
    }

    pub fn from_static(list: &[&str]) -> Self {
        let mut newest_first: Vec<Box<str>> = list.iter().map(|v| (*v).into()).collect();
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        ApiVersions { newest_first }
    }

    /// True when `version` is listed and not older than `min`.
    pub fn accepts(&self, version: &str, min: &str) -> bool {
        version >= min && self.newest_first.iter().any(|v| &**v == version)
    }

    /// The newest `n` versions, newest first (the `newest-versions` of the 400 body).
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &str> {
        self.newest_first.iter().take(n).map(|v| &**v)
    }

    /// All versions, oldest first (the `/metadata/versions` order [IMDS]).
    pub fn oldest_first(&self) -> impl Iterator<Item = &str> {
        self.newest_first.iter().rev().map(|v| &**v)
    }
}

/// Why a request's headers disqualify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// `X-Forwarded-For` present: the request came through a proxy [IMDS].
    Forwarded,
    /// `Metadata: true` missing (or another value).
    MissingMetadata,
}

/// Checks the two headers IMDS requires of every request. `Metadata` is compared
/// ASCII-case-insensitively: Microsoft's own samples send `Metadata:True`. The name's case,
/// whitespace around the value (`Metadata:true`, `metadata: TRUE `) and the same header twice
/// are accepted; two `Metadata` headers that disagree are not ([`Request::header_unanimous`];
/// how real IMDS treats them is unconfirmed, and no client sends them).
pub fn check_headers(req: &Request<'_>) -> Result<(), HeaderProblem> {
    if req.has_header("x-forwarded-for") {
        return Err(HeaderProblem::Forwarded);
    }
    if req.header_unanimous("metadata", |v| v.eq_ignore_ascii_case("true")) {
        Ok(())
    } else {
        Err(HeaderProblem::MissingMetadata)
    }
}

/// The `format` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Absent: JSON.
    Default,
    Json,
    Text,
    /// Any other value.
    Invalid,
}

impl Format {
    /// Absent or `json`.
    pub fn is_json(self) -> bool {
        matches!(self, Format::Default | Format::Json)
    }
}

/// The query parameters IMDS endpoints read; others are ignored.
#[derive(Debug)]
pub struct Query<'q> {
    pub api_version: Option<Cow<'q, str>>,
    pub format: Format,
    pub resource: Option<Cow<'q, str>>,
    pub client_id: Option<Cow<'q, str>>,
    pub object_id: Option<Cow<'q, str>>,
    pub msi_res_id: Option<Cow<'q, str>>,
    /// MSAL Node's name for `msi_res_id` (it sends it to non-IMDS sources, and some users copy
    /// it); accepted as a synonym.
    pub mi_res_id: Option<Cow<'q, str>>,
    /// App Service's name for the object id.
    pub principal_id: Option<Cow<'q, str>>,
    pub bypass_cache: Option<Cow<'q, str>>,
    /// The attested document's nonce.
    pub nonce: Option<Cow<'q, str>>,
}

/// Why a query string is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryProblem {
    /// A bad percent escape, or escapes that decode to non-UTF-8.
    Malformed,
    /// The same parameter name twice [IMDS: "Requests with duplicate query parameter names
    /// will be rejected"].
    Duplicate,
    /// More parameters than any client sends.
    TooMany,
}

/// Parses and checks a raw query string.
pub fn parse_query(raw: &str) -> Result<Query<'_>, QueryProblem> {
    let mut q = Query {
        api_version: None,
        format: Format::Default,
        resource: None,
        client_id: None,
        object_id: None,
        msi_res_id: None,
        mi_res_id: None,
        principal_id: None,
        bypass_cache: None,
        nonce: None,
    };
    for (i, pair) in QueryPairs::new(raw).enumerate() {
        if i >= MAX_QUERY_PARAMS {
            return Err(QueryProblem::TooMany);
        }
        let (key, value) = pair.map_err(|_| QueryProblem::Malformed)?;
        // Quadratic, but over at most MAX_QUERY_PARAMS pairs, and allocation-free.
        for earlier in QueryPairs::new(raw).take(i) {
            if earlier.map_err(|_| QueryProblem::Malformed)?.0 == key {
                return Err(QueryProblem::Duplicate);
            }
        }
        let slot = match &*key {
            "api-version" => &mut q.api_version,
            "resource" => &mut q.resource,
            "client_id" => &mut q.client_id,
            "object_id" => &mut q.object_id,
            "msi_res_id" => &mut q.msi_res_id,
            "mi_res_id" => &mut q.mi_res_id,
            "principal_id" => &mut q.principal_id,
            "bypass_cache" => &mut q.bypass_cache,
            "nonce" => &mut q.nonce,
            "format" => {
                q.format = if value.eq_ignore_ascii_case("json") {
                    Format::Json
                } else if value.eq_ignore_ascii_case("text") {
                    Format::Text
                } else {
                    Format::Invalid
                };
                continue;
            }
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{header_array, parse_request, Limits, Parsed};

    fn with_request<T>(raw: &str, f: impl FnOnce(&Request<'_>) -> T) -> T {
        let mut headers = header_array();
        match parse_request(raw.as_bytes(), &mut headers, &Limits::default()) {
            Ok(Parsed::Complete { request, .. }) => f(&request),
            other => panic!("unparsed: {other:?}"),
        }
    }

    #[test]
    fn headers_need_metadata_true_and_no_forwarding() {
        let check = |h: &str| with_request(&format!("GET / HTTP/1.1\r\n{h}\r\n"), check_headers);
        assert_eq!(check("Metadata: true\r\n"), Ok(()));
        assert_eq!(check("metadata:True\r\n"), Ok(()));
        assert_eq!(
            check("Metadata: yes\r\n"),
            Err(HeaderProblem::MissingMetadata)
        );
        assert_eq!(check("Host: x\r\n"), Err(HeaderProblem::MissingMetadata));
        assert_eq!(
            check("Metadata: true\r\nX-Forwarded-For: 10.0.0.1\r\n"),
            Err(HeaderProblem::Forwarded)
        );
    }

    #[test]
    fn query_is_parsed_and_checked() {
        let q = parse_query("api-version=2021-02-01&format=TEXT&other=1").ok();
        let q = q.unwrap_or_else(|| panic!("rejected"));
        assert_eq!(q.api_version.as_deref(), Some("2021-02-01"));
        assert_eq!(q.format, Format::Text);
        assert_eq!(
            parse_query("api-version=1&api-version=2").err(),
            Some(QueryProblem::Duplicate)
        );
        assert_eq!(
            parse_query("a=1&b=2&%61=3").err(),
            Some(QueryProblem::Duplicate)
        );
        assert_eq!(parse_query("a=%zz").err(), Some(QueryProblem::Malformed));
        let many = (0..40)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse_query(&many).err(), Some(QueryProblem::TooMany));
        let q = parse_query("resource=https%3A%2F%2Fvault.azure.net&format=xml").ok();
        let q = q.unwrap_or_else(|| panic!("rejected"));
        assert_eq!(q.resource.as_deref(), Some("https://vault.azure.net"));
        assert_eq!(q.format, Format::Invalid);
    }

    #[test]
    fn versions_are_newest_first_and_bounded() {
        let v = ApiVersions::new(None);
        assert_eq!(
            v.newest(3).collect::<Vec<_>>(),
            ["2025-04-07", "2024-07-17", "2024-03-15"]
        );
        assert_eq!(v.oldest_first().next(), Some("2017-03-01"));
        assert!(v.accepts("2021-02-01", "0"));
        assert!(!v.accepts("2021-02-02", "0"));
        assert!(!v.accepts("2020-09-01", LOADBALANCER_MIN_API_VERSION));
        assert!(v.accepts("2020-10-01", LOADBALANCER_MIN_API_VERSION));
        let own = ApiVersions::new(Some(&["2019-01-01".into(), "2030-01-01".into()]));
        assert_eq!(
            own.newest(3).collect::<Vec<_>>(),
            ["2030-01-01", "2019-01-01"]
        );
    }
}
