//! Deployments over REST, and the loading that moves them Preparing → Launching → Healthy
//! (or Failed, with the reason), each step an event.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Principal, forbidden};
use super::command::{Written, commit};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, uuid_action};
use crate::blobs::BlobStore;
use crate::domain::deployment::{
    Deploy, Deployment, DeploymentSpec, DeploymentState, Retention, Security, decide_deploy,
    decide_transition,
};
use crate::domain::event::{PredictionDataPurged, ProjectRole, RegistryEvent};
use crate::domain::schema::Column;
use crate::domain::{Kind, Registry, can_read_project};
use crate::log::ExpectedVersion;
use crate::log::envelope::Digest;
use crate::projections::replay::Until;
use crate::runtime::onnx::Onnx;
use crate::runtime::scorer::{Model, SessionSettings};

/// What scoring a deployment needs: its spec, model and run slots.
pub struct Scoring {
    pub deployment_id: Uuid,
    pub spec: DeploymentSpec,
    pub model: Arc<Model>,
    /// Bounds concurrent session runs (SCORING_CONCURRENCY).
    pub slots: tokio::sync::Semaphore,
    /// Requests on the batching path that are not answered yet: a worker waits for company
    /// only while some of them are not in its batch.
    pub waiting: std::sync::atomic::AtomicUsize,
}

/// A Healthy deployment: its scoring, and the batching workers' queue when it batches. The
/// workers hold the scoring but not the queue's sender, so dropping this stops them.
pub struct Loaded {
    scoring: Arc<Scoring>,
    pub queue: Option<tokio::sync::mpsc::Sender<super::scoring::Job>>,
    /// blake3 of passphrases already verified against the argon2 hash, so each is checked
    /// slowly once per process.
    pub accepted: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Paused: loaded, answering 503 until resumed. Kept here so scoring checks it without
    /// the registry's lock.
    pub paused: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for Loaded {
    type Target = Scoring;
    fn deref(&self) -> &Scoring {
        &self.scoring
    }
}

/// The deployments this process serves.
#[derive(Default)]
pub struct Serving {
    deployments: RwLock<HashMap<Uuid, Arc<Loaded>>>,
    /// Loaded models by everything that shapes them (artifact hash, schema, target, session
    /// settings): deployments of the same model share its sessions.
    models: std::sync::Mutex<HashMap<String, std::sync::Weak<Model>>>,
    recent: std::sync::Mutex<Vec<Arc<Model>>>,
}

impl Serving {
    pub fn get(&self, id: &Uuid) -> Option<Arc<Loaded>> {
        self.deployments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, loaded: Loaded) {
        self.deployments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(loaded.deployment_id, Arc::new(loaded));
    }

    fn remove(&self, id: &Uuid) {
        self.deployments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The model of these parts (everything that shapes it), shared with the live deployments
    /// and recent reproductions that loaded the same; loaded from the blob store otherwise.
    pub fn model(
        &self,
        onnx: &'static Onnx,
        blobs: &BlobStore,
        model_blob: &str,
        schema: &[Column],
        target: Option<&str>,
        settings: SessionSettings,
    ) -> Result<Arc<Model>, String> {
        let key = serde_json::to_string(&(model_blob, schema, target, &settings))
            .map_err(|e| e.to_string())?;
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = models.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(m);
        }
        let hash = Digest::from_hex(model_blob).ok_or("the model blob hash is malformed")?;
        let bytes = blobs.get(&hash).map_err(|e| format!("bad artifact: {e}"))?;
        let model = Arc::new(
            Model::load(onnx, bytes, schema.to_vec(), target, settings)
                .map_err(|e| e.to_string())?,
        );
        models.retain(|_, w| w.strong_count() > 0);
        models.insert(key, Arc::downgrade(&model));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push(model.clone());
        if recent.len() > RECENT_MODELS {
            recent.remove(0);
        }
        Ok(model)
    }
}

/// Models kept loaded after their last user let go, so reproducing the predictions of a
/// stopped deployment does not reload its model each time.
const RECENT_MODELS: usize = 4;

impl AppState {
    /// Records a deployment's move to `to` (as `system:scorer` when `actor` is none).
    async fn transition(
        &self,
        actor: Option<Uuid>,
        id: Uuid,
        to: DeploymentState,
        reason: &str,
    ) -> Result<Written, ApiError> {
        let who = actor.map_or_else(|| "system:scorer".to_string(), |a| a.to_string());
        self.run_as(
            &who,
            |r| decide_transition(r, actor, id, to, reason.to_string()),
            |r| r.deployments.get(&id).map(view),
        )
        .await
    }

