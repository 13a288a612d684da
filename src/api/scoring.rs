//! The H2O-compatible scorer under `/{deployment_id}/…` (see scorer-contract.md), on the
//! direct path: each request is one session run, recorded as an `InferenceRunRecorded` event
//! before the response leaves, which carries the event's receipt in its headers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::deployments::{Arm, Loaded, Scoring};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::blobs::BlobStore;
use crate::domain::deployment::{DeploymentState, Retention, Security};
use crate::domain::event::{InferenceRunRecorded, RegistryEvent, RunJob, RunRequest, RunSession};
use crate::domain::may;
use crate::domain::schema::{Column, ColumnType};
use crate::drift::sketch;
use crate::log::{BlobChanges, ExpectedVersion};
use crate::runtime::cells::{Cells, Sent};
use crate::runtime::scorer::{Features, ScoreError, table_bytes};

/// The deployment a scorer path's first segment names: its id, or an endpoint pointing at it.
pub(super) fn resolve(s: &AppState, segment: &str) -> Option<Uuid> {
    Uuid::parse_str(segment).ok().or_else(|| {
        s.registry
            .read()
            .endpoints
            .get(segment)
            .and_then(|e| e.deployment_id)
    })
}

/// The served deployment, or why not: unknown and stopped ones are 404, loading and paused
/// ones 503.
fn loaded(s: &AppState, id: &str) -> Result<Arc<Loaded>, ApiError> {
    let missing = || {
        ApiError::not_found(
            "deployment_not_found",
            format!("no deployment or endpoint {id}"),
        )
    };
    let uuid = resolve(s, id).ok_or_else(missing)?;
    if let Some(l) = s.serving.get(&uuid) {
        if l.paused.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "deployment_paused",
                format!("deployment {id} is paused; it scores again once resumed"),
            ));
        }
        return Ok(l);
    }
    match s.registry.read().deployments.get(&uuid).map(|d| d.state) {
        Some(DeploymentState::Preparing | DeploymentState::Launching) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("deployment {id} is loading"),
        )),
        Some(state) => Err(ApiError::not_found(
            "deployment_not_serving",
            format!("deployment {id} is {state:?}"),
        )),
        None => Err(missing()),
    }
}

/// Checks the caller against the deployment's security option; answers who it is.
async fn authorize(s: &AppState, l: &Loaded, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized =
        |code: &'static str, detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, detail);
    let bearer = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                unauthorized(
                    "unauthenticated",
                    "this deployment needs Authorization: Bearer <token or passphrase>",
                )
            })
    };
    match &l.spec.security {
        Security::None => Ok("anonymous".into()),
        Security::Passphrase { hash } => {
            let given = bearer()?;
            let key = *blake3::hash(given.as_bytes()).as_bytes();
            if l.accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
            {
                return Ok("passphrase".into());
            }
            let hash = hash.clone();
            let ok = tokio::task::spawn_blocking(move || {
                use argon2::password_hash::{PasswordHash, PasswordVerifier};
                PasswordHash::new(&hash).is_ok_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(given.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false);
            if !ok {
                return Err(unauthorized(
                    "invalid_passphrase",
                    "the passphrase does not match",
                ));
            }
            l.accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
            Ok("passphrase".into())
        }
        Security::Token { role } => {
            let token = bearer()?;
            let reg = s.registry.read();
            let p = super::auth::authenticate(&reg, &token, chrono::Utc::now())?;
            if !may(&reg, p.user_id, l.spec.project_id, *role) {
                return Err(super::auth::forbidden(format!(
                    "scoring this deployment needs the {role:?} role in its project"
                )));
            }
            Ok(p.user_id.to_string())
        }
    }
}

fn h2o_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Boolean => "Bool",
        ColumnType::Time64 => "Time64",
        ColumnType::Float32 => "Float32",
        ColumnType::Float64 => "Float64",
        ColumnType::Int32 => "Int32",
        ColumnType::Int64 => "Int64",
        ColumnType::String => "Str",
    }
}

/// Columns as HTML list items, for the docs page.
fn html_items(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| {
            format!(
                "<li><code>{}</code> {}</li>",
                c.name,
                h2o_type(c.column_type)
            )
        })
        .collect()
}

