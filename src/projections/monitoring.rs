//! Service-level monitoring: per deployment and per minute, what its inference runs served.
//! Folded from `InferenceRunRecorded` events alone, so the monitoring of any past period is
//! recomputed exactly from the ledger; hours and days are rolled up from minutes on read.

use std::collections::BTreeMap;

use chrono::DateTime;
use serde::Serialize;
use uuid::Uuid;

use super::histogram::Histogram;
use crate::domain::{Recorded, RegistryEvent};

/// Request latency bounds, in µs, of the cumulative buckets `/metrics` exports (Prometheus'
/// `le`), counted exactly.
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// What one window of one deployment served.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    pub runs: u64,
    pub requests: u64,
    pub rows: u64,
    /// Per request: from arrival to the response being ready, recording included.
    pub latency_us: Histogram,
    /// Per request: waiting for a batching worker or a session slot.
    pub queue_wait_us: Histogram,
    /// Per session run: how many rows it scored together.
    pub batch_rows: Histogram,
}

impl Window {
    fn merge(&mut self, other: &Window) {
        self.runs += other.runs;
        self.requests += other.requests;
        self.rows += other.rows;
        self.latency_us.merge(&other.latency_us);
        self.queue_wait_us.merge(&other.queue_wait_us);
        self.batch_rows.merge(&other.batch_rows);
    }
}

/// Everything a deployment served since its first run: the counters `/metrics` exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub runs: u64,
    pub requests: u64,
    pub rows: u64,
    pub latency_sum_us: u64,
    /// Requests answered within each of `LATENCY_BOUNDS_US`.
    pub latency_within: [u64; LATENCY_BOUNDS_US.len()],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct Served {
    /// Minute (Unix seconds / 60) → its window.
    minutes: BTreeMap<i64, Window>,
    /// Minute → the ledger positions of its runs, for what reads the runs themselves (drift).
    #[serde(skip)]
    runs: BTreeMap<i64, Vec<u64>>,
    totals: Totals,
}

/// How long a reported window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl std::str::FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Resolution, String> {
        match s {
            "minute" => Ok(Resolution::Minute),
            "hour" => Ok(Resolution::Hour),
            "day" => Ok(Resolution::Day),
            _ => Err(format!("resolution {s:?}: expected minute, hour or day")),
        }
    }
}

impl Resolution {
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Resolution::Minute => 60,
            Resolution::Hour => 3_600,
            Resolution::Day => 86_400,
        }
    }
}

impl Served {
    fn fold(&mut self, minute: i64, run: &crate::domain::event::InferenceRunRecorded) {
        let window = self.minutes.entry(minute).or_default();
        let totals = &mut self.totals;
        window.runs += 1;
        window.rows += run.row_count;
        window.batch_rows.record(run.row_count);
        totals.runs += 1;
        totals.rows += run.row_count;
        for q in &run.requests {
            window.requests += 1;
            window.latency_us.record(q.latency_us);
            window.queue_wait_us.record(q.queue_wait_us);
            totals.requests += 1;
            totals.latency_sum_us = totals.latency_sum_us.saturating_add(q.latency_us);
            for (within, bound) in totals.latency_within.iter_mut().zip(LATENCY_BOUNDS_US) {
                *within += u64::from(q.latency_us <= bound);
            }
        }
    }

    /// Its windows of `resolution` that overlap `from..to` (see `Monitoring::windows`).
    fn windows(
        &self,
        resolution: Resolution,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Vec<(i64, Window)> {
        let length = resolution.seconds();
        let start_of = |second: i64| second.div_euclid(length) * length;
        let minutes = match from {
            Some(f) => self.minutes.range(start_of(f).div_euclid(60)..),
            None => self.minutes.range(..),
        };
        let mut out: Vec<(i64, Window)> = Vec::new();
        for (minute, w) in minutes {
            let start = start_of(minute * 60);
            if to.is_some_and(|t| start >= t) {
                break;
            }
            let full = out.len() == limit;
            match out.last_mut() {
                Some((s, acc)) if *s == start => acc.merge(w),
                _ if full => break,
                _ => out.push((start, w.clone())),
            }
        }
        out
    }
}

/// What one variant of a deployment served with one model version: A/B arms and versions
/// before and after an update side by side, a challenger's shadow runs apart from the
/// requests the deployment answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionServed {
    pub variant: String,
    pub model_id: Uuid,
    pub version: u32,
    pub shadow: bool,
    #[serde(flatten)]
    served: Served,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Monitoring {
    /// What each deployment answered (challengers' shadow runs are not answers).
    deployments: BTreeMap<Uuid, Served>,
    /// Per deployment, each variant and model version on its own, shadows included.
    versions: BTreeMap<Uuid, Vec<VersionServed>>,
}

impl Monitoring {
    /// Folds one stored event; only inference runs count.
    pub fn apply(&mut self, r: &Recorded) {
        let Some(RegistryEvent::InferenceRunRecorded(run)) = &r.event else {
            return;
        };
        // The commit time of the run's event; a time the log could not have written is left
        // in minute 0 rather than dropped, so totals and windows still agree.
        let minute = DateTime::parse_from_rfc3339(&r.recorded_at)
            .map_or(0, |t| t.timestamp().div_euclid(60));
        let versions = self.versions.entry(run.deployment_id).or_default();
        let same = |v: &VersionServed| {
            v.variant == run.variant
                && v.model_id == run.model_id
                && v.version == run.version
                && v.shadow == run.shadow
        };
        let i = match versions.iter().position(same) {
            Some(i) => i,
            None => {
                versions.push(VersionServed {
                    variant: run.variant.clone(),
                    model_id: run.model_id,
                    version: run.version,
                    shadow: run.shadow,
                    served: Served::default(),
                });
                versions.len() - 1
            }
        };
        versions[i].served.fold(minute, run);
        if !run.shadow {
            let served = self.deployments.entry(run.deployment_id).or_default();
            served.runs.entry(minute).or_default().push(r.position);
            served.fold(minute, run);
        }
    }

