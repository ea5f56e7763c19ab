//! The control protocol: one JSON object per line each way, one request and one response per
//! connection.
//!
//! Contract: pure types. A [`Request`] is tagged by `command`
//! (`{"command":"set","cloud":"gce","path":"instance/attributes/role","value":"web"}`); a
//! [`Response`] is `{"ok":true,"result":...}` or `{"ok":false,"error":"one line","problems":[...]}`
//! where `problems` lists configuration errors (file, JSON path, expected) when an edit or a
//! reload did not validate. Requests larger than [`MAX_REQUEST`] are refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::edit::Cloud;
use crate::config::ConfigErrors;

/// The longest request line accepted.
pub const MAX_REQUEST: usize = 1024 * 1024;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The configured value at a metadata path.
    Get { cloud: Cloud, path: String },
    /// Sets the value at a metadata path; `persist` writes the file too.
    Set {
        cloud: Cloud,
        path: String,
        value: String,
        #[serde(default)]
        persist: bool,
    },
    /// Removes a tag or an attribute.
    Delete {
        cloud: Cloud,
        path: String,
        #[serde(default)]
        persist: bool,
    },
    /// Schedules, lists or cancels a live event: `args` are the words after `event` on the
    /// command line (`["aws", "--spot", "terminate", "--in", "2m"]`), as
    /// [`crate::live::command`] reads them.
    Event { args: Vec<String> },
    /// Adds, lists or clears injected faults: the words after `fault`.
    Fault { args: Vec<String> },
    /// Re-reads the configuration file (as SIGHUP).
    Reload {},
    /// Uptime and counters.
    Status {},
}

/// One configuration problem, as [`crate::config::ConfigError`] says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub file: String,
    pub path: String,
    pub expected: String,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl Response {
    pub fn ok(result: Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
            problems: Vec::new(),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
            problems: Vec::new(),
        }
    }

    /// A configuration that did not validate: every problem, and a one-line summary.
    pub fn invalid(what: &str, errors: &ConfigErrors) -> Response {
        let problems: Vec<Problem> = errors
            .0
            .iter()
            .map(|e| Problem {
                file: e.file.clone(),
                path: e.path.clone(),
                expected: e.expected.clone(),
            })
            .collect();
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.path, e.expected))
            .collect();
        Response {
            ok: false,
            result: None,
            error: Some(format!("{what}: nothing changed: {}", lines.join("; "))),
            problems,
        }
    }
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn requests_round_trip_and_reject_unknowns() {
        let r = parse_request(
            r#"{"command":"set","cloud":"gce","path":"instance/attributes/role","value":"web"}"#,
        );
        assert_eq!(
            r,
            Ok(Request::Set {
                cloud: Cloud::Gce,
                path: "instance/attributes/role".into(),
                value: "web".into(),
                persist: false
            })
        );
        let r = r.unwrap_or(Request::Status {});
        let again = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(parse_request(&again), Ok(r));
        assert_eq!(
            parse_request(r#"{"command":"status"}"#),
            Ok(Request::Status {})
        );
        assert_eq!(
            parse_request(r#"{"command":"event","args":["cancel","spot"]}"#),
            Ok(Request::Event {
                args: vec!["cancel".into(), "spot".into()]
            })
        );
        for bad in [
            r#"{"command":"explode"}"#,
            r#"{"command":"get","cloud":"oracle","path":"x"}"#,
            r#"{"command":"reload","extra":1}"#,
            r#"{"command":"fault","args":"list"}"#,
            "not json",
        ] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_lists_every_problem_in_one_line_too() {
        let errors = ConfigErrors(vec![
            ConfigError {
                file: "c.json".into(),
                path: "$.gce.instance.zone".into(),
                expected: "a zone".into(),
            },
            ConfigError {
                file: "c.json".into(),
                path: "$.gce.instance.id".into(),
                expected: "digits".into(),
            },
        ]);
        let r = Response::invalid("set", &errors);
        assert!(!r.ok);
        assert_eq!(r.problems.len(), 2);
        assert_eq!(
            r.error.as_deref(),
            Some("set: nothing changed: $.gce.instance.zone: a zone; $.gce.instance.id: digits")
        );
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert!(!text.contains('\n'));
    }
}
