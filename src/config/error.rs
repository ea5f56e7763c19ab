//! Configuration errors that say where and what: the file, the JSON path, what was expected.
//!
//! Contract: validation never stops at the first problem; it collects every one into
//! [`Problems`] so a user fixes a file in one round. Paths use JSONPath-like notation rooted at
//! `$` (`$.azure.instance.compute.vmId`, `$.gce.instance.tags[2]`).

use std::fmt;

/// One problem in one configuration source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<default>`, `<environment>`) the value came from.
    pub file: String,
    /// JSON path of the offending value.
    pub path: String,
    /// What was expected there, or what is wrong.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.path, self.expected)
    }
}

/// Every problem found in a configuration; loading fails when it is not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collector for semantic validation. Paths are relative to `$` and given by the caller.
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<(String, String)>,
}

impl Problems {
    pub fn new() -> Self {
        Problems::default()
    }

    /// Records that the value at `path` is wrong: `expected` says what it should be.
    pub fn push(&mut self, path: impl Into<String>, expected: impl Into<String>) {
        self.found.push((path.into(), expected.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Moves `other`'s problems here, each `(path, expected)` rewritten by `rebase` (a
    /// fleet profile's problems go under its path, [`super::fleet`]).
    pub fn absorb(&mut self, other: Problems, rebase: impl Fn(&str, &str) -> (String, String)) {
        for (path, expected) in other.found {
            self.found.push(rebase(&path, &expected));
        }
    }

    /// Attaches the source name and turns the problems into errors.
    pub fn into_errors(self, file: &str) -> Vec<ConfigError> {
        self.found
            .into_iter()
            .map(|(path, expected)| ConfigError {
                file: file.to_string(),
                path,
                expected,
            })
            .collect()
    }
}

/// Joins a JSON path and an object key: `$.a` + `b` → `$.a.b`; keys that are not plain
/// identifiers are quoted (`$.gce.instance.attributes["ssh-keys"]`).
pub fn join(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{}]", serde_json::Value::from(key))
    }
}

/// Joins a JSON path and an array index: `$.a` + 2 → `$.a[2]`.
pub fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_jsonpath_like() {
        assert_eq!(join("$", "azure"), "$.azure");
        assert_eq!(join("$.gce", "ssh-keys"), "$.gce[\"ssh-keys\"]");
        assert_eq!(index("$.a", 3), "$.a[3]");
    }
}
