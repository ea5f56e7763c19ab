//! ECS container credentials at `http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//! [spec/aws.md, container credentials].
//!
//! Contract: [`Ecs::build`] renders the answer once from the instance role (`$.aws.iam`): the
//! same credentials `iam/security-credentials/<role>` gives, as
//! `{RoleArn, AccessKeyId, SecretAccessKey, Token, Expiration, AccountId}` in JSON (what
//! botocore's and the other SDKs' container providers parse). [`Ecs::respond`] answers only
//! requests at the container-credentials door: the configured relative URI, and 400 for other
//! credential paths (`/v2/credentials/...`), as the ECS agent answers an unknown id; every
//! other path is left to the metadata clouds (`None`).
//!
//! With `authorizationToken` set, requests must carry it in `Authorization` (the SDKs send
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` there); otherwise 401. Unconfirmed and chosen: that
//! status and the agent-style body `{"code": ..., "message": ...}` for it; GET and HEAD only
//! (405 otherwise).

use serde_json::{json, Map, Value};

use crate::cloud::{secrets_equal, Reply, Request};
use crate::config::aws::{arn_account, CredentialSource};
use crate::config::AwsConfig;
use crate::http::{Method, Prebuilt, Response};

const JSON: &str = "application/json";

/// Where the ECS agent serves credentials by id.
const CREDENTIALS_PREFIX: &str = "/v2/credentials";

/// The rendered container-credentials door.
#[derive(Debug)]
pub struct Ecs {
    relative_uri: Box<str>,
    authorization: Option<Box<str>>,
    credentials: Prebuilt,
    unknown_id: Prebuilt,
    unauthorized: Prebuilt,
    method_not_allowed: Prebuilt,
}

fn agent_error(status: u16, code: &str, message: &str) -> Response {
    Response::new(status)
        .header("Content-Type", JSON)
        .body(json!({"code": code, "message": message, "HTTPErrorCode": status}).to_string())
}

impl Ecs {
    /// `None` when the door is off or there is no role (validation refuses the latter).
    pub fn build(config: &AwsConfig) -> Option<Ecs> {
        let cc = &config.container_credentials;
        let iam = config.iam.as_ref().filter(|_| cc.enabled)?;
        let CredentialSource::Static(c) = &iam.credentials;
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
        doc.insert("AccessKeyId".into(), c.access_key_id.as_str().into());
        doc.insert(
            "SecretAccessKey".into(),
            c.secret_access_key.as_str().into(),
        );
        doc.insert("Token".into(), c.token.as_str().into());
        doc.insert("Expiration".into(), c.expiration.as_str().into());
        if let Some(account) = arn_account(arn) {
            doc.insert("AccountId".into(), account.into());
        }
        Some(Ecs {
            relative_uri: cc.relative_uri.as_str().into(),
            authorization: cc.authorization_token.as_ref().map(|t| t.expose().into()),
            credentials: Response::new(200)
                .header("Content-Type", JSON)
                .body(Value::Object(doc).to_string())
                .prebuild(),
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
            method_not_allowed: agent_error(405, "MethodNotAllowed", "Use GET")
                .header("Allow", "GET, HEAD")
                .prebuild(),
        })
    }

    /// The answer to a container-credentials request, or `None` for a path that is not one.
    pub fn respond(&self, req: &Request<'_>) -> Option<Reply<'_>> {
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
        Some(Reply::Static(if ours {
            &self.credentials
        } else {
            &self.unknown_id
        }))
    }
}
