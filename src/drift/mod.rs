//! Data drift: how the inputs a deployment scored differ from its model version's reference
//! data, column by column, by Evidently's default choice of test, plus the population
//! stability index over the reference profile's quantile bins.
//!
//! Everything here is computed from the values alone (the reference file and the scored
//! inputs, both kept as blobs), so a drift report for any past period is recomputed exactly.

pub mod files;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::reference::{ColumnProfile, DriftThresholds, Summary, ValueCount};
use crate::domain::schema::ColumnType;

/// Reference data of at most this many rows is judged by statistical tests (p-values),
/// larger by distances (Evidently's rule).
pub const SMALL_REFERENCE: usize = 1000;
/// Numeric reference quantile bins of a profile.
pub const PROFILE_BINS: usize = 10;
/// Categorical values a profile counts one by one; the rest count together as "other".
pub const PROFILE_TOP_VALUES: usize = 20;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
    async_graphql::Enum,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Numeric,
    Categorical,
}

impl Kind {
    /// Numbers are numeric; booleans, strings and times are compared as categories.
    pub fn of(t: ColumnType) -> Kind {
        match t {
            ColumnType::Float32 | ColumnType::Float64 | ColumnType::Int32 | ColumnType::Int64 => {
                Kind::Numeric
            }
            ColumnType::Boolean | ColumnType::String | ColumnType::Time64 => Kind::Categorical,
        }
    }
}

/// One column's values, missing ones counted apart: numbers sorted, categories as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub values: Values,
    pub missing: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("row {row}: {cell:?} is not a number")]
pub struct NotANumber {
    pub row: usize,
    pub cell: String,
}

/// A column's values gathered cell by cell, from a file or run after run.
#[derive(Debug, Clone)]
pub struct Gather {
    values: Values,
    missing: u64,
    cells: usize,
}

impl Gather {
    pub fn new(kind: Kind) -> Gather {
        let values = match kind {
            Kind::Numeric => Values::Numeric(Vec::new()),
            Kind::Categorical => Values::Categorical(Vec::new()),
        };
        Gather {
            values,
            missing: 0,
            cells: 0,
        }
    }

    /// One cell as the scorer takes it: "" is missing; a numeric column's cells must parse
    /// as numbers, and NaN or infinite ones count as missing (as Evidently drops them).
    pub fn push(&mut self, cell: &str) -> Result<(), NotANumber> {
        let row = self.cells;
        self.cells += 1;
        if cell.is_empty() {
            self.missing += 1;
            return Ok(());
        }
        match &mut self.values {
            Values::Numeric(v) => {
                let x: f64 = cell.trim().parse().map_err(|_| NotANumber {
                    row,
                    cell: cell.to_string(),
                })?;
                if x.is_finite() {
                    // -0 and 0 are one value, as for numpy.
                    v.push(x + 0.0);
                } else {
                    self.missing += 1;
                }
            }
            Values::Categorical(v) => v.push(cell.to_string()),
        }
        Ok(())
    }

    pub fn finish(self) -> Sample {
        let mut values = self.values;
        if let Values::Numeric(v) = &mut values {
            v.sort_by(f64::total_cmp);
        }
        Sample {
            values,
            missing: self.missing,
        }
    }
}

