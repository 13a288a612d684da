//! `decide`: checks a command against the registry and the actor's rights, and returns the
//! events to append, or why not. Pure: ids, token hashes, artifact findings and the clock
//! come in the command.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::log::ExpectedVersion;

use super::event::*;
use super::schema::{MetadataValue, normalize_metadata};
use super::state::{Experiment, ModelVersion, RegisteredModel, Registry};
use super::{DomainError, Kind};

/// A registry command, as the API shell builds it.
#[derive(Debug, Clone)]
pub enum Command {
    CreateUser {
        user_id: Uuid,
        username: String,
        display_name: String,
        roles: Vec<GlobalRole>,
    },
    GrantRole {
        user_id: Uuid,
        role: GlobalRole,
    },
    RevokeRole {
        user_id: Uuid,
        role: GlobalRole,
    },
    IssueToken {
        user_id: Uuid,
        token_id: Uuid,
        name: String,
        token_hash: String,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    },
    RevokeToken {
        user_id: Uuid,
        token_id: Uuid,
        reason: Option<String>,
    },
    CreateProject {
        project_id: Uuid,
        name: String,
        description: String,
    },
    UpdateProject {
        project_id: Uuid,
        name: Option<String>,
        description: Option<String>,
    },
    /// Shares the project with a user, or changes the user's role.
    ShareProject {
        project_id: Uuid,
        user_id: Uuid,
        role: ProjectRole,
    },
    UnshareProject {
        project_id: Uuid,
        user_id: Uuid,
    },
    AddComment {
        comment_id: Uuid,
        subject: Subject,
        text: String,
    },
    ImportExperiment {
        experiment_id: Uuid,
        project_id: Uuid,
        display_name: String,
        metadata: BTreeMap<String, MetadataValue>,
        parameters: Parameters,
        tags: Vec<String>,
        artifacts: Vec<(Artifact, Ingestion)>,
    },
    SetExperimentMetadata {
        experiment_id: Uuid,
        entries: BTreeMap<String, MetadataValue>,
    },
    TagExperiment {
        experiment_id: Uuid,
        tag: String,
    },
    UntagExperiment {
        experiment_id: Uuid,
        tag: String,
    },
    DeleteExperiment {
        experiment_id: Uuid,
        reason: Option<String>,
    },
    RestoreExperiment {
        experiment_id: Uuid,
    },
    CreateModel {
        model_id: Uuid,
        project_id: Uuid,
        name: String,
        description: String,
    },
    RegisterVersion {
        model_id: Uuid,
        experiment_id: Uuid,
        annotation: Option<String>,
    },
    SetStage {
        model_id: Uuid,
        version: u32,
        stage: Stage,
        annotation: String,
    },
    SetAlias {
        model_id: Uuid,
        alias: String,
        version: u32,
        annotation: String,
    },
    RemoveAlias {
        model_id: Uuid,
        alias: String,
        annotation: String,
    },
    DeleteVersion {
        model_id: Uuid,
        version: u32,
        annotation: String,
    },
}

/// What to append: events on one stream, expected to be at `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<RegistryEvent>,
}

/// The actor's standing: who, with which global roles.
struct Actor<'a> {
    id: Uuid,
    admin: bool,
    auditor: bool,
    state: &'a Registry,
}

impl Actor<'_> {
    /// Admins may do anything; others need at least `min` in the project.
    fn require(&self, project_id: Uuid, min: ProjectRole, what: &str) -> Result<(), DomainError> {
        if may(self.state, self.id, project_id, min) {
            return Ok(());
        }
        Err(DomainError::Forbidden(format!(
            "{what} needs the {} role in project {project_id}",
            role_name(min)
        )))
    }

    fn require_admin(&self, what: &str) -> Result<(), DomainError> {
        if self.admin {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "{what} needs the admin role"
            )))
        }
    }

    /// Comments are open to anyone who may read the project, auditors included.
    fn require_reader(&self, project_id: Uuid) -> Result<(), DomainError> {
        if self.auditor {
            return Ok(());
        }
        self.require(project_id, ProjectRole::Viewer, "commenting")
    }
}

