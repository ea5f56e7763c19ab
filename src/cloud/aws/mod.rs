//! AWS EC2 instance metadata service (IMDSv1 and IMDSv2), as `http://169.254.169.254/`.
//!
//! Contract: [`Aws::build`] renders every path of the configuration once ([`tree`]) for each
//! API version; [`Aws::respond`] applies the per-request rules, in this order, and answers
//! static paths with a map lookup that allocates nothing:
//!
//! 1. `httpEndpoint: disabled` → 403 for everything.
//! 2. `PUT /latest/api/token` (the only PUT): `X-Forwarded-For` present → 403 (EC2 refuses
//!    tokens to forwarded requests); TTL header missing or not 1..21600 → 400; else 200 with
//!    a new token, the TTL echoed in `X-Aws-Ec2-Metadata-Token-Ttl-Seconds`, and IP TTL =
//!    `hopLimit` ([`crate::http::Response::ip_ttl`]; only the TUN front door can honour it).
//!    A PUT to the token path of a dated version (`/2021-03-23/api/token`) → 403. Any other
//!    method on a token path → 405 `Allow: OPTIONS, PUT` (observed).
//! 3. Methods other than GET and HEAD → 405 `Allow: GET, HEAD` (unconfirmed; see
//!    [`answers`]). HEAD is answered as GET; the HTTP layer drops the body.
//! 4. `X-aws-ec2-metadata-token` present: invalid or expired → 401, in either mode. Absent:
//!    served (IMDSv1) in `optional` mode, 401 in `required` mode.
//! 5. The path: `/` lists the versions; `/<version>` and `/<version>/` list the version's
//!    entries; below that one trailing slash is ignored; unknown → 404 (the XHTML page).
//!
//! Role credentials from a `minted` source ([`credentials::MintedIam`]) are the only answers
//! below a version computed per request (`iam/info` and `iam/security-credentials/<role>`);
//! the identity document's signatures are computed once per snapshot ([`signatures`]).
//!
//! Every known API version (`1.0` ... `2021-03-23`, `latest`) serves the same tree; EC2
//! hides categories newer than a dated version, which this emulator does not model.
//! Spot interruption notices, scheduled maintenance and the Auto Scaling lifecycle state
//! change over time: they are answered from the live state ([`events`]) before the static
//! tree, which answers whenever the live state has nothing there.

pub mod answers;
pub mod credentials;
pub mod ecs;
pub mod events;
pub mod jackson;
pub mod signatures;
pub mod timestamp;
pub mod token;
pub mod tree;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::cloud::{Reply, Request, RequestContext};
use crate::config::aws::{HttpEndpoint, Imdsv2};
use crate::config::{AwsConfig, Problems};
use crate::http::{Method, Prebuilt, Response};
use crate::live::Live;
use crate::snapshot::Keys;

use answers::{Errors, SERVER, TEXT};
use credentials::MintedIam;

/// API versions `GET /` lists, oldest first, as EC2 lists them.
pub const VERSIONS: [&str; 26] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "latest",
];

const TOKEN_PATH: &str = "api/token";

/// The pre-rendered AWS service.
#[derive(Debug)]
pub struct Aws {
    /// Answers below a version, keyed by the path without leading/trailing `/`.
    routes: HashMap<Box<str>, Prebuilt>,
    /// `GET /`.
    root: Prebuilt,
    errors: Errors,
    session_key: [u8; 32],
    /// The IAM paths of minted credentials, answered per request.
    minted_iam: Option<MintedIam>,
    disabled: bool,
    required: bool,
    hop_limit: u8,
    /// ECS container credentials, when `$.aws.containerCredentials` is on.
    ecs: Option<ecs::Ecs>,
    /// The listings live entries (spot, events, autoscaling) extend.
    live_paths: events::LiveListings,
}

/// What the request rules decided before routing.
enum Verdict<'s> {
    /// Go on and route the path.
    Route,
    /// Answer with this static error.
    Error(&'s Prebuilt, &'s Response),
    /// A token was minted.
    Token(Response),
}

impl Aws {
    /// Renders every static answer of `config` (already validated).
    pub fn build(config: &AwsConfig, keys: &Keys, _problems: &mut Problems) -> Aws {
        let root = root_listing().prebuild();
        let minted_iam = config.iam.as_ref().and_then(|iam| {
            credentials::dynamic_issuer(iam, &keys.identity).map(|i| MintedIam::new(iam, i))
        });
        let routes = tree::render(config, &keys.identity);
        Aws {
            live_paths: events::LiveListings::from_routes(&routes),
            routes,
            root,
            errors: Errors::render(),
            session_key: keys.session,
            minted_iam,
            disabled: config.http_endpoint == HttpEndpoint::Disabled,
            required: config.imdsv2 == Imdsv2::Required,
            // Validation keeps it in 1..=64.
            hop_limit: u8::try_from(config.hop_limit).unwrap_or(1),
            ecs: ecs::Ecs::build(config, &keys.identity),
        }
    }

