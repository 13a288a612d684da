//! `provenant bench score`: the scorer on loopback, driven by its own keep-alive HTTP/1.1
//! load generator, beside raw in-process ONNX Runtime on the same rows. The fixture
//! classifier is the demo model, deployed with the shipped runtime's defaults.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Conn, Failure, Figures, Scratch, percentile};
use crate::api::{self, AppState};
use crate::blobs::BlobStore;
use crate::log::{self, Ledger};
use crate::runtime::cells::Cells;
use crate::runtime::scorer::{Model, SessionSettings};

const FIXTURE: &str = include_str!("../../fixtures/models/wine_classifier.expected.json");

pub(super) struct Load {
    pub requests: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `concurrency` connections posting `body` for `seconds`; an answer other than 200 fails it.
/// The connections run on their own threads, as a client process would, so the server's
/// runtime serves requests and nothing else.
pub(super) async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    body: Arc<Vec<u8>>,
    concurrency: usize,
    seconds: f64,
) -> Result<Load, Failure> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("bench-client")
            .enable_all()
            .build()?;
        client.block_on(drive(addr, &path, body, concurrency, seconds))
    })
    .await?
}

/// The load generator's threads: one per core of this 2-core machine.
const CLIENT_THREADS: usize = 2;

async fn drive(
    addr: std::net::SocketAddr,
    path: &str,
    body: Arc<Vec<u8>>,
    concurrency: usize,
    seconds: f64,
) -> Result<Load, Failure> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (body, path) = (body.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &path, "").await?;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (status, _) = conn.post(&body).await?;
                if status != 200 {
                    return Err::<Vec<Duration>, Failure>(
                        format!("the scorer answered {status}").into(),
                    );
                }
                latencies.push(t0.elapsed());
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Ok(Load {
        requests: all.len() as u64,
        per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

/// `provenant bench http`: the same load against any `http://HOST:PORT/PATH`, at each
/// concurrency in turn.
pub async fn http(
    url: &str,
    body: Vec<u8>,
    concurrencies: &[usize],
    seconds: f64,
    rows: usize,
    as_json: bool,
) -> Result<(), Failure> {
    let (authority, path) = split_url(url)?;
    let addr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let body = Arc::new(body);
    let mut figures = Figures::new(
        "http",
        &format!("{seconds} s per run, {rows} row(s) per request, {url}"),
        as_json,
    );
    for &c in concurrencies {
        let r = load(addr, path, body.clone(), c, seconds).await?;
        figures.say(
            &format!("c{c}_requests_per_s"),
            r.per_sec,
            format!(
                "concurrency {c:>3}: {:>8.0} req/s  {:>9.0} rows/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests)",
                r.per_sec,
                r.per_sec * rows as f64,
                r.p50_ms,
                r.p99_ms,
                r.requests
            ),
        );
        figures.say(
            &format!("c{c}_rows_per_s"),
            r.per_sec * rows as f64,
            String::new(),
        );
        figures.say(&format!("c{c}_p50_ms"), r.p50_ms, String::new());
        figures.say(&format!("c{c}_p99_ms"), r.p99_ms, String::new());
    }
    figures.finish();
    Ok(())
}

/// Bytes this process has caused to be written to storage (Linux's `/proc/self/io`).
fn disk_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `http://HOST:PORT/PATH` as its authority and path (`/` when there is none).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .filter(|r| !r.is_empty() && !r.starts_with('/'))
        .ok_or_else(|| format!("{url}: only http://HOST:PORT/PATH URLs are supported"))?;
    Ok(match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    })
}

/// A fresh data dir with the runtime catalog, an admin and the demo deployment (the wine
/// classifier on the shipped runtime's defaults): the state, its admin, the model and the
/// deployment.
pub(super) async fn demo(name: &str) -> Result<(Scratch, AppState, Uuid, Uuid, Uuid), Failure> {
    let scratch = Scratch::new(name)?;
    let dir = scratch.0.join("data");
    Ledger::init(&dir)?;
    let ledger = Ledger::open(&dir, log::Config::default())?;
    let onnx = crate::runtime::onnx::load(None)?;
    let blobs = BlobStore::new(&dir.join("blobs"), crate::blobs::DEFAULT_MAX_BYTES);
    let state = AppState::start(ledger.clone(), blobs, onnx).await?;
    let (catalog, hash) = crate::runtime::bootstrap::load(None)?;
    api::command::apply_bootstrap(&state, &catalog, &hash).await?;
    api::command::bootstrap_admin(&ledger, &state.registry, "admin").await?;
    let admin = state
        .registry
        .read()
        .usernames
        .get("admin")
        .copied()
        .ok_or("no admin")?;
    let (model, deployment) = crate::demo::seed(&state, admin).await?;
    Ok((scratch, state, admin, model, deployment))
}