impl Sample {
    /// A column's cells (see `Gather::push`).
    pub fn read<'a>(
        kind: Kind,
        cells: impl IntoIterator<Item = &'a str>,
    ) -> Result<Sample, NotANumber> {
        let mut g = Gather::new(kind);
        for c in cells {
            g.push(c)?;
        }
        Ok(g.finish())
    }

    pub fn kind(&self) -> Kind {
        match self.values {
            Values::Numeric(_) => Kind::Numeric,
            Values::Categorical(_) => Kind::Categorical,
        }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::Numeric(v) => v.len(),
            Values::Categorical(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many distinct values this sample and `other` hold together.
    fn distinct_with(&self, other: &Sample) -> usize {
        match (&self.values, &other.values) {
            (Values::Numeric(a), Values::Numeric(b)) => {
                let (mut i, mut j, mut last, mut n) = (0, 0, None, 0);
                while i < a.len() || j < b.len() {
                    let x = if j == b.len() || (i < a.len() && a[i] <= b[j]) {
                        i += 1;
                        a[i - 1]
                    } else {
                        j += 1;
                        b[j - 1]
                    };
                    if last != Some(x) {
                        n += 1;
                        last = Some(x);
                    }
                }
                n
            }
            (Values::Categorical(a), Values::Categorical(b)) => a
                .iter()
                .chain(b)
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                .len(),
            // Samples of two kinds (`compare` never asks): their values as text.
            _ => {
                let mut all = self.counts();
                all.extend(other.counts());
                all.len()
            }
        }
    }

    /// Each distinct value's count; numbers keyed by their shortest text.
    fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        match &self.values {
            Values::Numeric(v) => {
                for x in v {
                    *out.entry(number_key(*x)).or_default() += 1;
                }
            }
            Values::Categorical(v) => {
                for c in v {
                    *out.entry(c.clone()).or_default() += 1;
                }
            }
        }
        out
    }
}

fn number_key(x: f64) -> String {
    ryu_js::Buffer::new().format(x).to_string()
}

/// Profiles a reference column; it must have a value.
pub fn profile(name: &str, sample: &Sample) -> Option<ColumnProfile> {
    if sample.is_empty() {
        return None;
    }
    let unique;
    let summary = match &sample.values {
        Values::Numeric(v) => {
            let mut distinct = v.clone();
            distinct.dedup();
            unique = distinct.len();
            // Few distinct values: a bin each, so PSI sees their shares move.
            let (edges, bins) = if distinct.len() <= PROFILE_BINS {
                let bins = distinct.len();
                (distinct, bins)
            } else {
                let mut edges: Vec<f64> = stats::linspace(0.0, 1.0, PROFILE_BINS + 1)
                    .into_iter()
                    .map(|q| stats::quantile(v, q))
                    .collect();
                edges.dedup();
                let bins = edges.len() - 1;
                (edges, bins)
            };
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            Summary::Numeric {
                counts: bin_counts(cuts(&edges, bins), v),
                edges,
                mean,
                std: stats::std(v),
                min: v[0],
                max: v[v.len() - 1],
            }
        }
        Values::Categorical(_) => {
            let counts = sample.counts();
            unique = counts.len();
            let mut by_count: Vec<(&String, &u64)> = counts.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<ValueCount> = by_count
                .iter()
                .take(PROFILE_TOP_VALUES)
                .map(|(v, c)| ValueCount {
                    value: (*v).clone(),
                    count: **c,
                })
                .collect();
            let listed: u64 = top.iter().map(|t| t.count).sum();
            Summary::Categorical {
                top,
                other: sample.len() as u64 - listed,
            }
        }
    };
    Some(ColumnProfile {
        name: name.to_string(),
        count: sample.len() as u64,
        missing: sample.missing,
        unique: unique as u64,
        summary,
    })
}

/// The values that split a profile's `bins` bins: `edges[1..bins]`.
fn cuts(edges: &[f64], bins: usize) -> &[f64] {
    edges.get(1..bins).unwrap_or_default()
}

/// Counts of sorted `values` in the bins `cuts` split them into: below the first cut, from
/// each cut to the next, from the last cut up.
fn bin_counts(cuts: &[f64], values: &[f64]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for c in cuts {
        let to = values.partition_point(|v| v < c);
        counts.push((to - from) as u64);
        from = to;
    }
    counts.push((values.len() - from) as u64);
    counts
}

