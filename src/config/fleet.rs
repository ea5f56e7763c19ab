//! `$.fleet`: several instances on one host, told apart by the caller's source address.
//!
//! ```json
//! "fleet": {
//!   "profiles": [
//!     {"name": "web-1", "sources": ["169.254.20.0/24", "fe80::1234"],
//!      "patch": {"azure": {"instance": {"compute": {"name": "web-1", "vmId": "..."}}}}}
//!   ],
//!   "unknownSources": "default"
//! }
//! ```
//!
//! Contract: a profile's configuration is the whole configuration document (the native shape,
//! without `fleet`) with the profile's `patch` applied as a JSON merge patch (RFC 7396: objects
//! merge key by key, `null` deletes, anything else — arrays included — replaces), then loaded
//! exactly like a file: schema, environment overrides, every semantic check. Its problems are
//! reported under `$.fleet.profiles[i].patch` followed by the path inside the merged document
//! (`$.fleet.profiles[0].patch.gce.instance.id`), with the profile's name. [`resolve`] does this
//! once per load and keeps the result in [`ProfileConfig::config`], so nothing downstream
//! merges or re-validates.
//!
//! A patch may change `azure`, `gce` and `aws` only: `server`, `identity` (listeners, limits,
//! keys) are the process's, and a profile has no fleet of its own. Which doors listen is
//! decided by the base configuration too; a profile changes what they answer.
//!
//! Sources are networks (`169.254.20.0/24`, `fe80::/64`) or single addresses (a `/32` or
//! `/128`); the longest prefix that contains the caller's address wins. Two equal networks
//! could not be told apart, so they are an error wherever they appear. IPv4-mapped IPv6
//! callers (`::ffff:169.254.20.7`, from a dual-stack listener) match the IPv4 networks.
//! Callers that match no profile get the base configuration (`"unknownSources": "default"`,
//! the default) or are refused (`"refuse"`, see [`crate::fleet`]).

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{index, join, Problems};
use super::{Config, Env};

/// `$.fleet`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetConfig {
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default)]
    pub unknown_sources: UnknownSources,
}

/// `$.fleet.unknownSources`: what a caller that matches no profile gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSources {
    /// The base configuration's instance.
    #[default]
    Default,
    /// Nothing: the connection is refused ([`crate::fleet`]).
    Refuse,
}

/// `$.fleet.profiles[i]`: one instance of the fleet.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileConfig {
    /// Names the profile in errors, logs and metrics (a metrics label: letters, digits, `.`,
    /// `_`, `-`).
    pub name: String,
    /// The callers this instance answers.
    pub sources: Vec<Cidr>,
    /// What differs from the base configuration (RFC 7396 merge patch).
    #[serde(default)]
    pub patch: Map<String, Value>,
    /// The merged and validated configuration; set by [`resolve`] (loading), `None` before.
    #[serde(skip)]
    pub config: Option<Box<Config>>,
}

/// The sections a profile may patch.
const PATCHABLE: [&str; 3] = ["azure", "gce", "aws"];

/// Name of the base configuration's instance in a fleet (its metrics label); no profile may
/// take it.
pub const DEFAULT_PROFILE: &str = "default";

