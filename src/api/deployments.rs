//! Deployments over REST, and the loading that moves them Preparing → Launching → Healthy
//! (or Failed, with the reason), each step an event.

use std::collections::{BTreeMap, HashMap};
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
use super::command::Written;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, uuid_action};
use crate::blobs::BlobStore;
use crate::domain::deployment::{
    Deploy, Deployment, DeploymentSpec, DeploymentState, Mode, PRIMARY, Placement, Retention,
    Security, UpdateOutcome, Variant, VariantRequest, Variants, decide_deploy, decide_transition,
    primary,
};
use crate::domain::event::{PredictionDataPurged, ProjectRole, RegistryEvent};
use crate::domain::lifecycle::{
    Change, Promote, decide_delete, decide_promote, decide_update, decide_update_end,
};
use crate::domain::schema::Column;
use crate::domain::{Kind, Registry, can_read_project};
use crate::log::ExpectedVersion;
use crate::log::envelope::Digest;
use crate::projections::replay::Until;
use crate::runtime::cells::Cells;
use crate::runtime::onnx::Onnx;
use crate::runtime::scorer::{Model, SessionSettings};

/// What scoring one variant of a deployment needs: its spec, model and run slots.
pub struct Scoring {
    pub deployment_id: Uuid,
    /// The variant it scores for, and whether that is a challenger (its runs are shadows).
    pub variant: String,
    pub shadow: bool,
    pub spec: DeploymentSpec,
    pub model: Arc<Model>,
    /// Bounds concurrent session runs (SCORING_CONCURRENCY).
    pub slots: tokio::sync::Semaphore,
    /// Requests on the batching path that are not answered yet: a worker waits for company
    /// only while some of them are not in its batch.
    pub waiting: std::sync::atomic::AtomicUsize,
}

/// A variant as served: its scoring, and the batching workers' queue when it batches. The
/// workers hold the scoring but not the queue's sender, so dropping this stops them once
/// they have answered what was queued.
pub struct Arm {
    pub scoring: Arc<Scoring>,
    pub queue: Option<tokio::sync::mpsc::Sender<super::scoring::Job>>,
    pub weight: u32,
}

/// A challenger as served, with what became of the copies of rows it was given.
pub struct Shadow {
    pub arm: Arm,
    /// Bounds the copies in flight: when the challenger falls behind, copies are dropped
    /// (and counted) rather than queued without end.
    pub inflight: Arc<tokio::sync::Semaphore>,
    pub scored: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

/// Copies of rows one challenger may score at once before more are dropped.
const SHADOW_INFLIGHT: usize = 64;

/// A Healthy deployment's configuration as served: the answering variants in name order
/// (the A/B draw's intervals) and the challengers.
pub struct Loaded {
    pub mode: Mode,
    pub arms: Vec<Arm>,
    pub shadows: Vec<Shadow>,
    /// blake3 of passphrases already verified against the argon2 hash, so each is checked
    /// slowly once per process.
    pub accepted: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Paused: loaded, answering 503 until resumed. Kept here so scoring checks it without
    /// the registry's lock.
    pub paused: std::sync::atomic::AtomicBool,
}

impl Loaded {
    /// The variant that answers `request_id`, and its A/B draw when there are several.
    pub fn route(&self, request_id: Uuid) -> (&Arm, Option<u64>) {
        if self.arms.len() < 2 {
            return (&self.arms[0], None);
        }
        let total = self.arms.iter().map(|a| u64::from(a.weight)).sum();
        let draw = crate::domain::routing::draw(request_id, total);
        let i = crate::domain::routing::chosen(self.arms.iter().map(|a| a.weight), draw);
        (&self.arms[i.unwrap_or(0)], Some(draw))
    }
}

/// The primary variant's scoring: the one that stands for the deployment (its schema, its
/// sample request, batch jobs).
impl std::ops::Deref for Loaded {
    type Target = Scoring;
    fn deref(&self) -> &Scoring {
        &self.arms[0].scoring
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

    fn insert(&self, id: Uuid, loaded: Loaded) {
        self.deployments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(loaded));
    }

