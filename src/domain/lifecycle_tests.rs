//! The production lifecycle as pure decisions: environments and their rules, variant shapes,
//! updates in place, rollbacks, runtime upgrades, promotion and deletion.

use serde_json::json;
use uuid::Uuid;

use super::deployment::{
    Deploy, DeploymentState as S, Mode, PRIMARY, Placement, Retention, Security, UpdateOutcome,
    VariantRequest, decide_deploy, decide_transition,
};
use super::event::*;
use super::lifecycle::{
    Change, Promote, decide_delete, decide_promote, decide_update, decide_update_end, upgrades,
};
use super::runtime::{ImageVersionSpec, RuntimeCommand, RuntimeState, STREAM, decide_runtime};
use super::tests::World;
use super::{Command, DomainError};

/// A world with the shipped bootstrap, a project (owner, editor, viewer) and one model with
/// versions 1 and 2 of different blobs.
struct Setup {
    w: World,
    owner: Uuid,
    editor: Uuid,
    viewer: Uuid,
    model: Uuid,
}

fn setup() -> Setup {
    let mut w = World::new();
    let (file, _) = crate::runtime::bootstrap::load(None).unwrap();
    let d = super::runtime::decide_bootstrap(&w.state, &file, "hash");
    w.apply(STREAM, d.events);
    let owner = w.user("owner", vec![]);
    let editor = w.user("editor", vec![]);
    let viewer = w.user("viewer", vec![]);
    let project = w.project(owner);
    for (user, role) in [(editor, ProjectRole::Editor), (viewer, ProjectRole::Viewer)] {
        w.run(
            owner,
            Command::ShareProject {
                project_id: project,
                user_id: user,
                role,
            },
        )
        .unwrap();
    }
    let model = w.fresh();
    w.run(
        owner,
        Command::CreateModel {
            model_id: model,
            project_id: project,
            name: "wine".into(),
            description: String::new(),
        },
    )
    .unwrap();
    for blob in ["01", "02"] {
        let experiment_id = import(&mut w, owner, project, blob, "x");
        w.run(
            owner,
            Command::RegisterVersion {
                model_id: model,
                experiment_id,
                annotation: None,
            },
        )
        .unwrap();
    }
    Setup {
        w,
        owner,
        editor,
        viewer,
        model,
    }
}

/// Imports a deployable experiment (see `World::experiment_of`); answers its id.
fn import(w: &mut World, actor: Uuid, project_id: Uuid, blob: &str, input: &str) -> Uuid {
    w.experiment_of(actor, project_id, blob, input, "cultivar")
        .unwrap()
}

fn variant(model: Uuid, version: u32, weight: u32, shadow: bool) -> VariantRequest {
    VariantRequest {
        model_id: model,
        version,
        runtime_id: None,
        image_version: None,
        weight,
        shadow,
    }
}

fn deploy(
    s: &mut Setup,
    actor: Uuid,
    environment: &str,
    mode: Mode,
    variants: &[(&str, VariantRequest)],
) -> Result<Uuid, DomainError> {
    let deployment_id = s.w.fresh();
    let request = Deploy {
        deployment_id,
        placement: Placement {
            environment: environment.into(),
            security: Security::None,
            retention: Retention::Hashes,
        },
        mode,
        variants: variants
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    };
    let d = decide_deploy(&s.w.state, actor, request)?;
    s.w.apply(&d.stream.clone(), d.events);
    Ok(deployment_id)
}

fn single(s: &mut Setup, actor: Uuid, environment: &str) -> Result<Uuid, DomainError> {
    let m = s.model;
    deploy(
        s,
        actor,
        environment,
        Mode::Single,
        &[(PRIMARY, variant(m, 1, 1, false))],
    )
}

/// Moves a deployment as the scorer does, to Healthy.
fn launch(s: &mut Setup, id: Uuid) {
    for to in [S::Launching, S::Healthy] {
        let d = decide_transition(&s.w.state, None, id, to, "loading".into()).unwrap();
        s.w.apply(&d.stream.clone(), d.events);
    }
}

fn update(s: &mut Setup, actor: Uuid, id: Uuid, change: Change) -> Result<Uuid, DomainError> {
    let update_id = s.w.fresh();
    let d = decide_update(&s.w.state, actor, id, update_id, change, "why".into())?;
    s.w.apply(&d.stream.clone(), d.events);
    Ok(update_id)
}

