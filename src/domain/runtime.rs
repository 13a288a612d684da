//! Runtime management: runtime images, image versions and runtimes, each with a state per
//! management source and the ceiling rule between them.
//!
//! Two sources manage states: `bootstrap` (the file applied at every start) and `api`
//! (admins). The effective state is the more restrictive of the two. Either source may
//! always restrict its own state; raising it is refused beyond the other source's state,
//! with an error that names that ceiling and who set it. Bootstrap never fails: a state it
//! cannot make effective simply stays capped by the API's. All runtime events go to one
//! stream, so a bootstrap application is a single atomic append.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::log::ExpectedVersion;

use super::event::*;
use super::state::{Registry, Stamp};
use super::{Decision, DomainError};

/// The stream of every runtime-management event.
pub const STREAM: &str = "runtimes";

/// Ordered by what it allows: `Disabled < Deprecated < Active`.
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
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuntimeState {
    Disabled,
    Deprecated,
    Active,
}

impl fmt::Display for RuntimeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeState::Disabled => "DISABLED",
            RuntimeState::Deprecated => "DEPRECATED",
            RuntimeState::Active => "ACTIVE",
        })
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Bootstrap,
    Api,
}

/// Which entity an event or command is about.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityRef {
    Image { image_id: String },
    ImageVersion { image_id: String, version: String },
    Runtime { runtime_id: String },
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityRef::Image { image_id } => write!(f, "runtime image {image_id}"),
            EntityRef::ImageVersion { image_id, version } => {
                write!(f, "runtime image version {image_id}@{version}")
            }
            EntityRef::Runtime { runtime_id } => write!(f, "runtime {runtime_id}"),
        }
    }
}

/// A scorer family, e.g. "ONNX Scorer".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A concrete build of an image: what a deployment on it runs with, recorded in the
/// deployment and in every prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageVersionSpec {
    pub scorer_version: String,
    /// The ONNX Runtime version it pins (empty for images we do not execute).
    #[serde(default)]
    pub onnxruntime_version: String,
    #[serde(default = "default_provider")]
    pub execution_provider: String,
    #[serde(default = "one")]
    pub intra_op_threads: u32,
    #[serde(default = "one")]
    pub inter_op_threads: u32,
    /// `sequential` or `parallel`.
    #[serde(default = "default_mode")]
    pub execution_mode: String,
    /// `disable`, `basic`, `extended` or `all`.
    #[serde(default = "default_optimization")]
    pub graph_optimization: String,
}

impl Default for ImageVersionSpec {
    /// Every setting at its default; no scorer or ONNX Runtime version.
    fn default() -> Self {
        ImageVersionSpec {
            scorer_version: String::new(),
            onnxruntime_version: String::new(),
            execution_provider: default_provider(),
            intra_op_threads: one(),
            inter_op_threads: one(),
            execution_mode: default_mode(),
            graph_optimization: default_optimization(),
        }
    }
}

fn default_provider() -> String {
    "CPUExecutionProvider".into()
}
fn one() -> u32 {
    1
}
fn default_mode() -> String {
    "sequential".into()
}
fn default_optimization() -> String {
    "all".into()
}

/// The scorer settings of a runtime: H2O's settings and defaults, in lower case. A runtime's
/// `env` may override each under its H2O name (`SCORING_CONCURRENCY`, …); see `effective`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerSettings {
    /// Concurrent session runs.
    pub scoring_concurrency: u32,
    /// 0: each request is its own session run (the direct path); ≥ 1: workers coalesce the
    /// rows of concurrent requests into one run.
    pub batch_workers: u32,
    pub max_batch_size: u32,
    pub max_queue_delay_us: u64,
    /// 0: wait for a slot without limit; else 503 when none frees in time.
    pub scoring_timeout_ms: u64,
    /// A run slower than this is logged.
    pub scoring_warn_timeout_ms: u64,
    /// `strict` or `warn`: N rows in must give N rows out, or the request fails (`warn` logs
    /// on the direct path; the batching path always fails, it cannot split the rows).
    pub score_row_count_validation: String,
}

impl Default for ScorerSettings {
    fn default() -> Self {
        ScorerSettings {
            scoring_concurrency: 4,
            batch_workers: 1,
            max_batch_size: 64,
            max_queue_delay_us: 10_000,
            scoring_timeout_ms: 0,
            scoring_warn_timeout_ms: 30_000,
            score_row_count_validation: "strict".into(),
        }
    }
}

