//! Token sources: where one identity's tokens come from, and the issuer that caches and audits
//! them.
//!
//! Contract: a [`TokenSource`] turns a [`TokenRequest`] (audience, scopes, options and `now`)
//! into a [`Token`] with its times, or [`Unavailable`]. It never blocks and never reads the
//! clock: minted sources compute, a static source returns what it holds, and a source that
//! needs I/O (an upstream token service, a command) answers from a cache that a thread off the
//! packet path fills ([`super::fetched`]): until it has something it answers
//! [`NoToken::Pending`] with a ticket on the fetch in flight, and the cloud answers
//! [`Reply::Pending`], so the front door parks the request; a failed fetch gives
//! [`NoToken::Unavailable`] (the cloud then answers its retryable error). [`Issuer`] wraps a source with
//! - a cache keyed by (audience, scopes, options), holding each token until its
//!   `fresh_until`, bounded to [`MAX_CACHED`] entries (audiences come from callers), so a
//!   signature costs at most once per key and reissue window, never per request or packet;
//! - the audit log: one `tracing` info line per token handed out, naming the identity, the
//!   audience, the scopes and the caller's address:port, never the token.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::Value;

use crate::http::{Prebuilt, Reply};
use crate::metrics::Counter;
use crate::pending::Ticket;

/// Distinct requests an issuer remembers; past this, stale entries go, then all.
pub const MAX_CACHED: usize = 1024;

/// What a caller asks a source for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    /// Azure `resource`, Google `audience`; `""` when the kind of token has none.
    pub audience: &'a str,
    /// OAuth scopes as the caller sent them (Google `scopes=`), `""` for the default ones.
    pub scopes: &'a str,
    /// Google `format=full`.
    pub full: bool,
    /// Google `licenses=TRUE`.
    pub licenses: bool,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

impl<'a> TokenRequest<'a> {
    /// A request for `audience` at `now`, with default scopes and options.
    pub fn new(audience: &'a str, now: u64) -> Self {
        TokenRequest {
            audience,
            scopes: "",
            full: false,
            licenses: false,
            now,
        }
    }
}

/// A token and its times (seconds since the Unix epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub issued_at: u64,
    pub not_before: u64,
    pub expires_at: u64,
    /// Until when the same token may be handed out again (cached).
    pub fresh_until: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"..")
            .field("issued_at", &self.issued_at)
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Token {
    /// Seconds left at `now`.
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// No token now; the reason is for logs and error bodies (never a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no token available: {0}")]
pub struct Unavailable(pub String);

/// Why a source gave no token.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NoToken {
    /// The cloud answers its "source unavailable" error.
    #[error(transparent)]
    Unavailable(Unavailable),
    /// A fetch is in flight: the request is parked on the ticket and re-run when it is done
    /// ([`crate::pending`]).
    #[error("the token is being fetched")]
    Pending(Ticket),
}

impl From<Unavailable> for NoToken {
    fn from(u: Unavailable) -> NoToken {
        NoToken::Unavailable(u)
    }
}

impl NoToken {
    /// The reply for this outcome: `unavailable` (the cloud's error), or parked.
    pub fn reply<'s>(self, unavailable: &'s Prebuilt) -> Reply<'s> {
        match self {
            NoToken::Unavailable(_) => Reply::Static(unavailable),
            NoToken::Pending(t) => Reply::Pending(t),
        }
    }
}

/// Where one identity's tokens come from. See the module docs for the rules.
pub trait TokenSource: Send + Sync + fmt::Debug {
    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken>;

    /// Where its tokens come from, the `source` label of `imds_tun_tokens_issued_total`:
    /// `minted`, `static`, `upstream`, `command` or `unavailable`.
    fn source_kind(&self) -> &'static str;
}

/// The start of the reissue window `now` falls in: minted tokens are issued at window starts,
/// so within a window every caller gets the same token, and its `expires_in` never drops below
/// the lifetime minus one window.
pub fn window_start(now: u64, window: u64) -> u64 {
    now - now % window.max(1)
}

/// A source with its cache and audit line.
pub struct Issuer {
    /// Names the identity in the audit log (client id, e-mail, role).
    identity: String,
    /// What it issues, for the audit log ("access token", "ID token").
    kind: &'static str,
    source: Box<dyn TokenSource>,
    cache: Mutex<HashMap<String, Token>>,
    /// Tokens handed out, and requests that got none ([`crate::metrics`]).
    counts: IssueCounts,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("identity", &self.identity)
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    pub fn new(
        identity: impl Into<String>,
        kind: &'static str,
        source: Box<dyn TokenSource>,
    ) -> Self {
        let identity = identity.into();
        let counts = IssueCounts::new(&identity, kind, source.source_kind());
        Issuer {
            identity,
            kind,
            source,
            cache: Mutex::new(HashMap::new()),
            counts,
        }
    }

