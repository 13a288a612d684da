//! Golden logs: each folder holds a recorded ledger (`events.jsonl`, one envelope per line)
//! and the registry it must rebuild (`registry.json`); `scoring.rs` adds runs to reproduce. The test re-checks every hash and
//! signature from the rules alone, folds the events, and compares with the expected state.
//!
//! `PROVENANT_UPDATE_GOLDEN=record` records the story again (new ids, times and keys) and
//! rewrites both files; `PROVENANT_UPDATE_GOLDEN=projection` keeps the recorded log and
//! rewrites `registry.json` only, for when the projection gains a field. Review the diff of
//! `registry.json` before committing it.

mod governance;
mod scoring;

use std::path::Path;

use provenant::api::AppState;
use provenant::blobs::BlobStore;
use provenant::domain::event::{Artifact, GlobalRole, Parameters, ProjectRole, Stage, Subject};
use provenant::domain::{Command, upcast};
use provenant::log::envelope::{Digest, Event, EventJson, chain_hash, signing_message};
use provenant::log::{self, Ledger, keys};
use provenant::projections::registry::fold;
use provenant::runtime::{ingest, onnx};
use serde_json::Value;
use uuid::Uuid;

const STORY: &str = "replay-tests/registry-story";

fn load(dir: &str) -> Vec<Event> {
    let text = std::fs::read_to_string(Path::new(dir).join("events.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let j: EventJson = serde_json::from_str(line).unwrap();
            let signature: [u8; 64] = hex::decode(&j.signature).unwrap().try_into().unwrap();
            Event {
                unsigned: j.unsigned,
                hash: j.hash,
                signature,
            }
        })
        .collect()
}

/// Checks the chain and signatures as an outside verifier would: from the envelope rules,
/// the genesis event's public key and the rotations after it.
fn verify_chain(events: &[Event]) {
    let key =
        |e: &Event| keys::parse_public(e.unsigned.payload["public_key"].as_str().unwrap()).unwrap();
    let mut public = key(&events[0]);
    let mut prev = Digest::ZERO;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.unsigned.position, i as u64);
        assert_eq!(e.unsigned.prev_hash, prev, "position {i}: prev_hash");
        let hash = chain_hash(&prev, &e.unsigned.canonical_bytes().unwrap());
        assert_eq!(hash, e.hash, "position {i}: hash");
        assert!(
            keys::verify_strict(&public, &signing_message(&hash), &e.signature),
            "position {i}: signature"
        );
        // A rotation, signed by the old key, names the key of the events after it.
        if e.unsigned.event_type == log::ROTATION_EVENT {
            public = key(e);
        }
        prev = hash;
    }
}

#[test]
fn registry_story_replays_to_the_recorded_registry() {
    replay_story(STORY, record_story);
}

/// Records `story` again when asked (`PROVENANT_UPDATE_GOLDEN`), then replays it
/// (`replay_recorded`).
fn replay_story<F: std::future::Future<Output = ()>>(
    story: &str,
    record: impl FnOnce() -> F,
) -> (Vec<Event>, provenant::domain::Registry) {
    if std::env::var("PROVENANT_UPDATE_GOLDEN").as_deref() == Ok("record") {
        tokio::runtime::Runtime::new().unwrap().block_on(record());
    }
    replay_recorded(story)
}

/// Checks a recorded story's chain and signatures, each payload against the schema of the
/// version it was written with, folds it, and compares with its `registry.json`; answers the
/// events and the registry for further checks.
fn replay_recorded(story: &str) -> (Vec<Event>, provenant::domain::Registry) {
    let events = load(story);
    verify_chain(&events);
    validate_payloads(&events);
    let registry = fold(events.clone()).unwrap();
    if std::env::var("PROVENANT_UPDATE_GOLDEN").as_deref() == Ok("projection") {
        write_projection(story, &registry);
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{story}/registry.json")).unwrap())
            .unwrap();
    assert_eq!(serde_json::to_value(&registry).unwrap(), expected);
    (events, registry)
}

/// Every stored payload against `schemas/` for the version it was written with
/// (`schemas/v<N>/` for older ones); an older payload, upcast, against the current schema.
fn validate_payloads(events: &[Event]) {
    let check = |path: String, payload: &Value, position: u64| {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no {path}"));
        let schema: Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(payload)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{path} at {position}: {errors:?}");
    };
    for e in events {
        let u = &e.unsigned;
        let current = upcast::current(&u.event_type);
        if u.schema_version == current {
            check(
                format!("schemas/{}.json", u.event_type),
                &u.payload,
                u.position,
            );
            continue;
        }
        let stored = format!("schemas/v{}/{}.json", u.schema_version, u.event_type);
        check(stored, &u.payload, u.position);
        let upcast = upcast::upcast(&u.event_type, u.schema_version, u.payload.clone()).unwrap();
        check(
            format!("schemas/{}.json", u.event_type),
            &upcast,
            u.position,
        );
    }
}

/// A fresh data dir with the API's state over it, for recording a story.
async fn fresh_state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    Ledger::init(dir.path()).unwrap();
    let ledger = Ledger::open(dir.path(), log::Config::default()).unwrap();
    let blobs = BlobStore::new(
        &dir.path().join("blobs"),
        provenant::blobs::DEFAULT_MAX_BYTES,
    );
    let state = AppState::start(ledger, blobs, onnx::load(None).unwrap())
        .await
        .unwrap();
    (dir, state)
}

