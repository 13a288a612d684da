//! Batch scoring jobs (`domain::job`) over REST and from the CLI: a CSV or Parquet file scored
//! through a deployment's loaded model in runs of `batch_rows`, each run recorded like online
//! scoring and naming its job and file rows. Rows that do not fit the schema are reported
//! one by one and skipped; the job fails once more than `max_failed_rows` were.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::{Principal, forbidden};
use super::command::Written;
use super::deployments::Loaded;
use super::error::ApiError;
use super::extract::{ApiPath, uuid_action};
use super::scoring::{record, run, slot};
use crate::domain::event::RunJob;
use crate::domain::job::{self, EndJob, FileFormat, JobOutcome, ScoringJob, StartJob};
use crate::domain::{Kind, can_read_project, may};
use crate::runtime::batch::{BatchError, Output, Table};
use crate::runtime::cells::Cells;
use crate::runtime::scorer::Fitting;

/// Rows per run unless the job says otherwise.
pub const DEFAULT_BATCH_ROWS: u32 = 10_000;
/// Refused rows a job tolerates unless it says otherwise.
pub const DEFAULT_MAX_FAILED_ROWS: u64 = 100;
/// Refused rows a job's status lists; the errors file has them all.
const LISTED_ERRORS: usize = 100;

/// How to run a job: the file's format and the output's, run size and tolerance.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// `csv` or `parquet`; by default from the Content-Type (`text/csv`,
    /// `application/vnd.apache.parquet`).
    pub input_format: Option<FileFormat>,
    /// By default the input's format.
    pub output_format: Option<FileFormat>,
    /// Rows per recorded run (default 10,000).
    pub batch_rows: Option<u32>,
    /// Refused rows tolerated before the job fails (default 100).
    pub max_failed_rows: Option<u64>,
}

/// A refused row: its 0-based row in the file (the header excluded) and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    pub row: u64,
    pub reason: String,
}

/// A job as this process knows it besides the ledger: live counts while it runs, the cancel
/// request, the refused rows, and the output file once it completed.
#[derive(Default)]
pub struct Live {
    scored: AtomicU64,
    failed: AtomicU64,
    runs: AtomicU64,
    cancel: Mutex<Option<Uuid>>,
    errors: Mutex<Vec<RowError>>,
    output: Mutex<Option<Arc<Vec<u8>>>>,
}

/// The jobs this process ran, by id.
#[derive(Default)]
pub struct Jobs(Mutex<HashMap<Uuid, Arc<Live>>>);

impl Jobs {
    fn get(&self, id: &Uuid) -> Option<Arc<Live>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, id: Uuid) -> Arc<Live> {
        let live = Arc::new(Live::default());
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, live.clone());
        live
    }
}

/// A started job, ready to run.
pub struct Started {
    pub job_id: Uuid,
    pub written: Written,
    loaded: Arc<Loaded>,
    table: Arc<Table>,
    batch_rows: usize,
    max_failed_rows: u64,
    output_format: FileFormat,
    live: Arc<Live>,
}

impl Started {
    pub fn rows(&self) -> u64 {
        self.table.len() as u64
    }
}

/// A job's end as its runner saw it, with the output file when it completed.
pub struct Ended {
    pub outcome: JobOutcome,
    pub scored_rows: u64,
    pub failed_rows: u64,
    pub detail: String,
    pub output: Option<Arc<Vec<u8>>>,
    pub errors: Vec<RowError>,
}

pub(super) fn bad_file(e: BatchError) -> ApiError {
    let code = match e {
        BatchError::MissingColumns(_) => "missing_columns",
        _ => "invalid_file",
    };
    ApiError::bad_request(code, e.to_string())
}

pub(super) fn internal(code: &'static str, detail: impl ToString) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail.to_string())
}

