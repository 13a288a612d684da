//! The installation's environments, and runtime image upgrades across deployments.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::command::Written;
use super::error::ApiError;
use super::extract::ApiJson;
use crate::domain::can_read_project;
use crate::domain::lifecycle::{Change, Upgrade, upgrades};
use crate::domain::runtime::Environment;

/// The environments deployments go to, each with who may change what runs there.
#[utoipa::path(get, path = "/api/v1/environments", tag = "deployments", responses((status = 200, body = Vec<Environment>)))]
pub async fn environments(State(s): State<AppState>, _p: Principal) -> Json<Vec<Environment>> {
    Json(
        s.registry
            .read()
            .runtimes
            .environments
            .values()
            .cloned()
            .collect(),
    )
}

/// Every variant of a serving deployment the caller may read whose runtime image has a newer
/// ACTIVE version than the one it runs.
#[utoipa::path(get, path = "/api/v1/runtime-upgrades", tag = "deployments", responses((status = 200, body = Vec<Upgrade>)))]
pub async fn list(State(s): State<AppState>, p: Principal) -> Json<Vec<Upgrade>> {
    let reg = s.registry.read();
    Json(
        upgrades(&reg)
            .into_iter()
            .filter(|u| can_read_project(&reg, p.user_id, u.project_id))
            .collect(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeMany {
    /// The deployments to upgrade, each on its own (1 to 100).
    pub deployment_ids: Vec<Uuid>,
    /// A version of each one's runtime image (default: the newest ACTIVE one after its own).
    #[serde(default)]
    pub image_version: Option<String>,
    pub reason: String,
}

/// What became of one deployment's upgrade.
#[derive(Serialize, ToSchema)]
pub struct Upgraded {
    pub deployment_id: Uuid,
    /// `Applied`, `RolledBack`, or `refused` (see `error`).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<Written>,
    /// Why it was refused: the error the single upgrade would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// Upgrades many deployments, one update in place each (as `:upgrade` does), in order; one
/// refused or rolled back does not stop the others. Answers each one's outcome.
#[utoipa::path(post, path = "/api/v1/runtime-upgrades", tag = "deployments", request_body = UpgradeMany, responses((status = 200, body = Vec<Upgraded>), (status = 422, description = "`invalid_field`: no deployment, or more than 100")))]
pub async fn upgrade(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<UpgradeMany>,
) -> Result<Json<Vec<Upgraded>>, ApiError> {
    if b.deployment_ids.is_empty() || b.deployment_ids.len() > 100 {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!(
                "deployment_ids: 1 to 100 deployments, got {}",
                b.deployment_ids.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for id in b.deployment_ids {
        let change = Change::RuntimeUpgrade {
            image_version: b.image_version.clone(),
        };
        out.push(
            match s.update(p.user_id, id, change, b.reason.clone()).await {
                Ok(written) => Upgraded {
                    deployment_id: id,
                    outcome: written.data["update"]["outcome"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_string(),
                    written: Some(written),
                    error: None,
                },
                Err(e) => Upgraded {
                    deployment_id: id,
                    outcome: "refused".into(),
                    written: None,
                    error: Some(serde_json::json!({
                        "status": e.status.as_u16(),
                        "code": e.code,
                        "detail": e.detail,
                    })),
                },
            },
        );
    }
    Ok(Json(out))
}
