//! Batch scoring jobs: a file scored through a deployment's model in runs of bounded size,
//! each run an `InferenceRunRecorded` that names the job and the file rows it covers, so a
//! batch prediction is reproduced like an online one. The job's start and end are events on
//! its own stream; its progress in between is the runs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::ExpectedVersion;

use super::deployment::DeploymentState;
use super::event::{ProjectRole, RegistryEvent, ScoringJobEnded, ScoringJobStarted};
use super::state::{Registry, Stamp};
use super::{Decision, DomainError, Kind, may};

/// Largest run a job may ask for: a run's rows are held in memory twice (text and tensor).
pub const MAX_BATCH_ROWS: u32 = 100_000;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Parquet,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum JobOutcome {
    /// Every row scored or reported as refused, within the job's limit of refused rows.
    Completed,
    /// Too many refused rows, or an error that stopped the job (its runs so far stay).
    Failed,
    /// Stopped by a user between two runs.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScoringJob {
    pub job_id: Uuid,
    pub deployment_id: Uuid,
    pub project_id: Uuid,
    pub input_blob: String,
    pub input_format: FileFormat,
    pub output_format: FileFormat,
    pub rows: u64,
    pub batch_rows: u32,
    pub max_failed_rows: u64,
    pub started: Stamp,
    /// What its recorded runs scored so far: what a job interrupted by a restart got done.
    pub recorded: JobProgress,
    /// None while it runs.
    pub ended: Option<JobEnd>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    pub runs: u64,
    pub scored_rows: u64,
    /// Refused rows within the spans of recorded runs.
    pub refused_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobEnd {
    pub outcome: JobOutcome,
    pub scored_rows: u64,
    pub failed_rows: u64,
    pub runs: u64,
    pub output_blob: Option<String>,
    pub errors_blob: Option<String>,
    pub cancelled_by: Option<Uuid>,
    pub detail: String,
    pub at: Stamp,
}

pub fn stream(job_id: Uuid) -> String {
    format!("job-{job_id}")
}

/// What the shell knows of a job before it starts: the file read, its rows counted.
#[derive(Debug, Clone, PartialEq)]
pub struct StartJob {
    pub job_id: Uuid,
    pub deployment_id: Uuid,
    pub input_blob: String,
    pub input_format: FileFormat,
    pub output_format: FileFormat,
    pub rows: u64,
    pub batch_rows: u32,
    pub max_failed_rows: u64,
}

/// Who may start a job where: editors of the deployment's project, on a Healthy deployment.
/// Answers the project.
pub fn check_start(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
) -> Result<Uuid, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    let project_id = d.spec.project_id;
    if !may(state, actor, project_id, ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "a scoring job needs the editor role in project {project_id}"
        )));
    }
    if d.state != DeploymentState::Healthy {
        return Err(DomainError::Conflict(format!(
            "deployment {deployment_id} is {:?}; jobs run on a Healthy deployment",
            d.state
        )));
    }
    Ok(project_id)
}

pub fn start(state: &Registry, actor: Uuid, job: StartJob) -> Result<Decision, DomainError> {
    let project_id = check_start(state, actor, job.deployment_id)?;
    if !(1..=MAX_BATCH_ROWS).contains(&job.batch_rows) {
        return Err(DomainError::Invalid {
            field: "batch_rows",
            detail: format!("must be 1 to {MAX_BATCH_ROWS}, got {}", job.batch_rows),
        });
    }
    if job.rows == 0 {
        return Err(DomainError::Invalid {
            field: "file",
            detail: "the file has no rows".into(),
        });
    }
    if state.jobs.contains_key(&job.job_id) {
        return Err(DomainError::AlreadyExists(format!("job {}", job.job_id)));
    }
    Ok(Decision {
        stream: stream(job.job_id),
        expected: ExpectedVersion::NoStream,
        events: vec![RegistryEvent::ScoringJobStarted(ScoringJobStarted {
            job_id: job.job_id,
            deployment_id: job.deployment_id,
            project_id,
            input_blob: job.input_blob,
            input_format: job.input_format,
            output_format: job.output_format,
            rows: job.rows,
            batch_rows: job.batch_rows,
            max_failed_rows: job.max_failed_rows,
        })],
    })
}

