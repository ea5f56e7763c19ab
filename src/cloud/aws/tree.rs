//! The IMDS path tree under a version (`/latest/...`), built from the configuration and
//! rendered into one pre-serialised answer per path.
//!
//! Contract: [`render`] returns a map from the path below the version, without leading or
//! trailing `/` (`""`, `meta-data`, `meta-data/placement/region`), to its complete answer.
//! A directory answers with its listing, a leaf with its value, both with or without a
//! trailing slash (the router strips one): botocore asks for `placement/availability-zone/`
//! and EC2 answers it with the value.
//!
//! Listings (EC2 user guide, "Responses and error messages"): one entry per line, LF,
//! subdirectories end in `/`, no trailing newline. Entries are sorted by name, as EC2 lists
//! them, except where EC2 uses a fixed order (`dynamic/instance-identity/` is
//! `document rsa2048 pkcs7 signature`; the version root is `dynamic meta-data user-data`).
//! Leaves are served as given, without a trailing newline.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::answers::{ok, OCTETS, TEXT};
use super::credentials;
use super::jackson::pretty;
use super::signatures;
use super::timestamp::{http_date, parse_utc};
use crate::config::aws::{AwsConfig, CredentialSource, IamConfig, InstanceIdentityConfig};
use crate::http::Prebuilt;
use crate::identity::IdentityKeys;

/// One node of the tree.
enum Node {
    Leaf {
        body: Vec<u8>,
        content_type: &'static str,
        /// `Last-Modified` value, already formatted.
        modified: Option<String>,
    },
    Dir {
        children: Vec<(String, Node)>,
        /// The listing text when it is not the plain list of children (`public-keys/`).
        listing: Option<String>,
    },
    /// A leaf answered per request (minted credentials): listed, but not rendered here.
    Dynamic,
}

impl Node {
    fn text(body: impl Into<Vec<u8>>, modified: &Option<String>) -> Node {
        Node::Leaf {
            body: body.into(),
            content_type: TEXT,
            modified: modified.clone(),
        }
    }

    fn dir(children: Vec<(String, Node)>) -> Node {
        Node::Dir {
            children,
            listing: None,
        }
    }

    fn sorted_dir(mut children: Vec<(String, Node)>) -> Node {
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Node::dir(children)
    }
}

/// Renders every path of `config` below a version; `keys` sign the identity document.
pub fn render(config: &AwsConfig, keys: &IdentityKeys) -> HashMap<Box<str>, Prebuilt> {
    let booted = config
        .dynamic
        .as_ref()
        .and_then(|d| d.instance_identity.as_ref())
        .and_then(|i| i.pending_time.as_deref())
        .and_then(parse_utc)
        .map(http_date);
    let mut version = Vec::new();
    if let Some(dynamic) = dynamic_tree(config, keys, &booted) {
        version.push(("dynamic".to_string(), dynamic));
    }
    version.push(("meta-data".to_string(), meta_data(config, &booted)));
    if let Some(ud) = &config.user_data {
        version.push((
            "user-data".to_string(),
            Node::Leaf {
                body: ud.as_bytes().to_vec(),
                content_type: OCTETS,
                modified: booted.clone(),
            },
        ));
    }
    // The version root lists its entries without the directory slash (EC2 prints
    // `dynamic\nmeta-data\nuser-data`).
    let listing = version
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let root = Node::Dir {
        children: version,
        listing: Some(listing),
    };
    let mut routes = HashMap::new();
    emit(&mut routes, "", &root, &booted);
    routes
}

