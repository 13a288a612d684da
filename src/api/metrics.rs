//! Monitoring over HTTP: a deployment's service-level windows (REST and GraphQL share
//! `report`), and every deployment's counters at `/metrics` in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};

use crate::log::envelope::format_time;
use crate::projections::histogram::Histogram;
use crate::projections::monitoring::{LATENCY_BOUNDS_US, Resolution, Totals, Window};

/// The most windows one answer holds: a week of minutes.
pub const MAX_WINDOWS: usize = 7 * 24 * 60;

/// Refused scoring requests by deployment and HTTP status, counted live. A refused request
/// appends nothing to the ledger (it must not: anyone can send one), so these are the one
/// figure here that is not recomputed from the log; they count since the process started.
pub struct ErrorCounts {
    counts: Mutex<Counts>,
    since: String,
}

#[derive(Default)]
struct Counts {
    totals: BTreeMap<(Uuid, u16), u64>,
    /// Per deployment and minute (Unix seconds / 60), the last day's refused requests by
    /// status: the windows of errors, and what an error-rate alert reads.
    minutes: BTreeMap<Uuid, BTreeMap<i64, BTreeMap<u16, u64>>>,
}

/// A deployment's refused requests over some minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Refused {
    pub all: u64,
    /// Answered 5xx: the server's failures, not the caller's.
    pub server: u64,
}

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts {
            counts: Mutex::default(),
            since: format_time(Utc::now()),
        }
    }
}

impl ErrorCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, deployment: Uuid, status: u16, minute: i64) {
        let mut counts = self.lock();
        *counts.totals.entry((deployment, status)).or_default() += 1;
        let minutes = counts.minutes.entry(deployment).or_default();
        *minutes
            .entry(minute)
            .or_default()
            .entry(status)
            .or_default() += 1;
        let oldest = minute - i64::from(crate::domain::alert::MAX_WINDOW_MINUTES);
        while minutes.first_key_value().is_some_and(|(m, _)| *m < oldest) {
            minutes.pop_first();
        }
    }

    fn of(&self, deployment: Uuid) -> Vec<StatusCount> {
        self.lock()
            .totals
            .range((deployment, 0)..=(deployment, u16::MAX))
            .map(|((_, status), count)| StatusCount {
                status: *status,
                count: *count,
            })
            .collect()
    }

    /// A deployment's refused requests in the minutes that start in `from..to` (Unix
    /// seconds), as far back as a day.
    pub fn between(&self, deployment: Uuid, from: i64, to: i64) -> Refused {
        let counts = self.lock();
        let mut out = Refused::default();
        let minutes = counts.minutes.get(&deployment).into_iter().flat_map(|m| {
            m.range(crate::projections::monitoring::minutes_starting_in(
                Some(from),
                Some(to),
            ))
        });
        for (status, count) in minutes.flat_map(|(_, m)| m) {
            out.all += count;
            if *status >= 500 {
                out.server += count;
            }
        }
        out
    }

    /// A deployment's refused requests by status in windows of `length` seconds that
    /// overlap `from..to` (either open), oldest first; the last day's only.
    fn windows(
        &self,
        deployment: Uuid,
        length: i64,
        (from, to): (Option<i64>, Option<i64>),
    ) -> Vec<(i64, BTreeMap<u16, u64>)> {
        let counts = self.lock();
        let mut out: BTreeMap<i64, BTreeMap<u16, u64>> = BTreeMap::new();
        for (minute, statuses) in counts.minutes.get(&deployment).into_iter().flatten() {
            let start = (minute * 60).div_euclid(length) * length;
            if from.is_some_and(|f| start + length <= f) || to.is_some_and(|t| start >= t) {
                continue;
            }
            let window = out.entry(start).or_default();
            for (status, count) in statuses {
                *window.entry(*status).or_default() += count;
            }
        }
        out.into_iter().collect()
    }
}

/// Counts the scoring route's error responses for known deployments, named by id or through
/// an endpoint (an unknown name in the path is not a deployment's error, and would let callers
/// mint labels).
/// The path is resolved only for an error, so answered requests pay nothing for the count.
pub async fn count_errors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let uri = req.uri().clone();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let deployment = uri
        .path()
        .split('/')
        .nth(1)
        .and_then(|d| super::scoring::resolve(&s, d));
    if let Some(id) = deployment
        && s.registry.read().deployments.contains_key(&id)
    {
        s.errors
            .add(id, status.as_u16(), Utc::now().timestamp().div_euclid(60));
    }
    response
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// `minute` (the default), `hour` or `day`.
    pub resolution: Option<Resolution>,
    /// Windows overlapping `from..to` (RFC 3339; either open).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A deployment's service level, window by window.
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct Metrics {
    pub deployment_id: Uuid,
    pub resolution: String,
    /// Oldest first; windows without runs are left out. Requests the deployment answered:
    /// a challenger's shadow runs are not among them.
    pub windows: Vec<WindowReport>,
    /// The same per variant and model version it ran (A/B arms, the versions before and
    /// after an update, challengers), in the order each first ran.
    pub versions: Vec<VersionReport>,
    /// Refused scoring requests by status, since `errors_since` (not in the ledger).
    pub errors: Vec<StatusCount>,
    pub errors_since: String,
    /// The same per window, oldest first, for the windows of the last day (and since
    /// `errors_since`); windows without refusals are left out.
    pub error_windows: Vec<ErrorWindow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct ErrorWindow {
    pub start: String,
    pub end: String,
    pub errors: Vec<StatusCount>,
}

#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct VersionReport {
    pub variant: String,
    pub model_id: Uuid,
    pub version: u32,
    /// A challenger's runs on copies of the answered requests' rows.
    pub shadow: bool,
    pub windows: Vec<WindowReport>,
}

