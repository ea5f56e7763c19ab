//! `meta-data/iam/info` and `meta-data/iam/security-credentials/<role>`: their JSON, rendered
//! once for static credentials and per request for minted ones.
//!
//! Contract: [`info`] and [`credentials`] give the documents EC2 serves (field order as EC2's,
//! Jackson-style pretty printing as the other JSON leaves). [`MintedIam`] answers the two
//! paths from a [`CredentialIssuer`] at the request's `now`: `LastUpdated` (in both documents
//! and as `Last-Modified`) is the start of the current rotation window, so `iam/info` and the
//! credentials always agree. Only the credentials request is an issue (audited); `iam/info`
//! reports without logging. A source with nothing to give (a future upstream source before
//! its first fetch) is answered 404, as an instance whose role has no credentials yet.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::answers::{ok, TEXT};
use super::jackson::pretty;
use super::timestamp::{format_utc, http_date};
use crate::cloud::RequestContext;
use crate::config::aws::CredentialSource as CredentialSourceConfig;
use crate::config::aws::IamConfig;
use crate::http::Response;
use crate::identity::aws::{CredentialIssuer, CredentialSource, Credentials, MintedCredentials};
use crate::identity::unix_secs;
use crate::identity::upstream::aws_keys::StaticKeys;
use crate::identity::upstream::command::CommandCredentials;
use crate::identity::upstream::FetchedCredentials;
use crate::identity::{IdentityKeys, NoToken};

/// The text of `iam/info`.
pub fn info(iam: &IamConfig, last_updated: &str) -> String {
    let mut info = Map::new();
    info.insert("Code".into(), "Success".into());
    info.insert("LastUpdated".into(), last_updated.into());
    info.insert(
        "InstanceProfileArn".into(),
        iam.instance_profile_arn.as_str().into(),
    );
    info.insert(
        "InstanceProfileId".into(),
        iam.instance_profile_id.as_str().into(),
    );
    pretty(&Value::Object(info))
}

/// The text of `iam/security-credentials/<role>`; times as `%Y-%m-%dT%H:%M:%SZ`.
pub fn credentials(
    last_updated: &str,
    access_key_id: &str,
    secret_access_key: &str,
    token: &str,
    expiration: &str,
) -> String {
    let mut creds = Map::new();
    creds.insert("Code".into(), "Success".into());
    creds.insert("LastUpdated".into(), last_updated.into());
    creds.insert("Type".into(), "AWS-HMAC".into());
    creds.insert("AccessKeyId".into(), access_key_id.into());
    creds.insert("SecretAccessKey".into(), secret_access_key.into());
    creds.insert("Token".into(), token.into());
    creds.insert("Expiration".into(), expiration.into());
    pretty(&Value::Object(creds))
}

/// The issuer of a role's minted credentials (IMDS and the ECS door build one each; they agree
/// because the credentials are a function of the keys, the role and the time).
pub fn dynamic_issuer(iam: &IamConfig, keys: &Arc<IdentityKeys>) -> Option<CredentialIssuer> {
    let source: Box<dyn CredentialSource> = match &iam.credentials {
        CredentialSourceConfig::Static(_) => return None,
        CredentialSourceConfig::Minted(minted) => Box::new(MintedCredentials::new(
            Arc::clone(keys),
            &iam.role_name,
            minted.rotate_every(),
            minted.lifetime(),
        )),
        CredentialSourceConfig::Upstream(u) => match (&u.access_key_id, &u.secret_access_key) {
            (Some(id), Some(secret)) => Box::new(StaticKeys::new(
                id,
                secret.expose(),
                u.session_token.as_ref().map_or("", |t| t.expose()),
            )),
            _ => Box::new(StaticKeys::from_profile(
                &u.credentials_file(),
                u.profile.as_deref().unwrap_or("default"),
            )),
        },
        CredentialSourceConfig::Command(c) => Box::new(FetchedCredentials::new(Box::new(
            CommandCredentials(c.command()),
        ))),
    };
    Some(CredentialIssuer::new(&iam.role_name, source))
}

/// The two IAM paths for credentials that change over time.
#[derive(Debug)]
pub struct MintedIam {
    issuer: CredentialIssuer,
    iam: IamConfig,
    /// `meta-data/iam/info`.
    pub info_key: String,
    /// `meta-data/iam/security-credentials/<role>`.
    pub role_key: String,
}

impl MintedIam {
    pub fn new(iam: &IamConfig, issuer: CredentialIssuer) -> MintedIam {
        MintedIam {
            issuer,
            iam: iam.clone(),
            info_key: "meta-data/iam/info".into(),
            role_key: format!("meta-data/iam/security-credentials/{}", iam.role_name),
        }
    }

    /// The answer for `key` (a path below the version), when it is one of the two.
    pub fn respond(&self, key: &str, ctx: &RequestContext) -> Option<Result<Response, NoToken>> {
        let now = unix_secs(ctx.now);
        let answer = |c: Credentials, body: String| {
            let modified = http_date(c.last_updated as i64);
            ok(TEXT, Some(&modified), body)
        };
        if key == self.info_key {
            return Some(self.issuer.peek(now).map(|c| {
                let body = info(&self.iam, &format_utc(c.last_updated as i64));
                answer(c, body)
            }));
        }
        if key == self.role_key {
            return Some(self.issuer.issue(now, &ctx.asker()).map(|c| {
                let body = credentials(
                    &format_utc(c.last_updated as i64),
                    &c.access_key_id,
                    &c.secret_access_key,
                    &c.token,
                    &format_utc(c.expiration as i64),
                );
                answer(c, body)
            }));
        }
        None
    }
}
