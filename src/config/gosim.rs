//! The Go IMDS simulator's configuration file, accepted as-is.
//!
//! Its shape: `{"tenantID": "...", "servicePrincipals": {"<appId>": "<secret>"},
//! "metadata": {"compute": {...}, "network": {...}}}`. It becomes an Azure-only configuration
//! whose instance document is `metadata`. (Skeleton: the Azure engineer completes the mapping.)

use serde_json::Value;

use super::error::Problems;
use super::Config;

/// True when `value` has the simulator's shape rather than the native one.
pub fn is_gosim(value: &Value) -> bool {
    value.get("metadata").is_some()
        && value.get("azure").is_none()
        && value.get("gce").is_none()
        && value.get("aws").is_none()
}

/// Converts a simulator file into a native configuration.
pub fn convert(_value: Value) -> Result<Config, Problems> {
    let mut config = Config::default();
    config.azure.enabled = true;
    Ok(config)
}