fn fields(columns: &[Column]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| json!({"name": c.name, "dataType": h2o_type(c.column_type)}))
        .collect()
}

pub async fn model_id(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let l = loaded(&s, &d)?;
    authorize(&s, &l, &headers).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        l.spec.experiment_id.to_string(),
    )
        .into_response())
}

pub async fn schema(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let l = loaded(&s, &d)?;
    authorize(&s, &l, &headers).await?;
    let outputs = l.model.output_schema();
    let classes: Vec<String> = match &l.spec.target_column {
        Some(t) => outputs
            .iter()
            .filter_map(|c| c.name.strip_prefix(&format!("{t}.")).map(str::to_string))
            .collect(),
        None => Vec::new(),
    };
    let scoring_type = match classes.len() {
        0 => "REGRESSION",
        2 => "BINOMIAL",
        _ => "CLASSIFICATION",
    };
    let name = s
        .registry
        .read()
        .models
        .get(&l.spec.model_id)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    Ok(Json(json!({
        "id": l.spec.experiment_id,
        "name": format!("{name} v{}", l.spec.version),
        "description": format!("deployment {} ({}) on {}@{}", l.deployment_id, l.spec.environment, l.spec.image_id, l.spec.image_version),
        "properties": {"scoringType": scoring_type, "scoringResponseLabels": classes},
        "schema": {"inputFields": fields(l.model.schema()), "outputFields": fields(&outputs)},
    })))
}

pub async fn capabilities(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let l = loaded(&s, &d)?;
    authorize(&s, &l, &headers).await?;
    Ok(Json(json!(["SCORE"])))
}

/// One example row that scores as is: zero for numbers, false, an empty string.
pub async fn sample_request(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let l = loaded(&s, &d)?;
    authorize(&s, &l, &headers).await?;
    let schema = l.model.schema();
    Ok(Json(json!({
        "fields": schema.iter().map(|c| &c.name).collect::<Vec<_>>(),
        "rows": [sample_row(schema)],
    })))
}

/// The sample request's row: zero for numbers, false, an empty string. Every variant is
/// warmed with it before it takes traffic.
pub(super) fn sample_row(schema: &[Column]) -> Vec<String> {
    let example = |t: ColumnType| match t {
        ColumnType::Boolean => "false",
        ColumnType::String => "",
        _ => "0",
    };
    schema
        .iter()
        .map(|c| example(c.column_type).to_string())
        .collect()
}

pub async fn readyz(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
) -> Result<&'static str, ApiError> {
    loaded(&s, &d).map(|_| "ready")
}

pub async fn contribution(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let l = loaded(&s, &d)?;
    authorize(&s, &l, &headers).await?;
    Err(not_supported("contributions (Shapley values)"))
}

fn not_supported(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_supported",
        format!("this model does not support {what}"),
    )
}

/// The scorer's own OpenAPI document, relative to the deployment's path.
pub async fn openapi(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let l = loaded(&s, &d)?;
    let row = json!({"type": "array", "items": {"type": "string"}});
    let request = json!({
        "type": "object",
        "required": ["fields", "rows"],
        "properties": {
            "fields": {"type": "array", "items": {"type": "string"}, "example": l.model.schema().iter().map(|c| &c.name).collect::<Vec<_>>()},
            "rows": {"type": "array", "items": row},
            "includeFieldsInOutput": {"type": "array", "items": {"type": "string"}},
            "idField": {"type": "string"},
            "noFieldNamesInOutput": {"type": "boolean"},
        },
    });
    let get = |summary: &str| json!({"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}});
    Ok(Json(json!({
        "openapi": "3.0.3",
        "info": {"title": format!("Provenant scorer, deployment {}", l.deployment_id), "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "."}],
        "paths": {
            "/model/score": {"post": {
                "summary": "Score rows; every cell a string, \"\" for missing",
                "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
                "responses": {"200": {"description": "fields and score rows; receipt in the Provenant-* headers"}, "400": {"description": "bad request"}, "503": {"description": "not ready or busy"}},
            }},
            "/model/id": get("The model id (text)"),
            "/model/schema": get("Input and output fields"),
            "/model/capabilities": get("What this scorer supports"),
            "/model/sample_request": get("A request that scores as is"),
            "/model/contribution": {"post": {"summary": "Not supported by this model", "responses": {"501": {"description": "not supported"}}}},
            "/readyz": get("ready once the model is loaded"),
        },
    })))
}

pub async fn docs(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let l = loaded(&s, &d)?;
    let inputs = html_items(l.model.schema());
    let outputs = html_items(&l.model.output_schema());
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Scorer {id}</title></head><body>\
         <h1>Scorer for deployment {id}</h1><p>OpenAPI document: <a href=\"openapi.json\">openapi.json</a>. \
         A request that scores as is: <a href=\"model/sample_request\">model/sample_request</a>.</p>\
         <h2>POST model/score</h2><pre>{{\"fields\": [...], \"rows\": [[\"...\"]]}}</pre>\
         <h2>Inputs</h2><ul>{inputs}</ul><h2>Outputs</h2><ul>{outputs}</ul></body></html>",
        id = l.deployment_id
    )))
}

