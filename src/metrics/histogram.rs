//! A latency histogram with fixed buckets, in atomics.
//!
//! Contract: [`Histogram::observe`] is a bucket search over [`BOUNDS_US`] and three relaxed
//! atomic additions; it never allocates or locks. Buckets hold plain (not cumulative) counts;
//! [`Histogram::render`] turns them into Prometheus' cumulative `le` buckets in seconds.
//! Readers may see an observation in `_count` before `_sum` (relaxed ordering): a scrape is a
//! sample, not a transaction.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::exposition::{Exposition, Kind};

/// Upper bounds of the buckets in microseconds: a static answer takes a few microseconds, a
/// minted token a few milliseconds (an RSA signature), an upstream fetch up to seconds.
pub const BOUNDS_US: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// Observations by bucket, their count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `buckets[i]` counts observations in `(BOUNDS_US[i-1], BOUNDS_US[i]]`; the last one those
    /// above every bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Adds this histogram's counts to `into` (several threads' histograms make one series).
    pub fn add_to(&self, into: &mut Totals) {
        for (t, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *t += b.load(Relaxed);
        }
        into.count += self.count.load(Relaxed);
        into.sum_us += self.sum_us.load(Relaxed);
    }
}

/// Plain sums of one or more histograms, for rendering.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub buckets: [u64; BOUNDS_US.len() + 1],
    pub count: u64,
    pub sum_us: u64,
}

impl Totals {
    /// Writes the `_bucket`, `_sum` and `_count` series of `family`.
    pub fn render(&self, e: &mut Exposition, family: &'static str, help: &'static str) {
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = match BOUNDS_US.get(i) {
                Some(us) => seconds(*us),
                None => "+Inf".to_string(),
            };
            e.sample(
                family,
                help,
                Kind::Histogram,
                "_bucket",
                &[("le", &le)],
                cumulative,
            );
        }
        e.sample(
            family,
            help,
            Kind::Histogram,
            "_sum",
            &[],
            seconds(self.sum_us),
        );
        e.sample(family, help, Kind::Histogram, "_count", &[], self.count);
    }
}

/// Microseconds as decimal seconds, exactly (`250` → `0.00025`).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_render_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5)); // le 5 µs (bounds are inclusive)
        h.observe(Duration::from_micros(6)); // le 10 µs
        h.observe(Duration::from_secs(60)); // +Inf
        let mut t = Totals::default();
        h.add_to(&mut t);
        h.add_to(&mut t); // two threads with the same counts
        assert_eq!(t.count, 6);
        assert_eq!(t.sum_us, 2 * (5 + 6 + 60_000_000));
        let mut e = Exposition::new();
        t.render(&mut e, "lat_seconds", "Latency.");
        let text = e.finish();
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.000005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.00001\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{le=\"5\"} 4\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_sum 120.000022\n"), "{text}");
        assert!(text.contains("lat_seconds_count 6\n"), "{text}");
    }
}
