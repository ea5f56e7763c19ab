//! Guest attributes: what the guest wrote with `PUT .../instance/guest-attributes/NS/KEY`,
//! kept for the life of the process (across reloads and live edits), and how the
//! `guest-attributes/` tree is answered from it.
//!
//! Contract: [`GuestAttributes`] is shared by every snapshot (it lives in
//! [`crate::snapshot::Keys`]); [`GuestAttributes::put`] stores one value within the bounds
//! below and wakes hanging GETs when the value changed; [`GuestAttributes::view`] returns the
//! written values together with the flight that ends on the next change, read under one lock,
//! so a watcher can never miss a change between reading and parking. What a client reads is
//! the configured guest attributes (`$.gce.instance.guest-attributes`) with the written ones
//! over them ([`merge`]).
//!
//! Bounds (Google documents neither for guest attributes; unconfirmed): a namespace or key is 1
//! to 100 letters, digits, `-` or `_` (the documented character set); a value is UTF-8 of at
//! most [`MAX_VALUE_BYTES`], half the request body limit (an RSA host key, the largest value the guest agent writes, is
//! under 1 KiB); at most [`MAX_ENTRIES`] keys in all. A write past a bound is a 400, as any
//! request the server will not take, and changes nothing.
//!
//! Listings follow the rest of the tree (`super::tree`): `guest-attributes/` lists
//! namespaces as `ns/`, a namespace lists its keys; recursive JSON is `{ns: {key: value}}` with
//! the names as written; `alt=text` gives `ns/key value` lines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::pending::{Flight, Outcome};

/// The largest value a guest may write, in bytes.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// The most keys (over every namespace) the store keeps.
pub const MAX_ENTRIES: usize = 1000;

/// Namespace → key → value.
pub type Entries = BTreeMap<String, BTreeMap<String, String>>;

/// Why a write was refused (the server answers 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("a namespace and a key of 1 to 100 letters, digits, '-' or '_'")]
    BadName,
    #[error("a UTF-8 value of at most {MAX_VALUE_BYTES} bytes")]
    BadValue,
    #[error("at most {MAX_ENTRIES} guest attributes")]
    Full,
}

struct State {
    written: Entries,
    entries: usize,
    changed: Arc<Flight>,
}

/// The guest attributes written since the process started.
pub struct GuestAttributes {
    state: Mutex<State>,
}

impl std::fmt::Debug for GuestAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAttributes").finish_non_exhaustive()
    }
}

impl Default for GuestAttributes {
    fn default() -> Self {
        GuestAttributes {
            state: Mutex::new(State {
                written: Entries::new(),
                entries: 0,
                changed: Flight::new(),
            }),
        }
    }
}

