//! Downloads of the exports GraphQL's `requestExport` wrote.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::extract::ApiPath;
use super::graphql::export_path;

/// The files an export may be, by extension and content type.
const KINDS: [(&str, &str); 3] = [
    ("zip", "application/zip"),
    ("csv", "text/csv; charset=utf-8"),
    ("parquet", "application/vnd.apache.parquet"),
];

/// `GET /api/v1/exports/{export_id}`: an export's file (its requester, admins and auditors).
#[utoipa::path(get, path = "/api/v1/exports/{export_id}", tag = "ledger", responses((status = 200, description = "the exported file")))]
pub async fn download(
    State(s): State<AppState>,
    p: Principal,
    ApiPath(export_id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let mut owners = vec![p.user_id];
    if p.reads_all() {
        owners.extend(s.registry.read().users.keys().filter(|u| **u != p.user_id));
    }
    for owner in owners {
        for (ext, content_type) in KINDS {
            let path = export_path(&s, owner, export_id, ext);
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let name =
                        format!("attachment; filename=\"provenant-export-{export_id}.{ext}\"");
                    return Ok((
                        [
                            (header::CONTENT_TYPE, content_type.to_string()),
                            (header::CONTENT_DISPOSITION, name),
                        ],
                        Body::from(bytes),
                    )
                        .into_response());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "export_unreadable",
                        e.to_string(),
                    ));
                }
            }
        }
    }
    Err(ApiError::not_found(
        "export_not_found",
        format!("no export {export_id} of yours"),
    ))
}