/// A score request; keys other than these are ignored, as H2O's scorers ignore them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreRequest {
    fields: Vec<String>,
    rows: Sent,
    #[serde(default)]
    include_fields_in_output: Vec<String>,
    #[serde(default)]
    id_field: Option<String>,
    #[serde(default)]
    no_field_names_in_output: bool,
    #[serde(default)]
    request_shapley_value_type: Option<String>,
    #[serde(default)]
    request_prediction_intervals: bool,
}

fn bad(detail: String) -> ApiError {
    ApiError::bad_request("bad_request", detail)
}

pub async fn score(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(mut req): ApiJson<ScoreRequest>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let l = loaded(&s, &d)?;
    let caller = authorize(&s, &l, &headers).await?;
    if req
        .request_shapley_value_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("NONE"))
    {
        return Err(not_supported("contributions (Shapley values)"));
    }
    if req.request_prediction_intervals {
        return Err(not_supported("prediction intervals"));
    }
    // Lay the request's columns onto the schema; unknown fields are ignored.
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = req.fields.iter().find(|f| !seen.insert(f.as_str())) {
        return Err(bad(format!("field {dup:?} appears twice")));
    }
    let position = |name: &str| req.fields.iter().position(|f| f == name);
    let columns = l
        .model
        .schema()
        .iter()
        .map(|c| {
            position(&c.name).ok_or_else(|| bad(format!("required field {:?} is missing", c.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut copied: Vec<String> = req.id_field.iter().cloned().collect();
    copied.extend(
        req.include_fields_in_output
            .iter()
            .filter(|f| Some(*f) != req.id_field.as_ref())
            .cloned(),
    );
    let copied_at = copied
        .iter()
        .map(|f| {
            position(f).ok_or_else(|| {
                bad(format!(
                    "field {f:?} to copy into the output is not in the request"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (rows, copies) = std::mem::take(&mut req.rows)
        .select(req.fields.len(), &columns, &copied_at)
        .map_err(bad)?;
    let mut out_fields = copied;
    out_fields.extend(l.model.output_names().iter().cloned());
    if rows.is_empty() {
        return Ok(respond(&l, &req, &out_fields, &rows, HeaderMap::new()));
    }

    let request_id = Uuid::now_v7();
    let (arm, draw) = l.route(request_id);
    let who = Caller {
        request_id,
        draw,
        caller,
        received,
    };
    let copy = (!l.shadows.is_empty()).then(|| (rows.clone(), who.clone()));
    let (scored, headers) = answer(&s, arm, rows, who).await?;
    if let Some((rows, who)) = copy {
        shadow(&s, &l, rows, who);
    }
    let score_rows = if copied_at.is_empty() {
        scored
    } else {
        Cells::beside(&copies, &scored)
    };
    Ok(respond(&l, &req, &out_fields, &score_rows, headers))
}

/// Who a request is and when it came: what its run's record says of it.
#[derive(Clone)]
pub struct Caller {
    pub request_id: Uuid,
    /// Its A/B draw, in a deployment of several answering variants.
    pub draw: Option<u64>,
    pub caller: String,
    pub received: Instant,
}

/// Scores `rows` on a variant: on the direct path, or through its batching workers. The
/// rows are parsed for the variant's model first, so one request's bad cell is its own 400
/// and never fails a batch it would share.
async fn answer(s: &AppState, arm: &Arm, rows: Cells, who: Caller) -> Answer {
    let features = arm.scoring.model.features(&rows).map_err(score_error)?;
    let Some(queue) = &arm.queue else {
        return direct(s, &arm.scoring, rows, features, who).await;
    };
    let stopping = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the deployment is stopping",
        )
    };
    let _waiting = Waiting::enter(&arm.scoring.waiting);
    let (reply, answered) = tokio::sync::oneshot::channel();
    queue
        .send(Job {
            rows,
            features,
            who,
            reply,
        })
        .await
        .map_err(|_| stopping())?;
    answered.await.map_err(|_| stopping())?
}

/// Gives each challenger a copy of a request's rows to score in the background. Its run is
/// recorded as a shadow of the request, timed from the copy's start; whatever becomes of it,
/// the request has its answer already. A challenger that has fallen behind drops the copy
/// (counted).
fn shadow(s: &AppState, l: &Arc<Loaded>, rows: Cells, who: Caller) {
    let who = Caller {
        received: Instant::now(),
        ..who
    };
    for i in 0..l.shadows.len() {
        let Ok(permit) = l.shadows[i].inflight.clone().try_acquire_owned() else {
            l.shadows[i].dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (s, l, rows, who) = (s.clone(), l.clone(), rows.clone(), who.clone());
        tokio::spawn(async move {
            let challenger = &l.shadows[i];
            match answer(&s, &challenger.arm, rows, who).await {
                Ok(_) => challenger.scored.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!(
                        "deployment {} challenger {}: {}: {}",
                        challenger.arm.scoring.deployment_id,
                        challenger.arm.scoring.variant,
                        e.code,
                        e.detail
                    );
                    challenger.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(permit);
        });
    }
}

fn score_error(e: ScoreError) -> ApiError {
    match e {
        ScoreError::BadInput(m) => bad(m),
        e => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "scoring_failed",
            e.to_string(),
        ),
    }
}

type Answer = Result<(Cells, HeaderMap), ApiError>;

/// Counts a request as waiting on the batching path until it is answered or dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A request waiting for a batching worker.
pub struct Job {
    rows: Cells,
    features: Features,
    who: Caller,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Waits for a scoring slot (SCORING_TIMEOUT: 0 waits without limit).
pub(super) async fn slot(l: &Scoring) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    let timeout = l.spec.settings.scoring_timeout_ms;
    let permit = if timeout == 0 {
        l.slots.acquire().await.ok()
    } else {
        tokio::time::timeout(Duration::from_millis(timeout), l.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    };
    permit.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "no scoring slot freed in time; retry",
        )
    })
}

/// A session run: its rows, what they were parsed into, and what the model made of them.
pub(super) struct Ran {
    pub rows: Cells,
    pub features: Features,
    pub out_rows: Cells,
    pub out_fields: Vec<String>,
}

/// Runs the model on `rows`, parsed as `features`, off the async threads; checks the row
/// count as configured.
pub(super) async fn run(
    l: &Scoring,
    rows: Cells,
    features: Features,
    always_strict: bool,
) -> Result<Ran, ApiError> {
    let model = l.model.clone();
    let warn_after = Duration::from_millis(l.spec.settings.scoring_warn_timeout_ms);
    let started = Instant::now();
    // A quick run blocks this async thread less than the hand-off to a blocking one costs.
    let (scored, features) = if model.is_quick(rows.len()) {
        (model.run(&features), features)
    } else {
        tokio::task::spawn_blocking(move || (model.run(&features), features))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "scoring_failed",
                    e.to_string(),
                )
            })?
    };
    let scored = scored.map_err(score_error)?;
    if started.elapsed() > warn_after {
        eprintln!(
            "scorer {}: a run of {} rows took {:?}",
            l.deployment_id,
            rows.len(),
            started.elapsed()
        );
    }
    if scored.rows.len() != rows.len() {
        let message = format!("{} rows in, {} rows out", rows.len(), scored.rows.len());
        if always_strict || l.spec.settings.score_row_count_validation == "strict" {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "row_count_mismatch",
                message,
            ));
        }
        eprintln!("scorer {}: {message}", l.deployment_id);
    }
    Ok(Ran {
        rows,
        features,
        out_rows: scored.rows,
        out_fields: scored.fields,
    })
}

/// The direct path: this request is one session run and one recorded event.
async fn direct(s: &AppState, l: &Scoring, rows: Cells, features: Features, who: Caller) -> Answer {
    let permit = slot(l).await?;
    let queue_wait = who.received.elapsed();
    let ran = run(l, rows, features, false).await?;
    drop(permit);
    let request = RunRequest {
        request_id: who.request_id,
        row_offset: 0,
        row_count: ran.rows.len() as u64,
        caller: who.caller,
        queue_wait_us: queue_wait.as_micros() as u64,
        latency_us: who.received.elapsed().as_micros() as u64,
        draw: who.draw,
    };
    if !s.recording.load(Ordering::Relaxed) {
        return Ok((ran.out_rows, HeaderMap::new()));
    }
    let receipt = record(s, l, &ran, vec![request.clone()], None).await?;
    Ok((ran.out_rows, receipt.headers(&request)))
}

/// How many runs of one worker may be recording at once while it gathers the next: while
/// one run waits for its flush, the next is gathered and scored, so the disk and the cores
/// work at the same time. A batch that cannot grow goes on regardless.
const PIPELINE_DEPTH: usize = 2;

/// A batching worker: takes the first waiting request, adds others that arrive within
/// MAX_QUEUE_DELAY_US while the rows fit in MAX_BATCH_SIZE, runs them as one session run
/// recorded as one event, and gives each request back its own rows, by offset. It stops
/// waiting early when every request in flight is already in its hands, unless its recording
/// pipeline is full, in which case it keeps gathering until a run's record is durable or
/// the batch is full.
pub async fn batch_worker(
    s: AppState,
    l: Arc<Scoring>,
    queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>,
) {
    let max_rows = l.spec.settings.max_batch_size.max(1) as usize;
    let delay = Duration::from_micros(l.spec.settings.max_queue_delay_us);
    let waiting = || l.waiting.load(std::sync::atomic::Ordering::Acquire);
    let mut recording = tokio::task::JoinSet::new();
    let mut carry: Option<Job> = None;
    loop {
        let mut jobs = Vec::new();
        let mut n;
        {
            let mut rx = queue.lock().await;
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => break,
                },
            };
            n = first.rows.len();
            jobs.push(first);
            let deadline = tokio::time::Instant::now() + delay;
            while n < max_rows {
                let all_in_hand = jobs.len() + usize::from(carry.is_some()) >= waiting();
                let pipeline_full = recording.len() >= PIPELINE_DEPTH;
                if all_in_hand && !pipeline_full {
                    break;
                }
                tokio::select! {
                    next = tokio::time::timeout_at(deadline, rx.recv()) => match next {
                        Ok(Some(j)) if n + j.rows.len() > max_rows => {
                            carry = Some(j);
                            break;
                        }
                        Ok(Some(j)) => {
                            n += j.rows.len();
                            jobs.push(j);
                        }
                        _ => break,
                    },
                    Some(_) = recording.join_next(), if all_in_hand => {}
                }
            }
        }
        // A batch that cannot grow (full, or the next request does not fit) does not wait
        // for a recording slot.
        while recording.try_join_next().is_some() {}
        while n < max_rows && carry.is_none() && recording.len() >= PIPELINE_DEPTH {
            recording.join_next().await;
        }
        match score_batch(&l, &mut jobs).await {
            Ok(run) => {
                recording.spawn(record_batch(s.clone(), l.clone(), jobs, run));
            }
            Err(e) => reply_all(jobs, &e),
        }
    }
    recording.join_all().await;
}

