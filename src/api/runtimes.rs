//! Runtime management over REST: runtime images, image versions, runtimes (admins change,
//! every authenticated user reads), the artifact type catalog, and the runtimes an
//! experiment can be deployed on.
//!
//! State transitions are `POST …/{id}:deprecate` style: the path's last segment is the
//! entity id, a colon, and the action (ids never contain a colon).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::command::Written;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::domain::runtime::{
    Catalog, EntityRef, ImageSpec, ImageVersionSpec, RuntimeCommand, RuntimeSpec, RuntimeState,
};
use crate::domain::{Kind, can_read_project};
use crate::projections::runtime_ceilings::{Compatible, compatible, entity_json};

fn missing(e: &EntityRef) -> ApiError {
    ApiError::not_found(Kind::Runtime.code(), format!("no {e}"))
}

/// Splits `id:action` and maps the action to the state it sets.
fn action(
    target: &str,
    actions: &[(&str, RuntimeState)],
) -> Result<(String, RuntimeState), ApiError> {
    let names = || {
        actions
            .iter()
            .map(|(a, _)| format!(":{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (id, verb) = target.rsplit_once(':').ok_or_else(|| {
        ApiError::bad_request(
            "invalid_action",
            format!("{target:?}: expected <id>:<action>, one of {}", names()),
        )
    })?;
    let state = actions
        .iter()
        .find(|(a, _)| *a == verb)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_action",
                format!(
                    "{verb:?} is not an action here; expected one of {}",
                    names()
                ),
            )
        })?;
    Ok((id.to_string(), state))
}

const ENTITY_ACTIONS: [(&str, RuntimeState); 3] = [
    ("enable", RuntimeState::Active),
    ("deprecate", RuntimeState::Deprecated),
    ("disable", RuntimeState::Disabled),
];
const VERSION_ACTIONS: [(&str, RuntimeState); 3] = [
    ("activate", RuntimeState::Active),
    ("deprecate", RuntimeState::Deprecated),
    ("disable", RuntimeState::Disabled),
];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why; required.
    reason: String,
}

async fn set_state(
    s: &AppState,
    p: &Principal,
    entity: EntityRef,
    to: RuntimeState,
    reason: String,
) -> Result<Json<Written>, ApiError> {
    let view_of = entity.clone();
    let cmd = RuntimeCommand::SetState { entity, to, reason };
    s.execute_runtime(p.user_id, cmd, move |r| entity_json(&r.runtimes, &view_of))
        .await
        .map(Json)
}

async fn delete(
    s: &AppState,
    p: &Principal,
    entity: EntityRef,
    reason: String,
) -> Result<Json<Written>, ApiError> {
    let view_of = entity.clone();
    let cmd = RuntimeCommand::Delete { entity, reason };
    s.execute_runtime(p.user_id, cmd, move |r| entity_json(&r.runtimes, &view_of))
        .await
        .map(Json)
}

fn found(c: &Catalog, e: EntityRef) -> Result<Json<Value>, ApiError> {
    entity_json(c, &e).map(Json).ok_or_else(|| missing(&e))
}

