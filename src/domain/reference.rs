//! Reference data: per model version, the dataset its deployments' inputs are compared with
//! for drift. The file itself is kept as a blob (exact tests need its values); the event
//! records its hash and its profile, so the profile is part of the audit trail.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::ExpectedVersion;

use super::event::{DriftThresholdsSet, ReferenceProfileRecorded, RegistryEvent};
use super::job::FileFormat;
use super::schema::{Column, stored_schema};
use super::state::{Registry, Stamp};
use super::{Decision, DomainError};

/// A column of the reference data, summarized: what PSI bins by and a reader learns from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnProfile {
    pub name: String,
    /// Values present.
    pub count: u64,
    pub missing: u64,
    /// Distinct values present.
    pub unique: u64,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Summary {
    Numeric {
        /// Bin edges: numpy's linear quantiles at 0, 0.1, ..., 1 with repeats dropped, or
        /// for a column of at most 10 distinct values those values, a bin each. The bins are
        /// split at `edges[1..counts.len()]`: bin i holds edges[i] <= v < edges[i+1], the
        /// first reaching down to -inf and the last up to +inf, so every value has a bin.
        edges: Vec<f64>,
        counts: Vec<u64>,
        mean: f64,
        /// Population standard deviation.
        std: f64,
        min: f64,
        max: f64,
    },
    Categorical {
        /// The most frequent values, most frequent first (ties by value).
        top: Vec<ValueCount>,
        /// Values outside `top`.
        other: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

/// A drift test, by Evidently's names, or PSI judged at the alert level.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
    async_graphql::Enum,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov p-value.
    Ks,
    /// Pearson chi-square p-value.
    ChiSquare,
    /// Two-proportion Z-test p-value.
    ZTest,
    /// Wasserstein distance over the reference's standard deviation.
    WassersteinNormed,
    /// Jensen–Shannon distance.
    JensenShannon,
    /// Population stability index over the profile's bins, drifted at `psi_alert`.
    Psi,
}

/// What drift is judged by, per deployment: Evidently's and H2O's defaults unless set.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
    async_graphql::SimpleObject,
)]
#[serde(default, deny_unknown_fields)]
pub struct DriftThresholds {
    /// A p-value test (KS, chi-square, Z) drifts below this.
    pub p_value: f64,
    /// A distance (normed Wasserstein, Jensen–Shannon) drifts at or above this.
    pub distance: f64,
    /// PSI warns at or above this, and alerts at or above `psi_alert`.
    pub psi_warn: f64,
    pub psi_alert: f64,
    /// The dataset drifts when at least this share of its columns does.
    pub dataset_share: f64,
    /// Every numeric column's test instead of Evidently's choice: `ks`,
    /// `wasserstein_normed` or `psi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_method: Option<Method>,
    /// Every categorical column's: `chi_square`, `jensen_shannon` or `psi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical_method: Option<Method>,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds {
            p_value: 0.05,
            distance: 0.1,
            psi_warn: 0.1,
            psi_alert: 0.25,
            dataset_share: 0.5,
            numeric_method: None,
            categorical_method: None,
        }
    }
}

impl DriftThresholds {
    fn check(&self) -> Result<(), DomainError> {
        let invalid = |field, detail: &str| {
            Err(DomainError::Invalid {
                field,
                detail: detail.to_string(),
            })
        };
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && v > lo && v <= hi;
        if !within(self.p_value, 0.0, 1.0) || self.p_value == 1.0 {
            return invalid("p_value", "must be above 0 and below 1");
        }
        if !within(self.distance, 0.0, f64::MAX) {
            return invalid("distance", "must be above 0");
        }
        if !within(self.psi_warn, 0.0, f64::MAX) || !within(self.psi_alert, 0.0, f64::MAX) {
            return invalid("psi_warn", "PSI levels must be above 0");
        }
        if self.psi_warn > self.psi_alert {
            return invalid("psi_warn", "must not exceed psi_alert");
        }
        if !within(self.dataset_share, 0.0, 1.0) {
            return invalid("dataset_share", "must be above 0 and at most 1");
        }
        // Tests that read sorted values suit numbers; those that read each value's count suit
        // categories (on continuous numbers every value is its own category). The Z-test is
        // Evidently's for two categories only, and stays its choice.
        use Method::*;
        if let Some(m) = self.numeric_method
            && !matches!(m, Ks | WassersteinNormed | Psi)
        {
            return invalid("numeric_method", "must be ks, wasserstein_normed or psi");
        }
        if let Some(m) = self.categorical_method
            && !matches!(m, ChiSquare | JensenShannon | Psi)
        {
            return invalid(
                "categorical_method",
                "must be chi_square, jensen_shannon or psi",
            );
        }
        Ok(())
    }
}

/// Editors set how a deployment's drift is judged, replacing any thresholds before.
pub fn set_thresholds(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
    thresholds: DriftThresholds,
) -> Result<Decision, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    let project_id = d.spec.project_id;
    if !super::may(state, actor, project_id, super::event::ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "drift thresholds need the editor role in project {project_id}"
        )));
    }
    thresholds.check()?;
    Ok(super::deployment::decision(
        deployment_id,
        vec![RegistryEvent::DriftThresholdsSet(DriftThresholdsSet {
            deployment_id,
            project_id,
            thresholds,
        })],
    ))
}

/// A model version's current reference data.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReferenceProfile {
    pub dataset_blob: String,
    pub format: FileFormat,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
    pub recorded: Stamp,
}

/// Where a reference goes and what it must hold: editors of the model's project, a live
/// version, and that version's input schema. Answers the project and the schema.
pub fn check(
    state: &Registry,
    actor: Uuid,
    model_id: Uuid,
    version: u32,
) -> Result<(Uuid, Vec<Column>), DomainError> {
    let (model, v) =
        super::deployment::editable_version(state, actor, model_id, version, "reference data")?;
    let schema = state
        .experiments
        .get(&v.experiment_id)
        .and_then(|x| stored_schema(&x.metadata, "input_schema"))
        .ok_or_else(|| {
            DomainError::Conflict(format!(
                "version {model_id}/{version} has no input_schema to profile reference data by"
            ))
        })?;
    Ok((model.project_id, schema))
}

/// What the shell made of the uploaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordReference {
    pub model_id: Uuid,
    pub version: u32,
    pub dataset_blob: String,
    pub format: FileFormat,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
}

/// Records a version's reference data, replacing any before it: one profile per input
/// column, in the schema's order.
pub fn record(state: &Registry, actor: Uuid, r: RecordReference) -> Result<Decision, DomainError> {
    let (_, schema) = check(state, actor, r.model_id, r.version)?;
    let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
    let wanted: Vec<&str> = schema.iter().map(|c| c.name.as_str()).collect();
    if names != wanted {
        return Err(DomainError::Invalid {
            field: "columns",
            detail: format!("profiles {names:?} do not match the input schema {wanted:?}"),
        });
    }
    if r.rows == 0 {
        return Err(DomainError::Invalid {
            field: "file",
            detail: "the reference data has no rows".into(),
        });
    }
    let stream = super::event::stream_of("model", r.model_id);
    Ok(Decision {
        expected: ExpectedVersion::after(state.stream_versions.get(&stream).copied()),
        stream,
        events: vec![RegistryEvent::ReferenceProfileRecorded(
            ReferenceProfileRecorded {
                model_id: r.model_id,
                version: r.version,
                dataset_blob: r.dataset_blob,
                format: r.format,
                rows: r.rows,
                columns: r.columns,
            },
        )],
    })
}
