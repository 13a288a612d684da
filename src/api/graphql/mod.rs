//! GraphQL for compliance teams at `/graphql` (GraphiQL on GET): the registry as of any
//! position or time, the audit trail, predictions, and the ledger's proofs. Mutations cover
//! only what a compliance user does; everything else stays in REST. The same bearer tokens
//! and authorization rules as REST apply, and every error carries a machine-readable
//! `extensions.code`.

mod actions;
mod ledger;
mod predictions;
mod registry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{
    Context, EmptySubscription, ErrorExtensionValues, ErrorExtensions, MergedObject, Schema,
    ServerError,
};
use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::domain::{Registry, can_read_project};
use crate::projections::registry::RegistryProjection;
use crate::projections::replay::{Until, replay};

/// Deepest selection nesting a query may have.
pub const MAX_DEPTH: usize = 12;
/// Most fields a query may select, connections counted as `first` times their fields.
pub const MAX_COMPLEXITY: usize = 20_000;
/// Largest page any list argument `first` may ask for.
pub const MAX_PAGE: usize = 500;
/// How long a request may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(MergedObject, Default)]
pub struct Query(
    registry::RegistryQuery,
    ledger::LedgerQuery,
    predictions::PredictionQuery,
);

pub type ProvenantSchema = Schema<Query, actions::Mutation, EmptySubscription>;

pub fn schema(state: AppState) -> ProvenantSchema {
    Schema::build(Query::default(), actions::Mutation, EmptySubscription)
        .data(state)
        .data(AsOfCache::default())
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// `GET /graphql`: the GraphiQL IDE (set the `Authorization` header in its headers tab).
pub async fn graphiql() -> Html<&'static str> {
    Html(include_str!("graphiql.html"))
}

/// `POST /graphql`: runs one GraphQL request for an authenticated caller, once the registry
/// has caught up with every event acknowledged before it arrived.
pub async fn execute(
    schema: ProvenantSchema,
    state: AppState,
    p: Principal,
    body: Bytes,
) -> Response {
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(
                "malformed_request",
                format!("the body must be {{\"query\", \"variables\", \"operationName\"}}: {e}"),
            )
            .into_response();
        }
    };
    let run = async {
        state.caught_up().await?;
        Ok::<_, ApiError>(schema.execute(request.data(p)).await)
    };
    let response = match tokio::time::timeout(TIMEOUT, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => async_graphql::Response::from_errors(vec![coded(
            ServerError::new(
                format!("the request ran past {} s", TIMEOUT.as_secs()),
                None,
            ),
            "timeout",
        )]),
    };
    let mut response = response;
    response.errors = response.errors.into_iter().map(classify).collect();
    Json(response).into_response()
}

fn coded(mut e: ServerError, code: &str) -> ServerError {
    e.extensions
        .get_or_insert_with(ErrorExtensionValues::default)
        .set("code", code);
    e
}

/// Gives the errors async-graphql raises itself (parse, validation, limits) a code, as ours
/// have.
fn classify(e: ServerError) -> ServerError {
    if e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
    {
        return e;
    }
    let code = match e.message.as_str() {
        "Query is nested too deep." => "depth_limit",
        "Query is too complex." => "complexity_limit",
        _ if e.path.is_empty() => "invalid_query",
        _ => "internal",
    };
    coded(e, code)
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.detail.clone()).extend_with(|_, x| {
            x.set("code", self.code);
            x.set("status", self.status.as_u16());
        })
    }
}

/// A GraphQL error with our code and status.
fn error(
    status: StatusCode,
    code: &'static str,
    detail: impl Into<String>,
) -> async_graphql::Error {
    ApiError::new(status, code, detail).extend()
}

fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>()
}

fn principal(ctx: &Context<'_>) -> async_graphql::Result<Principal> {
    ctx.data::<Principal>().copied()
}

/// Whether the caller may read the project, by today's roles and memberships (also for
/// history: losing access to a project loses access to its past).
fn may_read(ctx: &Context<'_>, project_id: uuid::Uuid) -> bool {
    match (state(ctx), principal(ctx)) {
        (Ok(s), Ok(p)) => {
            p.reads_all() || can_read_project(&s.registry.read(), p.user_id, project_id)
        }
        _ => false,
    }
}

fn require_reads_all(ctx: &Context<'_>, what: &str) -> async_graphql::Result<()> {
    principal(ctx)?
        .require_reads_all(what)
        .map_err(|e| e.extend())
}

/// A page size: `first`, defaulting to 50, at most `MAX_PAGE`.
fn page_size(first: Option<i32>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(50),
        Some(n) if n < 0 => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "first must not be negative",
        )),
        Some(n) if n as usize > MAX_PAGE => Err(error(
            StatusCode::BAD_REQUEST,
            "page_too_large",
            format!("first is {n}; a page holds at most {MAX_PAGE}"),
        )),
        Some(n) => Ok(n as usize),
    }
}

fn parse_id(id: &async_graphql::ID) -> async_graphql::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{:?} is not a UUID", id.as_str()),
        )
    })
}

fn parse_bound(s: &str) -> async_graphql::Result<Until> {
    s.parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, "invalid_argument", e))
}

/// Which registry a query reads: the live projection, or one replayed as of a past point.
#[derive(Clone)]
pub enum View {
    Live(Arc<RegistryProjection>),
    AsOf(Arc<Registry>),
}

impl View {
    pub fn with<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        match self {
            View::Live(p) => f(&p.read()),
            View::AsOf(r) => f(r),
        }
    }
}

/// The last replayed past registry, so the fields of one query (and the queries that page
/// through one point in time) share a replay. Only positions are cached: a position's past
/// never changes, while a time still ahead of the head would.
#[derive(Default)]
struct AsOfCache(Mutex<Option<(u64, Arc<Registry>)>>);

/// The registry `asOf` names (a position, included, or an RFC 3339 time), or the live one.
async fn view(ctx: &Context<'_>, as_of: Option<String>) -> async_graphql::Result<View> {
    let s = state(ctx)?;
    let Some(as_of) = as_of else {
        return Ok(View::Live(s.registry.clone()));
    };
    let until = parse_bound(&as_of)?;
    let cache = ctx.data::<AsOfCache>()?;
    let size = s.ledger.head().size;
    let cacheable = match until {
        Until::Position(p) if p < size => Some(p),
        _ => None,
    };
    if let Some(p) = cacheable {
        let hit = cache
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| *at == p)
            .map(|(_, r)| r.clone());
        if let Some(r) = hit {
            return Ok(View::AsOf(r));
        }
    }
    let snap = s
        .ledger
        .snapshot()
        .map_err(|e| ApiError::from(e).extend())?;
    let registry = tokio::task::spawn_blocking(move || replay(&snap, until, &mut |_, _| {}))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "replay_failed",
                e.to_string(),
            )
        })?;
    let registry = Arc::new(registry);
    if let Some(p) = cacheable {
        *cache.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, registry.clone()));
    }
    Ok(View::AsOf(registry))
}
