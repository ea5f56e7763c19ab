//! The snapshot: every answer that can be rendered ahead of time, for one configuration.
//!
//! Contract: [`Snapshot::build`] renders a validated [`Config`] once; [`Snapshot::respond`]
//! answers any request from it, allocating nothing for static answers. A snapshot is
//! immutable: a reload builds a new one and swaps the `Arc`; connections holding the old one
//! finish with it (design principle 3).
//!
//! `/imds-tun/jwks` and `/imds-tun/ca.pem` belong to no cloud: they publish the keys that
//! verify minted tokens and signed documents ([`crate::identity`]), on every address and
//! without any header, as public keys may be.
//!
//! A configuration with a fleet ([`crate::fleet`]) renders one snapshot per profile inside the
//! base one; front doors ask [`Snapshot::for_peer`] which of them answers a caller.
//!
//! What changes while running (events, injected faults) is not in the snapshot but in the
//! [`Live`] state every snapshot of a cell shares; the clouds read it per request, and a GCE
//! value that changes is rendered into a new snapshot ([`SnapshotCell::tick`]). Injected
//! faults are applied here, before any cloud sees the request.
//!
//! `/` is claimed by both GCE and AWS. Google's clients detect GCE from `GET /`: Python sends
//! `Metadata-Flavor: Google` and needs the same response header; Go sends no header and checks
//! only for the response header. AWS clients never ask for `/`. So: with the flavor header (or
//! GCE alone) `/` is GCE's root; otherwise, when AWS is on, it is AWS's version list carrying
//! `Metadata-Flavor: Google` too when GCE is on, which satisfies Go's probe and a person's curl.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::cloud::aws::Aws;
use crate::cloud::azure::himds::{HimdsAnswer, KeyRing, KEY_ENTROPY};
use crate::cloud::azure::Azure;
use crate::cloud::gce::guest::GuestAttributes;
use crate::cloud::gce::Gce;
use crate::cloud::{owner, Door, Owner, Reply, Request, RequestContext};
use crate::config::{Config, ConfigError, ConfigErrors, Problems};
use crate::fleet::{Choice, Fleet, Member, Tally, DEFAULT_PROFILE};
use crate::http::{Method, Prebuilt, Response};
use crate::identity::{IdentityKeys, CA_PATH, JWKS_PATH};
use crate::live::faults::FaultAction;
use crate::live::gce::GceOverlay;
use crate::live::Live;

/// Secrets and live state that outlive snapshots (a reload must not invalidate issued session
/// tokens, change the keys tokens and documents are signed with, or forget what the guest
/// wrote).
#[derive(Clone)]
pub struct Keys {
    /// Key for stateless session tokens (AWS IMDSv2) and other MACs.
    pub session: [u8; 32],
    /// The signing key, CA and certificates ([`crate::identity`]).
    pub identity: Arc<IdentityKeys>,
    /// GCE guest attributes written by the guest ([`crate::cloud::gce::guest`]).
    pub guest_attributes: Arc<GuestAttributes>,
    /// Each fleet profile's own guest attributes, by profile name ([`Keys::for_profile`]).
    profile_guest_attributes: Arc<std::sync::Mutex<BTreeMap<String, Arc<GuestAttributes>>>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// A fresh random session key from the kernel, with the given identity keys.
    pub fn new(identity: Arc<IdentityKeys>) -> std::io::Result<Keys> {
        let mut session = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut session)?;
        Ok(Keys {
            session,
            identity,
            guest_attributes: GuestAttributes::new(),
            profile_guest_attributes: Arc::default(),
        })
    }

    /// Fixed keys, for tests and golden files: the session key is `seed` repeated, the
    /// identity keys are [`IdentityKeys::fixed`].
    pub fn fixed(seed: u8) -> Keys {
        Keys {
            session: [seed; 32],
            identity: IdentityKeys::fixed(),
            guest_attributes: GuestAttributes::new(),
            profile_guest_attributes: Arc::default(),
        }
    }

    /// The keys fleet profile `name` renders with: the same keys, and guest attributes of its
    /// own (what one instance's guest writes is not another's), kept across reloads by name.
    pub fn for_profile(&self, name: &str) -> Keys {
        let mut stores = self
            .profile_guest_attributes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let own = stores.entry(name.to_string()).or_default();
        Keys {
            guest_attributes: Arc::clone(own),
            ..self.clone()
        }
    }
}

