//! Managed identity tokens: choosing the identity a request names and rendering the token
//! response [VMtok][Spec IdentityTokenResponse].
//!
//! Contract: [`Identities::select`] applies IMDS's selection rules: with no selector, the
//! system-assigned identity, or the only user-assigned one when the VM has no system identity
//! and exactly one user-assigned [VMtok: a selector is "required, if your VM has multiple
//! user-assigned managed identities"]; with `client_id`, `object_id` or `msi_res_id`
//! (`mi_res_id`), the identity with that id, matched ASCII-case-insensitively (GUIDs and ARM
//! ids are case-insensitive). Each identity's tokens come from an [`Issuer`] over its source:
//! minted ([`crate::identity::azure`]) or static ([`crate::identity::source::StaticToken`],
//! whose claims drive the times). [`token_response`] renders the 200 answer for one request:
//! every field a string, both `expires_in` and `expires_on` (MSAL Python needs the first, MSAL
//! Node and @azure/identity the second), `not_before`, `token_type` `Bearer`, the requested
//! `resource`, the identity's `client_id`, and the selector the request used echoed back
//! (Python clients check it for user-assigned identities).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::errors::json;
use crate::config::azure::{AzureConfig, IdentityKind, TokenSource as TokenSourceConfig};
use crate::http::Response;
use crate::identity::azure::{AzureIdentity, MintedAccessToken};
use crate::identity::source::StaticToken;
use crate::identity::upstream::azure_ad::{ClientCredential, ClientCredentials, DEFAULT_AUTHORITY};
use crate::identity::upstream::command::CommandTokens;
use crate::identity::upstream::{Broken, FetchedTokens};
use crate::identity::{IdentityKeys, Issuer, Token, TokenSource};

