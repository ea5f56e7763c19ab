//! Azure Arc's hybrid IMDS (HIMDS) at `http://localhost:40342` [spec/azure.md, HIMDS].
//!
//! The token endpoint is guarded by a key-file challenge: a token request (with
//! `Metadata: true`) that does not present a key gets 401 with
//! `WWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/<name>.key`; the client reads that
//! file (only root and members of group `himds` can) and resends the request with
//! `Authorization: Basic <the file's raw contents>` (not base64). `/metadata/instance[/...]`
//! and `/metadata/identity/info` are served without the challenge, by the IMDS rules; any other
//! path is 404.
//!
//! Contract, pure: [`KeyRing`] is the set of outstanding keys, plain data the door's driver
//! owns (one per door, shared by its connections, outliving snapshot reloads). Answering
//! ([`super::Azure::respond_himds`]) reads and updates the ring and returns the file changes
//! to make as [`KeyEffect`]s; randomness for new keys is passed in. The driver writes a
//! [`KeyEffect::Write`] before it sends the 401 that names the file, so a client never reads a
//! file that is not there yet.
//!
//! Decisions on unconfirmed points:
//! - A key is single use: it is consumed by the first token request that presents it, and
//!   expires [`KEY_LIFETIME`] after issue (real Arc keys are short-lived). At most
//!   [`MAX_OUTSTANDING`] keys exist at once; issuing another retires the oldest, so a flood of
//!   unauthenticated requests cannot fill the disk.
//! - A wrong, used or expired key gets a fresh challenge (401 with a new realm): RFC 9110
//!   11.6.1 requires `WWW-Authenticate` on every 401, and a client that retries gets a key
//!   it can use.
//! - The challenge comes after the `Metadata` header, method and api-version checks and before
//!   the `resource` and selector checks: MSAL Python treats anything but 401 on its first call
//!   as an error, so request errors it can only fix after authenticating are reported then.
//! - api-versions: 2019-11-01 (azure-identity) and 2020-06-01 (MSAL); anything else is 400.
//! - The 401 body is an identity-style error (`unauthorized_client`); clients read only the
//!   header.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::errors;
use super::{route_key, Azure, Route};
use crate::cloud::{secrets_equal, Reply, Request, RequestContext};
use crate::http::{Prebuilt, Response};

/// HIMDS's api-versions, newest first [spec/azure.md].
pub const HIMDS_API_VERSIONS: [&str; 2] = ["2020-06-01", "2019-11-01"];

/// How long an unused key stays valid.
pub const KEY_LIFETIME: Duration = Duration::from_secs(60);

/// Keys outstanding at once, at most.
pub const MAX_OUTSTANDING: usize = 64;

/// Random bytes one key is made from: 16 for its name (a UUID), 32 for its secret.
pub const KEY_ENTROPY: usize = 48;

/// A change to the key directory the driver must make.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyEffect {
    /// Create `<directory>/<name>.key` holding `secret`.
    Write { name: String, secret: String },
    /// Remove `<directory>/<name>.key`.
    Remove { name: String },
}

impl std::fmt::Debug for KeyEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyEffect::Write { name, .. } => write!(f, "Write({name}, ..)"),
            KeyEffect::Remove { name } => write!(f, "Remove({name})"),
        }
    }
}

struct IssuedKey {
    name: String,
    secret: String,
    expires: SystemTime,
}