/// All pre-rendered answers of one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    azure: Option<Azure>,
    gce: Option<Gce>,
    aws: Option<Aws>,
    /// `/` without the GCE flavor header when AWS is on.
    shared_root: Option<Prebuilt>,
    /// The answer when no cloud is enabled.
    nobody: Prebuilt,
    /// `GET /imds-tun/jwks`: the key that verifies minted JWTs.
    jwks: Prebuilt,
    /// `GET /imds-tun/ca.pem`: the CA of the document signers.
    ca: Prebuilt,
    /// A HIMDS token request asked without the door's key ring.
    no_key_ring: Prebuilt,
    /// The live state (shared by every snapshot of a cell, and by every instance of a fleet).
    live: Arc<Live>,
    /// What the GCE tree was rendered with from the live state.
    gce_overlay: GceOverlay,
    /// To render this configuration again with another overlay.
    keys: Keys,
    source: String,
    /// The other instances of this configuration's fleet; empty without one.
    fleet: Fleet,
    /// Requests this instance answered, when it is part of a fleet.
    tally: Option<Tally>,
}

/// What the instances of a fleet answered, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetCounts {
    /// Requests answered, by profile name ([`DEFAULT_PROFILE`] first: the base's).
    pub answered: Vec<(String, u64)>,
    /// Callers refused (`"unknownSources": "refuse"`).
    pub refused: u64,
}

impl Snapshot {
    /// Renders `config`, and each profile of its fleet; `source` names it in errors found while
    /// rendering. The snapshot gets a live state of its own, started from `config` (a cell
    /// hands its own on).
    pub fn build(config: Config, keys: &Keys, source: &str) -> Result<Snapshot, ConfigErrors> {
        let live = Arc::new(Live::new(&config));
        Snapshot::build_live(config, keys, source, live, GceOverlay::default())
    }

