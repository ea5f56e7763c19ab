//! Live state: what changes while the instance runs (scheduled events, spot and maintenance
//! notices, injected failures), kept beside the immutable [`crate::snapshot::Snapshot`].
//!
//! Contract: one [`Live`] belongs to a [`crate::snapshot::SnapshotCell`] and is handed from
//! snapshot to snapshot, so a configuration reload keeps it, unless the reload changes the
//! configured events or faults: then the configured ones are replaced by the new
//! configuration's and those added by command stay ([`Live::reseed`]). The state itself is
//! pure, with time passed in ([`azure`], [`aws`], [`gce`], [`faults`]); [`Live`] puts it
//! behind one mutex and caches what it renders:
//! - Azure's scheduled-events document is rendered once per `DocumentIncarnation` and handed
//!   out as a reference-counted [`Prebuilt`]: polling it allocates nothing.
//! - A request checks for faults with one atomic load while no fault rule exists.
//! - GCE's `maintenance-event` and `preempted` are part of recursive documents and ETags, so
//!   they are rendered into the snapshot: when they change, the cell builds a new snapshot
//!   ([`crate::snapshot::SnapshotCell::tick`]). That replacement is also the hook by which
//!   `wait_for_change` watchers of the snapshot see the change.
//!
//! Configured events use relative times (`+5m`) counted from the moment the state first sees
//! the clock: the cell's creation or the reload ([`Live::settle`]); a snapshot built without a
//! cell (tests, golden files) counts them from its first request.
//!
//! [`Live::next_change`] says when the state next changes by itself; [`ticker`] sleeps until
//! then (or until a command changes it) and ticks the cell.
//!
//! Commands come from the configuration and from `imds-tun ctl event|fault` ([`command`];
//! [`Live::apply`] answers with JSON objects `ctl` prints). Every event goes through the same
//! steps ([`steps`]: scheduled, started, completed or cancelled), recorded where the per-cloud
//! state learns them and counted once each, with injected faults and approvals, in
//! [`counted`] (the metrics registry and `ctl status`).

pub mod aws;
pub mod azure;
pub mod command;
pub mod counted;
pub mod faults;
pub mod gce;
pub mod steps;
pub mod ticker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::cloud::aws::timestamp::format_utc;
use crate::cloud::Owner;
use crate::config::Config;
use crate::http::Prebuilt;

use self::azure::{AzureEvent, AzureEvents, UnknownEvent};
use self::command::{Command, EventSpec, FaultSpec, MaintenanceEnd};
pub use self::counted::LiveCounters;
use self::faults::{Fault, FaultAction, Faults};
use self::gce::{GceMaintenance, GceOverlay, Preempted};
use self::steps::{Phase, Stage, Step};

/// Who put something in the live state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration: replaced when a reload changes it.
    Config,
    /// A `ctl` command: kept across reloads.
    Command,
}

#[derive(Debug)]
struct State {
    azure: AzureEvents,
    azure_rendered: Option<(u64, Prebuilt)>,
    aws: aws::AwsEvents,
    gce: gce::GceEvents,
    faults: Faults,
    /// The VM name an Azure event names when given no resources.
    vm_name: String,
    /// Configured commands not yet applied: they wait for the first `now`.
    pending: Option<Vec<Command>>,
    /// Makes event ids unique within this process.
    ids_made: u64,
}

/// The live state of one running instance.
#[derive(Debug)]
pub struct Live {
    state: Mutex<State>,
    /// True while any fault rule exists.
    faults_on: AtomicBool,
    /// Counts every change made by a command or by time; the ticker waits on `changed`.
    generation: Mutex<u64>,
    changed: Condvar,
    pub counters: LiveCounters,
}

