//! Route tables: every path of a metadata tree, with each of its answers pre-rendered.
//!
//! Contract: a [`Mount`] maps the path *below* its prefix (`instance/zone`; `""` for the
//! prefix itself), without a trailing slash, to a [`Route`] holding complete [`Prebuilt`]
//! answers: a directory's listing, recursive JSON and text and its 301; a value's text and
//! JSON forms; a static token's JSON and text (minted tokens and ID tokens are routes to
//! their [`Issuer`], rendered per request). Looking a path up is one `HashMap::get` with a
//! `&str` and allocates nothing.
//!
//! ETags follow Google's emulator: the ETag names the *value*, not the format, so every form
//! of a value (alt=text or alt=json) carries the ETag of its default form. A directory's
//! listing and its recursive answers are different values with different ETags.

use std::collections::HashMap;
use std::sync::Arc;

use super::page::{self, JSON, TEXT};
use super::tree::{Account, Endpoint, Node};
use crate::http::{Prebuilt, Response};
use crate::identity::Issuer;

/// A directory's answers.
#[derive(Debug)]
pub struct DirRoute {
    pub listing: Prebuilt,
    pub recursive_json: Prebuilt,
    pub recursive_text: Prebuilt,
    /// The ETag of both recursive forms (what `last_etag` is compared with).
    pub recursive_etag: Box<str>,
    /// 301 to the path with `/`, for a request without query.
    pub redirect: Prebuilt,
    /// The redirect target, for requests whose query the redirect must keep.
    pub location: Box<str>,
}

/// A value's answers.
#[derive(Debug)]
pub struct ValueRoute {
    pub text: Prebuilt,
    pub json: Prebuilt,
    /// The ETag of both forms (what `last_etag` is compared with).
    pub etag: Box<str>,
    /// `instance/tags` answers JSON unless asked for text.
    pub json_default: bool,
    /// A list value (`scopes`) answers JSON by default when asked recursively, as a
    /// directory would (Google's emulator treats lists as directories there).
    pub list: bool,
}

/// An access token's answers, for one account.
#[derive(Debug)]
pub enum TokenRoute {
    /// A static token, rendered once.
    Static(Box<StaticTokenRoute>),
    /// Tokens issued per request.
    Minted(Arc<Issuer>),
}

/// A static token's two forms.
#[derive(Debug)]
pub struct StaticTokenRoute {
    pub json: Prebuilt,
    pub text: Prebuilt,
}

/// An identity endpoint's answers, for one account.
#[derive(Debug)]
pub enum IdentityRoute {
    /// A static ID token, whatever the audience.
    Static(Prebuilt),
    /// ID tokens issued per request and audience.
    Minted(Arc<Issuer>),
}

/// The minted sources of one account, shared by every mount.
#[derive(Clone, Debug, Default)]
pub struct Issuers {
    pub token: Option<Arc<Issuer>>,
    pub identity: Option<Arc<Issuer>>,
}

/// What a path is.
#[derive(Debug)]
pub enum Route {
    Dir(Box<DirRoute>),
    Value(Box<ValueRoute>),
    /// Index into [`Mount::tokens`].
    Token(usize),
    /// Index into [`Mount::identities`].
    Identity(usize),
}

/// One tree under one prefix.
#[derive(Debug, Default)]
pub struct Mount {
    pub routes: HashMap<Box<str>, Route>,
    pub tokens: Vec<Option<TokenRoute>>,
    pub identities: Vec<Option<IdentityRoute>>,
}

impl Mount {
    /// Renders `root` (and the accounts its endpoints refer to, with their minted sources in
    /// `issuers`, one per account) under `prefix`, e.g. `/computeMetadata/v1/`.
    pub fn build(root: &Node, accounts: &[Account], issuers: &[Issuers], prefix: &str) -> Mount {
        let issuer = |i: usize| issuers.get(i).cloned().unwrap_or_default();
        let mut mount = Mount {
            routes: HashMap::new(),
            tokens: accounts
                .iter()
                .enumerate()
                .map(|(i, a)| match issuer(i).token {
                    Some(minted) => Some(TokenRoute::Minted(minted)),
                    None => token_route(a),
                })
                .collect(),
            identities: accounts
                .iter()
                .enumerate()
                .map(|(i, a)| match issuer(i).identity {
                    Some(minted) => Some(IdentityRoute::Minted(minted)),
                    None => a.id_token.as_ref().map(|t| {
                        IdentityRoute::Static(page::answer(200, TEXT, t.clone()).prebuild())
                    }),
                })
                .collect(),
        };
        mount.add(root, "", prefix);
        mount
    }

