//! The registry's REST endpoints: users and tokens, projects, experiments, models.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::{Principal, forbidden, new_token};
use super::command::Written;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::blobs::{BlobError, BlobInfo};
use crate::domain::event::{Artifact, GlobalRole, Parameters, ProjectRole, Stage, Subject};
use crate::domain::schema::MetadataValue;
use crate::domain::state::{Experiment, ModelVersion, Project, RegisteredModel, User};
use crate::domain::{Command, Kind, Registry, can_read_project, may};
use crate::log::envelope::EventJson;
use crate::runtime::ingest;

type Created = (StatusCode, Json<Written>);

fn created(w: Written) -> Created {
    (StatusCode::CREATED, Json(w))
}

fn not_found(kind: Kind, id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(
        kind.code(),
        format!("no {} {id}", kind.code().trim_end_matches("_not_found")),
    )
}

/// A page of a list.
#[derive(Serialize, ToSchema)]
pub struct Page {
    pub items: Vec<Value>,
    pub total: usize,
    pub next_offset: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// At most 500; default 50.
    limit: Option<usize>,
    offset: Option<usize>,
}

const MAX_LIMIT: usize = 500;

fn page<T: Serialize>(all: Vec<T>, paging: &Paging) -> Result<Page, ApiError> {
    let limit = paging.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let offset = paging.offset.unwrap_or(0);
    let total = all.len();
    let items = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|v| serde_json::to_value(v).unwrap_or_default())
        .collect();
    let next_offset = (offset + limit < total).then_some(offset + limit);
    Ok(Page {
        items,
        total,
        next_offset,
    })
}

fn readable_project<'a>(
    reg: &'a Registry,
    p: &Principal,
    id: Uuid,
) -> Result<&'a Project, ApiError> {
    let project = reg
        .projects
        .get(&id)
        .ok_or_else(|| not_found(Kind::Project, id))?;
    if !can_read_project(reg, p.user_id, id) {
        return Err(forbidden(format!(
            "reading project {id} needs a role in it"
        )));
    }
    Ok(project)
}

fn readable_experiment<'a>(
    reg: &'a Registry,
    p: &Principal,
    id: Uuid,
) -> Result<&'a Experiment, ApiError> {
    let x = reg
        .experiments
        .get(&id)
        .ok_or_else(|| not_found(Kind::Experiment, id))?;
    readable_project(reg, p, x.project_id)?;
    Ok(x)
}

fn readable_model<'a>(
    reg: &'a Registry,
    p: &Principal,
    id: Uuid,
) -> Result<&'a RegisteredModel, ApiError> {
    let m = reg
        .models
        .get(&id)
        .ok_or_else(|| not_found(Kind::Model, id))?;
    readable_project(reg, p, m.project_id)?;
    Ok(m)
}

// ---- users and tokens ----

/// The caller's own user.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses((status = 200, body = User)))]
pub async fn me(State(s): State<AppState>, p: Principal) -> Result<Json<User>, ApiError> {
    let reg = s.registry.read();
    reg.users
        .get(&p.user_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found(Kind::User, p.user_id))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    roles: Vec<GlobalRole>,
}

