//! `$.callers`: the caller policy, who may get tokens (and, if configured, metadata).

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Problems;

/// `$.callers`. Absent rules leave their requests open (the default): `tokens` guards every
/// token and credential endpoint (see [`crate::caller`] for which those are), `metadata`
/// every other request at the metadata addresses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CallersConfig {
    pub tokens: Option<CallerRule>,
    pub metadata: Option<CallerRule>,
}

/// Who passes: a caller whose socket's uid is in `uids`, or whose effective gid or one of its
/// supplementary groups is in `gids`, or whose executable (`/proc/<pid>/exe`) is in
/// `executables`. Anyone else is denied, and so is a caller that cannot be identified.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CallerRule {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub executables: Vec<PathBuf>,
}

impl CallersConfig {
    /// Whether any rule is set (without one, no caller is ever looked up).
    pub fn is_set(&self) -> bool {
        self.tokens.is_some() || self.metadata.is_some()
    }

    pub fn validate(&self, at: &str, problems: &mut Problems) {
        for (name, rule) in [("tokens", &self.tokens), ("metadata", &self.metadata)] {
            if let Some(r) = rule {
                r.validate(&format!("{at}.{name}"), problems);
            }
        }
    }
}

impl CallerRule {
    fn validate(&self, at: &str, problems: &mut Problems) {
        if self.uids.is_empty() && self.gids.is_empty() && self.executables.is_empty() {
            problems.push(
                at.to_string(),
                "at least one of uids, gids, executables (an empty rule would deny every caller; to turn a service off, disable it)",
            );
        }
        for (i, e) in self.executables.iter().enumerate() {
            if !e.is_absolute() {
                problems.push(
                    super::error::index(&format!("{at}.executables"), i),
                    "an absolute path (as /proc/<pid>/exe shows it)",
                );
            }
        }
    }
}