impl ScorerSettings {
    /// These settings with the runtime environment's overrides applied.
    pub fn effective(&self, env: &BTreeMap<String, String>) -> Result<ScorerSettings, DomainError> {
        let mut s = self.clone();
        for (key, value) in env {
            let bad = || DomainError::Invalid {
                field: "env",
                detail: format!("{key}={value:?} is not a valid value"),
            };
            let int = || value.trim().parse::<u64>().map_err(|_| bad());
            let small = || int().and_then(|v| u32::try_from(v).map_err(|_| bad()));
            match key.as_str() {
                "SCORING_CONCURRENCY" => s.scoring_concurrency = small()?,
                "BATCH_WORKERS" => s.batch_workers = small()?,
                "MAX_BATCH_SIZE" => s.max_batch_size = small()?,
                "MAX_QUEUE_DELAY_US" => s.max_queue_delay_us = int()?,
                "SCORING_TIMEOUT" => s.scoring_timeout_ms = int()?,
                "SCORING_WARN_TIMEOUT" => s.scoring_warn_timeout_ms = int()?,
                "SCORE_ROW_COUNT_VALIDATION" => {
                    s.score_row_count_validation = value.trim().to_lowercase()
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

/// A deployable configuration: an image serving some model types, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub name: String,
    pub image_id: String,
    pub model_types: Vec<String>,
    /// Whether this installation can execute it (only the embedded ONNX scorer can).
    #[serde(default)]
    pub available: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub settings: ScorerSettings,
}

/// One artifact type: its display name and the model type its processor yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactTypeSpec {
    pub artifact_type: String,
    pub name: String,
    pub model_type: String,
}

/// Who may change what runs in an environment, besides admins (who always may).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeployRole {
    /// Editors and owners of the project.
    Editor,
    /// Owners of the project.
    Owner,
    /// Admins only.
    Admin,
}

/// An environment deployments go to (DEV, PROD, …) and its access rule: who may deploy to it,
/// promote into it, and update, roll back, pause, resume, stop or delete what runs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub deploy_role: DeployRole,
}

/// The environments of a bootstrap file that names none: DEV for editors, PROD for owners.
pub fn default_environments() -> Vec<Environment> {
    vec![
        Environment {
            name: "DEV".into(),
            description: "Development: editors deploy".into(),
            deploy_role: DeployRole::Editor,
        },
        Environment {
            name: "PROD".into(),
            description: "Production: only project owners and admins change what runs".into(),
            deploy_role: DeployRole::Owner,
        },
    ]
}

/// One source's state of an entity, and who set it, when, why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SourceState {
    pub state: RuntimeState,
    pub reason: String,
    pub set: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StateChange {
    pub source: Source,
    pub from: Option<RuntimeState>,
    pub to: RuntimeState,
    pub reason: String,
    pub changed: Stamp,
}

/// An entity with both sources' states.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Managed<T> {
    pub spec: T,
    pub managed_by: Source,
    /// `None` while the bootstrap file does not name the entity.
    pub bootstrap: Option<SourceState>,
    pub api: Option<SourceState>,
    pub effective: RuntimeState,
    pub history: Vec<StateChange>,
    pub deleted: Option<Stamp>,
    pub declared: Stamp,
}

impl<T> Managed<T> {
    fn state(&self, source: Source) -> Option<&SourceState> {
        match source {
            Source::Bootstrap => self.bootstrap.as_ref(),
            Source::Api => self.api.as_ref(),
        }
    }

    /// The state `source` may raise its own to, and who capped it there.
    pub fn ceiling(&self, source: Source) -> Option<(Source, &SourceState)> {
        let other = match source {
            Source::Bootstrap => Source::Api,
            Source::Api => Source::Bootstrap,
        };
        self.state(other).map(|s| (other, s))
    }

    fn recompute(&mut self) {
        let of = |s: &Option<SourceState>| s.as_ref().map_or(RuntimeState::Active, |s| s.state);
        self.effective = of(&self.bootstrap).min(of(&self.api));
    }
}

pub type ImageEntry = Managed<ImageSpec>;
pub type VersionEntry = Managed<ImageVersionSpec>;
pub type RuntimeEntry = Managed<RuntimeSpec>;

/// The runtime catalog as of some position.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Catalog {
    pub images: BTreeMap<String, ImageEntry>,
    /// Keyed `image@version`.
    pub versions: BTreeMap<String, VersionEntry>,
    pub runtimes: BTreeMap<String, RuntimeEntry>,
    pub artifact_types: BTreeMap<String, ArtifactTypeSpec>,
    /// By name.
    pub environments: BTreeMap<String, Environment>,
    /// The last bootstrap application: file hash and when.
    pub bootstrap: Option<(String, Stamp)>,
}

pub fn version_key(image_id: &str, version: &str) -> String {
    format!("{image_id}@{version}")
}