fn role_name(r: ProjectRole) -> &'static str {
    match r {
        ProjectRole::Viewer => "viewer",
        ProjectRole::Editor => "editor",
        ProjectRole::Owner => "owner",
    }
}

/// Whether `user` is an admin or holds at least `min` in the project.
pub fn may(state: &Registry, user: Uuid, project_id: Uuid, min: ProjectRole) -> bool {
    let admin = state
        .users
        .get(&user)
        .is_some_and(|u| u.roles.contains(&GlobalRole::Admin));
    admin
        || state
            .projects
            .get(&project_id)
            .and_then(|p| p.members.get(&user))
            .is_some_and(|r| *r >= min)
}

/// Whether `user` may read `project` (viewers and up, admins, auditors).
pub fn can_read_project(state: &Registry, user: Uuid, project_id: Uuid) -> bool {
    let Some(u) = state.users.get(&user) else {
        return false;
    };
    !u.roles.is_empty()
        || state
            .projects
            .get(&project_id)
            .is_some_and(|p| p.members.contains_key(&user))
}

/// The first admin, created by `provenant init` (or the first `serve`) with its first token;
/// only while the registry has no user at all.
pub fn bootstrap_admin(
    state: &Registry,
    user_id: Uuid,
    username: String,
    token_id: Uuid,
    token_hash: String,
) -> Result<Decision, DomainError> {
    if !state.users.is_empty() {
        return Err(DomainError::Conflict(
            "the registry has users already".into(),
        ));
    }
    check_username(&username)?;
    let created = RegistryEvent::UserCreated(UserCreated {
        user_id,
        display_name: username.clone(),
        username,
        roles: vec![GlobalRole::Admin],
    });
    let token = RegistryEvent::ApiTokenIssued(ApiTokenIssued {
        user_id,
        token_id,
        name: "bootstrap".into(),
        token_hash,
        expires_at: None,
    });
    decision(state, "user", user_id, true, vec![created, token])
}

