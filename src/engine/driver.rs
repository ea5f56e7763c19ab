//! The blocking loop around an [`Engine`]: the only place that reads the clock and sleeps.
//!
//! Contract: [`run`] loops read batch → timers → write until [`Stop`] is raised, sleeping in
//! `poll(2)` on the device fd, the stop fd and the engine's wake-up fd (parked requests whose
//! ticket is done) until one is readable or the engine's next deadline. It returns only on stop or on a device error that makes going on pointless.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::eventfd::EventFd;
use super::Engine;
use crate::device::Device;

/// A stop request every engine thread can wait on: a flag and an eventfd to wake `poll`.
#[derive(Debug)]
pub struct Stop {
    raised: AtomicBool,
    fd: EventFd,
}

impl Stop {
    pub fn new() -> std::io::Result<Arc<Stop>> {
        Ok(Arc::new(Stop {
            raised: AtomicBool::new(false),
            fd: EventFd::new()?,
        }))
    }

    /// Asks every loop to return; safe to call more than once.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.fd.signal();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.fd()
    }
}

/// Runs `engine` until `stop` is raised.
pub fn run<D: Device>(engine: &mut Engine<D>, stop: &Stop) -> std::io::Result<()> {
    while !stop.is_raised() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let read = engine.handle_ready(now, wall)?;
        engine.handle_wakeup(now, wall);
        engine.handle_timeout(now);
        engine.flush(now);
        engine.handle_flushed(Instant::now());
        if read == super::BATCH {
            continue; // more may be waiting: no sleep
        }
        let timeout = engine
            .poll_at()
            .map(|at| at.saturating_duration_since(Instant::now()));
        wait(
            [
                Some(stop.fd()),
                engine.device().readable_fd(),
                engine.wakeup_fd(),
            ],
            timeout,
        )?;
    }
    Ok(())
}

/// Sleeps until one of `fds` (stop, device, wake-up) is readable, or `timeout` passes.
fn wait(fds: [Option<BorrowedFd<'_>>; 3], timeout: Option<Duration>) -> std::io::Result<()> {
    let mut fds = fds.map(|fd| libc::pollfd {
        fd: fd.map_or(-1, |d| d.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    });
    // Round up so a deadline 0.3 ms away does not turn into a busy loop of 0 ms polls.
    let ms = timeout.map_or(-1, |t| {
        let ms = t.as_micros().div_ceil(1000);
        i32::try_from(ms).unwrap_or(i32::MAX)
    });
    // SAFETY: `fds` is a valid array of three pollfd; a negative fd is ignored by poll(2).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
