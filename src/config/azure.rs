//! `$.azure`: the Azure IMDS part of the configuration.
//!
//! Contract: the user's section is the whole truth for Azure. The instance document is written
//! the way IMDS shows it (`instance: {compute: {...}, network: {interface: [...]}}`) and kept
//! free-form: any JSON object or array, with primitives of any JSON type (rendered as strings,
//! `null` as `""`, by [`crate::cloud::azure`]). Typed parts (`loadbalancer`, `scheduledEvents`,
//! `identities`, `apiVersions`) are checked by serde with `deny_unknown_fields`, and
//! [`AzureConfig::validate`] adds the semantic checks, each problem named by its JSON path.
//!
//! Forward compatibility: an identity's `token` is a [`TokenSource`] with one optional field per
//! kind of source; exactly one must be set: `minted` (signed locally, the default),
//! `accessToken` (a token taken from the configuration), `upstream` (Entra ID client
//! credentials) or `command` (see [`super::upstream`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{index, join, Problems};
use super::upstream::{AzureUpstream, CommandConfig};

/// `$.azure`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `/metadata/instance`: the instance document.
    #[serde(default)]
    pub instance: InstanceDocument,
    /// `/metadata/loadbalancer`; absent means the VM is behind no standard load balancer (404).
    #[serde(default)]
    pub loadbalancer: Option<LoadBalancer>,
    /// `/metadata/scheduledevents`.
    #[serde(default)]
    pub scheduled_events: ScheduledEvents,
    /// The Entra tenant of the VM's identities (`/metadata/identity/info`, the token's `tid`).
    /// Not checked to be a UUID: the Go simulator's files carry domain names here.
    #[serde(default)]
    pub tenant_id: String,
    /// Managed identities assigned to the VM.
    #[serde(default)]
    pub identities: Vec<Identity>,
    /// App registrations and their secrets (`appId -> secret`), kept from the Go simulator's
    /// file for upstream tokens; nothing serves them yet.
    #[serde(default)]
    pub service_principals: BTreeMap<String, Secret>,
    /// Replaces the supported api-version list (any order; newest first on the wire).
    #[serde(default)]
    pub api_versions: Option<Vec<String>>,
    /// Azure Arc's HIMDS door (localhost:40342).
    #[serde(default)]
    pub himds: super::doors::HimdsConfig,
    /// The App Service identity door.
    #[serde(default)]
    pub app_service: super::doors::AppServiceConfig,
    /// The legacy VM extension door (localhost:50342).
    #[serde(default)]
    pub legacy_msi: super::doors::LegacyMsiConfig,
}

/// `$.azure.instance`: the document `/metadata/instance` returns, as the user writes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceDocument {
    #[serde(default)]
    pub compute: Map<String, Value>,
    #[serde(default)]
    pub network: Map<String, Value>,
}

/// `$.azure.loadbalancer` [LB]: ports are JSON numbers on the wire, everything else strings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub public_ip_addresses: Vec<LbAddress>,
    #[serde(default)]
    pub inbound_rules: Vec<LbInboundRule>,
    #[serde(default)]
    pub outbound_rules: Vec<LbAddress>,
}

/// A frontend/private address pair (public IP addresses, outbound rules).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LbAddress {
    #[serde(default)]
    pub frontend_ip_address: String,
    #[serde(default)]
    pub private_ip_address: String,
}

/// A load-balancing or inbound NAT rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LbInboundRule {
    #[serde(default)]
    pub frontend_ip_address: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub frontend_port: u16,
    #[serde(default)]
    pub backend_port: u16,
    #[serde(default)]
    pub private_ip_address: String,
}

/// `$.azure.scheduledEvents` [SE]: the document at start; [`crate::live`] runs it from there.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduledEvents {
    #[serde(default = "first_incarnation")]
    pub document_incarnation: u64,
    #[serde(default)]
    pub events: Vec<ScheduledEvent>,
}

impl Default for ScheduledEvents {
    fn default() -> Self {
        ScheduledEvents {
            document_incarnation: first_incarnation(),
            events: Vec::new(),
        }
    }
}

fn first_incarnation() -> u64 {
    1
}