    /// Puts `loaded` in the place of the deployment's configuration, if it is still served;
    /// requests holding the old one finish on it. Answers whether it did.
    fn replace(&self, id: Uuid, loaded: Loaded) -> bool {
        let mut map = self.deployments.write().unwrap_or_else(|p| p.into_inner());
        let Some(old) = map.get(&id) else {
            return false;
        };
        loaded
            .paused
            .store(old.paused.load(Ordering::Relaxed), Ordering::Relaxed);
        let accepted = old
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *loaded.accepted.lock().unwrap_or_else(|p| p.into_inner()) = accepted;
        map.insert(id, Arc::new(loaded));
        true
    }

    fn remove(&self, id: &Uuid) {
        self.deployments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The model of these parts (everything that shapes it), shared with the live deployments
    /// and recent reproductions that loaded the same; loaded from the blob store otherwise.
    /// The model a deployment's `spec` runs.
    pub fn model_of(
        &self,
        onnx: &'static Onnx,
        blobs: &BlobStore,
        spec: &DeploymentSpec,
    ) -> Result<Arc<Model>, String> {
        self.model(
            onnx,
            blobs,
            &spec.model_blob,
            &spec.input_schema,
            spec.target_column.as_deref(),
            session_settings(spec),
        )
    }

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

    /// Launching, then Healthy once every variant is loaded and warmed, or Failed with the
    /// reason.
    pub async fn launch(&self, id: Uuid, reason: &str) -> Result<Written, ApiError> {
        self.transition(None, id, DeploymentState::Launching, reason)
            .await?;
        let (mode, variants) = self
            .registry
            .read()
            .deployments
            .get(&id)
            .map(|d| (d.mode, d.variants.clone()))
            .ok_or_else(|| not_found(id))?;
        match self.load(id, mode, &variants).await {
            Ok(loaded) => {
                self.serving.insert(id, loaded);
                self.transition(None, id, DeploymentState::Healthy, "model loaded")
                    .await
            }
            Err(reason) => {
                self.transition(None, id, DeploymentState::Failed, &reason)
                    .await
            }
        }
    }

    /// Starts the batching workers a variant's settings ask for (none: the direct path).
    fn start_workers(&self, scoring: Scoring, weight: u32) -> Arm {
        let scoring = Arc::new(scoring);
        let workers = scoring.spec.settings.batch_workers;
        if workers == 0 {
            return Arm {
                scoring,
                queue: None,
                weight,
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
        Arm {
            scoring,
            queue: Some(tx),
            weight,
        }
    }

    /// Loads and warms every variant of a configuration (models already loaded are shared),
    /// with their workers; the reason when one does not load or does not score its sample
    /// request.
    async fn load(&self, id: Uuid, mode: Mode, variants: &Variants) -> Result<Loaded, String> {
        let mut loaded = Loaded {
            mode,
            arms: Vec::new(),
            shadows: Vec::new(),
            accepted: Default::default(),
            paused: Default::default(),
        };
        for (name, v) in variants {
            let scoring =
                self.load_variant(id, name, v)
                    .await
                    .map_err(|e| match variants.len() {
                        1 => e,
                        _ => format!("variant {name}: {e}"),
                    })?;
            let arm = self.start_workers(scoring, v.weight);
            if v.shadow {
                loaded.shadows.push(Shadow {
                    arm,
                    inflight: Arc::new(tokio::sync::Semaphore::new(SHADOW_INFLIGHT)),
                    scored: Default::default(),
                    failed: Default::default(),
                    dropped: Default::default(),
                });
            } else {
                loaded.arms.push(arm);
            }
        }
        if loaded.arms.is_empty() {
            return Err("no variant answers requests".into());
        }
        Ok(loaded)
    }

    async fn load_variant(&self, id: Uuid, name: &str, v: &Variant) -> Result<Scoring, String> {
        let spec = v.spec.clone();
        let (blobs, onnx) = (self.blobs.clone(), self.onnx);
        if spec.runtime.onnxruntime_version != onnx.version {
            return Err(format!(
                "the runtime image version pins ONNX Runtime {}, this server runs {}",
                spec.runtime.onnxruntime_version, onnx.version
            ));
        }
        let serving = self.serving.clone();
        let (variant, shadow) = (name.to_string(), v.shadow);
        tokio::task::spawn_blocking(move || {
            let model = serving.model_of(onnx, &blobs, &spec)?;
            // Warm-up: the sample request the scorer offers must score before traffic comes.
            let sample = Cells::from_rows(
                model.schema().len(),
                [super::scoring::sample_row(model.schema())],
            )
            .ok_or_else(|| "the sample request does not fit the schema".to_string())?;
            model
                .score(&sample)
                .map_err(|e| format!("the sample request does not score: {e}"))?;
            let slots =
                tokio::sync::Semaphore::new(spec.settings.scoring_concurrency.max(1) as usize);
            Ok(Scoring {
                deployment_id: id,
                variant,
                shadow,
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
        let digests: Vec<Digest> = blobs.iter().filter_map(|h| Digest::from_hex(h)).collect();
        // The blobs the ledger holds go in the purge event's own transaction; files after it.
        let appended = self
            .ledger
            .append_with_blobs(
                &crate::domain::deployment::stream(id),
                ExpectedVersion::Any,
                vec![new],
                crate::log::BlobChanges {
                    put: Vec::new(),
                    delete: digests.clone(),
                },
            )
            .await?;
        let size = appended.events.last().map_or(0, |e| e.position + 1);
        self.registry.wait_for(size).await?;
        for d in &digests {
            self.blobs.remove(d).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "blob_store_failed",
                    e.to_string(),
                )
            })?;
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
    /// Paused one stays paused (no event), or fails if it no longer loads. An update the
    /// stop interrupted ends RolledBack first: the configuration before it loads.
    pub async fn relaunch(&self) -> Result<usize, ApiError> {
        let interrupted: Vec<(Uuid, Uuid)> = self
            .registry
            .read()
            .deployments
            .values()
            .filter_map(|d| d.pending_update().map(|u| (d.deployment_id, u.update_id)))
            .collect();
        for (id, update_id) in interrupted {
            self.end_update(
                id,
                update_id,
                UpdateOutcome::RolledBack,
                "the server stopped before the update was applied",
            )
            .await?;
        }
        let serving: Vec<(Uuid, DeploymentState, Mode, Variants)> = self
            .registry
            .read()
            .deployments
            .values()
            .filter(|d| matches!(d.state, DeploymentState::Healthy | DeploymentState::Paused))
            .map(|d| (d.deployment_id, d.state, d.mode, d.variants.clone()))
            .collect();
        for (id, state, mode, variants) in &serving {
            if *state == DeploymentState::Healthy {
                self.launch(*id, "server restart").await?;
                continue;
            }
            match self.load(*id, *mode, variants).await {
                Ok(loaded) => {
                    loaded.paused.store(true, Ordering::Relaxed);
                    self.serving.insert(*id, loaded);
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
        let config = self
            .registry
            .read()
            .deployments
            .get(&id)
            .filter(|d| d.state == DeploymentState::Healthy)
            .map(|d| (d.mode, d.variants.clone()));
        if let Some((mode, variants)) = config {
            let loaded = self
                .load(id, mode, &variants)
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "load_failed", e))?;
            self.serving.insert(id, loaded);
        }
        Ok(())
    }

    /// Updates a serving deployment in place: records the update, loads and warms the new
    /// configuration beside the old one, and only then records it Applied and switches the
    /// traffic; requests already on the old configuration finish there. When it does not load,
    /// the old one keeps serving and the update ends RolledBack, with the reason.
    pub async fn update(
        &self,
        actor: Uuid,
        id: Uuid,
        change: Change,
        reason: String,
    ) -> Result<Written, ApiError> {
        let update_id = Uuid::now_v7();
        let mut written = self
            .run(
                actor,
                |r| decide_update(r, actor, id, update_id, change, reason),
                |_| None::<()>,
            )
            .await?;
        let (mode, variants) = self
            .registry
            .read()
            .deployments
            .get(&id)
            .and_then(|d| d.pending_update().map(|u| (u.mode, u.variants.clone())))
            .ok_or_else(|| not_found(id))?;
        let ended = match self.load(id, mode, &variants).await {
            Ok(loaded) => {
                let ended = self
                    .end_update(
                        id,
                        update_id,
                        UpdateOutcome::Applied,
                        "loaded and warmed with the sample request; traffic switched",
                    )
                    .await?;
                // A deployment stopped meanwhile is not brought back.
                self.serving.replace(id, loaded);
                ended
            }
            Err(reason) => {
                self.end_update(id, update_id, UpdateOutcome::RolledBack, &reason)
                    .await?
            }
        };
        written.events.extend(ended.events);
        written.checkpoint_size = ended.checkpoint_size;
        written.data = ended.data;
        Ok(written)
    }

    /// Records the end of an update as `system:scorer`.
    async fn end_update(
        &self,
        id: Uuid,
        update_id: Uuid,
        outcome: UpdateOutcome,
        detail: &str,
    ) -> Result<Written, ApiError> {
        self.run_as(
            "system:scorer",
            |r| decide_update_end(r, id, update_id, outcome, detail.to_string()),
            |r| r.deployments.get(&id).map(view),
        )
        .await
    }

    /// Promotes a deployment into another environment and launches the copy; answers once it
    /// is Healthy or Failed.
    pub async fn promote(&self, actor: Uuid, request: Promote) -> Result<Written, ApiError> {
        let id = request.deployment_id;
        let created = self
            .run(actor, |r| decide_promote(r, actor, request), |_| None::<()>)
            .await?;
        self.launched(created, id).await
    }

    /// `created` (a deployment's creation), launched.
    async fn launched(&self, mut created: Written, id: Uuid) -> Result<Written, ApiError> {
        let launched = self.launch(id, "deployed").await?;
        created.events.extend(launched.events);
        created.checkpoint_size = launched.checkpoint_size;
        created.data = launched.data;
        Ok(created)
    }

    /// Deletes a deployment (stopping it first if it serves).
    async fn delete(&self, actor: Uuid, id: Uuid, reason: String) -> Result<Written, ApiError> {
        let written = self
            .run(
                actor,
                |r| decide_delete(r, actor, id, reason),
                |r| r.deployments.get(&id).map(view),
            )
            .await?;
        self.serving.remove(&id);
        Ok(written)
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
    /// One model (single mode): its id and version. Leave out with `variants`.
    #[serde(default)]
    pub model_id: Option<Uuid>,
    #[serde(default)]
    pub version: Option<u32>,
    /// A runtime serving the model type (default: the most permissive one that does).
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// A version of the runtime's image (default: its newest that is not DISABLED).
    #[serde(default)]
    pub image_version: Option<String>,
    /// `single` (the default), `ab` or `champion_challenger`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The variants by name (lowercase), for `ab` and `champion_challenger`.
    #[serde(default)]
    pub variants: Option<BTreeMap<String, VariantBody>>,
    /// An environment of this installation (`GET /api/v1/environments`): DEV, PROD, ...
    pub environment: String,
    /// Default: Provenant tokens of project viewers and up.
    #[serde(default)]
    pub security: Option<SecurityRequest>,
    /// `{"mode": "full", "days": N}` (default 183) or `{"mode": "hashes"}`.
    #[serde(default)]
    pub retention: Option<Retention>,
}

impl NewDeployment {
    /// One model version to `environment`, every other choice at its default.
    pub fn single(model_id: Uuid, version: u32, environment: &str) -> NewDeployment {
        NewDeployment {
            model_id: Some(model_id),
            version: Some(version),
            runtime_id: None,
            image_version: None,
            mode: None,
            variants: None,
            environment: environment.into(),
            security: None,
            retention: None,
        }
    }
}

/// One variant: a model version, its share of the traffic, or a challenger in the shadow.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    pub model_id: Uuid,
    pub version: u32,
    #[serde(default)]
    pub runtime_id: Option<String>,
    #[serde(default)]
    pub image_version: Option<String>,
    /// The A/B weight (default 1); a challenger's is 0.
    #[serde(default)]
    pub weight: Option<u32>,
    /// A challenger: scores a copy of every request's rows; recorded, never returned.
    #[serde(default)]
    pub shadow: bool,
}

impl VariantBody {
    fn request(self) -> VariantRequest {
        VariantRequest {
            model_id: self.model_id,
            version: self.version,
            runtime_id: self.runtime_id,
            image_version: self.image_version,
            weight: self.weight.unwrap_or(u32::from(!self.shadow)),
            shadow: self.shadow,
        }
    }
}

/// The variants a request names: the one model of `model_id` and `version` (named
/// `primary`), or `variants`; not both.
fn variant_requests(
    single: Option<(Uuid, u32)>,
    runtime_id: Option<String>,
    image_version: Option<String>,
    variants: Option<BTreeMap<String, VariantBody>>,
) -> Result<BTreeMap<String, VariantRequest>, ApiError> {
    let invalid = |d: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", d);
    match (single, variants) {
        (Some((model_id, version)), None) => Ok(BTreeMap::from([(
            PRIMARY.to_string(),
            VariantRequest {
                model_id,
                version,
                runtime_id,
                image_version,
                weight: 1,
                shadow: false,
            },
        )])),
        (None, Some(v)) if runtime_id.is_none() && image_version.is_none() => {
            Ok(v.into_iter().map(|(k, b)| (k, b.request())).collect())
        }
        (None, Some(_)) => Err(invalid(
            "runtime_id and image_version go inside each variant when variants are given",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "give model_id and version for one model, or variants; not both",
        )),
        (None, None) => Err(invalid(
            "model_id and version (one model), or variants, are required",
        )),
    }
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
    /// Deploys model versions as `actor` and launches them; answers once the deployment is
    /// Healthy or Failed.
    pub async fn deploy(&self, actor: Uuid, request: NewDeployment) -> Result<Written, ApiError> {
        let NewDeployment {
            model_id,
            version,
            runtime_id,
            image_version,
            mode,
            variants,
            environment,
            security,
            retention,
        } = request;
        let single = match (model_id, version) {
            (Some(m), Some(v)) => Some((m, v)),
            (None, None) => None,
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "model_id and version go together",
                ));
            }
        };
        let variants = variant_requests(single, runtime_id, image_version, variants)?;
        let security = security.map_or(
            Ok(Security::Token {
                role: ProjectRole::Viewer,
            }),
            SecurityRequest::into_security,
        )?;
        let id = Uuid::now_v7();
        let request = Deploy {
            deployment_id: id,
            placement: Placement {
                environment,
                security,
                retention: retention.unwrap_or_default(),
            },
            mode: mode.unwrap_or(Mode::Single),
            variants,
        };
        let created = self
            .run(actor, |r| decide_deploy(r, actor, request), |_| None::<()>)
            .await?;
        self.launched(created, id).await
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

/// The deployments the caller may read (deleted ones are found by id only).
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", responses((status = 200, description = "deployments")))]
pub async fn list(State(s): State<AppState>, p: Principal) -> Json<Vec<Value>> {
    let reg = s.registry.read();
    Json(
        reg.deployments
            .values()
            .filter(|d| d.deleted.is_none() && can_read_project(&reg, p.user_id, d.spec.project_id))
            .map(view)
            .collect(),
    )
}

/// The deployment, with `live` (when this process serves it): whether it is paused and what
/// became of each challenger's copies of rows since it was loaded (scored, failed, dropped).
#[utoipa::path(get, path = "/api/v1/deployments/{deployment_id}", tag = "deployments", responses((status = 200, description = "the deployment")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let mut v = {
        let reg = s.registry.read();
        view(readable(&reg, &p, id, "reading deployment")?)
    };
    if let Some(l) = s.serving.get(&id) {
        v["live"] = live(&l);
    }
    Ok(Json(v))
}

/// What this process sees of a served deployment that the ledger does not hold: what became
/// of the challengers' copies since the configuration was loaded.
fn live(l: &Loaded) -> Value {
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let shadows: serde_json::Map<String, Value> = l
        .shadows
        .iter()
        .map(|sh| {
            (
                sh.arm.scoring.variant.clone(),
                json!({"scored": count(&sh.scored), "failed": count(&sh.failed), "dropped": count(&sh.dropped)}),
            )
        })
        .collect();
    json!({"paused": l.paused.load(Ordering::Relaxed), "shadows": shadows})
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

/// The body of a deployment action; each action takes the fields its line names.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why; required for every action but `:purge` and `:reproduce`.
    #[serde(default)]
    reason: Option<String>,
    /// `:reproduce`: the first run, a position or an RFC 3339 time (included).
    #[serde(default)]
    from: Option<String>,
    /// `:reproduce`: the last run, a position or an RFC 3339 time (included).
    #[serde(default)]
    to: Option<String>,
    /// `:update`: another model version for `variant` (by default the primary one).
    #[serde(default)]
    model_id: Option<Uuid>,
    #[serde(default)]
    version: Option<u32>,
    /// `:update`: another runtime for `variant`.
    #[serde(default)]
    runtime_id: Option<String>,
    /// `:update` and `:upgrade`: the runtime image version to move to.
    #[serde(default)]
    image_version: Option<String>,
    /// `:update`: the variant `model_id`, `version`, `runtime_id` and `image_version` change.
    #[serde(default)]
    variant: Option<String>,
    /// `:update`: the whole configuration to serve next, instead of one variant's change.
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    variants: Option<BTreeMap<String, VariantBody>>,
    /// `:rollback`: a ledger position; the configuration in effect there is restored.
    #[serde(default)]
    position: Option<u64>,
    /// `:promote`: the environment to promote into.
    #[serde(default)]
    environment: Option<String>,
    /// `:promote`: the copy's security (default: the same).
    #[serde(default)]
    security: Option<SecurityRequest>,
    /// `:promote`: the copy's retention (default: the same).
    #[serde(default)]
    retention: Option<Retention>,
}

/// The fields of `ActionBody` each action reads; others are refused.
fn action_fields(verb: &str) -> &'static [&'static str] {
    match verb {
        "stop" | "pause" | "resume" | "purge" => &["reason"],
        "reproduce" => &["from", "to"],
        "update" => &[
            "reason",
            "model_id",
            "version",
            "runtime_id",
            "image_version",
            "variant",
            "mode",
            "variants",
        ],
        "rollback" => &["reason", "position"],
        "upgrade" => &["reason", "image_version"],
        // "promote"
        _ => &["reason", "environment", "security", "retention"],
    }
}

/// `POST /api/v1/deployments/{deployment_id}:stop`, `:pause` (a Healthy deployment answers
/// 503 until resumed), `:resume`; `:update` in place (another model version or runtime image
/// version of one variant, or a whole new configuration: mode, variants, weights), `:rollback`
/// to the configuration in effect at a position, `:upgrade` onto a newer runtime image
/// version, `:promote` into another environment (a new deployment); all with a reason, by
/// whom the environment's rule allows. `:purge` (admins): apply the retention policy now;
/// `:reproduce` (project readers): reproduce every run recorded between `from` and `to`.
#[utoipa::path(post, path = "/api/v1/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = String, Path, description = "`<deployment id>:stop`, `:pause`, `:resume`, `:update`, `:rollback`, `:upgrade`, `:promote`, `:purge` or `:reproduce`")), request_body = ActionBody, responses((status = 200, body = Written, description = "the deployment after the action (`:update`, `:rollback` and `:upgrade`: with `update.outcome` Applied or RolledBack); `:reproduce` answers the range report"), (status = 201, body = Written, description = "`:promote`: the new deployment"), (status = 409, description = "`conflict`: not a move from the deployment's state")))]
pub async fn action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
    ApiJson(raw): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (id, verb) = uuid_action(
        &target,
        "<deployment id>",
        &[
            "stop",
            "pause",
            "resume",
            "update",
            "rollback",
            "upgrade",
            "promote",
            "purge",
            "reproduce",
        ],
    )?;
    let b: ActionBody = body_of(raw, action_fields(verb), verb)?;
    let reason = b.reason.clone().unwrap_or_default();
    let written = match verb {
        "pause" | "resume" => s.pause(p.user_id, id, verb == "pause", &reason).await?,
        "stop" => {
            let written = s
                .transition(Some(p.user_id), id, DeploymentState::Stopped, &reason)
                .await?;
            s.serving.remove(&id);
            written
        }
        "update" => {
            let change = change_of(&s.registry.read(), id, b)?;
            s.update(p.user_id, id, change, reason).await?
        }
        "rollback" => {
            let position = required(
                b.position,
                "position: the ledger position whose configuration to restore",
            )?;
            s.update(p.user_id, id, Change::Rollback { position }, reason)
                .await?
        }
        "upgrade" => {
            let change = Change::RuntimeUpgrade {
                image_version: b.image_version,
            };
            s.update(p.user_id, id, change, reason).await?
        }
        "promote" => {
            let environment = required(
                b.environment,
                "environment: the environment to promote into",
            )?;
            let request = Promote {
                deployment_id: Uuid::now_v7(),
                from: id,
                environment,
                security: b.security.map(SecurityRequest::into_security).transpose()?,
                retention: b.retention,
                reason,
            };
            let written = s.promote(p.user_id, request).await?;
            return Ok((
                StatusCode::CREATED,
                Json(serde_json::to_value(written).unwrap_or_default()),
            ));
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
            return Ok((
                StatusCode::OK,
                Json(serde_json::to_value(report).unwrap_or_default()),
            ));
        }
    };
    Ok((
        StatusCode::OK,
        Json(serde_json::to_value(written).unwrap_or_default()),
    ))
}

/// A field an action cannot go without; `what` names it.
fn required<T>(value: Option<T>, what: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{what} is required"),
        )
    })
}

