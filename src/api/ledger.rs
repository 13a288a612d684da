//! Read-only ledger endpoints: head, keys, events, streams, checkpoints and proofs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::log::envelope::EventJson;
use crate::log::store::Direction;
use crate::projections::replay::{ReplayError, Until, replay};

const MAX_PAGE: usize = 1000;

/// The committed head: size, last hash, root, signed checkpoint.
#[utoipa::path(get, path = "/api/v1/ledger/head", tag = "ledger")]
pub async fn head(State(s): State<AppState>, _p: Principal) -> Json<Value> {
    Json(json!(s.ledger.head()))
}

/// The ledger public keys with the positions each signs.
#[utoipa::path(get, path = "/api/v1/ledger/keys", tag = "ledger")]
pub async fn keys(State(s): State<AppState>, _p: Principal) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"origin": s.ledger.origin(), "keys": s.ledger.keys()?}),
    ))
}

#[derive(Deserialize)]
pub struct CheckpointQuery {
    size: Option<u64>,
}

/// A C2SP signed checkpoint (text), the latest or at `size`.
#[utoipa::path(get, path = "/api/v1/ledger/checkpoint", tag = "ledger")]
pub async fn checkpoint(
    State(s): State<AppState>,
    _p: Principal,
    ApiQuery(q): ApiQuery<CheckpointQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let note = match q.size {
        None => s.ledger.head().checkpoint,
        Some(size) => s.ledger.checkpoint(size)?.ok_or_else(|| {
            ApiError::not_found(
                "no_checkpoint",
                format!("no checkpoint was signed at tree size {size}"),
            )
        })?,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}

#[derive(Deserialize)]
pub struct PageQuery {
    from: Option<u64>,
    limit: Option<usize>,
    direction: Option<Direction>,
}

fn limit(l: Option<usize>) -> Result<usize, ApiError> {
    match l.unwrap_or(100) {
        0 => Err(ApiError::bad_request(
            "invalid_query",
            "limit must be at least 1",
        )),
        n if n > MAX_PAGE => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be at most {MAX_PAGE}"),
        )),
        n => Ok(n),
    }
}

/// Events from a position (admins and auditors).
#[utoipa::path(get, path = "/api/v1/ledger/events", tag = "ledger")]
pub async fn events(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    p.require_reads_all("reading ledger events")?;
    let from = q.from.unwrap_or(0);
    let events: Vec<EventJson> = s
        .ledger
        .read_all(from, limit(q.limit)?)?
        .iter()
        .map(|e| e.to_json())
        .collect();
    let next = events.last().map_or(from, |e| e.unsigned.position + 1);
    Ok(Json(json!({"events": events, "next": next})))
}

/// One event by position (admins and auditors).
#[utoipa::path(get, path = "/api/v1/ledger/events/{position}", tag = "ledger")]
pub async fn event(
    State(s): State<AppState>,
    p: Principal,
    Path(position): Path<String>,
) -> Result<Json<EventJson>, ApiError> {
    p.require_reads_all("reading ledger events")?;
    let position: u64 = position.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_position",
            format!("{position:?} is not a position"),
        )
    })?;
    s.ledger
        .event(position)?
        .map(|e| Json(e.to_json()))
        .ok_or_else(|| ApiError::not_found("no_event", format!("no event at position {position}")))
}

/// One event by id (admins and auditors).
#[utoipa::path(get, path = "/api/v1/ledger/events/by-id/{id}", tag = "ledger")]
pub async fn event_by_id(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<EventJson>, ApiError> {
    p.require_reads_all("reading ledger events")?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request("invalid_event_id", format!("{id:?} is not a UUID")))?;
    s.ledger
        .event_by_id(id)?
        .map(|e| Json(e.to_json()))
        .ok_or_else(|| ApiError::not_found("no_event", format!("no event with id {id}")))
}

/// A stream's events, forward or backward (admins and auditors).
#[utoipa::path(get, path = "/api/v1/ledger/streams/{stream}", tag = "ledger")]
pub async fn stream(
    State(s): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    p.require_reads_all("reading ledger events")?;
    let direction = q.direction.unwrap_or(Direction::Forward);
    let from = q.from.unwrap_or(match direction {
        Direction::Forward => 0,
        Direction::Backward => u64::MAX,
    });
    let events: Vec<EventJson> = s
        .ledger
        .read_stream(&stream, from, direction, limit(q.limit)?)?
        .iter()
        .map(|e| e.to_json())
        .collect();
    Ok(Json(json!({"stream": stream, "events": events})))
}

#[derive(Deserialize)]
pub struct InclusionQuery {
    position: u64,
    tree_size: Option<u64>,
}

