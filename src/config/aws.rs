//! `$.aws`: the EC2 instance metadata service (IMDS) part of the configuration.
//!
//! Shape (every field optional; a user's file is the whole truth, so a missing datum is absent
//! from the service, as on an instance that lacks it):
//!
//! ```json
//! "aws": {
//!   "enabled": true,
//!   "httpEndpoint": "enabled",          // "disabled": every IMDS path answers 403
//!   "imdsv2": "optional",               // or "required" (HttpTokens)
//!   "hopLimit": 1,                      // HttpPutResponseHopLimit, 1..64
//!   "metaData": { "ami-id": "...", "placement": { "region": "..." }, ... },
//!   "userData": "#!/bin/sh\n...",
//!   "dynamic": { "instanceIdentity": { "accountId": "...", ... } },
//!   "iam": { "instanceProfileArn": "...", "instanceProfileId": "...", "roleName": "...",
//!            "credentials": { "static": { "accessKeyId": "ASIA...", ... } } },
//!   "tags": { "enabled": false, "instance": { "Name": "..." } }
//! }
//! ```
//!
//! `metaData` is the `meta-data/` tree itself: keys are the real path segments, a string is a
//! leaf, an array of strings is a leaf of one value per line (`security-groups`), an object is
//! a directory. `public-keys` is the one special key: an object from key name to OpenSSH text,
//! served as `public-keys/0=name`. `iam/` and `tags/` are generated from `iam` and `tags`, so
//! they may not appear in `metaData`. The identity document is assembled from `metaData`
//! (instance id, image, type, zone, region, private IP) plus `dynamic.instanceIdentity`, so the
//! two cannot disagree.
//!
//! Defaults, decided: `imdsv2` is `optional` and `hopLimit` 1, the EC2 API's own defaults for
//! an instance launched from an AMI that does not declare `ImdsSupport: v2.0`. They belong
//! together: `required` with a hop limit of 1 leaves containers behind a bridge with no
//! metadata at all, while `optional` lets them fall back to IMDSv1 as on EC2, and keeps older
//! tools working. To reproduce an Amazon Linux 2023 instance set `"required"` and `2`.
//!
//! Credentials come from `iam.credentials`, an object with exactly one source key: `minted`
//! (rotating credentials derived from the key store, the default) or `static`; upstream and
//! command sources can be added as new keys without changing what an existing file means.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{index, join, Problems};
use crate::cloud::aws::timestamp::parse_utc;

/// The most user data EC2 accepts (before base64): 16 KB.
pub const MAX_USER_DATA: usize = 16 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub http_endpoint: HttpEndpoint,
    #[serde(default)]
    pub imdsv2: Imdsv2,
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u32,
    /// The `meta-data/` tree (see the module docs).
    #[serde(default)]
    pub meta_data: Map<String, Value>,
    /// Served as `user-data`; absent → 404 there.
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub dynamic: Option<DynamicConfig>,
    #[serde(default)]
    pub iam: Option<IamConfig>,
    #[serde(default)]
    pub tags: TagsConfig,
    /// ECS container credentials at 169.254.170.2 (the role of `iam`).
    #[serde(default)]
    pub container_credentials: super::doors::ContainerCredentialsConfig,
    /// Spot interruptions, maintenance events and the Auto Scaling lifecycle state at start
    /// ([`super::events`]; run by [`crate::live`]).
    #[serde(default)]
    pub events: super::events::AwsEvents,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            enabled: false,
            http_endpoint: HttpEndpoint::default(),
            imdsv2: Imdsv2::default(),
            hop_limit: default_hop_limit(),
            meta_data: Map::new(),
            user_data: None,
            dynamic: None,
            iam: None,
            tags: TagsConfig::default(),
            container_credentials: Default::default(),
            events: Default::default(),
        }
    }
}

fn default_hop_limit() -> u32 {
    1
}

