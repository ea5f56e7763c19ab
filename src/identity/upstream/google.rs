//! Google credentials: service-account keys (JWT-bearer grant), impersonation and workload
//! identity federation, giving real access tokens.
//!
//! Contract: [`GoogleTokens`] fetches one access token per scope set from a credentials file
//! (the JSON `gcloud` and the client libraries read, by its `type`):
//! - `service_account`: an RS256 assertion signed with `private_key` (header `kid` =
//!   `private_key_id`; claims `iss` = `client_email`, `scope` = the scopes space-separated,
//!   `aud` = `token_uri`, `iat` = now, `exp` one hour later) POSTed to `token_uri` with
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 2.1);
//! - `external_account` (workload identity federation): the subject token from
//!   `credential_source` (`file` or `url`, `format` `text` or `json` with
//!   `subject_token_field_name`) exchanged at `token_url` (RFC 8693: `grant_type`
//!   `urn:ietf:params:oauth:grant-type:token-exchange`, `audience`, `scope` cloud-platform,
//!   `requested_token_type` access token, `subject_token`, `subject_token_type`); when the file
//!   has `service_account_impersonation_url`, that federated token is then exchanged there;
//! - impersonation (the file's own URL, or `impersonate` in the configuration): IAM
//!   credentials `generateAccessToken` (`POST .../serviceAccounts/<email>:generateAccessToken`
//!   with `{"scope": [...], "lifetime": "3600s"}` and the source token as bearer), whose
//!   `accessToken` and `expireTime` become the lease.
//!
//! Scopes: a request's `scopes=` (comma-separated, as GCE takes them) or the account's
//! configured scopes; the source token for impersonation always has cloud-platform scope.

use std::fmt;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::http;
use super::rs256::RsaSigner;
use crate::identity::fetched::{Fetch, FetchKey, Lease};
use crate::identity::unix_secs;

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const DEFAULT_IAM_CREDENTIALS: &str = "https://iamcredentials.googleapis.com";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A `service_account` key.
pub struct ServiceAccountKey {
    pub client_email: String,
    private_key_id: String,
    signer: RsaSigner,
    pub token_uri: String,
}

/// An `external_account` configuration.
#[derive(Debug)]
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    token_url: String,
    impersonation_url: Option<String>,
    source: SubjectSource,
    field: Option<String>,
}

#[derive(Debug)]
enum SubjectSource {
    File(String),
    Url {
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// What a credentials file holds.
pub enum Credentials {
    ServiceAccount(Box<ServiceAccountKey>),
    ExternalAccount(ExternalAccount),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ServiceAccount(k) => write!(f, "ServiceAccount({})", k.client_email),
            Credentials::ExternalAccount(e) => write!(f, "ExternalAccount({})", e.audience),
        }
    }
}

impl Credentials {
    /// Parses a credentials file's text.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let v: Value = serde_json::from_str(text).map_err(|_| "not JSON".to_string())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let need = |k: &str| s(k).ok_or_else(|| format!("no \"{k}\""));
        match s("type").as_deref() {
            Some("service_account") => {
                Ok(Credentials::ServiceAccount(Box::new(ServiceAccountKey {
                    client_email: need("client_email")?,
                    private_key_id: s("private_key_id").unwrap_or_default(),
                    signer: RsaSigner::from_pem(&need("private_key")?)?,
                    token_uri: s("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
                })))
            }
            Some("external_account") => {
                let cs = v
                    .get("credential_source")
                    .ok_or("no \"credential_source\"")?;
                let source = match (
                    cs.get("file").and_then(Value::as_str),
                    cs.get("url").and_then(Value::as_str),
                ) {
                    (Some(f), _) => SubjectSource::File(f.to_string()),
                    (None, Some(u)) => SubjectSource::Url {
                        url: u.to_string(),
                        headers: cs
                            .get("headers")
                            .and_then(Value::as_object)
                            .map(|h| {
                                h.iter()
                                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                    _ => {
                        return Err(
                            "credential_source: only \"file\" and \"url\" are supported".into()
                        )
                    }
                };
                let format = cs.get("format");
                let field = match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
                    Some("json") => Some(
                        format
                            .and_then(|f| f.get("subject_token_field_name"))
                            .and_then(Value::as_str)
                            .ok_or("format json needs subject_token_field_name")?
                            .to_string(),
                    ),
                    _ => None,
                };
                Ok(Credentials::ExternalAccount(ExternalAccount {
                    audience: need("audience")?,
                    subject_token_type: need("subject_token_type")?,
                    token_url: need("token_url")?,
                    impersonation_url: s("service_account_impersonation_url"),
                    source,
                    field,
                }))
            }
            Some(other) => Err(format!("credentials of type {other:?} are not supported")),
            None => Err("no \"type\"".into()),
        }
    }
}

/// Access tokens from a credentials file, optionally impersonating a service account.
pub struct GoogleTokens {
    credentials: Credentials,
    impersonate: Option<String>,
    iam_credentials: String,
    default_scopes: String,
    agent: ureq::Agent,
}

impl fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleTokens")
            .field("credentials", &self.credentials)
            .field("impersonate", &self.impersonate)
            .finish_non_exhaustive()
    }
}

