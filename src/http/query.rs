//! Query strings: `a=1&b=2` split into pairs, percent-decoded lazily.
//!
//! Contract: iterating allocates only for a key or value that contains `%` or `+`; invalid
//! percent escapes are reported (`Err`) instead of guessed, so clouds can answer 400.

use std::borrow::Cow;

/// A query pair whose percent-encoding was invalid, or decoded to non-UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadEncoding;

/// Iterator over `key=value` pairs of a raw query string. Empty segments (`a=1&&b=2`) are
/// skipped; a key with no `=` has the value `""`.
pub struct QueryPairs<'q> {
    rest: &'q str,
}

impl<'q> QueryPairs<'q> {
    pub fn new(query: &'q str) -> Self {
        QueryPairs { rest: query }
    }
}

impl<'q> Iterator for QueryPairs<'q> {
    type Item = Result<(Cow<'q, str>, Cow<'q, str>), BadEncoding>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (segment, rest) = self.rest.split_once('&').unwrap_or((self.rest, ""));
            self.rest = rest;
            if segment.is_empty() {
                continue;
            }
            let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
            return Some(decode(k).and_then(|k| decode(v).map(|v| (k, v))));
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+` as space.
pub fn decode(raw: &str) -> Result<Cow<'_, str>, BadEncoding> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(BadEncoding),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| BadEncoding)
}

/// Decodes a path segment: `%XX` escapes only (a `+` in a path is a plus).
pub fn decode_path(raw: &str) -> Result<Cow<'_, str>, BadEncoding> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let plus_safe = raw.replace('+', "%2B");
    decode(&plus_safe).map(|c| Cow::Owned(c.into_owned()))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        QueryPairs::new(q)
            .map(|p| p.map(|(k, v)| (k.into_owned(), v.into_owned())))
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    }

    #[test]
    fn splits_and_decodes() {
        assert_eq!(
            pairs("api-version=2021-02-01&format=text&&x"),
            vec![
                ("api-version".into(), "2021-02-01".into()),
                ("format".into(), "text".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(
            pairs("resource=https%3A%2F%2Fvault.azure.net&a=b+c"),
            vec![
                ("resource".into(), "https://vault.azure.net".into()),
                ("a".into(), "b c".into())
            ]
        );
    }

    #[test]
    fn rejects_bad_escapes() {
        assert!(QueryPairs::new("a=%zz").any(|p| p.is_err()));
        assert!(QueryPairs::new("a=%4").any(|p| p.is_err()));
        assert!(QueryPairs::new("a=%ff").any(|p| p.is_err()));
    }

    #[test]
    fn path_plus_is_literal() {
        assert_eq!(decode_path("a+b%20c").ok().as_deref(), Some("a+b c"));
    }
}