    /// Launching, then Healthy once the model is loaded, or Failed with the reason.
    pub async fn launch(&self, id: Uuid, reason: &str) -> Result<Written, ApiError> {
        self.transition(None, id, DeploymentState::Launching, reason)
            .await?;
        let spec = self
            .registry
            .read()
            .deployments
            .get(&id)
            .map(|d| d.spec.clone())
            .ok_or_else(|| not_found(id))?;
        match self.load(id, spec).await {
            Ok(scoring) => {
                self.serving.insert(self.start_workers(scoring));
                self.transition(None, id, DeploymentState::Healthy, "model loaded")
                    .await
            }
            Err(reason) => {
                self.transition(None, id, DeploymentState::Failed, &reason)
                    .await
            }
        }
    }

    /// Starts the batching workers a deployment's settings ask for (none: the direct path).
    fn start_workers(&self, scoring: Scoring) -> Loaded {
        let scoring = Arc::new(scoring);
        let workers = scoring.spec.settings.batch_workers;
        if workers == 0 {
            return Loaded {
                scoring,
                queue: None,
                accepted: Default::default(),
                paused: Default::default(),
            };
        }
        let depth = (scoring.spec.settings.max_batch_size as usize).max(1) * 4;
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers {
            tokio::spawn(super::scoring::batch_worker(
                self.clone(),
                scoring.clone(),
                rx.clone(),
            ));
        }
        Loaded {
            scoring,
            queue: Some(tx),
            accepted: Default::default(),
            paused: Default::default(),
        }
    }