    /// Renders `config` and its fleet's profiles with `live` as their live state and `overlay`
    /// in their GCE trees (live state is the host's: every instance shares it).
    fn build_live(
        config: Config,
        keys: &Keys,
        source: &str,
        live: Arc<Live>,
        overlay: GceOverlay,
    ) -> Result<Snapshot, ConfigErrors> {
        if config.fleet.profiles.is_empty() {
            return Snapshot::build_one(config, keys, source, (live, overlay), None);
        }
        let mut members = Vec::with_capacity(config.fleet.profiles.len());
        let mut errors = Vec::new();
        for (i, profile) in config.fleet.profiles.iter().enumerate() {
            let at = format!("$.fleet.profiles[{i}]");
            let Some(own) = profile.config.as_deref() else {
                errors.push(ConfigError {
                    file: source.to_string(),
                    path: at,
                    expected: "a profile resolved by loading (config::load_str)".into(),
                });
                continue;
            };
            let tally = Some(Tally::registered(&profile.name));
            let own_keys = keys.for_profile(&profile.name);
            let live = (Arc::clone(&live), overlay.clone());
            match Snapshot::build_one(own.clone(), &own_keys, source, live, tally) {
                Ok(snapshot) => members.push((
                    Member {
                        name: profile.name.clone(),
                        snapshot,
                    },
                    profile.sources.clone(),
                )),
                Err(ConfigErrors(found)) => errors.extend(found.into_iter().map(|mut e| {
                    e.path = format!("{at}.patch{}", e.path.strip_prefix('$').unwrap_or(""));
                    e
                })),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let fleet = Fleet::new(members, config.fleet.unknown_sources);
        let tally = Some(Tally::registered(DEFAULT_PROFILE));
        let mut base = Snapshot::build_one(config, keys, source, (live, overlay), tally)?;
        base.fleet = fleet;
        Ok(base)
    }

    /// Renders one instance with its live state and GCE overlay.
    fn build_one(
        config: Config,
        keys: &Keys,
        source: &str,
        (live, overlay): (Arc<Live>, GceOverlay),
        tally: Option<Tally>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut problems = Problems::new();
        let azure = config
            .azure
            .enabled
            .then(|| Azure::build(&config.azure, keys, &mut problems));
        let gce = config.gce.enabled.then(|| {
            if overlay == GceOverlay::default() {
                Gce::build(&config.gce, keys, &mut problems)
            } else {
                let mut gce = config.gce.clone();
                overlay.apply(&mut gce.instance);
                Gce::build(&gce, keys, &mut problems)
            }
        });
        let aws = config
            .aws
            .enabled
            .then(|| Aws::build(&config.aws, keys, &mut problems));
        if !problems.is_empty() {
            return Err(ConfigErrors(problems.into_errors(source)));
        }
        let shared_root = aws.as_ref().map(|aws| {
            let mut root = aws.root_response();
            if gce.is_some() {
                root = root.header("Metadata-Flavor", "Google");
            }
            root.prebuild()
        });
        Ok(Snapshot {
            config: Arc::new(config),
            azure,
            gce,
            aws,
            shared_root,
            nobody: Response::new(404)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body("no metadata service is enabled\n")
                .prebuild(),
            jwks: Response::new(200)
                .header("Content-Type", "application/json")
                .body(keys.identity.jwks())
                .prebuild(),
            ca: Response::new(200)
                .header("Content-Type", "application/x-pem-file")
                .body(keys.identity.ca_pem())
                .prebuild(),
            no_key_ring: Response::new(500)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body("HIMDS token requests need the HIMDS door's key ring\n")
                .prebuild(),
            live,
            gce_overlay: overlay,
            keys: keys.clone(),
            source: source.to_string(),
            fleet: Fleet::default(),
            tally,
        })
    }

    /// The live state this snapshot answers with.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Answers with `live` from now on, this snapshot and its fleet's instances.
    fn set_live(&mut self, live: Arc<Live>) {
        for member in self.fleet.members_mut() {
            member.snapshot.set_live(Arc::clone(&live));
        }
        self.live = live;
    }

    /// This configuration rendered again with `live`'s GCE values at `now`, or `self` when
    /// they are the ones it has.
    fn with_live(mut self, live: Arc<Live>, now: SystemTime) -> Snapshot {
        let overlay = live.gce_overlay(now);
        if overlay == self.gce_overlay {
            self.set_live(live);
            return self;
        }
        let config = Config::clone(&self.config);
        match Snapshot::build_live(config, &self.keys, &self.source, Arc::clone(&live), overlay) {
            Ok(s) => s,
            Err(e) => {
                // The same configuration rendered before; an overlay only sets two strings.
                tracing::error!("cannot render the live GCE values: {e}");
                self.set_live(live);
                self
            }
        }
    }

    /// The snapshot that answers `peer`: its fleet profile's, this one, or `None` when the
    /// caller is refused (the front door then resets the connection, [`crate::fleet`]). One
    /// table lookup with a fleet, nothing without; never allocates.
    pub fn for_peer(&self, peer: std::net::IpAddr) -> Option<&Snapshot> {
        if self.fleet.is_empty() {
            return Some(self);
        }
        match self.fleet.lookup(peer) {
            Choice::Member(i) => self.fleet.members().get(i).map(|m| &m.snapshot),
            Choice::Default => Some(self),
            Choice::Refuse => None,
        }
    }

    /// Counts `n` requests answered by this instance (nothing outside a fleet).
    pub fn count_answered(&self, n: usize) {
        if let Some(tally) = &self.tally {
            if n > 0 {
                tally.add(n);
            }
        }
    }

    /// What the instances of this snapshot's fleet answered; empty without a fleet.
    pub fn fleet_counts(&self) -> FleetCounts {
        let own = self.tally.iter().map(|t| (t.name.clone(), t.get()));
        let members = self.fleet.members().iter().filter_map(|m| {
            let t = m.snapshot.tally.as_ref()?;
            Some((t.name.clone(), t.get()))
        });
        FleetCounts {
            answered: own.chain(members).collect(),
            refused: self.fleet.refused(),
        }
    }

    /// Called once this snapshot has been replaced: wakes the hanging GETs parked on it (and
    /// on its fleet's instances) so they compare against the new one.
    pub fn retire(&self) {
        if let Some(gce) = &self.gce {
            gce.retire();
        }
        for member in self.fleet.members() {
            member.snapshot.retire();
        }
    }

    /// Answers one request, by the rules of the door it came through.
    ///
    /// The HIMDS door needs its key ring and is answered by [`Snapshot::respond_himds`]; asked
    /// here, a HIMDS token request cannot be challenged and gets 500.
    pub fn respond<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        match ctx.door {
            Door::Metadata | Door::ContainerCredentials => self.respond_faulty(req, ctx),
            _ => self.respond_door(req, ctx),
        }
    }

    /// Injected faults first ([`crate::live::faults`]), then the door's answer.
    fn respond_faulty<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        let owner = owner(req.path);
        let Some(action) = self.live.peek_fault(owner, req.path, ctx.now) else {
            return self.respond_door(req, ctx);
        };
        let answer = match action {
            FaultAction::Latency(delay) => match self.respond_door(req, ctx) {
                // Counted when the request is answered, after its token.
                Reply::Pending(t) => return Reply::Pending(t),
                reply => Reply::Later(delay, Box::new(reply)),
            },
            FaultAction::Drop(kind) => Reply::Drop(kind),
            FaultAction::Status {
                status,
                retry_after,
            } => Reply::Dynamic(crate::cloud::fault_answer(
                owner,
                wants_gce(req),
                req.path,
                status,
                retry_after,
            )),
        };
        self.live.fault(owner, req.path, ctx.now);
        tracing::info!(path = req.path, ?action, "injected fault");
        answer
    }

