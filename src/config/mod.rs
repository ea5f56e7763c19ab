//! Configuration: the JSON a user writes, loaded, checked and turned into [`Config`].
//!
//! Contract: [`load_file`] and [`load_str`] either return a `Config` that every cloud can
//! render, or every problem found, each naming the file, the JSON path and what was expected
//! ([`ConfigErrors`]). Nothing downstream re-validates. Three shapes are accepted:
//! - the native shape `{server, azure, gce, aws, identity, fleet}` (a missing cloud section is
//!   a disabled cloud; `fleet` holds other instances as patches of this one, [`fleet`]);
//! - the Go IMDS simulator's file `{tenantID, servicePrincipals, metadata:{compute,network}}`,
//!   as-is, converted to an Azure-only configuration ([`gosim`]);
//! - either, with the GCE emulator's environment variables (`GOOGLE_PROJECT_ID`, ...) applied
//!   on top ([`GceConfig::apply_env`]).
//!
//! The embedded default ([`default_config`]) is `fixtures/default.json`: all three clouds on,
//! with realistic, mutually consistent values.

pub mod aws;
pub mod azure;
pub mod doors;
pub mod error;
pub mod events;
pub mod fleet;
pub mod gce;
pub mod gosim;
pub mod identity;
pub mod server;
pub mod upstream;

use serde::Deserialize;
use serde_json::Value;

pub use aws::AwsConfig;
pub use azure::AzureConfig;
pub use error::{ConfigError, ConfigErrors, Problems};
pub use fleet::FleetConfig;
pub use gce::GceConfig;
pub use identity::IdentityConfig;
pub use server::ServerConfig;

/// The name errors carry for the embedded default.
pub const DEFAULT_SOURCE: &str = "<default>";

/// The embedded default configuration text.
pub const DEFAULT_JSON: &str = include_str!("../../fixtures/default.json");

/// A whole, validated configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub azure: AzureConfig,
    #[serde(default)]
    pub gce: GceConfig,
    #[serde(default)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Other instances on this host, by caller address ([`fleet`]); none when absent.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Injected failures at start ([`events::FaultConfig`]; run by [`crate::live`]).
    #[serde(default)]
    pub faults: Vec<events::FaultConfig>,
}

/// A lookup of environment variables; `std::env::var` in production, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads and loads `path`.
pub fn load_file(path: &std::path::Path, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &file, env),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            path: "$".into(),
            expected: format!("a readable JSON file ({e})"),
        }])),
    }
}

/// The embedded default, with environment overrides applied.
pub fn default_config(env: Env<'_>) -> Result<Config, ConfigErrors> {
    load_str(DEFAULT_JSON, DEFAULT_SOURCE, env)
}

/// Loads configuration text; `file` names the source in errors.
pub fn load_str(text: &str, file: &str, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let fail = |path: String, expected: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            path,
            expected,
        }])
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        fail(
            format!("$ (line {}, column {})", e.line(), e.column()),
            format!("valid JSON ({e})"),
        )
    })?;
    let native = !gosim::is_gosim(&value);
    // Fleet profiles are patches of the document as written ([`fleet::resolve`]).
    let document = (native && value.get("fleet").is_some()).then(|| value.clone());
    let mut config = if !native {
        gosim::convert(value, env).map_err(|p| ConfigErrors(p.into_errors(file)))?
    } else {
        serde_path_to_error::deserialize::<_, Config>(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "$".to_string()
            } else {
                format!("$.{path}")
            };
            fail(path, e.into_inner().to_string())
        })?
    };
    let mut env_problems = Problems::new();
    config.gce.apply_env(env, &mut env_problems);
    if !env_problems.is_empty() {
        return Err(ConfigErrors(env_problems.into_errors("<environment>")));
    }
    let mut problems = Problems::new();
    config.validate(&mut problems);
    if let Some(document) = document.filter(|_| problems.is_empty()) {
        // Only over a valid base: its problems would be every profile's too.
        fleet::resolve(&document, &mut config, env, &mut problems);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(problems.into_errors(file)))
    }
}

impl Config {
    /// Every semantic check of every section.
    pub fn validate(&self, problems: &mut Problems) {
        self.server.validate("$.server", problems);
        self.azure.validate("$.azure", problems);
        self.gce.validate("$.gce", problems);
        self.aws.validate("$.aws", problems);
        self.identity.validate("$.identity", problems);
        self.fleet.validate("$.fleet", problems);
        events::validate_faults(&self.faults, "$.faults", problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_is_valid_and_enables_all_clouds() {
        let c = default_config(&no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.azure.enabled && c.gce.enabled && c.aws.enabled);
    }

    #[test]
    fn syntax_errors_name_file_and_position() {
        let e = load_str("{\"azure\": ", "x.json", &no_env).err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("x.json: $ (line 1, column 10): valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn schema_errors_name_the_json_path() {
        let e = load_str(r#"{"server": {"maxHeaders": "many"}}"#, "x.json", &no_env);
        let e = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("x.json: $.server.maxHeaders: invalid type"),
            "{e}"
        );
        let e = load_str(r#"{"azrue": {}}"#, "x.json", &no_env);
        let e = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown field `azrue`"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let e = load_str(
            r#"{"server": {"maxHeaders": 0, "idleTimeoutSecs": 0}}"#,
            "x.json",
            &no_env,
        );
        let errors = e.err().map(|e| e.0).unwrap_or_default();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["$.server.maxHeaders", "$.server.idleTimeoutSecs"]);
    }
}
