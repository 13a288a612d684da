//! The runtime ceilings read side: each runtime entity with both sources' states, the
//! effective one and who set what, when and why; and the runtimes an artifact can use. The
//! fold itself is `domain::runtime::apply`, applied by the registry projection, so a
//! rebuild from the log gives the same states as the live projection.

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Registry;
use crate::domain::runtime::{Catalog, EntityRef, version_key};
use crate::domain::state::ArtifactState;

/// An entity as JSON with its id fields first.
pub fn entity_json(c: &Catalog, e: &EntityRef) -> Option<Value> {
    let (ids, body) = match e {
        EntityRef::Image { image_id } => (
            json!({"image_id": image_id}),
            serde_json::to_value(c.images.get(image_id)?),
        ),
        EntityRef::ImageVersion { image_id, version } => (
            json!({"image_id": image_id, "version": version}),
            serde_json::to_value(c.versions.get(&version_key(image_id, version))?),
        ),
        EntityRef::Runtime { runtime_id } => (
            json!({"runtime_id": runtime_id}),
            serde_json::to_value(c.runtimes.get(runtime_id)?),
        ),
    };
    let mut out = ids;
    if let (Some(o), Ok(Value::Object(b))) = (out.as_object_mut(), body) {
        o.extend(b);
    }
    Some(out)
}

/// A runtime an experiment's artifact could be deployed on.
#[derive(Serialize, ToSchema)]
pub struct Compatible {
    pub artifact_id: Uuid,
    pub artifact_type: String,
    pub model_type: String,
    pub deployable: bool,
    pub runtimes: Vec<Value>,
}

/// The model type of an artifact and the runtimes serving it, each with its effective state
/// and its image's versions.
pub fn compatible(reg: &Registry, a: &ArtifactState) -> Compatible {
    let c = &reg.runtimes;
    let ingestion = a.ingestion.as_ref();
    let deployable = ingestion.is_some_and(|i| i.deployable);
    let model_type = match ingestion {
        Some(i) if i.deployable => i.model_type.clone(),
        _ => c.artifact_types.get(&a.artifact.artifact_type).map_or_else(
            || a.artifact.artifact_type.clone(),
            |t| t.model_type.clone(),
        ),
    };
    let runtimes = c
        .runtimes
        .iter()
        .filter(|(_, r)| r.deleted.is_none() && r.spec.model_types.contains(&model_type))
        .map(|(id, r)| {
            let prefix = format!("{}@", r.spec.image_id);
            let versions: Vec<Value> = c
                .versions
                .iter()
                .filter(|(_, v)| v.deleted.is_none())
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix)
                        .map(|ver| json!({"version": ver, "effective": v.effective}))
                })
                .collect();
            json!({
                "runtime_id": id,
                "name": r.spec.name,
                "available": r.spec.available,
                "effective": r.effective,
                "image_id": r.spec.image_id,
                "image_effective": c.images.get(&r.spec.image_id).map(|i| i.effective),
                "image_versions": versions,
            })
        })
        .collect();
    Compatible {
        artifact_id: a.artifact.artifact_id,
        artifact_type: a.artifact.artifact_type.clone(),
        model_type,
        deployable,
        runtimes,
    }
}