/// A batch's session run, and where each request starts in it.
struct BatchRun {
    ran: Ran,
    offsets: Vec<usize>,
    started: Instant,
}

fn reply_all(jobs: Vec<Job>, e: &ApiError) {
    for job in jobs {
        let _ = job
            .reply
            .send(Err(ApiError::new(e.status, e.code, e.detail.clone())));
    }
}

async fn score_batch(l: &Scoring, jobs: &mut [Job]) -> Result<BatchRun, ApiError> {
    let permit = slot(l).await?;
    let started = Instant::now();
    let mut offsets = Vec::with_capacity(jobs.len());
    let mut rows = Cells::default();
    let mut features = Features::default();
    for job in jobs.iter_mut() {
        offsets.push(rows.len());
        rows.append(std::mem::take(&mut job.rows));
        features.append(std::mem::take(&mut job.features));
    }
    let ran = run(l, rows, features, true).await?;
    drop(permit);
    Ok(BatchRun {
        ran,
        offsets,
        started,
    })
}

/// Records a scored batch and answers each of its requests with its own rows.
async fn record_batch(s: AppState, l: Arc<Scoring>, jobs: Vec<Job>, run: BatchRun) {
    let total = run.ran.rows.len();
    let requests: Vec<RunRequest> = jobs
        .iter()
        .zip(&run.offsets)
        .enumerate()
        .map(|(i, (job, &offset))| {
            let end = run.offsets.get(i + 1).copied().unwrap_or(total);
            RunRequest {
                request_id: job.who.request_id,
                row_offset: offset as u64,
                row_count: (end - offset) as u64,
                caller: job.who.caller.clone(),
                queue_wait_us: run.started.duration_since(job.who.received).as_micros() as u64,
                latency_us: job.who.received.elapsed().as_micros() as u64,
                draw: job.who.draw,
            }
        })
        .collect();
    let receipt = if s.recording.load(Ordering::Relaxed) {
        match record(&s, &l, &run.ran, requests.clone(), None).await {
            Ok(r) => Some(r),
            Err(e) => return reply_all(jobs, &e),
        }
    } else {
        None
    };
    // Each request takes its own rows off the end, so the first keeps the run's buffer.
    let mut out_rows = run.ran.out_rows;
    for (job, r) in jobs.into_iter().zip(&requests).rev() {
        let headers = receipt
            .as_ref()
            .map_or_else(HeaderMap::new, |rc| rc.headers(r));
        let rows = out_rows.split_off(r.row_offset as usize);
        let _ = job.reply.send(Ok((rows, headers)));
    }
}

