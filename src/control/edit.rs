//! Live edits: a cloud's user-facing metadata path mapped onto the configuration document, and
//! a value set or deleted there.
//!
//! Contract: pure. [`Target::parse`] maps `(cloud, path)` onto a location in the configuration
//! JSON (the native shape, [`crate::config`]) or says, in one line, what is editable instead;
//! [`Target::apply`] changes a copy of the document; [`Target::get`] reads it. Whether the
//! edited document is a valid configuration is not decided here: the caller loads it exactly
//! as a file ([`crate::config::load_str`]), so an edit gets the same errors, with JSON paths,
//! as the same change made in the file.
//!
//! Paths are the metadata paths a client reads, with or without the service's prefix:
//!
//! | cloud | path | configuration | value |
//! |---|---|---|---|
//! | gce | `instance/attributes/KEY`, `project/attributes/KEY` | `$.gce.instance.attributes.KEY` | text; delete removes |
//! | gce | `instance/tags` | `$.gce.instance.tags` | JSON array of strings, or `a,b,c` |
//! | gce | any value already under `instance/` or `project/` (`instance/hostname`, `instance/maintenance-event`) | the same key | of the same JSON type |
//! | aws | `tags/instance/KEY` | `$.aws.tags.instance.KEY` (and `$.aws.tags.enabled` on: EC2 shows tags only with `InstanceMetadataTags` on) | text; delete removes |
//! | aws | any value already under `meta-data/` (`instance-type`, `placement/availability-zone`) | `$.aws.metaData...` | of the same JSON type |
//! | azure | `compute/tagsList` | `$.azure.instance.compute.tagsList` (and `tags` removed: IMDS derives it) | JSON array of `{"name","value"}` |
//! | azure | `compute/tags` | `$.azure.instance.compute.tags` (and `tagsList` removed) | `name:value;name2:value2` |
//! | azure | any value already under `compute/` or `network/` (`compute/vmSize`, `network/interface/0/macAddress`) | `$.azure.instance...` | of the same JSON type |
//!
//! Only tags and attributes can be deleted. Service accounts, identities, guest attributes (the
//! guest writes those) and everything generated (`iam/`, token endpoints) are not editable.

use serde_json::{Map, Number, Value};

/// A cloud, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Azure,
    Gce,
    Aws,
}

impl std::str::FromStr for Cloud {
    type Err = EditError;

    fn from_str(s: &str) -> Result<Cloud, EditError> {
        match s.to_ascii_lowercase().as_str() {
            "azure" => Ok(Cloud::Azure),
            "gce" | "gcp" | "google" => Ok(Cloud::Gce),
            "aws" | "ec2" => Ok(Cloud::Aws),
            _ => Err(EditError::UnknownCloud(s.to_string())),
        }
    }
}

impl Cloud {
    fn section(self) -> &'static str {
        match self {
            Cloud::Azure => "azure",
            Cloud::Gce => "gce",
            Cloud::Aws => "aws",
        }
    }

    /// What can be edited, for the "not editable" error.
    fn editable(self) -> &'static str {
        match self {
            Cloud::Gce => {
                "instance/attributes/KEY, project/attributes/KEY, instance/tags, or a value \
                 already under instance/ or project/ (e.g. instance/hostname)"
            }
            Cloud::Aws => {
                "tags/instance/KEY, or a value already under meta-data/ (e.g. instance-type)"
            }
            Cloud::Azure => {
                "compute/tagsList, compute/tags, or a value already under compute/ or network/ \
                 (e.g. compute/vmSize)"
            }
        }
    }
}

