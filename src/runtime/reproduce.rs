//! Reproduction of a recorded inference run: the run's input and the model, both by hash, run
//! again as one session run with the settings the run recorded, and the canonical output's
//! hash compared with the recorded one. Bit-exact results hold on the same ONNX Runtime build
//! and CPU class, so both are checked first and a mismatch is named rather than guessed at.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cells::{Cells, Row};
use super::onnx::Onnx;
use super::scorer::{Model, SessionSettings, table_bytes};
use super::typed;
use crate::blobs::{BlobError, BlobStore};
use crate::domain::event::{InferenceRunRecorded, RunRequest};
use crate::log::envelope::Digest;

/// Why a run cannot be reproduced (or a resubmitted input is refused).
#[derive(Debug, thiserror::Error)]
pub enum Blocked {
    #[error(
        "the run's input {hash} is not kept (purged under retention, or the deployment keeps hashes only); resubmit the input to reproduce it"
    )]
    InputNotRetained { hash: String },
    #[error("the resubmitted input hashes to {got}, the run recorded {expected}")]
    InputMismatch { expected: String, got: String },
    #[error("the model artifact {hash} is no longer in the blob store")]
    ArtifactMissing { hash: String },
    #[error("the run was recorded on ONNX Runtime {recorded}; this machine runs {available}")]
    OrtVersion { recorded: String, available: String },
    #[error("the run was recorded on CPU class {recorded}; this machine is {available}")]
    CpuClass { recorded: String, available: String },
    #[error("the run used execution provider {0}; this machine runs CPUExecutionProvider only")]
    Provider(String),
    #[error("stored data is unusable: {0}")]
    Damaged(String),
    #[error("the model could not be loaded: {0}")]
    Load(String),
    #[error("the model could not score the run: {0}")]
    Score(String),
    #[error("bad override: {0}")]
    BadOverride(String),
}

impl Blocked {
    /// A machine-readable code for the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Blocked::InputNotRetained { .. } => "input_not_retained",
            Blocked::InputMismatch { .. } => "input_hash_mismatch",
            Blocked::ArtifactMissing { .. } => "artifact_missing",
            Blocked::OrtVersion { .. } => "ort_version_differs",
            Blocked::CpuClass { .. } => "cpu_class_differs",
            Blocked::Provider(_) => "execution_provider_unavailable",
            Blocked::Damaged(_) => "stored_data_damaged",
            Blocked::Load(_) => "model_load_failed",
            Blocked::Score(_) => "scoring_failed",
            Blocked::BadOverride(_) => "bad_override",
        }
    }

    /// Whether the caller's input, not the record or this machine, is at fault.
    pub fn is_callers(&self) -> bool {
        matches!(
            self,
            Blocked::InputMismatch { .. } | Blocked::BadOverride(_)
        )
    }
}

/// Settings to change on purpose, to show what a result depends on. A reproduction with any
/// of them is a what-if, reported as such.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub intra_op_threads: Option<u32>,
    pub inter_op_threads: Option<u32>,
    /// `sequential` or `parallel`.
    pub execution_mode: Option<String>,
    /// `disable`, `basic`, `extended` or `all`.
    pub graph_optimization: Option<String>,
    /// Score the run's rows in session runs of this many rows instead of one run.
    pub rows_per_run: Option<usize>,
}

/// The session settings a reproduction uses.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Settings {
    pub intra_op_threads: u32,
    pub inter_op_threads: u32,
    pub execution_mode: String,
    pub graph_optimization: String,
    pub rows_per_run: usize,
}

impl Settings {
    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            intra_op_threads: self.intra_op_threads as usize,
            inter_op_threads: self.inter_op_threads as usize,
            execution_mode: self.execution_mode.clone(),
            graph_optimization: self.graph_optimization.clone(),
        }
    }
}

/// The recorded settings, with the overrides laid over them.
pub fn settings(run: &InferenceRunRecorded, o: &Overrides) -> Result<Settings, Blocked> {
    let r = recorded_settings(run);
    let s = Settings {
        intra_op_threads: o.intra_op_threads.unwrap_or(r.intra_op_threads),
        inter_op_threads: o.inter_op_threads.unwrap_or(r.inter_op_threads),
        execution_mode: o.execution_mode.clone().unwrap_or(r.execution_mode),
        graph_optimization: o.graph_optimization.clone().unwrap_or(r.graph_optimization),
        rows_per_run: o.rows_per_run.unwrap_or(r.rows_per_run),
    };
    if s.intra_op_threads == 0 || s.inter_op_threads == 0 || s.rows_per_run == 0 {
        return Err(Blocked::BadOverride(
            "thread counts and rows_per_run must be at least 1".into(),
        ));
    }
    if !["sequential", "parallel"].contains(&s.execution_mode.as_str()) {
        return Err(Blocked::BadOverride(format!(
            "execution_mode {:?}: expected sequential or parallel",
            s.execution_mode
        )));
    }
    if !["disable", "basic", "extended", "all"].contains(&s.graph_optimization.as_str()) {
        return Err(Blocked::BadOverride(format!(
            "graph_optimization {:?}: expected disable, basic, extended or all",
            s.graph_optimization
        )));
    }
    Ok(s)
}