/// Raw ONNX Runtime: `rows` per call on every core, rows per second.
pub(super) fn raw_ort(model: &Model, rows: &Cells, seconds: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let scored: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while started.elapsed() < budget {
                        if model.score(rows).is_ok() {
                            n += rows.len() as u64;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    scored as f64 / started.elapsed().as_secs_f64()
}

/// What binning a run's inputs at scoring time costs: two hash-only deployments of the same
/// model, one of a version with reference data (its runs are binned) and one of a version
/// without, under the same loads in the same run.
async fn binning(
    state: &AppState,
    addr: std::net::SocketAddr,
    admin: Uuid,
    model: Uuid,
    (one, thousand): (&Arc<Vec<u8>>, &Arc<Vec<u8>>),
    seconds: f64,
    figures: &mut Figures,
) -> Result<(), Failure> {
    let wine = include_bytes!("../../fixtures/models/wine_classifier.onnx");
    crate::demo::register(
        state,
        admin,
        model,
        ("wine, no reference data", "wine_classifier.onnx"),
        wine,
    )
    .await
    .map_err(|e| e.detail)?;
    let (fields, rows) = super::wine_rows(600)?;
    let mut csv = fields.join(",");
    for r in &rows {
        csv.push('\n');
        csv.push_str(&r.iter().map(f64::to_string).collect::<Vec<_>>().join(","));
    }
    let (_, schema) = crate::domain::reference::check(&state.registry.read(), admin, model, 1)
        .map_err(|e| e.to_string())?;
    let format = crate::domain::job::FileFormat::Csv;
    crate::api::drift::record_reference(state, admin, (model, 1), schema, (format, csv.into()))
        .await
        .map_err(|e| e.detail)?;
    let mut paths = Vec::new();
    for version in [1, 2] {
        let request = crate::api::deployments::NewDeployment {
            retention: Some(crate::domain::deployment::Retention::Hashes),
            security: Some(crate::api::deployments::SecurityRequest::None),
            ..crate::api::deployments::NewDeployment::single(model, version, "DEV")
        };
        let written = state.deploy(admin, request).await.map_err(|e| e.detail)?;
        let id = written.data["deployment_id"]
            .as_str()
            .ok_or("no deployment id")?
            .to_string();
        paths.push(format!("/{id}/model/score"));
    }
    let rates = in_turns(addr, (one, thousand), seconds, |i| paths[i].clone()).await?;
    say_turns(
        figures,
        "binning",
        ("hashes only, ", "hashes_"),
        ["binned", "unbinned"],
        &rates,
    );
    Ok(())
}

/// Two arms under the same two loads (1-row requests at concurrency 64, 1000-row requests
/// at 4), taking turns for `ROUNDS` rounds: recording is bound by a disk whose speed drifts,
/// so each round's ratio is of loads run side by side. `arm(i)` readies arm `i` and names
/// the path it scores. Each arm's (requests/s, rows/s) per round.
async fn in_turns(
    addr: std::net::SocketAddr,
    (one, thousand): (&Arc<Vec<u8>>, &Arc<Vec<u8>>),
    seconds: f64,
    mut arm: impl FnMut(usize) -> String,
) -> Result<[Vec<(f64, f64)>; 2], Failure> {
    let mut rates: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, rates) in rates.iter_mut().enumerate() {
            let path = arm(i);
            let r = load(addr, &path, one.clone(), 64, seconds).await?;
            let k = load(addr, &path, thousand.clone(), 4, seconds).await?;
            rates.push((r.per_sec, k.per_sec * 1000.0));
        }
    }
    Ok(rates)
}