    pub fn get(&self, path: &str) -> Option<&Route> {
        self.routes.get(path)
    }

    fn add(&mut self, node: &Node, path: &str, prefix: &str) {
        let route = match node {
            Node::Dir { .. } | Node::Indexed(_) => {
                let listing = node.listing();
                let json = node.json().map(|v| v.to_string()).unwrap_or_default();
                let mut text = String::new();
                node.text_lines("", &mut text);
                let recursive_etag = page::etag(json.as_bytes());
                let location: Box<str> = if path.is_empty() {
                    prefix.into()
                } else {
                    format!("{prefix}{path}/").into()
                };
                Route::Dir(Box::new(DirRoute {
                    listing: page::answer(200, TEXT, listing).prebuild(),
                    recursive_json: with_etag(page::answer(200, JSON, json), &recursive_etag),
                    recursive_text: with_etag(page::answer(200, TEXT, text), &recursive_etag),
                    recursive_etag: recursive_etag.into(),
                    redirect: page::redirect(&location).prebuild(),
                    location,
                }))
            }
            Node::Leaf(_) | Node::List(_) => {
                let json_default = path == "instance/tags";
                let text = node.value_text();
                let json = node.json().map(|v| v.to_string()).unwrap_or_default();
                let etag = page::etag(if json_default {
                    json.as_bytes()
                } else {
                    text.as_bytes()
                });
                Route::Value(Box::new(ValueRoute {
                    text: with_etag(page::answer(200, TEXT, text), &etag),
                    json: with_etag(page::answer(200, JSON, json), &etag),
                    etag: etag.into(),
                    json_default,
                    list: matches!(node, Node::List(_)),
                }))
            }
            Node::Endpoint(Endpoint::Token(i)) => Route::Token(*i),
            Node::Endpoint(Endpoint::Identity(i)) => Route::Identity(*i),
        };
        self.routes.insert(path.into(), route);
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}/{key}")
            }
        };
        match node {
            Node::Dir { entries, .. } => {
                for (key, child) in entries {
                    self.add(child, &join(key), prefix);
                }
            }
            Node::Indexed(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.add(child, &join(&i.to_string()), prefix);
                }
            }
            _ => {}
        }
    }
}

/// Replaces the content-derived ETag with the value's ETag.
fn with_etag(r: Response, etag: &str) -> Prebuilt {
    set_etag(r, etag).prebuild()
}

/// Sets the ETag header of a GCE answer to `etag` (the value's, not the rendering's).
pub fn set_etag(mut r: Response, etag: &str) -> Response {
    for (name, value) in &mut r.headers {
        if *name == "ETag" {
            *value = etag.to_string();
        }
    }
    r
}

/// A static token's answers (see [`token_answers`]). A static token is reported with its full
/// configured lifetime on every answer, as a server that keeps its tokens fresh would.
fn token_route(account: &Account) -> Option<TokenRoute> {
    let token = account.access_token.as_ref()?;
    let (json, text) = token_answers(token, u64::from(account.expires_in));
    Some(TokenRoute::Static(Box::new(StaticTokenRoute {
        json: json.prebuild(),
        text: text.prebuild(),
    })))
}

/// `{"access_token","expires_in","token_type"}` and its `alt=text` form, both with the ETag of
/// the JSON; `expires_in` is a JSON number (a string breaks google-auth's `refresh()` and
/// gcloud).
pub fn token_answers(token: &str, expires_in: u64) -> (Response, Response) {
    let json = serde_json::json!({
        "access_token": token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    })
    .to_string();
    let text = format!("access_token {token}\nexpires_in {expires_in}\ntoken_type Bearer\n");
    let etag = page::etag(json.as_bytes());
    (
        set_etag(page::answer(200, JSON, json), &etag),
        set_etag(page::answer(200, TEXT, text), &etag),
    )
}
