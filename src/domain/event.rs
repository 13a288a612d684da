//! The registry's events: what the ledger records, as typed payloads.
//!
//! The envelope carries `event_type`; the payload is the variant's fields. `schemas/` holds
//! the JSON Schema of every type here, generated from these definitions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::actuals::Actual;
use super::alert::{AlertPolicy, Evidence, Metric};
use super::deployment::{DeploymentState, Mode, UpdateKind, UpdateOutcome, Variants};
use super::job::{FileFormat, JobOutcome};
use super::reference::{ColumnProfile, DriftThresholds};
use super::runtime::{
    ArtifactTypeSpec, EntityRef, Environment, ImageSpec, ImageVersionSpec, RuntimeSpec,
    RuntimeState, Source,
};
use super::schema::{Column, MetadataValue};
use super::upcast::{self, UpcastError};

/// Global roles, on top of per-project roles.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GlobalRole {
    /// Manages users, runtimes, and every project.
    Admin,
    /// Reads everything, changes nothing (comments aside).
    Auditor,
}

/// A user's role in one project; ordered by what it allows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    Viewer,
    Editor,
    Owner,
}

/// MLflow's model version stages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

/// What a comment is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Project { project_id: Uuid },
    Experiment { experiment_id: Uuid },
    ModelVersion { model_id: Uuid, version: u32 },
}

/// Parameters of an experiment, as H2O's import records them.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_column: Option<String>,
    /// Training, validation or test datasets, by name or path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
}

/// An artifact in the blob store, attached to an experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Artifact {
    pub artifact_id: Uuid,
    /// `onnx`, `python/mlflow`, `dai/mojo_pipeline`, `h2o3/mojo`, … (any string).
    pub artifact_type: String,
    pub file_name: String,
    /// blake3 of the uncompressed bytes, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub blob_hash: String,
    pub size: u64,
}

/// What the artifact processor found in an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Ingestion {
    /// The model type the artifact maps to (`onnx`, or the artifact type when unknown).
    pub model_type: String,
    pub deployable: bool,
    /// Why it is not deployable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ONNX model the scorer runs: the artifact itself, or a file inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Vec<Column>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Vec<Column>>,
    /// Facts the processor read (ONNX producer, opset, IR version, MLflow flavors, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