pub fn decide(state: &Registry, actor: Uuid, command: Command) -> Result<Decision, DomainError> {
    let user = state
        .users
        .get(&actor)
        .ok_or_else(|| DomainError::Forbidden(format!("unknown user {actor}")))?;
    let actor = Actor {
        id: actor,
        admin: user.roles.contains(&GlobalRole::Admin),
        auditor: user.roles.contains(&GlobalRole::Auditor),
        state,
    };
    use Command as C;
    match command {
        C::CreateUser {
            user_id,
            username,
            display_name,
            roles,
        } => {
            actor.require_admin("creating users")?;
            check_username(&username)?;
            if state.usernames.contains_key(&username) {
                return Err(DomainError::AlreadyExists(format!(
                    "username {username:?} is taken"
                )));
            }
            let display_name = text("display_name", display_name, 0, 200)?;
            let mut roles = roles;
            roles.sort();
            roles.dedup();
            one(
                state,
                "user",
                user_id,
                true,
                RegistryEvent::UserCreated(UserCreated {
                    user_id,
                    username,
                    display_name,
                    roles,
                }),
            )
        }
        C::GrantRole { user_id, role } => {
            actor.require_admin("granting roles")?;
            let target = find(&state.users, user_id, Kind::User)?;
            if target.roles.contains(&role) {
                return Err(DomainError::Conflict(format!(
                    "user {user_id} already has that role"
                )));
            }
            one(
                state,
                "user",
                user_id,
                false,
                RegistryEvent::UserRoleGranted(UserRoleGranted { user_id, role }),
            )
        }
        C::RevokeRole { user_id, role } => {
            actor.require_admin("revoking roles")?;
            let target = find(&state.users, user_id, Kind::User)?;
            if !target.roles.contains(&role) {
                return Err(DomainError::Conflict(format!(
                    "user {user_id} does not have that role"
                )));
            }
            let admins = state
                .users
                .values()
                .filter(|u| u.roles.contains(&GlobalRole::Admin))
                .count();
            if role == GlobalRole::Admin && admins == 1 {
                return Err(DomainError::Conflict(
                    "the last admin keeps the admin role".into(),
                ));
            }
            one(
                state,
                "user",
                user_id,
                false,
                RegistryEvent::UserRoleRevoked(UserRoleRevoked { user_id, role }),
            )
        }
        C::IssueToken {
            user_id,
            token_id,
            name,
            token_hash,
            expires_at,
            now,
        } => {
            if actor.id != user_id {
                actor.require_admin("issuing tokens for another user")?;
            }
            find(&state.users, user_id, Kind::User)?;
            let name = text("name", name, 1, 200)?;
            if expires_at.is_some_and(|t| t <= now) {
                return Err(DomainError::Invalid {
                    field: "expires_at",
                    detail: "must be in the future".into(),
                });
            }
            let expires_at = expires_at.map(crate::log::envelope::format_time);
            one(
                state,
                "user",
                user_id,
                false,
                RegistryEvent::ApiTokenIssued(ApiTokenIssued {
                    user_id,
                    token_id,
                    name,
                    token_hash,
                    expires_at,
                }),
            )
        }
        C::RevokeToken {
            user_id,
            token_id,
            reason,
        } => {
            if actor.id != user_id {
                actor.require_admin("revoking another user's tokens")?;
            }
            let target = find(&state.users, user_id, Kind::User)?;
            let token = find(&target.tokens, token_id, Kind::Token)?;
            if token.revoked.is_some() {
                return Err(DomainError::Conflict(format!(
                    "token {token_id} is already revoked"
                )));
            }
            let reason = optional_text("reason", reason)?;
            one(
                state,
                "user",
                user_id,
                false,
                RegistryEvent::ApiTokenRevoked(ApiTokenRevoked {
                    user_id,
                    token_id,
                    reason,
                }),
            )
        }
        C::CreateProject {
            project_id,
            name,
            description,
        } => {
            if actor.auditor && !actor.admin {
                return Err(DomainError::Forbidden("auditors change nothing".into()));
            }
            let name = text("name", name, 1, 200)?;
            let description = text("description", description, 0, 10_000)?;
            one(
                state,
                "project",
                project_id,
                true,
                RegistryEvent::ProjectCreated(ProjectCreated {
                    project_id,
                    name,
                    description,
                    owner: actor.id,
                }),
            )
        }
        C::UpdateProject {
            project_id,
            name,
            description,
        } => {
            let project = find(&state.projects, project_id, Kind::Project)?;
            actor.require(project_id, ProjectRole::Editor, "changing a project")?;
            let name = name.map(|n| text("name", n, 1, 200)).transpose()?;
            let description = description
                .map(|d| text("description", d, 0, 10_000))
                .transpose()?;
            let name = name.filter(|n| *n != project.name);
            let description = description.filter(|d| *d != project.description);
            if name.is_none() && description.is_none() {
                return Err(DomainError::Conflict("nothing to change".into()));
            }
            one(
                state,
                "project",
                project_id,
                false,
                RegistryEvent::ProjectUpdated(ProjectUpdated {
                    project_id,
                    name,
                    description,
                }),
            )
        }
        C::ShareProject {
            project_id,
            user_id,
            role,
        } => {
            let project = find(&state.projects, project_id, Kind::Project)?;
            actor.require(project_id, ProjectRole::Owner, "sharing a project")?;
            find(&state.users, user_id, Kind::User)?;
            let event = match project.members.get(&user_id) {
                None => RegistryEvent::ProjectShared(ProjectShared {
                    project_id,
                    user_id,
                    role,
                }),
                Some(&from) if from == role => {
                    return Err(DomainError::Conflict(format!(
                        "user {user_id} already has the {} role",
                        role_name(role)
                    )));
                }
                Some(&from) => {
                    if from == ProjectRole::Owner && owners(project) == 1 {
                        return Err(DomainError::Conflict(
                            "the last owner of a project cannot lose the owner role".into(),
                        ));
                    }
                    RegistryEvent::ProjectRoleChanged(ProjectRoleChanged {
                        project_id,
                        user_id,
                        from,
                        to: role,
                    })
                }
            };
            one(state, "project", project_id, false, event)
        }
        C::UnshareProject {
            project_id,
            user_id,
        } => {
            let project = find(&state.projects, project_id, Kind::Project)?;
            actor.require(project_id, ProjectRole::Owner, "unsharing a project")?;
            match project.members.get(&user_id) {
                None => {
                    return Err(DomainError::NotFound {
                        kind: Kind::Member,
                        id: user_id.to_string(),
                    });
                }
                Some(ProjectRole::Owner) if owners(project) == 1 => {
                    return Err(DomainError::Conflict(
                        "the last owner of a project cannot be removed".into(),
                    ));
                }
                Some(_) => {}
            }
            one(
                state,
                "project",
                project_id,
                false,
                RegistryEvent::ProjectUnshared(ProjectUnshared {
                    project_id,
                    user_id,
                }),
            )
        }
        C::AddComment {
            comment_id,
            subject,
            text: body,
        } => {
            let (kind, id) = match &subject {
                Subject::Project { project_id } => {
                    find(&state.projects, *project_id, Kind::Project)?;
                    actor.require_reader(*project_id)?;
                    ("project", *project_id)
                }
                Subject::Experiment { experiment_id } => {
                    let x = find(&state.experiments, *experiment_id, Kind::Experiment)?;
                    actor.require_reader(x.project_id)?;
                    ("experiment", *experiment_id)
                }
                Subject::ModelVersion { model_id, version } => {
                    let m = find(&state.models, *model_id, Kind::Model)?;
                    actor.require_reader(m.project_id)?;
                    live_version(m, *version)?;
                    ("model", *model_id)
                }
            };
            let body = text("text", body, 1, 10_000)?;
            one(
                state,
                kind,
                id,
                false,
                RegistryEvent::CommentAdded(CommentAdded {
                    comment_id,
                    subject,
                    text: body,
                }),
            )
        }
        C::ImportExperiment {
            experiment_id,
            project_id,
            display_name,
            metadata,
            parameters,
            tags,
            artifacts,
        } => {
            find(&state.projects, project_id, Kind::Project)?;
            actor.require(project_id, ProjectRole::Editor, "importing an experiment")?;
            let display_name = text("display_name", display_name, 1, 200)?;
            let mut metadata = metadata;
            // What the artifact says of its source model fills the metadata the import left out.
            for key in ["source_model_name", "source_model_version"] {
                let found = artifacts
                    .iter()
                    .find_map(|(_, i)| i.details.get(key)?.as_str());
                if let (Some(v), false) = (found, metadata.contains_key(key)) {
                    metadata.insert(key.to_string(), MetadataValue::String(v.to_string()));
                }
            }
            let metadata = normalize_metadata(metadata)?;
            if let Some(t) = &parameters.target_column {
                text("parameters.target_column", t.clone(), 1, 256)?;
            }
            let mut tags = tags
                .into_iter()
                .map(check_tag)
                .collect::<Result<Vec<_>, _>>()?;
            tags.sort();
            tags.dedup();
            if artifacts.is_empty() {
                return Err(DomainError::Invalid {
                    field: "artifacts",
                    detail: "an experiment needs at least one artifact".into(),
                });
            }
            let mut events = vec![];
            let mut refs = vec![];
            for (artifact, ingestion) in artifacts {
                text("artifact_type", artifact.artifact_type.clone(), 1, 128)?;
                events.push(RegistryEvent::ArtifactIngested(ArtifactIngested {
                    experiment_id,
                    artifact_id: artifact.artifact_id,
                    result: ingestion,
                }));
                refs.push(artifact);
            }
            events.insert(
                0,
                RegistryEvent::ExperimentImported(ExperimentImported {
                    experiment_id,
                    project_id,
                    display_name,
                    metadata,
                    parameters,
                    tags,
                    artifacts: refs,
                }),
            );
            decision(state, "experiment", experiment_id, true, events)
        }
        C::SetExperimentMetadata {
            experiment_id,
            entries,
        } => {
            editable_experiment(&actor, experiment_id, "changing metadata")?;
            if entries.is_empty() {
                return Err(DomainError::Invalid {
                    field: "entries",
                    detail: "nothing to set".into(),
                });
            }
            let entries = normalize_metadata(entries)?;
            one(
                state,
                "experiment",
                experiment_id,
                false,
                RegistryEvent::ExperimentMetadataSet(ExperimentMetadataSet {
                    experiment_id,
                    entries,
                }),
            )
        }
        C::TagExperiment { experiment_id, tag } => {
            let x = editable_experiment(&actor, experiment_id, "tagging")?;
            let tag = check_tag(tag)?;
            if x.tags.contains(&tag) {
                return Err(DomainError::Conflict(format!(
                    "experiment already has tag {tag:?}"
                )));
            }
            one(
                state,
                "experiment",
                experiment_id,
                false,
                RegistryEvent::ExperimentTagged(ExperimentTagged { experiment_id, tag }),
            )
        }
        C::UntagExperiment { experiment_id, tag } => {
            let x = editable_experiment(&actor, experiment_id, "untagging")?;
            if !x.tags.contains(&tag) {
                return Err(DomainError::NotFound {
                    kind: Kind::Tag,
                    id: tag,
                });
            }
            one(
                state,
                "experiment",
                experiment_id,
                false,
                RegistryEvent::ExperimentUntagged(ExperimentUntagged { experiment_id, tag }),
            )
        }
        C::DeleteExperiment {
            experiment_id,
            reason,
        } => {
            let x = editable_experiment(&actor, experiment_id, "deleting an experiment")?;
            if let Some(r) = &x.registered_as {
                let live = state
                    .models
                    .get(&r.model_id)
                    .and_then(|m| m.versions.get(&r.version))
                    .is_some_and(|v| v.deleted.is_none());
                if live {
                    return Err(DomainError::Conflict(format!(
                        "the experiment is model {} version {}; delete that version first",
                        r.model_id, r.version
                    )));
                }
            }
            let reason = optional_text("reason", reason)?;
            one(
                state,
                "experiment",
                experiment_id,
                false,
                RegistryEvent::ExperimentDeleted(ExperimentDeleted {
                    experiment_id,
                    reason,
                }),
            )
        }
        C::RestoreExperiment { experiment_id } => {
            let x = find(&state.experiments, experiment_id, Kind::Experiment)?;
            actor.require(x.project_id, ProjectRole::Editor, "restoring an experiment")?;
            if x.deleted.is_none() {
                return Err(DomainError::Conflict(
                    "the experiment is not deleted".into(),
                ));
            }
            one(
                state,
                "experiment",
                experiment_id,
                false,
                RegistryEvent::ExperimentRestored(ExperimentRestored { experiment_id }),
            )
        }
        C::CreateModel {
            model_id,
            project_id,
            name,
            description,
        } => {
            find(&state.projects, project_id, Kind::Project)?;
            actor.require(
                project_id,
                ProjectRole::Editor,
                "creating a registered model",
            )?;
            let name = text("name", name, 1, 200)?;
            let description = text("description", description, 0, 10_000)?;
            if state
                .models
                .values()
                .any(|m| m.project_id == project_id && m.name == name)
            {
                return Err(DomainError::AlreadyExists(format!(
                    "the project already has a model named {name:?}"
                )));
            }
            one(
                state,
                "model",
                model_id,
                true,
                RegistryEvent::RegisteredModelCreated(RegisteredModelCreated {
                    model_id,
                    project_id,
                    name,
                    description,
                }),
            )
        }
        C::RegisterVersion {
            model_id,
            experiment_id,
            annotation,
        } => {
            let m = editable_model(&actor, model_id, "registering a version")?;
            let x = find(&state.experiments, experiment_id, Kind::Experiment)?;
            if x.project_id != m.project_id {
                return Err(DomainError::Invalid {
                    field: "experiment_id",
                    detail: "the experiment belongs to another project".into(),
                });
            }
            if x.deleted.is_some() {
                return Err(DomainError::Conflict(
                    "the experiment is deleted; restore it first".into(),
                ));
            }
            if let Some(r) = &x.registered_as {
                return Err(DomainError::AlreadyExists(format!(
                    "experiment {experiment_id} is already registered as model {} version {}",
                    r.model_id, r.version
                )));
            }
            let annotation = optional_text("annotation", annotation)?;
            let version = m.versions.keys().next_back().map_or(1, |v| v + 1);
            one(
                state,
                "model",
                model_id,
                false,
                RegistryEvent::ModelVersionRegistered(ModelVersionRegistered {
                    model_id,
                    version,
                    experiment_id,
                    annotation,
                }),
            )
        }
        C::SetStage {
            model_id,
            version,
            stage,
            annotation,
        } => {
            let m = editable_model(&actor, model_id, "changing a stage")?;
            let v = live_version(m, version)?;
            let annotation = text("annotation", annotation, 1, 10_000)?;
            if v.stage == stage {
                return Err(DomainError::Conflict(format!(
                    "version {version} is already in stage {stage:?}"
                )));
            }
            one(
                state,
                "model",
                model_id,
                false,
                RegistryEvent::ModelVersionStageChanged(ModelVersionStageChanged {
                    model_id,
                    version,
                    from: v.stage,
                    to: stage,
                    annotation,
                }),
            )
        }
        C::SetAlias {
            model_id,
            alias,
            version,
            annotation,
        } => {
            let m = editable_model(&actor, model_id, "setting an alias")?;
            live_version(m, version)?;
            check_alias(&alias)?;
            let annotation = text("annotation", annotation, 1, 10_000)?;
            let previous_version = m.aliases.get(&alias).copied();
            if previous_version == Some(version) {
                return Err(DomainError::Conflict(format!(
                    "alias {alias:?} already points at version {version}"
                )));
            }
            one(
                state,
                "model",
                model_id,
                false,
                RegistryEvent::ModelAliasSet(ModelAliasSet {
                    model_id,
                    alias,
                    version,
                    previous_version,
                    annotation,
                }),
            )
        }
        C::RemoveAlias {
            model_id,
            alias,
            annotation,
        } => {
            let m = editable_model(&actor, model_id, "removing an alias")?;
            let version = *m.aliases.get(&alias).ok_or_else(|| DomainError::NotFound {
                kind: Kind::Alias,
                id: alias.clone(),
            })?;
            let annotation = text("annotation", annotation, 1, 10_000)?;
            one(
                state,
                "model",
                model_id,
                false,
                RegistryEvent::ModelAliasRemoved(ModelAliasRemoved {
                    model_id,
                    alias,
                    version,
                    annotation,
                }),
            )
        }
        C::DeleteVersion {
            model_id,
            version,
            annotation,
        } => {
            let m = editable_model(&actor, model_id, "deleting a version")?;
            live_version(m, version)?;
            let annotation = text("annotation", annotation, 1, 10_000)?;
            one(
                state,
                "model",
                model_id,
                false,
                RegistryEvent::ModelVersionDeleted(ModelVersionDeleted {
                    model_id,
                    version,
                    annotation,
                }),
            )
        }
    }
}

