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
//! for such requests it allocates nothing. Only token answers, attested documents,
//! scheduled-event approvals and the 404/405 answers (which quote the path) are built per
//! request.
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
//! `/metadata/identity/oauth2/token` (api-version 2018-02-01 or later; tokens from each
//! identity's source, see [`token`]), and `/metadata/attested/document` (api-version
//! 2018-10-01 or later, signed per request, see [`attested`]).
//!
//! The other token doors answer from the same identities with their own rules: [`himds`]
//! (Azure Arc, with the key-file challenge), [`app_service`] and [`legacy_msi`].

pub mod app_service;
mod attested;
mod errors;
mod events;
pub use errors::fault;
#[cfg(test)]
pub(crate) use events::document as events_document;
pub mod himds;
mod instance;
pub mod legacy_msi;
mod rules;
mod token;
mod tree;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::json;

use self::attested::Attested;
use self::errors::Errors;
use self::rules::{
    check_headers, parse_query, ApiVersions, Format, HeaderProblem, Query, QueryProblem,
    ATTESTED_MIN_API_VERSION, IDENTITY_MIN_API_VERSION, LOADBALANCER_MIN_API_VERSION,
    SCHEDULED_EVENTS_API_VERSIONS,
};
use self::token::{token_response, Identities, Selector};
use self::tree::Node;
use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{AzureConfig, Problems};
use crate::http::query::decode_path;
use crate::http::{Method, Prebuilt, Response};
use crate::identity::TokenRequest;
use crate::live::Live;
use crate::snapshot::Keys;

const VERSIONS_PATH: &str = "/metadata/versions";
const INSTANCE_PATH: &str = "/metadata/instance";
const LOADBALANCER_PATH: &str = "/metadata/loadbalancer";
const EVENTS_PATH: &str = "/metadata/scheduledevents";
const IDENTITY_INFO_PATH: &str = "/metadata/identity/info";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const ATTESTED_PATH: &str = "/metadata/attested/document";

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
    /// Answered from the live state ([`crate::live::azure`]).
    ScheduledEvents,
    IdentityInfo(Prebuilt),
    Token,
    Attested,
}

/// The pre-rendered Azure service.
#[derive(Debug)]
pub struct Azure {
    routes: HashMap<Box<str>, Route>,
    versions: ApiVersions,
    events_versions: ApiVersions,
    errors: Errors,
    identities: Identities,
    attested: Attested,
    /// 200 to an approval.
    events_accepted: Prebuilt,
    has_loadbalancer: bool,
    /// The HIMDS door: where its key files are (the realm's directory), its own errors.
    himds_key_directory: String,
    himds_errors: himds::HimdsErrors,
    /// The App Service door's `X-IDENTITY-HEADER` secret and errors.
    app_service_header: String,
    app_service_errors: app_service::AppServiceErrors,
}

impl Azure {
    /// Renders every static answer of `config` (already validated).
    pub fn build(config: &AzureConfig, keys: &Keys, _problems: &mut Problems) -> Azure {
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

        routes.insert(EVENTS_PATH.into(), Route::ScheduledEvents);
        let info = json!({ "tenantId": config.tenant_id }).to_string();
        routes.insert(
            IDENTITY_INFO_PATH.into(),
            Route::IdentityInfo(errors::json(200, info).prebuild()),
        );
        routes.insert(TOKEN_PATH.into(), Route::Token);
        routes.insert(ATTESTED_PATH.into(), Route::Attested);

        Azure {
            routes,
            errors: Errors::new(&versions, &events_versions),
            versions,
            events_versions,
            identities: Identities::new(config, &keys.identity),
            attested: Attested::new(config, &keys.identity),
            events_accepted: Response::new(200)
                .header("Server", errors::SERVER)
                .prebuild(),
            has_loadbalancer: config.loadbalancer.is_some(),
            himds_key_directory: config.himds.key_directory.display().to_string(),
            himds_errors: himds::HimdsErrors::render(),
            app_service_header: app_service::app_service_header(config, keys),
            app_service_errors: app_service::AppServiceErrors::render(),
        }
    }

