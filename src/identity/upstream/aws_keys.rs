//! AWS "upstream" credentials: the user's own keys, given in the configuration or read from a
//! profile of the shared credentials file.
//!
//! Decision: for AWS, upstream means serving the user's own long-term (or profile session)
//! credentials as the role's; no STS call is made (no SigV4 here). Assuming a role is done
//! with a `command` source running `aws configure export-credentials --profile <role profile>
//! --format process`, which lets the AWS CLI do AssumeRole, SSO or anything else it supports.
//!
//! Contract: [`StaticKeys`] never blocks: a profile is read when the configuration is loaded
//! (off the packet path), not per request. Long-term keys do not expire, but IMDS must give an
//! `Expiration`: they are presented as rotating hourly (`LastUpdated` at the hour, `Expiration`
//! 6 hours later, as minted credentials), which keeps SDK refresh logic calm.

use std::fmt;
use std::path::Path;

use crate::identity::aws::{CredentialSource, Credentials};
use crate::identity::source::{NoToken, Unavailable};

/// Keys served as the role's credentials.
pub struct StaticKeys {
    keys: Result<(String, String, String), String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keys {
            Ok((id, _, _)) => write!(f, "StaticKeys({id})"),
            Err(e) => write!(f, "StaticKeys(unavailable: {e})"),
        }
    }
}

impl StaticKeys {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: &str) -> Self {
        StaticKeys {
            keys: Ok((
                access_key_id.to_string(),
                secret_access_key.to_string(),
                session_token.to_string(),
            )),
        }
    }

    /// The keys of `profile` in the shared credentials file at `file`; a file that cannot be
    /// read or lacks the profile gives a source that answers unavailable (and says why once,
    /// in the log).
    pub fn from_profile(file: &Path, profile: &str) -> Self {
        let keys = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|text| {
                profile_keys(&text, profile)
                    .ok_or_else(|| format!("{}: no keys for profile {profile}", file.display()))
            });
        if let Err(e) = &keys {
            tracing::warn!(error = %e, "AWS upstream credentials unavailable");
        }
        StaticKeys { keys }
    }
}

/// `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of `[profile]` in an
/// INI text (the shared credentials file; `[profile NAME]` as in the config file too).
pub fn profile_keys(text: &str, profile: &str) -> Option<(String, String, String)> {
    let mut in_section = false;
    let (mut id, mut secret, mut token) = (None, None, String::new());
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            in_section = name == profile;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

/// Keys are presented as rotating each hour, valid six hours.
const PRESENTED_ROTATION: u64 = 3600;
const PRESENTED_LIFETIME: u64 = 21_600;

impl CredentialSource for StaticKeys {
    fn source_kind(&self) -> &'static str {
        "upstream"
    }
    fn credentials(&self, now: u64) -> Result<Credentials, NoToken> {
        let (id, secret, token) = self.keys.as_ref().map_err(|e| Unavailable(e.clone()))?;
        let last_updated = now - now % PRESENTED_ROTATION;
        Ok(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            token: token.clone(),
            last_updated,
            expiration: last_updated + PRESENTED_LIFETIME,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_ini_text() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n\
                    [profile dev]\n# comment\naws_access_key_id=AKIADEV\naws_secret_access_key=s\n\
                    aws_session_token = tok\n[other]\naws_access_key_id = X\n";
        assert_eq!(
            profile_keys(text, "dev"),
            Some(("AKIADEV".into(), "s".into(), "tok".into()))
        );
        assert_eq!(
            profile_keys(text, "default").map(|k| k.0),
            Some("AKIADEFAULT".into())
        );
        assert_eq!(profile_keys(text, "other"), None, "no secret");
        let missing = StaticKeys::from_profile(Path::new("/nonexistent/credentials"), "x");
        assert!(missing.credentials(0).is_err());
        let c = StaticKeys::new("AKIA", "secret", "")
            .credentials(7200 + 5)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.last_updated, c.expiration), (7200, 7200 + 21_600));
        assert!(!format!("{:?}", StaticKeys::new("AKIA", "secret", "")).contains("secret"));
    }
}
