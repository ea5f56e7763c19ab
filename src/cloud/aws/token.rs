//! IMDSv2 session tokens, stateless: the token carries its expiry and a MAC over it.
//!
//! Format: 40 bytes, base64url with padding, so 56 characters like a real token
//! (`AQAEA...==`):
//!
//! ```text
//! 01 00 04 00 | expiry (u32, big-endian Unix seconds) | HMAC-SHA256(keys.session, first 8 bytes)
//! ```
//!
//! The first four bytes give the `AQAEA` prefix real tokens have. Nothing is stored per token,
//! so tokens survive configuration reloads (the key lives in [`crate::snapshot::Keys`], which
//! outlives snapshots) and cost no memory however many clients ask. Checking a token allocates
//! nothing: it is decoded into a stack buffer and the MAC is compared in constant time.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tokens may live 1 second to 6 hours (`X-aws-ec2-metadata-token-ttl-seconds`).
pub const MAX_TTL_SECS: u32 = 21_600;

const PREFIX: [u8; 4] = [0x01, 0x00, 0x04, 0x00];
const RAW_LEN: usize = 40;
/// Length of the base64 text of a token.
pub const TEXT_LEN: usize = 56;

/// Why a token was refused; both answer 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this server issued (wrong shape or MAC).
    Invalid,
    /// Issued here, but its time is up.
    Expired,
}

fn mac(key: &[u8; 32], head: &[u8]) -> Hmac<Sha256> {
    // A 32-byte key is always accepted by HMAC; the fallback is unreachable.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(head);
    m
}

/// A token valid for `ttl` seconds from `now` (Unix seconds).
pub fn mint(key: &[u8; 32], now: u64, ttl: u32) -> String {
    let expiry = u32::try_from(now.saturating_add(u64::from(ttl))).unwrap_or(u32::MAX);
    let mut raw = [0u8; RAW_LEN];
    raw[..4].copy_from_slice(&PREFIX);
    raw[4..8].copy_from_slice(&expiry.to_be_bytes());
    let tag = mac(key, &raw[..8]).finalize().into_bytes();
    raw[8..].copy_from_slice(&tag);
    URL_SAFE.encode(raw)
}

/// Checks `token` at `now` (Unix seconds); `Ok` carries the seconds it has left.
pub fn check(key: &[u8; 32], now: u64, token: &[u8]) -> Result<u32, Refused> {
    if token.len() != TEXT_LEN {
        return Err(Refused::Invalid);
    }
    // 56 base64 characters decode to at most 42 bytes.
    let mut raw = [0u8; 42];
    let n = URL_SAFE
        .decode_slice(token, &mut raw)
        .map_err(|_| Refused::Invalid)?;
    if n != RAW_LEN || raw[..4] != PREFIX {
        return Err(Refused::Invalid);
    }
    mac(key, &raw[..8])
        .verify_slice(&raw[8..RAW_LEN])
        .map_err(|_| Refused::Invalid)?;
    let expiry = u64::from(u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]));
    if expiry <= now {
        return Err(Refused::Expired);
    }
    Ok(u32::try_from(expiry - now).unwrap_or(u32::MAX))
}

/// Parses the TTL header: decimal digits only, 1..=21600. `None` → 400.
pub fn parse_ttl(value: &[u8]) -> Option<u32> {
    let text = value.trim_ascii();
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = text
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_TTL_SECS).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NOW: u64 = 1_767_225_600;

    #[test]
    fn looks_like_a_real_token() {
        let t = mint(&KEY, NOW, 21_600);
        assert_eq!(t.len(), TEXT_LEN);
        assert!(t.starts_with("AQAEA"), "{t}");
        assert!(t.ends_with("=="), "{t}");
    }

    #[test]
    fn round_trip_and_expiry() {
        let t = mint(&KEY, NOW, 60);
        assert_eq!(check(&KEY, NOW, t.as_bytes()), Ok(60));
        assert_eq!(check(&KEY, NOW + 59, t.as_bytes()), Ok(1));
        assert_eq!(check(&KEY, NOW + 60, t.as_bytes()), Err(Refused::Expired));
        assert_eq!(check(&[8; 32], NOW, t.as_bytes()), Err(Refused::Invalid));
    }

    #[test]
    fn tampering_is_refused() {
        let t = mint(&KEY, NOW, 60);
        let mut longer = t.clone().into_bytes();
        // Move the expiry: the MAC no longer matches.
        longer[8] = if longer[8] == b'A' { b'B' } else { b'A' };
        assert_eq!(check(&KEY, NOW, &longer), Err(Refused::Invalid));
        for bad in [&b""[..], b"x", &[b'!'; 56], &t.as_bytes()[..55]] {
            assert_eq!(check(&KEY, NOW, bad), Err(Refused::Invalid));
        }
    }

    #[test]
    fn ttl_header_values() {
        assert_eq!(parse_ttl(b"21600"), Some(21_600));
        assert_eq!(parse_ttl(b" 1 "), Some(1));
        assert_eq!(parse_ttl(b"0060"), Some(60));
        for bad in [
            &b""[..],
            b"0",
            b"21601",
            b"-1",
            b"+5",
            b"1.5",
            b"abc",
            b"99999999999999",
        ] {
            assert_eq!(parse_ttl(bad), None, "{bad:?}");
        }
    }
}