/// Says each arm's median rates and the median of the rounds' ratios, first arm over second,
/// as `{what}_cost_ratio_c64` and `{what}_cost_ratio_1000row`.
fn say_turns(
    figures: &mut Figures,
    what: &str,
    (label, key): (&str, &str),
    names: [&str; 2],
    rates: &[Vec<(f64, f64)>; 2],
) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (name, rates) in names.iter().zip(rates) {
        let one = median(rates.iter().map(|r| r.0).collect());
        let thousand = median(rates.iter().map(|r| r.1).collect());
        figures.say(
            &format!("{key}{name}_1row_c64_requests_per_s"),
            one,
            format!("{label}{name:>11}, 1-row requests, concurrency 64: {one:>8.0} req/s"),
        );
        figures.say(
            &format!("{key}{name}_1000row_rows_per_s"),
            thousand,
            format!("{label}{name:>11}, 1000-row requests, concurrency  4: {thousand:>8.0} rows/s"),
        );
    }
    let ratio = |f: fn(&(f64, f64)) -> f64| {
        median(
            rates[0]
                .iter()
                .zip(&rates[1])
                .map(|(a, b)| f(a) / f(b))
                .collect(),
        )
    };
    let (c64, k1000) = (ratio(|r| r.0), ratio(|r| r.1));
    let (a, b) = (names[0], names[1]);
    figures.say(
        &format!("{what}_cost_ratio_c64"),
        c64,
        format!("{a} / {b}, 1-row at concurrency 64: {c64:.2}x (median of {ROUNDS} rounds)"),
    );
    figures.say(
        &format!("{what}_cost_ratio_1000row"),
        k1000,
        format!("{a} / {b}, 1000-row requests:      {k1000:.2}x (median of {ROUNDS} rounds)"),
    );
}

/// Turns each arm takes under each load in a side-by-side comparison.
const ROUNDS: usize = 3;

/// Recorded predictions the bench reproduces.
const REPRODUCTIONS: usize = 200;

