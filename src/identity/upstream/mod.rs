//! Real tokens: sources that fetch from an upstream token service or run a command, through a
//! [`Fetcher`] so the packet path never waits on them.
//!
//! - [`azure_ad`]: Entra ID client credentials (secret or certificate) for Azure identities;
//! - [`google`]: service-account keys, impersonation and workload identity federation for GCE
//!   service accounts;
//! - [`aws_keys`]: the user's own AWS keys (configured or from a profile) as role credentials;
//! - [`command`]: `az`, `gcloud` or `aws` (or anything printing one of their formats).
//!
//! Contract: [`FetchedTokens`] and [`FetchedCredentials`] adapt a [`Fetcher`] to
//! [`TokenSource`] and [`CredentialSource`]: a fresh lease is answered at once, otherwise the
//! request parks on the fetch in flight ([`NoToken::Pending`]). Every URL is configurable, so
//! tests run against a local fake authority. Secrets (client secrets, keys, tokens, command
//! output) never reach a log or a `Debug` output.

pub mod aws_keys;
pub mod azure_ad;
pub mod command;
pub mod google;
pub mod http;
pub mod rs256;

use std::fmt;

use super::aws::{CredentialSource, Credentials};
use super::fetched::{Fetch, FetchKey, Fetcher};
use super::source::{NoToken, Token, TokenRequest, TokenSource, Unavailable};

/// Tokens fetched per (audience, scopes).
pub struct FetchedTokens(Fetcher<String>);

impl fmt::Debug for FetchedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FetchedTokens").field(&self.0).finish()
    }
}

impl FetchedTokens {
    pub fn new(fetch: Box<dyn Fetch<String>>) -> Self {
        FetchedTokens(Fetcher::new(fetch))
    }

    pub fn with_fetcher(fetcher: Fetcher<String>) -> Self {
        FetchedTokens(fetcher)
    }
}

impl TokenSource for FetchedTokens {
    fn source_kind(&self) -> &'static str {
        self.0.source_kind()
    }

    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        let key = FetchKey {
            audience: req.audience.to_string(),
            scopes: req.scopes.to_string(),
        };
        let lease = self.0.get(&key, req.now)?;
        Ok(Token {
            issued_at: lease.issued_at.min(req.now),
            not_before: lease.issued_at.min(req.now),
            expires_at: lease.expires_at,
            // The issuer caches it until the fetcher would refresh it.
            fresh_until: lease.refresh_at(),
            value: lease.value,
        })
    }
}

/// Role credentials fetched (one key: a role has one set).
pub struct FetchedCredentials(Fetcher<Credentials>);

impl fmt::Debug for FetchedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FetchedCredentials").field(&self.0).finish()
    }
}

impl FetchedCredentials {
    pub fn new(fetch: Box<dyn Fetch<Credentials>>) -> Self {
        FetchedCredentials(Fetcher::new(fetch))
    }
}

impl CredentialSource for FetchedCredentials {
    fn source_kind(&self) -> &'static str {
        self.0.source_kind()
    }

    fn credentials(&self, now: u64) -> Result<Credentials, NoToken> {
        Ok(self.0.get(&FetchKey::default(), now)?.value)
    }
}

/// A source that cannot work (a key file that would not load): every request gets the
/// cloud's "unavailable" error; the reason was logged once when it was built.
#[derive(Debug)]
pub struct Broken(String);

impl Broken {
    pub fn new(reason: &str) -> Broken {
        tracing::warn!(reason, "token source unavailable");
        Broken(reason.to_string())
    }
}

impl TokenSource for Broken {
    fn source_kind(&self) -> &'static str {
        "unavailable"
    }
    fn issue(&self, _req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        Err(Unavailable(self.0.clone()).into())
    }
}

impl CredentialSource for Broken {
    fn source_kind(&self) -> &'static str {
        "unavailable"
    }
    fn credentials(&self, _now: u64) -> Result<Credentials, NoToken> {
        Err(Unavailable(self.0.clone()).into())
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)` (RFC 3339 in UTC, as Google's `expireTime` and the
/// AWS CLI's `Expiration`) in seconds since the Unix epoch; other offsets are refused.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (main, rest) = text.split_at_checked(19)?;
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if !matches!(rest, "Z" | "z" | "+00:00" | "-00:00") {
        return None;
    }
    let secs = crate::cloud::aws::timestamp::parse_utc(&format!("{main}Z"))?;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc_only() {
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.123456Z"),
            Some(1_767_225_600)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00+00:00"),
            Some(1_767_225_600)
        );
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00+01:00"), None);
        assert_eq!(parse_rfc3339("2026-01-01"), None);
    }
}