    /// A token for `req`, from the cache while it is fresh; logs the issue.
    pub fn issue(&self, req: &TokenRequest<'_>, peer: SocketAddr) -> Result<Token, NoToken> {
        let key = format!(
            "{}\n{}\n{}{}",
            req.audience, req.scopes, req.full as u8, req.licenses as u8
        );
        let cached = self.with_cache(|c| {
            c.get(&key)
                .filter(|t| t.not_before <= req.now && req.now < t.fresh_until)
                .cloned()
        });
        let token = match cached {
            Some(t) => t,
            None => {
                let t = self
                    .source
                    .issue(req)
                    .inspect_err(|e| self.counts.failed(e))?;
                if req.now < t.fresh_until {
                    self.with_cache(|c| {
                        if c.len() >= MAX_CACHED {
                            c.retain(|_, t| req.now < t.fresh_until);
                            if c.len() >= MAX_CACHED {
                                c.clear();
                            }
                        }
                        c.insert(key, t.clone());
                    });
                }
                t
            }
        };
        tracing::info!(
            identity = %self.identity,
            kind = self.kind,
            audience = %req.audience,
            scopes = %req.scopes,
            caller = %peer,
            expires_at = token.expires_at,
            "issued token"
        );
        self.counts.issued.inc();
        Ok(token)
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut HashMap<String, Token>) -> T) -> T {
        match self.cache.lock() {
            Ok(mut guard) => f(&mut guard),
            // A panic while holding the lock leaves a map that is still whole.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The counters of one issuer: tokens (or credentials) handed out, and requests that got
/// none because the source was unavailable, labelled by identity, kind and source. Shared by
/// every issuer of the same labels, so they survive reloads.
#[derive(Debug)]
pub struct IssueCounts {
    pub issued: Arc<Counter>,
    pub unavailable: Arc<Counter>,
}

impl IssueCounts {
    /// The counters of `identity`, `kind` (`access token`, `credentials`, ...) and `source`
    /// in the process's registry.
    pub fn new(identity: &str, kind: &str, source: &str) -> IssueCounts {
        IssueCounts::in_registry(crate::metrics::global(), identity, kind, source)
    }

    pub fn in_registry(
        registry: &crate::metrics::Registry,
        identity: &str,
        kind: &str,
        source: &str,
    ) -> IssueCounts {
        let labels = [("identity", identity), ("kind", kind), ("source", source)];
        IssueCounts {
            issued: registry.counter(
                TOKENS_ISSUED,
                "Tokens and credentials handed out (cache hits included), by identity, kind and source.",
                &labels,
            ),
            unavailable: registry.counter(
                "imds_tun_tokens_unavailable_total",
                "Token and credential requests answered with an error because the source had none.",
                &labels,
            ),
        }
    }

    /// Counts a request that got no token (a parked one is not a failure yet).
    pub fn failed(&self, why: &NoToken) {
        if let NoToken::Unavailable(_) = why {
            self.unavailable.inc();
        }
    }
}

/// How many tokens and credentials `registry` counts as issued, over every identity, kind
/// and source (`imds-tun ctl status`): the sum of `imds_tun_tokens_issued_total`.
pub fn tokens_issued(registry: &crate::metrics::Registry) -> u64 {
    registry.counter_total(TOKENS_ISSUED)
}

/// The family every issuer counts in: access tokens, ID tokens and AWS credentials
/// ([`crate::identity::aws::CredentialIssuer`]) alike.
const TOKENS_ISSUED: &str = "imds_tun_tokens_issued_total";

/// Lifetime assumed for a static token whose claims do not say (managed identity tokens last
/// 24 h).
pub const STATIC_DEFAULT_LIFETIME: u64 = 86_400;

/// A fixed token from the configuration.
///
/// While the token is a JWT whose `exp` is in the future, its times are its claims. Once `exp`
/// has passed (a fixed token cannot be re-signed), or for an opaque token, it is presented as
/// freshly issued: expiring after the token's lifetime (`exp - iat`, else
/// [`STATIC_DEFAULT_LIFETIME`]), so clients keep a sane expiry instead of refreshing in a loop.
pub struct StaticToken {
    token: String,
    claims: TimeClaims,
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

impl StaticToken {
    pub fn new(token: &str) -> StaticToken {
        StaticToken {
            token: token.to_string(),
            claims: TimeClaims::of(token),
        }
    }
}

impl TokenSource for StaticToken {
    fn source_kind(&self) -> &'static str {
        "static"
    }
    fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
        let now = req.now;
        let c = self.claims;
        let (issued_at, not_before, expires_at) = match c.exp {
            Some(exp) if exp > now => {
                let nbf = c.nbf.or(c.iat).unwrap_or(now).min(now);
                (c.iat.unwrap_or(nbf).min(now), nbf, exp)
            }
            _ => (now, now, now + c.lifetime()),
        };
        Ok(Token {
            value: self.token.clone(),
            issued_at,
            not_before,
            expires_at,
            // Nothing to save by caching a token already held.
            fresh_until: 0,
        })
    }
}

/// The time claims of a JWT, when the token is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeClaims {
    pub iat: Option<u64>,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
}

