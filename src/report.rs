//! The model version report: one self-contained, printable HTML page a compliance reviewer
//! reads in a browser. Lineage, every stage change and comment with who, when and why, the
//! deployments and their runtimes, scoring volume over time, reproduction spot checks, and
//! the ledger's verification status with the signed tree head it was checked against.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::predictions::{Outcome, RunRef};
use crate::domain::deployment::Deployment;
use crate::domain::state::{Stamp, User};
use crate::log::store::Direction;

/// Runs reproduced as spot checks, spread over the version's history.
const SPOT_CHECKS: usize = 5;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Who and when, with user ids shown as usernames.
fn stamp(users: &BTreeMap<Uuid, User>, s: &Stamp) -> String {
    let who = Uuid::parse_str(&s.actor)
        .ok()
        .and_then(|id| users.get(&id))
        .map_or_else(|| s.actor.clone(), |u| u.username.clone());
    format!(
        "{} <span class=\"at\">{} · #{}</span>",
        esc(&who),
        esc(&s.at),
        s.position
    )
}

/// A scored run of one of the version's deployments.
struct Run {
    position: u64,
    at: String,
    requests: u64,
    rows: u64,
}

/// An SVG bar chart of requests per bucket (hours when the history spans two days or less,
/// else days).
fn volume_chart(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "<p>No prediction has been recorded.</p>".into();
    }
    let span_days = match (runs.first(), runs.last()) {
        (Some(a), Some(b)) if a.at.get(..10) == b.at.get(..10) => 0,
        _ => 3,
    };
    let cut = if span_days == 0 { 13 } else { 10 };
    let mut buckets: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in runs {
        let b = buckets.entry(r.at.get(..cut).unwrap_or(&r.at)).or_default();
        b.0 += r.requests;
        b.1 += r.rows;
    }
    let max = buckets.values().map(|v| v.0).max().unwrap_or(1).max(1);
    let (w, h, bar) = (640.0, 160.0, 640.0 / buckets.len() as f64);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" aria-label=\"requests per {}\">",
        h + 40.0,
        if cut == 13 { "hour" } else { "day" }
    );
    for (i, (label, (requests, rows))) in buckets.iter().enumerate() {
        let bh = h * *requests as f64 / max as f64;
        let x = i as f64 * bar;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#3b6ea5\"><title>{}: {requests} requests, {rows} rows</title></rect>",
            x + 2.0,
            h - bh,
            (bar - 4.0).max(1.0),
            esc(label)
        );
        if buckets.len() <= 16 || i % (buckets.len() / 8).max(1) == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>",
                x + 2.0,
                h + 14.0,
                esc(label.get(5..).unwrap_or(label))
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" font-size=\"11\">max {max} requests per {}</text></svg>",
        h + 34.0,
        if cut == 13 { "hour (UTC)" } else { "day (UTC)" }
    );
    svg
}

