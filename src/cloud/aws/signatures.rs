//! The signatures of `dynamic/instance-identity/document`, computed once per snapshot with the
//! key store's signing key (the document never changes while a snapshot lives).
//!
//! - `signature`: base64 of RSASSA-PKCS1-v1_5 SHA-256 over the document's bytes, on one line
//!   (verify: `openssl dgst -sha256 -verify <(openssl x509 -pubkey -noout -in aws.pem)
//!   -signature <(base64 -d signature) document`).
//! - `rsa2048`: PKCS#7 signed-data encapsulating the document, RSA-2048 with SHA-256, base64 in
//!   64-character lines without PEM armour, as EC2 serves it.
//! - `pkcs7`: EC2 signs this one with DSA-SHA1. Decided: the same RSA-SHA256 signed-data as
//!   `rsa2048`, because OpenSSL 3 rejects SHA-1 signatures at its default security level, a
//!   DSA key would be a second key for no client's benefit, and verifiers take the algorithm
//!   from the structure (`openssl smime -verify` checks both alike).
//!
//! Both PKCS#7 forms carry the signer's certificate (issued by the imds-tun CA, subject like
//! AWS's), so `openssl smime -verify -inform PEM -CAfile <(imds-tun ca)` needs nothing else;
//! EC2 leaves it out and verifiers pass it with `-certfile`, which still works.

use base64::Engine as _;

use crate::identity::{pkcs7, IdentityKeys, Leaf};

/// The three signature texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    pub signature: String,
    pub pkcs7: String,
    pub rsa2048: String,
}

/// Signs `document`; `None` only if signing itself fails (it does not with a valid key).
pub fn sign(keys: &IdentityKeys, document: &[u8]) -> Option<Signatures> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64.encode(keys.sign(document).ok()?);
    let signed_data = pkcs7::sign(keys, Leaf::Aws, document).ok()?;
    let text = b64.encode(signed_data);
    let wrapped = text
        .as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    Some(Signatures {
        signature,
        pkcs7: wrapped.clone(),
        rsa2048: wrapped,
    })
}
