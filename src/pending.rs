//! Parked requests: work in flight off the packet path, and the wake-up of the front door that
//! waits for it.
//!
//! Contract: a [`Flight`] is one piece of work that may block (an upstream token fetch, a
//! credential command) running on a background thread. Whoever needs its result gets a
//! [`Ticket`] and does not wait on it: a cloud answers [`crate::http::Reply::Pending`], the
//! front door keeps the request (unconsumed, so later pipelined requests stay behind it and
//! order is kept), registers a [`Wake`] with [`Ticket::on_done`], and re-runs the request when
//! woken. The re-run finds the result in the source's cache (or its failure, which the cloud
//! answers as its "source unavailable" error).
//!
//! Bound: a front door waits at most [`Ticket::limit`] ([`PARK_LIMIT`] for work), counted from
//! the first time the request parked (a re-run that parks the same request again keeps that
//! deadline); then it calls [`Ticket::time_out`] and re-runs the request with
//! [`crate::cloud::RequestContext::wait_over`] set. For work, `time_out` ends the flight as
//! failed for every waiter (a later result from the thread still fills the cache for the next
//! request), and the re-run gets the error.
//!
//! Changes: a [`Ticket::change`] waits on a flight that ends when the answer may have changed
//! (a snapshot replaced, a guest attribute written): GCE's hanging GETs
//! (`wait_for_change=true`). Its limit is the request's own `timeout_sec`; timing out does not
//! end the shared flight (other watchers keep waiting), and the re-run with `wait_over`
//! answers the current value. A parked request is no thread: it is a ticket in a connection's
//! state, and one waker per front door (the engine's eventfd) serves every ticket of a flight.
//!
//! Invariants: [`Flight::finish`] and [`Ticket::time_out`] complete a flight at most once; every
//! registered waker is woken exactly once, after completion, and a waker registered after
//! completion is woken at once, so no wake-up is lost.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a front door keeps a request parked before answering the error.
pub const PARK_LIMIT: Duration = Duration::from_secs(15);

/// Something a completed flight wakes: an eventfd the engine polls, a tokio `Notify`.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

impl Wake for tokio::sync::Notify {
    fn wake(&self) {
        // A stored permit covers a waker that is not waiting yet.
        self.notify_one();
    }
}

/// How a flight ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Why not (never a secret).
    Failed(String),
}

#[derive(Default)]
struct FlightState {
    outcome: Option<Outcome>,
    wakers: Vec<Arc<dyn Wake>>,
}

/// One piece of work in flight, shared by the thread doing it and every waiting request.
#[derive(Default)]
pub struct Flight {
    state: Mutex<FlightState>,
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("outcome", &self.outcome())
            .finish_non_exhaustive()
    }
}

impl Flight {
    pub fn new() -> Arc<Flight> {
        Arc::new(Flight::default())
    }

    /// Ends the flight (first call wins) and wakes every waiter.
    pub fn finish(&self, outcome: Outcome) {
        let wakers = self.with_state(|s| {
            if s.outcome.is_some() {
                return Vec::new();
            }
            s.outcome = Some(outcome);
            std::mem::take(&mut s.wakers)
        });
        for w in wakers {
            w.wake();
        }
    }

    /// How it ended, or `None` while it runs.
    pub fn outcome(&self) -> Option<Outcome> {
        self.with_state(|s| s.outcome.clone())
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut FlightState) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            // The state is whole after any panic: every write to it is a single assignment.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// What a ticket waits for, which decides what its time limit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Work off the packet path; at the limit the flight fails for everyone.
    Work,
    /// A change; at the limit the waiter alone stops waiting.
    Change,
}

/// A waiting request's handle on a [`Flight`].
#[derive(Clone, Debug)]
pub struct Ticket {
    flight: Arc<Flight>,
    limit: Duration,
    waiting: Waiting,
}

impl Ticket {
    /// A ticket on work in flight, waited for at most [`PARK_LIMIT`].
    pub fn new(flight: &Arc<Flight>) -> Ticket {
        Ticket {
            flight: Arc::clone(flight),
            limit: PARK_LIMIT,
            waiting: Waiting::Work,
        }
    }

    /// A ticket on a change (the flight ends when the answer may differ), waited for at most
    /// `limit`.
    pub fn change(flight: &Arc<Flight>, limit: Duration) -> Ticket {
        Ticket {
            flight: Arc::clone(flight),
            limit,
            waiting: Waiting::Change,
        }
    }

    /// The longest a front door keeps the request parked, from its first park.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn is_done(&self) -> bool {
        self.flight.outcome().is_some()
    }

    /// Wakes `waker` once the flight ends (at once if it has). A waker already registered
    /// (the same `Arc`) is not added twice.
    pub fn on_done(&self, waker: &Arc<dyn Wake>) {
        let now = self.flight.with_state(|s| {
            if s.outcome.is_some() {
                return true;
            }
            if !s.wakers.iter().any(|w| Arc::ptr_eq(w, waker)) {
                s.wakers.push(Arc::clone(waker));
            }
            false
        });
        if now {
            waker.wake();
        }
    }

    /// The waiter gave up ([`Ticket::limit`]). Work: the flight fails for everyone waiting on
    /// it. A change: nothing (the flight is shared by every watcher and ends only on a change).
    pub fn time_out(&self) {
        if self.waiting == Waiting::Work {
            self.flight.finish(Outcome::Failed(
                "timed out waiting for the token source".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Count(AtomicU32);
    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakers_are_woken_once_and_late_ones_at_once() {
        let flight = Flight::new();
        let ticket = Ticket::new(&flight);
        let count = Arc::new(Count::default());
        let waker: Arc<dyn Wake> = count.clone();
        ticket.on_done(&waker);
        ticket.on_done(&waker);
        assert!(!ticket.is_done());
        flight.finish(Outcome::Done);
        flight.finish(Outcome::Failed("late".into()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(flight.outcome(), Some(Outcome::Done));
        ticket.on_done(&waker);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "registered after the end"
        );
        let other = Flight::new();
        Ticket::new(&other).time_out();
        assert!(matches!(other.outcome(), Some(Outcome::Failed(_))));
    }

    #[test]
    fn a_change_ticket_timing_out_leaves_the_flight_to_the_others() {
        let flight = Flight::new();
        let t = Ticket::change(&flight, Duration::from_secs(3));
        assert_eq!(t.limit(), Duration::from_secs(3));
        assert_eq!(Ticket::new(&flight).limit(), PARK_LIMIT);
        t.time_out();
        assert_eq!(flight.outcome(), None);
        flight.finish(Outcome::Done);
        assert!(t.is_done());
    }
}