/// The outstanding challenge keys of one HIMDS door.
#[derive(Default)]
pub struct KeyRing {
    keys: VecDeque<IssuedKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} outstanding)", self.keys.len())
    }
}

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Keys outstanding now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Issues a key made from `entropy`; returns its file name (without `.key`) and the
    /// effects: expired or surplus keys removed, then the new one written.
    pub fn issue(
        &mut self,
        now: SystemTime,
        entropy: [u8; KEY_ENTROPY],
    ) -> (String, Vec<KeyEffect>) {
        let mut effects = self.expire(now);
        while self.keys.len() >= MAX_OUTSTANDING {
            if let Some(old) = self.keys.pop_front() {
                effects.push(KeyEffect::Remove { name: old.name });
            }
        }
        let name = uuid_text(&entropy[..16]);
        let secret = hex(&entropy[16..]);
        effects.push(KeyEffect::Write {
            name: name.clone(),
            secret: secret.clone(),
        });
        self.keys.push_back(IssuedKey {
            name: name.clone(),
            secret,
            expires: now + KEY_LIFETIME,
        });
        (name, effects)
    }

    /// Consumes the key whose secret is `presented`, if one is outstanding and unexpired;
    /// returns the removal of its file. Every key is compared in constant time.
    pub fn redeem(&mut self, presented: &[u8], now: SystemTime) -> Option<KeyEffect> {
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            if secrets_equal(k.secret.as_bytes(), presented) && k.expires > now {
                found = Some(i);
            }
        }
        let key = self.keys.remove(found?)?;
        Some(KeyEffect::Remove { name: key.name })
    }

    /// Retires every key whose time is up.
    pub fn expire(&mut self, now: SystemTime) -> Vec<KeyEffect> {
        let mut effects = Vec::new();
        self.keys.retain(|k| {
            let live = k.expires > now;
            if !live {
                effects.push(KeyEffect::Remove {
                    name: k.name.clone(),
                });
            }
            live
        });
        effects
    }

    /// Retires every key (the door is closing).
    pub fn drain(&mut self) -> Vec<KeyEffect> {
        self.keys
            .drain(..)
            .map(|k| KeyEffect::Remove { name: k.name })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 bytes as a version-4 UUID (the shape of real Arc key names).
fn uuid_text(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The answers of the HIMDS door that quote nothing, rendered once.
#[derive(Debug)]
pub struct HimdsErrors {
    pub bad_api_version: Prebuilt,
}

impl HimdsErrors {
    pub fn render() -> HimdsErrors {
        HimdsErrors {
            bad_api_version: errors::json(
                400,
                serde_json::json!({
                    "error": "invalid_request",
                    "error_description": format!(
                        "api-version is invalid or was not specified in the request; use {}",
                        HIMDS_API_VERSIONS.join(" or ")
                    ),
                })
                .to_string(),
            )
            .prebuild(),
        }
    }
}

/// The 401 challenge naming the key file at `realm`.
pub fn challenge(realm: &str) -> Response {
    errors::json(
        401,
        serde_json::json!({
            "error": "unauthorized_client",
            "error_description": "Read the key file named in WWW-Authenticate and resend the \
                                  request with Authorization: Basic <key>",
        })
        .to_string(),
    )
    .header("WWW-Authenticate", format!("Basic realm={realm}"))
}

/// What the HIMDS door answers, and the key-file changes to make before sending it.
#[derive(Debug)]
pub struct HimdsAnswer<'s> {
    pub reply: Reply<'s>,
    pub effects: Vec<KeyEffect>,
}

impl<'s> HimdsAnswer<'s> {
    fn plain(reply: Reply<'s>) -> Self {
        HimdsAnswer {
            reply,
            effects: Vec::new(),
        }
    }
}

impl Azure {
    /// Answers a request that came through the HIMDS door (see the module docs).
    pub fn respond_himds<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
        live: &crate::live::Live,
        ring: &mut KeyRing,
        entropy: &mut dyn FnMut() -> [u8; KEY_ENTROPY],
    ) -> HimdsAnswer<'s> {
        let key = route_key(req.path);
        match self.routes.get(&*key) {
            Some(Route::Token) => self.himds_token(req, ctx, ring, entropy),
            Some(Route::Instance(_) | Route::IdentityInfo(_)) => {
                HimdsAnswer::plain(self.respond(req, ctx, live))
            }
            None if key.starts_with("/metadata/instance/") => {
                HimdsAnswer::plain(self.respond(req, ctx, live))
            }
            _ => HimdsAnswer::plain(self.not_found(req)),
        }
    }

    fn himds_token<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
        ring: &mut KeyRing,
        entropy: &mut dyn FnMut() -> [u8; KEY_ENTROPY],
    ) -> HimdsAnswer<'s> {
        let query = match self.identity_request(req) {
            Ok(q) => q,
            Err(answer) => return HimdsAnswer::plain(answer),
        };
        let version_ok = query
            .api_version
            .as_deref()
            .is_some_and(|v| HIMDS_API_VERSIONS.contains(&v));
        if !version_ok {
            return HimdsAnswer::plain(Reply::Static(&self.himds_errors.bad_api_version));
        }
        let presented = req
            .header_str("authorization")
            .and_then(|v| basic_credentials(v));
        let redeemed = presented.and_then(|p| ring.redeem(p.as_bytes(), ctx.now));
        let Some(removal) = redeemed else {
            let (name, effects) = ring.issue(ctx.now, entropy());
            let realm = format!("{}/{name}.key", self.himds_key_directory);
            return HimdsAnswer {
                reply: Reply::Dynamic(challenge(&realm)),
                effects,
            };
        };
        HimdsAnswer {
            reply: self.token(&query, ctx),
            effects: vec![removal],
        }
    }
}

