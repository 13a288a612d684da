//! `provenant bench graphql`: filtered audit-trail pages of 100 events out of a million,
//! over HTTP on loopback, each starting at a random cursor; beside an unfiltered page (the
//! cost of reading and serializing 100 events) and the same filter answered by scanning.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Conn, Failure, Figures, Scratch, percentile};
use crate::api::{self, AppState};
use crate::blobs::BlobStore;

const PAGE: usize = 100;

const QUERY: &str = "query($f: EventFilter, $after: String) {
  events(filter: $f, first: 100, after: $after) {
    edges { node { position eventType actor stream recordedAt hash signature keyId } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// A deterministic xorshift sequence, for cursors.
struct Cursors(u64);

impl Cursors {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

pub async fn graphql(events: u64, queries: usize, as_json: bool) -> Result<(), Failure> {
    let scratch = Scratch::new("graphql")?;
    let dir = scratch.0.join("data");
    let ledger = super::replay::build(&dir, events).await?;
    let onnx = crate::runtime::onnx::load(None)?;
    let blobs = BlobStore::new(&dir.join("blobs"), crate::blobs::DEFAULT_MAX_BYTES);
    let rss_before = resident_mb();
    let started = Instant::now();
    let state = AppState::start(ledger.clone(), blobs, onnx).await?;
    let startup = started.elapsed().as_secs_f64();
    let projections_mb = resident_mb() - rss_before;
    let token = api::command::bootstrap_admin(&ledger, &state.registry, "bench").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let snap = ledger.snapshot()?;
    let size = snap.size()?;
    let time_at = |p: u64| -> Result<String, Failure> {
        Ok(snap
            .event(p)?
            .ok_or("the bench log is shorter than built")?
            .unsigned
            .recorded_at)
    };
    // Project 6 of 100: comments fall on projects whose index ends in 6, 7 or 8.
    let project = format!("{}", uuid::Uuid::from_u128(1006));
    let deployment = format!("deployment-{}", uuid::Uuid::from_u128(3));
    let filters = [
        ("unfiltered", json!({})),
        ("one actor of 23", json!({"actor": "user:7"})),
        (
            "project entity + comment type",
            json!({"entityId": project, "eventTypes": ["CommentAdded"]}),
        ),
        (
            "actor + rarest type",
            json!({"actor": "user:11", "eventTypes": ["ProjectUpdated"]}),
        ),
        (
            "deployment stream + time window",
            json!({"stream": deployment, "from": time_at(size / 4)?, "to": time_at(size * 3 / 4)?}),
        ),
    ];
    let mut conn = Conn::open(
        addr,
        "/graphql",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await?;
    let mut cursors = Cursors(0x9e37_79b9_7f4a_7c15);
    let mut figures = Figures::new(
        "graphql",
        &format!("{size} events, pages of {PAGE} from random cursors, {queries} per filter"),
        as_json,
    );
    figures.say(
        "startup_s",
        startup,
        format!(
            "start (registry and audit index from the whole log): {startup:.2} s, {projections_mb:.0} MB more resident"
        ),
    );
    figures.say("projections_mb", projections_mb, String::new());
    let bar = crate::progress::bar((filters.len() * queries) as u64, "querying");
    let mut base_p99 = 0.0;
    for (name, filter) in &filters {
        let mut latencies = Vec::with_capacity(queries);
        let mut returned = 0usize;
        for _ in 0..queries {
            let after = cursors.next(size).to_string();
            let body = json!({"query": QUERY, "variables": {"f": filter, "after": after}});
            let body = serde_json::to_vec(&body)?;
            let t0 = Instant::now();
            let (status, answer) = conn.post(&body).await?;
            latencies.push(t0.elapsed());
            let answer: Value = serde_json::from_slice(&answer)?;
            if status != 200 || answer.get("errors").is_some() {
                return Err(format!("{name}: {status} {answer}").into());
            }
            returned += answer["data"]["events"]["edges"]
                .as_array()
                .map_or(0, Vec::len);
            bar.inc(1);
        }
        latencies.sort();
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        if *name == "unfiltered" {
            base_p99 = p99;
        }
        let key = name.replace([' ', '+'], "_").replace("__", "_");
        figures.say(&format!("{key}_p50_ms"), p50, String::new());
        figures.say(
            &format!("{key}_p99_ms"),
            p99,
            format!(
                "{name:<32} p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  ({:.2}x unfiltered p99; {:.0} events/page)",
                p99 / base_p99.max(1e-9),
                returned as f64 / queries as f64
            ),
        );
    }
    bar.finish_and_clear();

    // The same rarest filter by scanning from the cursor: what the index saves.
    let scans = 20;
    let mut latencies = Vec::with_capacity(scans);
    for _ in 0..scans {
        let mut from = cursors.next(size);
        let t0 = Instant::now();
        let mut found = 0;
        while found < PAGE && from < size {
            let chunk = snap.read_all(from, 4096)?;
            from += chunk.len().max(1) as u64;
            found += chunk
                .iter()
                .filter(|e| {
                    e.unsigned.actor == "user:11" && e.unsigned.event_type == "ProjectUpdated"
                })
                .count();
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let scan_p50 = percentile(&latencies, 0.5);
    figures.say(
        "scan_p50_ms",
        scan_p50,
        format!("the rarest filter by scanning the log, in process: p50 {scan_p50:.1} ms"),
    );
    figures.finish();
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// This process's resident memory (Linux), in MB; 0 where it cannot be read.
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
