//! Nearest-rank percentiles, the definition load tools and SLOs usually mean: p95 is a
//! value that was actually observed, and 95% of samples are at or below it.

use serde::Serialize;

/// p50/p95/p99 (and max) of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Index of the nearest-rank `q` quantile (0 < q <= 1) in a sorted set of `n > 0` samples.
pub fn nearest_rank(q: f64, n: usize) -> usize {
    let rank = (q * n as f64).ceil() as usize;
    rank.clamp(1, n) - 1
}

impl Percentiles {
    /// Percentiles of `samples`, which are sorted in place. NaNs are dropped first, since
    /// they have no rank. All zeros when there are no samples (`count` says so).
    pub fn of(samples: &mut Vec<f64>) -> Percentiles {
        samples.retain(|v| !v.is_nan());
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let at = |q: f64| samples[nearest_rank(q, n)];
        Percentiles {
            count: n,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: samples[n - 1],
        }
    }
}

/// Percentiles of an iterator's samples (collects once; not for hot paths).
impl FromIterator<f64> for Percentiles {
    fn from_iter<I: IntoIterator<Item = f64>>(samples: I) -> Percentiles {
        Percentiles::of(&mut samples.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_textbook_definition() {
        // 1..=100: p50 is 50, p95 is 95, p99 is 99.
        let p = Percentiles::from_iter((1..=100).map(f64::from));
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        // Order does not matter.
        let p = Percentiles::from_iter((1..=100).rev().map(f64::from));
        assert_eq!((p.p50, p.p95), (50.0, 95.0));
    }

    #[test]
    fn small_sets_pick_observed_values() {
        let p = Percentiles::from_iter([3.0, 1.0]);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (1.0, 3.0, 3.0, 3.0));
        let p = Percentiles::from_iter([7.5]);
        assert_eq!((p.count, p.p50, p.p99), (1, 7.5, 7.5));
        // Five flows: p95 is the worst one, as a "p95 across subscribers" should be.
        let p = Percentiles::from_iter([0.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!((p.p50, p.p95), (0.0, 2.0));
    }

    #[test]
    fn empty_and_nan_inputs_are_harmless() {
        assert_eq!(Percentiles::from_iter([]), Percentiles::default());
        let p = Percentiles::from_iter([f64::NAN, 2.0, f64::NAN]);
        assert_eq!((p.count, p.p50), (1, 2.0));
        assert_eq!(nearest_rank(0.0, 10), 0);
        assert_eq!(nearest_rank(1.0, 10), 9);
    }
}
