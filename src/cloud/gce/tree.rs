//! The metadata tree: the configuration turned into the directories, lists and values the
//! server walks, plus the three renderings GCE has for them.
//!
//! Contract: [`Tree::from_config`] builds the whole `computeMetadata/v1/` tree from a
//! validated [`GceConfig`]; rendering never fails. Renderings follow Google's emulator and
//! spec/gce.md:
//! - a directory *listing* names each child on its own line, directories (and indexed lists)
//!   with a trailing `/`, values (including list values such as `scopes`) without. An indexed
//!   list of scalars (`forwarded-ips`) lists `0\n`, not `0/\n`: `forwarded-ips/0` is a value,
//!   and a `/` would send clients to a 404 (Google's emulator writes `0/`; unconfirmed);
//! - *recursive JSON* turns fixed kebab-case keys into camelCase (`machine-type` →
//!   `machineType`) but keeps user keys as written (attribute names, service-account e-mails,
//!   guest-attribute namespaces and keys), and leaves `token` and `identity` out;
//! - *recursive text* is one `path value` line per value, paths in the original kebab-case.
//!
//! Invariants: directory children are sorted by key (GCE lists alphabetically), except
//! `service-accounts/`, which lists `default/` first as the real server does.

use serde_json::{Map, Number, Value};

use crate::config::gce::{is_digits, MintedAccessToken, MintedIdToken, TokenSource, INDEXED_LISTS};
use crate::config::GceConfig;

/// A scalar value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Str(String),
    Num(Number),
    Bool(bool),
}

impl Scalar {
    /// The value as the server writes it in text answers.
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Num(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Num(n) => Value::Number(n.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
        }
    }
}

/// Endpoints that live in a service account's directory but are answered per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `token`, for the account with this index in [`Tree::accounts`].
    Token(usize),
    /// `identity`, for the account with this index.
    Identity(usize),
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A directory; `user_keys` when its keys are the user's (not camelCased in JSON).
    Dir {
        entries: Vec<(String, Node)>,
        user_keys: bool,
    },
    /// An array served as a directory of indices (`disks/0/`).
    Indexed(Vec<Node>),
    /// An array served as one value (`tags`, `scopes`).
    List(Vec<Scalar>),
    Leaf(Scalar),
    /// Listed in its directory, left out of recursive answers, answered by its own route.
    Endpoint(Endpoint),
}

impl Node {
    /// Whether the node is a directory (listed with `/`, redirected without it).
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. } | Node::Indexed(_))
    }

    /// The child named `key`, for building the legacy views.
    pub fn child(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Dir { entries, .. } => entries.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            Node::Indexed(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    }

    /// The directory listing (only meaningful for directories).
    pub fn listing(&self) -> String {
        let mut out = String::new();
        match self {
            Node::Dir { entries, .. } => {
                for (key, node) in entries {
                    out.push_str(key);
                    if node.is_dir() {
                        out.push('/');
                    }
                    out.push('\n');
                }
            }
            Node::Indexed(items) => {
                for (i, node) in items.iter().enumerate() {
                    out.push_str(&i.to_string());
                    if node.is_dir() {
                        out.push('/');
                    }
                    out.push('\n');
                }
            }
            _ => {}
        }
        out
    }

    /// The value as text: a scalar as is (no newline), a list one item per line.
    pub fn value_text(&self) -> String {
        match self {
            Node::Leaf(s) => s.text(),
            Node::List(items) => items.iter().map(|s| s.text() + "\n").collect(),
            _ => String::new(),
        }
    }

    /// The recursive JSON of the node (`None` for endpoints).
    pub fn json(&self) -> Option<Value> {
        Some(match self {
            Node::Dir { entries, user_keys } => {
                let mut map = Map::new();
                for (key, node) in entries {
                    if let Some(v) = node.json() {
                        let key = if *user_keys {
                            key.clone()
                        } else {
                            camel_case(key)
                        };
                        map.insert(key, v);
                    }
                }
                Value::Object(map)
            }
            Node::Indexed(items) => Value::Array(items.iter().filter_map(Node::json).collect()),
            Node::List(items) => Value::Array(items.iter().map(Scalar::json).collect()),
            Node::Leaf(s) => s.json(),
            Node::Endpoint(_) => return None,
        })
    }

    /// The recursive text: `path value` lines below `prefix` (kebab-case paths).
    pub fn text_lines(&self, prefix: &str, out: &mut String) {
        let sub = |key: &str| {
            if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}/{key}")
            }
        };
        match self {
            Node::Dir { entries, .. } => {
                for (key, node) in entries {
                    node.text_lines(&sub(key), out);
                }
            }
            Node::Indexed(items) => {
                for (i, node) in items.iter().enumerate() {
                    node.text_lines(&sub(&i.to_string()), out);
                }
            }
            Node::List(items) => {
                for item in items {
                    line(prefix, &item.text(), out);
                }
            }
            Node::Leaf(s) => line(prefix, &s.text(), out),
            Node::Endpoint(_) => {}
        }
    }
}

