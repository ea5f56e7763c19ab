//! Values fetched off the packet path (upstream tokens, command output), cached until shortly
//! before they expire, with one fetch in flight per key however many callers ask.
//!
//! Contract: [`Fetcher::get`] never blocks and never reads the clock (`now` is passed in). Per
//! key (audience and scopes) it
//! - answers the cached [`Lease`] while it has more than [`MIN_REMAINING`] seconds left;
//! - from the lease's refresh time ([`Lease::refresh_at`]: [`REFRESH_MARGIN`] before expiry,
//!   or half-way for short leases) still answers it but starts a refresh in the background,
//!   so callers never wait on a refresh;
//! - with nothing usable, starts (or joins) the one fetch in flight and answers
//!   [`NoToken::Pending`] with its ticket ([`crate::pending`]);
//! - after a failed fetch answers [`NoToken::Unavailable`] for [`RETRY_AFTER`] seconds (the
//!   retry delay MSAL applies to a 5xx), then tries again.
//!
//! Fetches run on their own threads (a [`Spawn`], replaced by tests), at most
//! [`MAX_FLIGHTS`] at once, for at most [`MAX_KEYS`] keys (audiences come from callers, so a
//! caller cannot make imds-tun fetch without bound). The [`Fetch`] implementation bounds its
//! own time (HTTP and command timeouts); a front door gives up after
//! [`crate::pending::PARK_LIMIT`] regardless, and a late result still fills the cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::source::{NoToken, Unavailable};
use crate::pending::{Flight, Outcome, Ticket};

/// A lease is not handed out with less than this many seconds left.
pub const MIN_REMAINING: u64 = 30;
/// Refresh this long before expiry (at most half the lease's lifetime).
pub const REFRESH_MARGIN: u64 = 300;
/// After a failed fetch, callers get the error this long before the next try.
pub const RETRY_AFTER: u64 = 5;
/// Fetches in flight at once.
pub const MAX_FLIGHTS: usize = 16;
/// Distinct keys remembered.
pub const MAX_KEYS: usize = 256;

/// What one fetch gives: a value and its times (seconds since the Unix epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct Lease<T> {
    pub value: T,
    pub issued_at: u64,
    pub expires_at: u64,
}

impl<T> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("value", &"..")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl<T> Lease<T> {
    /// When a refresh starts: [`REFRESH_MARGIN`] before expiry, or half-way through a lease
    /// shorter than twice that.
    pub fn refresh_at(&self) -> u64 {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        self.expires_at - REFRESH_MARGIN.min(lifetime / 2)
    }

    fn usable(&self, now: u64) -> bool {
        now.saturating_add(MIN_REMAINING) < self.expires_at
    }
}

/// What a fetch is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FetchKey {
    /// Azure resource, Google audience; `""` when none.
    pub audience: String,
    /// Google scopes as the caller sent them; `""` for the defaults.
    pub scopes: String,
}

/// Gets one value, blocking; runs on a fetch thread, never on the packet path. The error is
/// a reason for logs and error bodies, never a secret.
pub trait Fetch<T>: Send + Sync + fmt::Debug + 'static {
    fn fetch(&self, key: &FetchKey) -> Result<Lease<T>, String>;

    /// The `source` label of what it fetches (`imds_tun_tokens_issued_total`): an upstream
    /// token service unless a command says otherwise.
    fn source_kind(&self) -> &'static str {
        "upstream"
    }
}

/// Runs a fetch job off the caller's thread.
pub type Spawn = Arc<dyn Fn(Box<dyn FnOnce() + Send>) + Send + Sync>;

/// A named thread per fetch.
pub fn thread_spawn() -> Spawn {
    Arc::new(|job| {
        if let Err(e) = std::thread::Builder::new()
            .name("imds-tun-fetch".into())
            .spawn(job)
        {
            // The job was dropped unrun: its flight is failed by `Running`'s Drop.
            tracing::warn!(error = %e, "cannot start a fetch thread");
        }
    })
}

