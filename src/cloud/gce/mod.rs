//! The Google Compute Engine metadata server (spec/gce.md).
//!
//! Contract: [`Gce::build`] renders every answer that does not depend on the request into
//! route tables ([`routes::Mount`]) once; [`Gce::respond`] is then a chain of header checks,
//! one query parse and one `HashMap` lookup that returns a reference to pre-rendered bytes.
//! Only answers that quote the request (404, 403 and 405 pages, redirects that keep a query)
//! and minted tokens ([`minted`]: access tokens per scope set, ID tokens per audience and
//! format) are rendered per request.
//!
//! The rules, in the order they are applied:
//! 1. `X-Forwarded-For` → 403. The k8s metadata proxy documents that "the GCE metadata server
//!    rejects requests with that header"; the status (403) is SR's, the real one unconfirmed.
//! 2. `/` answers `0.1/\ncomputeMetadata/\n` to anyone (Python's ping needs the response's
//!    `Metadata-Flavor: Google`; Go's probe sends no request header).
//! 3. `/computeMetadata/` and everything under `v1/` needs `Metadata-Flavor: Google` (or the
//!    legacy `X-Google-Metadata-Request: True`), else 403 with Google's page. A header with
//!    another value counts as missing (choice: SR answers 404 there, clients never send it).
//! 4. The legacy trees `/computeMetadata/v1beta1/` and `/0.1/meta-data/` need no header and
//!    are 404 when the instance attribute `disable-legacy-endpoints` is `true`. `/0.1/` is a
//!    best-effort view: the v1 values old scripts read (project, hostname, zone, attributes).
//! 5. Methods: GET and HEAD everywhere; POST on `token` (google-auth POSTs there to bind a
//!    token to its agent certificate); PUT on `instance/guest-attributes/NS/KEY`; anything
//!    else 405.
//! 6. A directory without its `/` is a 301 to the path with it (the query kept); a value with
//!    a trailing `/` is a 404.
//! 7. Query rules ([`query`]): `recursive=true` gives the subtree as JSON (or `alt=text`
//!    lines); `alt` or `wait_for_change` on a non-recursive directory is a 400.
//!
//! Hanging GETs (`wait_for_change=true`, spec/gce.md): on a value or a recursive directory,
//! the answer is given at once when `last_etag` differs from the answer's ETag; otherwise
//! (equal, or no `last_etag`: wait for the next change) the request parks
//! ([`crate::http::Reply::Pending`] with a [`Ticket::change`]) on the flight that ends when
//! this snapshot is replaced (a `ctl set`, a reload) or, under `guest-attributes/`, when a
//! guest attribute is written. The front door re-runs it then; if the ETag is still the same
//! (another part of the tree changed) it parks again, keeping its first deadline. At
//! `timeout_sec` (or [`WATCH_LIMIT`] without it) the re-run has
//! [`RequestContext::wait_over`] and answers the current value. ETags are content hashes, so
//! they stay the same while the content does, across reloads too. `wait_for_change` on a
//! token or identity endpoint is answered at once (they are not metadata values).
//!
//! Guest attributes ([`guest`]): `PUT .../guest-attributes/NS/KEY` stores the body (200, empty
//! body) in a store that outlives snapshots; reading `guest-attributes/` (listings, values,
//! recursive) shows the configured ones with the written ones over them, rendered per request.
//! The recursive answers of `instance/` and `/` are pre-rendered and show the configured ones
//! only (whether the real server includes guest attributes there is unconfirmed). With guest
//! attributes off (`enable-guest-attributes` not `TRUE`) every guest-attributes path is 403
//! "Guest attributes endpoint access is disabled.".

pub mod guest;
mod minted;
mod page;
pub use page::fault;
mod query;
mod routes;
mod tree;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{GceConfig, Problems};
use crate::http::query::decode_path;
use crate::http::{Method, Prebuilt};
use crate::identity::TokenRequest;
use crate::pending::{Flight, Outcome, Ticket};
use crate::snapshot::Keys;

use guest::{Entries, Found, GuestAttributes};

use query::{Alt, Params};
use routes::{IdentityRoute, Mount, Route, TokenRoute};
use serde_json::Value;
use tree::{Node, Tree};

