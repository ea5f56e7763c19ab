//! `docs/configuration.md` cannot drift from the configuration schema.
//!
//! The schema is read from the real deserializer, not from a second hand-kept list: every
//! struct of `src/config` is `#[serde(deny_unknown_fields)]`, and serde's error for an unknown
//! key names every field the struct has (`unknown field `zzz`, expected one of `a`, `b``), for
//! an enum every variant, for a typed map the key's path, and for a scalar its type
//! (`invalid type: map, expected u64`). So the test places a probe `{"zzz": 1}` at a path of
//! an otherwise empty configuration, deserializes it as [`imds_tun::config::Config`] (what
//! `imds-tun check` and every load do first), and learns what that path is. Starting at `$`
//! and descending into every struct, enum variant, map value and array element, it discovers
//! the whole schema; the reference must list exactly those paths, each with a type that
//! agrees with the probe. A field added to a struct without a line in the reference, a line
//! for a field that does not exist, or a wrong type fails the test. (No schema-listing code in
//! the crate, and no new dependency: the derive already knows its fields.)
//!
//! Defaults and meanings are prose and are not machine-checked (a default lives in a serde
//! attribute, a `Default` impl or the code that reads an absent value, so there is no one
//! place to read it from); `fixtures/default.json` loads under the same schema, so the
//! embedded default cannot use a field the reference leaves out. The README must link here.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use imds_tun::config::Config;

/// What a path of the schema is, as the deserializer reports it.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A struct with these fields.
    Struct(Vec<String>),
    /// An enum with these variants (unit variants are strings; others are `{variant: ...}`).
    Enum(Vec<String>),
    /// A map with user-chosen keys whose values are typed (documented as `*`).
    Map,
    /// An array (its elements documented as `[]`).
    Array,
    /// A scalar: serde's name for the expected type (`a string`, `u64`, `a boolean`, ...).
    Scalar(String),
    /// Anything is accepted: a free-form JSON document.
    Free,
}

/// One segment of a documented path: a field name, `[]` (an array element) or `*` (a map key).
fn segments(path: &str) -> Vec<String> {
    let rest = path.strip_prefix('$').unwrap_or(path);
    let mut out = Vec::new();
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let mut part = part;
        let mut arrays = 0;
        while let Some(p) = part.strip_suffix("[]") {
            part = p;
            arrays += 1;
        }
        out.push(part.to_string());
        out.extend(std::iter::repeat_n("[]".to_string(), arrays));
    }
    out
}

/// A configuration with `probe` at `path` and nothing else.
fn document(segs: &[String], probe: Value) -> Value {
    segs.iter()
        .rev()
        .fold(probe, |inner, seg| match seg.as_str() {
            "[]" => json!([inner]),
            "*" => json!({ "key": inner }),
            name => json!({ name: inner }),
        })
}

/// serde_path_to_error's rendering of `segs` (`azure.identities[0].token`).
fn serde_path(segs: &[String]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg.as_str() {
            "[]" => out.push_str("[0]"),
            s => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if s == "*" { "key" } else { s });
            }
        }
    }
    if out.is_empty() {
        ".".to_string()
    } else {
        out
    }
}

/// The backquoted names after `expected` in a serde message.
fn names_listed(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once("expected") else {
        return Vec::new();
    };
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// Deserializes `value` as the configuration schema: the error's path and message, if any.
fn deserialize(value: Value) -> Option<(String, String)> {
    serde_path_to_error::deserialize::<_, Config>(value)
        .err()
        .map(|e| (e.path().to_string(), e.into_inner().to_string()))
}

/// What `path` is.
fn probe(segs: &[String]) -> Kind {
    let here = serde_path(segs);
    let Some((at, message)) = deserialize(document(segs, json!({ "zzz": 1 }))) else {
        return Kind::Free;
    };
    let key = if here == "." {
        "zzz".to_string()
    } else {
        format!("{here}.zzz")
    };
    if at == key && message.starts_with("unknown field `zzz`") {
        Kind::Struct(names_listed(&message))
    } else if at == here && message.starts_with("unknown variant `zzz`") {
        Kind::Enum(names_listed(&message))
    } else if at == key {
        Kind::Map
    } else if at == here && message.starts_with("invalid type: map, expected a sequence") {
        Kind::Array
    } else if at == here && message.starts_with("invalid type: map, expected ") {
        let expected = message.trim_start_matches("invalid type: map, expected ");
        Kind::Scalar(expected.to_string())
    } else if here.starts_with(&at) && message.starts_with("missing field") {
        // The probe was accepted; its parent lacks a required field: a free-form value.
        Kind::Free
    } else {
        panic!("probe at {here}: unexpected error at {at}: {message}")
    }
}

/// Whether enum `segs` has a unit variant `v` (a plain string) rather than `{v: ...}`.
fn unit_variant(segs: &[String], v: &str) -> bool {
    match deserialize(document(segs, json!(v))) {
        None => true,
        Some((_, message)) => !message.contains("unit variant"),
    }
}

/// The whole schema: documented path → kind, discovered from `$`.
fn schema() -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(segs) = todo.pop() {
        let kind = probe(&segs);
        let path = format!(
            "${}",
            segs.iter()
                .map(|s| if s == "[]" {
                    "[]".to_string()
                } else {
                    format!(".{s}")
                })
                .collect::<String>()
        );
        match &kind {
            Kind::Struct(fields) => {
                for f in fields {
                    todo.push([segs.clone(), vec![f.clone()]].concat());
                }
            }
            Kind::Enum(variants) => {
                for v in variants {
                    if !unit_variant(&segs, v) {
                        todo.push([segs.clone(), vec![v.clone()]].concat());
                    }
                }
            }
            Kind::Map => todo.push([segs.clone(), vec!["*".to_string()]].concat()),
            Kind::Array => todo.push([segs.clone(), vec!["[]".to_string()]].concat()),
            Kind::Scalar(_) | Kind::Free => {}
        }
        out.insert(path, kind);
    }
    out
}

