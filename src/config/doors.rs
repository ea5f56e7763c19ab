//! The token doors besides 169.254.169.254: `$.azure.himds`, `$.azure.appService`,
//! `$.azure.legacyMsi` and `$.aws.containerCredentials`.
//!
//! Contract: every door is off unless `enabled` (the command line can turn the Azure ones on
//! too: `--himds`, `--app-service`, `--legacy-msi`); every field has the default a real machine
//! uses, so `{"enabled": true}` is a complete section. The Azure doors are kernel-socket
//! listeners and must listen on loopback: each hands a token to whoever connects, which on a
//! real machine only local processes can.
//!
//! ```json
//! "azure": {
//!   "himds":      {"enabled": true, "listen": "127.0.0.1:40342",
//!                  "keyDirectory": "/var/opt/azcmagent/tokens", "group": "himds"},
//!   "appService": {"enabled": true, "listen": "127.0.0.1:41741", "header": "<secret>"},
//!   "legacyMsi":  {"enabled": true, "listen": "127.0.0.1:50342"}
//! },
//! "aws": {
//!   "containerCredentials": {"enabled": true, "relativeUri": "/v2/credentials/imds-tun",
//!                            "authorizationToken": "<optional>"}
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::azure::Secret;
use super::error::{join, Problems};

/// The doors the command line turns on (`--himds`, `--app-service`, `--legacy-msi`) on top
/// of the configuration: applied to every configuration loaded, at start, on reload and on
/// live edits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DoorFlags {
    pub himds: bool,
    pub app_service: bool,
    pub legacy_msi: bool,
}

impl DoorFlags {
    pub fn apply(&self, cfg: &mut super::Config) {
        cfg.azure.himds.enabled |= self.himds;
        cfg.azure.app_service.enabled |= self.app_service;
        cfg.azure.legacy_msi.enabled |= self.legacy_msi;
    }
}

/// Where Azure Arc keeps HIMDS challenge keys; azure-identity accepts no other directory.
pub const HIMDS_KEY_DIRECTORY: &str = "/var/opt/azcmagent/tokens";

/// `$.azure.himds`: Azure Arc's hybrid IMDS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HimdsConfig {
    pub enabled: bool,
    /// HIMDS listens on port 40342 of localhost.
    pub listen: SocketAddr,
    /// Where the challenge key files are written; also the directory of the realm clients are
    /// told to read. azure-identity and MSAL refuse any directory but the default, so change it
    /// only for clients that do not check (or inside a mount namespace).
    pub key_directory: PathBuf,
    /// The group that may read the key files (created, when missing, while the door is open).
    pub group: String,
}

impl Default for HimdsConfig {
    fn default() -> Self {
        HimdsConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 40342)),
            key_directory: PathBuf::from(HIMDS_KEY_DIRECTORY),
            group: "himds".into(),
        }
    }
}

/// `$.azure.appService`: the App Service / Functions identity endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AppServiceConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The `X-IDENTITY-HEADER` value clients must send (`IDENTITY_HEADER`). Absent: derived
    /// from the process's session key, so it changes with every run, as on App Service.
    pub header: Option<Secret>,
}

impl Default for AppServiceConfig {
    fn default() -> Self {
        AppServiceConfig {
            enabled: false,
            // App Service picks a port per site; this one is unassigned by IANA.
            listen: SocketAddr::from(([127, 0, 0, 1], 41741)),
            header: None,
        }
    }
}

/// `$.azure.legacyMsi`: the retired VM extension endpoint at localhost:50342.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LegacyMsiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for LegacyMsiConfig {
    fn default() -> Self {
        LegacyMsiConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 50342)),
        }
    }
}

/// `$.aws.containerCredentials`: ECS container credentials at 169.254.170.2. Enabling it makes
/// `up` route that address (no need to list it in `$.server.addresses`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ContainerCredentialsConfig {
    pub enabled: bool,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`: the path that answers the role's credentials.
    pub relative_uri: String,
    /// When set, requests must carry it in `Authorization`
    /// (`AWS_CONTAINER_AUTHORIZATION_TOKEN`).
    pub authorization_token: Option<Secret>,
}

impl Default for ContainerCredentialsConfig {
    fn default() -> Self {
        ContainerCredentialsConfig {
            enabled: false,
            relative_uri: "/v2/credentials/imds-tun".into(),
            authorization_token: None,
        }
    }
}

/// The ECS agent's address for container credentials.
pub const ECS_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 170, 2);

/// Loopback only: the Azure doors hand out tokens to whoever connects.
fn validate_loopback(listen: &SocketAddr, at: &str, problems: &mut Problems) {
    if !listen.ip().is_loopback() {
        problems.push(
            join(at, "listen"),
            "a loopback address and port (127.0.0.1:PORT or [::1]:PORT): this door hands out \
             tokens to whoever can connect",
        );
    }
}

impl HimdsConfig {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        validate_loopback(&self.listen, at, problems);
        if !self.key_directory.is_absolute() {
            problems.push(join(at, "keyDirectory"), "an absolute directory path");
        }
        let name_ok = !self.group.is_empty()
            && self.group.len() <= 32
            && self
                .group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            problems.push(
                join(at, "group"),
                "a group name (letters, digits, `_`, `-`; at most 32)",
            );
        }
    }
}

impl AppServiceConfig {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        validate_loopback(&self.listen, at, problems);
        if let Some(h) = &self.header {
            let ok = !h.expose().is_empty() && h.expose().bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                problems.push(
                    join(at, "header"),
                    "a non-empty header value of visible ASCII characters",
                );
            }
        }
    }
}

impl LegacyMsiConfig {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        validate_loopback(&self.listen, at, problems);
    }
}

impl ContainerCredentialsConfig {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        let uri = &self.relative_uri;
        let ok = uri.starts_with('/')
            && uri.len() > 1
            && uri
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !ok {
            problems.push(
                join(at, "relativeUri"),
                "a path starting with `/` (no query, no spaces), e.g. /v2/credentials/NAME",
            );
        }
        if let Some(t) = &self.authorization_token {
            let ok = !t.expose().is_empty() && t.expose().bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                problems.push(
                    join(at, "authorizationToken"),
                    "a non-empty header value of visible ASCII characters",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_endpoints() {
        let h = HimdsConfig::default();
        assert_eq!(h.listen.to_string(), "127.0.0.1:40342");
        assert_eq!(h.key_directory, PathBuf::from("/var/opt/azcmagent/tokens"));
        assert_eq!(LegacyMsiConfig::default().listen.port(), 50342);
    }

    #[test]
    fn non_loopback_and_bad_values_are_named() {
        let mut p = Problems::new();
        let h = HimdsConfig {
            listen: "0.0.0.0:40342".parse().unwrap_or_else(|e| panic!("{e}")),
            key_directory: "tokens".into(),
            group: "bad group".into(),
            enabled: true,
        };
        h.validate("$.azure.himds", &mut p);
        let c = ContainerCredentialsConfig {
            relative_uri: "v2/creds?x".into(),
            ..Default::default()
        };
        c.validate("$.aws.containerCredentials", &mut p);
        let paths: Vec<String> = p.into_errors("f").into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "$.azure.himds.listen",
                "$.azure.himds.keyDirectory",
                "$.azure.himds.group",
                "$.aws.containerCredentials.relativeUri"
            ]
        );
    }
}
