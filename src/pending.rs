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
//! Bound: a front door waits at most [`PARK_LIMIT`]; then it calls [`Ticket::time_out`], which
//! ends the flight as failed for every waiter (a later result from the thread still fills the
//! cache for the next request), and re-runs the request, which now gets the error.
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

/// A waiting request's handle on a [`Flight`].
#[derive(Clone, Debug)]
pub struct Ticket(Arc<Flight>);

impl Ticket {
    pub fn new(flight: &Arc<Flight>) -> Ticket {
        Ticket(Arc::clone(flight))
    }

    pub fn is_done(&self) -> bool {
        self.0.outcome().is_some()
    }

    /// Wakes `waker` once the flight ends (at once if it has). A waker already registered
    /// (the same `Arc`) is not added twice.
    pub fn on_done(&self, waker: &Arc<dyn Wake>) {
        let now = self.0.with_state(|s| {
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

    /// The waiter gave up ([`PARK_LIMIT`]): the flight fails for everyone waiting on it.
    pub fn time_out(&self) {
        self.0.finish(Outcome::Failed(
            "timed out waiting for the token source".into(),
        ));
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
}
