//! The caller policy: who is on the other end of a connection, and whether they may have a
//! token (or, if configured, metadata).
//!
//! # Finding the caller
//!
//! Every client of this service is a process of this host (or of a container routed through
//! it), so its socket is in the kernel of the network namespace we serve in: under `up` the
//! client connected to 169.254.169.254 through the TUN and its socket's local address is the
//! TUN's source address (or the namespace's own); under `serve` and the token doors it is a
//! loopback socket. Both are found the same way, from the connection's 4-tuple:
//! [`sock_diag::owner`] asks NETLINK_SOCK_DIAG for the socket's uid and inode (falling back to
//! `/proc/net/tcp`), and [`process::holder`] finds the process holding that inode under
//! `/proc/<pid>/fd` and reads its gid, groups and executable.
//!
//! That is blocking work, so it never runs on the packet path: [`CallerLookup`] (one per
//! connection, kept by the front door) starts it on a thread the first time a rule needs the
//! caller and answers [`Decision::Pending`] with a [`crate::pending::Ticket`]; the request is
//! parked like an upstream token fetch and re-run when the lookup is done, and every later
//! request on that connection uses the cached answer. Lookups in flight at once are bounded
//! ([`MAX_LOOKUPS`]); beyond that a lookup fails, and a failed lookup is a denial (fail
//! closed: the policy is there to keep tokens from unknown callers).
//!
//! # What is a token endpoint
//!
//! The `tokens` rule guards every answer that hands out a credential, at the point where an
//! issuer hands it out ([`crate::identity::Issuer`], [`crate::identity::aws::CredentialIssuer`]),
//! so no path spelling can reach a token around it: Azure's
//! `/metadata/identity/oauth2/token` at IMDS and at the HIMDS, App Service and legacy MSI doors;
//! GCE's `service-accounts/*/token` and `service-accounts/*/identity`; AWS's
//! `iam/security-credentials/<role>` and the ECS container-credentials URI. Not guarded by it:
//! AWS's IMDSv2 session token (`PUT /latest/api/token`), which grants nothing but metadata
//! reads (refusing it only makes SDKs fall back to IMDSv1), and signed documents (Azure
//! attested, AWS identity document), which are metadata. The `metadata` rule, when set,
//! guards every request at the metadata addresses that is not a token request.
//!
//! # Denials
//!
//! Each cloud answers a denied token request with its own "forbidden" shape (see
//! `Denial` in each cloud's errors): Azure 403 `{"error":"access_denied",...}` (an OAuth error
//! code its clients know; deliberately not the 400 "Identity not found", which would tell the
//! operator's users that no identity exists), GCE 403 with Google's "Your client does not
//! have permission to get URL" page (the page the real server uses for refused requests),
//! AWS 403 with EC2's empty `text/plain` (what IMDS answers when it refuses), ECS 403 in the
//! agent's JSON error shape. The audit log has one line per decision with the caller's
//! address, pid, uid, gid and executable, never a token.

pub mod process;
pub mod sock_diag;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::callers::{CallerRule, CallersConfig};
use crate::pending::{Flight, Outcome, Ticket};

/// Lookups running at once (each is a thread doing netlink and /proc reads).
pub const MAX_LOOKUPS: usize = 64;

static LOOKUPS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Who a connection's peer is, as far as it could be found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub exe: Option<PathBuf>,
    /// Why the lookup came up short (never a secret).
    pub problem: Option<String>,
}

impl Caller {
    /// Looks the client socket `peer` → `local` up (blocking).
    pub fn find(peer: SocketAddr, local: SocketAddr) -> Caller {
        let owner = match sock_diag::owner(peer, local) {
            Ok(o) => o,
            Err(e) => {
                return Caller {
                    problem: Some(format!("socket not found: {e}")),
                    ..Caller::default()
                }
            }
        };
        match process::holder(owner.uid, owner.inode) {
            Some(h) => Caller {
                uid: Some(owner.uid),
                pid: Some(h.pid),
                gid: h.gid,
                groups: h.groups,
                exe: h.exe,
                problem: None,
            },
            None => Caller {
                uid: Some(owner.uid),
                problem: Some("no visible process holds the socket".into()),
                ..Caller::default()
            },
        }
    }
}

/// For the audit log: `pid=.. uid=.. gid=.. exe=..` with `-` for what is unknown.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        write!(
            f,
            "pid={} uid={} gid={} exe={}",
            n(self.pid),
            n(self.uid),
            n(self.gid),
            self.exe
                .as_ref()
                .map_or("-".into(), |e| e.display().to_string())
        )?;
        if let Some(p) = &self.problem {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

impl CallerRule {
    /// Whether `caller` passes this rule (see [`CallerRule`]).
    pub fn allows(&self, caller: &Caller) -> bool {
        let uid = caller.uid.is_some_and(|u| self.uids.contains(&u));
        let gid = caller
            .gid
            .iter()
            .chain(&caller.groups)
            .any(|g| self.gids.contains(g));
        let exe = caller
            .exe
            .as_ref()
            .is_some_and(|e| self.executables.contains(e));
        uid || gid || exe
    }
}

struct Shared {
    flight: Arc<Flight>,
    caller: OnceLock<Caller>,
}

/// One connection's caller, looked up once, off the packet path (see the module docs).
#[derive(Default)]
pub struct CallerLookup {
    shared: OnceLock<Arc<Shared>>,
}

impl fmt::Debug for CallerLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caller = self.shared.get().and_then(|s| s.caller.get());
        f.debug_struct("CallerLookup")
            .field("caller", &caller)
            .finish()
    }
}

