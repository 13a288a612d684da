//! The registry as GraphQL objects: projects, experiments, models and versions, deployments,
//! the runtime catalog and comments, navigable both ways. Every root field takes `asOf`
//! and then answers from the registry replayed to that point; relations followed from an
//! object read the same registry as the object.

use async_graphql::connection::Connection;
use async_graphql::{Context, ErrorExtensions, ID, Json, Object, Result, SimpleObject};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::ledger::{EventNode, connection, cursor, read};
use super::predictions::{PredictionConnection, predictions};
use super::{View, error, may_read, page_size, parse_id, principal, state, view};
use crate::api::drift::{self, DriftQuery, DriftReport};
use crate::api::metrics::{self, Metrics, MetricsQuery};
use crate::domain::Registry;
use crate::domain::deployment::Deployment;
use crate::domain::runtime::{Managed, SourceState};
use crate::domain::schema::{Column, stored_schema};
use crate::domain::state::{Comment, Experiment, ModelVersion, Project, RegisteredModel, Stamp};

#[derive(Default)]
pub struct RegistryQuery;

/// A serde-named enum value (`Production`, `editor`, ...) as its name.
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn id(u: Uuid) -> ID {
    ID(u.to_string())
}

#[derive(SimpleObject)]
pub struct StampNode {
    actor: String,
    at: String,
    position: u64,
}

fn stamp(s: &Stamp) -> StampNode {
    StampNode {
        actor: s.actor.clone(),
        at: s.at.clone(),
        position: s.position,
    }
}

#[derive(SimpleObject)]
pub struct CommentNode {
    id: ID,
    text: String,
    added: StampNode,
}

pub fn comment(c: &Comment) -> CommentNode {
    CommentNode {
        id: id(c.comment_id),
        text: c.text.clone(),
        added: stamp(&c.added),
    }
}

fn comments(list: &[Comment]) -> Vec<CommentNode> {
    list.iter().map(comment).collect()
}

/// An entity of a project, served as a GraphQL node of the registry it was read from.
trait Entity: Clone {
    type Node;
    fn project(&self) -> Uuid;
    fn node(self, v: View) -> Self::Node;
}

impl Entity for Project {
    type Node = ProjectNode;
    fn project(&self) -> Uuid {
        self.project_id
    }
    fn node(self, v: View) -> ProjectNode {
        ProjectNode { v, p: self }
    }
}

impl Entity for Experiment {
    type Node = ExperimentNode;
    fn project(&self) -> Uuid {
        self.project_id
    }
    fn node(self, v: View) -> ExperimentNode {
        ExperimentNode { v, e: self }
    }
}

impl Entity for RegisteredModel {
    type Node = ModelNode;
    fn project(&self) -> Uuid {
        self.project_id
    }
    fn node(self, v: View) -> ModelNode {
        ModelNode { v, m: self }
    }
}

impl Entity for Deployment {
    type Node = DeploymentNode;
    fn project(&self) -> Uuid {
        self.spec.project_id
    }
    fn node(self, v: View) -> DeploymentNode {
        DeploymentNode { v, d: self }
    }
}

/// The entities `pick` takes from the view's registry that the caller may read, as nodes.
fn readable<T: Entity>(
    ctx: &Context<'_>,
    v: &View,
    pick: impl FnOnce(&Registry) -> Vec<T>,
) -> Vec<T::Node> {
    let all = v.with(pick);
    nodes(v, all.into_iter().filter(|x| may_read(ctx, x.project())))
}

/// Entities already known readable (reached from a readable one), as nodes.
fn nodes<T: Entity>(v: &View, all: impl IntoIterator<Item = T>) -> Vec<T::Node> {
    all.into_iter().map(|x| x.node(v.clone())).collect()
}

