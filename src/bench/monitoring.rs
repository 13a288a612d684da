//! `provenant bench monitoring`: recomputing the service-level monitoring of many scored rows
//! from the log, beside replaying the registry alone from the same log.

use std::time::Instant;

use uuid::Uuid;

use super::{Failure, Figures, Scratch};
use crate::api::command::new_event;
use crate::domain::event::RegistryEvent;
use crate::domain::{Recorded, deployment};
use crate::log::{self, Ledger};
use crate::projections::Views;
use crate::projections::monitoring::{Monitoring, Resolution};
use crate::projections::replay::{Until, replay_into};

/// Rows per run and requests per run: a full batch of the batching path's default size.
const RUN_ROWS: u64 = 64;
const RUN_REQUESTS: u64 = 16;
const DEPLOYMENTS: u64 = 4;
/// Runs appended per group of concurrent appends while building.
const BATCH: u64 = 512;

async fn build(dir: &std::path::Path, runs: u64) -> Result<Ledger, Failure> {
    Ledger::init(dir)?;
    let ledger = Ledger::open(dir, log::Config::default())?;
    super::append_all(&ledger, runs, BATCH, |k| {
        let r = super::run(
            k,
            k % DEPLOYMENTS + 1,
            RUN_REQUESTS,
            RUN_ROWS / RUN_REQUESTS,
        );
        let stream = deployment::stream(r.deployment_id);
        let event = new_event(&RegistryEvent::InferenceRunRecorded(r), "system:scorer");
        (stream, event)
    })
    .await?;
    Ok(ledger)
}

pub async fn monitoring(rows: u64, as_json: bool) -> Result<(), Failure> {
    let runs = rows.div_ceil(RUN_ROWS);
    let mut figures = Figures::new(
        "monitoring",
        &format!(
            "{runs} runs of {RUN_ROWS} rows in {RUN_REQUESTS} requests, {DEPLOYMENTS} deployments"
        ),
        as_json,
    );
    let scratch = Scratch::new("monitoring")?;
    let ledger = build(&scratch.0.join("data"), runs).await?;
    let snap = ledger.snapshot()?;
    let size = snap.size()?;

    // Baseline: the registry alone, from the same log.
    let started = Instant::now();
    replay_into(&snap, Until::End, None, &mut |_, _| {})?;
    let registry_s = started.elapsed().as_secs_f64();

    let bar = crate::progress::bar(size, "recomputing");
    let started = Instant::now();
    let mut views = Views::default();
    replay_into(&snap, Until::End, Some(&mut views), &mut |done, _| {
        bar.set_position(done)
    })?;
    let rebuild_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let served: u64 = views.monitoring.totals().map(|(_, t)| t.rows).sum();
    if served != runs * RUN_ROWS {
        return Err(format!("monitoring counted {served} rows of {}", runs * RUN_ROWS).into());
    }
    figures.say("rows", served as f64, String::new());
    figures.say(
        "recompute_s",
        rebuild_s,
        format!(
            "recompute from the log (read, decode, registry + audit index + monitoring): {rebuild_s:.2} s for {served} rows in {size} events ({:.2}x of the registry alone, {registry_s:.2} s)",
            rebuild_s / registry_s
        ),
    );
    figures.say(
        "recompute_vs_registry",
        rebuild_s / registry_s,
        String::new(),
    );

    // The fold alone, over one day: the same runs decoded once, their times spread evenly
    // over 24 hours, so every minute of the day has a window.
    let day_start = 1_795_000_000 - 1_795_000_000 % 86_400;
    let recorded: Vec<Recorded> = (0..runs)
        .map(|i| Recorded {
            position: i,
            stream: String::new(),
            stream_version: 0,
            actor: "system:scorer".into(),
            recorded_at: crate::log::envelope::format_time(
                chrono::DateTime::from_timestamp(day_start + (i * 86_400 / runs) as i64, 0)
                    .unwrap_or_default(),
            ),
            event: Some(RegistryEvent::InferenceRunRecorded(super::run(
                i,
                i % DEPLOYMENTS + 1,
                RUN_REQUESTS,
                RUN_ROWS / RUN_REQUESTS,
            ))),
        })
        .collect();
    let started = Instant::now();
    let mut day = Monitoring::default();
    for r in &recorded {
        day.apply(r);
    }
    let fold_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut windows = 0;
    for d in 1..=DEPLOYMENTS {
        let id = Uuid::from_u128(u128::from(d));
        windows += day
            .windows(id, Resolution::Minute, None, None, usize::MAX)
            .len();
        windows += day
            .windows(id, Resolution::Hour, None, None, usize::MAX)
            .len();
    }
    let query_ms = started.elapsed().as_secs_f64() * 1e3;
    figures.say(
        "day_fold_s",
        fold_s,
        format!(
            "the monitoring fold alone, a day of minute windows: {fold_s:.3} s ({:.2} µs per run of {RUN_REQUESTS} requests)",
            fold_s * 1e6 / runs as f64
        ),
    );
    figures.say(
        "day_query_ms",
        query_ms,
        format!(
            "every deployment's minute and hour windows of the day ({windows}): {query_ms:.1} ms"
        ),
    );
    figures.finish();
    Ok(())
}
