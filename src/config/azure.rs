//! `$.azure`: the Azure part of the configuration. (Skeleton: the Azure engineer fills this in.)

use serde::Deserialize;

use super::error::Problems;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureConfig {
    #[serde(default)]
    pub enabled: bool,
}

impl AzureConfig {
    /// Semantic checks beyond the schema; `at` is this section's JSON path.
    pub fn validate(&self, _at: &str, _problems: &mut Problems) {}
}