/// `HttpEndpoint`: whether IMDS answers at all.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpEndpoint {
    #[default]
    Enabled,
    /// Every request gets 403, as the real service does when turned off.
    Disabled,
}

/// `HttpTokens`: whether a session token is required.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Imdsv2 {
    /// Requests without a token are served (IMDSv1); an invalid token still gets 401.
    #[default]
    Optional,
    /// Requests without a valid token get 401.
    Required,
}

/// `dynamic/`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DynamicConfig {
    #[serde(default)]
    pub instance_identity: Option<InstanceIdentityConfig>,
    /// `dynamic/fws/instance-monitoring` (`enabled` or `disabled`); absent → no `fws/`.
    #[serde(default)]
    pub fws_instance_monitoring: Option<String>,
}

/// The fields of `dynamic/instance-identity/document` that are not in `meta-data/`, and the
/// signatures. A signature given here is served verbatim; an absent one is computed with the
/// key store's signing key at load time ([`crate::cloud::aws`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceIdentityConfig {
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub pending_time: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub billing_products: Option<Vec<String>>,
    #[serde(default)]
    pub devpay_product_codes: Option<Vec<String>>,
    #[serde(default)]
    pub marketplace_product_codes: Option<Vec<String>>,
    #[serde(default)]
    pub kernel_id: Option<String>,
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    /// `signature`: base64 RSA-SHA256 of the document.
    #[serde(default)]
    pub signature: Option<String>,
    /// `pkcs7`: PKCS#7, base64 without PEM armour (EC2 signs it with DSA-SHA1; the computed
    /// one is RSA-SHA256, see [`crate::cloud::aws`]).
    #[serde(default)]
    pub pkcs7: Option<String>,
    /// `rsa2048`: RSA-2048 SHA-256 PKCS#7, base64 without PEM armour.
    #[serde(default)]
    pub rsa2048: Option<String>,
}

/// `meta-data/iam/`: the instance profile and its role's credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IamConfig {
    pub instance_profile_arn: String,
    pub instance_profile_id: String,
    pub role_name: String,
    pub credentials: CredentialSource,
}

/// Where the role's credentials come from: one key naming the source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum CredentialSource {
    /// Fixed values, served as they are.
    Static(StaticCredentials),
    /// Rotating credentials derived from the key store ([`crate::identity::aws`]).
    Minted(MintedCredentials),
    /// The user's own keys, given or from a profile ([`super::upstream::AwsUpstream`]).
    Upstream(super::upstream::AwsUpstream),
    /// Credentials printed by a command in the `credential_process` format.
    Command(super::upstream::CommandConfig),
}

/// `credentials.minted`: `{}` for the defaults (new credentials hourly, each valid 6 h).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintedCredentials {
    #[serde(default)]
    pub rotate_every_secs: Option<u64>,
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

impl MintedCredentials {
    pub fn rotate_every(&self) -> u64 {
        self.rotate_every_secs
            .unwrap_or(crate::identity::aws::DEFAULT_ROTATE_EVERY)
    }

    pub fn lifetime(&self) -> u64 {
        self.lifetime_secs
            .unwrap_or(crate::identity::aws::DEFAULT_LIFETIME)
    }
}

/// Credentials given in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// `%Y-%m-%dT%H:%M:%SZ`. SDKs refresh ahead of it; a past value is silently extended by
    /// botocore and the JS SDK, so choose it with care.
    pub expiration: String,
    /// `%Y-%m-%dT%H:%M:%SZ`: `LastUpdated` in `iam/info` and the credentials.
    pub last_updated: String,
}

/// `meta-data/tags/instance/`: off by default, as `InstanceMetadataTags` is on EC2.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub instance: Map<String, Value>,
}

/// Keys of `metaData` generated from other sections.
const GENERATED_KEYS: [(&str, &str); 2] = [("iam", "$.aws.iam"), ("tags", "$.aws.tags")];

