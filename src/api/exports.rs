//! Exports written on the server for compliance users: audit bundles of a project, a
//! deployment, a model (or one version) or the whole log, and the events or predictions
//! tables as CSV or Parquet. Requested through REST (`POST /api/v1/exports`) or GraphQL
//! (`requestExport`), fetched with `GET /api/v1/exports/{id}` by the requester, admins and
//! auditors. Files live in `<data>/exports/<user id>/<export id>.<ext>`.

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::audit::{SelectError, Subject};
use crate::domain::can_read_project;
use crate::projections::replay::Until;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, async_graphql::Enum,
)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// An offline-verifiable audit bundle (zip): events, signatures, inclusion proofs.
    AuditBundle,
    EventsCsv,
    EventsParquet,
    PredictionsCsv,
    PredictionsParquet,
}

/// The files an export may be: extension and content type.
const KINDS: [(&str, &str); 3] = [
    ("zip", "application/zip"),
    ("csv", "text/csv; charset=utf-8"),
    ("parquet", "application/vnd.apache.parquet"),
];

impl ExportFormat {
    fn extension(self) -> &'static str {
        match self {
            ExportFormat::AuditBundle => KINDS[0].0,
            ExportFormat::EventsCsv | ExportFormat::PredictionsCsv => KINDS[1].0,
            ExportFormat::EventsParquet | ExportFormat::PredictionsParquet => KINDS[2].0,
        }
    }
}

/// What to export. A bundle covers a project, a deployment, a model (or one version), or
/// the whole log; tables cover the whole log, optionally one deployment's or model's
/// events. `from` and `to` are positions or RFC 3339 times, both included.
#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub format: ExportFormat,
    #[serde(default)]
    pub project_id: Option<Uuid>,
    #[serde(default)]
    pub deployment_id: Option<Uuid>,
    #[serde(default)]
    pub model_id: Option<Uuid>,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// For bundles: a tree size exported before, to add the proof the log only grew since.
    #[serde(default)]
    pub previous_size: Option<u64>,
}

/// A written export.
#[derive(Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct Export {
    pub export_id: Uuid,
    pub format: ExportFormat,
    /// Where to download it.
    pub url: String,
    pub bytes: u64,
    /// blake3 of the file, hex.
    pub blake3: String,
    /// Events (or prediction rows) it holds.
    pub rows: u64,
    /// For bundles: the tree size its proofs are against.
    pub tree_size: Option<u64>,
}

pub fn export_path(s: &AppState, user: Uuid, export: Uuid, ext: &str) -> PathBuf {
    s.ledger
        .dir()
        .join("exports")
        .join(user.to_string())
        .join(format!("{export}.{ext}"))
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "export_failed",
        e.to_string(),
    )
}

fn joined(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn bound(s: Option<String>) -> Result<Until, ApiError> {
    Until::bound(s.as_deref()).map_err(|e| ApiError::bad_request("invalid_argument", e))
}

/// Bundles of one subject need read access to its project (answered as not found
/// otherwise); the whole log needs the admin or auditor role.
fn authorize(s: &AppState, p: &Principal, subject: Subject) -> Result<(), ApiError> {
    let r = s.registry.read();
    let project = match subject {
        Subject::All => return p.require_reads_all("exporting the whole log"),
        Subject::Project(id) => r.projects.contains_key(&id).then_some(id),
        Subject::Deployment(d) => r.deployments.get(&d).map(|d| d.spec.project_id),
        Subject::Model { model_id, .. } => r.models.get(&model_id).map(|m| m.project_id),
    };
    match project {
        Some(id) if can_read_project(&r, p.user_id, id) => Ok(()),
        _ => Err(ApiError::not_found(
            "not_found",
            "no such project, deployment or model you may read",
        )),
    }
}

/// Writes the export `request` asks for as `p`, off the async threads.
pub async fn export(
    s: &AppState,
    p: &Principal,
    request: ExportRequest,
) -> Result<Export, ApiError> {
    let (from, to) = (bound(request.from)?, bound(request.to)?);
    let format = request.format;
    let export_id = Uuid::now_v7();
    let path = export_path(s, p.user_id, export_id, format.extension());
    let (rows, tree_size) = if format == ExportFormat::AuditBundle {
        let subject = match (request.project_id, request.deployment_id, request.model_id) {
            (Some(p), None, None) => Subject::Project(p),
            (None, Some(d), None) => Subject::Deployment(d),
            (None, None, Some(model_id)) => Subject::Model {
                model_id,
                version: request.version,
            },
            (None, None, None) => Subject::All,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    "name at most one of the project, the deployment and the model",
                ));
            }
        };
        authorize(s, p, subject)?;
        let (snap, projection, out) = (s.ledger.snapshot()?, s.registry.clone(), path.clone());
        let previous = request.previous_size;
        let manifest = tokio::task::spawn_blocking(move || {
            create_parent(&out)?;
            // The registry is read-locked only while the positions are selected.
            let selected = crate::audit::select(&snap, &projection.read(), subject, from, to)?;
            crate::audit::write_bundle(&snap, selected, previous, &out, &mut |_, _| {})
        })
        .await
        .map_err(joined)?
        .map_err(|e| match e {
            SelectError::Unknown(m) => ApiError::not_found("not_found", m),
            e => failed(e),
        })?;
        (manifest.events, Some(manifest.tree_size))
    } else {
        p.require_reads_all("exporting tables of the whole log")?;
        if request.project_id.is_some()
            || request.version.is_some()
            || request.previous_size.is_some()
        {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "tables filter by deployment or model, from and to; not by project, version or previous size",
            ));
        }
        let filter = crate::export::Filter {
            actor: None,
            entity: request.deployment_id.or(request.model_id),
            event_types: Vec::new(),
            from,
            to,
        };
        let (snap, out) = (s.ledger.snapshot()?, path.clone());
        let rows = tokio::task::spawn_blocking(move || {
            create_parent(&out).map_err(failed)?;
            let mut df = match format {
                ExportFormat::EventsCsv | ExportFormat::EventsParquet => {
                    crate::export::events_table(&snap, &filter, &mut |_, _| {})
                }
                _ => crate::export::predictions_table(&snap, &filter, &mut |_, _| {}),
            }
            .map_err(failed)?;
            crate::export::write(&mut df, &out).map_err(failed)?;
            Ok::<_, ApiError>(df.height() as u64)
        })
        .await
        .map_err(joined)??;
        (rows, None)
    };
    let bytes = std::fs::read(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    Ok(Export {
        export_id,
        format,
        url: format!("/api/v1/exports/{export_id}"),
        bytes: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        rows,
        tree_size,
    })
}

fn create_parent(path: &std::path::Path) -> Result<(), SelectError> {
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir).map_err(|e| SelectError::File(dir.to_path_buf(), e))
}

/// `POST /api/v1/exports`: writes an audit bundle or a table (see `ExportRequest`) and
/// answers where to fetch it. Bundles of a project, deployment or model: its readers; a
/// whole-log bundle and tables: admins and auditors.
#[utoipa::path(post, path = "/api/v1/exports", tag = "ledger", request_body = ExportRequest, responses((status = 201, body = Export)))]
pub async fn request(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(b): ApiJson<ExportRequest>,
) -> Result<(StatusCode, Json<Export>), ApiError> {
    export(&s, &p, b)
        .await
        .map(|e| (StatusCode::CREATED, Json(e)))
}

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