    async fn load(&self, id: Uuid, spec: DeploymentSpec) -> Result<Scoring, String> {
        let (blobs, onnx) = (self.blobs.clone(), self.onnx);
        if spec.runtime.onnxruntime_version != onnx.version {
            return Err(format!(
                "the runtime image version pins ONNX Runtime {}, this server runs {}",
                spec.runtime.onnxruntime_version, onnx.version
            ));
        }
        let serving = self.serving.clone();
        tokio::task::spawn_blocking(move || {
            let model = serving.model(
                onnx,
                &blobs,
                &spec.model_blob,
                &spec.input_schema,
                spec.target_column.as_deref(),
                session_settings(&spec),
            )?;
            let slots =
                tokio::sync::Semaphore::new(spec.settings.scoring_concurrency.max(1) as usize);
            Ok(Scoring {
                deployment_id: id,
                spec,
                model,
                slots,
                waiting: Default::default(),
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Applies a deployment's retention policy: the blobs of runs recorded more than `days`
    /// before `now` are deleted, unless a run still kept (of any deployment) shares them. The
    /// purge event is appended first, so no blob disappears unrecorded.
    pub async fn purge(
        &self,
        id: Uuid,
        actor: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Written, ApiError> {
        let (days, purged_before, others) = {
            let reg = self.registry.read();
            let d = reg.deployments.get(&id).ok_or_else(|| {
                ApiError::not_found(Kind::Deployment.code(), format!("no deployment {id}"))
            })?;
            let Retention::Full { days } = d.spec.retention else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "this deployment keeps hashes only; it stores no blobs to purge",
                ));
            };
            let others: Vec<(Uuid, u64)> = reg
                .deployments
                .values()
                .filter(|o| o.deployment_id != id)
                .map(|o| (o.deployment_id, o.purged_before))
                .collect();
            (days, d.purged_before, others)
        };
        let cutoff =
            crate::log::envelope::format_time(now - chrono::Duration::days(i64::from(days)));
        let runs = |deployment: Uuid,
                    from: u64|
         -> Result<Vec<(u64, String, [String; 2])>, ApiError> {
            let events = match self.ledger.read_stream(
                &crate::domain::deployment::stream(deployment),
                0,
                crate::log::store::Direction::Forward,
                usize::MAX,
            ) {
                Ok(e) => e,
                Err(crate::log::LogError::UnknownStream(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            Ok(events
                .into_iter()
                .filter(|e| e.unsigned.event_type == "InferenceRunRecorded" && e.position() >= from)
                .map(|e| {
                    let blob = |k: &str| {
                        e.unsigned.payload[k]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    };
                    (
                        e.position(),
                        e.unsigned.recorded_at.clone(),
                        [blob("input_blob"), blob("output_blob")],
                    )
                })
                .collect())
        };
        let mine = runs(id, purged_before)?;
        // RFC 3339 UTC times with fixed precision compare as text.
        let (old, kept): (Vec<_>, Vec<_>) = mine.into_iter().partition(|(_, at, _)| *at < cutoff);
        let Some(runs_before) = old.iter().map(|(p, _, _)| p + 1).max() else {
            return Ok(Written {
                data: json!({"purged": 0}),
                events: Vec::new(),
                checkpoint_size: self.ledger.head().size,
            });
        };
        let mut still_used: std::collections::HashSet<String> =
            kept.into_iter().flat_map(|(_, _, b)| b).collect();
        for (other, from) in others {
            still_used.extend(runs(other, from)?.into_iter().flat_map(|(_, _, b)| b));
        }
        let mut blobs: Vec<String> = old
            .into_iter()
            .flat_map(|(_, _, b)| b)
            .filter(|h| !still_used.contains(h))
            .collect();
        blobs.sort();
        blobs.dedup();
        let event = RegistryEvent::PredictionDataPurged(PredictionDataPurged {
            deployment_id: id,
            runs_before,
            blobs: blobs.clone(),
            reason: format!("retention policy: inputs and outputs kept {days} days"),
        });
        let new = crate::api::command::new_event(&event, actor.to_string());
        let appended = self
            .ledger
            .append(
                &crate::domain::deployment::stream(id),
                ExpectedVersion::Any,
                vec![new],
            )
            .await?;
        let size = appended.events.last().map_or(0, |e| e.position + 1);
        self.registry.wait_for(size).await?;
        for hash in &blobs {
            if let Some(d) = Digest::from_hex(hash) {
                self.blobs.remove(&d).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "blob_store_failed",
                        e.to_string(),
                    )
                })?;
            }
        }
        let events = appended
            .events
            .iter()
            .map(|a| super::command::WrittenEvent {
                position: a.position,
                event_type: "PredictionDataPurged".into(),
                event_id: a.event_id,
                stream: crate::domain::deployment::stream(id),
                stream_version: a.stream_version,
                hash: a.hash,
            })
            .collect();
        Ok(Written {
            data: json!({"purged": blobs.len(), "runs_before": runs_before}),
            events,
            checkpoint_size: appended.checkpoint_size,
        })
    }

    /// Applies every deployment's retention policy (the server runs this hourly).
    pub async fn purge_all(&self) -> Result<usize, ApiError> {
        let ids: Vec<Uuid> = self
            .registry
            .read()
            .deployments
            .values()
            .filter(|d| matches!(d.spec.retention, Retention::Full { .. }))
            .map(|d| d.deployment_id)
            .collect();
        let mut purged = 0;
        for id in ids {
            let w = self
                .purge(id, "system:retention", chrono::Utc::now())
                .await?;
            purged += w.data["purged"].as_u64().unwrap_or(0) as usize;
        }
        Ok(purged)
    }

    /// Loads every deployment that was Healthy or Paused when the server last stopped; a
    /// Paused one stays paused (no event), or fails if it no longer loads.
    pub async fn relaunch(&self) -> Result<usize, ApiError> {
        let serving: Vec<(Uuid, DeploymentState, DeploymentSpec)> = self
            .registry
            .read()
            .deployments
            .values()
            .filter(|d| matches!(d.state, DeploymentState::Healthy | DeploymentState::Paused))
            .map(|d| (d.deployment_id, d.state, d.spec.clone()))
            .collect();
        for (id, state, spec) in &serving {
            if *state == DeploymentState::Healthy {
                self.launch(*id, "server restart").await?;
                continue;
            }
            match self.load(*id, spec.clone()).await {
                Ok(scoring) => {
                    let loaded = self.start_workers(scoring);
                    loaded.paused.store(true, Ordering::Relaxed);
                    self.serving.insert(loaded);
                }
                Err(reason) => {
                    self.transition(None, *id, DeploymentState::Failed, &reason)
                        .await?;
                }
            }
        }
        self.end_interrupted_jobs().await?;
        Ok(serving.len())
    }

    /// Loads a Healthy deployment into this process without recording a launch, for the
    /// CLI's batch jobs on a stopped server's data dir (where the ledger says Healthy
    /// already). Other deployments are left to the job's own checks to refuse.
    pub async fn load_offline(&self, id: Uuid) -> Result<(), ApiError> {
        let spec = self
            .registry
            .read()
            .deployments
            .get(&id)
            .filter(|d| d.state == DeploymentState::Healthy)
            .map(|d| d.spec.clone());
        if let Some(spec) = spec {
            let scoring = self
                .load(id, spec)
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "load_failed", e))?;
            self.serving.insert(self.start_workers(scoring));
        }
        Ok(())
    }

    /// Pauses a Healthy deployment or resumes a Paused one (editors, with a reason).
    async fn pause(
        &self,
        actor: Uuid,
        id: Uuid,
        pause: bool,
        reason: &str,
    ) -> Result<Written, ApiError> {
        let to = if pause {
            DeploymentState::Paused
        } else {
            DeploymentState::Healthy
        };
        let written = self.transition(Some(actor), id, to, reason).await?;
        if let Some(l) = self.serving.get(&id) {
            l.paused.store(pause, Ordering::Relaxed);
        }
        Ok(written)
    }
}

fn view(d: &Deployment) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "scoring_url".into(),
            json!(format!("/{}/model/score", d.deployment_id)),
        );
    }
    v
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    pub model_id: Uuid,
    pub version: u32,
    /// `DEV`, `PROD`, or any name of letters, digits, `_` and `-`.
    pub environment: String,
    /// Default: Provenant tokens of project viewers and up.
    #[serde(default)]
    pub security: Option<SecurityRequest>,
    /// A runtime serving the model type (default: the most permissive one that does).
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// `{"mode": "full", "days": N}` (default 183) or `{"mode": "hashes"}`.
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// Who may score: `{"mode": "none"}`, `{"mode": "passphrase", "passphrase": "…"}` (kept
/// only as an argon2 hash), or `{"mode": "token", "role": "viewer"}`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecurityRequest {
    None,
    Passphrase { passphrase: String },
    Token { role: ProjectRole },
}