#[Object]
impl RegistryQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<UserNode>> {
        let (s, p) = (state(ctx)?, principal(ctx)?);
        Ok(user(&s.registry.read(), p.user_id))
    }

    /// Projects the caller may read.
    async fn projects(&self, ctx: &Context<'_>, as_of: Option<String>) -> Result<Vec<ProjectNode>> {
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.projects.values().cloned().collect()
        }))
    }

    async fn project(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<String>,
    ) -> Result<Option<ProjectNode>> {
        let id = parse_id(&id)?;
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.projects.get(&id).cloned().into_iter().collect()
        })
        .pop())
    }

    async fn experiment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<String>,
    ) -> Result<Option<ExperimentNode>> {
        let id = parse_id(&id)?;
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.experiments.get(&id).cloned().into_iter().collect()
        })
        .pop())
    }

    /// Registered models the caller may read.
    async fn models(&self, ctx: &Context<'_>, as_of: Option<String>) -> Result<Vec<ModelNode>> {
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| r.models.values().cloned().collect()))
    }

    async fn model(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<String>,
    ) -> Result<Option<ModelNode>> {
        let id = parse_id(&id)?;
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.models.get(&id).cloned().into_iter().collect()
        })
        .pop())
    }

    /// Deployments the caller may read.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        as_of: Option<String>,
    ) -> Result<Vec<DeploymentNode>> {
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.deployments.values().cloned().collect()
        }))
    }

    async fn deployment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<String>,
    ) -> Result<Option<DeploymentNode>> {
        let id = parse_id(&id)?;
        let v = view(ctx, as_of).await?;
        Ok(readable(ctx, &v, |r| {
            r.deployments.get(&id).cloned().into_iter().collect()
        })
        .pop())
    }

    /// The runtime catalog: images, image versions and runtimes, each with the state each
    /// source set and the effective (more restrictive) one.
    async fn runtimes(&self, ctx: &Context<'_>, as_of: Option<String>) -> Result<Runtimes> {
        let v = view(ctx, as_of).await?;
        Ok(v.with(|r| {
            let c = &r.runtimes;
            Runtimes {
                images: c
                    .images
                    .iter()
                    .map(|(k, e)| entity("image", k, e))
                    .collect(),
                image_versions: c
                    .versions
                    .iter()
                    .map(|(k, e)| entity("image_version", k, e))
                    .collect(),
                runtimes: c
                    .runtimes
                    .iter()
                    .map(|(k, e)| entity("runtime", k, e))
                    .collect(),
            }
        }))
    }
}

pub struct UserNode {
    user_id: Uuid,
    username: String,
    display_name: String,
    roles: Vec<String>,
    created: Stamp,
}

fn user(r: &Registry, user_id: Uuid) -> Option<UserNode> {
    r.users.get(&user_id).map(|u| UserNode {
        user_id,
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        roles: u.roles.iter().map(name).collect(),
        created: u.created.clone(),
    })
}

#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        id(self.user_id)
    }
    async fn username(&self) -> &str {
        &self.username
    }
    async fn display_name(&self) -> &str {
        &self.display_name
    }
    /// Global roles: `admin`, `auditor`.
    async fn roles(&self) -> &[String] {
        &self.roles
    }
    async fn created(&self) -> StampNode {
        stamp(&self.created)
    }
}

pub struct ProjectNode {
    v: View,
    p: Project,
}

pub struct Member {
    user: Option<UserNode>,
    role: String,
}

#[Object]
impl Member {
    async fn user(&self) -> Option<&UserNode> {
        self.user.as_ref()
    }
    /// `owner`, `editor` or `viewer`.
    async fn role(&self) -> &str {
        &self.role
    }
}