impl AppState {
    /// Reads the file against the deployment's model and records the job's start. Nothing is
    /// appended for a file that cannot be read or lacks the model's columns.
    pub async fn start_job(
        &self,
        actor: Uuid,
        deployment_id: Uuid,
        file: Vec<u8>,
        input_format: FileFormat,
        options: &JobOptions,
    ) -> Result<Started, ApiError> {
        job::check_start(&self.registry.read(), actor, deployment_id)?;
        let loaded = self
            .serving
            .get(&deployment_id)
            .filter(|l| !l.paused.load(Ordering::Relaxed))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    format!("deployment {deployment_id} is not loaded in this process"),
                )
            })?;
        let input_blob = blake3::hash(&file).to_hex().to_string();
        let schema = loaded.model.schema().to_vec();
        let table = tokio::task::spawn_blocking(move || Table::read(file, input_format, &schema))
            .await
            .map_err(|e| internal("invalid_file", e))?
            .map_err(bad_file)?;
        let job_id = Uuid::now_v7();
        let start = StartJob {
            job_id,
            deployment_id,
            input_blob,
            input_format,
            output_format: options.output_format.unwrap_or(input_format),
            rows: table.len() as u64,
            batch_rows: options.batch_rows.unwrap_or(DEFAULT_BATCH_ROWS),
            max_failed_rows: options.max_failed_rows.unwrap_or(DEFAULT_MAX_FAILED_ROWS),
        };
        let (batch_rows, max_failed_rows, output_format) =
            (start.batch_rows, start.max_failed_rows, start.output_format);
        let written = self
            .run(
                actor,
                |r| job::start(r, actor, start),
                |r| r.jobs.get(&job_id).cloned(),
            )
            .await?;
        Ok(Started {
            job_id,
            written,
            loaded,
            table: Arc::new(table),
            batch_rows: batch_rows as usize,
            max_failed_rows,
            output_format,
            live: self.jobs.insert(job_id),
        })
    }

    /// Scores a started job run by run, then records how it ended. `progress` hears the
    /// file rows done so far.
    pub async fn run_job(
        &self,
        job: Started,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Ended, ApiError> {
        let ended = self.score_job(&job, progress).await;
        let (output_blob, errors_blob) = self.keep_files(&job, &ended).await?;
        let cancelled_by = match ended.outcome {
            JobOutcome::Cancelled => *job.live.cancel.lock().unwrap_or_else(|p| p.into_inner()),
            _ => None,
        };
        let end = EndJob {
            job_id: job.job_id,
            outcome: ended.outcome,
            scored_rows: ended.scored_rows,
            failed_rows: ended.failed_rows,
            runs: job.live.runs.load(Ordering::Relaxed),
            output_blob,
            errors_blob,
            cancelled_by,
            detail: ended.detail.clone(),
        };
        self.run_as("system:scorer", |r| job::end(r, end), |_| None::<()>)
            .await?;
        Ok(ended)
    }

    async fn score_job(&self, job: &Started, progress: &(dyn Fn(u64) + Sync)) -> Ended {
        let l = &job.loaded;
        let live = &job.live;
        let mut output = Output::new(&l.model.output_schema(), job.output_format);
        let total = job.table.len();
        let mut recording = tokio::task::JoinSet::new();
        let mut stop: Option<(JobOutcome, String)> = None;
        let mut from = 0;
        while from < total && stop.is_none() {
            let to = (from + job.batch_rows).min(total);
            stop = self
                .score_span(job, &mut output, &mut recording, from, to)
                .await
                .err();
            progress(to as u64);
            from = to;
        }
        while let Some(done) = recording.join_next().await {
            if let (Err(e), None) = (flatten(done), &stop) {
                stop = Some((
                    JobOutcome::Failed,
                    format!("a run could not be recorded: {}", e.detail),
                ));
            }
        }
        let errors = live
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (scored_rows, failed_rows) = (
            live.scored.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
        );
        let (outcome, detail, output) = match stop {
            Some((outcome, detail)) => (outcome, detail, None),
            None => match tokio::task::spawn_blocking(move || output.finish()).await {
                Ok(Ok(bytes)) => (
                    JobOutcome::Completed,
                    format!("{scored_rows} rows scored, {failed_rows} refused"),
                    Some(Arc::new(bytes)),
                ),
                Ok(Err(e)) => (JobOutcome::Failed, e.to_string(), None),
                Err(e) => (JobOutcome::Failed, e.to_string(), None),
            },
        };
        Ended {
            outcome,
            scored_rows,
            failed_rows,
            detail,
            output,
            errors,
        }
    }

    /// Scores file rows `from..to` as one run (less its refused rows) and starts recording it.
    async fn score_span(
        &self,
        job: &Started,
        output: &mut Output,
        recording: &mut tokio::task::JoinSet<Result<(), ApiError>>,
        from: usize,
        to: usize,
    ) -> Result<(), (JobOutcome, String)> {
        let (l, live) = (&job.loaded, &job.live);
        if let Some(who) = *live.cancel.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err((JobOutcome::Cancelled, format!("cancelled by {who}")));
        }
        let failed = |detail: String| (JobOutcome::Failed, detail);
        if self.serving.get(&l.deployment_id).is_none() || l.paused.load(Ordering::Relaxed) {
            return Err(failed(format!(
                "deployment {} stopped serving during the job",
                l.deployment_id
            )));
        }
        let (table, model) = (job.table.clone(), l.model.clone());
        let Fitting {
            rows: good,
            features,
            refused: bad,
        } = tokio::task::spawn_blocking(move || {
            let rows = table.rows(from, to).map_err(|e| e.to_string())?;
            model.fitting(rows, from).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
        let skipped: Vec<usize> = bad.iter().map(|(r, _)| r - from).collect();
        let failed_rows =
            live.failed.fetch_add(bad.len() as u64, Ordering::Relaxed) + bad.len() as u64;
        live.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(bad.into_iter().map(|(row, e)| RowError {
                row: row as u64,
                reason: e.to_string(),
            }));
        if failed_rows > job.max_failed_rows {
            return Err(failed(format!(
                "{failed_rows} rows refused, more than the job's limit of {}",
                job.max_failed_rows
            )));
        }
        if good.is_empty() {
            output.push_span(to - from, &skipped, &Cells::default());
            return Ok(());
        }
        let permit = slot(l).await.map_err(|e| failed(e.detail))?;
        let ran = run(l, good, features, true)
            .await
            .map_err(|e| failed(e.detail))?;
        drop(permit);
        output.push_span(to - from, &skipped, &ran.out_rows);
        // One run records while the next is scored.
        while recording.len() >= 2 {
            if let Some(done) = recording.join_next().await {
                flatten(done)
                    .map_err(|e| failed(format!("a run could not be recorded: {}", e.detail)))?;
            }
        }
        let (s, l, live, job_id) = (self.clone(), l.clone(), live.clone(), job.job_id);
        let placed = RunJob {
            job_id,
            first_row: from as u64,
            skipped_rows: skipped.iter().map(|i| (from + i) as u64).collect(),
        };
        recording.spawn(async move {
            record(&s, &l, &ran, Vec::new(), Some(placed)).await?;
            // Counted once durable: the live counts never claim a run the ledger lacks.
            live.scored
                .fetch_add(ran.rows.len() as u64, Ordering::Relaxed);
            live.runs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        Ok(())
    }

    /// Names the job's output and errors by hash and keeps the output in this process for
    /// download. Job files stay out of the blob store: every scored row is in its run's
    /// blobs already, under the deployment's retention policy, which a copy would escape.
    async fn keep_files(
        &self,
        job: &Started,
        ended: &Ended,
    ) -> Result<(Option<String>, Option<String>), ApiError> {
        let errors = (!ended.errors.is_empty())
            .then(|| serde_json::to_vec(&ended.errors))
            .transpose()
            .map_err(|e| internal("job_failed", e))?;
        let output = ended.output.clone();
        let hash = |bytes: &[u8]| blake3::hash(bytes).to_hex().to_string();
        let hashes = tokio::task::spawn_blocking(move || {
            (
                output.as_deref().map(|b| hash(b)),
                errors.as_deref().map(hash),
            )
        })
        .await
        .map_err(|e| internal("job_failed", e))?;
        *job.live.output.lock().unwrap_or_else(|p| p.into_inner()) = ended.output.clone();
        Ok(hashes)
    }

    /// Records the end of every job a stopped server left running, with what its recorded
    /// runs got done. Answers how many.
    pub async fn end_interrupted_jobs(&self) -> Result<usize, ApiError> {
        let running: Vec<ScoringJob> = self
            .registry
            .read()
            .jobs
            .values()
            .filter(|j| j.ended.is_none() && self.jobs.get(&j.job_id).is_none())
            .cloned()
            .collect();
        for j in &running {
            let end = EndJob {
                job_id: j.job_id,
                outcome: JobOutcome::Failed,
                scored_rows: j.recorded.scored_rows,
                failed_rows: j.recorded.refused_rows,
                runs: j.recorded.runs,
                output_blob: None,
                errors_blob: None,
                cancelled_by: None,
                detail: "interrupted: the server stopped before the job finished; its recorded runs stand".into(),
            };
            self.run_as("system:scorer", |r| job::end(r, end), |_| None::<()>)
                .await?;
        }
        Ok(running.len())
    }
}

fn flatten(done: Result<Result<(), ApiError>, tokio::task::JoinError>) -> Result<(), ApiError> {
    done.map_err(|e| internal("recording_failed", e))?
}

/// The job, for readers of its project.
fn readable(s: &AppState, p: &Principal, id: Uuid) -> Result<ScoringJob, ApiError> {
    let reg = s.registry.read();
    let j = reg
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(Kind::Job.code(), format!("no job {id}")))?;
    if !can_read_project(&reg, p.user_id, j.project_id) {
        return Err(forbidden(format!(
            "reading job {id} needs a role in its project"
        )));
    }
    Ok(j.clone())
}

/// A job's status: the ledger's record with this process's live counts and the first
/// refused rows.
fn status(s: &AppState, j: &ScoringJob) -> Value {
    let live = s.jobs.get(&j.job_id);
    let (scored, failed, runs) = match (&j.ended, &live) {
        (Some(e), _) => (e.scored_rows, e.failed_rows, e.runs),
        (None, Some(l)) => (
            l.scored.load(Ordering::Relaxed),
            l.failed.load(Ordering::Relaxed),
            l.runs.load(Ordering::Relaxed),
        ),
        (None, None) => (
            j.recorded.scored_rows,
            j.recorded.refused_rows,
            j.recorded.runs,
        ),
    };
    let listed: Vec<RowError> = live
        .map(|l| {
            l.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .take(LISTED_ERRORS)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut v = serde_json::to_value(j).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "state".into(),
            json!(
                j.ended
                    .as_ref()
                    .map_or("Running".to_string(), |e| format!("{:?}", e.outcome))
            ),
        );
        o.insert("scored_rows".into(), json!(scored));
        o.insert("failed_rows".into(), json!(failed));
        o.insert("processed_rows".into(), json!(scored + failed));
        o.insert("runs".into(), json!(runs));
        o.insert("errors".into(), json!(listed));
        o.insert(
            "output_url".into(),
            json!(format!("/api/v1/jobs/{}/output", j.job_id)),
        );
    }
    v
}

/// `POST /api/v1/deployments/{deployment_id}/jobs`: scores the file in the body (CSV or
/// Parquet) as a batch job (editors of the project). Answers 202 once the job is recorded as
/// started; `GET /api/v1/jobs/{job_id}` follows it.
/// An uploaded table: its format (as named in the query, else by its Content-Type) and its
/// bytes, at most the blob store's limit.
pub(super) async fn upload(
    s: &AppState,
    named: Option<FileFormat>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(FileFormat, Vec<u8>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = match (named, content_type) {
        (Some(f), _) => f,
        (None, t) if t.starts_with("text/csv") => FileFormat::Csv,
        (None, t) if t.starts_with("application/vnd.apache.parquet") => FileFormat::Parquet,
        _ => {
            return Err(ApiError::bad_request(
                "unknown_format",
                "say the file's format: in the query (csv or parquet), or as Content-Type text/csv or application/vnd.apache.parquet",
            ));
        }
    };
    let limit = usize::try_from(s.blobs.max_bytes()).unwrap_or(usize::MAX);
    let file: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!("an uploaded file is at most {limit} bytes"),
        )
    })?;
    Ok((format, file.to_vec()))
}

