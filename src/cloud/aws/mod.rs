//! Aws. (Skeleton: the Aws engineer replaces this with the real routes and rules.)

use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{AwsConfig, Problems};
use crate::http::{Prebuilt, Response};
use crate::snapshot::Keys;

/// The pre-rendered Aws service.
#[derive(Debug)]
pub struct Aws {
    not_found: Prebuilt,
}

impl Aws {
    /// Renders every static answer of `config` (already validated).
    pub fn build(_config: &AwsConfig, _keys: &Keys, _problems: &mut Problems) -> Aws {
        Aws {
            not_found: Response::new(404).body("not found").prebuild(),
        }
    }

    /// Answers a request whose path this cloud owns (see [`crate::cloud::owner`]).
    pub fn respond<'s>(&'s self, _req: &Request<'_>, _ctx: &RequestContext) -> Reply<'s> {
        Reply::Static(&self.not_found)
    }

    /// The answer for a path no cloud owns, in this cloud's style.
    pub fn not_found<'s>(&'s self, _req: &Request<'_>) -> Reply<'s> {
        Reply::Static(&self.not_found)
    }
}

impl Aws {
    /// The answer to `GET /` (the version list), unrendered, so the snapshot can add GCE's
    /// detection header when both clouds share the address.
    pub fn root_response(&self) -> Response {
        Response::new(200).body("latest")
    }
}
