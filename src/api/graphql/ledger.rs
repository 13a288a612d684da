//! The audit trail and the ledger: filtered, cursor-paged events from the audit index, the
//! head, signed tree heads, keys, proofs and verification.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, ID, InputObject, Json, Object, Result, SimpleObject};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{error, page_size, require_reads_all, state};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::ledger::{ConsistencyProof, InclusionProof, consistency_proof, inclusion_proof};
use crate::log::envelope::Event;
use crate::log::verify::{Options, verify};
use crate::projections::audit::Filter;

#[derive(Default)]
pub struct LedgerQuery;

/// Which events `events` returns; every given condition must hold.
#[derive(InputObject, Default)]
pub struct EventFilter {
    actor: Option<String>,
    stream: Option<String>,
    /// An id the event names: its stream's, or a `*_id` field of its payload.
    entity_id: Option<String>,
    /// Any of these event types.
    event_types: Option<Vec<String>>,
    /// Recorded at or after (RFC 3339).
    from: Option<String>,
    /// Recorded at or before (RFC 3339).
    to: Option<String>,
    /// First position (included).
    position_from: Option<u64>,
    /// Last position (included).
    position_to: Option<u64>,
}

pub fn time(field: &str, s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    format!("{field}: {s:?} is not an RFC 3339 time"),
                )
            })
    })
    .transpose()
}

impl EventFilter {
    fn into_filter(self) -> Result<Filter> {
        Ok(Filter {
            from: time("from", self.from)?,
            to: time("to", self.to)?,
            actor: self.actor,
            stream: self.stream,
            entity_id: self.entity_id,
            event_types: self.event_types.unwrap_or_default(),
            position_from: self.position_from,
            position_to: self.position_to,
        })
    }
}

/// A cursor is the position of the last event seen.
pub fn cursor(after: Option<String>) -> Result<Option<u64>> {
    after
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    format!("{c:?} is not a cursor this API returned"),
                )
            })
        })
        .transpose()
}

/// The stored events at `positions`, read from one snapshot.
pub fn read(s: &AppState, positions: &[u64]) -> Result<Vec<Event>> {
    let snap = s.ledger.snapshot().map_err(api)?;
    positions
        .iter()
        .map(|p| {
            snap.event(*p).map_err(api)?.ok_or_else(|| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ledger_corrupt",
                    format!("the audit index names position {p}, which the log does not hold"),
                )
            })
        })
        .collect()
}

pub fn api(e: impl Into<ApiError>) -> async_graphql::Error {
    async_graphql::ErrorExtensions::extend(&e.into())
}

/// A page of events as a connection.
pub fn connection(events: Vec<Event>, more: bool) -> Connection<u64, EventNode> {
    let mut c = Connection::new(false, more);
    c.edges.extend(
        events
            .into_iter()
            .map(|e| Edge::new(e.position(), EventNode(e))),
    );
    c
}

#[Object]
impl LedgerQuery {
    /// The audit trail, oldest first, filtered by the audit index (admins and auditors).
    /// Page with `first` and the `endCursor` of the previous page as `after`; events appended
    /// meanwhile only ever add later pages.
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<u64, EventNode>> {
        require_reads_all(ctx, "reading the audit trail")?;
        let s = state(ctx)?;
        let size = page_size(first)?;
        let after = cursor(after)?;
        let filter = filter.unwrap_or_default().into_filter()?;
        let page = s.registry.audit().page(&filter, after, size);
        Ok(connection(read(s, &page.positions)?, page.more))
    }

    /// One event by position (admins and auditors).
    async fn event(&self, ctx: &Context<'_>, position: u64) -> Result<Option<EventNode>> {
        require_reads_all(ctx, "reading the audit trail")?;
        let s = state(ctx)?;
        Ok(s.ledger.event(position).map_err(api)?.map(EventNode))
    }

    /// The ledger: head, keys, signed tree heads, proofs, verification.
    async fn ledger(&self) -> Ledger {
        Ledger
    }
}

/// A stored event with its chain hash and signature.
pub struct EventNode(pub Event);

#[Object(name = "Event")]
impl EventNode {
    async fn position(&self) -> u64 {
        self.0.unsigned.position
    }
    async fn event_id(&self) -> ID {
        ID(self.0.unsigned.event_id.to_string())
    }
    async fn event_type(&self) -> &str {
        &self.0.unsigned.event_type
    }
    async fn schema_version(&self) -> u32 {
        self.0.unsigned.schema_version
    }
    async fn stream(&self) -> &str {
        &self.0.unsigned.stream
    }
    async fn stream_version(&self) -> u64 {
        self.0.unsigned.stream_version
    }
    async fn actor(&self) -> &str {
        &self.0.unsigned.actor
    }
    async fn recorded_at(&self) -> &str {
        &self.0.unsigned.recorded_at
    }
    async fn payload(&self) -> Json<&Value> {
        Json(&self.0.unsigned.payload)
    }
    /// blake3 chain hash, hex.
    async fn hash(&self) -> String {
        self.0.hash.to_hex()
    }
    async fn prev_hash(&self) -> String {
        self.0.unsigned.prev_hash.to_hex()
    }
    /// ed25519 signature of the hash, hex.
    async fn signature(&self) -> String {
        hex::encode(self.0.signature)
    }
    async fn key_id(&self) -> &str {
        &self.0.unsigned.key_id
    }
    /// The RFC 6962 proof that this event is in the tree of `treeSize` events (the head by
    /// default).
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof> {
        inclusion_proof(state(ctx)?, self.0.unsigned.position, tree_size).map_err(api)
    }
}