#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct StatusCount {
    pub status: u16,
    pub count: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct WindowReport {
    pub start: String,
    pub end: String,
    /// Session runs (on the batching path one run serves several requests).
    pub runs: u64,
    pub requests: u64,
    pub rows: u64,
    /// Rows over the window's length.
    pub rows_per_second: f64,
    /// Per request, from arrival to the response being ready, recording included.
    pub latency_ms: Quantiles,
    /// Per request, waiting for a batching worker or a session slot.
    pub queue_wait_ms: Quantiles,
    /// Rows per session run.
    pub batch_rows_mean: f64,
    pub batch_rows_max: u64,
}

/// Nearest-rank quantiles, each at most 1/64 above the exact value (see `histogram`).
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

fn quantiles_ms(h: &Histogram) -> Quantiles {
    let ms = |q: f64| h.quantile(q).unwrap_or(0) as f64 / 1e3;
    Quantiles {
        p50: ms(0.5),
        p95: ms(0.95),
        p99: ms(0.99),
        max: h.max() as f64 / 1e3,
    }
}

/// A window bound (Unix seconds) as the reports print times.
pub(super) fn time(s: i64) -> String {
    DateTime::from_timestamp(s, 0)
        .map(format_time)
        .unwrap_or_default()
}

fn window_report(start: i64, length: i64, w: &Window) -> WindowReport {
    WindowReport {
        start: time(start),
        end: time(start + length),
        runs: w.runs,
        requests: w.requests,
        rows: w.rows,
        rows_per_second: w.rows as f64 / length as f64,
        latency_ms: quantiles_ms(&w.latency_us),
        queue_wait_ms: quantiles_ms(&w.queue_wait_us),
        batch_rows_mean: w.batch_rows.mean().unwrap_or(0.0),
        batch_rows_max: w.batch_rows.max(),
    }
}

pub(super) fn seconds(field: &str, s: Option<&str>) -> Result<Option<i64>, ApiError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_argument",
                    format!("{field}: {s:?} is not an RFC 3339 time"),
                )
            })
    })
    .transpose()
}

/// A deployment's windows for a caller who may read its project.
pub fn report(
    s: &AppState,
    p: &Principal,
    id: Uuid,
    q: &MetricsQuery,
) -> Result<Metrics, ApiError> {
    super::deployments::readable(
        &s.registry.read(),
        p,
        id,
        "reading the metrics of deployment",
    )?;
    let resolution = q.resolution.unwrap_or(Resolution::Minute);
    let (from, to) = (
        seconds("from", q.from.as_deref())?,
        seconds("to", q.to.as_deref())?,
    );
    // One more than may be answered: enough to refuse without rolling up the rest.
    let windows = s
        .registry
        .monitoring()
        .windows(id, resolution, from, to, MAX_WINDOWS + 1);
    if windows.len() > MAX_WINDOWS {
        return Err(ApiError::bad_request(
            "too_many_windows",
            format!(
                "more than {MAX_WINDOWS} windows, the most one answer holds: narrow from/to or use a coarser resolution"
            ),
        ));
    }
    let length = resolution.seconds();
    let reports = |windows: &[(i64, Window)]| {
        windows
            .iter()
            .map(|(start, w)| window_report(*start, length, w))
            .collect()
    };
    let versions = s
        .registry
        .monitoring()
        .version_windows(id, resolution, from, to, MAX_WINDOWS)
        .into_iter()
        .map(|(v, windows)| VersionReport {
            variant: v.variant.clone(),
            model_id: v.model_id,
            version: v.version,
            shadow: v.shadow,
            windows: reports(&windows),
        })
        .collect();
    Ok(Metrics {
        deployment_id: id,
        resolution: resolution.name().into(),
        windows: reports(&windows),
        versions,
        errors: s.errors.of(id),
        errors_since: s.errors.since.clone(),
        error_windows: s
            .errors
            .windows(id, length, (from, to))
            .into_iter()
            .map(|(start, statuses)| ErrorWindow {
                start: time(start),
                end: time(start + length),
                errors: statuses
                    .into_iter()
                    .map(|(status, count)| StatusCount { status, count })
                    .collect(),
            })
            .collect(),
    })
}