impl AwsConfig {
    /// Semantic checks beyond the schema; `at` is this section's JSON path.
    pub fn validate(&self, at: &str, problems: &mut Problems) {
        if !(1..=64).contains(&self.hop_limit) {
            problems.push(join(at, "hopLimit"), "a hop limit from 1 to 64");
        }
        self.events.validate(&join(at, "events"), problems);
        let md = join(at, "metaData");
        validate_tree(&self.meta_data, &md, true, problems);
        validate_known_leaves(&self.meta_data, &md, problems);
        if let Some(ud) = &self.user_data {
            if ud.len() > MAX_USER_DATA {
                problems.push(
                    join(at, "userData"),
                    format!("at most {MAX_USER_DATA} bytes of user data (EC2's limit)"),
                );
            }
        }
        if let Some(d) = &self.dynamic {
            d.validate(&join(at, "dynamic"), problems);
        }
        if let Some(iam) = &self.iam {
            iam.validate(&join(at, "iam"), problems);
            let account = self
                .dynamic
                .as_ref()
                .and_then(|d| d.instance_identity.as_ref())
                .and_then(|i| i.account_id.as_deref());
            if let (Some(account), Some(arn_account)) =
                (account, arn_account(&iam.instance_profile_arn))
            {
                if account != arn_account {
                    problems.push(
                        join(&join(at, "iam"), "instanceProfileArn"),
                        format!(
                            "an ARN in account {account} \
                             ($.aws.dynamic.instanceIdentity.accountId)"
                        ),
                    );
                }
            }
        }
        self.tags.validate(&join(at, "tags"), problems);
        let cc = join(at, "containerCredentials");
        self.container_credentials.validate(&cc, problems);
        if self.container_credentials.enabled && self.iam.is_none() {
            problems.push(
                join(&cc, "enabled"),
                "false, or an instance role in $.aws.iam (container credentials are the role's)",
            );
        }
    }
}

/// Checks the shape of the `meta-data/` tree: strings, arrays of strings and objects only;
/// path-safe keys.
fn validate_tree(map: &Map<String, Value>, at: &str, root: bool, problems: &mut Problems) {
    for (key, value) in map {
        let path = join(at, key);
        if key.is_empty() || key == "." || key == ".." || key.contains(['/', '\n', '=']) {
            problems.push(
                path.clone(),
                "a path segment (not empty, `.` or `..`; no `/`, `=` or newline)",
            );
        }
        if root {
            if let Some((_, instead)) = GENERATED_KEYS.iter().find(|(k, _)| k == key) {
                problems.push(path, format!("nothing: {key}/ is generated from {instead}"));
                continue;
            }
            if key == "public-keys" {
                validate_public_keys(value, &path, problems);
                continue;
            }
        }
        match value {
            Value::String(_) => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        problems.push(index(&path, i), "a string (one line of the value)");
                    }
                }
            }
            Value::Object(children) => validate_tree(children, &path, false, problems),
            _ => problems.push(
                path,
                "a string (leaf), an array of strings (one per line) or an object (directory)",
            ),
        }
    }
}

fn validate_public_keys(value: &Value, at: &str, problems: &mut Problems) {
    let Value::Object(keys) = value else {
        problems.push(at, "an object from key-pair name to OpenSSH public key");
        return;
    };
    for (name, key) in keys {
        let path = join(at, name);
        if name.is_empty() || name.contains(['\n', '/']) {
            problems.push(
                path.clone(),
                "a key-pair name (not empty; no `/` or newline)",
            );
        }
        match key.as_str() {
            Some(k) if !k.trim().is_empty() => {}
            _ => problems.push(
                path,
                "an OpenSSH public key (e.g. `ssh-ed25519 AAAA... name`)",
            ),
        }
    }
}