macro_rules! events {
    ($( $(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            pub struct $name { $( $(#[$fdoc])* pub $field: $ty ),* }
        )*

        /// Every registry event.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "event_type")]
        pub enum RegistryEvent { $( $name($name) ),* }

        impl RegistryEvent {
            /// Every event type name, in declaration order.
            pub const TYPES: &'static [&'static str] = &[$( stringify!($name) ),*];

            pub fn event_type(&self) -> &'static str {
                match self { $( RegistryEvent::$name(_) => stringify!($name) ),* }
            }

            /// A payload of a known type read straight into its variant from any
            /// deserializer (a borrowed value, raw JSON text), without a tag or a copy;
            /// `None` for types that are not the registry's.
            pub fn decode_from<'de, D: serde::Deserializer<'de>>(
                event_type: &str,
                payload: D,
            ) -> Option<Result<RegistryEvent, D::Error>> {
                match event_type {
                    $( stringify!($name) => Some($name::deserialize(payload).map(RegistryEvent::$name)), )*
                    _ => None,
                }
            }

            /// The JSON Schema of each event type's payload.
            pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
                vec![$( (stringify!($name), schemars::schema_for!($name)) ),*]
            }
        }
    };
}

events! {
    /// A user was created by an admin (or by `provenant init` for the first admin).
    UserCreated { user_id: Uuid, username: String, display_name: String, roles: Vec<GlobalRole> }
    UserRoleGranted { user_id: Uuid, role: GlobalRole }
    UserRoleRevoked { user_id: Uuid, role: GlobalRole }
    /// The token itself is never recorded, only its blake3 hash.
    ApiTokenIssued {
        user_id: Uuid,
        token_id: Uuid,
        name: String,
        /// blake3 of the token, hex.
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        token_hash: String,
        expires_at: Option<String>,
    }
    ApiTokenRevoked { user_id: Uuid, token_id: Uuid, reason: Option<String> }

    /// The creator is the project's first owner.
    ProjectCreated { project_id: Uuid, name: String, description: String, owner: Uuid }
    ProjectUpdated { project_id: Uuid, name: Option<String>, description: Option<String> }
    ProjectShared { project_id: Uuid, user_id: Uuid, role: ProjectRole }
    ProjectRoleChanged { project_id: Uuid, user_id: Uuid, from: ProjectRole, to: ProjectRole }
    ProjectUnshared { project_id: Uuid, user_id: Uuid }
    CommentAdded { comment_id: Uuid, subject: Subject, text: String }

    ExperimentImported {
        experiment_id: Uuid,
        project_id: Uuid,
        display_name: String,
        metadata: BTreeMap<String, MetadataValue>,
        parameters: Parameters,
        tags: Vec<String>,
        artifacts: Vec<Artifact>,
    }
    /// The artifact processor's findings; a proposed schema fills `input_schema` and
    /// `output_schema` metadata the import did not give.
    ArtifactIngested { experiment_id: Uuid, artifact_id: Uuid, result: Ingestion }
    ExperimentMetadataSet { experiment_id: Uuid, entries: BTreeMap<String, MetadataValue> }
    ExperimentTagged { experiment_id: Uuid, tag: String }
    ExperimentUntagged { experiment_id: Uuid, tag: String }
    ExperimentDeleted { experiment_id: Uuid, reason: Option<String> }
    ExperimentRestored { experiment_id: Uuid }

    RegisteredModelCreated { model_id: Uuid, project_id: Uuid, name: String, description: String }
    ModelVersionRegistered { model_id: Uuid, version: u32, experiment_id: Uuid, annotation: Option<String> }
    ModelVersionStageChanged { model_id: Uuid, version: u32, from: Stage, to: Stage, annotation: String }
    ModelAliasSet { model_id: Uuid, alias: String, version: u32, previous_version: Option<u32>, annotation: String }
    ModelAliasRemoved { model_id: Uuid, alias: String, version: u32, annotation: String }
    ModelVersionDeleted { model_id: Uuid, version: u32, annotation: String }
    /// A model version's reference data for drift, replacing any before it: the file (kept
    /// as a blob, named by its blake3 hash) and its profile, a column per input.
    ReferenceProfileRecorded { model_id: Uuid, version: u32, dataset_blob: String, format: FileFormat, rows: u64, columns: Vec<ColumnProfile> }

    /// A runtime image's definition, new or changed, by either source.
    RuntimeImageDeclared { image_id: String, source: Source, spec: ImageSpec }
    RuntimeImageVersionDeclared { image_id: String, version: String, source: Source, spec: ImageVersionSpec }
    RuntimeDeclared { runtime_id: String, source: Source, spec: RuntimeSpec }
    /// One source's state of one entity; the effective state is the more restrictive of the two.
    RuntimeStateChanged { entity: EntityRef, source: Source, from: Option<RuntimeState>, to: RuntimeState, reason: String }
    /// An API-managed entity removed through the API.
    RuntimeEntityDeleted { entity: EntityRef, reason: String }
    /// The artifact type catalog, replaced whole.
    ArtifactTypesDeclared { artifact_types: Vec<ArtifactTypeSpec> }
    /// The environments deployments go to, each with who may change what runs there;
    /// replaced whole, from the bootstrap file.
    EnvironmentsDeclared { environments: Vec<Environment> }
    /// A bootstrap file was applied at start; `changes` events preceded this one in the append.
    RuntimeBootstrapApplied { file_hash: String, changes: u32 }

    /// Model versions deployed as named variants, with everything their predictions depend on;
    /// it starts Preparing. Schema version 2; version 1 (one `spec`) reads as one variant
    /// named `primary`. `promoted_from` names the deployment in another environment it copies.
    DeploymentCreated { deployment_id: Uuid, mode: Mode, variants: Variants, promoted_from: Option<Uuid>, reason: Option<String> }
    DeploymentStateChanged { deployment_id: Uuid, from: DeploymentState, to: DeploymentState, reason: String }
    /// An update in place asked for: the configuration to serve next (every variant's full
    /// spec), for a rollback the position of the configuration it restores.
    DeploymentUpdateStarted { deployment_id: Uuid, update_id: Uuid, kind: UpdateKind, mode: Mode, variants: Variants, rollback_to: Option<u64>, reason: String }
    /// The scorer's end of an update: Applied (loaded, warmed, serving) or RolledBack (the
    /// configuration before it kept serving), and why.
    DeploymentUpdateEnded { deployment_id: Uuid, update_id: Uuid, outcome: UpdateOutcome, detail: String }
    /// A stopped deployment removed from service for good; its events and runs stay.
    DeploymentDeleted { deployment_id: Uuid, project_id: Uuid, reason: String }
    /// One ONNX Runtime session run and the requests it answered: everything needed to run it
    /// again the same way. Inputs and outputs are blobs in canonical JSON
    /// (`{"fields": [...], "rows": [[...]]}`, RFC 8785), named by their blake3 hash.
    /// Schema version 5; versions 1 to 4 are read through `upcast`.
    InferenceRunRecorded {
        run_id: Uuid,
        deployment_id: Uuid,
        /// The deployment's variant that ran it.
        variant: String,
        /// A challenger's run on a copy of the champion's rows: recorded, never returned.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shadow: bool,
        model_id: Uuid,
        version: u32,
        model_blob: String,
        image_id: String,
        image_version: String,
        session: Box<RunSession>,
        row_count: u64,
        input_blob: String,
        output_blob: String,
        requests: Vec<RunRequest>,
        /// The batch scoring job this run is part of; none for online scoring.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<RunJob>,
        /// The inputs binned at scoring time by the model version's reference profile, when
        /// the deployment keeps hashes only: what drift still sees of inputs not kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<Box<RunProfile>>,
    }
    /// A batch scoring job started on a file, named by its blake3 hash. The file is not kept:
    /// its scored rows are in the runs' blobs, under the deployment's retention policy.
    ScoringJobStarted { job_id: Uuid, deployment_id: Uuid, project_id: Uuid, input_blob: String, input_format: FileFormat, output_format: FileFormat, rows: u64, batch_rows: u32, max_failed_rows: u64 }
    /// A batch scoring job ended. `output_blob` is the blake3 hash of the scored file
    /// (Completed only), `errors_blob` of the refused rows as JSON (`[{"row", "reason"}]`).
    ScoringJobEnded { job_id: Uuid, deployment_id: Uuid, project_id: Uuid, outcome: JobOutcome, scored_rows: u64, failed_rows: u64, runs: u64, output_blob: Option<String>, errors_blob: Option<String>, cancelled_by: Option<Uuid>, detail: String }
    /// An endpoint (a stable scoring path) points at a deployment: created, or re-pointed
    /// from `previous_deployment_id` in this one event.
    EndpointSet { endpoint: String, project_id: Uuid, deployment_id: Uuid, previous_deployment_id: Option<Uuid>, reason: String }
    /// An endpoint no longer serves; its name stays with its project.
    EndpointRemoved { endpoint: String, project_id: Uuid, deployment_id: Uuid, reason: String }
    /// True outcomes of rows the deployment scored, by request id and row; a later actual for
    /// the same row replaces an earlier one.
    ActualsRecorded { deployment_id: Uuid, project_id: Uuid, actuals: Vec<Actual> }
    /// How a deployment's drift is judged, replacing any thresholds before.
    DriftThresholdsSet { deployment_id: Uuid, project_id: Uuid, thresholds: DriftThresholds }
    /// What to alert on for a deployment, replacing any policy before it.
    AlertPolicySet { deployment_id: Uuid, project_id: Uuid, policy: AlertPolicy }
    /// A watched metric crossed its threshold over the window in the evidence.
    AlertRaised { alert_id: Uuid, deployment_id: Uuid, project_id: Uuid, metric: Metric, evidence: Evidence }
    /// An open alert's metric is back within its threshold (or no longer watched).
    AlertResolved { alert_id: Uuid, deployment_id: Uuid, project_id: Uuid, metric: Metric, evidence: Evidence }
    /// Blobs of a deployment's runs recorded before `runs_before`, deleted under its retention
    /// policy. The runs' hashes stay in the ledger, so a resubmitted copy can still be checked.
    PredictionDataPurged { deployment_id: Uuid, runs_before: u64, blobs: Vec<String>, reason: String }
}

/// Where a job's run sits in the job's file: the span of file rows from `first_row`, less
/// the rows refused before scoring. The run's rows are the span's others, in file order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunJob {
    pub job_id: Uuid,
    /// 0-based row of the file where the run's span starts.
    pub first_row: u64,
    /// 0-based file rows of the span that were refused, ascending.
    pub skipped_rows: Vec<u64>,
}