#[utoipa::path(post, path = "/api/v1/deployments/{deployment_id}/jobs", tag = "deployments", params(JobOptions), request_body(content = Vec<u8>, content_type = "application/vnd.apache.parquet", description = "the file; text/csv for CSV"), responses((status = 202, body = Written, description = "started"), (status = 400, description = "`invalid_file`, `missing_columns`, `unknown_format`"), (status = 409, description = "`conflict`: the deployment is not Healthy")))]
pub async fn create(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(deployment_id): ApiPath<Uuid>,
    options: Result<Query<JobOptions>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Who and where first: a caller who may not start a job learns nothing of the request.
    job::check_start(&s.registry.read(), p.user_id, deployment_id)?;
    let Query(options) =
        options.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (format, file) = upload(&s, options.input_format, &headers, body).await?;
    let started = s
        .start_job(p.user_id, deployment_id, file, format, &options)
        .await?;
    let (id, mut view) = (
        started.job_id,
        serde_json::to_value(&started.written).unwrap_or_default(),
    );
    // The job runs whatever happens to this response: its start is recorded.
    let runner = s.clone();
    tokio::spawn(async move {
        if let Err(e) = runner.run_job(started, &|_| {}).await {
            eprintln!("job {id}: its end could not be recorded: {}", e.detail);
        }
    });
    if let Some(j) = s.registry.read().jobs.get(&id) {
        view["data"] = status(&s, j);
    }
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// `GET /api/v1/jobs/{job_id}`: the job's state, counts and first refused rows.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "deployments", responses((status = 200, description = "the job"), (status = 404, description = "`job_not_found`")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let j = readable(&s, &p, id)?;
    Ok(Json(status(&s, &j)))
}

