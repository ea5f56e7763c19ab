//! `$.gce`: the Gce part of the configuration. (Skeleton: the Gce engineer fills this in.)

use serde::Deserialize;

use super::error::Problems;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GceConfig {
    #[serde(default)]
    pub enabled: bool,
}

impl GceConfig {
    /// Semantic checks beyond the schema; `at` is this section's JSON path.
    pub fn validate(&self, _at: &str, _problems: &mut Problems) {}
}

impl GceConfig {
    /// Applies the GCE emulator's environment variables (`GOOGLE_PROJECT_ID`, ...) on top.
    pub fn apply_env(&mut self, _env: super::Env<'_>, _problems: &mut Problems) {}
}