fn leaf<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Formats and cross-checks of the leaves whose meaning is known.
fn validate_known_leaves(md: &Map<String, Value>, at: &str, problems: &mut Problems) {
    if let Some(id) = leaf(md, "instance-id") {
        if !is_resource_id(id, "i-") {
            problems.push(
                join(at, "instance-id"),
                "an instance id: i- and 8 or 17 hex digits",
            );
        }
    }
    if let Some(id) = leaf(md, "ami-id") {
        if !is_resource_id(id, "ami-") {
            problems.push(
                join(at, "ami-id"),
                "an image id: ami- and 8 or 17 hex digits",
            );
        }
    }
    for key in ["local-ipv4", "public-ipv4"] {
        if let Some(ip) = leaf(md, key) {
            if ip.parse::<std::net::Ipv4Addr>().is_err() {
                problems.push(join(at, key), "an IPv4 address");
            }
        }
    }
    if let Some(Value::Object(placement)) = md.get("placement") {
        let p = join(at, "placement");
        if let (Some(zone), Some(region)) = (
            leaf(placement, "availability-zone"),
            leaf(placement, "region"),
        ) {
            let zone_ok = zone.len() > region.len()
                && zone.starts_with(region)
                && zone.ends_with(|c: char| c.is_ascii_lowercase());
            if !zone_ok {
                problems.push(
                    join(&p, "availability-zone"),
                    format!("a zone of region {region} ({region} and a letter, e.g. {region}a)"),
                );
            }
        }
    }
    let macs = match md.get("network") {
        Some(Value::Object(n)) => match n.get("interfaces") {
            Some(Value::Object(i)) => match i.get("macs") {
                Some(Value::Object(m)) => Some(m),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let macs_at = join(&join(&join(at, "network"), "interfaces"), "macs");
    if let Some(macs) = macs {
        for (mac, iface) in macs {
            let path = join(&macs_at, mac);
            if !is_mac(mac) {
                problems.push(path.clone(), "a MAC address key: six lowercase hex pairs");
            }
            if let Value::Object(iface) = iface {
                if let Some(inner) = leaf(iface, "mac") {
                    if inner != mac {
                        problems.push(join(&path, "mac"), format!("{mac}, the interface's key"));
                    }
                }
            }
        }
    }
    if let Some(mac) = leaf(md, "mac") {
        if !is_mac(mac) {
            problems.push(join(at, "mac"), "a MAC address: six lowercase hex pairs");
        } else if macs.is_some_and(|m| !m.contains_key(mac)) {
            problems.push(
                join(at, "mac"),
                format!("the MAC of an interface in {macs_at}"),
            );
        }
    }
}

/// `prefix` followed by 8 or 17 lowercase hex digits (EC2's short and long id formats).
fn is_resource_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `0a:1b:2c:3d:4e:5f`, lowercase, as IMDS prints MACs.
pub fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_digit() || (b'a'..=b'f').contains(c)
            }
        })
}

/// The account of `arn:aws:iam::123456789012:instance-profile/name`.
pub fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_lit, _partition, service, region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let resource = parts.next()?;
    (arn_lit == "arn"
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("instance-profile/")
        && resource.len() > "instance-profile/".len())
    .then_some(account)
}

impl DynamicConfig {
    fn validate(&self, at: &str, problems: &mut Problems) {
        if let Some(m) = &self.fws_instance_monitoring {
            if m != "enabled" && m != "disabled" {
                problems.push(join(at, "fwsInstanceMonitoring"), "`enabled` or `disabled`");
            }
        }
        let Some(ii) = &self.instance_identity else {
            return;
        };
        let at = join(at, "instanceIdentity");
        if let Some(a) = &ii.account_id {
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(join(&at, "accountId"), "a 12-digit AWS account id");
            }
        }
        if let Some(a) = &ii.architecture {
            if !["x86_64", "arm64", "i386", "x86_64_mac", "arm64_mac"].contains(&a.as_str()) {
                problems.push(
                    join(&at, "architecture"),
                    "x86_64, arm64, i386, x86_64_mac or arm64_mac",
                );
            }
        }
        if let Some(t) = &ii.pending_time {
            if parse_utc(t).is_none() {
                problems.push(join(&at, "pendingTime"), "a time as YYYY-MM-DDTHH:MM:SSZ");
            }
        }
    }
}

