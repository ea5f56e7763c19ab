//! Azure Instance Metadata Service (IMDS) at `http://169.254.169.254/metadata/...`.
//!
//! Sources are cited by the short names of `spec/azure.md`: [IMDS] the IMDS article, [Spec] the
//! REST specification, [VMtok] the managed-identity token article, [SE] scheduled events, [LB]
//! load-balancer metadata.
//!
//! Contract: [`Azure::build`] renders every static answer once: the version list, every node of
//! the instance document and of the load-balancer document (each in JSON and text), scheduled
//! events, identity info and the error answers that quote nothing. [`Azure::respond`] looks the
//! raw path up in one map (after removing one trailing `/`, and percent-decoding only when the
//! path has a `%`), applies the rules of [`rules`] and returns a reference to a rendered answer;
//! for such requests it allocates nothing. Only token answers, scheduled-event approvals and
//! the 404/405 answers (which quote the path) are built per request.
//!
//! Order of checks, as a request travels through IMDS: `X-Forwarded-For` (400), the `Metadata`
//! header (400), the endpoint (404), the method (405), the query string (400 for duplicates
//! or bad escapes), `api-version` (400 with `newest-versions`), then the element under a
//! filtered endpoint (404) and `format` (400). Identity endpoints answer every error in the
//! identity style (see [`errors`]).
//!
//! Endpoints: `/metadata/versions` (no api-version), `/metadata/instance[/...]`,
//! `/metadata/loadbalancer[/...]` (api-version 2020-10-01 or later), `/metadata/scheduledevents`
//! (GET, and POST to approve; its own api-versions), `/metadata/identity/info` and
//! `/metadata/identity/oauth2/token` (api-version 2018-02-01 or later). `/metadata/attested/
//! document` needs signing and is not served yet (404).

mod errors;
mod events;
mod instance;
mod rules;
mod token;
mod tree;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::json;

use self::errors::Errors;
use self::rules::{
    check_headers, parse_query, ApiVersions, Format, HeaderProblem, Query, QueryProblem,
    IDENTITY_MIN_API_VERSION, LOADBALANCER_MIN_API_VERSION, SCHEDULED_EVENTS_API_VERSIONS,
};
use self::token::{token_response, Identities, Selector};
use self::tree::Node;
use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{AzureConfig, Problems};
use crate::http::query::decode_path;
use crate::http::{Method, Prebuilt, Response};
use crate::snapshot::Keys;

const VERSIONS_PATH: &str = "/metadata/versions";
const INSTANCE_PATH: &str = "/metadata/instance";
const LOADBALANCER_PATH: &str = "/metadata/loadbalancer";
const EVENTS_PATH: &str = "/metadata/scheduledevents";
const IDENTITY_INFO_PATH: &str = "/metadata/identity/info";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// No lower bound on the api-version.
const ANY_VERSION: &str = "";

/// What a path leads to.
#[derive(Debug)]
enum Route {
    Versions(Prebuilt),
    Instance(Node),
    LoadBalancer(Node),
    /// `/metadata/loadbalancer` on a VM behind no standard load balancer.
    NoLoadBalancer,
    ScheduledEvents(Prebuilt),
    IdentityInfo(Prebuilt),
    Token,
}

/// The pre-rendered Azure service.
#[derive(Debug)]
pub struct Azure {
    routes: HashMap<Box<str>, Route>,
    versions: ApiVersions,
    events_versions: ApiVersions,
    errors: Errors,
    identities: Identities,
    /// Ids of the current scheduled events, for approvals.
    event_ids: Vec<Box<str>>,
    /// 200 to an approval.
    events_accepted: Prebuilt,
    has_loadbalancer: bool,
}

impl Azure {
    /// Renders every static answer of `config` (already validated).
    pub fn build(config: &AzureConfig, _keys: &Keys, _problems: &mut Problems) -> Azure {
        let versions = ApiVersions::new(config.api_versions.as_deref());
        let events_versions = ApiVersions::from_static(&SCHEDULED_EVENTS_API_VERSIONS);
        let mut routes = HashMap::new();

        let list: Vec<&str> = versions.oldest_first().collect();
        let body = json!({ "apiVersions": list }).to_string();
        routes.insert(
            VERSIONS_PATH.into(),
            Route::Versions(errors::json(200, body).prebuild()),
        );

        let doc = instance::document(&config.instance);
        for (path, node) in tree::render(INSTANCE_PATH, &doc) {
            routes.insert(path.into(), Route::Instance(node));
        }

        match &config.loadbalancer {
            Some(lb) => {
                let doc = loadbalancer_document(lb);
                for (path, node) in tree::render(LOADBALANCER_PATH, &doc) {
                    routes.insert(path.into(), Route::LoadBalancer(node));
                }
            }
            None => {
                routes.insert(LOADBALANCER_PATH.into(), Route::NoLoadBalancer);
            }
        }

        let events = events::document(&config.scheduled_events);
        routes.insert(
            EVENTS_PATH.into(),
            Route::ScheduledEvents(errors::json(200, events).prebuild()),
        );
        let info = json!({ "tenantId": config.tenant_id }).to_string();
        routes.insert(
            IDENTITY_INFO_PATH.into(),
            Route::IdentityInfo(errors::json(200, info).prebuild()),
        );
        routes.insert(TOKEN_PATH.into(), Route::Token);

        Azure {
            routes,
            errors: Errors::new(&versions, &events_versions),
            versions,
            events_versions,
            identities: Identities::new(config),
            event_ids: config
                .scheduled_events
                .events
                .iter()
                .map(|e| e.event_id.as_str().into())
                .collect(),
            events_accepted: Response::new(200)
                .header("Server", errors::SERVER)
                .prebuild(),
            has_loadbalancer: config.loadbalancer.is_some(),
        }
    }