impl TimeClaims {
    /// Reads `iat`, `nbf` and `exp` from a compact JWT's payload; all `None` for anything else.
    pub fn of(token: &str) -> TimeClaims {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return TimeClaims::default();
        };
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let Ok(bytes) = engine.decode(payload.trim_end_matches('=')) else {
            return TimeClaims::default();
        };
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) else {
            return TimeClaims::default();
        };
        let time = |k: &str| claims.get(k).and_then(Value::as_u64);
        TimeClaims {
            iat: time("iat"),
            nbf: time("nbf"),
            exp: time("exp"),
        }
    }

    fn lifetime(&self) -> u64 {
        match (self.iat, self.exp) {
            (Some(iat), Some(exp)) if exp > iat => exp - iat,
            _ => STATIC_DEFAULT_LIFETIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"RS256"}"#),
            e.encode(claims)
        )
    }

    #[test]
    fn claims_are_read_from_jwts_only() {
        let t = jwt(r#"{"iat":100,"nbf":90,"exp":3700,"tid":"t"}"#);
        assert_eq!(
            TimeClaims::of(&t),
            TimeClaims {
                iat: Some(100),
                nbf: Some(90),
                exp: Some(3700)
            }
        );
        assert_eq!(TimeClaims::of("opaque"), TimeClaims::default());
        assert_eq!(TimeClaims::of("a.!!!.c"), TimeClaims::default());
    }

    #[test]
    fn static_tokens_follow_their_claims_then_look_fresh() {
        let t = StaticToken::new(&jwt(r#"{"iat":1000,"nbf":1000,"exp":4600}"#));
        let at = |now| t.issue(&TokenRequest::new("r", now)).ok();
        let live = at(2000).unwrap_or_else(|| panic!("token"));
        assert_eq!((live.not_before, live.expires_at), (1000, 4600));
        let stale = at(1_000_000).unwrap_or_else(|| panic!("token"));
        assert_eq!((stale.not_before, stale.expires_at), (1_000_000, 1_003_600));
        let opaque = StaticToken::new("opaque");
        let o = opaque.issue(&TokenRequest::new("r", 10)).ok();
        assert_eq!(o.map(|o| o.expires_at), Some(10 + STATIC_DEFAULT_LIFETIME));
        assert_eq!(format!("{t:?}"), "StaticToken(..)");
    }

    /// Counts the tokens it makes; each is fresh for one 300 s window.
    #[derive(Debug, Default)]
    struct Counting(AtomicU32);

    impl TokenSource for Counting {
        fn source_kind(&self) -> &'static str {
            "minted"
        }
        fn issue(&self, req: &TokenRequest<'_>) -> Result<Token, NoToken> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let start = window_start(req.now, 300);
            Ok(Token {
                value: format!("secret-{n}"),
                issued_at: start,
                not_before: start,
                expires_at: start + 3600,
                fresh_until: start + 300,
            })
        }
    }

    #[test]
    fn issuer_caches_per_key_and_window_and_stays_bounded() {
        let issuer = Issuer::new("me", "access token", Box::<Counting>::default());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        let get = |aud: &str, now| {
            issuer
                .issue(&TokenRequest::new(aud, now), peer)
                .map(|t| t.value)
                .unwrap_or_default()
        };
        assert_eq!(get("a", 600), "secret-0");
        assert_eq!(get("a", 899), "secret-0", "same window: cached");
        assert_eq!(get("b", 899), "secret-1", "another audience");
        assert_eq!(get("a", 900), "secret-2", "next window");
        for i in 0..(MAX_CACHED + 10) {
            get(&format!("x{i}"), 900);
        }
        let size = issuer.with_cache(|c| c.len());
        assert!(size <= MAX_CACHED, "{size}");
        let debug = format!("{:?}", issuer.issue(&TokenRequest::new("a", 900), peer));
        assert!(!debug.contains("secret"), "{debug}");
    }
}
