//! Actuals and accuracy over HTTP: true outcomes recorded against scored requests, and a
//! deployment's accuracy per window, recomputed from the runs' kept outputs and the latest
//! actual of each row, so late actuals update past windows.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::command::Written;
use super::deployments::{not_found, readable};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::jobs::{bad_file, internal, upload};
use super::metrics::{seconds, time};
use super::runs::{Retained, run_at};
use crate::accuracy::{self, Metrics};
use crate::domain::actuals::{self, Actual, Scored};

use crate::domain::job::FileFormat;
use crate::projections::monitoring::Resolution;
use crate::runtime::batch::Table;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualsBody {
    pub actuals: Vec<Actual>,
}

/// The largest JSON body of actuals: 10,000 of them fit easily.
const MAX_JSON_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ActualsOptions {
    /// `csv` or `parquet` for a file of columns `request_id`, `row`, `actual`; else the
    /// Content-Type says (JSON by default).
    pub format: Option<FileFormat>,
}

/// Actuals from a CSV or Parquet file with columns `request_id`, `row` and `actual`.
fn actuals_file(bytes: Vec<u8>, format: FileFormat) -> Result<Vec<Actual>, ApiError> {
    let (names, table) = Table::read_all(bytes, format).map_err(bad_file)?;
    let column = |name: &str| -> Result<Vec<String>, ApiError> {
        let i = names.iter().position(|n| n == name).ok_or_else(|| {
            ApiError::bad_request(
                "missing_columns",
                format!("the file lacks the column {name:?} (request_id, row, actual)"),
            )
        })?;
        table.column(i).map_err(bad_file)
    };
    let (requests, rows, values) = (column("request_id")?, column("row")?, column("actual")?);
    requests
        .iter()
        .zip(&rows)
        .zip(values)
        .enumerate()
        .map(|(i, ((request, row), actual))| {
            let bad = |what: &str, cell: &str| {
                ApiError::bad_request(
                    "invalid_file",
                    format!("data row {}: {cell:?} is not {what}", i + 1),
                )
            };
            Ok(Actual {
                request_id: request
                    .trim()
                    .parse()
                    .map_err(|_| bad("a request id", request))?,
                row: row.trim().parse().map_err(|_| bad("a row number", row))?,
                actual,
            })
        })
        .collect()
}

