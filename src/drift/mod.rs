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

use crate::domain::event::RunProfile;
pub use crate::domain::reference::Method;
use crate::domain::reference::{ColumnProfile, DriftThresholds, Summary, ValueCount};
use crate::domain::schema::ColumnType;
use crate::runtime::cells::Cells;
use crate::runtime::scorer::Seen;

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

/// `current` counted in a profile's PSI bins: its bins for numbers; for categories its top
/// values, then "other". None when the kinds differ.
fn psi_bins(
    profile: &ColumnProfile,
    current: &Sample,
    current_counts: Option<&BTreeMap<String, u64>>,
) -> Option<Vec<u64>> {
    match (&profile.summary, &current.values) {
        (Summary::Numeric { edges, counts, .. }, Values::Numeric(v)) => {
            Some(bin_counts(cuts(edges, counts.len()), v))
        }
        (Summary::Categorical { top, .. }, _) => {
            let counted;
            let current_counts = match current_counts {
                Some(c) => c,
                None => {
                    counted = current.counts();
                    &counted
                }
            };
            let mut cur: Vec<u64> = top
                .iter()
                .map(|t| current_counts.get(&t.value).copied().unwrap_or(0))
                .collect();
            cur.push(current.len() as u64 - cur.iter().sum::<u64>());
            Some(cur)
        }
        (Summary::Numeric { .. }, Values::Categorical(_)) => None,
    }
}

/// PSI of a profile's bins (as shares of its values) against `current` counts in the same
/// bins (see `psi_bins`), however they were counted: from a sample's values, or summed from
/// runs' scoring-time bins.
pub fn psi_of_bins(profile: &ColumnProfile, current: &[u64]) -> f64 {
    let share = |counts: &[u64]| -> Vec<f64> {
        let n: u64 = counts.iter().sum();
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    };
    let reference = reference_bins(profile);
    stats::psi(&share(&reference), &share(current))
}

/// How many PSI bins a profile has.
pub fn bin_count(profile: &ColumnProfile) -> usize {
    match &profile.summary {
        Summary::Numeric { counts, .. } => counts.len(),
        Summary::Categorical { top, .. } => top.len() + 1,
    }
}

/// The profile's own counts in its PSI bins.
fn reference_bins(profile: &ColumnProfile) -> Vec<u64> {
    match &profile.summary {
        Summary::Numeric { counts, .. } => counts.clone(),
        Summary::Categorical { top, other } => {
            top.iter().map(|t| t.count).chain([*other]).collect()
        }
    }
}

/// A column's `rows` cells counted in its profile's PSI bins, read as `Gather::push` reads
/// them (empty, NaN and infinite cells are missing; so is a cell of a numeric column that
/// does not parse, as the drift report counts it): the bin counts and the missing cells.
/// `parsed(row)` is what the session was fed for the cell, when the scorer knows it (see
/// `Model::parsed`): a run's cells are binned as the model saw them, which is how the drift
/// report reads them back from the run's typed table.
pub fn bin_cells<'a>(
    profile: &ColumnProfile,
    rows: usize,
    cell: impl Fn(usize) -> &'a str,
    parsed: impl Fn(usize) -> Option<Seen>,
) -> (Vec<u64>, u64) {
    let mut counts = vec![0u64; bin_count(profile)];
    let mut missing = 0u64;
    let mut count = |bin: Option<usize>| match bin.and_then(|b| counts.get_mut(b)) {
        Some(c) => *c += 1,
        None => missing += 1,
    };
    match &profile.summary {
        Summary::Numeric { edges, counts, .. } => {
            let cuts = cuts(edges, counts.len());
            for r in 0..rows {
                let x = match parsed(r) {
                    Some(Seen::Number(x)) => Some(x),
                    _ => crate::runtime::scorer::trim(cell(r)).parse::<f64>().ok(),
                };
                count(
                    x.filter(|x| x.is_finite())
                        .map(|x| cuts.partition_point(|c| *c <= x + 0.0)),
                );
            }
        }
        Summary::Categorical { top, .. } => {
            for r in 0..rows {
                let cell = match parsed(r) {
                    Some(Seen::Text(t)) => t,
                    _ => cell(r),
                };
                count((!cell.is_empty()).then(|| {
                    top.iter()
                        .position(|t| t.value == cell)
                        .unwrap_or(top.len())
                }));
            }
        }
    }
    (counts, missing)
}

