//! The table's timer queue: a min-heap of (deadline, slot, generation) with lazy deletion.
//!
//! Cost model: a connection pushes an entry only when its next deadline moves EARLIER than the
//! entry it already has (typically: the RTO armed when a response goes out). Deadlines that move
//! later (the idle timer on every segment, the RTO cleared by an ACK) cost nothing; the stale
//! entry pops, the table sees nothing is due and pushes the real deadline once. So per-packet
//! work is O(1) and per-request work is at most a couple of O(log n) heap operations.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Instant;

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl TimerQueue {
    pub fn push(&mut self, at: Instant, slot: u32, generation: u32) {
        self.heap.push(Reverse((at, slot, generation)));
    }

    /// The earliest entry, possibly stale (then the wake-up finds nothing to do).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}