    /// Each variant and model version a deployment ran, with its windows of `resolution`
    /// in `from..to` (as `windows`).
    pub fn version_windows(
        &self,
        deployment: Uuid,
        resolution: Resolution,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Vec<(&VersionServed, Vec<(i64, Window)>)> {
        self.versions
            .get(&deployment)
            .into_iter()
            .flatten()
            .map(|v| (v, v.served.windows(resolution, from, to, limit)))
            .collect()
    }

    /// A deployment's windows of `resolution` that overlap `from..to` (Unix seconds, either
    /// open), oldest first, at most `limit` of them; only windows with runs.
    pub fn windows(
        &self,
        deployment: Uuid,
        resolution: Resolution,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Vec<(i64, Window)> {
        self.deployments
            .get(&deployment)
            .map_or_else(Vec::new, |s| s.windows(resolution, from, to, limit))
    }

    /// The ledger positions of a deployment's runs committed in the minutes that start in
    /// `from..to` (Unix seconds, either open), oldest first.
    pub fn run_positions(&self, deployment: Uuid, from: Option<i64>, to: Option<i64>) -> Vec<u64> {
        let Some(served) = self.deployments.get(&deployment) else {
            return Vec::new();
        };
        served
            .runs
            .range(minutes_starting_in(from, to))
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }

    /// A deployment's minutes that start in `from..to` (Unix seconds) as one window.
    pub fn summary(&self, deployment: Uuid, from: i64, to: i64) -> Window {
        let mut out = Window::default();
        if let Some(served) = self.deployments.get(&deployment) {
            for w in served
                .minutes
                .range(minutes_starting_in(Some(from), Some(to)))
                .map(|(_, w)| w)
            {
                out.merge(w);
            }
        }
        out
    }

    /// Every deployment's totals, by deployment id.
    pub fn totals(&self) -> impl Iterator<Item = (&Uuid, &Totals)> {
        self.deployments.iter().map(|(id, s)| (id, &s.totals))
    }
}

/// The minutes (Unix seconds / 60) that start in `from..to`, either open.
pub fn minutes_starting_in(from: Option<i64>, to: Option<i64>) -> std::ops::Range<i64> {
    let ceil = |s: i64| s.div_euclid(60) + i64::from(s.rem_euclid(60) != 0);
    let first = from.map_or(i64::MIN, ceil);
    first..to.map_or(i64::MAX, ceil).max(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{InferenceRunRecorded, RunRequest, RunSession};
    use crate::domain::runtime::ImageVersionSpec;

    fn run(deployment: u128, at: &str, latencies: &[u64]) -> Recorded {
        let requests = latencies
            .iter()
            .enumerate()
            .map(|(i, l)| RunRequest {
                request_id: Uuid::from_u128(i as u128),
                row_offset: i as u64,
                row_count: 1,
                caller: "anonymous".into(),
                queue_wait_us: l / 10,
                latency_us: *l,
                draw: None,
            })
            .collect();
        Recorded {
            position: 0,
            stream: "deployment".into(),
            stream_version: 0,
            actor: "system:scorer".into(),
            recorded_at: at.into(),
            event: Some(RegistryEvent::InferenceRunRecorded(InferenceRunRecorded {
                run_id: Uuid::nil(),
                deployment_id: Uuid::from_u128(deployment),
                variant: "primary".into(),
                shadow: false,
                model_id: Uuid::nil(),
                version: 1,
                model_blob: String::new(),
                image_id: "i".into(),
                image_version: "1".into(),
                session: Box::new(RunSession::of(&ImageVersionSpec::default(), "1.32.0", None)),
                row_count: latencies.len() as u64,
                input_blob: String::new(),
                output_blob: String::new(),
                requests,
                job: None,
                profile: None,
            })),
        }
    }

    fn folded() -> Monitoring {
        let mut m = Monitoring::default();
        for (i, r) in [
            run(1, "2026-11-23T10:00:05.000000Z", &[800, 1200]),
            run(1, "2026-11-23T10:00:59.999999Z", &[3000]),
            run(1, "2026-11-23T10:01:00.000000Z", &[400]),
            run(1, "2026-11-23T11:30:00.000000Z", &[2_000_000, 100]),
            run(2, "2026-11-23T10:00:10.000000Z", &[50]),
        ]
        .into_iter()
        .enumerate()
        {
            m.apply(&Recorded {
                position: i as u64,
                ..r
            });
        }
        m
    }

    #[test]
    fn run_positions_come_from_the_minutes_that_start_in_the_range() {
        let m = folded();
        let ten = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .timestamp();
        let one = Uuid::from_u128(1);
        assert_eq!(m.run_positions(one, None, None), [0, 1, 2, 3]);
        assert_eq!(m.run_positions(one, Some(ten), Some(ten + 60)), [0, 1]);
        // 10:00:30 to 10:01:30: only the minute starting 10:01 lies within.
        assert_eq!(m.run_positions(one, Some(ten + 30), Some(ten + 90)), [2]);
        assert_eq!(m.run_positions(one, Some(ten + 3600), None), [3]);
        assert!(m.run_positions(one, Some(ten + 90), Some(ten)).is_empty());
        assert_eq!(m.run_positions(Uuid::from_u128(2), None, None), [4]);
    }

    #[test]
    fn runs_fold_into_minute_windows_and_roll_up() {
        let m = folded();
        let ten = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .timestamp();
        let minutes = m.windows(
            Uuid::from_u128(1),
            Resolution::Minute,
            None,
            None,
            usize::MAX,
        );
        let starts: Vec<i64> = minutes.iter().map(|(s, _)| s - ten).collect();
        assert_eq!(starts, [0, 60, 5400]);
        let first = &minutes[0].1;
        assert_eq!((first.runs, first.requests, first.rows), (2, 3, 3));
        assert_eq!(first.latency_us.max(), 3000);
        assert_eq!(first.batch_rows.mean(), Some(1.5));

        let hours = m.windows(Uuid::from_u128(1), Resolution::Hour, None, None, usize::MAX);
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].0 - ten, hours[0].1.requests), (0, 4));
        assert_eq!((hours[1].0 - ten, hours[1].1.requests), (3600, 2));
        let day = m.windows(Uuid::from_u128(1), Resolution::Day, None, None, usize::MAX);
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].1.requests, 6);
        assert_eq!(day[0].1.latency_us.quantile(1.0), Some(2_000_000));

