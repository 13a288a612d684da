//! A log-linear histogram of non-negative integers (microseconds, row counts): exact below
//! 64, then 64 buckets per power of two, so a quantile is within 1/64 (1.6%) of the true
//! value. Buckets depend on the value alone, so merging windows and recomputing from the log
//! give the same counts in any order — which a sorted sample would too, but at a memory
//! cost that grows with traffic.

use std::collections::BTreeMap;

/// Values below this are their own bucket; above, each power of two splits into this many.
const SUB: u64 = 64;
const SUB_BITS: u32 = 6;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    /// Bucket index → count; only buckets seen.
    buckets: BTreeMap<u16, u64>,
    count: u64,
    sum: u64,
    max: u64,
}

fn bucket(v: u64) -> u16 {
    if v < SUB {
        return v as u16;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (u64::from(shift + 1) * SUB + (v >> shift) - SUB) as u16
}

/// The largest value that falls in bucket `b`.
fn upper(b: u16) -> u64 {
    let b = u64::from(b);
    if b < SUB {
        return b;
    }
    let shift = b / SUB - 1;
    let mantissa = b % SUB + SUB;
    let top = (u128::from(mantissa + 1) << shift) - 1;
    u64::try_from(top).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        *self.buckets.entry(bucket(v)).or_default() += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1), as the top of its bucket but never above
    /// the largest value seen: at or at most 1/64 above the true value.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(upper(*b).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(upper(b) >= v, "{v}");
            if v < 100_000 {
                if let Some(p) = prev {
                    assert!(b == p || b == p + 1, "{v}: {p} → {b}");
                }
                prev = Some(b);
            }
            // Within 1/64 of the value.
            assert!((upper(b) - v) as f64 <= v as f64 / SUB as f64, "{v}");
        }
        assert_eq!(bucket(upper(bucket(1000))), bucket(1000));
        assert_eq!(upper(bucket(u64::MAX)), u64::MAX);
    }

    #[test]
    fn quantiles_are_nearest_rank_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 500u64), (0.95, 950), (0.99, 990), (1.0, 1000)] {
            let got = h.quantile(q).unwrap();
            assert!(
                got >= exact && got - exact <= exact / 64,
                "{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), Some(1000));
        assert_eq!(h.mean(), Some(500.5));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_is_recording_both() {
        let (mut a, mut b, mut both) = Default::default();
        for v in [3u64, 70, 5000, 123_456] {
            Histogram::record(&mut a, v);
            Histogram::record(&mut both, v);
        }
        for v in [9u64, 71, 1 << 40] {
            Histogram::record(&mut b, v);
            Histogram::record(&mut both, v);
        }
        let mut merged: Histogram = a;
        merged.merge(&b);
        assert_eq!(merged, both);
    }
}
