//! Drift over HTTP: a model version's reference data (uploaded, kept as a blob, profiled and
//! recorded), and a deployment's drift over a time range, recomputed from the reference file
//! and the retained inputs and outputs of the runs in that range: data drift on the inputs,
//! prediction drift on the outputs against the model's predictions for the reference.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::command::Written;
use super::deployments::{not_found, readable};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::jobs::{bad_file, upload};
use super::metrics::seconds;
use super::runs::{Retained, run_at};
use crate::domain::job::FileFormat;
use crate::domain::reference::{
    self, ColumnProfile, DriftThresholds, RecordReference, ReferenceProfile,
};
use crate::domain::schema::Column;

use crate::domain::event::InferenceRunRecorded;
use crate::drift::{Gather, Kind, PsiLevel, Report, Sample, bin_count, profile, psi_of_bins};
use crate::log::envelope::Digest;
use crate::runtime::batch::Table;
use crate::runtime::cells::Cells;
use crate::runtime::scorer::Model;

/// The most scored rows one drift report reads: the values are held in memory.
pub const MAX_DRIFT_ROWS: u64 = 2_000_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReferenceOptions {
    /// `csv` or `parquet`; else the Content-Type says.
    pub format: Option<FileFormat>,
}

fn internal(detail: impl ToString) -> ApiError {
    super::jobs::internal("internal", detail)
}

/// Each schema column of a table, gathered by its kind; a numeric column's bad cell is the
/// file's fault.
fn table_samples(table: &Table, schema: &[Column]) -> Result<Vec<Sample>, ApiError> {
    schema
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cells = table.column(i).map_err(bad_file)?;
            Sample::read(Kind::of(c.column_type), cells.iter().map(String::as_str)).map_err(|e| {
                ApiError::bad_request(
                    "invalid_file",
                    format!(
                        "column {:?}, data row {}: {:?} is not a number",
                        c.name,
                        e.row + 1,
                        e.cell
                    ),
                )
            })
        })
        .collect()
}

