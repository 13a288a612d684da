//! Recorded predictions: by request id, or a deployment's over a time range, each with its
//! hashes and receipt, and its rows for those who may see them (admins and auditors).

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Json, Object, Result, SimpleObject};
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::ledger::{api, read};
use super::{error, may_read, page_size, parse_id, principal, state};
use crate::api::AppState;
use crate::api::predictions::RunRef;
use crate::blobs::BlobError;
use crate::domain::event::{InferenceRunRecorded, RegistryEvent, RunRequest};
use crate::log::envelope::{Digest, Event};
use crate::projections::audit::Filter;

#[derive(Default)]
pub struct PredictionQuery;

pub type PredictionConnection = Connection<String, PredictionNode>;

#[Object]
impl PredictionQuery {
    /// The prediction a scored request got, by its `Provenant-Request-Id`.
    async fn prediction(
        &self,
        ctx: &Context<'_>,
        request_id: ID,
    ) -> Result<Option<PredictionNode>> {
        let s = state(ctx)?;
        let request_id = parse_id(&request_id)?;
        let found = match s.locate(RunRef::Request(request_id)).await {
            Ok(found) => found,
            Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(None),
            Err(e) => return Err(api(e)),
        };
        if !may_read(ctx, found.spec.project_id) {
            return Ok(None);
        }
        let index = found
            .run
            .requests
            .iter()
            .position(|r| r.request_id == request_id);
        Ok(index.map(|index| PredictionNode {
            event: found.event.clone(),
            run: found.run.clone(),
            index,
        }))
    }

    /// A deployment's recorded predictions, oldest first, recorded between `from` and `to`
    /// (RFC 3339, both included).
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn predictions(
        &self,
        ctx: &Context<'_>,
        deployment_id: ID,
        from: Option<String>,
        to: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<PredictionConnection> {
        predictions(ctx, parse_id(&deployment_id)?, from, to, first, after)
    }
}

/// A cursor names a request: its run's position and its index in the run.
fn cursor(after: Option<String>) -> Result<Option<(u64, usize)>> {
    let Some(c) = after else {
        return Ok(None);
    };
    c.split_once(':')
        .and_then(|(p, i)| Some((p.parse().ok()?, i.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                format!("{c:?} is not a cursor this API returned"),
            )
        })
}

fn decode_run(e: &Event) -> Result<InferenceRunRecorded> {
    match RegistryEvent::decode(
        &e.unsigned.event_type,
        e.unsigned.schema_version,
        &e.unsigned.payload,
    ) {
        Ok(Some(RegistryEvent::InferenceRunRecorded(run))) => Ok(run),
        _ => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_event",
            format!("event {} is not an inference run", e.unsigned.position),
        )),
    }
}

/// Runs read from the audit index per step while filling a page.
const RUNS_PER_STEP: usize = 64;

pub fn predictions(
    ctx: &Context<'_>,
    deployment_id: Uuid,
    from: Option<String>,
    to: Option<String>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<PredictionConnection> {
    let s = state(ctx)?;
    let project = s
        .registry
        .read()
        .deployments
        .get(&deployment_id)
        .map(|d| d.spec.project_id);
    if !project.is_some_and(|p| may_read(ctx, p)) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "deployment_not_found",
            format!("no deployment {deployment_id} you may read"),
        ));
    }
    let size = page_size(first)?;
    let time = super::ledger::time;
    let filter = Filter {
        stream: Some(crate::domain::deployment::stream(deployment_id)),
        event_types: vec!["InferenceRunRecorded".into()],
        from: time("from", from)?,
        to: time("to", to)?,
        ..Filter::default()
    };
    let resume = cursor(after)?;
    // Start at the cursor's run again, past the requests already seen.
    let mut after_run = resume.and_then(|(p, _)| p.checked_sub(1));
    let mut skip = resume;
    let mut nodes = Vec::new();
    let mut more = false;
    'fill: loop {
        let page = s.registry.audit().page(&filter, after_run, RUNS_PER_STEP);
        for event in read(s, &page.positions)? {
            let run = decode_run(&event)?;
            let start = match skip.take() {
                Some((p, i)) if p == event.position() => i + 1,
                _ => 0,
            };
            for index in start..run.requests.len() {
                if nodes.len() == size {
                    more = true;
                    break 'fill;
                }
                nodes.push(PredictionNode {
                    event: event.clone(),
                    run: run.clone(),
                    index,
                });
            }
        }
        match page.positions.last() {
            Some(last) if page.more => after_run = Some(*last),
            _ => break,
        }
    }
    let mut c = Connection::new(false, more);
    c.edges.extend(
        nodes
            .into_iter()
            .map(|n| Edge::new(format!("{}:{}", n.event.position(), n.index), n)),
    );
    Ok(c)
}

/// One scored request and the inference run that answered it.
pub struct PredictionNode {
    event: Event,
    run: InferenceRunRecorded,
    index: usize,
}

