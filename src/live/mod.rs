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

pub mod aws;
pub mod azure;
pub mod command;
pub mod faults;
pub mod gce;
pub mod ticker;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cloud::aws::timestamp::{format_utc, http_date};
use crate::cloud::Owner;
use crate::config::Config;
use crate::http::Prebuilt;

use self::azure::{AzureEvent, AzureEvents, UnknownEvent};
use self::command::{Command, EventSpec, FaultSpec, MaintenanceEnd};
use self::faults::{Fault, FaultAction, Faults};
use self::gce::{GceMaintenance, GceOverlay};

/// Who put something in the live state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration: replaced when a reload changes it.
    Config,
    /// A `ctl` command: kept across reloads.
    Command,
}

/// What the live state did, for metrics.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Requests answered by a fault rule.
    pub faults_injected: AtomicU64,
    /// Scheduled events approved by `POST` (each id counts).
    pub approvals: AtomicU64,
    /// Events scheduled (configured or by command).
    pub events_scheduled: AtomicU64,
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
        s.gce.prune(now);
        s
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
        drop(s);
        self.counters
            .approvals
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
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
        if action.is_some() {
            self.counters
                .faults_injected
                .fetch_add(1, Ordering::Relaxed);
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

    /// Carries out a command at `now` and says what was done (the text `ctl` prints).
    pub fn apply(&self, command: Command, now: SystemTime) -> Result<String, String> {
        let mut s = self.at(now);
        let mutates = !matches!(command, Command::ListEvents | Command::ListFaults);
        let result = self.apply_locked(&mut s, command, now, Origin::Command);
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
    ) -> Result<String, String> {
        match command {
            Command::Event(spec) => {
                self.counters
                    .events_scheduled
                    .fetch_add(1, Ordering::Relaxed);
                Ok(schedule(s, spec, now, origin))
            }
            Command::CancelEvent(id) => {
                let done = if id == "gce" {
                    s.gce.cancel()
                } else {
                    s.azure.cancel(&id, now) || s.aws.cancel(&id, now)
                };
                if done {
                    Ok(format!("cancelled {id}\n"))
                } else {
                    Err(format!("no current event `{id}` (see event list)"))
                }
            }
            Command::ListEvents => Ok(list_events(s, now)),
            Command::AddFault(spec) => {
                let id = s.faults.add(fault(spec, now, origin));
                self.faults_on.store(true, Ordering::Release);
                Ok(format!("fault {id} added\n"))
            }
            Command::ListFaults => Ok(list_faults(&s.faults)),
            Command::ClearFaults(id) => {
                let n = s.faults.clear(id);
                self.faults_on
                    .store(!s.faults.is_empty(), Ordering::Release);
                match (id, n) {
                    (Some(id), 0) => Err(format!("no fault {id} (see fault list)")),
                    _ => Ok(format!(
                        "{n} fault{} cleared\n",
                        if n == 1 { "" } else { "s" }
                    )),
                }
            }
        }
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

/// Schedules an event; returns what `ctl` prints.
fn schedule(s: &mut State, spec: EventSpec, now: SystemTime, origin: Origin) -> String {
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
            s.azure.insert(event, now, counted);
            format!("azure event {id}\n")
        }
        EventSpec::Spot {
            action,
            time,
            notice,
        } => {
            let time = time.resolve(now);
            s.aws.spot = Some(aws::Spot {
                action: action.clone(),
                time,
                notice: notice.resolve(now),
                origin,
            });
            format!("aws spot {action} at {}\n", format_utc(secs(time)))
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
            s.aws.maintenance.push(aws::Maintenance {
                id: id.clone(),
                code,
                description,
                not_before,
                not_after,
                canceled: false,
                origin,
            });
            format!("aws maintenance {id}\n")
        }
        EventSpec::Lifecycle { state, at } => {
            s.aws.lifecycle.push(aws::Lifecycle {
                state: state.clone(),
                from: at.resolve(now),
                origin,
            });
            format!("aws lifecycle {state}\n")
        }
        EventSpec::GceMaintenance {
            value,
            at,
            duration,
        } => {
            let from = at.resolve(now);
            s.gce.maintenance.push(GceMaintenance {
                value: value.clone(),
                from,
                until: duration.map(|d| from + d),
                origin,
            });
            format!("gce maintenance-event {value}\n")
        }
        EventSpec::GcePreempted { at } => {
            s.gce.preempted = Some((at.resolve(now), origin));
            "gce preempted\n".into()
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

/// `event list`: one line per event, the id first.
fn list_events(s: &State, now: SystemTime) -> String {
    let mut out = String::new();
    for e in s.azure.events() {
        let _ = writeln!(
            out,
            "{} azure {} {:?} notBefore={} duration={}",
            e.id,
            e.event_type,
            e.phase(),
            http_date(secs(e.start())),
            e.duration_secs
        );
    }
    if let Some(spot) = &s.aws.spot {
        let _ = writeln!(
            out,
            "spot aws {} time={} notice={}{}",
            spot.action,
            format_utc(secs(spot.time)),
            format_utc(secs(spot.notice)),
            if spot.visible(now) { " (showing)" } else { "" }
        );
    }
    for m in &s.aws.maintenance {
        let _ = writeln!(
            out,
            "{} aws {} {} notBefore={} notAfter={}",
            m.id,
            m.code,
            m.state(now).as_str(),
            format_utc(secs(m.not_before)),
            format_utc(secs(m.not_after))
        );
    }
    if let Some(state) = s.aws.lifecycle_at(now) {
        let _ = writeln!(out, "lifecycle aws target-lifecycle-state={state}");
    }
    let overlay = s.gce.overlay_at(now);
    if !s.gce.maintenance.is_empty() || s.gce.preempted.is_some() {
        let _ = writeln!(
            out,
            "gce gce maintenance-event={} preempted={}",
            overlay
                .maintenance_event
                .as_deref()
                .unwrap_or("(configured)"),
            if overlay.preempted {
                "TRUE"
            } else {
                "(configured)"
            }
        );
    }
    out
}

/// `fault list`: one line per rule.
fn list_faults(f: &Faults) -> String {
    let mut out = String::new();
    for r in f.rules() {
        let what = match r.action {
            FaultAction::Status {
                status,
                retry_after: Some(ra),
            } => format!("status {status} retry-after {ra}"),
            FaultAction::Status { status, .. } => format!("status {status}"),
            FaultAction::Latency(d) => format!("latency {}ms", d.as_millis()),
            FaultAction::Drop(k) => format!("drop {k:?}").to_lowercase(),
        };
        let _ = writeln!(
            out,
            "{} {}{} {}{}{} hits={}",
            r.id,
            r.cloud
                .map_or(String::new(), |c| format!("{c:?} ").to_lowercase()),
            if r.prefix { "prefix" } else { "path" },
            r.path,
            format_args!(" {what}"),
            r.remaining
                .map_or(String::new(), |n| format!(" remaining={n}")),
            r.hits
        );
    }
    out
}

#[cfg(test)]
mod tests;
