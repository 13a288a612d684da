//! Actuals: the true outcomes of scored rows, recorded after the fact and joined to the
//! predictions by request id and row, so a deployment's accuracy over any past period is
//! recomputed from the ledger, whatever order the actuals arrived in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{ActualsRecorded, ProjectRole, RegistryEvent};
use super::state::Registry;
use super::{Decision, DomainError, may};

/// The most actuals one request records.
pub const MAX_ACTUALS: usize = 10_000;

/// One scored row's true outcome: a class name, or a number for a regressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Actual {
    pub request_id: Uuid,
    /// 0-based row within the request.
    pub row: u64,
    pub actual: String,
}

/// What the ledger says of a scored request: the deployment that answered it and its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub deployment_id: Uuid,
    pub rows: u64,
}

/// Editors record actuals for rows their deployment scored; a later actual for the same row
/// replaces an earlier one.
pub fn record(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
    actuals: Vec<Actual>,
    scored: impl Fn(Uuid) -> Option<Scored>,
) -> Result<Decision, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    let project_id = d.spec.project_id;
    if !may(state, actor, project_id, ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "recording actuals needs the editor role in project {project_id}"
        )));
    }
    let invalid = |detail: String| DomainError::Invalid {
        field: "actuals",
        detail,
    };
    if !(1..=MAX_ACTUALS).contains(&actuals.len()) {
        return Err(invalid(format!(
            "1 to {MAX_ACTUALS} per request, got {}",
            actuals.len()
        )));
    }
    let mut checked = Vec::with_capacity(actuals.len());
    for (i, a) in actuals.into_iter().enumerate() {
        match scored(a.request_id) {
            Some(s) if s.deployment_id == deployment_id && a.row < s.rows => {}
            Some(s) if s.deployment_id == deployment_id => {
                return Err(invalid(format!(
                    "entry {i}: request {} scored {} rows, no row {}",
                    a.request_id, s.rows, a.row
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "entry {i}: request {} is not a prediction of deployment {deployment_id}",
                    a.request_id
                )));
            }
        }
        let actual = a.actual.trim().to_string();
        if actual.is_empty() || actual.len() > 256 || actual.chars().any(char::is_control) {
            return Err(invalid(format!(
                "entry {i}: an actual is 1 to 256 characters of text"
            )));
        }
        checked.push(Actual { actual, ..a });
    }
    Ok(super::deployment::decision(
        deployment_id,
        vec![RegistryEvent::ActualsRecorded(ActualsRecorded {
            deployment_id,
            project_id,
            actuals: checked,
        })],
    ))
}