    /// Answers a request whose path this cloud owns (see [`crate::cloud::owner`]).
    pub fn respond<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        let key = route_key(req.path);
        let route = self.routes.get(&*key);
        if let Some(route @ (Route::Token | Route::IdentityInfo(_))) = route {
            return self.identity(route, req, ctx);
        }
        match check_headers(req) {
            Err(HeaderProblem::Forwarded) => return Reply::Static(&self.errors.forwarded),
            Err(HeaderProblem::MissingMetadata) => {
                return Reply::Static(&self.errors.missing_metadata)
            }
            Ok(()) => {}
        }
        let Some(route) = route else {
            return self.missing(req, &key);
        };
        let post_allowed = matches!(route, Route::ScheduledEvents(_));
        match req.method {
            Method::Get => {}
            Method::Post if post_allowed => {}
            m => {
                let allow = if post_allowed { "GET, POST" } else { "GET" };
                return Reply::Dynamic(errors::method_not_allowed(req.path, m, allow));
            }
        }
        let query = match parse_query(req.query) {
            Ok(q) => q,
            Err(p) => return Reply::Static(self.query_error(p)),
        };
        match route {
            Route::Versions(answer) => self.json_only(&query, answer),
            Route::Instance(node) => match self.check_version(&query, ANY_VERSION) {
                Some(bad) => Reply::Static(bad),
                None => self.node(&query, node),
            },
            Route::LoadBalancer(node) => {
                match self.check_version(&query, LOADBALANCER_MIN_API_VERSION) {
                    Some(bad) => Reply::Static(bad),
                    None => self.node(&query, node),
                }
            }
            Route::NoLoadBalancer => {
                match self.check_version(&query, LOADBALANCER_MIN_API_VERSION) {
                    Some(bad) => Reply::Static(bad),
                    None => Reply::Static(&self.errors.no_loadbalancer),
                }
            }
            Route::ScheduledEvents(answer) => self.scheduled_events(req, &query, answer),
            Route::IdentityInfo(_) | Route::Token => self.identity(route, req, ctx),
        }
    }

    /// The answer for a path no cloud owns, in this cloud's style.
    pub fn not_found<'s>(&'s self, req: &Request<'_>) -> Reply<'s> {
        Reply::Dynamic(errors::not_found(req.path, req.method))
    }

    /// A path with no route. Under a filtered endpoint the endpoint's rules still come first
    /// (method, query, api-version), then 404 for the missing element.
    fn missing<'s>(&'s self, req: &Request<'_>, key: &str) -> Reply<'s> {
        let min = if key.starts_with("/metadata/instance/") {
            ANY_VERSION
        } else if key.starts_with("/metadata/loadbalancer/") {
            LOADBALANCER_MIN_API_VERSION
        } else {
            return self.not_found(req);
        };
        if req.method != Method::Get {
            return Reply::Dynamic(errors::method_not_allowed(req.path, req.method, "GET"));
        }
        let query = match parse_query(req.query) {
            Ok(q) => q,
            Err(p) => return Reply::Static(self.query_error(p)),
        };
        if let Some(bad) = self.check_version(&query, min) {
            return Reply::Static(bad);
        }
        if min == LOADBALANCER_MIN_API_VERSION && !self.has_loadbalancer {
            return Reply::Static(&self.errors.no_loadbalancer);
        }
        self.not_found(req)
    }

    fn query_error(&self, p: QueryProblem) -> &Prebuilt {
        match p {
            QueryProblem::Duplicate => &self.errors.duplicate_query,
            QueryProblem::Malformed | QueryProblem::TooMany => &self.errors.bad_query,
        }
    }

    /// The bad api-version answer, unless `query` names a supported version not older than
    /// `min`.
    fn check_version(&self, query: &Query<'_>, min: &str) -> Option<&Prebuilt> {
        match query.api_version.as_deref() {
            Some(v) if self.versions.accepts(v, min) => None,
            _ => Some(&self.errors.bad_api_version),
        }
    }

    /// An endpoint that only speaks JSON: `format` may be absent or `json`.
    fn json_only<'s>(&'s self, query: &Query<'_>, answer: &'s Prebuilt) -> Reply<'s> {
        if query.format.is_json() {
            Reply::Static(answer)
        } else {
            Reply::Static(&self.errors.bad_format)
        }
    }

    /// A node of a filtered endpoint in the requested format.
    fn node<'s>(&'s self, query: &Query<'_>, node: &'s Node) -> Reply<'s> {
        match (query.format, &node.json) {
            (Format::Invalid, _) => Reply::Static(&self.errors.bad_format),
            (Format::Text, _) => Reply::Static(&node.text),
            (_, Some(json)) => Reply::Static(json),
            (_, None) => Reply::Static(&self.errors.leaf_needs_text),
        }
    }

    fn scheduled_events<'s>(
        &'s self,
        req: &Request<'_>,
        query: &Query<'_>,
        answer: &'s Prebuilt,
    ) -> Reply<'s> {
        let version_ok = query
            .api_version
            .as_deref()
            .is_some_and(|v| self.events_versions.accepts(v, ANY_VERSION));
        if !version_ok {
            return Reply::Static(&self.errors.bad_events_api_version);
        }
        if req.method == Method::Post {
            return if events::start_requests_valid(req.body, &self.event_ids) {
                Reply::Static(&self.events_accepted)
            } else {
                Reply::Static(&self.errors.bad_start_requests)
            };
        }
        self.json_only(query, answer)
    }

    /// `/metadata/identity/info` and `/metadata/identity/oauth2/token`.
    fn identity<'s>(
        &'s self,
        route: &'s Route,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Reply<'s> {
        let e = &self.errors.identity;
        match check_headers(req) {
            Err(HeaderProblem::Forwarded) => return Reply::Static(&e.forwarded),
            Err(HeaderProblem::MissingMetadata) => return Reply::Static(&e.missing_metadata),
            Ok(()) => {}
        }
        if req.method != Method::Get {
            return Reply::Dynamic(errors::identity_method_not_allowed(req.path, req.method));
        }
        let query = match parse_query(req.query) {
            Ok(q) => q,
            Err(QueryProblem::Duplicate) => return Reply::Static(&e.duplicate_query),
            Err(_) => return Reply::Static(&e.bad_query),
        };
        let version_ok = query
            .api_version
            .as_deref()
            .is_some_and(|v| self.versions.accepts(v, IDENTITY_MIN_API_VERSION));
        if !version_ok {
            return Reply::Static(&e.bad_api_version);
        }
        match route {
            Route::IdentityInfo(answer) => Reply::Static(answer),
            _ => self.token(&query, ctx),
        }
    }

    fn token<'s>(&'s self, query: &Query<'_>, ctx: &RequestContext) -> Reply<'s> {
        let e = &self.errors.identity;
        let resource = match query.resource.as_deref() {
            Some(r) if !r.is_empty() => r,
            _ => return Reply::Static(&e.missing_resource),
        };
        let selectors = [
            query.client_id.as_deref().map(Selector::ClientId),
            query.object_id.as_deref().map(Selector::ObjectId),
            query.msi_res_id.as_deref().map(|id| Selector::ResourceId {
                id,
                named_mi: false,
            }),
            query
                .mi_res_id
                .as_deref()
                .map(|id| Selector::ResourceId { id, named_mi: true }),
        ];
        let mut given = selectors.into_iter().flatten();
        let selector = given.next().unwrap_or(Selector::Default);
        if given.next().is_some() {
            return Reply::Static(&e.many_selectors);
        }
        if query.bypass_cache.as_deref().is_some_and(|v| v != "true") {
            return Reply::Static(&e.bad_bypass_cache);
        }
        match self.identities.select(selector) {
            Some(identity) => Reply::Dynamic(token_response(identity, resource, selector, ctx.now)),
            None => Reply::Static(&e.not_found),
        }
    }
}