#[Object(name = "Project")]
impl ProjectNode {
    async fn id(&self) -> ID {
        id(self.p.project_id)
    }
    async fn name(&self) -> &str {
        &self.p.name
    }
    async fn description(&self) -> &str {
        &self.p.description
    }
    async fn created(&self) -> StampNode {
        stamp(&self.p.created)
    }
    async fn members(&self) -> Vec<Member> {
        self.v.with(|r| {
            self.p
                .members
                .iter()
                .map(|(u, role)| Member {
                    user: user(r, *u),
                    role: name(role),
                })
                .collect()
        })
    }
    async fn comments(&self) -> Vec<CommentNode> {
        comments(&self.p.comments)
    }
    async fn experiments(&self) -> Vec<ExperimentNode> {
        let id = self.p.project_id;
        let all: Vec<Experiment> = self.v.with(|r| {
            r.experiments
                .values()
                .filter(|e| e.project_id == id)
                .cloned()
                .collect()
        });
        nodes(&self.v, all)
    }
    async fn models(&self) -> Vec<ModelNode> {
        let id = self.p.project_id;
        let all: Vec<RegisteredModel> = self.v.with(|r| {
            r.models
                .values()
                .filter(|m| m.project_id == id)
                .cloned()
                .collect()
        });
        nodes(&self.v, all)
    }
    async fn deployments(&self) -> Vec<DeploymentNode> {
        let id = self.p.project_id;
        let all: Vec<Deployment> = self.v.with(|r| {
            r.deployments
                .values()
                .filter(|d| d.spec.project_id == id)
                .cloned()
                .collect()
        });
        nodes(&self.v, all)
    }
    /// The project's events and those of its experiments and models, in ledger order.
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<u64, EventNode>> {
        let size = page_size(first)?;
        let after = cursor(after)?;
        let list = &self.p.event_positions;
        let start = after.map_or(0, |a| list.partition_point(|p| *p <= a));
        let page: Vec<u64> = list[start..].iter().take(size).copied().collect();
        let more = list.len() > start + page.len();
        Ok(connection(read(state(ctx)?, &page)?, more))
    }
}

pub struct ExperimentNode {
    v: View,
    e: Experiment,
}

fn schema_json(columns: Vec<Column>) -> Json<Value> {
    Json(serde_json::to_value(columns).unwrap_or_default())
}

#[derive(SimpleObject)]
pub struct ArtifactNode {
    id: ID,
    artifact_type: String,
    file_name: String,
    /// blake3 of the bytes, hex.
    blob_hash: String,
    size: u64,
    /// What the artifact processor found: model type, deployability, schema, facts.
    ingestion: Option<Json<Value>>,
}

#[Object(name = "Experiment")]
impl ExperimentNode {
    async fn id(&self) -> ID {
        id(self.e.experiment_id)
    }
    async fn display_name(&self) -> &str {
        &self.e.display_name
    }
    async fn project(&self) -> Option<ProjectNode> {
        self.v
            .with(|r| r.projects.get(&self.e.project_id).cloned())
            .map(|p| ProjectNode {
                v: self.v.clone(),
                p,
            })
    }
    async fn metadata(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.e.metadata).unwrap_or_default())
    }
    async fn parameters(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.e.parameters).unwrap_or_default())
    }
    /// The input columns (`[{"name", "type"}]`), given at import or proposed by the artifact
    /// processor.
    async fn input_schema(&self) -> Option<Json<Value>> {
        stored_schema(&self.e.metadata, "input_schema").map(schema_json)
    }
    async fn output_schema(&self) -> Option<Json<Value>> {
        stored_schema(&self.e.metadata, "output_schema").map(schema_json)
    }
    async fn artifacts(&self) -> Vec<ArtifactNode> {
        self.e
            .artifacts
            .iter()
            .map(|a| ArtifactNode {
                id: id(a.artifact.artifact_id),
                artifact_type: a.artifact.artifact_type.clone(),
                file_name: a.artifact.file_name.clone(),
                blob_hash: a.artifact.blob_hash.clone(),
                size: a.artifact.size,
                ingestion: a
                    .ingestion
                    .as_ref()
                    .and_then(|i| serde_json::to_value(i).ok())
                    .map(Json),
            })
            .collect()
    }
    async fn tags(&self) -> Vec<&String> {
        self.e.tags.iter().collect()
    }
    async fn comments(&self) -> Vec<CommentNode> {
        comments(&self.e.comments)
    }
    async fn deleted(&self) -> Option<StampNode> {
        self.e.deleted.as_ref().map(|d| stamp(&d.deleted))
    }
    async fn imported(&self) -> StampNode {
        stamp(&self.e.imported)
    }
    /// The model version it was registered as.
    async fn registered_as(&self) -> Option<VersionNode> {
        let at = self.e.registered_as.as_ref()?;
        version(&self.v, at.model_id, at.version)
    }
}

