//! Managed identity tokens: choosing the identity a request names and rendering the token
//! response [VMtok][Spec IdentityTokenResponse].
//!
//! Contract: [`Identities::select`] applies IMDS's selection rules: with no selector, the
//! system-assigned identity, or the only user-assigned one when the VM has no system identity
//! and exactly one user-assigned [VMtok: a selector is "required, if your VM has multiple
//! user-assigned managed identities"]; with `client_id`, `object_id` or `msi_res_id`
//! (`mi_res_id`), the identity with that id, matched ASCII-case-insensitively (GUIDs and ARM
//! ids are case-insensitive). [`token_response`] renders the 200 answer for one request: every
//! field a string, both `expires_in` and `expires_on` (MSAL Python needs the first, MSAL Node
//! and @azure/identity the second), `token_type` `Bearer`, the requested `resource`, the
//! identity's `client_id`, and the selector the request used echoed back (Python clients
//! check it for user-assigned identities).
//!
//! Expiry of a configured token: while the JWT's `exp` is in the future, `expires_on` is `exp`
//! and `not_before` its `nbf`, so the answer agrees with the token. Once `exp` has passed (a
//! fixed token cannot be re-signed), the token is presented as freshly issued: `expires_on` is
//! now plus the token's lifetime (`exp - iat`, else 86400 s, the lifetime of managed identity
//! tokens) and `not_before` now, so clients keep a sane expiry instead of refreshing in a loop.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::errors::json;
use crate::config::azure::{AzureConfig, IdentityKind};
use crate::http::Response;

/// Lifetime assumed for a token whose claims do not say (managed identity tokens last 24 h).
const DEFAULT_LIFETIME_SECS: u64 = 86_400;

/// One identity, ready to answer token requests.
#[derive(Clone)]
pub struct IdentityAnswer {
    pub kind: IdentityKind,
    pub client_id: String,
    pub object_id: String,
    /// The resource id; `""` for a system identity on a VM without `compute.resourceId`.
    pub msi_res_id: String,
    access_token: String,
    claims: Claims,
}

impl std::fmt::Debug for IdentityAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityAnswer")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("access_token", &"..")
            .finish()
    }
}

/// The time claims of a JWT access token, when it is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub iat: Option<u64>,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
}

impl Claims {
    /// Reads `iat`, `nbf` and `exp` from a compact JWT's payload; all `None` for anything else.
    pub fn of(token: &str) -> Claims {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Claims::default();
        };
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let Ok(bytes) = engine.decode(payload.trim_end_matches('=')) else {
            return Claims::default();
        };
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) else {
            return Claims::default();
        };
        let time = |k: &str| claims.get(k).and_then(Value::as_u64);
        Claims {
            iat: time("iat"),
            nbf: time("nbf"),
            exp: time("exp"),
        }
    }

    fn lifetime(&self) -> u64 {
        match (self.iat, self.exp) {
            (Some(iat), Some(exp)) if exp > iat => exp - iat,
            _ => DEFAULT_LIFETIME_SECS,
        }
    }
}

/// Which identity a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector<'a> {
    Default,
    ClientId(&'a str),
    ObjectId(&'a str),
    /// `msi_res_id`, or `mi_res_id` when `named_mi` (echoed under the name it came in).
    ResourceId {
        id: &'a str,
        named_mi: bool,
    },
}

/// The VM's identities.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    list: Vec<IdentityAnswer>,
}

