//! The thread that moves the live state along in time for a running instance.
//!
//! Contract: [`spawn`] starts a thread that ticks the cell ([`SnapshotCell::tick`]: a GCE
//! value that changed by time gets its new snapshot) whenever the live state changes by
//! itself ([`super::Live::next_change`]) or by a command, and at least every [`MAX_SLEEP`] (so
//! a wall-clock jump is noticed). It reads the clock; nothing else in [`crate::live`] does.
//! It ends when the cell is dropped. Azure and AWS answers do not need it: they are computed
//! from the state at each request's time.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::snapshot::SnapshotCell;

/// The longest the thread sleeps.
pub const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Starts the thread for `cell`.
pub fn spawn(cell: &Arc<SnapshotCell>) -> std::io::Result<JoinHandle<()>> {
    let weak: Weak<SnapshotCell> = Arc::downgrade(cell);
    std::thread::Builder::new()
        .name("imds-tun-live".into())
        .spawn(move || loop {
            let Some(cell) = weak.upgrade() else {
                return;
            };
            let live = Arc::clone(cell.live());
            let seen = live.generation();
            let now = SystemTime::now();
            cell.tick(now);
            drop(cell);
            let sleep = live
                .next_change(now)
                .map_or(MAX_SLEEP, |at| {
                    at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_SLEEP)
                })
                // A change due at `at` is processed on waking at or after `at`.
                + Duration::from_millis(5);
            live.wait_change(seen, sleep);
        })
}