impl SecurityRequest {
    fn into_security(self) -> Result<Security, ApiError> {
        Ok(match self {
            SecurityRequest::None => Security::None,
            SecurityRequest::Token { role } => Security::Token { role },
            SecurityRequest::Passphrase { passphrase } => {
                if passphrase.len() < 12 {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_field",
                        "security.passphrase: at least 12 characters",
                    ));
                }
                use argon2::password_hash::{PasswordHasher, SaltString};
                let failed =
                    |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hash_failed", e);
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).map_err(|e| failed(e.to_string()))?;
                let salt = SaltString::encode_b64(&bytes).map_err(|e| failed(e.to_string()))?;
                let hash = argon2::Argon2::default()
                    .hash_password(passphrase.as_bytes(), &salt)
                    .map_err(|e| failed(e.to_string()))?;
                Security::Passphrase {
                    hash: hash.to_string(),
                }
            }
        })
    }
}

impl AppState {
    /// Deploys a model version as `actor` and launches it; answers once it is Healthy or Failed.
    pub async fn deploy(&self, actor: Uuid, request: NewDeployment) -> Result<Written, ApiError> {
        let NewDeployment {
            model_id,
            version,
            environment,
            security,
            runtime_id,
            retention,
        } = request;
        let security = security.map_or(
            Ok(Security::Token {
                role: ProjectRole::Viewer,
            }),
            SecurityRequest::into_security,
        )?;
        let id = Uuid::now_v7();
        let mut created = {
            let _turn = self.gate.lock().await;
            self.registry.wait_for(self.ledger.head().size).await?;
            let request = Deploy {
                deployment_id: id,
                model_id,
                version,
                environment,
                security,
                retention: retention.unwrap_or_default(),
                runtime_id,
            };
            let decision = decide_deploy(&self.registry.read(), actor, request)?;
            let (events, checkpoint_size) =
                commit(&self.ledger, &self.registry, &actor.to_string(), decision).await?;
            Written {
                data: Value::Null,
                events,
                checkpoint_size,
            }
        };
        let launched = self.launch(id, "deployed").await?;
        created.events.extend(launched.events);
        created.checkpoint_size = launched.checkpoint_size;
        created.data = launched.data;
        Ok(created)
    }
}

/// Deploys a model version (editors of its project); answers once it is Healthy or Failed.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments", request_body = NewDeployment, responses((status = 201, body = Written), (status = 422, description = "`not_deployable`, with the reason")))]
pub async fn deploy(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<NewDeployment>,
) -> Result<(StatusCode, Json<Written>), ApiError> {
    let written = s.deploy(p.user_id, b).await?;
    Ok((StatusCode::CREATED, Json(written)))
}