const V1: &str = "/computeMetadata/v1";
const V1BETA1: &str = "/computeMetadata/v1beta1";
const V01: &str = "/0.1";
const GUEST_ATTRIBUTES: &str = "instance/guest-attributes";

/// The longest a hanging GET waits when it gives no `timeout_sec` (or a longer one). The real
/// server's cap is undocumented (unconfirmed); Go's `Subscribe` sends no `timeout_sec` and
/// simply asks again after any answer, so any cap is safe for it.
pub const WATCH_LIMIT: Duration = Duration::from_secs(3600);

/// The pre-rendered GCE metadata server.
#[derive(Debug)]
pub struct Gce {
    v1: Mount,
    /// `v1beta1/` and `0.1/`, when legacy endpoints are on.
    legacy: Option<(Mount, Mount)>,
    guest_attributes: bool,
    root: Prebuilt,
    compute_metadata: Prebuilt,
    compute_metadata_redirect: Prebuilt,
    bad_request: Prebuilt,
    missing_audience: Prebuilt,
    guest_disabled: Prebuilt,
    guest_written: Prebuilt,
    /// A token source with nothing to give now (503, which clients retry).
    unavailable: Prebuilt,
    /// Ends when this rendering is replaced: hanging GETs wait on it.
    changed: Arc<Flight>,
    /// What the guest wrote (shared by every snapshot).
    guest: Arc<GuestAttributes>,
    /// `$.gce.instance.guest-attributes`.
    configured_guest: Entries,
}

impl Gce {
    /// Renders every static answer of `config` (already validated).
    pub fn build(config: &GceConfig, keys: &Keys, _problems: &mut Problems) -> Gce {
        let tree = Tree::from_config(config);
        let issuers = minted::issuers(config, &tree.accounts, &keys.identity);
        let v1 = Mount::build(&tree.root, &tree.accounts, &issuers, "/computeMetadata/v1/");
        let legacy = config.legacy_endpoints().then(|| {
            let beta = Mount::build(
                &tree.root,
                &tree.accounts,
                &issuers,
                "/computeMetadata/v1beta1/",
            );
            let v01 = Mount::build(&legacy_01_tree(&tree.root), &[], &[], "/0.1/");
            (beta, v01)
        });
        Gce {
            v1,
            legacy,
            guest_attributes: config.guest_attributes_enabled(),
            root: page::answer(200, page::TEXT, "0.1/\ncomputeMetadata/\n").prebuild(),
            compute_metadata: page::answer(200, page::TEXT, "v1/\nv1beta1/\n").prebuild(),
            compute_metadata_redirect: page::redirect("/computeMetadata/").prebuild(),
            bad_request: page::bad_request().prebuild(),
            // SR's text; the real server's is unconfirmed.
            missing_audience: page::answer(
                400,
                page::HTML,
                "non-empty audience parameter required\n",
            )
            .prebuild(),
            guest_disabled: page::answer(
                403,
                page::HTML,
                "Guest attributes endpoint access is disabled.\n",
            )
            .prebuild(),
            guest_written: page::answer(200, page::TEXT, "").prebuild(),
            unavailable: page::answer(503, page::TEXT, "The token is not available yet; retry.\n")
                .prebuild(),
            changed: Flight::new(),
            guest: Arc::clone(&keys.guest_attributes),
            configured_guest: guest::configured(&config.instance),
        }
    }

    /// This rendering was replaced: wake its hanging GETs, and those on guest attributes (the
    /// configured ones may differ now).
    pub fn retire(&self) {
        self.changed.finish(Outcome::Done);
        self.guest.touch();
    }