impl Catalog {
    /// The entity's definition-independent part, if it exists (deleted or not).
    fn view(&self, e: &EntityRef) -> Option<EntityView<'_>> {
        Some(match e {
            EntityRef::Image { image_id } => EntityView::of(self.images.get(image_id)?),
            EntityRef::ImageVersion { image_id, version } => {
                EntityView::of(self.versions.get(&version_key(image_id, version))?)
            }
            EntityRef::Runtime { runtime_id } => EntityView::of(self.runtimes.get(runtime_id)?),
        })
    }

    /// Whether a new deployment may use the runtime with this image version: DISABLED
    /// anywhere refuses; DEPRECATED answers the warning to record.
    pub fn usable(
        &self,
        runtime_id: &str,
        image_version: &str,
    ) -> Result<Vec<String>, DomainError> {
        let runtime = self
            .runtimes
            .get(runtime_id)
            .filter(|r| r.deleted.is_none())
            .ok_or_else(|| {
                not_found(&EntityRef::Runtime {
                    runtime_id: runtime_id.into(),
                })
            })?;
        let image_id = runtime.spec.image_id.clone();
        let entities = [
            EntityRef::Runtime {
                runtime_id: runtime_id.into(),
            },
            EntityRef::Image {
                image_id: image_id.clone(),
            },
            EntityRef::ImageVersion {
                image_id,
                version: image_version.into(),
            },
        ];
        let mut warnings = Vec::new();
        for e in &entities {
            let v = self
                .view(e)
                .filter(|v| v.deleted.is_none())
                .ok_or_else(|| not_found(e))?;
            match v.effective {
                RuntimeState::Disabled => {
                    return Err(DomainError::Conflict(format!(
                        "{e} is DISABLED and cannot be chosen"
                    )));
                }
                RuntimeState::Deprecated => warnings.push(format!("{e} is DEPRECATED")),
                RuntimeState::Active => {}
            }
        }
        Ok(warnings)
    }
}

struct EntityView<'a> {
    managed_by: Source,
    bootstrap: Option<&'a SourceState>,
    api: Option<&'a SourceState>,
    deleted: Option<&'a Stamp>,
    effective: RuntimeState,
}

impl<'a> EntityView<'a> {
    fn of<T>(m: &'a Managed<T>) -> EntityView<'a> {
        EntityView {
            managed_by: m.managed_by,
            bootstrap: m.bootstrap.as_ref(),
            api: m.api.as_ref(),
            deleted: m.deleted.as_ref(),
            effective: m.effective,
        }
    }

    fn state(&self, source: Source) -> Option<&'a SourceState> {
        match source {
            Source::Bootstrap => self.bootstrap,
            Source::Api => self.api,
        }
    }
}

fn not_found(e: &EntityRef) -> DomainError {
    DomainError::NotFound {
        kind: super::Kind::Runtime,
        id: e.to_string(),
    }
}

/// What an admin asks of the runtime catalog.
#[derive(Debug, Clone)]
pub enum RuntimeCommand {
    CreateImage {
        image_id: String,
        spec: ImageSpec,
    },
    UpdateImage {
        image_id: String,
        spec: ImageSpec,
    },
    CreateImageVersion {
        image_id: String,
        version: String,
        spec: ImageVersionSpec,
    },
    UpdateImageVersion {
        image_id: String,
        version: String,
        spec: ImageVersionSpec,
    },
    CreateRuntime {
        runtime_id: String,
        spec: RuntimeSpec,
    },
    UpdateRuntime {
        runtime_id: String,
        spec: RuntimeSpec,
    },
    SetState {
        entity: EntityRef,
        to: RuntimeState,
        reason: String,
    },
    Delete {
        entity: EntityRef,
        reason: String,
    },
}