/// The largest difference between recorded and reproduced values of one output column, over
/// the request's rows (`null` when a differing cell is not a number).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ColumnDiff {
    pub column: String,
    pub max_abs_diff: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Identical,
    Different,
}

/// What a reproduction found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// For the request's rows when the recorded outputs are kept; else for the whole run.
    pub verdict: Verdict,
    pub run_position: u64,
    pub request_id: Option<Uuid>,
    pub deployment_id: Uuid,
    pub model_id: Uuid,
    pub version: u32,
    /// The request's rows within the run: `row_offset..row_offset + row_count`.
    pub row_offset: u64,
    pub row_count: u64,
    pub run_rows: u64,
    /// Whether the whole run's canonical output hashes to the recorded output hash.
    pub run_output_identical: bool,
    pub recorded_output_hash: String,
    pub reproduced_output_hash: String,
    /// Per output column, when the recorded outputs are kept (else `null`: only the hashes
    /// could be compared).
    pub columns: Option<Vec<ColumnDiff>>,
    /// Offsets within the request of the rows whose outputs differ.
    pub differing_rows: Option<Vec<u64>>,
    /// `retained` or `resubmitted`.
    pub input: &'static str,
    pub settings: Settings,
    /// True when overrides changed what the run recorded: a what-if, not a reproduction.
    pub overridden: bool,
    pub ort_version: String,
    pub cpu_class: String,
    pub notes: Vec<String>,
    pub elapsed_ms: f64,
}

/// A run to reproduce, as its event recorded it.
pub struct Recorded<'a> {
    pub position: u64,
    pub run: &'a InferenceRunRecorded,
    /// The request asked about; none for a whole run.
    pub request: Option<&'a RunRequest>,
}

fn digest(hash: &str) -> Result<Digest, Blocked> {
    Digest::from_hex(hash).ok_or_else(|| Blocked::Damaged(format!("malformed hash {hash:?}")))
}

/// The run's input bytes, where they came from, and whether they are known to be the run's:
/// the retained blob, or a resubmitted table. A resubmitted table is the run's input if its
/// canonical JSON hashes to the recorded input hash (runs recorded before typed tables) or,
/// checked by `resubmitted_is_the_input` once the model is loaded, if the model's reading of
/// it does as a typed table.
fn input_bytes(
    blobs: &BlobStore,
    run: &InferenceRunRecorded,
    resubmitted: Option<&serde_json::Value>,
) -> Result<(Vec<u8>, &'static str, bool), Blocked> {
    if let Some(value) = resubmitted {
        let bytes = crate::log::canonical::to_vec(value)
            .map_err(|e| mismatch(run, format!("(not canonicalizable: {e})")))?;
        let known = blake3::hash(&bytes).to_hex().as_str() == run.input_blob;
        return Ok((bytes, "resubmitted", known));
    }
    match blobs.get(&digest(&run.input_blob)?) {
        Ok(b) => Ok((b, "retained", true)),
        Err(BlobError::NotFound(_)) => Err(Blocked::InputNotRetained {
            hash: run.input_blob.clone(),
        }),
        Err(e) => Err(Blocked::Damaged(e.to_string())),
    }
}

fn mismatch(run: &InferenceRunRecorded, got: String) -> Blocked {
    Blocked::InputMismatch {
        expected: run.input_blob.clone(),
        got,
    }
}

/// Whether resubmitted rows, in the model's fields, are the run's typed input as `model`
/// reads them.
fn resubmitted_is_the_input(
    model: &Model,
    run: &InferenceRunRecorded,
    rows: &Cells,
) -> Result<(), Blocked> {
    let features = model
        .features(rows)
        .map_err(|e| mismatch(run, format!("(not the model's input: {e})")))?;
    let got = blake3::hash(&model.input_bytes(&features))
        .to_hex()
        .to_string();
    if got != run.input_blob {
        return Err(mismatch(run, got));
    }
    Ok(())
}