impl IamConfig {
    fn validate(&self, at: &str, problems: &mut Problems) {
        if arn_account(&self.instance_profile_arn).is_none() {
            problems.push(
                join(at, "instanceProfileArn"),
                "arn:aws:iam::<12-digit account>:instance-profile/<name>",
            );
        }
        let id = &self.instance_profile_id;
        if !(id.starts_with("AIPA")
            && id.len() == 21
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            problems.push(
                join(at, "instanceProfileId"),
                "an instance profile id: AIPA and 17 uppercase letters or digits",
            );
        }
        let role = &self.role_name;
        if role.is_empty()
            || role.len() > 64
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            problems.push(
                join(at, "roleName"),
                "an IAM role name: 1 to 64 of letters, digits and +=,.@_-",
            );
        }
        let c = match &self.credentials {
            CredentialSource::Static(c) => c,
            CredentialSource::Upstream(u) => {
                return u.validate(&join(&join(at, "credentials"), "upstream"), problems)
            }
            CredentialSource::Command(c) => {
                return c.validate(&join(&join(at, "credentials"), "command"), problems)
            }
            CredentialSource::Minted(m) => {
                let at = join(&join(at, "credentials"), "minted");
                let (rotate, lifetime) = (m.rotate_every(), m.lifetime());
                if !(60..=43_200).contains(&rotate) {
                    problems.push(
                        join(&at, "rotateEverySecs"),
                        "a number of seconds from 60 to 43200",
                    );
                }
                // spec/aws.md: new credentials appear at least 5 minutes before the old
                // expire; EC2 role credentials last at most 12 hours.
                if lifetime < rotate.saturating_add(crate::identity::aws::MIN_OVERLAP)
                    || lifetime > 43_200
                {
                    problems.push(
                        join(&at, "lifetimeSecs"),
                        "a number of seconds of at least rotateEverySecs + 300 and at most 43200",
                    );
                }
                return;
            }
        };
        let at = join(&join(at, "credentials"), "static");
        let key = &c.access_key_id;
        if !((key.starts_with("ASIA") || key.starts_with("AKIA"))
            && key.len() == 20
            && key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            problems.push(
                join(&at, "accessKeyId"),
                "an access key id: ASIA (temporary, as IMDS serves) or AKIA and 16 uppercase \
                 letters or digits",
            );
        }
        if c.secret_access_key.is_empty() {
            problems.push(
                join(&at, "secretAccessKey"),
                "a secret access key (not empty)",
            );
        }
        if c.token.is_empty() {
            problems.push(
                join(&at, "token"),
                "a session token (not empty: SDKs need all four fields)",
            );
        }
        for (key, value) in [
            ("expiration", &c.expiration),
            ("lastUpdated", &c.last_updated),
        ] {
            if parse_utc(value).is_none() {
                problems.push(join(&at, key), "a time as YYYY-MM-DDTHH:MM:SSZ");
            }
        }
        if let (Some(updated), Some(expires)) =
            (parse_utc(&c.last_updated), parse_utc(&c.expiration))
        {
            if expires <= updated {
                problems.push(join(&at, "expiration"), "a time after lastUpdated");
            }
        }
    }
}

/// Whether `key` may be exposed in instance metadata: letters, digits and `+-=._:@`, 1 to
/// 128 characters, and not `.`, `..` or `_index` (EC2 refuses to enable metadata tags
/// otherwise).
pub fn is_metadata_tag_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key != "."
        && key != ".."
        && key != "_index"
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-=.,_:@".contains(&b))
}