/// A run's inputs binned by a reference profile (`drift::sketch`), compactly: every run of a
/// hash-only deployment carries one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunProfile {
    /// blake3 of the reference data whose recorded profile (`ReferenceProfileRecorded`)
    /// holds the bins.
    pub reference_blob: String,
    /// Per profiled column, in the profile's order: `[missing, bin, count, bin, count, …]`,
    /// the missing cells, then each bin that got values (ascending) with its count. A bin is
    /// a numeric profile's bin, or for categories the index of a top value, the last index
    /// being "other".
    pub columns: Vec<Vec<u64>>,
}

/// What an inference run's session ran with: its outputs are bit-exact only under the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSession {
    pub ort_version: String,
    pub execution_provider: String,
    pub intra_op_threads: u32,
    pub inter_op_threads: u32,
    /// `sequential` or `parallel`.
    pub execution_mode: String,
    /// `disable`, `basic`, `extended` or `all`.
    pub graph_optimization: String,
    /// The CPU's architecture and the SIMD extensions ONNX Runtime's kernels dispatch on
    /// (`x86_64+avx2+fma`, …). Absent in runs recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_class: Option<String>,
}

impl RunSession {
    /// A session on `image`'s settings, under ONNX Runtime `ort_version` on `cpu_class`.
    pub fn of(
        image: &ImageVersionSpec,
        ort_version: &str,
        cpu_class: Option<String>,
    ) -> RunSession {
        RunSession {
            ort_version: ort_version.into(),
            execution_provider: image.execution_provider.clone(),
            intra_op_threads: image.intra_op_threads,
            inter_op_threads: image.inter_op_threads,
            execution_mode: image.execution_mode.clone(),
            graph_optimization: image.graph_optimization.clone(),
            cpu_class,
        }
    }
}

