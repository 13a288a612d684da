//! The governance story: what the other stories leave out. Roles granted and revoked, a
//! token revoked, a project renamed, a member's role changed and the member removed, an
//! experiment's metadata set, tagged, untagged, deleted and restored, an alias set and
//! removed, a version deleted, an API-managed runtime image declared and deleted, and the
//! ledger key rotated with one event signed by the new key after it. Together with the
//! registry and scoring stories, every event type is in a golden log (checked below).

use std::collections::BTreeMap;

use provenant::domain::event::{Artifact, GlobalRole, Parameters, ProjectRole, Subject};
use provenant::domain::runtime::{EntityRef, ImageSpec, RuntimeCommand};
use provenant::domain::schema::MetadataValue;
use provenant::domain::{Command, upcast};
use provenant::runtime::ingest;
use uuid::Uuid;

use super::{load, replay_story, run, with_admin, write_story};

const STORY: &str = "replay-tests/governance-story";

#[test]
fn governance_story_replays_to_the_recorded_registry() {
    let (events, registry) = replay_story(STORY, record_story);
    let alice = registry.usernames["alice"];
    let user = &registry.users[&alice];
    assert!(user.roles.is_empty(), "auditor granted then revoked");
    assert!(user.tokens.values().all(|t| t.revoked.is_some()));
    let project = registry.projects.values().next().unwrap();
    assert_eq!(project.name, "Churn (renamed)");
    assert!(!project.members.contains_key(&alice));
    let experiment = registry.experiments.values().next().unwrap();
    assert!(experiment.deleted.is_none(), "deleted then restored");
    assert!(experiment.tags.is_empty());
    let model = registry.models.values().next().unwrap();
    assert!(model.aliases.is_empty());
    assert!(model.versions[&2].deleted.is_some());
    assert!(registry.runtimes.images["scratch"].deleted.is_some());
    let rotations = events
        .iter()
        .filter(|e| e.unsigned.event_type == "LedgerKeyRotated")
        .count();
    assert_eq!(rotations, 1);
}

/// Every event type at every schema version it was ever written with (each file of
/// `schemas/` and `schemas/v<N>/`) is in some golden log.
#[test]
fn the_golden_logs_cover_every_event_type() {
    let mut seen = std::collections::BTreeSet::new();
    for story in [
        super::STORY,
        super::scoring::STORY,
        super::scoring::STORY_V1,
        super::scoring::STORY_V2,
        super::scoring::STORY_V3,
        super::scoring::STORY_V4,
        STORY,
    ] {
        seen.extend(
            load(story)
                .into_iter()
                .map(|e| (e.unsigned.event_type, e.unsigned.schema_version)),
        );
    }
    let mut schemas = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("schemas").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if let Some(version) = name.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) {
            for old in std::fs::read_dir(entry.path()).unwrap() {
                let file = old.unwrap().file_name().into_string().unwrap();
                schemas.insert((file.trim_end_matches(".json").to_string(), version));
            }
        } else {
            let event_type = name.trim_end_matches(".json").to_string();
            let current = upcast::current(&event_type);
            schemas.insert((event_type, current));
        }
    }
    let missing: Vec<_> = schemas.difference(&seen).collect();
    assert!(missing.is_empty(), "no golden log has {missing:?}");
}

