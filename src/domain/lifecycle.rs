//! A deployment's production life after it is created: promotion to another environment,
//! updates in place (other versions, weights or modes; a rollback to an earlier
//! configuration; runtime image upgrades), and deletion. Each is a decision with who, when and
//! a required reason; an update is asked for by a person and ended by the scorer once the new
//! configuration has loaded and warmed (Applied) or failed to (RolledBack).

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::decide::text;
use super::deployment::{
    Deployment, DeploymentState, Mode, Placement, Retention, Security, UpdateKind, UpdateOutcome,
    Variant, VariantRequest, Variants, configured_environment, decision, editable_version, live,
    may_change, may_change_deployment, newest_image_version, resolve_variants, stream,
};
use super::event::*;
use super::runtime::{Catalog, RuntimeState, version_key};
use super::state::Registry;
use super::{Decision, DomainError};
use crate::log::ExpectedVersion;

/// What an update in place changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// The configuration to serve next, variant by variant (see `resolve_variants`).
    Variants {
        mode: Mode,
        variants: BTreeMap<String, VariantRequest>,
    },
    /// Back to the configuration in effect at this ledger position.
    Rollback { position: u64 },
    /// Each variant onto `image_version` of its runtime's image, or by default onto the
    /// newest ACTIVE version declared after its own.
    RuntimeUpgrade { image_version: Option<String> },
}

/// Starts an update in place of a serving (Healthy or Paused) deployment, for whom its
/// environment's rule allows; one at a time.
pub fn decide_update(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
    update_id: Uuid,
    change: Change,
    reason: String,
) -> Result<Decision, DomainError> {
    let d = live(state, deployment_id)?;
    may_change_deployment(state, actor, d, "updating a deployment")?;
    if !matches!(d.state, DeploymentState::Healthy | DeploymentState::Paused) {
        return Err(DomainError::Conflict(format!(
            "deployment {deployment_id} is {:?}; only a Healthy or Paused deployment is updated in place",
            d.state
        )));
    }
    if let Some(u) = d.pending_update() {
        return Err(DomainError::Conflict(format!(
            "update {} of deployment {deployment_id} is still loading",
            u.update_id
        )));
    }
    let reason = text("reason", reason, 1, 10_000)?;
    let (kind, mode, variants, rollback_to) = match change {
        Change::Variants { mode, variants } => {
            let placement = placement_of(d);
            let resolved =
                resolve_variants(state, actor, mode, &variants, &placement, Some(&d.variants))?;
            (UpdateKind::Update, mode, resolved, None)
        }
        Change::Rollback { position } => {
            let (at, mode, variants) = rollback_target(state, actor, d, position)?;
            (UpdateKind::Rollback, mode, variants, Some(at))
        }
        Change::RuntimeUpgrade { image_version } => {
            let variants = upgraded(&state.runtimes, d, image_version.as_deref())?;
            (UpdateKind::RuntimeUpgrade, d.mode, variants, None)
        }
    };
    if mode == d.mode && variants == d.variants {
        return Err(DomainError::Conflict(format!(
            "deployment {deployment_id} already serves this configuration"
        )));
    }
    Ok(decision(
        deployment_id,
        vec![RegistryEvent::DeploymentUpdateStarted(
            DeploymentUpdateStarted {
                deployment_id,
                update_id,
                kind,
                mode,
                variants,
                rollback_to,
                reason,
            },
        )],
    ))
}

fn placement_of(d: &Deployment) -> Placement {
    Placement {
        environment: d.spec.environment.clone(),
        security: d.spec.security.clone(),
        retention: d.spec.retention.clone(),
    }
}

/// The configuration in effect at `position` (the last revision at or before it), checked
/// as a new choice would be: live versions the actor edits, image versions not DISABLED.
fn rollback_target(
    state: &Registry,
    actor: Uuid,
    d: &Deployment,
    position: u64,
) -> Result<(u64, Mode, Variants), DomainError> {
    let revision = d
        .revisions
        .iter()
        .rev()
        .find(|r| r.position <= position)
        .ok_or_else(|| DomainError::Invalid {
            field: "position",
            detail: format!(
                "deployment {} was created at position {}; nothing ran before it",
                d.deployment_id, d.created.position
            ),
        })?;
    for v in revision.variants.values() {
        editable_version(
            state,
            actor,
            v.spec.model_id,
            v.spec.version,
            "rolling back",
        )?;
        state
            .runtimes
            .usable(&v.spec.runtime_id, &v.spec.image_version)?;
    }
    Ok((revision.position, revision.mode, revision.variants.clone()))
}