impl GoogleTokens {
    /// `default_scopes` are used when a request names none; `iam_credentials` is the IAM
    /// credentials API's base URL ([`DEFAULT_IAM_CREDENTIALS`]).
    pub fn new(
        credentials: Credentials,
        impersonate: Option<String>,
        iam_credentials: &str,
        default_scopes: &[String],
    ) -> Self {
        GoogleTokens {
            credentials,
            impersonate,
            iam_credentials: iam_credentials.trim_end_matches('/').to_string(),
            default_scopes: default_scopes.join(" "),
            agent: http::agent(),
        }
    }

    fn jwt_bearer(
        &self,
        key: &ServiceAccountKey,
        scope: &str,
        now: u64,
    ) -> Result<Lease<String>, String> {
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        if !key.private_key_id.is_empty() {
            header.insert("kid".into(), key.private_key_id.as_str().into());
        }
        let claims = json!({
            "iss": key.client_email,
            "scope": scope,
            "aud": key.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let assertion = key.signer.jwt(header, &claims);
        let body = http::post_form(
            &self.agent,
            &key.token_uri,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ],
            None,
        )?;
        let (value, expires_in) = http::oauth_token(&body, &key.token_uri)?;
        Ok(Lease {
            value,
            issued_at: now,
            expires_at: now + expires_in,
        })
    }

    fn sts_exchange(&self, ext: &ExternalAccount, now: u64) -> Result<Lease<String>, String> {
        let raw = match &ext.source {
            SubjectSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("subject token file {path}: {e}"))?,
            SubjectSource::Url { url, headers } => http::get_text(&self.agent, url, headers)?,
        };
        let subject = match &ext.field {
            None => raw.trim().to_string(),
            Some(field) => serde_json::from_str::<Value>(&raw)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_string))
                .ok_or_else(|| format!("the subject token has no \"{field}\""))?,
        };
        let body = http::post_form(
            &self.agent,
            &ext.token_url,
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", &ext.audience),
                ("scope", CLOUD_PLATFORM),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token", &subject),
                ("subject_token_type", &ext.subject_token_type),
            ],
            None,
        )?;
        let (value, expires_in) = http::oauth_token(&body, &ext.token_url)?;
        Ok(Lease {
            value,
            issued_at: now,
            expires_at: now + expires_in,
        })
    }

    /// `generateAccessToken` at `url` with `source` as bearer.
    fn impersonate(
        &self,
        url: &str,
        source: &str,
        scope: &str,
        now: u64,
    ) -> Result<Lease<String>, String> {
        let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        let body = http::post_json(
            &self.agent,
            url,
            &json!({ "scope": scopes, "lifetime": "3600s" }),
            Some(source),
        )?;
        let value = body
            .get("accessToken")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{url}: no accessToken in the answer"))?;
        let expires_at = body
            .get("expireTime")
            .and_then(Value::as_str)
            .and_then(super::parse_rfc3339)
            .ok_or_else(|| format!("{url}: no valid expireTime in the answer"))?;
        Ok(Lease {
            value: value.to_string(),
            issued_at: now,
            expires_at,
        })
    }

    fn impersonation_url(&self, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.iam_credentials
        )
    }
}

impl Fetch<String> for GoogleTokens {
    fn fetch(&self, key: &FetchKey) -> Result<Lease<String>, String> {
        let now = unix_secs(SystemTime::now());
        let scope = if key.scopes.is_empty() {
            self.default_scopes.clone()
        } else {
            key.scopes
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let target = self
            .impersonate
            .as_deref()
            .map(|e| self.impersonation_url(e));
        match &self.credentials {
            Credentials::ServiceAccount(k) => match target {
                None => self.jwt_bearer(k, &scope, now),
                Some(url) => {
                    let source = self.jwt_bearer(k, CLOUD_PLATFORM, now)?;
                    self.impersonate(&url, &source.value, &scope, now)
                }
            },
            Credentials::ExternalAccount(ext) => {
                let federated = self.sts_exchange(ext, now)?;
                match ext.impersonation_url.clone().or(target) {
                    None => Ok(federated),
                    Some(url) => self.impersonate(&url, &federated.value, &scope, now),
                }
            }
        }
    }
}
