//! The command path: decide against a caught-up registry, append, wait until the projection
//! shows the result. Registry commands pass one at a time through a gate, so a decision is
//! never made on a state another command is about to change; the expected stream version
//! guards the append as well.

use axum::http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::domain::runtime::{self, Bootstrap, RuntimeCommand};
use crate::domain::{self, Command, Decision, DomainError, Registry, RegistryEvent};
use crate::log::envelope::Digest;
use crate::log::{AppendError, Ledger, NewEvent};
use crate::projections::registry::{ProjectionError, RegistryProjection};

/// An event a command appended.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WrittenEvent {
    pub position: u64,
    pub event_type: String,
    pub event_id: Uuid,
    pub stream: String,
    pub stream_version: u64,
    /// blake3 chain hash, hex.
    #[schema(value_type = String)]
    pub hash: Digest,
}

/// What a mutating call returns: the changed entity and the events that record it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Written {
    pub data: serde_json::Value,
    pub events: Vec<WrittenEvent>,
    /// The signed checkpoint (tree size) that covers the events.
    pub checkpoint_size: u64,
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        let (status, code) = match &e {
            DomainError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            DomainError::NotFound { kind, .. } => (StatusCode::NOT_FOUND, kind.code()),
            DomainError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            DomainError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            DomainError::Ceiling(_) => (StatusCode::CONFLICT, "state_ceiling"),
            DomainError::NotDeployable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_deployable"),
            DomainError::BootstrapManaged(_) => (StatusCode::CONFLICT, "bootstrap_managed"),
            DomainError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            DomainError::InvalidSchema { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema")
            }
            DomainError::InvalidMetadata { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_metadata")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            e.to_string(),
        )
    }
}

/// A registry event as the ledger appends it, stamped with its type's current schema version.
pub fn new_event(event: &RegistryEvent, actor: impl Into<String>) -> NewEvent {
    NewEvent {
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        actor: actor.into(),
        payload: event.payload(),
    }
}

/// Appends a decision's events as `actor` and waits until the projection has applied them.
pub async fn commit(
    ledger: &Ledger,
    registry: &RegistryProjection,
    actor: &str,
    decision: Decision,
) -> Result<(Vec<WrittenEvent>, u64), ApiError> {
    let types: Vec<&'static str> = decision.events.iter().map(|e| e.event_type()).collect();
    let events = decision
        .events
        .iter()
        .map(|e| new_event(e, actor))
        .collect();
    let appended = ledger
        .append(&decision.stream, decision.expected, events)
        .await
        .map_err(|e| match e {
            // The gate makes this a sign of a writer outside it, not a user's mistake.
            AppendError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "concurrent_change", e.to_string())
            }
            e => e.into(),
        })?;
    let size = appended.events.last().map_or(0, |e| e.position + 1);
    registry.wait_for(size).await?;
    let written = appended
        .events
        .iter()
        .zip(types)
        .map(|(a, t)| WrittenEvent {
            position: a.position,
            event_type: t.to_string(),
            event_id: a.event_id,
            stream: decision.stream.clone(),
            stream_version: a.stream_version,
            hash: a.hash,
        })
        .collect();
    Ok((written, appended.checkpoint_size))
}

impl AppState {
    /// Decides `command` for `actor`, appends its events, and answers with `view` of the
    /// registry that includes them.
    pub async fn execute<T: Serialize>(
        &self,
        actor: Uuid,
        command: Command,
        view: impl FnOnce(&Registry) -> Option<T>,
    ) -> Result<Written, ApiError> {
        self.run(actor, |r| domain::decide(r, actor, command), view)
            .await
    }

    /// The same for a runtime-management command.
    pub async fn execute_runtime<T: Serialize>(
        &self,
        actor: Uuid,
        command: RuntimeCommand,
        view: impl FnOnce(&Registry) -> Option<T>,
    ) -> Result<Written, ApiError> {
        self.run(actor, |r| runtime::decide_runtime(r, actor, command), view)
            .await
    }

    /// Decides against the current registry under the command gate, commits, and answers
    /// `view` of the registry after it.
    pub(crate) async fn run<T: Serialize>(
        &self,
        actor: Uuid,
        decide: impl FnOnce(&Registry) -> Result<Decision, DomainError>,
        view: impl FnOnce(&Registry) -> Option<T>,
    ) -> Result<Written, ApiError> {
        self.run_as(&actor.to_string(), decide, view).await
    }

    /// `run` for any actor, the system's included (`system:scorer`, …).
    pub(crate) async fn run_as<T: Serialize>(
        &self,
        actor: &str,
        decide: impl FnOnce(&Registry) -> Result<Decision, DomainError>,
        view: impl FnOnce(&Registry) -> Option<T>,
    ) -> Result<Written, ApiError> {
        let _turn = self.gate.lock().await;
        self.caught_up().await?;
        let decision = decide(&self.registry.read())?;
        let (events, checkpoint_size) =
            commit(&self.ledger, &self.registry, actor, decision).await?;
        let data = view(&self.registry.read())
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .unwrap_or_default();
        Ok(Written {
            data,
            events,
            checkpoint_size,
        })
    }
}

/// Creates the first admin and its token on a ledger without users; returns the token.
pub async fn bootstrap_admin(
    ledger: &Ledger,
    registry: &RegistryProjection,
    username: &str,
) -> Result<String, ApiError> {
    let (token, hash) = super::auth::new_token()?;
    registry.wait_for(ledger.head().size).await?;
    let decision = domain::bootstrap_admin(
        &registry.read(),
        Uuid::now_v7(),
        username.to_string(),
        Uuid::now_v7(),
        hash,
    )?;
    commit(ledger, registry, "system:bootstrap", decision).await?;
    Ok(token)
}

/// Applies a (checked) bootstrap file as `system:bootstrap`: one append with every change and
/// a record of the application. Answers how many changes it made.
pub async fn apply_bootstrap(
    state: &AppState,
    file: &Bootstrap,
    file_hash: &str,
) -> Result<u32, ApiError> {
    let _turn = state.gate.lock().await;
    state.caught_up().await?;
    let decision = runtime::decide_bootstrap(&state.registry.read(), file, file_hash);
    let changes = u32::try_from(decision.events.len().saturating_sub(1)).unwrap_or(u32::MAX);
    commit(&state.ledger, &state.registry, "system:bootstrap", decision).await?;
    Ok(changes)
}
