//! The runtime's own scheduling-latency histogram (`runtime.sched.timeToRun`, what
//! `runtime/metrics` serves as `/sched/latencies:seconds`), read from the target's memory at
//! no cost to the target, and re-bucketed for Prometheus.
//!
//! The runtime records the time from runnable to running for one in eight scheduling
//! events of each goroutine (runtime/proc.go `casgstatus`, `gTrackingPeriod`), so these counts
//! are a sample, exactly as the runtime reports them.

use gobinary::TimeHistogramLayout;

/// Upper bounds of the exported buckets: powers of four from 256 ns to about 69 s. Each is
/// a power of two, and the runtime's bucket edges include every power of two, so merging
/// its buckets into these is exact.
pub const EXPORT_BOUNDS_NS: [u64; 15] = {
    let mut b = [0u64; 15];
    let mut i = 0;
    while i < b.len() {
        b[i] = 256 << (2 * i);
        i += 1;
    }
    b
};

/// One reading of `timeHistogram`: `underflow`, `counts[..]`, `overflow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHistogram {
    pub layout: TimeHistogramLayout,
    pub counts: Vec<u64>,
    pub underflow: u64,
    pub overflow: u64,
}

impl RuntimeHistogram {
    /// Decodes the `(counts + 2) * 8` bytes of a `timeHistogram`.
    pub fn decode(layout: TimeHistogramLayout, bytes: &[u8]) -> Option<RuntimeHistogram> {
        let n = layout.counts();
        if bytes.len() != (n + 2) * 8 {
            return None;
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Some(RuntimeHistogram {
            layout,
            counts: words[..n].to_vec(),
            underflow: words[n],
            overflow: words[n + 1],
        })
    }

    /// Size in bytes of what [`RuntimeHistogram::decode`] reads.
    pub fn byte_len(layout: TimeHistogramLayout) -> usize {
        (layout.counts() + 2) * 8
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.underflow + self.overflow
    }

    /// (upper bound in seconds, count) per [`EXPORT_BOUNDS_NS`] bucket, +Inf last as
    /// `f64::MAX`; not cumulative. Negative durations (underflow) count in the first.
    pub fn export_buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = EXPORT_BOUNDS_NS
            .iter()
            .map(|&b| (b as f64 / 1e9, 0))
            .chain(std::iter::once((f64::MAX, 0)))
            .collect();
        out[0].1 += self.underflow;
        for (i, &c) in self.counts.iter().enumerate() {
            let upper = self.layout.lower_bound_ns(i + 1);
            let slot = EXPORT_BOUNDS_NS.partition_point(|&b| b < upper);
            out[slot].1 += c;
        }
        let last = out.len() - 1;
        out[last].1 += self.overflow;
        out
    }

    /// An estimate of the sum of durations in seconds (the runtime keeps none): each bucket
    /// counted at its midpoint, overflow at its lower bound.
    pub fn estimated_sum_seconds(&self) -> f64 {
        let l = &self.layout;
        let mut ns = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let mid = (l.lower_bound_ns(i) + l.lower_bound_ns(i + 1)) as f64 / 2.0;
            ns += c as f64 * mid;
        }
        ns += self.overflow as f64 * l.lower_bound_ns(l.counts()) as f64;
        ns / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> TimeHistogramLayout {
        TimeHistogramLayout::of(1280).expect("Go 1.21+ layout")
    }

    #[test]
    fn merges_exactly() {
        let l = layout();
        let mut bytes = vec![0u8; RuntimeHistogram::byte_len(l)];
        let mut put = |i: usize, v: u64| bytes[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        put(0, 5); // [0, 64 ns)
        put(4, 7); // [256, 320 ns) -> le 1.024 µs
        put(3, 2); // [192, 256 ns) -> le 256 ns
        put(160, 1); // underflow
        put(161, 3); // overflow
        let h = RuntimeHistogram::decode(l, &bytes).unwrap();
        assert_eq!(h.count(), 18);
        let b = h.export_buckets();
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], (256e-9, 5 + 2 + 1));
        assert_eq!(b[1], (1024e-9, 7));
        assert_eq!(b[15], (f64::MAX, 3));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 18);
        // 5 at 32 ns, 2 at 224 ns, 7 at 288 ns, 3 at 2^47 ns.
        let want = (5.0 * 32.0 + 2.0 * 224.0 + 7.0 * 288.0 + 3.0 * (1u64 << 47) as f64) / 1e9;
        assert!((h.estimated_sum_seconds() - want).abs() < 1e-9);
        assert!(RuntimeHistogram::decode(l, &bytes[8..]).is_none());
    }

    #[test]
    fn every_runtime_bucket_fits_one_export_bucket() {
        let l = layout();
        for i in 0..l.counts() {
            let (lo, hi) = (l.lower_bound_ns(i), l.lower_bound_ns(i + 1));
            let slot = EXPORT_BOUNDS_NS.partition_point(|&b| b < hi);
            if slot > 0 && slot < EXPORT_BOUNDS_NS.len() {
                assert!(
                    lo >= EXPORT_BOUNDS_NS[slot - 1],
                    "bucket {i} [{lo}, {hi}) straddles an export bound"
                );
            }
        }
    }
}
