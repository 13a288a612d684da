//! `provenant bench batch`: a million rows of the fixture classifier scored as a batch job,
//! Parquet to Parquet (file read, rows to text and checked, scored, every run recorded, the
//! output written), on the demo deployment (full retention: run blobs stored) and on a
//! hashes-only one, beside raw in-process ONNX Runtime on the same rows in the same runs.

use std::io::Cursor;
use std::time::Instant;

use polars::prelude::*;
use serde_json::Value;

use super::score::{demo, raw_ort};
use super::{Failure, Figures};
use crate::api::deployments::NewDeployment;
use crate::api::jobs::{DEFAULT_BATCH_ROWS, JobOptions};
use crate::domain::deployment::Retention;
use crate::domain::job::{FileFormat, JobOutcome};
use crate::runtime::cells::Cells;

const FIXTURE: &str = include_str!("../../fixtures/models/wine_classifier.expected.json");

/// `n` distinct wine rows and their fields: the fixture's five, each value scaled by a factor
/// of its row and column (the batch job tests use the same rows).
pub fn wine_rows(n: usize) -> Result<(Vec<String>, Vec<Vec<f64>>), Failure> {
    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let fields: Vec<String> = serde_json::from_value(fixture["fields"].clone())?;
    let base: Vec<Vec<String>> = serde_json::from_value(fixture["rows"].clone())?;
    let base = base
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = (0..n)
        .map(|i| {
            base[i % base.len()]
                .iter()
                .enumerate()
                .map(|(j, v)| v * (1.0 + ((i * 31 + j * 7) % 200) as f64 / 1000.0 - 0.1))
                .collect()
        })
        .collect();
    Ok((fields, rows))
}

/// The rows as a table of float64 columns, and the first run's rows as the text a client
/// sends.
fn wine_table(n: usize) -> Result<(DataFrame, Cells), Failure> {
    let (fields, rows) = wine_rows(n)?;
    let columns = fields
        .iter()
        .enumerate()
        .map(|(j, f)| {
            Column::new(
                f.as_str().into(),
                rows.iter().map(|r| r[j]).collect::<Vec<f64>>(),
            )
        })
        .collect();
    let text = as_text(
        fields.len(),
        &rows[..rows.len().min(DEFAULT_BATCH_ROWS as usize)],
    );
    Ok((DataFrame::new_infer_height(columns)?, text))
}

/// Rows of numbers as the text a client sends: each the shortest that parses back to it.
pub fn as_text(width: usize, rows: &[Vec<f64>]) -> Cells {
    let mut text = Cells::with_capacity(width, rows.len(), 0);
    let mut floats = ryu_js::Buffer::new();
    for r in rows {
        for v in r {
            text.push_cell(floats.format(*v));
        }
        text.end_row();
    }
    text
}

pub async fn batch(rows: usize, as_json: bool) -> Result<(), Failure> {
    let (_scratch, state, admin, model, full) = demo("batch").await?;
    let hashes = state
        .deploy(
            admin,
            NewDeployment {
                retention: Some(Retention::Hashes),
                ..NewDeployment::single(model, 1, "PROD")
            },
        )
        .await
        .map_err(|e| e.detail)?;
    let hashes = hashes.data["deployment_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("the second deployment has no id")?;
    let (mut df, text) = wine_table(rows)?;
    let mut file = Vec::new();
    ParquetWriter::new(&mut file).finish(&mut df)?;
    drop(df);

    let mut figures = Figures::new(
        "batch",
        &format!("{rows} rows, wine classifier, Parquet to Parquet, runs of {DEFAULT_BATCH_ROWS}"),
        as_json,
    );
    let options = JobOptions {
        input_format: Some(FileFormat::Parquet),
        output_format: Some(FileFormat::Parquet),
        batch_rows: None,
        max_failed_rows: None,
    };
    let mut rates = Vec::new();
    for (name, deployment) in [("full_retention", full), ("hashes_only", hashes)] {
        let started_at = Instant::now();
        let job = state
            .start_job(
                admin,
                deployment,
                file.clone(),
                FileFormat::Parquet,
                &options,
            )
            .await
            .map_err(|e| e.detail)?;
        let bar = crate::progress::bar(job.rows(), name);
        let ended = state
            .run_job(job, &|done| bar.set_position(done))
            .await
            .map_err(|e| e.detail)?;
        bar.finish_and_clear();
        let seconds = started_at.elapsed().as_secs_f64();
        if ended.outcome != JobOutcome::Completed || ended.scored_rows != rows as u64 {
            return Err(
                format!("the {name} job ended {:?}: {}", ended.outcome, ended.detail).into(),
            );
        }
        let output = ParquetReader::new(Cursor::new(
            ended.output.as_deref().cloned().unwrap_or_default(),
        ))
        .finish()?;
        if output.height() != rows {
            return Err(format!("the {name} output has {} rows", output.height()).into());
        }
        let rate = rows as f64 / seconds;
        figures.say(
            &format!("{name}_rows_per_s"),
            rate,
            format!("job, {name:>14}: {rate:>9.0} rows/s ({seconds:.2} s, every run recorded)"),
        );
        rates.push(rate);
    }
    let served = state.serving.get(&full).ok_or("the demo is not served")?;
    let raw = raw_ort(&served.model, &text, 3.0);
    figures.say(
        "raw_ort_rows_per_s",
        raw,
        format!("raw ONNX Runtime in process, {DEFAULT_BATCH_ROWS}-row runs of text rows, all cores: {raw:>9.0} rows/s"),
    );
    for (name, rate) in ["full_retention", "hashes_only"].iter().zip(&rates) {
        figures.say(
            &format!("ratio_{name}_to_raw_ort"),
            rate / raw,
            format!("job / raw ONNX Runtime, {name}: {:.2}x", rate / raw),
        );
    }
    figures.finish();
    Ok(())
}