/// The answer's body, written straight from the rows (keys in the order a JSON object
/// with sorted keys has them, as earlier answers had).
#[derive(serde::Serialize)]
struct ScoreBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a [String]>,
    id: Uuid,
    score: &'a Cells,
}

fn respond(
    l: &Loaded,
    req: &ScoreRequest,
    fields: &[String],
    score: &Cells,
    headers: HeaderMap,
) -> Response {
    let body = ScoreBody {
        fields: (!req.no_field_names_in_output).then_some(fields),
        id: l.spec.experiment_id,
        score,
    };
    (headers, Json(body)).into_response()
}

/// What names a recorded run: the event's position, hash, signature and key, as the header
/// values every request of the run shares (made once per run, cloned by reference count).
pub(super) struct Receipt {
    shared: Vec<(&'static str, HeaderValue)>,
}

impl Receipt {
    fn new(event: &crate::log::AppendedEvent) -> Receipt {
        let shared = [
            ("provenant-event-position", event.position.to_string()),
            ("provenant-event-hash", event.hash.to_hex()),
            ("provenant-signature", hex::encode(event.signature)),
            ("provenant-key-id", event.key_id.clone()),
        ];
        Receipt {
            shared: shared
                .into_iter()
                .filter_map(|(name, v)| HeaderValue::try_from(v).ok().map(|v| (name, v)))
                .collect(),
        }
    }