    /// Answers a request whose path this cloud owns (see [`crate::cloud::owner`]).
    pub fn respond<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        let path = req.path;
        if req.has_header("x-forwarded-for") {
            return Reply::Dynamic(page::forwarded(path));
        }
        if path == "/" {
            return self.readable(req).unwrap_or(Reply::Static(&self.root));
        }
        if let Some(rest) = below(path, V1) {
            if !has_flavor(req) {
                return Reply::Dynamic(page::missing_flavor(path));
            }
            return self.in_mount(&self.v1, rest, true, req, ctx);
        }
        if let Some(rest) = below(path, V1BETA1) {
            return match &self.legacy {
                Some((beta, _)) => self.in_mount(beta, rest, false, req, ctx),
                None => self.not_found(req),
            };
        }
        if let Some(rest) = below(path, V01) {
            return match &self.legacy {
                Some((_, v01)) => self.in_mount(v01, rest, false, req, ctx),
                None => self.not_found(req),
            };
        }
        if path == "/computeMetadata" || path == "/computeMetadata/" {
            if !has_flavor(req) {
                return Reply::Dynamic(page::missing_flavor(path));
            }
            if let Some(refused) = self.readable(req) {
                return refused;
            }
            return Reply::Static(if path.ends_with('/') {
                &self.compute_metadata
            } else {
                &self.compute_metadata_redirect
            });
        }
        self.not_found(req)
    }

    /// The answer for a path no cloud owns, in this cloud's style.
    pub fn not_found<'s>(&'s self, req: &Request<'_>) -> Reply<'s> {
        Reply::Dynamic(page::not_found(req.path))
    }

    /// `None` for GET and HEAD, else the 405.
    fn readable<'s>(&'s self, req: &Request<'_>) -> Option<Reply<'s>> {
        match req.method {
            Method::Get | Method::Head => None,
            _ => Some(method_not_allowed(req)),
        }
    }

    /// Answers `rest` (the path below a mount's prefix: `""`, `/`, `/instance/zone`, ...).
    fn in_mount<'s>(
        &'s self,
        mount: &'s Mount,
        rest: &str,
        v1: bool,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Reply<'s> {
        let (key, slash) = match rest {
            "" => ("", false),
            "/" => ("", true),
            _ => {
                let key = &rest[1..];
                match key.strip_suffix('/') {
                    Some(k) => (k, true),
                    None => (key, false),
                }
            }
        };
        // Percent-encoded paths (`%40` for `@` in e-mails) are looked up decoded; only
        // those allocate.
        let key: Cow<'_, str> = if key.contains('%') {
            match decode_path(key) {
                Ok(k) => k,
                Err(_) => return Reply::Static(&self.bad_request),
            }
        } else {
            Cow::Borrowed(key)
        };
        let in_guest = key == GUEST_ATTRIBUTES
            || key
                .strip_prefix(GUEST_ATTRIBUTES)
                .is_some_and(|r| r.starts_with('/'));
        if in_guest && v1 && !self.guest_attributes {
            return Reply::Static(&self.guest_disabled);
        }
        if req.method == Method::Put {
            return if in_guest && v1 {
                self.put_guest_attribute(&key, slash, req)
            } else {
                method_not_allowed(req)
            };
        }
        if in_guest && self.guest_attributes {
            return self.get_guest_attributes(&key, slash, req, ctx);
        }
        let route = mount.get(&key);
        let post_ok = matches!(route, Some(Route::Token(_))) && req.method == Method::Post;
        if !post_ok {
            if let Some(refused) = self.readable(req) {
                return refused;
            }
        }
        let Some(route) = route else {
            return self.not_found(req);
        };
        if let Route::Dir(dir) = route {
            if !slash {
                return if req.query.is_empty() {
                    Reply::Static(&dir.redirect)
                } else {
                    Reply::Dynamic(page::redirect(&format!("{}?{}", dir.location, req.query)))
                };
            }
        } else if slash {
            return self.not_found(req);
        }
        let Ok(params) = Params::parse(req.query) else {
            return Reply::Static(&self.bad_request);
        };
        match route {
            Route::Dir(dir) if params.recursive => {
                let answer = match params.alt {
                    Some(Alt::Text) => &dir.recursive_text,
                    _ => &dir.recursive_json,
                };
                self.watched(
                    Reply::Static(answer),
                    &dir.recursive_etag,
                    &params,
                    ctx,
                    || Arc::clone(&self.changed),
                )
            }
            Route::Dir(dir) => Reply::Static(if params.alt.is_some() || params.wait_for_change {
                &self.bad_request
            } else {
                &dir.listing
            }),
            Route::Value(value) => {
                let json = match params.alt {
                    Some(Alt::Json) => true,
                    Some(Alt::Text) => false,
                    None => value.json_default || (params.recursive && value.list),
                };
                let answer = if json { &value.json } else { &value.text };
                self.watched(Reply::Static(answer), &value.etag, &params, ctx, || {
                    Arc::clone(&self.changed)
                })
            }
            Route::Token(i) => match mount.tokens.get(*i).and_then(Option::as_ref) {
                Some(TokenRoute::Static(answers)) => Reply::Static(match params.alt {
                    Some(Alt::Text) => &answers.text,
                    _ => &answers.json,
                }),
                Some(TokenRoute::Minted(issuer)) => {
                    let now = crate::identity::unix_secs(ctx.now);
                    let mut r = TokenRequest::new("", now);
                    r.scopes = params.scopes.as_deref().unwrap_or("");
                    match issuer.issue(&r, ctx.peer) {
                        Ok(t) => {
                            let (json, text) = routes::token_answers(&t.value, t.expires_in(now));
                            Reply::Dynamic(match params.alt {
                                Some(Alt::Text) => text,
                                _ => json,
                            })
                        }
                        Err(no) => no.reply(&self.unavailable),
                    }
                }
                None => self.not_found(req),
            },
            Route::Identity(i) => {
                let Some(audience) = params.audience.as_deref() else {
                    return Reply::Static(&self.missing_audience);
                };
                match mount.identities.get(*i).and_then(Option::as_ref) {
                    Some(IdentityRoute::Static(answer)) => Reply::Static(answer),
                    Some(IdentityRoute::Minted(issuer)) => {
                        let mut r =
                            TokenRequest::new(audience, crate::identity::unix_secs(ctx.now));
                        r.full = params.format_full;
                        r.licenses = params.licenses;
                        match issuer.issue(&r, ctx.peer) {
                            Ok(t) => Reply::Dynamic(page::answer(200, page::TEXT, t.value)),
                            Err(no) => no.reply(&self.unavailable),
                        }
                    }
                    None => self.not_found(req),
                }
            }
        }
    }

    /// `answer`, or a park until the value changes when the request is a hanging GET whose
    /// `last_etag` is `etag` (or absent). `flight` gives the flight that ends on a change.
    fn watched<'s>(
        &'s self,
        answer: Reply<'s>,
        etag: &str,
        params: &Params<'_>,
        ctx: &RequestContext,
        flight: impl FnOnce() -> Arc<Flight>,
    ) -> Reply<'s> {
        if !params.wait_for_change || ctx.wait_over {
            return answer;
        }
        if params.last_etag.as_deref().is_some_and(|e| e != etag) {
            return answer;
        }
        let limit = params
            .timeout_sec
            .map_or(WATCH_LIMIT, |s| Duration::from_secs(s).min(WATCH_LIMIT));
        if limit.is_zero() {
            return answer;
        }
        Reply::Pending(Ticket::change(&flight(), limit))
    }

    /// `GET` under `instance/guest-attributes`: the configured and written values, rendered
    /// per request ([`guest`]).
    fn get_guest_attributes<'s>(
        &'s self,
        key: &str,
        slash: bool,
        req: &Request<'_>,
        ctx: &RequestContext,
    ) -> Reply<'s> {
        if let Some(refused) = self.readable(req) {
            return refused;
        }
        let rest = key
            .strip_prefix(GUEST_ATTRIBUTES)
            .unwrap_or("")
            .trim_start_matches('/');
        // Read together with the flight of the next change, so no write is missed.
        let (written, guest_changed) = self.guest.view();
        let entries = guest::merge(&self.configured_guest, written);
        let Some(found) = guest::find(&entries, rest) else {
            return self.not_found(req);
        };
        let is_dir = !matches!(found, Found::Value(_));
        if is_dir && !slash {
            let location = if req.query.is_empty() {
                format!("{}/", req.path)
            } else {
                format!("{}/?{}", req.path, req.query)
            };
            return Reply::Dynamic(page::redirect(&location));
        }
        if !is_dir && slash {
            return self.not_found(req);
        }
        let Ok(params) = Params::parse(req.query) else {
            return Reply::Static(&self.bad_request);
        };
        let (answer, etag) = match (&found, params.recursive) {
            (Found::Value(v), _) => {
                let text = page::answer(200, page::TEXT, v.to_string());
                let etag = page::etag(v.as_bytes());
                let answer = match params.alt {
                    Some(Alt::Json) => {
                        let json = Value::String((*v).to_string()).to_string();
                        routes::set_etag(page::answer(200, page::JSON, json), &etag)
                    }
                    _ => text,
                };
                (answer, etag)
            }
            (_, true) => {
                let json = found.json().to_string();
                let etag = page::etag(json.as_bytes());
                let answer = match params.alt {
                    Some(Alt::Text) => {
                        routes::set_etag(page::answer(200, page::TEXT, found.text_lines()), &etag)
                    }
                    _ => page::answer(200, page::JSON, json),
                };
                (answer, etag)
            }
            (_, false) if params.alt.is_some() || params.wait_for_change => {
                return Reply::Static(&self.bad_request)
            }
            (_, false) => return Reply::Dynamic(page::answer(200, page::TEXT, found.listing())),
        };
        self.watched(Reply::Dynamic(answer), &etag, &params, ctx, || {
            // A replaced snapshot may have other configured values: re-run against the new
            // one at once (its flight has ended), else wait for the next write.
            if self.changed.outcome().is_some() {
                Arc::clone(&self.changed)
            } else {
                guest_changed
            }
        })
    }

    /// `PUT instance/guest-attributes/NS/KEY`, body = value, stored ([`guest`] has the
    /// bounds); a bad name, value or a full store is a 400 that changes nothing.
    fn put_guest_attribute<'s>(&'s self, key: &str, slash: bool, req: &Request<'_>) -> Reply<'s> {
        let mut parts = key
            .strip_prefix(GUEST_ATTRIBUTES)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or("")
            .split('/');
        let (Some(ns), Some(k), None, false) = (parts.next(), parts.next(), parts.next(), slash)
        else {
            return Reply::Static(&self.bad_request);
        };
        match self.guest.put(ns, k, req.body) {
            Ok(()) => Reply::Static(&self.guest_written),
            Err(_) => Reply::Static(&self.bad_request),
        }
    }
}

