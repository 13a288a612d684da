//! Deployments: registered model versions deployed to an environment, each as a variant on a
//! runtime resolved from the artifact's model type and the runtime catalog — one model, an
//! A/B split, or a champion with challengers in the shadow. Everything a prediction depends
//! on — the model blob, the schema, the runtime image version with its ONNX Runtime version,
//! provider and thread settings, the scorer settings — is fixed in the `DeploymentCreated`
//! event, and in each update in place after it (`lifecycle`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::*;
use super::runtime::{
    DeployRole, Environment, ImageVersionSpec, RuntimeState, ScorerSettings, version_key,
};
use super::schema::{Column, stored_schema};
use super::state::{Deletion, ModelVersion, RegisteredModel, Registry, Stamp};
use super::{Decision, DomainError, Kind, may};
use crate::log::ExpectedVersion;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum DeploymentState {
    Preparing,
    Launching,
    Healthy,
    /// Loaded but refusing to score (503) until resumed.
    Paused,
    Failed,
    Stopped,
}

/// Who may score a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Security {
    /// Anyone who can reach the scorer.
    None,
    /// A shared passphrase sent as a bearer token; only its argon2 hash (PHC string) is kept.
    Passphrase { hash: String },
    /// Provenant API tokens of users with at least `role` in the project (admins too).
    Token { role: ProjectRole },
}

/// What is kept of each scored run besides its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Retention {
    /// Input and output blobs kept for `days` (at least 183 by default: the EU AI Act's six
    /// months for deployers' logs), then purged by policy, each purge an event.
    Full { days: u32 },
    /// Only the hashes, in the ledger; the blobs are never stored.
    Hashes,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::Full { days: 183 }
    }
}

/// What scoring needs, fixed when the deployment was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct DeploymentSpec {
    pub project_id: Uuid,
    pub model_id: Uuid,
    pub version: u32,
    pub experiment_id: Uuid,
    pub artifact_id: Uuid,
    /// blake3 of the ONNX model the scorer runs.
    pub model_blob: String,
    pub model_type: String,
    pub environment: String,
    pub security: Security,
    #[serde(default)]
    pub retention: Retention,
    pub runtime_id: String,
    pub image_id: String,
    pub image_version: String,
    pub runtime: ImageVersionSpec,
    pub settings: ScorerSettings,
    pub input_schema: Vec<Column>,
    pub output_schema: Vec<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_column: Option<String>,
    /// DEPRECATED catalog entities it was deployed on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Transition {
    pub from: Option<DeploymentState>,
    pub to: DeploymentState,
    pub reason: String,
    pub changed: Stamp,
}

/// How a deployment's traffic is served.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One model answers every request.
    Single,
    /// Each request is drawn to one of several variants by weight (an A/B test).
    Ab,
    /// The champion answers; each challenger scores the same rows in the shadow.
    ChampionChallenger,
}

/// One model a deployment serves, under a name unique in the deployment. Every variant's
/// spec carries the deployment's own project, environment, security and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Its share of the requests: an A/B weight; 1 for a single model or a champion; 0 for a
    /// challenger.
    pub weight: u32,
    /// A challenger: scores a copy of the champion's rows; recorded, never returned.
    pub shadow: bool,
    pub spec: DeploymentSpec,
}

/// A deployment's variants by name; name order is the order of the A/B draw's intervals.
pub type Variants = BTreeMap<String, Variant>;

/// The name a single model's variant has (and every deployment's from before variants).
pub const PRIMARY: &str = "primary";

/// The variant whose spec stands for the deployment: the one answering (a single model, the
/// champion), or the first answering A/B variant by name.
pub fn primary(variants: &Variants) -> Option<(&String, &Variant)> {
    variants.iter().find(|(_, v)| !v.shadow)
}

/// A configuration the deployment served, from the event at `position` on.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Revision {
    pub position: u64,
    pub mode: Mode,
    pub variants: Variants,
}

/// Why a deployment's configuration changed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// Other model versions, weights, mode or runtime image versions, as asked.
    Update,
    /// Back to the configuration in effect at an earlier position.
    Rollback,
    /// Each variant to a newer image version of its runtime's image.
    RuntimeUpgrade,
}

