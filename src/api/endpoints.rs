//! Endpoints over REST: stable scoring paths pointed at deployments (`domain::endpoint`).
//! Scoring through one is `/{endpoint}/model/score`, resolved in `scoring`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Principal, forbidden};
use super::command::Written;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::domain::endpoint::{self, Endpoint};
use crate::domain::{Kind, can_read_project};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointBody {
    /// The Healthy deployment, of the endpoint's project, that takes its traffic.
    deployment_id: Uuid,
    /// Why; required.
    reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why; required.
    reason: String,
}

async fn decide(
    s: &AppState,
    p: &Principal,
    name: String,
    target: Option<Uuid>,
    reason: String,
) -> Result<Json<Written>, ApiError> {
    let actor = p.user_id;
    let key = name.clone();
    s.run(
        actor,
        |r| endpoint::decide(r, actor, name, target, reason),
        |r| r.endpoints.get(&key).cloned(),
    )
    .await
    .map(Json)
}

/// Creates an endpoint on a deployment, or re-points it to another in one event (editors of
/// the project).
#[utoipa::path(put, path = "/api/v1/endpoints/{name}", tag = "deployments", request_body = PointBody, responses((status = 200, body = Written), (status = 409, description = "`conflict`: not Healthy, another project's, or already there"), (status = 422, description = "`invalid_field`: the name or the reason")))]
pub async fn point(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<PointBody>,
) -> Result<Json<Written>, ApiError> {
    decide(&s, &p, name, Some(b.deployment_id), b.reason).await
}

/// Stops an endpoint serving (editors of its project); its name stays with the project.
#[utoipa::path(delete, path = "/api/v1/endpoints/{name}", tag = "deployments", request_body = ReasonBody, responses((status = 200, body = Written)))]
pub async fn remove(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Written>, ApiError> {
    decide(&s, &p, name, None, b.reason).await
}

/// The endpoints of the projects the caller may read, with their history.
#[utoipa::path(get, path = "/api/v1/endpoints", tag = "deployments", responses((status = 200, body = [Endpoint])))]
pub async fn list(State(s): State<AppState>, p: Principal) -> Json<Vec<Endpoint>> {
    let reg = s.registry.read();
    Json(
        reg.endpoints
            .values()
            .filter(|e| can_read_project(&reg, p.user_id, e.project_id))
            .cloned()
            .collect(),
    )
}

#[utoipa::path(get, path = "/api/v1/endpoints/{name}", tag = "deployments", responses((status = 200, body = Endpoint), (status = 403, description = "not a reader of its project"), (status = 404, description = "no such endpoint")))]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let reg = s.registry.read();
    let e = reg.endpoints.get(&name).ok_or_else(|| {
        ApiError::not_found(Kind::Endpoint.code(), format!("no endpoint {name:?}"))
    })?;
    if !can_read_project(&reg, p.user_id, e.project_id) {
        return Err(forbidden(format!(
            "reading endpoint {name:?} needs a role in its project"
        )));
    }
    Ok(Json(e.clone()))
}