fn end(s: &mut Setup, id: Uuid, update_id: Uuid, outcome: UpdateOutcome) {
    let d = decide_update_end(&s.w.state, id, update_id, outcome, "done".into()).unwrap();
    s.w.apply(&d.stream.clone(), d.events);
}

fn version_change(model: Uuid, version: u32) -> Change {
    Change::Variants {
        mode: Mode::Single,
        variants: [(PRIMARY.to_string(), variant(model, version, 1, false))].into(),
    }
}

#[test]
fn environments_say_who_deploys_where() {
    let mut s = setup();
    let (owner, editor, viewer) = (s.owner, s.editor, s.viewer);
    let unknown = single(&mut s, owner, "STAGING").unwrap_err();
    assert!(
        matches!(&unknown, DomainError::Invalid { field: "environment", detail } if detail.contains("DEV, PROD")),
        "{unknown:?}"
    );
    assert!(matches!(
        single(&mut s, viewer, "DEV"),
        Err(DomainError::Forbidden(_))
    ));
    assert!(single(&mut s, editor, "DEV").is_ok());
    let prod = single(&mut s, editor, "PROD").unwrap_err();
    assert!(
        matches!(&prod, DomainError::Forbidden(m) if m.contains("environment PROD needs the owner role")),
        "{prod:?}"
    );
    let in_prod = single(&mut s, owner, "PROD").unwrap();
    launch(&mut s, in_prod);
    // The rule covers what runs there: an editor may not pause, update or delete it.
    let pause = decide_transition(&s.w.state, Some(editor), in_prod, S::Paused, "x".into());
    assert!(matches!(pause, Err(DomainError::Forbidden(_))));
    let m = s.model;
    assert!(matches!(
        update(&mut s, editor, in_prod, version_change(m, 2)),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        decide_delete(&s.w.state, editor, in_prod, "x".into()),
        Err(DomainError::Forbidden(_))
    ));
    // An installation may keep an environment to its admins.
    let mut file = crate::runtime::bootstrap::load(None).unwrap().0;
    file.environments = Some(vec![super::runtime::Environment {
        name: "PROD".into(),
        description: String::new(),
        deploy_role: super::runtime::DeployRole::Admin,
    }]);
    super::runtime::check_bootstrap(&file).unwrap();
    let d = super::runtime::decide_bootstrap(&s.w.state, &file, "other");
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, RegistryEvent::EnvironmentsDeclared(_)))
    );
    s.w.apply(STREAM, d.events);
    assert!(matches!(
        single(&mut s, owner, "PROD"),
        Err(DomainError::Forbidden(m)) if m.contains("the admin role")
    ));
    assert!(matches!(
        single(&mut s, owner, "DEV"),
        Err(DomainError::Invalid { .. })
    ));
    let admin = s.w.admin;
    assert!(single(&mut s, admin, "PROD").is_ok());
    // A file naming no environment at all, or one twice, is refused.
    file.environments = Some(vec![]);
    assert!(super::runtime::check_bootstrap(&file).is_err());
    let twice = super::runtime::Environment {
        name: "QA".into(),
        description: String::new(),
        deploy_role: super::runtime::DeployRole::Editor,
    };
    file.environments = Some(vec![twice.clone(), twice]);
    assert!(super::runtime::check_bootstrap(&file).is_err());
}