/// `POST /api/v1/deployments/{deployment_id}/actuals`: true outcomes of scored rows
/// (editors), at most 10,000 per request, as JSON or as a CSV or Parquet file; each must name
/// a request the deployment answered and one of its rows.
#[utoipa::path(post, path = "/api/v1/deployments/{deployment_id}/actuals", tag = "deployments", params(ActualsOptions), request_body(content = ActualsBody, description = "JSON; or a CSV (text/csv) or Parquet (application/vnd.apache.parquet) file of columns request_id, row, actual"), responses((status = 200, body = Written), (status = 400, description = "`invalid_file`, `missing_columns`"), (status = 403, description = "not an editor of the deployment's project"), (status = 404, description = "`deployment_not_found`"), (status = 422, description = "`invalid_field`: an unknown request or row, a bad value")))]
pub async fn record(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    options: Result<Query<ActualsOptions>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<Written>, ApiError> {
    let Query(options) =
        options.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let file = options.format.is_some()
        || content_type.starts_with("text/csv")
        || content_type.starts_with("application/vnd.apache.parquet");
    let body = if file {
        let headers = req.headers().clone();
        let (format, bytes) = upload(&s, options.format, &headers, req.into_body()).await?;
        let actuals = tokio::task::spawn_blocking(move || actuals_file(bytes, format))
            .await
            .map_err(|e| internal("internal", e))??;
        ActualsBody { actuals }
    } else {
        // This route takes files, so its body is not bounded by the router: bound JSON here.
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "a JSON body of actuals is at most {MAX_JSON_BYTES} bytes; send a file"
                    ),
                )
            })?;
        ApiJson::<ActualsBody>::from_request(Request::new(Body::from(bytes)), &())
            .await?
            .0
    };
    s.caught_up().await?;
    // What the ledger says of each named request, read before the command gate.
    let mut scored: HashMap<Uuid, Scored> = HashMap::new();
    if body.actuals.len() <= actuals::MAX_ACTUALS {
        for a in &body.actuals {
            if scored.contains_key(&a.request_id) {
                continue;
            }
            let position = s.registry.read().predictions.get(&a.request_id).copied();
            if let Some(position) = position {
                let (_, run) = run_at(&s, position)?;
                if let Some(r) = run.requests.iter().find(|r| r.request_id == a.request_id) {
                    scored.insert(
                        a.request_id,
                        Scored {
                            deployment_id: run.deployment_id,
                            rows: r.row_count,
                        },
                    );
                }
            }
        }
    }
    let n = body.actuals.len();
    let written = s
        .run(
            p.user_id,
            |r| actuals::record(r, p.user_id, id, body.actuals, |q| scored.get(&q).copied()),
            |_| Some(serde_json::json!({ "recorded": n })),
        )
        .await?;
    Ok(Json(written))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccuracyQuery {
    /// `hour` (the default), `minute` or `day`: windows of prediction time.
    pub resolution: Option<Resolution>,
    /// Predictions committed in the minutes that start in `from..to` (RFC 3339; either open).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A deployment's accuracy per window of prediction time, and over the whole range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccuracyReport {
    pub deployment_id: Uuid,
    /// `classification` (outputs `<target>.<class>`) or `regression` (one output).
    pub task: String,
    /// The classes, in the confusion matrices' order (classification).
    pub classes: Vec<String>,
    pub resolution: String,
    pub windows: Vec<AccuracyWindow>,
    pub total: Metrics,
    /// Actuals whose prediction's outputs were not kept (hash-only retention, or purged).
    pub unretained: u64,
    /// Actuals that are not one of the classes, or not a number for a regressor.
    pub unmatched: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccuracyWindow {
    pub start: String,
    pub end: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One window's joined rows: a classifier's (probabilities, actual class), a regressor's
/// (prediction, actual).
type Joined = (Vec<(Vec<f64>, usize)>, Vec<(f64, f64)>);

/// How a model's outputs read as a prediction.
pub(super) enum Task {
    /// Output column of each class, by class order.
    Classification(Vec<String>, Vec<String>),
    Regression(String),
}

pub(super) fn task(fields: &[String], target: Option<&str>) -> Option<Task> {
    let prefix = target.map(|t| format!("{t}."));
    let classes: Vec<String> = fields
        .iter()
        .filter_map(|f| prefix.as_deref().and_then(|p| f.strip_prefix(p)))
        .map(str::to_string)
        .collect();
    match (classes.len(), fields) {
        (n, _) if n >= 2 && n == fields.len() => {
            Some(Task::Classification(classes, fields.to_vec()))
        }
        (_, [only]) => Some(Task::Regression(only.clone())),
        _ => None,
    }
}

/// `GET /api/v1/deployments/{deployment_id}/accuracy`: accuracy from the recorded actuals,
/// per window of prediction time (readers).
#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}/accuracy", tag = "deployments", params(AccuracyQuery), responses((status = 200, body = AccuracyReport), (status = 400, description = "`invalid_argument`"), (status = 403, description = "not a reader of the deployment's project"), (status = 404, description = "`deployment_not_found`"), (status = 409, description = "`conflict`: the outputs are neither class probabilities nor one value")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AccuracyQuery>,
) -> Result<Json<AccuracyReport>, ApiError> {
    let (from, to) = (
        seconds("from", q.from.as_deref())?,
        seconds("to", q.to.as_deref())?,
    );
    readable(
        &s.registry.read(),
        &p,
        id,
        "reading the accuracy of deployment",
    )?;
    let resolution = q.resolution.unwrap_or(Resolution::Hour);
    compute(&s, id, (from, to), resolution).await.map(Json)
}

/// A deployment's accuracy over its predictions committed in the minutes that start in
/// `from..to` (Unix seconds, either open), per window of `resolution`.
pub async fn compute(
    s: &AppState,
    id: Uuid,
    (from, to): (Option<i64>, Option<i64>),
    resolution: Resolution,
) -> Result<AccuracyReport, ApiError> {
    s.caught_up().await?;
    let (spec, retained) = {
        let reg = s.registry.read();
        let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
        (d.spec.clone(), Retained::of(d))
    };
    let positions = s.registry.monitoring().run_positions(id, from, to);
    let state = s.clone();
    tokio::task::spawn_blocking(move || {
        let length = resolution.seconds();
        let mut task_of: Option<Task> = None;
        let mut windows: BTreeMap<i64, Joined> = BTreeMap::new();
        let (mut unretained, mut unmatched) = (0u64, 0u64);
        for position in positions {
            let (at, run) = run_at(&state, position)?;
            let rows: Vec<(u64, String)> = {
                let reg = state.registry.read();
                run.requests
                    .iter()
                    .flat_map(|r| {
                        (0..r.row_count).filter_map(|row| {
                            reg.actuals
                                .get(&(r.request_id, row))
                                .map(|a| (r.row_offset + row, a.clone()))
                        })
                    })
                    .collect()
            };
            if rows.is_empty() {
                continue;
            }
            let Some(outputs) = retained.table(&state, position, &run.output_blob)? else {
                unretained += rows.len() as u64;
                continue;
            };
            let task = match &mut task_of {
                Some(t) => t,
                None => task_of.insert(
                    task(&outputs.fields, spec.target_column.as_deref()).ok_or_else(|| {
                        ApiError::from(crate::domain::DomainError::Conflict(format!(
                            "outputs {:?} are neither one probability per class of the target nor one value",
                            outputs.fields
                        )))
                    })?,
                ),
            };
            let start = DateTime::parse_from_rfc3339(&at)
                .map_or(0, |t| t.timestamp().div_euclid(length) * length);
            let (class_rows, value_rows) = windows.entry(start).or_default();
            for (row, actual) in rows {
                let Some(cells) = outputs.rows.row(row as usize) else {
                    unmatched += 1;
                    continue;
                };
                let value = |name: &str| {
                    outputs
                        .fields
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| cells.get(i))
                        .and_then(|c| c.parse::<f64>().ok())
                };
                match task {
                    Task::Classification(classes, columns) => {
                        let p: Option<Vec<f64>> = columns.iter().map(|c| value(c)).collect();
                        match (p, classes.iter().position(|c| *c == actual)) {
                            (Some(p), Some(k)) => class_rows.push((p, k)),
                            _ => unmatched += 1,
                        }
                    }
                    Task::Regression(column) => match (value(column), actual.parse::<f64>()) {
                        (Some(p), Ok(y)) => value_rows.push((p, y)),
                        _ => unmatched += 1,
                    },
                }
            }
        }
        let (name, classes) = match &task_of {
            Some(Task::Classification(classes, _)) => ("classification", classes.clone()),
            _ => ("regression", Vec::new()),
        };
        let measure = |class_rows: &[(Vec<f64>, usize)], value_rows: &[(f64, f64)]| {
            if name == "classification" {
                accuracy::classification(classes.len(), class_rows)
            } else {
                accuracy::regression(value_rows)
            }
        };
        let all_classes: Vec<_> = windows.values().flat_map(|w| w.0.clone()).collect();
        let all_values: Vec<_> = windows.values().flat_map(|w| w.1.clone()).collect();
        Ok::<_, ApiError>(AccuracyReport {
            deployment_id: id,
            task: name.into(),
            windows: windows
                .iter()
                .map(|(start, (c, v))| AccuracyWindow {
                    start: time(*start),
                    end: time(start + length),
                    metrics: measure(c, v),
                })
                .collect(),
            total: measure(&all_classes, &all_values),
            classes,
            resolution: resolution.name().into(),
            unretained,
            unmatched,
        })
    })
    .await
    .map_err(|e| internal("internal", e))?
}
