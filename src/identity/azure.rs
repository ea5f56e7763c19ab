//! Minted Azure managed-identity access tokens.
//!
//! Contract: [`MintedAccessToken`] issues an RS256 JWT shaped as Entra ID's v1 access tokens
//! for managed identities: `aud` = the requested resource exactly as sent, `iss`
//! `https://sts.windows.net/<tid>/`, `iat`/`nbf` at the start of the reissue window, `exp` one
//! lifetime later, and the claims `az login --identity` and MSAL read (`tid`, `oid`, `appid`,
//! `xms_mirid`), plus the other claims real tokens carry (`aio`, `appidacr`, `idp`, `idtyp`,
//! `rh`, `sub`, `uti`, `ver`) with opaque values derived from the keys. Claims are in
//! alphabetical-by-convention order of real tokens; they verify against
//! [`crate::identity::IdentityKeys::jwks`].
//!
//! Reissue window: [`REISSUE_WINDOW`] (5 minutes). Every caller asking for the same resource
//! within a window gets the same token (IMDS itself caches tokens), `expires_in` stays between
//! the lifetime minus 5 minutes and the lifetime, and a token costs one signature per window.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::jwt;
use super::keys::IdentityKeys;
use super::source::{window_start, NoToken, Token, TokenRequest, TokenSource, Unavailable};

/// Tokens are issued at the start of each window of this many seconds.
pub const REISSUE_WINDOW: u64 = 300;
/// Managed identity tokens last 24 hours.
pub const DEFAULT_LIFETIME: u64 = 86_400;

/// Who the tokens are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureIdentity {
    pub tenant_id: String,
    pub client_id: String,
    pub object_id: String,
    /// The ARM resource id (`xms_mirid`).
    pub resource_id: String,
}

/// Access tokens minted and signed locally.
pub struct MintedAccessToken {
    keys: Arc<IdentityKeys>,
    identity: AzureIdentity,
    lifetime: u64,
}

impl fmt::Debug for MintedAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedAccessToken")
            .field("client_id", &self.identity.client_id)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl MintedAccessToken {
    pub fn new(keys: Arc<IdentityKeys>, identity: AzureIdentity, lifetime: u64) -> Self {
        MintedAccessToken {
            keys,
            identity,
            lifetime,
        }
    }
}

impl TokenSource for MintedAccessToken {
    fn source_kind(&self) -> &'static str {
        "minted"
    }
    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        let id = &self.identity;
        let iat = window_start(req.now, REISSUE_WINDOW);
        let exp = iat + self.lifetime;
        let iss = format!("https://sts.windows.net/{}/", id.tenant_id);
        let opaque = |label: &str, len: usize| {
            let bytes = self.keys.mac_stream(
                label,
                &[
                    id.object_id.as_bytes(),
                    req.audience.as_bytes(),
                    &iat.to_be_bytes(),
                ],
                len,
            );
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let mut c = Map::new();
        let mut put = |k: &str, v: Value| {
            c.insert(k.to_string(), v);
        };
        put("aud", req.audience.into());
        put("iss", iss.as_str().into());
        put("iat", iat.into());
        put("nbf", iat.into());
        put("exp", exp.into());
        put("aio", opaque("azure-aio", 42).into());
        put("appid", id.client_id.as_str().into());
        put("appidacr", "2".into());
        put("idp", iss.as_str().into());
        put("idtyp", "app".into());
        put("oid", id.object_id.as_str().into());
        put("rh", format!("0.{}.", opaque("azure-rh", 48)).into());
        put("sub", id.object_id.as_str().into());
        put("tid", id.tenant_id.as_str().into());
        put("uti", opaque("azure-uti", 16).into());
        put("ver", "1.0".into());
        put("xms_mirid", id.resource_id.as_str().into());
        let value = jwt::encode(&self.keys, &c).map_err(|e| Unavailable(e.to_string()))?;
        Ok(Token {
            value,
            issued_at: iat,
            not_before: iat,
            expires_at: exp,
            fresh_until: iat + REISSUE_WINDOW,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_identity_and_verify() {
        let keys = IdentityKeys::fixed();
        let identity = AzureIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            object_id: "o".into(),
            resource_id: "/subscriptions/s/x".into(),
        };
        let source = MintedAccessToken::new(Arc::clone(&keys), identity, DEFAULT_LIFETIME);
        let t = source
            .issue(&TokenRequest::new("https://vault.azure.net", 1_000_123))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.issued_at, 999_900);
        assert_eq!(t.expires_at, t.issued_at + 86_400);
        let c = jwt::verify_with_jwks(&t.value, keys.jwks()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c["aud"], "https://vault.azure.net");
        assert_eq!(c["iss"], "https://sts.windows.net/t/");
        assert_eq!(
            (&c["tid"], &c["oid"], &c["appid"]),
            (&"t".into(), &"o".into(), &"c".into())
        );
        assert_eq!(c["xms_mirid"], "/subscriptions/s/x");
        assert_eq!(c["exp"], t.expires_at);
        assert_eq!(c["iat"], t.issued_at);
        let again = source.issue(&TokenRequest::new("https://vault.azure.net", 1_000_199));
        assert_eq!(again.ok().map(|a| a.value), Some(t.value.clone()));
        let other = source.issue(&TokenRequest::new("https://storage.azure.com", 1_000_199));
        assert_ne!(other.ok().map(|a| a.value), Some(t.value));
    }
}
