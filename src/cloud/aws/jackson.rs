//! JSON as IMDS prints it: Jackson's default pretty printer.
//!
//! Contract: objects open on their own line with members indented by two spaces and written
//! `"key" : value`; arrays stay on one line as `[ a, b ]` (`[ ]` when empty); no trailing
//! newline. This is the shape of `iam/info`, the credentials document and the identity
//! document on a real instance, e.g.
//!
//! ```text
//! {
//!   "Code" : "Success",
//!   "LastUpdated" : "2022-02-13T13:17:17Z",
//!   ...
//! }
//! ```

use serde_json::Value;

/// Renders `value` the way IMDS does.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{ }"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, depth + 1);
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(" : ");
                write_value(out, v, depth + 1);
            }
            out.push('\n');
            indent(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[ ]"),
        Value::Array(items) => {
            out.push_str("[ ");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, v, depth);
            }
            out.push_str(" ]");
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_imds_layout() {
        let v = json!({"Code": "Success", "n": null, "codes": ["a", "b"], "none": []});
        assert_eq!(
            pretty(&v),
            "{\n  \"Code\" : \"Success\",\n  \"n\" : null,\n  \"codes\" : [ \"a\", \"b\" ],\n  \"none\" : [ ]\n}"
        );
        assert_eq!(pretty(&json!({})), "{ }");
    }
}
