//! Endpoints: stable scoring paths (`/{endpoint}/model/score`) that point at a deployment and
//! are re-pointed in one event, so clients keep one URL while the model behind it changes,
//! and the ledger says which deployment an endpoint served at any time.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::log::ExpectedVersion;

use super::decide::text;
use super::deployment::DeploymentState;
use super::event::{EndpointRemoved, EndpointSet, ProjectRole, RegistryEvent};
use super::state::{Registry, Stamp};
use super::{Decision, DomainError, Kind, may};

/// Names the server's own top-level paths take.
const RESERVED: &[&str] = &["api", "graphql", "metrics", "readyz"];

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub name: String,
    /// The project it belongs to: the one of the deployment it was created on.
    pub project_id: Uuid,
    /// The deployment it serves; none once removed.
    pub deployment_id: Option<Uuid>,
    pub history: Vec<EndpointChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EndpointChange {
    pub deployment_id: Option<Uuid>,
    pub reason: String,
    pub changed: Stamp,
}

pub fn stream(name: &str) -> String {
    format!("endpoint-{name}")
}

fn check_name(name: &str) -> Result<(), DomainError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && Uuid::parse_str(name).is_err()
        && !RESERVED.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            field: "endpoint",
            detail: format!(
                "{name:?}: 1 to 64 lowercase letters, digits or '-', starting with a letter; not a deployment id nor one of {RESERVED:?}"
            ),
        })
    }
}

/// Points `name` at `target` (creating the endpoint, or re-pointing it), or removes it when
/// `target` is none. Editors of the project; only a Healthy deployment of the endpoint's own
/// project takes its traffic.
pub fn decide(
    state: &Registry,
    actor: Uuid,
    name: String,
    target: Option<Uuid>,
    reason: String,
) -> Result<Decision, DomainError> {
    check_name(&name)?;
    let existing = state.endpoints.get(&name);
    let current = existing.and_then(|e| e.deployment_id);
    let deployment = target
        .map(|id| super::deployment::find(state, id))
        .transpose()?;
    let project_id = match (existing, deployment) {
        (Some(e), _) => e.project_id,
        (None, Some(d)) => d.spec.project_id,
        (None, None) => {
            return Err(DomainError::NotFound {
                kind: Kind::Endpoint,
                id: name,
            });
        }
    };
    if !may(state, actor, project_id, ProjectRole::Editor) {
        return Err(DomainError::Forbidden(format!(
            "changing an endpoint needs the editor role in project {project_id}"
        )));
    }
    let reason = text("reason", reason, 1, 10_000)?;
    let event = match deployment {
        Some(d) => {
            let deployment_id = d.deployment_id;
            if d.spec.project_id != project_id {
                return Err(DomainError::Conflict(format!(
                    "endpoint {name:?} belongs to project {project_id}; deployment {deployment_id} is in another"
                )));
            }
            if d.state != DeploymentState::Healthy {
                return Err(DomainError::Conflict(format!(
                    "deployment {deployment_id} is {:?}; only a Healthy deployment takes an endpoint's traffic",
                    d.state
                )));
            }
            if current == Some(deployment_id) {
                return Err(DomainError::Conflict(format!(
                    "endpoint {name:?} already points at deployment {deployment_id}"
                )));
            }
            RegistryEvent::EndpointSet(EndpointSet {
                endpoint: name.clone(),
                project_id,
                deployment_id,
                previous_deployment_id: current,
                reason,
            })
        }
        None => {
            let deployment_id = current.ok_or(DomainError::NotFound {
                kind: Kind::Endpoint,
                id: name.clone(),
            })?;
            RegistryEvent::EndpointRemoved(EndpointRemoved {
                endpoint: name.clone(),
                project_id,
                deployment_id,
                reason,
            })
        }
    };
    Ok(Decision {
        stream: stream(&name),
        expected: ExpectedVersion::after(state.stream_versions.get(&stream(&name)).copied()),
        events: vec![event],
    })
}

/// Folds endpoint events.
pub fn apply(endpoints: &mut BTreeMap<String, Endpoint>, event: &RegistryEvent, stamp: &Stamp) {
    let (name, project_id, deployment_id, reason) = match event {
        RegistryEvent::EndpointSet(e) => {
            (&e.endpoint, e.project_id, Some(e.deployment_id), &e.reason)
        }
        RegistryEvent::EndpointRemoved(e) => (&e.endpoint, e.project_id, None, &e.reason),
        _ => return,
    };
    let endpoint = endpoints.entry(name.clone()).or_insert_with(|| Endpoint {
        name: name.clone(),
        project_id,
        deployment_id: None,
        history: Vec::new(),
    });
    endpoint.deployment_id = deployment_id;
    endpoint.history.push(EndpointChange {
        deployment_id,
        reason: reason.clone(),
        changed: stamp.clone(),
    });
}