/// Checks that this machine can reproduce the run bit for bit.
pub fn check_machine(onnx: &Onnx, run: &InferenceRunRecorded) -> Result<Vec<String>, Blocked> {
    let s = &run.session;
    if s.ort_version != onnx.version {
        return Err(Blocked::OrtVersion {
            recorded: s.ort_version.clone(),
            available: onnx.version.clone(),
        });
    }
    if s.execution_provider != "CPUExecutionProvider" {
        return Err(Blocked::Provider(s.execution_provider.clone()));
    }
    match &s.cpu_class {
        Some(c) if *c != onnx.cpu_class => Err(Blocked::CpuClass {
            recorded: c.clone(),
            available: onnx.cpu_class.clone(),
        }),
        Some(_) => Ok(Vec::new()),
        None => Ok(vec![format!(
            "the run did not record its CPU class; this machine is {}",
            onnx.cpu_class
        )]),
    }
}

/// Re-runs a recorded run. `model` loads (or finds loaded) the run's model with the given
/// session settings; `resubmitted` is the input table an auditor supplies when it was not kept.
pub fn reproduce(
    onnx: &Onnx,
    blobs: &BlobStore,
    target: &Recorded,
    resubmitted: Option<&serde_json::Value>,
    overrides: &Overrides,
    model: impl FnOnce(&Settings) -> Result<Arc<Model>, Blocked>,
) -> Result<Report, Blocked> {
    let started = Instant::now();
    let run = target.run;
    let settings = settings(run, overrides)?;
    // Without its input a run reproduces on no machine: that is said first, so an auditor
    // learns to resubmit it before where to run it.
    let (input, input_source, known) = input_bytes(blobs, run, resubmitted)?;
    let mut notes = check_machine(onnx, run)?;
    let model_hash = digest(&run.model_blob)?;
    if !blobs.contains(&model_hash) {
        return Err(Blocked::ArtifactMissing {
            hash: run.model_blob.clone(),
        });
    }
    let (fields, rows) =
        typed::read(&input).map_err(|e| Blocked::Damaged(format!("the run's input: {e}")))?;
    let model = model(&settings)?;
    let names: Vec<&str> = model.schema().iter().map(|c| c.name.as_str()).collect();
    if fields != names {
        return Err(if known {
            Blocked::Damaged(format!(
                "the run's input fields {fields:?} are not the model's {names:?}"
            ))
        } else {
            mismatch(run, "(its fields are not the model's)".into())
        });
    }
    if !known {
        resubmitted_is_the_input(&model, run, &rows)?;
    }
    let mut out_fields = Vec::new();
    let mut out_rows = Cells::default();
    let per_run = settings.rows_per_run.max(1);
    for from in (0..rows.len()).step_by(per_run) {
        let run = from..(from + per_run).min(rows.len());
        let scored = model
            .features_of(&rows, run)
            .and_then(|features| model.run(&features))
            .map_err(|e| Blocked::Score(e.to_string()))?;
        out_fields = scored.fields;
        out_rows.append(scored.rows);
    }
    let reproduced = blake3::hash(&table_bytes(&out_fields, &out_rows));
    let reproduced_output_hash = reproduced.to_hex().to_string();
    let run_output_identical = reproduced_output_hash == run.output_blob;
    let (row_offset, row_count) = target
        .request
        .map_or((0, run.row_count), |r| (r.row_offset, r.row_count));
    let range = row_offset as usize..(row_offset + row_count) as usize;
    let recorded = match blobs.get(&digest(&run.output_blob)?) {
        Ok(bytes) => Some(
            typed::read(&bytes).map_err(|e| Blocked::Damaged(format!("the run's output: {e}")))?,
        ),
        Err(BlobError::NotFound(_)) => {
            notes.push(
                "the recorded outputs are not kept: only the run's output hash was compared".into(),
            );
            None
        }
        Err(e) => return Err(Blocked::Damaged(e.to_string())),
    };
    let diff = match &recorded {
        Some((fields, rows)) => {
            fn part<'a>(c: &'a Cells, range: &Range<usize>) -> Vec<Row<'a>> {
                if range.end <= c.len() {
                    c.rows().skip(range.start).take(range.len()).collect()
                } else {
                    Vec::new()
                }
            }
            Some(compare(
                fields,
                &part(rows, &range),
                &part(&out_rows, &range),
            ))
        }
        None => None,
    };
    let verdict = match &diff {
        Some((_, rows)) if rows.is_empty() => Verdict::Identical,
        Some(_) => Verdict::Different,
        None if run_output_identical => Verdict::Identical,
        None => Verdict::Different,
    };
    let overridden = settings != recorded_settings(run);
    if overridden {
        notes.push(
            "overrides changed the recorded settings: this is a what-if, not a reproduction".into(),
        );
    }
    let (columns, differing_rows) = diff.unzip();
    Ok(Report {
        verdict,
        run_position: target.position,
        request_id: target.request.map(|r| r.request_id),
        deployment_id: run.deployment_id,
        model_id: run.model_id,
        version: run.version,
        row_offset,
        row_count,
        run_rows: run.row_count,
        run_output_identical,
        recorded_output_hash: run.output_blob.clone(),
        reproduced_output_hash,
        columns,
        differing_rows,
        input: input_source,
        overridden,
        settings,
        ort_version: onnx.version.clone(),
        cpu_class: onnx.cpu_class.clone(),
        notes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn recorded_settings(run: &InferenceRunRecorded) -> Settings {
    let s = &run.session;
    Settings {
        intra_op_threads: s.intra_op_threads,
        inter_op_threads: s.inter_op_threads,
        execution_mode: s.execution_mode.clone(),
        graph_optimization: s.graph_optimization.clone(),
        rows_per_run: run.row_count.max(1) as usize,
    }
}

/// Per column, the largest absolute difference; and the rows where any cell differs.
fn compare(fields: &[String], want: &[Row], got: &[Row]) -> (Vec<ColumnDiff>, Vec<u64>) {
    let mut columns: Vec<ColumnDiff> = fields
        .iter()
        .map(|f| ColumnDiff {
            column: f.clone(),
            max_abs_diff: Some(0.0),
        })
        .collect();
    let mut rows = Vec::new();
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w == g {
            continue;
        }
        rows.push(i as u64);
        for (c, col) in columns.iter_mut().enumerate() {
            let (a, b) = (w.get(c), g.get(c));
            if a == b {
                continue;
            }
            let delta = match (
                a.and_then(|s| s.parse::<f64>().ok()),
                b.and_then(|s| s.parse::<f64>().ok()),
            ) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => Some((x - y).abs()),
                _ => None,
            };
            col.max_abs_diff = match (col.max_abs_diff, delta) {
                (Some(m), Some(d)) => Some(m.max(d)),
                _ => None,
            };
        }
    }
    if want.len() != got.len() {
        rows.extend((want.len().min(got.len())..want.len().max(got.len())).map(|i| i as u64));
    }
    (columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::RunSession;
    use crate::domain::runtime::ImageVersionSpec;

    fn run() -> InferenceRunRecorded {
        InferenceRunRecorded {
            run_id: Uuid::nil(),
            deployment_id: Uuid::nil(),
            variant: "primary".into(),
            shadow: false,
            model_id: Uuid::nil(),
            version: 1,
            model_blob: "00".repeat(32),
            image_id: "img".into(),
            image_version: "1".into(),
            session: Box::new(RunSession::of(&ImageVersionSpec::default(), "1.32.0", None)),
            row_count: 8,
            input_blob: "11".repeat(32),
            output_blob: "22".repeat(32),
            requests: Vec::new(),
            job: None,
            profile: None,
        }
    }

    #[test]
    fn overrides_lay_over_the_recorded_settings_and_bad_ones_are_refused() {
        let r = run();
        let s = settings(&r, &Overrides::default()).unwrap();
        assert_eq!(s, recorded_settings(&r));
        assert_eq!(s.rows_per_run, 8);
        let o = Overrides {
            intra_op_threads: Some(2),
            rows_per_run: Some(1),
            ..Default::default()
        };
        let s = settings(&r, &o).unwrap();
        assert_eq!((s.intra_op_threads, s.rows_per_run), (2, 1));
        for bad in [
            Overrides {
                intra_op_threads: Some(0),
                ..Default::default()
            },
            Overrides {
                execution_mode: Some("fast".into()),
                ..Default::default()
            },
            Overrides {
                graph_optimization: Some("max".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(settings(&r, &bad).unwrap_err().code(), "bad_override");
        }
    }

    #[test]
    fn compare_reports_the_largest_difference_per_column_and_the_rows() {
        let fields = vec!["p.0".to_string(), "label".to_string()];
        let table = |rows: [[&str; 2]; 3]| Cells::from_rows(2, rows).unwrap();
        let (want, got) = (
            table([["0.5", "x"], ["0.25", "y"], ["1", "z"]]),
            table([["0.5", "x"], ["0.2500001", "y"], ["0.75", "w"]]),
        );
        let (want, got): (Vec<Row>, Vec<Row>) = (want.rows().collect(), got.rows().collect());
        let (cols, rows) = compare(&fields, &want, &got);
        assert_eq!(rows, vec![1, 2]);
        assert!((cols[0].max_abs_diff.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(
            cols[1].max_abs_diff, None,
            "a differing label has no numeric distance"
        );
        let (cols, rows) = compare(&fields, &want, &want);
        assert!(rows.is_empty());
        assert!(cols.iter().all(|c| c.max_abs_diff == Some(0.0)));
    }
}
