//! The legacy VM extension identity endpoint, `http://localhost:50342/oauth2/token`
//! [spec/azure.md, other managed-identity endpoints], retired by Azure but still called by old
//! tools: `GET /oauth2/token?resource=...` with `Metadata: true`.
//!
//! Contract: the same token answer and errors as the IMDS token endpoint, except that no
//! `api-version` is required (the extension predates it; one given is ignored). Every other
//! path is 404.

use super::Azure;
use crate::cloud::{Reply, Request, RequestContext};

/// The extension's token path.
pub const LEGACY_MSI_PATH: &str = "/oauth2/token";

impl Azure {
    /// Answers a request that came through the legacy extension door.
    pub fn respond_legacy_msi<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        let path = req.path.strip_suffix('/').unwrap_or(req.path);
        if path != LEGACY_MSI_PATH {
            return self.not_found(req);
        }
        match self.identity_request(req) {
            Ok(q) => self.token(&q, ctx),
            Err(answer) => answer,
        }
    }
}