/// A deployment's service level: requests, rows, latency and queue-wait quantiles and batch
/// sizes per window, recomputed from the ledger's inference runs.
#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}/metrics", tag = "deployments", params(MetricsQuery), responses((status = 200, body = Metrics), (status = 400, description = "`invalid_argument`, `too_many_windows`"), (status = 403, description = "not a reader of the deployment's project"), (status = 404, description = "no such deployment")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> Result<Json<Metrics>, ApiError> {
    s.caught_up().await?;
    report(&s, &p, id, &q).map(Json)
}

/// Every deployment's counters in Prometheus' text format, for admins and auditors (a
/// scraper authenticates with a bearer token).
pub async fn prometheus(State(s): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    p.require_reads_all("/metrics")?;
    s.caught_up().await?;
    let mut out = String::new();
    let head = s.ledger.head();
    let events = family(
        &mut out,
        "provenant_ledger_events",
        "gauge",
        "Events in the ledger.",
    );
    let _ = writeln!(out, "{events} {}", head.size);

    let labels: BTreeMap<Uuid, String> = {
        let reg = s.registry.read();
        reg.deployments
            .values()
            .map(|d| {
                let label = format!(
                    "deployment=\"{}\",environment=\"{}\"",
                    d.deployment_id,
                    escape(&d.spec.environment)
                );
                (d.deployment_id, label)
            })
            .collect()
    };
    let totals: Vec<_> = s
        .registry
        .monitoring()
        .totals()
        .map(|(id, t)| (*id, t.clone()))
        .collect();
    let label = |id: &Uuid| labels.get(id).cloned().unwrap_or_default();
    for (name, help, value) in [
        (
            "provenant_scoring_runs_total",
            "Session runs recorded.",
            (|t: &Totals| t.runs) as fn(&Totals) -> u64,
        ),
        (
            "provenant_scoring_requests_total",
            "Scoring requests answered and recorded.",
            |t| t.requests,
        ),
        ("provenant_scoring_rows_total", "Rows scored.", |t| t.rows),
    ] {
        let name = family(&mut out, name, "counter", help);
        for (id, t) in &totals {
            let _ = writeln!(out, "{name}{{{}}} {}", label(id), value(t));
        }
    }
    let name = family(
        &mut out,
        "provenant_scoring_request_latency_seconds",
        "histogram",
        "Request latency, recording included.",
    );
    for (id, t) in &totals {
        let l = label(id);
        for (bound, within) in LATENCY_BOUNDS_US.iter().zip(t.latency_within) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {within}");
        }
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", t.requests);
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", t.latency_sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", t.requests);
    }
    let name = family(
        &mut out,
        "provenant_scoring_errors_total",
        "counter",
        "Refused scoring requests by status, since the process started.",
    );
    let errors: Vec<((Uuid, u16), u64)> = s
        .errors
        .lock()
        .totals
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    for ((id, status), count) in errors {
        let _ = writeln!(out, "{name}{{{},status=\"{status}\"}} {count}", label(&id));
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// Writes a metric family's header; answers its name.
fn family<'a>(out: &mut String, name: &'a str, kind: &str, help: &str) -> &'a str {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_count_by_minute_for_a_day() {
        let counts = ErrorCounts::default();
        let (d, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for (status, minute) in [(503, 100), (400, 100), (500, 101), (401, 102)] {
            counts.add(d, status, minute);
        }
        counts.add(other, 503, 101);
        // Minutes 100 and 101 start in 6000..6061; 102 does not.
        assert_eq!(counts.between(d, 6000, 6061), Refused { all: 3, server: 2 });
        assert_eq!(counts.between(d, 6001, 6120), Refused { all: 1, server: 1 });
        assert_eq!(counts.of(d).len(), 4);
        // Minutes 100 to 102 in windows of two minutes: 6000..6120 and 6120..6240.
        let windows = counts.windows(d, 120, (None, None));
        assert_eq!(
            windows,
            [
                (6000, BTreeMap::from([(400, 1), (500, 1), (503, 1)])),
                (6120, BTreeMap::from([(401, 1)])),
            ]
        );
        assert_eq!(counts.windows(d, 120, (Some(6120), None)).len(), 1);
        assert_eq!(counts.windows(d, 120, (None, Some(6000))), []);
        // A day later the first minutes are gone from the windows, not from the totals.
        counts.add(d, 503, 100 + 1440 + 1);
        assert_eq!(counts.between(d, 6000, 6060), Refused::default());
        assert_eq!(counts.between(d, 0, 6120), Refused { all: 1, server: 1 });
        assert_eq!(counts.of(d).iter().map(|c| c.count).sum::<u64>(), 5);
    }
}