impl Live {
    /// The state `config` starts with (applied at the first [`Live::settle`]).
    pub fn new(config: &Config) -> Live {
        let faults_on = !config.faults.is_empty();
        Live {
            state: Mutex::new(State {
                azure: AzureEvents::new(config.azure.scheduled_events.document_incarnation),
                azure_rendered: None,
                aws: Default::default(),
                gce: Default::default(),
                faults: Faults::default(),
                vm_name: vm_name(config),
                pending: Some(command::from_config(config)),
                ids_made: 0,
            }),
            faults_on: AtomicBool::new(faults_on),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            counters: LiveCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is complete before anything that could panic, so the
        // state is whole after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `now`: configured commands applied, time-driven steps taken.
    fn at(&self, now: SystemTime) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        if let Some(pending) = s.pending.take() {
            for c in pending {
                // Validated configuration: these cannot fail.
                let _ = self.apply_locked(&mut s, c, now, Origin::Config);
            }
        }
        s.azure.advance(now);
        s.aws.advance(now);
        s.gce.advance(now);
        self.count_steps(&mut s);
        s
    }

    /// Counts the steps events took in the last operation on `s`.
    fn count_steps(&self, s: &mut State) {
        for steps in [s.azure.take_steps(), s.aws.take_steps(), s.gce.take_steps()] {
            if !steps.is_empty() {
                self.counters.steps(&steps);
            }
        }
    }

    /// Applies the configured state now, if not done yet (the cell calls it at creation and
    /// reload, so relative times count from then).
    pub fn settle(&self, now: SystemTime) {
        drop(self.at(now));
    }

    /// A reload changed the configured events or faults: replace the configured ones by
    /// `config`'s, counted from `now`; those added by command stay.
    pub fn reseed(&self, config: &Config, now: SystemTime) {
        let mut s = self.at(now);
        s.azure.remove_origin(Origin::Config);
        s.azure.bump();
        s.aws.remove_origin(Origin::Config);
        s.gce.remove_origin(Origin::Config);
        s.faults.remove_origin(Origin::Config);
        s.vm_name = vm_name(config);
        s.pending = Some(command::from_config(config));
        drop(s);
        self.settle(now);
        self.changed();
    }

    /// Whether two configurations configure the same events and faults.
    pub fn same_events(a: &Config, b: &Config) -> bool {
        a.azure.scheduled_events == b.azure.scheduled_events
            && a.aws.events == b.aws.events
            && a.gce.events == b.gce.events
            && a.faults == b.faults
    }

    /// Azure's document at `now`, rendered by `render` when it changed since last asked.
    pub fn azure_document(
        &self,
        now: SystemTime,
        render: impl FnOnce(&AzureEvents) -> Prebuilt,
    ) -> Prebuilt {
        let mut s = self.at(now);
        let incarnation = s.azure.incarnation();
        if let Some((i, doc)) = &s.azure_rendered {
            if *i == incarnation {
                return doc.clone();
            }
        }
        let doc = render(&s.azure);
        s.azure_rendered = Some((incarnation, doc.clone()));
        doc
    }

    /// Approves (starts) the named events at `now` [SE]: all, or none when one is unknown.
    pub fn azure_approve(&self, ids: &[&str], now: SystemTime) -> Result<(), UnknownEvent> {
        let mut s = self.at(now);
        let before = s.azure.incarnation();
        s.azure.approve(ids, now)?;
        let changed = s.azure.incarnation() != before;
        self.count_steps(&mut s);
        drop(s);
        self.counters.approvals(ids.len() as u64);
        if changed {
            self.changed();
        }
        Ok(())
    }

    /// Reads the AWS events at `now`.
    pub fn aws<T>(&self, now: SystemTime, read: impl FnOnce(&aws::AwsEvents) -> T) -> T {
        read(&self.at(now).aws)
    }

    /// What GCE shows at `now`.
    pub fn gce_overlay(&self, now: SystemTime) -> GceOverlay {
        self.at(now).gce.overlay_at(now)
    }

    /// The fault for a request to `path` (owned by `owner`) at `now`, counted against its
    /// rule. One atomic load when no rule exists.
    pub fn fault(&self, owner: Owner, path: &str, now: SystemTime) -> Option<FaultAction> {
        if !self.faults_on.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.at(now);
        let action = s.faults.take(owner, path, now);
        self.faults_on
            .store(!s.faults.is_empty(), Ordering::Release);
        drop(s);
        if let Some(action) = &action {
            self.counters.fault(owner, action);
        }
        action
    }

    /// The fault a request would get, without counting it (a request that will wait for a
    /// token before it is answered late is counted when it is answered).
    pub fn peek_fault(&self, owner: Owner, path: &str, now: SystemTime) -> Option<FaultAction> {
        if !self.faults_on.load(Ordering::Acquire) {
            return None;
        }
        self.at(now).faults.peek(owner, path, now)
    }

    /// Carries out a command at `now` and says what was done, as `ctl` shows it: the event
    /// or fault rule added (one object), the list asked for (an array of them),
    /// `{"cancelled": ID}` or `{"cleared": N}`. Each object has an `id` (what `event cancel`
    /// and `fault clear` take), then its fields; times are RFC 3339 UTC.
    pub fn apply(&self, command: Command, now: SystemTime) -> Result<Value, String> {
        let mut s = self.at(now);
        let mutates = !matches!(command, Command::ListEvents | Command::ListFaults);
        let result = self.apply_locked(&mut s, command, now, Origin::Command);
        self.count_steps(&mut s);
        drop(s);
        if mutates && result.is_ok() {
            self.changed();
        }
        result
    }

    fn apply_locked(
        &self,
        s: &mut State,
        command: Command,
        now: SystemTime,
        origin: Origin,
    ) -> Result<Value, String> {
        match command {
            Command::Event(spec) => {
                self.counters.steps(&[scheduled_step(&spec)]);
                Ok(schedule(s, spec, now, origin))
            }
            Command::CancelEvent(id) => {
                let done = if id == "gce" {
                    s.gce.cancel()
                } else {
                    s.azure.cancel(&id, now) || s.aws.cancel(&id, now)
                };
                if done {
                    Ok(json!({ "cancelled": id }))
                } else {
                    Err(format!("no current event `{id}` (see event list)"))
                }
            }
            Command::ListEvents => Ok(Value::Array(list_events(s, now))),
            Command::AddFault(spec) => {
                let id = s.faults.add(fault(spec, now, origin));
                self.faults_on.store(true, Ordering::Release);
                let added = s.faults.rules().iter().find(|r| r.id == id);
                Ok(added.map_or(Value::Null, fault_value))
            }
            Command::ListFaults => Ok(Value::Array(
                s.faults.rules().iter().map(fault_value).collect(),
            )),
            Command::ClearFaults(id) => {
                let n = s.faults.clear(id);
                self.faults_on
                    .store(!s.faults.is_empty(), Ordering::Release);
                match (id, n) {
                    (Some(id), 0) => Err(format!("no fault {id} (see fault list)")),
                    _ => Ok(json!({ "cleared": n })),
                }
            }
        }
    }

    /// How many events are current (not gone, not cancelled) and how many fault rules stand,
    /// at `now` (`ctl status`).
    pub fn current(&self, now: SystemTime) -> (usize, usize) {
        let s = self.at(now);
        let aws = s.aws.spot.iter().filter(|x| x.seen != Phase::Gone).count()
            + s.aws
                .maintenance
                .iter()
                .filter(|m| !m.canceled && m.seen != Phase::Gone)
                .count();
        let gce = s.gce.maintenance.len() + s.gce.preempted.iter().count();
        (s.azure.events().len() + aws + gce, s.faults.rules().len())
    }

    /// When the state next changes by itself (an event starts or ends, a notice appears, a
    /// fault's time is up).
    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        let s = self.at(now);
        [
            s.azure.next_change(),
            s.aws.next_change(now),
            s.gce.next_change(now),
            s.faults.next_change(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Counts a change and wakes whoever waits for one ([`ticker`]).
    fn changed(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.changed.notify_all();
    }

    /// How many changes commands made so far.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the generation differs from `seen` or `timeout` passes; returns the
    /// generation.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// The VM's name, for events that name no resources.
fn vm_name(config: &Config) -> String {
    config
        .azure
        .instance
        .compute
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub(crate) fn secs(t: SystemTime) -> i64 {
    i64::try_from(crate::identity::unix_secs(t)).unwrap_or(i64::MAX)
}

/// A fresh 64-bit value for ids: the time and a counter, mixed (splitmix64). Ids need to be
/// unique, not secret.
fn next_id_bits(s: &mut State, now: SystemTime) -> u64 {
    s.ids_made += 1;
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ s.ids_made.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A UUID-shaped event id (version 4 layout).
fn new_uuid(s: &mut State, now: SystemTime) -> String {
    let a = next_id_bits(s, now);
    let b = next_id_bits(s, now);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// The description Azure gives each event type [SE].
fn azure_description(event_type: &str) -> &'static str {
    match event_type {
        "Freeze" => {
            "Virtual machine is being paused because of a memory-preserving Live Migration \
             operation."
        }
        "Reboot" => "Virtual machine is going to be restarted as requested by authorized user.",
        "Redeploy" => "Virtual machine is going to be moved to another host.",
        "Preempt" => "Virtual machine is being evicted.",
        _ => "Virtual machine is going to be deleted.",
    }
}

/// The step an event takes when scheduled.
fn scheduled_step(spec: &EventSpec) -> Step {
    let (cloud, kind) = match spec {
        EventSpec::Azure { event_type, .. } => ("azure", azure::kind(event_type)),
        EventSpec::Spot { .. } => ("aws", "spot"),
        EventSpec::Maintenance { .. } => ("aws", "maintenance"),
        EventSpec::Lifecycle { .. } => ("aws", "lifecycle"),
        EventSpec::GceMaintenance { .. } => ("gce", "maintenance-event"),
        EventSpec::GcePreempted { .. } => ("gce", "preempted"),
    };
    Step {
        cloud,
        kind,
        stage: Stage::Scheduled,
    }
}

/// Schedules an event; returns it as `event list` shows it.
fn schedule(s: &mut State, spec: EventSpec, now: SystemTime, origin: Origin) -> Value {
    let counted = origin == Origin::Command;
    match spec {
        EventSpec::Azure {
            id,
            event_type,
            resources,
            description,
            source,
            duration_secs,
            not_before,
            started,
        } => {
            let id = id.unwrap_or_else(|| new_uuid(s, now));
            let resources = if resources.is_empty() {
                vec![s.vm_name.clone()]
            } else {
                resources
            };
            let description =
                description.unwrap_or_else(|| azure_description(&event_type).to_string());
            let mut event = AzureEvent::new(
                id.clone(),
                event_type,
                resources,
                description,
                source,
                duration_secs,
                not_before.resolve(now),
                origin,
            );
            if started {
                event.approved = Some(now);
            }
            // An event already over when added is not inserted: show it as such.
            let mut over = azure_value(&event);
            over["status"] = Stage::Completed.label().into();
            s.azure.insert(event, now, counted);
            s.azure
                .events()
                .iter()
                .find(|e| e.id == id)
                .map_or(over, azure_value)
        }
        EventSpec::Spot {
            action,
            time,
            notice,
        } => {
            // A new interruption replaces the one pending.
            s.aws.cancel("spot", now);
            let spot = aws::Spot {
                action,
                time: time.resolve(now),
                notice: notice.resolve(now),
                origin,
                seen: Phase::Scheduled,
            };
            let shown = spot_value(&spot, now);
            s.aws.spot = Some(spot);
            shown
        }
        EventSpec::Maintenance {
            id,
            code,
            description,
            not_before,
            end,
        } => {
            let id = id.unwrap_or_else(|| {
                let bits = next_id_bits(s, now);
                // 17 hex digits, the first 0, as EC2's ids look.
                format!("instance-event-{bits:017x}")
            });
            let not_before = not_before.resolve(now);
            let not_after = match end {
                MaintenanceEnd::At(w) => w.resolve(now),
                MaintenanceEnd::After(d) => not_before + d,
            };
            let description = description.unwrap_or_else(|| match code.as_str() {
                "system-reboot" | "instance-reboot" => "scheduled reboot".into(),
                "instance-stop" | "instance-retirement" => {
                    "The instance is running on degraded hardware".into()
                }
                _ => "scheduled maintenance".into(),
            });
            let m = aws::Maintenance {
                id,
                code,
                description,
                not_before,
                not_after,
                canceled: false,
                origin,
                seen: Phase::Scheduled,
            };
            let shown = maintenance_value(&m, now);
            s.aws.maintenance.push(m);
            shown
        }
        EventSpec::Lifecycle { state, at } => {
            let l = aws::Lifecycle {
                state,
                from: at.resolve(now),
                origin,
                seen: Phase::Scheduled,
            };
            let shown = lifecycle_value(&l, now);
            s.aws.lifecycle.push(l);
            shown
        }
        EventSpec::GceMaintenance {
            value,
            at,
            duration,
        } => {
            let from = at.resolve(now);
            let m = GceMaintenance {
                value,
                from,
                until: duration.map(|d| from + d),
                origin,
                seen: Phase::Scheduled,
            };
            let shown = gce_maintenance_value(&m, now);
            s.gce.maintenance.push(m);
            shown
        }
        EventSpec::GcePreempted { at } => {
            let p = Preempted {
                at: at.resolve(now),
                origin,
                seen: Phase::Scheduled,
            };
            s.gce.preempted = Some(p);
            preempted_value(&p, now)
        }
    }
}

fn fault(spec: FaultSpec, now: SystemTime, origin: Origin) -> Fault {
    Fault {
        id: 0,
        cloud: spec.cloud,
        path: spec.path,
        prefix: spec.prefix,
        action: spec.action,
        remaining: spec.count,
        until: spec.lasts.map(|d| now + d),
        origin,
        hits: 0,
    }
}

fn utc(t: SystemTime) -> Value {
    format_utc(secs(t)).into()
}

/// One event as `ctl` shows it: `id`, `cloud`, `type`, `status`, then its own fields.
fn event_value(
    id: &str,
    cloud: &str,
    kind: &str,
    phase: Phase,
    fields: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let stage = match phase {
        Phase::Scheduled => Stage::Scheduled,
        Phase::Started => Stage::Started,
        Phase::Gone => Stage::Completed,
    };
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("cloud".into(), cloud.into());
    m.insert("type".into(), kind.into());
    m.insert("status".into(), stage.label().into());
    m.extend(fields.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::Object(m)
}

fn azure_value(e: &AzureEvent) -> Value {
    event_value(
        &e.id,
        "azure",
        &e.event_type,
        e.phase(),
        [
            ("notBefore", utc(e.start())),
            ("duration", e.duration_secs.into()),
            ("resources", e.resources.join(",").into()),
        ],
    )
}

fn spot_value(spot: &aws::Spot, now: SystemTime) -> Value {
    event_value(
        "spot",
        "aws",
        "spot",
        spot.phase(now),
        [
            ("action", spot.action.as_str().into()),
            ("notice", utc(spot.notice)),
            ("time", utc(spot.time)),
        ],
    )
}

fn maintenance_value(m: &aws::Maintenance, now: SystemTime) -> Value {
    let mut v = event_value(
        &m.id,
        "aws",
        "maintenance",
        steps::phase_between(now, m.not_before, Some(m.not_after)),
        [
            ("code", m.code.as_str().into()),
            ("notBefore", utc(m.not_before)),
            ("notAfter", utc(m.not_after)),
        ],
    );
    if m.canceled {
        v["status"] = Stage::Cancelled.label().into();
    }
    v
}

fn lifecycle_value(l: &aws::Lifecycle, now: SystemTime) -> Value {
    event_value(
        "lifecycle",
        "aws",
        "lifecycle",
        steps::phase_between(now, l.from, None),
        [("state", l.state.as_str().into()), ("at", utc(l.from))],
    )
}

fn gce_maintenance_value(m: &GceMaintenance, now: SystemTime) -> Value {
    let mut fields = vec![("value", m.value.as_str().into()), ("at", utc(m.from))];
    fields.extend(m.until.map(|u| ("until", utc(u))));
    event_value(
        "gce",
        "gce",
        "maintenance-event",
        steps::phase_between(now, m.from, m.until),
        fields,
    )
}

fn preempted_value(p: &Preempted, now: SystemTime) -> Value {
    event_value(
        "gce",
        "gce",
        "preempted",
        steps::phase_between(now, p.at, None),
        [("at", utc(p.at))],
    )
}

/// `event list`: every event, Azure's, then AWS's (spot, maintenance with its history,
/// lifecycle values), then GCE's.
fn list_events(s: &State, now: SystemTime) -> Vec<Value> {
    let mut out: Vec<Value> = s.azure.events().iter().map(azure_value).collect();
    out.extend(s.aws.spot.iter().map(|x| spot_value(x, now)));
    out.extend(s.aws.maintenance.iter().map(|m| maintenance_value(m, now)));
    out.extend(s.aws.lifecycle.iter().map(|l| lifecycle_value(l, now)));
    out.extend(
        s.gce
            .maintenance
            .iter()
            .map(|m| gce_maintenance_value(m, now)),
    );
    out.extend(s.gce.preempted.iter().map(|p| preempted_value(p, now)));
    out
}

/// One fault rule as `ctl` shows it.
fn fault_value(r: &Fault) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), r.id.into());
    let cloud = r.cloud.map_or("any", counted::owner_label);
    m.insert("cloud".into(), cloud.into());
    m.insert(
        (if r.prefix { "prefix" } else { "path" }).into(),
        r.path.as_str().into(),
    );
    match r.action {
        FaultAction::Status {
            status,
            retry_after,
        } => {
            m.insert("status".into(), status.into());
            if let Some(ra) = retry_after {
                m.insert("retryAfter".into(), ra.into());
            }
        }
        FaultAction::Latency(d) => {
            m.insert("latency".into(), format!("{}ms", d.as_millis()).into());
        }
        FaultAction::Drop(k) => {
            m.insert("drop".into(), format!("{k:?}").to_lowercase().into());
        }
    }
    if let Some(n) = r.remaining {
        m.insert("remaining".into(), n.into());
    }
    if let Some(u) = r.until {
        m.insert("until".into(), utc(u));
    }
    m.insert("hits".into(), r.hits.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests;
