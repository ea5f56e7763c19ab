//! `$.gce`: the Google Compute Engine metadata server's part of the configuration.
//!
//! Shape:
//!
//! ```json
//! "gce": {
//!   "enabled": true,
//!   "project":  { "project-id": "...", "numeric-project-id": 123, "attributes": {...} },
//!   "instance": { "zone": "projects/123/zones/us-central1-a", "machine-type": "...", ... },
//!   "serviceAccounts": {
//!     "123-compute@developer.gserviceaccount.com": {
//!       "aliases": ["default"], "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
//!       "token": { "minted": {} },              // or { "accessToken": "ya29....", "expiresIn": 3599 }
//!       "identity": { "minted": {"uniqueId": "104843911283419437112"} }  // or { "idToken": "eyJ..." }
//!     }
//!   },
//!   "universeDomain": "googleapis.com"
//! }
//! ```
//!
//! `project` and `instance` are *trees* keyed by the metadata server's own path names
//! (kebab-case: `machine-type`, `network-interfaces`), so a listing is the keys of an object
//! and a path walk is a chain of lookups. Objects are directories, arrays of objects (and the
//! arrays the server indexes, such as `forwarded-ips`) are indexed lists (`0/`, `1/`), arrays
//! of scalars are list values (`tags`), and strings, numbers and booleans are leaves. The
//! service accounts are typed instead, because their token and identity are configuration
//! (sources of credentials), not metadata: `token` and `identity` are objects naming one
//! source each (`minted`, static, `upstream` or `command`), so further sources can be added as
//! new keys without breaking files.
//!
//! Legacy endpoints (`/0.1/meta-data/`, `/computeMetadata/v1beta1/`) follow the instance
//! attribute `disable-legacy-endpoints`, as on a real VM: there is no separate switch, so the
//! metadata a client reads and the server's behaviour cannot disagree. Guest attributes
//! likewise follow `enable-guest-attributes` (instance, else project attribute).
//!
//! Contract: [`GceConfig::validate`] reports every problem with its exact JSON path
//! (`$.gce.instance["machine-type"]`); whatever passes renders without further checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{index, join, Problems};
use super::upstream::{CommandConfig, GoogleUpstream};

/// The default token lifetime the server reports, as GCE reports a fresh token.
pub const DEFAULT_EXPIRES_IN: u32 = 3599;

/// The scopes a default service account gets when the environment creates one.
pub const DEFAULT_SCOPES: [&str; 1] = ["https://www.googleapis.com/auth/cloud-platform"];

/// `$.gce`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GceConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The `project/` tree.
    #[serde(default)]
    pub project: Map<String, Value>,
    /// The `instance/` tree, without `service-accounts` (see `service_accounts`).
    #[serde(default)]
    pub instance: Map<String, Value>,
    /// `instance/service-accounts/`, keyed by e-mail. The one whose aliases contain
    /// `default` is also served as `default/`.
    #[serde(default)]
    pub service_accounts: BTreeMap<String, ServiceAccount>,
    /// `universe/universe-domain`; `googleapis.com` when absent.
    #[serde(default)]
    pub universe_domain: Option<String>,
    /// Values of `instance/maintenance-event` and `instance/preempted` over time
    /// ([`super::events`]; run by [`crate::live`]).
    #[serde(default)]
    pub events: Vec<super::events::GceEvent>,
}

/// One service account attached to the instance.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccount {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where `.../token` comes from; absent: the account has no token (404).
    #[serde(default)]
    pub token: Option<TokenSource>,
    /// Where `.../identity` comes from; absent: no identity endpoint (404).
    #[serde(default)]
    pub identity: Option<IdentitySource>,
}