/// Creates a user (admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser, responses((status = 201, body = Written)))]
pub async fn create_user(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<Created, ApiError> {
    let user_id = Uuid::now_v7();
    let display_name = b.display_name.unwrap_or_else(|| b.username.clone());
    let cmd = Command::CreateUser {
        user_id,
        username: b.username,
        display_name,
        roles: b.roles,
    };
    s.execute(p.user_id, cmd, |r| r.users.get(&user_id).cloned())
        .await
        .map(created)
}

/// Every user (admins and auditors).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(Paging), responses((status = 200, body = Page)))]
pub async fn list_users(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    p.require_reads_all("listing users")?;
    let reg = s.registry.read();
    page(reg.users.values().collect(), &q).map(Json)
}

/// One user (oneself, or admins and auditors).
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users", responses((status = 200, body = User)))]
pub async fn get_user(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<User>, ApiError> {
    if id != p.user_id {
        p.require_reads_all("reading another user")?;
    }
    let reg = s.registry.read();
    reg.users
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found(Kind::User, id))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: GlobalRole,
}

/// Grants a global role (admins).
#[utoipa::path(post, path = "/api/v1/users/{user_id}/roles", tag = "users", request_body = RoleBody, responses((status = 200, body = Written)))]
pub async fn grant_role(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<RoleBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::GrantRole {
        user_id,
        role: b.role,
    };
    s.execute(p.user_id, cmd, |r| r.users.get(&user_id).cloned())
        .await
        .map(Json)
}

/// Revokes a global role (admins).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/roles/{role}", tag = "users", responses((status = 200, body = Written)))]
pub async fn revoke_role(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((user_id, role)): ApiPath<(Uuid, GlobalRole)>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::RevokeRole { user_id, role };
    s.execute(p.user_id, cmd, |r| r.users.get(&user_id).cloned())
        .await
        .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    /// RFC 3339; none for a token that does not expire.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Issues an API token (for oneself, or by admins). The token is in this response only.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/tokens", tag = "users", request_body = NewToken, responses((status = 201, body = Written)))]
pub async fn issue_token(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<NewToken>,
) -> Result<Created, ApiError> {
    let expires_at = b
        .expires_at
        .map(|t| chrono::DateTime::parse_from_rfc3339(&t).map(|t| t.to_utc()))
        .transpose()
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("expires_at: not an RFC 3339 time: {e}"),
            )
        })?;
    let (token, token_hash) = new_token()?;
    let token_id = Uuid::now_v7();
    let cmd = Command::IssueToken {
        user_id,
        token_id,
        name: b.name,
        token_hash,
        expires_at,
        now: chrono::Utc::now(),
    };
    let view = |r: &Registry| {
        let t = r.users.get(&user_id)?.tokens.get(&token_id)?;
        Some(json!({"token": token, "token_id": token_id, "details": t}))
    };
    s.execute(p.user_id, cmd, view).await.map(created)
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

