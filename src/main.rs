//! The `provenant` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use provenant::api::command::{apply_bootstrap, bootstrap_admin};
use provenant::api::{self, AppState};
use provenant::blobs::BlobStore;
use provenant::domain::job::FileFormat;
use provenant::log::{self, ExpectedVersion, Ledger, NewEvent, keys};
use provenant::projections::registry::RegistryProjection;
use serde_json::json;

/// glibc's allocator spent a fifth of the scorer's CPU under load; mimalloc's per-thread
/// pages take that to a few percent. It is built without transparent huge pages (Cargo
/// feature `no_thp`): with them, memory it returns to the OS comes back as a fresh 2 MiB page
/// zeroed by the kernel, which cost the ledger writer and committer about 7% of their CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "provenant",
    version,
    about = "MLOps registry and scorer on a signed event ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataDir {
    /// Data directory (ledger, keys, blobs).
    #[arg(
        long = "data",
        env = "PROVENANT_DATA",
        default_value = "provenant-data"
    )]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir with a new ledger key, the genesis event and the first admin,
    /// whose API token is printed once.
    Init {
        #[command(flatten)]
        data: DataDir,
        /// The first admin's username.
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// Serve the HTTP API (initializing the data dir on first start).
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address to listen on.
        #[arg(long, env = "PROVENANT_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        /// ONNX Runtime shared library (default: ORT_DYLIB_PATH, then the repo's .ort/lib/).
        #[arg(long, env = "PROVENANT_ORT_LIB")]
        ort_lib: Option<PathBuf>,
        /// Runtime catalog applied at start (default: the one shipped, config/bootstrap.yaml).
        #[arg(long, env = "PROVENANT_BOOTSTRAP")]
        bootstrap: Option<PathBuf>,
        /// Do not seed the demo project into a new data dir.
        #[arg(long)]
        no_demo: bool,
        /// Largest artifact upload, in bytes.
        #[arg(long, env = "PROVENANT_MAX_ARTIFACT_BYTES", default_value_t = provenant::blobs::DEFAULT_MAX_BYTES)]
        max_artifact_bytes: u64,
    },
    /// Re-check every hash, signature, stream version, Merkle node and checkpoint.
    /// Exit 0: intact; 1: tampered; 2: usage or I/O error.
    Verify {
        #[command(flatten)]
        data: DataDir,
        /// Check each signature with verify_strict instead of batch verification.
        #[arg(long)]
        strict: bool,
        /// Hex public key the genesis event must carry.
        #[arg(long)]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the registry from the log, up to a position or a time, and print it as JSON.
    Replay {
        #[command(flatten)]
        data: DataDir,
        /// Stop after this position (included).
        #[arg(long, conflicts_with = "at")]
        to: Option<u64>,
        /// Stop after the last event recorded at or before this RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
        /// Verify the whole log first (hashes, signatures, Merkle tree, checkpoints); exit 1
        /// without replaying if it is not intact.
        #[arg(long)]
        verify: bool,
    },
    /// Write an audit bundle: the selected events, each with an inclusion proof against the
    /// current signed tree head, the keys, and a README; checked offline by `verify-bundle`.
    ExportBundle {
        #[command(flatten)]
        data: DataDir,
        /// The bundle file to write (a zip).
        #[arg(long)]
        out: PathBuf,
        /// Only this project's events and its deployments' streams.
        #[arg(long, conflicts_with_all = ["deployment", "model"])]
        project: Option<uuid::Uuid>,
        /// Only this deployment's stream (its states and inference runs).
        #[arg(long, conflicts_with = "model")]
        deployment: Option<uuid::Uuid>,
        /// Only this model's events, its versions' experiments and its deployments.
        #[arg(long)]
        model: Option<uuid::Uuid>,
        /// With --model: one version.
        #[arg(long, requires = "model")]
        version: Option<u32>,
        /// The first position or RFC 3339 time (included).
        #[arg(long)]
        from: Option<String>,
        /// The last position or RFC 3339 time (included).
        #[arg(long)]
        to: Option<String>,
        /// The tree size of a previously exported head: adds a consistency proof from it.
        #[arg(long)]
        previous_size: Option<u64>,
    },
    /// Write a model version's report (HTML): lineage, history, deployments, scoring volume,
    /// reproduction spot checks and the ledger's verification status (the server stopped).
    Report {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        model: uuid::Uuid,
        #[arg(long)]
        version: u32,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// ONNX Runtime shared library (for the reproduction spot checks).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Export the audit trail (one row per event) or predictions (one row per scored
    /// request) as CSV or Parquet, by the file's extension.
    ExportTable {
        #[command(flatten)]
        data: DataDir,
        /// `events` or `predictions`.
        #[arg(long, value_parser = ["events", "predictions"])]
        table: String,
        /// The file to write: `.csv` or `.parquet`.
        #[arg(long)]
        out: PathBuf,
        /// Only this actor's events (for predictions: this caller's requests).
        #[arg(long)]
        actor: Option<String>,
        /// Only events of this entity (its stream, or a payload field naming it); for
        /// predictions, of this deployment or model.
        #[arg(long)]
        entity: Option<uuid::Uuid>,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        event_types: Vec<String>,
        /// The first position or RFC 3339 time (included).
        #[arg(long)]
        from: Option<String>,
        /// The last position or RFC 3339 time (included).
        #[arg(long)]
        to: Option<String>,
    },
    /// Check an audit bundle offline, with no data dir. Exit 0: intact; 1: not intact; 2:
    /// unreadable.
    VerifyBundle {
        file: PathBuf,
        /// Hex public key the ledger's first key must be (published out of band).
        #[arg(long)]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the ledger signing key; the rotation is an event signed by the old key.
    RotateKey(DataDir),
    /// Re-run a recorded prediction with the settings its run recorded and compare outputs,
    /// from the data dir (with the server stopped). Exit 0: identical; 1: different or not
    /// reproducible; 2: usage or I/O error.
    Reproduce {
        #[command(flatten)]
        data: DataDir,
        /// A request id (`Provenant-Request-Id`) or an inference run's event position.
        #[arg(required_unless_present = "deployment", conflicts_with = "deployment")]
        target: Option<String>,
        /// Reproduce every run of this deployment (within --from/--to), in parallel.
        #[arg(long)]
        deployment: Option<uuid::Uuid>,
        /// With --deployment: the first position or RFC 3339 time (included).
        #[arg(long, requires = "deployment")]
        from: Option<String>,
        /// With --deployment: the last position or RFC 3339 time (included).
        #[arg(long, requires = "deployment")]
        to: Option<String>,
        /// The run's input table as JSON, when the data dir did not keep it.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Settings to change on purpose, as JSON (`{"intra_op_threads": 2}`): a what-if.
        #[arg(long)]
        overrides: Option<String>,
        /// ONNX Runtime shared library (default: ORT_DYLIB_PATH, then the repo's .ort/lib/).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Score a CSV or Parquet file through a deployment as a batch job, from the data dir
    /// (with the server stopped): every run is recorded as online scoring's are, and the
    /// output has one row per input row. Exit 0: completed; 1: failed or cancelled.
    Score {
        #[command(flatten)]
        data: DataDir,
        /// The Healthy deployment whose model scores the file.
        #[arg(long)]
        deployment: uuid::Uuid,
        /// The file to score (`.csv` or `.parquet`).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the scores (`.csv` or `.parquet`).
        #[arg(long)]
        output: PathBuf,
        /// The user the job is recorded for: an editor of the deployment's project.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Rows per recorded run.
        #[arg(long, default_value_t = provenant::api::jobs::DEFAULT_BATCH_ROWS)]
        batch_rows: u32,
        /// Refused rows tolerated before the job fails.
        #[arg(long, default_value_t = provenant::api::jobs::DEFAULT_MAX_FAILED_ROWS)]
        max_failed_rows: u64,
        /// ONNX Runtime shared library (default: ORT_DYLIB_PATH, then the repo's .ort/lib/).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Compare two CSV or Parquet files for data drift, column by column, and print the
    /// report as JSON: the tests the server runs on a deployment's inputs against its
    /// reference data. Exit 0: no dataset drift; 1: dataset drift.
    Drift {
        /// The reference data (`.csv` or `.parquet`).
        #[arg(long)]
        reference: PathBuf,
        /// The data to judge (`.csv` or `.parquet`).
        #[arg(long)]
        current: PathBuf,
    },
    /// Benchmarks (release mode).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Appends from many tasks until killed, printing `ack <position> <hash>` per durable
    /// event (used by the crash-safety test).
    #[command(hide = true)]
    Torture {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, default_value_t = 32)]
        tasks: usize,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The scorer over loopback HTTP with and without recording, beside raw ONNX Runtime.
    Score {
        /// Seconds per load measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replaying a log of many events into the registry, beside reading and decoding them.
    Replay {
        /// Events in the log.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Filtered audit-trail pages over GraphQL on a log of a million events, beside an
    /// unfiltered page and a scan.
    Graphql {
        /// Events in the log.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Queries per filter.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// An A/B split and a champion with a challenger beside a single deployment of the
    /// same model, and updates in place under load.
    Lifecycle {
        /// Seconds per load measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Updates in place to time.
        #[arg(long, default_value_t = 20)]
        updates: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A batch job, Parquet to Parquet, beside raw ONNX Runtime on the same rows.
    Batch {
        /// Rows in the file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Recomputing service-level monitoring from a log of scored runs, beside the registry.
    Monitoring {
        /// Scored rows in the log (runs of 64).
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Drives any HTTP endpoint with the scorer bench's load generator: POSTs a JSON body at
    /// each concurrency, so another server can be measured the same way as ours.
    Http {
        /// The endpoint, `http://HOST:PORT/PATH`.
        #[arg(long)]
        url: String,
        /// The file whose bytes are POSTed as the JSON body.
        #[arg(long)]
        body: PathBuf,
        /// Concurrencies to measure, in order.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
        concurrency: Vec<usize>,
        /// Seconds per load measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Rows in the body, to print rows/s beside requests/s.
        #[arg(long, default_value_t = 1)]
        rows: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Ledger append, verify and read throughput against raw redb and ed25519 ceilings.
    Ledger {
        /// Seconds per append measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Init { data, admin } => {
            let key = Ledger::init(&data.dir)?;
            println!("initialized ledger in {}", data.dir.display());
            println!("ledger key id {} public key {}", key.id, key.public_hex());
            let ledger = Ledger::open(&data.dir, log::Config::default())?;
            let registry = RegistryProjection::start(&ledger).await?;
            print_admin_token(&admin, &bootstrap_admin(&ledger, &registry, &admin).await?);
        }
        Command::Serve {
            data,
            addr,
            ort_lib,
            bootstrap,
            no_demo,
            max_artifact_bytes,
        } => {
            let options = ServeOptions {
                ort_lib,
                bootstrap,
                demo: !no_demo,
                max_artifact_bytes,
            };
            serve(data, addr, options).await?
        }
        Command::Verify {
            data,
            strict,
            key,
            json,
        } => return verify(data, strict, key, json),
        Command::RotateKey(d) => {
            let ledger = Ledger::open(&d.dir, log::Config::default())?;
            let (info, appended) = ledger.rotate_key("system:cli").await?;
            println!(
                "rotated to key {} ({}) at position {}",
                info.key_id,
                info.public_key,
                appended.events.first().map_or(0, |e| e.position)
            );
        }
        Command::Replay {
            data,
            to,
            at,
            verify,
        } => return replay(data, to, at, verify),
        Command::ExportBundle {
            data,
            out,
            project,
            deployment,
            model,
            version,
            from,
            to,
            previous_size,
        } => {
            use provenant::audit::Subject;
            let subject = match (project, deployment, model) {
                (Some(p), _, _) => Subject::Project(p),
                (_, Some(d), _) => Subject::Deployment(d),
                (_, _, Some(model_id)) => Subject::Model { model_id, version },
                _ => Subject::All,
            };
            export_bundle(data, out, subject, from, to, previous_size)?;
        }
        Command::Report {
            data,
            model,
            version,
            out,
            ort_lib,
        } => {
            let state = offline_state(&data, ort_lib).await?;
            let bar = provenant::progress::bar(0, "report");
            let shown = bar.clone();
            let html = provenant::report::model_version(
                &state,
                model,
                version,
                Arc::new(move |step: &str, done, total| {
                    shown.set_message(step.to_string());
                    shown.set_length(total);
                    shown.set_position(done);
                }),
            )
            .await
            .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            std::fs::write(&out, html)?;
            eprintln!("wrote {}", out.display());
        }
        Command::ExportTable {
            data,
            table,
            out,
            actor,
            entity,
            event_types,
            from,
            to,
        } => {
            use provenant::projections::replay::Until;
            let bound = |b: Option<String>| Until::bound(b.as_deref());
            let filter = provenant::export::Filter {
                actor,
                entity,
                event_types,
                from: bound(from)?,
                to: bound(to)?,
            };
            let snap = log::read_only(&data.dir)?;
            let bar = provenant::progress::bar(snap.size()?, "reading");
            let mut tick = |done, _| bar.set_position(done);
            let mut df = match table.as_str() {
                "events" => provenant::export::events_table(&snap, &filter, &mut tick)?,
                _ => provenant::export::predictions_table(&snap, &filter, &mut tick)?,
            };
            bar.finish_and_clear();
            provenant::export::write(&mut df, &out)?;
            eprintln!("wrote {} rows of {table} to {}", df.height(), out.display());
        }
        Command::VerifyBundle { file, key, json } => return verify_bundle(&file, key, json),
        Command::Reproduce {
            data,
            target,
            deployment,
            from,
            to,
            input,
            overrides,
            ort_lib,
        } => {
            let state = offline_state(&data, ort_lib).await?;
            return match (target, deployment) {
                (Some(target), _) => reproduce(&state, &target, input, overrides).await,
                (None, Some(d)) => reproduce_range(&state, d, from, to).await,
                (None, None) => Err("name a request, a run position or --deployment".into()),
            };
        }
        Command::Score {
            data,
            deployment,
            input,
            output,
            user,
            batch_rows,
            max_failed_rows,
            ort_lib,
        } => {
            let state = offline_state(&data, ort_lib).await?;
            let options = provenant::api::jobs::JobOptions {
                input_format: Some(file_format(&input)?),
                output_format: Some(file_format(&output)?),
                batch_rows: Some(batch_rows),
                max_failed_rows: Some(max_failed_rows),
            };
            return score_file(&state, deployment, &input, &output, &user, options).await;
        }
        Command::Drift { reference, current } => {
            let read = |path: &std::path::Path| -> Result<_, Failure> {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((bytes, file_format(path)?))
            };
            let (profiles, report) =
                provenant::drift::files::compare_files(read(&reference)?, read(&current)?)
                    .map_err(|e| e.to_string())?;
            let out = serde_json::json!({"reference": profiles, "drift": report});
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(if report.dataset_drift {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Bench {
            what:
                BenchWhat::Http {
                    url,
                    body,
                    concurrency,
                    seconds,
                    rows,
                    json,
                },
        } => {
            let body = std::fs::read(&body).map_err(|e| format!("{}: {e}", body.display()))?;
            provenant::bench::http(&url, body, &concurrency, seconds, rows, json).await?;
        }
        Command::Bench {
            what: BenchWhat::Ledger { seconds, json },
        } => {
            provenant::bench::ledger(seconds, json).await?;
        }
        Command::Bench {
            what:
                BenchWhat::Lifecycle {
                    seconds,
                    updates,
                    json,
                },
        } => {
            provenant::bench::lifecycle(seconds, updates, json).await?;
        }
        Command::Bench {
            what: BenchWhat::Batch { rows, json },
        } => {
            provenant::bench::batch(rows, json).await?;
        }
        Command::Bench {
            what: BenchWhat::Score { seconds, json },
        } => {
            provenant::bench::score(seconds, json).await?;
        }
        Command::Bench {
            what:
                BenchWhat::Graphql {
                    events,
                    queries,
                    json,
                },
        } => {
            provenant::bench::graphql(events, queries, json).await?;
        }
        Command::Bench {
            what: BenchWhat::Monitoring { rows, json },
        } => {
            provenant::bench::monitoring(rows, json).await?;
        }
        Command::Bench {
            what: BenchWhat::Replay { events, json },
        } => {
            provenant::bench::replay(events, json).await?;
        }
        Command::Torture { data, tasks } => torture(data, tasks).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_admin_token(admin: &str, token: &str) {
    println!("first admin {admin:?} created; its API token (shown only now):");
    println!("{token}");
}

struct ServeOptions {
    ort_lib: Option<PathBuf>,
    bootstrap: Option<PathBuf>,
    demo: bool,
    max_artifact_bytes: u64,
}

async fn serve(data: DataDir, addr: String, options: ServeOptions) -> Result<(), Failure> {
    let ServeOptions {
        ort_lib,
        bootstrap,
        demo,
        max_artifact_bytes,
    } = options;
    // A bad bootstrap file stops the start before anything is written.
    let (catalog, catalog_hash) = provenant::runtime::bootstrap::load(bootstrap.as_deref())?;
    let onnx = provenant::runtime::onnx::load(ort_lib.as_deref())?;
    if !data.dir.join(log::DB_FILE).exists() {
        let key = Ledger::init(&data.dir)?;
        eprintln!(
            "initialized a new ledger in {} (key id {})",
            data.dir.display(),
            key.id
        );
    }
    let ledger = Ledger::open(&data.dir, log::Config::default())?;
    let blobs = BlobStore::new(&data.dir.join("blobs"), max_artifact_bytes);
    let state = AppState::start(ledger.clone(), blobs, onnx).await?;
    let changes = apply_bootstrap(&state, &catalog, &catalog_hash).await?;
    eprintln!("runtime bootstrap applied ({changes} changes)");
    let relaunched = state.relaunch().await?;
    // Retention: apply every deployment's policy now and then hourly.
    let retention = state.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = retention.purge_all().await {
                eprintln!("retention: {e}");
            }
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    });
    if relaunched > 0 {
        eprintln!("{relaunched} deployments loaded again");
    }
    // Alerts: every policy evaluated over its trailing window once a minute.
    state.spawn_alert_evaluator(std::time::Duration::from_secs(60));
    let mut demo_deployment = None;
    let fresh = state.registry.read().users.is_empty();
    if fresh {
        let token = bootstrap_admin(&ledger, &state.registry, "admin").await?;
        print_admin_token("admin", &token);
        let admin = state.registry.read().usernames.get("admin").copied();
        if let (true, Some(admin)) = (demo, admin) {
            let (model, deployment) = provenant::demo::seed(&state, admin).await?;
            println!(
                "demo: project \"Demo\" with registered model wine-classifier ({model}), deployed as {deployment}"
            );
            demo_deployment = Some(deployment);
        }
    }
    eprintln!(
        "ONNX Runtime {} from {}",
        onnx.version,
        onnx.library.display()
    );
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let head = ledger.head();
    println!(
        "provenant listening on http://{local} (data {}, {} events)",
        data.dir.display(),
        head.size
    );
    println!("ledger head: http://{local}/api/v1/ledger/head");
    println!("GraphQL (GraphiQL in a browser): http://{local}/graphql");
    if let Some(d) = demo_deployment {
        println!("demo scoring URL: http://{local}/{d}/model/score");
        println!(
            "try: curl -s http://{local}/{d}/model/sample_request | curl -s -H 'Content-Type: application/json' -d @- http://{local}/{d}/model/score"
        );
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    api::serve(listener, state, shutdown).await?;
    Ok(())
}

/// The `--key` an auditor pins, parsed.
fn trusted(key: Option<String>) -> Result<Option<ed25519_dalek::VerifyingKey>, Failure> {
    key.map(|k| {
        keys::parse_public(&k)
            .ok_or_else(|| "--key is not a 64-hex-digit Ed25519 public key".into())
    })
    .transpose()
}

fn verify(
    data: DataDir,
    strict: bool,
    key: Option<String>,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let trusted_key = trusted(key)?;
    let snap = log::read_only(&data.dir)?;
    let total = snap.size()?;
    let bar = provenant::progress::bar(total, "verifying");
    let started = std::time::Instant::now();
    let report = log::verify::verify(
        &snap,
        &log::verify::Options {
            strict,
            trusted_key,
        },
        &mut |done, _| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if as_json {
        println!("{}", json!({"report": report, "seconds": secs}));
    } else if let Some(f) = &report.failure {
        println!("TAMPERED: first bad position {}: {}", f.position, f.reason);
    } else {
        println!(
            "intact: {} events, {} streams, {} keys, {} signed checkpoints checked, root {} ({:.0} events/s)",
            report.events,
            report.streams,
            report.keys,
            report.checkpoints,
            report.root,
            report.events as f64 / secs.max(1e-9)
        );
    }
    Ok(if report.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn export_bundle(
    data: DataDir,
    out: PathBuf,
    subject: provenant::audit::Subject,
    from: Option<String>,
    to: Option<String>,
    previous: Option<u64>,
) -> Result<(), Failure> {
    use provenant::projections::replay::{Until, replay};
    let bound = |b: Option<String>| Until::bound(b.as_deref());
    let (from, to) = (bound(from)?, bound(to)?);
    let snap = log::read_only(&data.dir)?;
    let started = std::time::Instant::now();
    let registry = replay(&snap, Until::End, &mut |_, _| {})?;
    let bar = provenant::progress::bar(0, "exporting");
    let selected = provenant::audit::select(&snap, &registry, subject, from, to)?;
    let manifest =
        provenant::audit::write_bundle(&snap, selected, previous, &out, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {}: {} events of {} against tree size {} ({:.2} s)",
        out.display(),
        manifest.events,
        manifest.selection,
        manifest.tree_size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn verify_bundle(
    file: &std::path::Path,
    key: Option<String>,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let trusted = trusted(key)?;
    let bar = provenant::progress::bar(0, "verifying");
    let report = provenant::log::bundle::verify(
        std::io::BufReader::new(std::fs::File::open(file)?),
        trusted.as_ref(),
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )?;
    bar.finish_and_clear();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(f) = &report.failure {
        println!("NOT INTACT: {f}");
    } else {
        println!(
            "intact: {} events of {} proven against the signed tree head of size {} (root {}), {} keys{}",
            report.events,
            report.selection,
            report.tree_size,
            report.root,
            report.keys,
            report.previous_tree_size.map_or(String::new(), |m| format!(
                ", consistent with the earlier head of size {m}"
            ))
        );
    }
    Ok(if report.failure.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn replay(
    data: DataDir,
    to: Option<u64>,
    at: Option<String>,
    check: bool,
) -> Result<ExitCode, Failure> {
    use provenant::projections::replay::{Until, replay};
    let until = match (to, at) {
        (Some(p), _) => Until::Position(p),
        (None, Some(t)) => t.parse()?,
        (None, None) => Until::End,
    };
    let snap = log::read_only(&data.dir)?;
    let total = snap.size()?;
    if check {
        let bar = provenant::progress::bar(total, "verifying");
        let report = log::verify::verify(&snap, &Default::default(), &mut |done, _| {
            bar.set_position(done)
        })?;
        bar.finish_and_clear();
        if let Some(f) = &report.failure {
            eprintln!("TAMPERED: first bad position {}: {}", f.position, f.reason);
            return Ok(ExitCode::from(1));
        }
    }
    let bar = provenant::progress::bar(total, "replaying");
    let started = std::time::Instant::now();
    let registry = replay(&snap, until, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {} events in {secs:.2} s ({:.0} events/s)",
        registry.applied,
        registry.applied as f64 / secs.max(1e-9)
    );
    println!("{}", serde_json::to_string_pretty(&registry)?);
    Ok(ExitCode::SUCCESS)
}

/// The API's state over a data dir, for offline commands (the server must be stopped).
async fn offline_state(data: &DataDir, ort_lib: Option<PathBuf>) -> Result<AppState, Failure> {
    let onnx = provenant::runtime::onnx::load(ort_lib.as_deref())?;
    if !data.dir.join(log::DB_FILE).exists() {
        return Err(format!("no ledger in {}", data.dir.display()).into());
    }
    let ledger = Ledger::open(&data.dir, log::Config::default())?;
    let blobs = BlobStore::new(&data.dir.join("blobs"), provenant::blobs::DEFAULT_MAX_BYTES);
    Ok(AppState::start(ledger, blobs, onnx).await?)
}

async fn reproduce(
    state: &AppState,
    target: &str,
    input: Option<PathBuf>,
    overrides: Option<String>,
) -> Result<ExitCode, Failure> {
    use provenant::api::predictions::RunRef;
    let target: RunRef = target.parse()?;
    let input = match input {
        Some(path) => Some(
            serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| format!("{}: not a JSON table: {e}", path.display()))?,
        ),
        None => None,
    };
    let overrides = match overrides {
        Some(text) => serde_json::from_str(&text).map_err(|e| format!("--overrides: {e}"))?,
        None => Default::default(),
    };
    let outcome = state
        .reproduce(target, input, overrides, None)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(if outcome.verdict() == "identical" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn file_format(path: &std::path::Path) -> Result<FileFormat, Failure> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(FileFormat::Csv),
        Some("parquet" | "pq") => Ok(FileFormat::Parquet),
        _ => Err(format!("{}: name a .csv or .parquet file", path.display()).into()),
    }
}

async fn score_file(
    state: &AppState,
    deployment: uuid::Uuid,
    input: &std::path::Path,
    output: &std::path::Path,
    user: &str,
    options: provenant::api::jobs::JobOptions,
) -> Result<ExitCode, Failure> {
    let actor = state
        .registry
        .read()
        .usernames
        .get(user)
        .copied()
        .ok_or_else(|| format!("no user {user:?}"))?;
    let format = options.input_format.unwrap_or(FileFormat::Csv);
    let file = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    state.load_offline(deployment).await.map_err(|e| e.detail)?;
    let started = state
        .start_job(actor, deployment, file, format, &options)
        .await
        .map_err(|e| e.detail)?;
    let bar = provenant::progress::bar(started.rows(), "scoring");
    let job_id = started.job_id;
    let ended = state
        .run_job(started, &|done| bar.set_position(done))
        .await
        .map_err(|e| e.detail)?;
    bar.finish_and_clear();
    for e in ended.errors.iter().take(20) {
        eprintln!("row {}: {}", e.row, e.reason);
    }
    if let Some(bytes) = &ended.output {
        std::fs::write(output, bytes.as_slice())
            .map_err(|e| format!("{}: {e}", output.display()))?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "job_id": job_id,
            "outcome": ended.outcome,
            "scored_rows": ended.scored_rows,
            "failed_rows": ended.failed_rows,
            "detail": ended.detail,
            "output": ended.output.is_some().then(|| output.display().to_string()),
        }))?
    );
    Ok(match ended.outcome {
        provenant::domain::job::JobOutcome::Completed => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

async fn reproduce_range(
    state: &AppState,
    deployment: uuid::Uuid,
    from: Option<String>,
    to: Option<String>,
) -> Result<ExitCode, Failure> {
    use provenant::projections::replay::Until;
    let bound = |b: Option<String>| Until::bound(b.as_deref());
    let (from, to) = (bound(from)?, bound(to)?);
    let bar = provenant::progress::bar(0, "reproducing");
    let report = state
        .reproduce_range(deployment, from, to, &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "{} runs: {} identical, {} different, {} not reproducible",
        report.runs, report.identical, report.different, report.not_reproducible
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.identical == report.runs {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn torture(data: DataDir, tasks: usize) -> Result<(), Failure> {
    if !data.dir.join(log::DB_FILE).exists() {
        Ledger::init(&data.dir)?;
    }
    let ledger = Ledger::open(&data.dir, log::Config::default())?;
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let ledger = ledger.clone();
        let out = out.clone();
        handles.push(tokio::spawn(async move {
            let stream = format!("torture-{t}");
            let mut expected = match ledger.snapshot().and_then(|s| s.stream_head(&stream)) {
                Ok(Some(v)) => ExpectedVersion::Exact(v),
                _ => ExpectedVersion::NoStream,
            };
            for i in 0u64.. {
                let ev = NewEvent {
                    event_type: "TortureAppended".into(),
                    schema_version: 1,
                    actor: "system:torture".into(),
                    payload: json!({"task": t, "i": i}),
                };
                let Ok(a) = ledger.append(&stream, expected, vec![ev]).await else {
                    break;
                };
                let Ok(mut o) = out.lock() else { break };
                for e in &a.events {
                    let _ = writeln!(o, "ack {} {}", e.position, e.hash);
                    expected = ExpectedVersion::Exact(e.stream_version);
                }
                let _ = o.flush();
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    Ok(())
}
