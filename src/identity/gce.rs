//! Minted Google tokens: opaque access tokens and RS256 ID tokens (spec/gce.md).
//!
//! Contract:
//! - [`MintedAccessToken`] issues `ya29.c.` followed by 160 base64url characters, an HMAC of
//!   the account, the scopes and the window start: opaque like Google's, unguessable, and
//!   different for every scope set. `scopes=` is honoured: the scopes asked for (comma or
//!   space separated, order and repeats ignored), else the account's own, choose the token.
//! - [`MintedIdToken`] issues an RS256 JWT with `iss` `https://accounts.google.com`, `aud` the
//!   requested audience, `azp` and `sub` the account's unique id, `iat` and `exp` (one hour);
//!   `format=full` adds `email`, `email_verified` and `google.compute_engine{...}` with the
//!   instance's facts, and `license_id` when `licenses=TRUE`. Claims are in alphabetical order,
//!   as Google's are.
//!
//! Both reissue at [`REISSUE_WINDOW`] boundaries (as [`crate::identity::azure`] does): the
//! same request within 5 minutes gets the same token, and `expires_in` counts down from the
//! lifetime by at most 5 minutes.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::jwt;
use super::keys::IdentityKeys;
use super::source::{window_start, NoToken, Token, TokenRequest, TokenSource, Unavailable};

pub const REISSUE_WINDOW: u64 = 300;
/// Google access and ID tokens last an hour; the metadata server reports 3599 s on a fresh one.
pub const DEFAULT_ACCESS_LIFETIME: u64 = 3599;
pub const ID_TOKEN_LIFETIME: u64 = 3600;
pub const ISSUER: &str = "https://accounts.google.com";

/// The scopes a token is for: the requested ones, else the account's, sorted and deduplicated,
/// joined by `,`.
pub fn normalize_scopes(requested: &str, default: &[String]) -> String {
    let mut scopes: Vec<&str> = requested
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        scopes = default.iter().map(String::as_str).collect();
    }
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join(",")
}

/// Opaque access tokens for one service account.
pub struct MintedAccessToken {
    keys: Arc<IdentityKeys>,
    email: String,
    scopes: Vec<String>,
    lifetime: u64,
}

impl fmt::Debug for MintedAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedAccessToken")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl MintedAccessToken {
    pub fn new(keys: Arc<IdentityKeys>, email: &str, scopes: &[String], lifetime: u64) -> Self {
        MintedAccessToken {
            keys,
            email: email.to_string(),
            scopes: scopes.to_vec(),
            lifetime,
        }
    }
}

impl TokenSource for MintedAccessToken {
    fn source_kind(&self) -> &'static str {
        "minted"
    }
    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        let iat = window_start(req.now, REISSUE_WINDOW);
        let scopes = normalize_scopes(req.scopes, &self.scopes);
        let bytes = self.keys.mac_stream(
            "gce-access-token",
            &[self.email.as_bytes(), scopes.as_bytes(), &iat.to_be_bytes()],
            120,
        );
        let value = format!(
            "ya29.c.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        Ok(Token {
            value,
            issued_at: iat,
            not_before: iat,
            expires_at: iat + self.lifetime,
            fresh_until: iat + REISSUE_WINDOW,
        })
    }
}

/// The instance facts of a `format=full` token's `google.compute_engine` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComputeEngine {
    pub instance_creation_timestamp: u64,
    pub instance_id: String,
    pub instance_name: String,
    pub project_id: String,
    pub project_number: u64,
    /// The zone's name (`us-central1-a`), not its path.
    pub zone: String,
    /// Every license id of the instance's disks, for `licenses=TRUE`.
    pub license_ids: Vec<String>,
}

/// ID tokens for one service account.
pub struct MintedIdToken {
    keys: Arc<IdentityKeys>,
    email: String,
    unique_id: String,
    instance: ComputeEngine,
}

impl fmt::Debug for MintedIdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedIdToken")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl MintedIdToken {
    pub fn new(
        keys: Arc<IdentityKeys>,
        email: &str,
        unique_id: &str,
        instance: ComputeEngine,
    ) -> Self {
        MintedIdToken {
            keys,
            email: email.to_string(),
            unique_id: unique_id.to_string(),
            instance,
        }
    }
}