fn owners(p: &super::state::Project) -> usize {
    p.members
        .values()
        .filter(|r| **r == ProjectRole::Owner)
        .count()
}

fn find<T>(map: &BTreeMap<Uuid, T>, id: Uuid, kind: Kind) -> Result<&T, DomainError> {
    map.get(&id).ok_or(DomainError::NotFound {
        kind,
        id: id.to_string(),
    })
}

fn editable_experiment<'a>(
    actor: &Actor<'a>,
    id: Uuid,
    what: &str,
) -> Result<&'a Experiment, DomainError> {
    let x = find(&actor.state.experiments, id, Kind::Experiment)?;
    actor.require(x.project_id, ProjectRole::Editor, what)?;
    if x.deleted.is_some() {
        return Err(DomainError::Conflict(
            "the experiment is deleted; restore it first".into(),
        ));
    }
    Ok(x)
}

fn editable_model<'a>(
    actor: &Actor<'a>,
    id: Uuid,
    what: &str,
) -> Result<&'a RegisteredModel, DomainError> {
    let m = find(&actor.state.models, id, Kind::Model)?;
    actor.require(m.project_id, ProjectRole::Editor, what)?;
    Ok(m)
}

fn live_version(m: &RegisteredModel, version: u32) -> Result<&ModelVersion, DomainError> {
    match m.versions.get(&version) {
        Some(v) if v.deleted.is_none() => Ok(v),
        _ => Err(DomainError::NotFound {
            kind: Kind::Version,
            id: format!("{}/{version}", m.model_id),
        }),
    }
}