pub struct ModelNode {
    v: View,
    m: RegisteredModel,
}

#[derive(SimpleObject)]
pub struct AliasNode {
    alias: String,
    version: u32,
}

#[derive(SimpleObject)]
pub struct AliasChangeNode {
    alias: String,
    /// `null` when the alias was removed.
    version: Option<u32>,
    annotation: String,
    changed: StampNode,
}

#[Object(name = "Model")]
impl ModelNode {
    async fn id(&self) -> ID {
        id(self.m.model_id)
    }
    async fn name(&self) -> &str {
        &self.m.name
    }
    async fn description(&self) -> &str {
        &self.m.description
    }
    async fn created(&self) -> StampNode {
        stamp(&self.m.created)
    }
    async fn project(&self) -> Option<ProjectNode> {
        self.v
            .with(|r| r.projects.get(&self.m.project_id).cloned())
            .map(|p| ProjectNode {
                v: self.v.clone(),
                p,
            })
    }
    async fn versions(&self) -> Vec<VersionNode> {
        self.m
            .versions
            .values()
            .map(|ver| VersionNode {
                v: self.v.clone(),
                model: self.m.clone(),
                ver: ver.clone(),
            })
            .collect()
    }
    async fn version(&self, version: u32) -> Option<VersionNode> {
        version_of(&self.v, &self.m, version)
    }
    async fn aliases(&self) -> Vec<AliasNode> {
        self.m
            .aliases
            .iter()
            .map(|(alias, version)| AliasNode {
                alias: alias.clone(),
                version: *version,
            })
            .collect()
    }
    async fn alias_history(&self) -> Vec<AliasChangeNode> {
        self.m
            .alias_history
            .iter()
            .map(|a| AliasChangeNode {
                alias: a.alias.clone(),
                version: a.version,
                annotation: a.annotation.clone(),
                changed: stamp(&a.changed),
            })
            .collect()
    }
}

pub struct VersionNode {
    v: View,
    model: RegisteredModel,
    ver: ModelVersion,
}

fn version_of(v: &View, m: &RegisteredModel, version: u32) -> Option<VersionNode> {
    m.versions.get(&version).map(|ver| VersionNode {
        v: v.clone(),
        model: m.clone(),
        ver: ver.clone(),
    })
}

fn version(v: &View, model_id: Uuid, version: u32) -> Option<VersionNode> {
    let m = v.with(|r| r.models.get(&model_id).cloned())?;
    version_of(v, &m, version)
}

#[derive(SimpleObject)]
pub struct StageChangeNode {
    from: String,
    to: String,
    annotation: String,
    changed: StampNode,
}

