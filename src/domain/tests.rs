//! decide/evolve scenarios, without I/O: commands are decided against a state, their events
//! folded back in, as the shell does.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use crate::log::ExpectedVersion;

use super::event::*;
use super::schema::{Column, ColumnType, MetadataValue};
use super::*;

pub(super) struct World {
    pub(super) state: Registry,
    pub(super) admin: Uuid,
    next: u128,
    /// Every event applied, as recorded, for rebuild checks.
    pub(super) log: Vec<Recorded>,
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

impl World {
    pub(super) fn new() -> World {
        let admin = id(1);
        let mut w = World {
            state: Registry::default(),
            admin,
            next: 100,
            log: Vec::new(),
        };
        // The first admin is created by `init`, outside decide's rules.
        w.apply(
            "user-admin",
            vec![RegistryEvent::UserCreated(UserCreated {
                user_id: admin,
                username: "admin".into(),
                display_name: "Admin".into(),
                roles: vec![GlobalRole::Admin],
            })],
        );
        w
    }

    pub(super) fn fresh(&mut self) -> Uuid {
        self.next += 1;
        id(self.next)
    }

    pub(super) fn apply(&mut self, stream: &str, events: Vec<RegistryEvent>) {
        for e in events {
            let position = self.state.applied;
            let stream_version = self.state.stream_versions.get(stream).map_or(0, |v| v + 1);
            let recorded = Recorded {
                position,
                stream: stream.into(),
                stream_version,
                actor: "test".into(),
                recorded_at: format!("2026-01-01T00:00:{:02}.000000Z", position % 60),
                event: Some(e),
            };
            self.state = evolve(std::mem::take(&mut self.state), &recorded);
            self.log.push(recorded);
        }
    }

    pub(super) fn run(&mut self, actor: Uuid, c: Command) -> Result<Decision, DomainError> {
        let d = decide(&self.state, actor, c)?;
        self.apply(&d.stream.clone(), d.events.clone());
        Ok(d)
    }

    pub(super) fn user(&mut self, name: &str, roles: Vec<GlobalRole>) -> Uuid {
        let user_id = self.fresh();
        self.run(
            self.admin,
            Command::CreateUser {
                user_id,
                username: name.into(),
                display_name: name.into(),
                roles,
            },
        )
        .unwrap();
        user_id
    }

    pub(super) fn project(&mut self, owner: Uuid) -> Uuid {
        let project_id = self.fresh();
        self.run(
            owner,
            Command::CreateProject {
                project_id,
                name: "p".into(),
                description: String::new(),
            },
        )
        .unwrap();
        project_id
    }

    fn experiment(&mut self, actor: Uuid, project_id: Uuid) -> Result<Uuid, DomainError> {
        self.experiment_of(actor, project_id, "00", "x", "quality")
    }

    /// An experiment with a deployable ONNX artifact whose model blob is `blob` repeated, its
    /// one input `input`, its one output `y` and its target `target`.
    pub(super) fn experiment_of(
        &mut self,
        actor: Uuid,
        project_id: Uuid,
        blob: &str,
        input: &str,
        target: &str,
    ) -> Result<Uuid, DomainError> {
        let experiment_id = self.fresh();
        let artifact_id = self.fresh();
        let column = |name: &str| Column {
            name: name.into(),
            column_type: ColumnType::Float32,
        };
        self.run(
            actor,
            Command::ImportExperiment {
                experiment_id,
                project_id,
                display_name: "wine".into(),
                metadata: BTreeMap::new(),
                parameters: Parameters {
                    target_column: Some(target.into()),
                    datasets: vec![],
                },
                tags: vec!["b".into(), "a".into(), "a".into()],
                artifacts: vec![(
                    Artifact {
                        artifact_id,
                        artifact_type: "onnx".into(),
                        file_name: "m.onnx".into(),
                        blob_hash: blob.repeat(32),
                        size: 10,
                    },
                    Ingestion {
                        model_type: "onnx".into(),
                        deployable: true,
                        reason: None,
                        model_blob: Some(blob.repeat(32)),
                        input_schema: Some(vec![column(input)]),
                        output_schema: Some(vec![column("y")]),
                        details: BTreeMap::new(),
                    },
                )],
            },
        )?;
        Ok(experiment_id)
    }
}

#[test]
fn only_admins_create_users_and_usernames_are_unique() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let err = decide(
        &w.state,
        alice,
        Command::CreateUser {
            user_id: id(9),
            username: "bob".into(),
            display_name: String::new(),
            roles: vec![],
        },
    );
    assert!(matches!(err, Err(DomainError::Forbidden(_))));
    let dup = decide(
        &w.state,
        w.admin,
        Command::CreateUser {
            user_id: id(9),
            username: "alice".into(),
            display_name: String::new(),
            roles: vec![],
        },
    );
    assert!(matches!(dup, Err(DomainError::AlreadyExists(_))));
    let bad = decide(
        &w.state,
        w.admin,
        Command::CreateUser {
            user_id: id(9),
            username: "a b".into(),
            display_name: String::new(),
            roles: vec![],
        },
    );
    assert!(matches!(
        bad,
        Err(DomainError::Invalid {
            field: "username",
            ..
        })
    ));
}

