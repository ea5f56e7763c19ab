//! Azure AD (Entra ID) client credentials: real access tokens for a service principal.
//!
//! Contract: [`ClientCredentials`] fetches one token per resource with the OAuth 2.0 client
//! credentials grant on the v2.0 endpoint, `POST {authority}/{tenant}/oauth2/v2.0/token` with
//! `client_id`, `scope=<resource>/.default` (the v1 resource named as a v2 scope; a resource
//! ending in `/`, as ARM's `https://management.azure.com/`, gives `...//.default`, which Entra
//! accepts and which keeps the token's `aud` as the resource was written) and
//! `grant_type=client_credentials`, authenticated with either
//! - `client_secret`, or
//! - a certificate: `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   and `client_assertion`, an RS256 JWT signed with the certificate's key whose header names
//!   the certificate by `x5t` (base64url SHA-1 thumbprint of its DER, as Entra requires) and
//!   whose claims are `aud` = the token URL, `iss` = `sub` = the client id, a random `jti`,
//!   `nbf` = `iat` = now and `exp` 10 minutes later (RFC 7523 3).
//!
//! The answer's `access_token` and `expires_in` become the lease.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{json, Map};
use sha1::{Digest, Sha1};

use super::http;
use super::rs256::{pem_der, random_id, RsaSigner};
use crate::identity::fetched::{Fetch, FetchKey, Lease};
use crate::identity::unix_secs;

/// Where Entra ID lives unless configured otherwise.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// How the service principal proves itself.
pub enum ClientCredential {
    Secret(String),
    Certificate { signer: Box<RsaSigner>, x5t: String },
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("Secret(..)"),
            ClientCredential::Certificate { x5t, .. } => write!(f, "Certificate(x5t {x5t})"),
        }
    }
}

impl ClientCredential {
    /// A certificate credential from a PEM text holding the certificate and its private key.
    pub fn certificate(pem: &str) -> Result<ClientCredential, String> {
        let der = pem_der(pem, "CERTIFICATE").ok_or("no CERTIFICATE block")?;
        let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha1::digest(&der));
        Ok(ClientCredential::Certificate {
            signer: Box::new(RsaSigner::from_pem(pem)?),
            x5t,
        })
    }
}

/// Client-credentials tokens for one service principal.
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    credential: ClientCredential,
    agent: ureq::Agent,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .finish()
    }
}

impl ClientCredentials {
    /// `authority` without a trailing `/` (e.g. [`DEFAULT_AUTHORITY`]); `tenant` an id or a
    /// domain.
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        credential: ClientCredential,
    ) -> Self {
        ClientCredentials {
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority.trim_end_matches('/'),
                tenant
            ),
            client_id: client_id.to_string(),
            credential,
            agent: http::agent(),
        }
    }
}

impl Fetch<String> for ClientCredentials {
    fn fetch(&self, key: &FetchKey) -> Result<Lease<String>, String> {
        let now = unix_secs(SystemTime::now());
        let scope = if key.audience.ends_with("/.default") {
            key.audience.clone()
        } else {
            format!("{}/.default", key.audience)
        };
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("scope", scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let assertion;
        match &self.credential {
            ClientCredential::Secret(s) => fields.push(("client_secret", s.as_str())),
            ClientCredential::Certificate { signer, x5t } => {
                let mut header = Map::new();
                header.insert("typ".into(), "JWT".into());
                header.insert("x5t".into(), x5t.as_str().into());
                let claims = json!({
                    "aud": self.token_url,
                    "iss": self.client_id,
                    "sub": self.client_id,
                    "jti": random_id(),
                    "nbf": now,
                    "iat": now,
                    "exp": now + 600,
                });
                assertion = signer.jwt(header, &claims);
                fields.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                fields.push(("client_assertion", assertion.as_str()));
            }
        }
        let body = http::post_form(&self.agent, &self.token_url, &fields, None)?;
        let (value, expires_in) = http::oauth_token(&body, &self.token_url)?;
        Ok(Lease {
            value,
            issued_at: now,
            expires_at: now + expires_in,
        })
    }
}