/// The bootstrap file, parsed (see `runtime::bootstrap` for reading it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    #[serde(default)]
    pub artifact_types: Vec<ArtifactTypeSpec>,
    /// None: DEV and PROD (`default_environments`).
    #[serde(default)]
    pub environments: Option<Vec<Environment>>,
    #[serde(default)]
    pub runtime_images: Vec<BootstrapImage>,
    #[serde(default)]
    pub runtimes: Vec<BootstrapRuntime>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapImage {
    pub id: String,
    #[serde(flatten)]
    pub spec: ImageSpec,
    #[serde(default = "active")]
    pub state: RuntimeState,
    #[serde(default)]
    pub versions: Vec<BootstrapVersion>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapVersion {
    pub version: String,
    #[serde(flatten)]
    pub spec: ImageVersionSpec,
    #[serde(default = "active")]
    pub state: RuntimeState,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRuntime {
    pub id: String,
    #[serde(flatten)]
    pub spec: RuntimeSpec,
    #[serde(default = "active")]
    pub state: RuntimeState,
}

fn active() -> RuntimeState {
    RuntimeState::Active
}

fn decision(state: &Registry, events: Vec<RegistryEvent>) -> Decision {
    Decision {
        stream: STREAM.to_string(),
        expected: ExpectedVersion::after(state.stream_versions.get(STREAM).copied()),
        events,
    }
}

/// Decides an admin's command. Only admins manage runtimes.
pub fn decide_runtime(
    state: &Registry,
    actor: uuid::Uuid,
    command: RuntimeCommand,
) -> Result<Decision, DomainError> {
    let admin = state
        .users
        .get(&actor)
        .is_some_and(|u| u.roles.contains(&GlobalRole::Admin));
    if !admin {
        return Err(DomainError::Forbidden(
            "runtime management needs the admin role".into(),
        ));
    }
    let c = &state.runtimes;
    use RuntimeCommand as R;
    let event = match command {
        R::CreateImage { image_id, spec } => {
            let image_id = slug("image_id", image_id)?;
            absent(
                c,
                &EntityRef::Image {
                    image_id: image_id.clone(),
                },
            )?;
            RegistryEvent::RuntimeImageDeclared(RuntimeImageDeclared {
                image_id,
                source: Source::Api,
                spec: check_image(spec)?,
            })
        }
        R::UpdateImage { image_id, spec } => {
            api_managed(
                c,
                &EntityRef::Image {
                    image_id: image_id.clone(),
                },
            )?;
            RegistryEvent::RuntimeImageDeclared(RuntimeImageDeclared {
                image_id,
                source: Source::Api,
                spec: check_image(spec)?,
            })
        }
        R::CreateImageVersion {
            image_id,
            version,
            spec,
        } => {
            live(
                c,
                &EntityRef::Image {
                    image_id: image_id.clone(),
                },
            )?;
            let version = version_name(version)?;
            absent(
                c,
                &EntityRef::ImageVersion {
                    image_id: image_id.clone(),
                    version: version.clone(),
                },
            )?;
            RegistryEvent::RuntimeImageVersionDeclared(RuntimeImageVersionDeclared {
                image_id,
                version,
                source: Source::Api,
                spec: check_version(spec)?,
            })
        }
        R::UpdateImageVersion {
            image_id,
            version,
            spec,
        } => {
            api_managed(
                c,
                &EntityRef::ImageVersion {
                    image_id: image_id.clone(),
                    version: version.clone(),
                },
            )?;
            RegistryEvent::RuntimeImageVersionDeclared(RuntimeImageVersionDeclared {
                image_id,
                version,
                source: Source::Api,
                spec: check_version(spec)?,
            })
        }
        R::CreateRuntime { runtime_id, spec } => {
            let runtime_id = slug("runtime_id", runtime_id)?;
            absent(
                c,
                &EntityRef::Runtime {
                    runtime_id: runtime_id.clone(),
                },
            )?;
            live(
                c,
                &EntityRef::Image {
                    image_id: spec.image_id.clone(),
                },
            )?;
            RegistryEvent::RuntimeDeclared(RuntimeDeclared {
                runtime_id,
                source: Source::Api,
                spec: check_runtime(spec)?,
            })
        }
        R::UpdateRuntime { runtime_id, spec } => {
            api_managed(
                c,
                &EntityRef::Runtime {
                    runtime_id: runtime_id.clone(),
                },
            )?;
            live(
                c,
                &EntityRef::Image {
                    image_id: spec.image_id.clone(),
                },
            )?;
            RegistryEvent::RuntimeDeclared(RuntimeDeclared {
                runtime_id,
                source: Source::Api,
                spec: check_runtime(spec)?,
            })
        }
        R::SetState { entity, to, reason } => {
            let v = live(c, &entity)?;
            let reason = reason_text(reason)?;
            let from = v.state(Source::Api).map(|s| s.state);
            let current = from.unwrap_or(RuntimeState::Active);
            // Raising (or asking for what the ceiling already holds down) stops at the
            // bootstrap source's state; restricting is always allowed.
            if let Some(cap) = v.bootstrap.filter(|b| to >= current && to > b.state) {
                return Err(DomainError::Ceiling(format!(
                    "{entity} cannot be made {to}: the bootstrap source caps it at {} (set by {} at {}: {})",
                    cap.state, cap.set.actor, cap.set.at, cap.reason
                )));
            }
            if to == current {
                return Err(DomainError::Conflict(format!(
                    "{entity} is already {to} by the api source"
                )));
            }
            RegistryEvent::RuntimeStateChanged(RuntimeStateChanged {
                entity,
                source: Source::Api,
                from,
                to,
                reason,
            })
        }
        R::Delete { entity, reason } => {
            let v = live(c, &entity)?;
            if v.managed_by == Source::Bootstrap {
                return Err(DomainError::BootstrapManaged(format!(
                    "{entity} is managed by the bootstrap file; remove it there (it is then disabled) or disable it through the API"
                )));
            }
            if let Some(user) = dependents(c, &entity).into_iter().next() {
                return Err(DomainError::Conflict(format!(
                    "{entity} is used by {user}; delete that first"
                )));
            }
            RegistryEvent::RuntimeEntityDeleted(RuntimeEntityDeleted {
                entity,
                reason: reason_text(reason)?,
            })
        }
    };
    Ok(decision(state, vec![event]))
}

/// Live entities that refer to `e`.
fn dependents(c: &Catalog, e: &EntityRef) -> Vec<EntityRef> {
    let EntityRef::Image { image_id } = e else {
        return Vec::new();
    };
    let versions = c
        .versions
        .iter()
        .filter(|(k, v)| {
            v.deleted.is_none() && k.split_once('@').is_some_and(|(i, _)| i == image_id)
        })
        .filter_map(|(k, _)| k.split_once('@'))
        .map(|(i, ver)| EntityRef::ImageVersion {
            image_id: i.into(),
            version: ver.into(),
        });
    let runtimes = c
        .runtimes
        .iter()
        .filter(|(_, r)| r.deleted.is_none() && r.spec.image_id == *image_id)
        .map(|(id, _)| EntityRef::Runtime {
            runtime_id: id.clone(),
        });
    versions.chain(runtimes).collect()
}

fn live<'a>(c: &'a Catalog, e: &EntityRef) -> Result<EntityView<'a>, DomainError> {
    match c.view(e) {
        Some(v) if v.deleted.is_none() => Ok(v),
        Some(v) => Err(DomainError::NotFound {
            kind: super::Kind::Runtime,
            id: format!(
                "{e} (deleted at {})",
                v.deleted.map_or("", |d| d.at.as_str())
            ),
        }),
        None => Err(not_found(e)),
    }
}