/// How an update in place ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum UpdateOutcome {
    /// The new configuration loaded, warmed and took the traffic.
    Applied,
    /// It did not load or warm; the deployment kept serving its configuration before.
    RolledBack,
}

/// An update in place: asked for, then (once the scorer is done) ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Update {
    pub update_id: Uuid,
    pub kind: UpdateKind,
    pub mode: Mode,
    pub variants: Variants,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<u64>,
    pub reason: String,
    pub started: Stamp,
    /// None while the scorer is loading it.
    pub outcome: Option<UpdateOutcome>,
    pub detail: Option<String>,
    pub ended: Option<Stamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deployment {
    pub deployment_id: Uuid,
    /// The primary variant's spec (see `primary`); the deployment-level fields (project,
    /// environment, security, retention) are every variant's.
    pub spec: DeploymentSpec,
    pub mode: Mode,
    pub variants: Variants,
    pub state: DeploymentState,
    pub history: Vec<Transition>,
    pub created: Stamp,
    /// The deployment this one was promoted from, in another environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<Uuid>,
    /// Every configuration it served, oldest first; the last is the current one.
    pub revisions: Vec<Revision>,
    /// The update in progress, or the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// Runs before this position have had their blobs purged under the retention policy.
    pub purged_before: u64,
    /// What to alert on, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_policy: Option<super::alert::AlertPolicy>,
    /// How its drift is judged, if not by the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_thresholds: Option<super::reference::DriftThresholds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deletion>,
}

impl Deployment {
    /// The update the scorer has not ended yet.
    pub fn pending_update(&self) -> Option<&Update> {
        self.update.as_ref().filter(|u| u.outcome.is_none())
    }

    /// The spec a recorded run was scored with: the variant of that name in the newest
    /// configuration that ran the same model blob, version and image version.
    pub fn spec_of_run(&self, run: &InferenceRunRecorded) -> Option<&DeploymentSpec> {
        self.revisions
            .iter()
            .rev()
            .filter_map(|r| r.variants.get(&run.variant))
            .map(|v| &v.spec)
            .find(|s| {
                s.model_blob == run.model_blob
                    && s.version == run.version
                    && s.image_version == run.image_version
            })
    }
}

pub fn stream(deployment_id: Uuid) -> String {
    stream_of("deployment", deployment_id)
}

/// What a variant asks for: a model version, and optionally the runtime serving it and the
/// runtime image version (by default the most permissive runtime serving the model type, on
/// its newest image version that is not DISABLED).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantRequest {
    pub model_id: Uuid,
    pub version: u32,
    pub runtime_id: Option<String>,
    pub image_version: Option<String>,
    pub weight: u32,
    pub shadow: bool,
}

impl VariantRequest {
    /// The request that `variant` answers as it is.
    pub fn of(variant: &Variant) -> VariantRequest {
        VariantRequest {
            model_id: variant.spec.model_id,
            version: variant.spec.version,
            runtime_id: Some(variant.spec.runtime_id.clone()),
            image_version: Some(variant.spec.image_version.clone()),
            weight: variant.weight,
            shadow: variant.shadow,
        }
    }
}

/// The deployment-level part of every variant's spec.
#[derive(Debug, Clone)]
pub struct Placement {
    pub environment: String,
    pub security: Security,
    pub retention: Retention,
}

/// A request to deploy model versions.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub deployment_id: Uuid,
    pub placement: Placement,
    pub mode: Mode,
    pub variants: BTreeMap<String, VariantRequest>,
}

/// The most variants one deployment serves.
pub const MAX_VARIANTS: usize = 8;

/// Deploys live model versions: editors of their project, or whom the environment's rule
/// names.
pub fn decide_deploy(
    state: &Registry,
    actor: Uuid,
    request: Deploy,
) -> Result<Decision, DomainError> {
    let Deploy {
        deployment_id,
        placement,
        mode,
        variants,
    } = request;
    let environment = configured_environment(state, &placement.environment)?;
    let variants = resolve_variants(state, actor, mode, &variants, &placement, None)?;
    let (_, first) = primary(&variants).ok_or_else(no_answering)?;
    may_change(
        state,
        actor,
        first.spec.project_id,
        environment,
        "deploying",
    )?;
    Ok(Decision {
        stream: stream(deployment_id),
        expected: ExpectedVersion::NoStream,
        events: vec![RegistryEvent::DeploymentCreated(DeploymentCreated {
            deployment_id,
            mode,
            variants,
            promoted_from: None,
            reason: None,
        })],
    })
}