/// A profile's PSI bins as shares of its values, and `current`'s shares in the same bins;
/// for categories, the profile's top values and "other".
fn psi_shares(
    profile: &ColumnProfile,
    current: &Sample,
    current_counts: Option<&BTreeMap<String, u64>>,
) -> (Vec<f64>, Vec<f64>) {
    let share = |counts: &[u64], n: usize| -> Vec<f64> {
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    };
    let reference_n = profile.count as usize;
    match (&profile.summary, &current.values) {
        (Summary::Numeric { edges, counts, .. }, Values::Numeric(v)) => (
            share(counts, reference_n),
            share(&bin_counts(cuts(edges, counts.len()), v), v.len()),
        ),
        (Summary::Categorical { top, other }, _) => {
            let counted;
            let current_counts = match current_counts {
                Some(c) => c,
                None => {
                    counted = current.counts();
                    &counted
                }
            };
            let mut reference: Vec<u64> = top.iter().map(|t| t.count).collect();
            reference.push(*other);
            let mut cur: Vec<u64> = top
                .iter()
                .map(|t| current_counts.get(&t.value).copied().unwrap_or(0))
                .collect();
            cur.push(current.len() as u64 - cur.iter().sum::<u64>());
            (share(&reference, reference_n), share(&cur, current.len()))
        }
        (Summary::Numeric { .. }, Values::Categorical(_)) => (vec![], vec![]),
    }
}

/// Evidently's default tests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, utoipa::ToSchema, async_graphql::Enum,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov p-value.
    Ks,
    /// Pearson chi-square p-value.
    ChiSquare,
    /// Two-proportion Z-test p-value.
    ZTest,
    /// Wasserstein distance over the reference's standard deviation.
    WassersteinNormed,
    /// Jensen–Shannon distance.
    JensenShannon,
}

impl Method {
    /// Evidently's choice: by the reference's size, the column's kind and how many distinct
    /// values the two samples hold together.
    pub fn choose(kind: Kind, reference_rows: usize, distinct: usize) -> Method {
        match (reference_rows <= SMALL_REFERENCE, kind) {
            (true, Kind::Numeric) if distinct > 5 => Method::Ks,
            (true, _) if distinct > 2 => Method::ChiSquare,
            (true, _) => Method::ZTest,
            (false, Kind::Numeric) if distinct > 5 => Method::WassersteinNormed,
            (false, _) => Method::JensenShannon,
        }
    }

    /// p-values drift below their threshold, distances at or above theirs.
    fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquare | Method::ZTest)
    }

    pub fn threshold(self, t: &DriftThresholds) -> f64 {
        if self.is_p_value() {
            t.p_value
        } else {
            t.distance
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, utoipa::ToSchema, async_graphql::Enum,
)]
#[serde(rename_all = "snake_case")]
pub enum PsiLevel {
    Ok,
    Warn,
    Alert,
}

/// One column's drift.
#[derive(
    Debug, Clone, PartialEq, Serialize, JsonSchema, utoipa::ToSchema, async_graphql::SimpleObject,
)]
pub struct ColumnDrift {
    pub column: String,
    pub kind: Kind,
    pub method: Method,
    /// The p-value, or the distance.
    pub score: f64,
    pub threshold: f64,
    pub drifted: bool,
    /// The KS statistic (the largest gap between the two CDFs), for `ks` only.
    pub statistic: Option<f64>,
    pub psi: f64,
    pub psi_level: PsiLevel,
    pub reference_values: u64,
    pub current_values: u64,
    pub current_missing: u64,
}

/// Why a column's drift could not be judged.
#[derive(
    Debug, Clone, PartialEq, Serialize, JsonSchema, utoipa::ToSchema, async_graphql::SimpleObject,
)]
pub struct Undetermined {
    pub column: String,
    pub reason: String,
}

