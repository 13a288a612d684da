//! The statistics drift is judged by, each computed the way scipy (and Evidently, which calls
//! scipy) computes it, so a drift score can be checked against those packages on the same
//! data: `scripts/drift-check.py` does, to 1e-9, in CI.

use std::cmp::Ordering;

/// Two-sample Kolmogorov–Smirnov test, two-sided: the statistic and its exact p-value
/// (scipy's `ks_2samp(method="exact")`, which is also its default for samples of up to 10,000
/// values; past that scipy switches to an asymptotic value, this stays exact). Both samples
/// sorted, neither empty.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len() as u64, b.len() as u64);
    let g = gcd(n1, n2);
    let lcm = n1 / g * n2;
    // The largest gap between the two empirical CDFs, in units of 1/lcm: exact integers.
    let (step1, step2) = ((n2 / g) as i128, (n1 / g) as i128);
    let (mut i, mut j, mut h) = (0usize, 0usize, 0i128);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        h = h.max((i as i128 * step1 - j as i128 * step2).abs());
    }
    let h = h as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (d, 1.0);
    }
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    (d, p.clamp(0.0, 1.0))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// P(D_{n,n} >= h/n), by the Horner-like alternating sum that avoids cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as f64, h as i64);
    let mut p = 0.0;
    let mut k = (n / h as f64).floor() as i64;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            let kh = (k * h + j) as f64;
            p1 = (n - kh) * p1 / (n + kh + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// The share of lattice paths from (0,0) to (m,n) that leave the band |x/m - y/n| < h/lcm,
/// by the recursion on 1 - p (Viehmann 2021) that stays within [0, 1].
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng, h) = (m / g, n / g, h as i64);
    let (mg, ng) = (mg as i64, ng as i64);
    let n = n as i64;
    let mut minj = 0i64;
    let mut maxj = (h as f64 / mg as f64).ceil().min((n + 1) as f64) as i64;
    let mut curlen = maxj - minj;
    let len = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len.max(1)];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=(m as i64) {
        let (lastminj, lastlen) = (minj, curlen);
        minj = (((ng * i - h) as f64 / mg as f64).floor() as i64 + 1).max(0);
        minj = minj.min(n);
        maxj = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let (fi, fj) = (i as f64, j as f64);
            val = (a[(jj + minj - lastminj) as usize] * fi + val * fj) / (fi + fj);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[from..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Pearson's chi-square test of observed against expected counts: scipy's `chisquare`
/// p-value (`chi2.sf(stat, k - 1)`). An expected zero where something was observed makes the
/// statistic infinite and the p-value 0.
pub fn chisquare(observed: &[f64], expected: &[f64]) -> f64 {
    let stat: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e) * (o - e) / e)
        .sum();
    let dof = observed.len().saturating_sub(1) as f64;
    if stat.is_nan() || dof == 0.0 {
        return f64::NAN;
    }
    if stat.is_infinite() {
        return 0.0;
    }
    gamma_q(dof / 2.0, stat / 2.0)
}

/// Two-proportion Z-test, two-sided, as Evidently writes it: `2 * (1 - Φ(|z|))`.
pub fn proportions_z(ones_a: u64, n_a: u64, ones_b: u64, n_b: u64) -> f64 {
    let (n1, n2) = (n_a as f64, n_b as f64);
    let (p1, p2) = (ones_a as f64 / n1, ones_b as f64 / n2);
    let p = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - normal_cdf(z.abs()))
}

/// Φ(x), as scipy's `ndtr`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The first Wasserstein distance between two samples' empirical distributions (scipy's
/// `wasserstein_distance`). Both sorted, neither empty.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    let all = merge(a, b);
    let (mut i, mut j) = (0usize, 0usize);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut sum = 0.0;
    for w in all.windows(2) {
        while i < a.len() && a[i] <= w[0] {
            i += 1;
        }
        while j < b.len() && b[j] <= w[0] {
            j += 1;
        }
        sum += (i as f64 / na - j as f64 / nb).abs() * (w[1] - w[0]);
    }
    sum
}

