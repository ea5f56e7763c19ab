//! ECS container credentials at `http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//! [spec/aws.md, container credentials].
//!
//! Contract: [`Ecs::build`] renders the answer once from the instance role (`$.aws.iam`): the
//! same credentials `iam/security-credentials/<role>` gives, as
//! `{RoleArn, AccessKeyId, SecretAccessKey, Token, Expiration, AccountId}` in JSON (what
//! botocore's and the other SDKs' container providers parse). Minted credentials
//! ([`crate::identity::aws`]) are rendered per request from the same source as IMDS's, so both
//! doors hand out the same credentials at any moment. [`Ecs::respond`] answers only
//! requests at the container-credentials door: the configured relative URI, and 400 for other
//! credential paths (`/v2/credentials/...`), as the ECS agent answers an unknown id; every
//! other path is left to the metadata clouds (`None`).
//!
//! With `authorizationToken` set, requests must carry it in `Authorization` (the SDKs send
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` there); otherwise 401. Unconfirmed and chosen: that
//! status and the agent-style body `{"code": ..., "message": ...}` for it; GET and HEAD only
//! (405 otherwise).

use serde_json::{json, Map, Value};

use std::sync::Arc;

use super::timestamp::format_utc;
use crate::cloud::{secrets_equal, Reply, Request, RequestContext};
use crate::config::aws::{arn_account, CredentialSource};
use crate::config::AwsConfig;
use crate::http::{Method, Prebuilt, Response};
use crate::identity::aws::CredentialIssuer;
use crate::identity::source::admit;
use crate::identity::IdentityKeys;

const JSON: &str = "application/json";

/// Where the ECS agent serves credentials by id.
const CREDENTIALS_PREFIX: &str = "/v2/credentials";

/// The rendered container-credentials door.
#[derive(Debug)]
pub struct Ecs {
    relative_uri: Box<str>,
    authorization: Option<Box<str>>,
    credentials: Credentials,
    unknown_id: Prebuilt,
    /// The caller policy refused the caller ([`crate::caller`]).
    denied: Prebuilt,
    unauthorized: Prebuilt,
    method_not_allowed: Prebuilt,
}

/// The credentials answer: rendered once, or per request for minted credentials.
#[derive(Debug)]
enum Credentials {
    Static(Prebuilt),
    Minted {
        issuer: CredentialIssuer,
        /// The document without the four credential fields.
        base: Map<String, Value>,
    },
}

fn agent_error(status: u16, code: &str, message: &str) -> Response {
    Response::new(status)
        .header("Content-Type", JSON)
        .body(json!({"code": code, "message": message, "HTTPErrorCode": status}).to_string())
}

impl Ecs {
    /// `None` when the door is off or there is no role (validation refuses the latter).
    pub fn build(config: &AwsConfig, keys: &Arc<IdentityKeys>) -> Option<Ecs> {
        let cc = &config.container_credentials;
        let iam = config.iam.as_ref().filter(|_| cc.enabled)?;
        let arn = &iam.instance_profile_arn;
        // arn:<partition>:iam::<account>:instance-profile/<name> → the role in that account.
        let prefix = arn
            .find(":instance-profile/")
            .map_or("arn:aws:iam::000000000000", |i| &arn[..i]);
        let mut doc = Map::new();
        doc.insert(
            "RoleArn".into(),
            format!("{prefix}:role/{}", iam.role_name).into(),
        );
        let credentials = match &iam.credentials {
            CredentialSource::Static(c) => {
                let mut doc = doc;
                fill(
                    &mut doc,
                    &c.access_key_id,
                    &c.secret_access_key,
                    &c.token,
                    &c.expiration,
                );
                if let Some(account) = arn_account(arn) {
                    doc.insert("AccountId".into(), account.into());
                }
                Credentials::Static(credentials_answer(doc).prebuild())
            }
            _ => {
                let mut base = doc;
                if let Some(account) = arn_account(arn) {
                    base.insert("AccountId".into(), account.into());
                }
                Credentials::Minted {
                    issuer: super::credentials::dynamic_issuer(iam, keys)?,
                    base,
                }
            }
        };
        Some(Ecs {
            relative_uri: cc.relative_uri.as_str().into(),
            authorization: cc.authorization_token.as_ref().map(|t| t.expose().into()),
            credentials,
            unknown_id: agent_error(
                400,
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            )
            .prebuild(),
            unauthorized: agent_error(
                401,
                "AccessDenied",
                "Authorization header is missing or does not match",
            )
            .prebuild(),
            denied: agent_error(
                403,
                "AccessDenied",
                "The caller is not allowed to get credentials on this machine",
            )
            .prebuild(),
            method_not_allowed: agent_error(405, "MethodNotAllowed", "Use GET")
                .header("Allow", "GET, HEAD")
                .prebuild(),
        })
    }

    /// The answer to a container-credentials request, or `None` for a path that is not one.
    pub fn respond(&self, req: &Request<'_>, ctx: &RequestContext) -> Option<Reply<'_>> {
        let ours = req.path == &*self.relative_uri;
        if !ours && !req.path.starts_with(CREDENTIALS_PREFIX) {
            return None;
        }
        if !matches!(req.method, Method::Get | Method::Head) {
            return Some(Reply::Static(&self.method_not_allowed));
        }
        if let Some(expected) = &self.authorization {
            let presented = req.header("authorization").map(<[u8]>::trim_ascii);
            if !presented.is_some_and(|p| secrets_equal(p, expected.as_bytes())) {
                return Some(Reply::Static(&self.unauthorized));
            }
        }
        if !ours {
            return Some(Reply::Static(&self.unknown_id));
        }
        Some(match &self.credentials {
            Credentials::Static(answer) => match admit(&ctx.asker(), "static ECS credentials") {
                Ok(_) => Reply::Static(answer),
                Err(no) => no.reply(&self.unknown_id, &self.denied),
            },
            Credentials::Minted { issuer, base } => {
                let now = crate::identity::unix_secs(ctx.now);
                match issuer.issue(now, &ctx.asker()) {
                    Ok(c) => {
                        // Field order as the agent's: RoleArn, the credentials, AccountId.
                        let mut doc = Map::new();
                        if let Some(arn) = base.get("RoleArn") {
                            doc.insert("RoleArn".into(), arn.clone());
                        }
                        fill(
                            &mut doc,
                            &c.access_key_id,
                            &c.secret_access_key,
                            &c.token,
                            &format_utc(c.expiration as i64),
                        );
                        if let Some(account) = base.get("AccountId") {
                            doc.insert("AccountId".into(), account.clone());
                        }
                        Reply::Dynamic(credentials_answer(doc))
                    }
                    Err(no) => no.reply(&self.unknown_id, &self.denied),
                }
            }
        })
    }
}

fn fill(doc: &mut Map<String, Value>, key: &str, secret: &str, token: &str, expiration: &str) {
    doc.insert("AccessKeyId".into(), key.into());
    doc.insert("SecretAccessKey".into(), secret.into());
    doc.insert("Token".into(), token.into());
    doc.insert("Expiration".into(), expiration.into());
}

fn credentials_answer(doc: Map<String, Value>) -> Response {
    Response::new(200)
        .header("Content-Type", JSON)
        .body(Value::Object(doc).to_string())
}