fn one(
    state: &Registry,
    kind: &str,
    id: Uuid,
    new: bool,
    event: RegistryEvent,
) -> Result<Decision, DomainError> {
    decision(state, kind, id, new, vec![event])
}

/// Events on the entity's stream, expecting it at its current version (or absent, if `new`).
fn decision(
    state: &Registry,
    kind: &str,
    id: Uuid,
    new: bool,
    events: Vec<RegistryEvent>,
) -> Result<Decision, DomainError> {
    let stream = stream_of(kind, id);
    let expected = state.stream_versions.get(&stream).copied();
    if new && expected.is_some() {
        return Err(DomainError::AlreadyExists(format!(
            "{stream} exists already"
        )));
    }
    Ok(Decision {
        stream,
        expected: ExpectedVersion::after(expected),
        events,
    })
}

/// A trimmed text field within `min..=max` characters and without control characters
/// (newlines and tabs allowed).
pub(super) fn text(
    field: &'static str,
    value: String,
    min: usize,
    max: usize,
) -> Result<String, DomainError> {
    let value = value.trim().to_string();
    let n = value.chars().count();
    if n < min || n > max {
        return Err(DomainError::Invalid {
            field,
            detail: format!("must be {min} to {max} characters, got {n}"),
        });
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::Invalid {
            field,
            detail: "must not contain control characters".into(),
        });
    }
    Ok(value)
}