/// The caller, or a ticket on its lookup.
enum Found<'a> {
    Caller(&'a Caller),
    Pending(Ticket),
}

impl CallerLookup {
    fn find(&self, peer: SocketAddr, local: SocketAddr) -> Found<'_> {
        let shared = self.shared.get_or_init(|| start(peer, local));
        if let Some(c) = shared.caller.get() {
            return Found::Caller(c);
        }
        match shared.flight.outcome() {
            // Timed out by the front door (the thread may still finish later): deny.
            Some(Outcome::Failed(why)) => Found::Caller(shared.caller.get_or_init(|| Caller {
                problem: Some(why),
                ..Caller::default()
            })),
            _ => Found::Pending(Ticket::new(&shared.flight)),
        }
    }
}

fn start(peer: SocketAddr, local: SocketAddr) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        flight: Flight::new(),
        caller: OnceLock::new(),
    });
    let failed = |why: String| {
        let _ = shared.caller.set(Caller {
            problem: Some(why),
            ..Caller::default()
        });
        shared.flight.finish(Outcome::Done);
    };
    if LOOKUPS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
        LOOKUPS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        failed("too many caller lookups in flight".into());
        return shared;
    }
    let worker = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("imds-tun-caller".into())
        .spawn(move || {
            let caller = Caller::find(peer, local);
            let _ = worker.caller.set(caller);
            LOOKUPS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            worker.flight.finish(Outcome::Done);
        });
    if let Err(e) = spawned {
        LOOKUPS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        failed(format!("cannot start the lookup: {e}"));
    }
    shared
}

/// What the policy says about one request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// No rule applies: nobody is looked up.
    Open,
    Allowed(&'a Caller),
    Denied(&'a Caller),
    /// The caller is being looked up: park the request on the ticket.
    Pending(Ticket),
}

/// A connection's policy and caller, as the front door hands them to the clouds.
#[derive(Clone, Copy, Debug)]
pub struct Callers<'a> {
    pub policy: &'a CallersConfig,
    pub lookup: &'a CallerLookup,
}

impl<'a> Callers<'a> {
    /// `Some` only when the configuration has a caller policy.
    pub fn new(policy: &'a CallersConfig, lookup: &'a CallerLookup) -> Option<Callers<'a>> {
        policy.is_set().then_some(Callers { policy, lookup })
    }

    fn decide(&self, rule: Option<&CallerRule>, asker: &Asker<'_>) -> Decision<'a> {
        let Some(rule) = rule else {
            return Decision::Open;
        };
        match self.lookup.find(asker.peer, asker.local) {
            Found::Pending(t) => Decision::Pending(t),
            Found::Caller(c) if rule.allows(c) => Decision::Allowed(c),
            Found::Caller(c) => Decision::Denied(c),
        }
    }
}

/// Who asks for a token: the connection's ends and, with a policy, its caller.
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub callers: Option<Callers<'a>>,
}

impl<'a> Asker<'a> {
    /// Anyone at `peer`, with no policy (tests, tools).
    pub fn unchecked(peer: SocketAddr) -> Asker<'static> {
        Asker {
            peer,
            local: peer,
            callers: None,
        }
    }

    /// The `tokens` rule's decision for this asker.
    pub fn tokens(&self) -> Decision<'a> {
        match &self.callers {
            Some(c) => c.decide(c.policy.tokens.as_ref(), self),
            None => Decision::Open,
        }
    }

    /// The `metadata` rule's decision for this asker.
    pub fn metadata(&self) -> Decision<'a> {
        match &self.callers {
            Some(c) => c.decide(c.policy.metadata.as_ref(), self),
            None => Decision::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_uid_gid_groups_or_executable() {
        let rule = CallerRule {
            uids: vec![1000],
            gids: vec![50],
            executables: vec!["/usr/bin/curl".into()],
        };
        let c = |uid, gid, groups: Vec<u32>, exe: &str| Caller {
            uid: Some(uid),
            gid: Some(gid),
            groups,
            exe: Some(exe.into()),
            ..Caller::default()
        };
        assert!(rule.allows(&c(1000, 1, vec![], "/bin/sh")));
        assert!(rule.allows(&c(1, 50, vec![], "/bin/sh")));
        assert!(rule.allows(&c(1, 1, vec![7, 50], "/bin/sh")));
        assert!(rule.allows(&c(1, 1, vec![], "/usr/bin/curl")));
        assert!(!rule.allows(&c(1, 1, vec![7], "/usr/bin/wget")));
        assert!(
            !rule.allows(&Caller::default()),
            "unknown callers are denied"
        );
    }

    /// Our own loopback connection, looked up through the parked-request path.
    #[test]
    fn lookup_parks_then_finds_our_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let local = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stream = std::net::TcpStream::connect(local).unwrap_or_else(|e| panic!("{e}"));
        let peer = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let policy = CallersConfig {
            tokens: Some(CallerRule {
                uids: vec![uid],
                ..CallerRule::default()
            }),
            metadata: None,
        };
        let lookup = CallerLookup::default();
        let asker = Asker {
            peer,
            local,
            callers: Callers::new(&policy, &lookup),
        };
        assert!(matches!(asker.metadata(), Decision::Open));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match asker.tokens() {
                Decision::Pending(t) => {
                    assert!(std::time::Instant::now() < deadline, "lookup never ended");
                    while !t.is_done() {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Decision::Allowed(c) => {
                    assert_eq!(c.pid, Some(std::process::id()));
                    assert_eq!(c.exe, std::env::current_exe().ok());
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