fn absent(c: &Catalog, e: &EntityRef) -> Result<(), DomainError> {
    match c.view(e) {
        Some(v) if v.deleted.is_none() => {
            Err(DomainError::AlreadyExists(format!("{e} exists already")))
        }
        _ => Ok(()),
    }
}

fn api_managed(c: &Catalog, e: &EntityRef) -> Result<(), DomainError> {
    if live(c, e)?.managed_by == Source::Bootstrap {
        return Err(DomainError::BootstrapManaged(format!(
            "{e} is defined by the bootstrap file; change it there"
        )));
    }
    Ok(())
}

/// The events that bring the catalog in line with a bootstrap file: definitions new or
/// changed, bootstrap states as the file says (entities it no longer names are disabled,
/// not deleted), the artifact types, and a record of the application itself.
pub fn decide_bootstrap(state: &Registry, file: &Bootstrap, file_hash: &str) -> Decision {
    let c = &state.runtimes;
    let mut events = Vec::new();
    let mut named = Vec::new();
    let mut declare = |events: &mut Vec<RegistryEvent>,
                       e: EntityRef,
                       same: bool,
                       want: RuntimeState,
                       event: RegistryEvent| {
        let view = c.view(&e).filter(|v| v.deleted.is_none());
        let managed = view
            .as_ref()
            .is_some_and(|v| v.managed_by == Source::Bootstrap);
        if !(same && managed) {
            events.push(event);
        }
        let from = view.as_ref().and_then(|v| v.bootstrap.map(|b| b.state));
        if from != Some(want) {
            events.push(RegistryEvent::RuntimeStateChanged(RuntimeStateChanged {
                entity: e.clone(),
                source: Source::Bootstrap,
                from,
                to: want,
                reason: "as the bootstrap file sets it".into(),
            }));
        }
        named.push(e);
    };
    for img in &file.runtime_images {
        let e = EntityRef::Image {
            image_id: img.id.clone(),
        };
        let same = c.images.get(&img.id).is_some_and(|x| x.spec == img.spec);
        let event = RegistryEvent::RuntimeImageDeclared(RuntimeImageDeclared {
            image_id: img.id.clone(),
            source: Source::Bootstrap,
            spec: img.spec.clone(),
        });
        declare(&mut events, e, same, img.state, event);
        for v in &img.versions {
            let e = EntityRef::ImageVersion {
                image_id: img.id.clone(),
                version: v.version.clone(),
            };
            let same = c
                .versions
                .get(&version_key(&img.id, &v.version))
                .is_some_and(|x| x.spec == v.spec);
            let event = RegistryEvent::RuntimeImageVersionDeclared(RuntimeImageVersionDeclared {
                image_id: img.id.clone(),
                version: v.version.clone(),
                source: Source::Bootstrap,
                spec: v.spec.clone(),
            });
            declare(&mut events, e, same, v.state, event);
        }
    }
    for r in &file.runtimes {
        let e = EntityRef::Runtime {
            runtime_id: r.id.clone(),
        };
        let same = c.runtimes.get(&r.id).is_some_and(|x| x.spec == r.spec);
        let event = RegistryEvent::RuntimeDeclared(RuntimeDeclared {
            runtime_id: r.id.clone(),
            source: Source::Bootstrap,
            spec: r.spec.clone(),
        });
        declare(&mut events, e, same, r.state, event);
    }
    // Entities the file no longer names: the platform's ceiling drops to DISABLED.
    let managed = c
        .images
        .iter()
        .map(|(id, m)| {
            (
                EntityRef::Image {
                    image_id: id.clone(),
                },
                EntityView::of(m),
            )
        })
        .chain(c.versions.iter().filter_map(|(k, m)| {
            let (i, v) = k.split_once('@')?;
            Some((
                EntityRef::ImageVersion {
                    image_id: i.into(),
                    version: v.into(),
                },
                EntityView::of(m),
            ))
        }))
        .chain(c.runtimes.iter().map(|(id, m)| {
            (
                EntityRef::Runtime {
                    runtime_id: id.clone(),
                },
                EntityView::of(m),
            )
        }));
    for (e, v) in managed {
        let dropped =
            v.managed_by == Source::Bootstrap && v.deleted.is_none() && !named.contains(&e);
        let from = v.bootstrap.map(|b| b.state);
        if dropped && from != Some(RuntimeState::Disabled) {
            events.push(RegistryEvent::RuntimeStateChanged(RuntimeStateChanged {
                entity: e,
                source: Source::Bootstrap,
                from,
                to: RuntimeState::Disabled,
                reason: "removed from the bootstrap file".into(),
            }));
        }
    }
    let types: Vec<ArtifactTypeSpec> = file.artifact_types.clone();
    if c.artifact_types.values().cloned().collect::<Vec<_>>() != sorted(&types) {
        events.push(RegistryEvent::ArtifactTypesDeclared(
            ArtifactTypesDeclared {
                artifact_types: sorted(&types),
            },
        ));
    }
    let mut environments = file
        .environments
        .clone()
        .unwrap_or_else(default_environments);
    environments.sort_by(|a, b| a.name.cmp(&b.name));
    if c.environments.values().cloned().collect::<Vec<_>>() != environments {
        events.push(RegistryEvent::EnvironmentsDeclared(EnvironmentsDeclared {
            environments,
        }));
    }
    let changes = u32::try_from(events.len()).unwrap_or(u32::MAX);
    events.push(RegistryEvent::RuntimeBootstrapApplied(
        RuntimeBootstrapApplied {
            file_hash: file_hash.to_string(),
            changes,
        },
    ));
    decision(state, events)
}