/// One request an inference run answered: its rows are `row_offset..row_offset + row_count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct RunRequest {
    pub request_id: Uuid,
    pub row_offset: u64,
    pub row_count: u64,
    pub caller: String,
    pub queue_wait_us: u64,
    pub latency_us: u64,
    /// In an A/B deployment, the request's draw in `0..` the sum of the weights (see
    /// `routing::draw`), which chose the variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event_type}: payload does not match its type: {reason}")]
    Payload { event_type: String, reason: String },
    #[error("event {0}")]
    Upcast(#[from] UpcastError),
}

impl RegistryEvent {
    /// The payload object (the variant's fields, without the tag).
    pub fn payload(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("event_type");
        }
        v
    }

    /// The schema version this event is written with.
    pub fn schema_version(&self) -> u32 {
        upcast::current(self.event_type())
    }

    /// Reads a stored payload written at schema `version`, from any deserializer (a borrowed
    /// value, raw JSON text); `None` for event types that are not the registry's. A current
    /// payload is read straight into its variant; an older one is upcast first.
    pub fn decode<'de, D: serde::Deserializer<'de>>(
        event_type: &str,
        version: u32,
        payload: D,
    ) -> Result<Option<RegistryEvent>, DecodeError> {
        let mismatch = |e: &dyn std::fmt::Display| DecodeError::Payload {
            event_type: event_type.to_string(),
            reason: e.to_string(),
        };
        if version == upcast::current(event_type) {
            return RegistryEvent::decode_from(event_type, payload)
                .transpose()
                .map_err(|e| mismatch(&e));
        }
        if !RegistryEvent::TYPES.contains(&event_type) {
            return Ok(None);
        }
        let stored = Value::deserialize(payload).map_err(|e| mismatch(&e))?;
        let current = upcast::upcast(event_type, version, stored)?;
        RegistryEvent::decode_from(event_type, &current)
            .transpose()
            .map_err(|e| mismatch(&e))
    }
}