fn line(prefix: &str, value: &str, out: &mut String) {
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push(' ');
    }
    out.push_str(value);
    out.push('\n');
}

/// `machine-type` → `machineType`: a hyphen followed by a lowercase letter becomes that
/// letter in uppercase; other hyphens stay (Google's emulator does the same).
pub fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('-', Some(next)) if next.is_ascii_lowercase() => {
                out.push(next.to_ascii_uppercase());
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// One service account as the server knows it.
#[derive(Clone, Debug)]
pub struct Account {
    pub email: String,
    pub scopes: Vec<String>,
    /// A static token (with `expires_in`), when that is the token's source.
    pub access_token: Option<String>,
    pub expires_in: u32,
    /// Minted tokens, when that is the token's source.
    pub minted_token: Option<MintedAccessToken>,
    /// An `upstream` or `command` token source (the whole `token` object), when that is it.
    pub fetched_token: Option<TokenSource>,
    /// A static ID token, when that is the identity's source.
    pub id_token: Option<String>,
    /// Minted ID tokens, when that is the identity's source.
    pub minted_identity: Option<MintedIdToken>,
}

impl Account {
    pub fn has_token(&self) -> bool {
        self.access_token.is_some() || self.minted_token.is_some() || self.fetched_token.is_some()
    }

    pub fn has_identity(&self) -> bool {
        self.id_token.is_some() || self.minted_identity.is_some()
    }
}

/// The `v1/` tree and the accounts its endpoints refer to.
#[derive(Clone, Debug)]
pub struct Tree {
    pub root: Node,
    pub accounts: Vec<Account>,
}

impl Tree {
    /// Builds the tree. `guest_attributes` decides whether the configured guest attributes
    /// are shown (the directory itself always exists, as on GCE).
    pub fn from_config(config: &GceConfig) -> Tree {
        let mut accounts = Vec::new();
        let mut instance = dir_from_map(&config.instance, false, "instance");
        let Node::Dir { entries, .. } = &mut instance else {
            unreachable!("dir_from_map returns a directory")
        };
        if !config.guest_attributes_enabled() {
            entries.retain(|(k, _)| k != "guest-attributes");
        }
        if !entries.iter().any(|(k, _)| k == "guest-attributes") {
            entries.push((
                "guest-attributes".into(),
                Node::Dir {
                    entries: Vec::new(),
                    user_keys: true,
                },
            ));
        }
        entries.push((
            "service-accounts".into(),
            service_accounts(config, &mut accounts),
        ));
        sort(entries);
        let project = dir_from_map(&config.project, false, "project");
        let universe = Node::Dir {
            entries: vec![(
                "universe-domain".into(),
                Node::Leaf(Scalar::Str(
                    config
                        .universe_domain
                        .clone()
                        .unwrap_or_else(|| "googleapis.com".into()),
                )),
            )],
            user_keys: false,
        };
        let root = Node::Dir {
            entries: vec![
                ("instance".into(), instance),
                ("project".into(), project),
                ("universe".into(), universe),
            ],
            user_keys: false,
        };
        Tree { root, accounts }
    }
}

fn sort(entries: &mut [(String, Node)]) {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
}

fn service_accounts(config: &GceConfig, accounts: &mut Vec<Account>) -> Node {
    let mut entries = Vec::new();
    for (email, sa) in &config.service_accounts {
        let index = accounts.len();
        accounts.push(Account {
            email: email.clone(),
            scopes: sa.scopes.clone(),
            access_token: sa.token.as_ref().and_then(|t| t.access_token.clone()),
            expires_in: sa.token.as_ref().map_or(0, |t| t.expires_in()),
            minted_token: sa.token.as_ref().and_then(|t| t.minted.clone()),
            fetched_token: sa
                .token
                .clone()
                .filter(|t| t.upstream.is_some() || t.command.is_some()),
            id_token: sa.identity.as_ref().and_then(|i| i.id_token.clone()),
            minted_identity: sa.identity.as_ref().and_then(|i| i.minted.clone()),
        });
        let strings = |v: &[String]| Node::List(v.iter().map(|s| Scalar::Str(s.clone())).collect());
        let mut dir = vec![
            ("aliases".to_string(), strings(&sa.aliases)),
            ("email".to_string(), Node::Leaf(Scalar::Str(email.clone()))),
            ("scopes".to_string(), strings(&sa.scopes)),
        ];
        if accounts[index].has_identity() {
            dir.push(("identity".into(), Node::Endpoint(Endpoint::Identity(index))));
        }
        if accounts[index].has_token() {
            dir.push(("token".into(), Node::Endpoint(Endpoint::Token(index))));
        }
        sort(&mut dir);
        let node = Node::Dir {
            entries: dir,
            user_keys: false,
        };
        if sa.aliases.iter().any(|a| a == "default") {
            entries.push(("default".to_string(), node.clone()));
        }
        entries.push((email.clone(), node));
    }
    // `default/` first, then the e-mails in order (spec: `default/\n<email>/\n`).
    entries.sort_by(|a, b| (a.0 != "default", &a.0).cmp(&(b.0 != "default", &b.0)));
    Node::Dir {
        entries,
        user_keys: true,
    }
}

/// An object as a directory. Keys of `attributes` and `guest-attributes` (and of each
/// guest-attribute namespace) are the user's.
fn dir_from_map(map: &Map<String, Value>, user_keys: bool, name: &str) -> Node {
    let mut entries: Vec<(String, Node)> = map
        .iter()
        .map(|(key, value)| {
            let child_user_keys =
                key == "attributes" || key == "guest-attributes" || name == "guest-attributes";
            (key.clone(), node_from(key, value, child_user_keys))
        })
        .collect();
    sort(&mut entries);
    Node::Dir { entries, user_keys }
}

fn node_from(key: &str, value: &Value, user_keys: bool) -> Node {
    match value {
        Value::Object(map) => dir_from_map(map, user_keys, key),
        Value::Array(items)
            if INDEXED_LISTS.contains(&key) || items.iter().any(Value::is_object) =>
        {
            Node::Indexed(items.iter().map(|v| node_from("", v, false)).collect())
        }
        Value::Array(items) => Node::List(items.iter().filter_map(scalar).collect()),
        // Numbers the server reports as numbers even when the user wrote digits as text.
        Value::String(s) if (key == "numeric-project-id" || key == "id") && is_digits(s) => {
            match s.parse::<u64>() {
                Ok(n) => Node::Leaf(Scalar::Num(n.into())),
                Err(_) => Node::Leaf(Scalar::Str(s.clone())),
            }
        }
        other => Node::Leaf(scalar(other).unwrap_or(Scalar::Str(String::new()))),
    }
}

fn scalar(v: &Value) -> Option<Scalar> {
    match v {
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => Some(Scalar::Num(n.clone())),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_follows_google() {
        assert_eq!(camel_case("machine-type"), "machineType");
        assert_eq!(camel_case("numeric-project-id"), "numericProjectId");
        assert_eq!(camel_case("remaining-cpu-time"), "remainingCpuTime");
        assert_eq!(camel_case("x-1"), "x-1");
        assert_eq!(camel_case("zone"), "zone");
    }

    fn config() -> GceConfig {
        serde_json::from_value(serde_json::json!({
            "project": {"project-id": "p-123456", "numeric-project-id": "42",
                        "attributes": {"my-key": "v"}},
            "instance": {
                "machine-type": "projects/42/machineTypes/e2",
                "tags": ["a", "b"],
                "forwarded-ips": ["1.2.3.4"],
                "disks": [{"device-name": "d", "index": 0}]
            },
            "serviceAccounts": {"sa@p-123456.iam.gserviceaccount.com": {
                "aliases": ["default"], "scopes": ["https://s"],
                "token": {"accessToken": "t"}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listings_mark_directories_only() {
        let tree = Tree::from_config(&config());
        let instance = tree.root.child("instance").unwrap_or_else(|| panic!());
        assert_eq!(
            instance.listing(),
            "disks/\nforwarded-ips/\nguest-attributes/\nmachine-type\nservice-accounts/\ntags\n"
        );
        let sas = instance
            .child("service-accounts")
            .unwrap_or_else(|| panic!());
        assert_eq!(
            sas.listing(),
            "default/\nsa@p-123456.iam.gserviceaccount.com/\n"
        );
        let default = sas.child("default").unwrap_or_else(|| panic!());
        assert_eq!(default.listing(), "aliases\nemail\nscopes\ntoken\n");
        let fwd = instance.child("forwarded-ips").unwrap_or_else(|| panic!());
        assert_eq!(fwd.listing(), "0\n");
        let disks = instance.child("disks").unwrap_or_else(|| panic!());
        assert_eq!(disks.listing(), "0/\n");
    }

    #[test]
    fn recursive_json_camel_cases_fixed_keys_only() {
        let tree = Tree::from_config(&config());
        let json = tree.root.json().unwrap_or_default();
        let project = &json["project"];
        assert_eq!(project["numericProjectId"], 42);
        assert_eq!(project["attributes"]["my-key"], "v");
        let sa = &json["instance"]["serviceAccounts"]["sa@p-123456.iam.gserviceaccount.com"];
        assert_eq!(sa["aliases"][0], "default");
        assert!(sa.get("token").is_none());
        assert_eq!(json["instance"]["disks"][0]["deviceName"], "d");
        assert_eq!(json["universe"]["universeDomain"], "googleapis.com");
    }

    #[test]
    fn recursive_text_is_path_value_lines() {
        let tree = Tree::from_config(&config());
        let mut out = String::new();
        tree.root
            .child("instance")
            .unwrap_or_else(|| panic!())
            .text_lines("", &mut out);
        assert!(
            out.starts_with("disks/0/device-name d\ndisks/0/index 0\nforwarded-ips/0 1.2.3.4\n")
        );
        assert!(out.contains("\ntags a\ntags b\n"));
        assert!(out.contains("service-accounts/default/scopes https://s\n"));
        assert!(!out.contains("token"));
    }
}
