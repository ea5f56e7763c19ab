//! The fixed test keys: two RSA-2048 keys committed under `fixtures/identity/` and a CA
//! certificate built from them with fixed dates and serial, so golden files are byte-exact.
//!
//! These keys are public. They serve tests, golden files and `imds-tun check` (which only
//! renders a configuration); `serve` and `up` always use the key store.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

use super::cert;
use super::keys::IdentityKeys;

const CA_KEY: &str = include_str!("../../fixtures/identity/test-ca-key.pem");
const SIGNING_KEY: &str = include_str!("../../fixtures/identity/test-signing-key.pem");

/// 2025-01-01T00:00:00Z .. 2045-01-01T00:00:00Z.
const NOT_BEFORE: u64 = 1_735_689_600;
const NOT_AFTER: u64 = 2_366_841_600;

pub fn keys() -> Arc<IdentityKeys> {
    static KEYS: OnceLock<Arc<IdentityKeys>> = OnceLock::new();
    Arc::clone(KEYS.get_or_init(|| {
        let parse = |pem: &str| {
            RsaPrivateKey::from_pkcs8_pem(pem)
                .unwrap_or_else(|e| panic!("committed test key is broken: {e}"))
        };
        let ca_key = parse(CA_KEY);
        let ca = cert::ca(
            &ca_key,
            &cert::serial_from(b"imds-tun fixed test CA"),
            UNIX_EPOCH + Duration::from_secs(NOT_BEFORE),
            UNIX_EPOCH + Duration::from_secs(NOT_AFTER),
        )
        .unwrap_or_else(|e| panic!("fixed CA: {e}"));
        Arc::new(
            IdentityKeys::new(&ca_key, ca, parse(SIGNING_KEY))
                .unwrap_or_else(|e| panic!("fixed keys: {e}")),
        )
    }))
}