        // Ranges take the windows that overlap them.
        let later = m.windows(
            Uuid::from_u128(1),
            Resolution::Hour,
            Some(ten + 1800),
            None,
            usize::MAX,
        );
        assert_eq!(later.len(), 2);
        let first_minute = m.windows(
            Uuid::from_u128(1),
            Resolution::Minute,
            Some(ten + 30),
            Some(ten + 60),
            usize::MAX,
        );
        assert_eq!(first_minute.len(), 1);
        // A limit stops after that many windows, each still rolled up whole.
        let one = m.windows(Uuid::from_u128(1), Resolution::Hour, None, None, 1);
        assert_eq!((one.len(), one[0].1.requests), (1, 4));
        let two = m.windows(Uuid::from_u128(1), Resolution::Minute, None, None, 2);
        assert_eq!(two.len(), 2);
        assert!(
            m.windows(Uuid::from_u128(3), Resolution::Day, None, None, usize::MAX)
                .is_empty()
        );
    }

    #[test]
    fn totals_count_latency_buckets_exactly() {
        let m = folded();
        let totals: BTreeMap<_, _> = m.totals().collect();
        let t = totals[&Uuid::from_u128(1)];
        assert_eq!((t.runs, t.requests, t.rows), (4, 6, 6));
        assert_eq!(t.latency_sum_us, 800 + 1200 + 3000 + 400 + 2_000_000 + 100);
        // ≤ 500 µs: 400 and 100; ≤ 1 ms: and 800; ≤ 2.5 ms: and 1200; ... ≤ 2.5 s: all.
        assert_eq!(t.latency_within[..4], [2, 3, 4, 5]);
        assert_eq!(t.latency_within[11], 6);
        assert_eq!(t.latency_within[10], 5);
    }

    #[test]
    fn the_fold_ignores_order_within_a_window_and_other_events() {
        let mut a = Monitoring::default();
        let mut b = Monitoring::default();
        let runs = [
            run(1, "2026-11-23T10:00:05.000000Z", &[800, 1200]),
            run(1, "2026-11-23T10:00:07.000000Z", &[3000]),
        ];
        for r in &runs {
            a.apply(r);
        }
        for r in runs.iter().rev() {
            b.apply(r);
        }
        let mut other = runs[0].clone();
        other.event = None;
        b.apply(&other);
        assert_eq!(a, b);
    }
}