/// The map key of a request path: percent-decoded (only when it has a `%`; undecodable paths
/// stay as sent and miss), without one trailing `/`.
fn route_key(path: &str) -> Cow<'_, str> {
    let mut key = decode_path(path).unwrap_or(Cow::Borrowed(path));
    if key.len() > 1 && key.ends_with('/') {
        match &mut key {
            Cow::Borrowed(s) => *s = &s[..s.len() - 1],
            Cow::Owned(s) => {
                s.pop();
            }
        }
    }
    key
}

/// `/metadata/loadbalancer`'s document [LB]: ports stay numbers.
fn loadbalancer_document(lb: &crate::config::azure::LoadBalancer) -> serde_json::Value {
    let address = |a: &crate::config::azure::LbAddress| {
        json!({
            "frontendIpAddress": a.frontend_ip_address,
            "privateIpAddress": a.private_ip_address,
        })
    };
    let inbound: Vec<_> = lb
        .inbound_rules
        .iter()
        .map(|r| {
            json!({
                "frontendIpAddress": r.frontend_ip_address,
                "protocol": r.protocol,
                "frontendPort": r.frontend_port,
                "backendPort": r.backend_port,
                "privateIpAddress": r.private_ip_address,
            })
        })
        .collect();
    json!({
        "loadbalancer": {
            "publicIpAddresses": lb.public_ip_addresses.iter().map(address).collect::<Vec<_>>(),
            "inboundRules": inbound,
            "outboundRules": lb.outbound_rules.iter().map(address).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests;