/// A run's inputs (`rows` under `fields`) binned by a reference's column profiles, for the
/// run's record: every profiled column, in the profile's order (one the rows lack is all
/// missing). `parsed(column, row)` is what the scorer made of a cell, when it knows.
pub fn sketch(
    reference_blob: &str,
    profiles: &[ColumnProfile],
    fields: &[&str],
    rows: &Cells,
    parsed: impl Fn(usize, usize) -> Option<Seen>,
) -> RunProfile {
    let columns = profiles
        .iter()
        .map(|p| {
            let (counts, missing) = match fields.iter().position(|f| *f == p.name) {
                Some(i) => bin_cells(p, rows.len(), |r| rows.cell(r, i), |r| parsed(i, r)),
                None => bin_cells(p, rows.len(), |_| "", |_| None),
            };
            std::iter::once(missing)
                .chain(
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .flat_map(|(b, c)| [b as u64, *c]),
                )
                .collect()
        })
        .collect();
    RunProfile {
        reference_blob: reference_blob.to_string(),
        columns,
    }
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
        match self {
            Method::Psi => t.psi_alert,
            m if m.is_p_value() => t.p_value,
            _ => t.distance,
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

impl PsiLevel {
    /// H2O's convention, at the thresholds given.
    pub fn of(psi: f64, thresholds: &DriftThresholds) -> PsiLevel {
        match psi {
            p if p >= thresholds.psi_alert => PsiLevel::Alert,
            p if p >= thresholds.psi_warn => PsiLevel::Warn,
            _ => PsiLevel::Ok,
        }
    }
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
    let set = match reference.kind() {
        Kind::Numeric => thresholds.numeric_method,
        Kind::Categorical => thresholds.categorical_method,
    };
    let method = set.unwrap_or_else(|| {
        Method::choose(
            reference.kind(),
            reference.len(),
            reference.distinct_with(current),
        )
    });
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
        // Scored below, where every column gets its PSI.
        Method::Psi => f64::NAN,
    };
    // The kinds agree here (checked above), so the current side always has bins.
    let psi = psi_bins(profile, current, current_counts.as_ref())
        .map_or(f64::NAN, |bins| psi_of_bins(profile, &bins));
    let score = if method == Method::Psi { psi } else { score };
    let threshold = method.threshold(thresholds);
    let drifted = if method.is_p_value() {
        score < threshold
    } else {
        score >= threshold
    };
    Ok(ColumnDrift {
        column: profile.name.clone(),
        kind: reference.kind(),
        method,
        score,
        threshold,
        drifted,
        statistic,
        psi,
        psi_level: PsiLevel::of(psi, thresholds),
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

        // A deployment's own choice of test replaces Evidently's for its kind of column.
        let by = |numeric_method, psi_alert| DriftThresholds {
            numeric_method: Some(numeric_method),
            psi_alert,
            ..DriftThresholds::default()
        };
        let psi = compare(&p, &reference, &shifted, &by(Method::Psi, 0.25)).unwrap();
        assert_eq!(
            (psi.method, psi.score, psi.threshold, psi.drifted),
            (Method::Psi, d.psi, 0.25, true)
        );
        let lenient = compare(&p, &reference, &shifted, &by(Method::Psi, 1e9)).unwrap();
        assert!(!lenient.drifted, "{lenient:?}");
        let w = compare(
            &p,
            &reference,
            &shifted,
            &by(Method::WassersteinNormed, 0.25),
        )
        .unwrap();
        assert_eq!((w.method, w.threshold), (Method::WassersteinNormed, 0.1));
        assert!(w.drifted && w.score > 0.1, "{w:?}");
    }

    #[test]
    fn cells_binned_from_the_values_the_session_had_fall_where_their_read_back_text_does() {
        // Edges at values a float cannot hold (0.1, 2^24 + 1); floats on, beside and between
        // them, and ones the drift report counts as missing.
        let reference: Vec<String> = (0..400)
            .map(|i| match i % 4 {
                0 => format!("0.{}", i % 10),
                1 => (16_777_200 + i % 30).to_string(),
                2 => format!("{}", f64::from(i) * 0.37),
                _ => "1e-40".into(),
            })
            .collect();
        let p = profile(
            "x",
            &Sample::read(Kind::Numeric, reference.iter().map(String::as_str)).unwrap(),
        )
        .unwrap();
        let Summary::Numeric { edges, .. } = &p.summary else {
            panic!("numeric")
        };
        let mut floats = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0];
        for e in edges {
            let f = *e as f32;
            floats.extend([f.next_down(), f, f.next_up()]);
        }
        // The text a run's typed table reads back as (`Values::push_exact`).
        let mut buffer = ryu_js::Buffer::new();
        let text: Vec<String> = floats
            .iter()
            .map(|x| match f64::from(*x) {
                x if x.is_nan() => "NaN".to_string(),
                x => buffer.format(x).to_string(),
            })
            .collect();
        let n = floats.len();
        let read_back = bin_cells(&p, n, |r| &text[r], |_| None);
        let had = bin_cells(
            &p,
            n,
            |_| "not read",
            |r| Some(Seen::Number(f64::from(floats[r]))),
        );
        assert_eq!(had, read_back);
        assert_eq!(had.1, 3, "NaN and the infinities are missing");
        // A cell the scorer does not know is read from its text.
        assert_eq!(
            bin_cells(&p, 1, |_| "0.1", |_| None).0,
            bin_cells(&p, 1, |_| "", |_| Some(Seen::Number(0.1))).0
        );
    }

    #[test]
    fn booleans_are_binned_as_read_back_not_as_sent() {
        let reference: Vec<&str> = (0..50).map(|i| ["true", "false"][i % 3 / 2]).collect();
        let p = profile(
            "b",
            &Sample::read(Kind::Categorical, reference.iter().copied()).unwrap(),
        )
        .unwrap();
        let sent = ["1", "0", "TRUE", "true"];
        let had = [true, false, true, true];
        let read_back = bin_cells(&p, 4, |r| ["true", "false"][usize::from(!had[r])], |_| None);
        let binned = bin_cells(
            &p,
            4,
            |r| sent[r],
            |r| Some(Seen::Text(["true", "false"][usize::from(!had[r])])),
        );
        assert_eq!(binned, read_back);
        assert_ne!(bin_cells(&p, 4, |r| sent[r], |_| None), read_back);
    }

    #[test]
    fn cells_binned_one_by_one_give_the_psi_of_their_sample() {
        // Numbers: repeated values, values on the edges, below and above the range, -0, NaN,
        // empty and unparsable cells; categories beyond the top and empty ones.
        let reference: Vec<String> = (0..200).map(|i| ((i * 7) % 50).to_string()).collect();
        let current: Vec<String> = (0..150)
            .map(|i| match i % 17 {
                0 => String::new(),
                1 => "NaN".into(),
                2 => "x".into(),
                3 => "-0".into(),
                4 => "-100".into(),
                5 => "1e9".into(),
                _ => ((i * 3) % 60).to_string(),
            })
            .collect();
        let sample = |kind, cells: &[String]| {
            let mut g = Gather::new(kind);
            for c in cells {
                if g.push(c).is_err() {
                    g.push("").ok();
                }
            }
            g.finish()
        };
        for kind in [Kind::Numeric, Kind::Categorical] {
            let r = sample(kind, &reference);
            let c = sample(kind, &current);
            let p = profile("x", &r).unwrap();
            let exact = compare(&p, &r, &c, &DriftThresholds::default()).unwrap();
            let (bins, missing) = bin_cells(&p, current.len(), |r| &current[r], |_| None);
            assert_eq!(bins.len(), bin_count(&p));
            assert_eq!(Some(bins.clone()), psi_bins(&p, &c, None), "{kind:?}");
            assert_eq!(missing, c.missing, "{kind:?}");
            assert_eq!(
                psi_of_bins(&p, &bins).to_bits(),
                exact.psi.to_bits(),
                "{kind:?}"
            );
            // Summed from runs' sparse bins, the same counts.
            let mut summed = vec![0u64; bins.len()];
            let fields = ["x"];
            for run in current.chunks(7) {
                let rows = Cells::from_rows(1, run.iter().map(|c| [c])).unwrap();
                let sketched = sketch("ref", std::slice::from_ref(&p), &fields, &rows, |_, _| None);
                for pair in sketched.columns[0][1..].chunks(2) {
                    summed[pair[0] as usize] += pair[1];
                }
            }
            assert_eq!(summed, bins, "{kind:?}");
        }
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