    /// The answer of the door the request came through.
    fn respond_door<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        match ctx.door {
            Door::Metadata => self.respond_metadata(req, ctx),
            Door::ContainerCredentials => {
                match self
                    .aws
                    .as_ref()
                    .and_then(|a| a.respond_container_credentials(req, ctx))
                {
                    Some(reply) => reply,
                    None => self.respond_metadata(req, ctx),
                }
            }
            Door::Himds => {
                let mut ring = KeyRing::new();
                let answer = self.respond_himds(req, ctx, &mut ring, &mut || [0; KEY_ENTROPY]);
                if answer.effects.is_empty() {
                    answer.reply
                } else {
                    Reply::Static(&self.no_key_ring)
                }
            }
            Door::AppService => match &self.azure {
                Some(azure) => azure.respond_app_service(req, ctx),
                None => Reply::Static(&self.nobody),
            },
            Door::LegacyMsi => match &self.azure {
                Some(azure) => azure.respond_legacy_msi(req, ctx),
                None => Reply::Static(&self.nobody),
            },
        }
    }

    /// Answers a request that came through the HIMDS door: `ring` is the door's outstanding
    /// keys, `entropy` makes new ones; the returned effects are the key-file changes to make
    /// before the reply is sent ([`crate::cloud::azure::himds`]).
    pub fn respond_himds<'s>(
        &'s self,
        req: &Request<'_>,
        ctx: &RequestContext,
        ring: &mut KeyRing,
        entropy: &mut dyn FnMut() -> [u8; KEY_ENTROPY],
    ) -> HimdsAnswer<'s> {
        match &self.azure {
            Some(azure) => azure.respond_himds(req, ctx, &self.live, ring, entropy),
            None => HimdsAnswer {
                reply: Reply::Static(&self.nobody),
                effects: Vec::new(),
            },
        }
    }

    /// Answers a request at 169.254.169.254 (or a `serve --listen` address).
    fn respond_metadata<'s>(&'s self, req: &Request<'_>, ctx: &RequestContext) -> Reply<'s> {
        match owner(req.path) {
            Owner::Azure => match &self.azure {
                Some(azure) => azure.respond(req, ctx, &self.live),
                None => self.not_found(req),
            },
            Owner::Gce => match &self.gce {
                Some(gce) => gce.respond(req, ctx),
                None => self.not_found(req),
            },
            Owner::Aws => match &self.aws {
                Some(aws) => aws.respond(req, ctx, &self.live),
                None => self.not_found(req),
            },
            Owner::Root => match (&self.gce, &self.shared_root) {
                (Some(gce), _) if wants_gce(req) => gce.respond(req, ctx),
                (_, Some(root)) => match &self.aws {
                    // AWS owns `/` rules (methods, IMDSv2 token checks); it answers with the
                    // shared rendering when the request is acceptable.
                    Some(aws) => match aws.respond(req, ctx, &self.live) {
                        Reply::Static(_) => Reply::Static(root),
                        other => other,
                    },
                    None => Reply::Static(root),
                },
                (Some(gce), None) => gce.respond(req, ctx),
                (None, None) => self.not_found(req),
            },
            Owner::ImdsTun => match (req.method, req.path) {
                (Method::Get | Method::Head, JWKS_PATH) => Reply::Static(&self.jwks),
                (Method::Get | Method::Head, CA_PATH) => Reply::Static(&self.ca),
                _ => self.not_found(req),
            },
            Owner::Unknown => self.not_found(req),
        }
    }

    /// The 404 of the cloud the request most looks like it is for.
    fn not_found<'s>(&'s self, req: &Request<'_>) -> Reply<'s> {
        if let Some(gce) = self.gce.as_ref().filter(|_| wants_gce(req)) {
            return gce.not_found(req);
        }
        if let Some(azure) = self.azure.as_ref().filter(|_| req.has_header("metadata")) {
            return azure.not_found(req);
        }
        if let Some(aws) = &self.aws {
            return aws.not_found(req);
        }
        if let Some(gce) = &self.gce {
            return gce.not_found(req);
        }
        if let Some(azure) = &self.azure {
            return azure.not_found(req);
        }
        Reply::Static(&self.nobody)
    }
}