    /// Answers a request whose path this cloud owns (see [`crate::cloud::owner`]), including
    /// `/` (the snapshot swaps a static answer there for the shared version list); `live`
    /// holds the events.
    pub fn respond<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
        live: &Live,
    ) -> Reply<'s> {
        // The snapshot answers every static reply to a path it files under `/` (`/` itself,
        // and anything starting `//`) with the shared version list, so errors there are
        // dynamic.
        let at_root = req.path.starts_with("//");
        let (version, below) = split_version(req.path);
        match self.rules(req, ctx, version, below) {
            Verdict::Token(resp) => Reply::Dynamic(resp),
            Verdict::Error(_, resp) if at_root || req.path == "/" => Reply::Dynamic(resp.clone()),
            Verdict::Error(pre, _) => Reply::Static(pre),
            Verdict::Route if req.path == "/" => Reply::Static(&self.root),
            Verdict::Route if at_root => Reply::Dynamic(self.errors.not_found.clone()),
            Verdict::Route => {
                let known = version.is_some_and(|v| VERSIONS.contains(&v));
                let key = below.strip_suffix('/').unwrap_or(below);
                if known {
                    if let Some(answer) = self.live_paths.respond(key, live, ctx.now) {
                        return Reply::Dynamic(answer);
                    }
                }
                let minted = self.minted_iam.as_ref().filter(|_| known);
                match minted.and_then(|m| m.respond(key, ctx)) {
                    Some(Ok(answer)) => return Reply::Dynamic(answer),
                    Some(Err(no)) => return no.reply(&self.errors.not_found_pre),
                    None => {}
                }
                match self.routes.get(key).filter(|_| known) {
                    Some(pre) => Reply::Static(pre),
                    None => Reply::Static(&self.errors.not_found_pre),
                }
            }
        }
    }

    /// Steps 1-4 of the module docs.
    fn rules(
        &self,
        req: &Request<'_>,
        ctx: &RequestContext,
        version: Option<&str>,
        below: &str,
    ) -> Verdict<'_> {
        let e = &self.errors;
        if self.disabled {
            return Verdict::Error(&e.forbidden_pre, &e.forbidden);
        }
        if below == TOKEN_PATH {
            if req.method != Method::Put {
                return Verdict::Error(
                    &e.token_method_not_allowed_pre,
                    &e.token_method_not_allowed,
                );
            }
            if version != Some("latest") || req.has_header("x-forwarded-for") {
                return Verdict::Error(&e.forbidden_pre, &e.forbidden);
            }
            let ttl = req
                .header("x-aws-ec2-metadata-token-ttl-seconds")
                .and_then(token::parse_ttl);
            return match ttl {
                Some(ttl) => {
                    let minted = token::mint(&self.session_key, unix_secs(ctx), ttl);
                    Verdict::Token(answers::token(minted, ttl, self.hop_limit))
                }
                None => Verdict::Error(&e.bad_request_pre, &e.bad_request),
            };
        }
        if !matches!(req.method, Method::Get | Method::Head) {
            return Verdict::Error(&e.method_not_allowed_pre, &e.method_not_allowed);
        }
        let refused = match req.header("x-aws-ec2-metadata-token") {
            Some(t) => token::check(&self.session_key, unix_secs(ctx), t).is_err(),
            None => self.required,
        };
        if refused {
            return Verdict::Error(&e.unauthorized_pre, &e.unauthorized);
        }
        Verdict::Route
    }

    /// The answer at the container-credentials door (169.254.170.2), or `None` when the path
    /// is not a credentials path there (it is then answered as at 169.254.169.254).
    pub fn respond_container_credentials<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Option<Reply<'s>> {
        self.ecs.as_ref()?.respond(req, ctx)
    }

    /// The answer for a path no cloud owns, in this cloud's style.
    pub fn not_found<'s>(&'s self, _req: &Request<'_>) -> Reply<'s> {
        Reply::Static(&self.errors.not_found_pre)
    }
}

impl Aws {
    /// The answer to `GET /` (the version list), unrendered, so the snapshot can add GCE's
    /// detection header when both clouds share the address.
    pub fn root_response(&self) -> Response {
        root_listing()
    }
}

fn root_listing() -> Response {
    Response::new(200)
        .header("Content-Type", TEXT)
        .header("Accept-Ranges", "none")
        .header("Server", SERVER)
        .body(VERSIONS.join("\n"))
}

/// `/latest/meta-data/x` → (`Some("latest")`, `meta-data/x`); `/latest` → (`Some("latest")`,
/// ``); `/` → (`None`, ``).
fn split_version(path: &str) -> (Option<&str>, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() {
        return (None, "");
    }
    match rest.split_once('/') {
        Some((v, below)) => (Some(v), below),
        None => (Some(rest), ""),
    }
}

fn unix_secs(ctx: &RequestContext) -> u64 {
    crate::identity::unix_secs(ctx.now)
}