/// A network: an address and a prefix length, with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `169.254.20.0/24`, `fe80::/64`, or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let wanted = || {
            format!(
                "an address or network such as \"169.254.20.0/24\" or \"fe80::1234\", not {text:?}"
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| wanted())?;
        let width = width(network);
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(wanted)?,
            Some(_) => return Err(wanted()),
        };
        let cidr = Cidr { network, prefix };
        let masked = cidr.masked(network);
        if masked != bits(network) {
            return Err(format!(
                "{text} has host bits set: the network is {}/{prefix}",
                from_bits(network, masked)
            ));
        }
        Ok(cidr)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True if `ip` (IPv4-mapped IPv6 counts as IPv4) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == bits(self.network)
    }

    /// `ip`'s bits with everything past this prefix cleared (`ip` of this network's family).
    pub fn masked(&self, ip: IpAddr) -> u128 {
        bits(ip) & mask(self.prefix, width(ip))
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Cidr, String> {
        Cidr::parse(&text)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Bits in an address of `ip`'s family.
pub fn width(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        // The value came from an IPv4 address masked, so it fits.
        IpAddr::V4(_) => IpAddr::from(u32::try_from(bits).unwrap_or(0).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(bits.to_be_bytes()),
    }
}

/// The netmask of a `prefix`-bit network in a `width`-bit family, as an integer.
pub fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match prefix {
        0 => 0,
        p if p >= width => all,
        p => all & !(all >> p),
    }
}

/// Applies an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(out) = target {
        for (name, value) in fields {
            if value.is_null() {
                out.remove(name);
            } else {
                merge_patch(out.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

impl FleetConfig {
    /// Checks names, sources and which sections patches touch; `at` is `$.fleet`.
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        let profiles_at = join(at, "profiles");
        if self.unknown_sources == UnknownSources::Refuse && self.profiles.is_empty() {
            problems.push(
                join(at, "unknownSources"),
                "\"default\" when there are no profiles (\"refuse\" would refuse every caller)",
            );
        }
        let mut seen: Vec<(Cidr, String)> = Vec::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let p_at = index(&profiles_at, i);
            let label_ok = !p.name.is_empty()
                && p.name.len() <= 63
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !label_ok {
                problems.push(
                    join(&p_at, "name"),
                    "a name of letters, digits, `.`, `_`, `-` (at most 63)",
                );
            } else if p.name == DEFAULT_PROFILE {
                problems.push(
                    join(&p_at, "name"),
                    "another name: \"default\" names the base configuration's instance",
                );
            } else if let Some(j) = self.profiles[..i].iter().position(|q| q.name == p.name) {
                problems.push(
                    join(&p_at, "name"),
                    format!("a name of its own (profiles[{j}] is also {:?})", p.name),
                );
            }
            let sources_at = join(&p_at, "sources");
            if p.sources.is_empty() {
                problems.push(&sources_at, "at least one address or network");
            }
            for (k, source) in p.sources.iter().enumerate() {
                let here = index(&sources_at, k);
                match seen.iter().find(|(c, _)| c == source) {
                    Some((_, first)) => problems.push(
                        here,
                        format!(
                            "a network no other source lists ({source} is also {first}: equal \
                             networks cannot be told apart)"
                        ),
                    ),
                    None => seen.push((*source, here)),
                }
            }
            for key in p.patch.keys() {
                if !PATCHABLE.contains(&key.as_str()) {
                    problems.push(
                        join(&join(&p_at, "patch"), key),
                        "only azure, gce and aws in a patch (server, identity and fleet are the \
                         whole process's)",
                    );
                }
            }
        }
    }
}

/// Merges, loads and validates every profile of `config.fleet` over `document` (the base
/// configuration document `config` was loaded from), storing each in
/// [`ProfileConfig::config`]. Problems go to `problems`, under each profile's path.
pub fn resolve(document: &Value, config: &mut Config, env: Env<'_>, problems: &mut Problems) {
    let mut base = document.clone();
    if let Value::Object(fields) = &mut base {
        fields.remove("fleet");
    }
    let base_config = &*config;
    let mut resolved = Vec::with_capacity(config.fleet.profiles.len());
    for (i, profile) in base_config.fleet.profiles.iter().enumerate() {
        let at = format!("$.fleet.profiles[{i}].patch");
        let name = profile.name.as_str();
        // `$` of the merged document becomes the patch's path; the name says which profile.
        let rebase = |path: &str| match path.strip_prefix('$') {
            Some(rest) => format!("{at}{rest}"),
            None => format!("{at} ({path})"),
        };
        let mut doc = base.clone();
        merge_patch(&mut doc, &Value::Object(profile.patch.clone()));
        let mut merged = match serde_path_to_error::deserialize::<_, Config>(doc) {
            Ok(c) => c,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." {
                    at.clone()
                } else {
                    format!("{at}.{path}")
                };
                problems.push(path, format!("{} (profile {name})", e.into_inner()));
                resolved.push(None);
                continue;
            }
        };
        let mut found = Problems::new();
        merged.gce.apply_env(env, &mut found);
        merged.validate(&mut found);
        check_azure_resource_id(&merged, &profile.patch, &mut found);
        let clean = found.is_empty();
        problems.absorb(found, |path, expected| {
            (rebase(path), format!("{expected} (profile {name})"))
        });
        resolved.push(clean.then(|| Box::new(merged)));
    }
    for (profile, merged) in config.fleet.profiles.iter_mut().zip(resolved) {
        profile.config = merged;
    }
}