pub async fn score(seconds: f64, as_json: bool) -> Result<(), Failure> {
    let (_scratch, state, admin, model_id, deployment) = demo("score").await?;
    let onnx = state.onnx;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let fields = fixture["fields"].clone();
    let rows: Vec<Vec<String>> = serde_json::from_value(fixture["rows"].clone())?;
    let one = Arc::new(serde_json::to_vec(
        &json!({"fields": fields, "rows": [rows[0]]}),
    )?);
    // A thousand distinct rows: cycling through the fixture's 178 would make compressing a
    // run's record unrealistically cheap.
    let (names, numbers) = super::batch::wine_rows(1000)?;
    let thousand_rows = super::batch::as_text(names.len(), &numbers);
    let thousand = Arc::new(serde_json::to_vec(
        &json!({"fields": names, "rows": thousand_rows}),
    )?);
    let path = format!("/{deployment}/model/score");

    let mut figures = Figures::new(
        "score",
        &format!("{seconds} s per run, wine classifier, runtime defaults"),
        as_json,
    );
    let mut recorded_rows_per_s = f64::NAN;
    // Recorded with monitoring (as served), recorded without the monitoring fold, and
    // neither recorded nor folded: the costs of monitoring and of recording, in one run.
    for (mode, recording, monitoring) in [
        ("recorded", true, true),
        ("unmonitored", true, false),
        ("unrecorded", false, true),
    ] {
        state.recording.store(recording, Ordering::Relaxed);
        state.registry.set_monitoring(monitoring);
        for c in [1usize, 16, 64] {
            let before = recording.then(|| (state.ledger.head().size, disk_written()));
            let r = load(addr, &path, one.clone(), c, seconds).await?;
            // Every event of a recorded load is a run's record: how many requests one run
            // served and what its commit cost the disk.
            let mut per_run = String::new();
            if let Some((size, written)) = before {
                let runs = (state.ledger.head().size - size).max(1) as f64;
                let requests = r.requests as f64 / runs;
                figures.say(
                    &format!("{mode}_1row_c{c}_requests_per_run"),
                    requests,
                    String::new(),
                );
                per_run = format!("  {requests:.1} requests");
                if let Some((now, then)) = disk_written().zip(written) {
                    let kib = (now - then) as f64 / runs / 1024.0;
                    per_run.push_str(&format!(" and {kib:.0} KiB written"));
                }
                per_run.push_str(" per run");
            }
            figures.say(
                &format!("{mode}_1row_c{c}_requests_per_s"),
                r.per_sec,
                format!(
                    "{mode:>10}, 1-row requests, concurrency {c:>2}: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests){per_run}",
                    r.per_sec, r.p50_ms, r.p99_ms, r.requests
                ),
            );
            figures.say(&format!("{mode}_1row_c{c}_p99_ms"), r.p99_ms, String::new());
        }
        let r = load(addr, &path, thousand.clone(), 4, seconds).await?;
        let rows_per_s = r.per_sec * 1000.0;
        figures.say(
            &format!("{mode}_1000row_rows_per_s"),
            rows_per_s,
            format!(
                "{mode:>10}, 1000-row requests, concurrency  4: {rows_per_s:>8.0} rows/s  p50 {:.2} ms  p99 {:.2} ms",
                r.p50_ms, r.p99_ms
            ),
        );
        if mode == "recorded" {
            recorded_rows_per_s = rows_per_s;
        }
    }
    state.recording.store(true, Ordering::Relaxed);
    state.registry.set_monitoring(true);
    let schema = state
        .serving
        .get(&deployment)
        .ok_or("the demo is not served")?
        .model
        .schema()
        .to_vec();
    let model = Model::load(
        onnx,
        include_bytes!("../../fixtures/models/wine_classifier.onnx").to_vec(),
        schema,
        Some("cultivar"),
        SessionSettings::default(),
    )?;
    let raw = raw_ort(&model, &thousand_rows, seconds);
    figures.say(
        "raw_ort_1000row_rows_per_s",
        raw,
        format!("raw ONNX Runtime in process, 1000-row runs, all cores: {raw:>8.0} rows/s"),
    );
    let rates = in_turns(addr, (&one, &thousand), seconds, |i| {
        state.registry.set_monitoring(i == 0);
        path.clone()
    })
    .await?;
    state.registry.set_monitoring(true);
    say_turns(
        &mut figures,
        "monitoring",
        ("", "turns_"),
        ["monitored", "unmonitored"],
        &rates,
    );
    // Recording's cost as the loads above in turns, so a drifting disk weighs on both arms.
    let rates = in_turns(addr, (&one, &thousand), seconds, |i| {
        state.recording.store(i == 0, Ordering::Relaxed);
        path.clone()
    })
    .await?;
    state.recording.store(true, Ordering::Relaxed);
    say_turns(
        &mut figures,
        "recording",
        ("", "turns_"),
        ["recorded", "unrecorded"],
        &rates,
    );
    figures.say(
        "http_vs_raw_1000row",
        recorded_rows_per_s / raw,
        format!(
            "recorded 1000-row over HTTP / raw ONNX Runtime: {:.2}x",
            recorded_rows_per_s / raw
        ),
    );
    // Reproduction of recorded predictions, their model already loaded by the deployment.
    let sample: Vec<uuid::Uuid> = state
        .registry
        .read()
        .predictions
        .keys()
        .take(REPRODUCTIONS)
        .copied()
        .collect();
    let mut took = Vec::with_capacity(sample.len());
    for id in sample {
        let started = Instant::now();
        let outcome = state
            .reproduce(
                crate::api::predictions::RunRef::Request(id),
                None,
                Default::default(),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        if outcome.verdict() != "identical" {
            return Err(format!("request {id} reproduced {}", outcome.verdict()).into());
        }
        took.push(started.elapsed());
    }
    took.sort();
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    figures.say(
        "reproduce_p50_ms",
        p50,
        format!(
            "reproduce a recorded prediction (whole run, model loaded), {} requests: p50 {p50:.2} ms  p99 {p99:.2} ms, all identical",
            took.len()
        ),
    );
    figures.say("reproduce_p99_ms", p99, String::new());
    binning(
        &state,
        addr,
        admin,
        model_id,
        (&one, &thousand),
        seconds,
        &mut figures,
    )
    .await?;
    figures.finish();
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:5000/invocations"),
            Ok(("127.0.0.1:5000", "/invocations"))
        );
        assert_eq!(
            split_url("http://localhost:8080"),
            Ok(("localhost:8080", "/"))
        );
        for bad in ["https://host:1/x", "host:1/x", "http://", "http:///x"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