/// Revokes a token (its owner, or admins).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/tokens/{token_id}", tag = "users", request_body(content = Reason, description = "optional"), responses((status = 200, body = Written)))]
pub async fn revoke_token(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((user_id, token_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(b): ApiJson<Reason>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::RevokeToken {
        user_id,
        token_id,
        reason: b.reason,
    };
    s.execute(p.user_id, cmd, |r| {
        r.users.get(&user_id)?.tokens.get(&token_id).cloned()
    })
    .await
    .map(Json)
}

// ---- projects ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    name: String,
    #[serde(default)]
    description: String,
}

/// Creates a project; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = NewProject, responses((status = 201, body = Written)))]
pub async fn create_project(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<NewProject>,
) -> Result<Created, ApiError> {
    let project_id = Uuid::now_v7();
    let cmd = Command::CreateProject {
        project_id,
        name: b.name,
        description: b.description,
    };
    s.execute(p.user_id, cmd, |r| r.projects.get(&project_id).cloned())
        .await
        .map(created)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectFilter {
    /// Case-insensitive substring of the name.
    name: Option<String>,
}

fn name_matches(name: &str, filter: &Option<String>) -> bool {
    filter
        .as_ref()
        .is_none_or(|f| name.to_lowercase().contains(&f.to_lowercase()))
}

/// The projects the caller may read.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(ProjectFilter, Paging), responses((status = 200, body = Page)))]
pub async fn list_projects(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ProjectFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    let reg = s.registry.read();
    let items: Vec<&Project> = reg
        .projects
        .values()
        .filter(|x| {
            can_read_project(&reg, p.user_id, x.project_id) && name_matches(&x.name, &q.name)
        })
        .collect();
    page(items, &paging).map(Json)
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}", tag = "projects", responses((status = 200, body = Project)))]
pub async fn get_project(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Project>, ApiError> {
    let reg = s.registry.read();
    readable_project(&reg, &p, id).cloned().map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Renames or describes a project (editors).
#[utoipa::path(patch, path = "/api/v1/projects/{project_id}", tag = "projects", request_body = ProjectChange, responses((status = 200, body = Written)))]
pub async fn update_project(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<ProjectChange>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::UpdateProject {
        project_id,
        name: b.name,
        description: b.description,
    };
    s.execute(p.user_id, cmd, |r| r.projects.get(&project_id).cloned())
        .await
        .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    role: ProjectRole,
}

/// Shares the project with a user, or changes the user's role (owners).
#[utoipa::path(put, path = "/api/v1/projects/{project_id}/members/{user_id}", tag = "projects", request_body = MemberBody, responses((status = 200, body = Written)))]
pub async fn share_project(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((project_id, user_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(b): ApiJson<MemberBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::ShareProject {
        project_id,
        user_id,
        role: b.role,
    };
    s.execute(p.user_id, cmd, |r| {
        r.projects.get(&project_id).map(|x| x.members.clone())
    })
    .await
    .map(Json)
}

/// Removes a user from the project (owners; never the last owner).
#[utoipa::path(delete, path = "/api/v1/projects/{project_id}/members/{user_id}", tag = "projects", responses((status = 200, body = Written)))]
pub async fn unshare_project(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((project_id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::UnshareProject {
        project_id,
        user_id,
    };
    s.execute(p.user_id, cmd, |r| {
        r.projects.get(&project_id).map(|x| x.members.clone())
    })
    .await
    .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    text: String,
}

async fn comment(
    s: &AppState,
    p: &Principal,
    subject: Subject,
    text: String,
) -> Result<Created, ApiError> {
    let comment_id = Uuid::now_v7();
    let cmd = Command::AddComment {
        comment_id,
        subject,
        text,
    };
    s.execute(p.user_id, cmd, |_| Some(json!({"comment_id": comment_id})))
        .await
        .map(created)
}

/// Comments on a project (anyone who may read it).
#[utoipa::path(post, path = "/api/v1/projects/{project_id}/comments", tag = "projects", request_body = CommentBody, responses((status = 201, body = Written)))]
pub async fn comment_project(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<CommentBody>,
) -> Result<Created, ApiError> {
    comment(&s, &p, Subject::Project { project_id }, b.text).await
}

/// The project's events, and those of its experiments and models, in ledger order.
#[utoipa::path(get, path = "/api/v1/projects/{project_id}/events", tag = "projects", params(Paging), responses((status = 200, body = Page)))]
pub async fn project_events(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    let positions = readable_project(&s.registry.read(), &p, id)?
        .event_positions
        .clone();
    let mut listed = page(positions, &q)?;
    let mut events = Vec::with_capacity(listed.items.len());
    for position in &listed.items {
        let position = position.as_u64().unwrap_or_default();
        let e = s.ledger.event(position)?.ok_or_else(|| {
            ApiError::not_found("event_not_found", format!("no event at {position}"))
        })?;
        events.push(serde_json::to_value::<EventJson>(e.to_json()).unwrap_or_default());
    }
    listed.items = events;
    Ok(Json(listed))
}

// ---- experiments ----

/// The `experiment` part of an import: everything but the files.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSpec {
    display_name: String,
    #[serde(default)]
    metadata: BTreeMap<String, MetadataValue>,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    tags: Vec<String>,
    /// One entry per file part, matched by the part's file name.
    artifacts: Vec<ArtifactSpec>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    file: String,
    #[serde(rename = "type")]
    artifact_type: String,
}

/// Imports an experiment (editors): `multipart/form-data` with an `experiment` JSON part
/// first, then one file part per artifact. Files stream into the blob store, hashed as they
/// arrive; each artifact is then read by the artifact processor.
#[utoipa::path(post, path = "/api/v1/projects/{project_id}/experiments", tag = "experiments",
    request_body(content = ImportSpec, content_type = "multipart/form-data", description = "an `experiment` part (JSON, first) and file parts"),
    responses((status = 201, body = Written), (status = 413, description = "an artifact is over the size limit")))]
pub async fn import_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Created, ApiError> {
    let mut form = form.map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut stored: Vec<(String, BlobInfo)> = Vec::new();
    let result = import_parts(&s, &p, project_id, &mut form, &mut stored).await;
    if result.is_err() {
        // Leave no blob behind that this request brought and nothing refers to.
        let reg = s.registry.read();
        for (_, info) in stored.iter().filter(|(_, i)| i.created) {
            let hex = info.hash.to_hex();
            let referenced = reg
                .experiments
                .values()
                .flat_map(|x| &x.artifacts)
                .any(|a| a.artifact.blob_hash == hex);
            if !referenced {
                let _ = s.blobs.remove(&info.hash);
            }
        }
    }
    result.map(created)
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(e.status(), "invalid_multipart", e.body_text())
}

async fn import_parts(
    s: &AppState,
    p: &Principal,
    project_id: Uuid,
    form: &mut Multipart,
    stored: &mut Vec<(String, BlobInfo)>,
) -> Result<Written, ApiError> {
    let bad = |detail: String| ApiError::bad_request("invalid_multipart", detail);
    let first = form
        .next_field()
        .await
        .map_err(multipart_error)?
        .ok_or_else(|| bad("the form is empty".into()))?;
    if first.name() != Some("experiment") {
        return Err(bad("the first part must be `experiment` (JSON)".into()));
    }
    let spec_bytes = first.bytes().await.map_err(multipart_error)?;
    let spec: ImportSpec = serde_json::from_slice(&spec_bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_body"
        } else {
            "malformed_json"
        };
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, format!("experiment part: {e}"))
    })?;
    // Refuse before taking any file in.
    {
        let reg = s.registry.read();
        reg.projects
            .get(&project_id)
            .ok_or_else(|| not_found(Kind::Project, project_id))?;
        if !may(&reg, p.user_id, project_id, ProjectRole::Editor) {
            return Err(forbidden(format!(
                "importing an experiment needs the editor role in project {project_id}"
            )));
        }
    }
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let file = field.file_name().map(str::to_string).ok_or_else(|| {
            bad(format!(
                "part {:?} has no file name",
                field.name().unwrap_or("")
            ))
        })?;
        if stored.iter().any(|(f, _)| *f == file) {
            return Err(bad(format!("file {file:?} appears twice")));
        }
        let mut writer = s.blobs.writer().map_err(blob_error)?;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            writer.write(&chunk).map_err(blob_error)?;
        }
        stored.push((file, writer.finish().map_err(blob_error)?));
    }
    let mut artifacts = Vec::with_capacity(spec.artifacts.len());
    for a in &spec.artifacts {
        let (_, info) = stored
            .iter()
            .find(|(f, _)| *f == a.file)
            .ok_or_else(|| bad(format!("artifact {:?} has no file part", a.file)))?;
        artifacts.push((a, *info));
    }
    if let Some((f, _)) = stored
        .iter()
        .find(|(f, _)| !spec.artifacts.iter().any(|a| a.file == *f))
    {
        return Err(bad(format!("file part {f:?} is not listed in `artifacts`")));
    }
    let mut processed = Vec::with_capacity(artifacts.len());
    for (a, info) in artifacts {
        let (onnx, blobs, kind) = (s.onnx, s.blobs.clone(), a.artifact_type.clone());
        let ingestion =
            tokio::task::spawn_blocking(move || ingest::ingest(onnx, &blobs, &kind, &info.hash))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ingestion_failed",
                        e.to_string(),
                    )
                })?
                .map_err(blob_error)?;
        let artifact = Artifact {
            artifact_id: Uuid::now_v7(),
            artifact_type: a.artifact_type.clone(),
            file_name: a.file.clone(),
            blob_hash: info.hash.to_hex(),
            size: info.size,
        };
        processed.push((artifact, ingestion));
    }
    let experiment_id = Uuid::now_v7();
    let cmd = Command::ImportExperiment {
        experiment_id,
        project_id,
        display_name: spec.display_name,
        metadata: spec.metadata,
        parameters: spec.parameters,
        tags: spec.tags,
        artifacts: processed,
    };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).cloned()
    })
    .await
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "artifact_too_large",
            e.to_string(),
        ),
        e => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob_store_failed",
            e.to_string(),
        ),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExperimentFilter {
    /// Case-insensitive substring of the display name.
    name: Option<String>,
    tag: Option<String>,
    /// Include soft-deleted experiments.
    #[serde(default)]
    include_deleted: bool,
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}/experiments", tag = "experiments", params(ExperimentFilter, Paging), responses((status = 200, body = Page)))]
pub async fn list_experiments(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ExperimentFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    let reg = s.registry.read();
    readable_project(&reg, &p, id)?;
    let items: Vec<&Experiment> = reg
        .experiments
        .values()
        .filter(|x| x.project_id == id)
        .filter(|x| q.include_deleted || x.deleted.is_none())
        .filter(|x| name_matches(&x.display_name, &q.name))
        .filter(|x| q.tag.as_ref().is_none_or(|t| x.tags.contains(t)))
        .collect();
    page(items, &paging).map(Json)
}