struct Slot<T> {
    lease: Option<Lease<T>>,
    flight: Option<Arc<Flight>>,
    retry_at: u64,
    last_error: String,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            lease: None,
            flight: None,
            retry_at: 0,
            last_error: String::new(),
        }
    }
}

struct State<T> {
    slots: HashMap<FetchKey, Slot<T>>,
    flights: usize,
}

struct Inner<T> {
    fetch: Box<dyn Fetch<T>>,
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn with_state<R>(&self, f: impl FnOnce(&mut State<T>) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            // Every update leaves the map whole; a panic elsewhere must not stop tokens.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The cache and its fetches, for one identity.
pub struct Fetcher<T> {
    inner: Arc<Inner<T>>,
    spawn: Spawn,
}

impl<T> fmt::Debug for Fetcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("fetch", &self.inner.fetch)
            .finish_non_exhaustive()
    }
}

/// A fetch job's hold on its flight: whatever happens to the job (done, panicked, never run),
/// the flight ends and the flight count goes down.
struct Running<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
    key: FetchKey,
    flight: Arc<Flight>,
    result: Option<Result<Lease<T>, String>>,
}

impl<T: Clone + Send + 'static> Drop for Running<T> {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err("the fetch did not run to completion".into()));
        let outcome = self.inner.with_state(|s| {
            s.flights = s.flights.saturating_sub(1);
            let slot = s.slots.get_mut(&self.key);
            match (result, slot) {
                (Ok(lease), Some(slot)) => {
                    // A late result (after a time-out) still serves the next caller.
                    if slot
                        .lease
                        .as_ref()
                        .is_none_or(|l| l.expires_at <= lease.expires_at)
                    {
                        slot.lease = Some(lease);
                    }
                    Outcome::Done
                }
                (Ok(_), None) => Outcome::Done,
                (Err(e), Some(slot)) => {
                    slot.last_error = e.clone();
                    Outcome::Failed(e)
                }
                (Err(e), None) => Outcome::Failed(e),
            }
        });
        if let Outcome::Failed(e) = &outcome {
            tracing::warn!(key = ?self.key, error = %e, "fetch failed");
        }
        self.flight.finish(outcome);
    }
}

