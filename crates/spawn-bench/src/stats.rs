//! Percentiles of a set of timings.

use std::time::Duration;

/// Median and spread of one case's timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

impl Summary {
    /// `None` if there are no samples.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            median: percentile(&ms, 50)?,
            p10: percentile(&ms, 10)?,
            p90: percentile(&ms, 90)?,
        })
    }
}

/// The `p`th percentile of sorted values, interpolating linearly between the two closest
/// ranks (numpy's default).
pub fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    let n = sorted.len();
    let pos = p * (n.checked_sub(1)?); // index times 100
    let (lo, frac) = (pos / 100, (pos % 100) as f64 / 100.0);
    let hi = (lo + 1).min(n - 1);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_interpolate() {
        let s = Summary::of(&ms(&[5, 1, 4, 2, 3, 10, 6, 7, 9, 8, 0])).unwrap();
        assert_eq!(
            s,
            Summary {
                median: 5.0,
                p10: 1.0,
                p90: 9.0
            }
        );
        let s = Summary::of(&ms(&[1, 2])).unwrap();
        assert!((s.median - 1.5).abs() < 1e-9);
    }

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert!(Summary::of(&ms(&[7])).is_some());
    }
}