#[test]
fn only_an_empty_registry_gets_a_bootstrap_admin() {
    let w = World::new();
    let again = bootstrap_admin(&w.state, id(2), "root".into(), id(3), "cd".repeat(32));
    assert!(matches!(again, Err(DomainError::Conflict(_))));
    let first = bootstrap_admin(
        &Registry::default(),
        id(2),
        "root".into(),
        id(3),
        "cd".repeat(32),
    )
    .unwrap();
    assert_eq!(
        (first.expected, first.events.len()),
        (ExpectedVersion::NoStream, 2)
    );
}

#[test]
fn the_last_admin_keeps_the_role() {
    let mut w = World::new();
    let err = decide(
        &w.state,
        w.admin,
        Command::RevokeRole {
            user_id: w.admin,
            role: GlobalRole::Admin,
        },
    );
    assert!(matches!(err, Err(DomainError::Conflict(_))));
    let other = w.user("root2", vec![GlobalRole::Admin]);
    w.run(
        other,
        Command::RevokeRole {
            user_id: w.admin,
            role: GlobalRole::Admin,
        },
    )
    .unwrap();
    assert!(w.state.users[&w.admin].roles.is_empty());
}

#[test]
fn tokens_are_issued_for_oneself_or_by_admins_and_revoked_once() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let bob = w.user("bob", vec![]);
    let now = chrono::Utc::now();
    let issue = |user_id, expires_at| Command::IssueToken {
        user_id,
        token_id: id(77),
        name: "ci".into(),
        token_hash: "ab".repeat(32),
        expires_at,
        now,
    };
    assert!(matches!(
        decide(&w.state, alice, issue(bob, None)),
        Err(DomainError::Forbidden(_))
    ));
    let past = Some(now - chrono::Duration::seconds(1));
    assert!(matches!(
        decide(&w.state, alice, issue(alice, past)),
        Err(DomainError::Invalid {
            field: "expires_at",
            ..
        })
    ));
    w.run(alice, issue(alice, Some(now + chrono::Duration::days(1))))
        .unwrap();
    assert_eq!(w.state.tokens.get(&"ab".repeat(32)), Some(&(alice, id(77))));
    let revoke = Command::RevokeToken {
        user_id: alice,
        token_id: id(77),
        reason: None,
    };
    assert!(matches!(
        decide(&w.state, bob, revoke.clone()),
        Err(DomainError::Forbidden(_))
    ));
    w.run(alice, revoke.clone()).unwrap();
    assert!(w.state.users[&alice].tokens[&id(77)].revoked.is_some());
    assert!(matches!(
        decide(&w.state, alice, revoke),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn sharing_follows_roles_and_keeps_an_owner() {
    let mut w = World::new();
    let (alice, bob, carol) = (
        w.user("alice", vec![]),
        w.user("bob", vec![]),
        w.user("carol", vec![GlobalRole::Auditor]),
    );
    let p = w.project(alice);
    assert_eq!(w.state.projects[&p].members[&alice], ProjectRole::Owner);
    assert!(matches!(
        decide(
            &w.state,
            carol,
            Command::CreateProject {
                project_id: id(5),
                name: "x".into(),
                description: String::new()
            }
        ),
        Err(DomainError::Forbidden(_))
    ));

    w.run(
        alice,
        Command::ShareProject {
            project_id: p,
            user_id: bob,
            role: ProjectRole::Editor,
        },
    )
    .unwrap();
    // Editors change, owners share.
    assert!(matches!(
        decide(
            &w.state,
            bob,
            Command::ShareProject {
                project_id: p,
                user_id: carol,
                role: ProjectRole::Viewer
            }
        ),
        Err(DomainError::Forbidden(_))
    ));
    w.run(
        bob,
        Command::UpdateProject {
            project_id: p,
            name: Some("renamed".into()),
            description: None,
        },
    )
    .unwrap();
    assert_eq!(w.state.projects[&p].name, "renamed");

    let d = w
        .run(
            alice,
            Command::ShareProject {
                project_id: p,
                user_id: bob,
                role: ProjectRole::Owner,
            },
        )
        .unwrap();
    assert!(matches!(
        d.events[0],
        RegistryEvent::ProjectRoleChanged(ProjectRoleChanged {
            from: ProjectRole::Editor,
            to: ProjectRole::Owner,
            ..
        })
    ));
    w.run(
        bob,
        Command::UnshareProject {
            project_id: p,
            user_id: alice,
        },
    )
    .unwrap();
    let last = decide(
        &w.state,
        bob,
        Command::UnshareProject {
            project_id: p,
            user_id: bob,
        },
    );
    assert!(matches!(last, Err(DomainError::Conflict(_))));
    let demote = decide(
        &w.state,
        bob,
        Command::ShareProject {
            project_id: p,
            user_id: bob,
            role: ProjectRole::Viewer,
        },
    );
    assert!(matches!(demote, Err(DomainError::Conflict(_))));
    assert!(matches!(
        decide(
            &w.state,
            alice,
            Command::UnshareProject {
                project_id: p,
                user_id: bob
            }
        ),
        Err(DomainError::Forbidden(_))
    ));
}

#[test]
fn comments_are_open_to_readers_and_auditors() {
    let mut w = World::new();
    let (alice, eve, aud) = (
        w.user("alice", vec![]),
        w.user("eve", vec![]),
        w.user("aud", vec![GlobalRole::Auditor]),
    );
    let p = w.project(alice);
    let comment = |comment_id| Command::AddComment {
        comment_id,
        subject: Subject::Project { project_id: p },
        text: " looks good ".into(),
    };
    assert!(matches!(
        decide(&w.state, eve, comment(id(50))),
        Err(DomainError::Forbidden(_))
    ));
    w.run(aud, comment(id(50))).unwrap();
    assert_eq!(w.state.projects[&p].comments[0].text, "looks good");
    let empty = decide(
        &w.state,
        alice,
        Command::AddComment {
            comment_id: id(51),
            subject: Subject::Project { project_id: p },
            text: "  ".into(),
        },
    );
    assert!(matches!(
        empty,
        Err(DomainError::Invalid { field: "text", .. })
    ));
}

#[test]
fn import_fills_the_schema_and_registration_is_once_per_experiment() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let viewer = w.user("vic", vec![]);
    let p = w.project(alice);
    w.run(
        alice,
        Command::ShareProject {
            project_id: p,
            user_id: viewer,
            role: ProjectRole::Viewer,
        },
    )
    .unwrap();
    assert!(matches!(
        w.experiment(viewer, p),
        Err(DomainError::Forbidden(_))
    ));
    let x = w.experiment(alice, p).unwrap();
    let exp = &w.state.experiments[&x];
    assert_eq!(
        exp.metadata["input_schema"],
        MetadataValue::Json(json!([{"name": "x", "type": "Float32"}]))
    );
    assert_eq!(exp.tags.iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(exp.artifacts[0].ingestion.is_some());

    let m = w.fresh();
    w.run(
        alice,
        Command::CreateModel {
            model_id: m,
            project_id: p,
            name: "wine".into(),
            description: String::new(),
        },
    )
    .unwrap();
    let dup_name = decide(
        &w.state,
        alice,
        Command::CreateModel {
            model_id: id(3),
            project_id: p,
            name: "wine".into(),
            description: String::new(),
        },
    );
    assert!(matches!(dup_name, Err(DomainError::AlreadyExists(_))));
    w.run(
        alice,
        Command::RegisterVersion {
            model_id: m,
            experiment_id: x,
            annotation: None,
        },
    )
    .unwrap();
    let again = decide(
        &w.state,
        alice,
        Command::RegisterVersion {
            model_id: m,
            experiment_id: x,
            annotation: None,
        },
    );
    assert!(matches!(again, Err(DomainError::AlreadyExists(_))));
    let x2 = w.experiment(alice, p).unwrap();
    let d = w
        .run(
            alice,
            Command::RegisterVersion {
                model_id: m,
                experiment_id: x2,
                annotation: Some("retrained".into()),
            },
        )
        .unwrap();
    assert!(matches!(
        d.events[0],
        RegistryEvent::ModelVersionRegistered(ModelVersionRegistered { version: 2, .. })
    ));
    assert_eq!(d.expected, ExpectedVersion::Exact(1));

    // A registered experiment cannot be deleted while its version lives.
    let del = decide(
        &w.state,
        alice,
        Command::DeleteExperiment {
            experiment_id: x,
            reason: None,
        },
    );
    assert!(matches!(del, Err(DomainError::Conflict(_))));
}

#[test]
fn stages_and_aliases_need_annotations_and_track_history() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let p = w.project(alice);
    let m = w.fresh();
    w.run(
        alice,
        Command::CreateModel {
            model_id: m,
            project_id: p,
            name: "wine".into(),
            description: String::new(),
        },
    )
    .unwrap();
    for _ in 0..2 {
        let x = w.experiment(alice, p).unwrap();
        w.run(
            alice,
            Command::RegisterVersion {
                model_id: m,
                experiment_id: x,
                annotation: None,
            },
        )
        .unwrap();
    }
    let no_reason = decide(
        &w.state,
        alice,
        Command::SetStage {
            model_id: m,
            version: 1,
            stage: Stage::Staging,
            annotation: " ".into(),
        },
    );
    assert!(matches!(
        no_reason,
        Err(DomainError::Invalid {
            field: "annotation",
            ..
        })
    ));
    w.run(
        alice,
        Command::SetStage {
            model_id: m,
            version: 1,
            stage: Stage::Staging,
            annotation: "validated".into(),
        },
    )
    .unwrap();
    w.run(
        alice,
        Command::SetStage {
            model_id: m,
            version: 1,
            stage: Stage::Production,
            annotation: "approved".into(),
        },
    )
    .unwrap();
    let v1 = &w.state.models[&m].versions[&1];
    assert_eq!((v1.stage, v1.stage_history.len()), (Stage::Production, 2));

    for bad in ["latest", "v2", "a b", ""] {
        let r = decide(
            &w.state,
            alice,
            Command::SetAlias {
                model_id: m,
                alias: bad.into(),
                version: 1,
                annotation: "x".into(),
            },
        );
        assert!(
            matches!(r, Err(DomainError::Invalid { field: "alias", .. })),
            "{bad}"
        );
    }
    w.run(
        alice,
        Command::SetAlias {
            model_id: m,
            alias: "champion".into(),
            version: 1,
            annotation: "best".into(),
        },
    )
    .unwrap();
    let d = w
        .run(
            alice,
            Command::SetAlias {
                model_id: m,
                alias: "champion".into(),
                version: 2,
                annotation: "better".into(),
            },
        )
        .unwrap();
    assert!(matches!(
        d.events[0],
        RegistryEvent::ModelAliasSet(ModelAliasSet {
            previous_version: Some(1),
            ..
        })
    ));
    let model = &w.state.models[&m];
    assert!(model.versions[&1].aliases.is_empty());
    assert_eq!(model.aliases["champion"], 2);

    w.run(
        alice,
        Command::DeleteVersion {
            model_id: m,
            version: 2,
            annotation: "bad data".into(),
        },
    )
    .unwrap();
    assert!(w.state.models[&m].aliases.is_empty());
    let gone = decide(
        &w.state,
        alice,
        Command::SetStage {
            model_id: m,
            version: 2,
            stage: Stage::Archived,
            annotation: "x".into(),
        },
    );
    assert!(matches!(
        gone,
        Err(DomainError::NotFound {
            kind: Kind::Version,
            ..
        })
    ));
}

#[test]
fn soft_delete_and_restore() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let p = w.project(alice);
    let x = w.experiment(alice, p).unwrap();
    w.run(
        alice,
        Command::DeleteExperiment {
            experiment_id: x,
            reason: Some("duplicate".into()),
        },
    )
    .unwrap();
    let tag = decide(
        &w.state,
        alice,
        Command::TagExperiment {
            experiment_id: x,
            tag: "t".into(),
        },
    );
    assert!(matches!(tag, Err(DomainError::Conflict(_))));
    w.run(alice, Command::RestoreExperiment { experiment_id: x })
        .unwrap();
    w.run(
        alice,
        Command::TagExperiment {
            experiment_id: x,
            tag: "t".into(),
        },
    )
    .unwrap();
    assert!(w.state.experiments[&x].tags.contains("t"));
    // Every one of these events is listed under the project.
    assert_eq!(w.state.projects[&p].event_positions.len(), 1 + 2 + 3);
}

