//! `$.identity`: where the keys that sign tokens and documents live ([`crate::identity`]).
//!
//! ```json
//! "identity": { "keyDir": "/var/lib/imds-tun", "signingKeyFile": "/etc/imds-tun/signing.pem" }
//! ```
//!
//! Both optional. `keyDir` (default `/var/lib/imds-tun`; `--key-dir` on the command line wins)
//! holds the CA and, unless `signingKeyFile` names a PEM RSA key of your own, the signing key.
//! Keys are read at startup and kept across reloads: changing these settings takes a restart.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{join, Problems};

/// `$.identity`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityConfig {
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
}

impl IdentityConfig {
    /// The key directory: `cli` (from `--key-dir`), else the configured one, else the default.
    pub fn key_dir(&self, cli: Option<&std::path::Path>) -> PathBuf {
        cli.map(PathBuf::from)
            .or_else(|| self.key_dir.clone())
            .unwrap_or_else(|| PathBuf::from(crate::identity::store::DEFAULT_KEY_DIR))
    }

    pub fn validate(&self, at: &str, problems: &mut Problems) {
        for (key, path) in [
            ("keyDir", &self.key_dir),
            ("signingKeyFile", &self.signing_key_file),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                problems.push(join(at, key), "an absolute path");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::path::Path;

    #[test]
    fn paths_must_be_absolute_and_the_cli_wins() {
        let no_env = |_: &str| None;
        let e = load_str(r#"{"identity": {"keyDir": "keys"}}"#, "x.json", &no_env);
        let paths: Vec<String> = e
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["$.identity.keyDir"]);
        let c = load_str(r#"{"identity": {"keyDir": "/k"}}"#, "x.json", &no_env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.identity.key_dir(None), Path::new("/k"));
        assert_eq!(
            c.identity.key_dir(Some(Path::new("/cli"))),
            Path::new("/cli")
        );
        assert_eq!(
            IdentityConfig::default().key_dir(None),
            Path::new("/var/lib/imds-tun")
        );
    }
}