/// The credentials of `Authorization: Basic <credentials>` (scheme case-insensitive, RFC 9110
/// 11.1), as sent: HIMDS clients send the key file's contents, not base64.
fn basic_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| rest.trim_matches([' ', '\t']))
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn keys_are_single_use_and_expire() {
        let mut ring = KeyRing::new();
        let (name, effects) = ring.issue(at(T0), [7; KEY_ENTROPY]);
        assert_eq!(name, "07070707-0707-4707-8707-070707070707");
        let [KeyEffect::Write { secret, .. }] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        let secret = secret.clone();
        assert_eq!(secret.len(), 64);
        assert_eq!(ring.redeem(b"wrong", at(T0)), None);
        assert_eq!(
            ring.redeem(secret.as_bytes(), at(T0 + 1)),
            Some(KeyEffect::Remove { name: name.clone() })
        );
        assert_eq!(ring.redeem(secret.as_bytes(), at(T0 + 1)), None, "reused");

        let (name, _) = ring.issue(at(T0), [8; KEY_ENTROPY]);
        assert_eq!(ring.redeem(hex(&[8; 32]).as_bytes(), at(T0 + 60)), None);
        assert_eq!(ring.expire(at(T0 + 60)), vec![KeyEffect::Remove { name }]);
        assert!(ring.is_empty());
    }

    #[test]
    fn outstanding_keys_are_bounded_and_drained() {
        let mut ring = KeyRing::new();
        let mut removed = 0;
        for i in 0..(MAX_OUTSTANDING + 3) {
            let (_, effects) = ring.issue(at(T0), [i as u8; KEY_ENTROPY]);
            removed += effects
                .iter()
                .filter(|e| matches!(e, KeyEffect::Remove { .. }))
                .count();
        }
        assert_eq!(removed, 3);
        assert_eq!(ring.len(), MAX_OUTSTANDING);
        assert_eq!(ring.drain().len(), MAX_OUTSTANDING);
        assert!(ring.is_empty());
    }

    #[test]
    fn basic_credentials_are_taken_raw() {
        assert_eq!(basic_credentials("Basic abc"), Some("abc"));
        assert_eq!(basic_credentials("basic  abc "), Some("abc"));
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic "), None);
        assert_eq!(basic_credentials("Basic"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut ring = KeyRing::new();
        let (_, effects) = ring.issue(at(T0), [9; KEY_ENTROPY]);
        let shown = format!("{effects:?} {ring:?}");
        assert!(!shown.contains(&hex(&[9; 32])), "{shown}");
    }
}