    fn headers(&self, request: &RunRequest) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        if let Ok(id) = HeaderValue::from_str(&request.request_id.to_string()) {
            headers.insert("provenant-request-id", id);
        }
        for (name, value) in &self.shared {
            headers.insert(*name, value.clone());
        }
        headers.insert(
            "provenant-row-offset",
            HeaderValue::from(request.row_offset),
        );
        headers
    }
}

/// Stores the run's input (a typed table) and output (canonical JSON) as blobs and appends
/// its event; answers once the event is durable. Without a durable record there is no
/// response (503).
pub(super) async fn record(
    s: &AppState,
    l: &Scoring,
    ran: &Ran,
    requests: Vec<RunRequest>,
    job: Option<RunJob>,
) -> Result<Receipt, ApiError> {
    let rows = &ran.rows;
    let unrecorded = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording_failed",
            format!("the prediction could not be recorded, so it is not returned: {e}"),
        )
    };
    let names: Vec<&str> = l.model.schema().iter().map(|c| c.name.as_str()).collect();
    let input = l.model.input_bytes(&ran.features);
    let output = table_bytes(&ran.out_fields, &ran.out_rows);
    // Every run's inputs are binned by its version's reference profile, so drift still sees
    // them once their blobs are gone: never kept (hash-only retention) or purged.
    let profile = s
        .registry
        .read()
        .models
        .get(&l.spec.model_id)
        .and_then(|m| m.versions.get(&l.spec.version))
        .and_then(|v| v.reference.as_deref())
        .map(|r| {
            let parsed = l.model.parsed(&ran.features);
            Box::new(sketch(&r.dataset_blob, &r.columns, &names, rows, parsed))
        });
    let (input_blob, output_blob, blobs) = match l.spec.retention {
        Retention::Hashes => (
            blake3::hash(&input).to_hex().to_string(),
            blake3::hash(&output).to_hex().to_string(),
            BlobChanges::default(),
        ),
        Retention::Full { .. } => keep(s, input, output).await.map_err(unrecorded)?,
    };
    let spec = &l.spec;
    let event = RegistryEvent::InferenceRunRecorded(InferenceRunRecorded {
        run_id: Uuid::now_v7(),
        deployment_id: l.deployment_id,
        variant: l.variant.clone(),
        shadow: l.shadow,
        model_id: spec.model_id,
        version: spec.version,
        model_blob: spec.model_blob.clone(),
        image_id: spec.image_id.clone(),
        image_version: spec.image_version.clone(),
        session: Box::new(RunSession::of(
            &spec.runtime,
            &s.onnx.version,
            Some(s.onnx.cpu_class.clone()),
        )),
        row_count: rows.len() as u64,
        input_blob,
        output_blob,
        requests,
        job,
        profile,
    });
    let new = crate::api::command::new_event(&event, "system:scorer");
    let stream = crate::domain::deployment::stream(l.deployment_id);
    let appended = s
        .ledger
        .append_with_blobs(&stream, ExpectedVersion::Any, vec![new], blobs)
        .await
        .map_err(|e| unrecorded(e.to_string()))?;
    let event = appended
        .events
        .first()
        .ok_or_else(|| unrecorded("no event appended".into()))?;
    Ok(Receipt::new(event))
}