/// Why an edit cannot be made (before validation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("unknown cloud `{0}` (azure, gce, aws)")]
    UnknownCloud(String),
    #[error("{cloud} {path}: not editable; editable are {editable}", cloud = .cloud.section())]
    NotEditable {
        cloud: Cloud,
        path: String,
        editable: &'static str,
    },
    #[error("{cloud} {path}: cannot be deleted (only tags and attributes can)", cloud = .cloud.section())]
    NotDeletable { cloud: Cloud, path: String },
    #[error("{path}: {expected}")]
    BadValue { path: String, expected: String },
    #[error("{0}: not set")]
    NotSet(String),
    #[error("the configuration is in the Go IMDS simulator's shape; live edits need the native shape (imds-tun default-config shows it)")]
    Shape,
}

/// What kind of place a path names, which decides how a value is read and what else changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A user key whose value is text; may be created and deleted.
    Text,
    /// GCE `instance/tags`: a list of strings.
    StringList,
    /// An AWS instance tag: text, and tags turned on.
    AwsTag,
    /// Azure `tagsList` (the derived `tags` is removed).
    AzureTagsList,
    /// Azure `tags` (the derived `tagsList` is removed).
    AzureTags,
    /// A value that exists already: replaced by one of the same JSON type.
    Existing,
}

/// An edit instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set(String),
    Delete,
}

/// A location in the configuration document, named by a cloud's metadata path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub cloud: Cloud,
    /// The path as the user gave it, normalised (no prefix, no slashes at the ends).
    pub path: String,
    /// Keys (or array indexes) from the document's root.
    keys: Vec<String>,
    kind: Kind,
}

/// A metadata key as GCE accepts it: `[a-zA-Z0-9-_]+`, under 128 bytes.
fn is_metadata_key(k: &str) -> bool {
    (1..128).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn strip_prefixes<'p>(path: &'p str, prefixes: &[&str]) -> &'p str {
    prefixes
        .iter()
        .find_map(|p| path.strip_prefix(p))
        .unwrap_or(path)
}