fn method_not_allowed<'s>(req: &Request<'_>) -> Reply<'s> {
    let method = match req.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Other => "this method",
    };
    Reply::Dynamic(page::method_not_allowed(method, req.path))
}

/// The rest of `path` below `prefix` (`""` for the prefix itself, else starting with `/`).
fn below<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `Metadata-Flavor: Google`, or the legacy `X-Google-Metadata-Request: True`. The header
/// name is matched in any case and the value trimmed, but the value `Google` exactly as
/// Google documents it (`google` is refused: choice, the real server's comparison is
/// unconfirmed and every client sends `Google`). Repeated headers must agree
/// ([`Request::header_unanimous`]).
fn has_flavor(req: &Request<'_>) -> bool {
    req.header_unanimous("metadata-flavor", |v| v == "Google")
        || req.header_unanimous("x-google-metadata-request", |v| {
            v.eq_ignore_ascii_case("true")
        })
}

/// The `/0.1/` tree: `meta-data/` with the v1 values old scripts read.
fn legacy_01_tree(v1: &Node) -> Node {
    let from = |dir: &str, key: &str| v1.child(dir).and_then(|d| d.child(key)).cloned();
    let mut entries: Vec<(String, Node)> = [
        ("attributes", from("instance", "attributes")),
        ("description", from("instance", "description")),
        ("hostname", from("instance", "hostname")),
        ("image", from("instance", "image")),
        ("machine-type", from("instance", "machine-type")),
        ("numeric-project-id", from("project", "numeric-project-id")),
        ("project-id", from("project", "project-id")),
        ("tags", from("instance", "tags")),
        ("zone", from("instance", "zone")),
    ]
    .into_iter()
    .filter_map(|(k, n)| n.map(|n| (k.to_string(), n)))
    .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Node::Dir {
        entries: vec![(
            "meta-data".into(),
            Node::Dir {
                entries,
                user_keys: false,
            },
        )],
        user_keys: false,
    }
}