/// Keeps a run's input and output: when they compress into little enough, they go into the
/// ledger's blob table with the run's event, so one flush makes the record and its data
/// durable; otherwise they become files, flushed (with concurrent runs' files) before the
/// event that names them is appended. Big runs are compressed off the async threads.
async fn keep(
    s: &AppState,
    input: Vec<u8>,
    output: Vec<u8>,
) -> Result<(String, String, BlobChanges), String> {
    let blobs = s.blobs.clone();
    let here = input.len() + output.len() <= COMPRESS_HERE_MAX_BYTES;
    let work = move || {
        let (i, i_bytes) = BlobStore::encode(&input).map_err(|e| e.to_string())?;
        let (o, o_bytes) = BlobStore::encode(&output).map_err(|e| e.to_string())?;
        if i_bytes.len() + o_bytes.len() <= crate::blobs::INLINE_MAX_BYTES {
            let put = vec![(i, i_bytes), (o, o_bytes)];
            let blobs = BlobChanges {
                put,
                delete: Vec::new(),
            };
            return Ok((i.to_hex(), o.to_hex(), blobs));
        }
        for (hash, bytes, size) in [(&i, &i_bytes, input.len()), (&o, &o_bytes, output.len())] {
            blobs
                .put_encoded_unsynced(hash, bytes, size as u64)
                .map_err(|e| e.to_string())?;
        }
        blobs.sync().map_err(|e| e.to_string())?;
        Ok((i.to_hex(), o.to_hex(), BlobChanges::default()))
    };
    if here {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
}

/// Runs bigger than this (uncompressed) are compressed on a blocking thread.
const COMPRESS_HERE_MAX_BYTES: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_without_rows_are_refused_with_what_was_expected() {
        for (body, wanted) in [
            (
                r#"{"fields":[],"rows":[["1"],"x"]}"#,
                "a row (an array of cells)",
            ),
            (r#"{"fields":[],"rows":{}}"#, "an array of rows"),
            (r#"{"fields":[]}"#, "missing field `rows`"),
        ] {
            let e = serde_json::from_str::<ScoreRequest>(body).err().unwrap();
            assert!(e.to_string().contains(wanted), "{body}: {e}");
        }
    }
}