/// An action's body: only the fields the action reads.
fn body_of<T: serde::de::DeserializeOwned>(
    raw: Value,
    allowed: &[&str],
    verb: &str,
) -> Result<T, ApiError> {
    let invalid = |d: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", d);
    let Value::Object(map) = &raw else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "{k:?} does not apply to :{verb}, which takes {allowed:?}"
        )));
    }
    serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))
}

/// What an `:update` body changes: the whole configuration (`variants`, or `mode` alone for
/// today's variants), or one variant's model version, runtime or image version.
fn change_of(reg: &Registry, id: Uuid, b: ActionBody) -> Result<Change, ApiError> {
    let d = reg.deployments.get(&id).ok_or_else(|| not_found(id))?;
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", m);
    let one = b.model_id.is_some()
        || b.version.is_some()
        || b.runtime_id.is_some()
        || b.image_version.is_some()
        || b.variant.is_some();
    let mut requests: BTreeMap<String, VariantRequest> = d
        .variants
        .iter()
        .map(|(k, v)| (k.clone(), VariantRequest::of(v)))
        .collect();
    match (b.variants, one) {
        (Some(_), true) => {
            return Err(invalid(
                "give variants for a whole configuration, or one variant's change; not both".into(),
            ));
        }
        (Some(v), false) => {
            requests = v.into_iter().map(|(k, b)| (k, b.request())).collect();
        }
        (None, true) => {
            let name = match b.variant {
                Some(n) => n,
                None => primary(&d.variants)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| PRIMARY.into()),
            };
            let r = requests.get_mut(&name).ok_or_else(|| {
                invalid(format!("variant: deployment {id} has no variant {name:?}"))
            })?;
            let runtime_changed = b
                .runtime_id
                .as_ref()
                .is_some_and(|w| Some(w) != r.runtime_id.as_ref());
            if let Some(m) = b.model_id {
                r.model_id = m;
            }
            if let Some(v) = b.version {
                r.version = v;
            }
            if let Some(rt) = b.runtime_id {
                r.runtime_id = Some(rt);
            }
            // Another runtime starts on its own newest image version unless one is named.
            if runtime_changed || b.image_version.is_some() {
                r.image_version = b.image_version;
            }
        }
        (None, false) if b.mode.is_none() => {
            return Err(invalid(
                "say what to change: model_id, version, runtime_id or image_version (of variant), or mode and variants".into(),
            ));
        }
        (None, false) => {}
    }
    Ok(Change::Variants {
        mode: b.mode.unwrap_or(d.mode),
        variants: requests,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// Why the deployment is deleted.
    #[serde(default)]
    reason: String,
}

/// Deletes a deployment for good (stopping it first if it serves), with a reason, by whom its
/// environment's rule allows; not while an endpoint points at it. Its record stays: `GET` by
/// id still answers it, marked deleted.
#[utoipa::path(delete, path = "/api/v1/deployments/{deployment_id}", tag = "deployments", request_body = DeleteBody, responses((status = 200, body = Written), (status = 409, description = "`conflict`: an endpoint points at it, an update is loading, or it was deleted already")))]
pub async fn delete(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<DeleteBody>,
) -> Result<Json<Written>, ApiError> {
    Ok(Json(s.delete(p.user_id, id, b.reason).await?))
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
