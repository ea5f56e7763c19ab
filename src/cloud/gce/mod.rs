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
//! `wait_for_change=true` is validated (`timeout_sec` a number, not on a non-recursive
//! directory) and then answered at once with the current value and its ETag. That is exactly
//! right when `last_etag` differs from the current ETag; when it matches, the real server
//! hangs until the value changes, which needs live metadata: with an immutable snapshot the
//! value never changes, so the hanging wait is left to the live-metadata work.
//!
//! Guest attributes: `PUT .../guest-attributes/NS/KEY` is validated and answered as the real
//! server does (200, empty body), but not stored yet: reading it back shows the configured
//! guest attributes only. With guest attributes off (`enable-guest-attributes` not `TRUE`)
//! every guest-attributes path is 403 "Guest attributes endpoint access is disabled.".

mod minted;
mod page;
mod query;
mod routes;
mod tree;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::cloud::{Reply, Request, RequestContext};
use crate::config::{GceConfig, Problems};
use crate::http::query::decode_path;
use crate::http::{Method, Prebuilt};
use crate::identity::TokenRequest;
use crate::snapshot::Keys;

use query::{Alt, Params};
use routes::{IdentityRoute, Mount, Route, TokenRoute};
use tree::{Node, Tree};

const V1: &str = "/computeMetadata/v1";
const V1BETA1: &str = "/computeMetadata/v1beta1";
const V01: &str = "/0.1";
const GUEST_ATTRIBUTES: &str = "instance/guest-attributes";

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
        }
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
            Route::Dir(dir) => Reply::Static(if params.recursive {
                match params.alt {
                    Some(Alt::Text) => &dir.recursive_text,
                    _ => &dir.recursive_json,
                }
            } else if params.alt.is_some() || params.wait_for_change {
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
                Reply::Static(if json { &value.json } else { &value.text })
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

    /// `PUT instance/guest-attributes/NS/KEY`, body = value. Namespace and key are 1 to 100
    /// letters, digits, `-` or `_` and the value is UTF-8 (limits unconfirmed; Google
    /// documents the character set). Not stored yet (see the module docs).
    fn put_guest_attribute<'s>(&'s self, key: &str, slash: bool, req: &Request<'_>) -> Reply<'s> {
        let name_ok = |s: &str| {
            (1..=100).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut parts = key
            .strip_prefix(GUEST_ATTRIBUTES)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or("")
            .split('/');
        let valid = match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(k), None) => name_ok(ns) && name_ok(k) && !slash,
            _ => false,
        };
        if !valid || std::str::from_utf8(req.body).is_err() {
            return Reply::Static(&self.bad_request);
        }
        Reply::Static(&self.guest_written)
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
