//! Gce. (Skeleton: the Gce engineer replaces this with the real routes and rules.)

use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{GceConfig, Problems};
use crate::http::{Prebuilt, Response};
use crate::snapshot::Keys;

/// The pre-rendered Gce service.
#[derive(Debug)]
pub struct Gce {
    not_found: Prebuilt,
}

impl Gce {
    /// Renders every static answer of `config` (already validated).
    pub fn build(_config: &GceConfig, _keys: &Keys, _problems: &mut Problems) -> Gce {
        Gce {
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
