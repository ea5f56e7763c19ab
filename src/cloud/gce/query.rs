//! The query parameters the GCE metadata server understands, parsed without allocating.
//!
//! Contract: [`Params::parse`] reads a raw query string once and either returns the
//! parameters or [`BadParams`] (answered with 400). It allocates only when a key or a value
//! it keeps is percent-encoded.
//!
//! Choices where no public source pins the real server (spec/gce.md: unconfirmed):
//! - unknown parameters are ignored (clients add their own, e.g. cache busters);
//! - a recognised parameter given twice is a 400;
//! - booleans (`recursive`, `wait_for_change`) are `true`/`false` in any case; `licenses` is
//!   `TRUE`/`FALSE` in any case; `alt` is `json`/`text`; `format` is `standard`/`full`;
//!   `timeout_sec` is a whole number of seconds; anything else is a 400.

use std::borrow::Cow;

use crate::http::query::decode;

/// The query could not be accepted (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadParams;

/// `alt=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alt {
    Json,
    Text,
}

/// The recognised parameters of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params<'q> {
    pub alt: Option<Alt>,
    pub recursive: bool,
    pub wait_for_change: bool,
    /// `last_etag`, decoded, when given (compared with the answer's ETag by the hanging wait).
    pub last_etag: Option<Cow<'q, str>>,
    pub timeout_sec: Option<u64>,
    /// `audience`, decoded, when given and not empty.
    pub audience: Option<Cow<'q, str>>,
    /// `scopes`, decoded, when given (minted tokens follow them).
    pub scopes: Option<Cow<'q, str>>,
    /// `format=full` (else standard).
    pub format_full: bool,
    pub licenses: bool,
}

impl<'q> Params<'q> {
    pub fn parse(query: &'q str) -> Result<Params<'q>, BadParams> {
        let mut p = Params::default();
        let mut seen = 0u16;
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (raw_key, raw_value) = segment.split_once('=').unwrap_or((segment, ""));
            let key = decode(raw_key).map_err(|_| BadParams)?;
            let bit = match &*key {
                "alt" => 1,
                "recursive" => 2,
                "wait_for_change" => 4,
                "last_etag" => 8,
                "timeout_sec" => 16,
                "audience" => 32,
                "format" => 64,
                "licenses" => 128,
                "scopes" => 256,
                _ => continue,
            };
            if seen & bit != 0 {
                return Err(BadParams);
            }
            seen |= bit;
            let value = || decode(raw_value).map_err(|_| BadParams);
            match bit {
                1 => {
                    p.alt = Some(match &*value()? {
                        "json" => Alt::Json,
                        "text" => Alt::Text,
                        _ => return Err(BadParams),
                    })
                }
                2 => p.recursive = boolean(value()?)?,
                4 => p.wait_for_change = boolean(value()?)?,
                8 => p.last_etag = Some(value()?),
                16 => {
                    let v = value()?;
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(BadParams);
                    }
                    p.timeout_sec = Some(v.parse().map_err(|_| BadParams)?);
                }
                32 => p.audience = Some(value()?).filter(|a| !a.is_empty()),
                64 => {
                    let v = value()?;
                    p.format_full = if v.eq_ignore_ascii_case("full") {
                        true
                    } else if v.eq_ignore_ascii_case("standard") {
                        false
                    } else {
                        return Err(BadParams);
                    }
                }
                128 => p.licenses = boolean(value()?)?,
                _ => p.scopes = Some(value()?),
            }
        }
        Ok(p)
    }
}

fn boolean(v: Cow<'_, str>) -> Result<bool, BadParams> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(BadParams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recognised_parameters() {
        let p = Params::parse(
            "recursive=true&alt=text&wait_for_change=TRUE&last_etag=ab&timeout_sec=5",
        );
        assert_eq!(
            p,
            Ok(Params {
                alt: Some(Alt::Text),
                recursive: true,
                wait_for_change: true,
                last_etag: Some("ab".into()),
                timeout_sec: Some(5),
                ..Params::default()
            })
        );
        let p = Params::parse("audience=https%3A%2F%2Fx&format=full&licenses=TRUE&scopes=a,b");
        assert_eq!(
            p,
            Ok(Params {
                audience: Some("https://x".into()),
                scopes: Some("a,b".into()),
                format_full: true,
                licenses: true,
                ..Params::default()
            })
        );
    }

    #[test]
    fn rejects_bad_and_duplicate_values() {
        for q in [
            "alt=xml",
            "recursive=yes",
            "recursive=true&recursive=true",
            "timeout_sec=-1",
            "timeout_sec=",
            "format=short",
            "licenses=maybe",
            "alt=%zz",
        ] {
            assert_eq!(Params::parse(q), Err(BadParams), "{q}");
        }
    }

    #[test]
    fn ignores_unknown_and_empty() {
        assert_eq!(Params::parse("foo=bar&&x"), Ok(Params::default()));
        assert_eq!(Params::parse("audience="), Ok(Params::default()));
    }
}