/// `fresh_state` with its first admin, `root`: (dir, state, admin's user id).
async fn with_admin() -> (tempfile::TempDir, AppState, Uuid) {
    let (dir, state) = fresh_state().await;
    provenant::api::command::bootstrap_admin(&state.ledger, &state.registry, "root")
        .await
        .unwrap();
    let admin = *state.registry.read().usernames.get("root").unwrap();
    (dir, state, admin)
}

/// Executes a registry command as `actor`, which must succeed.
async fn run(state: &AppState, actor: Uuid, c: Command) {
    state.execute(actor, c, |_| None::<()>).await.unwrap();
}

/// The story: an admin creates users, a project is shared, an experiment with an ONNX
/// artifact and one from an MLflow zip are imported, registered as v1 and v2, staged,
/// aliased and commented.
async fn record_story() {
    let (_dir, state, admin) = with_admin().await;
    let (ledger, blobs, onnx) = (state.ledger.clone(), state.blobs.clone(), state.onnx);
    let run = |actor: Uuid, c: Command| run(&state, actor, c);
    let user = |name: &str, roles: Vec<GlobalRole>| Command::CreateUser {
        user_id: Uuid::now_v7(),
        username: name.into(),
        display_name: name.into(),
        roles,
    };
    let mut ids = vec![];
    for (name, roles) in [
        ("alice", vec![]),
        ("bob", vec![]),
        ("audrey", vec![GlobalRole::Auditor]),
    ] {
        let c = user(name, roles);
        if let Command::CreateUser { user_id, .. } = &c {
            ids.push(*user_id);
        }
        run(admin, c).await;
    }
    let (alice, bob) = (ids[0], ids[1]);
    let project_id = Uuid::now_v7();
    run(
        alice,
        Command::CreateProject {
            project_id,
            name: "Wine quality".into(),
            description: "Cultivar classification".into(),
        },
    )
    .await;
    run(
        alice,
        Command::ShareProject {
            project_id,
            user_id: bob,
            role: ProjectRole::Editor,
        },
    )
    .await;

    let mut experiments = vec![];
    for (file, kind, name) in [
        ("wine_classifier.onnx", "onnx", "wine logistic"),
        ("wine_mlflow.zip", "python/mlflow", "wine mlflow"),
    ] {
        let info = blobs
            .put(&std::fs::read(format!("fixtures/models/{file}")).unwrap())
            .unwrap();
        let ingestion = ingest::ingest(onnx, &blobs, kind, &info.hash).unwrap();
        let artifact = Artifact {
            artifact_id: Uuid::now_v7(),
            artifact_type: kind.into(),
            file_name: file.into(),
            blob_hash: info.hash.to_hex(),
            size: info.size,
        };
        let experiment_id = Uuid::now_v7();
        run(
            bob,
            Command::ImportExperiment {
                experiment_id,
                project_id,
                display_name: name.into(),
                metadata: Default::default(),
                parameters: Parameters {
                    target_column: Some("cultivar".into()),
                    datasets: vec!["sklearn:wine".into()],
                },
                tags: vec!["wine".into()],
                artifacts: vec![(artifact, ingestion)],
            },
        )
        .await;
        experiments.push(experiment_id);
    }
    let model_id = Uuid::now_v7();
    run(
        bob,
        Command::CreateModel {
            model_id,
            project_id,
            name: "wine-classifier".into(),
            description: String::new(),
        },
    )
    .await;
    for (x, note) in experiments.iter().zip(["first model", "MLflow packaging"]) {
        run(
            bob,
            Command::RegisterVersion {
                model_id,
                experiment_id: *x,
                annotation: Some(note.into()),
            },
        )
        .await;
    }
    run(
        bob,
        Command::SetStage {
            model_id,
            version: 1,
            stage: Stage::Staging,
            annotation: "offline validation passed".into(),
        },
    )
    .await;
    run(
        alice,
        Command::SetStage {
            model_id,
            version: 1,
            stage: Stage::Production,
            annotation: "approved".into(),
        },
    )
    .await;
    run(
        bob,
        Command::SetStage {
            model_id,
            version: 2,
            stage: Stage::Staging,
            annotation: "candidate".into(),
        },
    )
    .await;
    run(
        alice,
        Command::SetAlias {
            model_id,
            alias: "champion".into(),
            version: 1,
            annotation: "in production".into(),
        },
    )
    .await;
    run(
        ids[2],
        Command::AddComment {
            comment_id: Uuid::now_v7(),
            subject: Subject::ModelVersion {
                model_id,
                version: 1,
            },
            text: "Reviewed for the Q3 audit.".into(),
        },
    )
    .await;
    run(
        alice,
        Command::AddComment {
            comment_id: Uuid::now_v7(),
            subject: Subject::Project { project_id },
            text: "v2 only repackages v1.".into(),
        },
    )
    .await;

    write_story(STORY, &ledger);
}

/// Writes the recorded log and the registry it folds to; answers the events.
fn write_story(story: &str, ledger: &Ledger) -> Vec<Event> {
    let events = ledger.read_all(0, usize::MAX).unwrap();
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.to_json()).unwrap())
        .collect();
    std::fs::write(format!("{story}/events.jsonl"), lines.join("\n") + "\n").unwrap();
    write_projection(story, &fold(events.clone()).unwrap());
    events
}

fn write_projection(story: &str, registry: &provenant::domain::Registry) {
    let pretty = serde_json::to_string_pretty(registry).unwrap();
    std::fs::write(format!("{story}/registry.json"), pretty + "\n").unwrap();
}