fn sorted(types: &[ArtifactTypeSpec]) -> Vec<ArtifactTypeSpec> {
    let mut t = types.to_vec();
    t.sort_by(|a, b| a.artifact_type.cmp(&b.artifact_type));
    t
}

/// Checks a bootstrap file's content: ids, references, duplicates. Names the entry.
pub fn check_bootstrap(file: &Bootstrap) -> Result<(), DomainError> {
    let mut images = Vec::new();
    for (i, img) in file.runtime_images.iter().enumerate() {
        let at = |d: DomainError| DomainError::Invalid {
            field: "runtime_images",
            detail: format!("entry {i} ({:?}): {d}", img.id),
        };
        slug("id", img.id.clone()).map_err(at)?;
        check_image(img.spec.clone()).map_err(at)?;
        if images.contains(&img.id) {
            return Err(at(DomainError::AlreadyExists(
                "the id appears twice".into(),
            )));
        }
        let mut versions = Vec::new();
        for v in &img.versions {
            version_name(v.version.clone()).map_err(at)?;
            check_version(v.spec.clone()).map_err(at)?;
            if versions.contains(&v.version) {
                return Err(at(DomainError::AlreadyExists(format!(
                    "version {:?} appears twice",
                    v.version
                ))));
            }
            versions.push(v.version.clone());
        }
        images.push(img.id.clone());
    }
    let mut runtimes = Vec::new();
    for (i, r) in file.runtimes.iter().enumerate() {
        let at = |d: DomainError| DomainError::Invalid {
            field: "runtimes",
            detail: format!("entry {i} ({:?}): {d}", r.id),
        };
        slug("id", r.id.clone()).map_err(at)?;
        check_runtime(r.spec.clone()).map_err(at)?;
        if !images.contains(&r.spec.image_id) {
            return Err(at(DomainError::Invalid {
                field: "image_id",
                detail: format!("no runtime image {:?} in the file", r.spec.image_id),
            }));
        }
        if runtimes.contains(&r.id) {
            return Err(at(DomainError::AlreadyExists(
                "the id appears twice".into(),
            )));
        }
        runtimes.push(r.id.clone());
    }
    let mut types = Vec::new();
    for (i, t) in file.artifact_types.iter().enumerate() {
        if t.artifact_type.is_empty() || t.model_type.is_empty() || types.contains(&t.artifact_type)
        {
            return Err(DomainError::Invalid {
                field: "artifact_types",
                detail: format!(
                    "entry {i} ({:?}): needs a unique artifact_type and a model_type",
                    t.artifact_type
                ),
            });
        }
        types.push(t.artifact_type.clone());
    }
    let environments = file.environments.as_deref().unwrap_or_default();
    if file.environments.is_some() && environments.is_empty() {
        return Err(DomainError::Invalid {
            field: "environments",
            detail: "name at least one environment, or leave the key out for DEV and PROD".into(),
        });
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, e) in environments.iter().enumerate() {
        let at = |detail: String| DomainError::Invalid {
            field: "environments",
            detail: format!("entry {i} ({:?}): {detail}", e.name),
        };
        super::deployment::check_environment(e.name.clone()).map_err(|d| at(d.to_string()))?;
        if names.contains(&e.name.as_str()) {
            return Err(at("the name appears twice".into()));
        }
        names.push(&e.name);
    }
    Ok(())
}