#[test]
fn decisions_expect_the_stream_version_they_were_made_on() {
    let mut w = World::new();
    let alice = w.user("alice", vec![]);
    let p = w.project(alice);
    let d = decide(
        &w.state,
        alice,
        Command::UpdateProject {
            project_id: p,
            name: Some("n".into()),
            description: None,
        },
    )
    .unwrap();
    assert_eq!(
        (d.stream, d.expected),
        (format!("project-{p}"), ExpectedVersion::Exact(0))
    );
    let dup = decide(
        &w.state,
        alice,
        Command::CreateProject {
            project_id: p,
            name: "n".into(),
            description: String::new(),
        },
    );
    assert!(matches!(dup, Err(DomainError::AlreadyExists(_))));
}

/// A deployment of a version in `project`, as the shell would have created it.
fn deployment(w: &mut World, project_id: Uuid) -> Uuid {
    let deployment_id = w.fresh();
    let spec: deployment::DeploymentSpec = serde_json::from_value(json!({
        "project_id": project_id, "model_id": w.fresh(), "version": 1,
        "experiment_id": w.fresh(), "artifact_id": w.fresh(),
        "model_blob": "00".repeat(32), "model_type": "onnx", "environment": "DEV",
        "security": {"mode": "none"}, "retention": {"mode": "hashes"},
        "runtime_id": "onnx-runtime", "image_id": "onnx-scorer", "image_version": "1",
        "runtime": {"scorer_version": "1"}, "settings": {},
        "input_schema": [], "output_schema": [], "warnings": [],
    }))
    .unwrap();
    let stream = deployment::stream(deployment_id);
    w.apply(
        &stream,
        vec![RegistryEvent::DeploymentCreated(DeploymentCreated {
            deployment_id,
            mode: deployment::Mode::Single,
            variants: [(
                deployment::PRIMARY.to_string(),
                deployment::Variant {
                    weight: 1,
                    shadow: false,
                    spec,
                },
            )]
            .into(),
            promoted_from: None,
            reason: None,
        })],
    );
    deployment_id
}