fn no_answering() -> DomainError {
    DomainError::Invalid {
        field: "variants",
        detail: "no variant answers requests".into(),
    }
}

/// The named environment, if this installation configures it.
pub(super) fn configured_environment<'a>(
    state: &'a Registry,
    name: &str,
) -> Result<&'a Environment, DomainError> {
    state.runtimes.environments.get(name).ok_or_else(|| {
        let known: Vec<&str> = state
            .runtimes
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        DomainError::Invalid {
            field: "environment",
            detail: format!(
                "{name:?} is not an environment of this installation (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        }
    })
}

/// Whether `actor` may change what runs in `environment` for `project_id`: the environment's
/// rule (editors, owners, or admins only); `what` says what needs it.
pub(super) fn may_change(
    state: &Registry,
    actor: Uuid,
    project_id: Uuid,
    environment: &Environment,
    what: &str,
) -> Result<(), DomainError> {
    let allowed = match environment.deploy_role {
        DeployRole::Editor => may(state, actor, project_id, ProjectRole::Editor),
        DeployRole::Owner => may(state, actor, project_id, ProjectRole::Owner),
        DeployRole::Admin => state
            .users
            .get(&actor)
            .is_some_and(|u| u.roles.contains(&GlobalRole::Admin)),
    };
    if allowed {
        return Ok(());
    }
    let who = match environment.deploy_role {
        DeployRole::Editor => format!("the editor role in project {project_id}"),
        DeployRole::Owner => format!("the owner role in project {project_id}"),
        DeployRole::Admin => "the admin role".to_string(),
    };
    Err(DomainError::Forbidden(format!(
        "{what} in environment {} needs {who}",
        environment.name
    )))
}

/// The environment rule for changes to deployment `d`: its environment's, or the editor role
/// when the installation no longer configures it.
pub(super) fn may_change_deployment(
    state: &Registry,
    actor: Uuid,
    d: &Deployment,
    what: &str,
) -> Result<(), DomainError> {
    let fallback = Environment {
        name: d.spec.environment.clone(),
        description: String::new(),
        deploy_role: DeployRole::Editor,
    };
    let environment = state
        .runtimes
        .environments
        .get(&d.spec.environment)
        .unwrap_or(&fallback);
    may_change(state, actor, d.spec.project_id, environment, what)
}

/// Resolves and checks a deployment's variants for `mode`. A variant asking for exactly what
/// a variant of `current` runs keeps that variant's spec as it is (its runtime settings
/// included); the others are resolved against today's registry and catalog.
pub(super) fn resolve_variants(
    state: &Registry,
    actor: Uuid,
    mode: Mode,
    requests: &BTreeMap<String, VariantRequest>,
    placement: &Placement,
    current: Option<&Variants>,
) -> Result<Variants, DomainError> {
    check_shape(mode, requests)?;
    let mut variants = Variants::new();
    for (name, request) in requests {
        let kept = current.and_then(|c| c.get(name)).filter(|v| {
            let same = VariantRequest::of(v);
            (
                same.model_id,
                same.version,
                same.runtime_id,
                same.image_version,
            ) == (
                request.model_id,
                request.version,
                request.runtime_id.clone(),
                request.image_version.clone(),
            )
        });
        let spec = match kept {
            Some(v) => {
                // Still a live version the actor edits, on an image version not DISABLED.
                editable_version(state, actor, request.model_id, request.version, "deploying")?;
                state
                    .runtimes
                    .usable(&v.spec.runtime_id, &v.spec.image_version)?;
                v.spec.clone()
            }
            None => resolve(state, actor, request, placement)
                .map_err(|e| in_variant(name, requests.len(), e))?,
        };
        variants.insert(
            name.clone(),
            Variant {
                weight: request.weight,
                shadow: request.shadow,
                spec,
            },
        );
    }
    check_compatible(&variants)?;
    Ok(variants)
}

/// Names the variant in an error, when there are several.
fn in_variant(name: &str, count: usize, e: DomainError) -> DomainError {
    if count < 2 {
        return e;
    }
    match e {
        DomainError::NotDeployable(m) => DomainError::NotDeployable(format!("variant {name}: {m}")),
        DomainError::Conflict(m) => DomainError::Conflict(format!("variant {name}: {m}")),
        other => other,
    }
}

/// The counts, names, weights and shadows each mode allows.
fn check_shape(mode: Mode, requests: &BTreeMap<String, VariantRequest>) -> Result<(), DomainError> {
    let invalid = |detail: String| DomainError::Invalid {
        field: "variants",
        detail,
    };
    if requests.is_empty() || requests.len() > MAX_VARIANTS {
        return Err(invalid(format!(
            "1 to {MAX_VARIANTS} variants, got {}",
            requests.len()
        )));
    }
    for name in requests.keys() {
        let ok = (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(invalid(format!(
                "variant name {name:?}: 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter"
            )));
        }
    }
    let answering: Vec<&VariantRequest> = requests.values().filter(|v| !v.shadow).collect();
    let shadows = requests.len() - answering.len();
    let weights: u64 = answering.iter().map(|v| u64::from(v.weight)).sum();
    if answering.iter().any(|v| v.weight == 0) {
        return Err(invalid(
            "an answering variant needs a weight of at least 1".into(),
        ));
    }
    if requests.values().any(|v| v.shadow && v.weight != 0) {
        return Err(invalid(
            "a challenger (shadow) takes no traffic: weight 0".into(),
        ));
    }
    match mode {
        Mode::Single if answering.len() != 1 || shadows != 0 => Err(invalid(
            "single mode serves exactly one variant, not a shadow".into(),
        )),
        Mode::Ab if answering.len() < 2 || shadows != 0 => Err(invalid(
            "A/B mode splits traffic between at least two variants, none a shadow".into(),
        )),
        Mode::Ab if weights > MAX_WEIGHT => Err(invalid(format!(
            "the weights add up to {weights}, more than {MAX_WEIGHT}"
        ))),
        Mode::ChampionChallenger if answering.len() != 1 || shadows == 0 => Err(invalid(
            "champion/challenger mode has one champion and at least one challenger (shadow)".into(),
        )),
        _ => Ok(()),
    }
}

/// The largest sum of A/B weights.
pub const MAX_WEIGHT: u64 = 1_000_000;

/// One scoring API serves every variant: the same project and inputs for all, the same
/// outputs for those that answer.
fn check_compatible(variants: &Variants) -> Result<(), DomainError> {
    let (first_name, first) = primary(variants).ok_or_else(no_answering)?;
    let sorted = |c: &[Column]| {
        let mut c: Vec<(String, super::schema::ColumnType)> = c
            .iter()
            .map(|c| (c.name.to_lowercase(), c.column_type))
            .collect();
        c.sort();
        c
    };
    for (name, v) in variants {
        if v.spec.project_id != first.spec.project_id {
            return Err(DomainError::Invalid {
                field: "variants",
                detail: format!(
                    "variant {name} is a model of another project than variant {first_name}"
                ),
            });
        }
        if sorted(&v.spec.input_schema) != sorted(&first.spec.input_schema) {
            return Err(DomainError::NotDeployable(format!(
                "variant {name} takes other inputs than variant {first_name}; one scoring API serves both"
            )));
        }
        let outputs = |s: &DeploymentSpec| (s.target_column.clone(), sorted(&s.output_schema));
        if !v.shadow && outputs(&v.spec) != outputs(&first.spec) {
            return Err(DomainError::NotDeployable(format!(
                "variant {name} answers other outputs than variant {first_name}; callers would see their fields change"
            )));
        }
    }
    Ok(())
}

/// Everything scoring one model version needs, resolved against the registry and the
/// runtime catalog: the deployable artifact, the schema, the runtime and image version.
fn resolve(
    state: &Registry,
    actor: Uuid,
    request: &VariantRequest,
    placement: &Placement,
) -> Result<DeploymentSpec, DomainError> {
    let VariantRequest {
        model_id,
        version,
        runtime_id,
        image_version,
        ..
    } = request;
    let (model_id, version) = (*model_id, *version);
    let (model, v) = editable_version(state, actor, model_id, version, "deploying")?;
    let environment = check_environment(placement.environment.clone())?;
    let x = state
        .experiments
        .get(&v.experiment_id)
        .ok_or(DomainError::NotFound {
            kind: Kind::Experiment,
            id: v.experiment_id.to_string(),
        })?;
    let not_deployable = |detail: String| DomainError::NotDeployable(detail);
    let (artifact, ingestion) = x
        .artifacts
        .iter()
        .find_map(|a| {
            a.ingestion
                .as_ref()
                .filter(|i| i.deployable)
                .map(|i| (&a.artifact, i))
        })
        .ok_or_else(|| {
            let reasons: Vec<String> = x
                .artifacts
                .iter()
                .map(|a| {
                    let why = a
                        .ingestion
                        .as_ref()
                        .and_then(|i| i.reason.clone())
                        .unwrap_or_else(|| "not ingested".into());
                    format!(
                        "{} ({}): {why}",
                        a.artifact.file_name, a.artifact.artifact_type
                    )
                })
                .collect();
            not_deployable(format!("no deployable artifact: {}", reasons.join("; ")))
        })?;
    let model_blob = ingestion
        .model_blob
        .clone()
        .ok_or_else(|| not_deployable("the artifact names no model to run".into()))?;
    let (input_schema, output_schema) = match (
        stored_schema(&x.metadata, "input_schema"),
        stored_schema(&x.metadata, "output_schema"),
    ) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            return Err(not_deployable(
                "the experiment has no input_schema and output_schema; set them in its metadata"
                    .into(),
            ));
        }
    };
    let catalog = &state.runtimes;
    let model_type = ingestion.model_type.clone();
    // The runtimes serving the model type, the most permissive first.
    let mut candidates: Vec<_> = catalog
        .runtimes
        .iter()
        .filter(|(_, r)| r.deleted.is_none() && r.spec.model_types.contains(&model_type))
        .filter(|(id, _)| runtime_id.as_ref().is_none_or(|wanted| *id == wanted))
        .collect();
    candidates.sort_by_key(|(_, r)| std::cmp::Reverse(r.effective));
    let (runtime_id, runtime) = candidates
        .first()
        .copied()
        .ok_or_else(|| match &runtime_id {
            Some(id) => not_deployable(format!(
                "runtime {id} does not exist or does not serve model type {model_type:?}"
            )),
            None => not_deployable(format!(
                "no runtime in the catalog serves model type {model_type:?}"
            )),
        })?;
    if !runtime.spec.available {
        return Err(not_deployable(format!(
            "runtime {runtime_id} is not available in this installation"
        )));
    }
    let image_version = match image_version {
        Some(wanted) => wanted.clone(),
        None => newest_image_version(catalog, &runtime.spec.image_id, |s| {
            s != RuntimeState::Disabled
        })
        .ok_or_else(|| {
            DomainError::Conflict(format!(
                "runtime image {} has no version that is not DISABLED",
                runtime.spec.image_id
            ))
        })?,
    };
    let warnings = catalog.usable(runtime_id, &image_version)?;
    let runtime_spec = catalog.versions[&version_key(&runtime.spec.image_id, &image_version)]
        .spec
        .clone();
    Ok(DeploymentSpec {
        project_id: model.project_id,
        model_id,
        version,
        experiment_id: v.experiment_id,
        artifact_id: artifact.artifact_id,
        model_blob,
        model_type,
        environment,
        security: placement.security.clone(),
        retention: placement.retention.clone(),
        runtime_id: runtime_id.clone(),
        image_id: runtime.spec.image_id.clone(),
        image_version,
        runtime: runtime_spec,
        settings: runtime.spec.settings.effective(&runtime.spec.env)?,
        input_schema,
        output_schema,
        target_column: x.parameters.target_column.clone(),
        warnings,
    })
}