/// Reads and profiles a reference file against the version's input schema.
fn profile_file(
    bytes: Vec<u8>,
    format: FileFormat,
    schema: &[Column],
) -> Result<(u64, Vec<ColumnProfile>), ApiError> {
    let table = Table::read(bytes, format, schema).map_err(bad_file)?;
    let samples = table_samples(&table, schema)?;
    let profiles = schema
        .iter()
        .zip(&samples)
        .map(|(c, s)| {
            profile(&c.name, s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_file",
                    format!("column {:?} has no values to profile", c.name),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((table.len() as u64, profiles))
}

/// `PUT /api/v1/models/{model_id}/versions/{version}/reference`: the version's reference
/// data, replacing any before it. The file is kept as a blob; its profile is recorded.
#[utoipa::path(put, path = "/api/v1/models/{model_id}/versions/{version}/reference", tag = "models", params(ReferenceOptions), request_body(content = Vec<u8>, content_type = "text/csv", description = "the reference data; application/vnd.apache.parquet for Parquet"), responses((status = 200, body = Written, description = "recorded; `data` is the profile"), (status = 400, description = "`invalid_file`, `missing_columns`, `unknown_format`"), (status = 403, description = "not an editor of the model's project"), (status = 404, description = "`model_not_found`, `version_not_found`"), (status = 409, description = "`conflict`: the version has no input schema"), (status = 413, description = "`file_too_large`")))]
pub async fn put_reference(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, version)): ApiPath<(Uuid, u32)>,
    options: Result<Query<ReferenceOptions>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    // Who and where first: a caller who may not record learns nothing of the file.
    let (_, schema) = reference::check(&s.registry.read(), p.user_id, model_id, version)?;
    let Query(options) =
        options.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (format, bytes) = upload(&s, options.format, &headers, body).await?;
    record_reference(&s, p.user_id, (model_id, version), schema, (format, bytes))
        .await
        .map(Json)
}

/// Profiles a version's reference file against its input `schema`, keeps the file as a
/// blob, and records the profile as `actor`.
pub async fn record_reference(
    s: &AppState,
    actor: Uuid,
    (model_id, version): (Uuid, u32),
    schema: Vec<Column>,
    (format, bytes): (FileFormat, Vec<u8>),
) -> Result<Written, ApiError> {
    let blobs = s.blobs.clone();
    let (dataset_blob, rows, columns) = tokio::task::spawn_blocking(move || {
        let (rows, columns) = profile_file(bytes.clone(), format, &schema)?;
        let stored = blobs.put(&bytes).map_err(internal)?;
        Ok::<_, ApiError>((stored.hash.to_hex(), rows, columns))
    })
    .await
    .map_err(internal)??;
    let record = RecordReference {
        model_id,
        version,
        dataset_blob,
        format,
        rows,
        columns,
    };
    s.run(
        actor,
        |r| reference::record(r, actor, record),
        |r| {
            r.models
                .get(&model_id)
                .and_then(|m| m.versions.get(&version))
                .and_then(|v| v.reference.clone())
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    /// Runs committed in the minutes that start in `from..to` (RFC 3339; either open).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A deployment's inputs against its model version's reference data.
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct DriftReport {
    pub deployment_id: Uuid,
    pub model_id: Uuid,
    pub version: u32,
    /// The reference file's blake3 hash and rows; its profile is the version's `reference`.
    pub reference_blob: String,
    pub reference_rows: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Runs in the range, and their rows.
    pub runs: u64,
    pub rows: u64,
    /// Runs whose inputs were not retained (hash-only retention, or purged): left out of the
    /// comparison, and counted here so a reader knows what the report did not see.
    pub unretained_runs: u64,
    pub unretained_rows: u64,
    /// What is seen of the unretained runs: PSI over the bins their inputs were counted in at
    /// scoring time (every run of a version with reference data records them).
    pub binned: BinnedReport,
    /// What drift was judged by: the deployment's thresholds, or the defaults.
    pub thresholds: DriftThresholds,
    /// Each input column against the reference data.
    pub inputs: Report,
    /// Prediction drift: each output column against the deployment's model's predictions
    /// for the reference data.
    pub predictions: Report,
}

/// PSI of the inputs of runs that were not kept, from their scoring-time bins.
#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct BinnedReport {
    /// Unretained runs binned by this reference, and their rows.
    pub runs: u64,
    pub rows: u64,
    /// Unretained runs without bins by this reference: runs binned by an earlier reference,
    /// scored before the version had one, or recorded before runs had bins.
    pub unbinned_runs: u64,
    pub columns: Vec<BinnedColumn>,
    /// Share of the binned columns whose PSI reaches the alert level; the inputs drift (by
    /// their bins) when it reaches the deployment's `dataset_share`.
    pub drift_share: f64,
    pub dataset_drift: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct BinnedColumn {
    pub column: String,
    pub psi: f64,
    pub psi_level: PsiLevel,
    pub current_values: u64,
    pub current_missing: u64,
}

/// The unretained runs' bins, summed per profiled column: counts and missing cells.
struct Binned {
    sums: Vec<(Vec<u64>, u64)>,
    runs: u64,
    rows: u64,
    unbinned_runs: u64,
}

impl Binned {
    fn new(profiles: &[ColumnProfile]) -> Binned {
        Binned {
            sums: profiles
                .iter()
                .map(|p| (vec![0; bin_count(p)], 0))
                .collect(),
            runs: 0,
            rows: 0,
            unbinned_runs: 0,
        }
    }

    /// Adds an unretained run's bins, if they are by `reference_blob` and fit its profile
    /// (`[missing, bin, count, …]` per column, each bin one of the profile's).
    fn add(&mut self, reference_blob: &str, run: &InferenceRunRecorded) {
        let fits = run.profile.as_deref().filter(|p| {
            p.reference_blob == reference_blob
                && p.columns.len() == self.sums.len()
                && p.columns.iter().zip(&self.sums).all(|(c, (sum, _))| {
                    c.len() % 2 == 1 && c[1..].chunks(2).all(|b| (b[0] as usize) < sum.len())
                })
        });
        let Some(profile) = fits else {
            self.unbinned_runs += 1;
            return;
        };
        for (column, (sum, missing)) in profile.columns.iter().zip(&mut self.sums) {
            *missing += column[0];
            for pair in column[1..].chunks(2) {
                sum[pair[0] as usize] += pair[1];
            }
        }
        self.runs += 1;
        self.rows += run.row_count;
    }

    fn report(self, profiles: &[ColumnProfile], thresholds: &DriftThresholds) -> BinnedReport {
        let columns = profiles
            .iter()
            .zip(&self.sums)
            .filter(|(_, (sum, _))| sum.iter().any(|c| *c > 0))
            .map(|(p, (sum, missing))| {
                let psi = psi_of_bins(p, sum);
                BinnedColumn {
                    column: p.name.clone(),
                    psi,
                    psi_level: PsiLevel::of(psi, thresholds),
                    current_values: sum.iter().sum(),
                    current_missing: *missing,
                }
            })
            .collect::<Vec<_>>();
        let alerting = columns
            .iter()
            .filter(|c| c.psi_level == PsiLevel::Alert)
            .count();
        let drift_share = match columns.len() {
            0 => 0.0,
            n => alerting as f64 / n as f64,
        };
        BinnedReport {
            runs: self.runs,
            rows: self.rows,
            unbinned_runs: self.unbinned_runs,
            dataset_drift: !columns.is_empty() && drift_share >= thresholds.dataset_share,
            drift_share,
            columns,
        }
    }
}

/// Columns of a schema gathered from tables that name them: runs' blobs, scored rows.
struct Columns(Vec<(String, Gather)>);

impl Columns {
    fn new(schema: &[Column]) -> Columns {
        Columns(
            schema
                .iter()
                .map(|c| (c.name.clone(), Gather::new(Kind::of(c.column_type))))
                .collect(),
        )
    }

    fn add(&mut self, fields: &[String], rows: &Cells) {
        let at: Vec<Option<usize>> = self
            .0
            .iter()
            .map(|(name, _)| fields.iter().position(|f| f == name))
            .collect();
        for row in rows.rows() {
            for ((_, g), i) in self.0.iter_mut().zip(&at) {
                // The scorer refused cells that do not fit the schema; one that still does
                // not read as a number here is counted as missing, not guessed at.
                let cell = i.and_then(|i| row.get(i)).unwrap_or("");
                if g.push(cell).is_err() {
                    g.push("").ok();
                }
            }
        }
    }

    fn finish(self) -> BTreeMap<String, Sample> {
        self.0.into_iter().map(|(n, g)| (n, g.finish())).collect()
    }
}

/// The current side: every retained run's inputs and outputs, the others' bins.
struct Current {
    inputs: BTreeMap<String, Sample>,
    outputs: BTreeMap<String, Sample>,
    runs: u64,
    rows: u64,
    unretained_runs: u64,
    unretained_rows: u64,
    binned: Binned,
}

fn gather_runs(
    s: &AppState,
    positions: &[u64],
    (inputs, outputs): (&[Column], &[Column]),
    reference: &ReferenceProfile,
    retained: Retained,
) -> Result<Current, ApiError> {
    let (mut ins, mut outs) = (Columns::new(inputs), Columns::new(outputs));
    let mut binned = Binned::new(&reference.columns);
    let (mut runs, mut rows, mut unretained_runs, mut unretained_rows) = (0, 0, 0, 0);
    for &position in positions {
        let (_, run) = run_at(s, position)?;
        runs += 1;
        rows += run.row_count;
        let tables = retained
            .table(s, position, &run.input_blob)?
            .zip(retained.table(s, position, &run.output_blob)?);
        let Some((i, o)) = tables else {
            unretained_runs += 1;
            unretained_rows += run.row_count;
            binned.add(&reference.dataset_blob, &run);
            continue;
        };
        // Only what is read counts toward the bound: unseen runs hold nothing in memory.
        if rows - unretained_rows > MAX_DRIFT_ROWS {
            return Err(ApiError::bad_request(
                "too_many_rows",
                format!("the range holds more than {MAX_DRIFT_ROWS} scored rows; narrow from/to"),
            ));
        }
        ins.add(&i.fields, &i.rows);
        outs.add(&o.fields, &o.rows);
    }
    Ok(Current {
        inputs: ins.finish(),
        outputs: outs.finish(),
        runs,
        rows,
        unretained_runs,
        unretained_rows,
        binned,
    })
}

/// The reference's predictions: its rows scored by the deployment's model (rows the scorer
/// refuses are left out), each output column profiled.
fn reference_predictions(
    model: &Model,
    table: &Table,
    outputs: &[Column],
) -> Result<(Vec<ColumnProfile>, BTreeMap<String, Sample>), ApiError> {
    let mut columns = Columns::new(outputs);
    let step = 10_000;
    for from in (0..table.len()).step_by(step) {
        let rows = table
            .rows(from, (from + step).min(table.len()))
            .map_err(bad_file)?;
        let fitting = model.fitting(rows, 0).map_err(internal)?;
        if fitting.rows.is_empty() {
            continue;
        }
        let scored = model.run(&fitting.features).map_err(internal)?;
        columns.add(&scored.fields, &scored.rows);
    }
    let samples = columns.finish();
    let profiles = outputs
        .iter()
        .filter_map(|c| samples.get(&c.name).and_then(|s| profile(&c.name, s)))
        .collect();
    Ok((profiles, samples))
}

/// `GET /api/v1/deployments/{deployment_id}/drift`: each input column's drift from the model
/// version's reference data over the runs in a time range, by Evidently's default tests,
/// with PSI over the reference profile's bins.
#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}/drift", tag = "deployments", params(DriftQuery), responses((status = 200, body = DriftReport), (status = 400, description = "`invalid_argument`, `too_many_rows`"), (status = 403, description = "not a reader of the deployment's project"), (status = 404, description = "`deployment_not_found`, `reference_not_found`")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> Result<Json<DriftReport>, ApiError> {
    report(&s, &p, id, q).await.map(Json)
}

/// A deployment's drift for a caller who may read its project (REST and GraphQL).
pub async fn report(
    s: &AppState,
    p: &Principal,
    id: Uuid,
    q: DriftQuery,
) -> Result<DriftReport, ApiError> {
    let (from, to) = (
        seconds("from", q.from.as_deref())?,
        seconds("to", q.to.as_deref())?,
    );
    readable(&s.registry.read(), p, id, "reading the drift of deployment")?;
    compute(s, id, (from, to), q).await
}

/// A deployment's drift over the runs committed in the minutes that start in `range` (Unix
/// seconds); `q` names the range as asked.
pub async fn compute(
    s: &AppState,
    id: Uuid,
    (from, to): (Option<i64>, Option<i64>),
    q: DriftQuery,
) -> Result<DriftReport, ApiError> {
    s.caught_up().await?;
    let (spec, found, retained, thresholds): (_, Option<ReferenceProfile>, _, _) = {
        let reg = s.registry.read();
        let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
        let found = reg
            .models
            .get(&d.spec.model_id)
            .and_then(|m| m.versions.get(&d.spec.version))
            .and_then(|v| v.reference.as_deref().cloned());
        let retained = Retained::of(d);
        let thresholds = d.drift_thresholds.clone().unwrap_or_default();
        (d.spec.clone(), found, retained, thresholds)
    };
    let reference = found.ok_or_else(|| {
        ApiError::not_found(
            "reference_not_found",
            format!(
                "version {}/{} has no reference data; PUT it to /api/v1/models/{}/versions/{}/reference",
                spec.model_id, spec.version, spec.model_id, spec.version
            ),
        )
    })?;
    let positions = s.registry.monitoring().run_positions(id, from, to);
    let state = s.clone();
    tokio::task::spawn_blocking(move || {
        let schema = &spec.input_schema;
        let model = state
            .serving
            .model_of(state.onnx, &state.blobs, &spec)
            .map_err(internal)?;
        let outputs = model.output_schema();
        let current = gather_runs(&state, &positions, (schema, &outputs), &reference, retained)?;
        let hash = Digest::from_hex(&reference.dataset_blob)
            .ok_or_else(|| internal("bad reference hash"))?;
        let bytes = state.blobs.get(&hash).map_err(internal)?;
        let table = Table::read(bytes, reference.format, schema).map_err(internal)?;
        let reference_inputs: BTreeMap<String, Sample> = schema
            .iter()
            .map(|c| c.name.clone())
            .zip(table_samples(&table, schema)?)
            .collect();
        let (output_profiles, reference_outputs) = reference_predictions(&model, &table, &outputs)?;
        Ok::<_, ApiError>(DriftReport {
            deployment_id: id,
            model_id: spec.model_id,
            version: spec.version,
            reference_blob: reference.dataset_blob.clone(),
            reference_rows: reference.rows,
            from: q.from,
            to: q.to,
            runs: current.runs,
            rows: current.rows,
            unretained_runs: current.unretained_runs,
            unretained_rows: current.unretained_rows,
            binned: current.binned.report(&reference.columns, &thresholds),
            inputs: Report::new(
                &reference.columns,
                &reference_inputs,
                &current.inputs,
                &thresholds,
            ),
            predictions: Report::new(
                &output_profiles,
                &reference_outputs,
                &current.outputs,
                &thresholds,
            ),
            thresholds,
        })
    })
    .await
    .map_err(internal)?
}

/// `PUT /api/v1/deployments/{deployment_id}/drift-thresholds`: how the deployment's drift is
/// judged (editors); fields left out keep their defaults.
#[utoipa::path(put, path = "/api/v1/deployments/{deployment_id}/drift-thresholds", tag = "deployments", request_body = DriftThresholds, responses((status = 200, body = Written), (status = 403, description = "not an editor of the deployment's project"), (status = 404, description = "`deployment_not_found`"), (status = 422, description = "`invalid_field`, `invalid_body`")))]
pub async fn put_thresholds(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(thresholds): ApiJson<DriftThresholds>,
) -> Result<Json<Written>, ApiError> {
    let written = s
        .run(
            p.user_id,
            |r| reference::set_thresholds(r, p.user_id, id, thresholds),
            |r| {
                r.deployments
                    .get(&id)
                    .and_then(|d| d.drift_thresholds.clone())
            },
        )
        .await?;
    Ok(Json(written))
}
