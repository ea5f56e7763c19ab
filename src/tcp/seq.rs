//! Wrapping 32-bit sequence-number arithmetic (RFC 9293 section 3.4, RFC 1982 style).
//!
//! Invariant: comparisons are only meaningful between numbers less than 2^31 apart, which
//! holds for every pair this stack compares (windows are at most 2^30, RFC 7323 2.3).

use std::cmp::Ordering;

/// A TCP sequence number. Ordered by wrapping distance, never by raw value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seq(pub u32);

impl Seq {
    /// `self` advanced by `n` bytes (wrapping).
    pub fn plus(self, n: usize) -> Seq {
        Seq(self.0.wrapping_add(n as u32))
    }

    /// The signed distance `self - other`.
    pub fn diff(self, other: Seq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self - other` as a byte count, 0 if `self` is before `other`.
    pub fn since(self, other: Seq) -> usize {
        usize::try_from(self.diff(other)).unwrap_or(0)
    }

    /// True if `lo <= self < hi` in sequence space.
    pub fn in_range(self, lo: Seq, hi: Seq) -> bool {
        lo <= self && self < hi
    }
}

impl PartialOrd for Seq {
    fn partial_cmp(&self, other: &Seq) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Seq {
    fn cmp(&self, other: &Seq) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        let a = Seq(u32::MAX - 1);
        let b = a.plus(4);
        assert_eq!(b, Seq(2));
        assert!(a < b);
        assert_eq!(b.diff(a), 4);
        assert_eq!(a.diff(b), -4);
        assert_eq!(b.since(a), 4);
        assert_eq!(a.since(b), 0);
        assert!(Seq(0).in_range(a, b));
        assert!(!b.in_range(a, b));
    }
}