/// The newest version of `image_id` (by declaration order) whose effective state `fits`.
pub(super) fn newest_image_version(
    catalog: &super::runtime::Catalog,
    image_id: &str,
    fits: impl Fn(RuntimeState) -> bool,
) -> Option<String> {
    let prefix = format!("{image_id}@");
    catalog
        .versions
        .iter()
        .filter(|(k, v)| k.starts_with(&prefix) && v.deleted.is_none() && fits(v.effective))
        .max_by_key(|(_, v)| v.declared.position)
        .map(|(k, _)| k[prefix.len()..].to_string())
}

/// The deployment `id`, or `NotFound`.
/// A live model version whose project the actor edits; `what` says what needs it.
pub(super) fn editable_version<'a>(
    state: &'a Registry,
    actor: Uuid,
    model_id: Uuid,
    version: u32,
    what: &str,
) -> Result<(&'a RegisteredModel, &'a ModelVersion), DomainError> {
    let model = state.models.get(&model_id).ok_or(DomainError::NotFound {
        kind: Kind::Model,
        id: model_id.to_string(),
    })?;
    if !may(state, actor, model.project_id, ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "{what} needs the editor role in project {}",
            model.project_id
        )));
    }
    let v = model
        .versions
        .get(&version)
        .filter(|v| v.deleted.is_none())
        .ok_or(DomainError::NotFound {
            kind: Kind::Version,
            id: format!("{model_id}/{version}"),
        })?;
    Ok((model, v))
}