/// An RFC 6962 inclusion proof with what checking it needs, for REST and GraphQL alike.
#[derive(Serialize, async_graphql::SimpleObject)]
pub struct InclusionProof {
    position: u64,
    tree_size: u64,
    event_hash: Option<String>,
    leaf_hash: String,
    /// Sibling hashes from the leaf up, hex.
    #[serde(rename = "proof")]
    path: Vec<String>,
    root: String,
    /// The signed checkpoint of `tree_size`, when one was signed at that size.
    checkpoint: Option<String>,
}

/// The proof that `position` is in the tree of `tree_size` events (the head by default).
pub fn inclusion_proof(
    s: &AppState,
    position: u64,
    tree_size: Option<u64>,
) -> Result<InclusionProof, ApiError> {
    let size = tree_size.unwrap_or_else(|| s.ledger.head().size);
    let (leaf, path) = s.ledger.inclusion_proof(position, size)?;
    Ok(InclusionProof {
        position,
        tree_size: size,
        event_hash: s.ledger.event(position)?.map(|e| e.hash.to_hex()),
        leaf_hash: hex::encode(leaf),
        path: path.iter().map(hex::encode).collect(),
        root: hex::encode(s.ledger.root_at(size)?),
        checkpoint: s.ledger.checkpoint(size)?,
    })
}

/// An RFC 6962 inclusion proof.
#[utoipa::path(get, path = "/api/v1/ledger/proofs/inclusion", tag = "ledger")]
pub async fn inclusion(
    State(s): State<AppState>,
    _p: Principal,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    inclusion_proof(&s, q.position, q.tree_size).map(Json)
}

#[derive(Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// An RFC 6962 consistency proof with both roots and checkpoints.
#[derive(Serialize, async_graphql::SimpleObject)]
pub struct ConsistencyProof {
    from: u64,
    to: u64,
    #[serde(rename = "proof")]
    path: Vec<String>,
    root_from: String,
    root_to: String,
    checkpoint_from: Option<String>,
    checkpoint_to: Option<String>,
}

/// The proof that the tree of `from` events is a prefix of the tree of `to` (the head by
/// default).
pub fn consistency_proof(
    s: &AppState,
    from: u64,
    to: Option<u64>,
) -> Result<ConsistencyProof, ApiError> {
    let to = to.unwrap_or_else(|| s.ledger.head().size);
    let path = s.ledger.consistency_proof(from, to)?;
    Ok(ConsistencyProof {
        from,
        to,
        path: path.iter().map(hex::encode).collect(),
        root_from: hex::encode(s.ledger.root_at(from)?),
        root_to: hex::encode(s.ledger.root_at(to)?),
        checkpoint_from: s.ledger.checkpoint(from)?,
        checkpoint_to: s.ledger.checkpoint(to)?,
    })
}

/// An RFC 6962 consistency proof.
#[utoipa::path(get, path = "/api/v1/ledger/proofs/consistency", tag = "ledger")]
pub async fn consistency(
    State(s): State<AppState>,
    _p: Principal,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    consistency_proof(&s, q.from, q.to).map(Json)
}

#[derive(Deserialize)]
pub struct AsOfQuery {
    /// A position (included) or an RFC 3339 time; the head when absent.
    at: Option<String>,
}

/// The registry as the ledger knew it at a position or time, replayed from the log: which
/// model versions existed, where each was deployed and on which runtime (admins and auditors).
#[utoipa::path(get, path = "/api/v1/registry", tag = "ledger", params(("at" = Option<String>, Query, description = "a position (included) or an RFC 3339 time")))]
pub async fn registry_as_of(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<Json<Value>, ApiError> {
    p.require_reads_all("reading the registry's history")?;
    let until = match q.at.as_deref() {
        None => Until::End,
        Some(at) => at
            .parse()
            .map_err(|e: String| ApiError::bad_request("invalid_query", e))?,
    };
    let snap = s.ledger.snapshot()?;
    let replayed = tokio::task::spawn_blocking(move || {
        let registry = replay(&snap, until, &mut |_, _| {})?;
        let last = match registry.applied.checked_sub(1) {
            Some(p) => snap.event(p)?,
            None => None,
        };
        Ok::<_, ReplayError>((registry, last))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "replay_failed",
            e.to_string(),
        )
    })?;
    let (registry, last) = replayed;
    Ok(Json(json!({
        "as_of": {
            "position": last.as_ref().map(|e| e.unsigned.position),
            "recorded_at": last.as_ref().map(|e| e.unsigned.recorded_at.clone()),
        },
        "registry": registry,
    })))
}