impl Identities {
    pub fn new(config: &AzureConfig) -> Identities {
        let vm_resource_id = config
            .instance
            .compute
            .get("resourceId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let list = config
            .identities
            .iter()
            .filter_map(|id| {
                let token = id.token.access_token.as_ref()?.expose().to_string();
                let msi_res_id = match (&id.msi_res_id, id.kind) {
                    (Some(r), _) => r.clone(),
                    (None, IdentityKind::SystemAssigned) => vm_resource_id.to_string(),
                    (None, IdentityKind::UserAssigned) => String::new(),
                };
                Some(IdentityAnswer {
                    kind: id.kind,
                    client_id: id.client_id.clone(),
                    object_id: id.object_id.clone(),
                    msi_res_id,
                    claims: Claims::of(&token),
                    access_token: token,
                })
            })
            .collect();
        Identities { list }
    }

    /// The identity `selector` names, if the VM has it.
    pub fn select(&self, selector: Selector<'_>) -> Option<&IdentityAnswer> {
        let find = |f: &dyn Fn(&IdentityAnswer) -> &str, wanted: &str| {
            self.list
                .iter()
                .find(|i| !f(i).is_empty() && f(i).eq_ignore_ascii_case(wanted))
        };
        match selector {
            Selector::Default => {
                let system = self
                    .list
                    .iter()
                    .find(|i| i.kind == IdentityKind::SystemAssigned);
                match (system, self.list.as_slice()) {
                    (Some(s), _) => Some(s),
                    (None, [only]) => Some(only),
                    _ => None,
                }
            }
            Selector::ClientId(c) => find(&|i| &i.client_id, c),
            Selector::ObjectId(o) => find(&|i| &i.object_id, o),
            Selector::ResourceId { id, .. } => find(&|i| &i.msi_res_id, id),
        }
    }
}

/// The 200 answer: `identity`'s token for `resource`, as of `now`.
pub fn token_response(
    identity: &IdentityAnswer,
    resource: &str,
    selector: Selector<'_>,
    now: SystemTime,
) -> Response {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = identity.claims;
    let (expires_on, not_before) = match claims.exp {
        Some(exp) if exp > now => (exp, claims.nbf.or(claims.iat).unwrap_or(now).min(now)),
        _ => (now + claims.lifetime(), now),
    };
    let expires_in = (expires_on - now).to_string();
    // Fields in the order IMDS sends them (alphabetical) [Spec example].
    let mut body = Map::new();
    let mut put = |k: &str, v: &str| {
        body.insert(k.to_string(), Value::String(v.to_string()));
    };
    put("access_token", &identity.access_token);
    put("client_id", &identity.client_id);
    put("expires_in", &expires_in);
    put("expires_on", &expires_on.to_string());
    put("ext_expires_in", &expires_in);
    match selector {
        Selector::ResourceId {
            id,
            named_mi: false,
        } => put("msi_res_id", id),
        Selector::ResourceId { id, named_mi: true } => put("mi_res_id", id),
        _ => {}
    }
    put("not_before", &not_before.to_string());
    if let Selector::ObjectId(o) = selector {
        put("object_id", o);
    }
    put("refresh_token", "");
    put("resource", resource);
    put("token_type", "Bearer");
    json(200, Value::Object(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::azure::{Identity, Secret, TokenSource};
    use std::time::Duration;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"RS256"}"#),
            e.encode(claims)
        )
    }

