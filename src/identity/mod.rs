//! Identity: the keys imds-tun signs with, and the sources of the tokens and credentials the
//! clouds hand out.
//!
//! # Keys
//!
//! [`IdentityKeys`] holds one RSA-2048 signing key and a self-signed CA. The CA certifies the
//! signing key twice, as the leaf certificates of the signed documents: Azure's (SAN
//! `*.metadata.azure.com`, as the real attested-document signer) and AWS's. JWTs are signed with
//! the same key and name it by `kid`, its RFC 7638 thumbprint; [`IdentityKeys::jwks`] publishes
//! it, served at `GET /imds-tun/jwks` on every metadata address (a path no cloud owns) and printed
//! by `imds-tun jwks`, so a local service validates minted tokens end to end. `imds-tun ca` (and
//! `GET /imds-tun/ca.pem`) gives the CA certificate for `openssl cms -verify -CAfile`.
//!
//! Keys live in a state directory ([`store`], default `/var/lib/imds-tun`, 0700, files 0600),
//! are created on first start and reused afterwards, so tokens and documents verify across
//! restarts. They are loaded before serving and outlive configuration reloads
//! ([`crate::snapshot::Keys`]); nothing on the request path reads or generates keys. Tests and
//! golden files use [`IdentityKeys::fixed`], built from two committed test keys.
//!
//! # Sources
//!
//! A [`source::TokenSource`] yields a token and its times for one identity, given an audience
//! (Azure `resource`, GCE `audience`), scopes and `now`; [`source::Issuer`] wraps one with a
//! bounded cache and the audit log line. Minted sources ([`azure`], [`gce`]) compute tokens from
//! the keys and the request alone; [`upstream`] sources (Entra ID, Google credentials, the
//! user's AWS keys, `az`/`gcloud`/`aws` commands) implement the same trait by answering from a
//! [`fetched`] cache that fetch threads fill, parking the request on the fetch in flight when it
//! has nothing yet (they never block: see [`source::TokenSource`] and [`crate::pending`]). AWS role credentials are not tokens but have the same shape:
//! [`aws::CredentialSource`].
//!
//! Invariants: no key, token or secret reaches a log or a `Debug` output; minted answers depend
//! only on the keys, the identity's configuration, the request and `now`, so they are
//! reproducible (golden files) and need no state.

pub mod aws;
pub mod azure;
pub mod cert;
pub mod fetched;
mod fixed;
pub mod gce;
pub mod jwt;
pub mod keys;
pub mod pkcs7;
pub mod source;
pub mod store;
pub mod upstream;

pub use keys::{IdentityKeys, KeyError, Leaf};
pub use source::{Issuer, NoToken, Token, TokenRequest, TokenSource, Unavailable};

/// The path of the JWKS document on every metadata address.
pub const JWKS_PATH: &str = "/imds-tun/jwks";
/// The path of the CA certificate (PEM) on every metadata address.
pub const CA_PATH: &str = "/imds-tun/ca.pem";

/// `now` in whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
