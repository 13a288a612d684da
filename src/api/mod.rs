//! The HTTP interface (axum): the management REST API under `/api/v1/`, with its OpenAPI
//! document generated from the handlers' annotations.

pub mod accuracy;
pub mod alerts;
pub mod auth;
pub mod command;
pub mod deployments;
pub mod drift;
mod endpoints;
pub mod error;
pub mod exports;
mod extract;
pub mod graphql;
pub mod jobs;
pub(crate) mod ledger;
mod lifecycle;
pub mod metrics;
pub mod predictions;
mod registry;
mod runs;
mod runtimes;
mod scoring;

use std::sync::Arc;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::blobs::BlobStore;
use crate::log::Ledger;
use crate::projections::registry::{ProjectionError, RegistryProjection};
use crate::runtime::onnx::Onnx;
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub registry: Arc<RegistryProjection>,
    pub blobs: BlobStore,
    pub onnx: &'static Onnx,
    /// The deployments this process scores for.
    pub serving: Arc<deployments::Serving>,
    /// Whether scored runs are recorded. Only `provenant bench score` turns this off, to
    /// measure what recording costs; a server always records.
    pub recording: Arc<std::sync::atomic::AtomicBool>,
    /// Refused scoring requests, counted live (see `metrics`).
    pub errors: Arc<metrics::ErrorCounts>,
    /// Batch scoring jobs this process ran (see `jobs`).
    pub jobs: Arc<jobs::Jobs>,
    /// Serializes registry commands (see `command`).
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// Builds the registry projection from the ledger and the state the API serves.
    pub async fn start(
        ledger: Ledger,
        blobs: BlobStore,
        onnx: &'static Onnx,
    ) -> Result<AppState, ProjectionError> {
        let registry = RegistryProjection::start(&ledger).await?;
        Ok(AppState {
            blobs: blobs.with_ledger(ledger.clone()),
            ledger,
            registry,
            onnx,
            serving: Arc::default(),
            recording: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            errors: Arc::default(),
            jobs: Arc::default(),
            gate: Arc::default(),
        })
    }

    /// Waits until the registry has applied every event the ledger held at the call. A scored
    /// request is answered once its run is durable, and applied a moment later: reads that
    /// must see what a caller was just told call this first.
    pub async fn caught_up(&self) -> Result<(), ProjectionError> {
        self.registry.wait_for(self.ledger.head().size).await
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Provenant", description = "MLOps registry on a signed, hash-chained event ledger"),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every documented route, with the document that describes them.
fn documented() -> OpenApiRouter<AppState> {
    use registry as r;
    use runtimes as rt;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ledger::head))
        .routes(routes!(ledger::keys))
        .routes(routes!(ledger::checkpoint))
        .routes(routes!(ledger::events))
        .routes(routes!(ledger::event))
        .routes(routes!(ledger::event_by_id))
        .routes(routes!(ledger::stream))
        .routes(routes!(ledger::inclusion))
        .routes(routes!(ledger::consistency))
        .routes(routes!(ledger::registry_as_of))
        .routes(routes!(r::me))
        .routes(routes!(r::create_user, r::list_users))
        .routes(routes!(r::get_user))
        .routes(routes!(r::grant_role))
        .routes(routes!(r::revoke_role))
        .routes(routes!(r::issue_token))
        .routes(routes!(r::revoke_token))
        .routes(routes!(r::create_project, r::list_projects))
        .routes(routes!(r::get_project, r::update_project))
        .routes(routes!(r::share_project, r::unshare_project))
        .routes(routes!(r::comment_project))
        .routes(routes!(r::project_events))
        .routes(routes!(r::list_experiments))
        .routes(routes!(r::get_experiment, r::delete_experiment))
        .routes(routes!(r::set_metadata))
        .routes(routes!(r::tag_experiment))
        .routes(routes!(r::untag_experiment))
        .routes(routes!(r::comment_experiment))
        .routes(routes!(r::restore_experiment))
        .routes(routes!(r::create_model, r::list_models))
        .routes(routes!(r::get_model))
        .routes(routes!(r::register_version, r::list_versions))
        .routes(routes!(r::get_version, r::delete_version))
        .routes(routes!(r::version_report))
        .routes(routes!(r::set_stage))
        .routes(routes!(r::set_alias, r::remove_alias))
        .routes(routes!(r::comment_version))
        .routes(routes!(rt::list_images, rt::create_image))
        .routes(routes!(
            rt::get_image,
            rt::update_image,
            rt::delete_image,
            rt::image_action
        ))
        .routes(routes!(rt::list_versions, rt::create_version))
        .routes(routes!(
            rt::get_version,
            rt::update_version,
            rt::delete_version,
            rt::version_action
        ))
        .routes(routes!(rt::list_runtimes, rt::create_runtime))
        .routes(routes!(
            rt::get_runtime,
            rt::update_runtime,
            rt::delete_runtime,
            rt::runtime_action
        ))
        .routes(routes!(rt::catalog))
        .routes(routes!(rt::experiment_runtimes))
        .routes(routes!(deployments::deploy, deployments::list))
        .routes(routes!(
            deployments::get,
            deployments::action,
            deployments::delete
        ))
        .routes(routes!(lifecycle::environments))
        .routes(routes!(lifecycle::list, lifecycle::upgrade))
        .routes(routes!(metrics::get))
        .routes(routes!(drift::get))
        .routes(routes!(drift::put_thresholds))
        .routes(routes!(accuracy::get))
        .routes(routes!(alerts::put_policy))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::evaluate))
        .routes(routes!(endpoints::list))
        .routes(routes!(endpoints::get, endpoints::point, endpoints::remove))
        .routes(routes!(predictions::get, predictions::action))
        .routes(routes!(exports::request))
        .routes(routes!(exports::download))
        .routes(routes!(jobs::get, jobs::action))
        .routes(routes!(jobs::output))
}

