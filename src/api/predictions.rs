//! Recorded predictions: a request's run record and its reproduction.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Principal, forbidden};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, uuid_action};
use crate::domain::can_read_project;
use crate::domain::deployment::DeploymentSpec;
use crate::domain::event::{InferenceRunRecorded, RegistryEvent, RunRequest};
use crate::log::envelope::Event;
use crate::log::store::Direction;
use crate::projections::replay::Until;
use crate::runtime::reproduce::{Blocked, Overrides, Recorded, Report, reproduce};

/// Which recorded prediction: a scored request, or a whole inference run by its position.
#[derive(Debug, Clone, Copy)]
pub enum RunRef {
    Request(Uuid),
    Position(u64),
}

impl std::str::FromStr for RunRef {
    type Err = String;
    fn from_str(s: &str) -> Result<RunRef, String> {
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(RunRef::Request(id));
        }
        s.parse()
            .map(RunRef::Position)
            .map_err(|_| format!("{s:?} is neither a request id nor an event position"))
    }
}

/// A located run: its stored event, decoded payload, the request asked about, and the spec
/// of the deployment's variant that scored it.
pub(crate) struct Located {
    pub event: Event,
    pub run: InferenceRunRecorded,
    pub request: Option<RunRequest>,
    pub spec: DeploymentSpec,
}

/// A reproduction's answer: what it found, or why the run cannot be reproduced here.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Outcome {
    Reproduced(Box<Report>),
    NotReproducible(NotReproducible),
}

#[derive(Serialize, ToSchema)]
pub struct NotReproducible {
    /// Always `not_reproducible`.
    pub verdict: &'static str,
    pub run_position: u64,
    pub request_id: Option<Uuid>,
    /// Machine-readable reason: `input_not_retained`, `artifact_missing`,
    /// `ort_version_differs`, `cpu_class_differs`, `execution_provider_unavailable`, ...
    pub reason: &'static str,
    pub detail: String,
}

impl Outcome {
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Reproduced(r) => match r.verdict {
                crate::runtime::reproduce::Verdict::Identical => "identical",
                crate::runtime::reproduce::Verdict::Different => "different",
            },
            Outcome::NotReproducible(_) => "not_reproducible",
        }
    }
}

impl AppState {
    /// The run `target` names. The registry first catches up with the ledger, so a request
    /// answered a moment ago (its event durable, perhaps not yet applied) is found.
    pub(crate) async fn locate(&self, target: RunRef) -> Result<Located, ApiError> {
        self.caught_up().await?;
        let missing = || {
            let what = match target {
                RunRef::Request(id) => format!("no recorded prediction for request {id}"),
                RunRef::Position(p) => format!("no inference run at position {p}"),
            };
            ApiError::not_found("prediction_not_found", what)
        };
        let position = match target {
            RunRef::Request(id) => *self
                .registry
                .read()
                .predictions
                .get(&id)
                .ok_or_else(missing)?,
            RunRef::Position(p) => p,
        };
        let event = self.ledger.event(position)?.ok_or_else(missing)?;
        let decoded = RegistryEvent::decode(
            &event.unsigned.event_type,
            event.unsigned.schema_version,
            &event.unsigned.payload,
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad_event",
                e.to_string(),
            )
        })?;
        let Some(RegistryEvent::InferenceRunRecorded(run)) = decoded else {
            return Err(missing());
        };
        let request = match target {
            RunRef::Request(id) => run.requests.iter().find(|r| r.request_id == id).cloned(),
            RunRef::Position(_) => None,
        };
        let spec = self
            .registry
            .read()
            .deployments
            .get(&run.deployment_id)
            .map(|d| d.spec_of_run(&run).unwrap_or(&d.spec).clone())
            .ok_or_else(missing)?;
        Ok(Located {
            event,
            run,
            request,
            spec,
        })
    }

    /// Reproduces a recorded prediction (see `runtime::reproduce`), off the async threads.
    pub async fn reproduce(
        &self,
        target: RunRef,
        input: Option<Value>,
        overrides: Overrides,
        who: Option<&Principal>,
    ) -> Result<Outcome, ApiError> {
        let found = self.locate(target).await?;
        if let Some(p) = who
            && !can_read_project(&self.registry.read(), p.user_id, found.spec.project_id)
        {
            return Err(forbidden(
                "reproducing a prediction needs read access to its deployment's project".into(),
            ));
        }
        let (onnx, blobs, serving) = (self.onnx, self.blobs.clone(), self.serving.clone());
        tokio::task::spawn_blocking(move || {
            let recorded = Recorded {
                position: found.event.unsigned.position,
                run: &found.run,
                request: found.request.as_ref(),
            };
            let outcome = reproduce(
                onnx,
                &blobs,
                &recorded,
                input.as_ref(),
                &overrides,
                |settings| {
                    serving
                        .model(
                            onnx,
                            &blobs,
                            &found.run.model_blob,
                            &found.spec.input_schema,
                            found.spec.target_column.as_deref(),
                            settings.session(),
                        )
                        .map_err(Blocked::Load)
                },
            );
            match outcome {
                Ok(report) => Ok(Outcome::Reproduced(Box::new(report))),
                Err(e) if e.is_callers() => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e.code(),
                    e.to_string(),
                )),
                Err(e) => Ok(Outcome::NotReproducible(NotReproducible {
                    verdict: "not_reproducible",
                    run_position: recorded.position,
                    request_id: recorded.request.map(|r| r.request_id),
                    reason: e.code(),
                    detail: e.to_string(),
                })),
            }
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    }
}

