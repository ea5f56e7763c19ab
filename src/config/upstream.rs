//! The `upstream` and `command` token sources, shared by the three clouds' sections.
//!
//! - Azure `token.upstream`: `{"clientSecret": "..."}` or `{"certificateFile": "sp.pem"}`
//!   (certificate and key in one PEM), with optional `tenantId` (default `$.azure.tenantId`),
//!   `clientId` (default the identity's) and `authorityHost` (default
//!   `https://login.microsoftonline.com`).
//! - GCE `token.upstream`: `{"credentialsFile": "key.json"}` (a `service_account` key or an
//!   `external_account` configuration), optional `impersonate` (a service account e-mail) and
//!   `iamCredentialsUrl` (default `https://iamcredentials.googleapis.com`).
//! - AWS `credentials.upstream`: `{"accessKeyId", "secretAccessKey", "sessionToken"?}` or
//!   `{"profile": "name", "file"?: "~/.aws/credentials"}`.
//! - `command` anywhere: `{"argv": ["az", "account", "get-access-token", "--resource",
//!   "{resource}", "-o", "json"], "timeoutSecs"?: 10, "plainLifetimeSecs"?: 300}`.
//!
//! Files are read when the snapshot is built (load and reload), never per request.

use std::path::PathBuf;

use serde::Deserialize;

use super::azure::Secret;
use super::error::{join, Problems};

/// `command`: a credential-process style command.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandConfig {
    /// The program and its arguments (no shell); `{resource}`, `{audience}` and `{scopes}`
    /// are replaced by the request's.
    pub argv: Vec<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// How long a token or keys whose output gives no expiry are taken to last.
    #[serde(default)]
    pub plain_lifetime_secs: Option<u64>,
}

impl CommandConfig {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        if self.argv.first().is_none_or(|p| p.is_empty()) {
            problems.push(join(at, "argv"), "the program and its arguments, non-empty");
        }
        if self.timeout_secs.is_some_and(|t| !(1..=120).contains(&t)) {
            problems.push(join(at, "timeoutSecs"), "a number of seconds from 1 to 120");
        }
        if self
            .plain_lifetime_secs
            .is_some_and(|t| !(60..=86_400).contains(&t))
        {
            problems.push(
                join(at, "plainLifetimeSecs"),
                "a number of seconds from 60 to 86400",
            );
        }
    }

    pub fn command(&self) -> crate::identity::upstream::command::Command {
        use crate::identity::upstream::command::{DEFAULT_TIMEOUT, PLAIN_LIFETIME};
        crate::identity::upstream::command::Command {
            argv: self.argv.clone(),
            timeout: self
                .timeout_secs
                .map_or(DEFAULT_TIMEOUT, std::time::Duration::from_secs),
            plain_lifetime: self.plain_lifetime_secs.unwrap_or(PLAIN_LIFETIME),
        }
    }
}

/// Azure `token.upstream`: a service principal's client credentials.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureUpstream {
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    #[serde(default)]
    pub authority_host: Option<String>,
}

impl AzureUpstream {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        match (&self.client_secret, &self.certificate_file) {
            (Some(s), None) if s.expose().is_empty() => {
                problems.push(join(at, "clientSecret"), "a non-empty secret")
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => problems.push(
                at,
                "one credential: {\"clientSecret\": \"...\"} or {\"certificateFile\": \"sp.pem\"}",
            ),
        }
        check_url(
            self.authority_host.as_deref(),
            &join(at, "authorityHost"),
            problems,
        );
    }
}

/// GCE `token.upstream`: a Google credentials file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GoogleUpstream {
    pub credentials_file: PathBuf,
    #[serde(default)]
    pub impersonate: Option<String>,
    #[serde(default)]
    pub iam_credentials_url: Option<String>,
}

impl GoogleUpstream {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        if self.impersonate.as_ref().is_some_and(|e| !e.contains('@')) {
            problems.push(join(at, "impersonate"), "a service account e-mail");
        }
        check_url(
            self.iam_credentials_url.as_deref(),
            &join(at, "iamCredentialsUrl"),
            problems,
        );
    }
}

/// AWS `credentials.upstream`: the user's own keys, given or from a profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsUpstream {
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub session_token: Option<Secret>,
    #[serde(default)]
    pub profile: Option<String>,
    /// The shared credentials file; `$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl AwsUpstream {
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        let keys = self.access_key_id.is_some() || self.secret_access_key.is_some();
        match (keys, &self.profile) {
            (true, None) => {
                if self.access_key_id.as_ref().is_none_or(String::is_empty)
                    || self
                        .secret_access_key
                        .as_ref()
                        .is_none_or(|s| s.expose().is_empty())
                {
                    problems.push(at, "both accessKeyId and secretAccessKey");
                }
            }
            (false, Some(p)) if !p.is_empty() => {}
            _ => problems.push(
                at,
                "keys {\"accessKeyId\", \"secretAccessKey\"} or a {\"profile\": \"name\"}",
            ),
        }
    }

    /// The credentials file a profile is read from.
    pub fn credentials_file(&self) -> PathBuf {
        self.file.clone().unwrap_or_else(|| {
            std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                    PathBuf::from(home).join(".aws/credentials")
                })
        })
    }
}

fn check_url(url: Option<&str>, at: &str, problems: &mut Problems) {
    if url.is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
        problems.push(at, "an http:// or https:// URL");
    }
}
