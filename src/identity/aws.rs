//! AWS role credentials: the source abstraction and minted, rotating credentials.
//!
//! Contract: a [`CredentialSource`] gives the credentials valid at `now` (never blocking, as
//! [`crate::identity::TokenSource`]); [`CredentialIssuer`] adds the audit line (role and
//! caller, never a secret). IMDS (`iam/security-credentials/<role>`) and the ECS container
//! endpoint serve the same source.
//!
//! [`MintedCredentials`] needs no state: time is cut into rotation windows of
//! `rotate_every` seconds; the credentials of window k are an HMAC of the role and k under
//! the key store's MAC key (so they survive restarts), `LastUpdated` is the window's start and
//! `Expiration` is `lifetime` after it. With `lifetime >= rotate_every + 300` (checked by the
//! configuration) new credentials appear at least 5 minutes before the old ones expire, as on
//! EC2 (spec/aws.md); the defaults rotate hourly and expire after 6 hours, so a client holding
//! credentials always has hours left, and botocore's 15-minute refresh margin is never hit.
//! Access key ids look like STS's temporary ones (`ASIA` + 16 of `A-Z2-7`), secrets are 40
//! characters of base64, session tokens start with STS's `IQoJb3JpZ2luX2Vj` prefix.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;

use super::keys::IdentityKeys;
use super::source::{IssueCounts, NoToken};

/// New credentials every hour.
pub const DEFAULT_ROTATE_EVERY: u64 = 3600;
/// Each lasts six hours.
pub const DEFAULT_LIFETIME: u64 = 21_600;
/// New credentials appear at least this long before the old expire.
pub const MIN_OVERLAP: u64 = 300;

/// One set of role credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// Seconds since the Unix epoch.
    pub last_updated: u64,
    pub expiration: u64,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"..")
            .field("token", &"..")
            .field("last_updated", &self.last_updated)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Where a role's credentials come from.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    fn credentials(&self, now: u64) -> Result<Credentials, NoToken>;

    /// Where its credentials come from (see [`crate::identity::TokenSource::source_kind`]).
    fn source_kind(&self) -> &'static str;
}

/// A source with its audit line.
#[derive(Debug)]
pub struct CredentialIssuer {
    role: String,
    source: Box<dyn CredentialSource>,
    counts: IssueCounts,
}

impl CredentialIssuer {
    pub fn new(role: &str, source: Box<dyn CredentialSource>) -> Self {
        CredentialIssuer {
            role: role.to_string(),
            counts: IssueCounts::new(role, "credentials", source.source_kind()),
            source,
        }
    }

    /// The credentials for a caller at `peer`; logs the issue.
    pub fn issue(&self, now: u64, peer: SocketAddr) -> Result<Credentials, NoToken> {
        let c = self
            .source
            .credentials(now)
            .inspect_err(|e| self.counts.failed(e))?;
        self.counts.issued.inc();
        tracing::info!(
            role = %self.role,
            access_key_id = %c.access_key_id,
            caller = %peer,
            expiration = c.expiration,
            "issued credentials"
        );
        Ok(c)
    }

    /// The credentials at `now`, without an audit line (what `iam/info` reports).
    pub fn peek(&self, now: u64) -> Result<Credentials, NoToken> {
        self.source.credentials(now)
    }
}

/// Rotating credentials derived from the keys (see the module docs).
pub struct MintedCredentials {
    keys: Arc<IdentityKeys>,
    role: String,
    rotate_every: u64,
    lifetime: u64,
}

impl fmt::Debug for MintedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedCredentials")
            .field("role", &self.role)
            .field("rotate_every", &self.rotate_every)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl MintedCredentials {
    pub fn new(keys: Arc<IdentityKeys>, role: &str, rotate_every: u64, lifetime: u64) -> Self {
        MintedCredentials {
            keys,
            role: role.to_string(),
            rotate_every: rotate_every.max(1),
            lifetime,
        }
    }
}

impl CredentialSource for MintedCredentials {
    fn source_kind(&self) -> &'static str {
        "minted"
    }
    fn credentials(&self, now: u64) -> Result<Credentials, NoToken> {
        let window = now / self.rotate_every;
        let last_updated = window * self.rotate_every;
        let parts: [&[u8]; 2] = [self.role.as_bytes(), &window.to_be_bytes()];
        const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: String = self
            .keys
            .mac("aws-access-key-id", &parts)
            .iter()
            .take(16)
            .map(|b| char::from(BASE32[usize::from(b % 32)]))
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret = b64.encode(self.keys.mac_stream("aws-secret-access-key", &parts, 30));
        let token = format!(
            "IQoJb3JpZ2luX2Vj{}",
            b64.encode(self.keys.mac_stream("aws-session-token", &parts, 600))
        );
        Ok(Credentials {
            access_key_id: format!("ASIA{id}"),
            secret_access_key: secret,
            token,
            last_updated,
            expiration: last_updated + self.lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> MintedCredentials {
        MintedCredentials::new(
            IdentityKeys::fixed(),
            "role",
            DEFAULT_ROTATE_EVERY,
            DEFAULT_LIFETIME,
        )
    }

    #[test]
    fn credentials_look_like_sts_and_hide_their_secrets() {
        let c = source()
            .credentials(1_767_225_600)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.access_key_id.starts_with("ASIA") && c.access_key_id.len() == 20);
        assert!(c.access_key_id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(c.secret_access_key.len(), 40);
        assert!(c.token.starts_with("IQoJb3JpZ2luX2Vj") && c.token.len() > 800);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains(&c.secret_access_key) && !debug.contains(&c.token),
            "{debug}"
        );
    }

    /// A simulated clock walks a day in 10-second steps: the credentials served never have
    /// less than 5 minutes (in fact 5 hours) left, change exactly at window boundaries, and
    /// the new ones appear at least 5 minutes before the old expire.
    #[test]
    fn rotation_keeps_five_minutes_of_overlap() {
        let s = source();
        let start = 1_767_225_600 - 7;
        let mut previous: Option<Credentials> = None;
        let mut rotations = 0;
        for step in 0..(86_400 / 10) {
            let now = start + step * 10;
            let c = s.credentials(now).unwrap_or_else(|e| panic!("{e}"));
            assert!(c.last_updated <= now && c.expiration >= now + MIN_OVERLAP);
            if let Some(p) = &previous {
                if p.access_key_id != c.access_key_id {
                    rotations += 1;
                    assert_eq!(c.last_updated % DEFAULT_ROTATE_EVERY, 0);
                    assert!(
                        p.expiration >= c.last_updated + MIN_OVERLAP,
                        "old still valid"
                    );
                    assert_ne!(p.secret_access_key, c.secret_access_key);
                    assert_ne!(p.token, c.token);
                } else {
                    assert_eq!(p, &c, "stable within a window");
                }
            }
            previous = Some(c);
        }
        assert_eq!(rotations, 24);
        let again = MintedCredentials::new(IdentityKeys::fixed(), "role", 3600, 21_600);
        assert_eq!(
            again.credentials(start).ok(),
            s.credentials(start).ok(),
            "stateless"
        );
        let other = MintedCredentials::new(IdentityKeys::fixed(), "other", 3600, 21_600);
        assert_ne!(other.credentials(start).ok(), s.credentials(start).ok());
    }
}