pub fn find(state: &Registry, id: Uuid) -> Result<&Deployment, DomainError> {
    state.deployments.get(&id).ok_or(DomainError::NotFound {
        kind: Kind::Deployment,
        id: id.to_string(),
    })
}

/// The deployment `id` unless deleted; a deleted one stays in the registry for the record.
pub fn live(state: &Registry, id: Uuid) -> Result<&Deployment, DomainError> {
    let d = find(state, id)?;
    if d.deleted.is_some() {
        return Err(DomainError::Conflict(format!(
            "deployment {id} was deleted; its record stays, nothing can change it"
        )));
    }
    Ok(d)
}

/// Moves a deployment along its life cycle. The scorer (`system:scorer`) reports loading;
/// people (editors of the project, or whom its environment's rule names) pause a Healthy
/// deployment, resume a Paused one, and stop any; each move needs a reason.
pub fn decide_transition(
    state: &Registry,
    actor: Option<Uuid>,
    deployment_id: Uuid,
    to: DeploymentState,
    reason: String,
) -> Result<Decision, DomainError> {
    use DeploymentState as S;
    let d = live(state, deployment_id)?;
    if let Some(actor) = actor {
        may_change_deployment(state, actor, d, "changing a deployment")?;
    }
    // People pause, resume and stop; the scorer reports loading and its outcome.
    let by_people = matches!(
        (d.state, to),
        (S::Healthy, S::Paused) | (S::Paused, S::Healthy) | (_, S::Stopped)
    );
    let by_scorer = match (d.state, to) {
        (S::Preparing, S::Launching | S::Failed) => true,
        (S::Launching, S::Healthy | S::Failed) => true,
        // A restart loads a Healthy deployment again; a Paused one that no longer loads fails.
        (S::Healthy, S::Launching | S::Failed) | (S::Paused, S::Failed) => true,
        _ => false,
    };
    let allowed = d.state != S::Stopped
        && match actor {
            Some(_) => by_people,
            None => by_scorer || to == S::Stopped,
        };
    if !allowed {
        return Err(DomainError::Conflict(format!(
            "deployment {deployment_id} is {:?} and cannot become {to:?}{}",
            d.state,
            if actor.is_some() && by_scorer {
                " (only the scorer makes that move)"
            } else {
                ""
            }
        )));
    }
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(DomainError::Invalid {
            field: "reason",
            detail: "a reason is required".into(),
        });
    }
    Ok(decision(
        deployment_id,
        vec![RegistryEvent::DeploymentStateChanged(
            DeploymentStateChanged {
                deployment_id,
                from: d.state,
                to,
                reason,
            },
        )],
    ))
}