impl<T: Clone + Send + 'static> Fetcher<T> {
    pub fn new(fetch: Box<dyn Fetch<T>>) -> Self {
        Fetcher::with_spawn(fetch, thread_spawn())
    }

    pub fn with_spawn(fetch: Box<dyn Fetch<T>>, spawn: Spawn) -> Self {
        Fetcher {
            inner: Arc::new(Inner {
                fetch,
                state: Mutex::new(State {
                    slots: HashMap::new(),
                    flights: 0,
                }),
            }),
            spawn,
        }
    }

    /// The `source` label of its fetches ([`Fetch::source_kind`]).
    pub fn source_kind(&self) -> &'static str {
        self.inner.fetch.source_kind()
    }

    /// The lease for `key` at `now` (see the module docs).
    pub fn get(&self, key: &FetchKey, now: u64) -> Result<Lease<T>, NoToken> {
        let mut start: Option<Arc<Flight>> = None;
        let answer = self.inner.with_state(|s| {
            if !s.slots.contains_key(key) && s.slots.len() >= MAX_KEYS {
                s.slots.retain(|_, slot| {
                    slot.flight.is_some() || slot.lease.as_ref().is_some_and(|l| l.usable(now))
                });
                if s.slots.len() >= MAX_KEYS {
                    return Err(Unavailable("too many distinct token requests".into()).into());
                }
            }
            let can_fly = s.flights < MAX_FLIGHTS;
            let slot = s.slots.entry(key.clone()).or_default();
            // A finished flight is forgotten here; a failure starts the retry delay.
            if let Some(outcome) = slot.flight.as_ref().and_then(|f| f.outcome()) {
                slot.flight = None;
                if let Outcome::Failed(reason) = outcome {
                    slot.retry_at = now + RETRY_AFTER;
                    slot.last_error = reason;
                }
            }
            let may_start = slot.flight.is_none() && now >= slot.retry_at && can_fly;
            if let Some(lease) = slot.lease.as_ref().filter(|l| l.usable(now)) {
                if now >= lease.refresh_at() && may_start {
                    let f = Flight::new();
                    slot.flight = Some(Arc::clone(&f));
                    start = Some(f);
                }
                return Ok(lease.clone());
            }
            if let Some(f) = &slot.flight {
                return Err(NoToken::Pending(Ticket::new(f)));
            }
            if !may_start {
                let reason = if now < slot.retry_at {
                    slot.last_error.clone()
                } else {
                    "too many fetches in flight".to_string()
                };
                return Err(Unavailable(reason).into());
            }
            let f = Flight::new();
            slot.flight = Some(Arc::clone(&f));
            let ticket = Ticket::new(&f);
            start = Some(f);
            Err(NoToken::Pending(ticket))
        });
        if let Some(flight) = start {
            self.start(key.clone(), flight);
        }
        answer
    }

    /// Runs one fetch for `key` on a fetch thread; the lock is not held.
    fn start(&self, key: FetchKey, flight: Arc<Flight>) {
        self.inner.with_state(|s| s.flights += 1);
        let mut running = Running {
            inner: Arc::clone(&self.inner),
            key,
            flight,
            result: None,
        };
        (self.spawn)(Box::new(move || {
            running.result = Some(running.inner.fetch.fetch(&running.key));
            drop(running);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Leases of 3600 s from a simulated clock; counts fetches; fails while `fail` is set.
    #[derive(Debug, Default)]
    struct Clocked {
        now: AtomicU64,
        calls: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Fetch<String> for Arc<Clocked> {
        fn fetch(&self, key: &FetchKey) -> Result<Lease<String>, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err("authority said no".into());
            }
            let now = self.now.load(Ordering::SeqCst);
            Ok(Lease {
                value: format!("{}-{n}", key.audience),
                issued_at: now,
                expires_at: now + 3600,
            })
        }
    }

    /// Jobs queued until the test runs them: a fetch "in flight" for as long as it likes.
    #[derive(Default)]
    struct Queue(Mutex<Vec<Box<dyn FnOnce() + Send>>>);

    impl Queue {
        fn spawn(self: &Arc<Self>) -> Spawn {
            let q = Arc::clone(self);
            Arc::new(move |job| q.0.lock().unwrap_or_else(|p| p.into_inner()).push(job))
        }
        fn run_all(&self) -> usize {
            let jobs = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
            let n = jobs.len();
            jobs.into_iter().for_each(|j| j());
            n
        }
    }

    fn key(aud: &str) -> FetchKey {
        FetchKey {
            audience: aud.into(),
            scopes: String::new(),
        }
    }

    fn setup() -> (Arc<Clocked>, Arc<Queue>, Fetcher<String>) {
        let clock = Arc::new(Clocked::default());
        let queue = Arc::new(Queue::default());
        let fetcher = Fetcher::with_spawn(Box::new(Arc::clone(&clock)), queue.spawn());
        (clock, queue, fetcher)
    }

    fn value(r: Result<Lease<String>, NoToken>) -> String {
        match r {
            Ok(l) => l.value,
            Err(NoToken::Pending(_)) => "pending".into(),
            Err(NoToken::Unavailable(u)) => format!("unavailable: {}", u.0),
        }
    }

    #[test]
    fn one_fetch_for_many_callers_then_cached_until_the_refresh_time() {
        let (clock, queue, f) = setup();
        let t0 = 1_000_000;
        clock.now.store(t0, Ordering::SeqCst);
        let tickets: Vec<_> = (0..100)
            .map(|_| match f.get(&key("a"), t0) {
                Err(NoToken::Pending(t)) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(queue.run_all(), 1, "one fetch in flight for 100 callers");
        assert!(tickets.iter().all(Ticket::is_done));
        assert_eq!(value(f.get(&key("a"), t0)), "a-0");
        // Cached up to the refresh time: 300 s before expiry.
        assert_eq!(value(f.get(&key("a"), t0 + 3299)), "a-0");
        assert_eq!(queue.run_all(), 0);
        // From then on the old lease is served while one refresh runs in the background.
        clock.now.store(t0 + 3300, Ordering::SeqCst);
        assert_eq!(value(f.get(&key("a"), t0 + 3300)), "a-0");
        assert_eq!(value(f.get(&key("a"), t0 + 3301)), "a-0");
        assert_eq!(queue.run_all(), 1);
        assert_eq!(value(f.get(&key("a"), t0 + 3302)), "a-1");
        assert_eq!(clock.calls.load(Ordering::SeqCst), 2);
        // Another key is another fetch.
        assert_eq!(value(f.get(&key("b"), t0 + 3302)), "pending");
        queue.run_all();
        assert_eq!(value(f.get(&key("b"), t0 + 3302)), "b-2");
    }

    #[test]
    fn an_expired_lease_is_not_served_and_a_failure_waits_before_retrying() {
        let (clock, queue, f) = setup();
        let t0 = 2_000_000;
        clock.now.store(t0, Ordering::SeqCst);
        f.get(&key("a"), t0).err();
        queue.run_all();
        assert_eq!(value(f.get(&key("a"), t0)), "a-0");
        // Nobody asked during the refresh window; at expiry - 30 s the lease is not usable.
        clock.fail.store(true, Ordering::SeqCst);
        let late = t0 + 3600 - MIN_REMAINING;
        let ticket = match f.get(&key("a"), late) {
            Err(NoToken::Pending(t)) => t,
            other => panic!("{other:?}"),
        };
        queue.run_all();
        assert!(ticket.is_done());
        assert_eq!(
            value(f.get(&key("a"), late)),
            "unavailable: authority said no"
        );
        assert_eq!(
            value(f.get(&key("a"), late + RETRY_AFTER - 1)),
            "unavailable: authority said no"
        );
        assert_eq!(queue.run_all(), 0, "no retry within the delay");
        clock.fail.store(false, Ordering::SeqCst);
        clock.now.store(late + RETRY_AFTER, Ordering::SeqCst);
        assert_eq!(value(f.get(&key("a"), late + RETRY_AFTER)), "pending");
        queue.run_all();
        assert_eq!(value(f.get(&key("a"), late + RETRY_AFTER)), "a-2");
    }

    #[test]
    fn a_timed_out_flight_fails_its_waiters_and_a_late_result_still_counts() {
        let (clock, queue, f) = setup();
        clock.now.store(100, Ordering::SeqCst);
        let Err(NoToken::Pending(ticket)) = f.get(&key("a"), 100) else {
            panic!("not pending")
        };
        ticket.time_out();
        assert!(value(f.get(&key("a"), 100)).starts_with("unavailable: timed out"));
        queue.run_all();
        assert_eq!(value(f.get(&key("a"), 101)), "a-0");
    }

    #[test]
    fn keys_and_flights_are_bounded() {
        let (_clock, queue, f) = setup();
        for i in 0..MAX_FLIGHTS {
            assert_eq!(value(f.get(&key(&format!("k{i}")), 10)), "pending");
        }
        assert_eq!(
            value(f.get(&key("one-more"), 10)),
            "unavailable: too many fetches in flight"
        );
        queue.run_all();
        for i in 0..(MAX_KEYS + 5) {
            f.get(&key(&format!("x{i}")), 10).ok();
            queue.run_all();
        }
        let keys = f.inner.with_state(|s| s.slots.len());
        assert!(keys <= MAX_KEYS, "{keys}");
        let dropped = Fetcher::with_spawn(Box::new(Arc::new(Clocked::default())), Arc::new(drop));
        let Err(NoToken::Pending(t)) = dropped.get(&key("a"), 10) else {
            panic!("not pending")
        };
        assert!(t.is_done(), "a job that never ran still ends its flight");
        assert_eq!(dropped.inner.with_state(|s| s.flights), 0);
    }
}
