//! `provenant bench replay`: rebuilding the registry from a log of a million events, beside
//! the rate at which the same events are only read and decoded; then an audit bundle of the
//! last 100,000 events, exported with proofs and verified offline.

use std::time::Instant;

use uuid::Uuid;

use super::{Failure, Figures, Scratch};
use crate::api::command::new_event;
use crate::domain::event::*;
use crate::log::{self, ExpectedVersion, Ledger, NewEvent};
use crate::projections::replay::{Until, replay_into as fold_log};

/// Events appended per request while the log is built.
const BATCH: u64 = 1000;
const PROJECTS: usize = 100;
/// Events in the bench's audit bundle.
const BUNDLE_EVENTS: u64 = 100_000;

/// Distinct actors of the history; prime, so actors do not move in step with event kinds,
/// deployments or projects.
const ACTORS: u64 = 23;

/// Event `i` of a history shaped like a served registry's: mostly inference runs, then
/// comments and project edits, spread over `projects`, by `ACTORS` actors.
fn history_event(i: u64, projects: &[Uuid]) -> (String, NewEvent) {
    let project_id = projects[(i as usize) % projects.len()];
    let (stream, event) = match i % 10 {
        0..=5 => {
            let run = super::run(i, i % 7 + 1, 1, 1);
            let deployment_id = run.deployment_id;
            let run = RegistryEvent::InferenceRunRecorded(run);
            (crate::domain::deployment::stream(deployment_id), run)
        }
        6..=8 => (
            format!("project-{project_id}"),
            RegistryEvent::CommentAdded(CommentAdded {
                comment_id: Uuid::from_u128(u128::from(i)),
                subject: Subject::Project { project_id },
                text: format!("review note {i}"),
            }),
        ),
        _ => (
            format!("project-{project_id}"),
            RegistryEvent::ProjectUpdated(ProjectUpdated {
                project_id,
                name: Some(format!("project {i}")),
                description: None,
            }),
        ),
    };
    let new = new_event(&event, format!("user:{}", i % ACTORS));
    (stream, new)
}

/// A fresh ledger in `dir` with `PROJECTS` projects and then `events` events of the history.
pub(crate) async fn build(dir: &std::path::Path, events: u64) -> Result<Ledger, Failure> {
    Ledger::init(dir)?;
    let ledger = Ledger::open(dir, log::Config::default())?;
    let owner = Uuid::from_u128(1);
    let projects: Vec<Uuid> = (0..PROJECTS)
        .map(|p| Uuid::from_u128(1000 + p as u128))
        .collect();
    for (p, &project_id) in projects.iter().enumerate() {
        let created = RegistryEvent::ProjectCreated(ProjectCreated {
            project_id,
            name: format!("project {p}"),
            description: String::new(),
            owner,
        });
        let new = new_event(&created, "system:bench");
        ledger
            .append(
                &format!("project-{project_id}"),
                ExpectedVersion::Any,
                vec![new],
            )
            .await?;
    }
    super::append_all(&ledger, events, BATCH, |k| history_event(k, &projects)).await?;
    Ok(ledger)
}

pub async fn replay(events: u64, as_json: bool) -> Result<(), Failure> {
    let scratch = Scratch::new("replay")?;
    let ledger = build(&scratch.0.join("data"), events).await?;
    let snap = ledger.snapshot()?;
    let size = snap.size()?;

    // Baseline: read and decode every event, fold nothing.
    let started = Instant::now();
    let mut from = 0;
    let mut decoded = 0u64;
    while from < size {
        let chunk = snap.records(from, (from + 4096).min(size))?;
        for (_, record) in &chunk {
            crate::projections::registry::recorded_from_record(record)?;
            decoded += 1;
        }
        from += chunk.len().max(1) as u64;
    }
    let read_rate = decoded as f64 / started.elapsed().as_secs_f64();

    let bar = crate::progress::bar(size, "replaying");
    let started = Instant::now();
    let mut views = crate::projections::Views::default();
    let registry = fold_log(&snap, Until::End, Some(&mut views), &mut |done, _| {
        bar.set_position(done)
    })?;
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let rate = registry.applied as f64 / secs;
    // An audit bundle of the last BUNDLE_EVENTS events, each with its inclusion proof.
    let bundled = BUNDLE_EVENTS.min(size);
    let positions: Vec<u64> = (size - bundled..size).collect();
    let path = scratch.0.join("bundle.zip");
    let started = Instant::now();
    crate::log::bundle::write(
        &snap,
        positions,
        "bench",
        None,
        std::io::BufWriter::new(std::fs::File::create(&path)?),
        &mut |_, _| {},
    )?;
    let export_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let checked = crate::log::bundle::verify(
        std::io::BufReader::new(std::fs::File::open(&path)?),
        None,
        &mut |_, _| {},
    )?;
    let verify_secs = started.elapsed().as_secs_f64();
    if let Some(f) = checked.failure {
        return Err(format!("the bench bundle does not verify: {f}").into());
    }
    let bundle_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    let mut figures = Figures::new(
        "replay",
        &format!("{size} events: 60% inference runs, 30% comments, 10% project edits"),
        as_json,
    );
    figures.say("events", size as f64, String::new());
    figures.say(
        "read_decode_events_per_s",
        read_rate,
        format!("read + decode only (one thread):       {read_rate:>10.0} events/s"),
    );
    figures.say(
        "replay_events_per_s",
        rate,
        format!(
            "replay into the registry, the audit index and monitoring, no signature checks: {rate:>10.0} events/s ({:.2}x of read + decode; {} predictions, {} events indexed)",
            rate / read_rate,
            registry.predictions.len(),
            views.audit.size()
        ),
    );
    figures.say("replay_vs_read_decode", rate / read_rate, String::new());
    figures.say("bundle_events", checked.events as f64, String::new());
    figures.say("bundle_export_s", export_secs, format!(
        "audit bundle of {} events with inclusion proofs: export {export_secs:.2} s, offline verify {verify_secs:.2} s, {bundle_mb:.1} MB",
        checked.events
    ));
    figures.say("bundle_verify_s", verify_secs, String::new());
    figures.say("bundle_mb", bundle_mb, String::new());
    figures.finish();
    Ok(())
}