#[Object(name = "ModelVersion")]
impl VersionNode {
    async fn version(&self) -> u32 {
        self.ver.version
    }
    async fn model(&self) -> ModelNode {
        ModelNode {
            v: self.v.clone(),
            m: self.model.clone(),
        }
    }
    /// `None`, `Staging`, `Production` or `Archived`.
    async fn stage(&self) -> String {
        name(&self.ver.stage)
    }
    async fn aliases(&self) -> Vec<&String> {
        self.ver.aliases.iter().collect()
    }
    async fn annotation(&self) -> Option<&str> {
        self.ver.annotation.as_deref()
    }
    async fn stage_history(&self) -> Vec<StageChangeNode> {
        self.ver
            .stage_history
            .iter()
            .map(|c| StageChangeNode {
                from: name(&c.from),
                to: name(&c.to),
                annotation: c.annotation.clone(),
                changed: stamp(&c.changed),
            })
            .collect()
    }
    async fn comments(&self) -> Vec<CommentNode> {
        comments(&self.ver.comments)
    }
    async fn deleted(&self) -> Option<StampNode> {
        self.ver.deleted.as_ref().map(|d| stamp(&d.deleted))
    }
    async fn registered(&self) -> StampNode {
        stamp(&self.ver.registered)
    }
    async fn experiment(&self) -> Option<ExperimentNode> {
        self.v
            .with(|r| r.experiments.get(&self.ver.experiment_id).cloned())
            .map(|e| ExperimentNode {
                v: self.v.clone(),
                e,
            })
    }
    /// Where this version is or was deployed.
    async fn deployments(&self) -> Vec<DeploymentNode> {
        let (model_id, version) = (self.model.model_id, self.ver.version);
        let all: Vec<Deployment> = self.v.with(|r| {
            r.deployments
                .values()
                .filter(|d| d.spec.model_id == model_id && d.spec.version == version)
                .cloned()
                .collect()
        });
        nodes(&self.v, all)
    }
}

pub struct DeploymentNode {
    v: View,
    d: Deployment,
}

#[derive(SimpleObject)]
pub struct TransitionNode {
    from: Option<String>,
    to: String,
    reason: String,
    changed: StampNode,
}

#[Object(name = "Deployment")]
impl DeploymentNode {
    async fn id(&self) -> ID {
        id(self.d.deployment_id)
    }
    /// `Preparing`, `Launching`, `Healthy`, `Paused`, `Failed` or `Stopped`.
    async fn state(&self) -> String {
        name(&self.d.state)
    }
    /// `single`, `ab` or `champion_challenger`.
    async fn mode(&self) -> String {
        name(&self.d.mode)
    }
    /// The variants it serves by name: weight, shadow, and the full spec of each.
    async fn variants(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.d.variants).unwrap_or_default())
    }
    /// Every configuration it served, oldest first: the position each took effect at, its
    /// mode and variants.
    async fn revisions(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.d.revisions).unwrap_or_default())
    }
    /// The update in place in progress, or the last one (kind, outcome, reason, detail).
    async fn last_update(&self) -> Option<Json<Value>> {
        self.d
            .update
            .as_ref()
            .map(|u| Json(serde_json::to_value(u).unwrap_or_default()))
    }
    /// The deployment this one was promoted from.
    async fn promoted_from(&self) -> Option<ID> {
        self.d.promoted_from.map(id)
    }
    /// Who deleted it, when and why.
    async fn deleted(&self) -> Option<Json<Value>> {
        self.d
            .deleted
            .as_ref()
            .map(|x| Json(serde_json::to_value(x).unwrap_or_default()))
    }
    async fn environment(&self) -> &str {
        &self.d.spec.environment
    }
    async fn runtime_id(&self) -> &str {
        &self.d.spec.runtime_id
    }
    async fn image_id(&self) -> &str {
        &self.d.spec.image_id
    }
    async fn image_version(&self) -> &str {
        &self.d.spec.image_version
    }
    async fn onnxruntime_version(&self) -> &str {
        &self.d.spec.runtime.onnxruntime_version
    }
    /// The image version's execution settings as deployed (provider, threads, mode,
    /// optimization).
    async fn runtime(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.d.spec.runtime).unwrap_or_default())
    }
    async fn scorer_settings(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.d.spec.settings).unwrap_or_default())
    }
    async fn model_type(&self) -> &str {
        &self.d.spec.model_type
    }
    /// blake3 of the ONNX model the scorer runs.
    async fn model_blob(&self) -> &str {
        &self.d.spec.model_blob
    }
    async fn input_schema(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.d.spec.input_schema).unwrap_or_default())
    }
    async fn warnings(&self) -> &[String] {
        &self.d.spec.warnings
    }
    async fn history(&self) -> Vec<TransitionNode> {
        self.d
            .history
            .iter()
            .map(|t| TransitionNode {
                from: t.from.as_ref().map(name),
                to: name(&t.to),
                reason: t.reason.clone(),
                changed: stamp(&t.changed),
            })
            .collect()
    }
    async fn created(&self) -> StampNode {
        stamp(&self.d.created)
    }
    async fn project(&self) -> Option<ProjectNode> {
        self.v
            .with(|r| r.projects.get(&self.d.spec.project_id).cloned())
            .map(|p| ProjectNode {
                v: self.v.clone(),
                p,
            })
    }
    /// The model version it serves.
    async fn model_version(&self) -> Option<VersionNode> {
        version(&self.v, self.d.spec.model_id, self.d.spec.version)
    }
    /// Its recorded predictions, oldest first, recorded between `from` and `to` (RFC 3339,
    /// both included).
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn predictions(
        &self,
        ctx: &Context<'_>,
        from: Option<String>,
        to: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<PredictionConnection> {
        predictions(ctx, self.d.deployment_id, from, to, first, after)
    }
    /// Its service level per window (`minute`, the default, `hour` or `day`) overlapping
    /// `from..to` (RFC 3339), recomputed from the ledger's inference runs; live even under
    /// `asOf`, whose past the range selects.
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        resolution: Option<String>,
        from: Option<String>,
        to: Option<String>,
    ) -> Result<Metrics> {
        let resolution = resolution
            .map(|r| r.parse())
            .transpose()
            .map_err(|e: String| error(StatusCode::BAD_REQUEST, "invalid_argument", e))?;
        let q = MetricsQuery {
            resolution,
            from,
            to,
        };
        metrics::report(state(ctx)?, &principal(ctx)?, self.d.deployment_id, &q)
            .map_err(|e| e.extend())
    }

    /// Its drift from its model version's reference data over the runs committed in the
    /// minutes that start in `from..to` (RFC 3339): each input column, and each prediction
    /// column against the model's predictions for the reference.
    async fn drift(
        &self,
        ctx: &Context<'_>,
        from: Option<String>,
        to: Option<String>,
    ) -> Result<DriftReport> {
        let q = DriftQuery { from, to };
        drift::report(state(ctx)?, &principal(ctx)?, self.d.deployment_id, q)
            .await
            .map_err(|e| e.extend())
    }
}