/// One scheduled event; field names as on the wire, camelCased. The live state it becomes
/// (Scheduled, then Started at `notBefore` or when approved, then gone after its duration) is
/// [`crate::live`]'s.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduledEvent {
    /// Generated (a UUID) when empty.
    #[serde(default)]
    pub event_id: String,
    pub event_type: String,
    #[serde(default = "virtual_machine")]
    pub resource_type: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default = "scheduled")]
    pub event_status: String,
    /// `"Mon, 19 Sep 2016 18:29:47 GMT"`, a time relative to the start (`"+5m"`), or `""`:
    /// at once ([`super::events::When`]).
    #[serde(default)]
    pub not_before: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "platform")]
    pub event_source: String,
    /// `-1` when unknown [SE].
    #[serde(default = "unknown_duration")]
    pub duration_in_seconds: i64,
}

fn virtual_machine() -> String {
    "VirtualMachine".into()
}
fn scheduled() -> String {
    "Scheduled".into()
}
fn platform() -> String {
    "Platform".into()
}
fn unknown_duration() -> i64 {
    -1
}

/// Whether an identity is the VM's own or one assigned to it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum IdentityKind {
    SystemAssigned,
    UserAssigned,
}

/// `$.azure.identities[i]`: one managed identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    #[serde(rename = "type")]
    pub kind: IdentityKind,
    /// The application (client) id: `client_id` selects it, `appid` in its tokens.
    pub client_id: String,
    /// The service principal's object id: `object_id` selects it, `oid` in its tokens.
    pub object_id: String,
    /// The ARM resource id (`msi_res_id` / `mi_res_id` select it; `xms_mirid` in tokens).
    /// Required for user-assigned identities; a system-assigned identity's is the VM's
    /// `compute.resourceId`.
    #[serde(default)]
    pub msi_res_id: Option<String>,
    pub token: TokenSource,
}

/// Where an identity's access tokens come from. Exactly one field must be set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSource {
    /// A fixed token served as-is (ideally a JWT: `az login --identity` decodes it). Its
    /// `exp`/`iat`/`nbf` claims, when readable, drive `expires_on`/`not_before`.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Tokens minted and signed locally per resource ([`crate::identity::azure`]), verifiable
    /// against the JWKS at `/imds-tun/jwks`.
    #[serde(default)]
    pub minted: Option<MintedToken>,
    /// Real tokens from Entra ID with a service principal's client credentials.
    #[serde(default)]
    pub upstream: Option<AzureUpstream>,
    /// Tokens printed by a command (`az account get-access-token -o json`).
    #[serde(default)]
    pub command: Option<CommandConfig>,
}

/// `token.minted`: `{}` for the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintedToken {
    /// Token lifetime in seconds; 86400 (24 h, as managed identity tokens) when absent.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

impl MintedToken {
    pub fn lifetime(&self) -> u64 {
        self.lifetime_secs
            .unwrap_or(crate::identity::azure::DEFAULT_LIFETIME)
    }
}

/// Lifetimes a minted token may have: longer than two reissue windows, at most a week.
pub const MINTED_LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 600..=604_800;

/// A secret string: never shown by `Debug`, so configurations can be logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Event types, statuses and sources IMDS sends [SE].
const EVENT_TYPES: [&str; 5] = ["Reboot", "Redeploy", "Freeze", "Preempt", "Terminate"];
const EVENT_STATUSES: [&str; 2] = ["Scheduled", "Started"];
const EVENT_SOURCES: [&str; 2] = ["Platform", "User"];