/// Every variant of `d` on the image version asked for, or on its image's newest ACTIVE
/// version declared after its own; an error when no variant moves.
fn upgraded(
    catalog: &Catalog,
    d: &Deployment,
    wanted: Option<&str>,
) -> Result<Variants, DomainError> {
    let mut variants = d.variants.clone();
    let mut moved = 0;
    for v in variants.values_mut() {
        let target = match wanted {
            Some(w)
                if catalog
                    .versions
                    .contains_key(&version_key(&v.spec.image_id, w)) =>
            {
                Some(w.to_string())
            }
            Some(_) => None,
            None => newer_active(catalog, &v.spec.image_id, &v.spec.image_version),
        };
        let Some(target) = target.filter(|t| *t != v.spec.image_version) else {
            continue;
        };
        let warnings = catalog.usable(&v.spec.runtime_id, &target)?;
        v.spec.runtime = catalog.versions[&version_key(&v.spec.image_id, &target)]
            .spec
            .clone();
        v.spec.image_version = target;
        v.spec.warnings = warnings;
        moved += 1;
    }
    if moved == 0 {
        return Err(DomainError::Conflict(match wanted {
            Some(w) => format!(
                "no variant of deployment {} has image version {w:?} to move to",
                d.deployment_id
            ),
            None => format!(
                "deployment {} runs the newest ACTIVE image version of each of its runtimes",
                d.deployment_id
            ),
        }));
    }
    Ok(variants)
}

/// The newest ACTIVE version of `image_id` declared after `current`.
fn newer_active(catalog: &Catalog, image_id: &str, current: &str) -> Option<String> {
    let declared = |v: &str| {
        catalog
            .versions
            .get(&version_key(image_id, v))
            .map_or(0, |e| e.declared.position)
    };
    newest_image_version(catalog, image_id, |s| s == RuntimeState::Active)
        .filter(|newest| declared(newest) > declared(current))
}

/// The scorer's end of the pending update `update_id`.
pub fn decide_update_end(
    state: &Registry,
    deployment_id: Uuid,
    update_id: Uuid,
    outcome: UpdateOutcome,
    detail: String,
) -> Result<Decision, DomainError> {
    let d = super::deployment::find(state, deployment_id)?;
    if d.pending_update().map(|u| u.update_id) != Some(update_id) {
        return Err(DomainError::Conflict(format!(
            "update {update_id} of deployment {deployment_id} is not in progress"
        )));
    }
    Ok(decision(
        deployment_id,
        vec![RegistryEvent::DeploymentUpdateEnded(
            DeploymentUpdateEnded {
                deployment_id,
                update_id,
                outcome,
                detail,
            },
        )],
    ))
}

/// A request to promote a deployment into another environment.
#[derive(Debug, Clone)]
pub struct Promote {
    /// The new deployment's id.
    pub deployment_id: Uuid,
    pub from: Uuid,
    pub environment: String,
    /// By default the promoted deployment's.
    pub security: Option<Security>,
    pub retention: Option<Retention>,
    pub reason: String,
}