#[utoipa::path(get, path = "/api/v1/experiments/{experiment_id}", tag = "experiments", responses((status = 200, body = Experiment)))]
pub async fn get_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Experiment>, ApiError> {
    let reg = s.registry.read();
    readable_experiment(&reg, &p, id).cloned().map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    entries: BTreeMap<String, MetadataValue>,
}

/// Sets metadata entries, e.g. `input_schema` when the artifact did not give one (editors).
#[utoipa::path(patch, path = "/api/v1/experiments/{experiment_id}/metadata", tag = "experiments", request_body = MetadataBody, responses((status = 200, body = Written)))]
pub async fn set_metadata(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(experiment_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<MetadataBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::SetExperimentMetadata {
        experiment_id,
        entries: b.entries,
    };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).cloned()
    })
    .await
    .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    tag: String,
}

#[utoipa::path(post, path = "/api/v1/experiments/{experiment_id}/tags", tag = "experiments", request_body = TagBody, responses((status = 200, body = Written)))]
pub async fn tag_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(experiment_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<TagBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::TagExperiment {
        experiment_id,
        tag: b.tag,
    };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).map(|x| x.tags.clone())
    })
    .await
    .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/experiments/{experiment_id}/tags/{tag}", tag = "experiments", responses((status = 200, body = Written)))]