impl TagsConfig {
    fn validate(&self, at: &str, problems: &mut Problems) {
        let at = join(at, "instance");
        for (key, value) in &self.instance {
            let path = join(&at, key);
            if !is_metadata_tag_key(key) {
                problems.push(
                    path.clone(),
                    "a tag key of 1 to 128 letters, digits and +-=.,_:@ (not ., .. or _index)",
                );
            }
            match value.as_str() {
                Some(v) if v.chars().count() <= 256 => {}
                _ => problems.push(path, "a tag value: a string of at most 256 characters"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn errors(aws: &str) -> Vec<(String, String)> {
        let text = format!(r#"{{"aws": {aws}}}"#);
        match load_str(&text, "x.json", &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.expected)).collect(),
        }
    }

    fn paths(aws: &str) -> Vec<String> {
        errors(aws).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn default_section_is_valid() {
        let c = crate::config::default_config(&|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.aws.enabled);
        assert_eq!(c.aws.imdsv2, Imdsv2::Optional);
        assert_eq!(c.aws.hop_limit, 1);
    }

    #[test]
    fn empty_section_takes_documented_defaults() {
        assert!(paths(r#"{"enabled": true}"#).is_empty());
        let c = load_str(r#"{"aws": {}}"#, "x", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.aws.imdsv2, c.aws.hop_limit, c.aws.http_endpoint),
            (Imdsv2::Optional, 1, HttpEndpoint::Enabled)
        );
    }

    #[test]
    fn minted_credentials_overlap_by_five_minutes() {
        let iam = |minted: &str| {
            format!(
                r#"{{"iam": {{"instanceProfileArn": "arn:aws:iam::123456789012:instance-profile/p",
                "instanceProfileId": "AIPAQ3IMDSTUNEXAMPLE7", "roleName": "r",
                "credentials": {{"minted": {minted}}}}}}}"#
            )
        };
        assert!(paths(&iam("{}")).is_empty());
        assert!(paths(&iam(r#"{"rotateEverySecs": 600, "lifetimeSecs": 900}"#)).is_empty());
        assert_eq!(
            paths(&iam(r#"{"rotateEverySecs": 600, "lifetimeSecs": 899}"#)),
            ["$.aws.iam.credentials.minted.lifetimeSecs"]
        );
        assert_eq!(
            paths(&iam(r#"{"rotateEverySecs": 0}"#)),
            ["$.aws.iam.credentials.minted.rotateEverySecs"]
        );
    }

    #[test]
    fn hop_limit_range() {
        assert_eq!(paths(r#"{"hopLimit": 0}"#), ["$.aws.hopLimit"]);
        assert_eq!(paths(r#"{"hopLimit": 65}"#), ["$.aws.hopLimit"]);
        assert!(paths(r#"{"hopLimit": 64}"#).is_empty());
    }

    #[test]
    fn schema_errors_name_the_path() {
        let e = errors(r#"{"imdsv2": "sometimes"}"#);
        assert_eq!(e[0].0, "$.aws.imdsv2");
        let e = errors(r#"{"iam": {"credentials": {"upstream": {}}}}"#);
        assert_eq!(e.len(), 1);
        assert!(e[0].0.starts_with("$.aws.iam"), "{e:?}");
        let e = errors(r#"{"metaDta": {}}"#);
        assert!(e[0].1.contains("unknown field `metaDta`"), "{e:?}");
    }

    #[test]
    fn tree_shape_is_checked() {
        assert_eq!(
            paths(r#"{"metaData": {"a": 1, "b": ["x", 2], "c": {"d/e": "x"}, "..": "x"}}"#),
            [
                "$.aws.metaData.a",
                "$.aws.metaData.b[1]",
                "$.aws.metaData.c[\"d/e\"]",
                "$.aws.metaData[\"..\"]"
            ]
        );
        assert_eq!(
            paths(r#"{"metaData": {"iam": {"info": "x"}, "tags": "x"}}"#),
            ["$.aws.metaData.iam", "$.aws.metaData.tags"]
        );
        assert_eq!(
            paths(r#"{"metaData": {"public-keys": {"k": "", "ok": "ssh-ed25519 AAAA k"}}}"#),
            ["$.aws.metaData[\"public-keys\"].k"]
        );
    }

    #[test]
    fn known_leaves_are_checked() {
        let p = paths(
            r#"{"metaData": {"instance-id": "i-123", "ami-id": "ami-0123456789abcdef0",
                "local-ipv4": "10.0.0.300",
                "placement": {"availability-zone": "us-east-1a", "region": "eu-west-1"}}}"#,
        );
        assert_eq!(
            p,
            [
                "$.aws.metaData[\"instance-id\"]",
                "$.aws.metaData[\"local-ipv4\"]",
                "$.aws.metaData.placement[\"availability-zone\"]"
            ]
        );
    }

    #[test]
    fn macs_must_agree() {
        let p = paths(
            r#"{"metaData": {"mac": "0a:00:00:00:00:02",
                "network": {"interfaces": {"macs": {
                    "0a:00:00:00:00:01": {"mac": "0a:00:00:00:00:03"},
                    "0A-00": {}}}}}}"#,
        );
        assert_eq!(
            p,
            [
                "$.aws.metaData.network.interfaces.macs[\"0a:00:00:00:00:01\"].mac",
                "$.aws.metaData.network.interfaces.macs[\"0A-00\"]",
                "$.aws.metaData.mac"
            ]
        );
    }

    #[test]
    fn user_data_limit() {
        let big = "x".repeat(MAX_USER_DATA + 1);
        assert_eq!(
            paths(&format!(r#"{{"userData": "{big}"}}"#)),
            ["$.aws.userData"]
        );
        let ok = "x".repeat(MAX_USER_DATA);
        assert!(paths(&format!(r#"{{"userData": "{ok}"}}"#)).is_empty());
    }

    #[test]
    fn iam_fields_are_checked() {
        let p = paths(
            r#"{"dynamic": {"instanceIdentity": {"accountId": "111111111111"}},
                "iam": {"instanceProfileArn": "arn:aws:iam::222222222222:instance-profile/p",
                "instanceProfileId": "AIPA", "roleName": "a b",
                "credentials": {"static": {"accessKeyId": "AKID", "secretAccessKey": "",
                "token": "", "expiration": "2026-01-01T00:00:00Z",
                "lastUpdated": "2026-01-02T00:00:00Z"}}}}"#,
        );
        assert_eq!(
            p,
            [
                "$.aws.iam.instanceProfileId",
                "$.aws.iam.roleName",
                "$.aws.iam.credentials.static.accessKeyId",
                "$.aws.iam.credentials.static.secretAccessKey",
                "$.aws.iam.credentials.static.token",
                "$.aws.iam.credentials.static.expiration",
                "$.aws.iam.instanceProfileArn"
            ]
        );
    }

    #[test]
    fn identity_fields_are_checked() {
        let p = paths(
            r#"{"dynamic": {"fwsInstanceMonitoring": "on", "instanceIdentity": {
                "accountId": "12", "architecture": "sparc", "pendingTime": "yesterday"}}}"#,
        );
        assert_eq!(
            p,
            [
                "$.aws.dynamic.fwsInstanceMonitoring",
                "$.aws.dynamic.instanceIdentity.accountId",
                "$.aws.dynamic.instanceIdentity.architecture",
                "$.aws.dynamic.instanceIdentity.pendingTime"
            ]
        );
    }

    #[test]
    fn tag_keys_use_the_metadata_charset() {
        let p = paths(
            r#"{"tags": {"enabled": true, "instance": {"Name": "web", "has space": "x",
                "a/b": "x", "_index": "x", "ok+-=.,_:@": "x", "n": 5}}}"#,
        );
        assert_eq!(
            p,
            [
                "$.aws.tags.instance[\"has space\"]",
                "$.aws.tags.instance[\"a/b\"]",
                "$.aws.tags.instance._index",
                "$.aws.tags.instance.n"
            ]
        );
    }
}
