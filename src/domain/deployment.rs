//! Deployments (single-model mode): a registered model version deployed to an environment on
//! a runtime resolved from the artifact's model type and the runtime catalog. Everything a
//! prediction depends on — the model blob, the schema, the runtime image version with its
//! ONNX Runtime version, provider and thread settings, the scorer settings — is fixed in the
//! `DeploymentCreated` event.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::*;
use super::runtime::{ImageVersionSpec, RuntimeState, ScorerSettings, version_key};
use super::schema::{Column, stored_schema};
use super::state::{ModelVersion, RegisteredModel, Registry, Stamp};
use super::{Decision, DomainError, Kind, may};

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

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deployment {
    pub deployment_id: Uuid,
    pub spec: DeploymentSpec,
    pub state: DeploymentState,
    pub history: Vec<Transition>,
    pub created: Stamp,
    /// Runs before this position have had their blobs purged under the retention policy.
    pub purged_before: u64,
    /// What to alert on, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_policy: Option<super::alert::AlertPolicy>,
    /// How its drift is judged, if not by the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_thresholds: Option<super::reference::DriftThresholds>,
}

pub fn stream(deployment_id: Uuid) -> String {
    stream_of("deployment", deployment_id)
}

/// A request to deploy a model version.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub deployment_id: Uuid,
    pub model_id: Uuid,
    pub version: u32,
    pub environment: String,
    pub security: Security,
    pub retention: Retention,
    /// A runtime serving the model type; by default the most permissive one that does.
    pub runtime_id: Option<String>,
}

/// Deploys a live model version: editors of its project.
pub fn decide_deploy(
    state: &Registry,
    actor: Uuid,
    request: Deploy,
) -> Result<Decision, DomainError> {
    let Deploy {
        deployment_id,
        model_id,
        version,
        environment,
        security,
        retention,
        runtime_id,
    } = request;
    let (model, v) = editable_version(state, actor, model_id, version, "deploying")?;
    let environment = check_environment(environment)?;
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
    // The newest version of the runtime's image that is not DISABLED, by declaration order.
    let prefix = format!("{}@", runtime.spec.image_id);
    let image_version = catalog
        .versions
        .iter()
        .filter(|(k, v)| {
            k.starts_with(&prefix) && v.deleted.is_none() && v.effective != RuntimeState::Disabled
        })
        .max_by_key(|(_, v)| v.declared.position)
        .map(|(k, _)| k[prefix.len()..].to_string())
        .ok_or_else(|| {
            DomainError::Conflict(format!(
                "runtime image {} has no version that is not DISABLED",
                runtime.spec.image_id
            ))
        })?;
    let warnings = catalog.usable(runtime_id, &image_version)?;
    let runtime_spec = catalog.versions[&version_key(&runtime.spec.image_id, &image_version)]
        .spec
        .clone();
    let spec = DeploymentSpec {
        project_id: model.project_id,
        model_id,
        version,
        experiment_id: v.experiment_id,
        artifact_id: artifact.artifact_id,
        model_blob,
        model_type,
        environment,
        security,
        retention,
        runtime_id: runtime_id.clone(),
        image_id: runtime.spec.image_id.clone(),
        image_version,
        runtime: runtime_spec,
        settings: runtime.spec.settings.effective(&runtime.spec.env)?,
        input_schema,
        output_schema,
        target_column: x.parameters.target_column.clone(),
        warnings,
    };
    Ok(Decision {
        stream: stream(deployment_id),
        expected: None,
        events: vec![RegistryEvent::DeploymentCreated(DeploymentCreated {
            deployment_id,
            spec: Box::new(spec),
        })],
    })
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

/// Moves a deployment along its life cycle. The scorer (`system:scorer`) reports loading;
/// people (editors of the project) pause a Healthy deployment, resume a Paused one, and stop
/// any; each move needs a reason.
pub fn decide_transition(
    state: &Registry,
    actor: Option<Uuid>,
    deployment_id: Uuid,
    to: DeploymentState,
    reason: String,
) -> Result<Decision, DomainError> {
    use DeploymentState as S;
    let d = find(state, deployment_id)?;
    if let Some(actor) = actor
        && !may(state, actor, d.spec.project_id, ProjectRole::Editor)
    {
        return Err(DomainError::Forbidden(format!(
            "changing a deployment needs the editor role in project {}",
            d.spec.project_id
        )));
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
    Ok(Decision {
        stream: stream(deployment_id),
        expected: state.stream_versions.get(&stream(deployment_id)).copied(),
        events: vec![RegistryEvent::DeploymentStateChanged(
            DeploymentStateChanged {
                deployment_id,
                from: d.state,
                to,
                reason,
            },
        )],
    })
}

fn check_environment(env: String) -> Result<String, DomainError> {
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
            deployments.insert(
                e.deployment_id,
                Deployment {
                    deployment_id: e.deployment_id,
                    spec: (*e.spec).clone(),
                    state: DeploymentState::Preparing,
                    history: vec![Transition {
                        from: None,
                        to: DeploymentState::Preparing,
                        reason: "deployed".into(),
                        changed: stamp.clone(),
                    }],
                    created: stamp.clone(),
                    purged_before: 0,
                    alert_policy: None,
                    drift_thresholds: None,
                },
            );
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