/// The OpenAPI document of the management API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

pub fn router(state: AppState) -> axum::Router {
    // Artifact uploads are bounded by the blob store's limit, not the default body limit.
    let (uploads, upload_doc) = OpenApiRouter::new()
        .routes(routes!(registry::import_experiment))
        .routes(routes!(jobs::create))
        .routes(routes!(drift::put_reference))
        .routes(routes!(accuracy::record))
        .layer(DefaultBodyLimit::disable())
        .split_for_parts();
    let (api, mut doc) = documented().split_for_parts();
    doc.merge(upload_doc);
    let doc = Arc::new(doc);
    let schema = graphql::schema(state.clone());
    let gql = state.clone();
    api.merge(uploads)
        .route(
            "/graphql",
            get(graphql::graphiql).post(move |p, body| graphql::execute(schema, gql, p, body)),
        )
        .route("/readyz", get(|| async { "ready" }))
        .route("/{deployment}/model/id", get(scoring::model_id))
        .route("/{deployment}/model/schema", get(scoring::schema))
        .route(
            "/{deployment}/model/capabilities",
            get(scoring::capabilities),
        )
        .route(
            "/{deployment}/model/sample_request",
            get(scoring::sample_request),
        )
        .route(
            "/{deployment}/model/score",
            post(scoring::score).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::count_errors,
            )),
        )
        .route("/metrics", get(metrics::prometheus))
        .route(
            "/{deployment}/model/contribution",
            post(scoring::contribution),
        )
        .route("/{deployment}/readyz", get(scoring::readyz))
        .route("/{deployment}/openapi.json", get(scoring::openapi))
        .route("/{deployment}/docs", get(scoring::docs))
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::map_response(close_when_too_large))
        .with_state(state)
}

/// A body refused for its size is left unread on the connection, which the server then
/// drops: the answer says `Connection: close`, so a client sends its next request down a new
/// connection instead of the one being dropped.
async fn close_when_too_large(mut response: axum::response::Response) -> axum::response::Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