/// Promotes a deployment that has served into another environment: a new deployment of the
/// same variants, exactly (model blobs, runtime image versions and settings), which names the
/// one it came from. Its environment's rule decides who may.
pub fn decide_promote(
    state: &Registry,
    actor: Uuid,
    request: Promote,
) -> Result<Decision, DomainError> {
    let Promote {
        deployment_id,
        from,
        environment,
        security,
        retention,
        reason,
    } = request;
    let source = live(state, from)?;
    let target = configured_environment(state, &environment)?;
    if target.name == source.spec.environment {
        return Err(DomainError::Invalid {
            field: "environment",
            detail: format!("deployment {from} is already in {environment}"),
        });
    }
    may_change(state, actor, source.spec.project_id, target, "promoting")?;
    if !source
        .history
        .iter()
        .any(|t| t.to == DeploymentState::Healthy)
    {
        return Err(DomainError::Conflict(format!(
            "deployment {from} never became Healthy; only a deployment that served is promoted"
        )));
    }
    let reason = text("reason", reason, 1, 10_000)?;
    let mut variants = source.variants.clone();
    for v in variants.values_mut() {
        editable_version(state, actor, v.spec.model_id, v.spec.version, "promoting")?;
        state
            .runtimes
            .usable(&v.spec.runtime_id, &v.spec.image_version)?;
        v.spec.environment = target.name.clone();
        if let Some(s) = &security {
            v.spec.security = s.clone();
        }
        if let Some(r) = &retention {
            v.spec.retention = r.clone();
        }
    }
    Ok(Decision {
        stream: stream(deployment_id),
        expected: ExpectedVersion::NoStream,
        events: vec![RegistryEvent::DeploymentCreated(DeploymentCreated {
            deployment_id,
            mode: source.mode,
            variants,
            promoted_from: Some(from),
            reason: Some(reason),
        })],
    })
}

/// Deletes a deployment for good, stopping it first if it still serves; not while an endpoint
/// points at it or an update is loading.
pub fn decide_delete(
    state: &Registry,
    actor: Uuid,
    deployment_id: Uuid,
    reason: String,
) -> Result<Decision, DomainError> {
    let d = live(state, deployment_id)?;
    may_change_deployment(state, actor, d, "deleting a deployment")?;
    let reason = text("reason", reason, 1, 10_000)?;
    let pointing: Vec<&str> = state
        .endpoints
        .values()
        .filter(|e| e.deployment_id == Some(deployment_id))
        .map(|e| e.name.as_str())
        .collect();
    if !pointing.is_empty() {
        return Err(DomainError::Conflict(format!(
            "endpoint {} points at deployment {deployment_id}; re-point or remove it first",
            pointing.join(", ")
        )));
    }
    if let Some(u) = d.pending_update() {
        return Err(DomainError::Conflict(format!(
            "update {} of deployment {deployment_id} is still loading",
            u.update_id
        )));
    }
    let mut events = Vec::new();
    if !matches!(d.state, DeploymentState::Stopped | DeploymentState::Failed) {
        events.push(RegistryEvent::DeploymentStateChanged(
            DeploymentStateChanged {
                deployment_id,
                from: d.state,
                to: DeploymentState::Stopped,
                reason: reason.clone(),
            },
        ));
    }
    events.push(RegistryEvent::DeploymentDeleted(DeploymentDeleted {
        deployment_id,
        project_id: d.spec.project_id,
        reason,
    }));
    Ok(decision(deployment_id, events))
}

/// A variant of a serving deployment whose runtime image has a newer ACTIVE version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Upgrade {
    pub deployment_id: Uuid,
    pub project_id: Uuid,
    pub environment: String,
    pub variant: String,
    pub runtime_id: String,
    pub image_id: String,
    pub image_version: String,
    /// The newest ACTIVE version of the image, declared after `image_version`.
    pub available: String,
}

/// Every variant of a serving deployment that a runtime upgrade would move, by deployment.
pub fn upgrades(state: &Registry) -> Vec<Upgrade> {
    let serving = |d: &&Deployment| {
        d.deleted.is_none() && matches!(d.state, DeploymentState::Healthy | DeploymentState::Paused)
    };
    state
        .deployments
        .values()
        .filter(serving)
        .flat_map(|d| {
            d.variants
                .iter()
                .filter_map(|(name, v): (&String, &Variant)| {
                    let s = &v.spec;
                    let available = newer_active(&state.runtimes, &s.image_id, &s.image_version)?;
                    Some(Upgrade {
                        deployment_id: d.deployment_id,
                        project_id: s.project_id,
                        environment: s.environment.clone(),
                        variant: name.clone(),
                        runtime_id: s.runtime_id.clone(),
                        image_id: s.image_id.clone(),
                        image_version: s.image_version.clone(),
                        available,
                    })
                })
        })
        .collect()
}