fn emit(
    routes: &mut HashMap<Box<str>, Prebuilt>,
    path: &str,
    node: &Node,
    booted: &Option<String>,
) {
    let answer = match node {
        Node::Dynamic => return,
        Node::Leaf {
            body,
            content_type,
            modified,
        } => ok(content_type, modified.as_deref(), body.clone()),
        Node::Dir { children, listing } => {
            let text = match listing {
                Some(l) => l.clone(),
                None => children
                    .iter()
                    .map(|(name, child)| match child {
                        Node::Dir { .. } => format!("{name}/"),
                        Node::Leaf { .. } | Node::Dynamic => name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            ok(TEXT, booted.as_deref(), text)
        }
    };
    routes.insert(path.into(), answer.prebuild());
    if let Node::Dir { children, .. } = node {
        for (name, child) in children {
            let sub = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            emit(routes, &sub, child, booted);
        }
    }
}

/// `meta-data/`: the configured tree plus the generated `iam/`, `public-keys/` and `tags/`.
fn meta_data(config: &AwsConfig, booted: &Option<String>) -> Node {
    let mut children = Vec::new();
    for (key, value) in &config.meta_data {
        let node = if key == "public-keys" {
            public_keys(value, booted)
        } else {
            from_value(value, booted)
        };
        children.push((key.clone(), node));
    }
    if let Some(iam) = &config.iam {
        children.push(("iam".to_string(), iam_tree(iam)));
    }
    if config.tags.enabled {
        let tags = config
            .tags
            .instance
            .iter()
            .map(|(k, v)| (k.clone(), Node::text(v.as_str().unwrap_or(""), booted)))
            .collect();
        children.push((
            "tags".to_string(),
            Node::dir(vec![("instance".to_string(), Node::dir(tags))]),
        ));
    }
    Node::sorted_dir(children)
}

/// A configured value: string → leaf, array → one line per item, object → sorted directory.
fn from_value(value: &Value, booted: &Option<String>) -> Node {
    match value {
        Value::Object(map) => Node::sorted_dir(
            map.iter()
                .map(|(k, v)| (k.clone(), from_value(v, booted)))
                .collect(),
        ),
        Value::Array(items) => Node::text(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            booted,
        ),
        Value::String(s) => Node::text(s.as_str(), booted),
        // Validation admits nothing else.
        other => Node::text(other.to_string(), booted),
    }
}

/// `public-keys/` lists `0=name`; `public-keys/0/` lists `openssh-key`.
fn public_keys(value: &Value, booted: &Option<String>) -> Node {
    let empty = Map::new();
    let keys = value.as_object().unwrap_or(&empty);
    let listing = keys
        .keys()
        .enumerate()
        .map(|(i, name)| format!("{i}={name}"))
        .collect::<Vec<_>>()
        .join("\n");
    let children = keys
        .values()
        .enumerate()
        .map(|(i, key)| {
            let key = Node::text(key.as_str().unwrap_or(""), booted);
            (
                i.to_string(),
                Node::dir(vec![("openssh-key".to_string(), key)]),
            )
        })
        .collect();
    Node::Dir {
        children,
        listing: Some(listing),
    }
}

/// `iam/info` and `iam/security-credentials/<role>`: rendered here, last modified when the
/// credentials were, for static credentials; listed only, for minted ones
/// ([`super::credentials::MintedIam`] answers them).
fn iam_tree(iam: &IamConfig) -> Node {
    let (info, role) = match &iam.credentials {
        CredentialSource::Static(c) => {
            let modified = parse_utc(&c.last_updated).map(http_date);
            let info = credentials::info(iam, &c.last_updated);
            let creds = credentials::credentials(
                &c.last_updated,
                &c.access_key_id,
                &c.secret_access_key,
                &c.token,
                &c.expiration,
            );
            (Node::text(info, &modified), Node::text(creds, &modified))
        }
        _ => (Node::Dynamic, Node::Dynamic),
    };
    Node::dir(vec![
        ("info".to_string(), info),
        (
            "security-credentials".to_string(),
            Node::dir(vec![(iam.role_name.clone(), role)]),
        ),
    ])
}

/// `dynamic/`: the identity document and its signatures, and `fws/` when configured.
fn dynamic_tree(config: &AwsConfig, keys: &IdentityKeys, booted: &Option<String>) -> Option<Node> {
    let dynamic = config.dynamic.as_ref()?;
    let mut children = Vec::new();
    if let Some(m) = &dynamic.fws_instance_monitoring {
        children.push((
            "fws".to_string(),
            Node::dir(vec![(
                "instance-monitoring".to_string(),
                Node::text(m.as_str(), booted),
            )]),
        ));
    }
    if let Some(ii) = &dynamic.instance_identity {
        let document = pretty(&identity_document(config, ii));
        let signed = signatures::sign(keys, document.as_bytes());
        let mut docs = vec![("document".to_string(), Node::text(document, booted))];
        for (name, configured, computed) in [
            ("rsa2048", &ii.rsa2048, signed.as_ref().map(|s| &s.rsa2048)),
            ("pkcs7", &ii.pkcs7, signed.as_ref().map(|s| &s.pkcs7)),
            (
                "signature",
                &ii.signature,
                signed.as_ref().map(|s| &s.signature),
            ),
        ] {
            if let Some(sig) = configured.as_ref().or(computed) {
                docs.push((name.to_string(), Node::text(sig.as_str(), booted)));
            }
        }
        children.push(("instance-identity".to_string(), Node::dir(docs)));
    }
    Some(Node::sorted_dir(children))
}

/// The document, in the field order EC2 prints today. Fields that live in `meta-data/` are
/// taken from there, so the two always agree; a missing one is `null`.
pub fn identity_document(config: &AwsConfig, ii: &InstanceIdentityConfig) -> Value {
    let md = &config.meta_data;
    let meta = |key: &str| -> Value {
        md.get(key)
            .and_then(Value::as_str)
            .map_or(Value::Null, Value::from)
    };
    let placement = |key: &str| -> Value {
        md.get("placement")
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map_or(Value::Null, Value::from)
    };
    let opt = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
    let list = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map_or(Value::Null, |items| Value::from(items.clone()))
    };
    let mut doc = Map::new();
    doc.insert("accountId".into(), opt(&ii.account_id));
    doc.insert("architecture".into(), opt(&ii.architecture));
    doc.insert("availabilityZone".into(), placement("availability-zone"));
    doc.insert("billingProducts".into(), list(&ii.billing_products));
    doc.insert("devpayProductCodes".into(), list(&ii.devpay_product_codes));
    doc.insert(
        "marketplaceProductCodes".into(),
        list(&ii.marketplace_product_codes),
    );
    doc.insert("imageId".into(), meta("ami-id"));
    doc.insert("instanceId".into(), meta("instance-id"));
    doc.insert("instanceType".into(), meta("instance-type"));
    doc.insert("kernelId".into(), opt(&ii.kernel_id));
    doc.insert("pendingTime".into(), opt(&ii.pending_time));
    doc.insert("privateIp".into(), meta("local-ipv4"));
    doc.insert("ramdiskId".into(), opt(&ii.ramdisk_id));
    doc.insert("region".into(), placement("region"));
    doc.insert("version".into(), opt(&ii.version));
    Value::Object(doc)
}
