//! The Go IMDS simulator's configuration file, accepted as-is.
//!
//! Its shape: `{"tenantID": "...", "servicePrincipals": {"<appId>": "<secret>"},
//! "metadata": {"compute": {...}, "network": {...}}}`. It becomes an Azure-only configuration:
//! `metadata` is the instance document, `tenantID` the tenant, and `servicePrincipals` are kept
//! in `$.azure.servicePrincipals` for upstream tokens. No identity is configured from it (a
//! fixed token cannot be derived from a secret), so the token endpoint answers "Identity not
//! found" until upstream tokens exist.
//!
//! Faithful to how the simulator read its file (Go's `encoding/json`): key names match
//! ASCII-case-insensitively and unknown keys are ignored. Unlike the simulator, every field of
//! `compute` and `network` is kept, not only the ones its Go struct named. Problems are
//! reported with the paths of the simulator's file (`$.metadata.compute.vmId`), not the native
//! ones.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::azure::{InstanceDocument, Secret};
use super::error::{join, Problems};
use super::Config;

/// True when `value` has the simulator's shape rather than the native one: a `metadata` key
/// (any case, as Go matches it) and none of the native sections.
pub fn is_gosim(value: &Value) -> bool {
    let Some(map) = value.as_object() else {
        return false;
    };
    map.keys().any(|k| k.eq_ignore_ascii_case("metadata"))
        && !["server", "azure", "gce", "aws"]
            .iter()
            .any(|k| map.contains_key(*k))
}

/// Converts a simulator file into a native configuration.
pub fn convert(value: Value) -> Result<Config, Problems> {
    let mut problems = Problems::new();
    let Value::Object(top) = value else {
        problems.push("$", "a JSON object");
        return Err(problems);
    };
    let mut config = Config::default();
    config.azure.enabled = true;
    for (key, value) in top {
        let at = join("$", &key);
        match key.to_ascii_lowercase().as_str() {
            "tenantid" => match value {
                Value::String(s) => config.azure.tenant_id = s,
                Value::Null => {}
                _ => problems.push(at, "a string (the tenant id or domain)"),
            },
            "serviceprincipals" => {
                config.azure.service_principals = service_principals(value, &at, &mut problems)
            }
            "metadata" => config.azure.instance = metadata(value, &at, &mut problems),
            // encoding/json ignores fields the struct does not name.
            _ => {}
        }
    }
    // Validate here so problems carry this file's paths; `load_str` validates again and
    // finds nothing.
    let mut native = Problems::new();
    config.azure.validate("$.azure", &mut native);
    for e in native.into_errors("") {
        problems.push(gosim_path(&e.path), e.expected);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn service_principals(value: Value, at: &str, problems: &mut Problems) -> BTreeMap<String, Secret> {
    let mut out = BTreeMap::new();
    match value {
        Value::Object(map) => {
            for (app_id, secret) in map {
                match secret {
                    Value::String(s) => {
                        out.insert(app_id, Secret(s));
                    }
                    _ => problems.push(join(at, &app_id), "the client secret, a string"),
                }
            }
        }
        Value::Null => {}
        _ => problems.push(at, "an object {\"<appId>\": \"<secret>\"}"),
    }
    out
}

fn metadata(value: Value, at: &str, problems: &mut Problems) -> InstanceDocument {
    let mut doc = InstanceDocument::default();
    let Value::Object(map) = value else {
        problems.push(at, "an object {\"compute\": {...}, \"network\": {...}}");
        return doc;
    };
    for (key, value) in map {
        let part_at = join(at, &key);
        let part = match key.to_ascii_lowercase().as_str() {
            "compute" => &mut doc.compute,
            "network" => &mut doc.network,
            _ => continue,
        };
        match value {
            Value::Object(m) => *part = m,
            Value::Null => *part = Map::new(),
            _ => problems.push(part_at, "an object"),
        }
    }
    doc
}

/// Maps a native path back to where the value sits in a simulator file.
fn gosim_path(native: &str) -> String {
    if let Some(rest) = native.strip_prefix("$.azure.instance") {
        format!("$.metadata{rest}")
    } else if let Some(rest) = native.strip_prefix("$.azure.tenantId") {
        format!("$.tenantID{rest}")
    } else {
        native.to_string()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const EXAMPLE: &str = include_str!("../../fixtures/gosim-example.json");

    #[test]
    fn simulator_file_becomes_azure_only_config() {
        let c = load_str(EXAMPLE, "gosim.json", &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.azure.enabled && !c.gce.enabled && !c.aws.enabled);
        assert_eq!(c.azure.tenant_id, "sometenant.onmicrosoft.com");
        let secret = c
            .azure
            .service_principals
            .get("deadbeef-efa9-42ea-9ac3-28a920370be6")
            .map(|s| s.expose());
        assert_eq!(secret, Some("ewewM/OblEL/WOJweC0="));
        let compute = &c.azure.instance.compute;
        assert_eq!(
            compute.get("vmId").and_then(|v| v.as_str()),
            Some("c7619932-27e3-4a63-988c-460bd290ca55")
        );
        // Fields the simulator's Go struct dropped are kept.
        assert!(compute.get("publicKeys").is_some_and(|v| v.is_array()));
        let nic = c
            .azure
            .instance
            .network
            .get("interface")
            .and_then(|v| v.get(0));
        assert_eq!(
            nic.and_then(|n| n.get("macAddress"))
                .and_then(|v| v.as_str()),
            Some("000D3A48FA8D")
        );
        assert!(c.azure.identities.is_empty());
        assert!(format!("{:?}", c.azure).contains("Secret(..)"));
        assert!(!format!("{:?}", c.azure).contains("ewewM"));
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
        let text = r#"{"TenantId": "t", "Metadata": {"Compute": {"name": "vm"}}, "port": 80}"#;
        let c = load_str(text, "g.json", &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.azure.tenant_id, "t");
        assert_eq!(
            c.azure
                .instance
                .compute
                .get("name")
                .and_then(|v| v.as_str()),
            Some("vm")
        );
    }

    #[test]
    fn problems_name_the_simulator_paths() {
        let text = r#"{"tenantID": 5, "servicePrincipals": {"app": 1},
            "metadata": {"compute": {"vmId": "not-a-uuid"}, "network": []}}"#;
        let errors = load_str(text, "g.json", &no_env)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.tenantID",
                "$.servicePrincipals.app",
                "$.metadata.network",
                "$.metadata.compute.vmId"
            ]
        );
        assert!(errors.iter().all(|e| e.file == "g.json"));
    }
}
