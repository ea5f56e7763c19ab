//! The Go IMDS simulator's configuration file, accepted as-is.
//!
//! Its shape: `{"tenantID": "...", "servicePrincipals": {"<appId>": "<secret>"},
//! "metadata": {"compute": {...}, "network": {...}}}`. It becomes an Azure-only configuration:
//! `metadata` is the instance document, `tenantID` the tenant, and `servicePrincipals` are kept
//! in `$.azure.servicePrincipals`. As in the simulator, which proxied token requests to Entra
//! ID with the configured secret, each service principal becomes a user-assigned identity
//! (`client_id` = its appId) whose tokens come upstream with client credentials
//! ([`crate::config::upstream::AzureUpstream`], authority from `AZURE_AUTHORITY_HOST` when
//! set, the variable azure-identity reads). Its object id is derived from the appId (the file
//! has none) and its resource id names it under the VM's subscription and resource group. With
//! one service principal a request without `client_id` gets it (IMDS's rule for a single
//! user-assigned identity).
//!
//! Faithful to how the simulator read its file (Go's `encoding/json`): key names match
//! ASCII-case-insensitively and unknown keys are ignored. Unlike the simulator, every field of
//! `compute` and `network` is kept, not only the ones its Go struct named. Problems are
//! reported with the paths of the simulator's file (`$.metadata.compute.vmId`), not the native
//! ones.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::azure::{AzureConfig, Identity, IdentityKind, InstanceDocument, Secret, TokenSource};
use super::error::{join, Problems};
use super::upstream::AzureUpstream;
use super::Config;
use super::Env;

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
pub fn convert(value: Value, env: Env<'_>) -> Result<Config, Problems> {
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
    config.azure.identities = identities(&config.azure, env);
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

/// One user-assigned identity per service principal, with upstream tokens.
fn identities(azure: &AzureConfig, env: Env<'_>) -> Vec<Identity> {
    let compute = |k: &str| {
        azure
            .instance
            .compute
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or_default()
            .to_string()
    };
    let subscription = Some(compute("subscriptionId"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
    let group = Some(compute("resourceGroupName"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "imds-tun".into());
    azure
        .service_principals
        .iter()
        .map(|(app_id, secret)| Identity {
            kind: IdentityKind::UserAssigned,
            client_id: app_id.clone(),
            object_id: derived_uuid(app_id),
            msi_res_id: Some(format!(
                "/subscriptions/{subscription}/resourceGroups/{group}/providers/\
                 Microsoft.ManagedIdentity/userAssignedIdentities/{app_id}"
            )),
            token: TokenSource {
                upstream: Some(AzureUpstream {
                    client_secret: Some(secret.clone()),
                    authority_host: env("AZURE_AUTHORITY_HOST"),
                    ..AzureUpstream::default()
                }),
                ..TokenSource::default()
            },
        })
        .collect()
}

/// A stable UUID-shaped id for `seed` (SHA-256, version 4 and variant bits set).
fn derived_uuid(seed: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("imds-tun gosim object id\n{seed}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
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
    } else if native.starts_with("$.azure.identities[") {
        // One identity per service principal: what can be wrong with it is its appId.
        "$.servicePrincipals".to_string()
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
        let ids = &c.azure.identities;
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].client_id, "deadbeef-efa9-42ea-9ac3-28a920370be6");
        assert!(ids[0].token.upstream.is_some());
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
