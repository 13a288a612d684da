//! The demo seeded into a new data dir by `serve`: a project with the wine classifier (an
//! scikit-learn model converted by skl2onnx, embedded in the binary) imported, registered
//! and deployed, so a first start has something real to score.

use uuid::Uuid;

use crate::api::AppState;
use crate::api::deployments::{NewDeployment, SecurityRequest};
use crate::api::error::ApiError;
use crate::domain::Command;
use crate::domain::event::{Artifact, Parameters};
use crate::runtime::ingest;

const WINE_MODEL: &[u8] = include_bytes!("../fixtures/models/wine_classifier.onnx");

/// Seeds the demo as `admin` and deploys it to DEV; returns the registered model's and the
/// deployment's ids.
pub async fn seed(state: &AppState, admin: Uuid) -> Result<(Uuid, Uuid), ApiError> {
    let (project_id, model_id) = (Uuid::now_v7(), Uuid::now_v7());
    let commands = [
        Command::CreateProject {
            project_id,
            name: "Demo".into(),
            description: "Seeded on first start: sklearn's wine data, three cultivars".into(),
        },
        Command::CreateModel {
            model_id,
            project_id,
            name: "wine-classifier".into(),
            description: "Demo model".into(),
        },
    ];
    for command in commands {
        state.execute(admin, command, |_| None::<()>).await?;
    }
    register(
        state,
        admin,
        model_id,
        ("wine logistic regression", "wine_classifier.onnx"),
        WINE_MODEL,
    )
    .await?;
    // Open to anyone who can reach it, so the first curl works; real deployments default to tokens.
    let request = NewDeployment {
        security: Some(SecurityRequest::None),
        ..NewDeployment::single(model_id, 1, "DEV")
    };
    let deployed = state.deploy(admin, request).await?;
    let deployment = deployed.data["deployment_id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "deploy_failed",
                "the demo deployment has no id",
            )
        })?;
    Ok((model_id, deployment))
}

/// Imports an ONNX model of the wine data (target `cultivar`) into the project of `model_id`
/// as an experiment named `name` with the artifact `file`, through the artifact processor,
/// and registers it as the model's next version.
pub async fn register(
    state: &AppState,
    admin: Uuid,
    model_id: Uuid,
    (name, file): (&str, &str),
    bytes: &[u8],
) -> Result<(), ApiError> {
    let failed = |code: &'static str, e: String| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, code, e)
    };
    let project_id = state
        .registry
        .read()
        .models
        .get(&model_id)
        .map(|m| m.project_id)
        .ok_or_else(|| failed("model_not_found", format!("no model {model_id}")))?;
    let stored = state
        .blobs
        .put(bytes)
        .map_err(|e| failed("blob_store_failed", e.to_string()))?;
    let (onnx, blobs) = (state.onnx, state.blobs.clone());
    let ingestion =
        tokio::task::spawn_blocking(move || ingest::ingest(onnx, &blobs, "onnx", &stored.hash))
            .await
            .map_err(|e| failed("ingestion_failed", e.to_string()))?
            .map_err(|e| failed("ingestion_failed", e.to_string()))?;
    let experiment_id = Uuid::now_v7();
    let commands = [
        Command::ImportExperiment {
            experiment_id,
            project_id,
            display_name: name.into(),
            metadata: Default::default(),
            parameters: Parameters {
                target_column: Some("cultivar".into()),
                datasets: vec!["sklearn.datasets.load_wine".into()],
            },
            tags: vec!["demo".into()],
            artifacts: vec![(
                Artifact {
                    artifact_id: Uuid::now_v7(),
                    artifact_type: "onnx".into(),
                    file_name: file.into(),
                    blob_hash: stored.hash.to_hex(),
                    size: stored.size,
                },
                ingestion,
            )],
        },
        Command::RegisterVersion {
            model_id,
            experiment_id,
            annotation: Some("demo seed".into()),
        },
    ];
    for command in commands {
        state.execute(admin, command, |_| None::<()>).await?;
    }
    Ok(())
}