fn optional_text(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, DomainError> {
    value.map(|v| text(field, v, 1, 10_000)).transpose()
}

fn check_username(name: &str) -> Result<(), DomainError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            field: "username",
            detail: "1 to 64 ASCII letters, digits, '.', '_', '-' or '@'".into(),
        })
    }
}

fn check_tag(tag: String) -> Result<String, DomainError> {
    let ok = (1..=64).contains(&tag.len())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if ok {
        Ok(tag)
    } else {
        Err(DomainError::Invalid {
            field: "tag",
            detail: format!("{tag:?}: 1 to 64 ASCII letters, digits, '.', '_', '-', ':' or '/'"),
        })
    }
}

/// MLflow's alias rules: letters, digits, '_' and '-'; not `latest`, not `v<digits>`.
fn check_alias(alias: &str) -> Result<(), DomainError> {
    let charset = (1..=64).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let version_like = alias.len() > 1
        && alias.starts_with(['v', 'V'])
        && alias[1..].chars().all(|c| c.is_ascii_digit());
    if charset && !version_like && !alias.eq_ignore_ascii_case("latest") {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            field: "alias",
            detail: format!(
                "{alias:?}: 1 to 64 letters, digits, '_' or '-', and not 'latest' or 'v<number>'"
            ),
        })
    }
}