#[test]
fn modes_take_the_variants_they_name() {
    let mut s = setup();
    let (o, m) = (s.owner, s.model);
    let refused = |s: &mut Setup, mode, v: &[(&str, VariantRequest)]| {
        let e = deploy(s, o, "DEV", mode, v).unwrap_err();
        assert!(matches!(e, DomainError::Invalid { .. }), "{e:?}");
    };
    let (a, b) = (variant(m, 1, 3, false), variant(m, 2, 1, false));
    refused(&mut s, Mode::Single, &[("a", a.clone()), ("b", b.clone())]);
    refused(&mut s, Mode::Ab, &[("a", a.clone())]);
    refused(
        &mut s,
        Mode::Ab,
        &[("a", a.clone()), ("b", variant(m, 2, 0, false))],
    );
    refused(&mut s, Mode::Ab, &[("a", a.clone()), ("B", b.clone())]);
    refused(
        &mut s,
        Mode::ChampionChallenger,
        &[("champion", a.clone()), ("other", b.clone())],
    );
    refused(
        &mut s,
        Mode::ChampionChallenger,
        &[
            ("champion", a.clone()),
            ("challenger", variant(m, 2, 1, true)),
        ],
    );
    refused(&mut s, Mode::Ab, &[]);
    let ab = deploy(
        &mut s,
        o,
        "DEV",
        Mode::Ab,
        &[("a", a.clone()), ("b", b.clone())],
    )
    .unwrap();
    let d = &s.w.state.deployments[&ab];
    assert_eq!(d.mode, Mode::Ab);
    assert_eq!((d.variants["a"].weight, d.variants["b"].weight), (3, 1));
    assert_eq!(d.variants["b"].spec.model_blob, "02".repeat(32));
    // The deployment stands for its first answering variant, by name.
    assert_eq!(d.spec, d.variants["a"].spec);
    let cc = deploy(
        &mut s,
        o,
        "DEV",
        Mode::ChampionChallenger,
        &[("champion", a), ("challenger", variant(m, 2, 0, true))],
    )
    .unwrap();
    let d = &s.w.state.deployments[&cc];
    assert!(d.variants["challenger"].shadow);
    assert_eq!(d.spec, d.variants["champion"].spec);
    // Variants must share their inputs: one scoring API serves them.
    let project = s.w.state.models[&m].project_id;
    let other = import(&mut s.w, o, project, "03", "z");
    s.w.run(
        o,
        Command::RegisterVersion {
            model_id: m,
            experiment_id: other,
            annotation: None,
        },
    )
    .unwrap();
    let e = deploy(
        &mut s,
        o,
        "DEV",
        Mode::Ab,
        &[
            ("a", variant(m, 1, 1, false)),
            ("b", variant(m, 3, 1, false)),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, DomainError::NotDeployable(m) if m.contains("other inputs")));
}

#[test]
fn updates_start_once_and_the_scorer_ends_them() {
    let mut s = setup();
    let (o, m) = (s.owner, s.model);
    let id = single(&mut s, o, "DEV").unwrap();
    // Only a serving deployment is updated in place.
    assert!(matches!(
        update(&mut s, o, id, version_change(m, 2)),
        Err(DomainError::Conflict(_))
    ));
    launch(&mut s, id);
    assert!(matches!(
        update(&mut s, o, id, version_change(m, 1)),
        Err(DomainError::Conflict(msg)) if msg.contains("already serves")
    ));
    // Runs land on the deployment's stream outside the command gate: its decisions cannot
    // expect an exact version of it.
    let d = decide_update(
        &s.w.state,
        o,
        id,
        Uuid::nil(),
        version_change(m, 2),
        "x".into(),
    );
    assert_eq!(d.unwrap().expected, crate::log::ExpectedVersion::Any);
    let first = update(&mut s, o, id, version_change(m, 2)).unwrap();
    assert!(matches!(
        update(&mut s, o, id, version_change(m, 2)),
        Err(DomainError::Conflict(msg)) if msg.contains("still loading")
    ));
    // Until the scorer ends it, the deployment serves what it served.
    assert_eq!(s.w.state.deployments[&id].spec.version, 1);
    let wrong = decide_update_end(
        &s.w.state,
        id,
        Uuid::nil(),
        UpdateOutcome::Applied,
        "x".into(),
    );
    assert!(matches!(wrong, Err(DomainError::Conflict(_))));
    end(&mut s, id, first, UpdateOutcome::RolledBack);
    let d = &s.w.state.deployments[&id];
    assert_eq!((d.spec.version, d.revisions.len()), (1, 1));
    assert_eq!(
        d.update.as_ref().and_then(|u| u.outcome),
        Some(UpdateOutcome::RolledBack)
    );
    let second = update(&mut s, o, id, version_change(m, 2)).unwrap();
    end(&mut s, id, second, UpdateOutcome::Applied);
    let d = &s.w.state.deployments[&id];
    assert_eq!((d.spec.version, d.revisions.len()), (2, 2));
    assert_eq!(d.spec.model_blob, "02".repeat(32));
    // A run recorded before the update still finds the spec it was scored with.
    let run = InferenceRunRecorded {
        run_id: Uuid::nil(),
        deployment_id: id,
        variant: PRIMARY.into(),
        shadow: false,
        model_id: m,
        version: 1,
        model_blob: "01".repeat(32),
        image_id: d.spec.image_id.clone(),
        image_version: d.spec.image_version.clone(),
        session: Box::new(RunSession::of(&ImageVersionSpec::default(), "1.32.0", None)),
        row_count: 1,
        input_blob: String::new(),
        output_blob: String::new(),
        requests: vec![],
        job: None,
        profile: None,
    };
    assert_eq!(d.spec_of_run(&run).map(|s| s.version), Some(1));
    // A/B weights change in place; the mode may change too.
    let ab = Change::Variants {
        mode: Mode::Ab,
        variants: [
            ("a".to_string(), variant(m, 1, 1, false)),
            ("b".to_string(), variant(m, 2, 4, false)),
        ]
        .into(),
    };
    let third = update(&mut s, o, id, ab).unwrap();
    end(&mut s, id, third, UpdateOutcome::Applied);
    assert_eq!(s.w.state.deployments[&id].mode, Mode::Ab);
    // A reason is required.
    let e = decide_update(
        &s.w.state,
        o,
        id,
        Uuid::nil(),
        version_change(m, 1),
        " ".into(),
    );
    assert!(matches!(
        e,
        Err(DomainError::Invalid {
            field: "reason",
            ..
        })
    ));
}

