//! `provenant bench ledger`: append, verify and read rates, measured beside the ceilings
//! this machine allows (raw redb inserts, raw ed25519 signing and batch verification).
//! `provenant bench score` and `provenant bench http` are in `score.rs`, `provenant bench
//! replay` in `replay.rs`, `provenant bench graphql` in `graphql.rs`, `provenant bench
//! monitoring` in `monitoring.rs`, `provenant bench batch` in `batch.rs`, `provenant bench
//! lifecycle` in `lifecycle.rs`.

mod batch;
mod graphql;
mod lifecycle;
mod monitoring;
mod replay;
mod score;
pub use batch::{batch, wine_rows};
pub use graphql::graphql;
pub use lifecycle::lifecycle;
pub use monitoring::monitoring;
pub use replay::replay;
pub use score::{http, score};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::domain::event::{InferenceRunRecorded, RunRequest, RunSession};
use crate::domain::runtime::ImageVersionSpec;
use crate::log::{self, ExpectedVersion, Ledger, NewEvent};

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A bench's figures: each printed as a line as it comes, or all as one JSON object (names
/// as printed, three decimals) at the end.
pub(crate) struct Figures {
    as_json: bool,
    values: Map<String, Value>,
}

impl Figures {
    /// Prints the title line: the bench, the build, the cores and the bench's `setting`.
    pub(crate) fn new(bench: &str, setting: &str, as_json: bool) -> Figures {
        if !as_json {
            println!(
                "provenant bench {bench} ({} build, {} cores, {setting})",
                if cfg!(debug_assertions) {
                    "DEBUG"
                } else {
                    "release"
                },
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
        Figures {
            as_json,
            values: Map::new(),
        }
    }

    /// Records a figure; prints `line` unless it is empty or the output is JSON.
    pub(crate) fn say(&mut self, name: &str, value: f64, line: String) {
        self.values
            .insert(name.to_string(), json!((value * 1000.0).round() / 1000.0));
        if !self.as_json && !line.is_empty() {
            println!("{line}");
        }
    }

    pub(crate) fn finish(self) {
        if self.as_json {
            println!("{}", Value::Object(self.values));
        }
    }
}

/// One keep-alive connection that POSTs JSON and reads (and drops) the answer.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
    request_head: String,
}

impl Conn {
    /// A connection that POSTs to `path` with the extra header lines `headers` (each ending
    /// in `\r\n`).
    pub(crate) async fn open(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &str,
    ) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
            request_head: format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{headers}"
            ),
        })
    }

    /// Answers the status and the body.
    pub(crate) async fn post(&mut self, body: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
        let head = format!(
            "{}Content-Length: {}\r\n\r\n",
            self.request_head,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// A scratch dir on the working directory's file system: a tmpfs `/tmp` would fake fsync.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Result<Scratch, Failure> {
        let p = std::env::current_dir()?
            .join(format!(".provenant-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payload(task: usize, i: u64) -> Value {
    // About 200 bytes in canonical form.
    json!({
        "model_version_id": format!("{:032x}", (task as u128) << 64 | i as u128),
        "stage": "Staging",
        "annotation": "promoted after the weekly validation run passed all checks",
        "task": task,
        "sequence": i,
    })
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

struct AppendRun {
    events: u64,
    per_sec: f64,
    /// Process CPU time (every thread, user and system) per event: steadier than the rate
    /// on a machine whose neighbours come and go.
    cpu_us_per_event: f64,
    /// That CPU time split by who spent it (see `ThreadCpu`).
    cpu_split: ThreadCpu,
    p50_ms: f64,
    p99_ms: f64,
}

async fn append_run(
    dir: &Path,
    appenders: usize,
    seconds: f64,
) -> Result<(Ledger, AppendRun), Failure> {
    Ledger::init(dir)?;
    let ledger = Ledger::open(dir, log::Config::default())?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let threads_started = Threads::now();
    let mut tasks = Vec::new();
    for t in 0..appenders {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench-{t}");
            let mut expected = ExpectedVersion::NoStream;
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let ev = NewEvent {
                    event_type: "BenchEventRecorded".into(),
                    schema_version: 1,
                    actor: "system:bench".into(),
                    payload: payload(t, i),
                };
                let t0 = Instant::now();
                let a = ledger.append(&stream, expected, vec![ev]).await?;
                latencies.push(t0.elapsed());
                expected = ExpectedVersion::Exact(a.events[0].stream_version);
                i += 1;
            }
            Ok::<_, log::AppendError>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_started;
    let per_event = 1e6 / all.len().max(1) as f64;
    let cpu_split = Threads::now()
        .since(&threads_started, cpu)
        .scaled(per_event);
    all.sort();
    let run = AppendRun {
        events: all.len() as u64,
        per_sec: all.len() as f64 / elapsed,
        cpu_us_per_event: cpu * per_event,
        cpu_split,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    };
    Ok((ledger, run))
}

/// CPU time this process has used so far, over all its threads.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU time (seconds, then µs per event) by the ledger's thread that spent it: which stage
/// of the pipeline a run is short of is what the rate alone cannot say.
#[derive(Default, Clone, Copy)]
struct ThreadCpu {
    /// Sequencing: versions, canonical bytes, chain, half of each group's signatures.
    writer: f64,
    /// Writing and committing the redb transactions, and answering the appends.
    committer: f64,
    /// The writer's signing helper (the other half of each large group) and the thread that
    /// draws nonces ahead.
    signers: f64,
    /// The appending tasks: building payloads, canonical JSON, sending and waking.
    appenders: f64,
    /// Everything else, and threads that ended during the run.
    rest: f64,
}

/// Every live thread's user and system time from `/proc/self/task`, by thread id, with the
/// field of `ThreadCpu` its name puts it in; empty where that is unreadable.
struct Threads(std::collections::HashMap<String, (usize, f64)>);

impl Threads {
    fn now() -> Threads {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            t if t > 0 => t as f64,
            _ => 100.0,
        };
        let mut threads = std::collections::HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Threads(threads);
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // `pid (name) state ...`: the name may hold spaces, so split after its `)`.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            let time = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            let (Some(user), Some(system)) = (time(11), time(12)) else {
                continue;
            };
            // Thread names are cut to 15 bytes.
            let role = match name {
                "ledger-writer" => 0,
                n if n.starts_with("ledger-committe") => 1,
                "ledger-signer" | "ledger-nonces" => 2,
                n if n.starts_with("tokio-r") => 3,
                _ => continue,
            };
            let id = task.file_name().to_string_lossy().into_owned();
            threads.insert(id, (role, (user + system) / ticks));
        }
        Threads(threads)
    }

    /// The time each thread alive now spent since `start` (a thread's first sight counts
    /// from zero), by role, with `rest` what the process total leaves over: a thread of an
    /// earlier run that ends meanwhile takes nothing away.
    fn since(&self, start: &Threads, process_total: f64) -> ThreadCpu {
        let mut by_role = [0.0f64; 4];
        for (id, (role, seconds)) in &self.0 {
            let before = start.0.get(id).map_or(0.0, |(_, s)| *s);
            by_role[*role] += (seconds - before).max(0.0);
        }
        let [writer, committer, signers, appenders] = by_role;
        ThreadCpu {
            writer,
            committer,
            signers,
            appenders,
            rest: (process_total - by_role.iter().sum::<f64>()).max(0.0),
        }
    }
}

impl ThreadCpu {
    fn scaled(&self, by: f64) -> ThreadCpu {
        ThreadCpu {
            writer: self.writer * by,
            committer: self.committer * by,
            signers: self.signers * by,
            appenders: self.appenders * by,
            rest: self.rest * by,
        }
    }
}

/// Raw redb: the same record bytes, no hashing or signing, `per_txn` per durable commit.
fn raw_redb(dir: &Path, records: &[Vec<u8>], per_txn: usize) -> Result<f64, Failure> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raw");
    let db = redb::Database::create(dir.join(format!("raw-{per_txn}.redb")))?;
    let started = Instant::now();
    for (c, chunk) in records.chunks(per_txn).enumerate() {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut t = txn.open_table(T)?;
            for (i, r) in chunk.iter().enumerate() {
                t.insert((c * per_txn + i) as u64, r.as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Runs `step` (which returns how many items it did) on every core for `budget`: items/s.
fn rate_on_all_cores<F: Fn() -> u64 + Sync>(budget: Duration, step: F) -> f64 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let run = || {
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < budget {
            n += step();
        }
        n
    };
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores).map(|_| s.spawn(run)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

/// Per second on every core: lone ed25519 signatures, the writer's grouped signatures
/// (64 per group) and batch verification (batches of 1024).
fn raw_ed25519(seconds: f64) -> (f64, f64, f64) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let hashes: Vec<log::envelope::Digest> = (0..1024u32)
        .map(|i| log::envelope::Digest(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let messages: Vec<[u8; 50]> = hashes.iter().map(log::envelope::signing_message).collect();
    let signatures: Vec<Signature> = messages.iter().map(|m| key.sign(m)).collect();
    let budget = Duration::from_secs_f64(seconds);
    let sign_rate = rate_on_all_cores(budget, || {
        for m in &messages[..64] {
            std::hint::black_box(key.sign(m));
        }
        64
    });
    let ledger_key = log::keys::LedgerKey::from_seed([7; 32]);
    let group_rate = rate_on_all_cores(budget, || {
        std::hint::black_box(ledger_key.sign_events(hashes[..64].iter(), None));
        64
    });
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let keys = vec![key.verifying_key(); messages.len()];
    let verify_rate = rate_on_all_cores(budget, || {
        match ed25519_dalek::verify_batch(&refs, &signatures, &keys) {
            Ok(()) => refs.len() as u64,
            Err(_) => 0,
        }
    });
    (sign_rate, group_rate, verify_rate)
}

pub async fn ledger(seconds: f64, as_json: bool) -> Result<(), Failure> {
    let scratch = Scratch::new("ledger")?;
    let mut figures = Figures::new("ledger", &format!("{seconds} s per run"), as_json);
    let mut runs = Vec::new();
    let mut last = None;
    for appenders in [1usize, 16, 256] {
        let dir = scratch.0.join(format!("append-{appenders}"));
        let (ledger, run) = append_run(&dir, appenders, seconds).await?;
        figures.say(
            &format!("append_{appenders}_events_per_s"),
            run.per_sec,
            format!(
                "append, {appenders:>3} appenders: {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms  cpu {:.1} us/event  ({} events)",
                run.per_sec, run.p50_ms, run.p99_ms, run.cpu_us_per_event, run.events
            ),
        );
        figures.say(
            &format!("append_{appenders}_cpu_us_per_event"),
            run.cpu_us_per_event,
            String::new(),
        );
        let split = run.cpu_split;
        figures.say(
            &format!("append_{appenders}_cpu_us_writer"),
            split.writer,
            format!(
                "            cpu by thread: writer {:.1}  committer {:.1}  signing helper and nonces {:.1}  appenders {:.1}  rest {:.1} us/event",
                split.writer, split.committer, split.signers, split.appenders, split.rest
            ),
        );
        for (name, value) in [
            ("committer", split.committer),
            ("signers", split.signers),
            ("appenders", split.appenders),
            ("rest", split.rest),
        ] {
            figures.say(
                &format!("append_{appenders}_cpu_us_{name}"),
                value,
                String::new(),
            );
        }
        figures.say(
            &format!("append_{appenders}_p50_ms"),
            run.p50_ms,
            String::new(),
        );
        figures.say(
            &format!("append_{appenders}_p99_ms"),
            run.p99_ms,
            String::new(),
        );
        runs.push(run);
        last = Some(ledger);
    }
    let ledger = last.ok_or("no run")?;
    let snap = ledger.snapshot()?;
    let size = snap.size()?;

    let t0 = Instant::now();
    let report = log::verify::verify(&snap, &log::verify::Options::default(), &mut |_, _| {})?;
    let verify_rate = size as f64 / t0.elapsed().as_secs_f64();
    if let Some(f) = report.failure {
        return Err(format!(
            "the benchmark's own log failed verification at {}: {}",
            f.position, f.reason
        )
        .into());
    }
    figures.say(
        "verify_events_per_s",
        verify_rate,
        format!("verify:                 {verify_rate:>9.0} events/s ({size} events)"),
    );

    let t0 = Instant::now();
    let mut from = 0;
    while from < size {
        from += snap.read_all(from, 1000)?.len() as u64;
    }
    let read_rate = size as f64 / t0.elapsed().as_secs_f64();
    figures.say(
        "read_events_per_s",
        read_rate,
        format!("read (decoded):         {read_rate:>9.0} events/s"),
    );

    let records: Vec<Vec<u8>> = snap.records(0, size)?.into_iter().map(|(_, r)| r).collect();
    let raw_dir = scratch.0.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let raw_batch = raw_redb(&raw_dir, &records, 1000)?;
    let fsync_rate = raw_redb(&raw_dir, &records[..records.len().min(300)], 1)?;
    let (sign_rate, group_sign_rate, batch_verify_rate) = raw_ed25519(seconds.min(2.0));
    let top = &runs[2];
    figures.say(
        "ceiling_redb_1000_per_txn_events_per_s",
        raw_batch,
        format!(
            "ceiling (a) raw redb, same bytes, 1000/txn: {raw_batch:>9.0} events/s   append@256 is {:.2}x of it",
            top.per_sec / raw_batch
        ),
    );
    figures.say(
        "ceiling_redb_1_per_txn_commits_per_s",
        fsync_rate,
        format!(
            "ceiling     raw redb, 1 event per durable commit: {fsync_rate:>7.0} commits/s   append@1 is {:.2}x of it",
            runs[0].per_sec / fsync_rate
        ),
    );
    figures.say(
        "ceiling_ed25519_sign_per_s",
        sign_rate,
        format!(
            "ceiling (b) ed25519 sign, all cores: {sign_rate:>9.0} /s   append@256 is {:.2}x of it",
            top.per_sec / sign_rate
        ),
    );
    figures.say(
        "ceiling_ed25519_group_sign_per_s",
        group_sign_rate,
        format!(
            "ceiling (b) ed25519 sign, 64 per group (shared inversion), all cores: {group_sign_rate:>9.0} /s   append@256 is {:.2}x of it",
            top.per_sec / group_sign_rate
        ),
    );
    figures.say(
        "ceiling_ed25519_batch_verify_per_s",
        batch_verify_rate,
        format!(
            "ceiling (b) ed25519 batch verify, all cores: {batch_verify_rate:>9.0} /s   verify is {:.2}x of it",
            verify_rate / batch_verify_rate
        ),
    );
    figures.say(
        "ratio_append_256_to_redb",
        top.per_sec / raw_batch,
        String::new(),
    );
    figures.say(
        "ratio_append_1_to_fsync",
        runs[0].per_sec / fsync_rate,
        String::new(),
    );
    figures.say(
        "ratio_append_256_to_sign",
        top.per_sec / sign_rate,
        String::new(),
    );
    figures.say(
        "ratio_verify_to_batch_verify",
        verify_rate / batch_verify_rate,
        String::new(),
    );
    figures.finish();
    Ok(())
}

/// Run `i` of a bench log, on deployment `deployment` (an id from 1 up): `requests` requests
/// of `rows_each` rows, with latencies spread over three orders of magnitude.
pub(crate) fn run(i: u64, deployment: u64, requests: u64, rows_each: u64) -> InferenceRunRecorded {
    InferenceRunRecorded {
        run_id: Uuid::from_u128(u128::from(i) << 1),
        deployment_id: Uuid::from_u128(u128::from(deployment)),
        variant: "primary".into(),
        shadow: false,
        model_id: Uuid::from_u128(9),
        version: 1,
        model_blob: "ab".repeat(32),
        image_id: "onnx-scorer".into(),
        image_version: "0.1.0".into(),
        session: Box::new(RunSession::of(
            &ImageVersionSpec::default(),
            "1.32.0",
            Some("x86_64+avx2+fma".into()),
        )),
        row_count: requests * rows_each,
        input_blob: "cd".repeat(32),
        output_blob: "ef".repeat(32),
        requests: (0..requests)
            .map(|r| {
                let k = i * requests + r;
                RunRequest {
                    request_id: Uuid::from_u128((u128::from(k) << 8) | 1),
                    row_offset: r * rows_each,
                    row_count: rows_each,
                    caller: "anonymous".into(),
                    queue_wait_us: k.wrapping_mul(2_654_435_761) % 5_000,
                    latency_us: 300 + k.wrapping_mul(40_503) % 250_000,
                    draw: None,
                }
            })
            .collect(),
        job: None,
        profile: None,
    }
}

/// Appends events `0..total` made by `event`, `batch` at a time: each batch's events go to
/// their streams in one append per stream, the streams' appends concurrently, so the writer
/// commits them as groups.
pub(crate) async fn append_all(
    ledger: &Ledger,
    total: u64,
    batch: u64,
    event: impl Fn(u64) -> (String, NewEvent),
) -> Result<(), Failure> {
    let bar = crate::progress::bar(total, "building the log");
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        let mut by_stream: std::collections::BTreeMap<String, Vec<NewEvent>> = Default::default();
        for (stream, e) in (i..i + n).map(&event) {
            by_stream.entry(stream).or_default().push(e);
        }
        let appends = by_stream
            .into_iter()
            .map(|(stream, evs)| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.append(&stream, ExpectedVersion::Any, evs).await })
            })
            .collect::<Vec<_>>();
        for a in appends {
            a.await??;
        }
        i += n;
        bar.set_position(i);
    }
    bar.finish_and_clear();
    Ok(())
}