/// The counts of a range reproduction, and every run that did not reproduce identically.
#[derive(Serialize)]
pub struct RangeReport {
    pub deployment_id: Uuid,
    pub runs: u64,
    pub identical: u64,
    pub different: u64,
    pub not_reproducible: u64,
    pub exceptions: Vec<Outcome>,
}

impl AppState {
    /// Reproduces every run of a deployment recorded between `from` and `to` (both included;
    /// positions or times), as many at once as there are cores; `progress(done, total)`.
    pub async fn reproduce_range(
        &self,
        deployment: Uuid,
        from: Until,
        to: Until,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<RangeReport, ApiError> {
        let stream = crate::domain::deployment::stream(deployment);
        let events = self
            .ledger
            .read_stream(&stream, 0, Direction::Forward, usize::MAX)
            .map_err(|e| match e {
                crate::log::LogError::UnknownStream(_) => ApiError::not_found(
                    "deployment_not_found",
                    format!("no deployment {deployment}"),
                ),
                e => e.into(),
            })?;
        let runs: Vec<u64> = events
            .iter()
            .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
            .filter(|e| Until::holds(&from, &to, e.unsigned.position, &e.unsigned.recorded_at))
            .map(|e| e.unsigned.position)
            .collect();
        let total = runs.len() as u64;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut report = RangeReport {
            deployment_id: deployment,
            runs: total,
            identical: 0,
            different: 0,
            not_reproducible: 0,
            exceptions: Vec::new(),
        };
        let mut pending = runs.into_iter();
        let mut working = tokio::task::JoinSet::new();
        let mut done = 0;
        loop {
            while working.len() < parallel {
                let Some(position) = pending.next() else {
                    break;
                };
                let s = self.clone();
                working.spawn(async move {
                    s.reproduce(RunRef::Position(position), None, Overrides::default(), None)
                        .await
                });
            }
            let Some(finished) = working.join_next().await else {
                break;
            };
            let outcome = finished.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
            match outcome.verdict() {
                "identical" => report.identical += 1,
                "different" => report.different += 1,
                _ => report.not_reproducible += 1,
            }
            if outcome.verdict() != "identical" {
                report.exceptions.push(outcome);
            }
            done += 1;
            progress(done, total);
        }
        Ok(report)
    }
}

/// A request's run record with the receipt that names it.
#[derive(Serialize, ToSchema)]
pub struct Prediction {
    pub request: RunRequest,
    pub run_position: u64,
    pub recorded_at: String,
    pub event_hash: String,
    pub signature: String,
    pub key_id: String,
    /// The `InferenceRunRecorded` payload.
    pub run: Value,
    /// The positions of challengers' shadow runs of the request's rows (champion/challenger
    /// deployments), which it was never answered with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_runs: Vec<u64>,
}

/// `GET /api/v1/predictions/{request_id}`: the run that answered a scored request (readers of
/// the deployment's project).
#[utoipa::path(get, path = "/api/v1/predictions/{request_id}", tag = "predictions", params(("request_id" = Uuid, Path, description = "The `Provenant-Request-Id` of a score response")), responses((status = 200, body = Prediction)))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(request_id): ApiPath<Uuid>,
) -> Result<Json<Prediction>, ApiError> {
    let found = s.locate(RunRef::Request(request_id)).await?;
    if !can_read_project(&s.registry.read(), p.user_id, found.spec.project_id) {
        return Err(forbidden(
            "this prediction belongs to a project you cannot read".into(),
        ));
    }
    let request = found.request.ok_or_else(|| {
        ApiError::not_found("prediction_not_found", format!("no request {request_id}"))
    })?;
    let shadow_runs = s
        .registry
        .read()
        .shadow_predictions
        .get(&request_id)
        .cloned()
        .unwrap_or_default();
    Ok(Json(Prediction {
        shadow_runs,
        request,
        run_position: found.event.unsigned.position,
        recorded_at: found.event.unsigned.recorded_at,
        event_hash: found.event.hash.to_hex(),
        signature: hex::encode(found.event.signature),
        key_id: found.event.unsigned.key_id,
        run: found.event.unsigned.payload,
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReproduceBody {
    /// The run's whole input table `{"fields": [...], "rows": [[...]]}`, when it was not kept;
    /// accepted only if it is what the run was fed: its cells as the model reads them, as a
    /// typed table (or, for runs recorded before typed tables, its canonical JSON), hash to
    /// the recorded input hash.
    #[serde(default)]
    input: Option<Value>,
    /// Settings to change on purpose (a what-if, reported as such).
    #[serde(default)]
    overrides: Overrides,
}

/// `POST /api/v1/predictions/{request_id}:reproduce`: re-run the request's inference run with
/// its recorded settings and compare (readers of the deployment's project).
#[utoipa::path(post, path = "/api/v1/predictions/{request_id}", tag = "predictions", params(("request_id" = String, Path, description = "`<request id>:reproduce`")), request_body = ReproduceBody, responses((status = 200, body = Outcome)))]
pub async fn action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
    ApiJson(b): ApiJson<ReproduceBody>,
) -> Result<Json<Outcome>, ApiError> {
    let (id, _) = uuid_action(&target, "<request id>", &["reproduce"])?;
    s.reproduce(RunRef::Request(id), b.input, b.overrides, Some(&p))
        .await
        .map(Json)
}
