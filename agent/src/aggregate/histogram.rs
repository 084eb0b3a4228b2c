//! A fixed-bucket duration histogram, the shape Prometheus histograms are exported in.

/// Upper bounds of the duration buckets in nanoseconds: 1 µs to 100 s, 1-2.5-5 per decade.
pub const DURATION_BOUNDS_NS: [u64; 25] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    25_000_000_000,
    50_000_000_000,
    100_000_000_000,
];

/// Counts of durations per bucket (not cumulative), plus their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// `counts[i]` counts durations in `(bound[i-1], bound[i]]`; the last slot is +Inf.
    counts: [u64; DURATION_BOUNDS_NS.len() + 1],
    sum_ns: u128,
    count: u64,
}

impl DurationHistogram {
    /// The bucket (index into [`Self::buckets_seconds`]) a duration falls in.
    pub fn bucket_of(ns: u64) -> usize {
        DURATION_BOUNDS_NS.partition_point(|&b| b < ns)
    }

    pub fn record(&mut self, ns: u64) {
        let slot = Self::bucket_of(ns);
        self.counts[slot] += 1;
        self.sum_ns += ns as u128;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_ns(&self) -> u128 {
        self.sum_ns
    }

    /// (upper bound in seconds, count in that bucket), +Inf last as `f64::MAX` (what the
    /// Prometheus encoder expects).
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        DURATION_BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// A [`DurationHistogram`] of weighted durations: each counts as many times as it stands
/// for (the estimates under time sampling, `sampling.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightedHistogram {
    counts: [f64; DURATION_BOUNDS_NS.len() + 1],
    sum_seconds: f64,
}

impl WeightedHistogram {
    /// Adds a duration standing for `count` of its kind, and `time` times its length to the
    /// sum (the two differ where a target's pace changed under the probes).
    pub fn record(&mut self, ns: u64, count: f64, time: f64) {
        self.counts[DurationHistogram::bucket_of(ns)] += count;
        self.sum_seconds += time * ns as f64 / 1e9;
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// (upper bound in seconds, cumulative count rounded to a whole number), +Inf last as
    /// `f64::MAX`: rounded after summing, so the buckets never decrease and a histogram of
    /// weights of one reads exactly as the counted one.
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut sum = 0.0;
        DURATION_BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter())
            .map(|(bound, n)| {
                sum += n;
                (bound, sum.round() as u64)
            })
            .collect()
    }

    /// The rounded counts per bucket (not cumulative), as OTLP carries them: they add up to
    /// [`Self::count`].
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        self.cumulative_buckets()
            .into_iter()
            .map(|(bound, n)| {
                let here = n - below;
                below = n;
                (bound, here)
            })
            .collect()
    }

    /// The estimated count, as the +Inf bucket gives it (the same sum, in the same order).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<f64>().round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let mut h = DurationHistogram::default();
        for ns in [
            0,
            1_000,
            1_001,
            20_000_000,
            100_000_000_000,
            100_000_000_001,
        ] {
            h.record(ns);
        }
        let b = h.buckets_seconds();
        assert_eq!(b.len(), 26);
        assert_eq!(b[0], (1e-6, 2)); // 0 and exactly 1 µs
        assert_eq!(b[1], (2.5e-6, 1));
        assert_eq!(b[13], (0.025, 1)); // 20 ms in (10 ms, 25 ms]
        assert_eq!(b[24], (100.0, 1));
        assert_eq!(b[25], (f64::MAX, 1));
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_ns(), 200_020_002_002);
    }

    #[test]
    fn weighted_buckets_round_their_cumulative_sums() {
        let mut h = WeightedHistogram::default();
        for _ in 0..3 {
            h.record(2_000, 1.4, 1.0);
        }
        h.record(20_000_000, 2.5, 2.0);
        let b = h.cumulative_buckets();
        assert_eq!(b.len(), 26);
        // 4.2 in (1 µs, 2.5 µs], then 6.7 from 20 ms on.
        assert_eq!(b[0], (1e-6, 0));
        assert_eq!(b[1], (2.5e-6, 4));
        assert_eq!(b[12], (0.01, 4));
        assert_eq!(b[13], (0.025, 7));
        assert_eq!(b[25], (f64::MAX, 7));
        assert_eq!(h.count(), 7);
        let per_bucket = h.per_bucket();
        assert_eq!((per_bucket[1].1, per_bucket[13].1), (4, 3));
        assert_eq!(per_bucket.iter().map(|b| b.1).sum::<u64>(), 7);
        assert!((h.sum_seconds() - (3.0 * 2e-6 + 2.0 * 0.02)).abs() < 1e-12);
    }

    #[test]
    fn weights_of_one_read_as_the_counts() {
        let (mut counted, mut weighted) =
            (DurationHistogram::default(), WeightedHistogram::default());
        for ns in [0, 999, 1_000, 7_777, 3_000_000, 3_000_000, 200_000_000_000] {
            counted.record(ns);
            weighted.record(ns, 1.0, 1.0);
        }
        let mut cumulative = 0;
        for ((bound, n), (wbound, wn)) in counted
            .buckets_seconds()
            .into_iter()
            .zip(weighted.cumulative_buckets())
        {
            cumulative += n;
            assert_eq!((bound, cumulative), (wbound, wn));
        }
        assert_eq!(weighted.count(), counted.count());
        assert!((weighted.sum_seconds() - counted.sum_ns() as f64 / 1e9).abs() < 1e-9);
    }
}