/// The deployments the caller may read.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", responses((status = 200, description = "deployments")))]
pub async fn list(State(s): State<AppState>, p: Principal) -> Json<Vec<Value>> {
    let reg = s.registry.read();
    Json(
        reg.deployments
            .values()
            .filter(|d| can_read_project(&reg, p.user_id, d.spec.project_id))
            .map(view)
            .collect(),
    )
}

#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}", tag = "deployments", responses((status = 200, description = "the deployment")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let reg = s.registry.read();
    let d = readable(&reg, &p, id, "reading deployment")?;
    Ok(Json(view(d)))
}

pub(super) fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(Kind::Deployment.code(), format!("no deployment {id}"))
}

/// The deployment, for a caller who may read its project; `what` says what needs it.
pub(super) fn readable<'a>(
    reg: &'a Registry,
    p: &Principal,
    id: Uuid,
    what: &str,
) -> Result<&'a Deployment, ApiError> {
    let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
    if !can_read_project(reg, p.user_id, d.spec.project_id) {
        return Err(forbidden(format!(
            "{what} {id} needs a role in its project"
        )));
    }
    Ok(d)
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why; required for `:stop`, `:pause` and `:resume`.
    #[serde(default)]
    reason: Option<String>,
    /// For `:reproduce`: the first run, a position or an RFC 3339 time (included).
    #[serde(default)]
    from: Option<String>,
    /// For `:reproduce`: the last run, a position or an RFC 3339 time (included).
    #[serde(default)]
    to: Option<String>,
}

/// `POST /api/v1/deployments/{deployment_id}:stop`, `:pause` (a Healthy deployment answers
/// 503 until resumed), `:resume` (editors, with a reason); `:purge`
/// (admins): apply the retention policy now; `:reproduce` (project readers): reproduce every
/// run recorded between `from` and `to` and answer the counts and every exception.
#[utoipa::path(post, path = "/api/v1/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = String, Path, description = "`<deployment id>:stop`, `:pause`, `:resume`, `:purge` or `:reproduce`")), request_body = ActionBody, responses((status = 200, body = Written, description = "`:stop`, `:pause`, `:resume` and `:purge`; `:reproduce` answers the range report"), (status = 409, description = "`conflict`: not a move from the deployment's state")))]
pub async fn action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
    ApiJson(b): ApiJson<ActionBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, verb) = uuid_action(
        &target,
        "<deployment id>",
        &["stop", "pause", "resume", "purge", "reproduce"],
    )?;
    let written = match verb {
        "pause" | "resume" => {
            let reason = b.reason.unwrap_or_default();
            s.pause(p.user_id, id, verb == "pause", &reason).await?
        }
        "stop" => {
            let reason = b.reason.unwrap_or_default();
            let written = s
                .transition(Some(p.user_id), id, DeploymentState::Stopped, &reason)
                .await?;
            s.serving.remove(&id);
            written
        }
        "purge" => {
            if !p.admin {
                return Err(forbidden(
                    "applying a retention policy needs the admin role".into(),
                ));
            }
            s.purge(id, &p.user_id.to_string(), chrono::Utc::now())
                .await?
        }
        // "reproduce"
        _ => {
            let project = s
                .registry
                .read()
                .deployments
                .get(&id)
                .map(|d| d.spec.project_id);
            let readable = project.is_some_and(|pid| {
                crate::domain::can_read_project(&s.registry.read(), p.user_id, pid)
            });
            if !readable {
                return Err(ApiError::not_found(
                    "deployment_not_found",
                    format!("no deployment {id} you may read"),
                ));
            }
            let bound = |b: Option<String>| {
                Until::bound(b.as_deref()).map_err(|e| ApiError::bad_request("invalid_body", e))
            };
            let report = s
                .reproduce_range(id, bound(b.from)?, bound(b.to)?, &|_, _| {})
                .await?;
            return Ok(Json(serde_json::to_value(report).unwrap_or_default()));
        }
    };
    Ok(Json(serde_json::to_value(written).unwrap_or_default()))
}

/// The ONNX Runtime session a deployment's model runs with, from its runtime image.
pub(crate) fn session_settings(spec: &DeploymentSpec) -> SessionSettings {
    SessionSettings {
        intra_op_threads: spec.runtime.intra_op_threads as usize,
        inter_op_threads: spec.runtime.inter_op_threads as usize,
        execution_mode: spec.runtime.execution_mode.clone(),
        graph_optimization: spec.runtime.graph_optimization.clone(),
    }
}