/// Compares a column of current values with the reference's; None when the current has no
/// values or the kinds differ.
pub fn compare(
    profile: &ColumnProfile,
    reference: &Sample,
    current: &Sample,
    thresholds: &DriftThresholds,
) -> Result<ColumnDrift, Undetermined> {
    let undetermined = |reason: &str| Undetermined {
        column: profile.name.clone(),
        reason: reason.to_string(),
    };
    if current.is_empty() {
        return Err(undetermined("no current values"));
    }
    if reference.kind() != current.kind() || reference.is_empty() {
        return Err(undetermined("the reference column differs in kind"));
    }
    let method = Method::choose(
        reference.kind(),
        reference.len(),
        reference.distinct_with(current),
    );
    let mut statistic = None;
    // Each value's count, only where a test (and a categorical PSI) reads them: a numeric
    // column of many values is judged on its sorted values alone.
    let mut current_counts = None;
    let score = match method {
        Method::Ks => {
            let (Values::Numeric(r), Values::Numeric(c)) = (&reference.values, &current.values)
            else {
                return Err(undetermined("the reference column differs in kind"));
            };
            let (d, p) = stats::ks_2samp(r, c);
            statistic = Some(d);
            p
        }
        Method::WassersteinNormed => {
            let (Values::Numeric(r), Values::Numeric(c)) = (&reference.values, &current.values)
            else {
                return Err(undetermined("the reference column differs in kind"));
            };
            stats::wasserstein(r, c) / stats::std(r).max(0.001)
        }
        Method::ChiSquare | Method::ZTest | Method::JensenShannon => {
            let counts = current.counts();
            let score = by_counts(method, reference, current, &reference.counts(), &counts);
            current_counts = Some(counts);
            score
        }
    };
    let threshold = method.threshold(thresholds);
    let drifted = if method.is_p_value() {
        score < threshold
    } else {
        score >= threshold
    };
    let (r, c) = psi_shares(profile, current, current_counts.as_ref());
    let psi = stats::psi(&r, &c);
    Ok(ColumnDrift {
        column: profile.name.clone(),
        kind: reference.kind(),
        method,
        score,
        threshold,
        drifted,
        statistic,
        psi,
        psi_level: match psi {
            p if p >= thresholds.psi_alert => PsiLevel::Alert,
            p if p >= thresholds.psi_warn => PsiLevel::Warn,
            _ => PsiLevel::Ok,
        },
        reference_values: reference.len() as u64,
        current_values: current.len() as u64,
        current_missing: current.missing,
    })
}

/// The chi-square and Z-test p-values and the Jensen–Shannon distance, from each value's
/// count in the two samples.
fn by_counts(
    method: Method,
    reference: &Sample,
    current: &Sample,
    ref_counts: &BTreeMap<String, u64>,
    cur_counts: &BTreeMap<String, u64>,
) -> f64 {
    let mut keys = ref_counts.clone();
    keys.extend(cur_counts.keys().map(|k| (k.clone(), 0)));
    let count = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0) as f64;
    match method {
        Method::ChiSquare => {
            let k_norm = current.len() as f64 / reference.len() as f64;
            let (observed, expected): (Vec<f64>, Vec<f64>) = keys
                .keys()
                .map(|k| (count(cur_counts, k), count(ref_counts, k) * k_norm))
                .unzip();
            stats::chisquare(&observed, &expected)
        }
        Method::ZTest if ref_counts.len() == 1 && ref_counts.keys().eq(cur_counts.keys()) => 1.0,
        Method::ZTest => {
            let first = keys.keys().next().map(String::as_str).unwrap_or("");
            let ones = |m: &BTreeMap<String, u64>, n: usize| n as u64 - count(m, first) as u64;
            stats::proportions_z(
                ones(ref_counts, reference.len()),
                reference.len() as u64,
                ones(cur_counts, current.len()),
                current.len() as u64,
            )
        }
        _ => {
            let (p, q) = binned(ref_counts, cur_counts, &keys);
            stats::jensen_shannon(&p, &q)
        }
    }
}

/// Evidently's `get_binned_data` without zero filling, for the columns it is chosen for here
/// (categories, and numbers of at most five distinct values): each value's count.
fn binned(
    ref_counts: &BTreeMap<String, u64>,
    cur_counts: &BTreeMap<String, u64>,
    keys: &BTreeMap<String, u64>,
) -> (Vec<f64>, Vec<f64>) {
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0) as f64;
    keys.keys()
        .map(|k| (get(ref_counts, k), get(cur_counts, k)))
        .unzip()
}

/// The whole comparison: each column's drift and whether the dataset drifted.
#[derive(
    Debug, Clone, PartialEq, Serialize, JsonSchema, utoipa::ToSchema, async_graphql::SimpleObject,
)]
pub struct Report {
    pub columns: Vec<ColumnDrift>,
    pub undetermined: Vec<Undetermined>,
    /// Share of the judged columns that drifted.
    pub drift_share: f64,
    pub dataset_drift: bool,
}