#[derive(SimpleObject)]
pub struct Head {
    size: u64,
    last_hash: Option<String>,
    root: String,
    key_id: String,
    /// The C2SP signed checkpoint of the head.
    checkpoint: String,
}

#[derive(SimpleObject)]
pub struct SignedTreeHead {
    tree_size: u64,
    /// The C2SP signed checkpoint note.
    checkpoint: String,
}

#[derive(SimpleObject)]
pub struct LedgerKey {
    key_id: String,
    public_key: String,
    valid_from: u64,
    valid_to: Option<u64>,
}

/// The result of re-verifying the log, and what it says of the asked range.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Verification {
    /// Events verified: every hash, link, signature, stream version, Merkle node and
    /// checkpoint from the genesis event on.
    events: u64,
    root: String,
    intact: bool,
    failure_position: Option<u64>,
    failure_reason: Option<String>,
    range_from: u64,
    range_to: u64,
}

#[ComplexObject]
impl Verification {
    /// Whether every event of the range verified; a range's events are only as good as the
    /// chain before them, so the whole log up to it is checked.
    async fn range_intact(&self) -> bool {
        self.failure_position.is_none_or(|p| p > self.range_to)
    }
}

pub struct Ledger;

#[Object]
impl Ledger {
    async fn head(&self, ctx: &Context<'_>) -> Result<Head> {
        let h = state(ctx)?.ledger.head();
        Ok(Head {
            size: h.size,
            last_hash: h.last_hash.map(|d| d.to_hex()),
            root: h.root,
            key_id: h.key_id,
            checkpoint: h.checkpoint,
        })
    }

    /// Every signing key with the positions it signs.
    async fn keys(&self, ctx: &Context<'_>) -> Result<Vec<LedgerKey>> {
        Ok(state(ctx)?
            .ledger
            .keys()
            .map_err(api)?
            .into_iter()
            .map(|k| LedgerKey {
                key_id: k.key_id,
                public_key: k.public_key,
                valid_from: k.valid_from,
                valid_to: k.valid_to,
            })
            .collect())
    }

    /// Signed tree heads (one per commit) from tree size `fromSize` on.
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn signed_tree_heads(
        &self,
        ctx: &Context<'_>,
        from_size: Option<u64>,
        first: Option<i32>,
    ) -> Result<Vec<SignedTreeHead>> {
        let snap = state(ctx)?.ledger.snapshot().map_err(api)?;
        Ok(snap
            .checkpoints_from(from_size.unwrap_or(0), page_size(first)?)
            .map_err(api)?
            .into_iter()
            .map(|(tree_size, checkpoint)| SignedTreeHead {
                tree_size,
                checkpoint,
            })
            .collect())
    }

    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        position: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof> {
        inclusion_proof(state(ctx)?, position, tree_size).map_err(api)
    }

    /// The RFC 6962 proof that the tree of `from` events is a prefix of the tree of `to`
    /// (the head by default).
    async fn consistency_proof(
        &self,
        ctx: &Context<'_>,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof> {
        consistency_proof(state(ctx)?, from, to).map_err(api)
    }

    /// Re-verifies the log and reports on positions `from..=to` (admins and auditors).
    async fn verify(
        &self,
        ctx: &Context<'_>,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Verification> {
        require_reads_all(ctx, "verifying the ledger")?;
        let s = state(ctx)?;
        let snap = s.ledger.snapshot().map_err(api)?;
        let size = snap.size().map_err(api)?;
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(size.saturating_sub(1)));
        if from > to || to >= size {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "out_of_range",
                format!("the range {from}..={to} is not within the log's {size} events"),
            ));
        }
        let report =
            tokio::task::spawn_blocking(move || verify(&snap, &Options::default(), &mut |_, _| {}))
                .await
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
                .map_err(api)?;
        Ok(Verification {
            events: report.events,
            root: report.root,
            intact: report.failure.is_none(),
            failure_position: report.failure.as_ref().map(|f| f.position),
            failure_reason: report.failure.map(|f| f.reason),
            range_from: from,
            range_to: to,
        })
    }
}