/// Every runtime image (deleted ones included, marked).
#[utoipa::path(get, path = "/api/v1/runtime-images", tag = "runtimes", responses((status = 200, description = "runtime images with both sources' states")))]
pub async fn list_images(State(s): State<AppState>, _p: Principal) -> Json<Vec<Value>> {
    let reg = s.registry.read();
    let c = &reg.runtimes;
    Json(
        c.images
            .keys()
            .filter_map(|id| {
                entity_json(
                    c,
                    &EntityRef::Image {
                        image_id: id.clone(),
                    },
                )
            })
            .collect(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    image_id: String,
    #[serde(flatten)]
    spec: ImageSpec,
}

/// Creates an API-managed runtime image (admins).
#[utoipa::path(post, path = "/api/v1/runtime-images", tag = "runtimes", request_body = NewImage, responses((status = 201, body = Written)))]
pub async fn create_image(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<NewImage>,
) -> Result<(StatusCode, Json<Written>), ApiError> {
    let e = EntityRef::Image {
        image_id: b.image_id.clone(),
    };
    let cmd = RuntimeCommand::CreateImage {
        image_id: b.image_id,
        spec: b.spec,
    };
    let w = s
        .execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

#[utoipa::path(get, path = "/api/v1/runtime-images/{image_id}", tag = "runtimes", responses((status = 200, description = "the image")))]
pub async fn get_image(
    State(s): State<AppState>,
    _p: Principal,
    ApiPath(image_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    found(&s.registry.read().runtimes, EntityRef::Image { image_id })
}

/// Changes an API-managed image's definition (admins).
#[utoipa::path(patch, path = "/api/v1/runtime-images/{image_id}", tag = "runtimes", request_body = ImageSpec, responses((status = 200, body = Written)))]
pub async fn update_image(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(image_id): ApiPath<String>,
    ApiJson(spec): ApiJson<ImageSpec>,
) -> Result<Json<Written>, ApiError> {
    let e = EntityRef::Image {
        image_id: image_id.clone(),
    };
    let cmd = RuntimeCommand::UpdateImage { image_id, spec };
    s.execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await
        .map(Json)
}

/// Deletes an API-managed image without live versions or runtimes (admins).
#[utoipa::path(delete, path = "/api/v1/runtime-images/{image_id}", tag = "runtimes", request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn delete_image(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(image_id): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    delete(&s, &p, EntityRef::Image { image_id }, b.reason).await
}

/// `POST /api/v1/runtime-images/{image_id}:enable|:deprecate|:disable` (admins), with a reason.
#[utoipa::path(post, path = "/api/v1/runtime-images/{image_id}", tag = "runtimes", params(("image_id" = String, Path, description = "`<image id>:enable`, `:deprecate` or `:disable`")), request_body = ReasonBody, responses((status = 200, body = Written), (status = 409, description = "`state_ceiling`: the bootstrap source caps the state")))]
pub async fn image_action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    let (image_id, to) = action(&target, &ENTITY_ACTIONS)?;
    set_state(&s, &p, EntityRef::Image { image_id }, to, b.reason).await
}

#[utoipa::path(get, path = "/api/v1/runtime-images/{image_id}/versions", tag = "runtimes", responses((status = 200, description = "the image's versions")))]
pub async fn list_versions(
    State(s): State<AppState>,
    _p: Principal,
    ApiPath(image_id): ApiPath<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let reg = s.registry.read();
    let c = &reg.runtimes;
    if !c.images.contains_key(&image_id) {
        return Err(missing(&EntityRef::Image { image_id }));
    }
    let prefix = format!("{image_id}@");
    Ok(Json(
        c.versions
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|v| {
                entity_json(
                    c,
                    &EntityRef::ImageVersion {
                        image_id: image_id.clone(),
                        version: v.to_string(),
                    },
                )
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    version: String,
    #[serde(flatten)]
    spec: ImageVersionSpec,
}

/// Adds an API-managed version to an image (admins).
#[utoipa::path(post, path = "/api/v1/runtime-images/{image_id}/versions", tag = "runtimes", request_body = NewVersion, responses((status = 201, body = Written)))]
pub async fn create_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(image_id): ApiPath<String>,
    ApiJson(b): ApiJson<NewVersion>,
) -> Result<(StatusCode, Json<Written>), ApiError> {
    let e = EntityRef::ImageVersion {
        image_id: image_id.clone(),
        version: b.version.clone(),
    };
    let cmd = RuntimeCommand::CreateImageVersion {
        image_id,
        version: b.version,
        spec: b.spec,
    };
    let w = s
        .execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

#[utoipa::path(get, path = "/api/v1/runtime-images/{image_id}/versions/{version}", tag = "runtimes", responses((status = 200, description = "the version")))]
pub async fn get_version(
    State(s): State<AppState>,
    _p: Principal,
    ApiPath((image_id, version)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    found(
        &s.registry.read().runtimes,
        EntityRef::ImageVersion { image_id, version },
    )
}

#[utoipa::path(patch, path = "/api/v1/runtime-images/{image_id}/versions/{version}", tag = "runtimes", request_body = ImageVersionSpec, responses((status = 200, body = Written)))]
pub async fn update_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((image_id, version)): ApiPath<(String, String)>,
    ApiJson(spec): ApiJson<ImageVersionSpec>,
) -> Result<Json<Written>, ApiError> {
    let e = EntityRef::ImageVersion {
        image_id: image_id.clone(),
        version: version.clone(),
    };
    let cmd = RuntimeCommand::UpdateImageVersion {
        image_id,
        version,
        spec,
    };
    s.execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/runtime-images/{image_id}/versions/{version}", tag = "runtimes", request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn delete_version(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((image_id, version)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    delete(
        &s,
        &p,
        EntityRef::ImageVersion { image_id, version },
        b.reason,
    )
    .await
}

/// `POST /api/v1/runtime-images/{image_id}/versions/{version}:activate|:deprecate|:disable`.
#[utoipa::path(post, path = "/api/v1/runtime-images/{image_id}/versions/{version}", tag = "runtimes", params(("image_id" = String, Path), ("version" = String, Path, description = "`<version>:activate`, `:deprecate` or `:disable`")), request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn version_action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath((image_id, target)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    let (version, to) = action(&target, &VERSION_ACTIONS)?;
    set_state(
        &s,
        &p,
        EntityRef::ImageVersion { image_id, version },
        to,
        b.reason,
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/runtimes", tag = "runtimes", responses((status = 200, description = "runtimes with both sources' states")))]
pub async fn list_runtimes(State(s): State<AppState>, _p: Principal) -> Json<Vec<Value>> {
    let reg = s.registry.read();
    let c = &reg.runtimes;
    Json(
        c.runtimes
            .keys()
            .filter_map(|id| {
                entity_json(
                    c,
                    &EntityRef::Runtime {
                        runtime_id: id.clone(),
                    },
                )
            })
            .collect(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuntime {
    runtime_id: String,
    #[serde(flatten)]
    spec: RuntimeSpec,
}

#[utoipa::path(post, path = "/api/v1/runtimes", tag = "runtimes", request_body = NewRuntime, responses((status = 201, body = Written)))]
pub async fn create_runtime(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<NewRuntime>,
) -> Result<(StatusCode, Json<Written>), ApiError> {
    let e = EntityRef::Runtime {
        runtime_id: b.runtime_id.clone(),
    };
    let cmd = RuntimeCommand::CreateRuntime {
        runtime_id: b.runtime_id,
        spec: b.spec,
    };
    let w = s
        .execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

#[utoipa::path(get, path = "/api/v1/runtimes/{runtime_id}", tag = "runtimes", responses((status = 200, description = "the runtime")))]
pub async fn get_runtime(
    State(s): State<AppState>,
    _p: Principal,
    ApiPath(runtime_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    found(
        &s.registry.read().runtimes,
        EntityRef::Runtime { runtime_id },
    )
}

#[utoipa::path(patch, path = "/api/v1/runtimes/{runtime_id}", tag = "runtimes", request_body = RuntimeSpec, responses((status = 200, body = Written)))]
pub async fn update_runtime(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(runtime_id): ApiPath<String>,
    ApiJson(spec): ApiJson<RuntimeSpec>,
) -> Result<Json<Written>, ApiError> {
    let e = EntityRef::Runtime {
        runtime_id: runtime_id.clone(),
    };
    let cmd = RuntimeCommand::UpdateRuntime { runtime_id, spec };
    s.execute_runtime(p.user_id, cmd, |r| entity_json(&r.runtimes, &e))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/runtimes/{runtime_id}", tag = "runtimes", request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn delete_runtime(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(runtime_id): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    delete(&s, &p, EntityRef::Runtime { runtime_id }, b.reason).await
}

/// `POST /api/v1/runtimes/{runtime_id}:enable|:deprecate|:disable` (admins), with a reason.
#[utoipa::path(post, path = "/api/v1/runtimes/{runtime_id}", tag = "runtimes", params(("runtime_id" = String, Path, description = "`<runtime id>:enable`, `:deprecate` or `:disable`")), request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn runtime_action(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(target): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    let (runtime_id, to) = action(&target, &ENTITY_ACTIONS)?;
    set_state(&s, &p, EntityRef::Runtime { runtime_id }, to, b.reason).await
}

/// The artifact types and the model types their processors yield, and the last bootstrap.
#[utoipa::path(get, path = "/api/v1/runtime-catalog", tag = "runtimes", responses((status = 200, description = "artifact types and the last bootstrap application")))]
pub async fn catalog(State(s): State<AppState>, _p: Principal) -> Json<Value> {
    let reg = s.registry.read();
    let c = &reg.runtimes;
    Json(json!({
        "artifact_types": c.artifact_types.values().collect::<Vec<_>>(),
        "bootstrap": c.bootstrap.as_ref().map(|(hash, at)| json!({"file_hash": hash, "applied": at})),
    }))
}

/// For each artifact: its model type and the runtimes serving it, with their image's
/// versions; every entity with its effective state (readers of the project).
#[utoipa::path(get, path = "/api/v1/experiments/{experiment_id}/runtimes", tag = "runtimes", responses((status = 200, body = [Compatible])))]
pub async fn experiment_runtimes(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<Compatible>>, ApiError> {
    let reg = s.registry.read();
    let x = reg.experiments.get(&id).ok_or_else(|| {
        ApiError::not_found(Kind::Experiment.code(), format!("no experiment {id}"))
    })?;
    if !can_read_project(&reg, p.user_id, x.project_id) {
        return Err(super::auth::forbidden(format!(
            "reading experiment {id} needs a role in its project"
        )));
    }
    Ok(Json(
        x.artifacts.iter().map(|a| compatible(&reg, a)).collect(),
    ))
}