impl Report {
    /// Compares each profiled column present in `current`.
    pub fn new(
        profiles: &[ColumnProfile],
        reference: &BTreeMap<String, Sample>,
        current: &BTreeMap<String, Sample>,
        thresholds: &DriftThresholds,
    ) -> Report {
        let mut columns = Vec::new();
        let mut undetermined = Vec::new();
        for p in profiles {
            let found = match (reference.get(&p.name), current.get(&p.name)) {
                (Some(r), Some(c)) => compare(p, r, c, thresholds),
                _ => Err(Undetermined {
                    column: p.name.clone(),
                    reason: "no current values".into(),
                }),
            };
            match found {
                Ok(d) => columns.push(d),
                Err(u) => undetermined.push(u),
            }
        }
        let drifted = columns.iter().filter(|c| c.drifted).count();
        let drift_share = if columns.is_empty() {
            0.0
        } else {
            drifted as f64 / columns.len() as f64
        };
        Report {
            dataset_drift: !columns.is_empty() && drift_share >= thresholds.dataset_share,
            columns,
            undetermined,
            drift_share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: &[f64]) -> Sample {
        let cells: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        Sample::read(Kind::Numeric, cells.iter().map(String::as_str)).unwrap()
    }

    #[test]
    fn evidently_chooses_by_size_kind_and_distinct_values() {
        assert_eq!(Method::choose(Kind::Numeric, 1000, 6), Method::Ks);
        assert_eq!(Method::choose(Kind::Numeric, 1000, 5), Method::ChiSquare);
        assert_eq!(Method::choose(Kind::Categorical, 10, 2), Method::ZTest);
        assert_eq!(Method::choose(Kind::Categorical, 10, 30), Method::ChiSquare);
        assert_eq!(
            Method::choose(Kind::Numeric, 1001, 6),
            Method::WassersteinNormed
        );
        assert_eq!(
            Method::choose(Kind::Numeric, 1001, 5),
            Method::JensenShannon
        );
        assert_eq!(
            Method::choose(Kind::Categorical, 5000, 2),
            Method::JensenShannon
        );
    }

    #[test]
    fn profiles_bin_by_reference_quantiles_and_psi_sees_a_shift() {
        let reference = numeric(&(0..100).map(f64::from).collect::<Vec<_>>());
        let p = profile("x", &reference).unwrap();
        let Summary::Numeric { edges, counts, .. } = &p.summary else {
            panic!("numeric")
        };
        assert_eq!(edges.len(), 11);
        assert_eq!(counts.iter().sum::<u64>(), 100);
        assert_eq!(counts, &vec![10; 10]);
        let same = compare(&p, &reference, &reference, &DriftThresholds::default()).unwrap();
        assert_eq!(
            (same.method, same.drifted, same.psi),
            (Method::Ks, false, 0.0)
        );
        let shifted = numeric(&(50..150).map(f64::from).collect::<Vec<_>>());
        let d = compare(&p, &reference, &shifted, &DriftThresholds::default()).unwrap();
        assert!(d.drifted && d.score < 1e-6, "{d:?}");
        assert_eq!(d.psi_level, PsiLevel::Alert);
    }

    #[test]
    fn missing_and_bad_cells() {
        let s = Sample::read(Kind::Numeric, ["1", "", "NaN", "-0"]).unwrap();
        assert_eq!((s.values, s.missing), (Values::Numeric(vec![0.0, 1.0]), 2));
        assert_eq!(
            Sample::read(Kind::Numeric, ["1", "x"]),
            Err(NotANumber {
                row: 1,
                cell: "x".into()
            })
        );
        assert!(profile("x", &Sample::read(Kind::Numeric, [""]).unwrap()).is_none());
    }

    #[test]
    fn categories_beyond_the_top_count_as_other() {
        let cells: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
        let s = Sample::read(Kind::Categorical, cells.iter().map(String::as_str)).unwrap();
        let p = profile("c", &s).unwrap();
        let Summary::Categorical { top, other } = &p.summary else {
            panic!("categorical")
        };
        assert_eq!((top.len(), *other, p.unique), (PROFILE_TOP_VALUES, 10, 30));
    }
}