impl AzureConfig {
    /// Semantic checks beyond the schema; `at` is this section's JSON path.
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        let instance = join(at, "instance");
        self.validate_compute(&join(&instance, "compute"), problems);
        self.validate_network(&join(&instance, "network"), problems);
        self.validate_identities(&join(at, "identities"), problems);
        self.validate_events(&join(at, "scheduledEvents"), problems);
        if let Some(versions) = &self.api_versions {
            validate_api_versions(versions, &join(at, "apiVersions"), problems);
        }
        self.himds.validate(&join(at, "himds"), problems);
        self.app_service.validate(&join(at, "appService"), problems);
        self.legacy_msi.validate(&join(at, "legacyMsi"), problems);
    }

    fn validate_compute(&self, at: &str, problems: &mut Problems) {
        let compute = &self.instance.compute;
        if let Some(vm_id) = compute.get("vmId").and_then(scalar_text) {
            if !vm_id.is_empty() && !is_uuid(&vm_id) {
                problems.push(
                    join(at, "vmId"),
                    "a UUID such as \"02aab8a4-74ef-476e-8182-f6d2ba4166a6\"",
                );
            }
        }
        let tags = compute.get("tags");
        if tags.is_some_and(|t| !is_scalar(t)) {
            problems.push(join(at, "tags"), "a string \"name:value;name2:value2\"");
        }
        let tags_list = compute.get("tagsList");
        let parsed_list = match tags_list {
            None => None,
            Some(v) => parse_tags_list(v, &join(at, "tagsList"), problems),
        };
        if let (Some(tags), Some(list)) = (tags.and_then(scalar_text), parsed_list) {
            if tags != join_tags(&list) {
                problems.push(
                    join(at, "tags"),
                    format!(
                        "the tags of tagsList joined as \"name:value;...\" (\"{}\"), or leave \
                         one of the two out",
                        join_tags(&list)
                    ),
                );
            }
        }
    }

    fn validate_network(&self, at: &str, problems: &mut Problems) {
        let Some(interfaces) = self.instance.network.get("interface") else {
            return;
        };
        let at = join(at, "interface");
        let Some(interfaces) = interfaces.as_array() else {
            problems.push(at, "an array of network interfaces");
            return;
        };
        for (i, nic) in interfaces.iter().enumerate() {
            let nic_at = index(&at, i);
            let Some(nic) = nic.as_object() else {
                problems.push(nic_at, "an object {ipv4, ipv6, macAddress}");
                continue;
            };
            if let Some(mac) = nic.get("macAddress").and_then(scalar_text) {
                let ok = mac.len() == 12 && mac.bytes().all(|b| b.is_ascii_hexdigit());
                if !mac.is_empty() && !ok {
                    problems.push(
                        join(&nic_at, "macAddress"),
                        "12 hex digits without separators, as IMDS shows them (\"000D3AF806EC\")",
                    );
                }
            }
        }
    }

    fn validate_identities(&self, at: &str, problems: &mut Problems) {
        let mut systems = 0;
        let mut client_ids = HashSet::new();
        let mut object_ids = HashSet::new();
        let mut res_ids = HashSet::new();
        for (i, id) in self.identities.iter().enumerate() {
            let id_at = index(at, i);
            if id.kind == IdentityKind::SystemAssigned {
                systems += 1;
                if systems > 1 {
                    problems.push(
                        join(&id_at, "type"),
                        "at most one systemAssigned identity (a VM has one system identity)",
                    );
                }
            }
            if !is_uuid(&id.client_id) {
                problems.push(join(&id_at, "clientId"), "a UUID");
            } else if !client_ids.insert(id.client_id.to_ascii_lowercase()) {
                problems.push(join(&id_at, "clientId"), "a clientId no other identity has");
            }
            if !is_uuid(&id.object_id) {
                problems.push(join(&id_at, "objectId"), "a UUID");
            } else if !object_ids.insert(id.object_id.to_ascii_lowercase()) {
                problems.push(
                    join(&id_at, "objectId"),
                    "an objectId no other identity has",
                );
            }
            match (&id.msi_res_id, id.kind) {
                (None, IdentityKind::UserAssigned) => problems.push(
                    join(&id_at, "msiResId"),
                    "the identity's resource id (/subscriptions/.../providers/\
                     Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
                ),
                (Some(r), _) if !r.starts_with("/subscriptions/") => problems.push(
                    join(&id_at, "msiResId"),
                    "an ARM resource id starting with /subscriptions/",
                ),
                (Some(r), _) if !res_ids.insert(r.to_ascii_lowercase()) => problems.push(
                    join(&id_at, "msiResId"),
                    "a resource id no other identity has",
                ),
                _ => {}
            }
            let token_at = join(&id_at, "token");
            let t = &id.token;
            let sources = [
                t.access_token.is_some(),
                t.minted.is_some(),
                t.upstream.is_some(),
                t.command.is_some(),
            ];
            if let Some(u) = &t.upstream {
                u.validate(&join(&token_at, "upstream"), problems);
            }
            if let Some(c) = &t.command {
                c.validate(&join(&token_at, "command"), problems);
            }
            match (&id.token.access_token, &id.token.minted) {
                _ if sources.iter().filter(|s| **s).count() != 1 => problems.push(
                    token_at,
                    "exactly one token source: {\"minted\": {}}, {\"accessToken\": \"<jwt>\"}, \
                     {\"upstream\": {...}} or {\"command\": {...}}",
                ),
                (Some(t), None) if t.expose().is_empty() => {
                    problems.push(join(&token_at, "accessToken"), "a non-empty token")
                }
                (None, Some(m)) if !MINTED_LIFETIME_RANGE.contains(&m.lifetime()) => problems.push(
                    join(&join(&token_at, "minted"), "lifetimeSecs"),
                    "a number of seconds from 600 to 604800",
                ),
                _ => {}
            }
        }
    }

    fn validate_events(&self, at: &str, problems: &mut Problems) {
        let at = join(at, "events");
        let mut ids = HashSet::new();
        for (i, e) in self.scheduled_events.events.iter().enumerate() {
            let e_at = index(&at, i);
            if !e.event_id.is_empty() && !ids.insert(e.event_id.to_ascii_lowercase()) {
                problems.push(join(&e_at, "eventId"), "an id no other event has");
            }
            if !e.not_before.is_empty() && super::events::When::parse(&e.not_before).is_none() {
                problems.push(
                    join(&e_at, "notBefore"),
                    "\"Mon, 19 Sep 2016 18:29:47 GMT\", a time from start such as \"+5m\", or \"\"",
                );
            }
            if e.duration_in_seconds < -1 {
                problems.push(
                    join(&e_at, "durationInSeconds"),
                    "seconds, or -1 when unknown",
                );
            }
            let one_of = |field: &str, value: &str, allowed: &[&str], problems: &mut Problems| {
                if !allowed.contains(&value) {
                    problems.push(join(&e_at, field), format!("one of {}", allowed.join(", ")));
                }
            };
            one_of("eventType", &e.event_type, &EVENT_TYPES, problems);
            one_of("eventStatus", &e.event_status, &EVENT_STATUSES, problems);
            one_of("eventSource", &e.event_source, &EVENT_SOURCES, problems);
            one_of(
                "resourceType",
                &e.resource_type,
                &["VirtualMachine"],
                problems,
            );
        }
    }

    /// The system-assigned identity, if any.
    pub fn system_identity(&self) -> Option<&Identity> {
        self.identities
            .iter()
            .find(|i| i.kind == IdentityKind::SystemAssigned)
    }
}