/// How a job ended, as its runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndJob {
    pub job_id: Uuid,
    pub outcome: JobOutcome,
    pub scored_rows: u64,
    pub failed_rows: u64,
    pub runs: u64,
    pub output_blob: Option<String>,
    pub errors_blob: Option<String>,
    pub cancelled_by: Option<Uuid>,
    pub detail: String,
}

/// A running job ends once. Only Completed names an output file; only Cancelled names who.
pub fn end(state: &Registry, job: EndJob) -> Result<Decision, DomainError> {
    let started = state.jobs.get(&job.job_id).ok_or(DomainError::NotFound {
        kind: Kind::Job,
        id: job.job_id.to_string(),
    })?;
    if let Some(e) = &started.ended {
        return Err(DomainError::Conflict(format!(
            "job {} already ended {:?}",
            job.job_id, e.outcome
        )));
    }
    if (job.outcome == JobOutcome::Completed) != job.output_blob.is_some()
        || (job.outcome == JobOutcome::Cancelled) != job.cancelled_by.is_some()
    {
        return Err(DomainError::Invalid {
            field: "outcome",
            detail: format!(
                "a {:?} job names an output only when Completed and who cancelled it only when Cancelled",
                job.outcome
            ),
        });
    }
    if job.scored_rows + job.failed_rows > started.rows {
        return Err(DomainError::Invalid {
            field: "scored_rows",
            detail: format!(
                "{} scored and {} failed rows exceed the file's {}",
                job.scored_rows, job.failed_rows, started.rows
            ),
        });
    }
    Ok(Decision {
        stream: stream(job.job_id),
        expected: ExpectedVersion::Exact(0),
        events: vec![RegistryEvent::ScoringJobEnded(ScoringJobEnded {
            job_id: job.job_id,
            deployment_id: started.deployment_id,
            project_id: started.project_id,
            outcome: job.outcome,
            scored_rows: job.scored_rows,
            failed_rows: job.failed_rows,
            runs: job.runs,
            output_blob: job.output_blob,
            errors_blob: job.errors_blob,
            cancelled_by: job.cancelled_by,
            detail: job.detail,
        })],
    })
}

pub fn apply(jobs: &mut BTreeMap<Uuid, ScoringJob>, event: &RegistryEvent, stamp: &Stamp) {
    match event {
        RegistryEvent::ScoringJobStarted(e) => {
            jobs.insert(
                e.job_id,
                ScoringJob {
                    job_id: e.job_id,
                    deployment_id: e.deployment_id,
                    project_id: e.project_id,
                    input_blob: e.input_blob.clone(),
                    input_format: e.input_format,
                    output_format: e.output_format,
                    rows: e.rows,
                    batch_rows: e.batch_rows,
                    max_failed_rows: e.max_failed_rows,
                    started: stamp.clone(),
                    recorded: JobProgress::default(),
                    ended: None,
                },
            );
        }
        RegistryEvent::InferenceRunRecorded(run) => {
            if let Some(job) = run.job.as_ref().and_then(|j| jobs.get_mut(&j.job_id)) {
                let refused = run.job.as_ref().map_or(0, |j| j.skipped_rows.len() as u64);
                job.recorded.runs += 1;
                job.recorded.scored_rows += run.row_count;
                job.recorded.refused_rows += refused;
            }
        }
        RegistryEvent::ScoringJobEnded(e) => {
            if let Some(job) = jobs.get_mut(&e.job_id) {
                job.ended = Some(JobEnd {
                    outcome: e.outcome,
                    scored_rows: e.scored_rows,
                    failed_rows: e.failed_rows,
                    runs: e.runs,
                    output_blob: e.output_blob.clone(),
                    errors_blob: e.errors_blob.clone(),
                    cancelled_by: e.cancelled_by,
                    detail: e.detail.clone(),
                    at: stamp.clone(),
                });
            }
        }
        _ => {}
    }
}
