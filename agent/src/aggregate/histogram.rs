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
}