fn validate_api_versions(versions: &[String], at: &str, problems: &mut Problems) {
    if versions.is_empty() {
        problems.push(at, "at least one api-version");
    }
    let mut seen = HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        if !is_date(v) {
            problems.push(index(at, i), "a date YYYY-MM-DD, e.g. \"2025-04-07\"");
        } else if !seen.insert(v.as_str()) {
            problems.push(index(at, i), "an api-version not already listed");
        }
    }
}

/// `tagsList` as (name, value) pairs, or `None` after pushing a problem.
fn parse_tags_list(
    value: &Value,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<(String, String)>> {
    let Some(items) = value.as_array() else {
        problems.push(at, "an array of {\"name\": ..., \"value\": ...}");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| {
            item.get(k).map_or(Some(String::new()), |v| {
                scalar_text(v).map(|s| s.into_owned())
            })
        };
        match (item.as_object(), field("name"), field("value")) {
            (Some(_), Some(name), Some(value)) => out.push((name, value)),
            _ => {
                problems.push(
                    index(at, i),
                    "an object {\"name\": string, \"value\": string}",
                );
                return None;
            }
        }
    }
    Some(out)
}

/// The `tags` string IMDS derives from `tagsList`: `name:value` joined by `;`.
pub fn join_tags(list: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in list.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
        out.push(':');
        out.push_str(value);
    }
    out
}

