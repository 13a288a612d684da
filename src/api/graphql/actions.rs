//! The mutations a compliance user needs: reproduce a prediction, comment, and request an
//! export. Everything else that changes the registry stays in REST.

use std::path::PathBuf;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, Result, SimpleObject};
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::ledger::api;
use super::registry::{CommentNode, comment};
use super::{error, may_read, parse_bound, parse_id, principal, require_reads_all, state};
use crate::api::AppState;
use crate::api::predictions::RunRef;
use crate::audit::Subject as BundleSubject;
use crate::domain::event::Subject;
use crate::domain::{Command, Registry};
use crate::projections::replay::Until;
use crate::runtime::reproduce::Overrides;

pub struct Mutation;

/// What a comment is about: a project, an experiment, or a model version.
#[derive(InputObject)]
pub struct CommentSubject {
    project_id: Option<ID>,
    experiment_id: Option<ID>,
    model_id: Option<ID>,
    version: Option<u32>,
}

impl CommentSubject {
    fn subject(&self) -> Result<Subject> {
        match (
            &self.project_id,
            &self.experiment_id,
            &self.model_id,
            self.version,
        ) {
            (Some(p), None, None, None) => Ok(Subject::Project {
                project_id: parse_id(p)?,
            }),
            (None, Some(e), None, None) => Ok(Subject::Experiment {
                experiment_id: parse_id(e)?,
            }),
            (None, None, Some(m), Some(version)) => Ok(Subject::ModelVersion {
                model_id: parse_id(m)?,
                version,
            }),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "name one subject: projectId, experimentId, or modelId with version",
            )),
        }
    }
}

fn find_comment(r: &Registry, subject: &Subject, id: Uuid) -> Option<CommentNode> {
    let list = match subject {
        Subject::Project { project_id } => &r.projects.get(project_id)?.comments,
        Subject::Experiment { experiment_id } => &r.experiments.get(experiment_id)?.comments,
        Subject::ModelVersion { model_id, version } => {
            &r.models.get(model_id)?.versions.get(version)?.comments
        }
    };
    list.iter().find(|c| c.comment_id == id).map(comment)
}

/// An appended event, as a receipt.
#[derive(SimpleObject)]
pub struct Written {
    position: u64,
    event_type: String,
    /// blake3 chain hash, hex.
    hash: String,
}

#[derive(SimpleObject)]
pub struct Commented {
    comment: Option<CommentNode>,
    events: Vec<Written>,
    /// The signed checkpoint (tree size) that covers the events.
    checkpoint_size: u64,
}

#[derive(SimpleObject)]
pub struct Reproduction {
    /// `identical`, `different` or `not_reproducible`.
    verdict: String,
    /// The whole report: hashes compared, per-column differences, or the reason it cannot be
    /// reproduced here.
    report: Json<Value>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ExportFormat {
    /// An offline-verifiable audit bundle (zip): events, signatures, inclusion proofs.
    AuditBundle,
    EventsCsv,
    EventsParquet,
    PredictionsCsv,
    PredictionsParquet,
}

impl ExportFormat {
    fn extension(self) -> &'static str {
        match self {
            ExportFormat::AuditBundle => "zip",
            ExportFormat::EventsCsv | ExportFormat::PredictionsCsv => "csv",
            ExportFormat::EventsParquet | ExportFormat::PredictionsParquet => "parquet",
        }
    }
}

/// What to export. A bundle covers a project, a deployment, a model (or one version), or
/// the whole log; tables cover the whole log filtered by entity. `from` and `to` are
/// positions or RFC 3339 times, both included.
#[derive(InputObject)]
pub struct ExportRequest {
    format: ExportFormat,
    project_id: Option<ID>,
    deployment_id: Option<ID>,
    model_id: Option<ID>,
    version: Option<u32>,
    from: Option<String>,
    to: Option<String>,
    /// For bundles: a tree size exported before, to add the proof the log only grew since.
    previous_size: Option<u64>,
}

#[derive(SimpleObject)]
pub struct Export {
    id: ID,
    format: ExportFormat,
    /// Where to download it (`GET`, the requester, admins and auditors).
    url: String,
    bytes: u64,
    /// blake3 of the file, hex.
    blake3: String,
    /// Events (or prediction rows) it holds.
    rows: u64,
    /// For bundles: the tree size its proofs are against.
    tree_size: Option<u64>,
}

/// Where a user's exports are kept: `<data>/exports/<user id>/<export id>.<ext>`.
pub fn export_path(s: &AppState, user: Uuid, export: Uuid, ext: &str) -> PathBuf {
    s.ledger
        .dir()
        .join("exports")
        .join(user.to_string())
        .join(format!("{export}.{ext}"))
}

fn bound(s: Option<String>) -> Result<Until> {
    s.map_or(Ok(Until::End), |s| parse_bound(&s))
}