/// One identity, ready to answer token requests.
#[derive(Clone, Debug)]
pub struct IdentityAnswer {
    pub kind: IdentityKind,
    pub client_id: String,
    pub object_id: String,
    /// The resource id; `""` for a system identity on a VM without `compute.resourceId`.
    pub msi_res_id: String,
    pub issuer: Arc<Issuer>,
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
    pub fn new(config: &AzureConfig, keys: &Arc<IdentityKeys>) -> Identities {
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
                let msi_res_id = match (&id.msi_res_id, id.kind) {
                    (Some(r), _) => r.clone(),
                    (None, IdentityKind::SystemAssigned) => vm_resource_id.to_string(),
                    (None, IdentityKind::UserAssigned) => String::new(),
                };
                let t = &id.token;
                let source: Box<dyn TokenSource> = match (&t.minted, &t.access_token) {
                    _ if t.upstream.is_some() || t.command.is_some() => {
                        fetched_source(config, &id.client_id, t)
                    }
                    (Some(m), _) => Box::new(MintedAccessToken::new(
                        Arc::clone(keys),
                        AzureIdentity {
                            tenant_id: config.tenant_id.clone(),
                            client_id: id.client_id.clone(),
                            object_id: id.object_id.clone(),
                            resource_id: msi_res_id.clone(),
                        },
                        m.lifetime(),
                    )),
                    (None, Some(t)) => Box::new(StaticToken::new(t.expose())),
                    (None, None) => return None,
                };
                Some(IdentityAnswer {
                    kind: id.kind,
                    client_id: id.client_id.clone(),
                    object_id: id.object_id.clone(),
                    issuer: Arc::new(Issuer::new(id.client_id.as_str(), "access token", source)),
                    msi_res_id,
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

/// An `upstream` (Entra ID client credentials) or `command` source.
fn fetched_source(
    config: &AzureConfig,
    client_id: &str,
    t: &TokenSourceConfig,
) -> Box<dyn TokenSource> {
    if let Some(c) = &t.command {
        return Box::new(FetchedTokens::new(Box::new(CommandTokens(c.command()))));
    }
    let Some(u) = &t.upstream else {
        return Box::new(Broken::new("no token source"));
    };
    let credential = match (&u.client_secret, &u.certificate_file) {
        (Some(secret), _) => Ok(ClientCredential::Secret(secret.expose().to_string())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| ClientCredential::certificate(&pem))
            .map_err(|e| format!("{}: {e}", path.display())),
        (None, None) => Err("no client credential".to_string()),
    };
    match credential {
        Ok(credential) => Box::new(FetchedTokens::new(Box::new(ClientCredentials::new(
            u.authority_host.as_deref().unwrap_or(DEFAULT_AUTHORITY),
            u.tenant_id.as_deref().unwrap_or(&config.tenant_id),
            u.client_id.as_deref().unwrap_or(client_id),
            credential,
        )))),
        Err(e) => Box::new(Broken::new(&e)),
    }
}

/// The 200 answer: `identity`'s `token` for `resource`, at `now` (Unix seconds).
pub fn token_response(
    identity: &IdentityAnswer,
    token: &Token,
    resource: &str,
    selector: Selector<'_>,
    now: u64,
) -> Response {
    let expires_in = token.expires_in(now).to_string();
    // Fields in the order IMDS sends them (alphabetical) [Spec example].
    let mut body = Map::new();
    let mut put = |k: &str, v: &str| {
        body.insert(k.to_string(), Value::String(v.to_string()));
    };
    put("access_token", &token.value);
    put("client_id", &identity.client_id);
    put("expires_in", &expires_in);
    put("expires_on", &token.expires_at.to_string());
    put("ext_expires_in", &expires_in);
    match selector {
        Selector::ResourceId {
            id,
            named_mi: false,
        } => put("msi_res_id", id),
        Selector::ResourceId { id, named_mi: true } => put("mi_res_id", id),
        _ => {}
    }
    put("not_before", &token.not_before.to_string());
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
    use crate::config::azure::{Identity, MintedToken, Secret, TokenSource};
    use crate::identity::TokenRequest;
    use base64::Engine as _;

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
                minted: None,
                ..Default::default()
            },
        }
    }

    fn config(ids: Vec<Identity>) -> AzureConfig {
        let mut c = AzureConfig {
            tenant_id: "8f9b7c52-3e1a-4d6b-9c0e-5a2f41d7e6b3".into(),
            ..AzureConfig::default()
        };
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

    fn identities(ids: Vec<Identity>) -> Identities {
        Identities::new(&config(ids), &IdentityKeys::fixed())
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    fn issue(id: &IdentityAnswer, resource: &str, now: u64) -> Token {
        let peer = "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}"));
        id.issuer
            .issue(
                &TokenRequest::new(resource, now),
                &crate::caller::Asker::unchecked(peer),
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selection_follows_imds_rules() {
        let both = identities(vec![
            identity(IdentityKind::UserAssigned, 1, "u1"),
            identity(IdentityKind::SystemAssigned, 2, "s"),
        ]);
        let token = |s| both.select(s).map(|i| issue(i, "r", 10).value);
        assert_eq!(token(Selector::Default).as_deref(), Some("s"));
        assert_eq!(
            token(Selector::ClientId("10000000-0000-0000-0000-000000000000")).as_deref(),
            Some("u1")
        );
        assert_eq!(
            token(Selector::ObjectId("21111111-0000-0000-0000-000000000000")).as_deref(),
            Some("s")
        );
        let res =
            "/SUBSCRIPTIONS/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        assert_eq!(
            token(Selector::ResourceId {
                id: res,
                named_mi: false
            })
            .as_deref(),
            Some("s")
        );
        assert_eq!(token(Selector::ClientId("nope")), None);

        let one_user = identities(vec![identity(IdentityKind::UserAssigned, 1, "u1")]);
        assert!(one_user.select(Selector::Default).is_some());
        let two_users = identities(vec![
            identity(IdentityKind::UserAssigned, 1, "u1"),
            identity(IdentityKind::UserAssigned, 3, "u3"),
        ]);
        assert!(two_users.select(Selector::Default).is_none());
        assert!(Identities::default().select(Selector::Default).is_none());
    }

    #[test]
    fn response_has_every_field_as_string_and_agrees_with_the_jwt() {
        let t = jwt(r#"{"iat":1000,"nbf":1000,"exp":87400}"#);
        let ids = identities(vec![identity(IdentityKind::SystemAssigned, 2, &t)]);
        let id = ids
            .select(Selector::Default)
            .unwrap_or_else(|| panic!("no identity"));
        let token = issue(id, "https://vault.azure.net", 2000);
        let r = token_response(
            id,
            &token,
            "https://vault.azure.net",
            Selector::ObjectId("O"),
            2000,
        );
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
        let b = body(&token_response(
            id,
            &token,
            "r",
            Selector::ResourceId {
                id: "R",
                named_mi: true,
            },
            2000,
        ));
        assert_eq!(b["mi_res_id"], "R");
        assert!(b.get("object_id").is_none() && b.get("msi_res_id").is_none());
    }

    #[test]
    fn minted_tokens_name_the_identity_and_the_resource() {
        let mut user = identity(IdentityKind::UserAssigned, 1, "");
        user.token = TokenSource {
            access_token: None,
            minted: Some(MintedToken::default()),
            ..Default::default()
        };
        let ids = identities(vec![user]);
        let id = ids
            .select(Selector::Default)
            .unwrap_or_else(|| panic!("no identity"));
        let now = 1_767_225_601;
        let token = issue(id, "https://management.azure.com/", now);
        let b = body(&token_response(
            id,
            &token,
            "https://management.azure.com/",
            Selector::Default,
            now,
        ));
        assert_eq!(b["expires_in"], "86399");
        assert_eq!(b["expires_on"], "1767312000");
        assert_eq!(b["not_before"], "1767225600");
        let keys = IdentityKeys::fixed();
        let claims = crate::identity::jwt::verify_with_jwks(&token.value, keys.jwks())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims["aud"], "https://management.azure.com/");
        assert_eq!(claims["appid"], "10000000-0000-0000-0000-000000000000");
        assert_eq!(claims["oid"], "11111111-0000-0000-0000-000000000000");
        assert_eq!(claims["tid"], "8f9b7c52-3e1a-4d6b-9c0e-5a2f41d7e6b3");
        assert_eq!(
            claims["xms_mirid"],
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1"
        );
    }
}
