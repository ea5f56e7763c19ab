//! Route filtering [IMDS "Route parameters"]: every node of a JSON document, reachable by
//! appending keys and array indexes to the endpoint's path, rendered once.
//!
//! Contract: [`render`] walks a document and returns, for each node, its path (the endpoint's
//! path plus `/key` or `/index` per step) and a [`Node`] holding the finished answers:
//! - an object or array: its compact JSON (the default and `format=json`) and, for
//!   `format=text`, a listing of its children, one per line, a child that is itself an object
//!   or array marked with a trailing `/` (array children are their indexes);
//! - a leaf: the bare value as `text/plain` (only `format=text` reaches it; [IMDS]: "When
//!   filtering to a leaf node, `format=json` doesn't work").
//!
//! The listing is not described by Microsoft's documentation, which only says filtered
//! endpoints support `format=text`; a key listing is what IMDS is reported to answer for
//! `/metadata/instance?format=text` (`compute/` and `network/`), and it is what the other
//! metadata services do for directories, so it is used here.
//!
//! A key that contains `/` or is empty cannot be reached by a path and gets no route.

use serde_json::Value;

use super::errors::{json, text};
use crate::http::Prebuilt;

/// The rendered answers of one node.
#[derive(Debug)]
pub struct Node {
    /// JSON rendering; `None` for a leaf.
    pub json: Option<Prebuilt>,
    /// The `format=text` rendering: the value of a leaf, the listing of a container.
    pub text: Prebuilt,
}

/// Every node of `doc` under `prefix`, root first.
pub fn render(prefix: &str, doc: &Value) -> Vec<(String, Node)> {
    let mut out = Vec::new();
    walk(prefix.to_string(), doc, &mut out);
    out
}

fn walk(path: String, value: &Value, out: &mut Vec<(String, Node)>) {
    let node = match value {
        Value::Object(_) | Value::Array(_) => Node {
            json: Some(json(200, value.to_string()).prebuild()),
            text: text(200, listing(value)).prebuild(),
        },
        leaf => Node {
            json: None,
            text: text(200, leaf_text(leaf)).prebuild(),
        },
    };
    out.push((path.clone(), node));
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !k.is_empty() && !k.contains('/') {
                    walk(format!("{path}/{k}"), v, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(format!("{path}/{i}"), v, out);
            }
        }
        _ => {}
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

/// The children of a container, one per line, containers marked with `/`.
fn listing(value: &Value) -> String {
    let mark = |v: &Value| if is_container(v) { "/" } else { "" };
    let lines: Vec<String> = match value {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !k.is_empty() && !k.contains('/'))
            .map(|(k, v)| format!("{k}{}", mark(v)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{i}{}", mark(v)))
            .collect(),
        _ => Vec::new(),
    };
    lines.join("\n")
}

/// A primitive as text: strings bare, numbers and booleans as JSON writes them, null empty.
fn leaf_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(p: &Prebuilt) -> String {
        let b = p.bytes();
        let at = b
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(b.len(), |i| i + 4);
        String::from_utf8_lossy(&b[at..]).into_owned()
    }

    #[test]
    fn every_node_gets_a_route_with_json_and_text() {
        let doc = json!({"compute": {"vmId": "v", "tags": []}, "n": [{"a": "1"}, "x"]});
        let nodes = render("/m", &doc);
        let paths: Vec<&str> = nodes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/m",
                "/m/compute",
                "/m/compute/vmId",
                "/m/compute/tags",
                "/m/n",
                "/m/n/0",
                "/m/n/0/a",
                "/m/n/1"
            ]
        );
        let root = &nodes[0].1;
        assert_eq!(body(&root.text), "compute/\nn/");
        assert_eq!(
            root.json.as_ref().map(body).as_deref(),
            Some(r#"{"compute":{"vmId":"v","tags":[]},"n":[{"a":"1"},"x"]}"#)
        );
        assert_eq!(body(&nodes[4].1.text), "0/\n1");
        let leaf = &nodes[2].1;
        assert!(leaf.json.is_none());
        assert_eq!(body(&leaf.text), "v");
        assert!(leaf
            .text
            .bytes()
            .starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain"));
    }

    #[test]
    fn unreachable_keys_get_no_route() {
        let nodes = render("/m", &json!({"a/b": "1", "": "2", "ok": 3}));
        let paths: Vec<&str> = nodes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/m", "/m/ok"]);
        assert_eq!(body(&nodes[0].1.text), "ok");
        assert_eq!(body(&nodes[1].1.text), "3");
    }
}