fn slug(field: &'static str, id: String) -> Result<String, DomainError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    if ok {
        Ok(id)
    } else {
        Err(DomainError::Invalid {
            field,
            detail: format!("{id:?}: 1 to 64 lowercase letters, digits or '-'"),
        })
    }
}

fn version_name(v: String) -> Result<String, DomainError> {
    let ok = (1..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_+".contains(c));
    if ok {
        Ok(v)
    } else {
        Err(DomainError::Invalid {
            field: "version",
            detail: format!("{v:?}: 1 to 64 letters, digits, '.', '-', '_' or '+'"),
        })
    }
}

fn nonempty(field: &'static str, v: &str) -> Result<(), DomainError> {
    if v.trim().is_empty() || v.len() > 200 {
        return Err(DomainError::Invalid {
            field,
            detail: "must be 1 to 200 characters".into(),
        });
    }
    Ok(())
}

fn check_image(spec: ImageSpec) -> Result<ImageSpec, DomainError> {
    nonempty("name", &spec.name)?;
    Ok(spec)
}

fn check_version(spec: ImageVersionSpec) -> Result<ImageVersionSpec, DomainError> {
    nonempty("scorer_version", &spec.scorer_version)?;
    let one_of = |field: &'static str, v: &str, allowed: &[&str]| {
        if allowed.contains(&v) {
            Ok(())
        } else {
            Err(DomainError::Invalid {
                field,
                detail: format!("{v:?}: expected one of {}", allowed.join(", ")),
            })
        }
    };
    one_of(
        "execution_mode",
        &spec.execution_mode,
        &["sequential", "parallel"],
    )?;
    one_of(
        "graph_optimization",
        &spec.graph_optimization,
        &["disable", "basic", "extended", "all"],
    )?;
    if spec.intra_op_threads == 0 || spec.inter_op_threads == 0 {
        return Err(DomainError::Invalid {
            field: "intra_op_threads",
            detail: "thread counts are at least 1".into(),
        });
    }
    Ok(spec)
}

fn check_runtime(spec: RuntimeSpec) -> Result<RuntimeSpec, DomainError> {
    nonempty("name", &spec.name)?;
    if spec.model_types.is_empty() {
        return Err(DomainError::Invalid {
            field: "model_types",
            detail: "a runtime serves at least one model type".into(),
        });
    }
    let s = &spec.settings.effective(&spec.env)?;
    if s.scoring_concurrency == 0 || s.max_batch_size == 0 {
        return Err(DomainError::Invalid {
            field: "settings",
            detail: "scoring_concurrency and max_batch_size are at least 1".into(),
        });
    }
    if !["strict", "warn"].contains(&s.score_row_count_validation.as_str()) {
        return Err(DomainError::Invalid {
            field: "settings.score_row_count_validation",
            detail: "strict or warn".into(),
        });
    }
    Ok(spec)
}