/// A runtime catalog entity with both sources' states.
#[derive(SimpleObject)]
pub struct RuntimeEntity {
    /// `image`, `image_version` or `runtime`.
    kind: String,
    /// The image id, `image@version`, or the runtime id.
    id: String,
    /// `bootstrap` or `api`.
    managed_by: String,
    bootstrap_state: Option<SourceStateNode>,
    api_state: Option<SourceStateNode>,
    /// The more restrictive of the two.
    effective_state: String,
    spec: Json<Value>,
    history: Json<Value>,
    deleted: Option<StampNode>,
    declared: StampNode,
}

#[derive(SimpleObject)]
pub struct SourceStateNode {
    state: String,
    reason: String,
    set: StampNode,
}

fn source_state(s: &SourceState) -> SourceStateNode {
    SourceStateNode {
        state: name(&s.state),
        reason: s.reason.clone(),
        set: stamp(&s.set),
    }
}

fn entity<T: Serialize>(kind: &str, key: &str, e: &Managed<T>) -> RuntimeEntity {
    RuntimeEntity {
        kind: kind.into(),
        id: key.into(),
        managed_by: name(&e.managed_by),
        bootstrap_state: e.bootstrap.as_ref().map(source_state),
        api_state: e.api.as_ref().map(source_state),
        effective_state: name(&e.effective),
        spec: Json(serde_json::to_value(&e.spec).unwrap_or_default()),
        history: Json(serde_json::to_value(&e.history).unwrap_or_default()),
        deleted: e.deleted.as_ref().map(stamp),
        declared: stamp(&e.declared),
    }
}

#[derive(SimpleObject)]
pub struct Runtimes {
    images: Vec<RuntimeEntity>,
    image_versions: Vec<RuntimeEntity>,
    runtimes: Vec<RuntimeEntity>,
}