/// `tagsList` pairs from a `tags` string (`name:value;...`; a tag without `:` has value `""`).
pub fn split_tags(tags: &str) -> Vec<(String, String)> {
    tags.split(';')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (name, value) = t.split_once(':').unwrap_or((t, ""));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// True for JSON values IMDS shows as strings (everything but objects and arrays).
pub fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// How IMDS shows a primitive: its text, `""` for null; `None` for objects and arrays.
pub fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v {
        Value::Null => Some(Cow::Borrowed("")),
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Object(_) | Value::Array(_) => None,
    }
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DD` digits.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The JSON paths of every problem in a configuration text.
    fn problem_paths(text: &str) -> Vec<String> {
        match load_str(text, "x.json", &no_env) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.path).collect(),
        }
    }

    const TOKEN: &str = r#""token": {"accessToken": "t"}"#;

    #[test]
    fn default_azure_section_is_valid() {
        let c = crate::config::default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.azure.enabled);
        assert!(c.azure.system_identity().is_some());
    }

    #[test]
    fn vm_id_must_be_a_uuid() {
        let paths = problem_paths(r#"{"azure": {"instance": {"compute": {"vmId": "vm-1"}}}}"#);
        assert_eq!(paths, ["$.azure.instance.compute.vmId"]);
        assert!(problem_paths(r#"{"azure": {"instance": {"compute": {"vmId": ""}}}}"#).is_empty());
    }

    #[test]
    fn tags_and_tags_list_must_agree() {
        let text = r#"{"azure": {"instance": {"compute": {
            "tags": "a:1;b:2",
            "tagsList": [{"name": "a", "value": "1"}, {"name": "b", "value": "3"}]}}}}"#;
        assert_eq!(problem_paths(text), ["$.azure.instance.compute.tags"]);
        let ok = r#"{"azure": {"instance": {"compute": {
            "tags": "a:1;b:2",
            "tagsList": [{"name": "a", "value": "1"}, {"name": "b", "value": 2}]}}}}"#;
        assert!(problem_paths(ok).is_empty());
        let bad_item = r#"{"azure": {"instance": {"compute": {"tagsList": [{"name": "a"}, 3]}}}}"#;
        assert_eq!(
            problem_paths(bad_item),
            ["$.azure.instance.compute.tagsList[1]"]
        );
    }

    #[test]
    fn mac_addresses_are_bare_hex() {
        let text = r#"{"azure": {"instance": {"network": {"interface": [
            {"macAddress": "000D3AF806EC"}, {"macAddress": "00:0d:3a:f8:06:ec"}]}}}}"#;
        assert_eq!(
            problem_paths(text),
            ["$.azure.instance.network.interface[1].macAddress"]
        );
    }

    #[test]
    fn identities_are_checked_with_paths() {
        let text = format!(
            r#"{{"azure": {{"identities": [
            {{"type": "systemAssigned", "clientId": "11111111-1111-1111-1111-111111111111",
              "objectId": "21111111-1111-1111-1111-111111111111", {TOKEN}}},
            {{"type": "systemAssigned", "clientId": "11111111-1111-1111-1111-111111111111",
              "objectId": "nope", {TOKEN}}},
            {{"type": "userAssigned", "clientId": "31111111-1111-1111-1111-111111111111",
              "objectId": "41111111-1111-1111-1111-111111111111", "token": {{}}}}
        ]}}}}"#
        );
        assert_eq!(
            problem_paths(&text),
            [
                "$.azure.identities[1].type",
                "$.azure.identities[1].clientId",
                "$.azure.identities[1].objectId",
                "$.azure.identities[2].msiResId",
                "$.azure.identities[2].token",
            ]
        );
    }

    #[test]
    fn unknown_identity_fields_and_types_are_schema_errors() {
        let text = r#"{"azure": {"identities": [{"type": "both", "clientId": "x", "objectId": "y",
            "token": {"accessToken": "t"}}]}}"#;
        assert_eq!(problem_paths(text), ["$.azure.identities[0].type"]);
        let text = r#"{"azure": {"identities": [{"type": "userAssigned", "clientId": "x",
            "objectId": "y", "token": {"acessToken": "t"}}]}}"#;
        assert_eq!(
            problem_paths(text),
            ["$.azure.identities[0].token.acessToken"]
        );
    }

    #[test]
    fn events_and_versions_are_checked() {
        let text = r#"{"azure": {"scheduledEvents": {"events": [
            {"eventId": "e1", "eventType": "Reboot"},
            {"eventId": "E1", "eventType": "Explode", "eventStatus": "Done"}]},
            "apiVersions": ["2021-02-01", "latest", "2021-02-01"]}}"#;
        assert_eq!(
            problem_paths(text),
            [
                "$.azure.scheduledEvents.events[1].eventId",
                "$.azure.scheduledEvents.events[1].eventType",
                "$.azure.scheduledEvents.events[1].eventStatus",
                "$.azure.apiVersions[1]",
                "$.azure.apiVersions[2]",
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn tags_round_trip() {
        let list = split_tags("Department:IT;Empty;k:v:w");
        assert_eq!(
            list,
            [
                ("Department".to_string(), "IT".to_string()),
                ("Empty".to_string(), String::new()),
                ("k".to_string(), "v:w".to_string())
            ]
        );
        assert_eq!(join_tags(&list), "Department:IT;Empty:;k:v:w");
    }
}
