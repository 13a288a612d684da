//! Tabular exports for analysts (polars): the audit trail flattened to one row per event, and
//! predictions to one row per scored request, as CSV or Parquet, filtered like the audit
//! trail by actor, entity, event type and position or time range.

use std::path::Path;

use polars::prelude::*;
use uuid::Uuid;

use crate::domain::RegistryEvent;
use crate::log::LogError;
use crate::log::envelope::Event;
use crate::log::store::Snapshot;
use crate::projections::replay::Until;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Table(#[from] PolarsError),
    #[error("export I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// Which events (or predictions) a table keeps; empty fields keep everything.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The event's actor; for predictions, the caller.
    pub actor: Option<String>,
    /// An entity id: kept when the event's stream is the entity's, or a top-level payload
    /// field names it (for predictions: the deployment or the model).
    pub entity: Option<Uuid>,
    pub event_types: Vec<String>,
    pub from: Until,
    pub to: Until,
}

impl Filter {
    fn keeps(&self, e: &Event) -> bool {
        let u = &e.unsigned;
        let entity = self.entity.map(|id| id.to_string());
        self.actor.as_ref().is_none_or(|a| *a == u.actor)
            && (self.event_types.is_empty() || self.event_types.contains(&u.event_type))
            && entity.as_ref().is_none_or(|id| {
                u.stream.ends_with(id.as_str())
                    || u.payload
                        .as_object()
                        .is_some_and(|o| o.values().any(|v| v.as_str() == Some(id.as_str())))
            })
            && Until::holds(&self.from, &self.to, u.position, &u.recorded_at)
    }
}

/// Reads every event the filter keeps; `progress(done, total)` per chunk.
fn events(
    snap: &Snapshot,
    filter: &Filter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Event>, LogError> {
    let size = snap.size()?;
    let mut kept = Vec::new();
    let mut from = 0;
    while from < size {
        let chunk = snap.read_all(from, 4096)?;
        from += chunk.len().max(1) as u64;
        kept.extend(chunk.into_iter().filter(|e| filter.keeps(e)));
        progress(from.min(size), size);
    }
    Ok(kept)
}

/// The entity a stream belongs to: the id after `<kind>-`, when it is one.
fn stream_entity(stream: &str) -> Option<String> {
    let (_, id) = stream.split_once('-')?;
    Uuid::parse_str(id).ok().map(|u| u.to_string())
}

/// One row per event: position, time, actor, type, stream, entity, schema version, key, hash.
pub fn events_table(
    snap: &Snapshot,
    filter: &Filter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DataFrame, ExportError> {
    let kept = events(snap, filter, progress)?;
    let col = |f: &dyn Fn(&Event) -> String| kept.iter().map(f).collect::<Vec<String>>();
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "position".into(),
            kept.iter()
                .map(|e| e.unsigned.position)
                .collect::<Vec<u64>>(),
        ),
        Column::new(
            "recorded_at".into(),
            col(&|e| e.unsigned.recorded_at.clone()),
        ),
        Column::new("actor".into(), col(&|e| e.unsigned.actor.clone())),
        Column::new("event_type".into(), col(&|e| e.unsigned.event_type.clone())),
        Column::new("stream".into(), col(&|e| e.unsigned.stream.clone())),
        Column::new(
            "entity_id".into(),
            kept.iter()
                .map(|e| stream_entity(&e.unsigned.stream))
                .collect::<Vec<Option<String>>>(),
        ),
        Column::new(
            "schema_version".into(),
            kept.iter()
                .map(|e| e.unsigned.schema_version)
                .collect::<Vec<u32>>(),
        ),
        Column::new("key_id".into(), col(&|e| e.unsigned.key_id.clone())),
        Column::new("hash".into(), col(&|e| e.hash.to_hex())),
    ])?)
}