/// Two sorted slices as one sorted vector.
fn merge(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut all = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            all.push(a[i]);
            i += 1;
        } else {
            all.push(b[j]);
            j += 1;
        }
    }
    all.extend_from_slice(&a[i..]);
    all.extend_from_slice(&b[j..]);
    all
}

/// Population standard deviation (numpy's `std`, ddof 0).
pub fn std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
}

/// Jensen–Shannon distance (natural log) between two histograms, normalized first
/// (scipy's `spatial.distance.jensenshannon`).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let mut js = 0.0;
    for (&p, &q) in p.iter().zip(q) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        js += rel_entr(p, m) + rel_entr(q, m);
    }
    (js / 2.0).sqrt()
}

fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Population stability index of two histograms given as shares: Σ (r − c)·ln(r / c), empty
/// bins filled first as Evidently fills them.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = (fill_zeroes(reference), fill_zeroes(current));
    r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
}

/// Empty bins get a share far below any real one: a millionth of the smallest non-empty share
/// when that is at most 1e-4, else 1e-4 (Evidently's `get_binned_data`).
fn fill_zeroes(shares: &[f64]) -> Vec<f64> {
    let smallest = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .min_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let fill = match smallest {
        Some(s) if s <= 1e-4 => s / 1e6,
        _ => 1e-4,
    };
    shares
        .iter()
        .map(|&s| if s == 0.0 { fill } else { s })
        .collect()
}

/// numpy's `linspace` with its endpoint: `i * step + start`, the last value exactly `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// numpy's `quantile(values, q)` with its default (linear) method, in its floating-point
/// steps, so bin edges computed here and by numpy agree to the bit. `sorted` not empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index < 0.0 {
        return sorted[0];
    }
    let previous = virtual_index.floor();
    let gamma = virtual_index - previous;
    let (a, b) = (sorted[previous as usize], sorted[previous as usize + 1]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// The regularized upper incomplete gamma function Q(a, x): the series for P below a + 1,
/// Lentz's continued fraction above.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - libm::lgamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..100_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * log_prefix.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-17 {
                break;
            }
        }
        log_prefix.exp() * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    // Expected values from scipy 1.17.1 on the same inputs.
    #[test]
    fn ks_matches_scipy_exact() {
        let a = [0.1, 0.4, 0.7, 1.2, 1.5];
        let b = [0.3, 0.9, 1.1, 1.8, 2.0, 2.5, 3.0];
        let (d, p) = ks_2samp(&a, &b);
        close(d, 0.5714285714285714);
        close(p, 0.23737373737373738);
        let (d, p) = ks_2samp(&a, &a);
        assert_eq!((d, p), (0.0, 1.0));
        let c = [2.0, 3.0, 4.0, 5.0, 6.0];
        let (d, p) = ks_2samp(&a, &c);
        close(d, 1.0);
        close(p, 0.007936507936507936);
    }

    #[test]
    fn chi_square_and_gamma() {
        close(
            chisquare(&[10.0, 20.0, 30.0], &[20.0, 20.0, 20.0]),
            0.006737946999085468,
        );
        close(gamma_q(2.5, 1.0), 0.8491450360846096);
        close(gamma_q(50.0, 70.0), 0.0051405024585059085);
        assert_eq!(chisquare(&[1.0, 2.0], &[3.0, 0.0]), 0.0);
    }

    #[test]
    fn distances() {
        close(wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), 5.0);
        close(jensen_shannon(&[1.0, 0.0], &[0.5, 0.5]), 0.464501404022459);
        close(psi(&[0.5, 0.5], &[0.25, 0.75]), 0.2746530721670274);
        close(normal_cdf(1.96), 0.9750021048517795);
    }

    #[test]
    fn numpy_binning() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 4.5);
        assert_eq!(quantile(&v, 1.0), 9.0);
        assert_eq!(linspace(0.0, 1.0, 11)[3], 3.0 * 0.1);
    }
}