/// A decision on a deployment's stream. The scorer appends its runs there outside the
/// command gate, so the stream's version guards nothing: the decision expects any version.
/// The gate (registry commands one at a time) keeps it consistent, and runs change nothing a
/// decision on a deployment depends on.
pub(super) fn decision(deployment_id: Uuid, events: Vec<RegistryEvent>) -> Decision {
    Decision {
        stream: stream(deployment_id),
        expected: ExpectedVersion::Any,
        events,
    }
}

pub(super) fn check_environment(env: String) -> Result<String, DomainError> {
    let ok = (1..=32).contains(&env.len())
        && env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(env)
    } else {
        Err(DomainError::Invalid {
            field: "environment",
            detail: format!("{env:?}: 1 to 32 letters, digits, '_' or '-'"),
        })
    }
}

/// Folds deployment events.
pub fn apply(deployments: &mut BTreeMap<Uuid, Deployment>, event: &RegistryEvent, stamp: &Stamp) {
    match event {
        RegistryEvent::DeploymentCreated(e) => {
            let Some((_, first)) = primary(&e.variants) else {
                return;
            };
            deployments.insert(
                e.deployment_id,
                Deployment {
                    deployment_id: e.deployment_id,
                    spec: first.spec.clone(),
                    mode: e.mode,
                    variants: e.variants.clone(),
                    state: DeploymentState::Preparing,
                    history: vec![Transition {
                        from: None,
                        to: DeploymentState::Preparing,
                        reason: e.reason.clone().unwrap_or_else(|| "deployed".into()),
                        changed: stamp.clone(),
                    }],
                    created: stamp.clone(),
                    promoted_from: e.promoted_from,
                    revisions: vec![Revision {
                        position: stamp.position,
                        mode: e.mode,
                        variants: e.variants.clone(),
                    }],
                    update: None,
                    purged_before: 0,
                    alert_policy: None,
                    drift_thresholds: None,
                    deleted: None,
                },
            );
        }
        RegistryEvent::DeploymentUpdateStarted(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.update = Some(Update {
                    update_id: e.update_id,
                    kind: e.kind,
                    mode: e.mode,
                    variants: e.variants.clone(),
                    rollback_to: e.rollback_to,
                    reason: e.reason.clone(),
                    started: stamp.clone(),
                    outcome: None,
                    detail: None,
                    ended: None,
                });
            }
        }
        RegistryEvent::DeploymentUpdateEnded(e) => {
            let Some(d) = deployments.get_mut(&e.deployment_id) else {
                return;
            };
            let Some(u) = d.update.as_mut().filter(|u| u.update_id == e.update_id) else {
                return;
            };
            u.outcome = Some(e.outcome);
            u.detail = Some(e.detail.clone());
            u.ended = Some(stamp.clone());
            if e.outcome == UpdateOutcome::Applied
                && let Some((_, first)) = primary(&u.variants)
            {
                d.spec = first.spec.clone();
                d.mode = u.mode;
                d.variants = u.variants.clone();
                d.revisions.push(Revision {
                    position: stamp.position,
                    mode: u.mode,
                    variants: u.variants.clone(),
                });
            }
        }
        RegistryEvent::DeploymentDeleted(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.deleted = Some(Deletion {
                    reason: Some(e.reason.clone()),
                    deleted: stamp.clone(),
                });
            }
        }
        RegistryEvent::PredictionDataPurged(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.purged_before = d.purged_before.max(e.runs_before);
            }
        }
        RegistryEvent::DriftThresholdsSet(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.drift_thresholds = Some(e.thresholds.clone());
            }
        }
        RegistryEvent::AlertPolicySet(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.alert_policy = Some(e.policy.clone());
            }
        }
        RegistryEvent::DeploymentStateChanged(e) => {
            if let Some(d) = deployments.get_mut(&e.deployment_id) {
                d.state = e.to;
                d.history.push(Transition {
                    from: Some(e.from),
                    to: e.to,
                    reason: e.reason.clone(),
                    changed: stamp.clone(),
                });
            }
        }
        _ => {}
    }
}