/// One row per scored request: its run, deployment, model version, rows, caller, latency and
/// the run's input and output hashes.
pub fn predictions_table(
    snap: &Snapshot,
    filter: &Filter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DataFrame, ExportError> {
    let runs_only = Filter {
        actor: None,
        entity: None,
        event_types: vec!["InferenceRunRecorded".into()],
        ..filter.clone()
    };
    let mut rows: Vec<(Event, crate::domain::event::InferenceRunRecorded)> = Vec::new();
    for e in events(snap, &runs_only, progress)? {
        if let Ok(Some(RegistryEvent::InferenceRunRecorded(run))) = RegistryEvent::decode(
            &e.unsigned.event_type,
            e.unsigned.schema_version,
            &e.unsigned.payload,
        ) {
            rows.push((e, run));
        }
    }
    let mut t = PredictionColumns::default();
    for (e, run) in &rows {
        if filter
            .entity
            .is_some_and(|id| id != run.deployment_id && id != run.model_id)
        {
            continue;
        }
        for r in &run.requests {
            if filter.actor.as_ref().is_some_and(|a| *a != r.caller) {
                continue;
            }
            t.push(e, run, r);
        }
    }
    t.frame()
}

#[derive(Default)]
struct PredictionColumns {
    request_id: Vec<String>,
    run_position: Vec<u64>,
    recorded_at: Vec<String>,
    deployment_id: Vec<String>,
    model_id: Vec<String>,
    version: Vec<u32>,
    caller: Vec<String>,
    row_offset: Vec<u64>,
    row_count: Vec<u64>,
    run_rows: Vec<u64>,
    queue_wait_us: Vec<u64>,
    latency_us: Vec<u64>,
    input_blob: Vec<String>,
    output_blob: Vec<String>,
    ort_version: Vec<String>,
    event_hash: Vec<String>,
}

impl PredictionColumns {
    fn push(
        &mut self,
        e: &Event,
        run: &crate::domain::event::InferenceRunRecorded,
        r: &crate::domain::event::RunRequest,
    ) {
        self.request_id.push(r.request_id.to_string());
        self.run_position.push(e.unsigned.position);
        self.recorded_at.push(e.unsigned.recorded_at.clone());
        self.deployment_id.push(run.deployment_id.to_string());
        self.model_id.push(run.model_id.to_string());
        self.version.push(run.version);
        self.caller.push(r.caller.clone());
        self.row_offset.push(r.row_offset);
        self.row_count.push(r.row_count);
        self.run_rows.push(run.row_count);
        self.queue_wait_us.push(r.queue_wait_us);
        self.latency_us.push(r.latency_us);
        self.input_blob.push(run.input_blob.clone());
        self.output_blob.push(run.output_blob.clone());
        self.ort_version.push(run.session.ort_version.clone());
        self.event_hash.push(e.hash.to_hex());
    }

    fn frame(self) -> Result<DataFrame, ExportError> {
        Ok(DataFrame::new_infer_height(vec![
            Column::new("request_id".into(), self.request_id),
            Column::new("run_position".into(), self.run_position),
            Column::new("recorded_at".into(), self.recorded_at),
            Column::new("deployment_id".into(), self.deployment_id),
            Column::new("model_id".into(), self.model_id),
            Column::new("version".into(), self.version),
            Column::new("caller".into(), self.caller),
            Column::new("row_offset".into(), self.row_offset),
            Column::new("row_count".into(), self.row_count),
            Column::new("run_rows".into(), self.run_rows),
            Column::new("queue_wait_us".into(), self.queue_wait_us),
            Column::new("latency_us".into(), self.latency_us),
            Column::new("input_blob".into(), self.input_blob),
            Column::new("output_blob".into(), self.output_blob),
            Column::new("ort_version".into(), self.ort_version),
            Column::new("event_hash".into(), self.event_hash),
        ])?)
    }
}

/// Writes `df` to `path` as CSV or Parquet, by the file's extension; the file appears whole
/// or not at all.
pub fn write(df: &mut DataFrame, path: &Path) -> Result<(), ExportError> {
    let parquet = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => false,
        Some("parquet") => true,
        _ => {
            return Err(ExportError::Usage(format!(
                "{}: the file name must end in .csv or .parquet",
                path.display()
            )));
        }
    };
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp)?;
    if parquet {
        ParquetWriter::new(file).finish(df)?;
    } else {
        CsvWriter::new(&mut std::io::BufWriter::new(file)).finish(df)?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