pub async fn untag_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((experiment_id, tag)): ApiPath<(Uuid, String)>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::UntagExperiment { experiment_id, tag };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).map(|x| x.tags.clone())
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/v1/experiments/{experiment_id}/comments", tag = "experiments", request_body = CommentBody, responses((status = 201, body = Written)))]
pub async fn comment_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(experiment_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<CommentBody>,
) -> Result<Created, ApiError> {
    comment(&s, &p, Subject::Experiment { experiment_id }, b.text).await
}

/// Soft-deletes an experiment (editors); it can be restored.
#[utoipa::path(delete, path = "/api/v1/experiments/{experiment_id}", tag = "experiments", request_body(content = Reason, description = "optional"), responses((status = 200, body = Written)))]
pub async fn delete_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(experiment_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<Reason>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::DeleteExperiment {
        experiment_id,
        reason: b.reason,
    };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).cloned()
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/v1/experiments/{experiment_id}/restore", tag = "experiments", responses((status = 200, body = Written)))]
pub async fn restore_experiment(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(experiment_id): ApiPath<Uuid>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::RestoreExperiment { experiment_id };
    s.execute(p.user_id, cmd, |r| {
        r.experiments.get(&experiment_id).cloned()
    })
    .await
    .map(Json)
}

// ---- registered models and versions ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    name: String,
    #[serde(default)]
    description: String,
}

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/models", tag = "models", request_body = NewModel, responses((status = 201, body = Written)))]
pub async fn create_model(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<NewModel>,
) -> Result<Created, ApiError> {
    let model_id = Uuid::now_v7();
    let cmd = Command::CreateModel {
        model_id,
        project_id,
        name: b.name,
        description: b.description,
    };
    s.execute(p.user_id, cmd, |r| r.models.get(&model_id).cloned())
        .await
        .map(created)
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}/models", tag = "models", params(ProjectFilter, Paging), responses((status = 200, body = Page)))]
pub async fn list_models(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ProjectFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    let reg = s.registry.read();
    readable_project(&reg, &p, id)?;
    let items: Vec<&RegisteredModel> = reg
        .models
        .values()
        .filter(|m| m.project_id == id && name_matches(&m.name, &q.name))
        .collect();
    page(items, &paging).map(Json)
}