impl Target {
    /// Maps `path` of `cloud` onto `doc` (the configuration as JSON).
    pub fn parse(cloud: Cloud, path: &str, doc: &Value) -> Result<Target, EditError> {
        if crate::config::gosim::is_gosim(doc) {
            return Err(EditError::Shape);
        }
        let trimmed = path.trim().trim_matches('/');
        let rel = match cloud {
            Cloud::Gce => strip_prefixes(trimmed, &["computeMetadata/v1/"]),
            Cloud::Aws => strip_prefixes(trimmed, &["latest/meta-data/", "meta-data/"]),
            Cloud::Azure => strip_prefixes(trimmed, &["metadata/instance/"]),
        }
        .trim_matches('/');
        let parts: Vec<&str> = rel.split('/').collect();
        let not_editable = || EditError::NotEditable {
            cloud,
            path: rel.to_string(),
            editable: cloud.editable(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(not_editable());
        }
        let owned = |ps: &[&str]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let (keys, kind) = match (cloud, parts.as_slice()) {
            (Cloud::Gce, [tree @ ("instance" | "project"), "attributes", key]) => {
                if !is_metadata_key(key) {
                    return Err(EditError::BadValue {
                        path: rel.to_string(),
                        expected:
                            "an attribute key of letters, digits, '-' or '_' (under 128 bytes)"
                                .into(),
                    });
                }
                (owned(&["gce", tree, "attributes", key]), Kind::Text)
            }
            (Cloud::Gce, ["instance", "tags"]) => {
                (owned(&["gce", "instance", "tags"]), Kind::StringList)
            }
            (Cloud::Gce, ["instance", "service-accounts" | "guest-attributes", ..]) => {
                return Err(not_editable())
            }
            (Cloud::Gce, [tree @ ("instance" | "project"), rest @ ..]) if !rest.is_empty() => {
                let mut keys = owned(&["gce", tree]);
                keys.extend(owned(rest));
                (keys, Kind::Existing)
            }
            (Cloud::Aws, ["tags", "instance", key]) => {
                (owned(&["aws", "tags", "instance", key]), Kind::AwsTag)
            }
            (Cloud::Aws, ["iam" | "tags", ..]) => return Err(not_editable()),
            (Cloud::Aws, rest) => {
                let mut keys = owned(&["aws", "metaData"]);
                keys.extend(owned(rest));
                (keys, Kind::Existing)
            }
            (Cloud::Azure, ["compute", "tagsList"]) => (
                owned(&["azure", "instance", "compute", "tagsList"]),
                Kind::AzureTagsList,
            ),
            (Cloud::Azure, ["compute", "tags"]) => (
                owned(&["azure", "instance", "compute", "tags"]),
                Kind::AzureTags,
            ),
            (Cloud::Azure, [part @ ("compute" | "network"), rest @ ..]) if !rest.is_empty() => {
                let mut keys = owned(&["azure", "instance", part]);
                keys.extend(owned(rest));
                (keys, Kind::Existing)
            }
            _ => return Err(not_editable()),
        };
        if kind == Kind::Existing && !lookup(doc, &keys).is_some_and(is_scalar) {
            return Err(not_editable());
        }
        Ok(Target {
            cloud,
            path: rel.to_string(),
            keys,
            kind,
        })
    }

    /// The configured value (before environment overrides).
    pub fn get(&self, doc: &Value) -> Result<Value, EditError> {
        lookup(doc, &self.keys)
            .cloned()
            .ok_or_else(|| EditError::NotSet(self.path.clone()))
    }

    /// Applies `op` to `doc`.
    pub fn apply(&self, doc: &mut Value, op: &Op) -> Result<(), EditError> {
        let bad = |expected: &str| EditError::BadValue {
            path: self.path.clone(),
            expected: expected.to_string(),
        };
        let value = match op {
            Op::Delete => {
                let deletable = !matches!(self.kind, Kind::Existing);
                if !deletable {
                    return Err(EditError::NotDeletable {
                        cloud: self.cloud,
                        path: self.path.clone(),
                    });
                }
                let removed = remove(doc, &self.keys);
                if self.kind == Kind::AzureTagsList || self.kind == Kind::AzureTags {
                    // Both spell the same tags: deleting one deletes them.
                    let removed_other = remove(doc, &self.sibling("tags", "tagsList"));
                    if removed.is_none() && removed_other.is_none() {
                        return Err(EditError::NotSet(self.path.clone()));
                    }
                    return Ok(());
                }
                return removed
                    .map(|_| ())
                    .ok_or_else(|| EditError::NotSet(self.path.clone()));
            }
            Op::Set(text) => match self.kind {
                Kind::Text | Kind::AwsTag | Kind::AzureTags => Value::String(text.clone()),
                Kind::StringList => match serde_json::from_str::<Value>(text) {
                    Ok(v @ Value::Array(_)) => v,
                    _ => Value::Array(
                        text.split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(|t| Value::String(t.to_string()))
                            .collect(),
                    ),
                },
                Kind::AzureTagsList => match serde_json::from_str::<Value>(text) {
                    Ok(v @ Value::Array(_)) => v,
                    _ => return Err(bad(r#"a JSON array like [{"name":"a","value":"b"}]"#)),
                },
                Kind::Existing => {
                    let old = lookup(doc, &self.keys).cloned().unwrap_or(Value::Null);
                    same_type(&old, text).ok_or_else(|| bad(&format!("a value like {old}")))?
                }
            },
        };
        match self.kind {
            Kind::AwsTag => {
                insert(
                    doc,
                    &owned_keys(&["aws", "tags", "enabled"]),
                    Value::Bool(true),
                )
                .map_err(|_| bad("a place in the configuration"))?;
            }
            Kind::AzureTagsList => {
                remove(doc, &self.sibling("tags", "tagsList"));
            }
            Kind::AzureTags => {
                remove(doc, &self.sibling("tags", "tagsList"));
            }
            _ => {}
        }
        insert(doc, &self.keys, value).map_err(|_| bad("a place in the configuration"))
    }

    /// The keys of the other spelling of Azure's tags.
    fn sibling(&self, tags: &str, list: &str) -> Vec<String> {
        let mut keys = self.keys.clone();
        if let Some(last) = keys.last_mut() {
            *last = if last == tags { list } else { tags }.to_string();
        }
        keys
    }
}

fn owned_keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| k.to_string()).collect()
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// `text` as a value of `old`'s JSON type.
fn same_type(old: &Value, text: &str) -> Option<Value> {
    match old {
        Value::Number(_) => serde_json::from_str::<Number>(text.trim())
            .ok()
            .map(Value::Number),
        Value::Bool(_) => match text.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => Some(Value::String(text.to_string())),
    }
}

fn lookup<'v>(doc: &'v Value, keys: &[String]) -> Option<&'v Value> {
    keys.iter().try_fold(doc, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Sets `keys` to `value`, creating objects on the way; `Err` when the way crosses a value.
fn insert(doc: &mut Value, keys: &[String], value: Value) -> Result<(), ()> {
    let Some((last, way)) = keys.split_last() else {
        return Err(());
    };
    let mut at = doc;
    for k in way {
        at = match at {
            Value::Object(m) => m
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => k
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or(())?,
            _ => return Err(()),
        };
    }
    match at {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or(())?;
            *slot = value;
            Ok(())
        }
        _ => Err(()),
    }
}

fn remove(doc: &mut Value, keys: &[String]) -> Option<Value> {
    let (last, way) = keys.split_last()?;
    let mut at = doc;
    for k in way {
        at = match at {
            Value::Object(m) => m.get_mut(k)?,
            _ => return None,
        };
    }
    match at {
        Value::Object(m) => m.remove(last),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_str(crate::config::DEFAULT_JSON).unwrap_or_default()
    }

    fn edit(cloud: Cloud, path: &str, op: Op) -> Result<Value, EditError> {
        let mut d = doc();
        Target::parse(cloud, path, &d)?.apply(&mut d, &op)?;
        Ok(d)
    }

    #[test]
    fn gce_attributes_tags_and_existing_values() {
        let d = edit(
            Cloud::Gce,
            "instance/attributes/role",
            Op::Set("web".into()),
        );
        assert_eq!(
            d.ok()
                .map(|d| d["gce"]["instance"]["attributes"]["role"].clone()),
            Some("web".into())
        );
        let d = edit(
            Cloud::Gce,
            "/computeMetadata/v1/project/attributes/enable-oslogin",
            Op::Delete,
        )
        .unwrap_or_default();
        assert!(d["gce"]["project"]["attributes"]
            .get("enable-oslogin")
            .is_none());
        let d = edit(Cloud::Gce, "instance/tags", Op::Set("a, b,,c".into())).unwrap_or_default();
        assert_eq!(
            d["gce"]["instance"]["tags"],
            serde_json::json!(["a", "b", "c"])
        );
        let d = edit(Cloud::Gce, "instance/tags", Op::Set(r#"["x"]"#.into())).unwrap_or_default();
        assert_eq!(d["gce"]["instance"]["tags"], serde_json::json!(["x"]));
        let d = edit(Cloud::Gce, "instance/hostname", Op::Set("h.example".into()));
        assert_eq!(
            d.unwrap_or_default()["gce"]["instance"]["hostname"],
            "h.example"
        );
        // The type of an existing value is kept: a number stays a number.
        let d = edit(
            Cloud::Gce,
            "instance/remaining-cpu-time",
            Op::Set("5".into()),
        );
        assert_eq!(
            d.unwrap_or_default()["gce"]["instance"]["remaining-cpu-time"],
            5
        );
        assert!(matches!(
            edit(
                Cloud::Gce,
                "instance/remaining-cpu-time",
                Op::Set("x".into())
            ),
            Err(EditError::BadValue { .. })
        ));
    }

    #[test]
    fn aws_tags_turn_tags_on() {
        let d = edit(Cloud::Aws, "tags/instance/Name", Op::Set("web".into())).unwrap_or_default();
        assert_eq!(d["aws"]["tags"]["instance"]["Name"], "web");
        assert_eq!(d["aws"]["tags"]["enabled"], true);
        let d = edit(
            Cloud::Aws,
            "/latest/meta-data/placement/availability-zone",
            Op::Set("eu-west-1b".into()),
        );
        assert_eq!(
            d.unwrap_or_default()["aws"]["metaData"]["placement"]["availability-zone"],
            "eu-west-1b"
        );
    }

    #[test]
    fn azure_tags_replace_their_other_spelling() {
        let d = edit(
            Cloud::Azure,
            "compute/tagsList",
            Op::Set(r#"[{"name":"a","value":"b"}]"#.into()),
        )
        .unwrap_or_default();
        let compute = &d["azure"]["instance"]["compute"];
        assert_eq!(compute["tagsList"][0]["name"], "a");
        assert!(compute.get("tags").is_none());
        let d = edit(Cloud::Azure, "compute/tags", Op::Set("a:1;b:2".into())).unwrap_or_default();
        let compute = &d["azure"]["instance"]["compute"];
        assert_eq!(compute["tags"], "a:1;b:2");
        assert!(compute.get("tagsList").is_none());
        let d = edit(Cloud::Azure, "compute/tags", Op::Delete).unwrap_or_default();
        let compute = &d["azure"]["instance"]["compute"];
        assert!(compute.get("tags").is_none() && compute.get("tagsList").is_none());
        assert!(matches!(
            edit(Cloud::Azure, "compute/tagsList", Op::Set("a:b".into())),
            Err(EditError::BadValue { .. })
        ));
        let d = edit(
            Cloud::Azure,
            "network/interface/0/macAddress",
            Op::Set("000D3A000000".into()),
        );
        assert_eq!(
            d.unwrap_or_default()["azure"]["instance"]["network"]["interface"][0]["macAddress"],
            "000D3A000000"
        );
    }

    #[test]
    fn what_is_not_editable_says_what_is() {
        for (cloud, path) in [
            (Cloud::Gce, "instance/service-accounts/default/email"),
            (Cloud::Gce, "instance/no-such-key"),
            (Cloud::Gce, "instance/disks"),
            (Cloud::Aws, "iam/info"),
            (Cloud::Azure, "compute"),
            (Cloud::Gce, ""),
        ] {
            let e = edit(cloud, path, Op::Set("x".into()))
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("not editable; editable are")),
                "{path}: {e:?}"
            );
        }
        assert!(matches!(
            edit(Cloud::Gce, "instance/hostname", Op::Delete),
            Err(EditError::NotDeletable { .. })
        ));
        assert!(matches!(
            edit(Cloud::Gce, "instance/attributes/nope", Op::Delete),
            Err(EditError::NotSet(_))
        ));
        assert!(matches!(
            "oracle".parse::<Cloud>(),
            Err(EditError::UnknownCloud(_))
        ));
        let gosim: Value = serde_json::from_str(include_str!("../../fixtures/gosim-example.json"))
            .unwrap_or_default();
        assert_eq!(
            Target::parse(Cloud::Azure, "compute/tags", &gosim),
            Err(EditError::Shape)
        );
    }

    #[test]
    fn get_reads_the_configured_value() {
        let d = doc();
        let t = Target::parse(Cloud::Gce, "instance/attributes/enable-oslogin", &d);
        assert_eq!(t.and_then(|t| t.get(&d)), Ok(Value::String("FALSE".into())));
        let t = Target::parse(Cloud::Gce, "instance/attributes/absent", &d);
        assert_eq!(
            t.and_then(|t| t.get(&d)),
            Err(EditError::NotSet("instance/attributes/absent".into()))
        );
    }
}
