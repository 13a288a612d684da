//! The mutations a compliance user needs: reproduce a prediction, comment, and request an
//! export. Everything else that changes the registry stays in REST.

use async_graphql::{Context, ID, InputObject, Json, Object, Result, SimpleObject};
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::ledger::api;
use super::registry::{CommentNode, comment};
use super::{error, parse_id, principal, state};
use crate::api::exports::{Export, ExportRequest, export};
use crate::api::predictions::RunRef;
use crate::domain::event::Subject;
use crate::domain::{Command, Registry};
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

    /// Writes an export on the server and answers where to fetch it (see `api::exports`).
    async fn request_export(&self, ctx: &Context<'_>, request: ExportRequest) -> Result<Export> {
        let (s, p) = (state(ctx)?, principal(ctx)?);
        export(s, &p, request).await.map_err(api)
    }
}