/// The type the reference must give `path`, from the schema.
fn doc_type(path: &str, schema: &BTreeMap<String, Kind>) -> String {
    let kind = schema
        .get(path)
        .unwrap_or_else(|| panic!("{path} is not in the schema"));
    match kind {
        Kind::Struct(_) => "object".to_string(),
        Kind::Enum(variants) => {
            let segs = segments(path);
            if variants.iter().all(|v| unit_variant(&segs, v)) {
                let quoted: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
                format!("one of {}", quoted.join(", "))
            } else {
                "one key of".to_string()
            }
        }
        Kind::Map => format!("map of {}", doc_type(&format!("{path}.*"), schema)),
        Kind::Array => format!("array of {}", doc_type(&format!("{path}[]"), schema)),
        Kind::Scalar(s) => match s.as_str() {
            "a string" | "path string" => "string",
            "a boolean" => "boolean",
            "u16" | "u32" | "u64" | "usize" | "i64" => "integer",
            "socket address" => "address:port",
            "IP address" => "IP address",
            other => panic!("{path}: no documented type for serde's {other:?}"),
        }
        .to_string(),
        Kind::Free => "JSON object".to_string(),
    }
}

/// The reference's rows: path → type, in the order written.
fn reference() -> Vec<(String, String, usize)> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("| `$"))
        .map(|(i, l)| {
            // Cells hold no `|` (the reference writes alternatives with commas).
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert!(
                cells.len() == 4,
                "docs/configuration.md:{}: a row needs path, type, default, meaning",
                i + 1
            );
            let path = cells[0].trim_matches('`').to_string();
            (path, cells[1].to_string(), i + 1)
        })
        .collect()
}

/// The paths the reference must document: all but the root and the elements of arrays and
/// maps (whose type is part of their container's: "array of string").
fn documented_paths(schema: &BTreeMap<String, Kind>) -> Vec<String> {
    schema
        .keys()
        .filter(|p| *p != "$" && !p.ends_with("[]") && !p.ends_with(".*"))
        .cloned()
        .collect()
}

#[test]
fn the_reference_lists_every_field_of_the_schema_with_its_type() {
    let schema = schema();
    assert!(schema.len() > 150, "schema of {} paths", schema.len());
    let rows = reference();
    let mut seen = std::collections::HashSet::new();
    for (path, ty, line) in &rows {
        assert!(
            seen.insert(path.clone()),
            "docs/configuration.md:{line}: {path} listed twice"
        );
        assert!(
            schema.contains_key(path) && !path.ends_with("[]") && !path.ends_with(".*"),
            "docs/configuration.md:{line}: {path} is not a field of the configuration"
        );
        let want = doc_type(path, &schema);
        assert_eq!(
            ty, &want,
            "docs/configuration.md:{line}: the type of {path}"
        );
    }
    let missing: Vec<String> = documented_paths(&schema)
        .into_iter()
        .filter(|p| !seen.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:#?}"
    );
}

#[test]
fn the_probes_see_a_missing_or_wrong_field() {
    // The rules themselves can fail: the schema knows a field only if serde does, and a type
    // is what serde expects.
    let schema = schema();
    assert_eq!(
        schema.get("$.server"),
        Some(&Kind::Struct(
            [
                "maxHeadBytes",
                "maxHeaders",
                "maxBodyBytes",
                "idleTimeoutSecs",
                "headerTimeoutSecs",
                "maxConnections",
                "maxConnectionsPerSource",
                "maxHalfOpen",
                "maxTimeWait",
                "addresses"
            ]
            .map(String::from)
            .to_vec()
        ))
    );
    assert!(!schema.contains_key("$.server.maxHeader"));
    assert_eq!(doc_type("$.aws.hopLimit", &schema), "integer");
    assert_eq!(
        doc_type("$.aws.imdsv2", &schema),
        "one of `optional`, `required`"
    );
    assert_eq!(doc_type("$.aws.iam.credentials", &schema), "one key of");
    assert_eq!(doc_type("$.gce.serviceAccounts", &schema), "map of object");
    assert_eq!(
        doc_type("$.azure.servicePrincipals", &schema),
        "map of string"
    );
    assert_eq!(doc_type("$.azure.instance.compute", &schema), "JSON object");
    assert_eq!(
        doc_type("$.server.addresses", &schema),
        "array of IP address"
    );
}

#[test]
fn the_readme_links_the_reference() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(readme.contains("](docs/configuration.md)"));
}
