//! A latency recorder without a lock: running totals for the stats route, and for each
//! interval up to [`MAX_SAMPLES`] samples for an EMF value list, from which CloudWatch
//! computes percentiles.
//!
//! EMF takes at most 100 values in a list. An interval with more calls keeps a uniform
//! sample of them (reservoir sampling, Vitter's algorithm R): every call has the same
//! chance of being among the 100, so the percentiles CloudWatch computes stay unbiased;
//! the number of calls is in the call counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Samples kept per interval: the EMF specification's bound on a value list.
pub const MAX_SAMPLES: usize = 100;

/// Running totals and one interval's samples.
#[derive(Debug)]
pub struct LatencyRecorder {
    /// Recordings since start.
    count: AtomicU64,
    /// Sum of every recording, in microseconds.
    sum_us: AtomicU64,
    /// The longest recording, in microseconds.
    max_us: AtomicU64,
    /// Recordings since the interval began; decides which slot a new one may take.
    seen: AtomicU64,
    /// Microseconds plus one, so that 0 marks an empty slot.
    slots: [AtomicU64; MAX_SAMPLES],
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencyTotals {
    /// Recordings since start.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: f64,
    /// The longest, in milliseconds.
    pub max_ms: f64,
}

/// One interval's samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Recordings in the interval (may be more than the samples kept).
    pub seen: u64,
    /// Up to [`MAX_SAMPLES`] of them, in milliseconds, in no particular order.
    pub values_ms: Vec<f64>,
}

impl LatencyRecorder {
    /// Records one duration.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        let slot = match usize::try_from(seen) {
            Ok(i) if i < MAX_SAMPLES => Some(i),
            // The (n+1)-th recording replaces a random kept one with probability 100/(n+1).
            _ => usize::try_from(mix(seen ^ us) % (seen + 1))
                .ok()
                .filter(|&j| j < MAX_SAMPLES),
        };
        if let Some(i) = slot {
            self.slots[i].store(us + 1, Ordering::Relaxed);
        }
    }

    /// The running totals.
    pub fn totals(&self) -> LatencyTotals {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencyTotals {
            count: self.count.load(Ordering::Relaxed),
            sum_ms: ms(self.sum_us.load(Ordering::Relaxed)),
            max_ms: ms(self.max_us.load(Ordering::Relaxed)),
        }
    }

    /// The samples since the last call, and a new interval from now. Meant for one
    /// caller (the metrics writer): a recording racing with it lands in one interval or
    /// the next, never in both.
    pub fn take_interval(&self) -> Samples {
        let seen = self.seen.swap(0, Ordering::Relaxed);
        let kept = usize::try_from(seen).map_or(MAX_SAMPLES, |n| n.min(MAX_SAMPLES));
        let values_ms = self.slots[..kept]
            .iter()
            .filter_map(|slot| match slot.swap(0, Ordering::Relaxed) {
                0 => None,
                stored => Some((stored - 1) as f64 / 1000.0),
            })
            .collect();
        Samples { seen, values_ms }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from a counter, enough to choose a
/// slot without a random number generator's state (and its lock).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_sample_up_to_the_bound_then_a_hundred() {
        let recorder = LatencyRecorder::default();
        for ms in 1..=40 {
            recorder.record(Duration::from_millis(ms));
        }
        let samples = recorder.take_interval();
        assert_eq!(samples.seen, 40);
        let mut values = samples.values_ms.clone();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, (1..=40).map(f64::from).collect::<Vec<_>>());

        for ms in 0..1000 {
            recorder.record(Duration::from_millis(ms));
        }
        let samples = recorder.take_interval();
        assert_eq!(samples.seen, 1000);
        assert_eq!(samples.values_ms.len(), MAX_SAMPLES);
        // A fair sample of 0..1000 has values from both ends, not only the first 100.
        assert!(samples.values_ms.iter().any(|&v| v >= 500.0));
        assert!(samples.values_ms.iter().any(|&v| v < 500.0));

        // The interval restarted; the totals did not.
        assert_eq!(recorder.take_interval(), Samples::default());
        let totals = recorder.totals();
        assert_eq!(totals.count, 1040);
        assert_eq!(totals.max_ms, 999.0);
    }

    #[test]
    fn microseconds_survive() {
        let recorder = LatencyRecorder::default();
        recorder.record(Duration::from_micros(1500));
        recorder.record(Duration::ZERO);
        let mut values = recorder.take_interval().values_ms;
        values.sort_by(f64::total_cmp);
        assert_eq!(values, vec![0.0, 1.5]);
        assert_eq!(recorder.totals().sum_ms, 1.5);
    }
}