#[test]
fn a_rollback_restores_the_configuration_at_a_position_exactly() {
    let mut s = setup();
    let (o, m) = (s.owner, s.model);
    let id = single(&mut s, o, "DEV").unwrap();
    launch(&mut s, id);
    let created = s.w.state.deployments[&id].created.position;
    let before = s.w.state.deployments[&id].variants.clone();
    let u = update(&mut s, o, id, version_change(m, 2)).unwrap();
    end(&mut s, id, u, UpdateOutcome::Applied);
    let before_created = Change::Rollback {
        position: created - 1,
    };
    assert!(matches!(
        update(&mut s, o, id, before_created),
        Err(DomainError::Invalid {
            field: "position",
            ..
        })
    ));
    // Any position in the first configuration's time names it.
    let r = update(
        &mut s,
        o,
        id,
        Change::Rollback {
            position: created + 1,
        },
    )
    .unwrap();
    let started = s.w.state.deployments[&id].update.clone().unwrap();
    assert_eq!(started.rollback_to, Some(created));
    assert_eq!(started.variants, before);
    end(&mut s, id, r, UpdateOutcome::Applied);
    let d = &s.w.state.deployments[&id];
    assert_eq!(d.variants, before);
    assert_eq!(d.spec.model_blob, "01".repeat(32));
    assert_eq!(d.revisions.len(), 3);
    // Rolling back to what runs now changes nothing.
    let now = s.w.state.applied;
    assert!(matches!(
        update(&mut s, o, id, Change::Rollback { position: now }),
        Err(DomainError::Conflict(_))
    ));
    // A deleted version cannot come back.
    s.w.run(
        o,
        Command::DeleteVersion {
            model_id: m,
            version: 2,
            annotation: "withdrawn".into(),
        },
    )
    .unwrap();
    let v2_time = s.w.state.deployments[&id].revisions[1].position;
    assert!(matches!(
        update(&mut s, o, id, Change::Rollback { position: v2_time }),
        Err(DomainError::NotFound { .. })
    ));
}

#[test]
fn runtime_upgrades_move_to_newer_active_image_versions_only() {
    let mut s = setup();
    let o = s.owner;
    let id = single(&mut s, o, "DEV").unwrap();
    launch(&mut s, id);
    assert!(upgrades(&s.w.state).is_empty());
    assert!(matches!(
        update(
            &mut s,
            o,
            id,
            Change::RuntimeUpgrade {
                image_version: None
            }
        ),
        Err(DomainError::Conflict(_))
    ));
    let image = s.w.state.deployments[&id].spec.image_id.clone();
    let declare = |s: &mut Setup, version: &str| {
        let spec: ImageVersionSpec = serde_json::from_value(json!({
            "scorer_version": "0.2.0", "onnxruntime_version": "1.32.0"
        }))
        .unwrap();
        let cmd = RuntimeCommand::CreateImageVersion {
            image_id: image.clone(),
            version: version.into(),
            spec,
        };
        let admin = s.w.admin;
        let d = decide_runtime(&s.w.state, admin, cmd).unwrap();
        s.w.apply(STREAM, d.events);
    };
    declare(&mut s, "0.2.0");
    declare(&mut s, "0.3.0");
    let disable = RuntimeCommand::SetState {
        entity: super::runtime::EntityRef::ImageVersion {
            image_id: image.clone(),
            version: "0.3.0".into(),
        },
        to: RuntimeState::Disabled,
        reason: "broken build".into(),
    };
    let admin = s.w.admin;
    let d = decide_runtime(&s.w.state, admin, disable).unwrap();
    s.w.apply(STREAM, d.events);
    // The newest ACTIVE one is offered; the DISABLED one is never chosen.
    let offered = upgrades(&s.w.state);
    assert_eq!(offered.len(), 1);
    assert_eq!(
        (offered[0].deployment_id, offered[0].available.as_str()),
        (id, "0.2.0")
    );
    let disabled = Change::RuntimeUpgrade {
        image_version: Some("0.3.0".into()),
    };
    assert!(matches!(
        update(&mut s, o, id, disabled),
        Err(DomainError::Conflict(m)) if m.contains("DISABLED")
    ));
    let u = update(
        &mut s,
        o,
        id,
        Change::RuntimeUpgrade {
            image_version: None,
        },
    )
    .unwrap();
    let started = s.w.state.deployments[&id].update.clone().unwrap();
    let moved = &started.variants[PRIMARY].spec;
    assert_eq!(
        (
            moved.image_version.as_str(),
            moved.runtime.scorer_version.as_str()
        ),
        ("0.2.0", "0.2.0")
    );
    // Nothing but the image version changes.
    assert_eq!(moved.model_blob, s.w.state.deployments[&id].spec.model_blob);
    end(&mut s, id, u, UpdateOutcome::Applied);
    assert!(upgrades(&s.w.state).is_empty());
}

