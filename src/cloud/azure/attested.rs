//! `/metadata/attested/document` [IMDS]: the VM's identity facts signed as PKCS#7.
//!
//! Contract: [`Attested::respond`] answers `{"encoding":"pkcs7","signature":"<base64 DER>"}`,
//! the DER being CMS signed-data ([`crate::identity::pkcs7`]) that encapsulates the JSON
//! document and carries the signer's certificate (`CN=metadata.azure.com`, SAN
//! `*.metadata.azure.com`, issued by the imds-tun CA): `openssl cms -verify -inform DER
//! -CAfile <(imds-tun ca)` checks it and prints the document.
//!
//! The document [IMDS]: `licenseType` (only when the VM has one, as for Azure Hybrid Benefit),
//! `nonce`, `plan{name,product,publisher}`, `sku`, `subscriptionId`,
//! `timeStamp{createdOn,expiresOn}` as `MM/dd/yy HH:mm:ss -0000` (the documented format), and
//! `vmId`, in alphabetical order as the documented sample, all from `compute`. `expiresOn` is
//! six hours after `createdOn`, as in the documented sample.
//!
//! Nonce, decided between the sources: the docs show 10 digits, the REST spec allows up to 32
//! alphanumerics; accepted: 1 to 32 ASCII letters or digits, anything else 400. Without a
//! nonce, the creation time as `yyyyMMdd-HHmmss` is used (the documented default is "the
//! current UTC timestamp").
//!
//! Signing costs about a millisecond, so answers are kept in a small cache keyed by nonce and
//! second: a burst of identical requests signs once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::errors::json;
use crate::cloud::aws::timestamp::utc_parts;
use crate::config::azure::{scalar_text, AzureConfig};
use crate::http::Response;
use crate::identity::{pkcs7, IdentityKeys, Leaf};

/// How long a document is valid.
pub const VALIDITY_SECS: u64 = 6 * 3600;
/// Documents remembered (nonce and second).
const MAX_CACHED: usize = 64;

/// The signer of attested documents, with the VM's facts.
pub struct Attested {
    keys: Arc<IdentityKeys>,
    license_type: String,
    plan: Value,
    sku: String,
    subscription_id: String,
    vm_id: String,
    cache: Mutex<HashMap<(String, u64), String>>,
}

impl std::fmt::Debug for Attested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attested")
            .field("vm_id", &self.vm_id)
            .finish_non_exhaustive()
    }
}

/// A nonce IMDS accepts: 1 to 32 ASCII letters or digits.
pub fn nonce_ok(nonce: &str) -> bool {
    (1..=32).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `MM/dd/yy HH:mm:ss -0000`.
fn imds_time(secs: u64) -> String {
    let [y, mo, d, h, mi, s] = utc_parts(secs as i64);
    format!("{mo:02}/{d:02}/{:02} {h:02}:{mi:02}:{s:02} -0000", y % 100)
}

/// `yyyyMMdd-HHmmss`, the nonce of a request without one.
fn default_nonce(secs: u64) -> String {
    let [y, mo, d, h, mi, s] = utc_parts(secs as i64);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

impl Attested {
    pub fn new(config: &AzureConfig, keys: &Arc<IdentityKeys>) -> Attested {
        let compute = &config.instance.compute;
        let text = |v: Option<&Value>| {
            v.and_then(scalar_text)
                .map(|t| t.into_owned())
                .unwrap_or_default()
        };
        let plan = compute.get("plan");
        let plan_field = |k: &str| text(plan.and_then(|p| p.get(k)));
        Attested {
            keys: Arc::clone(keys),
            license_type: text(compute.get("licenseType")),
            plan: json!({
                "name": plan_field("name"),
                "product": plan_field("product"),
                "publisher": plan_field("publisher"),
            }),
            sku: text(compute.get("sku")),
            subscription_id: text(compute.get("subscriptionId")),
            vm_id: text(compute.get("vmId")),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The signed content for `nonce` (already validated, or `None`) at `now`.
    pub fn document(&self, nonce: Option<&str>, now: u64) -> String {
        let mut doc = Map::new();
        if !self.license_type.is_empty() {
            doc.insert("licenseType".into(), self.license_type.as_str().into());
        }
        let nonce = nonce.map_or_else(|| default_nonce(now), str::to_string);
        doc.insert("nonce".into(), nonce.into());
        doc.insert("plan".into(), self.plan.clone());
        doc.insert("sku".into(), self.sku.as_str().into());
        doc.insert(
            "subscriptionId".into(),
            self.subscription_id.as_str().into(),
        );
        doc.insert(
            "timeStamp".into(),
            json!({
                "createdOn": imds_time(now),
                "expiresOn": imds_time(now + VALIDITY_SECS),
            }),
        );
        doc.insert("vmId".into(), self.vm_id.as_str().into());
        Value::Object(doc).to_string()
    }

    /// The 200 answer, or `None` if signing failed.
    pub fn respond(&self, nonce: Option<&str>, now: u64) -> Option<Response> {
        let key = (nonce.unwrap_or_default().to_string(), now);
        let cached = self.with_cache(|c| c.get(&key).cloned());
        let body = match cached {
            Some(body) => body,
            None => {
                let content = self.document(nonce, now);
                let der = pkcs7::sign(&self.keys, Leaf::Azure, content.as_bytes()).ok()?;
                let signature = base64::engine::general_purpose::STANDARD.encode(der);
                let body = json!({ "encoding": "pkcs7", "signature": signature }).to_string();
                self.with_cache(|c| {
                    if c.len() >= MAX_CACHED {
                        c.clear();
                    }
                    c.insert(key, body.clone());
                });
                body
            }
        };
        Some(json(200, body))
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut HashMap<(String, u64), String>) -> T) -> T {
        match self.cache.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_nonces() {
        assert_eq!(imds_time(1_606_771_159), "11/30/20 21:19:19 -0000");
        assert_eq!(default_nonce(1_606_771_159), "20201130-211919");
        assert!(nonce_ok("1234567890") && nonce_ok(&"a".repeat(32)));
        assert!(!nonce_ok("") && !nonce_ok(&"a".repeat(33)) && !nonce_ok("12-34"));
    }

    #[test]
    fn document_has_the_documented_fields() {
        let mut c = AzureConfig::default();
        c.instance.compute.insert("vmId".into(), "v".into());
        c.instance.compute.insert("sku".into(), "s".into());
        c.instance
            .compute
            .insert("subscriptionId".into(), "sub".into());
        let a = Attested::new(&c, &IdentityKeys::fixed());
        let doc: Value =
            serde_json::from_str(&a.document(Some("42"), 1_606_771_159)).unwrap_or_default();
        assert_eq!(
            doc,
            json!({"nonce": "42", "plan": {"name": "", "product": "", "publisher": ""},
                   "sku": "s", "subscriptionId": "sub",
                   "timeStamp": {"createdOn": "11/30/20 21:19:19 -0000",
                                 "expiresOn": "12/01/20 03:19:19 -0000"},
                   "vmId": "v"})
        );
        let first = a.respond(Some("42"), 1_606_771_159).map(|r| r.body);
        assert!(first.is_some());
        assert_eq!(a.respond(Some("42"), 1_606_771_159).map(|r| r.body), first);
    }
}
