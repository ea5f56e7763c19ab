//! [`IdentityKeys`]: the signing key, its JWKS entry, the CA and the leaf certificates, ready
//! to sign with.
//!
//! Contract: built once (at startup, or once per test binary for the fixed keys) from a CA key,
//! its certificate and a signing key; every later operation is a pure function of these and its
//! arguments. Besides signing, the keys provide [`IdentityKeys::mac`], an HMAC-SHA256 under a
//! key derived from the signing key, for opaque values that must be unguessable yet
//! reproducible without state (Google access tokens, AWS credentials).

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::der::EncodePem;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

pub use super::cert::Leaf;
use super::cert::{self, CertError};

/// Why keys could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a usable RSA private key in PEM ({reason})")]
    BadKey { path: String, reason: String },
    #[error("{path}: mode {mode:o} lets others read or change it; expected {expected:o} (chmod {expected:o} {path})")]
    Permissions {
        path: String,
        mode: u32,
        expected: u32,
    },
    #[error("{path}: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// The keys and certificates imds-tun signs with.
pub struct IdentityKeys {
    signer: SigningKey<Sha256>,
    kid: String,
    jwks: String,
    ca: Certificate,
    ca_pem: String,
    azure_leaf: Certificate,
    aws_leaf: Certificate,
    mac_key: [u8; 32],
}

impl fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl IdentityKeys {
    /// Joins a CA (key and certificate) and a signing key, issuing the leaf certificates.
    pub fn new(
        ca_key: &RsaPrivateKey,
        ca_cert: Certificate,
        signing: RsaPrivateKey,
    ) -> Result<IdentityKeys, KeyError> {
        let ca_spki = SubjectPublicKeyInfoOwned::from_key(ca_key.to_public_key())
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        if ca_cert.tbs_certificate.subject_public_key_info != ca_spki {
            return Err(KeyError::BadCertificate {
                path: "CA certificate".into(),
                reason: "does not certify the CA key".into(),
            });
        }
        let public = signing.to_public_key();
        let mac_key = derive_mac_key(&signing)?;
        let serial = |which: &str| {
            let mut mac = mac_with(&mac_key, "leaf-serial");
            mac.update(which.as_bytes());
            cert::serial_from(&mac.finalize().into_bytes())
        };
        let azure_leaf = cert::leaf(ca_key, &ca_cert, &public, &serial("azure"), Leaf::Azure)?;
        let aws_leaf = cert::leaf(ca_key, &ca_cert, &public, &serial("aws"), Leaf::Aws)?;
        let ca_pem = ca_cert
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        let (kid, jwks) = jwks_of(&public);
        Ok(IdentityKeys {
            signer: SigningKey::new(signing),
            kid,
            jwks,
            ca: ca_cert,
            ca_pem,
            azure_leaf,
            aws_leaf,
            mac_key,
        })
    }

    /// The fixed test keys (committed under `fixtures/identity/`), built once per process.
    /// Public knowledge: for tests, golden files and `imds-tun check`, never for serving.
    pub fn fixed() -> std::sync::Arc<IdentityKeys> {
        super::fixed::keys()
    }

    /// The JWT `kid` of the signing key: its RFC 7638 JWK thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (RFC 7517) with the signing key.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca(&self) -> &Certificate {
        &self.ca
    }

    /// A leaf certificate of the signing key.
    pub fn leaf(&self, which: Leaf) -> &Certificate {
        match which {
            Leaf::Azure => &self.azure_leaf,
            Leaf::Aws => &self.aws_leaf,
        }
    }

    /// The signing key, for CMS.
    pub fn signer(&self) -> &SigningKey<Sha256> {
        &self.signer
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2) over `data`: the JWT `RS256` algorithm
    /// and AWS's `signature`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.signer
            .try_sign(data)
            .map(|s| s.to_vec())
            .map_err(|e| KeyError::Signing(e.to_string()))
    }

    /// HMAC-SHA256 under the derived MAC key of `label` and `parts` (each length-prefixed, so
    /// no two different inputs collide).
    pub fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = mac_with(&self.mac_key, label);
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// `n` bytes of MAC output for `label` and `parts` (HMAC in counter mode).
    pub fn mac_stream(&self, label: &str, parts: &[&[u8]], n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut counter = 0u64;
        while out.len() < n {
            let c = counter.to_be_bytes();
            let mut all: Vec<&[u8]> = parts.to_vec();
            all.push(&c);
            out.extend_from_slice(&self.mac(label, &all));
            counter += 1;
        }
        out.truncate(n);
        out
    }
}

fn mac_with(key: &[u8; 32], label: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac
}

/// The MAC key: SHA-256 of a label and the signing key's PKCS#1 DER, so it is stable as long
/// as the key is, and reveals nothing about it.
fn derive_mac_key(signing: &RsaPrivateKey) -> Result<[u8; 32], KeyError> {
    let der = signing
        .to_pkcs1_der()
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(b"imds-tun mac key v1\0");
    h.update(der.as_bytes());
    Ok(h.finalize().into())
}

/// The `kid` (RFC 7638 thumbprint) and the JWKS document of `key`.
fn jwks_of(key: &RsaPublicKey) -> (String, String) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let n = b64.encode(key.n().to_bytes_be());
    let e = b64.encode(key.e().to_bytes_be());
    // RFC 7638 3.2: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = b64.encode(Sha256::digest(canonical.as_bytes()));
    let jwks = serde_json::json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": n,
            "e": e,
        }]
    })
    .to_string();
    (kid, jwks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_kid_only_and_leaves_chain_to_the_ca() {
        let keys = IdentityKeys::fixed();
        let debug = format!("{keys:?}");
        assert_eq!(
            debug,
            format!("IdentityKeys {{ kid: {:?}, .. }}", keys.kid())
        );
        for leaf in [Leaf::Azure, Leaf::Aws] {
            let cert = &keys.leaf(leaf).tbs_certificate;
            assert_eq!(cert.issuer, keys.ca().tbs_certificate.subject);
            assert_eq!(cert.validity, keys.ca().tbs_certificate.validity);
        }
        assert_ne!(
            keys.leaf(Leaf::Azure).tbs_certificate.serial_number,
            keys.leaf(Leaf::Aws).tbs_certificate.serial_number
        );
        assert!(keys.ca_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_ne!(keys.mac("a", &[b"x"]), keys.mac("b", &[b"x"]));
        assert_ne!(keys.mac("a", &[b"x", b"y"]), keys.mac("a", &[b"xy"]));
        assert_eq!(keys.mac_stream("a", &[b"x"], 70).len(), 70);
    }
}