fn reason_text(r: String) -> Result<String, DomainError> {
    let r = r.trim().to_string();
    if r.is_empty() || r.chars().count() > 10_000 {
        return Err(DomainError::Invalid {
            field: "reason",
            detail: "a reason of 1 to 10000 characters is required".into(),
        });
    }
    Ok(r)
}

/// Folds a runtime event into the catalog (other events leave it as it is).
pub fn apply(c: &mut Catalog, event: &RegistryEvent, stamp: &Stamp) {
    use RegistryEvent as E;
    fn declare<T>(
        map: &mut BTreeMap<String, Managed<T>>,
        key: String,
        source: Source,
        spec: T,
        stamp: &Stamp,
    ) {
        match map.get_mut(&key) {
            Some(m) if m.deleted.is_none() => {
                m.spec = spec;
                if source == Source::Bootstrap {
                    m.managed_by = Source::Bootstrap;
                }
            }
            _ => {
                let mut m = Managed {
                    spec,
                    managed_by: source,
                    bootstrap: None,
                    api: None,
                    effective: RuntimeState::Active,
                    history: Vec::new(),
                    deleted: None,
                    declared: stamp.clone(),
                };
                m.recompute();
                map.insert(key, m);
            }
        }
    }
    match event {
        E::RuntimeImageDeclared(e) => declare(
            &mut c.images,
            e.image_id.clone(),
            e.source,
            e.spec.clone(),
            stamp,
        ),
        E::RuntimeImageVersionDeclared(e) => declare(
            &mut c.versions,
            version_key(&e.image_id, &e.version),
            e.source,
            e.spec.clone(),
            stamp,
        ),
        E::RuntimeDeclared(e) => declare(
            &mut c.runtimes,
            e.runtime_id.clone(),
            e.source,
            e.spec.clone(),
            stamp,
        ),
        E::RuntimeStateChanged(e) => {
            let set = SourceState {
                state: e.to,
                reason: e.reason.clone(),
                set: stamp.clone(),
            };
            let change = StateChange {
                source: e.source,
                from: e.from,
                to: e.to,
                reason: e.reason.clone(),
                changed: stamp.clone(),
            };
            with_entity(c, &e.entity, |slot_b, slot_a, history| {
                match e.source {
                    Source::Bootstrap => *slot_b = Some(set),
                    Source::Api => *slot_a = Some(set),
                }
                history.push(change);
            });
        }
        E::RuntimeEntityDeleted(e) => match &e.entity {
            EntityRef::Image { image_id } => mark_deleted(c.images.get_mut(image_id), stamp),
            EntityRef::ImageVersion { image_id, version } => {
                mark_deleted(c.versions.get_mut(&version_key(image_id, version)), stamp)
            }
            EntityRef::Runtime { runtime_id } => {
                mark_deleted(c.runtimes.get_mut(runtime_id), stamp)
            }
        },
        E::ArtifactTypesDeclared(e) => {
            c.artifact_types = e
                .artifact_types
                .iter()
                .map(|t| (t.artifact_type.clone(), t.clone()))
                .collect();
        }
        E::EnvironmentsDeclared(e) => {
            c.environments = e
                .environments
                .iter()
                .map(|x| (x.name.clone(), x.clone()))
                .collect();
        }
        E::RuntimeBootstrapApplied(e) => c.bootstrap = Some((e.file_hash.clone(), stamp.clone())),
        _ => {}
    }
}

fn mark_deleted<T>(m: Option<&mut Managed<T>>, stamp: &Stamp) {
    if let Some(m) = m {
        m.deleted = Some(stamp.clone());
    }
}

/// Runs `f` on the entity's two source states and history, then recomputes its effective state.
fn with_entity(
    c: &mut Catalog,
    e: &EntityRef,
    f: impl FnOnce(&mut Option<SourceState>, &mut Option<SourceState>, &mut Vec<StateChange>),
) {
    fn run<T>(
        m: Option<&mut Managed<T>>,
        f: impl FnOnce(&mut Option<SourceState>, &mut Option<SourceState>, &mut Vec<StateChange>),
    ) {
        if let Some(m) = m {
            f(&mut m.bootstrap, &mut m.api, &mut m.history);
            m.recompute();
        }
    }
    match e {
        EntityRef::Image { image_id } => run(c.images.get_mut(image_id), f),
        EntityRef::ImageVersion { image_id, version } => {
            run(c.versions.get_mut(&version_key(image_id, version)), f)
        }
        EntityRef::Runtime { runtime_id } => run(c.runtimes.get_mut(runtime_id), f),
    }
}