#[utoipa::path(get, path = "/api/v1/models/{model_id}", tag = "models", responses((status = 200, body = RegisteredModel)))]
pub async fn get_model(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<RegisteredModel>, ApiError> {
    let reg = s.registry.read();
    readable_model(&reg, &p, id).cloned().map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    experiment_id: Uuid,
    #[serde(default)]
    annotation: Option<String>,
}

/// Registers an experiment as the model's next version (editors; once per experiment).
#[utoipa::path(post, path = "/api/v1/models/{model_id}/versions", tag = "models", request_body = NewVersion, responses((status = 201, body = Written)))]
pub async fn register_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(model_id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<NewVersion>,
) -> Result<Created, ApiError> {
    let cmd = Command::RegisterVersion {
        model_id,
        experiment_id: b.experiment_id,
        annotation: b.annotation,
    };
    let view = |r: &Registry| {
        r.models
            .get(&model_id)?
            .versions
            .values()
            .next_back()
            .cloned()
    };
    s.execute(p.user_id, cmd, view).await.map(created)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionFilter {
    stage: Option<Stage>,
    /// Include deleted versions.
    #[serde(default)]
    include_deleted: bool,
}

#[utoipa::path(get, path = "/api/v1/models/{model_id}/versions", tag = "models", params(VersionFilter, Paging), responses((status = 200, body = Page)))]
pub async fn list_versions(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<VersionFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page>, ApiError> {
    let reg = s.registry.read();
    let m = readable_model(&reg, &p, id)?;
    let items: Vec<&ModelVersion> = m
        .versions
        .values()
        .filter(|v| q.include_deleted || v.deleted.is_none())
        .filter(|v| q.stage.is_none_or(|st| v.stage == st))
        .collect();
    page(items, &paging).map(Json)
}

#[utoipa::path(get, path = "/api/v1/models/{model_id}/versions/{version}", tag = "models", responses((status = 200, body = ModelVersion)))]
pub async fn get_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, version)): ApiPath<(Uuid, u32)>,
) -> Result<Json<ModelVersion>, ApiError> {
    let reg = s.registry.read();
    let m = readable_model(&reg, &p, id)?;
    m.versions
        .get(&version)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found(Kind::Version, format!("{id}/{version}")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    stage: Stage,
    /// Why; required.
    annotation: String,
}

#[utoipa::path(put, path = "/api/v1/models/{model_id}/versions/{version}/stage", tag = "models", request_body = StageBody, responses((status = 200, body = Written)))]
pub async fn set_stage(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, version)): ApiPath<(Uuid, u32)>,
    ApiJson(b): ApiJson<StageBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::SetStage {
        model_id,
        version,
        stage: b.stage,
        annotation: b.annotation,
    };
    s.execute(p.user_id, cmd, |r| {
        r.models.get(&model_id)?.versions.get(&version).cloned()
    })
    .await
    .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    version: u32,
    /// Why; required.
    annotation: String,
}

#[utoipa::path(put, path = "/api/v1/models/{model_id}/aliases/{alias}", tag = "models", request_body = AliasBody, responses((status = 200, body = Written)))]
pub async fn set_alias(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, alias)): ApiPath<(Uuid, String)>,
    ApiJson(b): ApiJson<AliasBody>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::SetAlias {
        model_id,
        alias,
        version: b.version,
        annotation: b.annotation,
    };
    s.execute(p.user_id, cmd, |r| {
        r.models.get(&model_id).map(|m| m.aliases.clone())
    })
    .await
    .map(Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// Why; required.
    annotation: String,
}

#[utoipa::path(delete, path = "/api/v1/models/{model_id}/aliases/{alias}", tag = "models", request_body = Annotation, responses((status = 200, body = Written)))]
pub async fn remove_alias(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, alias)): ApiPath<(Uuid, String)>,
    ApiJson(b): ApiJson<Annotation>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::RemoveAlias {
        model_id,
        alias,
        annotation: b.annotation,
    };
    s.execute(p.user_id, cmd, |r| {
        r.models.get(&model_id).map(|m| m.aliases.clone())
    })
    .await
    .map(Json)
}

/// The model version report (`text/html`): lineage, stage changes, comments, deployments,
/// scoring volume, reproduction spot checks and the ledger's verification status. It verifies
/// the whole log, so it takes as long as `provenant verify` does.
#[utoipa::path(get, path = "/api/v1/models/{model_id}/versions/{version}/report", tag = "models", responses((status = 200, content_type = "text/html", body = String)))]
pub async fn version_report(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((id, version)): ApiPath<(Uuid, u32)>,
) -> Result<axum::response::Html<String>, ApiError> {
    readable_model(&s.registry.read(), &p, id)?;
    crate::report::model_version(&s, id, version, std::sync::Arc::new(|_, _, _| {}))
        .await
        .map(axum::response::Html)
}

#[utoipa::path(delete, path = "/api/v1/models/{model_id}/versions/{version}", tag = "models", request_body = Annotation, responses((status = 200, body = Written)))]
pub async fn delete_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, version)): ApiPath<(Uuid, u32)>,
    ApiJson(b): ApiJson<Annotation>,
) -> Result<Json<Written>, ApiError> {
    let cmd = Command::DeleteVersion {
        model_id,
        version,
        annotation: b.annotation,
    };
    s.execute(p.user_id, cmd, |r| {
        r.models.get(&model_id)?.versions.get(&version).cloned()
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/v1/models/{model_id}/versions/{version}/comments", tag = "models", request_body = CommentBody, responses((status = 201, body = Written)))]
pub async fn comment_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((model_id, version)): ApiPath<(Uuid, u32)>,
    ApiJson(b): ApiJson<CommentBody>,
) -> Result<Created, ApiError> {
    comment(&s, &p, Subject::ModelVersion { model_id, version }, b.text).await
}