async fn record_story() {
    let (_dir, state, admin) = with_admin().await;
    let (ledger, blobs, onnx) = (state.ledger.clone(), state.blobs.clone(), state.onnx);
    let run = |actor: Uuid, c: Command| run(&state, actor, c);
    let alice = Uuid::now_v7();
    run(
        admin,
        Command::CreateUser {
            user_id: alice,
            username: "alice".into(),
            display_name: "Alice".into(),
            roles: vec![],
        },
    )
    .await;
    for c in [
        Command::GrantRole {
            user_id: alice,
            role: GlobalRole::Auditor,
        },
        Command::RevokeRole {
            user_id: alice,
            role: GlobalRole::Auditor,
        },
    ] {
        run(admin, c).await;
    }
    let token_id = Uuid::now_v7();
    let now = chrono::Utc::now();
    run(
        admin,
        Command::IssueToken {
            user_id: alice,
            token_id,
            name: "laptop".into(),
            token_hash: blake3::hash(b"pvn_story").to_hex().to_string(),
            expires_at: None,
            now,
        },
    )
    .await;
    run(
        admin,
        Command::RevokeToken {
            user_id: alice,
            token_id,
            reason: Some("laptop lost".into()),
        },
    )
    .await;

    let project_id = Uuid::now_v7();
    for c in [
        Command::CreateProject {
            project_id,
            name: "Churn".into(),
            description: String::new(),
        },
        Command::UpdateProject {
            project_id,
            name: Some("Churn (renamed)".into()),
            description: Some("Customer churn".into()),
        },
        Command::ShareProject {
            project_id,
            user_id: alice,
            role: ProjectRole::Viewer,
        },
        Command::ShareProject {
            project_id,
            user_id: alice,
            role: ProjectRole::Editor,
        },
        Command::UnshareProject {
            project_id,
            user_id: alice,
        },
    ] {
        run(admin, c).await;
    }

    let info = blobs
        .put(&std::fs::read("fixtures/models/wine_classifier.onnx").unwrap())
        .unwrap();
    let ingestion = ingest::ingest(onnx, &blobs, "onnx", &info.hash).unwrap();
    let artifact = Artifact {
        artifact_id: Uuid::now_v7(),
        artifact_type: "onnx".into(),
        file_name: "wine_classifier.onnx".into(),
        blob_hash: info.hash.to_hex(),
        size: info.size,
    };
    let (x1, x2) = (Uuid::now_v7(), Uuid::now_v7());
    for x in [x1, x2] {
        run(
            admin,
            Command::ImportExperiment {
                experiment_id: x,
                project_id,
                display_name: format!("run {x}"),
                metadata: Default::default(),
                parameters: Parameters::default(),
                tags: vec![],
                artifacts: vec![(artifact.clone(), ingestion.clone())],
            },
        )
        .await;
    }
    let mut entries = BTreeMap::new();
    entries.insert("auc".to_string(), MetadataValue::Double(0.91));
    for c in [
        Command::SetExperimentMetadata {
            experiment_id: x1,
            entries,
        },
        Command::TagExperiment {
            experiment_id: x1,
            tag: "candidate".into(),
        },
        Command::UntagExperiment {
            experiment_id: x1,
            tag: "candidate".into(),
        },
        Command::DeleteExperiment {
            experiment_id: x1,
            reason: Some("imported by mistake".into()),
        },
        Command::RestoreExperiment { experiment_id: x1 },
    ] {
        run(admin, c).await;
    }
    let model_id = Uuid::now_v7();
    run(
        admin,
        Command::CreateModel {
            model_id,
            project_id,
            name: "churn".into(),
            description: String::new(),
        },
    )
    .await;
    for x in [x1, x2] {
        run(
            admin,
            Command::RegisterVersion {
                model_id,
                experiment_id: x,
                annotation: None,
            },
        )
        .await;
    }
    for c in [
        Command::SetAlias {
            model_id,
            alias: "challenger".into(),
            version: 2,
            annotation: "try it".into(),
        },
        Command::RemoveAlias {
            model_id,
            alias: "challenger".into(),
            annotation: "dropped".into(),
        },
        Command::DeleteVersion {
            model_id,
            version: 2,
            annotation: "superseded".into(),
        },
        Command::AddComment {
            comment_id: Uuid::now_v7(),
            subject: Subject::Experiment { experiment_id: x1 },
            text: "kept".into(),
        },
    ] {
        run(admin, c).await;
    }

    let image = EntityRef::Image {
        image_id: "scratch".into(),
    };
    for c in [
        RuntimeCommand::CreateImage {
            image_id: "scratch".into(),
            spec: ImageSpec {
                name: "Scratch image".into(),
                description: String::new(),
            },
        },
        RuntimeCommand::Delete {
            entity: image,
            reason: "never used".into(),
        },
    ] {
        state
            .execute_runtime(admin, c, |_| None::<()>)
            .await
            .unwrap();
    }

    ledger.rotate_key("system:rotate-key").await.unwrap();
    state.registry.wait_for(ledger.head().size).await.unwrap();
    run(
        admin,
        Command::AddComment {
            comment_id: Uuid::now_v7(),
            subject: Subject::Project { project_id },
            text: "signed by the new key".into(),
        },
    )
    .await;
    write_story(STORY, &ledger);
}