/// A request that names GCE by its headers.
fn wants_gce(req: &Request<'_>) -> bool {
    req.has_header("metadata-flavor") || req.has_header("x-google-metadata-request")
}

/// The current snapshot, replaceable as a whole while requests are answered from it, and the
/// live state every snapshot of the cell shares.
///
/// Readers take an `Arc` (an atomic increment) per batch of requests; a swap never waits for
/// them and they keep the snapshot they took until they drop it. Writers (reloads, edits,
/// [`SnapshotCell::tick`]) take turns, so a tick cannot put back an older configuration.
#[derive(Debug)]
pub struct SnapshotCell {
    current: std::sync::RwLock<Arc<Snapshot>>,
    live: Arc<Live>,
    writer: Mutex<()>,
}

impl SnapshotCell {
    /// A cell starting with `snapshot` and its live state, settled at the current time.
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotCell::new_at(snapshot, SystemTime::now())
    }

    /// [`SnapshotCell::new`] at `now`: configured relative times count from `now`.
    pub fn new_at(snapshot: Snapshot, now: SystemTime) -> Self {
        let live = Arc::clone(&snapshot.live);
        live.settle(now);
        let snapshot = snapshot.with_live(Arc::clone(&live), now);
        SnapshotCell {
            current: std::sync::RwLock::new(Arc::new(snapshot)),
            live,
            writer: Mutex::new(()),
        }
    }

    /// The snapshot to answer the next requests from.
    pub fn load(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer never panics while holding the lock (it only assigns an Arc), but if
            // one did, the value inside is still a whole snapshot.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The live state (events, faults) of this cell.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Replaces the snapshot; in-flight requests finish with the old one, and requests parked
    /// on a change of it are woken (after the swap, so their re-run sees the new one). The
    /// live state carries over; configured events and faults are replaced only when
    /// `snapshot`'s configuration changes them ([`Live::reseed`]).
    pub fn replace(&self, snapshot: Snapshot) {
        self.replace_at(snapshot, SystemTime::now())
    }

    /// [`SnapshotCell::replace`] at `now`.
    pub fn replace_at(&self, snapshot: Snapshot, now: SystemTime) {
        let _turn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if !Live::same_events(&self.load().config, &snapshot.config) {
            self.live.reseed(&snapshot.config, now);
        }
        let snapshot = snapshot.with_live(Arc::clone(&self.live), now);
        self.store(snapshot);
    }

    /// Brings the snapshot up to the live state at `now`: when GCE's live values changed,
    /// the configuration is rendered again with them (and watchers of the snapshot see a
    /// new one).
    pub fn tick(&self, now: SystemTime) {
        let _turn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.load();
        if self.live.gce_overlay(now) == current.gce_overlay {
            return;
        }
        let config = Config::clone(&current.config);
        let live = Arc::clone(&self.live);
        let overlay = live.gce_overlay(now);
        match Snapshot::build_live(config, &current.keys, &current.source, live, overlay) {
            Ok(s) => self.store(s),
            Err(e) => tracing::error!("cannot render the live GCE values: {e}"),
        }
    }

    /// Swaps `snapshot` in and retires the one replaced. Every replacement goes through here
    /// (reloads, edits, live GCE values), so GCE's `wait_for_change` watchers wake on each.
    fn store(&self, snapshot: Snapshot) {
        let new = Arc::new(snapshot);
        let old = match self.current.write() {
            Ok(mut guard) => std::mem::replace(&mut *guard, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        };
        old.retire();
    }
}