/// A namespace or key as Google documents them.
pub fn is_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl GuestAttributes {
    pub fn new() -> Arc<GuestAttributes> {
        Arc::new(GuestAttributes::default())
    }

    /// Stores `value` at `namespace/key`; wakes watchers when it changed anything.
    pub fn put(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), GuestError> {
        if !is_name(namespace) || !is_name(key) {
            return Err(GuestError::BadName);
        }
        let value = std::str::from_utf8(value).map_err(|_| GuestError::BadValue)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(GuestError::BadValue);
        }
        let old = self.with_state(|s| {
            let exists = s
                .written
                .get(namespace)
                .and_then(|ns| ns.get(key))
                .map(|v| v == value);
            match exists {
                Some(true) => return Ok(None),
                Some(false) => {}
                None if s.entries >= MAX_ENTRIES => return Err(GuestError::Full),
                None => s.entries += 1,
            }
            s.written
                .entry(namespace.to_string())
                .or_default()
                .insert(key.to_string(), value.to_string());
            Ok(Some(std::mem::replace(&mut s.changed, Flight::new())))
        })?;
        if let Some(flight) = old {
            flight.finish(Outcome::Done);
        }
        Ok(())
    }

    /// The written values and the flight that ends on the next change, read together.
    pub fn view(&self) -> (Entries, Arc<Flight>) {
        self.with_state(|s| (s.written.clone(), Arc::clone(&s.changed)))
    }

    /// Wakes every watcher (the configured guest attributes may have changed: a new snapshot).
    pub fn touch(&self) {
        let old = self.with_state(|s| std::mem::replace(&mut s.changed, Flight::new()));
        old.finish(Outcome::Done);
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            // Every update of the state completes before anything that could panic.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The configured guest attributes (`$.gce.instance.guest-attributes`: namespace objects of
/// scalar values) as entries.
pub fn configured(instance: &Map<String, Value>) -> Entries {
    let mut out = Entries::new();
    let Some(Value::Object(namespaces)) = instance.get("guest-attributes") else {
        return out;
    };
    for (ns, keys) in namespaces {
        let Value::Object(keys) = keys else { continue };
        let dir = out.entry(ns.clone()).or_default();
        for (k, v) in keys {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            dir.insert(k.clone(), text);
        }
    }
    out
}

/// `written` over `configured`.
pub fn merge(configured: &Entries, written: Entries) -> Entries {
    let mut out = configured.clone();
    for (ns, keys) in written {
        out.entry(ns).or_default().extend(keys);
    }
    out
}

/// What one guest-attributes path names in `entries`.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'e> {
    /// `guest-attributes` itself.
    Root(&'e Entries),
    Namespace(&'e BTreeMap<String, String>),
    Value(&'e str),
}

/// Looks `rest` (the path below `guest-attributes`: `""`, `ns`, `ns/key`) up.
pub fn find<'e>(entries: &'e Entries, rest: &str) -> Option<Found<'e>> {
    if rest.is_empty() {
        return Some(Found::Root(entries));
    }
    let mut parts = rest.split('/');
    let ns = entries.get(parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(Found::Namespace(ns)),
        (Some(k), None) => ns.get(k).map(|v| Found::Value(v.as_str())),
        _ => None,
    }
}

impl Found<'_> {
    /// The directory listing (namespaces with `/`, keys without).
    pub fn listing(&self) -> String {
        match self {
            Found::Root(e) => e.keys().map(|k| format!("{k}/\n")).collect(),
            Found::Namespace(ns) => ns.keys().map(|k| format!("{k}\n")).collect(),
            Found::Value(_) => String::new(),
        }
    }

    /// The recursive JSON (keys as written).
    pub fn json(&self) -> Value {
        let dir = |ns: &BTreeMap<String, String>| {
            Value::Object(
                ns.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        match self {
            Found::Root(e) => Value::Object(e.iter().map(|(k, ns)| (k.clone(), dir(ns))).collect()),
            Found::Namespace(ns) => dir(ns),
            Found::Value(v) => Value::String((*v).to_string()),
        }
    }

    /// The recursive `alt=text` form: `path value` lines below this node.
    pub fn text_lines(&self) -> String {
        let mut out = String::new();
        match self {
            Found::Root(e) => {
                for (ns, keys) in *e {
                    for (k, v) in keys {
                        out.push_str(&format!("{ns}/{k} {v}\n"));
                    }
                }
            }
            Found::Namespace(ns) => {
                for (k, v) in *ns {
                    out.push_str(&format!("{k} {v}\n"));
                }
            }
            Found::Value(v) => {
                out.push_str(v);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_stores_bounds_and_wakes_only_on_change() {
        let g = GuestAttributes::default();
        let (_, first) = g.view();
        assert_eq!(g.put("hostkeys", "ssh-rsa", b"AAAA"), Ok(()));
        assert!(first.outcome().is_some(), "a new value wakes watchers");
        let (entries, second) = g.view();
        assert_eq!(entries["hostkeys"]["ssh-rsa"], "AAAA");
        assert_eq!(g.put("hostkeys", "ssh-rsa", b"AAAA"), Ok(()));
        assert!(second.outcome().is_none(), "the same value is no change");
        assert_eq!(g.put("bad ns", "k", b"v"), Err(GuestError::BadName));
        assert_eq!(g.put("ns", "", b"v"), Err(GuestError::BadName));
        assert_eq!(g.put("ns", "k", &[0xff]), Err(GuestError::BadValue));
        let big = vec![b'a'; MAX_VALUE_BYTES + 1];
        assert_eq!(g.put("ns", "k", &big), Err(GuestError::BadValue));
        for i in 1..MAX_ENTRIES {
            assert_eq!(g.put("many", &format!("k{i}"), b"v"), Ok(()));
        }
        assert_eq!(g.put("many", "one-more", b"v"), Err(GuestError::Full));
        assert_eq!(
            g.put("many", "k1", b"replaced"),
            Ok(()),
            "a rewrite is no new entry"
        );
        g.touch();
        assert!(second.outcome().is_some());
    }

    #[test]
    fn merged_view_lists_and_renders() {
        let configured = configured(
            serde_json::json!({"guest-attributes": {"hostkeys": {"ssh-ed25519": "AAAA"}}})
                .as_object()
                .unwrap_or(&Map::new()),
        );
        let mut written = Entries::new();
        written
            .entry("testing".into())
            .or_default()
            .insert("k".into(), "v".into());
        let all = merge(&configured, written);
        let root = find(&all, "").unwrap_or_else(|| panic!());
        assert_eq!(root.listing(), "hostkeys/\ntesting/\n");
        assert_eq!(
            root.json().to_string(),
            r#"{"hostkeys":{"ssh-ed25519":"AAAA"},"testing":{"k":"v"}}"#
        );
        assert_eq!(
            root.text_lines(),
            "hostkeys/ssh-ed25519 AAAA\ntesting/k v\n"
        );
        let ns = find(&all, "testing").unwrap_or_else(|| panic!());
        assert_eq!(ns.listing(), "k\n");
        assert_eq!(find(&all, "testing/k"), Some(Found::Value("v")));
        assert_eq!(find(&all, "testing/x"), None);
        assert_eq!(find(&all, "nope"), None);
        assert_eq!(find(&all, "testing/k/z"), None);
    }
}
