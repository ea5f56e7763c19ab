//! RS256 JWTs signed with a key the user gives (a service-account key, a certificate's key):
//! client assertions (RFC 7523 2.2) and JWT-bearer grants (RFC 7523 2.1).
//!
//! Contract: [`RsaSigner::from_pem`] takes the first RSA private key block of a PEM text
//! (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`); [`RsaSigner::jwt`] returns
//! `base64url(header).base64url(claims).base64url(signature)`. `Debug` shows nothing of the key.

use std::fmt;

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{Map, Value};
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub struct RsaSigner {
    key: SigningKey<Sha256>,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigner(..)")
    }
}

/// The first PEM block labelled `label` in `text`, armour included.
pub fn pem_block<'t>(text: &'t str, label: &str) -> Option<&'t str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// The DER bytes of the first PEM block labelled `label`.
pub fn pem_der(text: &str, label: &str) -> Option<Vec<u8>> {
    let block = pem_block(text, label)?;
    let body: String = block
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl RsaSigner {
    pub fn from_pem(text: &str) -> Result<RsaSigner, String> {
        let key = if let Some(block) = pem_block(text, "PRIVATE KEY") {
            RsaPrivateKey::from_pkcs8_pem(block).map_err(|e| format!("PKCS#8 key: {e}"))?
        } else if let Some(block) = pem_block(text, "RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(block).map_err(|e| format!("PKCS#1 key: {e}"))?
        } else {
            return Err("no PRIVATE KEY or RSA PRIVATE KEY block".into());
        };
        Ok(RsaSigner {
            key: SigningKey::new(key),
        })
    }

    /// A compact JWS of `claims` with `header` (`alg` is set to RS256).
    pub fn jwt(&self, header: Map<String, Value>, claims: &Value) -> String {
        let mut header = header;
        header.insert("alg".into(), "RS256".into());
        let mut out = B64.encode(Value::Object(header).to_string());
        out.push('.');
        out.push_str(&B64.encode(claims.to_string()));
        let signature = self.key.sign(out.as_bytes()).to_vec();
        out.push('.');
        out.push_str(&B64.encode(signature));
        out
    }
}

/// A random `jti` (RFC 7519 4.1.7): 128 bits, hex.
pub fn random_id() -> String {
    use rsa::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
