//! The registry's state and `evolve`: a pure fold over the ledger's registry events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use uuid::Uuid;

use super::event::*;
use super::schema::{MetadataValue, SCHEMA_KEYS, schema_value};

/// Who did something, and when and where the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stamp {
    pub actor: String,
    pub at: String,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Token {
    pub token_id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub token_hash: String,
    pub expires_at: Option<String>,
    pub issued: Stamp,
    pub revoked: Option<Stamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub roles: BTreeSet<GlobalRole>,
    pub tokens: BTreeMap<Uuid, Token>,
    pub created: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Comment {
    pub comment_id: Uuid,
    pub text: String,
    pub added: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Project {
    pub project_id: Uuid,
    pub name: String,
    pub description: String,
    pub members: BTreeMap<Uuid, ProjectRole>,
    pub comments: Vec<Comment>,
    pub created: Stamp,
    /// Positions of every event of the project and of its experiments and models, in order.
    pub event_positions: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArtifactState {
    #[serde(flatten)]
    pub artifact: Artifact,
    pub ingestion: Option<Ingestion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deletion {
    pub reason: Option<String>,
    pub deleted: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionRef {
    pub model_id: Uuid,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Experiment {
    pub experiment_id: Uuid,
    pub project_id: Uuid,
    pub display_name: String,
    pub metadata: BTreeMap<String, MetadataValue>,
    pub parameters: Parameters,
    pub artifacts: Vec<ArtifactState>,
    pub tags: BTreeSet<String>,
    pub comments: Vec<Comment>,
    pub deleted: Option<Deletion>,
    pub registered_as: Option<VersionRef>,
    pub imported: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StageChange {
    pub from: Stage,
    pub to: Stage,
    pub annotation: String,
    pub changed: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelVersion {
    pub version: u32,
    pub experiment_id: Uuid,
    pub stage: Stage,
    pub aliases: BTreeSet<String>,
    pub annotation: Option<String>,
    pub stage_history: Vec<StageChange>,
    pub comments: Vec<Comment>,
    pub deleted: Option<Deletion>,
    pub registered: Stamp,
    /// The reference data its deployments' inputs are compared with for drift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Box<super::reference::ReferenceProfile>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AliasChange {
    pub alias: String,
    pub version: Option<u32>,
    pub annotation: String,
    pub changed: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RegisteredModel {
    pub model_id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub description: String,
    pub versions: BTreeMap<u32, ModelVersion>,
    pub aliases: BTreeMap<String, u32>,
    pub alias_history: Vec<AliasChange>,
    pub created: Stamp,
}

/// The whole registry as of `position`. Fields other than the entity maps are indexes
/// derived from them, left out of the serialized form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    /// The next position to apply (the ledger size this state reflects).
    pub applied: u64,
    pub users: BTreeMap<Uuid, User>,
    pub projects: BTreeMap<Uuid, Project>,
    pub experiments: BTreeMap<Uuid, Experiment>,
    pub models: BTreeMap<Uuid, RegisteredModel>,
    pub runtimes: super::runtime::Catalog,
    pub deployments: BTreeMap<Uuid, super::deployment::Deployment>,
    pub endpoints: BTreeMap<String, super::endpoint::Endpoint>,
    pub jobs: BTreeMap<Uuid, super::job::ScoringJob>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<Uuid, super::alert::Alert>,
    #[serde(skip)]
    pub usernames: HashMap<String, Uuid>,
    /// blake3 hash (hex) of every token ever issued → (user, token id).
    #[serde(skip)]
    pub tokens: HashMap<String, (Uuid, Uuid)>,
    /// The last version of each registry stream, for optimistic concurrency.
    #[serde(skip)]
    pub stream_versions: HashMap<String, u64>,
    /// Every scored request → the position of the inference run that answered it.
    #[serde(skip)]
    pub predictions: HashMap<Uuid, u64>,
    /// A request a champion answered → the positions of its challengers' runs of its rows.
    #[serde(skip)]
    pub shadow_predictions: HashMap<Uuid, Vec<u64>>,
    /// (request, row) → its latest recorded actual.
    #[serde(skip)]
    pub actuals: HashMap<(Uuid, u64), String>,
}

/// A stored event as `evolve` sees it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub actor: String,
    pub recorded_at: String,
    /// `None` for events that are not the registry's (ledger, scoring, ...).
    pub event: Option<RegistryEvent>,
}

/// Folds one stored event into the registry.
pub fn evolve(mut state: Registry, recorded: &Recorded) -> Registry {
    state.applied = recorded.position + 1;
    let Some(event) = &recorded.event else {
        return state;
    };
    state
        .stream_versions
        .insert(recorded.stream.clone(), recorded.stream_version);
    let stamp = Stamp {
        actor: recorded.actor.clone(),
        at: recorded.recorded_at.clone(),
        position: recorded.position,
    };
    if let Some(project) = project_of(&state, event).and_then(|p| state.projects.get_mut(&p)) {
        project.event_positions.push(recorded.position);
    }
    apply(&mut state, event, stamp);
    state
}

/// The project an event belongs to, for the project's event list.
fn project_of(state: &Registry, event: &RegistryEvent) -> Option<Uuid> {
    use RegistryEvent as E;
    let experiment = |id: &Uuid| state.experiments.get(id).map(|e| e.project_id);
    let model = |id: &Uuid| state.models.get(id).map(|m| m.project_id);
    match event {
        E::ProjectUpdated(e) => Some(e.project_id),
        E::ProjectShared(e) => Some(e.project_id),
        E::ProjectRoleChanged(e) => Some(e.project_id),
        E::ProjectUnshared(e) => Some(e.project_id),
        E::CommentAdded(e) => match &e.subject {
            Subject::Project { project_id } => Some(*project_id),
            Subject::Experiment { experiment_id } => experiment(experiment_id),
            Subject::ModelVersion { model_id, .. } => model(model_id),
        },
        E::ExperimentImported(e) => Some(e.project_id),
        E::ArtifactIngested(e) => experiment(&e.experiment_id),
        E::ExperimentMetadataSet(e) => experiment(&e.experiment_id),
        E::ExperimentTagged(e) => experiment(&e.experiment_id),
        E::ExperimentUntagged(e) => experiment(&e.experiment_id),
        E::ExperimentDeleted(e) => experiment(&e.experiment_id),
        E::ExperimentRestored(e) => experiment(&e.experiment_id),
        E::RegisteredModelCreated(e) => Some(e.project_id),
        E::ModelVersionRegistered(e) => model(&e.model_id),
        E::ModelVersionStageChanged(e) => model(&e.model_id),
        E::ModelAliasSet(e) => model(&e.model_id),
        E::ModelAliasRemoved(e) => model(&e.model_id),
        E::ModelVersionDeleted(e) => model(&e.model_id),
        E::ReferenceProfileRecorded(e) => model(&e.model_id),
        // ProjectCreated pushes its own position when it creates the project.
        E::DeploymentCreated(e) => {
            super::deployment::primary(&e.variants).map(|(_, v)| v.spec.project_id)
        }
        E::DeploymentDeleted(e) => Some(e.project_id),
        // Predictions are listed per deployment, not in the project's governance events.
        E::InferenceRunRecorded(_) | E::PredictionDataPurged(_) => None,
        E::DeploymentStateChanged(DeploymentStateChanged { deployment_id, .. })
        | E::DeploymentUpdateStarted(DeploymentUpdateStarted { deployment_id, .. })
        | E::DeploymentUpdateEnded(DeploymentUpdateEnded { deployment_id, .. }) => state
            .deployments
            .get(deployment_id)
            .map(|d| d.spec.project_id),
        E::EndpointSet(e) => Some(e.project_id),
        E::EndpointRemoved(e) => Some(e.project_id),
        E::ScoringJobStarted(e) => Some(e.project_id),
        E::ScoringJobEnded(e) => Some(e.project_id),
        E::AlertPolicySet(e) => Some(e.project_id),
        E::DriftThresholdsSet(e) => Some(e.project_id),
        E::ActualsRecorded(e) => Some(e.project_id),
        E::AlertRaised(e) => Some(e.project_id),
        E::AlertResolved(e) => Some(e.project_id),
        E::RuntimeImageDeclared(_)
        | E::RuntimeImageVersionDeclared(_)
        | E::RuntimeDeclared(_)
        | E::RuntimeStateChanged(_)
        | E::RuntimeEntityDeleted(_)
        | E::ArtifactTypesDeclared(_)
        | E::EnvironmentsDeclared(_)
        | E::RuntimeBootstrapApplied(_)
        | E::ProjectCreated(_)
        | E::UserCreated(_)
        | E::UserRoleGranted(_)
        | E::UserRoleRevoked(_)
        | E::ApiTokenIssued(_)
        | E::ApiTokenRevoked(_) => None,
    }
}

fn apply(state: &mut Registry, event: &RegistryEvent, stamp: Stamp) {
    use RegistryEvent as E;
    match event {
        E::RuntimeImageDeclared(_)
        | E::RuntimeImageVersionDeclared(_)
        | E::RuntimeDeclared(_)
        | E::RuntimeStateChanged(_)
        | E::RuntimeEntityDeleted(_)
        | E::ArtifactTypesDeclared(_)
        | E::EnvironmentsDeclared(_)
        | E::RuntimeBootstrapApplied(_) => {
            super::runtime::apply(&mut state.runtimes, event, &stamp);
        }
        E::DeploymentCreated(_)
        | E::DeploymentStateChanged(_)
        | E::DeploymentUpdateStarted(_)
        | E::DeploymentUpdateEnded(_)
        | E::DeploymentDeleted(_)
        | E::PredictionDataPurged(_)
        | E::AlertPolicySet(_)
        | E::DriftThresholdsSet(_) => {
            super::deployment::apply(&mut state.deployments, event, &stamp);
        }
        E::AlertRaised(_) | E::AlertResolved(_) => {
            super::alert::apply(&mut state.alerts, event, &stamp);
        }
        E::ActualsRecorded(e) => {
            for a in &e.actuals {
                state
                    .actuals
                    .insert((a.request_id, a.row), a.actual.clone());
            }
        }
        E::EndpointSet(_) | E::EndpointRemoved(_) => {
            super::endpoint::apply(&mut state.endpoints, event, &stamp);
        }
        E::ScoringJobStarted(_) | E::ScoringJobEnded(_) => {
            super::job::apply(&mut state.jobs, event, &stamp);
        }
        E::InferenceRunRecorded(e) => {
            if e.job.is_some() {
                super::job::apply(&mut state.jobs, event, &stamp);
            }
            // A challenger's run answered no one: a request names the run that answered it,
            // and apart from it the challengers' runs of its rows.
            for r in &e.requests {
                if e.shadow {
                    state
                        .shadow_predictions
                        .entry(r.request_id)
                        .or_default()
                        .push(stamp.position);
                } else {
                    state.predictions.insert(r.request_id, stamp.position);
                }
            }
        }
        E::UserCreated(e) => {
            state.usernames.insert(e.username.clone(), e.user_id);
            state.users.insert(
                e.user_id,
                User {
                    user_id: e.user_id,
                    username: e.username.clone(),
                    display_name: e.display_name.clone(),
                    roles: e.roles.iter().copied().collect(),
                    tokens: BTreeMap::new(),
                    created: stamp,
                },
            );
        }
        E::UserRoleGranted(e) => {
            if let Some(u) = state.users.get_mut(&e.user_id) {
                u.roles.insert(e.role);
            }
        }
        E::UserRoleRevoked(e) => {
            if let Some(u) = state.users.get_mut(&e.user_id) {
                u.roles.remove(&e.role);
            }
        }
        E::ApiTokenIssued(e) => {
            if let Some(u) = state.users.get_mut(&e.user_id) {
                state
                    .tokens
                    .insert(e.token_hash.clone(), (e.user_id, e.token_id));
                u.tokens.insert(
                    e.token_id,
                    Token {
                        token_id: e.token_id,
                        name: e.name.clone(),
                        token_hash: e.token_hash.clone(),
                        expires_at: e.expires_at.clone(),
                        issued: stamp,
                        revoked: None,
                    },
                );
            }
        }
        E::ApiTokenRevoked(e) => {
            if let Some(t) = state
                .users
                .get_mut(&e.user_id)
                .and_then(|u| u.tokens.get_mut(&e.token_id))
            {
                t.revoked = Some(stamp);
            }
        }
        E::ProjectCreated(e) => {
            state.projects.insert(
                e.project_id,
                Project {
                    project_id: e.project_id,
                    name: e.name.clone(),
                    description: e.description.clone(),
                    members: BTreeMap::from([(e.owner, ProjectRole::Owner)]),
                    comments: Vec::new(),
                    event_positions: vec![stamp.position],
                    created: stamp,
                },
            );
        }
        E::ProjectUpdated(e) => {
            if let Some(p) = state.projects.get_mut(&e.project_id) {
                if let Some(name) = &e.name {
                    p.name = name.clone();
                }
                if let Some(description) = &e.description {
                    p.description = description.clone();
                }
            }
        }
        E::ProjectShared(e) => {
            if let Some(p) = state.projects.get_mut(&e.project_id) {
                p.members.insert(e.user_id, e.role);
            }
        }
        E::ProjectRoleChanged(e) => {
            if let Some(p) = state.projects.get_mut(&e.project_id) {
                p.members.insert(e.user_id, e.to);
            }
        }
        E::ProjectUnshared(e) => {
            if let Some(p) = state.projects.get_mut(&e.project_id) {
                p.members.remove(&e.user_id);
            }
        }
        E::CommentAdded(e) => {
            let comment = Comment {
                comment_id: e.comment_id,
                text: e.text.clone(),
                added: stamp,
            };
            let list = match &e.subject {
                Subject::Project { project_id } => {
                    state.projects.get_mut(project_id).map(|p| &mut p.comments)
                }
                Subject::Experiment { experiment_id } => state
                    .experiments
                    .get_mut(experiment_id)
                    .map(|x| &mut x.comments),
                Subject::ModelVersion { model_id, version } => state
                    .models
                    .get_mut(model_id)
                    .and_then(|m| m.versions.get_mut(version))
                    .map(|v| &mut v.comments),
            };
            if let Some(list) = list {
                list.push(comment);
            }
        }
        E::ExperimentImported(e) => {
            state.experiments.insert(
                e.experiment_id,
                Experiment {
                    experiment_id: e.experiment_id,
                    project_id: e.project_id,
                    display_name: e.display_name.clone(),
                    metadata: e.metadata.clone(),
                    parameters: e.parameters.clone(),
                    artifacts: e
                        .artifacts
                        .iter()
                        .map(|a| ArtifactState {
                            artifact: a.clone(),
                            ingestion: None,
                        })
                        .collect(),
                    tags: e.tags.iter().cloned().collect(),
                    comments: Vec::new(),
                    deleted: None,
                    registered_as: None,
                    imported: stamp,
                },
            );
        }
        E::ArtifactIngested(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                let proposed = [&e.result.input_schema, &e.result.output_schema];
                for (key, schema) in SCHEMA_KEYS.iter().zip(proposed) {
                    if let Some(columns) = schema {
                        x.metadata
                            .entry(key.to_string())
                            .or_insert_with(|| schema_value(columns));
                    }
                }
                if let Some(a) = x
                    .artifacts
                    .iter_mut()
                    .find(|a| a.artifact.artifact_id == e.artifact_id)
                {
                    a.ingestion = Some(e.result.clone());
                }
            }
        }
        E::ExperimentMetadataSet(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.metadata
                    .extend(e.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        E::ExperimentTagged(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.tags.insert(e.tag.clone());
            }
        }
        E::ExperimentUntagged(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.tags.remove(&e.tag);
            }
        }
        E::ExperimentDeleted(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.deleted = Some(Deletion {
                    reason: e.reason.clone(),
                    deleted: stamp,
                });
            }
        }
        E::ExperimentRestored(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.deleted = None;
            }
        }
        E::RegisteredModelCreated(e) => {
            state.models.insert(
                e.model_id,
                RegisteredModel {
                    model_id: e.model_id,
                    project_id: e.project_id,
                    name: e.name.clone(),
                    description: e.description.clone(),
                    versions: BTreeMap::new(),
                    aliases: BTreeMap::new(),
                    alias_history: Vec::new(),
                    created: stamp,
                },
            );
        }
        E::ModelVersionRegistered(e) => {
            if let Some(x) = state.experiments.get_mut(&e.experiment_id) {
                x.registered_as = Some(VersionRef {
                    model_id: e.model_id,
                    version: e.version,
                });
            }
            if let Some(m) = state.models.get_mut(&e.model_id) {
                m.versions.insert(
                    e.version,
                    ModelVersion {
                        version: e.version,
                        experiment_id: e.experiment_id,
                        stage: Stage::None,
                        aliases: BTreeSet::new(),
                        annotation: e.annotation.clone(),
                        stage_history: Vec::new(),
                        comments: Vec::new(),
                        deleted: None,
                        registered: stamp,
                        reference: None,
                    },
                );
            }
        }
        E::ModelVersionStageChanged(e) => {
            if let Some(v) = version_mut(state, e.model_id, e.version) {
                v.stage = e.to;
                v.stage_history.push(StageChange {
                    from: e.from,
                    to: e.to,
                    annotation: e.annotation.clone(),
                    changed: stamp,
                });
            }
        }
        E::ReferenceProfileRecorded(e) => {
            if let Some(v) = version_mut(state, e.model_id, e.version) {
                v.reference = Some(Box::new(super::reference::ReferenceProfile {
                    dataset_blob: e.dataset_blob.clone(),
                    format: e.format,
                    rows: e.rows,
                    columns: e.columns.clone(),
                    recorded: stamp,
                }));
            }
        }
        E::ModelAliasSet(e) => {
            if let Some(m) = state.models.get_mut(&e.model_id) {
                if let Some(old) = m.aliases.insert(e.alias.clone(), e.version)
                    && let Some(v) = m.versions.get_mut(&old)
                {
                    v.aliases.remove(&e.alias);
                }
                if let Some(v) = m.versions.get_mut(&e.version) {
                    v.aliases.insert(e.alias.clone());
                }
                m.alias_history.push(AliasChange {
                    alias: e.alias.clone(),
                    version: Some(e.version),
                    annotation: e.annotation.clone(),
                    changed: stamp,
                });
            }
        }
        E::ModelAliasRemoved(e) => {
            if let Some(m) = state.models.get_mut(&e.model_id) {
                m.aliases.remove(&e.alias);
                if let Some(v) = m.versions.get_mut(&e.version) {
                    v.aliases.remove(&e.alias);
                }
                m.alias_history.push(AliasChange {
                    alias: e.alias.clone(),
                    version: None,
                    annotation: e.annotation.clone(),
                    changed: stamp,
                });
            }
        }
        E::ModelVersionDeleted(e) => {
            if let Some(m) = state.models.get_mut(&e.model_id)
                && let Some(v) = m.versions.get_mut(&e.version)
            {
                for alias in std::mem::take(&mut v.aliases) {
                    m.aliases.remove(&alias);
                }
                v.deleted = Some(Deletion {
                    reason: Some(e.annotation.clone()),
                    deleted: stamp,
                });
            }
        }
    }
}

fn version_mut(state: &mut Registry, model_id: Uuid, version: u32) -> Option<&mut ModelVersion> {
    state
        .models
        .get_mut(&model_id)
        .and_then(|m| m.versions.get_mut(&version))
}
