//! The App Service / Functions identity endpoint [spec/azure.md, other managed-identity
//! endpoints]: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...` with
//! `X-IDENTITY-HEADER: $IDENTITY_HEADER`.
//!
//! Contract: the path is [`APP_SERVICE_PATH`] (one trailing `/` ignored); the header must equal
//! the door's secret (compared in constant time); `api-version` must be 2019-08-01; selectors
//! are `client_id`, `principal_id` (alias `object_id`) and `mi_res_id`, at most one. The token
//! is the one the IMDS token endpoint gives for the same identity and resource; the answer
//! keeps App Service's fields only: `access_token`, `expires_on` (epoch seconds, a string),
//! `resource`, `token_type`, `client_id`, plus the selector echoed as IMDS echoes it. No
//! `expires_in`: App Service does not send it.
//!
//! Decisions on unconfirmed points: a missing or wrong header is 401 and a bad api-version
//! 400, both with identity-style bodies; other errors are those of the IMDS token endpoint.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::errors;
use super::rules::{parse_query, QueryProblem};
use super::Azure;
use crate::cloud::{secrets_equal, Reply, Request, RequestContext};
use crate::config::AzureConfig;
use crate::http::{Method, Prebuilt, Response};
use crate::snapshot::Keys;

/// The path of `IDENTITY_ENDPOINT` on App Service.
pub const APP_SERVICE_PATH: &str = "/msi/token";

/// The one api-version of this protocol.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// Fields of the IMDS token answer App Service sends too.
const KEPT_FIELDS: [&str; 8] = [
    "access_token",
    "client_id",
    "expires_on",
    "mi_res_id",
    "msi_res_id",
    "object_id",
    "resource",
    "token_type",
];

/// The App Service door's answers that quote nothing.
#[derive(Debug)]
pub struct AppServiceErrors {
    pub unauthorized: Prebuilt,
    pub bad_api_version: Prebuilt,
}

impl AppServiceErrors {
    pub fn render() -> AppServiceErrors {
        let body = |code: &str, description: &str| {
            serde_json::json!({"error": code, "error_description": description}).to_string()
        };
        AppServiceErrors {
            unauthorized: errors::json(
                401,
                body(
                    "unauthorized_client",
                    "X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER",
                ),
            )
            .prebuild(),
            bad_api_version: errors::json(
                400,
                body(
                    "invalid_request",
                    "api-version is invalid or was not specified in the request; use 2019-08-01",
                ),
            )
            .prebuild(),
        }
    }
}

impl Azure {
    /// Answers a request that came through the App Service door.
    pub fn respond_app_service<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        let path = req.path.strip_suffix('/').unwrap_or(req.path);
        if path != APP_SERVICE_PATH {
            return self.not_found(req);
        }
        let e = &self.app_service_errors;
        let header_ok = req
            .header("x-identity-header")
            .is_some_and(|h| secrets_equal(h.trim_ascii(), self.app_service_header.as_bytes()));
        if !header_ok {
            return Reply::Static(&e.unauthorized);
        }
        if req.method != Method::Get {
            return Reply::Dynamic(errors::identity_method_not_allowed(req.path, req.method));
        }
        let mut query = match parse_query(req.query) {
            Ok(q) => q,
            Err(QueryProblem::Duplicate) => {
                return Reply::Static(&self.errors.identity.duplicate_query)
            }
            Err(_) => return Reply::Static(&self.errors.identity.bad_query),
        };
        if query.api_version.as_deref() != Some(APP_SERVICE_API_VERSION) {
            return Reply::Static(&e.bad_api_version);
        }
        if query.principal_id.is_some() {
            if query.object_id.is_some() {
                return Reply::Static(&self.errors.identity.many_selectors);
            }
            query.object_id = query.principal_id.take();
        }
        match self.token(&query, ctx) {
            Reply::Dynamic(resp) if resp.status == 200 => Reply::Dynamic(app_service_answer(resp)),
            other => other,
        }
    }
}

/// The IMDS token answer cut down to App Service's fields.
fn app_service_answer(imds: Response) -> Response {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&imds.body) else {
        return imds;
    };
    let kept: Map<String, Value> = fields
        .into_iter()
        .filter(|(k, _)| KEPT_FIELDS.contains(&k.as_str()))
        .collect();
    let mut out = imds;
    out.body = Value::Object(kept).to_string().into_bytes();
    out
}

/// The `X-IDENTITY-HEADER` secret of this run: the configured one, else derived from the
/// session key (so it survives reloads and changes with every run, as on App Service).
pub fn app_service_header(config: &AzureConfig, keys: &Keys) -> String {
    if let Some(h) = &config.app_service.header {
        return h.expose().to_string();
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys.session)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"imds-tun App Service IDENTITY_HEADER");
    mac.finalize()
        .into_bytes()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