    /// Answers a request whose path this cloud owns (see [`crate::cloud::owner`]); `live`
    /// holds the scheduled events.
    pub fn respond<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
        live: &Live,
    ) -> Reply<'s> {
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
        let post_allowed = matches!(route, Route::ScheduledEvents);
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
            Route::ScheduledEvents => self.scheduled_events(req, &query, ctx, live),
            Route::Attested => match self.check_version(&query, ATTESTED_MIN_API_VERSION) {
                Some(bad) => Reply::Static(bad),
                None => self.attested(&query, ctx),
            },
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

    /// `GET` the document at the request's time, or `POST` an approval [SE].
    fn scheduled_events<'s>(
        &'s self,
        req: &Request<'_>,
        query: &Query<'_>,
        ctx: &RequestContext,
        live: &Live,
    ) -> Reply<'s> {
        let version_ok = query
            .api_version
            .as_deref()
            .is_some_and(|v| self.events_versions.accepts(v, ANY_VERSION));
        if !version_ok {
            return Reply::Static(&self.errors.bad_events_api_version);
        }
        if req.method == Method::Post {
            let Some(ids) = events::start_requests(req.body) else {
                return Reply::Static(&self.errors.bad_start_requests);
            };
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            return match live.azure_approve(&ids, ctx.now) {
                Ok(()) => {
                    tracing::info!(caller = %ctx.peer, events = ?ids, "scheduled events approved");
                    Reply::Static(&self.events_accepted)
                }
                Err(_) => Reply::Static(&self.errors.bad_start_requests),
            };
        }
        if !query.format.is_json() {
            return Reply::Static(&self.errors.bad_format);
        }
        Reply::Shared(live.azure_document(ctx.now, events::answer))
    }

    /// The checks every identity endpoint of every door makes first, in the identity error
    /// style: `X-Forwarded-For` and `Metadata: true`, GET, a well-formed query.
    fn identity_request<'s, 'q>(&'s self, req: &Request<'q>) -> Result<Query<'q>, Reply<'s>> {
        let e = &self.errors.identity;
        match check_headers(req) {
            Err(HeaderProblem::Forwarded) => return Err(Reply::Static(&e.forwarded)),
            Err(HeaderProblem::MissingMetadata) => return Err(Reply::Static(&e.missing_metadata)),
            Ok(()) => {}
        }
        if req.method != Method::Get {
            return Err(Reply::Dynamic(errors::identity_method_not_allowed(
                req.path, req.method,
            )));
        }
        parse_query(req.query).map_err(|p| match p {
            QueryProblem::Duplicate => Reply::Static(&e.duplicate_query),
            _ => Reply::Static(&e.bad_query),
        })
    }

    /// `/metadata/identity/info` and `/metadata/identity/oauth2/token`.
    fn identity<'s>(
        &'s self,
        route: &'s Route,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Reply<'s> {
        let e = &self.errors.identity;
        let query = match self.identity_request(req) {
            Ok(q) => q,
            Err(answer) => return answer,
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

    /// The attested document (see [`attested`]).
    fn attested<'s>(&'s self, query: &Query<'_>, ctx: &RequestContext) -> Reply<'s> {
        if !query.format.is_json() {
            return Reply::Static(&self.errors.bad_format);
        }
        let nonce = query.nonce.as_deref();
        if nonce.is_some_and(|n| !attested::nonce_ok(n)) {
            return Reply::Static(&self.errors.bad_nonce);
        }
        let now = crate::identity::unix_secs(ctx.now);
        match self.attested.respond(nonce, now) {
            Some(answer) => {
                tracing::info!(caller = %ctx.peer, nonce = nonce.unwrap_or(""), "signed attested document");
                Reply::Dynamic(answer)
            }
            None => Reply::Static(&self.errors.attested_unavailable),
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
        let Some(identity) = self.identities.select(selector) else {
            return Reply::Static(&e.not_found);
        };
        let now = crate::identity::unix_secs(ctx.now);
        match identity
            .issuer
            .issue(&TokenRequest::new(resource, now), ctx.peer)
        {
            Ok(token) => Reply::Dynamic(token_response(identity, &token, resource, selector, now)),
            Err(no) => no.reply(&e.unavailable),
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