/// The source of an access token. Exactly one source key is set: `minted` or a static
/// `accessToken`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSource {
    /// A static access token, served as is.
    #[serde(default)]
    pub access_token: Option<String>,
    /// The `expires_in` reported with the static token, in seconds. The server keeps
    /// tokens fresh, so each answer reports the full lifetime.
    #[serde(default)]
    pub expires_in: Option<u32>,
    /// Opaque `ya29.` tokens minted per scope set ([`crate::identity::gce`]).
    #[serde(default)]
    pub minted: Option<MintedAccessToken>,
    /// Real tokens from a Google credentials file ([`super::upstream`]).
    #[serde(default)]
    pub upstream: Option<GoogleUpstream>,
    /// Tokens printed by a command (`gcloud auth print-access-token`).
    #[serde(default)]
    pub command: Option<CommandConfig>,
}

/// `token.minted`: `{}` for the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintedAccessToken {
    /// Seconds a fresh token lasts (`expires_in` when issued); 3599 when absent.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

impl MintedAccessToken {
    pub fn lifetime(&self) -> u64 {
        self.lifetime_secs
            .unwrap_or(crate::identity::gce::DEFAULT_ACCESS_LIFETIME)
    }
}

impl TokenSource {
    pub fn expires_in(&self) -> u32 {
        self.expires_in.unwrap_or(DEFAULT_EXPIRES_IN)
    }
}

/// The source of identity tokens. Exactly one source key is set: `minted`, or a static
/// `idToken` served whatever the audience.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySource {
    #[serde(default)]
    pub id_token: Option<String>,
    /// RS256 ID tokens minted per audience ([`crate::identity::gce`]), verifiable against the
    /// JWKS at `/imds-tun/jwks`.
    #[serde(default)]
    pub minted: Option<MintedIdToken>,
}

/// `identity.minted`: `{}` for the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintedIdToken {
    /// The account's unique id (21 digits; `sub` and `azp`); derived from the e-mail when
    /// absent.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// `google.compute_engine.instance_creation_timestamp` of `format=full` tokens (Unix
    /// seconds; the metadata tree has no such key); 0 when absent.
    #[serde(default)]
    pub instance_creation_timestamp: Option<u64>,
}

/// Keys of `instance` whose arrays the server serves as indexed directories (`0/`, `1/`)
/// even when their elements are strings (Google's emulator lists the same ones).
pub const INDEXED_LISTS: [&str; 7] = [
    "disks",
    "licenses",
    "network-interfaces",
    "access-configs",
    "forwarded-ips",
    "ip-aliases",
    "target-instance-ips",
];

impl GceConfig {
    /// The default service account (aliases contain `default`), if any.
    pub fn default_account(&self) -> Option<(&str, &ServiceAccount)> {
        self.service_accounts
            .iter()
            .find(|(_, sa)| sa.aliases.iter().any(|a| a == "default"))
            .map(|(email, sa)| (email.as_str(), sa))
    }