#[test]
fn people_pause_resume_and_stop_while_the_scorer_reports_loading() {
    use deployment::{DeploymentState as S, decide_transition};
    let mut w = World::new();
    let editor = w.user("ed", vec![]);
    let viewer = w.user("vi", vec![]);
    let project = w.project(editor);
    w.run(
        editor,
        Command::ShareProject {
            project_id: project,
            user_id: viewer,
            role: ProjectRole::Viewer,
        },
    )
    .unwrap();
    let d = deployment(&mut w, project);
    let go = |w: &mut World, actor: Option<Uuid>, to: S, reason: &str| {
        let decision = decide_transition(&w.state, actor, d, to, reason.into())?;
        w.apply(&decision.stream.clone(), decision.events);
        Ok::<S, DomainError>(w.state.deployments[&d].state)
    };
    // Only the scorer moves a deployment through loading.
    assert!(matches!(
        go(&mut w, Some(editor), S::Launching, "by hand"),
        Err(DomainError::Conflict(m)) if m.contains("only the scorer")
    ));
    assert_eq!(go(&mut w, None, S::Launching, "loading"), Ok(S::Launching));
    assert_eq!(go(&mut w, None, S::Healthy, "model loaded"), Ok(S::Healthy));
    // The scorer never pauses; viewers may not; a reason is required.
    assert!(matches!(
        go(&mut w, None, S::Paused, "no"),
        Err(DomainError::Conflict(_))
    ));
    assert!(matches!(
        go(&mut w, Some(viewer), S::Paused, "maintenance"),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        go(&mut w, Some(editor), S::Paused, "  "),
        Err(DomainError::Invalid {
            field: "reason",
            ..
        })
    ));
    let before = w.state.applied;
    assert_eq!(
        go(&mut w, Some(editor), S::Paused, "maintenance"),
        Ok(S::Paused)
    );
    assert_eq!(w.state.applied, before + 1);
    assert!(matches!(
        go(&mut w, Some(editor), S::Paused, "again"),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(go(&mut w, Some(editor), S::Healthy, "done"), Ok(S::Healthy));
    assert!(matches!(
        go(&mut w, Some(editor), S::Healthy, "again"),
        Err(DomainError::Conflict(_))
    ));
    // A paused deployment that no longer loads at a restart fails; a stopped one is final.
    assert_eq!(go(&mut w, Some(editor), S::Paused, "night"), Ok(S::Paused));
    assert_eq!(go(&mut w, None, S::Failed, "artifact gone"), Ok(S::Failed));
    assert_eq!(
        go(&mut w, Some(editor), S::Stopped, "retired"),
        Ok(S::Stopped)
    );
    for to in [S::Healthy, S::Paused, S::Stopped, S::Launching] {
        assert!(go(&mut w, None, to, "late").is_err());
        assert!(go(&mut w, Some(editor), to, "late").is_err());
    }
    let history: Vec<S> = w.state.deployments[&d]
        .history
        .iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        history,
        [
            S::Preparing,
            S::Launching,
            S::Healthy,
            S::Paused,
            S::Healthy,
            S::Paused,
            S::Failed,
            S::Stopped
        ]
    );
}

/// `deployment`, loaded to Healthy by the scorer.
fn healthy(w: &mut World, project_id: Uuid) -> Uuid {
    use deployment::{DeploymentState as S, decide_transition};
    let d = deployment(w, project_id);
    for to in [S::Launching, S::Healthy] {
        let decision = decide_transition(&w.state, None, d, to, "loading".into()).unwrap();
        w.apply(&decision.stream.clone(), decision.events);
    }
    d
}

#[test]
fn endpoints_point_at_healthy_deployments_of_their_project() {
    let mut w = World::new();
    let editor = w.user("ed", vec![]);
    let other = w.user("other", vec![]);
    let project = w.project(editor);
    let elsewhere = w.project(other);
    let (a, b) = (healthy(&mut w, project), healthy(&mut w, project));
    let foreign = healthy(&mut w, elsewhere);
    let preparing = deployment(&mut w, project);
    let point = |w: &mut World, actor: Uuid, name: &str, target: Option<Uuid>| {
        let decision = endpoint::decide(&w.state, actor, name.into(), target, "why".into())?;
        w.apply(&decision.stream.clone(), decision.events);
        Ok::<Option<Uuid>, DomainError>(w.state.endpoints[name].deployment_id)
    };
    for bad in [
        "Churn",
        "api",
        "-x",
        "",
        &Uuid::nil().to_string(),
        &"x".repeat(65),
    ] {
        assert!(
            matches!(
                point(&mut w, editor, bad, Some(a)),
                Err(DomainError::Invalid {
                    field: "endpoint",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        point(&mut w, other, "churn", Some(a)),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        point(&mut w, editor, "churn", Some(preparing)),
        Err(DomainError::Conflict(m)) if m.contains("Healthy")
    ));
    assert!(matches!(
        point(&mut w, editor, "churn", None),
        Err(DomainError::NotFound {
            kind: Kind::Endpoint,
            ..
        })
    ));
    assert_eq!(point(&mut w, editor, "churn", Some(a)), Ok(Some(a)));
    assert!(matches!(
        point(&mut w, editor, "churn", Some(a)),
        Err(DomainError::Conflict(_))
    ));
    // Another project's deployment, or its editor, cannot take the name.
    assert!(matches!(
        point(&mut w, other, "churn", Some(foreign)),
        Err(DomainError::Forbidden(_))
    ));
    w.run(
        editor,
        Command::ShareProject {
            project_id: project,
            user_id: other,
            role: ProjectRole::Editor,
        },
    )
    .unwrap();
    assert!(matches!(
        point(&mut w, other, "churn", Some(foreign)),
        Err(DomainError::Conflict(m)) if m.contains("belongs to project")
    ));
    assert_eq!(point(&mut w, editor, "churn", Some(b)), Ok(Some(b)));
    assert_eq!(point(&mut w, other, "churn", None), Ok(None));
    assert!(matches!(
        point(&mut w, editor, "churn", None),
        Err(DomainError::NotFound { .. })
    ));
    assert_eq!(point(&mut w, editor, "churn", Some(a)), Ok(Some(a)));
    let e = &w.state.endpoints["churn"];
    let targets: Vec<Option<Uuid>> = e.history.iter().map(|h| h.deployment_id).collect();
    assert_eq!(targets, [Some(a), Some(b), None, Some(a)]);
    assert_eq!(e.project_id, project);
    match &w.log[w.log.len() - 3].event {
        Some(RegistryEvent::EndpointSet(set)) => {
            assert_eq!(set.previous_deployment_id, Some(a));
            assert_eq!(set.deployment_id, b);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn jobs_start_on_healthy_deployments_for_editors_and_end_once() {
    use job::{EndJob, FileFormat, JobOutcome, StartJob};
    let mut w = World::new();
    let editor = w.user("ed", vec![]);
    let outsider = w.user("out", vec![]);
    let project = w.project(editor);
    let (d, preparing) = (healthy(&mut w, project), deployment(&mut w, project));
    let start = |job_id: Uuid, deployment_id: Uuid, rows: u64, batch_rows: u32| StartJob {
        job_id,
        deployment_id,
        input_blob: "ab".repeat(32),
        input_format: FileFormat::Csv,
        output_format: FileFormat::Parquet,
        rows,
        batch_rows,
        max_failed_rows: 10,
    };
    let j = w.fresh();
    assert!(matches!(
        job::start(&w.state, outsider, start(j, d, 5, 2)),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        job::start(&w.state, editor, start(j, preparing, 5, 2)),
        Err(DomainError::Conflict(m)) if m.contains("Healthy")
    ));
    assert!(matches!(
        job::start(&w.state, editor, start(j, id(999), 5, 2)),
        Err(DomainError::NotFound {
            kind: Kind::Deployment,
            ..
        })
    ));
    for (rows, batch, field) in [
        (0, 2, "file"),
        (5, 0, "batch_rows"),
        (5, job::MAX_BATCH_ROWS + 1, "batch_rows"),
    ] {
        assert!(matches!(
            job::start(&w.state, editor, start(j, d, rows, batch)),
            Err(DomainError::Invalid { field: f, .. }) if f == field
        ));
    }
    let decision = job::start(&w.state, editor, start(j, d, 5, 2)).unwrap();
    assert_eq!(
        (decision.stream.as_str(), decision.expected),
        (job::stream(j).as_str(), ExpectedVersion::NoStream)
    );
    w.apply(&decision.stream.clone(), decision.events);
    assert!(matches!(
        job::start(&w.state, editor, start(j, d, 5, 2)),
        Err(DomainError::AlreadyExists(_))
    ));

    // Its runs count toward what it recorded, with their refused rows.
    let run = RegistryEvent::InferenceRunRecorded(InferenceRunRecorded {
        run_id: w.fresh(),
        deployment_id: d,
        variant: "primary".into(),
        shadow: false,
        model_id: w.fresh(),
        version: 1,
        model_blob: "00".repeat(32),
        image_id: "onnx-scorer".into(),
        image_version: "1".into(),
        session: Box::new(RunSession::of(&Default::default(), "1.32.0", None)),
        row_count: 1,
        input_blob: "11".repeat(32),
        output_blob: "22".repeat(32),
        requests: vec![],
        job: Some(RunJob {
            job_id: j,
            first_row: 0,
            skipped_rows: vec![1],
        }),
        profile: None,
    });
    w.apply(&deployment::stream(d), vec![run]);
    let recorded = &w.state.jobs[&j].recorded;
    assert_eq!(
        (recorded.runs, recorded.scored_rows, recorded.refused_rows),
        (1, 1, 1)
    );

    let end = |outcome, output: Option<&str>, cancelled_by, scored| EndJob {
        job_id: j,
        outcome,
        scored_rows: scored,
        failed_rows: 1,
        runs: 1,
        output_blob: output.map(str::to_string),
        errors_blob: None,
        cancelled_by,
        detail: "done".into(),
    };
    let hash = "cd".repeat(32);
    for bad in [
        end(JobOutcome::Completed, None, None, 4),
        end(JobOutcome::Failed, Some(&hash), None, 4),
        end(JobOutcome::Cancelled, None, None, 4),
        end(JobOutcome::Completed, Some(&hash), Some(editor), 4),
        end(JobOutcome::Completed, Some(&hash), None, 5),
    ] {
        assert!(matches!(
            job::end(&w.state, bad),
            Err(DomainError::Invalid { .. })
        ));
    }
    assert!(matches!(
        job::end(
            &w.state,
            EndJob {
                job_id: id(999),
                ..end(JobOutcome::Failed, None, None, 0)
            }
        ),
        Err(DomainError::NotFound {
            kind: Kind::Job,
            ..
        })
    ));
    let decision = job::end(&w.state, end(JobOutcome::Cancelled, None, Some(editor), 1)).unwrap();
    assert_eq!(decision.expected, ExpectedVersion::Exact(0));
    w.apply(&decision.stream.clone(), decision.events);
    let ended = w.state.jobs[&j].ended.as_ref().unwrap();
    assert_eq!(
        (ended.outcome, ended.cancelled_by),
        (JobOutcome::Cancelled, Some(editor))
    );
    assert!(matches!(
        job::end(&w.state, end(JobOutcome::Failed, None, None, 1)),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn alerts_are_raised_once_per_crossing_and_resolved_when_back_within() {
    use alert::{AlertPolicy, Metric, Observation};
    let mut w = World::new();
    let editor = w.user("ed", vec![]);
    let outsider = w.user("out", vec![]);
    let project = w.project(editor);
    let d = deployment(&mut w, project);
    let policy = AlertPolicy {
        window_minutes: 60,
        input_drift: true,
        prediction_drift: false,
        latency_p95_ms: Some(250.0),
        error_rate: None,
        accuracy_min: None,
        rmse_max: None,
        webhook: Some("http://hooks.internal:8080/provenant".into()),
    };
    assert!(matches!(
        alert::set_policy(&w.state, outsider, d, policy.clone()),
        Err(DomainError::Forbidden(_))
    ));
    // Shares are shares, limits positive, and a model is a classifier or a regressor.
    for (bad, field) in [
        (
            AlertPolicy {
                error_rate: Some(1.0),
                ..policy.clone()
            },
            "error_rate",
        ),
        (
            AlertPolicy {
                error_rate: Some(-0.1),
                ..policy.clone()
            },
            "error_rate",
        ),
        (
            AlertPolicy {
                accuracy_min: Some(0.0),
                ..policy.clone()
            },
            "accuracy_min",
        ),
        (
            AlertPolicy {
                rmse_max: Some(f64::INFINITY),
                ..policy.clone()
            },
            "rmse_max",
        ),
        (
            AlertPolicy {
                accuracy_min: Some(0.8),
                rmse_max: Some(2.0),
                ..policy.clone()
            },
            "rmse_max",
        ),
    ] {
        assert!(
            matches!(alert::set_policy(&w.state, editor, d, bad), Err(DomainError::Invalid { field: f, .. }) if f == field),
            "{field}"
        );
    }
    let full = AlertPolicy {
        error_rate: Some(0.05),
        accuracy_min: Some(1.0),
        ..policy.clone()
    };
    assert!(alert::set_policy(&w.state, editor, d, full).is_ok());
    let decision = alert::set_policy(&w.state, editor, d, policy.clone()).unwrap();
    w.apply(&decision.stream.clone(), decision.events);
    assert_eq!(w.state.deployments[&d].alert_policy, Some(policy.clone()));

    let seen = |metric, value: f64, threshold: f64| Observation {
        metric,
        value,
        threshold,
        crossed: value > threshold,
    };
    let window = ("2026-11-23T10:00:00.000000Z", "2026-11-23T11:00:00.000000Z");
    let mut ids = (1000..).map(id);
    // Drift crossed, latency within: one alert.
    let obs = [
        seen(Metric::InputDrift, 0.7, 0.5),
        seen(Metric::LatencyP95Ms, 12.0, 250.0),
    ];
    let decision = alert::evaluate(&w.state, d, window, &obs, || ids.next().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(decision.events.len(), 1);
    let RegistryEvent::AlertRaised(raised) = decision.events[0].clone() else {
        panic!("raised")
    };
    assert_eq!(
        (
            raised.metric,
            raised.evidence.value,
            raised.evidence.threshold
        ),
        (Metric::InputDrift, 0.7, 0.5)
    );
    w.apply(&decision.stream.clone(), decision.events);
    // The same again: already open, nothing to append.
    assert!(
        alert::evaluate(&w.state, d, window, &obs, || ids.next().unwrap())
            .unwrap()
            .is_none()
    );
    // Back within: resolved, the alert closed with the evidence that closed it.
    let obs = [seen(Metric::InputDrift, 0.1, 0.5)];
    let decision = alert::evaluate(&w.state, d, window, &obs, || ids.next().unwrap())
        .unwrap()
        .unwrap();
    assert!(
        matches!(&decision.events[..], [RegistryEvent::AlertResolved(r)] if r.alert_id == raised.alert_id)
    );
    w.apply(&decision.stream.clone(), decision.events);
    let a = &w.state.alerts[&raised.alert_id];
    assert_eq!(a.resolved.as_ref().map(|e| e.value), Some(0.1));
    // An open alert on a metric the policy stops watching is resolved without an observation.
    let obs = [seen(Metric::LatencyP95Ms, 900.0, 250.0)];
    let decision = alert::evaluate(&w.state, d, window, &obs, || ids.next().unwrap())
        .unwrap()
        .unwrap();
    w.apply(&decision.stream.clone(), decision.events);
    let quiet = AlertPolicy {
        latency_p95_ms: None,
        ..policy
    };
    let decision = alert::set_policy(&w.state, editor, d, quiet).unwrap();
    w.apply(&decision.stream.clone(), decision.events);
    let decision = alert::evaluate(&w.state, d, window, &[], || ids.next().unwrap())
        .unwrap()
        .unwrap();
    assert!(
        matches!(&decision.events[..], [RegistryEvent::AlertResolved(r)] if r.metric == Metric::LatencyP95Ms)
    );
}

#[test]
fn webhooks_are_plain_http_urls() {
    use alert::webhook_parts;
    assert_eq!(
        webhook_parts("http://hooks.internal:8080/a/b?c=1"),
        Some(("hooks.internal".into(), 8080, "/a/b?c=1".into()))
    );
    assert_eq!(
        webhook_parts("http://10.0.0.7"),
        Some(("10.0.0.7".into(), 80, "/".into()))
    );
    for bad in [
        "https://x.org/",
        "http://",
        "http://user:pw@x.org/",
        "http://x.org:port/",
        "ftp://x.org/",
        "http://x.org/a b",
    ] {
        assert_eq!(webhook_parts(bad), None, "{bad}");
    }
}