impl PredictionNode {
    fn request(&self) -> &RunRequest {
        &self.run.requests[self.index]
    }
}

/// What the ledger's signature on the run's event attests.
#[derive(SimpleObject)]
pub struct Receipt {
    position: u64,
    recorded_at: String,
    /// blake3 chain hash of the run's event, hex.
    event_hash: String,
    /// ed25519 signature of the event hash, hex.
    signature: String,
    key_id: String,
}

/// The request's rows: its inputs and the outputs the model gave.
#[derive(SimpleObject)]
pub struct Rows {
    input_fields: Vec<String>,
    inputs: Json<Value>,
    output_fields: Vec<String>,
    outputs: Json<Value>,
}

/// `rows` of a canonical table blob `{"fields": [...], "rows": [[...]]}`, or `None` when the
/// blob is gone (purged under retention, or never kept).
fn table(
    s: &AppState,
    hash: &str,
    rows: std::ops::Range<usize>,
) -> Result<Option<(Vec<String>, Value)>> {
    let digest = Digest::from_hex(hash).ok_or_else(|| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_event",
            format!("{hash:?} is not a blob hash"),
        )
    })?;
    let bytes = match s.blobs.get(&digest) {
        Ok(b) => b,
        Err(BlobError::NotFound(_)) => return Ok(None),
        Err(e) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "blob_unreadable",
                e.to_string(),
            ));
        }
    };
    let (fields, cells) = crate::runtime::typed::read(&bytes).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob_unreadable",
            format!("blob {hash}: {e}"),
        )
    })?;
    let rows = cells
        .rows()
        .skip(rows.start)
        .take(rows.len())
        .map(|row| Value::Array(row.iter().map(|c| Value::String(c.into())).collect()))
        .collect();
    Ok(Some((fields, Value::Array(rows))))
}

#[Object(name = "Prediction")]
impl PredictionNode {
    async fn request_id(&self) -> ID {
        ID(self.request().request_id.to_string())
    }
    /// The deployment's variant that scored it.
    async fn variant(&self) -> &str {
        &self.run.variant
    }
    /// A challenger's run on a copy of the request's rows: recorded, never returned.
    async fn shadow(&self) -> bool {
        self.run.shadow
    }
    /// In an A/B deployment, the request's draw that chose the variant (`docs/lifecycle.md`).
    async fn draw(&self) -> Option<u64> {
        self.request().draw
    }
    /// The caller the request was scored for.
    async fn caller(&self) -> &str {
        &self.request().caller
    }
    async fn row_offset(&self) -> u64 {
        self.request().row_offset
    }
    async fn row_count(&self) -> u64 {
        self.request().row_count
    }
    async fn queue_wait_us(&self) -> u64 {
        self.request().queue_wait_us
    }
    async fn latency_us(&self) -> u64 {
        self.request().latency_us
    }
    async fn run_id(&self) -> ID {
        ID(self.run.run_id.to_string())
    }
    async fn deployment_id(&self) -> ID {
        ID(self.run.deployment_id.to_string())
    }
    async fn model_id(&self) -> ID {
        ID(self.run.model_id.to_string())
    }
    async fn version(&self) -> u32 {
        self.run.version
    }
    /// blake3 of the run's whole input table (a typed table, or canonical JSON for runs
    /// recorded before typed tables), hex.
    async fn input_hash(&self) -> &str {
        &self.run.input_blob
    }
    /// blake3 of the run's whole output table (canonical JSON), hex.
    async fn output_hash(&self) -> &str {
        &self.run.output_blob
    }
    async fn model_blob(&self) -> &str {
        &self.run.model_blob
    }
    async fn onnxruntime_version(&self) -> &str {
        &self.run.session.ort_version
    }
    async fn cpu_class(&self) -> Option<&str> {
        self.run.session.cpu_class.as_deref()
    }
    async fn receipt(&self) -> Receipt {
        Receipt {
            position: self.event.unsigned.position,
            recorded_at: self.event.unsigned.recorded_at.clone(),
            event_hash: self.event.hash.to_hex(),
            signature: hex::encode(self.event.signature),
            key_id: self.event.unsigned.key_id.clone(),
        }
    }
    /// The request's input and output rows (admins and auditors), or `null` when the run's
    /// data is no longer kept.
    async fn rows(&self, ctx: &Context<'_>) -> Result<Option<Rows>> {
        principal(ctx)?
            .require_reads_all("reading prediction rows")
            .map_err(api)?;
        let s = state(ctx)?;
        let r = self.request();
        let (start, count) = (r.row_offset as usize, r.row_count as usize);
        let range = start..start.saturating_add(count);
        let Some((input_fields, inputs)) = table(s, &self.run.input_blob, range.clone())? else {
            return Ok(None);
        };
        let Some((output_fields, outputs)) = table(s, &self.run.output_blob, range)? else {
            return Ok(None);
        };
        Ok(Some(Rows {
            input_fields,
            inputs: Json(inputs),
            output_fields,
            outputs: Json(outputs),
        }))
    }
}