    /// `project/numeric-project-id` as digits, when it is a number or a digit string.
    pub fn numeric_project_id(&self) -> Option<String> {
        match self.project.get("numeric-project-id")? {
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            Value::String(s) if is_digits(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Whether the legacy endpoints answer: unless the instance attribute
    /// `disable-legacy-endpoints` is `true` (case-insensitive).
    pub fn legacy_endpoints(&self) -> bool {
        !attribute_is_true(&self.instance, "disable-legacy-endpoints")
    }

    /// Whether the guest-attributes endpoint is on: `enable-guest-attributes` is `TRUE` on
    /// the instance, or on the project when the instance does not set it.
    pub fn guest_attributes_enabled(&self) -> bool {
        match attribute(&self.instance, "enable-guest-attributes") {
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => attribute_is_true(&self.project, "enable-guest-attributes"),
        }
    }

    /// Semantic checks beyond the schema; `at` is this section's JSON path.
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        let project_at = join(at, "project");
        let instance_at = join(at, "instance");
        check_tree(&self.project, &project_at, problems);
        check_tree(&self.instance, &instance_at, problems);
        self.validate_project(&project_at, problems);
        self.validate_instance(&instance_at, problems);
        self.validate_accounts(&join(at, "serviceAccounts"), problems);
        super::events::validate_gce_events(&self.events, &join(at, "events"), problems);
        if let Some(u) = &self.universe_domain {
            if !is_hostname(u) {
                problems.push(
                    join(at, "universeDomain"),
                    "a DNS name such as googleapis.com",
                );
            }
        }
    }

    fn validate_project(&self, at: &str, problems: &mut Problems) {
        if let Some(v) = self.project.get("project-id") {
            if !v.as_str().is_some_and(is_project_id) {
                problems.push(
                    join(at, "project-id"),
                    "a project ID: 6 to 30 lowercase letters, digits or hyphens, starting with a letter",
                );
            }
        }
        if self.project.contains_key("numeric-project-id") && self.numeric_project_id().is_none() {
            problems.push(
                join(at, "numeric-project-id"),
                "a project number (digits, as a JSON number or string)",
            );
        }
        check_attributes(&self.project, at, problems);
    }

    fn validate_instance(&self, at: &str, problems: &mut Problems) {
        let number = self.numeric_project_id();
        if self.instance.contains_key("service-accounts") {
            problems.push(
                join(at, "service-accounts"),
                "no service-accounts here: they are configured in $.gce.serviceAccounts",
            );
        }
        if let Some(v) = self.instance.get("zone") {
            check_project_path(v, "zones", number.as_deref(), &join(at, "zone"), problems);
        }
        if let Some(v) = self.instance.get("machine-type") {
            let path = join(at, "machine-type");
            check_project_path(v, "machineTypes", number.as_deref(), &path, problems);
        }
        if let Some(v) = self.instance.get("id") {
            let ok = match v {
                Value::Number(n) => n.is_u64(),
                Value::String(s) => is_digits(s),
                _ => false,
            };
            if !ok {
                problems.push(join(at, "id"), "an instance ID (digits, as a JSON number)");
            }
        }
        if let Some(Value::Array(nics)) = self.instance.get("network-interfaces") {
            let nics_at = join(at, "network-interfaces");
            for (i, nic) in nics.iter().enumerate() {
                let nic_at = index(&nics_at, i);
                if let Some(mac) = nic.get("mac") {
                    if !mac.as_str().is_some_and(is_mac) {
                        problems.push(join(&nic_at, "mac"), "a MAC address like 42:01:0a:80:00:02");
                    }
                }
                for key in ["ip", "gateway", "subnetmask"] {
                    if let Some(v) = nic.get(key) {
                        let ok = v
                            .as_str()
                            .is_some_and(|s| s.parse::<std::net::Ipv4Addr>().is_ok());
                        if !ok {
                            problems.push(join(&nic_at, key), "an IPv4 address");
                        }
                    }
                }
            }
        }
        check_attributes(&self.instance, at, problems);
    }

    fn validate_accounts(&self, at: &str, problems: &mut Problems) {
        let mut defaults = 0;
        for (email, sa) in &self.service_accounts {
            let sa_at = join(at, email);
            if !is_email(email) {
                problems.push(sa_at.clone(), "a service account e-mail address as the key");
            }
            let aliases_at = join(&sa_at, "aliases");
            for (i, alias) in sa.aliases.iter().enumerate() {
                if alias.is_empty() || alias.contains(['/', '\n']) {
                    problems.push(index(&aliases_at, i), "an alias without '/' or newlines");
                }
                if alias == "default" {
                    defaults += 1;
                    if defaults > 1 {
                        problems.push(
                            index(&aliases_at, i),
                            "\"default\" on one service account only",
                        );
                    }
                }
            }
            let scopes_at = join(&sa_at, "scopes");
            for (i, scope) in sa.scopes.iter().enumerate() {
                if !scope.starts_with("https://") || scope.contains(char::is_whitespace) {
                    problems.push(index(&scopes_at, i), "an OAuth scope URL (https://...)");
                }
            }
            if let Some(token) = &sa.token {
                let token_at = join(&sa_at, "token");
                let sources = [
                    token.access_token.is_some(),
                    token.minted.is_some(),
                    token.upstream.is_some(),
                    token.command.is_some(),
                ];
                if let Some(u) = &token.upstream {
                    u.validate(&join(&token_at, "upstream"), problems);
                }
                if let Some(c) = &token.command {
                    c.validate(&join(&token_at, "command"), problems);
                }
                match (&token.access_token, &token.minted) {
                    _ if sources.iter().filter(|s| **s).count() != 1 => problems.push(
                        token_at.clone(),
                        "one token source: {\"minted\": {}}, {\"accessToken\": \"...\"}, \
                         {\"upstream\": {...}} or {\"command\": {...}}",
                    ),
                    (Some(t), None) if !is_token_text(t) => problems.push(
                        join(&token_at, "accessToken"),
                        "a non-empty token of visible ASCII characters",
                    ),
                    (None, Some(m)) if !(600..=43_200).contains(&m.lifetime()) => problems.push(
                        join(&join(&token_at, "minted"), "lifetimeSecs"),
                        "a number of seconds from 600 to 43200",
                    ),
                    _ => {}
                }
                if token.expires_in == Some(0) {
                    problems.push(join(&token_at, "expiresIn"), "a number of seconds above 0");
                }
            }
            if let Some(identity) = &sa.identity {
                let id_at = join(&sa_at, "identity");
                match (&identity.id_token, &identity.minted) {
                    (None, None) | (Some(_), Some(_)) => problems.push(
                        id_at,
                        "one identity source: {\"minted\": {}} or {\"idToken\": \"eyJ...\"}",
                    ),
                    (Some(t), None) if !is_jwt(t) => problems.push(
                        join(&id_at, "idToken"),
                        "a JWT (three base64url parts separated by '.')",
                    ),
                    (None, Some(m)) => {
                        let ok = m
                            .unique_id
                            .as_deref()
                            .is_none_or(|u| (1..=32).contains(&u.len()) && is_digits(u));
                        if !ok {
                            problems.push(
                                join(&join(&id_at, "minted"), "uniqueId"),
                                "the account's unique id: digits, e.g. \"104843911283419437112\"",
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl GceConfig {
    /// Applies the GCE emulator's environment variables (`GOOGLE_PROJECT_ID`, ...) on top.
    ///
    /// `GOOGLE_PROJECT_ID` and `GOOGLE_NUMERIC_PROJECT_ID` set the project (a new number
    /// also rewrites the `projects/<number>/` prefix of `zone`, `machine-type` and the
    /// interfaces' `network`, keeping them consistent); `GOOGLE_SERVICE_ACCOUNT` or
    /// `GOOGLE_ACCOUNT_EMAIL` renames the default service account (creating it when there is
    /// none); `GOOGLE_ACCESS_TOKEN` and `GOOGLE_ID_TOKEN` become its static token and ID
    /// token. An empty variable counts as unset. A bad value is a problem whose path is the
    /// variable's name.
    pub fn apply_env(&mut self, env: super::Env<'_>, problems: &mut Problems) {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(id) = get("GOOGLE_PROJECT_ID") {
            if is_project_id(&id) {
                self.project.insert("project-id".into(), Value::String(id));
            } else {
                problems.push(
                    "GOOGLE_PROJECT_ID",
                    "a project ID: 6 to 30 lowercase letters, digits or hyphens, starting with a letter",
                );
            }
        }
        if let Some(number) = get("GOOGLE_NUMERIC_PROJECT_ID") {
            match number.parse::<u64>() {
                Ok(n) if is_digits(&number) => self.set_project_number(n),
                _ => problems.push("GOOGLE_NUMERIC_PROJECT_ID", "a project number (digits)"),
            }
        }
        let email = match (get("GOOGLE_SERVICE_ACCOUNT"), get("GOOGLE_ACCOUNT_EMAIL")) {
            (Some(a), Some(b)) if a != b => {
                problems.push(
                    "GOOGLE_ACCOUNT_EMAIL",
                    "the same e-mail as GOOGLE_SERVICE_ACCOUNT",
                );
                None
            }
            (Some(a), _) => Some(("GOOGLE_SERVICE_ACCOUNT", a)),
            (None, Some(b)) => Some(("GOOGLE_ACCOUNT_EMAIL", b)),
            (None, None) => None,
        };
        if let Some((name, email)) = email {
            if is_email(&email) {
                self.rename_default_account(email);
            } else {
                problems.push(name, "a service account e-mail address");
            }
        }
        if let Some(token) = get("GOOGLE_ACCESS_TOKEN") {
            if is_token_text(&token) {
                let sa = self.default_account_mut();
                let expires_in = sa.token.as_ref().and_then(|t| t.expires_in);
                sa.token = Some(TokenSource {
                    access_token: Some(token),
                    expires_in,
                    ..TokenSource::default()
                });
            } else {
                problems.push(
                    "GOOGLE_ACCESS_TOKEN",
                    "a non-empty token of visible ASCII characters",
                );
            }
        }
        if let Some(token) = get("GOOGLE_ID_TOKEN") {
            if is_jwt(&token) {
                self.default_account_mut().identity = Some(IdentitySource {
                    id_token: Some(token),
                    minted: None,
                });
            } else {
                problems.push(
                    "GOOGLE_ID_TOKEN",
                    "a JWT (three base64url parts separated by '.')",
                );
            }
        }
    }

    fn set_project_number(&mut self, n: u64) {
        let old = self.numeric_project_id();
        self.project
            .insert("numeric-project-id".into(), Value::Number(n.into()));
        let Some(old) = old else { return };
        let (from, to) = (format!("projects/{old}/"), format!("projects/{n}/"));
        let rewrite = |v: &mut Value| {
            if let Value::String(s) = v {
                if let Some(rest) = s.strip_prefix(&from) {
                    *s = format!("{to}{rest}");
                }
            }
        };
        for key in ["zone", "machine-type"] {
            if let Some(v) = self.instance.get_mut(key) {
                rewrite(v);
            }
        }
        if let Some(Value::Array(nics)) = self.instance.get_mut("network-interfaces") {
            for nic in nics {
                for key in ["network", "subnetwork"] {
                    if let Some(v) = nic.get_mut(key) {
                        rewrite(v);
                    }
                }
            }
        }
    }

    fn rename_default_account(&mut self, email: String) {
        let old = self.default_account().map(|(e, _)| e.to_string());
        let sa = match old {
            Some(old) => self.service_accounts.remove(&old).unwrap_or_default(),
            None => new_default_account(),
        };
        self.service_accounts.insert(email, sa);
    }

    /// The default account, created as `<number>-compute@developer.gserviceaccount.com`
    /// (the Compute Engine default's name) when there is none.
    fn default_account_mut(&mut self) -> &mut ServiceAccount {
        let email = match self.default_account() {
            Some((email, _)) => email.to_string(),
            None => {
                let number = self.numeric_project_id().unwrap_or_else(|| "0".into());
                let email = format!("{number}-compute@developer.gserviceaccount.com");
                self.service_accounts
                    .insert(email.clone(), new_default_account());
                email
            }
        };
        self.service_accounts.entry(email).or_default()
    }
}

fn new_default_account() -> ServiceAccount {
    ServiceAccount {
        aliases: vec!["default".into()],
        scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        token: None,
        identity: None,
    }
}

/// Structural rules every tree obeys: keys are non-empty path segments, no nulls, arrays
/// hold all objects or all scalars.
fn check_tree(map: &Map<String, Value>, at: &str, problems: &mut Problems) {
    for (key, value) in map {
        let path = join(at, key);
        if key.is_empty() || key.contains(['/', '?', '#', '%']) || key == "." || key == ".." {
            problems.push(
                path.clone(),
                "a key usable as a path segment (no '/', '?', '#', '%')",
            );
        }
        check_value(value, &path, problems);
    }
}

fn check_value(value: &Value, at: &str, problems: &mut Problems) {
    match value {
        Value::Null => problems.push(at, "a string, number, boolean, object or array (not null)"),
        Value::Object(map) => check_tree(map, at, problems),
        Value::Array(items) => {
            let objects = items.iter().filter(|v| v.is_object()).count();
            if objects != 0 && objects != items.len() {
                problems.push(at, "an array of objects or an array of scalars, not both");
            }
            for (i, item) in items.iter().enumerate() {
                let item_at = index(at, i);
                match item {
                    Value::Array(_) => {
                        problems.push(item_at, "an object or a scalar (no nested arrays)")
                    }
                    other => check_value(other, &item_at, problems),
                }
            }
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
    }
}

/// Custom metadata values are strings on GCE.
fn check_attributes(tree: &Map<String, Value>, at: &str, problems: &mut Problems) {
    let Some(attrs) = tree.get("attributes") else {
        return;
    };
    let attrs_at = join(at, "attributes");
    match attrs {
        Value::Object(map) => {
            for (k, v) in map {
                if !v.is_string() {
                    problems.push(join(&attrs_at, k), "a string (metadata values are text)");
                }
            }
        }
        _ => problems.push(attrs_at, "an object of string values"),
    }
}

/// `projects/<number>/<collection>/<name>`, with the project number matching.
fn check_project_path(
    v: &Value,
    collection: &str,
    number: Option<&str>,
    at: &str,
    problems: &mut Problems,
) {
    let expected = format!("projects/<numeric-project-id>/{collection}/<name>");
    let Some(s) = v.as_str() else {
        problems.push(at, expected);
        return;
    };
    let parts: Vec<&str> = s.split('/').collect();
    let shaped = parts.len() == 4
        && parts[0] == "projects"
        && is_digits(parts[1])
        && parts[2] == collection
        && is_name(parts[3]);
    if !shaped {
        problems.push(at, expected);
    } else if number.is_some_and(|n| n != parts[1]) {
        problems.push(
            at,
            format!("the project number of $.gce.project[\"numeric-project-id\"] in projects/<number>/{collection}/..."),
        );
    }
}

fn attribute<'a>(tree: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    tree.get("attributes")?.get(name)?.as_str()
}

fn attribute_is_true(tree: &Map<String, Value>, name: &str) -> bool {
    attribute(tree, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// GCE resource names: lowercase letters, digits, hyphens (RFC 1035 labels).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Project IDs: 6-30 chars, lowercase letters, digits, hyphens, starting with a letter, not
/// ending with a hyphen. Domain-scoped IDs (`example.com:proj`) are accepted too.
fn is_project_id(s: &str) -> bool {
    let id = s
        .rsplit_once(':')
        .map_or(s, |(domain, id)| if is_hostname(domain) { id } else { "" });
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && is_name(id)
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && domain.contains('.')
        && is_hostname(domain)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_token_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn is_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(v: Value) -> GceConfig {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems_of(c: &GceConfig) -> Vec<String> {
        let mut p = Problems::new();
        c.validate("$.gce", &mut p);
        p.into_errors("t").into_iter().map(|e| e.path).collect()
    }

    fn valid() -> GceConfig {
        parse(serde_json::json!({
            "enabled": true,
            "project": {"project-id": "my-project", "numeric-project-id": 123456789012u64},
            "instance": {
                "zone": "projects/123456789012/zones/us-central1-a",
                "machine-type": "projects/123456789012/machineTypes/e2-medium",
                "id": 1234567890123456789u64,
                "network-interfaces": [{"mac": "42:01:0a:80:00:02", "ip": "10.128.0.2"}],
                "attributes": {"a": "b"}
            },
            "serviceAccounts": {
                "123456789012-compute@developer.gserviceaccount.com": {
                    "aliases": ["default"],
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "token": {"accessToken": "ya29.x", "expiresIn": 3599}
                }
            }
        }))
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn valid_config_has_no_problems() {
        assert_eq!(problems_of(&valid()), Vec::<String>::new());
        assert_eq!(problems_of(&GceConfig::default()), Vec::<String>::new());
    }

    #[test]
    fn shapes_are_checked_with_exact_paths() {
        let mut c = valid();
        c.instance.insert("zone".into(), "us-central1-a".into());
        c.instance.insert(
            "machine-type".into(),
            "zones/us-central1-a/machineTypes/e2".into(),
        );
        c.instance.insert("id".into(), "12x".into());
        c.project.insert("numeric-project-id".into(), "12a".into());
        c.project.insert("project-id".into(), "Bad_Project".into());
        c.instance["network-interfaces"][0]["mac"] = "nope".into();
        c.instance["attributes"]["n"] = 3.into();
        c.instance.insert("bad/key".into(), Value::Null);
        assert_eq!(
            problems_of(&c),
            [
                "$.gce.instance[\"bad/key\"]",
                "$.gce.instance[\"bad/key\"]",
                "$.gce.project[\"project-id\"]",
                "$.gce.project[\"numeric-project-id\"]",
                "$.gce.instance.zone",
                "$.gce.instance[\"machine-type\"]",
                "$.gce.instance.id",
                "$.gce.instance[\"network-interfaces\"][0].mac",
                "$.gce.instance.attributes.n",
            ]
        );
    }

    #[test]
    fn zone_project_number_must_match() {
        let mut c = valid();
        c.instance
            .insert("zone".into(), "projects/1/zones/us-central1-a".into());
        assert_eq!(problems_of(&c), ["$.gce.instance.zone"]);
    }

    #[test]
    fn accounts_are_checked() {
        let mut c = valid();
        let sa = ServiceAccount {
            aliases: vec!["default".into()],
            scopes: vec!["cloud-platform".into()],
            token: Some(TokenSource {
                access_token: Some("has space".into()),
                expires_in: Some(0),
                minted: None,
                ..TokenSource::default()
            }),
            identity: Some(IdentitySource {
                id_token: Some("not-a-jwt".into()),
                minted: None,
            }),
        };
        c.service_accounts
            .insert("x@y.iam.gserviceaccount.com".into(), sa);
        c.service_accounts
            .insert("not-an-email".into(), ServiceAccount::default());
        c.instance
            .insert("service-accounts".into(), Value::Object(Map::new()));
        assert_eq!(
            problems_of(&c),
            [
                "$.gce.instance[\"service-accounts\"]",
                "$.gce.serviceAccounts[\"not-an-email\"]",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].aliases[0]",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].scopes[0]",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].token.accessToken",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].token.expiresIn",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].identity.idToken",
            ]
        );
    }

    #[test]
    fn minted_sources_are_checked() {
        let mut c = valid();
        let sa = ServiceAccount {
            aliases: vec!["default".into()],
            token: Some(TokenSource {
                access_token: Some("ya29.x".into()),
                minted: Some(MintedAccessToken::default()),
                ..TokenSource::default()
            }),
            identity: Some(IdentitySource {
                id_token: None,
                minted: Some(MintedIdToken {
                    unique_id: Some("12x".into()),
                    instance_creation_timestamp: None,
                }),
            }),
            ..ServiceAccount::default()
        };
        c.service_accounts = [("x@y.iam.gserviceaccount.com".to_string(), sa)].into();
        assert_eq!(
            problems_of(&c),
            [
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].token",
                "$.gce.serviceAccounts[\"x@y.iam.gserviceaccount.com\"].identity.minted.uniqueId",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<GceConfig, _> = serde_json::from_value(serde_json::json!({
            "serviceAccounts": {"a@b.com": {"token": {"acessToken": "x"}}}
        }));
        assert!(r.is_err());
    }

    #[test]
    fn env_overrides_project_and_default_account() {
        let mut c = valid();
        let mut p = Problems::new();
        let env = env_of(&[
            ("GOOGLE_PROJECT_ID", "other-project"),
            ("GOOGLE_NUMERIC_PROJECT_ID", "555555555555"),
            (
                "GOOGLE_SERVICE_ACCOUNT",
                "app@other-project.iam.gserviceaccount.com",
            ),
            ("GOOGLE_ACCESS_TOKEN", "ya29.from-env"),
            ("GOOGLE_ID_TOKEN", "eyJh.eyJi.c2ln"),
        ]);
        c.apply_env(&env, &mut p);
        assert!(p.is_empty());
        assert_eq!(c.project["project-id"], "other-project");
        assert_eq!(c.numeric_project_id().as_deref(), Some("555555555555"));
        assert_eq!(
            c.instance["zone"],
            "projects/555555555555/zones/us-central1-a"
        );
        let (email, sa) = c.default_account().unwrap_or_else(|| panic!("no default"));
        assert_eq!(email, "app@other-project.iam.gserviceaccount.com");
        assert_eq!(c.service_accounts.len(), 1);
        let token = sa.token.clone().unwrap_or_default();
        assert_eq!(token.access_token.as_deref(), Some("ya29.from-env"));
        assert_eq!(token.expires_in, Some(3599));
        assert_eq!(
            sa.identity.clone().unwrap_or_default().id_token.as_deref(),
            Some("eyJh.eyJi.c2ln")
        );
        assert_eq!(problems_of(&c), Vec::<String>::new());
    }

    #[test]
    fn env_creates_a_default_account_when_missing() {
        let mut c = GceConfig::default();
        let mut p = Problems::new();
        c.apply_env(&env_of(&[("GOOGLE_ACCESS_TOKEN", "tok")]), &mut p);
        assert!(p.is_empty());
        let (email, sa) = c.default_account().unwrap_or_else(|| panic!("no default"));
        assert_eq!(email, "0-compute@developer.gserviceaccount.com");
        assert_eq!(sa.scopes, DEFAULT_SCOPES);
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let mut c = valid();
        let mut p = Problems::new();
        let env = env_of(&[
            ("GOOGLE_PROJECT_ID", "X"),
            ("GOOGLE_NUMERIC_PROJECT_ID", "12ab"),
            ("GOOGLE_SERVICE_ACCOUNT", "a@b.com"),
            ("GOOGLE_ACCOUNT_EMAIL", "c@d.com"),
            ("GOOGLE_ACCESS_TOKEN", "with space"),
            ("GOOGLE_ID_TOKEN", "abc"),
        ]);
        c.apply_env(&env, &mut p);
        let paths: Vec<String> = p
            .into_errors("<environment>")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "GOOGLE_PROJECT_ID",
                "GOOGLE_NUMERIC_PROJECT_ID",
                "GOOGLE_ACCOUNT_EMAIL",
                "GOOGLE_ACCESS_TOKEN",
                "GOOGLE_ID_TOKEN"
            ]
        );
        let mut p = Problems::new();
        c.apply_env(&env_of(&[("GOOGLE_ACCOUNT_EMAIL", "nope")]), &mut p);
        let paths: Vec<String> = p.into_errors("e").into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["GOOGLE_ACCOUNT_EMAIL"]);
    }

    #[test]
    fn empty_env_values_are_unset() {
        let mut c = valid();
        let before = c.project.clone();
        let mut p = Problems::new();
        c.apply_env(&env_of(&[("GOOGLE_PROJECT_ID", "")]), &mut p);
        assert!(p.is_empty());
        assert_eq!(c.project, before);
    }

    #[test]
    fn legacy_and_guest_switches_follow_attributes() {
        let mut c = valid();
        assert!(c.legacy_endpoints());
        assert!(!c.guest_attributes_enabled());
        c.instance["attributes"]["disable-legacy-endpoints"] = "true".into();
        c.project.insert(
            "attributes".into(),
            serde_json::json!({"enable-guest-attributes": "TRUE"}),
        );
        assert!(!c.legacy_endpoints());
        assert!(c.guest_attributes_enabled());
        c.instance["attributes"]["enable-guest-attributes"] = "FALSE".into();
        assert!(!c.guest_attributes_enabled());
    }
}