/// `POST /api/v1/jobs/{job_id}:cancel`: stops a running job before its next run (editors of
/// its project). Its end is recorded by the runner, as Cancelled with who asked.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}", tag = "deployments", params(("job_id" = String, Path, description = "`<job id>:cancel`")), responses((status = 202, description = "the job, cancelling"), (status = 409, description = "`conflict`: the job has ended")))]
pub async fn action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (id, _) = uuid_action(&target, "<job id>", &["cancel"])?;
    let j = readable(&s, &p, id)?;
    if !may(
        &s.registry.read(),
        p.user_id,
        j.project_id,
        crate::domain::event::ProjectRole::Editor,
    ) {
        return Err(forbidden(format!(
            "cancelling a job needs the editor role in project {}",
            j.project_id
        )));
    }
    let live = match (&j.ended, s.jobs.get(&id)) {
        (None, Some(live)) => live,
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("job {id} has ended"),
            ));
        }
    };
    live.cancel
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(p.user_id);
    Ok((StatusCode::ACCEPTED, Json(status(&s, &j))))
}

/// `GET /api/v1/jobs/{job_id}/output`: the scored file of a Completed job, one row per input
/// row in order (a refused row's outputs empty).
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/output", tag = "deployments", responses((status = 200, description = "the file"), (status = 404, description = "`output_not_available`: not Completed, or ran before the server restarted")))]
pub async fn output(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let j = readable(&s, &p, id)?;
    let gone = |why: &str| {
        ApiError::not_found(
            "output_not_available",
            format!("job {id} has no output: {why}"),
        )
    };
    let end = j.ended.as_ref().ok_or_else(|| gone("it is running"))?;
    let hash = end
        .output_blob
        .as_deref()
        .ok_or_else(|| gone(&format!("it ended {:?}", end.outcome)))?;
    let bytes = s
        .jobs
        .get(&id)
        .and_then(|l| l.output.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .ok_or_else(|| gone("outputs are kept by the server that ran the job, until it stops"))?;
    if blake3::hash(&bytes).to_hex().as_str() != hash {
        return Err(internal(
            "output_damaged",
            "the kept output does not match its recorded hash",
        ));
    }
    let (ext, content_type) = match j.output_format {
        FileFormat::Csv => ("csv", "text/csv"),
        FileFormat::Parquet => ("parquet", "application/vnd.apache.parquet"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"provenant-job-{id}.{ext}\""),
            ),
        ],
        Body::from(bytes.to_vec()),
    )
        .into_response())
}