impl TokenSource for MintedIdToken {
    fn source_kind(&self) -> &'static str {
        "minted"
    }
    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        let iat = window_start(req.now, REISSUE_WINDOW);
        let exp = iat + ID_TOKEN_LIFETIME;
        let mut c = Map::new();
        c.insert("aud".into(), req.audience.into());
        c.insert("azp".into(), self.unique_id.as_str().into());
        if req.full {
            c.insert("email".into(), self.email.as_str().into());
            c.insert("email_verified".into(), true.into());
        }
        c.insert("exp".into(), exp.into());
        if req.full {
            let i = &self.instance;
            let mut ce = Map::new();
            ce.insert(
                "instance_creation_timestamp".into(),
                i.instance_creation_timestamp.into(),
            );
            ce.insert("instance_id".into(), i.instance_id.as_str().into());
            ce.insert("instance_name".into(), i.instance_name.as_str().into());
            if req.licenses {
                ce.insert("license_id".into(), i.license_ids.clone().into());
            }
            ce.insert("project_id".into(), i.project_id.as_str().into());
            ce.insert("project_number".into(), i.project_number.into());
            ce.insert("zone".into(), i.zone.as_str().into());
            c.insert(
                "google".into(),
                json!({ "compute_engine": Value::Object(ce) }),
            );
        }
        c.insert("iat".into(), iat.into());
        c.insert("iss".into(), ISSUER.into());
        c.insert("sub".into(), self.unique_id.as_str().into());
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

/// A stable 21-digit unique id for an account without a configured one, derived from its
/// e-mail (service account unique ids are 21 decimal digits starting with 1).
pub fn derived_unique_id(email: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(email.as_bytes());
    let mut n = u128::from_be_bytes(h[..16].try_into().unwrap_or([0; 16]));
    n %= 100_000_000_000_000_000_000; // 10^20
    format!("1{n:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> ComputeEngine {
        ComputeEngine {
            instance_creation_timestamp: 1_767_225_000,
            instance_id: "4520031799277581759".into(),
            instance_name: "demo-vm".into(),
            project_id: "imds-tun-demo".into(),
            project_number: 123_456_789_012,
            zone: "us-central1-a".into(),
            license_ids: vec!["2147286739765738111".into()],
        }
    }

    #[test]
    fn access_tokens_are_opaque_and_follow_scopes() {
        let keys = IdentityKeys::fixed();
        let scopes = vec!["https://www.googleapis.com/auth/cloud-platform".to_string()];
        let s = MintedAccessToken::new(keys, "sa@p.iam.gserviceaccount.com", &scopes, 3599);
        let get = |scopes: &str, now| {
            let mut r = TokenRequest::new("", now);
            r.scopes = scopes;
            s.issue(&r).unwrap_or_else(|e| panic!("{e}"))
        };
        let t = get("", 1_767_225_600);
        assert!(
            t.value.starts_with("ya29.c.") && t.value.len() == 7 + 160,
            "{}",
            t.value
        );
        assert_eq!(t.expires_in(1_767_225_600), 3599);
        assert_eq!(t.expires_in(1_767_225_899), 3300);
        assert_eq!(
            get(&scopes[0], 1_767_225_600).value,
            t.value,
            "default scopes"
        );
        assert_ne!(get("https://x/a,https://x/b", 1_767_225_600).value, t.value);
        assert_eq!(
            get("https://x/b https://x/a,https://x/a", 1_767_225_600).value,
            get("https://x/a,https://x/b", 1_767_225_600).value
        );
        assert_ne!(get("", 1_767_225_900).value, t.value, "next window");
    }

    #[test]
    fn id_tokens_standard_and_full() {
        let keys = IdentityKeys::fixed();
        let s = MintedIdToken::new(
            Arc::clone(&keys),
            "sa@p.iam.gserviceaccount.com",
            "104",
            instance(),
        );
        let mut r = TokenRequest::new("https://example.com", 1_767_225_601);
        let standard = s.issue(&r).unwrap_or_else(|e| panic!("{e}"));
        let c =
            jwt::verify_with_jwks(&standard.value, keys.jwks()).unwrap_or_else(|e| panic!("{e}"));
        let keys_of = |c: &Map<String, Value>| c.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys_of(&c), ["aud", "azp", "exp", "iat", "iss", "sub"]);
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["exp"], 1_767_225_600 + 3600);
        r.full = true;
        let c = jwt::claims(&s.issue(&r).map(|t| t.value).unwrap_or_default()).unwrap_or_default();
        assert_eq!(c["email"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(c["email_verified"], true);
        let ce = &c["google"]["compute_engine"];
        assert_eq!(ce["project_number"], 123_456_789_012u64);
        assert_eq!(ce["instance_id"], "4520031799277581759");
        assert!(ce.get("license_id").is_none());
        r.licenses = true;
        let c = jwt::claims(&s.issue(&r).map(|t| t.value).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            c["google"]["compute_engine"]["license_id"],
            json!(["2147286739765738111"])
        );
    }

    #[test]
    fn unique_ids_look_like_googles() {
        let id = derived_unique_id("a@b.com");
        assert_eq!(id.len(), 21);
        assert!(id.starts_with('1') && id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(id, derived_unique_id("a@b.com"));
    }
}