#[test]
fn promotion_copies_what_served_into_another_environment() {
    let mut s = setup();
    let (o, e) = (s.owner, s.editor);
    let dev = single(&mut s, e, "DEV").unwrap();
    let promote = |s: &Setup, actor, env: &str, reason: &str| {
        decide_promote(
            &s.w.state,
            actor,
            Promote {
                deployment_id: Uuid::from_u128(7),
                from: dev,
                environment: env.into(),
                security: None,
                retention: None,
                reason: reason.into(),
            },
        )
    };
    assert!(matches!(
        promote(&s, o, "PROD", "tested"),
        Err(DomainError::Conflict(m)) if m.contains("never became Healthy")
    ));
    launch(&mut s, dev);
    assert!(matches!(
        promote(&s, e, "PROD", "tested"),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        promote(&s, o, "DEV", "again"),
        Err(DomainError::Invalid { .. })
    ));
    assert!(matches!(
        promote(&s, o, "PROD", ""),
        Err(DomainError::Invalid {
            field: "reason",
            ..
        })
    ));
    let d = promote(&s, o, "PROD", "passed review").unwrap();
    s.w.apply(&d.stream.clone(), d.events);
    let prod = &s.w.state.deployments[&Uuid::from_u128(7)];
    let source = &s.w.state.deployments[&dev];
    assert_eq!(prod.promoted_from, Some(dev));
    assert_eq!(prod.spec.environment, "PROD");
    assert_eq!(prod.spec.model_blob, source.spec.model_blob);
    assert_eq!(prod.spec.image_version, source.spec.image_version);
    assert_eq!(prod.history[0].reason, "passed review");
}

#[test]
fn deletion_stops_first_and_ends_every_change() {
    let mut s = setup();
    let o = s.owner;
    let id = single(&mut s, o, "DEV").unwrap();
    launch(&mut s, id);
    let endpoint =
        super::endpoint::decide(&s.w.state, o, "wine".into(), Some(id), "app".into()).unwrap();
    s.w.apply(&endpoint.stream.clone(), endpoint.events);
    assert!(matches!(
        decide_delete(&s.w.state, o, id, "gone".into()),
        Err(DomainError::Conflict(m)) if m.contains("endpoint wine")
    ));
    let removed =
        super::endpoint::decide(&s.w.state, o, "wine".into(), None, "moved".into()).unwrap();
    s.w.apply(&removed.stream.clone(), removed.events);
    let d = decide_delete(&s.w.state, o, id, "retired".into()).unwrap();
    let types: Vec<&str> = d.events.iter().map(RegistryEvent::event_type).collect();
    assert_eq!(types, ["DeploymentStateChanged", "DeploymentDeleted"]);
    s.w.apply(&d.stream.clone(), d.events);
    let dep = &s.w.state.deployments[&id];
    assert_eq!(dep.state, S::Stopped);
    assert!(dep.deleted.is_some());
    let m = s.model;
    for e in [
        decide_delete(&s.w.state, o, id, "again".into()).err(),
        decide_transition(&s.w.state, Some(o), id, S::Stopped, "x".into()).err(),
        decide_update(
            &s.w.state,
            o,
            id,
            Uuid::nil(),
            version_change(m, 2),
            "x".into(),
        )
        .err(),
    ] {
        assert!(matches!(e, Some(DomainError::Conflict(m)) if m.contains("deleted")));
    }
}