/// The ledger stream an entity's events go to.
pub fn stream_of(kind: &str, id: Uuid) -> String {
    format!("{kind}-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_decode() {
        let e = RegistryEvent::ProjectShared(ProjectShared {
            project_id: Uuid::nil(),
            user_id: Uuid::max(),
            role: ProjectRole::Editor,
        });
        let payload = e.payload();
        assert!(payload.get("event_type").is_none());
        assert_eq!(
            RegistryEvent::decode(e.event_type(), 1, &payload).unwrap(),
            Some(e)
        );
        assert_eq!(
            RegistryEvent::decode("LedgerInitialized", 1, &payload).unwrap(),
            None
        );
        assert!(RegistryEvent::decode("ProjectShared", 1, serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn a_payload_decodes_by_the_version_it_was_written_with() {
        let run = InferenceRunRecorded {
            run_id: Uuid::nil(),
            deployment_id: Uuid::nil(),
            variant: "primary".into(),
            shadow: false,
            model_id: Uuid::nil(),
            version: 1,
            model_blob: "00".repeat(32),
            image_id: "onnx-scorer".into(),
            image_version: "0.1.0".into(),
            session: Box::new(RunSession::of(&ImageVersionSpec::default(), "1.32.0", None)),
            row_count: 1,
            input_blob: "11".repeat(32),
            output_blob: "22".repeat(32),
            requests: Vec::new(),
            job: None,
            profile: None,
        };
        let event = RegistryEvent::InferenceRunRecorded(run);
        assert_eq!(event.schema_version(), 5);
        // Versions 1 to 3 had no variant: their runs were the primary one's.
        let mut v3 = event.payload();
        v3.as_object_mut().unwrap().remove("variant");
        let mut v1 = v3.clone();
        let map = v1.as_object_mut().unwrap();
        let session = map.remove("session").unwrap();
        map.extend(session.as_object().unwrap().clone());
        map.insert("image_version".into(), "onnx-scorer@0.1.0".into());
        map.remove("image_id");
        let decode = |version, payload: &Value| {
            RegistryEvent::decode("InferenceRunRecorded", version, payload)
        };
        assert_eq!(decode(1, &v1).unwrap(), Some(event.clone()));
        assert_eq!(decode(2, &v3).unwrap(), Some(event.clone()));
        assert_eq!(decode(3, &v3).unwrap(), Some(event.clone()));
        assert_eq!(decode(4, &event.payload()).unwrap(), Some(event.clone()));
        assert_eq!(decode(5, &event.payload()).unwrap(), Some(event.clone()));
        // A payload stamped with the wrong version does not decode as another shape.
        assert!(matches!(decode(2, &v1), Err(DecodeError::Payload { .. })));
        assert!(matches!(decode(1, &v3), Err(DecodeError::Upcast(_))));
        assert!(matches!(
            decode(3, &event.payload()),
            Err(DecodeError::Upcast(_))
        ));
        let newer = decode(6, &event.payload()).unwrap_err();
        assert!(
            newer.to_string().contains("newer than this build"),
            "{newer}"
        );
        // Types that are not the registry's are not its to judge, at any version.
        assert_eq!(
            RegistryEvent::decode("LedgerKeyRotated", 7, &v1).unwrap(),
            None
        );
    }

    #[test]
    fn every_type_has_a_schema() {
        let schemas = RegistryEvent::schemas();
        assert_eq!(schemas.len(), RegistryEvent::TYPES.len());
        assert!(
            schemas
                .iter()
                .all(|(name, s)| s.get("title").and_then(Value::as_str) == Some(name))
        );
    }
}
