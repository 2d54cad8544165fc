//! A log-linear histogram of microsecond values with fixed memory, so a flow can record
//! every packet's delay without allocating, and flows can be merged for pooled
//! percentiles. Values below 64 µs are exact; above, each power of two is split in 32
//! buckets, so a reported percentile is within ~3% of the true sample.

use super::percentile::{nearest_rank, Percentiles};

/// Values below this are counted exactly.
const EXACT: u64 = 64;
/// Sub-buckets per power of two (5 bits of mantissa).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Highest power of two tracked (2^40 µs is about 12 days); larger values clamp.
const MAX_MSB: u32 = 40;
const BUCKETS: usize = EXACT as usize + (MAX_MSB as usize - 6) * SUB;

#[derive(Clone, Debug)]
pub struct LogHistogram {
    counts: Box<[u32]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    if msb >= MAX_MSB {
        return BUCKETS - 1;
    }
    let sub = ((v >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    EXACT as usize + (msb as usize - 6) * SUB + sub
}

/// Midpoint of bucket `i`, the value a percentile reports.
fn representative(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let msb = (j / SUB) as u32 + 6;
    let sub = (j % SUB) as u64;
    let shift = msb - SUB_BITS;
    ((SUB as u64 + sub) << shift) + ((1u64 << shift) >> 1)
}

impl LogHistogram {
    pub fn new() -> Self {
        LogHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value (µs). Never allocates.
    pub fn record(&mut self, micros: u64) {
        let c = &mut self.counts[index(micros)];
        *c = c.saturating_add(1);
        self.total += 1;
        self.sum += u128::from(micros);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// Nearest-rank quantile `q` (0..=1), in µs, clamped to the observed range.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let want = nearest_rank(q, self.total.min(usize::MAX as u64) as usize) as u64 + 1;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= want {
                return Some(representative(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// p50/p95/p99/max converted to milliseconds.
    pub fn percentiles_ms(&self) -> Percentiles {
        let ms = |q| self.quantile(q).map_or(0.0, |us| us as f64 / 1000.0);
        Percentiles {
            count: self.total as usize,
            p50: ms(0.50),
            p95: ms(0.95),
            p99: ms(0.99),
            max: self.max().map_or(0.0, |us| us as f64 / 1000.0),
        }
    }

    pub fn merge(&mut self, other: &LogHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Empties the histogram, keeping its memory.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, 1 << 39, u64::MAX]) {
            let i = index(v);
            assert!(i >= last, "{v}");
            assert!(i < BUCKETS);
            last = i;
            if v < 1 << MAX_MSB {
                let rep = representative(i) as f64;
                assert!(
                    (rep - v as f64).abs() <= v as f64 / 32.0 + 0.5,
                    "{v} -> {rep}"
                );
            }
        }
        assert_eq!(index(63), 63);
        assert_eq!(index(64), 64);
        assert_eq!(representative(64), 65);
    }

    #[test]
    fn quantiles_are_close_to_exact_ones() {
        let mut h = LogHistogram::new();
        let values: Vec<u64> = (1..=10_000).map(|i| i * 37).collect();
        values.iter().for_each(|&v| h.record(v));
        let exact = Percentiles::from_iter(values.iter().map(|&v| v as f64));
        for (q, want) in [(0.5, exact.p50), (0.95, exact.p95), (0.99, exact.p99)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.035, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(370_000));
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.mean(), Some(37.0 * 5000.5));
    }

    #[test]
    fn single_value_reports_itself() {
        let mut h = LogHistogram::new();
        h.record(12_345);
        let p = h.percentiles_ms();
        assert_eq!((p.count, p.p50, p.p99, p.max), (1, 12.345, 12.345, 12.345));
    }

    #[test]
    fn merge_and_clear() {
        let (mut a, mut b) = (LogHistogram::new(), LogHistogram::new());
        (0..50).for_each(|v| a.record(v));
        (50..100).for_each(|v| b.record(v));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.quantile(0.5), Some(49));
        assert_eq!(a.max(), Some(99));
        a.clear();
        assert_eq!(a.count(), 0);
        assert_eq!(a.quantile(0.5), None);
        assert_eq!(a.percentiles_ms(), Percentiles::default());
    }
}
