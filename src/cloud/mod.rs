//! The clouds: each turns its part of the configuration into pre-serialised routes plus the
//! few rules evaluated per request (header checks, query validation, tokens).
//!
//! Contract: a cloud never sees packets or sockets; it gets a parsed [`Request`] and a
//! [`RequestContext`] and returns a [`Reply`]. [`owner`] decides which cloud a path belongs
//! to; the [`crate::snapshot::Snapshot`] applies it. All three clouds share
//! 169.254.169.254:80, and their path spaces do not overlap except at `/` (see
//! [`crate::snapshot`] for how `/` is answered).

pub mod aws;
pub mod azure;
pub mod gce;

use std::net::SocketAddr;
use std::time::SystemTime;

pub use crate::http::{Reply, Request};

/// What a cloud may know about a request besides its bytes. Time is a value passed in:
/// clouds never read the clock.
#[derive(Clone, Copy, Debug)]
pub struct RequestContext {
    /// Wall-clock time of the request.
    pub now: SystemTime,
    /// The caller's address.
    pub peer: SocketAddr,
    /// The address the caller connected to (169.254.169.254:80, or a listen address).
    pub local: SocketAddr,
    /// Which front door the request came through: it decides which rules apply.
    pub door: Door,
    /// The request already waited as long as it may ([`crate::pending::Ticket::limit`]): a
    /// hanging GET answers the current value instead of parking again.
    pub wait_over: bool,
}

impl RequestContext {
    /// The context of the next request of a buffer answered in one go: `wait_over` belongs to
    /// the first request alone (the one that waited); requests pipelined behind it have their
    /// own wait ahead of them (a second hanging GET parks with its own limit).
    pub fn next_request(&mut self) -> RequestContext {
        let this = *self;
        self.wait_over = false;
        this
    }
}

/// The front doors a request can come through. Each is a different service on a real
/// machine, with its own rules for the same paths (a token from IMDS needs `Metadata: true`,
/// one from Azure Arc's HIMDS also a key-file challenge, one from App Service a secret header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Door {
    /// 169.254.169.254 (or a `serve --listen` address): every enabled cloud.
    #[default]
    Metadata,
    /// 169.254.170.2, AWS ECS's container-credentials address: the configured relative URI
    /// gets the role's credentials; every other path is answered as at [`Door::Metadata`].
    ContainerCredentials,
    /// Azure Arc's hybrid IMDS (HIMDS) at localhost:40342; answered through
    /// [`crate::snapshot::Snapshot::respond_himds`], which owns the key-file challenge.
    Himds,
    /// An App Service-style identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService,
    /// The legacy VM extension identity endpoint at localhost:50342.
    LegacyMsi,
}

impl Door {
    /// The door of a metadata address routed to the TUN device: 169.254.170.2 is ECS's.
    pub fn at_address(ip: std::net::IpAddr) -> Door {
        if ip == std::net::IpAddr::V4(crate::config::doors::ECS_ADDRESS) {
            Door::ContainerCredentials
        } else {
            Door::Metadata
        }
    }
}

/// Which cloud a request path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Azure,
    Gce,
    Aws,
    /// `/` itself, claimed by both GCE and AWS.
    Root,
    /// `/imds-tun/...`: imds-tun's own documents (the JWKS, the CA), a path no cloud owns.
    ImdsTun,
    /// No cloud has this path.
    Unknown,
}

/// The owner of `path` (the raw path, before `?`).
pub fn owner(path: &str) -> Owner {
    let first = path
        .strip_prefix('/')
        .map(|p| p.split('/').next().unwrap_or(""));
    match first {
        None => Owner::Unknown,
        Some("") => Owner::Root,
        Some("metadata") => Owner::Azure,
        Some("imds-tun") => Owner::ImdsTun,
        Some("computeMetadata") | Some("0.1") => Owner::Gce,
        Some(seg) if seg == "latest" || seg == "1.0" || is_aws_date(seg) => Owner::Aws,
        Some(_) => Owner::Unknown,
    }
}

/// Azure's scheduled-events JSON for `state` (for tests of the live state).
#[cfg(test)]
pub fn azure_events_document(state: &crate::live::azure::AzureEvents) -> String {
    azure::events_document(state)
}

/// The answer of an injected status ([`crate::live::faults`]) in the style of the cloud that
/// owns `path` (`/`: GCE's when the request names GCE, else AWS's), with `Retry-After` when
/// the rule gives one. No public source shows any of the three sending `Retry-After`; MSAL
/// assumes 5 s without it.
pub fn fault_answer(
    owner: Owner,
    wants_gce: bool,
    path: &str,
    status: u16,
    retry_after: Option<u32>,
) -> crate::http::Response {
    let resp = match owner {
        Owner::Azure => azure::fault(path, status),
        Owner::Gce => gce::fault(status, path),
        Owner::Root if wants_gce => gce::fault(status, path),
        _ => aws::answers::fault(status),
    };
    match retry_after {
        Some(s) => resp.header("Retry-After", s.to_string()),
        None => resp,
    }
}

/// Equality of two secrets (tokens, keys, secret headers) in time that depends only on their
/// lengths, so a caller cannot find a secret byte by byte by timing answers.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AWS dated API versions look like `2009-04-04`.
fn is_aws_date(seg: &str) -> bool {
    let b = seg.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod door_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_have_one_owner() {
        assert_eq!(owner("/"), Owner::Root);
        assert_eq!(owner("/metadata/instance"), Owner::Azure);
        assert_eq!(owner("/metadata"), Owner::Azure);
        assert_eq!(owner("/computeMetadata/v1/"), Owner::Gce);
        assert_eq!(owner("/0.1/meta-data/"), Owner::Gce);
        assert_eq!(owner("/latest/meta-data/"), Owner::Aws);
        assert_eq!(owner("/2021-03-23/api/token"), Owner::Aws);
        assert_eq!(owner("/1.0/meta-data"), Owner::Aws);
        assert_eq!(owner("/imds-tun/jwks"), Owner::ImdsTun);
        assert_eq!(owner("/favicon.ico"), Owner::Unknown);
        assert_eq!(owner("*"), Owner::Unknown);
    }
}