#[Object]
impl Mutation {
    /// Re-runs a recorded prediction with its recorded settings and compares outputs (readers
    /// of the deployment's project). `input` resubmits a run's input that was not kept;
    /// `overrides` asks a what-if (threads, mode, optimization, rows per run).
    async fn reproduce_prediction(
        &self,
        ctx: &Context<'_>,
        request_id: ID,
        input: Option<Json<Value>>,
        overrides: Option<Json<Value>>,
    ) -> Result<Reproduction> {
        let (s, p) = (state(ctx)?, principal(ctx)?);
        let overrides: Overrides = match overrides {
            Some(Json(o)) => serde_json::from_value(o).map_err(|e| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_overrides",
                    e.to_string(),
                )
            })?,
            None => Overrides::default(),
        };
        let outcome = s
            .reproduce(
                RunRef::Request(parse_id(&request_id)?),
                input.map(|j| j.0),
                overrides,
                Some(&p),
            )
            .await
            .map_err(api)?;
        Ok(Reproduction {
            verdict: outcome.verdict().into(),
            report: Json(serde_json::to_value(&outcome).unwrap_or_default()),
        })
    }

    /// Comments on a project, experiment or model version (anyone who may read it); the
    /// comment is an event on the ledger.
    async fn add_comment(
        &self,
        ctx: &Context<'_>,
        subject: CommentSubject,
        text: String,
    ) -> Result<Commented> {
        let (s, p) = (state(ctx)?, principal(ctx)?);
        let subject = subject.subject()?;
        let comment_id = Uuid::now_v7();
        let command = Command::AddComment {
            comment_id,
            subject: subject.clone(),
            text,
        };
        let written = s
            .execute(p.user_id, command, |_| None::<()>)
            .await
            .map_err(api)?;
        let comment = find_comment(&s.registry.read(), &subject, comment_id);
        Ok(Commented {
            comment,
            events: written
                .events
                .into_iter()
                .map(|e| Written {
                    position: e.position,
                    event_type: e.event_type,
                    hash: e.hash.to_hex(),
                })
                .collect(),
            checkpoint_size: written.checkpoint_size,
        })
    }

    /// Writes an export on the server and answers where to fetch it. Bundles of a project,
    /// deployment or model need read access to its project; a whole-log bundle and tables
    /// need the admin or auditor role.
    async fn request_export(&self, ctx: &Context<'_>, request: ExportRequest) -> Result<Export> {
        let (s, p) = (state(ctx)?, principal(ctx)?);
        let id = |i: &Option<ID>| i.as_ref().map(parse_id).transpose();
        let (project, deployment, model) = (
            id(&request.project_id)?,
            id(&request.deployment_id)?,
            id(&request.model_id)?,
        );
        let (from, to) = (bound(request.from)?, bound(request.to)?);
        let export_id = Uuid::now_v7();
        let path = export_path(s, p.user_id, export_id, request.format.extension());
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                format!("{}: {e}", dir.display()),
            )
        })?;
        let format = request.format;
        let (rows, tree_size) = if format == ExportFormat::AuditBundle {
            let subject = match (project, deployment, model) {
                (Some(p), None, None) => BundleSubject::Project(p),
                (None, Some(d), None) => BundleSubject::Deployment(d),
                (None, None, Some(model_id)) => BundleSubject::Model {
                    model_id,
                    version: request.version,
                },
                (None, None, None) => BundleSubject::All,
                _ => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "invalid_argument",
                        "name at most one of projectId, deploymentId, modelId",
                    ));
                }
            };
            authorize_bundle(ctx, s, subject)?;
            let (snap, projection, out) = (
                s.ledger.snapshot().map_err(api)?,
                s.registry.clone(),
                path.clone(),
            );
            let previous = request.previous_size;
            let manifest = tokio::task::spawn_blocking(move || {
                let selected = crate::audit::select(&snap, &projection.read(), subject, from, to)?;
                crate::audit::write_bundle(&snap, selected, previous, &out, &mut |_, _| {})
            })
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(|e| match e {
                crate::audit::SelectError::Unknown(m) => {
                    error(StatusCode::NOT_FOUND, "not_found", m)
                }
                e => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "export_failed",
                    e.to_string(),
                ),
            })?;
            (manifest.events, Some(manifest.tree_size))
        } else {
            require_reads_all(ctx, "exporting tables of the whole log")?;
            if project.is_some() || request.version.is_some() || request.previous_size.is_some() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "tables filter by deploymentId or modelId, from and to",
                ));
            }
            let filter = crate::export::Filter {
                actor: None,
                entity: deployment.or(model),
                event_types: Vec::new(),
                from,
                to,
            };
            let (snap, out) = (s.ledger.snapshot().map_err(api)?, path.clone());
            tokio::task::spawn_blocking(move || {
                let mut df = match format {
                    ExportFormat::EventsCsv | ExportFormat::EventsParquet => {
                        crate::export::events_table(&snap, &filter, &mut |_, _| {})?
                    }
                    _ => crate::export::predictions_table(&snap, &filter, &mut |_, _| {})?,
                };
                crate::export::write(&mut df, &out)?;
                Ok::<_, crate::export::ExportError>(df.height() as u64)
            })
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map(|rows| (rows, None))
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "export_failed",
                    e.to_string(),
                )
            })?
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(Export {
            id: ID(export_id.to_string()),
            format,
            url: format!("/api/v1/exports/{export_id}"),
            bytes: bytes.len() as u64,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            rows,
            tree_size,
        })
    }
}

/// Bundles of one subject need read access to its project; the whole log needs the admin or
/// auditor role.
fn authorize_bundle(ctx: &Context<'_>, s: &AppState, subject: BundleSubject) -> Result<()> {
    let project = {
        let r = s.registry.read();
        match subject {
            BundleSubject::All => None,
            BundleSubject::Project(p) => Some(Some(p)),
            BundleSubject::Deployment(d) => Some(r.deployments.get(&d).map(|d| d.spec.project_id)),
            BundleSubject::Model { model_id, .. } => {
                Some(r.models.get(&model_id).map(|m| m.project_id))
            }
        }
    };
    match project {
        None => require_reads_all(ctx, "exporting the whole log"),
        Some(Some(p)) if may_read(ctx, p) => Ok(()),
        Some(_) => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such project, deployment or model you may read",
        )),
    }
}