/// A profile that renames its VM (or moves it to another subscription or resource group) must
/// give it the matching resource id: tokens carry that id as `xms_mirid`, and the identity of
/// a fleet member must agree with itself. Only checked when the patch touches one of them, so
/// a base configuration of the user's own making is left as it is.
fn check_azure_resource_id(merged: &Config, patch: &Map<String, Value>, problems: &mut Problems) {
    const FIELDS: [&str; 4] = ["name", "subscriptionId", "resourceGroupName", "resourceId"];
    let patched = patch
        .get("azure")
        .and_then(|a| a.get("instance"))
        .and_then(|i| i.get("compute"))
        .and_then(Value::as_object)
        .is_some_and(|c| FIELDS.iter().any(|f| c.contains_key(*f)));
    if !merged.azure.enabled || !patched {
        return;
    }
    let compute = &merged.azure.instance.compute;
    let text = |key: &str| compute.get(key).and_then(Value::as_str).unwrap_or("");
    let (name, sub, group, id) = (
        text("name"),
        text("subscriptionId"),
        text("resourceGroupName"),
        text("resourceId"),
    );
    if [name, sub, group, id].iter().any(|v| v.is_empty()) {
        return;
    }
    let wanted = format!(
        "/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"
    );
    // ARM resource ids compare case-insensitively.
    if !id.eq_ignore_ascii_case(&wanted) {
        problems.push(
            "$.azure.instance.compute.resourceId",
            format!("the VM's resource id {wanted:?} (tokens carry it as xms_mirid)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<(String, String)> {
        match load_str(text, "x.json", &no_env) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.expected)).collect(),
        }
    }

    fn paths(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn merge_patch_follows_rfc_7396_appendix_a() {
        // Every example of RFC 7396 Appendix A: (target, patch, result).
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn cidrs_parse_match_and_refuse_host_bits() {
        let c = Cidr::parse("169.254.20.0/24").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.contains("169.254.20.7".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(c.contains(
            "::ffff:169.254.20.7"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        ));
        assert!(!c.contains("169.254.21.7".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!c.contains("fe80::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        let one = Cidr::parse("fe80::1234").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.to_string(), "fe80::1234/128");
        assert!(one.contains("fe80::1234".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!one.contains("fe80::1235".parse().unwrap_or_else(|e| panic!("{e}"))));
        let all = Cidr::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains("127.0.0.2".parse().unwrap_or_else(|e| panic!("{e}"))));
        let v6 = Cidr::parse("fe80::/10").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.contains("febf::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!v6.contains("fec0::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(
            Cidr::parse("169.254.20.5/24").err().unwrap_or_default(),
            "169.254.20.5/24 has host bits set: the network is 169.254.20.0/24"
        );
        for bad in [
            "169.254.20.0/33",
            "fe80::/129",
            "x/8",
            "169.254.1.0/",
            "1.2.3.4/+8",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    const TWO: &str = r#"{"gce": {"enabled": true}, "fleet": {"profiles": [
        {"name": "web-1", "sources": ["169.254.20.0/24"],
         "patch": {"gce": {"instance": {"name": "web-1", "id": 1001, "tags": ["web"]}}}},
        {"name": "web-2", "sources": ["169.254.21.0/24", "169.254.21.9"],
         "patch": {"gce": {"instance": {"name": "web-2", "tags": null}}}}]}}"#;

    #[test]
    fn profiles_are_the_base_with_their_patch() {
        let c = load_str(TWO, "x.json", &no_env).unwrap_or_else(|e| panic!("{e}"));
        let p: Vec<&Config> = c
            .fleet
            .profiles
            .iter()
            .map(|p| p.config.as_deref().unwrap_or_else(|| panic!("unresolved")))
            .collect();
        assert_eq!(p[0].gce.instance["name"], "web-1");
        assert_eq!(p[0].gce.instance["tags"], json!(["web"]));
        assert_eq!(p[1].gce.instance["name"], "web-2");
        assert!(p[1].gce.instance.get("tags").is_none());
        // The base is untouched and profiles have no fleet of their own.
        assert_ne!(c.gce.instance.get("name"), Some(&json!("web-1")));
        assert!(p.iter().all(|p| p.fleet.profiles.is_empty()));
        assert_eq!(c.fleet.unknown_sources, UnknownSources::Default);
    }

    #[test]
    fn profile_errors_name_the_profile_and_the_merged_path() {
        let e = errors(
            r#"{"gce": {"enabled": true}, "fleet": {"profiles": [
            {"name": "a", "sources": ["169.254.20.1"], "patch": {"gce": {"instance": {"id": "x"}}}},
            {"name": "b", "sources": ["169.254.20.2"], "patch": {"azure": {"instance": {"compute": {"vmId": "vm-1"}}}}},
            {"name": "c", "sources": ["169.254.20.3"], "patch": {"aws": {"hopLimit": "one"}}}]}}"#,
        );
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.fleet.profiles[0].patch.gce.instance.id",
                "$.fleet.profiles[1].patch.azure.instance.compute.vmId",
                "$.fleet.profiles[2].patch.aws.hopLimit",
            ],
            "{e:?}"
        );
        assert!(e[0].1.ends_with("(profile a)"), "{e:?}");
        assert!(e[2].1.contains("invalid type") && e[2].1.ends_with("(profile c)"));
    }

    #[test]
    fn fleet_checks_names_sources_and_patch_sections() {
        let e = paths(
            r#"{"fleet": {"profiles": [
            {"name": "default", "sources": ["169.254.20.0/24"]},
            {"name": "a b", "sources": []},
            {"name": "x", "sources": ["169.254.20.0/24", "169.254.20.0/25"]},
            {"name": "x", "sources": ["169.254.9.9", "169.254.9.9/32"],
             "patch": {"server": {}, "fleet": {}, "identity": {}}}]}}"#,
        );
        assert_eq!(
            e,
            [
                "$.fleet.profiles[0].name",
                "$.fleet.profiles[1].name",
                "$.fleet.profiles[1].sources",
                "$.fleet.profiles[2].sources[0]",
                "$.fleet.profiles[3].name",
                "$.fleet.profiles[3].sources[1]",
                "$.fleet.profiles[3].patch.server",
                "$.fleet.profiles[3].patch.fleet",
                "$.fleet.profiles[3].patch.identity",
            ]
        );
        assert_eq!(
            paths(r#"{"fleet": {"unknownSources": "refuse"}}"#),
            ["$.fleet.unknownSources"]
        );
        let schema =
            errors(r#"{"fleet": {"profiles": [{"name": "a", "sources": ["169.254.20.9/24"]}]}}"#);
        assert_eq!(schema[0].0, "$.fleet.profiles[0].sources[0]");
        assert!(schema[0].1.contains("host bits"), "{schema:?}");
        assert_eq!(
            paths(r#"{"fleet": {"unknownSources": "drop"}}"#),
            ["$.fleet.unknownSources"]
        );
    }

    #[test]
    fn a_renamed_azure_vm_needs_its_resource_id() {
        let text = |compute: Value| {
            json!({"azure": {"enabled": true, "instance": {"compute": {
                "name": "vm", "subscriptionId": "s", "resourceGroupName": "g",
                "resourceId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm"}}},
             "fleet": {"profiles": [{"name": "p", "sources": ["169.254.20.1"],
                "patch": {"azure": {"instance": {"compute": compute}}}}]}})
            .to_string()
        };
        assert_eq!(
            paths(&text(json!({"name": "web-1"}))),
            ["$.fleet.profiles[0].patch.azure.instance.compute.resourceId"]
        );
        let renamed = json!({"name": "web-1", "resourceId":
            "/subscriptions/s/resourceGroups/G/providers/Microsoft.Compute/virtualMachines/WEB-1"});
        assert_eq!(paths(&text(renamed)), Vec::<String>::new());
        assert_eq!(paths(&text(json!({"vmSize": "x"}))), Vec::<String>::new());
    }
}