    fn identity(kind: IdentityKind, n: u8, token: &str) -> Identity {
        Identity {
            kind,
            client_id: format!("{n}0000000-0000-0000-0000-000000000000"),
            object_id: format!("{n}1111111-0000-0000-0000-000000000000"),
            msi_res_id: (kind == IdentityKind::UserAssigned)
                .then(|| format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{n}")),
            token: TokenSource {
                access_token: Some(Secret(token.to_string())),
            },
        }
    }

    fn config(ids: Vec<Identity>) -> AzureConfig {
        let mut c = AzureConfig::default();
        c.instance.compute.insert(
            "resourceId".into(),
            Value::String(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
            ),
        );
        c.identities = ids;
        c
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    #[test]
    fn claims_are_read_from_jwts_only() {
        let t = jwt(r#"{"iat":100,"nbf":90,"exp":3700,"tid":"t"}"#);
        assert_eq!(
            Claims::of(&t),
            Claims {
                iat: Some(100),
                nbf: Some(90),
                exp: Some(3700)
            }
        );
        assert_eq!(Claims::of("opaque"), Claims::default());
        assert_eq!(Claims::of("a.!!!.c"), Claims::default());
    }

    #[test]
    fn selection_follows_imds_rules() {
        let both = Identities::new(&config(vec![
            identity(IdentityKind::UserAssigned, 1, "u1"),
            identity(IdentityKind::SystemAssigned, 2, "s"),
        ]));
        let kind = |s| both.select(s).map(|i| i.access_token.as_str());
        assert_eq!(kind(Selector::Default), Some("s"));
        assert_eq!(
            kind(Selector::ClientId("10000000-0000-0000-0000-000000000000")),
            Some("u1")
        );
        assert_eq!(
            kind(Selector::ObjectId("21111111-0000-0000-0000-000000000000")),
            Some("s")
        );
        let res =
            "/SUBSCRIPTIONS/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        assert_eq!(
            kind(Selector::ResourceId {
                id: res,
                named_mi: false
            }),
            Some("s")
        );
        assert_eq!(kind(Selector::ClientId("nope")), None);

        let one_user =
            Identities::new(&config(vec![identity(IdentityKind::UserAssigned, 1, "u1")]));
        assert!(one_user.select(Selector::Default).is_some());
        let two_users = Identities::new(&config(vec![
            identity(IdentityKind::UserAssigned, 1, "u1"),
            identity(IdentityKind::UserAssigned, 3, "u3"),
        ]));
        assert!(two_users.select(Selector::Default).is_none());
        assert!(Identities::default().select(Selector::Default).is_none());
    }

    #[test]
    fn response_has_every_field_as_string_and_agrees_with_the_jwt() {
        let t = jwt(r#"{"iat":1000,"nbf":1000,"exp":87400}"#);
        let ids = Identities::new(&config(vec![identity(IdentityKind::SystemAssigned, 2, &t)]));
        let id = ids
            .select(Selector::Default)
            .unwrap_or_else(|| panic!("no identity"));
        let now = UNIX_EPOCH + Duration::from_secs(2000);
        let r = token_response(id, "https://vault.azure.net", Selector::ObjectId("O"), now);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header_value("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        let b = body(&r);
        assert_eq!(b["expires_in"], "85400");
        assert_eq!(b["expires_on"], "87400");
        assert_eq!(b["not_before"], "1000");
        assert_eq!(b["resource"], "https://vault.azure.net");
        assert_eq!(b["token_type"], "Bearer");
        assert_eq!(b["client_id"], "20000000-0000-0000-0000-000000000000");
        assert_eq!(b["object_id"], "O");
        assert_eq!(b["access_token"], t.as_str());
        assert!(b
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)));
    }

    #[test]
    fn expired_or_opaque_tokens_get_a_fresh_lifetime() {
        let t = jwt(r#"{"iat":1000,"exp":4600}"#);
        let ids = Identities::new(&config(vec![identity(IdentityKind::SystemAssigned, 2, &t)]));
        let id = ids
            .select(Selector::Default)
            .unwrap_or_else(|| panic!("no identity"));
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let b = body(&token_response(id, "r", Selector::Default, now));
        assert_eq!(b["expires_in"], "3600");
        assert_eq!(b["expires_on"], "1003600");
        assert_eq!(b["not_before"], "1000000");
        assert!(b.get("object_id").is_none() && b.get("msi_res_id").is_none());

        let ids = Identities::new(&config(vec![identity(
            IdentityKind::SystemAssigned,
            2,
            "opaque",
        )]));
        let id = ids
            .select(Selector::Default)
            .unwrap_or_else(|| panic!("no identity"));
        let b = body(&token_response(
            id,
            "r",
            Selector::ResourceId {
                id: "R",
                named_mi: true,
            },
            now,
        ));
        assert_eq!(b["expires_in"], "86400");
        assert_eq!(b["mi_res_id"], "R");
    }
}