/// Called as `(step, done, total)` during the long steps.
pub type Progress = std::sync::Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// Builds the report.
pub async fn model_version(
    s: &AppState,
    model_id: Uuid,
    version: u32,
    progress: Progress,
) -> Result<String, ApiError> {
    let missing = |what: String| ApiError::not_found("not_found", what);
    // What the page shows, copied out under the read lock (not the whole registry).
    let (project, experiment, deployments, users, model) = {
        let reg = s.registry.read();
        let model = reg
            .models
            .get(&model_id)
            .cloned()
            .ok_or_else(|| missing(format!("no model {model_id}")))?;
        let experiment_id = model
            .versions
            .get(&version)
            .ok_or_else(|| missing(format!("model {model_id} has no version {version}")))?
            .experiment_id;
        let deployments: Vec<Deployment> = reg
            .deployments
            .values()
            .filter(|d| d.spec.model_id == model_id && d.spec.version == version)
            .cloned()
            .collect();
        (
            reg.projects.get(&model.project_id).map(|p| p.name.clone()),
            reg.experiments.get(&experiment_id).cloned(),
            deployments,
            reg.users.clone(),
            model,
        )
    };
    let v = &model.versions[&version];
    let experiment = experiment.as_ref();

    let mut runs = Vec::new();
    for d in &deployments {
        let stream = crate::domain::deployment::stream(d.deployment_id);
        let events = match s
            .ledger
            .read_stream(&stream, 0, Direction::Forward, usize::MAX)
        {
            Ok(e) => e,
            Err(crate::log::LogError::UnknownStream(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        runs.extend(
            events
                .iter()
                .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
                .map(|e| Run {
                    position: e.unsigned.position,
                    at: e.unsigned.recorded_at.clone(),
                    requests: e.unsigned.payload["requests"]
                        .as_array()
                        .map_or(0, |r| r.len() as u64),
                    rows: e.unsigned.payload["row_count"].as_u64().unwrap_or(0),
                }),
        );
    }
    runs.sort_by_key(|r| r.position);

    // Spot checks spread from the first run to the last.
    let picks: Vec<u64> = match runs.len() {
        0 => Vec::new(),
        n => {
            let k = SPOT_CHECKS.min(n);
            let mut p: Vec<u64> = (0..k)
                .map(|i| runs[if k == 1 { 0 } else { i * (n - 1) / (k - 1) }].position)
                .collect();
            p.dedup();
            p
        }
    };
    let mut checks = Vec::new();
    for (i, &p) in picks.iter().enumerate() {
        checks.push((
            p,
            s.reproduce(RunRef::Position(p), None, Default::default(), None)
                .await?,
        ));
        progress("reproducing", i as u64 + 1, picks.len() as u64);
    }

    let snap = s.ledger.snapshot()?;
    let head = s.ledger.head();
    let verified = tokio::task::spawn_blocking(move || {
        crate::log::verify::verify(&snap, &Default::default(), &mut |done, total| {
            progress("verifying", done, total)
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })??;
    let checkpoint = s.ledger.checkpoint(verified.events)?.unwrap_or_default();

    // The page.
    let mut h = String::new();
    let title = format!("{} v{version}", model.name);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} — model version report</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}}\
         th{{background:#f3f3f3}}code{{font-size:.8rem;word-break:break-all}}.at{{color:#666;font-size:.8rem}}\
         .ok{{color:#17692b;font-weight:bold}}.bad{{color:#a51d1d;font-weight:bold}}\
         @media print{{body{{margin:0;max-width:none}}h2{{break-after:avoid}}table{{break-inside:auto}}}}</style></head><body>\
         <h1>{t}</h1><p>Model version report of project <b>{p}</b>, generated from ledger <code>{o}</code> at position {pos} \
         (model <code>{model_id}</code>).</p>",
        t = esc(&title),
        p = esc(project.as_deref().unwrap_or("?")),
        o = esc(s.ledger.origin()),
        pos = head.size,
    );

    // Lineage.
    let _ = write!(
        h,
        "<h2>Lineage</h2><table><tr><th>Registered</th><td>{}</td></tr><tr><th>Stage</th><td>{:?}</td></tr>\
         <tr><th>Aliases</th><td>{}</td></tr><tr><th>Annotation</th><td>{}</td></tr>",
        stamp(&users, &v.registered),
        v.stage,
        esc(&v.aliases.iter().cloned().collect::<Vec<_>>().join(", ")),
        esc(v.annotation.as_deref().unwrap_or("")),
    );
    if let Some(d) = &v.deleted {
        let _ = write!(
            h,
            "<tr><th>Deleted</th><td>{} — {}</td></tr>",
            stamp(&users, &d.deleted),
            esc(d.reason.as_deref().unwrap_or(""))
        );
    }
    if let Some(x) = experiment {
        let _ = write!(
            h,
            "<tr><th>Experiment</th><td>{} <code>{}</code>, imported by {}</td></tr>\
             <tr><th>Target</th><td>{}</td></tr><tr><th>Datasets</th><td>{}</td></tr><tr><th>Tags</th><td>{}</td></tr>",
            esc(&x.display_name),
            x.experiment_id,
            stamp(&users, &x.imported),
            esc(x.parameters.target_column.as_deref().unwrap_or("")),
            esc(&x.parameters.datasets.join(", ")),
            esc(&x.tags.iter().cloned().collect::<Vec<_>>().join(", ")),
        );
    }
    h.push_str("</table>");
    if let Some(x) = experiment {
        h.push_str("<h3>Artifacts</h3><table><tr><th>File</th><th>Type</th><th>Size</th><th>blake3</th><th>Deployable</th></tr>");
        for a in &x.artifacts {
            let deployable = a
                .ingestion
                .as_ref()
                .map_or("not ingested".to_string(), |i| {
                    if i.deployable {
                        format!("yes ({})", i.model_type)
                    } else {
                        format!("no: {}", i.reason.as_deref().unwrap_or(""))
                    }
                });
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&a.artifact.file_name),
                esc(&a.artifact.artifact_type),
                a.artifact.size,
                esc(&a.artifact.blob_hash),
                esc(&deployable)
            );
        }
        h.push_str("</table><h3>Metadata</h3><table><tr><th>Key</th><th>Value</th></tr>");
        for (k, val) in &x.metadata {
            let shown = serde_json::to_string(val).unwrap_or_default();
            let shown = if shown.len() > 600 {
                format!(
                    "{}… ({} bytes)",
                    &shown[..shown.floor_char_boundary(600)],
                    shown.len()
                )
            } else {
                shown
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                esc(k),
                esc(&shown)
            );
        }
        h.push_str("</table>");
    }

    // History.
    h.push_str("<h2>Stage changes</h2><table><tr><th>From</th><th>To</th><th>Who, when</th><th>Why</th></tr>");
    for c in &v.stage_history {
        let _ = write!(
            h,
            "<tr><td>{:?}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
            c.from,
            c.to,
            stamp(&users, &c.changed),
            esc(&c.annotation)
        );
    }
    h.push_str("</table><h2>Alias changes</h2><table><tr><th>Alias</th><th>Now on</th><th>Who, when</th><th>Why</th></tr>");
    for c in model
        .alias_history
        .iter()
        .filter(|c| c.version == Some(version) || model.aliases.get(&c.alias) == Some(&version))
    {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.alias),
            c.version.map_or("removed".into(), |v| format!("v{v}")),
            stamp(&users, &c.changed),
            esc(&c.annotation)
        );
    }
    h.push_str("</table><h2>Comments</h2><table><tr><th>Who, when</th><th>Comment</th></tr>");
    for c in &v.comments {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            stamp(&users, &c.added),
            esc(&c.text)
        );
    }
    h.push_str("</table>");

    // Deployments.
    h.push_str("<h2>Deployments</h2>");
    if deployments.is_empty() {
        h.push_str("<p>Never deployed.</p>");
    }
    for d in &deployments {
        let sp = &d.spec;
        let _ = write!(
            h,
            "<h3>{env} <code>{id}</code> — {state:?}</h3><table>\
             <tr><th>Runtime</th><td>{rt} on {img}@{ver} (ONNX Runtime {ort}, {ep}, {intra}/{inter} threads, {mode}, optimization {opt})</td></tr>\
             <tr><th>Model blob</th><td><code>{blob}</code></td></tr><tr><th>Retention</th><td>{ret:?}</td></tr>",
            env = esc(&sp.environment),
            id = d.deployment_id,
            state = d.state,
            rt = esc(&sp.runtime_id),
            img = esc(&sp.image_id),
            ver = esc(&sp.image_version),
            ort = esc(&sp.runtime.onnxruntime_version),
            ep = esc(&sp.runtime.execution_provider),
            intra = sp.runtime.intra_op_threads,
            inter = sp.runtime.inter_op_threads,
            mode = esc(&sp.runtime.execution_mode),
            opt = esc(&sp.runtime.graph_optimization),
            blob = esc(&sp.model_blob),
            ret = sp.retention,
        );
        for w in &sp.warnings {
            let _ = write!(h, "<tr><th>Warning</th><td>{}</td></tr>", esc(w));
        }
        h.push_str(
            "</table><table><tr><th>From</th><th>To</th><th>Who, when</th><th>Reason</th></tr>",
        );
        for t in &d.history {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                t.from.map_or("—".into(), |f| format!("{f:?}")),
                t.to,
                stamp(&users, &t.changed),
                esc(&t.reason)
            );
        }
        h.push_str("</table>");
    }

    // Volume.
    let (requests, rows): (u64, u64) = runs
        .iter()
        .fold((0, 0), |a, r| (a.0 + r.requests, a.1 + r.rows));
    let _ = write!(
        h,
        "<h2>Scoring volume</h2><p>{} inference runs, {requests} requests, {rows} rows.</p>{}",
        runs.len(),
        volume_chart(&runs)
    );

    // Spot checks.
    h.push_str("<h2>Reproduction spot checks</h2>");
    if checks.is_empty() {
        h.push_str("<p>No run to reproduce.</p>");
    } else {
        h.push_str("<table><tr><th>Run</th><th>Verdict</th><th>Details</th></tr>");
        for (p, outcome) in &checks {
            let (class, details) = match outcome {
                Outcome::Reproduced(r) => (
                    if r.run_output_identical { "ok" } else { "bad" },
                    format!(
                        "{} rows; output hash <code>{}</code>; ONNX Runtime {}, CPU class {}",
                        r.run_rows,
                        esc(&r.reproduced_output_hash),
                        esc(&r.ort_version),
                        esc(&r.cpu_class)
                    ),
                ),
                Outcome::NotReproducible(n) => ("bad", format!("{}: {}", n.reason, esc(&n.detail))),
            };
            let _ = write!(
                h,
                "<tr><td>#{p}</td><td class=\"{class}\">{}</td><td>{details}</td></tr>",
                outcome.verdict()
            );
        }
        h.push_str("</table><p>Bit-exact reproduction holds on the ONNX Runtime build and CPU class the run recorded.</p>");
    }

    // Verification.
    let _ = write!(
        h,
        "<h2>Verification</h2><p class=\"{}\">{}</p><p>Every hash, signature, stream version, Merkle node and \
         checkpoint of the {} events was checked; the tree head it was checked against:</p><pre>{}</pre></body></html>",
        if verified.intact() { "ok" } else { "bad" },
        match &verified.failure {
            None => format!("Intact: root {}", verified.root),
            Some(f) => format!("TAMPERED at position {}: {}", f.position, esc(&f.reason)),
        },
        verified.events,
        esc(&checkpoint)
    );
    Ok(h)
}
